//! Exact rewrite rules (`cnnc_passes::rules`): per rule, a case where it fires and cases where
//! it must not (text-IR snapshots of the extracted graph), a numeric soundness check (reference
//! interpreter before vs after on random inputs), and the real models it applies to.
//!
//! Tolerance: rel-L2 ≤ 1e-5 per output. An exact rule only reorders f32 arithmetic (BN folding
//! computes the folded weights in f64 and rounds once), which moves results by a few ulps; the
//! real models use their goldens' bound (the larger of 1e-5 and 4 × onnxruntime's own
//! optimizations-on-vs-off difference). `qdq-lookup` is checked at tolerance 0 through the
//! `-O1` optimizer itself, on inputs that take every value of the tabulated operands.

use cnnc_ir::{DType, Graph, Op, Tensor, VerifiedGraph, verify};
use cnnc_passes::{
    Limits, Loaded, OptConfig, RuleOptions, Saturation, TableCost, exact_rules_with, mac_estimate, optimize_exact,
    saturate, to_egraph, to_graph,
};
use cnnc_runtime::{Model, run_reference};
use cnnc_tests::{import_with_inputs, load_golden, model_path, ordered_inputs, rel_l2};
use egg::{AstSize, Extractor};

/// Saturates `g` with every exact rule but Winograd's (tests/tests/winograd.rs has those: a
/// Winograd conv is as small as the direct one) and extracts the smallest term (a stand-in for
/// the measured cost model, enough to see which rewrites fired).
fn optimize(g: &VerifiedGraph) -> (VerifiedGraph, Saturation) {
    let rules = exact_rules_with(RuleOptions { winograd: false });
    let (Loaded { egraph, root }, sat) = saturate(to_egraph(g), &rules, Limits::default());
    let (_, expr) = Extractor::new(&egraph, AstSize).find_best(root);
    let back = to_graph(&expr, &egraph.analysis).expect("an extracted term is a graph");
    (verify(back).expect("the optimized graph verifies"), sat)
}

fn parse(text: &str) -> VerifiedGraph {
    verify(text.parse::<Graph>().expect("parses")).expect("verifies")
}

fn applied(sat: &Saturation, rule: &str) -> usize {
    sat.applied.iter().find(|(n, _)| n == rule).map_or(0, |(_, c)| *c)
}

/// Reference outputs of `a` and `b` on the same seeded random inputs agree within `tol`.
fn assert_same_function(a: &VerifiedGraph, b: &VerifiedGraph, tol: f64) {
    let inputs: Vec<Tensor> = a
        .inputs()
        .iter()
        .enumerate()
        .map(|(i, &id)| {
            let ty = &a.node(id).outputs[0];
            let mut s = 0x9e37_79b9_u32.wrapping_mul(i as u32 + 1);
            let data = (0..ty.numel())
                .map(|_| {
                    s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (s >> 8) as f32 / (1 << 24) as f32 * 2.0 - 1.0
                })
                .collect();
            Tensor::from_f32(ty.shape.clone(), data).expect("shape")
        })
        .collect();
    let want = run_reference(a, &inputs).expect("before");
    let got = run_reference(b, &inputs).expect("after");
    for ((o, g), w) in a.outputs().iter().zip(&got).zip(&want) {
        let e = rel_l2(g, w);
        assert!(e <= tol, "output `{}`: rel-L2 {e:.3e} > {tol:.1e}", o.name);
    }
}

const CONV_BN: &str = r#"graph "conv_bn" {
  %x = input f32[1,3,6,6]
  %w = weight f32[4,3,3,3] [0.1, -0.2, 0.3, 0.05, -0.15, 0.25, 0.12, -0.08, 0.02, 0.11, -0.21, 0.31, 0.06, -0.16, 0.26, 0.13, -0.09, 0.03, 0.1, -0.2, 0.3, 0.05, -0.15, 0.25, 0.12, -0.08, 0.02, 0.4, -0.1, 0.2, 0.07, -0.17, 0.27, 0.14, -0.04, 0.01, 0.11, -0.21, 0.31, 0.06, -0.16, 0.26, 0.13, -0.09, 0.03, 0.1, -0.2, 0.3, 0.05, -0.15, 0.25, 0.12, -0.08, 0.02, 0.2, -0.3, 0.1, 0.15, -0.05, 0.35, 0.22, -0.18, 0.12, 0.21, -0.11, 0.41, 0.16, -0.26, 0.36, 0.23, -0.19, 0.13, 0.3, -0.1, 0.2, 0.25, -0.35, 0.15, 0.32, -0.28, 0.22, 0.31, -0.01, 0.11, 0.26, -0.06, 0.16, 0.33, -0.29, 0.23, 0.34, -0.24, 0.14, 0.09, -0.39, 0.19, 0.27, -0.37, 0.17, 0.29, -0.02, 0.12, 0.08, -0.38, 0.18, 0.28, -0.03, 0.13]
  %b = weight f32[4] [0.5, -0.5, 0.25, 0.0]
  %s = weight f32[4] [1.5, 0.5, -2.0, 1.0]
  %t = weight f32[4] [0.1, 0.2, 0.3, 0.4]
  %m = weight f32[4] [0.05, -0.1, 0.2, 0.0]
  %v = weight f32[4] [1.0, 0.25, 4.0, 0.01]
  %c = conv{kernel=[3, 3], strides=[1, 1], dilations=[1, 1], pads=[1, 1, 1, 1], group=1}(%x, %w, %b) : f32[1,4,6,6]
  %y = batchnorm{epsilon=1e-5}(%c, %s, %t, %m, %v) : f32[1,4,6,6]
  output "y" = %y
}"#;

#[test]
fn bn_fold_fires_on_conv_then_batchnorm_and_keeps_the_function() {
    let g = parse(CONV_BN);
    let (opt, sat) = optimize(&g);
    assert_eq!(applied(&sat, "bn-fold-conv-bias"), 1, "{sat:?}");
    assert_eq!(sat.stop_reason, "saturated");
    insta::assert_snapshot!("bn_fold_fires", opt.display_without_weights().to_string());
    assert_same_function(&g, &opt, 1e-5);
}

#[test]
fn bn_fold_fires_on_a_conv_without_bias() {
    let text = CONV_BN.replace("(%x, %w, %b)", "(%x, %w)").replace("  %b = weight f32[4] [0.5, -0.5, 0.25, 0.0]\n", "");
    let g = parse(&text);
    let (opt, sat) = optimize(&g);
    assert_eq!(applied(&sat, "bn-fold-conv"), 1, "{sat:?}");
    assert!(!opt.display_without_weights().to_string().contains("batchnorm"));
    assert_same_function(&g, &opt, 1e-5);
}

#[test]
fn bn_fold_does_not_fire_through_a_nonlinear_op() {
    let text = CONV_BN.replace(
        "%y = batchnorm{epsilon=1e-5}(%c,",
        "%r = relu(%c) : f32[1,4,6,6]\n  %y = batchnorm{epsilon=1e-5}(%r,",
    );
    let g = parse(&text);
    let (opt, sat) = optimize(&g);
    assert!(sat.applied.iter().filter(|(r, _)| r.starts_with("bn-fold")).all(|(_, n)| *n == 0), "{sat:?}");
    // The relu fuses into the conv (another rule); the BatchNorm stays.
    insta::assert_snapshot!("bn_fold_not_through_relu", opt.display_without_weights().to_string());
    assert_same_function(&g, &opt, 0.0);
}

#[test]
fn bn_fold_does_not_fire_when_the_conv_weights_are_a_runtime_input() {
    let text =
        CONV_BN.replace("  %w = weight f32[4,3,3,3]", "  %w = input f32[4,3,3,3]\n  %unused = weight f32[4,3,3,3]");
    // Keep only the declaration: the weight line's values now belong to `%unused`.
    let g = parse(&text);
    let (_, sat) = optimize(&g);
    assert!(sat.applied.iter().all(|(_, n)| *n == 0), "{sat:?}");
}

/// Real models with unfolded BatchNorms: every conv → BatchNorm pair folds (`want_left` follow
/// something else), and the outputs on the golden's real-data input stay within the golden's
/// bound.
fn check_model(stem: &str, want_folds: usize, want_left: usize) {
    let Some(path) = model_path(stem) else { return };
    let golden = load_golden(stem);
    let graph = import_with_inputs(&path, &golden.inputs);
    let inputs = ordered_inputs(&graph, &golden.inputs);
    let (opt, sat) = optimize(&graph);
    let folds: usize = sat.applied.iter().filter(|(n, _)| n.starts_with("bn-fold")).map(|(_, c)| c).sum();
    let left = opt.node_ids().filter(|&id| matches!(opt.node(id).op, cnnc_ir::Op::BatchNorm { .. })).count();
    eprintln!("{stem}: {folds} BatchNorm folds, {left} left, {sat:?}");
    assert_eq!(folds, want_folds, "{stem}");
    assert_eq!(left, want_left, "{stem}: BatchNorms not after a conv");
    let want = run_reference(&graph, &inputs).expect("before");
    let got = run_reference(&opt, &inputs).expect("after");
    for ((o, g), w) in graph.outputs().iter().zip(&got).zip(&want) {
        let tol = golden.tolerance[&o.name].max(1e-5);
        let e = rel_l2(g, w);
        eprintln!("{stem} `{}`: folded vs original rel-L2 {e:.3e} (bound {tol:.1e})", o.name);
        assert!(e <= tol, "{stem} `{}`: rel-L2 {e:.3e} > {tol:.1e}", o.name);
    }
}

#[test]
fn bn_fold_on_ppocr_mobile_cls() {
    // 35 conv → BatchNorm pairs; the stem's BatchNorm folds twice, also into the stem's
    // space-to-depth form (a second conv in the same e-class).
    check_model("ppocr_mobile_cls", 36, 0);
}

