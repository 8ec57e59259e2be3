//! The e-graph language: one e-node variant per IR op family, with the op's attributes (and its
//! output types) as a typed leaf child in slot 0 — egg's `define_language!` cannot mix data and
//! children — followed by the operands in the IR's input order.
//!
//! ```text
//! (conv @3 (input %0) (weight w1) (weight w2))      ; @3 = Conv{kernel=[3,3],…} → f32[1,16,8,8]
//! (get #1 (split @7 ?x))                            ; output 1 of a multi-output node
//! (outputs ?y0 ?y1)                                 ; the graph's outputs, in order: the root
//! ```
//!
//! Leaves: `@n` ([`AttrRef`], an entry of [`AttrTable`]), `w<n>` ([`WeightRef`], a weight of
//! the store), `%n` ([`InputRef`], graph input n), `#n` ([`OutIndex`], an output slot).
//! Shapes and dtypes live in the attribute table and the e-class analysis, never in names.

use std::fmt;
use std::str::FromStr;

use cnnc_ir::{Op, TensorType};
use egg::{Id, define_language};

macro_rules! leaf {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub u32);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                s.strip_prefix($prefix)
                    .and_then(|n| n.parse().ok())
                    .map($name)
                    .ok_or_else(|| format!(concat!("expected ", $prefix, "<number>, got `{}`"), s))
            }
        }
    };
}

leaf!(
    /// An entry of the [`AttrTable`]: an op with its attributes and output types.
    AttrRef,
    "@"
);
leaf!(
    /// A tensor of the weight store (`cnnc_ir::WeightId`).
    WeightRef,
    "w"
);
leaf!(
    /// Graph input number n.
    InputRef,
    "%"
);
leaf!(
    /// Output slot n of a multi-output node.
    OutIndex,
    "#"
);

define_language! {
    /// A CNN graph as e-nodes. Op variants take `[attr, operands…]`.
    pub enum Cnn {
        "conv" = Conv(Box<[Id]>),
        "conv-transpose" = ConvTranspose(Box<[Id]>),
        "batchnorm" = BatchNorm(Box<[Id]>),
        "unary" = Unary(Box<[Id]>),
        "binary" = Binary(Box<[Id]>),
        "where" = Where(Box<[Id]>),
        "max-pool" = MaxPool(Box<[Id]>),
        "avg-pool" = AvgPool(Box<[Id]>),
        "global-avg-pool" = GlobalAvgPool(Box<[Id]>),
        "global-max-pool" = GlobalMaxPool(Box<[Id]>),
        "gemm" = Gemm(Box<[Id]>),
        "matmul" = MatMul(Box<[Id]>),
        "resize" = Resize(Box<[Id]>),
        "concat" = Concat(Box<[Id]>),
        "split" = Split(Box<[Id]>),
        "reshape" = Reshape(Box<[Id]>),
        "transpose" = Transpose(Box<[Id]>),
        "slice" = Slice(Box<[Id]>),
        "gather" = Gather(Box<[Id]>),
        "expand" = Expand(Box<[Id]>),
        "cast" = Cast(Box<[Id]>),
        "softmax" = Softmax(Box<[Id]>),
        "pad" = Pad(Box<[Id]>),
        "reduce" = Reduce(Box<[Id]>),
        "arg-reduce" = ArgReduce(Box<[Id]>),
        "fused" = Fused(Box<[Id]>),
        "quantize" = Quantize(Box<[Id]>),
        "dequantize" = Dequantize(Box<[Id]>),
        "qlinear" = QLinear(Box<[Id]>),
        "lookup" = Lookup(Box<[Id]>),
        // `(input %n)`: graph input n.
        "input" = Input(Id),
        // `(weight wn)`: a constant of the weight store.
        "weight" = Weight(Id),
        // `(get #i node)`: output slot i of a multi-output node.
        "get" = Get([Id; 2]),
        // The graph's outputs, in order (the root of a graph).
        "outputs" = Outputs(Box<[Id]>),
        Attr(AttrRef),
        WeightLeaf(WeightRef),
        InputLeaf(InputRef),
        Out(OutIndex),
    }
}

impl Cnn {
    /// The e-node of an op application with children `[attr, operands…]`; `None` for sources
    /// (inputs, weights), which have their own variants.
    pub fn op_node(op: &Op, children: Box<[Id]>) -> Option<Cnn> {
        Some(match op {
            Op::Conv(_) => Cnn::Conv(children),
            Op::ConvTranspose(_) => Cnn::ConvTranspose(children),
            Op::BatchNorm { .. } => Cnn::BatchNorm(children),
            Op::Unary(_) => Cnn::Unary(children),
            Op::Binary(_) => Cnn::Binary(children),
            Op::Where => Cnn::Where(children),
            Op::MaxPool(_) => Cnn::MaxPool(children),
            Op::AvgPool { .. } => Cnn::AvgPool(children),
            Op::GlobalAvgPool => Cnn::GlobalAvgPool(children),
            Op::GlobalMaxPool => Cnn::GlobalMaxPool(children),
            Op::Gemm { .. } => Cnn::Gemm(children),
            Op::MatMul => Cnn::MatMul(children),
            Op::Resize(_) => Cnn::Resize(children),
            Op::Concat { .. } => Cnn::Concat(children),
            Op::Split { .. } => Cnn::Split(children),
            Op::Reshape { .. } => Cnn::Reshape(children),
            Op::Transpose { .. } => Cnn::Transpose(children),
            Op::Slice { .. } => Cnn::Slice(children),
            Op::Gather { .. } => Cnn::Gather(children),
            Op::Expand { .. } => Cnn::Expand(children),
            Op::Cast { .. } => Cnn::Cast(children),
            Op::Softmax { .. } => Cnn::Softmax(children),
            Op::Pad { .. } => Cnn::Pad(children),
            Op::Reduce { .. } => Cnn::Reduce(children),
            Op::ArgReduce { .. } => Cnn::ArgReduce(children),
            Op::Fused(_) => Cnn::Fused(children),
            Op::Quantize { .. } => Cnn::Quantize(children),
            Op::Dequantize(_) => Cnn::Dequantize(children),
            Op::QLinear(_) => Cnn::QLinear(children),
            Op::Lookup => Cnn::Lookup(children),
            Op::Input { .. } | Op::Weight(_) => return None,
        })
    }

