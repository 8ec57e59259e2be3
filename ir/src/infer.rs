//! Shape and dtype inference: the output types of an op from its input types and attributes.
//!
//! Semantics follow ONNX (see the docs in `op.rs`). Every check returns an [`InferError`]
//! naming the numbers involved; no input, however malformed, makes inference panic, and all
//! size arithmetic is checked.

use crate::op::{
    BinaryOp, ConvAlgo, ConvAttrs, ConvTransposeAttrs, CoordTransform, Op, PadMode, PoolAttrs, ReduceKind, ResizeAttrs,
    ResizeMode, SliceAxis,
};
use crate::tensor::{DType, TensorType, checked_numel};

/// An op applied to inputs whose types it cannot accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{op}: {reason}")]
pub struct InferError {
    pub op: &'static str,
    pub reason: String,
}

type Result<T> = std::result::Result<T, InferError>;

/// Numpy-style multidirectional broadcast of two shapes; `None` if incompatible.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for (i, o) in out.iter_mut().enumerate() {
        // Align trailing axes: axis `i` of the result is axis `i - (rank - len)` of an operand.
        let da = (i + a.len()).checked_sub(rank).map_or(1, |j| a[j]);
        let db = (i + b.len()).checked_sub(rank).map_or(1, |j| b[j]);
        *o = match (da, db) {
            _ if da == db => da,
            (1, d) | (d, 1) => d,
            _ => return None,
        };
    }
    Some(out)
}

/// Output types of `op` applied to inputs of types `inputs`. Source ops (`Input`, `Weight`)
/// have no inferable type and return an error.
pub fn infer_types(op: &Op, inputs: &[&TensorType]) -> Result<Vec<TensorType>> {
    let cx = Cx { op: op.name() };
    cx.check_arity(op.arity(), inputs.len())?;
    let one = |t: TensorType| vec![t];
    Ok(match op {
        Op::Input { .. } | Op::Weight(_) => {
            return Err(cx.err("a source op has no inputs to infer from; its type is given by the graph"));
        }
        Op::Conv(a) => one(conv(&cx, a, inputs)?),
        Op::ConvTranspose(a) => one(conv_transpose(&cx, a, inputs)?),
        Op::BatchNorm { .. } => one(batch_norm(&cx, inputs)?),
        Op::Unary(_) => {
            cx.dtype("input", inputs[0], DType::F32)?;
            one(inputs[0].clone())
        }
        Op::Binary(b) => one(binary(&cx, *b, inputs[0], inputs[1])?),
        Op::Where => one(where_(&cx, inputs)?),
        Op::MaxPool(p) => one(max_pool(&cx, p, inputs[0])?),
        Op::AvgPool { pool: p, .. } => one(pool(&cx, p, inputs[0])?),
        Op::GlobalAvgPool | Op::GlobalMaxPool => one(global_pool(&cx, inputs[0])?),
        Op::Gemm { trans_a, trans_b, .. } => one(gemm(&cx, *trans_a, *trans_b, inputs)?),
        Op::MatMul => one(matmul(&cx, inputs[0], inputs[1])?),
        Op::Resize(a) => one(resize(&cx, a, inputs[0])?),
        Op::Concat { axis } => one(concat(&cx, *axis, inputs)?),
        Op::Split { axis, sizes } => split(&cx, *axis, sizes, inputs[0])?,
        Op::Reshape { shape } => one(reshape(&cx, shape, inputs[0])?),
        Op::Transpose { perm } => one(transpose(&cx, perm, inputs[0])?),
        Op::Slice { axes } => one(slice(&cx, axes, inputs[0])?),
        Op::Gather { axis } => one(gather(&cx, *axis, inputs[0], inputs[1])?),
        Op::Expand { shape } => one(expand(&cx, shape, inputs[0])?),
        Op::Cast { to } => one(TensorType::new(*to, inputs[0].shape.clone())),
        Op::Quantize { params, to } => {
            cx.dtype("input", inputs[0], DType::F32)?;
            if !to.is_quantized() {
                return Err(cx.err(format!("quantizes to {to}, expected u8 or i8")));
            }
            quant_params(&cx, params, *to, inputs[0])?;
            one(TensorType::new(*to, inputs[0].shape.clone()))
        }
        Op::Dequantize(params) => {
            let x = inputs[0];
            if !(x.dtype.is_quantized() || x.dtype == DType::I32) {
                return Err(cx.err(format!("input has dtype {}, expected u8, i8 or i32", x.dtype)));
            }
            quant_params(&cx, params, x.dtype, x)?;
            one(TensorType::f32(x.shape.clone()))
        }
        Op::Softmax { axis, .. } => one(softmax(&cx, *axis, inputs[0])?),
        Op::Pad { pads, mode, .. } => one(pad(&cx, pads, *mode, inputs[0])?),
        Op::Reduce { kind, axes, keepdims } => one(reduce(&cx, *kind, axes, *keepdims, inputs[0])?),
        Op::ArgReduce { axis, keepdims, .. } => one(arg_reduce(&cx, *axis, *keepdims, inputs[0])?),
        Op::Fused(f) => one(fused(&cx, f, inputs)?),
        Op::QLinear(q) => one(qlinear(&cx, q, inputs)?),
        Op::Lookup => one(lookup(&cx, inputs)?),
    })
}

