//! Element-wise chains between quantized tensors as table lookups: whatever a QDQ model
//! computes in f32 between a DequantizeLinear and the next QuantizeLinear, element by element,
//! is a function of the 8-bit values it started from, so it is a table of 256 entries (one
//! 8-bit operand) or 65,536 (two), computed once at compile time.
//!
//! What: `quantize{y}(e)` where `e` is built from `dequantize` (per tensor) of u8/i8 values,
//! unary ops, arithmetic binary ops (add, sub, mul, div, max, min, pow, prelu) whose other
//! operand is a constant with one value, and inner `quantize`/`dequantize` pairs, all of one
//! shape, with at most two distinct 8-bit operands ⇒ `lookup(table, a[, b])`. An onnxruntime
//! QDQ model spells HardSwish `q(dq(c) · dq(q(hard-sigmoid(dq(c)))))` (one operand, `c`) and a
//! ResNet residual `q(relu(dq(a) + dq(b)))` (two).
//!
//! When: the chain reaches its operands within [`MAX_DEPTH`] ops (and [`MAX_VISITS`] visits).
//! Inner `quantize` ops are looked through where that keeps the operands at two or fewer
//! (`dq(q(f(dq(c))))` is a function of `c`); otherwise the quantized value is itself an operand,
//! and if the greedy look-through fails, the walk is retried taking every 8-bit value as one. It does not fire on
//! per-channel quantization, broadcasting operands, constants with more than one value, a
//! chain that is only `q(dq(x))` with the same parameters (`qdq-identity`'s case), or more than
//! two operands.
//!
//! Numerical effect: none, except one float reordering. Each entry is the chain evaluated on
//! that operand value with the reference interpreter's own scalar arithmetic
//! (`UnaryOp::eval_f32`, `BinaryOp::eval_f32`, `QuantParams::quantize_one`/`dequantize_one`),
//! so the lookup equals the reference's result of the chain bit for bit. The exception is a
//! quantized sum of two dequantized values, `q(dq(a) + dq(b))` (either may be a dequantized
//! 8-bit constant): it is computed as onnxruntime's QLinearAdd does, the sum reassociated as
//! `a·(sa/sc) + b·(sb/sc) + offset` and rounded once (`QuantParams::add_quantized`), which is
//! what onnxruntime runs for that pattern of a QDQ model. The two forms differ by one step on
//! near-ties (on ppocr_v4_det's QDQ model, computing them as written left 0.126 % of its output
//! integers more than one step from onnxruntime's; this way, 2 of 10.6 million differ at all).
//!
//! ```text
//! before: %d = dequantize{scales=[0.1], zero-points=[0]}(%c) : f32[1,16,56,56]
//!         %h = hard-sigmoid{alpha=0.1667, beta=0.5}(%d)
//!         %hq = quantize{to=u8, scales=[0.0039], zero-points=[0]}(%h)
//!         %m = mul(%d, dequantize{scales=[0.0039], zero-points=[0]}(%hq))
//!         %y = quantize{to=u8, scales=[0.05], zero-points=[0]}(%m) : u8[1,16,56,56]
//! after:  %y = lookup(%table, %c) : u8[1,16,56,56]       (%table: u8[256], a weight)
//! ```

use cnnc_ir::{BinaryOp, DType, Op, QuantParams, Tensor, TensorData, UnaryOp};
use egg::{Applier, EGraph, Id, Pattern, PatternAst, Rewrite, Subst, Symbol};

use super::var;
use crate::analysis::{CnnAnalysis, add_weight, attr_of, weight_of};
use crate::lang::Cnn;

/// The longest chain of ops (quantize and dequantize included) followed from the root: deep
/// enough for PP-LCNet's blocks (conv → scale → shift → HardSwish as add/clip/mul/div → scale →
/// shift, a Q/DQ pair after each op, about 30 deep).
pub const MAX_DEPTH: usize = 48;

/// The most e-class visits one walk makes: a value used twice in a chain (HardSwish's `x`) is
/// walked twice, so a walk is a tree over the chain's DAG; this bounds it.
pub const MAX_VISITS: usize = 4096;

