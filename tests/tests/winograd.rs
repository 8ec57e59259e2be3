//! Winograd F(2×2,3×3) / F(4×4,3×3) as exact-family rules (`cnnc_passes::rules::winograd`):
//! where they fire and where they must not (text-IR snapshots), extraction choosing the variant
//! the measurements favour, `--no-winograd`, the algorithm's round trips (text, artifact, ONNX),
//! and every shared model with one variant forced on every eligible layer.
//!
//! Tolerance of the forced models: rel-L2 ≤ 1e-4 per output against the -O0 reference (the
//! direct sum in f32), the bound -O1 promises wherever it chooses Winograd (ARCHITECTURE.md §
//! Winograd convolution: the transforms' constants amplify f32 rounding by about 2× (F(2,3))
//! and 10–30× (F(4,3)) per layer, and the models' 3×3 stacks compound it).

use cnnc_ir::artifact::{ArtifactMeta, decode, encode};
use cnnc_ir::{ConvAlgo, ConvAttrs, Graph, Op, Tensor, TensorType, VerifiedGraph, verify};
use cnnc_passes::{
    CostError, KernelKey, Limits, OptConfig, RuleOptions, Saturation, TableCost, exact_rules_with, force_conv_algo,
    optimize_exact, saturate, to_egraph, winograd_layers,
};
use cnnc_runtime::{Model, run_reference};
use cnnc_tests::{import_with_inputs, load_golden, model_path, ordered_inputs, rel_l2};

fn f32t(shape: &[usize]) -> TensorType {
    TensorType { dtype: cnnc_ir::DType::F32, shape: shape.to_vec() }
}

/// Deterministic values in [-0.5, 0.5).
fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9).wrapping_add(1);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (s >> 8) as f32 / (1 << 24) as f32 - 0.5
        })
        .collect()
}

fn conv(kernel: usize, stride: usize, dilation: usize, pads: [usize; 4], group: usize) -> ConvAttrs {
    ConvAttrs::new(&[kernel; 2]).strides(&[stride; 2]).dilations(&[dilation; 2]).pads(&pads).group(group)
}

/// `x [1,c,h,w]` through each of `convs` (each with a bias, `m` output channels, `c` for the
/// first) and a ReLU after the last.
fn chain(c: usize, h: usize, w: usize, m: usize, convs: &[ConvAttrs]) -> VerifiedGraph {
    let mut g = Graph::new("chain");
    let mut x = g.add_input("x", f32t(&[1, c, h, w]));
    let mut cin = c;
    for (i, a) in convs.iter().enumerate() {
        let k = &a.kernel;
        let shape = [m, cin / a.group, k[0], k[1]];
        let n = shape.iter().product();
        let wt = g.add_weight(format!("w{i}"), Tensor::from_f32(shape, values(n, i as u32)).expect("shape"));
        let b = g.add_weight(format!("b{i}"), Tensor::from_f32([m], values(m, 100 + i as u32)).expect("shape"));
        x = g.add_node(format!("conv{i}"), Op::Conv(a.clone()), &[x, wt, b]).expect("infers")[0];
        cin = m;
    }
    let y = g.add_node("relu", Op::Unary(cnnc_ir::UnaryOp::Relu), &[x]).expect("infers")[0];
    g.add_output("y", y);
    verify(g).expect("verifies")
}

