//! ONNX export (`cnnc::onnx::export_model`, behind `cnnc opt --emit-onnx`), checked without
//! Python: the exported bytes are re-imported with cnnc's own importer and the reference
//! interpreter must compute the same function. onnxruntime's view of the same files is
//! `bench/check_onnx.py`.
//!
//! Tolerances: an exported graph holds the same ops with the same attributes (a fused op
//! spelled out as base → Add → activation, which is how the reference evaluates it anyway),
//! so the re-imported graph's reference outputs must equal the exported graph's bit for bit
//! (but for one spelling that rounds a sum before the bias, see `assert_same_outputs`);
//! the real models are additionally held to their golden bound (max(1e-5, 4 × onnxruntime's
//! own on-vs-off rel-L2)) in case an op's spelling reorders f32 arithmetic.

use std::collections::BTreeMap;

use cnnc::onnx::{ExportError, ImportOptions, export_bytes, import_bytes};
use cnnc_ir::*;
use cnnc_passes::{OptConfig, TableCost, mac_estimate, optimize_exact};
use cnnc_runtime::run_reference;
use cnnc_tests::{fixtures_dir, import_with_inputs, load_golden, model_path, ordered_inputs, rel_l2};

/// Exports `g` twice (the bytes must agree) and imports the result.
fn round_trip(g: &VerifiedGraph, what: &str) -> VerifiedGraph {
    let bytes = export_bytes(g).unwrap_or_else(|e| panic!("{what}: export: {e}"));
    let again = export_bytes(g).unwrap_or_else(|e| panic!("{what}: export: {e}"));
    assert!(bytes == again, "{what}: exporting the same graph twice gave different bytes");
    import_bytes(&bytes, &format!("{what}.onnx"), &ImportOptions::default())
        .unwrap_or_else(|e| panic!("{what}: re-importing the export: {e}"))
}

/// Op counts by op name, with what the exporter spells out counted as the importer reads it
/// back: a fused op as its base, an `add` for the residual and its activation; a flattening
/// softmax as reshape → softmax → reshape (a reshape to the same shape imports as nothing); a
/// `where` between bools as one logic op, or four when no branch is a constant scalar.
fn op_counts(g: &Graph, expand: bool) -> BTreeMap<&'static str, usize> {
    let mut counts = BTreeMap::new();
    let mut add = |name: &'static str| *counts.entry(name).or_insert(0) += 1;
    // Swish is exported as `x · Sigmoid(x)`, or `x · Sigmoid(x · β)`.
    let add_act = |add: &mut dyn FnMut(&'static str), act: UnaryOp| match act {
        UnaryOp::Swish { beta } if expand => {
            add("sigmoid");
            add("mul");
            if beta != 1.0 {
                add("mul");
            }
        }
        act => add(act.name()),
    };
    for id in g.node_ids() {
        let node = g.node(id);
        match &node.op {
            Op::Input { .. } | Op::Weight(_) => {}
            Op::Fused(f) if expand => {
                add(f.base.name());
                if f.residual {
                    add("add");
                }
                if let Some(act) = f.act {
                    add_act(&mut add, act);
                }
            }
            Op::Unary(u @ UnaryOp::Swish { .. }) => add_act(&mut add, *u),
            Op::Where if expand && node.outputs[0].dtype == DType::Bool => {
                let ins = g.node_inputs(id);
                let scalar = |v: &ValueRef| {
                    g.weight_of(v).filter(|t| t.shape().is_empty()).and_then(|t| t.as_bool()).map(|b| b[0])
                };
                let n = match (scalar(&ins[1]), scalar(&ins[2])) {
                    (Some(false), Some(true)) | (_, Some(false)) | (Some(true), _) => 1,
                    _ => 4,
                };
                for _ in 0..n {
                    add("where");
                }
            }
            Op::ConvTranspose(a) if expand => {
                // Output padding past onnxruntime's limit that the end pad cannot absorb: + Pad
                // (and + reshape and add of the bias).
                let n = a.kernel.len();
                let beyond = (0..n).any(|i| {
                    let (op, pe) = (a.output_padding[i], a.pads[n + i]);
                    op - op.min(pe) >= a.strides[i].max(a.dilations[i])
                });
                add("conv-transpose");
                if beyond {
                    add("pad");
                    if g.node_inputs(id).len() == 3 {
                        add("add");
                    }
                }
            }
            Op::Softmax { axis, flatten: true } if expand => {
                let shape = &node.outputs[0].shape;
                let flat = vec![shape[..*axis].iter().product::<usize>(), shape[*axis..].iter().product()];
                if flat != *shape {
                    add("reshape");
                    add("reshape");
                }
                add("softmax");
            }
            op => add(op.name()),
        }
    }
    counts
}

