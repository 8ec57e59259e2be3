//! Operators of the graph IR and their attributes.
//!
//! The IR's meaning is NCHW. Every parameter that ONNX passes as a constant input (Reshape's
//! shape, Pad's pads, Resize's scales, Slice's starts, …) is an attribute here, resolved at
//! import, so that every op's output shape follows from its input types and attributes alone.
//! Spatial attributes are per spatial axis (`kernel.len()` = rank − 2); `pads` follow ONNX,
//! `[x1_begin, x2_begin, …, x1_end, x2_end, …]`.

use crate::tensor::DType;

/// Index of a tensor in the graph's [`crate::WeightStore`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WeightId(pub u32);

/// Convolution (ONNX `Conv`): inputs `x [N,C,…]`, `w [M,C/group,k…]`, optional `b [M]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConvAttrs {
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    /// `[begin…, end…]`, explicit (auto_pad is resolved at import).
    pub pads: Vec<usize>,
    pub group: usize,
    /// How the runtime computes it; every algorithm has the same meaning (the direct sum), so
    /// the reference ignores it.
    pub algo: ConvAlgo,
}

/// The algorithm a convolution runs with. Winograd variants apply only to 2-D 3×3 convs with
/// stride 1, dilation 1 and one group ([`ConvAttrs::winograd_eligible`]); they compute the
/// same sum with fewer multiplies and a documented rounding difference (ARCHITECTURE.md §
/// Winograd).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConvAlgo {
    /// The direct (im2col / loop-nest) sum.
    #[default]
    Direct,
    /// Winograd F(2×2, 3×3): 4×4 input tiles, 2×2 output tiles, 16 multiplies per tile and
    /// channel pair instead of 36.
    Winograd2,
    /// Winograd F(4×4, 3×3): 6×6 input tiles, 4×4 output tiles, 36 multiplies instead of 144.
    Winograd4,
}

impl ConvAlgo {
    /// The text-IR / report spelling.
    pub fn name(self) -> &'static str {
        match self {
            ConvAlgo::Direct => "direct",
            ConvAlgo::Winograd2 => "winograd-f2",
            ConvAlgo::Winograd4 => "winograd-f4",
        }
    }

    /// The algorithm spelled `name`.
    pub fn from_name(name: &str) -> Option<ConvAlgo> {
        [ConvAlgo::Direct, ConvAlgo::Winograd2, ConvAlgo::Winograd4].into_iter().find(|a| a.name() == name)
    }

    /// Output tile edge of a Winograd variant (2 or 4); `None` for the direct sum.
    pub fn winograd_tile(self) -> Option<usize> {
        match self {
            ConvAlgo::Direct => None,
            ConvAlgo::Winograd2 => Some(2),
            ConvAlgo::Winograd4 => Some(4),
        }
    }
}

impl ConvAttrs {
    /// A conv with the kernel extents `kernel` (one per spatial axis), stride and dilation 1 on
    /// every axis, no padding, one group and the direct algorithm. The setters change one
    /// attribute each: `ConvAttrs::new(&[3, 3]).strides(&[2, 2]).pads(&[1; 4])`.
    pub fn new(kernel: &[usize]) -> ConvAttrs {
        let n = kernel.len();
        ConvAttrs {
            kernel: kernel.to_vec(),
            strides: vec![1; n],
            dilations: vec![1; n],
            pads: vec![0; 2 * n],
            group: 1,
            algo: ConvAlgo::Direct,
        }
    }

    /// With the strides `strides` (one per spatial axis).
    pub fn strides(mut self, strides: &[usize]) -> ConvAttrs {
        self.strides = strides.to_vec();
        self
    }

    /// With the dilations `dilations` (one per spatial axis).
    pub fn dilations(mut self, dilations: &[usize]) -> ConvAttrs {
        self.dilations = dilations.to_vec();
        self
    }

    /// With the pads `pads`, `[begin…, end…]`.
    pub fn pads(mut self, pads: &[usize]) -> ConvAttrs {
        self.pads = pads.to_vec();
        self
    }

    /// With `group` groups.
    pub fn group(mut self, group: usize) -> ConvAttrs {
        self.group = group;
        self
    }

    /// Computed by `algo`.
    pub fn algo(mut self, algo: ConvAlgo) -> ConvAttrs {
        self.algo = algo;
        self
    }

