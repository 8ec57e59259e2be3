//! Graph builders shared by the text-form and artifact tests.
#![allow(dead_code)] // each test binary uses a different subset

use cnnc_ir::*;

pub fn weight(g: &mut Graph, name: &str, shape: &[usize]) -> ValueRef {
    let n: usize = shape.iter().product();
    let data = (0..n).map(|i| (i as f32 - 3.0) * 0.25).collect();
    g.add_weight(name, Tensor::from_f32(shape, data).expect("shape matches data"))
}

pub fn node(g: &mut Graph, name: &str, op: Op, inputs: &[ValueRef]) -> ValueRef {
    match g.add_node(name, op, inputs) {
        Ok(v) => v[0],
        Err(e) => panic!("{name}: {e}"),
    }
}

/// A graph that uses every op variant and every unary and binary op.
pub fn every_op_graph() -> Graph {
    let mut g = Graph::new("every-op");
    let x = g.add_input("x", TensorType::f32([1, 4, 8, 8]));
    let idx_in = g.add_input("indices", TensorType::new(DType::I64, [2]));

    let w = weight(&mut g, "conv.w", &[4, 2, 3, 3]);
    let b = weight(&mut g, "conv.b", &[4]);
    let conv = node(&mut g, "conv", Op::Conv(ConvAttrs::new(&[3, 3]).pads(&[1; 4]).group(2)), &[x, w, b]);

    let wt = weight(&mut g, "convt.w", &[4, 3, 2, 2]);
    let convt = Op::ConvTranspose(ConvTransposeAttrs {
        kernel: vec![2, 2],
        strides: vec![2, 2],
        dilations: vec![1, 1],
        pads: vec![0, 1, 0, 1],
        output_padding: vec![1, 0],
        group: 1,
    });
    let convt = node(&mut g, "convt", convt, &[conv, wt]);

    let bn_params: Vec<ValueRef> =
        ["bn.scale", "bn.bias", "bn.mean", "bn.var"].iter().map(|p| weight(&mut g, p, &[4])).collect();
    let mut bn_inputs = vec![conv];
    bn_inputs.extend(bn_params);
    let mut h = node(&mut g, "bn", Op::BatchNorm { epsilon: 1e-5 }, &bn_inputs);

    let unary = [
        UnaryOp::Relu,
        UnaryOp::LeakyRelu { alpha: 0.1 },
        UnaryOp::Clip { min: f32::NEG_INFINITY, max: 6.0 },
        UnaryOp::Sigmoid,
        UnaryOp::HardSigmoid { alpha: 0.2, beta: 0.5 },
        UnaryOp::HardSwish,
        UnaryOp::Tanh,
        UnaryOp::Exp,
        UnaryOp::Log,
        UnaryOp::Erf,
        UnaryOp::Sqrt,
        UnaryOp::Reciprocal,
        UnaryOp::Neg,
        UnaryOp::Abs,
        UnaryOp::Floor,
        UnaryOp::Ceil,
    ];
    for (i, u) in unary.into_iter().enumerate() {
        h = node(&mut g, &format!("u{i}"), Op::Unary(u), &[h]);
    }
    let c = weight(&mut g, "c", &[1, 4, 1, 1]);
    for bop in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div, BinaryOp::Max, BinaryOp::Min, BinaryOp::Pow]
    {
        h = node(&mut g, bop.name(), Op::Binary(bop), &[h, c]);
    }
    let slope = weight(&mut g, "slope", &[4, 1, 1]);
    h = node(&mut g, "prelu", Op::Binary(BinaryOp::PRelu), &[h, slope]);
    let eq = node(&mut g, "eq", Op::Binary(BinaryOp::Equal), &[h, c]);
    let lt = node(&mut g, "lt", Op::Binary(BinaryOp::Less), &[h, conv]);
    let gt = node(&mut g, "gt", Op::Binary(BinaryOp::Greater), &[conv, c]);
    let either = node(&mut g, "either", Op::Where, &[eq, lt, gt]);
    let sel = node(&mut g, "sel", Op::Where, &[either, h, conv]);

    let pool =
        PoolAttrs { kernel: vec![2, 2], strides: vec![2, 2], dilations: vec![1, 1], pads: vec![0; 4], ceil_mode: true };
    let mp = node(&mut g, "mp", Op::MaxPool(pool.clone()), &[sel]);
    let ap = node(&mut g, "ap", Op::AvgPool { pool, count_include_pad: true }, &[mp]);
    let gmp = node(&mut g, "gmp", Op::GlobalMaxPool, &[ap]);
    let gap = node(&mut g, "gap", Op::GlobalAvgPool, &[sel]);
    let flat = node(&mut g, "flat", Op::Reshape { shape: vec![1, 4] }, &[gap]);
    let fc_w = weight(&mut g, "fc.w", &[10, 4]);
    let fc_b = weight(&mut g, "fc.b", &[10]);
    let gemm = Op::Gemm { alpha: 1.0, beta: 0.5, trans_a: false, trans_b: true };
    let fc = node(&mut g, "fc", gemm.clone(), &[flat, fc_w, fc_b]);
    let proj = weight(&mut g, "proj", &[10, 3]);
    let mm = node(&mut g, "mm", Op::MatMul, &[fc, proj]);
    let sm = node(&mut g, "sm", Op::Softmax { axis: 1, flatten: true }, &[mm]);
    g.add_output("probs", sm);

    let resize = Op::Resize(ResizeAttrs {
        mode: ResizeMode::Linear,
        coord: CoordTransform::PytorchHalfPixel,
        nearest: NearestMode::RoundPreferCeil,
        scales: vec![1.0, 1.0, 2.0, 1.5],
        out_shape: vec![1, 4, 16, 12],
    });
    let up = node(&mut g, "up", resize, &[conv]);
    let crop = Op::Resize(ResizeAttrs {
        mode: ResizeMode::Cubic { a: -0.5, exclude_outside: true },
        coord: CoordTransform::TfCropAndResize {
            roi: vec![0.0, 0.0, 0.25, -0.1, 1.0, 1.0, 0.75, 1.2],
            extrapolation: -1.5,
        },
        nearest: NearestMode::Floor,
        scales: vec![1.0, 1.0, 0.75, 1.25],
        out_shape: vec![1, 4, 6, 10],
    });
    let cropped = node(&mut g, "crop", crop, &[conv]);
    let expanded = node(&mut g, "expand", Op::Expand { shape: vec![1, 4, 8, 8] }, &[gmp]);
    let cat = node(&mut g, "cat", Op::Concat { axis: 1 }, &[conv, sel, expanded]);
    let parts = match g.add_node("split", Op::Split { axis: 1, sizes: vec![3, 9] }, &[cat]) {
        Ok(v) => v,
        Err(e) => panic!("split: {e}"),
    };
    let tr = node(&mut g, "tr", Op::Transpose { perm: vec![0, 2, 3, 1] }, &[parts[1]]);
    let slice = Op::Slice {
        axes: vec![
            SliceAxis { axis: 1, start: 7, end: -1, step: -2 },
            SliceAxis { axis: 3, start: 0, end: 9, step: 4 },
        ],
    };
    let sl = node(&mut g, "sl", slice, &[tr]);
    let gather = node(&mut g, "gather", Op::Gather { axis: 3 }, &[sl, idx_in]);
    let pad = Op::Pad { pads: vec![0, 0, 1, -1, 0, 0, 1, -1], mode: PadMode::Reflect, value: 0.0 };
    let padded = node(&mut g, "pad", pad, &[parts[0]]);
    let mean =
        node(&mut g, "mean", Op::Reduce { kind: ReduceKind::Mean, axes: vec![2, 3], keepdims: false }, &[padded]);
    let mut reduced = cropped;
    for kind in ReduceKind::ALL {
        reduced = node(&mut g, kind.name(), Op::Reduce { kind, axes: vec![3], keepdims: true }, &[reduced]);
    }
    let arg_max = Op::ArgReduce { max: true, axis: 1, keepdims: false, select_last_index: true };
    let am = node(&mut g, "argmax", arg_max, &[reduced]);
    let arg_min = Op::ArgReduce { max: false, axis: 0, keepdims: true, select_last_index: false };
    let an = node(&mut g, "argmin", arg_min, &[reduced]);
    let cast = node(&mut g, "cast", Op::Cast { to: DType::I64 }, &[gather]);
    let const_pad = Op::Pad { pads: vec![0, 0, 0, 0, 0, 0, 2, 2], mode: PadMode::Constant, value: f32::NAN };
    let cp = node(&mut g, "const_pad", const_pad, &[up]);
    g.add_output("mean", mean);
    g.add_output("cast", cast);
    g.add_output("up", cp);
    g.add_output("convt", convt);
    g.add_output("argmax", am);
    g.add_output("argmin", an);

    // Quantization: x per channel to u8 and back; per tensor to i8 and back.
    let per_channel =
        QuantParams { axis: Some(1), scales: vec![0.5, 0.25, 1e-3, 3.0], zero_points: vec![0, 128, 255, 7] };
    let xq = node(&mut g, "quantize", Op::Quantize { params: per_channel.clone(), to: DType::U8 }, &[x]);
    let xd = node(&mut g, "dequantize", Op::Dequantize(per_channel), &[xq]);
    let tq =
        node(&mut g, "quantize_i8", Op::Quantize { params: QuantParams::per_tensor(0.1, -128), to: DType::I8 }, &[xd]);
    let td = node(&mut g, "dequantize_i8", Op::Dequantize(QuantParams::per_tensor(0.1, -128)), &[tq]);
    g.add_output("dequantized", td);

    // Quantized linear ops: an i8 conv with per-channel weights, an i32 bias, a u8 output and
    // a clamp; a u8 matmul with f32 output; a transposed-B gemm with i32 output.
    let int = |g: &mut Graph, name: &str, shape: &[usize], data: TensorData| {
        g.add_weight(name, Tensor::new(shape.to_vec(), data).expect("shape matches data"))
    };
    let qw =
        int(&mut g, "qconv.w", &[4, 2, 3, 3], TensorData::I8((0..72).map(|i| (i * 7 % 255 - 127) as i8).collect()));
    let qb = int(&mut g, "qconv.b", &[4], TensorData::I32(vec![-1000, 0, 7, i32::MAX]));
    let qconv = QLinear {
        base: Op::Conv(ConvAttrs::new(&[3, 3]).pads(&[1; 4]).group(2)),
        x: QuantParams::per_tensor(0.1, -128),
        w: QuantParams { axis: Some(0), scales: vec![0.01, 0.02, 0.5, 1e-4], zero_points: vec![0, 3, -5, 0] },
        out: QLinearOut::Quantized { params: QuantParams::per_tensor(0.3, 17), to: DType::U8 },
        clamp: Some((17, 255)),
    };
    let qc = node(&mut g, "qconv", Op::QLinear(Box::new(qconv)), &[tq, qw, qb]);
    g.add_output("qconv", qc);
    let rows = node(&mut g, "qrows", Op::Reshape { shape: vec![4, 64] }, &[xq]);
    let mw = int(&mut g, "qmm.w", &[64, 3], TensorData::U8((0..192).map(|i| (i * 5 % 256) as u8).collect()));
    let qmm = QLinear {
        base: Op::MatMul,
        x: QuantParams::per_tensor(0.5, 128),
        w: QuantParams { axis: Some(1), scales: vec![0.25, 0.5, 2.0], zero_points: vec![0, 128, 255] },
        out: QLinearOut::F32,
        clamp: None,
    };
    let qm = node(&mut g, "qmatmul", Op::QLinear(Box::new(qmm)), &[rows, mw]);
    g.add_output("qmatmul", qm);
    let gw = int(&mut g, "qgemm.w", &[3, 64], TensorData::I8((0..192).map(|i| (i % 256 - 128) as i8).collect()));
    let qgemm = QLinear {
        base: Op::Gemm { alpha: 1.0, beta: 1.0, trans_a: false, trans_b: true },
        x: QuantParams::per_tensor(1.0, 0),
        w: QuantParams::per_tensor(1.0, -1),
        out: QLinearOut::I32,
        clamp: None,
    };
    let qg = node(&mut g, "qgemm", Op::QLinear(Box::new(qgemm)), &[rows, gw]);
    g.add_output("qgemm", qg);

    // Fused ops: a conv with a residual and ReLU6, a gemm with HardSigmoid, a matmul with a
    // residual only.
    let fconv = Fused {
        base: Op::Conv(ConvAttrs::new(&[3, 3]).pads(&[1; 4]).group(2)),
        act: Some(UnaryOp::Clip { min: 0.0, max: 6.0 }),
        residual: true,
    };
    let fc2 = node(&mut g, "fused_conv", Op::Fused(Box::new(fconv)), &[x, w, b, conv]);
    let fgemm = Fused { base: gemm, act: Some(UnaryOp::HardSigmoid { alpha: 0.2, beta: 0.5 }), residual: false };
    let fg = node(&mut g, "fused_gemm", Op::Fused(Box::new(fgemm)), &[flat, fc_w, fc_b]);
    let fmm = Fused { base: Op::MatMul, act: None, residual: true };
    let mm_res = node(&mut g, "mm_res", Op::MatMul, &[fg, proj]);
    let fm = node(&mut g, "fused_mm", Op::Fused(Box::new(fmm)), &[fg, proj, mm_res]);
    g.add_output("fused_conv", fc2);
    g.add_output("fused_mm", fm);

    // A table lookup on the i8 quantized values (the two-operand form is in `lookup_graph`).
    let table = int(&mut g, "lookup.table", &[256], TensorData::U8((0..256).map(|i| (255 - i) as u8).collect()));
    let lookup = node(&mut g, "lookup", Op::Lookup, &[table, tq]);
    g.add_output("lookup", lookup);
    g
}