/// Outputs must be equal bit for bit, except those named in `rounded`, whose spelling rounds an
/// intermediate to f32 (a bias added after the conv-transpose instead of in its sum): rel-L2 ≤ 1e-6.
fn assert_same_outputs(g: &Graph, want: &[Tensor], got: &[Tensor], what: &str, rounded: &[&str]) {
    assert_eq!(want.len(), got.len(), "{what}: output count");
    for ((o, w), t) in g.outputs().iter().zip(want).zip(got) {
        assert_eq!(w.ty(), t.ty(), "{what}: output `{}` type", o.name);
        if rounded.contains(&o.name.as_str()) {
            let e = rel_l2(t, w);
            assert!(e <= 1e-6, "{what}: output `{}` differs after export and re-import: rel-L2 {e:.2e}", o.name);
            continue;
        }
        let same = match (w.data(), t.data()) {
            (TensorData::F32(a), TensorData::F32(b)) => {
                a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits() || x.is_nan() && y.is_nan())
            }
            (a, b) => a == b,
        };
        assert!(same, "{what}: output `{}` differs after export and re-import", o.name);
    }
}

/// The graph as `cnnc opt -O1` optimizes it (with the deterministic MAC estimate for costs:
/// every rewrite the rules offer is exercised the same way on every run).
fn optimized(g: &VerifiedGraph) -> VerifiedGraph {
    let mut table = TableCost::new(1);
    let (opt, _) = optimize_exact(g, &OptConfig::lossless(), &mut table, &mut mac_estimate).expect("optimizes");
    verify(opt).expect("the optimized graph verifies")
}

fn check_model(stem: &str) {
    let Some(path) = model_path(stem) else { return };
    let golden = load_golden(stem);
    let o1 = optimized(&import_with_inputs(&path, &golden.inputs));
    let back = round_trip(&o1, stem);

    let names = |g: &Graph| g.outputs().iter().map(|o| o.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&back), names(&o1), "{stem}: output names");
    let input_names = |g: &Graph| g.inputs().iter().map(|&id| g.node(id).name.clone()).collect::<Vec<_>>();
    assert_eq!(input_names(&back), input_names(&o1), "{stem}: input names");
    assert_eq!(op_counts(&back, false), op_counts(&o1, true), "{stem}: op counts (fused ops expanded)");
    let fused = o1.node_ids().filter(|&id| matches!(o1.node(id).op, Op::Fused(_))).count();

    let want = run_reference(&o1, &ordered_inputs(&o1, &golden.inputs)).expect("-O1 graph runs");
    let got = run_reference(&back, &ordered_inputs(&back, &golden.inputs)).expect("re-imported graph runs");
    for ((o, g), w) in o1.outputs().iter().zip(&got).zip(&want) {
        let tol = golden.tolerance[&o.name].max(1e-5);
        let e = rel_l2(g, w);
        eprintln!("{stem} `{}`: exported -O1 vs -O1 rel-L2 {e:.3e} (bound {tol:.1e}; {fused} fused ops)", o.name);
        assert!(e <= tol, "{stem} `{}`: rel-L2 {e:.3e} > {tol:.1e}", o.name);
    }
    assert_same_outputs(&o1, &want, &got, stem, &[]);
}

cnnc_tests::shared_model_tests!(
    /// Every shared model (the bundled three always run): -O1, export, re-import, reference.
    optimized_models_export_and_reimport,
    check_model
);

/// Every single-op case of `fixtures/ops/` exports and re-imports to the same function, except
/// the ones opset 18 cannot express, which fail with an error naming the node.
#[test]
fn every_op_case_exports_and_reimports_to_the_same_function() {
    let dir = fixtures_dir().join("ops");
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).expect("cases.json")).expect("json");
    let cases = cases["cases"].as_array().expect("cases");
    let mut inexpressible = Vec::new();
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let data = cnnc::npy::read_npz(&dir.join(case["data"].as_str().expect("data"))).expect("npz");
        let inputs: Vec<(String, Tensor)> =
            data.iter().filter_map(|(k, t)| k.strip_prefix("in.").map(|n| (n.to_owned(), t.clone()))).collect();
        let g = import_with_inputs(&dir.join(case["model"].as_str().expect("model")), &inputs);
        if let Err(e) = export_bytes(&g) {
            assert!(matches!(e, ExportError::Inexpressible { .. }), "{name}: {e}");
            inexpressible.push(name.to_owned());
            continue;
        }
        let back = round_trip(&g, name);
        // Requantizing ops export as their QDQ spelling, which -O1's QDQ rules fuse back; an
        // integer-output one (ConvInteger, MatMulInteger, a float QGemm) as the integer op with
        // its bias, cast and scale spelled out, checked by its outputs alone.
        let qlinear = |g: &Graph, requantized: bool| {
            g.node_ids().any(|id| match &g.node(id).op {
                Op::QLinear(q) => matches!(q.out, QLinearOut::Quantized { .. }) == requantized,
                _ => false,
            })
        };
        let (g, back) = if qlinear(&g, true) { (optimized(&g), optimized(&back)) } else { (g, back) };
        if !qlinear(&g, false) {
            assert_eq!(op_counts(&back, false), op_counts(&g, true), "{name}: op counts");
        }
        let want = run_reference(&g, &ordered_inputs(&g, &inputs)).expect("runs");
        let got = run_reference(&back, &ordered_inputs(&back, &inputs)).expect("re-imported graph runs");
        assert_same_outputs(&g, &want, &got, name, &[]);
    }
    // AveragePool's dilations need opset 19; Resize's tf_half_pixel_for_nn exists only in opsets 11-12;
    // a keep_aspect_ratio_policy resize whose one scale (5/6 here) rounds its size up, which
    // neither `sizes` (a scale per axis) nor `scales` (floor(in · scale)) says.
    let tf_half_pixel_for_nn = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil", "down_scales"]
        .map(|m| format!("resize11_nearest_tf_half_pixel_for_nn_{m}"));
    let mut want = vec!["avgpool_dilations_opset19".to_owned()];
    want.extend(tf_half_pixel_for_nn);
    want.extend(["nearest", "linear"].map(|m| format!("resize18_{m}_keep_aspect_not_larger")));
    want.extend(["nearest", "linear"].map(|m| format!("resize18_{m}_keep_aspect_not_smaller")));
    inexpressible.sort();
    want.sort();
    assert_eq!(inexpressible, want);
}

