//! The threading contract, kernel by kernel: one call over every work unit and one call per
//! unit, last unit first (an order threads may produce), write the same bits, and together
//! write the whole output (the two runs start from different garbage). `Model`-level runs at
//! several thread counts are in `tests/jit_units.rs`.

use cnnc_ir::{Graph, Tensor, TensorType, verify};

use crate::codegen::{Aux, EmitCx, Jit, emit_node};
use crate::testing::random;

fn bytes(t: &Tensor) -> Vec<u8> {
    t.data().to_le_bytes()
}

/// Compiles the one kernel of `text` (its inputs are graph inputs, fed `inputs` in order, or
/// weights) and runs it both ways. Returns its number of units.
fn check(text: &str, inputs: &[Tensor]) -> u64 {
    let g = verify(text.parse::<Graph>().unwrap_or_else(|e| panic!("{e}"))).unwrap_or_else(|e| panic!("{e}"));
    let node = g.node_ids().find(|&id| !g.node(id).op.is_source()).expect("a kernel");
    let n = g.node(node);
    let ins = g.node_inputs(node);
    let types: Vec<TensorType> = ins.iter().map(|v| g.value_type(v).clone()).collect();
    let consts: Vec<Option<&Tensor>> = ins.iter().map(|v| g.weight_of(v)).collect();
    let cx = EmitCx { name: &n.name, op: &n.op, inputs: &types, outputs: &n.outputs, consts: &consts };
    let mut jit = Jit::new().expect("jit");
    let emitted = emit_node(&mut jit, &cx).unwrap_or_else(|e| panic!("{e}"));
    let (_code, kernels) = jit.finish(&[emitted.func]).expect("finishes");
    let in_bufs: Vec<Vec<u8>> = ins
        .iter()
        .map(|v| match g.weight_of(v) {
            Some(t) => bytes(t),
            None => bytes(&inputs[g.inputs().iter().position(|&id| id == v.node).expect("a graph input")]),
        })
        .collect();
    let scratch_bytes = emitted.aux.iter().map(|a| if let Aux::Scratch(n) = a { *n } else { 0 }).max().unwrap_or(0);
    let run = |calls: &[(u64, u64)], garbage: u8| -> Vec<Vec<u8>> {
        let mut outs: Vec<Vec<u8>> =
            n.outputs.iter().map(|t| vec![garbage; t.numel() * t.dtype.size_bytes()]).collect();
        let mut scratch = vec![0u64; scratch_bytes.div_ceil(8) + 1];
        let mut table: Vec<*mut u8> = in_bufs.iter().map(|b| b.as_ptr() as *mut u8).collect();
        table.extend(outs.iter_mut().map(|o| o.as_mut_ptr()));
        table.extend(emitted.aux.iter().map(|a| a.ptr().unwrap_or(scratch.as_mut_ptr().cast())));
        for &(lo, hi) in calls {
            // SAFETY: one buffer per kernel argument, each of the size of its type (scratch
            // of the requested size); the code is alive; only outputs and scratch are written.
            unsafe { kernels[0](table.as_ptr(), lo as i64, hi as i64) };
        }
        outs
    };
    let units = emitted.units;
    let whole = run(&[(0, units)], 0xA5);
    let reversed: Vec<(u64, u64)> = (0..units).rev().map(|u| (u, u + 1)).collect();
    let split = run(&reversed, 0x5A);
    for (i, (a, b)) in whole.iter().zip(&split).enumerate() {
        if let Some(at) = a.iter().zip(b).position(|(x, y)| x != y) {
            panic!("`{}`: output {i} byte {at} differs between one call and {units} reversed calls", n.name);
        }
    }
    units
}

fn one_op(op: &str, x: &str, out: &str) -> String {
    format!("graph \"g\" {{\n  %x = input {x}\n  %y = {op}(%x) : {out}\n  output \"y\" = %y\n}}")
}

fn two_op(op: &str, x: &str, w: &str, out: &str) -> String {
    format!("graph \"g\" {{\n  %x = input {x}\n  %w = input {w}\n  %y = {op}(%x, %w) : {out}\n  output \"y\" = %y\n}}")
}

#[test]
fn unary_units() {
    let x = random(&[1, 7, 97, 153], 1);
    for op in ["relu", "sigmoid", "hard-swish", "log", "clip{min=-0.5, max=0.25}"] {
        assert!(check(&one_op(op, "f32[1,7,97,153]", "f32[1,7,97,153]"), std::slice::from_ref(&x)) >= 3, "{op}");
    }
}