#[test]
fn bn_fold_on_ppocr_v4_det() {
    // Two follow convs, the third a ConvTranspose; the stem's BatchNorm folds into its
    // space-to-depth form too.
    check_model("ppocr_v4_det", 4, 0);
}

fn seeded(shape: &[usize], seed: u32, lo: f32, hi: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let mut s = seed.wrapping_mul(0x9e37_79b9);
    let data = (0..n)
        .map(|_| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            lo + (s >> 8) as f32 / (1 << 24) as f32 * (hi - lo)
        })
        .collect();
    Tensor::from_f32(shape.to_vec(), data).expect("shape")
}

#[test]
fn bn_fold_fires_on_a_grouped_conv_transpose() {
    use cnnc_ir::{ConvTransposeAttrs, Op, TensorType};
    // 6 input channels in 2 groups, 4 output channels per group: weights [6, 4, 2, 3].
    let mut g = Graph::new("ct_bn");
    let x = g.add_input("x", TensorType::f32([1, 6, 5, 4]));
    let w = g.add_weight("w", seeded(&[6, 4, 2, 3], 1, -1.0, 1.0));
    let b = g.add_weight("b", seeded(&[8], 2, -1.0, 1.0));
    let attrs = ConvTransposeAttrs {
        kernel: vec![2, 3],
        strides: vec![2, 1],
        dilations: vec![1, 1],
        pads: vec![0, 1, 0, 1],
        output_padding: vec![0, 0],
        group: 2,
    };
    let ct = g.add_node("ct", Op::ConvTranspose(attrs), &[x, w, b]).expect("conv-transpose")[0];
    let params: Vec<_> = [(3, 0.5, 2.0), (4, -1.0, 1.0), (5, -0.5, 0.5), (6, 0.1, 3.0)]
        .iter()
        .map(|&(seed, lo, hi)| g.add_weight(format!("p{seed}"), seeded(&[8], seed, lo, hi)))
        .collect();
    let bn = g
        .add_node("bn", Op::BatchNorm { epsilon: 1e-5 }, &[ct, params[0], params[1], params[2], params[3]])
        .expect("batchnorm")[0];
    g.add_output("y", bn);
    let g = verify(g).expect("verifies");
    let (opt, sat) = optimize(&g);
    assert_eq!(applied(&sat, "bn-fold-conv-transpose-bias"), 1, "{sat:?}");
    assert!(!opt.display_without_weights().to_string().contains("batchnorm"));
    assert_same_function(&g, &opt, 1e-5);
}

const CONV_AFFINE: &str = r#"graph "conv_affine" {
  %x = input f32[1,2,4,4]
  %w = weight f32[3,2,1,1] [0.5, -1.0, 0.25, 2.0, -0.75, 1.5]
  %k = weight f32[1,3,1,1] [0.5, -2.0, 3.0]
  %c = conv{kernel=[1, 1], strides=[1, 1], dilations=[1, 1], pads=[0, 0, 0, 0], group=1}(%x, %w) : f32[1,3,4,4]
  %y = OP(%k, %c) : f32[1,3,4,4]
  output "y" = %y
}"#;

#[test]
fn affine_fold_fires_on_a_per_channel_add_or_mul_in_either_order() {
    for op in ["add", "mul"] {
        let g = parse(&CONV_AFFINE.replace("OP", op));
        let (opt, sat) = optimize(&g);
        assert_eq!(applied(&sat, "affine-fold-conv-swapped"), 1, "{op}: {sat:?}");
        let text = opt.display_without_weights().to_string();
        assert!(!text.contains(&format!("= {op}(")), "{op}: {text}");
        assert_same_function(&g, &opt, 1e-5);
    }
    let g = parse(&CONV_AFFINE.replace("OP", "add"));
    insta::assert_snapshot!("affine_fold_fires", optimize(&g).0.display_without_weights().to_string());
}

#[test]
fn affine_fold_does_not_fire_on_a_constant_along_the_last_axis_or_a_runtime_operand() {
    // `[3]` broadcasts along W (the last axis), not the channels; `sub` is not folded.
    let along_w = CONV_AFFINE
        .replace("%x = input f32[1,2,4,4]", "%x = input f32[1,2,4,3]")
        .replace("f32[1,3,4,4]", "f32[1,3,4,3]")
        .replace("%k = weight f32[1,3,1,1]", "%k = weight f32[3]")
        .replace("OP", "add");
    let runtime = CONV_AFFINE
        .replace("%k = weight f32[1,3,1,1] [0.5, -2.0, 3.0]", "%k = input f32[1,3,1,1]")
        .replace("OP", "add");
    let sub = CONV_AFFINE.replace("OP", "sub");
    for text in [along_w, runtime, sub] {
        let g = parse(&text);
        let (opt, sat) = optimize(&g);
        assert!(sat.applied.iter().all(|(_, n)| *n == 0), "{text}\n{sat:?}");
        assert_same_function(&g, &opt, 0.0);
    }
}

const HARDSWISH: &str = r#"graph "hs" {
  %x = input f32[1,3,4,5]
  %three = weight f32[] [3.0]
  %six = weight f32[] [6.0]
  %a = add(%x, %three) : f32[1,3,4,5]
  %c = clip{min=0.0, max=6.0}(%a) : f32[1,3,4,5]
  %m = mul(%x, %c) : f32[1,3,4,5]
  %d = div(%m, %six) : f32[1,3,4,5]
  output "y" = %d
}"#;

#[test]
fn hardswish_spelled_out_is_recognized_in_either_operand_order() {
    let orders = [
        HARDSWISH.to_owned(),
        HARDSWISH.replace("add(%x, %three)", "add(%three, %x)").replace("mul(%x, %c)", "mul(%c, %x)"),
    ];
    for text in &orders {
        let g = parse(text);
        let (opt, sat) = optimize(&g);
        let fired: usize = sat.applied.iter().filter(|(n, _)| n.starts_with("hardswish")).map(|(_, c)| c).sum();
        assert_eq!(fired, 1, "{sat:?}");
        assert_same_function(&g, &opt, 1e-6);
    }
    insta::assert_snapshot!("hardswish_fires", optimize(&parse(HARDSWISH)).0.display_without_weights().to_string());
}

#[test]
fn hardswish_is_not_recognized_with_other_constants_or_another_factor() {
    let other_three = HARDSWISH.replace("[3.0]", "[2.0]");
    let other_clip = HARDSWISH.replace("clip{min=0.0, max=6.0}", "clip{min=0.0, max=5.0}");
    let other_factor = HARDSWISH
        .replace("%x = input f32[1,3,4,5]", "%x = input f32[1,3,4,5]\n  %z = input f32[1,3,4,5]")
        .replace("mul(%x, %c)", "mul(%z, %c)");
    for text in [other_three, other_clip, other_factor] {
        let g = parse(&text);
        let (opt, sat) = optimize(&g);
        assert!(sat.applied.iter().all(|(_, n)| *n == 0), "{text}\n{sat:?}");
        assert_same_function(&g, &opt, 0.0);
    }
}

/// A conv whose output goes through SiLU spelled as YOLO exports write it.
const SILU: &str = r#"graph "silu" {
  %x = input f32[1,3,4,5]
  %w = weight f32[4,3,1,1] [0.9, -1.2, 1.3, 0.5, -1.5, 2.5, 1.2, -0.8, 0.2, 1.1, -2.1, 3.1]
  %b = weight f32[4] [0.5, -0.5, 0.25, 0.0]
  %c = conv{kernel=[1, 1], strides=[1, 1], dilations=[1, 1], pads=[0, 0, 0, 0], group=1}(%x, %w, %b) : f32[1,4,4,5]
  %s = sigmoid(%c) : f32[1,4,4,5]
  %y = mul(%c, %s) : f32[1,4,4,5]
  output "y" = %y
}"#;

/// `SILU` with the sigmoid's argument scaled by a constant `%k` first (Swish), in every operand
/// order of the two products.
fn swish_orders() -> Vec<String> {
    let scaled = SILU
        .replace("%b = weight f32[4]", "%k = weight f32[] [1.702]\n  %b = weight f32[4]")
        .replace("%s = sigmoid(%c)", "%t = mul(%c, %k) : f32[1,4,4,5]\n  %s = sigmoid(%t)");
    let beta_first = scaled.replace("mul(%c, %k)", "mul(%k, %c)");
    let mut all = Vec::new();
    for t in [scaled, beta_first] {
        all.push(t.replace("mul(%c, %s)", "mul(%s, %c)"));
        all.push(t);
    }
    all
}

#[test]
fn silu_spelled_out_is_recognized_in_either_operand_order_and_fuses_into_the_conv() {
    for (text, rule) in [(SILU.to_owned(), "silu"), (SILU.replace("mul(%c, %s)", "mul(%s, %c)"), "silu-sx")] {
        let g = parse(&text);
        let (opt, sat) = optimize(&g);
        assert_eq!(applied(&sat, rule), 1, "{sat:?}");
        let out = opt.display_without_weights().to_string();
        assert!(out.contains("act=swish, act-beta=1.0}") && !out.contains("sigmoid") && !out.contains("mul("), "{out}");
        // The reference rounds `x·σ(x)` once where the chain rounds twice: within an ulp.
        assert_same_function(&g, &opt, 1e-6);
        assert_jit_matches_reference(&opt);
    }
    insta::assert_snapshot!("silu_fires", optimize(&parse(SILU)).0.display_without_weights().to_string());
}

#[test]
fn swish_with_a_constant_beta_is_recognized_in_every_operand_order() {
    for text in swish_orders() {
        let g = parse(&text);
        let (opt, sat) = optimize(&g);
        let fired: usize = sat.applied.iter().filter(|(n, _)| n.starts_with("swish")).map(|(_, c)| c).sum();
        assert_eq!(fired, 1, "{text}\n{sat:?}");
        let out = opt.display_without_weights().to_string();
        assert!(out.contains("act=swish, act-beta=1.702}") && !out.contains("mul("), "{out}");
        assert_same_function(&g, &opt, 1e-6);
        assert_jit_matches_reference(&opt);
    }
}

