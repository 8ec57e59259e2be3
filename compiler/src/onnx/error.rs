//! The importer's error type: everything a user needs to fix a model or a flag.

use std::fmt;
use std::path::PathBuf;

use cnnc_ir::VerifyErrors;

/// An op the importer cannot lower, as found in the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsupportedOp {
    pub node: String,
    pub op_type: String,
    /// `ai.onnx` for the default domain.
    pub domain: String,
    /// The opset the model imports for `domain` (0 when it imports none).
    pub opset: i64,
    /// The first and last opsets at which cnnc implements the op, when it implements the op at
    /// other opsets than the model's.
    pub implemented: Option<(i64, i64)>,
}

impl fmt::Display for UnsupportedOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` ({}:{}, opset {})", self.node, self.domain, self.op_type, self.opset)?;
        if let Some((first, last)) = self.implemented {
            write!(f, ": cnnc implements {} at opsets {first} to {last}", self.op_type)?;
        }
        Ok(())
    }
}

fn list_ops(ops: &[UnsupportedOp]) -> String {
    ops.iter().map(|o| format!("\n  node {o}")).collect()
}

/// Why an ONNX model could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read `{}`: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{file}`: cannot parse as an ONNX model: {reason}")]
    Decode { file: String, reason: String },
    #[error("`{file}`: the graph has no outputs")]
    EmptyGraph { file: String },
    #[error("`{file}`: {} unsupported op(s):{}", ops.len(), list_ops(ops))]
    UnsupportedOps { file: String, ops: Vec<UnsupportedOp> },
    #[error(
        "`{file}`: unsupported opset {version} of domain `{domain}` (cnnc supports ai.onnx opsets 1 to {})",
        super::MAX_OPSET
    )]
    UnsupportedOpset { file: String, domain: String, version: i64 },
    #[error("node `{node}` ({op}): attribute `{attr}`: {reason}")]
    BadAttribute { node: String, op: String, attr: String, reason: String },
    #[error("node `{node}` ({op}): {reason}")]
    BadInput { node: String, op: String, reason: String },
    #[error("node `{node}` ({op}): shape error: {reason}")]
    Shape { node: String, op: String, reason: String },
    #[error(
        "input `{input}` has dynamic dimension {dim_index} (`{dim_name}`); bind it with --input-shape {input}={template} (a size for each `?`)"
    )]
    UnboundDim { input: String, dim_index: usize, dim_name: String, template: String },
    #[error("--input-shape `{arg}`: {reason}")]
    InputShapeFlag { arg: String, reason: String },
    #[error("input `{input}`: {reason}")]
    InputType { input: String, reason: String },
    #[error("tensor `{tensor}` is too large: {reason}")]
    TensorTooLarge { tensor: String, reason: String },
    #[error("tensor `{tensor}`: {reason}")]
    BadTensor { tensor: String, reason: String },
    #[error("node `{node}` reads value `{value}`, which no node, graph input or initializer defines")]
    UndefinedValue { node: String, value: String },
    #[error("graph output `{value}` is not defined by any node, graph input or initializer")]
    UndefinedOutput { value: String },
    #[error("value `{value}` is produced by more than one node (`{first}` and `{second}`)")]
    DuplicateValue { value: String, first: String, second: String },
    #[error("the graph has a cycle through node `{node}`")]
    Cycle { node: String },
    #[error(transparent)]
    Verify(#[from] VerifyErrors),
}