#[test]
fn binary_units() {
    let cases = [
        ("add", [1, 7, 97, 153], [1, 7, 97, 153], "f32[1,7,97,153]"),
        ("mul", [1, 32, 65, 67], [1, 32, 1, 1], "f32[1,32,65,67]"),
        ("sub", [1, 3, 331, 213], [1, 3, 1, 1], "f32[1,3,331,213]"),
        ("div", [1, 32, 1, 67], [1, 1, 65, 1], "f32[1,32,65,67]"),
        ("pow", [1, 32, 65, 67], [1, 1, 1, 1], "f32[1,32,65,67]"),
        ("less", [1, 7, 97, 153], [1, 7, 97, 153], "bool[1,7,97,153]"),
    ];
    for (op, a, b, out) in cases {
        let ty = |s: [usize; 4]| format!("f32[{}]", s.map(|d| d.to_string()).join(","));
        let text = two_op(op, &ty(a), &ty(b), out);
        assert!(check(&text, &[random(&a, 2), random(&b, 3)]) >= 3, "{op} {a:?} {b:?}");
    }
    let select = "graph \"g\" {\n  %c = input bool[1,7,97,153]\n  %x = input f32[1,7,97,153]\n  %w = input f32[7,1,1]\n  \
                  %y = where(%c, %x, %w) : f32[1,7,97,153]\n  output \"y\" = %y\n}";
    let c = random(&[1, 7, 97, 153], 20).as_f32().expect("f32").iter().map(|&v| v > 0.0).collect();
    let c = Tensor::from_bool(vec![1, 7, 97, 153], c).expect("shape");
    assert!(check(select, &[c, random(&[1, 7, 97, 153], 21), random(&[7, 1, 1], 22)]) >= 3);
    let empty = two_op("add", "f32[0,5]", "f32[5]", "f32[0,5]");
    assert_eq!(check(&empty, &[random(&[0, 5], 4), random(&[5], 5)]), 1);
}

#[test]
fn movement_units() {
    let x = random(&[1, 5, 97, 271], 6);
    let cases = [
        ("transpose{perm=[0, 2, 3, 1]}", "f32[1,97,271,5]"),
        ("transpose{perm=[0, 2, 1, 3]}", "f32[1,97,5,271]"),
        ("slice{axes=[[1, 4, -1, -2], [3, 1, 270, 1]]}", "f32[1,3,97,269]"),
        ("expand{shape=[2, 5, 97, 271]}", "f32[2,5,97,271]"),
        ("cast{to=i64}", "i64[1,5,97,271]"),
        ("split{axis=2, sizes=[40, 57]}", "f32[1,5,40,271], f32[1,5,57,271]"),
        ("pad{pads=[0, 0, 1, 2, 0, 0, 3, 1], mode=constant, value=0.5}", "f32[1,5,101,274]"),
        ("pad{pads=[0, 0, 2, 2, 0, 0, 2, 2], mode=reflect, value=0.0}", "f32[1,5,101,275]"),
    ];
    for (op, out) in cases {
        assert!(check(&one_op(op, "f32[1,5,97,271]", out), std::slice::from_ref(&x)) >= 2, "{op}");
    }
    // Pads that fold many times make too many runs: the index-table kernel.
    let table =
        one_op("pad{pads=[0, 0, 20, 20, 0, 0, 20, 20], mode=wrap, value=0.0}", "f32[1,40,2,2]", "f32[1,40,42,42]");
    assert!(check(&table, &[random(&[1, 40, 2, 2], 18)]) >= 2);
    let concat = two_op("concat{axis=1}", "f32[1,5,97,271]", "f32[1,3,97,271]", "f32[1,8,97,271]");
    assert!(check(&concat, &[x.clone(), random(&[1, 3, 97, 271], 7)]) >= 4);
    let concat = two_op("concat{axis=2}", "f32[2,300,61]", "f32[2,300,67]", "f32[2,300,128]");
    assert!(check(&concat, &[random(&[2, 300, 61], 8), random(&[2, 300, 67], 9)]) >= 2);
    let idx = Tensor::from_i64(vec![61], (0..61).map(|k| (k * 37 % 100) - 50).collect()).expect("shape");
    let gather = two_op("gather{axis=0}", "f32[50,701]", "i64[61]", "f32[61,701]");
    assert!(check(&gather, &[random(&[50, 701], 10), idx]) >= 2);
}