    /// Whether a Winograd algorithm may compute this conv: 2-D, 3×3, stride 1, dilation 1,
    /// one group (any padding).
    pub fn winograd_eligible(&self) -> bool {
        self.kernel == [3, 3] && self.strides == [1, 1] && self.dilations == [1, 1] && self.group == 1
    }
}

/// Transposed convolution (ONNX `ConvTranspose`): inputs `x [N,C,…]`, `w [C,M/group,k…]`, optional `b [M]`.
/// `output_shape` and auto_pad are resolved at import into `pads` and `output_padding`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConvTransposeAttrs {
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    pub pads: Vec<usize>,
    pub output_padding: Vec<usize>,
    pub group: usize,
}

/// Sliding-window pooling attributes (MaxPool / AveragePool).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolAttrs {
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    pub pads: Vec<usize>,
    pub ceil_mode: bool,
}

/// Element-wise functions of one f32 input.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnaryOp {
    Relu,
    /// `x < 0 ? alpha·x : x`
    LeakyRelu {
        alpha: f32,
    },
    /// `min(max(x, min), max)`; absent bounds are ±∞.
    Clip {
        min: f32,
        max: f32,
    },
    Sigmoid,
    /// `max(0, min(1, alpha·x + beta))`
    HardSigmoid {
        alpha: f32,
        beta: f32,
    },
    /// `x · max(0, min(1, x/6 + 1/2))`
    HardSwish,
    /// `x · σ(β·x)` with `β·x` rounded to f32 first, as the `Mul` it stands for (Swish; SiLU is
    /// β = 1). Made by the optimizer from `Mul(x, Sigmoid(x))` and `Mul(x, Sigmoid(Mul(x, β)))`
    /// (`silu`), never by import.
    Swish {
        beta: f32,
    },
    Tanh,
    Exp,
    Log,
    Erf,
    Sqrt,
    Reciprocal,
    Neg,
    Abs,
    Floor,
    Ceil,
}

impl UnaryOp {
    pub fn name(&self) -> &'static str {
        match self {
            UnaryOp::Relu => "relu",
            UnaryOp::LeakyRelu { .. } => "leaky-relu",
            UnaryOp::Clip { .. } => "clip",
            UnaryOp::Sigmoid => "sigmoid",
            UnaryOp::HardSigmoid { .. } => "hard-sigmoid",
            UnaryOp::HardSwish => "hard-swish",
            UnaryOp::Swish { .. } => "swish",
            UnaryOp::Tanh => "tanh",
            UnaryOp::Exp => "exp",
            UnaryOp::Log => "log",
            UnaryOp::Erf => "erf",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Reciprocal => "reciprocal",
            UnaryOp::Neg => "neg",
            UnaryOp::Abs => "abs",
            UnaryOp::Floor => "floor",
            UnaryOp::Ceil => "ceil",
        }
    }
}

/// Element-wise functions of two inputs with multidirectional (numpy) broadcasting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    /// Integer division truncates toward zero, as onnxruntime does.
    Div,
    Max,
    Min,
    Pow,
    /// `x < 0 ? slope·x : x`, slope broadcast to x (unidirectional).
    PRelu,
    /// Output dtype bool.
    Equal,
    /// Output dtype bool.
    Less,
    /// Output dtype bool.
    Greater,
}

impl BinaryOp {
    pub fn name(&self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
            BinaryOp::Max => "max",
            BinaryOp::Min => "min",
            BinaryOp::Pow => "pow",
            BinaryOp::PRelu => "prelu",
            BinaryOp::Equal => "equal",
            BinaryOp::Less => "less",
            BinaryOp::Greater => "greater",
        }
    }

    /// Comparison ops produce bool.
    pub fn is_comparison(&self) -> bool {
        matches!(self, BinaryOp::Equal | BinaryOp::Less | BinaryOp::Greater)
    }
}

/// Interpolation of `Resize`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ResizeMode {
    Nearest,
    /// N-linear over every resized axis.
    Linear,
    /// Keys cubic convolution with coefficient `a` (ONNX `cubic_coeff_a`) over every resized
    /// axis, reading 4 input samples per axis. Samples outside the input repeat its edge, or,
    /// with `exclude_outside`, get weight 0 and the remaining weights are renormalized.
    Cubic {
        a: f32,
        exclude_outside: bool,
    },
}

