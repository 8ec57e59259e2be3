//! Quantized conv, gemm and matmul ([`QLinear`]).

use cnnc_ir::QLinear;

use super::{CompileError, EmitCx, Emitted, Jit};

pub(crate) fn emit(_jit: &mut Jit, cx: &EmitCx, _q: &QLinear) -> Result<Emitted, CompileError> {
    Err(cx.unsupported("quantized ops"))
}