/// The conv algorithm of each conv (plain or fused) of `g`, in node order.
fn algos(g: &Graph) -> Vec<ConvAlgo> {
    g.node_ids()
        .filter_map(|id| match &g.node(id).op {
            Op::Conv(a) => Some(a.algo),
            Op::Fused(f) => match &f.base {
                Op::Conv(a) => Some(a.algo),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// An oracle standing in for measurement: every kernel costs 1 µs, a direct conv 10 µs, and a
/// Winograd conv `f2` or `f4` µs.
fn priced(f2: f64, f4: f64) -> impl FnMut(&KernelKey) -> Result<f64, CostError> {
    move |k: &KernelKey| {
        let algo = match &k.op {
            Op::Conv(a) => Some(a.algo),
            Op::Fused(f) => match &f.base {
                Op::Conv(a) => Some(a.algo),
                _ => None,
            },
            _ => None,
        };
        Ok(match algo {
            Some(ConvAlgo::Direct) => 10.0,
            Some(ConvAlgo::Winograd2) => f2,
            Some(ConvAlgo::Winograd4) => f4,
            None => 1.0,
        })
    }
}

fn optimize(g: &VerifiedGraph, options: RuleOptions, f2: f64, f4: f64) -> VerifiedGraph {
    let mut table = TableCost::new(1);
    let (out, _) =
        optimize_exact(g, &OptConfig { rules: options, ..OptConfig::lossless() }, &mut table, &mut priced(f2, f4))
            .expect("optimizes");
    verify(out).expect("the optimized graph verifies")
}

fn applied(sat: &Saturation, rule: &str) -> usize {
    sat.applied.iter().find(|(n, _)| n == rule).map_or(0, |(_, c)| *c)
}

#[test]
fn fires_on_a_3x3_stride_1_conv_and_extraction_follows_the_measured_variant() {
    // Asymmetric padding is fine: out-of-range taps read zeros in every algorithm.
    let g = chain(8, 12, 10, 16, &[conv(3, 1, 1, [1, 0, 2, 1], 1)]);
    let (_, sat) = saturate(to_egraph(&g), &exact_rules_with(RuleOptions::default()), Limits::default());
    assert_eq!((applied(&sat, "winograd-f2"), applied(&sat, "winograd-f4")), (1, 1), "{sat:?}");
    assert_eq!(sat.stop_reason, "saturated");

    // Each variant is chosen exactly when the oracle says it is the fastest; the fused ReLU
    // rides along on every one.
    let f4 = optimize(&g, RuleOptions::default(), 8.0, 5.0);
    assert_eq!(algos(&f4), [ConvAlgo::Winograd4]);
    insta::assert_snapshot!("winograd_f4_chosen", f4.display_without_weights().to_string());
    assert_eq!(algos(&optimize(&g, RuleOptions::default(), 5.0, 8.0)), [ConvAlgo::Winograd2]);
    assert_eq!(algos(&optimize(&g, RuleOptions::default(), 11.0, 12.0)), [ConvAlgo::Direct]);
    // The fused conv exists for every variant, not only for the direct one.
    assert!(f4.display_without_weights().to_string().contains("fused-conv"), "{}", f4.display_without_weights());
}

#[test]
fn does_not_fire_on_strided_dilated_1x1_or_grouped_convs() {
    let g = chain(
        8,
        16,
        16,
        8,
        &[
            conv(3, 2, 1, [1; 4], 1), // strided
            conv(3, 1, 2, [2; 4], 1), // dilated
            conv(1, 1, 1, [0; 4], 1), // 1×1
            conv(3, 1, 1, [1; 4], 8), // depthwise
            conv(3, 1, 1, [1; 4], 2), // grouped
            conv(5, 1, 1, [2; 4], 1), // 5×5
        ],
    );
    let (_, sat) = saturate(to_egraph(&g), &exact_rules_with(RuleOptions::default()), Limits::default());
    assert_eq!((applied(&sat, "winograd-f2"), applied(&sat, "winograd-f4")), (0, 0), "{sat:?}");
    // Even an oracle that would always prefer Winograd finds none to choose.
    let out = optimize(&g, RuleOptions::default(), 1.0, 1.0);
    assert!(algos(&out).iter().all(|&a| a == ConvAlgo::Direct));
    insta::assert_snapshot!("winograd_not_on_ineligible_convs", out.display_without_weights().to_string());
}

#[test]
fn no_winograd_leaves_the_family_out() {
    let g = chain(8, 12, 12, 8, &[conv(3, 1, 1, [1; 4], 1), conv(3, 1, 1, [0; 4], 1)]);
    let off = RuleOptions { winograd: false };
    let (_, sat) = saturate(to_egraph(&g), &exact_rules_with(off), Limits::default());
    assert!(sat.applied.iter().all(|(r, _)| !r.starts_with("winograd")), "{sat:?}");
    assert_eq!(algos(&optimize(&g, off, 1.0, 1.0)), [ConvAlgo::Direct; 2]);
    assert_eq!(algos(&optimize(&g, RuleOptions::default(), 1.0, 2.0)), [ConvAlgo::Winograd2; 2]);
}

#[test]
fn the_algorithm_survives_text_and_artifact_round_trips() {
    let g = chain(4, 8, 8, 6, &[conv(3, 1, 1, [1; 4], 1), conv(3, 1, 1, [1; 4], 1)]);
    let mut forced = force_conv_algo(&g, ConvAlgo::Winograd4);
    let second = forced.node_ids().find(|&id| forced.node(id).name == "conv1").expect("conv1");
    if let Op::Conv(a) = &mut forced.node_mut(second).op {
        a.algo = ConvAlgo::Winograd2;
    }
    let forced = verify(forced).expect("verifies");
    assert_eq!(algos(&forced), [ConvAlgo::Winograd4, ConvAlgo::Winograd2]);
    assert_eq!(winograd_layers(&forced), 2);

    let text = forced.to_string();
    assert!(text.contains("algo=winograd-f4") && text.contains("algo=winograd-f2"), "{text}");
    let parsed = verify(text.parse::<Graph>().expect("parses")).expect("verifies");
    assert_eq!(algos(&parsed), algos(&forced));
    // A direct conv prints no `algo`.
    assert!(!g.to_string().contains("algo="));

    let bytes = encode(&forced, &ArtifactMeta::default()).expect("encodes");
    let (back, _) = decode(&bytes).expect("decodes");
    assert_eq!(algos(&back), algos(&forced));
}

#[test]
fn a_winograd_algorithm_on_a_conv_it_cannot_compute_is_refused() {
    for (attrs, what) in [
        (conv(3, 2, 1, [1; 4], 1), "strides [2, 2]"),
        (conv(1, 1, 1, [0; 4], 1), "kernel [1, 1]"),
        (conv(3, 1, 1, [1; 4], 4), "group 4"),
    ] {
        let g = chain(4, 8, 8, 4, std::slice::from_ref(&attrs));
        let mut bad: Graph = (*g).clone();
        let id = bad.node_ids().find(|&id| bad.node(id).name == "conv0").expect("conv0");
        if let Op::Conv(a) = &mut bad.node_mut(id).op {
            a.algo = ConvAlgo::Winograd4;
        }
        // Through the verifier (what an artifact or text graph meets) ...
        let err = verify(bad).expect_err("refused").to_string();
        assert!(err.contains("conv0") && err.contains("winograd-f4") && err.contains(what), "{err}");
        // ... and through the text form.
        let (plain, with_algo) =
            (format!("group={}}}(", attrs.group), format!("group={}, algo=winograd-f2}}(", attrs.group));
        let text = g.to_string().replacen(&plain, &with_algo, 1);
        assert!(text.contains("algo=winograd-f2"), "{text}");
        let err = verify(text.parse::<Graph>().expect("parses")).expect_err("refused").to_string();
        assert!(err.contains("winograd-f2"), "{err}");
    }
}

#[test]
fn onnx_export_drops_the_algorithm() {
    let g = chain(4, 8, 8, 4, &[conv(3, 1, 1, [1; 4], 1)]);
    let forced = verify(force_conv_algo(&g, ConvAlgo::Winograd4)).expect("verifies");
    assert_eq!(
        cnnc::onnx::export_bytes(&forced).expect("exports"),
        cnnc::onnx::export_bytes(&g).expect("exports"),
        "ONNX has one Conv: the algorithm is cnnc's choice, not the model's meaning"
    );
}

fn check_model(stem: &str) {
    let Some(path) = model_path(stem) else { return };
    let golden = load_golden(stem);
    let graph = import_with_inputs(&path, &golden.inputs);
    let inputs = ordered_inputs(&graph, &golden.inputs);
    let want = run_reference(&graph, &inputs).expect("-O0 reference runs");
    // The eligible convs, counted apart from `force_conv_algo` and `winograd_layers`.
    let eligible = graph
        .node_ids()
        .filter(|&id| match &graph.node(id).op {
            Op::Conv(a) => a.winograd_eligible(),
            Op::Fused(f) => matches!(&f.base, Op::Conv(a) if a.winograd_eligible()),
            _ => false,
        })
        .count();
    if eligible == 0 {
        eprintln!("{stem}: no 3×3 stride-1 single-group conv, nothing to force");
    }
    for algo in [ConvAlgo::Winograd2, ConvAlgo::Winograd4] {
        let forced = verify(force_conv_algo(&graph, algo)).expect("a forced graph verifies");
        let layers = winograd_layers(&forced);
        assert_eq!(layers, eligible, "{stem}: {} forced on {layers} of {eligible} eligible convs", algo.name());
        let model = Model::compile(&forced).unwrap_or_else(|e| panic!("{stem}: {e}"));
        let got = model.run(&inputs).unwrap_or_else(|e| panic!("{stem}: {e}"));
        assert_eq!((got.len(), want.len()), (graph.outputs().len(), graph.outputs().len()), "{stem}: output count");
        for ((o, g), w) in graph.outputs().iter().zip(&got).zip(&want) {
            let e = rel_l2(g, w);
            eprintln!("{stem} `{}`: {} on {layers} layers: rel-L2 {e:.3e} vs -O0 reference", o.name, algo.name());
            assert!(e <= 1e-4, "{stem} `{}`: {} on {layers} layers: rel-L2 {e:.3e} > 1e-4", o.name, algo.name());
        }
    }
}

cnnc_tests::shared_model_tests!(
    /// Every shared model with Winograd F(2,3), then F(4,3), forced on every eligible conv.
    forced_on_every_eligible_layer,
    check_model
);
