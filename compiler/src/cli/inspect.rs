//! `cnnc inspect`: a per-layer table or JSON summary of a model or artifact.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use cnnc::driver::{ArtifactInfo, load_model};
use cnnc::inspect::{render_table, summarize};
use cnnc::onnx::ImportOptions;
use cnnc::report::{ArtifactBlock, InspectJson};

use super::{ShapeArgs, model_name, say, say_json};

pub const AFTER_HELP: &str = "Examples:\n  cnnc inspect model.onnx\n  cnnc inspect model.cnnc\n  \
    cnnc inspect det.onnx --input-shape x=1x3x640x640 --json\n\n\
    The model is an ONNX file or a cnnc artifact (recognized by its content, not its extension).";

#[derive(Args)]
pub struct InspectArgs {
    /// The model (.onnx or .cnnc).
    model: PathBuf,
    #[command(flatten)]
    shapes: ShapeArgs,
    /// Print one JSON object (`total_macs`, `total_params`, `layers`, …) instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: InspectArgs) -> Result<()> {
    let options = ImportOptions { input_shapes: args.shapes.input_shape, ..ImportOptions::default() };
    let loaded = load_model(&args.model, &options)?;
    let summary = summarize(&loaded.graph, &model_name(&args.model));
    if args.json {
        return say_json(&InspectJson {
            artifact: loaded.artifact.as_ref().map(ArtifactBlock::new),
            summary: &summary,
        });
    }
    if let Some(info) = &loaded.artifact {
        say(artifact_line(info))?;
    }
    say(render_table(&summary).trim_end())
}

fn artifact_line(info: &ArtifactInfo) -> String {
    match &info.meta.provenance {
        Some(p) => format!(
            "artifact format {}, written by cnnc {} at -{}: cnnc {}",
            info.format_version,
            p.cnnc_version,
            p.opt_level,
            p.args.join(" ")
        ),
        None => format!("artifact format {} (no provenance recorded)", info.format_version),
    }
}
