//! `Op::Lookup` compiled under each kernel tier `CNNC_KERNELS` can force, against the reference
//! interpreter and the op's definition, bit for bit (tolerance 0: a lookup copies table
//! entries, so any difference is a wrong index, a lost tail or a clobbered neighbour):
//! `cranelift` takes the portable Cranelift loop (eight elements per step, then a tail);
//! `avx2` and `vnni` call the int8 tier's precompiled loops where they apply (byte tables:
//! AVX-512 VBMI's register table, gathers) and the Cranelift loop elsewhere (f32 tables,
//! run-time tables). Tables are weights and run-time inputs; sizes cover an empty tensor,
//! every step's tail and three 32,768-element work units, on one and two threads. Tiers the
//! host lacks are skipped. tests/tests/int8.rs runs the default tier.
//!
//! This file holds a single test because it sets an environment variable: no other test of
//! this binary runs concurrently with it.

use cnnc_ir::{DType, Graph, Op, Tensor, TensorType, VerifiedGraph, verify};
use cnnc_runtime::{Model, run_reference};

/// One kernel shape: the table (a weight) and the operands' dtypes.
struct Case {
    name: &'static str,
    table: Tensor,
    operands: Vec<DType>,
}

/// A byte pattern with no structure a kernel could get right by accident.
fn scrambled(j: usize) -> u8 {
    ((j.wrapping_mul(2_654_435_761) >> 7) as u8) ^ (j as u8)
}

/// One u8 or i8 operand into u8, i8 and f32 tables (NaN payloads, −0.0, ∞, subnormals), and
/// two operands into 65,536-entry u8 and f32 tables.
fn cases() -> Vec<Case> {
    let bytes = |n: usize| (0..n).map(scrambled).collect::<Vec<u8>>();
    let floats = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|j| match j % 8 {
                0 => f32::from_bits(0x7fc0_0000 | j as u32),
                1 => -0.0,
                2 => f32::from_bits(0xff80_0000 | (j as u32 + 1)),
                3 => f32::NEG_INFINITY,
                4 => f32::from_bits(j as u32 + 1),
                _ => (j as f32 - 128.5) * 0.37,
            })
            .collect()
    };
    let i8s = |v: Vec<u8>| v.into_iter().map(|b| b as i8).collect();
    vec![
        Case { name: "u8 → u8", table: Tensor::from_u8([256], bytes(256)).expect("256"), operands: vec![DType::U8] },
        Case {
            name: "i8 → i8",
            table: Tensor::from_i8([256], i8s(bytes(256))).expect("256"),
            operands: vec![DType::I8],
        },
        Case {
            name: "u8 → i8",
            table: Tensor::from_i8([256], i8s(bytes(256))).expect("256"),
            operands: vec![DType::U8],
        },
        Case {
            name: "i8 → f32", table: Tensor::from_f32([256], floats(256)).expect("256"), operands: vec![DType::I8]
        },
        Case {
            name: "u8, i8 → u8",
            table: Tensor::from_u8([65536], bytes(65536)).expect("65536"),
            operands: vec![DType::U8, DType::I8],
        },
        Case {
            name: "i8, u8 → f32",
            table: Tensor::from_f32([65536], floats(65536)).expect("65536"),
            operands: vec![DType::I8, DType::U8],
        },
    ]
}

/// Where a lookup's table comes from: a weight (the optimizer's tables; kernels may prepare
/// it at compile time) or a graph input (read at run time).
#[derive(Clone, Copy, Debug)]
enum Table {
    Weight,
    Input,
}

/// `y = lookup(table, x0[, x1])` over `[n]` elements, the operands graph inputs and the table
/// a weight or the first graph input.
fn graph(case: &Case, n: usize, table: Table) -> VerifiedGraph {
    let mut g = Graph::new("lookup");
    let mut inputs = vec![match table {
        Table::Weight => g.add_weight("table", case.table.clone()),
        Table::Input => g.add_input("table", case.table.ty()),
    }];
    for (k, &dtype) in case.operands.iter().enumerate() {
        inputs.push(g.add_input(format!("x{k}"), TensorType::new(dtype, [n])));
    }
    let y = g.add_node("y", Op::Lookup, &inputs).expect("a well-typed lookup")[0];
    g.add_output("y", y);
    verify(g).expect("verifies")
}