fn node(g: &mut Graph, name: &str, op: Op, inputs: &[ValueRef]) -> ValueRef {
    g.add_node(name, op, inputs).unwrap_or_else(|e| panic!("{name}: {e}"))[0]
}

fn weight(g: &mut Graph, name: &str, shape: &[usize], f: impl Fn(usize) -> f32) -> ValueRef {
    let n: usize = shape.iter().product();
    g.add_weight(name, Tensor::from_f32(shape, (0..n).map(f).collect()).expect("shape matches"))
}

fn window(kernel: usize, stride: usize, pad: usize) -> PoolAttrs {
    PoolAttrs {
        kernel: vec![kernel; 2],
        strides: vec![stride; 2],
        dilations: vec![1; 2],
        pads: vec![pad; 4],
        ceil_mode: false,
    }
}

fn conv_attrs(group: usize) -> ConvAttrs {
    ConvAttrs::new(&[3, 3]).pads(&[1; 4]).group(group)
}

/// Every op variant, every unary, binary, reduce and resize form, fused ops with and without
/// residual and activation, i64 and bool weights, and outputs that are graph inputs, weights
/// and repeated values; arranged so every value stays finite (logs of positive values, …).
fn every_op_graph() -> Graph {
    let mut g = Graph::new("every-op");
    let x = g.add_input("x", TensorType::f32([1, 4, 8, 8]));
    let idx_in = g.add_input("indices", TensorType::new(DType::I64, [2]));
    let w = weight(&mut g, "conv.w", &[4, 2, 3, 3], |i| ((i as f32) * 0.37).sin() * 0.3);
    let b = weight(&mut g, "conv.b", &[4], |i| i as f32 * 0.1 - 0.15);
    let conv = node(&mut g, "conv", Op::Conv(conv_attrs(2)), &[x, w, b]);
    let wt = weight(&mut g, "convt.w", &[4, 3, 2, 2], |i| ((i as f32) * 0.53).cos() * 0.2);
    let convt = Op::ConvTranspose(ConvTransposeAttrs {
        kernel: vec![2, 2],
        strides: vec![2, 2],
        dilations: vec![1, 1],
        pads: vec![0, 1, 0, 1],
        output_padding: vec![1, 0],
        group: 1,
    });
    let convt = node(&mut g, "convt", convt, &[conv, wt]);
    g.add_output("convt", convt);
    // Output padding beyond max(stride, dilation), as an `output_shape` may resolve to:
    // onnxruntime refuses it, so it trades against the end pad (axis 1) or is spelled with a Pad
    // and an Add of the bias (axis 0).
    let wide = |op: Vec<usize>, pads: Vec<usize>| {
        Op::ConvTranspose(ConvTransposeAttrs {
            kernel: vec![2, 2],
            strides: vec![1, 1],
            dilations: vec![1, 1],
            pads,
            output_padding: op,
            group: 1,
        })
    };
    let bt = weight(&mut g, "convt.b", &[3], |i| 0.3 - 0.2 * i as f32);
    let wide_b = node(&mut g, "convt_wide", wide(vec![2, 1], vec![1, 0, 0, 1]), &[conv, wt, bt]);
    let wide_nb = node(&mut g, "convt_wide_nobias", wide(vec![3, 2], vec![0, 0, 1, 2]), &[conv, wt]);
    g.add_output("convt_wide", wide_b);
    g.add_output("convt_wide_nobias", wide_nb);

    let bn: Vec<ValueRef> = ["bn.scale", "bn.bias", "bn.mean", "bn.var"]
        .iter()
        .enumerate()
        .map(|(k, p)| weight(&mut g, p, &[4], move |i| 0.5 + 0.1 * (i + k) as f32))
        .collect();
    let mut h = node(&mut g, "bn", Op::BatchNorm { epsilon: 1e-5 }, &[conv, bn[0], bn[1], bn[2], bn[3]]);
    let fl = node(&mut g, "floor", Op::Unary(UnaryOp::Floor), &[h]);
    let ce = node(&mut g, "ceil", Op::Unary(UnaryOp::Ceil), &[h]);
    g.add_output("floor", fl);
    g.add_output("ceil", ce);
    // Each function's output is in the next one's domain: Exp of values in [0, 1], Sqrt and
    // Reciprocal of values ≥ 1, Log of values in (0, 1].
    let unary = [
        UnaryOp::LeakyRelu { alpha: 0.1 },
        UnaryOp::Clip { min: f32::NEG_INFINITY, max: 6.0 },
        UnaryOp::HardSwish,
        UnaryOp::Clip { min: -0.5, max: f32::INFINITY },
        UnaryOp::Clip { min: -2.0, max: 2.0 },
        UnaryOp::Tanh,
        UnaryOp::Erf,
        UnaryOp::Neg,
        UnaryOp::Abs,
        UnaryOp::Sigmoid,
        UnaryOp::HardSigmoid { alpha: 0.3, beta: 0.4 },
        UnaryOp::Relu,
        UnaryOp::Exp,
        UnaryOp::Sqrt,
        UnaryOp::Reciprocal,
        UnaryOp::Log,
    ];
    // Swish on a side branch: exported as Sigmoid and Mul, it rounds twice where the reference
    // rounds once.
    let sw = node(&mut g, "swish", Op::Unary(UnaryOp::Swish { beta: 1.0 }), &[h]);
    let sw = node(&mut g, "swish_beta", Op::Unary(UnaryOp::Swish { beta: 1.702 }), &[sw]);
    g.add_output("swish", sw);
    for (i, u) in unary.into_iter().enumerate() {
        h = node(&mut g, &format!("u{i}"), Op::Unary(u), &[h]);
    }
    let c = weight(&mut g, "c", &[1, 4, 1, 1], |i| 0.75 + 0.25 * i as f32);
    for bop in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div, BinaryOp::Max, BinaryOp::Min] {
        h = node(&mut g, bop.name(), Op::Binary(bop), &[h, c]);
    }
    h = node(&mut g, "pow", Op::Binary(BinaryOp::Pow), &[c, h]);
    let slope = weight(&mut g, "slope", &[4, 1, 1], |i| 0.1 * i as f32);
    let centered = node(&mut g, "center", Op::Binary(BinaryOp::Sub), &[h, c]);
    h = node(&mut g, "prelu", Op::Binary(BinaryOp::PRelu), &[centered, slope]);
    let eq = node(&mut g, "eq", Op::Binary(BinaryOp::Equal), &[h, c]);
    let lt = node(&mut g, "lt", Op::Binary(BinaryOp::Less), &[h, conv]);
    let gt = node(&mut g, "gt", Op::Binary(BinaryOp::Greater), &[conv, c]);
    let either = node(&mut g, "either", Op::Where, &[eq, lt, gt]);
    let mask = g.add_weight("mask", Tensor::from_bool([8], (0..8).map(|i| i % 3 == 0).collect()).expect("8"));
    let masked = node(&mut g, "masked", Op::Binary(BinaryOp::Equal), &[either, mask]);
    let sel = node(&mut g, "sel", Op::Where, &[masked, h, conv]);
    // Not, And and Or as the importer lowers them: a where with a constant scalar branch.
    let scalar = |v: bool| Tensor::from_bool(Vec::<usize>::new(), vec![v]).expect("scalar");
    let (no, yes) = (g.add_weight("false", scalar(false)), g.add_weight("true", scalar(true)));
    let not = node(&mut g, "not", Op::Where, &[masked, no, yes]);
    let and = node(&mut g, "and", Op::Where, &[not, eq, no]);
    let or = node(&mut g, "or", Op::Where, &[and, yes, lt]);
    g.add_output("logic", or);
    g.add_output("sel", sel);

    let mut pool = window(2, 2, 0);
    pool.ceil_mode = true;
    let mp = node(&mut g, "mp", Op::MaxPool(pool.clone()), &[sel]);
    let mut dilated = window(2, 1, 1);
    dilated.dilations = vec![2, 2];
    let mpd = node(&mut g, "mp_dilated", Op::MaxPool(dilated), &[sel]);
    g.add_output("mp_dilated", mpd);
    let ap = node(&mut g, "ap", Op::AvgPool { pool: window(3, 1, 1), count_include_pad: true }, &[mp]);
    let ap2 = node(&mut g, "ap_exclude", Op::AvgPool { pool, count_include_pad: false }, &[ap]);
    let gmp = node(&mut g, "gmp", Op::GlobalMaxPool, &[ap2]);
    let gap = node(&mut g, "gap", Op::GlobalAvgPool, &[sel]);
    let flat = node(&mut g, "flat", Op::Reshape { shape: vec![1, 4] }, &[gap]);
    let fc_w = weight(&mut g, "fc.w", &[10, 4], |i| ((i as f32) * 0.71).sin());
    let fc_b = weight(&mut g, "fc.b", &[10], |i| i as f32 * 0.05);
    let gemm = Op::Gemm { alpha: 0.9, beta: 0.5, trans_a: false, trans_b: true };
    let fc = node(&mut g, "fc", gemm.clone(), &[flat, fc_w, fc_b]);
    let proj = weight(&mut g, "proj", &[10, 3], |i| ((i as f32) * 0.29).cos());
    let mm = node(&mut g, "mm", Op::MatMul, &[fc, proj]);
    let sm = node(&mut g, "sm", Op::Softmax { axis: 1, flatten: false }, &[mm]);
    g.add_output("probs", sm);
    g.add_output("probs_again", sm);
    let smf = node(&mut g, "sm_flat", Op::Softmax { axis: 1, flatten: true }, &[conv]);
    g.add_output("softmax_flat", smf);
    let smf0 = node(&mut g, "sm_flat0", Op::Softmax { axis: 0, flatten: true }, &[conv]);
    g.add_output("softmax_flat0", smf0);

    let resizes = [
        // Scales that are output / input: exported as sizes.
        (
            "up",
            ResizeMode::Linear,
            CoordTransform::PytorchHalfPixel,
            NearestMode::RoundPreferCeil,
            [2.0, 1.5],
            [16, 12],
        ),
        // 8 · 1.3 = 10.4: exported as scales (10 / 8 ≠ 1.3).
        ("up_scales", ResizeMode::Linear, CoordTransform::HalfPixel, NearestMode::Floor, [1.3, 1.3], [10, 10]),
        ("nearest", ResizeMode::Nearest, CoordTransform::Asymmetric, NearestMode::Floor, [2.0, 2.0], [16, 16]),
        (
            "nearest_ac",
            ResizeMode::Nearest,
            CoordTransform::AlignCorners,
            NearestMode::RoundPreferFloor,
            [0.5, 0.75],
            [4, 6],
        ),
        (
            "cubic",
            ResizeMode::Cubic { a: -0.75, exclude_outside: false },
            CoordTransform::HalfPixel,
            NearestMode::Floor,
            [1.5, 1.5],
            [12, 12],
        ),
        (
            "crop",
            ResizeMode::Cubic { a: -0.5, exclude_outside: true },
            CoordTransform::TfCropAndResize {
                roi: vec![0.0, 0.0, 0.25, -0.1, 1.0, 1.0, 0.75, 1.2],
                extrapolation: -1.5,
            },
            NearestMode::Floor,
            [0.75, 1.25],
            [6, 10],
        ),
    ];
    let mut resized = Vec::new();
    for (name, mode, coord, nearest, s, o) in resizes {
        let attrs =
            ResizeAttrs { mode, coord, nearest, scales: vec![1.0, 1.0, s[0], s[1]], out_shape: vec![1, 4, o[0], o[1]] };
        let r = node(&mut g, name, Op::Resize(attrs), &[conv]);
        g.add_output(name, r);
        resized.push(r);
    }
    let expanded = node(&mut g, "expand", Op::Expand { shape: vec![1, 4, 8, 8] }, &[gmp]);
    let cat = node(&mut g, "cat", Op::Concat { axis: 1 }, &[conv, sel, expanded]);
    let parts = g.add_node("split", Op::Split { axis: 1, sizes: vec![3, 9] }, &[cat]).expect("split");
    let tr = node(&mut g, "tr", Op::Transpose { perm: vec![0, 2, 3, 1] }, &[parts[1]]);
    let slice = Op::Slice {
        axes: vec![
            SliceAxis { axis: 1, start: 7, end: -1, step: -2 },
            SliceAxis { axis: 3, start: 0, end: 9, step: 4 },
        ],
    };
    let sl = node(&mut g, "sl", slice, &[tr]);
    let gather = node(&mut g, "gather", Op::Gather { axis: 3 }, &[sl, idx_in]);
    let idx_w = g.add_weight("idx", Tensor::from_i64([3], vec![2, 0, -1]).expect("3"));
    let gather_w = node(&mut g, "gather_w", Op::Gather { axis: 1 }, &[gather, idx_w]);
    g.add_output("gather", gather_w);
    let pad = Op::Pad { pads: vec![0, 0, 1, -1, 0, 0, 1, -1], mode: PadMode::Reflect, value: 0.0 };
    let padded = node(&mut g, "pad", pad, &[parts[0]]);
    let edge = node(
        &mut g,
        "pad_edge",
        Op::Pad { pads: vec![0, 0, 2, 0, 0, 1, 0, 3], mode: PadMode::Edge, value: 0.0 },
        &[padded],
    );
    let cpad = Op::Pad { pads: vec![0, 0, 0, 0, 0, 0, 2, 2], mode: PadMode::Constant, value: 1.5 };
    let cp = node(&mut g, "const_pad", cpad, &[resized[0]]);
    g.add_output("pads", edge);
    g.add_output("const_pad", cp);
    let mean = node(&mut g, "mean", Op::Reduce { kind: ReduceKind::Mean, axes: vec![2, 3], keepdims: false }, &[edge]);
    g.add_output("mean", mean);

    let positive = node(&mut g, "positive", Op::Unary(UnaryOp::Sigmoid), &[resized[5]]);
    for kind in ReduceKind::ALL {
        let r = node(&mut g, kind.name(), Op::Reduce { kind, axes: vec![1, 3], keepdims: true }, &[positive]);
        g.add_output(kind.name(), r);
    }
    for kind in [ReduceKind::L1, ReduceKind::SumSquare] {
        let name = format!("{}-none", kind.name());
        let r = node(&mut g, &name, Op::Reduce { kind, axes: vec![], keepdims: true }, &[conv]);
        g.add_output(name, r);
    }
    let arg_max = Op::ArgReduce { max: true, axis: 1, keepdims: false, select_last_index: true };
    let am = node(&mut g, "argmax", arg_max, &[positive]);
    let arg_min = Op::ArgReduce { max: false, axis: 3, keepdims: true, select_last_index: false };
    let an = node(&mut g, "argmin", arg_min, &[positive]);
    let sum_i = node(&mut g, "sum_i64", Op::Reduce { kind: ReduceKind::Sum, axes: vec![2], keepdims: false }, &[am]);
    g.add_output("argmax_sum", sum_i);
    g.add_output("argmin", an);
    let cast = node(&mut g, "cast", Op::Cast { to: DType::I64 }, &[gather_w]);
    let cast_b = node(&mut g, "cast_bool", Op::Cast { to: DType::Bool }, &[cast]);
    let cast_f = node(&mut g, "cast_f32", Op::Cast { to: DType::F32 }, &[idx_in]);
    g.add_output("cast", cast);
    g.add_output("cast_bool", cast_b);
    g.add_output("cast_f32", cast_f);

    // Fused ops: conv + residual + ReLU6, conv + LeakyReLU, conv + residual, conv + Sigmoid,
    // conv + residual + Swish, gemm + HardSigmoid, matmul + residual, gemm + residual + HardSwish.
    let fused = |base: Op, act: Option<UnaryOp>, residual: bool| Op::Fused(Box::new(Fused { base, act, residual }));
    let f1 = node(
        &mut g,
        "fused_conv",
        fused(Op::Conv(conv_attrs(2)), Some(UnaryOp::Clip { min: 0.0, max: 6.0 }), true),
        &[x, w, b, conv],
    );
    let f2 = node(
        &mut g,
        "fused_conv_act",
        fused(Op::Conv(conv_attrs(2)), Some(UnaryOp::LeakyRelu { alpha: 0.2 }), false),
        &[f1, w],
    );
    let f3 = node(&mut g, "fused_conv_res", fused(Op::Conv(conv_attrs(2)), None, true), &[f2, w, b, x]);
    let f4 = node(&mut g, "fused_conv_sig", fused(Op::Conv(conv_attrs(2)), Some(UnaryOp::Sigmoid), false), &[f3, w, b]);
    let f5 = node(
        &mut g,
        "fused_conv_swish",
        fused(Op::Conv(conv_attrs(2)), Some(UnaryOp::Swish { beta: 0.5 }), true),
        &[f4, w, b, f4],
    );
    g.add_output("fused_conv", f5);
    let fg = node(
        &mut g,
        "fused_gemm",
        fused(gemm.clone(), Some(UnaryOp::HardSigmoid { alpha: 0.2, beta: 0.5 }), false),
        &[flat, fc_w, fc_b],
    );
    let mm_res = node(&mut g, "mm_res", Op::MatMul, &[fg, proj]);
    let fm = node(&mut g, "fused_mm", fused(Op::MatMul, None, true), &[fg, proj, mm_res]);
    let fg2 = node(&mut g, "fused_gemm2", fused(gemm, Some(UnaryOp::HardSwish), true), &[flat, fc_w, fc_b, fg]);
    g.add_output("fused_mm", fm);
    g.add_output("fused_gemm", fg2);

    // Outputs that are a graph input and a weight.
    g.add_output("x_out", x);
    g.add_output("bias_out", b);
    g
}