/// The rules of this family.
pub fn rules() -> Vec<Rewrite<Cnn, CnnAnalysis>> {
    let pattern: Pattern<Cnn> = "(quantize ?q ?e)".parse().expect("a valid pattern");
    vec![Rewrite::new("qdq-lookup", pattern, Lookup).expect("a valid rule")]
}

/// An f32 value of the chain.
#[derive(Clone, Debug)]
enum Float {
    Dequantize(QuantParams, Box<Int>),
    Const(f32),
    Unary(UnaryOp, Box<Float>),
    Binary(BinaryOp, Box<Float>, Box<Float>),
}

/// An 8-bit value of the chain.
#[derive(Clone, Debug)]
enum Int {
    /// Operand `n` of the lookup.
    Operand(usize),
    /// A constant with one value (the 8-bit initializer of a dequantized constant).
    Const(i64),
    Quantize(QuantParams, DType, Box<Float>),
}

impl Float {
    fn eval(&self, operands: &[i64; 2]) -> f32 {
        match self {
            Float::Dequantize(p, q) => p.dequantize_one(0, q.eval(operands)),
            Float::Const(v) => *v,
            Float::Unary(u, x) => u.eval_f32(x.eval(operands)),
            // Only arithmetic ops are built, so `eval_f32` is `Some`.
            Float::Binary(op, x, y) => op.eval_f32(x.eval(operands), y.eval(operands)).unwrap_or(f32::NAN),
        }
    }
}

/// An 8-bit value of the chain and the parameters it is dequantized with.
type Dequantized<'a> = (&'a Int, &'a QuantParams);

impl Float {
    /// `dequantize(a) + dequantize(b)`: the operands with their parameters, and which one is a
    /// constant (broadcast over the other), if one is.
    fn dequantized_sum(&self) -> Option<(Dequantized<'_>, Dequantized<'_>, Option<usize>)> {
        let Float::Binary(BinaryOp::Add, x, y) = self else { return None };
        let (Float::Dequantize(pa, a), Float::Dequantize(pb, b)) = (&**x, &**y) else { return None };
        let scalar = [&**a, &**b].iter().position(|v| matches!(v, Int::Const(_)));
        Some(((a, pa), (b, pb), scalar))
    }
}

impl Int {
    fn eval(&self, operands: &[i64; 2]) -> i64 {
        match self {
            Int::Operand(n) => operands[*n],
            Int::Const(v) => *v,
            // The sum of two dequantized values, quantized: onnxruntime's QLinearAdd arithmetic
            // (a float reordering; see `QuantParams::add_quantized`).
            Int::Quantize(p, to, x) if let Some((a, b, scalar)) = x.dequantized_sum() => {
                p.add_quantized((a.0.eval(operands), a.1), (b.0.eval(operands), b.1), scalar, *to).unwrap_or(0)
            }
            // Only u8/i8 targets are built, so `quantize_one` is `Some`.
            Int::Quantize(p, to, x) => p.quantize_one(0, x.eval(operands), *to).unwrap_or(0),
        }
    }
}

/// Follows a chain down from its root.
struct Walk<'a> {
    egraph: &'a EGraph<Cnn, CnnAnalysis>,
    shape: Vec<usize>,
    /// The 8-bit operands found so far: class and dtype.
    operands: Vec<(Id, DType)>,
    /// Class visits left ([`MAX_VISITS`]).
    visits: usize,
    /// Look through inner quantize ops (the first try); without, every 8-bit value is an operand.
    expand: bool,
}

