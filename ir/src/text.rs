//! The text form of a graph: `Display` prints it, `FromStr` parses it back, and the two
//! round-trip exactly (weights included): parsing a printed graph and printing it again gives
//! the same text.
//!
//! ```text
//! graph "mnist" {
//!   %input = input f32[1,1,28,28]
//!   %w = weight f32[2,1,3,3] [0.5, -1.0, …]
//!   %b = weight f32[2] [0.0, NaN]
//!   %conv1 = conv{kernel=[3, 3], strides=[1, 1], dilations=[1, 1], pads=[0, 0, 0, 0], group=1}(%input, %w, %b) : f32[1,2,26,26]
//!   %split = split{axis=1, sizes=[1, 1]}(%conv1) : f32[1,1,26,26], f32[1,1,26,26]
//!   %r = relu(%split:1) : f32[1,1,26,26]
//!   output "logits" = %r
//! }
//! ```
//!
//! Grammar, one statement per line (blank lines and `//` comments are ignored):
//!
//! ```text
//! graph  := 'graph' STRING '{'  stmt*  '}'
//! stmt   := '%' name '=' 'input' type
//!         | '%' name '=' 'weight' type '[' (scalar (',' scalar)*)? ']'
//!         | '%' name '=' op ('{' attr (',' attr)* '}')? '(' (ref (',' ref)*)? ')' (':' type (',' type)*)?
//!         | 'output' STRING '=' ref
//! name   := [A-Za-z0-9_.]+ | STRING
//! ref    := '%' name (':' slot)?                      slot 0 when omitted
//! type   := ('f32' | 'i64' | 'bool' | 'u8' | 'i8' | 'i32') '[' (dim (',' dim)*)? ']'
//! attr   := key '=' value        value := word | '[' (value (',' value)*)? ']'
//! STRING := '"' … '"'            escapes \" \\ \n \r \t \0 \u{hex}
//! ```
//!
//! Op names are [`Op::name`]. Every attribute is required; floats are printed with Rust's
//! shortest round-trip form (`0.1`, `1e-5`, `NaN`, `inf`, `-inf`, `-0.0`):
//!
//! | op | attributes |
//! |----|-----------|
//! | `conv` | `kernel`, `strides`, `dilations`, `pads`, `group`, then optionally `algo` (`direct`, `winograd-f2`, `winograd-f4`; absent means `direct`) |
//! | `conv-transpose` | `kernel`, `strides`, `dilations`, `pads`, `output-padding`, `group` |
//! | `batchnorm` | `epsilon` |
//! | `leaky-relu` | `alpha` |
//! | `clip` | `min`, `max` |
//! | `hard-sigmoid` | `alpha`, `beta` |
//! | `swish` | `beta` |
//! | `max-pool` | `kernel`, `strides`, `dilations`, `pads`, `ceil-mode` |
//! | `avg-pool` | as `max-pool`, plus `count-include-pad` |
//! | `gemm` | `alpha`, `beta`, `trans-a`, `trans-b` |
//! | `resize` | `mode` (`nearest`, `linear`, `cubic`), then for `cubic` `cubic-a` and `exclude-outside`; `coord` (`half-pixel`, `half-pixel-symmetric`, `pytorch-half-pixel`, `align-corners`, `asymmetric`, `tf-half-pixel-for-nn`, `tf-crop-and-resize`), then for `tf-crop-and-resize` `roi` and `extrapolation`; `nearest` (`round-prefer-floor`, `round-prefer-ceil`, `floor`, `ceil`), `scales`, `out-shape` |
//! | `concat`, `gather` | `axis` |
//! | `split` | `axis`, `sizes` |
//! | `reshape`, `expand` | `shape` |
//! | `transpose` | `perm` |
//! | `slice` | `axes=[[axis, start, end, step], …]` |
//! | `cast` | `to` (`f32`, `i64`, `bool`, `u8`, `i8`, `i32`) |
//! | `quantize` | `to` (`u8`, `i8`), then as `dequantize` |
//! | `dequantize` | `axis` (absent: per tensor), `scales`, `zero-points` |
//! | `softmax` | `axis`, `flatten` |
//! | `pad` | `pads`, `mode` (`constant`, `reflect`, `edge`, `wrap`), `value` |
//! | `reduce-mean`, `reduce-sum`, `reduce-max`, `reduce-min`, `reduce-prod`, `reduce-l1`, `reduce-l2`, `reduce-sum-square`, `reduce-log-sum`, `reduce-log-sum-exp` | `axes`, `keepdims` |
//! | `arg-max`, `arg-min` | `axis`, `keepdims`, `select-last-index` |
//! | `qlinear-conv`, `qlinear-gemm`, `qlinear-matmul` | the base op's, then `x-scales`, `x-zero-points`, `w-axis` (absent: per tensor), `w-scales`, `w-zero-points`, `out` (`i32`, `f32`, `u8`, `i8`), for `u8`/`i8` `out-scales` and `out-zero-points`, and optionally `clamp=[lo, hi]` |
//! | `fused-conv`, `fused-gemm`, `fused-matmul` | the base op's, then optionally `act` (`relu`, `leaky-relu` with `act-alpha`, `clip` with `act-min` and `act-max`, `hard-sigmoid` with `act-alpha` and `act-beta`, `hard-swish`, `sigmoid`, `swish` with `act-beta`: [`Fused::ACTIVATIONS`]) and `residual=true` (the residual is the last input); absent means none |
//!
//! Every other op takes no attributes. Nodes are printed graph inputs first (in input order),
//! then in the topological order that prefers the lowest node id, so printing is deterministic
//! and a parsed graph prints identically. Nodes on a cycle (an invalid graph) are printed
//! last, in id order; such text does not parse, since a value must be defined before use.
//! The parser does not run inference: output types come from the text, and
//! [`crate::verify`] checks them.

use std::collections::{HashMap, HashSet};
use std::fmt::{self, Display, Formatter};
use std::str::FromStr;

use crate::graph::{Graph, NodeId, ValueRef};
use crate::op::{
    BinaryOp, ConvAlgo, ConvAttrs, ConvTransposeAttrs, CoordTransform, Fused, NearestMode, Op, PadMode, PoolAttrs,
    QLinear, QLinearOut, QuantParams, ReduceKind, ResizeAttrs, ResizeMode, SliceAxis, UnaryOp,
};
use crate::tensor::{DType, Tensor, TensorData, TensorType};

/// A syntax or semantic error in text IR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

