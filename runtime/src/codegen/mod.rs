//! Native code generation with Cranelift: one shape-specialized kernel per node, compiled at
//! load time for the host CPU.
//!
//! Kernel ABI: every kernel is a [`jit::KernelFn`] taking a table of buffer pointers laid out
//! as `[inputs…, outputs…, aux…]` — the node's inputs in slot order (weights included), its
//! outputs, then the auxiliary buffers the emitter built at load time (packed weights, index
//! tables). Shapes, strides and scalar constants are baked into the code; kernels never
//! allocate. Output buffers never alias input buffers.
//!
//! Threads: a kernel's work is split into [`Emitted::units`] independent units (e.g. blocks of
//! output pixels or output-channel tiles), and a call computes the units `lo..hi`. Units never
//! split a reduction, and the arithmetic that produces an output element is the same whichever
//! call computes it, so results are bit-for-bit identical for any split and thread count.
//! [`Aux::Scratch`] memory is per calling thread.

pub(crate) mod builder;
pub(crate) mod jit;
pub(crate) mod math;

mod binary;
mod conv;
mod expf;
mod gemm;
mod index_map;
mod movement;
mod norm;
mod pool;
mod qconv;
mod qdepthwise;
mod qgemv;
mod qlinear;
mod qpool;
mod quant;
mod qwinograd;
mod reduce;
mod resize;
mod unary;

#[cfg(test)]
mod epilogue_tests;
#[cfg(test)]
mod qlinear_tests;
#[cfg(test)]
mod unary_tests;

use cnnc_ir::{DType, Op, Tensor, TensorType, UnaryOp};
use cranelift_module::FuncId;

use crate::microkernel;
pub(crate) use jit::{Code, Jit, Kb, KernelFn};

/// Why a graph could not be compiled to native code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error("node `{node}` ({op}): no native kernel for {what}")]
    Unsupported { node: String, op: String, what: String },
    #[error("code generation: {0}")]
    Backend(String),
    /// The graph asks for more activation memory than the budget allows (`crate::budget`).
    #[error(transparent)]
    Budget(#[from] crate::budget::BudgetError),
}

/// The f32 microkernels `CNNC_KERNELS` chooses ([`microkernel::Choice::from_env`], read at
/// each compile): `None` for the Cranelift kernels. Forcing a tile this CPU lacks
/// (`CNNC_KERNELS=avx512` without AVX-512F) is an error, never a silent fallback, as for the
/// int8 tiers (`qlinear::int8_kernels`).
pub(crate) fn f32_kernels() -> Result<Option<microkernel::Microkernels>, CompileError> {
    let choice = microkernel::Choice::from_env();
    match (choice, microkernel::select(choice)) {
        (microkernel::Choice::Tile(t), None) => Err(CompileError::Backend(format!(
            "CNNC_KERNELS={}: this CPU lacks the {t:?} f32 tile's features ({})",
            t.env_name(),
            t.features()
        ))),
        (_, mk) => Ok(mk),
    }
}

/// What an emitter knows about the node it compiles.
pub(crate) struct EmitCx<'a> {
    /// Node name, for errors and symbol names.
    pub name: &'a str,
    pub op: &'a Op,
    pub inputs: &'a [TensorType],
    pub outputs: &'a [TensorType],
    /// The constant value of each input that is a weight (for packing at load time).
    pub consts: &'a [Option<&'a Tensor>],
}

impl EmitCx<'_> {
    pub(crate) fn unsupported(&self, what: impl Into<String>) -> CompileError {
        CompileError::Unsupported { node: self.name.to_owned(), op: self.op.name().to_owned(), what: what.into() }
    }

    /// Index of input `i` in the kernel's argument table.
    pub(crate) fn in_arg(&self, i: usize) -> usize {
        i
    }

    /// Index of output `i` in the kernel's argument table.
    pub(crate) fn out_arg(&self, i: usize) -> usize {
        self.inputs.len() + i
    }

    /// Index of aux buffer `i` in the kernel's argument table.
    pub(crate) fn aux_arg(&self, i: usize) -> usize {
        self.inputs.len() + self.outputs.len() + i
    }
}