/// How an output coordinate maps to an input coordinate (ONNX `coordinate_transformation_mode`).
#[derive(Clone, Debug, PartialEq)]
pub enum CoordTransform {
    HalfPixel,
    HalfPixelSymmetric,
    PytorchHalfPixel,
    AlignCorners,
    Asymmetric,
    /// `(x + 0.5) / scale`: TensorFlow's half-pixel centres for nearest resizing (ONNX
    /// `tf_half_pixel_for_nn`, Resize opsets 11 and 12).
    TfHalfPixelForNn,
    /// Samples the box `roi` (`[start…, end…]` per axis, in units of the input extent, so
    /// `[0…, 1…]` is the whole input) with output samples on its corners; an output whose
    /// input coordinate on some resized axis falls outside `[0, len − 1]` is `extrapolation`.
    TfCropAndResize {
        roi: Vec<f32>,
        extrapolation: f32,
    },
}

/// Rounding of the input coordinate in nearest mode (ONNX `nearest_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NearestMode {
    RoundPreferFloor,
    RoundPreferCeil,
    Floor,
    Ceil,
}

/// `Resize` (and opset-9 `Upsample`), resolved at import: output shape and the per-axis
/// scale used by the coordinate transform (for `sizes` inputs, `out / in`).
#[derive(Clone, Debug, PartialEq)]
pub struct ResizeAttrs {
    pub mode: ResizeMode,
    pub coord: CoordTransform,
    pub nearest: NearestMode,
    pub scales: Vec<f32>,
    pub out_shape: Vec<usize>,
}

/// The combining function of a reduction (ONNX `ReduceMean`, `ReduceSum`, …).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceKind {
    Mean,
    Sum,
    Max,
    Min,
    Prod,
    /// `Σ |x|`
    L1,
    /// `√(Σ x²)`
    L2,
    /// `Σ x²`
    SumSquare,
    /// `ln Σ x`
    LogSum,
    /// `ln Σ eˣ`
    LogSumExp,
}

impl ReduceKind {
    /// Every kind, in declaration order.
    pub const ALL: [ReduceKind; 10] = [
        ReduceKind::Mean,
        ReduceKind::Sum,
        ReduceKind::Max,
        ReduceKind::Min,
        ReduceKind::Prod,
        ReduceKind::L1,
        ReduceKind::L2,
        ReduceKind::SumSquare,
        ReduceKind::LogSum,
        ReduceKind::LogSumExp,
    ];

    /// The op name of a reduction of this kind.
    pub fn name(&self) -> &'static str {
        match self {
            ReduceKind::Mean => "reduce-mean",
            ReduceKind::Sum => "reduce-sum",
            ReduceKind::Max => "reduce-max",
            ReduceKind::Min => "reduce-min",
            ReduceKind::Prod => "reduce-prod",
            ReduceKind::L1 => "reduce-l1",
            ReduceKind::L2 => "reduce-l2",
            ReduceKind::SumSquare => "reduce-sum-square",
            ReduceKind::LogSum => "reduce-log-sum",
            ReduceKind::LogSumExp => "reduce-log-sum-exp",
        }
    }

    /// Kinds that also reduce i64 tensors (exactly, in integers); the others take f32 only.
    pub fn accepts_i64(&self) -> bool {
        matches!(
            self,
            ReduceKind::Mean
                | ReduceKind::Sum
                | ReduceKind::Max
                | ReduceKind::Min
                | ReduceKind::Prod
                | ReduceKind::L1
                | ReduceKind::SumSquare
        )
    }
}

/// Padding mode of `Pad`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PadMode {
    Constant,
    Reflect,
    Edge,
    Wrap,
}

/// One axis of a `Slice`, normalized at import: indices `start, start+step, …` while
/// `step > 0 ? i < end : i > end`, with `start`/`end` already clamped per ONNX.
/// `end` is -1 for a negative step that runs through index 0.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SliceAxis {
    pub axis: usize,
    pub start: i64,
    pub end: i64,
    pub step: i64,
}