    /// `[attr, operands…]` of an op e-node; `None` for the other variants.
    pub fn op_children(&self) -> Option<&[Id]> {
        match self {
            Cnn::Conv(c)
            | Cnn::ConvTranspose(c)
            | Cnn::BatchNorm(c)
            | Cnn::Unary(c)
            | Cnn::Binary(c)
            | Cnn::Where(c)
            | Cnn::MaxPool(c)
            | Cnn::AvgPool(c)
            | Cnn::GlobalAvgPool(c)
            | Cnn::GlobalMaxPool(c)
            | Cnn::Gemm(c)
            | Cnn::MatMul(c)
            | Cnn::Resize(c)
            | Cnn::Concat(c)
            | Cnn::Split(c)
            | Cnn::Reshape(c)
            | Cnn::Transpose(c)
            | Cnn::Slice(c)
            | Cnn::Gather(c)
            | Cnn::Expand(c)
            | Cnn::Cast(c)
            | Cnn::Softmax(c)
            | Cnn::Pad(c)
            | Cnn::Reduce(c)
            | Cnn::ArgReduce(c)
            | Cnn::Fused(c)
            | Cnn::Quantize(c)
            | Cnn::Dequantize(c)
            | Cnn::QLinear(c)
            | Cnn::Lookup(c) => Some(c),
            _ => None,
        }
    }
}

/// An approximate proposal (`crate::approx`): its number in the proposal list of the run that
/// made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProposalId(pub u32);

/// One op application's data: the op with its attributes, its output types, and a name for
/// the node it becomes (the IR node it came from, or one a rule chose).
#[derive(Clone, Debug, PartialEq)]
pub struct AttrEntry {
    pub op: Op,
    pub outputs: Vec<TensorType>,
    pub name: String,
    /// The approximate proposal this op is a factor of; part of the interning key, so a
    /// proposal's e-node never hash-conses with an exact one.
    pub proposal: Option<ProposalId>,
}

/// The interned attribute entries an e-graph's `@n` leaves refer to. Structurally equal
/// entries (same op, attributes and output types) share one [`AttrRef`], so identical
/// subexpressions hash-cons into one e-class; the first name wins.
#[derive(Clone, Debug, Default)]
pub struct AttrTable {
    entries: Vec<AttrEntry>,
    index: std::collections::HashMap<String, AttrRef>,
}

impl AttrTable {
    /// The reference of `(op, outputs)`, interned.
    pub fn intern(&mut self, op: &Op, outputs: &[TensorType], name: &str) -> AttrRef {
        self.intern_tagged(op, outputs, name, None)
    }

    /// The reference of `(op, outputs)` as a factor of `proposal`, interned apart from every
    /// exact entry and every other proposal's.
    pub fn intern_proposal(&mut self, op: &Op, outputs: &[TensorType], name: &str, proposal: ProposalId) -> AttrRef {
        self.intern_tagged(op, outputs, name, Some(proposal))
    }

    /// The reference of an exact `(op, outputs)` if it is interned.
    pub fn lookup(&self, op: &Op, outputs: &[TensorType]) -> Option<AttrRef> {
        self.index.get(&Self::key(op, outputs, None)).copied()
    }

    fn key(op: &Op, outputs: &[TensorType], proposal: Option<ProposalId>) -> String {
        // `Op` holds f32 attributes (no `Eq`/`Hash`); its `Debug` text is exact (shortest
        // round-trip float formatting) and deterministic, so it serves as the key.
        match proposal {
            None => format!("{op:?}|{outputs:?}"),
            Some(p) => format!("{op:?}|{outputs:?}|proposal {}", p.0),
        }
    }

    /// The reference of `(op, outputs)` tagged as `proposal`'s when it is `Some`: what an exact
    /// rule rewriting a proposal's factor (fusing its activation, Winograd on it) interns, so
    /// the new form stays that proposal's.
    pub fn intern_tagged(
        &mut self,
        op: &Op,
        outputs: &[TensorType],
        name: &str,
        proposal: Option<ProposalId>,
    ) -> AttrRef {
        let key = Self::key(op, outputs, proposal);
        if let Some(&r) = self.index.get(&key) {
            return r;
        }
        let r = AttrRef(u32::try_from(self.entries.len()).expect("fewer than 2^32 distinct ops"));
        self.entries.push(AttrEntry { op: op.clone(), outputs: outputs.to_vec(), name: name.to_owned(), proposal });
        self.index.insert(key, r);
        r
    }

    pub fn get(&self, r: AttrRef) -> &AttrEntry {
        &self.entries[r.0 as usize]
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