/// Work fused into a conv or GEMM kernel after its accumulation, in registers before the
/// store: `y = act(acc + bias + residual)`.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Epilogue {
    /// One of `Fused::ACTIVATIONS`.
    pub act: Option<UnaryOp>,
    /// Index in the kernel's argument table of a tensor of the output's type added before the
    /// activation. It follows the op's own inputs, so it is also the op's input count.
    pub residual: Option<usize>,
}

impl Epilogue {
    /// How many of `cx.inputs` belong to the op itself (the residual, if any, comes after).
    pub(crate) fn op_inputs(&self, cx: &EmitCx) -> usize {
        self.residual.unwrap_or(cx.inputs.len())
    }

    /// Checks that the kernel can apply this epilogue: a supported activation, and a residual
    /// that is the last input and has the output's type.
    pub(crate) fn check(&self, cx: &EmitCx) -> Result<(), CompileError> {
        if let Some(op) = self.act.filter(|op| !cnnc_ir::Fused::fusible_act(op)) {
            return Err(cx.unsupported(format!("a fused {} epilogue", op.name())));
        }
        if let Some(r) = self.residual
            && (r + 1 != cx.inputs.len() || cx.outputs.len() != 1 || cx.inputs[r] != cx.outputs[0])
        {
            return Err(
                cx.unsupported(format!("a fused residual (input {r}) that is not the last input of the output's type"))
            );
        }
        Ok(())
    }
}

/// A buffer built at load time and passed to a kernel (packed weights, index tables).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Aux {
    F32(Vec<f32>),
    I64(Vec<i64>),
    U32(Vec<u32>),
    /// Raw bytes (packed int8 weights).
    Bytes(Vec<u8>),
    /// Per-run scratch memory of this many bytes (64-byte aligned), e.g. packed input panels.
    /// Its contents are undefined on entry; concurrent runs get distinct scratch.
    Scratch(usize),
}

impl Aux {
    /// Pointer to a load-time buffer; `None` for [`Aux::Scratch`], which the runtime places
    /// in the run's scratch memory.
    /// The bytes of a load-time buffer; `None` for [`Aux::Scratch`].
    pub(crate) fn bytes(&self) -> Option<&[u8]> {
        use crate::cache::as_bytes;
        match self {
            Aux::F32(v) => Some(as_bytes(v)),
            Aux::I64(v) => Some(as_bytes(v)),
            Aux::U32(v) => Some(as_bytes(v)),
            Aux::Bytes(v) => Some(v),
            Aux::Scratch(_) => None,
        }
    }

    pub(crate) fn ptr(&self) -> Option<*mut u8> {
        match self {
            Aux::F32(v) => Some(v.as_ptr() as *mut u8),
            Aux::I64(v) => Some(v.as_ptr() as *mut u8),
            Aux::U32(v) => Some(v.as_ptr() as *mut u8),
            Aux::Bytes(v) => Some(v.as_ptr() as *mut u8),
            Aux::Scratch(_) => None,
        }
    }
}

/// One compiled node: its function (finalized later) and its aux buffers.
pub(crate) struct Emitted {
    pub func: FuncId,
    pub aux: Vec<Aux>,
    /// Independent work units of the kernel (≥ 1); calls may compute disjoint unit ranges on
    /// different threads.
    pub units: u64,
}

impl Emitted {
    /// A kernel that runs as one unit (it ignores its `lo`/`hi` parameters).
    pub(crate) fn serial(func: FuncId, aux: Vec<Aux>) -> Emitted {
        Emitted { func, aux, units: 1 }
    }

    /// A kernel whose calls compute unit ranges `lo..hi` of `0..units`.
    pub(crate) fn parallel(func: FuncId, aux: Vec<Aux>, units: u64) -> Emitted {
        Emitted { func, aux, units: units.max(1) }
    }
}