/// The scales and zero points of a linear quantization, `real = (q − zero_point) · scale`:
/// one pair for the whole tensor (`axis` `None`), or one pair per index of `axis`.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantParams {
    pub axis: Option<usize>,
    /// Finite and positive.
    pub scales: Vec<f32>,
    /// Within the range of the quantized dtype; as many as `scales`.
    pub zero_points: Vec<i32>,
}

impl QuantParams {
    /// One scale and zero point for the whole tensor.
    pub fn per_tensor(scale: f32, zero_point: i32) -> QuantParams {
        QuantParams { axis: None, scales: vec![scale], zero_points: vec![zero_point] }
    }

    /// The index into `scales`/`zero_points` of the element at flat index `i` of a row-major
    /// tensor of `shape` (which the params were checked against).
    pub fn index(&self, shape: &[usize], i: usize) -> usize {
        match self.axis {
            None => 0,
            Some(a) => {
                let inner: usize = shape[a + 1..].iter().product();
                (i / inner.max(1)) % shape[a].max(1)
            }
        }
    }
}

/// What a [`QLinear`] op produces from its i32 accumulator `acc[c]` (bias included) for output
/// channel `c`.
#[derive(Clone, Debug, PartialEq)]
pub enum QLinearOut {
    /// `acc` itself, i32 (ONNX ConvInteger, MatMulInteger).
    I32,
    /// `acc as f32 · (sx · sw[c])`, f32: the product of the two scales rounded to f32 first.
    F32,
    /// u8 or i8, requantized as onnxruntime does (QLinearConv, QLinearMatMul, its QDQ fusions):
    /// `saturate(round_half_even(acc as f32 · m[c]) + zy)` with `m[c] = (sx · sw[c]) / sy`
    /// computed in f32 left to right; `acc as f32` rounds to nearest even (exact below 2²⁴).
    Quantized { params: QuantParams, to: DType },
}

/// The op of [`Op::QLinear`]: a conv, gemm or matmul on quantized operands, accumulated exactly
/// in i32, then finished by [`QLinearOut`].
///
/// Inputs `(x: u8|i8, w: u8|i8[, bias: i32 [C_out]])`. The accumulator of output element `y`
/// in output channel `c` is `Σ (x − zx)·(w − zw[c]) + bias[c]` over the base op's sum, in i32
/// with two's-complement wrapping as onnxruntime's kernels compute it (wrapping addition is
/// associative, so every summation order gives the same bits; real models never wrap). The
/// bias has scale `sx · sw[c]` and zero point 0, as ONNX QLinearConv defines it.
#[derive(Clone, Debug, PartialEq)]
pub struct QLinear {
    /// `Conv` (output channel = axis 0 of `w`), `Gemm` with `alpha = beta = 1` (axis 0 of `w`
    /// when `trans_b`, else axis 1) or `MatMul` (the last axis of `w`, which is 2-D).
    pub base: Op,
    /// Per tensor.
    pub x: QuantParams,
    /// Per tensor, or per output channel (its `axis` is the weight's output-channel axis).
    pub w: QuantParams,
    pub out: QLinearOut,
    /// Fused ReLU / Clip as inclusive bounds on the quantized output (`Quantized` outputs only),
    /// applied after saturation. Exact for an activation before a QuantizeLinear, which is
    /// monotone: `Q(relu(y)) = max(Q(y), zy)`, `Q(clip(y, a, b)) = clamp(Q(y), Q(a), Q(b))`.
    pub clamp: Option<(i32, i32)>,
}

impl QLinear {
    /// Whether `op` can be the base of a quantized op: a direct conv, or a Winograd-eligible
    /// one marked `Winograd2` (computed in integers, F(2×2, 3×3) gives the direct sum exactly:
    /// a way to run it, like a conv's `algo`, which the reference ignores).
    pub fn linear_base(op: &Op) -> bool {
        match op {
            Op::Conv(a) => a.algo == ConvAlgo::Direct || (a.algo == ConvAlgo::Winograd2 && a.winograd_eligible()),
            Op::Gemm { alpha, beta, .. } => *alpha == 1.0 && *beta == 1.0,
            Op::MatMul => true,
            _ => false,
        }
    }

    /// The scale of the accumulator of output channel `c`: `sx · sw[c]` (f32 product), the
    /// scale of an i32 bias and of an `F32` output.
    pub fn acc_scale(&self, c: usize) -> f32 {
        let sw = if self.w.axis.is_some() { self.w.scales[c] } else { self.w.scales[0] };
        self.x.scales[0] * sw
    }