/// Unary ops without parameters, for lookup by name.
const PLAIN_UNARY: [UnaryOp; 13] = [
    UnaryOp::Relu,
    UnaryOp::Sigmoid,
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

const BINARY: [BinaryOp; 11] = [
    BinaryOp::Add,
    BinaryOp::Sub,
    BinaryOp::Mul,
    BinaryOp::Div,
    BinaryOp::Max,
    BinaryOp::Min,
    BinaryOp::Pow,
    BinaryOp::PRelu,
    BinaryOp::Equal,
    BinaryOp::Less,
    BinaryOp::Greater,
];

/// Spellings of [`ResizeMode`]; cubic's parameters are separate attributes.
const RESIZE_MODE_NAMES: [&str; 3] = ["nearest", "linear", "cubic"];

fn resize_mode_name(m: ResizeMode) -> &'static str {
    match m {
        ResizeMode::Nearest => "nearest",
        ResizeMode::Linear => "linear",
        ResizeMode::Cubic { .. } => "cubic",
    }
}

/// Spellings of [`CoordTransform`]; tf-crop-and-resize's box is separate attributes.
const COORD_NAMES: [&str; 7] = [
    "half-pixel",
    "half-pixel-symmetric",
    "pytorch-half-pixel",
    "align-corners",
    "asymmetric",
    "tf-half-pixel-for-nn",
    "tf-crop-and-resize",
];

fn coord_name(c: &CoordTransform) -> &'static str {
    match c {
        CoordTransform::HalfPixel => "half-pixel",
        CoordTransform::HalfPixelSymmetric => "half-pixel-symmetric",
        CoordTransform::PytorchHalfPixel => "pytorch-half-pixel",
        CoordTransform::AlignCorners => "align-corners",
        CoordTransform::Asymmetric => "asymmetric",
        CoordTransform::TfHalfPixelForNn => "tf-half-pixel-for-nn",
        CoordTransform::TfCropAndResize { .. } => "tf-crop-and-resize",
    }
}

const NEAREST_MODES: [NearestMode; 4] =
    [NearestMode::RoundPreferFloor, NearestMode::RoundPreferCeil, NearestMode::Floor, NearestMode::Ceil];

fn nearest_name(n: NearestMode) -> &'static str {
    match n {
        NearestMode::RoundPreferFloor => "round-prefer-floor",
        NearestMode::RoundPreferCeil => "round-prefer-ceil",
        NearestMode::Floor => "floor",
        NearestMode::Ceil => "ceil",
    }
}

const PAD_MODES: [PadMode; 4] = [PadMode::Constant, PadMode::Reflect, PadMode::Edge, PadMode::Wrap];

fn pad_mode_name(m: PadMode) -> &'static str {
    match m {
        PadMode::Constant => "constant",
        PadMode::Reflect => "reflect",
        PadMode::Edge => "edge",
        PadMode::Wrap => "wrap",
    }
}

/// A name printed without quotes: `[A-Za-z0-9_.]+`.
fn is_plain_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

impl Display for Graph {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        GraphText { graph: self, weights: true }.fmt(f)
    }
}

impl Graph {
    /// The text form with weight data elided (`weight f32[64,3,7,7] <9408 values>`), for
    /// reading large models. It does not parse.
    pub fn display_without_weights(&self) -> impl Display + '_ {
        GraphText { graph: self, weights: false }
    }
}

struct GraphText<'a> {
    graph: &'a Graph,
    /// Print weight data (otherwise only its element count).
    weights: bool,
}

impl Display for GraphText<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let g = self.graph;
        writeln!(f, "graph {} {{", Quoted(&g.name))?;
        for id in print_order(g) {
            self.write_node(f, id)?;
        }
        for out in g.outputs() {
            writeln!(f, "  output {} = {}", Quoted(&out.name), Ref(g, out.value))?;
        }
        f.write_str("}")
    }
}

impl GraphText<'_> {
    fn write_node(&self, f: &mut Formatter<'_>, id: NodeId) -> fmt::Result {
        let g = self.graph;
        let node = g.node(id);
        write!(f, "  %{} = ", Name(&node.name))?;
        match &node.op {
            Op::Input { .. } => write!(f, "input {}", Types(&node.outputs))?,
            Op::Weight(wid) => match g.weights().get(*wid) {
                Some(t) if self.weights => write!(f, "weight {} {}", t.ty(), Data(t.data()))?,
                Some(t) => write!(f, "weight {} <{} values>", t.ty(), t.numel())?,
                None => write!(f, "weight <missing weight #{}>", wid.0)?,
            },
            op => {
                write_op(f, op)?;
                f.write_str("(")?;
                for (i, v) in g.node_inputs(id).into_iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    Ref(g, v).fmt(f)?;
                }
                f.write_str(")")?;
                if !node.outputs.is_empty() {
                    write!(f, " : {}", Types(&node.outputs))?;
                }
            }
        }
        f.write_str("\n")
    }
}

/// Graph inputs in input order, then the other nodes in the canonical order
/// ([`Graph::lowest_id_order`]), then nodes on or behind a cycle in id order.
///
/// A parsed graph numbers its nodes in printed order, so this order is the lowest-id
/// topological order of the parsed graph too, which makes printing a fixpoint.
fn print_order(g: &Graph) -> Vec<NodeId> {
    let mut order = Vec::with_capacity(g.node_count());
    let mut placed = HashSet::new();
    for &id in g.inputs() {
        if g.contains_node(id) && placed.insert(id) {
            order.push(id);
        }
    }
    let (rest, cyclic) = g.lowest_id_order(&placed);
    order.extend(rest);
    order.extend(cyclic);
    order
}

fn write_op(f: &mut Formatter<'_>, op: &Op) -> fmt::Result {
    f.write_str(op.name())?;
    let mut a = AttrWriter { f, n: 0 };
    write_attrs(&mut a, op)?;
    a.finish()
}

/// A unary op's own attributes, each key prefixed with `prefix` (`act-` inside a fused op).
fn write_unary_attrs(a: &mut AttrWriter<'_, '_>, prefix: &str, op: &UnaryOp) -> fmt::Result {
    let mut f = |key: &str, v: f32| a.attr(&format!("{prefix}{key}"), V::F32(v));
    match *op {
        UnaryOp::LeakyRelu { alpha } => f("alpha", alpha),
        UnaryOp::Clip { min, max } => {
            f("min", min)?;
            f("max", max)
        }
        UnaryOp::HardSigmoid { alpha, beta } => {
            f("alpha", alpha)?;
            f("beta", beta)
        }
        UnaryOp::Swish { beta } => f("beta", beta),
        _ => Ok(()),
    }
}