#[test]
fn every_op_exports_and_reimports_to_the_same_function() {
    let g = verify(every_op_graph()).expect("the every-op graph verifies");
    let back = round_trip(&g, "every-op");
    assert_eq!(op_counts(&back, false), op_counts(&g, true), "op counts (fused ops and flattening softmax expanded)");
    let names = |g: &Graph| g.outputs().iter().map(|o| o.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&back), names(&g));
    let x = Tensor::from_f32([1, 4, 8, 8], (0..256).map(|i| ((i as f32) * 0.61).sin() * 2.0).collect()).expect("256");
    let idx = Tensor::from_i64([2], vec![1, -1]).expect("2");
    let want = run_reference(&g, &[x.clone(), idx.clone()]).expect("runs");
    for (o, t) in g.outputs().iter().zip(&want) {
        if let Some(v) = t.as_f32() {
            assert!(v.iter().all(|x| x.is_finite()), "`{}` has non-finite values: the graph should avoid them", o.name);
        }
    }
    let got = run_reference(&back, &[x, idx]).expect("re-imported graph runs");
    assert_same_outputs(&g, &want, &got, "every-op", &["convt_wide", "swish", "fused_conv"]);
}

/// Writes the every-op graph's export, input and reference outputs to `$CNNC_EXPORT_DIR` for
/// `bench/check_onnx.py --every-op DIR`, which runs it through onnx.checker and onnxruntime.
#[test]
fn every_op_export_for_onnxruntime() {
    let Some(dir) = std::env::var_os("CNNC_EXPORT_DIR") else { return };
    let dir = std::path::PathBuf::from(dir);
    let g = verify(every_op_graph()).expect("verifies");
    std::fs::create_dir_all(&dir).expect("create dir");
    std::fs::write(dir.join("every_op.onnx"), export_bytes(&g).expect("exports")).expect("write");
    let x = Tensor::from_f32([1, 4, 8, 8], (0..256).map(|i| ((i as f32) * 0.61).sin() * 2.0).collect()).expect("256");
    let idx = Tensor::from_i64([2], vec![1, -1]).expect("2");
    let want = run_reference(&g, &[x.clone(), idx.clone()]).expect("runs");
    cnnc::npy::write_npy(&dir.join("in.x.npy"), &x).expect("write");
    cnnc::npy::write_npy(&dir.join("in.indices.npy"), &idx).expect("write");
    for (o, t) in g.outputs().iter().zip(&want) {
        cnnc::npy::write_npy(&dir.join(format!("out.{}.npy", o.name)), t).expect("write");
    }
}