    /// The requantization multiplier of output channel `c` for a `Quantized` output,
    /// `(sx · sw[c]) / sy` in f32 left to right, as onnxruntime computes it (1 for others).
    pub fn requant_scale(&self, c: usize) -> f32 {
        match &self.out {
            QLinearOut::Quantized { params, .. } => self.acc_scale(c) / params.scales[0],
            _ => 1.0,
        }
    }

    /// The inclusive bounds of a `Quantized` output: the clamp, else the output type's range.
    pub fn out_bounds(&self) -> Option<(i32, i32)> {
        let QLinearOut::Quantized { to, .. } = &self.out else { return None };
        let (lo, hi) = to.int_range()?;
        Some(self.clamp.unwrap_or((lo as i32, hi as i32)))
    }

    /// The quantized output of accumulator `acc` with multiplier `m`, zero point `zy` and
    /// inclusive bounds `[lo, hi]` (`lo ≤ hi`, both within the output type): onnxruntime's
    /// `MlasRequantizeOutput`, `v = acc as f32 · m` clamped in f32 to `[lo − zy, hi − zy]`,
    /// rounded half to even, plus `zy`. (Clamping before rounding equals clamping after, as the
    /// bounds are integers, and keeps the conversion in range.)
    pub fn requantize(acc: i32, m: f32, zy: i32, lo: i32, hi: i32) -> i32 {
        let v = (acc as f32 * m).max((lo - zy) as f32).min((hi - zy) as f32);
        v.round_ties_even() as i32 + zy
    }

    /// The output-channel axis of the weight, of rank `w_rank`.
    pub fn weight_channel_axis(&self, w_rank: usize) -> usize {
        match &self.base {
            Op::Gemm { trans_b: true, .. } | Op::Conv(_) => 0,
            Op::Gemm { trans_b: false, .. } => 1,
            _ => w_rank.saturating_sub(1),
        }
    }
}