/// The attributes of `op`. A fused op writes its base's, then `act` (with the activation's
/// own attributes prefixed `act-`) and `residual=true` when present.
fn write_attrs(a: &mut AttrWriter<'_, '_>, op: &Op) -> fmt::Result {
    match op {
        Op::Fused(fused) => {
            write_attrs(a, &fused.base)?;
            if let Some(act) = fused.act {
                a.attr("act", V::Word(act.name()))?;
                write_unary_attrs(a, "act-", &act)?;
            }
            if fused.residual {
                a.attr("residual", V::Bool(true))?;
            }
        }
        Op::QLinear(q) => {
            write_attrs(a, &q.base)?;
            a.quant("x-", &q.x)?;
            a.quant("w-", &q.w)?;
            match &q.out {
                QLinearOut::I32 => a.attr("out", V::Word(DType::I32.name()))?,
                QLinearOut::F32 => a.attr("out", V::Word(DType::F32.name()))?,
                QLinearOut::Quantized { params, to } => {
                    a.attr("out", V::Word(to.name()))?;
                    a.quant("out-", params)?;
                }
            }
            if let Some((lo, hi)) = q.clamp {
                a.attr("clamp", V::I64s(&[i64::from(lo), i64::from(hi)]))?;
            }
        }
        Op::Conv(c) => {
            a.window(&c.kernel, &c.strides, &c.dilations, &c.pads)?;
            a.attr("group", V::Usize(c.group))?;
            if c.algo != ConvAlgo::Direct {
                a.attr("algo", V::Word(c.algo.name()))?;
            }
        }
        Op::ConvTranspose(c) => {
            a.window(&c.kernel, &c.strides, &c.dilations, &c.pads)?;
            a.attr("output-padding", V::Usizes(&c.output_padding))?;
            a.attr("group", V::Usize(c.group))?;
        }
        Op::BatchNorm { epsilon } => a.attr("epsilon", V::F32(*epsilon))?,
        Op::Unary(u) => write_unary_attrs(a, "", u)?,
        Op::MaxPool(p) => a.pool(p)?,
        Op::AvgPool { pool, count_include_pad } => {
            a.pool(pool)?;
            a.attr("count-include-pad", V::Bool(*count_include_pad))?;
        }
        Op::Gemm { alpha, beta, trans_a, trans_b } => {
            a.attr("alpha", V::F32(*alpha))?;
            a.attr("beta", V::F32(*beta))?;
            a.attr("trans-a", V::Bool(*trans_a))?;
            a.attr("trans-b", V::Bool(*trans_b))?;
        }
        Op::Resize(r) => {
            a.attr("mode", V::Word(resize_mode_name(r.mode)))?;
            if let ResizeMode::Cubic { a: coeff, exclude_outside } = r.mode {
                a.attr("cubic-a", V::F32(coeff))?;
                a.attr("exclude-outside", V::Bool(exclude_outside))?;
            }
            a.attr("coord", V::Word(coord_name(&r.coord)))?;
            if let CoordTransform::TfCropAndResize { roi, extrapolation } = &r.coord {
                a.attr("roi", V::F32s(roi))?;
                a.attr("extrapolation", V::F32(*extrapolation))?;
            }
            a.attr("nearest", V::Word(nearest_name(r.nearest)))?;
            a.attr("scales", V::F32s(&r.scales))?;
            a.attr("out-shape", V::Usizes(&r.out_shape))?;
        }
        Op::Concat { axis } | Op::Gather { axis } => a.attr("axis", V::Usize(*axis))?,
        Op::Split { axis, sizes } => {
            a.attr("axis", V::Usize(*axis))?;
            a.attr("sizes", V::Usizes(sizes))?;
        }
        Op::Reshape { shape } | Op::Expand { shape } => a.attr("shape", V::Usizes(shape))?,
        Op::Transpose { perm } => a.attr("perm", V::Usizes(perm))?,
        Op::Slice { axes } => a.attr("axes", V::Slices(axes))?,
        Op::Cast { to } => a.attr("to", V::Word(to.name()))?,
        Op::Quantize { params, to } => {
            a.attr("to", V::Word(to.name()))?;
            a.quant("", params)?;
        }
        Op::Dequantize(params) => a.quant("", params)?,
        Op::Softmax { axis, flatten } => {
            a.attr("axis", V::Usize(*axis))?;
            a.attr("flatten", V::Bool(*flatten))?;
        }
        Op::Pad { pads, mode, value } => {
            a.attr("pads", V::I64s(pads))?;
            a.attr("mode", V::Word(pad_mode_name(*mode)))?;
            a.attr("value", V::F32(*value))?;
        }
        Op::Reduce { axes, keepdims, .. } => {
            a.attr("axes", V::Usizes(axes))?;
            a.attr("keepdims", V::Bool(*keepdims))?;
        }
        Op::ArgReduce { axis, keepdims, select_last_index, .. } => {
            a.attr("axis", V::Usize(*axis))?;
            a.attr("keepdims", V::Bool(*keepdims))?;
            a.attr("select-last-index", V::Bool(*select_last_index))?;
        }
        Op::Input { .. }
        | Op::Weight(_)
        | Op::Binary(_)
        | Op::Where
        | Op::GlobalAvgPool
        | Op::GlobalMaxPool
        | Op::MatMul
        | Op::Lookup => {}
    }
    Ok(())
}

/// Writes `{key=value, …}`, or nothing when there are no attributes.
struct AttrWriter<'a, 'b> {
    f: &'a mut Formatter<'b>,
    n: usize,
}

impl AttrWriter<'_, '_> {
    fn attr(&mut self, key: &str, value: V<'_>) -> fmt::Result {
        self.f.write_str(if self.n == 0 { "{" } else { ", " })?;
        self.n += 1;
        write!(self.f, "{key}={value}")
    }

    /// `axis` (absent for per-tensor), `scales`, `zero-points`, each name after `prefix`.
    fn quant(&mut self, prefix: &str, p: &QuantParams) -> fmt::Result {
        if let Some(axis) = p.axis {
            self.attr(&format!("{prefix}axis"), V::Usize(axis))?;
        }
        self.attr(&format!("{prefix}scales"), V::F32s(&p.scales))?;
        let zps: Vec<i64> = p.zero_points.iter().map(|&z| i64::from(z)).collect();
        self.attr(&format!("{prefix}zero-points"), V::I64s(&zps))
    }