impl Walk<'_> {
    /// The class's value when it is an f32 tensor of the chain's shape.
    fn float(&mut self, class: Id, depth: usize) -> Option<Float> {
        let egraph = self.egraph;
        // A constant broadcasts (any shape whose values are all equal); every other value of
        // the chain has its full shape, so each op's output does too.
        if let Some((p, q)) = dequantized_scalar(egraph, class) {
            return Some(Float::Dequantize(p, Box::new(Int::Const(q))));
        }
        if let Some(v) = scalar(egraph, class) {
            return Some(Float::Const(v));
        }
        if depth == 0 || self.visits == 0 || !self.has_type(class, DType::F32) {
            return None;
        }
        self.visits -= 1;
        for node in &egraph[class].nodes {
            let mark = self.operands.len();
            let found = match node {
                Cnn::Dequantize(c) => self.dequantize(c, depth),
                Cnn::Unary(c) => match (attr_of(egraph, c[0]).map(|e| &e.op), c.get(1)) {
                    (Some(Op::Unary(u)), Some(&x)) => {
                        let u = *u;
                        self.float(x, depth - 1).map(|x| Float::Unary(u, Box::new(x)))
                    }
                    _ => None,
                },
                Cnn::Binary(c) => self.binary(c, depth),
                _ => None,
            };
            if found.is_some() {
                return found;
            }
            self.operands.truncate(mark);
        }
        None
    }

    fn dequantize(&mut self, c: &[Id], depth: usize) -> Option<Float> {
        let Some(Op::Dequantize(p)) = attr_of(self.egraph, c[0]).map(|e| &e.op) else { return None };
        let (p, &x) = (p.clone(), c.get(1)?);
        if p.axis.is_some() {
            return None;
        }
        let q = self.int(x, depth - 1)?;
        Some(Float::Dequantize(p, Box::new(q)))
    }

    fn binary(&mut self, c: &[Id], depth: usize) -> Option<Float> {
        let Some(Op::Binary(op)) = attr_of(self.egraph, c[0]).map(|e| &e.op) else { return None };
        let op = *op;
        if op.is_comparison() || c.len() != 3 {
            return None;
        }
        let x = self.float(c[1], depth - 1)?;
        let y = self.float(c[2], depth - 1)?;
        Some(Float::Binary(op, Box::new(x), Box::new(y)))
    }

    /// The class's value when it is an 8-bit tensor of the chain's shape: the quantization of a
    /// chain where that keeps the operands at two, else an operand itself.
    fn int(&mut self, class: Id, depth: usize) -> Option<Int> {
        let egraph = self.egraph;
        let dtype = egraph[class].data.types.first().map(|t| t.dtype)?;
        if !dtype.is_quantized() || self.visits == 0 || !self.has_type(class, dtype) {
            return None;
        }
        self.visits -= 1;
        let class = egraph.find(class);
        if self.expand && depth > 0 {
            for node in &egraph[class].nodes {
                let Cnn::Quantize(c) = node else { continue };
                let Some(Op::Quantize { params, to }) = attr_of(egraph, c[0]).map(|e| &e.op) else { continue };
                if params.axis.is_some() {
                    continue;
                }
                let (params, to, mark) = (params.clone(), *to, self.operands.len());
                if let Some(x) = c.get(1).and_then(|&x| self.float(x, depth - 1)) {
                    return Some(Int::Quantize(params, to, Box::new(x)));
                }
                self.operands.truncate(mark);
            }
        }
        if let Some(n) = self.operands.iter().position(|&(c, _)| c == class) {
            return Some(Int::Operand(n));
        }
        if self.operands.len() == 2 {
            return None;
        }
        self.operands.push((class, dtype));
        Some(Int::Operand(self.operands.len() - 1))
    }

    /// Whether the class holds one value of `dtype` and the chain's shape.
    fn has_type(&self, class: Id, dtype: DType) -> bool {
        match &self.egraph[class].data.types[..] {
            [t] => t.dtype == dtype && t.shape == self.shape,
            _ => false,
        }
    }
}

/// The single value of an f32 weight class whose values are all equal.
fn scalar(egraph: &EGraph<Cnn, CnnAnalysis>, class: Id) -> Option<f32> {
    let w = weight_of(egraph, class)?;
    let v = egraph.analysis.weights.get(w.0 as usize)?.as_f32()?;
    let first = *v.first()?;
    v.iter().all(|x| x.to_bits() == first.to_bits()).then_some(first)
}

/// `(params, q)` when the class is the per-tensor dequantization of an 8-bit constant whose
/// values all equal `q` (an onnxruntime QDQ model quantizes a constant operand of an add).
fn dequantized_scalar(egraph: &EGraph<Cnn, CnnAnalysis>, class: Id) -> Option<(QuantParams, i64)> {
    egraph[class].nodes.iter().find_map(|node| {
        let Cnn::Dequantize(c) = node else { return None };
        let Some(Op::Dequantize(p)) = attr_of(egraph, c[0]).map(|e| &e.op) else { return None };
        let w = weight_of(egraph, *c.get(1)?)?;
        let values: Vec<i64> = match egraph.analysis.weights.get(w.0 as usize)?.data() {
            TensorData::U8(v) => v.iter().map(|&x| i64::from(x)).collect(),
            TensorData::I8(v) => v.iter().map(|&x| i64::from(x)).collect(),
            _ => return None,
        };
        let q = *values.first()?;
        (p.axis.is_none() && values.iter().all(|&v| v == q)).then(|| (p.clone(), q))
    })
}