#[test]
fn silu_is_not_recognized_for_a_gate_a_sum_a_per_channel_or_runtime_beta() {
    let gate = SILU
        .replace("%x = input f32[1,3,4,5]", "%x = input f32[1,3,4,5]\n  %z = input f32[1,4,4,5]")
        .replace("mul(%c, %s)", "mul(%z, %s)");
    let sum = SILU.replace("mul(%c, %s)", "add(%c, %s)");
    let scaled = &swish_orders()[1];
    let per_channel = scaled.replace("%k = weight f32[] [1.702]", "%k = weight f32[1,4,1,1] [1.0, 2.0, 1.0, 1.702]");
    let runtime = scaled.replace("%k = weight f32[] [1.702]", "%k = input f32[]");
    for text in [gate, sum, per_channel, runtime] {
        let g = parse(&text);
        let (opt, sat) = optimize(&g);
        let fired: usize =
            sat.applied.iter().filter(|(n, _)| n.starts_with("silu") || n.starts_with("swish")).map(|(_, c)| c).sum();
        assert_eq!(fired, 0, "{text}\n{sat:?}");
        assert!(opt.display_without_weights().to_string().contains("sigmoid"), "{text}");
        // The per-channel scale folds into the conv's weights instead (another rule).
        assert_same_function(&g, &opt, 1e-6);
    }
}

/// A conv with bias, a residual add and an activation: the ResNet block tail.
const CONV_ADD_ACT: &str = r#"graph "conv_add_act" {
  %x = input f32[1,3,6,6]
  %r = input f32[1,4,6,6]
  %w = weight f32[4,3,1,1] [0.1, -0.2, 0.3, 0.05, -0.15, 0.25, 0.12, -0.08, 0.02, 0.11, -0.21, 0.31]
  %b = weight f32[4] [0.5, -0.5, 0.25, 0.0]
  %c = conv{kernel=[1, 1], strides=[1, 1], dilations=[1, 1], pads=[0, 0, 0, 0], group=1}(%x, %w, %b) : f32[1,4,6,6]
  %s = add(%c, %r) : f32[1,4,6,6]
  %y = relu(%s) : f32[1,4,6,6]
  output "y" = %y
}"#;

/// The JIT runs `g` like the reference does (the fused kernels are reached from the IR op).
/// Tolerance 1e-6: the kernels sum in f32 in another order than the f64 reference (see
/// runtime/src/codegen/epilogue_tests.rs); a missed residual or activation is off by ≫ 1e-2.
fn assert_jit_matches_reference(g: &VerifiedGraph) {
    let inputs: Vec<Tensor> = g
        .inputs()
        .iter()
        .enumerate()
        .map(|(i, &id)| seeded(&g.node(id).outputs[0].shape, 7 + i as u32, -1.0, 1.0))
        .collect();
    let want = run_reference(g, &inputs).expect("reference");
    let got = Model::compile(g).expect("compiles").run(&inputs).expect("runs");
    for (g, w) in got.iter().zip(&want) {
        let e = rel_l2(g, w);
        assert!(e <= 1e-6, "JIT vs reference: rel-L2 {e:.3e}");
    }
}

#[test]
fn fusion_puts_the_residual_add_and_the_activation_into_the_conv() {
    for text in [CONV_ADD_ACT.to_owned(), CONV_ADD_ACT.replace("add(%c, %r)", "add(%r, %c)")] {
        let g = parse(&text);
        let (opt, sat) = optimize(&g);
        assert_eq!(applied(&sat, "fuse-residual"), 1, "{sat:?}");
        assert!(applied(&sat, "fuse-activation") >= 1, "{sat:?}");
        let text = opt.display_without_weights().to_string();
        assert!(text.contains("fused-conv{") && text.contains("act=relu, residual=true}"), "{text}");
        // Exactly the unfused ops, in order: the reference gives the same bits.
        assert_same_function(&g, &opt, 0.0);
        assert_jit_matches_reference(&opt);
    }
    insta::assert_snapshot!(
        "fuse_conv_add_relu",
        optimize(&parse(CONV_ADD_ACT)).0.display_without_weights().to_string()
    );
}

#[test]
fn fusion_takes_every_inline_activation_and_gemm_and_matmul_bases() {
    for act in [
        "hard-swish",
        "sigmoid",
        "leaky-relu{alpha=0.1}",
        "clip{min=0.0, max=6.0}",
        "hard-sigmoid{alpha=0.2, beta=0.5}",
        "swish{beta=1.702}",
    ] {
        let g = parse(&CONV_ADD_ACT.replace("relu(%s)", &format!("{act}(%s)")));
        let (opt, sat) = optimize(&g);
        assert_eq!(applied(&sat, "fuse-residual"), 1, "{act}: {sat:?}");
        let name = act.split('{').next().expect("a name");
        let text = opt.display_without_weights().to_string();
        assert!(text.contains(&format!("act={name}")) && !text.contains("add("), "{act}: {text}");
        assert_same_function(&g, &opt, 0.0);
        assert_jit_matches_reference(&opt);
    }
    let gemm = r#"graph "gemm_sigmoid" {
  %a = input f32[2,3]
  %r = input f32[2,4]
  %b = weight f32[3,4] [0.1, -0.2, 0.3, 0.05, -0.15, 0.25, 0.12, -0.08, 0.02, 0.11, -0.21, 0.31]
  %c = weight f32[4] [0.5, -0.5, 0.25, 0.0]
  %g = gemm{alpha=1.0, beta=1.0, trans-a=false, trans-b=false}(%a, %b, %c) : f32[2,4]
  %m = matmul(%a, %b) : f32[2,4]
  %gs = sigmoid(%g) : f32[2,4]
  %ms = add(%m, %r) : f32[2,4]
  %mr = relu(%ms) : f32[2,4]
  %y = add(%gs, %mr) : f32[2,4]
  output "y" = %y
}"#;
    let g = parse(gemm);
    let (opt, _) = optimize(&g);
    let text = opt.display_without_weights().to_string();
    assert!(text.contains("fused-gemm{") && text.contains("fused-matmul{act=relu, residual=true}"), "{text}");
    assert_same_function(&g, &opt, 0.0);
    assert_jit_matches_reference(&opt);
}

#[test]
fn fusion_does_not_fire_for_an_activation_before_the_add_a_broadcast_add_prelu_or_tanh() {
    // act(conv) + r: the kernel computes act(acc + r), so only the activation fuses.
    let act_first = CONV_ADD_ACT
        .replace("%s = add(%c, %r)", "%a = relu(%c) : f32[1,4,6,6]\n  %s = add(%a, %r)")
        .replace("%y = relu(%s)", "%y = sigmoid(%s)");
    let g = parse(&act_first);
    let (opt, sat) = optimize(&g);
    assert_eq!(applied(&sat, "fuse-residual"), 0, "{sat:?}");
    let text = opt.display_without_weights().to_string();
    assert!(text.contains("fused-conv{") && text.contains("act=relu}") && text.contains("add("), "{text}");
    assert_same_function(&g, &opt, 0.0);
    // A per-channel residual broadcasts: not a residual of the output's type.
    let broadcast = CONV_ADD_ACT.replace("%r = input f32[1,4,6,6]", "%r = input f32[1,4,1,1]");
    let (_, sat) = optimize(&parse(&broadcast));
    assert_eq!(applied(&sat, "fuse-residual"), 0, "{sat:?}");
    // Tanh has no inline kernel; PReLU's slope is a tensor.
    let tanh = CONV_ADD_ACT.replace("%s = add(%c, %r) : f32[1,4,6,6]\n  %y = relu(%s)", "%y = tanh(%c)");
    let prelu = CONV_ADD_ACT.replace("add(%c, %r)", "prelu(%c, %r)");
    for text in [tanh, prelu] {
        let g = parse(&text);
        let (opt, sat) = optimize(&g);
        assert!(sat.applied.iter().filter(|(r, _)| r.starts_with("fuse")).all(|(_, n)| *n == 0), "{text}\n{sat:?}");
        assert!(!opt.display_without_weights().to_string().contains("fused-"));
    }
}

/// `conv(y · s + t)`: a per-channel affine on a grouped conv's input.
const AFFINE_INPUT: &str = r#"graph "affine_input" {
  %y = input f32[1,4,5,5]
  %s = weight f32[1,4,1,1] [0.5, -1.5, 2.0, 0.25]
  %t = weight f32[] [0.3]
  %w = weight f32[6,2,1,1] [0.1, -0.2, 0.3, 0.05, -0.15, 0.25, 0.12, -0.08, 0.02, 0.11, -0.21, 0.31]
  %b = weight f32[6] [0.5, -0.5, 0.25, 0.0, 1.0, -1.0]
  %m = mul(%y, %s) : f32[1,4,5,5]
  %a = add(%t, %m) : f32[1,4,5,5]
  %c = conv{kernel=[1, 1], strides=[1, 1], dilations=[1, 1], pads=[0, 0, 0, 0], group=2}(%a, %w, %b) : f32[1,6,5,5]
  output "c" = %c
}"#;