    fn window(&mut self, kernel: &[usize], strides: &[usize], dilations: &[usize], pads: &[usize]) -> fmt::Result {
        self.attr("kernel", V::Usizes(kernel))?;
        self.attr("strides", V::Usizes(strides))?;
        self.attr("dilations", V::Usizes(dilations))?;
        self.attr("pads", V::Usizes(pads))
    }

    fn pool(&mut self, p: &PoolAttrs) -> fmt::Result {
        self.window(&p.kernel, &p.strides, &p.dilations, &p.pads)?;
        self.attr("ceil-mode", V::Bool(p.ceil_mode))
    }

    fn finish(self) -> fmt::Result {
        if self.n > 0 { self.f.write_str("}") } else { Ok(()) }
    }
}

/// An attribute value as printed.
enum V<'a> {
    Usize(usize),
    F32(f32),
    Bool(bool),
    Word(&'a str),
    Usizes(&'a [usize]),
    I64s(&'a [i64]),
    F32s(&'a [f32]),
    Slices(&'a [SliceAxis]),
}

impl Display for V<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            V::Usize(v) => write!(f, "{v}"),
            V::F32(v) => write!(f, "{v:?}"),
            V::Bool(v) => write!(f, "{v}"),
            V::Word(w) => f.write_str(w),
            V::Usizes(vs) => write_list(f, vs, |f, v| write!(f, "{v}")),
            V::I64s(vs) => write_list(f, vs, |f, v| write!(f, "{v}")),
            V::F32s(vs) => write_list(f, vs, |f, v| write!(f, "{v:?}")),
            V::Slices(axes) => {
                write_list(f, axes, |f, a| write!(f, "[{}, {}, {}, {}]", a.axis, a.start, a.end, a.step))
            }
        }
    }
}

fn write_list<T>(
    f: &mut Formatter<'_>,
    items: &[T],
    mut item: impl FnMut(&mut Formatter<'_>, &T) -> fmt::Result,
) -> fmt::Result {
    f.write_str("[")?;
    for (i, x) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        item(f, x)?;
    }
    f.write_str("]")
}

/// Weight data, `[v, v, …]`; f32 in shortest round-trip form.
struct Data<'a>(&'a TensorData);

impl Display for Data<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self.0 {
            TensorData::F32(vs) => write_list(f, vs, |f, v| write!(f, "{v:?}")),
            TensorData::I64(vs) => write_list(f, vs, |f, v| write!(f, "{v}")),
            TensorData::Bool(vs) => write_list(f, vs, |f, v| write!(f, "{v}")),
            TensorData::U8(vs) => write_list(f, vs, |f, v| write!(f, "{v}")),
            TensorData::I8(vs) => write_list(f, vs, |f, v| write!(f, "{v}")),
            TensorData::I32(vs) => write_list(f, vs, |f, v| write!(f, "{v}")),
        }
    }
}

/// Types separated by `, `.
struct Types<'a>(&'a [TensorType]);

impl Display for Types<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        for (i, t) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            t.fmt(f)?;
        }
        Ok(())
    }
}

/// A value reference, `%name` or `%name:slot`.
struct Ref<'a>(&'a Graph, ValueRef);

impl Display for Ref<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let Ref(g, v) = *self;
        if !g.contains_node(v.node) {
            return f.write_str("<removed node>");
        }
        write!(f, "%{}", Name(&g.node(v.node).name))?;
        if v.slot != 0 {
            write!(f, ":{}", v.slot)?;
        }
        Ok(())
    }
}

/// A node name: plain when it is `[A-Za-z0-9_.]+`, quoted otherwise.
struct Name<'a>(&'a str);

impl Display for Name<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        if is_plain_name(self.0) { f.write_str(self.0) } else { Quoted(self.0).fmt(f) }
    }
}

/// A string literal with escapes.
struct Quoted<'a>(&'a str);

impl Display for Quoted<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        for c in self.0.chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                '\0' => f.write_str("\\0")?,
                c if c.is_control() => write!(f, "\\u{{{:x}}}", u32::from(c))?,
                c => write!(f, "{c}")?,
            }
        }
        f.write_str("\"")
    }
}

impl FromStr for Graph {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Graph, ParseError> {
        Parser::default().parse(text)
    }
}

type PResult<T> = Result<T, ParseError>;

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Punct(char),
    Word(String),
    Str(String),
}

impl Display for Tok {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Punct(c) => write!(f, "`{c}`"),
            Tok::Word(w) => write!(f, "`{w}`"),
            Tok::Str(s) => write!(f, "string {}", Quoted(s)),
        }
    }
}

/// Characters of words: names, op names, numbers (`-1.5e-3`), `inf`, `true`.
fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '+')
}

fn lex(text: &str, line: usize) -> PResult<Vec<Tok>> {
    let err = |message: String| ParseError { line, message };
    let mut toks = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '/' if text[i + 1..].starts_with('/') => break,
            '%' | '=' | '{' | '}' | '(' | ')' | '[' | ']' | ',' | ':' => toks.push(Tok::Punct(c)),
            '"' => {
                let mut s = String::new();
                loop {
                    match chars.next() {
                        None => return Err(err("unterminated string".into())),
                        Some((_, '"')) => break,
                        Some((_, '\\')) => s.push(lex_escape(&mut chars).map_err(err)?),
                        Some((_, c)) => s.push(c),
                    }
                }
                toks.push(Tok::Str(s));
            }
            c if is_word_char(c) => {
                let mut end = i + c.len_utf8();
                while let Some(&(j, d)) = chars.peek() {
                    if !is_word_char(d) {
                        break;
                    }
                    end = j + d.len_utf8();
                    chars.next();
                }
                toks.push(Tok::Word(text[i..end].to_owned()));
            }
            c => return Err(err(format!("unexpected character `{}`", c.escape_debug()))),
        }
    }
    Ok(toks)
}

/// The character of an escape sequence, after its backslash.
fn lex_escape(chars: &mut impl Iterator<Item = (usize, char)>) -> Result<char, String> {
    match chars.next().map(|(_, c)| c) {
        Some('"') => Ok('"'),
        Some('\\') => Ok('\\'),
        Some('n') => Ok('\n'),
        Some('r') => Ok('\r'),
        Some('t') => Ok('\t'),
        Some('0') => Ok('\0'),
        Some('u') => {
            if chars.next().map(|(_, c)| c) != Some('{') {
                return Err("expected `{` after `\\u`".into());
            }
            let mut hex = String::new();
            loop {
                match chars.next().map(|(_, c)| c) {
                    Some('}') => break,
                    Some(c) if c.is_ascii_hexdigit() && hex.len() < 6 => hex.push(c),
                    _ => return Err("malformed `\\u{…}` escape".into()),
                }
            }
            u32::from_str_radix(&hex, 16)
                .ok()
                .and_then(char::from_u32)
                .ok_or_else(|| format!("`\\u{{{hex}}}` is not a character"))
        }
        Some(c) => Err(format!("unknown escape `\\{}`", c.escape_debug())),
        None => Err("unterminated string".into()),
    }
}