/// A table lookup: a 1-D f32/u8/i8 table of `256^k` entries for `k` 8-bit operands of one shape.
fn lookup(cx: &Cx, inputs: &[&TensorType]) -> Result<TensorType> {
    let (table, operands) = (inputs[0], &inputs[1..]);
    if !(table.dtype == DType::F32 || table.dtype.is_quantized()) {
        return Err(cx.err(format!("table has dtype {}, expected f32, u8 or i8", table.dtype)));
    }
    let want = 256usize.pow(operands.len() as u32);
    if table.shape != [want] {
        return Err(cx.err(format!(
            "table has shape {:?}, expected [{want}] for {} operand(s)",
            table.shape,
            operands.len()
        )));
    }
    for (i, t) in operands.iter().enumerate() {
        if !t.dtype.is_quantized() {
            return Err(cx.err(format!("operand {} has dtype {}, expected u8 or i8", i + 1, t.dtype)));
        }
        if t.shape != operands[0].shape {
            return Err(
                cx.err(format!("operands have shapes {:?} and {:?}, expected one shape", operands[0].shape, t.shape))
            );
        }
    }
    Ok(TensorType::new(table.dtype, operands[0].shape.clone()))
}

/// A fused op: its base's type, a residual of exactly that type, an inline activation.
fn fused(cx: &Cx, f: &crate::Fused, inputs: &[&TensorType]) -> Result<TensorType> {
    if !crate::Fused::fusible_base(&f.base) {
        return Err(cx.err(format!("the base of a fused op must be a conv, gemm or matmul, not {}", f.base.name())));
    }
    if let Some(act) = f.act.filter(|a| !crate::Fused::fusible_act(a)) {
        return Err(cx.err(format!(
            "{} is not a fusible activation ({})",
            act.name(),
            crate::Fused::ACTIVATIONS.join(", ")
        )));
    }
    let n = f.base_inputs(inputs.len());
    let mut out = infer_types(&f.base, &inputs[..n]).map_err(|e| cx.err(format!("base {}: {}", e.op, e.reason)))?;
    let out = out.remove(0);
    cx.dtype("the output", &out, DType::F32)?;
    if f.residual && inputs[n] != &out {
        return Err(cx.err(format!("the residual is {}, expected the output's type {out}", inputs[n])));
    }
    Ok(out)
}

/// A quantized conv, gemm or matmul: quantized x and w with their params, the base's shapes,
/// an i32 bias per output channel, the output and clamp.
fn qlinear(cx: &Cx, q: &crate::QLinear, inputs: &[&TensorType]) -> Result<TensorType> {
    if !crate::QLinear::linear_base(&q.base) {
        return Err(cx.err(format!(
            "the base of a quantized op must be a direct conv, a gemm with alpha = beta = 1 or a matmul, not {:?}",
            q.base
        )));
    }
    let (x, w) = (inputs[0], inputs[1]);
    for (name, t) in [("input", x), ("weight", w)] {
        if !t.dtype.is_quantized() {
            return Err(cx.err(format!("{name} has dtype {}, expected u8 or i8", t.dtype)));
        }
    }
    if q.x.axis.is_some() {
        return Err(cx.err("the input's quantization must be per tensor"));
    }
    quant_params(cx, &q.x, x.dtype, x)?;
    if matches!(q.base, Op::MatMul) && w.rank() != 2 {
        return Err(cx.err(format!("a quantized matmul's weight must be 2-D, got shape {:?}", w.shape)));
    }
    let axis = q.weight_channel_axis(w.rank());
    if q.w.axis.is_some_and(|a| a != axis) {
        return Err(cx.err(format!(
            "the weight is quantized along axis {}, expected per tensor or along its output-channel axis {axis}",
            q.w.axis.unwrap_or_default()
        )));
    }
    quant_params(cx, &q.w, w.dtype, w)?;
    let base = infer_types(&q.base, &[&TensorType::f32(x.shape.clone()), &TensorType::f32(w.shape.clone())])
        .map_err(|e| cx.err(format!("base {}: {}", e.op, e.reason)))?
        .remove(0);
    let c_out = *w.shape.get(axis).ok_or_else(|| cx.err(format!("weight shape {:?} has no axis {axis}", w.shape)))?;
    if let Some(b) = inputs.get(2) {
        cx.dtype("bias", b, DType::I32)?;
        if b.shape != [c_out] {
            return Err(cx.err(format!("bias has shape {:?}, expected [{c_out}]", b.shape)));
        }
    }
    let out = match &q.out {
        crate::QLinearOut::I32 => TensorType::new(DType::I32, base.shape),
        crate::QLinearOut::F32 => base,
        crate::QLinearOut::Quantized { params, to } => {
            if !to.is_quantized() {
                return Err(cx.err(format!("the output is {to}, expected u8 or i8 when requantized")));
            }
            if params.axis.is_some() {
                return Err(cx.err("the output's quantization must be per tensor"));
            }
            let out = TensorType::new(*to, base.shape);
            quant_params(cx, params, *to, &out)?;
            out
        }
    };
    if let Some((lo, hi)) = q.clamp {
        let Some((min, max)) = out.dtype.int_range().filter(|_| out.dtype.is_quantized()) else {
            return Err(cx.err(format!("a clamp needs a u8 or i8 output, not {}", out.dtype)));
        };
        if lo > hi || i64::from(lo) < min || i64::from(hi) > max {
            return Err(cx.err(format!("clamp [{lo}, {hi}] is empty or outside the range of {}", out.dtype)));
        }
    }
    Ok(out)
}