fn single_op_graph(op: Op) -> VerifiedGraph {
    let mut g = Graph::new("one-op");
    let x = g.add_input("x", TensorType::f32([1, 2, 6, 6]));
    let y = node(&mut g, "the_node", op, &[x]);
    g.add_output("y", y);
    verify(g).expect("verifies")
}

#[test]
fn what_opset_18_cannot_express_is_an_error_naming_the_node() {
    let mut pool = window(2, 1, 0);
    pool.dilations = vec![2, 2];
    let half_pixel_symmetric = ResizeAttrs {
        mode: ResizeMode::Linear,
        coord: CoordTransform::HalfPixelSymmetric,
        nearest: NearestMode::Floor,
        scales: vec![1.0, 1.0, 2.0, 2.0],
        out_shape: vec![1, 2, 12, 12],
    };
    let odd_scales = ResizeAttrs {
        mode: ResizeMode::Nearest,
        coord: CoordTransform::Asymmetric,
        nearest: NearestMode::Floor,
        scales: vec![1.0, 1.0, 2.0, 2.0],
        out_shape: vec![1, 2, 11, 11],
    };
    for (op, says) in [
        (Op::AvgPool { pool, count_include_pad: false }, "dilations"),
        (Op::Pad { pads: vec![0, 0, 1, 1, 0, 0, 1, 1], mode: PadMode::Wrap, value: 0.0 }, "wrap"),
        (Op::Resize(half_pixel_symmetric), "half_pixel_symmetric"),
        (Op::Resize(odd_scales), "scales"),
    ] {
        let name = op.name();
        let err = export_bytes(&single_op_graph(op)).expect_err(name).to_string();
        assert!(err.contains("node `the_node`") && err.contains(says), "{name}: {err}");
    }
}