/// The tokens of one statement.
struct Cursor<'t> {
    toks: &'t [Tok],
    pos: usize,
    line: usize,
}

impl<'t> Cursor<'t> {
    fn err(&self, message: impl Into<String>) -> ParseError {
        ParseError { line: self.line, message: message.into() }
    }

    fn found(&self) -> String {
        self.peek().map_or_else(|| "end of line".to_owned(), Tok::to_string)
    }

    fn peek(&self) -> Option<&'t Tok> {
        self.toks.get(self.pos)
    }

    fn at(&self, c: char) -> bool {
        self.peek() == Some(&Tok::Punct(c))
    }

    fn eat(&mut self, c: char) -> bool {
        let hit = self.at(c);
        self.pos += usize::from(hit);
        hit
    }

    fn expect(&mut self, c: char, context: &str) -> PResult<()> {
        if self.eat(c) { Ok(()) } else { Err(self.err(format!("expected `{c}` {context}, found {}", self.found()))) }
    }

    fn word(&mut self, what: &str) -> PResult<&'t str> {
        match self.peek() {
            Some(Tok::Word(w)) => {
                self.pos += 1;
                Ok(w)
            }
            _ => Err(self.err(format!("expected {what}, found {}", self.found()))),
        }
    }

    fn keyword(&mut self, kw: &str) -> PResult<()> {
        match self.peek() {
            Some(Tok::Word(w)) if w == kw => {
                self.pos += 1;
                Ok(())
            }
            _ => Err(self.err(format!("expected `{kw}`, found {}", self.found()))),
        }
    }

    fn string(&mut self, what: &str) -> PResult<String> {
        match self.peek() {
            Some(Tok::Str(s)) => {
                self.pos += 1;
                Ok(s.clone())
            }
            _ => Err(self.err(format!("expected {what} (a quoted string), found {}", self.found()))),
        }
    }

    /// A node name after `%`: plain or quoted.
    fn name(&mut self) -> PResult<String> {
        match self.peek() {
            Some(Tok::Word(w)) if is_plain_name(w) => {
                self.pos += 1;
                Ok(w.clone())
            }
            Some(Tok::Word(w)) => {
                Err(self.err(format!("`{w}` is not a plain name ([A-Za-z0-9_.]+); quote it as %{}", Quoted(w))))
            }
            Some(Tok::Str(s)) => {
                self.pos += 1;
                Ok(s.clone())
            }
            _ => Err(self.err(format!("expected a name after `%`, found {}", self.found()))),
        }
    }

    fn usize(&mut self, what: &str) -> PResult<usize> {
        let w = self.word(what)?;
        w.parse().map_err(|_| self.err(format!("expected {what} (a non-negative integer), found `{w}`")))
    }

    /// `dtype[d, …]`
    fn tensor_type(&mut self) -> PResult<TensorType> {
        let w = self.word("a type like `f32[1,3,224,224]`")?;
        let dtype = DType::from_name(w)
            .ok_or_else(|| self.err(format!("unknown dtype `{w}` (expected f32, i64, bool, u8, i8 or i32)")))?;
        self.expect('[', "after the dtype")?;
        let mut shape = Vec::new();
        if !self.eat(']') {
            loop {
                shape.push(self.usize("a dimension")?);
                if self.eat(']') {
                    break;
                }
                self.expect(',', "between dimensions")?;
            }
        }
        Ok(TensorType::new(dtype, shape))
    }

    /// `[v, …]`, each element parsed by `parse`.
    fn scalars<T>(&mut self, what: &str, parse: impl Fn(&str) -> Option<T>) -> PResult<Vec<T>> {
        self.expect('[', "before the weight values")?;
        let mut values = Vec::new();
        if self.eat(']') {
            return Ok(values);
        }
        loop {
            let w = self.word(what)?;
            values.push(parse(w).ok_or_else(|| self.err(format!("expected {what}, found `{w}`")))?);
            if self.eat(']') {
                return Ok(values);
            }
            self.expect(',', "between weight values")?;
        }
    }

    fn weight_data(&mut self, dtype: DType) -> PResult<TensorData> {
        Ok(match dtype {
            DType::F32 => TensorData::F32(self.scalars("an f32 value", |w| w.parse().ok())?),
            DType::I64 => TensorData::I64(self.scalars("an i64 value", |w| w.parse().ok())?),
            DType::Bool => TensorData::Bool(self.scalars("`true` or `false`", parse_bool)?),
            DType::U8 => TensorData::U8(self.scalars("a u8 value", |w| w.parse().ok())?),
            DType::I8 => TensorData::I8(self.scalars("an i8 value", |w| w.parse().ok())?),
            DType::I32 => TensorData::I32(self.scalars("an i32 value", |w| w.parse().ok())?),
        })
    }

    /// `{key=value, …}`
    fn attrs(&mut self) -> PResult<Vec<(String, AttrValue)>> {
        self.expect('{', "before attributes")?;
        let mut entries: Vec<(String, AttrValue)> = Vec::new();
        if self.eat('}') {
            return Ok(entries);
        }
        loop {
            let key = self.word("an attribute name")?;
            if entries.iter().any(|(k, _)| k == key) {
                return Err(self.err(format!("attribute `{key}` is given twice")));
            }
            self.expect('=', &format!("after attribute `{key}`"))?;
            let value = self.attr_value(0)?;
            entries.push((key.to_owned(), value));
            if self.eat('}') {
                return Ok(entries);
            }
            self.expect(',', "between attributes")?;
        }
    }

    fn attr_value(&mut self, depth: usize) -> PResult<AttrValue> {
        if !self.eat('[') {
            return Ok(AttrValue::Word(self.word("an attribute value")?.to_owned()));
        }
        if depth >= MAX_LIST_DEPTH {
            return Err(self.err("attribute lists are nested too deeply"));
        }
        let mut items = Vec::new();
        if self.eat(']') {
            return Ok(AttrValue::List(items));
        }
        loop {
            items.push(self.attr_value(depth + 1)?);
            if self.eat(']') {
                return Ok(AttrValue::List(items));
            }
            self.expect(',', "between list items")?;
        }
    }

    fn finish(&self) -> PResult<()> {
        match self.peek() {
            None => Ok(()),
            Some(t) => Err(self.err(format!("unexpected {t} at the end of the statement"))),
        }
    }
}