#[test]
fn an_affine_on_a_conv_input_folds_into_its_weights_and_bias() {
    let g = parse(AFFINE_INPUT);
    let (opt, sat) = optimize(&g);
    assert_eq!(applied(&sat, "affine-input-add-bias-swapped"), 1, "{sat:?}");
    assert!(applied(&sat, "affine-input-mul-bias") >= 1, "{sat:?}");
    insta::assert_snapshot!("affine_input_fires", opt.display_without_weights().to_string());
    assert_same_function(&g, &opt, 1e-5);
    // A scale also folds into a padded 3×3 conv (zero padding commutes with it).
    let padded = AFFINE_INPUT
        .replace("%w = weight f32[6,2,1,1] [", "%w = weight f32[6,2,3,3] [")
        .replace("0.11, -0.21, 0.31]", &format!("0.11, -0.21, 0.31{}]", ", 0.07, -0.13".repeat(48)))
        .replace("%a = add(%t, %m) : f32[1,4,5,5]\n", "")
        .replace(
            "conv{kernel=[1, 1], strides=[1, 1], dilations=[1, 1], pads=[0, 0, 0, 0], group=2}(%a,",
            "conv{kernel=[3, 3], strides=[1, 1], dilations=[1, 1], pads=[1, 1, 1, 1], group=2}(%m,",
        );
    let g = parse(&padded);
    let (opt, sat) = optimize(&g);
    assert_eq!(applied(&sat, "affine-input-mul-bias"), 1, "{sat:?}");
    assert!(!opt.display_without_weights().to_string().contains("mul("));
    assert_same_function(&g, &opt, 1e-5);
}

#[test]
fn a_shift_does_not_fold_into_a_padded_conv_nor_a_pixel_varying_constant() {
    let padded = AFFINE_INPUT
        .replace("%w = weight f32[6,2,1,1] [", "%w = weight f32[6,2,3,3] [")
        .replace("0.11, -0.21, 0.31]", &format!("0.11, -0.21, 0.31{}]", ", 0.07, -0.13".repeat(48)))
        .replace("pads=[0, 0, 0, 0], group=2", "pads=[1, 1, 1, 1], group=2")
        .replace("kernel=[1, 1]", "kernel=[3, 3]");
    let g = parse(&padded);
    let (opt, sat) = optimize(&g);
    assert_eq!(sat.applied.iter().filter(|(r, _)| r.starts_with("affine-input-add")).map(|(_, n)| n).sum::<usize>(), 0);
    assert!(opt.display_without_weights().to_string().contains("add("), "the shift stays");
    assert_same_function(&g, &opt, 1e-5);
    let varying = AFFINE_INPUT.replace(
        "%s = weight f32[1,4,1,1] [0.5, -1.5, 2.0, 0.25]",
        &format!("%s = weight f32[1,1,5,5] [{}]", ["0.5"; 25].join(", ")),
    );
    let (_, sat) = optimize(&parse(&varying));
    assert_eq!(sat.applied.iter().filter(|(r, _)| r.starts_with("affine-input-mul")).map(|(_, n)| n).sum::<usize>(), 0);
}

/// `Linear → BatchNorm1d` as exported: a Gemm (B transposed, β = 0.5) and a BatchNorm over its
/// 3 output columns.
const GEMM_BN: &str = r#"graph "gemm_bn" {
  %x = input f32[2,4]
  %w = weight f32[3,4] [0.1, -0.2, 0.3, 0.05, -0.15, 0.25, 0.12, -0.08, 0.02, 0.11, -0.21, 0.31]
  %c = weight f32[3] [0.5, -0.5, 0.25]
  %s = weight f32[3] [1.5, 0.5, -2.0]
  %t = weight f32[3] [0.1, 0.2, 0.3]
  %m = weight f32[3] [0.05, -0.1, 0.2]
  %v = weight f32[3] [1.0, 0.25, 4.0]
  %g = gemm{alpha=1.5, beta=0.5, trans-a=false, trans-b=true}(%x, %w, %c) : f32[2,3]
  %y = batchnorm{epsilon=1e-5}(%g, %s, %t, %m, %v) : f32[2,3]
  output "y" = %y
}"#;

#[test]
fn bn_fold_fires_on_a_gemm_in_either_weight_layout_and_with_any_bias_form() {
    let g = parse(GEMM_BN);
    let (opt, sat) = optimize(&g);
    assert_eq!(applied(&sat, "bn-fold-gemm-bias"), 1, "{sat:?}");
    insta::assert_snapshot!("bn_fold_gemm_fires", opt.display_without_weights().to_string());
    assert_same_function(&g, &opt, 1e-5);
    let untransposed =
        GEMM_BN.replace("%w = weight f32[3,4]", "%w = weight f32[4,3]").replace("trans-b=true", "trans-b=false");
    for (text, rule) in [
        (untransposed, "bn-fold-gemm-bias"),
        (
            GEMM_BN.replace("%c = weight f32[3] [0.5, -0.5, 0.25]", "%c = weight f32[1,3] [0.5, -0.5, 0.25]"),
            "bn-fold-gemm-bias",
        ),
        (GEMM_BN.replace("%c = weight f32[3] [0.5, -0.5, 0.25]", "%c = weight f32[] [0.75]"), "bn-fold-gemm-bias"),
        (
            GEMM_BN.replace("(%x, %w, %c)", "(%x, %w)").replace("  %c = weight f32[3] [0.5, -0.5, 0.25]\n", ""),
            "bn-fold-gemm",
        ),
    ] {
        let g = parse(&text);
        let (opt, sat) = optimize(&g);
        assert_eq!(applied(&sat, rule), 1, "{text}: {sat:?}");
        assert!(!opt.display_without_weights().to_string().contains("batchnorm"), "{text}");
        assert_same_function(&g, &opt, 1e-5);
    }
}

#[test]
fn bn_fold_does_not_fire_on_a_gemm_whose_bias_varies_per_row() {
    let text = GEMM_BN
        .replace("%c = weight f32[3] [0.5, -0.5, 0.25]", "%c = weight f32[2,3] [0.5, -0.5, 0.25, 0.1, 0.2, 0.3]");
    let g = parse(&text);
    let (opt, sat) = optimize(&g);
    assert_eq!(applied(&sat, "bn-fold-gemm-bias"), 0, "{sat:?}");
    assert!(opt.display_without_weights().to_string().contains("batchnorm"));
    assert_same_function(&g, &opt, 0.0);
}

/// PP-LCNetV3's learnable affine block, `s · y + t` (scalars), before a padded depthwise conv.
const LEARNABLE_AFFINE: &str = r#"graph "learnable_affine" {
  %y = input f32[1,4,5,5]
  %s = weight f32[1] [0.75]
  %t = weight f32[1] [0.3]
  %w = weight f32[4,1,3,3] [0.1, -0.2, 0.3, 0.05, -0.15, 0.25, 0.12, -0.08, 0.02, 0.11, -0.21, 0.31, 0.06, -0.16, 0.26, 0.13, -0.09, 0.03, 0.1, -0.2, 0.3, 0.05, -0.15, 0.25, 0.12, -0.08, 0.02, 0.4, -0.1, 0.2, 0.07, -0.17, 0.27, 0.14, -0.04, 0.01]
  %b = weight f32[4] [0.5, -0.5, 0.25, 0.0]
  %m = mul(%s, %y) : f32[1,4,5,5]
  %a = add(%m, %t) : f32[1,4,5,5]
  %c = conv{kernel=[3, 3], strides=[1, 1], dilations=[1, 1], pads=[1, 1, 1, 1], group=4}(%a, %w, %b) : f32[1,4,5,5]
  output "c" = %c
}"#;

#[test]
fn a_scalar_affine_before_a_padded_conv_reorders_so_its_scale_folds() {
    let g = parse(LEARNABLE_AFFINE);
    let (opt, sat) = optimize(&g);
    assert_eq!(applied(&sat, "affine-reorder-scale-first"), 1, "{sat:?}");
    assert!(applied(&sat, "affine-input-mul-bias") >= 1, "{sat:?}");
    let text = opt.display_without_weights().to_string();
    assert!(text.contains("add(") && !text.contains("mul("), "the shift stays, the scale folds: {text}");
    insta::assert_snapshot!("affine_reorder_fires", text);
    // t/s is rounded once and the conv reads y + t/s: a few ulps.
    assert_same_function(&g, &opt, 1e-6);
}

#[test]
fn affine_reorder_does_not_fire_on_a_zero_or_per_channel_scale() {
    for (from, to) in [
        ("%s = weight f32[1] [0.75]", "%s = weight f32[1] [0.0]"),
        ("%s = weight f32[1] [0.75]", "%s = weight f32[1,4,1,1] [0.75, 0.5, -1.0, 2.0]"),
        ("%t = weight f32[1] [0.3]", "%t = weight f32[1,4,1,1] [0.3, 0.1, 0.2, -0.4]"),
    ] {
        let g = parse(&LEARNABLE_AFFINE.replace(from, to));
        let (opt, sat) = optimize(&g);
        let n: usize = sat.applied.iter().filter(|(r, _)| r.starts_with("affine-reorder")).map(|(_, n)| n).sum();
        assert_eq!(n, 0, "{to}: {sat:?}");
        assert_same_function(&g, &opt, 1e-6);
    }
}

/// An NHWC export's transposes around a conv, reshape chains and no-op movement.
const MOVEMENT: &str = r#"graph "movement" {
  %x = input f32[1,8,8,3]
  %w = weight f32[2,3,1,1] [0.1, -0.2, 0.3, 0.05, -0.15, 0.25]
  %t = transpose{perm=[0, 3, 1, 2]}(%x) : f32[1,3,8,8]
  %t2 = transpose{perm=[0, 2, 3, 1]}(%t) : f32[1,8,8,3]
  %t3 = transpose{perm=[0, 3, 1, 2]}(%t2) : f32[1,3,8,8]
  %c = conv{kernel=[1, 1], strides=[1, 1], dilations=[1, 1], pads=[0, 0, 0, 0], group=1}(%t3, %w) : f32[1,2,8,8]
  %p = pad{pads=[0, 0, 0, 0, 0, 0, 0, 0], mode=constant, value=0.0}(%c) : f32[1,2,8,8]
  %s = slice{axes=[[2, 0, 8, 1]]}(%p) : f32[1,2,8,8]
  %k = cast{to=f32}(%s) : f32[1,2,8,8]
  %k2 = reshape{shape=[1, 2, 8, 8]}(%k) : f32[1,2,8,8]
  %r1 = reshape{shape=[1, 128]}(%k2) : f32[1,128]
  %r2 = reshape{shape=[2, 64]}(%r1) : f32[2,64]
  %e = expand{shape=[2, 64]}(%r2) : f32[2,64]
  %q = concat{axis=0}(%e) : f32[2,64]
  output "y" = %q
}"#;