#[test]
fn quantize_and_dequantize_export_as_qdq_and_reimport_to_the_same_ops() {
    let per_channel = QuantParams { axis: Some(1), scales: vec![0.5, 0.02], zero_points: vec![-3, 0] };
    let per_tensor = QuantParams::per_tensor(0.1, 128);
    let mut g = Graph::new("qdq");
    let x = g.add_input("x", TensorType::f32([1, 2, 6, 6]));
    let q8 = node(&mut g, "q_i8", Op::Quantize { params: per_channel.clone(), to: DType::I8 }, &[x]);
    let d8 = node(&mut g, "dq_i8", Op::Dequantize(per_channel), &[q8]);
    let qu = node(&mut g, "q_u8", Op::Quantize { params: per_tensor.clone(), to: DType::U8 }, &[d8]);
    let du = node(&mut g, "dq_u8", Op::Dequantize(per_tensor), &[qu]);
    g.add_output("y", du);
    g.add_output("q", qu);
    let g = verify(g).expect("verifies");
    let back = round_trip(&g, "qdq");
    let ops = |g: &Graph| g.node_ids().map(|id| g.node(id).op.clone()).filter(|op| !op.is_source()).collect::<Vec<_>>();
    assert_eq!(ops(&back), ops(&g));
    let x = Tensor::from_f32([1, 2, 6, 6], (0..72).map(|i| ((i as f32) * 0.61).sin() * 3.0).collect()).expect("72");
    let want = run_reference(&g, std::slice::from_ref(&x)).expect("runs");
    assert_eq!(run_reference(&back, &[x]).expect("re-imported graph runs"), want);
}