/// Checks `p` against the quantized type `q` and the tensor `x` it applies to.
fn quant_params(cx: &Cx, p: &crate::QuantParams, q: DType, x: &TensorType) -> Result<()> {
    let n = match p.axis {
        None => 1,
        Some(a) => *x
            .shape
            .get(a)
            .ok_or_else(|| cx.err(format!("quantization axis {a} is out of range for input shape {:?}", x.shape)))?,
    };
    if p.scales.len() != n || p.zero_points.len() != n {
        return Err(cx.err(format!(
            "{} scale(s) and {} zero point(s), expected {n} (one per index of the quantization axis, or 1)",
            p.scales.len(),
            p.zero_points.len()
        )));
    }
    if let Some(s) = p.scales.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
        return Err(cx.err(format!("scale {s:?} is not finite and positive")));
    }
    let (lo, hi) = q.int_range().expect("a quantized type is an integer type");
    if let Some(z) = p.zero_points.iter().find(|&&z| !(lo..=hi).contains(&i64::from(z))) {
        return Err(cx.err(format!("zero point {z} is outside the range of {q}")));
    }
    Ok(())
}

/// The op being inferred, for error messages.
struct Cx {
    op: &'static str,
}

impl Cx {
    fn err(&self, reason: impl Into<String>) -> InferError {
        InferError { op: self.op, reason: reason.into() }
    }

    fn check_arity(&self, (lo, hi): (usize, usize), n: usize) -> Result<()> {
        if (lo..=hi).contains(&n) {
            return Ok(());
        }
        let expected = if lo == hi {
            format!("{lo}")
        } else if hi == usize::MAX {
            format!("at least {lo}")
        } else {
            format!("{lo} to {hi}")
        };
        Err(self.err(format!("expects {expected} input(s), got {n}")))
    }

    fn dtype(&self, what: &str, t: &TensorType, expected: DType) -> Result<()> {
        if t.dtype == expected {
            Ok(())
        } else {
            Err(self.err(format!("{what} has dtype {}, expected {expected}", t.dtype)))
        }
    }

    fn overflow(&self, what: &str) -> InferError {
        self.err(format!("{what} overflows"))
    }
}

/// The per-spatial-axis attributes of a sliding window over a `[N, C, spatial…]` input.
struct Window<'a> {
    kernel: &'a [usize],
    strides: &'a [usize],
    dilations: &'a [usize],
    /// `[begin…, end…]`
    pads: &'a [usize],
}

impl Window<'_> {
    /// Checks attribute lengths and values against `x`; returns the number of spatial axes.
    fn check(&self, cx: &Cx, x: &TensorType) -> Result<usize> {
        let rank = x.rank();
        if rank < 3 {
            return Err(cx.err(format!("input must have rank ≥ 3 ([N, C, spatial…]), got shape {:?}", x.shape)));
        }
        let ns = rank - 2;
        for (name, len, expected) in [
            ("kernel", self.kernel.len(), ns),
            ("strides", self.strides.len(), ns),
            ("dilations", self.dilations.len(), ns),
            ("pads", self.pads.len(), 2 * ns),
        ] {
            if len != expected {
                return Err(cx.err(format!("{name} has {len} entries, expected {expected} for a rank-{rank} input")));
            }
        }
        for (name, values) in [("kernel", self.kernel), ("strides", self.strides), ("dilations", self.dilations)] {
            if let Some(i) = values.iter().position(|&v| v == 0) {
                return Err(cx.err(format!("{name}[{i}] is 0, must be ≥ 1")));
            }
        }
        Ok(ns)
    }

    /// Output sizes of the spatial axes of `x` (conv and pooling), after [`Window::check`].
    fn out_dims(&self, cx: &Cx, x: &TensorType, ceil_mode: bool) -> Result<Vec<usize>> {
        let ns = self.kernel.len();
        (0..ns).map(|i| self.out_dim(cx, i, x.shape[2 + i], ceil_mode)).collect()
    }

    fn out_dim(&self, cx: &Cx, axis: usize, input: usize, ceil_mode: bool) -> Result<usize> {
        let ns = self.kernel.len();
        let (k, s, d) = (self.kernel[axis], self.strides[axis], self.dilations[axis]);
        let (pb, pe) = (self.pads[axis], self.pads[ns + axis]);
        let padded =
            input.checked_add(pb).and_then(|v| v.checked_add(pe)).ok_or_else(|| cx.overflow("padded input size"))?;
        let extent = dilated_extent(cx, k, d)?;
        let Some(span) = padded.checked_sub(extent) else {
            return Err(cx.err(format!(
                "spatial axis {axis}: padded input size {padded} ({input} + {pb} + {pe}) is smaller than \
                 the dilated kernel extent {extent} (kernel {k}, dilation {d})"
            )));
        };
        if !ceil_mode {
            return Ok(span / s + 1);
        }
        let mut out = span.div_ceil(s) + 1;
        // ONNX: with ceil_mode the last window is dropped if it starts inside the end padding.
        let last_start = (out - 1).checked_mul(s).ok_or_else(|| cx.overflow("window start"))?;
        if last_start >= input.saturating_add(pb) {
            out -= 1;
        }
        Ok(out)
    }
}