/// An IR operator with its attributes. Inputs are listed in each variant's doc.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// Graph input number `index`; no inputs.
    Input { index: usize },
    /// A constant from the weight store; no inputs.
    Weight(WeightId),
    /// `(x, w[, b])`
    Conv(ConvAttrs),
    /// `(x, w[, b])`
    ConvTranspose(ConvTransposeAttrs),
    /// `(x, scale, bias, mean, var)`: inference-mode batch normalization over axis 1.
    BatchNorm { epsilon: f32 },
    /// `(x)`
    Unary(UnaryOp),
    /// `(a, b)`
    Binary(BinaryOp),
    /// `(cond: bool, a, b)` with broadcasting.
    Where,
    /// `(x)`
    MaxPool(PoolAttrs),
    /// `(x)`
    AvgPool { pool: PoolAttrs, count_include_pad: bool },
    /// `(x)` → `[N,C,1,…]`
    GlobalAvgPool,
    /// `(x)` → `[N,C,1,…]`
    GlobalMaxPool,
    /// `(a, b[, c])`: `alpha·op(a)·op(b) + beta·c`, `c` broadcast to the result.
    Gemm { alpha: f32, beta: f32, trans_a: bool, trans_b: bool },
    /// `(a, b)`: numpy matmul, batched with broadcasting, 1-D operands promoted.
    MatMul,
    /// `(x)`
    Resize(ResizeAttrs),
    /// `(x…)` along `axis`.
    Concat { axis: usize },
    /// `(x)` → one output per entry of `sizes`.
    Split { axis: usize, sizes: Vec<usize> },
    /// `(x)` → `shape` (same element count). Flatten, Squeeze and Unsqueeze import as this.
    Reshape { shape: Vec<usize> },
    /// `(x)`: output axis `i` is input axis `perm[i]`.
    Transpose { perm: Vec<usize> },
    /// `(x)`
    Slice { axes: Vec<SliceAxis> },
    /// `(data, indices: i64)`: negative indices count from the end of `axis`.
    Gather { axis: usize },
    /// `(x)`: output shape is the numpy broadcast of `x`'s shape and `shape` (ONNX Expand).
    Expand { shape: Vec<usize> },
    /// `(x)`
    Cast { to: DType },
    /// `(x: f32)` → `to` (u8 or i8): ONNX QuantizeLinear, `saturate(round(x / scale) +
    /// zero_point)` with the quotient computed in f32 and rounded half to even; NaN gives the
    /// zero point.
    Quantize { params: QuantParams, to: DType },
    /// `(x: u8, i8 or i32)` → f32: ONNX DequantizeLinear, `(x − zero_point) · scale` in f32.
    Dequantize(QuantParams),
    /// `(x)`: softmax over `axis` (opset ≥ 13), or over all axes from `axis` on when
    /// `flatten` (opsets < 13 coerce the input to 2-D at `axis`).
    Softmax { axis: usize, flatten: bool },
    /// `(x)`: `pads` as `[begin…, end…]` over all axes; negative values crop.
    Pad { pads: Vec<i64>, mode: PadMode, value: f32 },
    /// `(x)`: reduces over `axes` (sorted, deduplicated). Empty `axes` reduces nothing: each
    /// element is its own group, so `reduce-sum-square` squares and `reduce-l1` takes |x|.
    /// A group with no elements gives the kind's identity (0 for sums and norms, 1 for prod,
    /// −∞ for max and the log kinds, +∞ for min; i64 max/min give i64::MIN/MAX) and 0 for mean.
    Reduce { kind: ReduceKind, axes: Vec<usize>, keepdims: bool },
    /// `(x)` → i64: the index of the largest (`max`) or smallest element along `axis`; ties
    /// take the first index, or the last with `select_last_index`.
    ArgReduce { max: bool, axis: usize, keepdims: bool, select_last_index: bool },
    /// `(base inputs…[, residual])`: a conv, Gemm or MatMul whose kernel finishes each output
    /// value in registers before storing it, `act(base(…) + residual)`. Made by the
    /// optimizer's fusion rules, never by import; see [`Fused`].
    Fused(Box<Fused>),
    /// `(x, w[, bias])`: a quantized conv, gemm or matmul; see [`QLinear`].
    QLinear(Box<QLinear>),
    /// `(table, a[, b])`: a table lookup on 8-bit values, `y[i] = table[byte(a[i])]`, or with
    /// two operands of one shape `table[256·byte(a[i]) + byte(b[i])]`, where `byte(v)` is the
    /// value's bit pattern as an unsigned byte (u8 as is, i8 −1 → 255: ONNX Gather's negative
    /// indices on the same table). `table` is 1-D with 256 or 65,536 entries of f32, u8 or i8,
    /// the output's dtype. Made by the optimizer from element-wise chains between quantized
    /// tensors (`qdq-lookup`), never by import.
    Lookup,
}

/// The op of [`Op::Fused`]: `y = act(base(inputs) + residual)`, in that order (the base's own
/// bias, if any, is part of `base`). The residual, when present, is the last input and has
/// the output's type (no broadcasting); `act` is one of the activations a kernel applies
/// inline ([`Fused::ACTIVATIONS`] names them).
#[derive(Clone, Debug, PartialEq)]
pub struct Fused {
    /// `Conv`, `Gemm` or `MatMul`.
    pub base: Op,
    pub act: Option<UnaryOp>,
    pub residual: bool,
}