#[test]
fn redundant_transposes_reshapes_and_noop_movement_come_out_clean() {
    let g = parse(MOVEMENT);
    let (opt, sat) = optimize(&g);
    for rule in [
        "transpose-transpose",
        "reshape-reshape",
        "noop-reshape",
        "noop-pad",
        "noop-slice",
        "noop-cast",
        "noop-expand",
        "noop-concat",
    ] {
        assert!(applied(&sat, rule) >= 1, "{rule}: {sat:?}");
    }
    insta::assert_snapshot!("movement_cleans_up", opt.display_without_weights().to_string());
    assert_same_function(&g, &opt, 0.0);
    assert_jit_matches_reference(&opt);
}

#[test]
fn movement_that_changes_data_is_kept() {
    // A reversing slice, a cropping pad, a real transpose and a cast to another dtype stay.
    let text = MOVEMENT
        .replace("[[2, 0, 8, 1]]", "[[2, 7, -1, -1]]")
        .replace(
            "%t2 = transpose{perm=[0, 2, 3, 1]}(%t) : f32[1,8,8,3]",
            "%t2 = transpose{perm=[0, 2, 1, 3]}(%t) : f32[1,8,3,8]",
        )
        .replace(
            "%t3 = transpose{perm=[0, 3, 1, 2]}(%t2) : f32[1,3,8,8]",
            "%t3 = transpose{perm=[0, 2, 1, 3]}(%t2) : f32[1,3,8,8]",
        );
    let g = parse(&text);
    let (opt, sat) = optimize(&g);
    assert_eq!(applied(&sat, "noop-slice"), 0, "{sat:?}");
    let printed = opt.display_without_weights().to_string();
    assert!(printed.contains("slice{axes=[[2, 7, -1, -1]]}"), "{printed}");
    // transpose [0,2,1,3] then [0,2,1,3] is the identity; [0,3,1,2] after them stays.
    assert_eq!(printed.matches("transpose{").count(), 1, "{printed}");
    assert_same_function(&g, &opt, 0.0);
    let cast = parse(&MOVEMENT.replace(
        "%k = cast{to=f32}(%s) : f32[1,2,8,8]",
        "%k0 = cast{to=i64}(%s) : i64[1,2,8,8]\n  %k = cast{to=f32}(%k0) : f32[1,2,8,8]",
    ));
    let (opt, _) = optimize(&cast);
    assert!(opt.display_without_weights().to_string().contains("cast{to=i64}"), "f32 → i64 → f32 truncates");
}

#[test]
fn a_graph_reduced_to_its_input_still_compiles_and_runs() {
    let g = parse(
        r#"graph "noop" {
  %x = input f32[1,3]
  %r = reshape{shape=[1, 3]}(%x) : f32[1,3]
  output "y" = %r
}"#,
    );
    let (opt, sat) = optimize(&g);
    assert_eq!(applied(&sat, "noop-reshape"), 1, "{sat:?}");
    assert_eq!(opt.node_count(), 1, "{}", opt.display_without_weights());
    assert_same_function(&g, &opt, 0.0);
    assert_jit_matches_reference(&opt);
}

const PAD_CONV: &str = r#"graph "pad_conv" {
  %x = input f32[1,2,6,6]
  %w = weight f32[1,2,3,3] [0.1, -0.2, 0.3, 0.05, -0.15, 0.25, 0.12, -0.08, 0.02, 0.11, -0.21, 0.31, 0.06, -0.16, 0.26, 0.13, -0.09, 0.03]
  %p = pad{pads=[0, 0, 1, 0, 0, 0, 2, 1], mode=constant, value=0.0}(%x) : f32[1,2,9,7]
  %c = conv{kernel=[3, 3], strides=[2, 1], dilations=[1, 1], pads=[1, 1, 1, 1], group=1}(%p, %w) : f32[1,1,5,7]
  %q = pad{pads=[0, 0, 1, 1, 0, 0, 1, 1], mode=constant, value=-inf}(%c) : f32[1,1,7,9]
  %m = max-pool{kernel=[2, 2], strides=[2, 2], dilations=[1, 1], pads=[0, 0, 0, 0], ceil-mode=false}(%q) : f32[1,1,3,4]
  output "y" = %m
}"#;

#[test]
fn an_explicit_pad_folds_into_the_conv_or_pool_window() {
    let g = parse(PAD_CONV);
    let (opt, sat) = optimize(&g);
    assert_eq!(applied(&sat, "pad-fold-conv-no-bias"), 1, "{sat:?}");
    assert_eq!(applied(&sat, "pad-fold-max-pool"), 1, "{sat:?}");
    insta::assert_snapshot!("pad_fold_fires", opt.display_without_weights().to_string());
    assert_same_function(&g, &opt, 0.0);
    assert_jit_matches_reference(&opt);
}

#[test]
fn a_pad_that_is_not_the_window_padding_stays() {
    let cases = [
        PAD_CONV.replace("mode=constant, value=0.0", "mode=reflect, value=0.0"),
        PAD_CONV.replace("mode=constant, value=0.0", "mode=constant, value=1.0"),
        // Channel padding, and cropping.
        PAD_CONV
            .replace(
                "pads=[0, 0, 1, 0, 0, 0, 2, 1], mode=constant, value=0.0}(%x) : f32[1,2,9,7]",
                "pads=[0, 1, 1, 0, 0, 0, 2, 1], mode=constant, value=0.0}(%x) : f32[1,3,9,7]",
            )
            .replace(
                "%w = weight f32[1,2,3,3] [",
                "%w = weight f32[1,3,3,3] [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, ",
            ),
        PAD_CONV
            .replace(
                "pads=[0, 0, 1, 0, 0, 0, 2, 1], mode=constant, value=0.0}(%x) : f32[1,2,9,7]",
                "pads=[0, 0, 1, 0, 0, 0, 2, -1], mode=constant, value=0.0}(%x) : f32[1,2,9,5]",
            )
            .replace(": f32[1,1,5,7]", ": f32[1,1,5,5]")
            .replace(": f32[1,1,7,9]", ": f32[1,1,7,7]")
            .replace(": f32[1,1,3,4]", ": f32[1,1,3,3]"),
        // A zero pad before a max-pool.
        PAD_CONV.replace("value=-inf", "value=0.0"),
    ];
    for (i, text) in cases.iter().enumerate() {
        let g = parse(text);
        let (opt, sat) = optimize(&g);
        let fired: usize = sat.applied.iter().filter(|(r, _)| r.starts_with("pad-fold")).map(|(_, n)| n).sum();
        // Only the other one of the two pads folds.
        assert_eq!(fired, 1, "case {i}: {sat:?}");
        assert!(opt.display_without_weights().to_string().contains("pad{"), "case {i}");
        assert_same_function(&g, &opt, 0.0);
    }
}

const DENSE: &str = r#"graph "dense" {
  %x = input f32[1,3]
  %w = weight f32[3,2] [0.1, -0.2, 0.3, 0.05, -0.15, 0.25]
  %b = weight f32[2] [0.5, -0.5]
  %m = matmul(%x, %w) : f32[1,2]
  %y = add(%b, %m) : f32[1,2]
  %r = relu(%y) : f32[1,2]
  output "y" = %r
}"#;

#[test]
fn a_dense_layer_spelled_as_matmul_and_add_becomes_one_fused_gemm() {
    let g = parse(DENSE);
    let (opt, sat) = optimize(&g);
    assert_eq!(applied(&sat, "matmul-bias-to-gemm-swapped"), 1, "{sat:?}");
    let text = opt.display_without_weights().to_string();
    assert!(
        text.contains("fused-gemm{alpha=1.0, beta=1.0, trans-a=false, trans-b=false, act=relu}(%x, %w, %b)"),
        "{text}"
    );
    assert_same_function(&g, &opt, 0.0);
    assert_jit_matches_reference(&opt);
    // A bias that broadcasts the product to more rows, or a runtime bias, stays an add.
    for text in [
        DENSE
            .replace("%b = weight f32[2] [0.5, -0.5]", "%b = weight f32[2,1] [0.5, -0.5]")
            .replace(": f32[1,2]\n  %r", ": f32[2,2]\n  %r")
            .replace("relu(%y) : f32[1,2]", "relu(%y) : f32[2,2]"),
        DENSE.replace("%b = weight f32[2] [0.5, -0.5]", "%b = input f32[2]"),
    ] {
        let g = parse(&text);
        let (opt, sat) = optimize(&g);
        assert_eq!(
            sat.applied.iter().filter(|(r, _)| r.starts_with("matmul-bias")).map(|(_, n)| n).sum::<usize>(),
            0,
            "{text}"
        );
        assert!(opt.display_without_weights().to_string().contains("add("));
    }
}

/// `-O1` as the compiler runs it: every exact rule, then extraction priced by the cost table
/// (here filled from the MAC estimate, the oracle the int8 tests use).
fn optimize_o1(g: &VerifiedGraph) -> (VerifiedGraph, Saturation) {
    let mut table = TableCost::new(1);
    let (out, report) = optimize_exact(g, &OptConfig::lossless(), &mut table, &mut mac_estimate).expect("optimizes");
    (verify(out).expect("the optimized graph verifies"), report.saturation)
}