/// Attribute lists nest at most this deep (slice axes need 2); bounds parser recursion.
const MAX_LIST_DEPTH: usize = 4;

fn parse_bool(w: &str) -> Option<bool> {
    match w {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// An attribute value before it is interpreted by its op.
#[derive(Clone, Debug)]
enum AttrValue {
    Word(String),
    List(Vec<AttrValue>),
}

impl Display for AttrValue {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            AttrValue::Word(w) => f.write_str(w),
            AttrValue::List(items) => write_list(f, items, |f, v| v.fmt(f)),
        }
    }
}

/// The attributes of one op, consumed by name; errors are messages prefixed by the op.
struct Attrs<'a> {
    op: &'a str,
    entries: Vec<(String, AttrValue)>,
}

impl Attrs<'_> {
    fn has(&self, key: &str) -> bool {
        self.entries.iter().any(|(k, _)| k == key)
    }

    fn take(&mut self, key: &str) -> Result<AttrValue, String> {
        match self.entries.iter().position(|(k, _)| k == key) {
            Some(i) => Ok(self.entries.remove(i).1),
            None => Err(format!("{}: missing attribute `{key}`", self.op)),
        }
    }

    fn bad(&self, key: &str, what: &str, v: &AttrValue) -> String {
        format!("{}: attribute `{key}`: expected {what}, found `{v}`", self.op)
    }

    fn scalar<T>(&mut self, key: &str, what: &str, parse: impl Fn(&str) -> Option<T>) -> Result<T, String> {
        let v = self.take(key)?;
        match &v {
            AttrValue::Word(w) => parse(w).ok_or_else(|| self.bad(key, what, &v)),
            AttrValue::List(_) => Err(self.bad(key, what, &v)),
        }
    }

    fn list<T>(&mut self, key: &str, what: &str, parse: impl Fn(&str) -> Option<T>) -> Result<Vec<T>, String> {
        let v = self.take(key)?;
        let AttrValue::List(items) = &v else {
            return Err(self.bad(key, &format!("a list of {what}"), &v));
        };
        items
            .iter()
            .map(|item| match item {
                AttrValue::Word(w) => parse(w),
                AttrValue::List(_) => None,
            })
            .collect::<Option<Vec<T>>>()
            .ok_or_else(|| self.bad(key, &format!("a list of {what}"), &v))
    }

    fn usize(&mut self, key: &str) -> Result<usize, String> {
        self.scalar(key, "a non-negative integer", |w| w.parse().ok())
    }

    fn f32(&mut self, key: &str) -> Result<f32, String> {
        self.scalar(key, "a number", |w| w.parse().ok())
    }

    fn bool(&mut self, key: &str) -> Result<bool, String> {
        self.scalar(key, "`true` or `false`", parse_bool)
    }

    fn usizes(&mut self, key: &str) -> Result<Vec<usize>, String> {
        self.list(key, "non-negative integers", |w| w.parse().ok())
    }

    fn i64s(&mut self, key: &str) -> Result<Vec<i64>, String> {
        self.list(key, "integers", |w| w.parse().ok())
    }

    fn f32s(&mut self, key: &str) -> Result<Vec<f32>, String> {
        self.list(key, "numbers", |w| w.parse().ok())
    }

    /// `[axis=…,] scales=[…], zero-points=[…]`, each name after `prefix`.
    fn quant(&mut self, prefix: &str) -> Result<QuantParams, String> {
        let axis_key = format!("{prefix}axis");
        let axis = if self.has(&axis_key) { Some(self.usize(&axis_key)?) } else { None };
        let scales = self.f32s(&format!("{prefix}scales"))?;
        let zero_points = self.list(&format!("{prefix}zero-points"), "32-bit integers", |w| w.parse().ok())?;
        Ok(QuantParams { axis, scales, zero_points })
    }

    /// One of `all`, spelled as `name` spells it.
    fn choice<T: Copy>(&mut self, key: &str, all: &[T], name: fn(T) -> &'static str) -> Result<T, String> {
        let spellings: Vec<&str> = all.iter().map(|&t| name(t)).collect();
        let what = format!("one of {}", spellings.join(", "));
        self.scalar(key, &what, |w| all.iter().copied().find(|&t| name(t) == w))
    }

    /// `[[axis, start, end, step], …]`
    fn slice_axes(&mut self, key: &str) -> Result<Vec<SliceAxis>, String> {
        let what = "a list of [axis, start, end, step]";
        let v = self.take(key)?;
        let parse = |item: &AttrValue| {
            let AttrValue::List(fields) = item else { return None };
            let ints: Option<Vec<i64>> = fields
                .iter()
                .map(|f| match f {
                    AttrValue::Word(w) => w.parse().ok(),
                    AttrValue::List(_) => None,
                })
                .collect();
            match ints?[..] {
                [axis, start, end, step] => Some(SliceAxis { axis: usize::try_from(axis).ok()?, start, end, step }),
                _ => None,
            }
        };
        match &v {
            AttrValue::List(items) => items.iter().map(parse).collect::<Option<Vec<_>>>(),
            AttrValue::Word(_) => None,
        }
        .ok_or_else(|| self.bad(key, what, &v))
    }

    fn window(&mut self) -> Result<[Vec<usize>; 4], String> {
        Ok([self.usizes("kernel")?, self.usizes("strides")?, self.usizes("dilations")?, self.usizes("pads")?])
    }

    fn pool(&mut self) -> Result<PoolAttrs, String> {
        let [kernel, strides, dilations, pads] = self.window()?;
        Ok(PoolAttrs { kernel, strides, dilations, pads, ceil_mode: self.bool("ceil-mode")? })
    }

    /// Fails on attributes the op does not take.
    fn finish(self) -> Result<(), String> {
        match self.entries.first() {
            None => Ok(()),
            Some((k, _)) => Err(format!("{}: unknown attribute `{k}`", self.op)),
        }
    }
}

