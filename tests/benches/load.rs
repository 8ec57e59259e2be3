//! Load time of a compiled model: median over N loads of an opennsfw artifact (made on the fly
//! from `shared/models/opennsfw.onnx` at 1×224×224×3), split into decode, re-verification and JIT
//! compilation, plus `Model::load` end to end.
//!
//! `cargo bench -p cnnc-tests --bench load` (N = 20; set `CNNC_BENCH_N`). Prints `SKIPPED` without
//! the shared models, and a clear error (exit status 1) while some opennsfw op has no kernel.

use std::time::{Duration, Instant};

use cnnc::onnx::{ImportOptions, import_file};
use cnnc_ir::artifact::{self, ArtifactMeta};
use cnnc_runtime::Model;
use cnnc_tests::shared_dir;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn main() -> std::process::ExitCode {
    let Some(shared) = shared_dir() else { return std::process::ExitCode::SUCCESS };
    let n: usize = std::env::var("CNNC_BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(20).max(1);
    let path = shared.join("models/opennsfw.onnx");
    let opts = ImportOptions { input_shapes: vec![("input:0".into(), vec![1, 224, 224, 3])], ..Default::default() };
    let graph = import_file(&path, &opts).unwrap_or_else(|e| panic!("importing {}: {e}", path.display()));
    let bytes = artifact::encode(&graph, &ArtifactMeta::default()).unwrap_or_else(|e| panic!("encoding: {e}"));
    println!("opennsfw artifact: {} bytes, {} nodes, {n} loads", bytes.len(), graph.node_count());

    let (mut decode, mut verify, mut compile, mut total) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        let t = Instant::now();
        let (g, _) = artifact::decode(&bytes).expect("the artifact was just encoded");
        decode.push(t.elapsed());
        let t = Instant::now();
        let g = cnnc_ir::verify(g).expect("the artifact's graph verified before encoding");
        verify.push(t.elapsed());
        let t = Instant::now();
        if let Err(e) = Model::compile(&g) {
            println!("decode  median {}", ms(median(decode)));
            println!("verify  median {}", ms(median(verify)));
            eprintln!("error: JIT compilation of opennsfw failed, so load time cannot be measured yet: {e}");
            return std::process::ExitCode::FAILURE;
        }
        compile.push(t.elapsed());
        let t = Instant::now();
        let model = Model::load(&bytes).expect("compiled above");
        total.push(t.elapsed());
        drop(model);
    }
    println!("decode  median {}", ms(median(decode)));
    println!("verify  median {}", ms(median(verify)));
    println!("compile median {}", ms(median(compile)));
    println!("Model::load (decode + verify + compile) median {}", ms(median(total)));
    std::process::ExitCode::SUCCESS
}
