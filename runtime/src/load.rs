//! Loading a `.cnnc` artifact: decode (bounded, hostile-input safe), re-verify, compile.

use cnnc_ir::VerifyErrors;
use cnnc_ir::artifact::{self, ArtifactError};

use crate::codegen::CompileError;
use crate::model::Model;

/// Why an artifact could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Artifact(#[from] ArtifactError),
    #[error("the artifact's graph is invalid (corrupt, or written by a buggy cnnc): {0}")]
    Verify(#[from] VerifyErrors),
    #[error("compiling the artifact for this CPU: {0}")]
    Compile(#[from] CompileError),
}

impl Model {
    /// Loads an artifact written by `cnnc opt`: decodes it, verifies the graph again (a loaded
    /// graph is never trusted) and compiles it for the host CPU. Never panics on any bytes.
    pub fn load(bytes: &[u8]) -> Result<Model, LoadError> {
        let (graph, _meta) = artifact::decode(bytes)?;
        let graph = cnnc_ir::verify(graph)?;
        Ok(Model::compile(&graph)?)
    }
}