/// Compiles one node, dispatching on its op. Sources (inputs, weights) and views (reshape,
/// slab splits) never get here: the memory plan handles them.
pub(crate) fn emit_node(jit: &mut Jit, cx: &EmitCx) -> Result<Emitted, CompileError> {
    match cx.op {
        Op::Conv(a) => conv::emit_conv(jit, cx, a, &Epilogue::default()),
        Op::Fused(f) => {
            let ep = Epilogue { act: f.act, residual: f.residual.then(|| f.base_inputs(cx.inputs.len())) };
            match &f.base {
                Op::Conv(a) => conv::emit_conv(jit, cx, a, &ep),
                Op::Gemm { alpha, beta, trans_a, trans_b } => {
                    gemm::emit_gemm_fused(jit, cx, *alpha, *beta, *trans_a, *trans_b, &ep)
                }
                Op::MatMul => gemm::emit_matmul_fused(jit, cx, &ep),
                other => Err(cx.unsupported(format!("a fused {}", other.name()))),
            }
        }
        Op::QLinear(q) => qlinear::emit(jit, cx, q),
        Op::ConvTranspose(a) => conv::emit_conv_transpose(jit, cx, a),
        Op::BatchNorm { epsilon } => norm::emit_batchnorm(jit, cx, *epsilon),
        Op::Unary(u) => unary::emit_unary(jit, cx, *u),
        Op::Binary(b) => binary::emit_binary(jit, cx, *b),
        Op::Where => binary::emit_where(jit, cx),
        Op::MaxPool(a) if matches!(cx.inputs[0].dtype, DType::U8 | DType::I8) => qpool::emit_max_pool(jit, cx, a),
        Op::MaxPool(a) => pool::emit_max_pool(jit, cx, a),
        Op::AvgPool { pool, count_include_pad } => pool::emit_avg_pool(jit, cx, pool, *count_include_pad),
        Op::GlobalAvgPool => pool::emit_global_pool(jit, cx, false),
        Op::GlobalMaxPool => pool::emit_global_pool(jit, cx, true),
        Op::Gemm { alpha, beta, trans_a, trans_b } => gemm::emit_gemm(jit, cx, *alpha, *beta, *trans_a, *trans_b),
        Op::MatMul => gemm::emit_matmul(jit, cx),
        Op::Resize(a) => resize::emit_resize(jit, cx, a),
        Op::Concat { axis } => movement::emit_concat(jit, cx, *axis),
        Op::Split { axis, sizes } => movement::emit_split(jit, cx, *axis, sizes),
        Op::Transpose { perm } => movement::emit_transpose(jit, cx, perm),
        Op::Slice { axes } => movement::emit_slice(jit, cx, axes),
        Op::Gather { axis } => movement::emit_gather(jit, cx, *axis),
        Op::Expand { .. } => movement::emit_expand(jit, cx),
        Op::Cast { to } => movement::emit_cast(jit, cx, *to),
        Op::Pad { pads, mode, value } => movement::emit_pad(jit, cx, pads, *mode, *value),
        Op::Softmax { axis, flatten } => reduce::emit_softmax(jit, cx, *axis, *flatten),
        Op::Reduce { kind, axes, keepdims } => reduce::emit_reduce(jit, cx, *kind, axes, *keepdims),
        Op::ArgReduce { max, axis, keepdims: _, select_last_index } => {
            reduce::emit_arg_reduce(jit, cx, *max, *axis, *select_last_index)
        }
        Op::Quantize { params, to } => quant::emit_quantize(jit, cx, params, *to),
        Op::Dequantize(params) => quant::emit_dequantize(jit, cx, params),
        Op::Lookup => quant::emit_lookup(jit, cx),
        Op::Input { .. } | Op::Weight(_) | Op::Reshape { .. } => {
            Err(cx.unsupported("a source or view op reached code generation (a bug in the memory plan)"))
        }
    }
}