/// Lookups of one operand (u8 into an f32 table with −0.0, NaNs with payloads and −∞; i8 into
/// a u8 table) and of two (u8 and i8 into a 65,536-entry i8 table).
pub fn lookup_graph() -> Graph {
    let mut g = Graph::new("lookups");
    let a = g.add_input("a", TensorType::new(DType::U8, [2, 3]));
    let b = g.add_input("b", TensorType::new(DType::I8, [2, 3]));
    let floats = (0..256u32)
        .map(|i| match i {
            0 => -0.0,
            1 => f32::from_bits(0x7fc0_1234),
            2 => f32::from_bits(0xff80_0001),
            3 => f32::NEG_INFINITY,
            _ => (i as f32 - 100.0) * 0.125,
        })
        .collect();
    let t1 = g.add_weight("t1", Tensor::from_f32([256], floats).expect("256 values"));
    let t2 = g.add_weight("t2", Tensor::from_u8([256], (0..=255).rev().collect()).expect("256 values"));
    let pairs = (0..65536).map(|i: i32| (i * 7 % 251 - 125) as i8).collect();
    let t3 = g.add_weight("t3", Tensor::from_i8([65536], pairs).expect("65536 values"));
    let y1 = node(&mut g, "y1", Op::Lookup, &[t1, a]);
    let y2 = node(&mut g, "y2", Op::Lookup, &[t2, b]);
    let y3 = node(&mut g, "y3", Op::Lookup, &[t3, a, b]);
    g.add_output("y1", y1);
    g.add_output("y2", y2);
    g.add_output("y3", y3);
    g
}