#[test]
fn norm_pool_and_resize_units() {
    let text = "graph \"g\" {\n  %x = input f32[1,3,331,213]\n  %s = input f32[3]\n  %b = input f32[3]\n  \
                %m = input f32[3]\n  %v = input f32[3]\n  \
                %y = batchnorm{epsilon=1e-5}(%x, %s, %b, %m, %v) : f32[1,3,331,213]\n  output \"y\" = %y\n}";
    let var = Tensor::from_f32(vec![3], vec![0.5, 1.5, 2.0]).expect("shape");
    let p = [random(&[1, 3, 331, 213], 11), random(&[3], 12), random(&[3], 13), random(&[3], 14), var];
    assert!(check(text, &p) >= 4);
    let x = random(&[1, 16, 131, 97], 15);
    let pools = [
        (
            "max-pool{kernel=[3, 3], strides=[2, 2], dilations=[1, 1], pads=[1, 1, 1, 1], ceil-mode=false}",
            "f32[1,16,66,49]",
        ),
        (
            "avg-pool{kernel=[3, 3], strides=[1, 1], dilations=[1, 1], pads=[1, 1, 1, 1], ceil-mode=false, count-include-pad=false}",
            "f32[1,16,131,97]",
        ),
        ("global-avg-pool", "f32[1,16,1,1]"),
    ];
    for (op, out) in pools {
        assert!(check(&one_op(op, "f32[1,16,131,97]", out), std::slice::from_ref(&x)) >= 2, "{op}");
    }
    // Rows of 102: 321 rows a unit, so unit 1 starts on a repeated (copied) row.
    let nearest = "resize{mode=nearest, coord=half-pixel, nearest=round-prefer-floor, scales=[1.0, 1.0, 2.0, 2.0], \
                   out-shape=[1, 8, 82, 102]}";
    assert!(check(&one_op(nearest, "f32[1,8,41,51]", "f32[1,8,82,102]"), &[random(&[1, 8, 41, 51], 16)]) >= 3);
    let linear = nearest.replace("mode=nearest", "mode=linear");
    assert!(check(&one_op(&linear, "f32[1,8,41,51]", "f32[1,8,82,102]"), &[random(&[1, 8, 41, 51], 17)]) >= 3);
}

#[test]
fn softmax_and_reduction_units() {
    let cases: [(&str, &[usize], &str); 8] = [
        ("softmax{axis=1, flatten=false}", &[1, 17, 61, 101], "f32[1,17,61,101]"),
        ("softmax{axis=1, flatten=false}", &[600, 131], "f32[600,131]"),
        ("softmax{axis=1, flatten=true}", &[5, 5, 2731], "f32[5,5,2731]"),
        ("reduce-mean{axes=[1], keepdims=true}", &[1, 5, 181, 191], "f32[1,1,181,191]"),
        ("reduce-l2{axes=[3], keepdims=false}", &[3, 11, 1021, 3], "f32[3,11,1021]"),
        ("reduce-log-sum-exp{axes=[0], keepdims=false}", &[2, 50001], "f32[50001]"),
        ("reduce-sum{axes=[1, 3], keepdims=false}", &[7, 9, 1000, 5], "f32[7,1000]"),
        ("arg-min{axis=1, keepdims=false, select-last-index=true}", &[1, 5, 181, 191], "i64[1,181,191]"),
    ];
    for (op, shape, out) in cases {
        let ty = format!("f32[{}]", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(","));
        assert!(check(&one_op(op, &ty, out), &[random(shape, 19)]) >= 2, "{op} {shape:?}");
    }
    let ints = Tensor::from_i64(vec![3, 40000], (0..120_000).map(|i| (i * 7919 % 13) - 6).collect()).expect("shape");
    assert!(check(&one_op("reduce-sum{axes=[0], keepdims=false}", "i64[3,40000]", "i64[40000]"), &[ints]) >= 2);
}

/// Few units become a multiple of the host's threads, of one size and on the callers' vector
/// alignment; many units, one unit, and counts already a multiple stay as they were.
#[test]
fn balanced_grains_split_evenly_over_the_threads() {
    use crate::codegen::builder::{balanced_grain_for, units_of};
    // 128·56·56 elements at 32,768 a unit: 13 units, 14 on 2 threads.
    let g = balanced_grain_for(2, 401_408, 32_768, 64);
    assert_eq!((units_of(401_408, g), g % 64), (14, 0), "grain {g}");
    assert!(401_408 - 13 * g <= g && 401_408 - 13 * g > g - 64, "last unit of {g} not about one size");
    // 3 threads: 13 → 15.
    assert_eq!(units_of(401_408, balanced_grain_for(3, 401_408, 32_768, 64)), 15);
    for (threads, total, grain) in [(2, 100, 200), (2, 4 * 32_768, 32_768), (2, 17 * 32_768, 32_768), (1, 99, 10)] {
        assert_eq!(balanced_grain_for(threads, total, grain, 64), grain, "{threads} threads, {total}/{grain}");
    }
    // Outer-axis cuts (align 1): where no smaller grain gives a multiple (7 rows; 13 rows two at
    // a time), the grain stays.
    assert_eq!(units_of(7, balanced_grain_for(2, 7, 1, 1)), 7);
    // 9 rows two at a time: 5 units (2, 2, 2, 2, 1) already load the threads 5 and 4.
    assert_eq!(balanced_grain_for(2, 9, 2, 1), 2);
    // 11 rows four at a time: 3 units (4, 4, 3) load them 7 and 4; 4 units (3, 3, 3, 2), 6 and 5.
    assert_eq!(balanced_grain_for(2, 11, 4, 1), 3);
    assert_eq!(units_of(13, balanced_grain_for(2, 13, 2, 1)), 7);
}