/// The `lookup` nodes of `g`: each table's shape and its operands' producers, sorted.
fn lookups(g: &VerifiedGraph) -> Vec<(Vec<usize>, Vec<String>)> {
    let mut found: Vec<_> = g
        .node_ids()
        .filter(|&id| g.node(id).op == Op::Lookup)
        .map(|id| {
            let inputs = g.node_inputs(id);
            let table = g.weight_of(&inputs[0]).expect("a lookup's table is a weight");
            let mut operands: Vec<String> = inputs[1..].iter().map(|v| g.node(v.node).name.clone()).collect();
            operands.sort();
            (table.shape().to_vec(), operands)
        })
        .collect();
    found.sort();
    found
}

/// Inputs for a QDQ graph: of `n` 8-bit inputs, input `k` takes byte `k` (from the top) of
/// `40503·i mod 256ⁿ` at element `i`, a bijection, so `256ⁿ` elements take every combination
/// of values; f32 inputs are seeded in [−4, 4].
fn qdq_inputs(g: &VerifiedGraph) -> Vec<Tensor> {
    let types: Vec<_> = g.inputs().iter().map(|&id| g.node(id).outputs[0].clone()).collect();
    let n = types.iter().filter(|t| t.dtype.is_quantized()).count() as u32;
    let mut k = 0;
    (types.iter().enumerate())
        .map(|(i, t)| {
            if !t.dtype.is_quantized() {
                return seeded(&t.shape, 11 + i as u32, -4.0, 4.0);
            }
            k += 1;
            let shift = 8 * (n - k);
            let modulus = 1u64 << (8 * n);
            let v: Vec<u8> = (0..t.numel() as u64).map(|e| ((e * 40_503 % modulus) >> shift) as u8).collect();
            match t.dtype {
                DType::U8 => Tensor::from_u8(t.shape.clone(), v),
                _ => Tensor::from_i8(t.shape.clone(), v.into_iter().map(|b| b as i8).collect()),
            }
            .expect("shape")
        })
        .collect()
}

/// `opt` computes what `g` does bit for bit on `inputs`, in the reference interpreter and in
/// the JIT (tolerance 0: qdq-lookup tabulates the reference's own scalar arithmetic, except a
/// quantized sum of two dequantized values, see [`assert_adds_within_one_step`], and the
/// other rules leave these element-wise chains alone).
fn assert_same_bits(g: &VerifiedGraph, opt: &VerifiedGraph, inputs: &[Tensor]) {
    let bits = |ts: Vec<Tensor>| -> Vec<_> { ts.iter().map(|t| (t.ty(), t.data().to_le_bytes())).collect() };
    let want = bits(run_reference(g, inputs).expect("reference before"));
    assert!(want == bits(run_reference(opt, inputs).expect("reference after")), "reference: before vs after -O1");
    let jit = Model::compile(opt).expect("compiles").run(inputs).expect("runs");
    assert!(want == bits(jit), "JIT after -O1 vs reference before");
}

/// As [`assert_same_bits`] for chains with `quantize(dequantize(a) + dequantize(b))`, which
/// qdq-lookup tabulates with onnxruntime's arithmetic (one rounding of the reassociated sum;
/// see `qdq_lookup_adds_quantized_values_as_onnxruntime_does`): the JIT equals the reference of
/// `opt` bit for bit, and `opt` is within one step of `g` (the QDQ form rounds differently on
/// near-ties only), equal on at least 3 of 4 elements (the tests' decimal scales such as 0.1 and
/// 0.3 put many sums within rounding of a tie: 37 of 256 differ in the nested test).
fn assert_adds_within_one_step(g: &VerifiedGraph, opt: &VerifiedGraph, inputs: &[Tensor]) {
    let before = run_reference(g, inputs).expect("reference before");
    let after = run_reference(opt, inputs).expect("reference after");
    let jit = Model::compile(opt).expect("compiles").run(inputs).expect("runs");
    let bits = |ts: &[Tensor]| -> Vec<_> { ts.iter().map(|t| (t.ty(), t.data().to_le_bytes())).collect() };
    assert!(bits(&after) == bits(&jit), "JIT after -O1 vs reference after");
    assert_eq!(before.len(), after.len());
    for (b, a) in before.iter().zip(&after) {
        let (b, a) = (cnnc_tests::values_f64(b), cnnc_tests::values_f64(a));
        assert_eq!(b.len(), a.len());
        assert!(b.iter().zip(&a).all(|(x, y)| (x - y).abs() <= 1.0), "more than one step apart");
        let equal = b.iter().zip(&a).filter(|(x, y)| x == y).count();
        assert!(equal * 4 >= 3 * b.len(), "{equal} of {} equal", b.len());
    }
}

/// onnxruntime's QDQ HardSwish: `q(dq(c) · dq(q(hard-sigmoid(dq(c)))))`.
const QDQ_HARDSWISH: &str = r#"graph "qdq_hardswish" {
  %x = input f32[2,4,8,8]
  %c = quantize{to=u8, scales=[0.05], zero-points=[128]}(%x) : u8[2,4,8,8]
  %d = dequantize{scales=[0.05], zero-points=[128]}(%c) : f32[2,4,8,8]
  %h = hard-sigmoid{alpha=0.16666667, beta=0.5}(%d) : f32[2,4,8,8]
  %hq = quantize{to=u8, scales=[0.003921569], zero-points=[0]}(%h) : u8[2,4,8,8]
  %hd = dequantize{scales=[0.003921569], zero-points=[0]}(%hq) : f32[2,4,8,8]
  %m = mul(%d, %hd) : f32[2,4,8,8]
  %y = quantize{to=u8, scales=[0.025], zero-points=[10]}(%m) : u8[2,4,8,8]
  output "y" = %y
}"#;

#[test]
fn qdq_lookup_turns_a_quantized_hardswish_into_one_256_entry_table() {
    let g = parse(QDQ_HARDSWISH);
    let (opt, sat) = optimize_o1(&g);
    assert!(applied(&sat, "qdq-lookup") >= 1, "{sat:?}");
    // The inner quantize is looked through: one operand, `%c`; nothing else is left.
    assert_eq!(lookups(&opt), [(vec![256], vec!["c".to_owned()])], "{}", opt.display_without_weights());
    let ops: Vec<&str> =
        opt.node_ids().map(|id| opt.node(id).op.name()).filter(|n| !matches!(*n, "input" | "weight")).collect();
    assert_eq!(ops.len(), 2, "{ops:?}");
    assert!(ops.contains(&"quantize") && ops.contains(&"lookup"), "{ops:?}");
    // `%c` takes each of its 256 values once ((k − 128)·0.05 quantizes to k), then values that
    // saturate or are NaN.
    let mut x: Vec<f32> = (0..256).map(|k| (k as f32 - 128.0) * 0.05).collect();
    let specials = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e30, -1e30, 0.025, -0.075, -0.0];
    x.extend((0..256).map(|i| specials.get(i).copied().unwrap_or((i as f32 - 128.0) * 0.0371)));
    assert_same_bits(&g, &opt, &[Tensor::from_f32(vec![2, 4, 8, 8], x).expect("512 values")]);
}

/// A ResNet residual between two quantized tensors: `q(relu(dq(a) + dq(b)))`.
const QDQ_RESIDUAL: &str = r#"graph "qdq_residual" {
  %a = input u8[256,256]
  %b = input i8[256,256]
  %da = dequantize{scales=[0.02], zero-points=[100]}(%a) : f32[256,256]
  %db = dequantize{scales=[0.03], zero-points=[-5]}(%b) : f32[256,256]
  %s = add(%da, %db) : f32[256,256]
  %r = relu(%s) : f32[256,256]
  %y = quantize{to=u8, scales=[0.04], zero-points=[0]}(%r) : u8[256,256]
  output "y" = %y
}"#;

#[test]
fn qdq_lookup_turns_a_quantized_residual_add_into_one_65536_entry_table() {
    let g = parse(QDQ_RESIDUAL);
    let (opt, sat) = optimize_o1(&g);
    assert!(applied(&sat, "qdq-lookup") >= 1, "{sat:?}");
    assert_eq!(lookups(&opt), [(vec![65536], vec!["a".to_owned(), "b".to_owned()])]);
    assert_eq!(opt.node_ids().filter(|&id| !opt.node(id).op.is_source()).count(), 1, "{}", *opt);
    // 65,536 elements: every (a, b) pair once.
    assert_same_bits(&g, &opt, &qdq_inputs(&g));
}

/// `q(dq(x)·k + b)` with single-valued constants `k` and `b` (the shapes are filled in).
const QDQ_AFFINE: &str = r#"graph "qdq_affine" {
  %x = input i8[2,128]
  %k = weight f32K [0.75]
  %b = weight f32B [-1.5]
  %d = dequantize{scales=[0.1], zero-points=[3]}(%x) : f32[2,128]
  %m = mul(%d, %k) : f32[2,128]
  %s = add(%b, %m) : f32[2,128]
  %y = quantize{to=i8, scales=[0.07], zero-points=[-2]}(%s) : i8[2,128]
  output "y" = %y
}"#;

#[test]
fn qdq_lookup_folds_constants_of_shape_1_and_scalar_into_the_table() {
    for (k, b) in [("[1]", "[]"), ("[]", "[1]"), ("[]", "[]"), ("[1]", "[1]")] {
        let g = parse(&QDQ_AFFINE.replace("f32K", &format!("f32{k}")).replace("f32B", &format!("f32{b}")));
        let (opt, sat) = optimize_o1(&g);
        assert!(applied(&sat, "qdq-lookup") >= 1, "k {k}, b {b}: {sat:?}");
        assert_eq!(lookups(&opt), [(vec![256], vec!["x".to_owned()])], "k {k}, b {b}");
        assert_same_bits(&g, &opt, &qdq_inputs(&g));
    }
}