/// `d·(k−1) + 1`, the extent of a dilated kernel.
fn dilated_extent(cx: &Cx, k: usize, d: usize) -> Result<usize> {
    d.checked_mul(k.saturating_sub(1))
        .and_then(|e| e.checked_add(1))
        .ok_or_else(|| cx.overflow("dilated kernel extent"))
}

fn conv(cx: &Cx, a: &ConvAttrs, inputs: &[&TensorType]) -> Result<TensorType> {
    let (x, w) = (inputs[0], inputs[1]);
    cx.dtype("input", x, DType::F32)?;
    cx.dtype("weight", w, DType::F32)?;
    let window = Window { kernel: &a.kernel, strides: &a.strides, dilations: &a.dilations, pads: &a.pads };
    window.check(cx, x)?;
    if a.algo != ConvAlgo::Direct && !a.winograd_eligible() {
        return Err(cx.err(format!(
            "algo {} needs a 2-D 3×3 conv with stride 1, dilation 1 and group 1 (kernel {:?}, strides {:?}, dilations {:?}, group {})",
            a.algo.name(),
            a.kernel,
            a.strides,
            a.dilations,
            a.group
        )));
    }
    if w.rank() != x.rank() {
        return Err(cx.err(format!(
            "weight has shape {:?} (rank {}), expected rank {} like the input {:?}",
            w.shape,
            w.rank(),
            x.rank(),
            x.shape
        )));
    }
    let g = a.group;
    if g == 0 {
        return Err(cx.err("group is 0, must be ≥ 1"));
    }
    let (c, m, c_per_group) = (x.shape[1], w.shape[0], w.shape[1]);
    if c % g != 0 {
        return Err(cx.err(format!("input has {c} channels, not divisible by group {g}")));
    }
    if c / g != c_per_group {
        return Err(cx.err(format!(
            "weight has {c_per_group} input channels per group but input has {c} channels with group {g}"
        )));
    }
    if m % g != 0 {
        return Err(cx.err(format!("weight has {m} output channels, not divisible by group {g}")));
    }
    if w.shape[2..] != a.kernel[..] {
        return Err(cx.err(format!("weight spatial shape {:?} differs from kernel {:?}", &w.shape[2..], a.kernel)));
    }
    if let Some(b) = inputs.get(2) {
        cx.dtype("bias", b, DType::F32)?;
        if b.shape != [m] {
            return Err(cx.err(format!("bias has shape {:?}, expected [{m}]", b.shape)));
        }
    }
    let mut shape = vec![x.shape[0], m];
    shape.extend(window.out_dims(cx, x, false)?);
    Ok(TensorType::f32(shape))
}

fn conv_transpose(cx: &Cx, a: &ConvTransposeAttrs, inputs: &[&TensorType]) -> Result<TensorType> {
    let (x, w) = (inputs[0], inputs[1]);
    cx.dtype("input", x, DType::F32)?;
    cx.dtype("weight", w, DType::F32)?;
    let window = Window { kernel: &a.kernel, strides: &a.strides, dilations: &a.dilations, pads: &a.pads };
    let ns = window.check(cx, x)?;
    if a.output_padding.len() != ns {
        return Err(cx.err(format!(
            "output_padding has {} entries, expected {ns} for a rank-{} input",
            a.output_padding.len(),
            x.rank()
        )));
    }
    if w.rank() != x.rank() {
        return Err(cx.err(format!(
            "weight has shape {:?} (rank {}), expected rank {} like the input {:?}",
            w.shape,
            w.rank(),
            x.rank(),
            x.shape
        )));
    }
    let g = a.group;
    if g == 0 {
        return Err(cx.err("group is 0, must be ≥ 1"));
    }
    let (c, m_per_group) = (x.shape[1], w.shape[1]);
    if w.shape[0] != c {
        return Err(cx.err(format!("weight has {} input channels but input has {c} channels", w.shape[0])));
    }
    if c % g != 0 {
        return Err(cx.err(format!("input has {c} channels, not divisible by group {g}")));
    }
    let m = m_per_group.checked_mul(g).ok_or_else(|| cx.overflow("output channel count"))?;
    if w.shape[2..] != a.kernel[..] {
        return Err(cx.err(format!("weight spatial shape {:?} differs from kernel {:?}", &w.shape[2..], a.kernel)));
    }
    if let Some(b) = inputs.get(2) {
        cx.dtype("bias", b, DType::F32)?;
        if b.shape != [m] {
            return Err(cx.err(format!(
                "bias has shape {:?}, expected [{m}] ({m_per_group} output channels per group × group {g})",
                b.shape
            )));
        }
    }
    let mut shape = vec![x.shape[0], m];
    for i in 0..ns {
        let input = x.shape[2 + i];
        let (s, k, d) = (a.strides[i], a.kernel[i], a.dilations[i]);
        let (pb, pe) = (a.pads[i], a.pads[ns + i]);
        if input == 0 {
            return Err(cx.err(format!("spatial axis {i} of the input has size 0")));
        }
        let full = s
            .checked_mul(input - 1)
            .and_then(|v| v.checked_add(a.output_padding[i]))
            .and_then(|v| v.checked_add(dilated_extent(cx, k, d).ok()?))
            .ok_or_else(|| cx.overflow("output size"))?;
        let pads = pb.checked_add(pe).ok_or_else(|| cx.overflow("padding"))?;
        match full.checked_sub(pads) {
            Some(out) if out >= 1 => shape.push(out),
            _ => {
                return Err(
                    cx.err(format!("spatial axis {i}: pads {pb} + {pe} leave no output (unpadded output size {full})"))
                );
            }
        }
    }
    Ok(TensorType::f32(shape))
}