/// The op called `name` with attributes `entries` (not `input` or `weight`).
fn build_op(name: &str, entries: Vec<(String, AttrValue)>) -> Result<Op, String> {
    let mut a = Attrs { op: name, entries };
    let op = match name.strip_prefix("fused-") {
        Some(base @ ("conv" | "gemm" | "matmul")) => {
            let base = op_from_attrs(base, &mut a)?;
            let act = if a.has("act") {
                let act = a.choice("act", &Fused::ACTIVATIONS, |w| w)?;
                Some(unary_from_attrs(act, "act-", &mut a)?.expect("every fusible activation is a unary op"))
            } else {
                None
            };
            let residual = if a.has("residual") { a.bool("residual")? } else { false };
            Op::Fused(Box::new(Fused { base, act, residual }))
        }
        _ => match name.strip_prefix("qlinear-") {
            Some(base @ ("conv" | "gemm" | "matmul")) => Op::QLinear(Box::new(qlinear_from_attrs(base, &mut a)?)),
            _ => op_from_attrs(name, &mut a)?,
        },
    };
    a.finish()?;
    Ok(op)
}

/// A `qlinear-*` op's attributes after its base's.
fn qlinear_from_attrs(base: &str, a: &mut Attrs<'_>) -> Result<QLinear, String> {
    let base = op_from_attrs(base, a)?;
    let x = a.quant("x-")?;
    let w = a.quant("w-")?;
    let outs = [DType::I32, DType::F32, DType::U8, DType::I8];
    let out = match a.choice("out", &outs, DType::name)? {
        DType::I32 => QLinearOut::I32,
        DType::F32 => QLinearOut::F32,
        to => QLinearOut::Quantized { params: a.quant("out-")?, to },
    };
    let clamp = if a.has("clamp") {
        let b = a.list("clamp", "32-bit integers", |w| w.parse::<i32>().ok())?;
        let [lo, hi] = b[..] else { return Err(format!("{}: clamp needs [lo, hi], got {} values", a.op, b.len())) };
        Some((lo, hi))
    } else {
        None
    };
    Ok(QLinear { base, x, w, out, clamp })
}

/// Every conv algorithm (`algo=`).
const CONV_ALGOS: [ConvAlgo; 3] = [ConvAlgo::Direct, ConvAlgo::Winograd2, ConvAlgo::Winograd4];

/// The unary op called `name` (`None` if no unary op is), its attributes read from `a` with
/// keys prefixed by `prefix`.
fn unary_from_attrs(name: &str, prefix: &str, a: &mut Attrs<'_>) -> Result<Option<UnaryOp>, String> {
    let mut f = |key: &str| a.f32(&format!("{prefix}{key}"));
    Ok(Some(match name {
        "leaky-relu" => UnaryOp::LeakyRelu { alpha: f("alpha")? },
        "clip" => UnaryOp::Clip { min: f("min")?, max: f("max")? },
        "hard-sigmoid" => UnaryOp::HardSigmoid { alpha: f("alpha")?, beta: f("beta")? },
        "swish" => UnaryOp::Swish { beta: f("beta")? },
        _ => match PLAIN_UNARY.iter().find(|u| u.name() == name) {
            Some(u) => *u,
            None => return Ok(None),
        },
    }))
}

/// The op called `name`, taking its attributes from `a` (which the caller finishes).
fn op_from_attrs(name: &str, a: &mut Attrs<'_>) -> Result<Op, String> {
    if let Some(u) = unary_from_attrs(name, "", a)? {
        return Ok(Op::Unary(u));
    }
    let op = match name {
        "conv" => {
            let [kernel, strides, dilations, pads] = a.window()?;
            let group = a.usize("group")?;
            let algo = if a.has("algo") { a.choice("algo", &CONV_ALGOS, ConvAlgo::name)? } else { ConvAlgo::Direct };
            Op::Conv(ConvAttrs { kernel, strides, dilations, pads, group, algo })
        }
        "conv-transpose" => {
            let [kernel, strides, dilations, pads] = a.window()?;
            Op::ConvTranspose(ConvTransposeAttrs {
                kernel,
                strides,
                dilations,
                pads,
                output_padding: a.usizes("output-padding")?,
                group: a.usize("group")?,
            })
        }
        "batchnorm" => Op::BatchNorm { epsilon: a.f32("epsilon")? },
        "where" => Op::Where,
        "max-pool" => Op::MaxPool(a.pool()?),
        "avg-pool" => Op::AvgPool { pool: a.pool()?, count_include_pad: a.bool("count-include-pad")? },
        "global-avg-pool" => Op::GlobalAvgPool,
        "global-max-pool" => Op::GlobalMaxPool,
        "gemm" => Op::Gemm {
            alpha: a.f32("alpha")?,
            beta: a.f32("beta")?,
            trans_a: a.bool("trans-a")?,
            trans_b: a.bool("trans-b")?,
        },
        "matmul" => Op::MatMul,
        "lookup" => Op::Lookup,
        "resize" => Op::Resize(ResizeAttrs {
            mode: match a.choice("mode", &RESIZE_MODE_NAMES, |w| w)? {
                "nearest" => ResizeMode::Nearest,
                "linear" => ResizeMode::Linear,
                _ => ResizeMode::Cubic { a: a.f32("cubic-a")?, exclude_outside: a.bool("exclude-outside")? },
            },
            coord: match a.choice("coord", &COORD_NAMES, |w| w)? {
                "half-pixel" => CoordTransform::HalfPixel,
                "half-pixel-symmetric" => CoordTransform::HalfPixelSymmetric,
                "pytorch-half-pixel" => CoordTransform::PytorchHalfPixel,
                "align-corners" => CoordTransform::AlignCorners,
                "asymmetric" => CoordTransform::Asymmetric,
                "tf-half-pixel-for-nn" => CoordTransform::TfHalfPixelForNn,
                _ => CoordTransform::TfCropAndResize { roi: a.f32s("roi")?, extrapolation: a.f32("extrapolation")? },
            },
            nearest: a.choice("nearest", &NEAREST_MODES, nearest_name)?,
            scales: a.f32s("scales")?,
            out_shape: a.usizes("out-shape")?,
        }),
        "concat" => Op::Concat { axis: a.usize("axis")? },
        "split" => Op::Split { axis: a.usize("axis")?, sizes: a.usizes("sizes")? },
        "reshape" => Op::Reshape { shape: a.usizes("shape")? },
        "transpose" => Op::Transpose { perm: a.usizes("perm")? },
        "slice" => Op::Slice { axes: a.slice_axes("axes")? },
        "gather" => Op::Gather { axis: a.usize("axis")? },
        "expand" => Op::Expand { shape: a.usizes("shape")? },
        "cast" => Op::Cast { to: a.choice("to", &DType::ALL, DType::name)? },
        "quantize" => {
            let to = a.choice("to", &DType::ALL, DType::name)?;
            Op::Quantize { params: a.quant("")?, to }
        }
        "dequantize" => Op::Dequantize(a.quant("")?),
        "softmax" => Op::Softmax { axis: a.usize("axis")?, flatten: a.bool("flatten")? },
        "pad" => Op::Pad {
            pads: a.i64s("pads")?,
            mode: a.choice("mode", &PAD_MODES, pad_mode_name)?,
            value: a.f32("value")?,
        },
        "arg-max" | "arg-min" => Op::ArgReduce {
            max: name == "arg-max",
            axis: a.usize("axis")?,
            keepdims: a.bool("keepdims")?,
            select_last_index: a.bool("select-last-index")?,
        },
        _ => {
            if let Some(&kind) = ReduceKind::ALL.iter().find(|k| k.name() == name) {
                Op::Reduce { kind, axes: a.usizes("axes")?, keepdims: a.bool("keepdims")? }
            } else if let Some(&b) = BINARY.iter().find(|b| b.name() == name) {
                Op::Binary(b)
            } else {
                return Err(format!("unknown op `{name}`"));
            }
        }
    };
    Ok(op)
}