/// Every unary op and every arithmetic binary op with a constant (on either side where the op
/// allows): the table holds exactly what the chain computes, NaN, ±∞ and saturation included.
#[test]
fn qdq_lookup_tabulates_every_unary_op_and_binary_op_with_a_constant() {
    let unary = [
        "relu",
        "leaky-relu{alpha=0.1}",
        "clip{min=-1.0, max=2.5}",
        "sigmoid",
        "hard-sigmoid{alpha=0.2, beta=0.5}",
        "hard-swish",
        "tanh",
        "exp",
        "log",
        "erf",
        "sqrt",
        "reciprocal",
        "neg",
        "abs",
        "floor",
        "ceil",
    ];
    let mut chains: Vec<String> = unary.iter().map(|u| format!("{u}(%d)")).collect();
    for op in ["add", "sub", "mul", "div", "max", "min", "pow"] {
        chains.push(format!("{op}(%d, %k)"));
        chains.push(format!("{op}(%k, %d)"));
    }
    chains.push("prelu(%d, %k)".to_owned());
    for chain in chains {
        let text = format!(
            r#"graph "chain" {{
  %x = input i8[256]
  %k = weight f32[] [0.7]
  %d = dequantize{{scales=[0.05], zero-points=[0]}}(%x) : f32[256]
  %e = {chain} : f32[256]
  %y = quantize{{to=u8, scales=[0.02], zero-points=[60]}}(%e) : u8[256]
  output "y" = %y
}}"#
        );
        let g = parse(&text);
        let (opt, _) = optimize_o1(&g);
        assert_eq!(lookups(&opt), [(vec![256], vec!["x".to_owned()])], "{chain}");
        assert_same_bits(&g, &opt, &qdq_inputs(&g));
    }
}

/// Two quantized operands added, then quantized; the edits below break one precondition each.
const QDQ_ADD: &str = r#"graph "qdq_add" {
  %a = input u8[1,4,8,8]
  %b = input u8[1,4,8,8]
  %c = input u8[1,4,8,8]
  %f = input f32[1,4,1,1]
  %da = dequantize{scales=[0.1], zero-points=[3]}(%a) : f32[1,4,8,8]
  %db = dequantize{scales=[0.2], zero-points=[7]}(%b) : f32[1,4,8,8]
  %dc = dequantize{scales=[0.05], zero-points=[128]}(%c) : f32[1,4,8,8]
  %s = add(%da, %db) : f32[1,4,8,8]
  %t = add(%s, %da) : f32[1,4,8,8]
  %y = quantize{to=u8, scales=[0.1], zero-points=[5]}(%t) : u8[1,4,8,8]
  output "y" = %y
  output "c" = %dc
  output "f" = %f
}"#;

#[test]
fn qdq_lookup_does_not_fire_on_per_channel_params_broadcast_operands_or_three_operands() {
    let per_channel = "dequantize{axis=1, scales=[0.1, 0.2, 0.05, 0.4], zero-points=[0, 10, 128, 255]}(%a)";
    let cases = [
        // The unedited graph (two distinct operands, `%a` twice) fires: each edit is the cause.
        ("two operands", QDQ_ADD.to_owned(), 1),
        ("per-channel dequantize", QDQ_ADD.replace("dequantize{scales=[0.1], zero-points=[3]}(%a)", per_channel), 0),
        (
            "a broadcasting quantized operand",
            QDQ_ADD
                .replace("%b = input u8[1,4,8,8]", "%b = input u8[1,4,1,1]")
                .replace("(%b) : f32[1,4,8,8]", "(%b) : f32[1,4,1,1]"),
            0,
        ),
        ("a broadcasting f32 operand", QDQ_ADD.replace("add(%s, %da)", "add(%s, %f)"), 0),
        ("three operands", QDQ_ADD.replace("add(%s, %da)", "add(%s, %dc)"), 0),
    ];
    for (what, text, want) in cases {
        let g = parse(&text);
        let (opt, sat) = optimize_o1(&g);
        assert_eq!(lookups(&opt).len(), want, "{what}: {}", opt.display_without_weights());
        if want == 0 {
            assert_eq!(applied(&sat, "qdq-lookup"), 0, "{what}");
        }
        assert_same_bits(&g, &opt, &qdq_inputs(&g));
    }
}

/// `q(dq(q(dq(a) + dq(b))) + dq(c))`: looking through the inner quantize would need three
/// operands, so the walk retries with the inner quantized value `%q` as an operand: two lookups,
/// `(a, b)` for `%q` and `(q, c)` for `%y`, nothing else.
#[test]
fn qdq_lookup_takes_an_inner_quantized_value_as_operand_when_looking_through_needs_three() {
    let g = parse(
        r#"graph "qdq_nested" {
  %a = input u8[1,4,8,8]
  %b = input u8[1,4,8,8]
  %c = input u8[1,4,8,8]
  %da = dequantize{scales=[0.1], zero-points=[3]}(%a) : f32[1,4,8,8]
  %db = dequantize{scales=[0.2], zero-points=[7]}(%b) : f32[1,4,8,8]
  %s = add(%da, %db) : f32[1,4,8,8]
  %q = quantize{to=u8, scales=[0.3], zero-points=[9]}(%s) : u8[1,4,8,8]
  %dq = dequantize{scales=[0.3], zero-points=[9]}(%q) : f32[1,4,8,8]
  %dc = dequantize{scales=[0.05], zero-points=[128]}(%c) : f32[1,4,8,8]
  %t = add(%dq, %dc) : f32[1,4,8,8]
  %y = quantize{to=u8, scales=[0.1], zero-points=[5]}(%t) : u8[1,4,8,8]
  output "y" = %y
}"#,
    );
    let (opt, _) = optimize_o1(&g);
    assert_eq!(
        lookups(&opt),
        [(vec![65536], vec!["a".to_owned(), "b".to_owned()]), (vec![65536], vec!["c".to_owned(), "q".to_owned()])],
        "{}",
        opt.display_without_weights()
    );
    assert_eq!(opt.node_ids().filter(|&id| !opt.node(id).op.is_source()).count(), 2, "{}", *opt);
    assert_adds_within_one_step(&g, &opt, &qdq_inputs(&g));
}

/// onnxruntime computes a quantized add (com.microsoft QLinearAdd, and its fusion of
/// DequantizeLinear → Add → QuantizeLinear) as `a·(sa/sc) + b·(sb/sc) + offset`, rounded once;
/// `qdq-lookup` tabulates that arithmetic (`QuantParams::add_quantized`). So at -O1 the JIT
/// gives onnxruntime's integers exactly (tolerance 0), where the QDQ form as written (the
/// reference interpreter, i.e. -O0) is one step off on near-ties: 29 exact ties of 96 in one
/// case, one of the 256 values of a QDQ HardSwish's `x + 3` in the other. Expected outputs from
/// onnxruntime (`fixtures/ops`, made by `make_op_cases.py`).
#[test]
fn qdq_lookup_adds_quantized_values_as_onnxruntime_does() {
    for case in ["qlinearadd_u8_exact_ties", "qlinearadd_u8_scalar_constant"] {
        let dir = cnnc_tests::fixtures_dir().join("ops");
        let data = cnnc::npy::read_npz(&dir.join(format!("{case}.npz"))).expect("the case's npz");
        let named: Vec<(String, Tensor)> =
            data.iter().filter_map(|(k, t)| k.strip_prefix("in.").map(|n| (n.to_owned(), t.clone()))).collect();
        let want = &data.iter().find(|(k, _)| k == "out.c").expect("an expected `c`").1;
        let g = import_with_inputs(&dir.join(format!("{case}.onnx")), &named);
        let inputs = ordered_inputs(&g, &named);
        let (opt, _) = optimize_o1(&g);
        assert_eq!(lookups(&opt).len(), 1, "{case}: {}", opt.display_without_weights());
        let jit = Model::compile(&opt).expect("compiles").run(&inputs).expect("runs");
        assert_eq!(jit.len(), 1, "{case}");
        assert_eq!(cnnc_tests::values_f64(&jit[0]), cnnc_tests::values_f64(want), "{case}: -O1 vs onnxruntime");
        let reference = run_reference(&g, &inputs).expect("reference");
        let (r, w) = (cnnc_tests::values_f64(&reference[0]), cnnc_tests::values_f64(want));
        assert_eq!(r.len(), w.len(), "{case}");
        let off: Vec<f64> = r.iter().zip(&w).map(|(a, b)| (a - b).abs()).filter(|&d| d > 0.0).collect();
        assert!(!off.is_empty() && off.iter().all(|&d| d == 1.0), "{case}: the QDQ form differs on ties: {off:?}");
    }
}

/// A QDQ 3×3 conv (padding 1, a u8 input with a zero point, per-channel i8 weights, an i32
/// bias, ReLU, a u8 output), in text IR with seeded weights.
fn qdq_conv3x3(n: usize, c_in: usize, c_out: usize, h: usize, w: usize) -> String {
    let mut s = 7u32;
    let mut next = move || {
        s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        s >> 8
    };
    let weights: Vec<String> = (0..c_out * c_in * 9).map(|_| ((next() % 255) as i32 - 127).to_string()).collect();
    let bias: Vec<String> = (0..c_out).map(|_| ((next() % 4001) as i32 - 2000).to_string()).collect();
    let wscales: Vec<String> = (0..c_out).map(|c| format!("{}", 0.002 + 0.0005 * c as f32)).collect();
    let bscales: Vec<String> = (0..c_out).map(|c| format!("{}", 0.03f32 * (0.002 + 0.0005 * c as f32))).collect();
    let zeros = vec!["0"; c_out].join(", ");
    format!(
        r#"graph "qdq_conv3x3" {{
  %x = input u8[{n},{c_in},{h},{w}]
  %w = weight i8[{c_out},{c_in},3,3] [{weights}]
  %b = weight i32[{c_out}] [{bias}]
  %xd = dequantize{{scales=[0.03], zero-points=[117]}}(%x) : f32[{n},{c_in},{h},{w}]
  %wd = dequantize{{axis=0, scales=[{ws}], zero-points=[{zeros}]}}(%w) : f32[{c_out},{c_in},3,3]
  %bd = dequantize{{axis=0, scales=[{bs}], zero-points=[{zeros}]}}(%b) : f32[{c_out}]
  %c = conv{{kernel=[3, 3], strides=[1, 1], dilations=[1, 1], pads=[1, 1, 1, 1], group=1}}(%xd, %wd, %bd) : f32[{n},{c_out},{h},{w}]
  %r = relu(%c) : f32[{n},{c_out},{h},{w}]
  %y = quantize{{to=u8, scales=[0.05], zero-points=[3]}}(%r) : u8[{n},{c_out},{h},{w}]
  output "y" = %y
}}"#,
        weights = weights.join(", "),
        bias = bias.join(", "),
        ws = wscales.join(", "),
        bs = bscales.join(", "),
    )
}