/// An f32 conv or conv-transpose reading a DequantizeLinear whose constant weight is exactly
/// `q · s[c]` (int8 `q` per output channel: axis 0 of a conv weight, axis 1 of a conv-transpose
/// one; what `-O1` leaves of a folded per-channel DequantizeLinear) is written with that
/// DequantizeLinear again, so onnxruntime runs it on these int8 weights rather than quantizing
/// the f32 ones itself, per tensor; the re-imported graph computes the same bits. A weight one
/// ulp off any `q · s` stays f32.
#[test]
fn a_folded_int8_weight_in_a_qdq_graph_exports_as_its_dequantize() {
    let scales = [0.013f32, 0.25, 0.0071];
    // Symmetric per-channel quantization as onnxruntime's quantizer does it: the scale is
    // max |w| / 127, so each channel's largest weight is ±127.
    let q = |c: usize, k: usize| match k {
        4 if c == 1 => -127,
        4 => 127,
        _ => ((c * 18 + k) * 37 % 255) as i32 - 127,
    };
    // (op, weight shape, output-channel axis, output shape); 18 weights per output channel.
    let transpose = Op::ConvTranspose(ConvTransposeAttrs {
        kernel: vec![3, 3],
        strides: vec![2, 2],
        dilations: vec![1, 1],
        pads: vec![0; 4],
        output_padding: vec![0, 0],
        group: 1,
    });
    let cases = [
        (Op::Conv(conv_attrs(1)), [3usize, 2, 3, 3], 0usize, [1usize, 3, 5, 5]),
        (transpose, [2, 3, 3, 3], 1, [1, 3, 11, 11]),
    ];
    for (op, shape, axis, out) in cases {
        let channel = |i: usize| if axis == 0 { i / 18 } else { (i / 9) % 3 };
        let index_in_channel = |i: usize| if axis == 0 { i % 18 } else { (i / 27) * 9 + i % 9 };
        let build = |nudge: bool| {
            let mut g = Graph::new("qdq_conv");
            let x = g.add_input("x", TensorType::f32([1, 2, 5, 5]));
            let p = QuantParams::per_tensor(0.05, 128);
            let xq = node(&mut g, "xq", Op::Quantize { params: p.clone(), to: DType::U8 }, &[x]);
            let xd = node(&mut g, "xd", Op::Dequantize(p), &[xq]);
            let w = weight(&mut g, "w", &shape, |i| {
                let v = q(channel(i), index_in_channel(i)) as f32 * scales[channel(i)];
                if nudge && i == 20 { v.next_up() } else { v }
            });
            let y = node(&mut g, "conv", op.clone(), &[xd, w]);
            g.add_output("y", y);
            verify(g).expect("verifies")
        };
        let x = Tensor::from_f32([1, 2, 5, 5], (0..50).map(|i| ((i as f32) * 0.37).sin() * 4.0).collect()).expect("50");
        for nudge in [false, true] {
            let g = build(nudge);
            assert_eq!(g.node(g.outputs()[0].value.node).outputs[0].shape, out);
            let back = round_trip(&g, "qdq_conv");
            let int8_dq: Vec<QuantParams> = back
                .node_ids()
                .filter_map(|id| match &back.node(id).op {
                    Op::Dequantize(p) => {
                        let input = &back.node_inputs(id)[0];
                        back.weight_of(input).filter(|t| t.dtype() == DType::I8).map(|_| p.clone())
                    }
                    _ => None,
                })
                .collect();
            let what = format!("{} nudge {nudge}", op.name());
            if nudge {
                assert!(int8_dq.is_empty(), "{what}: a weight no int8 scale reproduces stays f32: {int8_dq:?}");
            } else {
                assert_eq!(int8_dq.len(), 1, "{what}: {}", back.display_without_weights());
                assert_eq!(int8_dq[0].axis, Some(axis), "{what}");
                assert_eq!(int8_dq[0].zero_points, [0, 0, 0], "{what}");
                // Each scale reproduces every weight of its channel: the one used, within the
                // few ulps the search tries next to max |w| / 127.
                for (got, want) in int8_dq[0].scales.iter().zip(scales) {
                    assert!((got - want).abs() <= 4.0 * f32::EPSILON * want, "{what}: scale {got} vs {want}");
                }
            }
            let want = run_reference(&g, std::slice::from_ref(&x)).expect("runs");
            let got = run_reference(&back, std::slice::from_ref(&x)).expect("re-imported graph runs");
            let bits = |t: &[Tensor]| t[0].as_f32().expect("f32").iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{what}: the re-imported graph computes other bits");
        }
    }
}