impl Fused {
    /// The activations a fused kernel applies, by name ([`UnaryOp::name`]): the one list the
    /// verifier, the fusion rule, the text form and the kernels' epilogues all consult.
    pub const ACTIVATIONS: [&'static str; 7] =
        ["relu", "leaky-relu", "clip", "hard-sigmoid", "hard-swish", "sigmoid", "swish"];

    /// Whether a fused kernel applies `act` inline (it is one of [`Fused::ACTIVATIONS`]).
    pub fn fusible_act(act: &UnaryOp) -> bool {
        Self::ACTIVATIONS.contains(&act.name())
    }

    /// Whether `op` can be the base of a fused op.
    pub fn fusible_base(op: &Op) -> bool {
        matches!(op, Op::Conv(_) | Op::Gemm { .. } | Op::MatMul)
    }

    /// How many of `n` inputs belong to the base (the residual, if any, is the last).
    pub fn base_inputs(&self, n: usize) -> usize {
        n.saturating_sub(usize::from(self.residual))
    }
}

impl Op {
    /// Kebab-case op name used by the text form and by `cnnc inspect`.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input { .. } => "input",
            Op::Weight(_) => "weight",
            Op::Conv(_) => "conv",
            Op::ConvTranspose(_) => "conv-transpose",
            Op::BatchNorm { .. } => "batchnorm",
            Op::Unary(u) => u.name(),
            Op::Binary(b) => b.name(),
            Op::Where => "where",
            Op::MaxPool(_) => "max-pool",
            Op::AvgPool { .. } => "avg-pool",
            Op::GlobalAvgPool => "global-avg-pool",
            Op::GlobalMaxPool => "global-max-pool",
            Op::Gemm { .. } => "gemm",
            Op::MatMul => "matmul",
            Op::Resize(_) => "resize",
            Op::Concat { .. } => "concat",
            Op::Split { .. } => "split",
            Op::Reshape { .. } => "reshape",
            Op::Transpose { .. } => "transpose",
            Op::Slice { .. } => "slice",
            Op::Gather { .. } => "gather",
            Op::Expand { .. } => "expand",
            Op::Cast { .. } => "cast",
            Op::Lookup => "lookup",
            Op::Quantize { .. } => "quantize",
            Op::Dequantize(_) => "dequantize",
            Op::Softmax { .. } => "softmax",
            Op::Pad { .. } => "pad",
            Op::Reduce { kind, .. } => kind.name(),
            Op::ArgReduce { max: true, .. } => "arg-max",
            Op::ArgReduce { max: false, .. } => "arg-min",
            Op::Fused(f) => match f.base {
                Op::Conv(_) => "fused-conv",
                Op::Gemm { .. } => "fused-gemm",
                Op::MatMul => "fused-matmul",
                _ => "fused",
            },
            Op::QLinear(q) => match q.base {
                Op::Conv(_) => "qlinear-conv",
                Op::Gemm { .. } => "qlinear-gemm",
                _ => "qlinear-matmul",
            },
        }
    }

    /// Allowed number of inputs, as an inclusive range.
    pub fn arity(&self) -> (usize, usize) {
        match self {
            Op::Input { .. } | Op::Weight(_) => (0, 0),
            Op::Conv(_) | Op::ConvTranspose(_) => (2, 3),
            Op::BatchNorm { .. } => (5, 5),
            Op::Binary(_) | Op::Gather { .. } | Op::MatMul => (2, 2),
            Op::Where => (3, 3),
            Op::Gemm { .. } | Op::QLinear(_) | Op::Lookup => (2, 3),
            Op::Concat { .. } => (1, usize::MAX),
            Op::Fused(f) => {
                let (lo, hi) = f.base.arity();
                let r = usize::from(f.residual);
                (lo + r, hi + r)
            }
            _ => (1, 1),
        }
    }

    /// Number of outputs this op produces.
    pub fn n_outputs(&self) -> usize {
        match self {
            Op::Split { sizes, .. } => sizes.len(),
            _ => 1,
        }
    }

    /// The op as far as a kernel's running time depends on it, for cost keys: quantization
    /// scales become 1 and non-zero zero points 1 (a zero point of 0 can save the correction
    /// term; any other value costs the same), keeping axes and counts.
    pub fn timing_form(&self) -> Op {
        fn params(p: &QuantParams) -> QuantParams {
            QuantParams {
                axis: p.axis,
                scales: vec![1.0; p.scales.len()],
                zero_points: p.zero_points.iter().map(|&z| i32::from(z != 0)).collect(),
            }
        }
        match self {
            Op::Quantize { params: p, to } => Op::Quantize { params: params(p), to: *to },
            Op::Dequantize(p) => Op::Dequantize(params(p)),
            Op::QLinear(q) => Op::QLinear(Box::new(QLinear {
                base: q.base.clone(),
                x: params(&q.x),
                w: params(&q.w),
                out: match &q.out {
                    QLinearOut::Quantized { params: p, to } => QLinearOut::Quantized { params: params(p), to: *to },
                    other => other.clone(),
                },
                // Whether a clamp is applied costs; its bounds do not.
                clamp: q.clamp.map(|_| (0, 1)),
            })),
            other => other.clone(),
        }
    }

    /// True for ops that read no inputs (graph inputs and weights).
    pub fn is_source(&self) -> bool {
        matches!(self, Op::Input { .. } | Op::Weight(_))
    }
}