/// The value of the 8-bit pattern `byte` as an operand of `dtype`.
fn operand_value(dtype: DType, byte: usize) -> i64 {
    match dtype {
        DType::I8 => i64::from(byte as u8 as i8),
        _ => byte as i64,
    }
}

/// The table of `root` quantized to `to` over every value of `operands`.
fn table(root: &Int, operands: &[(Id, DType)]) -> Vec<i64> {
    let n = 256usize.pow(operands.len() as u32);
    (0..n)
        .map(|i| {
            let mut v = [0i64; 2];
            for (k, &(_, dtype)) in operands.iter().enumerate() {
                let shift = 8 * (operands.len() - 1 - k);
                v[k] = operand_value(dtype, (i >> shift) & 0xff);
            }
            root.eval(&v)
        })
        .collect()
}

struct Lookup;

impl Applier<Cnn, CnnAnalysis> for Lookup {
    fn apply_one(
        &self,
        egraph: &mut EGraph<Cnn, CnnAnalysis>,
        eclass: Id,
        subst: &Subst,
        _searcher_ast: Option<&PatternAst<Cnn>>,
        _rule_name: Symbol,
    ) -> Vec<Id> {
        let key = format!("qdq-lookup {}", egraph.find(eclass));
        if let Some(&(node, _)) = egraph.analysis.derived.get(&key) {
            return if egraph.union(eclass, node) { vec![eclass] } else { Vec::new() };
        }
        let Some(Op::Quantize { params, to }) = attr_of(egraph, subst[var("?q")]).map(|e| &e.op) else {
            return Vec::new();
        };
        let Some(out) = egraph[eclass].data.types.first().cloned() else { return Vec::new() };
        if params.axis.is_some() || !to.is_quantized() {
            return Vec::new();
        }
        let (params, to) = (params.clone(), *to);
        // Looking through inner quantizes greedily can spend both operands on one branch (e.g.
        // `q(dq(q(dq a + dq b)) + dq c)`); then every 8-bit value is taken as an operand instead.
        let found = [true, false].into_iter().find_map(|expand| {
            let mut walk = Walk { egraph, shape: out.shape.clone(), operands: Vec::new(), visits: MAX_VISITS, expand };
            walk.float(subst[var("?e")], MAX_DEPTH).map(|inner| (inner, walk.operands))
        });
        let Some((inner, operands)) = found else { return Vec::new() };
        // `q(dq(x))` with the same parameters is `x` (qdq-identity); nothing to tabulate.
        if let Float::Dequantize(p, x) = &inner
            && matches!(**x, Int::Operand(_))
            && *p == params
            && operands.first().map(|o| o.1) == Some(to)
        {
            return Vec::new();
        }
        let root = Int::Quantize(params, to, Box::new(inner));
        let values = table(&root, &operands);
        let data = match to {
            DType::U8 => TensorData::U8(values.iter().map(|&v| v as u8).collect()),
            _ => TensorData::I8(values.iter().map(|&v| v as i8).collect()),
        };
        let Ok(tensor) = Tensor::new(vec![values.len()], data) else { return Vec::new() };
        let name = attr_of(egraph, subst[var("?q")]).map(|e| e.name.clone()).unwrap_or_default();
        let table_class = add_weight(egraph, tensor, format!("{name}/table"));
        let attr = egraph.analysis.attrs.intern(&Op::Lookup, &[out], &name);
        let mut children = vec![egraph.add(Cnn::Attr(attr)), table_class];
        children.extend(operands.iter().map(|&(c, _)| c));
        let node = egraph.add(Cnn::Lookup(children.into_boxed_slice()));
        egraph.analysis.derived.insert(key, (node, table_class));
        if egraph.union(eclass, node) { vec![eclass] } else { Vec::new() }
    }
}