/// Non-blank lines of the text, lexed.
struct Statements<'a> {
    lines: std::iter::Enumerate<std::str::Lines<'a>>,
    /// Number of the last line read, for errors at the end of the text.
    last_line: usize,
}

impl Statements<'_> {
    fn next(&mut self) -> PResult<Option<(usize, Vec<Tok>)>> {
        for (i, text) in self.lines.by_ref() {
            let line = i + 1;
            self.last_line = line;
            let toks = lex(text, line)?;
            if !toks.is_empty() {
                return Ok(Some((line, toks)));
            }
        }
        Ok(None)
    }
}

#[derive(Default)]
struct Parser {
    graph: Graph,
    /// Node defining each name, and the line defining it.
    values: HashMap<String, (NodeId, usize)>,
}

impl Parser {
    fn parse(mut self, text: &str) -> PResult<Graph> {
        let mut stmts = Statements { lines: text.lines().enumerate(), last_line: 1 };
        let Some((line, toks)) = stmts.next()? else {
            return Err(ParseError {
                line: stmts.last_line,
                message: "empty text: expected `graph \"name\" {`".into(),
            });
        };
        let mut c = Cursor { toks: &toks, pos: 0, line };
        c.keyword("graph")?;
        self.graph.name = c.string("the graph name")?;
        c.expect('{', "after the graph name")?;
        c.finish()?;
        loop {
            let Some((line, toks)) = stmts.next()? else {
                return Err(ParseError {
                    line: stmts.last_line,
                    message: "unexpected end of text: missing `}` closing the graph".into(),
                });
            };
            let mut c = Cursor { toks: &toks, pos: 0, line };
            if c.eat('}') {
                c.finish()?;
                break;
            }
            match c.peek() {
                Some(Tok::Punct('%')) => self.node(&mut c)?,
                Some(Tok::Word(w)) if w == "output" => self.output(&mut c)?,
                _ => {
                    return Err(
                        c.err(format!("expected `%name = …`, `output \"name\" = …` or `}}`, found {}", c.found()))
                    );
                }
            }
        }
        if let Some((line, toks)) = stmts.next()? {
            let c = Cursor { toks: &toks, pos: 0, line };
            return Err(c.err(format!("unexpected {} after the closing `}}` of the graph", c.found())));
        }
        Ok(self.graph)
    }

    /// `%name = …`
    fn node(&mut self, c: &mut Cursor<'_>) -> PResult<()> {
        c.expect('%', "before the value name")?;
        let name = c.name()?;
        if let Some(&(_, line)) = self.values.get(&name) {
            return Err(c.err(format!("`%{}` is already defined on line {line}", Name(&name))));
        }
        c.expect('=', "after the value name")?;
        let op_name = c.word("an op name")?;
        let id = match op_name {
            "input" => {
                let ty = c.tensor_type()?;
                c.finish()?;
                self.graph.add_input(name.clone(), ty).node
            }
            "weight" => {
                let ty = c.tensor_type()?;
                let data = c.weight_data(ty.dtype)?;
                c.finish()?;
                let tensor =
                    Tensor::new(ty.shape, data).map_err(|e| c.err(format!("weight `%{}`: {e}", Name(&name))))?;
                self.graph.add_weight(name.clone(), tensor).node
            }
            _ => {
                let attrs = if c.at('{') { c.attrs()? } else { Vec::new() };
                let op = build_op(op_name, attrs).map_err(|m| c.err(m))?;
                c.expect('(', &format!("before the inputs of `{op_name}`"))?;
                let mut inputs = Vec::new();
                if !c.eat(')') {
                    loop {
                        inputs.push(self.value_ref(c)?);
                        if c.eat(')') {
                            break;
                        }
                        c.expect(',', "between inputs")?;
                    }
                }
                let mut outputs = Vec::new();
                if c.eat(':') {
                    loop {
                        outputs.push(c.tensor_type()?);
                        if !c.eat(',') {
                            break;
                        }
                    }
                }
                c.finish()?;
                self.graph.add_node_typed(name.clone(), op, &inputs, outputs)
            }
        };
        self.values.insert(name, (id, c.line));
        Ok(())
    }

    /// `output "name" = %value`
    fn output(&mut self, c: &mut Cursor<'_>) -> PResult<()> {
        c.keyword("output")?;
        let name = c.string("the output name")?;
        c.expect('=', "after the output name")?;
        let value = self.value_ref(c)?;
        c.finish()?;
        self.graph.add_output(name, value);
        Ok(())
    }

    /// `%name` or `%name:slot`, defined on an earlier line.
    fn value_ref(&self, c: &mut Cursor<'_>) -> PResult<ValueRef> {
        c.expect('%', "before a value reference")?;
        let name = c.name()?;
        let slot = if c.eat(':') { c.usize("an output slot")? } else { 0 };
        let Some(&(node, _)) = self.values.get(&name) else {
            return Err(c.err(format!("undefined value `%{}`", Name(&name))));
        };
        let n = self.graph.node(node).outputs.len();
        if slot >= n {
            return Err(c.err(format!("`%{}` has {n} output(s), so slot {slot} does not exist", Name(&name))));
        }
        Ok(ValueRef::new(node, slot))
    }
}