fn batch_norm(cx: &Cx, inputs: &[&TensorType]) -> Result<TensorType> {
    let x = inputs[0];
    cx.dtype("input", x, DType::F32)?;
    if x.rank() < 2 {
        return Err(cx.err(format!("input must have rank ≥ 2 ([N, C, …]), got shape {:?}", x.shape)));
    }
    let c = x.shape[1];
    for (name, t) in ["scale", "bias", "mean", "var"].iter().zip(&inputs[1..]) {
        cx.dtype(name, t, DType::F32)?;
        if t.shape != [c] {
            return Err(cx.err(format!("{name} has shape {:?}, expected [{c}] for {c} channels", t.shape)));
        }
    }
    Ok(x.clone())
}

fn broadcast(cx: &Cx, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    broadcast_shapes(a, b).ok_or_else(|| cx.err(format!("shapes {a:?} and {b:?} do not broadcast")))
}

fn binary(cx: &Cx, op: BinaryOp, a: &TensorType, b: &TensorType) -> Result<TensorType> {
    if op == BinaryOp::PRelu {
        cx.dtype("input", a, DType::F32)?;
        cx.dtype("slope", b, DType::F32)?;
        if broadcast_shapes(&a.shape, &b.shape).as_ref() != Some(&a.shape) {
            return Err(cx.err(format!("slope shape {:?} does not broadcast to input shape {:?}", b.shape, a.shape)));
        }
        return Ok(a.clone());
    }
    if a.dtype != b.dtype {
        return Err(cx.err(format!("operands have different dtypes {} and {}", a.dtype, b.dtype)));
    }
    // i32: the wrapping add, sub and mul of quantized accumulators and biases.
    let i32_op = matches!(op, BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul);
    let allowed = matches!(a.dtype, DType::F32 | DType::I64)
        || a.dtype == DType::Bool && op == BinaryOp::Equal
        || a.dtype == DType::I32 && i32_op;
    if !allowed {
        return Err(
            cx.err(format!("operands have dtype {}, expected f32 or i64 (or i32 for add, sub and mul)", a.dtype))
        );
    }
    let shape = broadcast(cx, &a.shape, &b.shape)?;
    let dtype = if op.is_comparison() { DType::Bool } else { a.dtype };
    Ok(TensorType::new(dtype, shape))
}

fn where_(cx: &Cx, inputs: &[&TensorType]) -> Result<TensorType> {
    let (cond, a, b) = (inputs[0], inputs[1], inputs[2]);
    cx.dtype("condition", cond, DType::Bool)?;
    if a.dtype != b.dtype {
        return Err(cx.err(format!("branches have different dtypes {} and {}", a.dtype, b.dtype)));
    }
    let shape = broadcast(cx, &cond.shape, &a.shape)?;
    let shape = broadcast(cx, &shape, &b.shape)?;
    Ok(TensorType::new(a.dtype, shape))
}

fn pool(cx: &Cx, p: &PoolAttrs, x: &TensorType) -> Result<TensorType> {
    cx.dtype("input", x, DType::F32)?;
    let window = Window { kernel: &p.kernel, strides: &p.strides, dilations: &p.dilations, pads: &p.pads };
    window.check(cx, x)?;
    let mut shape = x.shape[..2].to_vec();
    shape.extend(window.out_dims(cx, x, p.ceil_mode)?);
    Ok(TensorType::f32(shape))
}