/// `g` with every quantized conv's base set to `algo`.
fn force_qconv_algo(g: &VerifiedGraph, algo: cnnc_ir::ConvAlgo) -> VerifiedGraph {
    let mut out: Graph = (**g).clone();
    let ids: Vec<_> = out.node_ids().collect();
    for id in ids {
        if let Op::QLinear(q) = &mut out.node_mut(id).op
            && let Op::Conv(a) = &mut q.base
        {
            a.algo = algo;
        }
    }
    verify(out).expect("the forced graph verifies")
}

/// `qlinear-winograd-f2` offers integer Winograd for a quantized 3×3 conv, and that form is the
/// direct sum exactly: forced on the layer, the JIT (the AVX2 Winograd kernel where the host has
/// an int8 tier) gives the reference's bytes (tolerance 0) on 1 and 2 threads, on odd sizes that
/// leave partial tiles and strips and on batches, over inputs that take every byte value.
#[test]
fn qlinear_winograd_is_offered_for_quantized_3x3_convs_and_equals_the_direct_sum() {
    for (n, c_in, c_out, h, w) in [(1, 5, 6, 9, 13), (2, 16, 8, 14, 14), (1, 3, 17, 7, 30), (3, 8, 4, 33, 5)] {
        let g = parse(&qdq_conv3x3(n, c_in, c_out, h, w));
        let (opt, sat) = optimize_o1(&g);
        assert!(applied(&sat, "qdq-linear-conv-bias-act") >= 1, "{sat:?}");
        assert!(applied(&sat, "qlinear-winograd-f2") >= 1, "{sat:?}");
        let inputs = qdq_inputs(&g);
        let direct = force_qconv_algo(&opt, cnnc_ir::ConvAlgo::Direct);
        let want = run_reference(&direct, &inputs).expect("reference");
        let wino = force_qconv_algo(&opt, cnnc_ir::ConvAlgo::Winograd2);
        assert_eq!(run_reference(&wino, &inputs).expect("reference"), want, "the reference ignores the algorithm");
        for (forced, threads) in [(&direct, 1), (&wino, 1), (&wino, 2)] {
            let mut model = Model::compile(forced).expect("compiles");
            model.set_threads(threads);
            let (got, profile) = model.run_profiled(&inputs).expect("runs");
            assert_eq!(got, want, "{n}×{c_in}×{c_out}×{h}×{w}, {threads} thread(s): JIT vs reference");
            let kernels: Vec<&str> = profile.layers.iter().map(|l| l.kernel).collect();
            // The kernel runs wherever an int8 tier does (AVX2, not forced off by CNNC_KERNELS).
            let portable = std::env::var("CNNC_KERNELS").is_ok_and(|k| k == "cranelift");
            if std::ptr::eq(forced, &wino) && std::arch::is_x86_feature_detected!("avx2") && !portable {
                assert!(kernels.contains(&"qconv-winograd-f2-avx2"), "{kernels:?}");
            }
        }
    }
}

/// A stem conv `kernel` × `kernel`, strides 2, `pads`, over `channels` channels of an
/// `h` × `w` image, with bias and ReLU; from an NHWC input through a transpose (TensorFlow's
/// export) when `nhwc`.
fn stem(kernel: usize, pads: [usize; 4], channels: usize, (h, w): (usize, usize), nhwc: bool) -> VerifiedGraph {
    strided_stem(kernel, 2, pads, channels, (h, w), nhwc)
}

fn strided_stem(
    kernel: usize,
    stride: usize,
    pads: [usize; 4],
    channels: usize,
    (h, w): (usize, usize),
    nhwc: bool,
) -> VerifiedGraph {
    use cnnc_ir::{ConvAlgo, ConvAttrs, TensorType, UnaryOp};
    let mut g = Graph::new("stem");
    let x = if nhwc {
        let x = g.add_input("x", TensorType::f32([1, h, w, channels]));
        g.add_node("t", Op::Transpose { perm: vec![0, 3, 1, 2] }, &[x]).expect("transpose")[0]
    } else {
        g.add_input("x", TensorType::f32([1, channels, h, w]))
    };
    let wt = g.add_weight("w", seeded(&[5, channels, kernel, kernel], 11, -1.0, 1.0));
    let b = g.add_weight("b", seeded(&[5], 12, -1.0, 1.0));
    let attrs = ConvAttrs {
        kernel: vec![kernel, kernel],
        strides: vec![stride, stride],
        dilations: vec![1, 1],
        pads: pads.to_vec(),
        group: 1,
        algo: ConvAlgo::Direct,
    };
    let c = g.add_node("conv", Op::Conv(attrs), &[x, wt, b]).expect("conv")[0];
    let y = g.add_node("relu", Op::Unary(UnaryOp::Relu), &[c]).expect("relu")[0];
    g.add_output("y", y);
    verify(g).expect("verifies")
}

/// `g` saturated with the exact rules, extracted by node count with every stride-2 conv priced
/// out: the space-to-depth form wherever the rule fired.
fn without_stride_2(g: &VerifiedGraph) -> (VerifiedGraph, Saturation) {
    struct NoStride2<'a>(&'a egg::EGraph<cnnc_passes::Cnn, cnnc_passes::CnnAnalysis>);
    impl egg::CostFunction<cnnc_passes::Cnn> for NoStride2<'_> {
        type Cost = usize;
        fn cost<C: FnMut(egg::Id) -> usize>(&mut self, enode: &cnnc_passes::Cnn, mut costs: C) -> usize {
            let strided = match enode {
                cnnc_passes::Cnn::Conv(c) | cnnc_passes::Cnn::Fused(c) => cnnc_passes::attr_of(self.0, c[0])
                    .is_some_and(|e| match &e.op {
                        Op::Conv(a) => a.strides == [2, 2],
                        Op::Fused(f) => matches!(&f.base, Op::Conv(a) if a.strides == [2, 2]),
                        _ => false,
                    }),
                _ => false,
            };
            let own = if strided { 1000 } else { 1 };
            egg::Language::fold(enode, own, |sum, id| sum.saturating_add(costs(id)))
        }
    }
    let rules = exact_rules_with(RuleOptions { winograd: false });
    let (Loaded { egraph, root }, sat) = saturate(to_egraph(g), &rules, Limits::default());
    let (_, expr) = Extractor::new(&egraph, NoStride2(&egraph)).find_best(root);
    let back = to_graph(&expr, &egraph.analysis).expect("an extracted term is a graph");
    (verify(back).expect("the rewritten graph verifies"), sat)
}

#[test]
fn a_stride_2_stem_becomes_a_stride_1_conv_over_the_space_to_depth_input() {
    // BlazeFace's stem (5×5, pads 1/1/2/2, NHWC input), a ResNet stem (7×7, pads 3) on a
    // non-square image, and a 3×3 without padding whose last input row and column no output
    // reads: each has the function of the original, in the reference and in the JIT.
    let cases = [
        (5, [1, 1, 2, 2], 3, (16, 12), true, "kernel=[3, 3], strides=[1, 1], dilations=[1, 1], pads=[1, 1, 1, 1]"),
        (7, [3, 3, 3, 3], 3, (14, 10), false, "kernel=[4, 4], strides=[1, 1], dilations=[1, 1], pads=[2, 2, 1, 1]"),
        (3, [0, 0, 0, 0], 2, (8, 6), false, "kernel=[2, 2], strides=[1, 1], dilations=[1, 1], pads=[0, 0, 0, 0]"),
    ];
    for (kernel, pads, channels, hw, nhwc, want) in cases {
        let g = stem(kernel, pads, channels, hw, nhwc);
        let (opt, sat) = without_stride_2(&g);
        assert_eq!(applied(&sat, "space-to-depth-conv"), 1, "{kernel}×{kernel}: {sat:?}");
        let text = opt.display_without_weights().to_string();
        assert!(text.contains(want), "{kernel}×{kernel}: {text}");
        assert!(!text.contains("strides=[2, 2]"), "{text}");
        // From NHWC, one transpose does the layout change and the space-to-depth together.
        let s2d = if nhwc { "transpose{perm=[0, 2, 4, 1, 3]}" } else { "transpose{perm=[0, 3, 5, 1, 2, 4]}" };
        assert!(text.contains(s2d), "{text}");
        assert_eq!(text.matches("transpose{").count(), 1, "{text}");
        // The same products summed in another order.
        assert_same_function(&g, &opt, 1e-6);
        assert_jit_matches_reference(&opt);
    }
}

#[test]
fn space_to_depth_leaves_odd_images_wide_inputs_and_unit_strides_alone() {
    let odd = stem(5, [1, 1, 2, 2], 3, (15, 12), false);
    let wide = stem(3, [1, 1, 1, 1], 8, (8, 8), false);
    let unit = strided_stem(3, 1, [1, 1, 1, 1], 3, (8, 8), false);
    for (name, g) in [("odd height", odd), ("8 channels", wide), ("stride 1", unit)] {
        let (_, sat) = without_stride_2(&g);
        let fired: usize = sat.applied.iter().filter(|(r, _)| r.starts_with("space-to-depth")).map(|(_, n)| n).sum();
        assert_eq!(fired, 0, "{name}: {sat:?}");
    }
}
