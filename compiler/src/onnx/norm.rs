//! `BatchNormalization` (inference mode; `consumed_inputs` of opset 1 is a memory hint, ignored).

use cnnc_ir::Op;

use super::context::{LowerCx, Lowered, OnnxNode};
use super::error::ImportError;

pub(super) fn lower_batch_norm(cx: &mut LowerCx, node: &OnnxNode) -> Result<Lowered, ImportError> {
    if node.flag("training_mode", false)? {
        return Err(node.bad_attr("training_mode", "training mode is not supported; export the model for inference"));
    }
    // Before opset 7 the mode is `is_test`, training (batch statistics) by default.
    if node.opset < 7 && !node.flag("is_test", false)? {
        return Err(
            node.bad_attr("is_test", "training mode (is_test = 0) is not supported; export the model for inference")
        );
    }
    if node.opset < 9 && !node.flag("spatial", true)? {
        return Err(node.bad_attr("spatial", "only spatial = 1 (per-channel statistics) is supported"));
    }
    let epsilon = node.float_or("epsilon", 1e-5)?;
    if !(epsilon.is_finite() && epsilon >= 0.0) {
        return Err(node.bad_attr("epsilon", format!("must be a non-negative number, got {epsilon}")));
    }
    let inputs = (0..5).map(|i| cx.input(node, i)).collect::<Result<Vec<_>, _>>()?;
    // Outputs 1.. (running and saved statistics) exist only in training mode; consumers of
    // them get a clear error when they read them.
    Ok(vec![cx.add1(node, Op::BatchNorm { epsilon }, &inputs)?])
}