/// MaxPool: f32 as [`pool`], or u8/i8 (a quantized max-pool, output of the input's type).
fn max_pool(cx: &Cx, p: &PoolAttrs, x: &TensorType) -> Result<TensorType> {
    if !matches!(x.dtype, DType::U8 | DType::I8) {
        return pool(cx, p, x);
    }
    let window = Window { kernel: &p.kernel, strides: &p.strides, dilations: &p.dilations, pads: &p.pads };
    window.check(cx, x)?;
    let mut shape = x.shape[..2].to_vec();
    shape.extend(window.out_dims(cx, x, p.ceil_mode)?);
    Ok(TensorType { dtype: x.dtype, shape })
}

fn global_pool(cx: &Cx, x: &TensorType) -> Result<TensorType> {
    cx.dtype("input", x, DType::F32)?;
    if x.rank() < 3 {
        return Err(cx.err(format!("input must have rank ≥ 3 ([N, C, spatial…]), got shape {:?}", x.shape)));
    }
    let mut shape = x.shape[..2].to_vec();
    shape.resize(x.rank(), 1);
    Ok(TensorType::f32(shape))
}

fn gemm(cx: &Cx, trans_a: bool, trans_b: bool, inputs: &[&TensorType]) -> Result<TensorType> {
    let (a, b) = (inputs[0], inputs[1]);
    cx.dtype("A", a, DType::F32)?;
    cx.dtype("B", b, DType::F32)?;
    let [a0, a1] = a.shape[..] else {
        return Err(cx.err(format!("A must have rank 2, got shape {:?}", a.shape)));
    };
    let [b0, b1] = b.shape[..] else {
        return Err(cx.err(format!("B must have rank 2, got shape {:?}", b.shape)));
    };
    let (m, k) = if trans_a { (a1, a0) } else { (a0, a1) };
    let (kb, n) = if trans_b { (b1, b0) } else { (b0, b1) };
    if k != kb {
        return Err(cx.err(format!(
            "inner dimensions differ: op(A) is [{m}, {k}] and op(B) is [{kb}, {n}] \
             (trans_a = {trans_a}, trans_b = {trans_b})"
        )));
    }
    if let Some(c) = inputs.get(2) {
        cx.dtype("C", c, DType::F32)?;
        if c.rank() > 2 || broadcast_shapes(&c.shape, &[m, n]).as_deref() != Some(&[m, n][..]) {
            return Err(cx.err(format!("C has shape {:?}, which does not broadcast to [{m}, {n}]", c.shape)));
        }
    }
    Ok(TensorType::f32([m, n]))
}

fn matmul(cx: &Cx, a: &TensorType, b: &TensorType) -> Result<TensorType> {
    cx.dtype("A", a, DType::F32)?;
    cx.dtype("B", b, DType::F32)?;
    if a.rank() == 0 || b.rank() == 0 {
        return Err(cx.err(format!("operands must have rank ≥ 1, got shapes {:?} and {:?}", a.shape, b.shape)));
    }
    // Numpy: a 1-D A is a row vector [1, K] and a 1-D B a column vector [K, 1]; the
    // promoted axis is removed from the result.
    let (a_batch, m, k) = match a.shape[..] {
        [k] => (&[][..], None, k),
        _ => (&a.shape[..a.rank() - 2], Some(a.shape[a.rank() - 2]), a.shape[a.rank() - 1]),
    };
    let (b_batch, kb, n) = match b.shape[..] {
        [kb] => (&[][..], kb, None),
        _ => (&b.shape[..b.rank() - 2], b.shape[b.rank() - 2], Some(b.shape[b.rank() - 1])),
    };
    if k != kb {
        return Err(cx.err(format!(
            "inner dimensions differ: A {:?} has {k} columns but B {:?} has {kb} rows",
            a.shape, b.shape
        )));
    }
    let Some(mut shape) = broadcast_shapes(a_batch, b_batch) else {
        return Err(cx.err(format!(
            "batch dimensions {a_batch:?} of A {:?} and {b_batch:?} of B {:?} do not broadcast",
            a.shape, b.shape
        )));
    };
    shape.extend(m);
    shape.extend(n);
    Ok(TensorType::f32(shape))
}

fn resize(cx: &Cx, a: &ResizeAttrs, x: &TensorType) -> Result<TensorType> {
    cx.dtype("input", x, DType::F32)?;
    if a.out_shape.len() != x.rank() {
        return Err(cx.err(format!(
            "out_shape {:?} has rank {}, but the input {:?} has rank {}",
            a.out_shape,
            a.out_shape.len(),
            x.shape,
            x.rank()
        )));
    }
    if a.scales.len() != x.rank() {
        return Err(cx.err(format!("scales has {} entries, expected {} (the input rank)", a.scales.len(), x.rank())));
    }
    if let Some((i, s)) = a.scales.iter().enumerate().find(|(_, s)| !(s.is_finite() && **s > 0.0)) {
        return Err(cx.err(format!("scales[{i}] is {s}, must be finite and > 0")));
    }
    if let Some(i) = (0..x.rank()).find(|&i| x.shape[i] == 0 && a.out_shape[i] > 0) {
        return Err(cx.err(format!("axis {i} is empty and cannot be resized to {}", a.out_shape[i])));
    }
    if let ResizeMode::Cubic { a, .. } = a.mode
        && !a.is_finite()
    {
        return Err(cx.err(format!("cubic coefficient a is {a}, must be finite")));
    }
    if let CoordTransform::TfCropAndResize { roi, .. } = &a.coord {
        if roi.len() != 2 * x.rank() {
            return Err(cx.err(format!(
                "roi has {} entries, expected {} (start and end for each of {} axes)",
                roi.len(),
                2 * x.rank(),
                x.rank()
            )));
        }
        if let Some((i, r)) = roi.iter().enumerate().find(|(_, r)| !r.is_finite()) {
            return Err(cx.err(format!("roi[{i}] is {r}, must be finite")));
        }
    }
    Ok(TensorType::f32(a.out_shape.clone()))
}