/// The operands' bytes at element `i`: one operand runs through all 256 values in every 256
/// elements, two through all 65,536 pairs in every 65,536.
fn operand_bytes(n_operands: usize, i: usize) -> [u8; 2] {
    if n_operands == 1 {
        [(i * 167 + 89) as u8, 0]
    } else {
        let p = (i * 40_503 + 7) % 65_536;
        [(p >> 8) as u8, p as u8]
    }
}

fn inputs(case: &Case, n: usize) -> Vec<Tensor> {
    (case.operands.iter().enumerate())
        .map(|(k, &dtype)| {
            let v: Vec<u8> = (0..n).map(|i| operand_bytes(case.operands.len(), i)[k]).collect();
            match dtype {
                DType::U8 => Tensor::from_u8([n], v),
                _ => Tensor::from_i8([n], v.into_iter().map(|b| b as i8).collect()),
            }
            .expect("n values")
        })
        .collect()
}

/// The op's definition on bytes: `table[256·a + b]`, `a`, `b` the operands' bit patterns.
fn expected(case: &Case, n: usize) -> Vec<u8> {
    let size = case.table.dtype().size_bytes();
    let table = case.table.data().to_le_bytes();
    (0..n)
        .flat_map(|i| {
            let [a, b] = operand_bytes(case.operands.len(), i).map(usize::from);
            let j = if case.operands.len() == 1 { a } else { 256 * a + b };
            table[j * size..(j + 1) * size].to_vec()
        })
        .collect()
}

/// `got` is `want` bit for bit; names the first differing element.
fn assert_same_bits(got: &Tensor, want_ty: &TensorType, want: &[u8], what: &str) {
    assert_eq!(&got.ty(), want_ty, "{what}: type");
    let size = want_ty.dtype.size_bytes();
    let got = got.data().to_le_bytes();
    if let Some(i) = (0..want.len() / size).find(|&i| got[i * size..(i + 1) * size] != want[i * size..(i + 1) * size]) {
        let at = i * size..(i + 1) * size;
        panic!("{what}: element {i} has bytes {:02x?}, expected {:02x?}", &got[at.clone()], &want[at]);
    }
}

/// The tiers this host can run: `cranelift` always, `avx2` and `vnni` where their features are.
fn tiers() -> Vec<&'static str> {
    let mut tiers = vec!["cranelift"];
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx2") {
            tiers.push("avx2");
        } else {
            cnnc_runtime::testing::cpu_skip(
                "lookup_equals_the_reference_under_every_forced_kernel_tier (avx2)",
                "avx2",
            );
        }
        if has!("avx2") && has!("avx512f") && has!("avx512bw") && has!("avx512vnni") {
            tiers.push("vnni");
        } else {
            cnnc_runtime::testing::cpu_skip(
                "lookup_equals_the_reference_under_every_forced_kernel_tier (vnni)",
                "vnni",
            );
        }
    }
    tiers
}

#[test]
fn lookup_equals_the_reference_under_every_forced_kernel_tier() {
    for tier in tiers() {
        // SAFETY: this binary's only test sets the variable; no other thread reads the
        // environment (the runtime's idle workers only run kernels).
        unsafe { std::env::set_var("CNNC_KERNELS", tier) };
        for case in cases() {
            for table in [Table::Weight, Table::Input] {
                for n in [0, 1, 7, 64, 65, 1003, 70_000] {
                    let g = graph(&case, n, table);
                    let mut inputs = inputs(&case, n);
                    if let Table::Input = table {
                        inputs.insert(0, case.table.clone());
                    }
                    let want = expected(&case, n);
                    let ty = TensorType::new(case.table.dtype(), [n]);
                    let what = format!("CNNC_KERNELS={tier}: {} ({table:?} table) n={n}", case.name);
                    let reference = run_reference(&g, &inputs).expect("reference runs").remove(0);
                    assert_same_bits(&reference, &ty, &want, &format!("{what}: reference"));
                    let mut model = Model::compile(&g).unwrap_or_else(|e| panic!("{what}: {e}"));
                    for threads in [1, 2] {
                        model.set_threads(threads);
                        let got = model.run(&inputs).expect("runs").remove(0);
                        assert_same_bits(&got, &ty, &want, &format!("{what} on {threads} thread(s)"));
                    }
                }
            }
        }
    }
}