fn concat(cx: &Cx, axis: usize, inputs: &[&TensorType]) -> Result<TensorType> {
    let first = inputs[0];
    if axis >= first.rank() {
        return Err(cx.err(format!("axis {axis} is out of range for input 0 of shape {:?}", first.shape)));
    }
    let mut shape = first.shape.clone();
    for (i, t) in inputs.iter().enumerate().skip(1) {
        if t.dtype != first.dtype {
            return Err(cx.err(format!("input {i} has dtype {}, but input 0 has {}", t.dtype, first.dtype)));
        }
        let same_other_dims = t.rank() == first.rank()
            && t.shape.iter().zip(&first.shape).enumerate().all(|(j, (a, b))| j == axis || a == b);
        if !same_other_dims {
            return Err(cx.err(format!(
                "input {i} has shape {:?}, which differs from input 0 {:?} outside axis {axis}",
                t.shape, first.shape
            )));
        }
        shape[axis] = shape[axis].checked_add(t.shape[axis]).ok_or_else(|| cx.overflow("concatenated size"))?;
    }
    Ok(TensorType::new(first.dtype, shape))
}

fn split(cx: &Cx, axis: usize, sizes: &[usize], x: &TensorType) -> Result<Vec<TensorType>> {
    if axis >= x.rank() {
        return Err(cx.err(format!("axis {axis} is out of range for input shape {:?}", x.shape)));
    }
    if sizes.is_empty() {
        return Err(cx.err("sizes is empty; a split needs at least one output"));
    }
    let total =
        sizes.iter().try_fold(0usize, |acc, &s| acc.checked_add(s)).ok_or_else(|| cx.overflow("sum of sizes"))?;
    if total != x.shape[axis] {
        return Err(cx.err(format!(
            "sizes {sizes:?} sum to {total}, but axis {axis} of input {:?} has size {}",
            x.shape, x.shape[axis]
        )));
    }
    Ok(sizes
        .iter()
        .map(|&s| {
            let mut shape = x.shape.clone();
            shape[axis] = s;
            TensorType::new(x.dtype, shape)
        })
        .collect())
}

fn reshape(cx: &Cx, shape: &[usize], x: &TensorType) -> Result<TensorType> {
    let from = checked_numel(&x.shape).ok_or_else(|| cx.overflow("input element count"))?;
    let to = checked_numel(shape).ok_or_else(|| cx.overflow("target element count"))?;
    if from != to {
        return Err(cx.err(format!("cannot reshape {:?} ({from} elements) to {shape:?} ({to} elements)", x.shape)));
    }
    Ok(TensorType::new(x.dtype, shape.to_vec()))
}

fn transpose(cx: &Cx, perm: &[usize], x: &TensorType) -> Result<TensorType> {
    let rank = x.rank();
    let mut seen = vec![false; rank];
    let is_perm = perm.len() == rank && perm.iter().all(|&p| p < rank && !std::mem::replace(&mut seen[p], true));
    if !is_perm {
        return Err(cx.err(format!("perm {perm:?} is not a permutation of 0..{rank} for input shape {:?}", x.shape)));
    }
    Ok(TensorType::new(x.dtype, perm.iter().map(|&p| x.shape[p]).collect::<Vec<_>>()))
}

fn slice(cx: &Cx, axes: &[SliceAxis], x: &TensorType) -> Result<TensorType> {
    let mut shape = x.shape.clone();
    let mut seen = vec![false; x.rank()];
    for a in axes {
        let Some(&dim) = x.shape.get(a.axis) else {
            return Err(cx.err(format!("axis {} is out of range for input shape {:?}", a.axis, x.shape)));
        };
        if std::mem::replace(&mut seen[a.axis], true) {
            return Err(cx.err(format!("axis {} is sliced twice", a.axis)));
        }
        let (start, end, step) = (i128::from(a.start), i128::from(a.end), i128::from(a.step));
        let len = match step {
            0 => return Err(cx.err(format!("axis {}: step is 0", a.axis))),
            s if s > 0 => ceil_div((end - start).max(0), s),
            s => ceil_div((start - end).max(0), -s),
        };
        if len > 0 {
            // Every index taken must lie inside the axis: the first is `start`, the last
            // `start + (len − 1)·step`.
            let last = start + (len - 1) * step;
            let dim_i = dim as i128;
            if !(0..dim_i).contains(&start) || !(0..dim_i).contains(&last) {
                return Err(cx.err(format!(
                    "axis {}: start {} end {} step {} reads indices {start} to {last}, outside 0..{dim}",
                    a.axis, a.start, a.end, a.step
                )));
            }
        }
        shape[a.axis] = usize::try_from(len).map_err(|_| cx.overflow("slice length"))?;
    }
    Ok(TensorType::new(x.dtype, shape))
}

/// Ceiling division of a non-negative numerator by a positive divisor.
fn ceil_div(n: i128, d: i128) -> i128 {
    (n + d - 1) / d
}

fn gather(cx: &Cx, axis: usize, data: &TensorType, indices: &TensorType) -> Result<TensorType> {
    cx.dtype("indices", indices, DType::I64)?;
    if axis >= data.rank() {
        return Err(cx.err(format!("axis {axis} is out of range for data shape {:?}", data.shape)));
    }
    let mut shape = data.shape[..axis].to_vec();
    shape.extend_from_slice(&indices.shape);
    shape.extend_from_slice(&data.shape[axis + 1..]);
    Ok(TensorType::new(data.dtype, shape))
}

fn expand(cx: &Cx, shape: &[usize], x: &TensorType) -> Result<TensorType> {
    let Some(out) = broadcast_shapes(&x.shape, shape) else {
        return Err(cx.err(format!("input shape {:?} does not broadcast with shape {shape:?}", x.shape)));
    };
    Ok(TensorType::new(x.dtype, out))
}

fn softmax(cx: &Cx, axis: usize, x: &TensorType) -> Result<TensorType> {
    cx.dtype("input", x, DType::F32)?;
    if axis >= x.rank() {
        return Err(cx.err(format!("axis {axis} is out of range for input shape {:?}", x.shape)));
    }
    Ok(x.clone())
}

fn pad(cx: &Cx, pads: &[i64], mode: PadMode, x: &TensorType) -> Result<TensorType> {
    let rank = x.rank();
    if pads.len() != 2 * rank {
        return Err(cx.err(format!(
            "pads has {} entries, expected {} (begin and end for each of {rank} axes)",
            pads.len(),
            2 * rank
        )));
    }
    let mut shape = Vec::with_capacity(rank);
    for (i, &dim) in x.shape.iter().enumerate() {
        let (begin, end) = (pads[i], pads[rank + i]);
        let out = dim as i128 + i128::from(begin) + i128::from(end);
        if out < 0 {
            return Err(cx.err(format!("axis {i}: size {dim} padded by {begin} and {end} is negative ({out})")));
        }
        let grows = begin > 0 || end > 0;
        match mode {
            PadMode::Reflect if grows && (begin.max(end) as i128) >= dim as i128 => {
                return Err(cx.err(format!(
                    "axis {i}: reflect padding ({begin}, {end}) must be smaller than the axis size {dim}"
                )));
            }
            PadMode::Edge | PadMode::Wrap if grows && dim == 0 => {
                return Err(cx.err(format!("axis {i}: cannot pad an empty axis in {mode:?} mode")));
            }
            _ => {}
        }
        shape.push(usize::try_from(out).map_err(|_| cx.overflow("padded size"))?);
    }
    Ok(TensorType::new(x.dtype, shape))
}

fn reduce(cx: &Cx, kind: ReduceKind, axes: &[usize], keepdims: bool, x: &TensorType) -> Result<TensorType> {
    if !(x.dtype == DType::F32 || x.dtype == DType::I64 && kind.accepts_i64()) {
        let expected = if kind.accepts_i64() { "f32 or i64" } else { "f32" };
        return Err(cx.err(format!("input has dtype {}, expected {expected}", x.dtype)));
    }
    if let Some(&a) = axes.iter().find(|&&a| a >= x.rank()) {
        return Err(cx.err(format!("axis {a} is out of range for input shape {:?}", x.shape)));
    }
    if axes.windows(2).any(|w| w[0] >= w[1]) {
        return Err(cx.err(format!("axes {axes:?} must be sorted and without duplicates")));
    }
    let shape = x
        .shape
        .iter()
        .enumerate()
        .filter_map(|(i, &d)| match (axes.contains(&i), keepdims) {
            (false, _) => Some(d),
            (true, true) => Some(1),
            (true, false) => None,
        })
        .collect::<Vec<_>>();
    Ok(TensorType::new(x.dtype, shape))
}

fn arg_reduce(cx: &Cx, axis: usize, keepdims: bool, x: &TensorType) -> Result<TensorType> {
    if !matches!(x.dtype, DType::F32 | DType::I64) {
        return Err(cx.err(format!("input has dtype {}, expected f32 or i64", x.dtype)));
    }
    let Some(&len) = x.shape.get(axis) else {
        return Err(cx.err(format!("axis {axis} is out of range for input shape {:?}", x.shape)));
    };
    if len == 0 {
        return Err(cx.err(format!("axis {axis} of input shape {:?} is empty and has no extremum", x.shape)));
    }
    let mut shape = x.shape.clone();
    if keepdims {
        shape[axis] = 1;
    } else {
        shape.remove(axis);
    }
    Ok(TensorType::new(DType::I64, shape))
}
