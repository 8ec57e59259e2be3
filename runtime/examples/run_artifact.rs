//! Load a compiled `.cnnc` artifact and run it: the runtime's whole public API in a page.
//!
//! ```sh
//! cargo run -p cnnc -- opt fixtures/models/mnist_cnn.onnx -O0 --input-shape input=1x1x28x28 -o mnist.cnnc
//! cargo run -p cnnc-runtime --example run_artifact -- mnist.cnnc
//! ```
//! (`fixtures/artifacts/mnist_cnn_b1.cnnc` is such an artifact, checked in.)

use cnnc_ir::{DType, Tensor};
use cnnc_runtime::Model;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).unwrap_or_else(|| "fixtures/artifacts/mnist_cnn_b1.cnnc".to_owned());
    let bytes = std::fs::read(&path)?;
    // Decodes the untrusted bytes, re-verifies the graph and JIT-compiles it for this CPU.
    let model = Model::load(&bytes)?;

    // One input tensor per graph input, of exactly the declared type (here: a ramp).
    let inputs: Vec<Tensor> = model
        .inputs()
        .iter()
        .map(|(name, ty)| {
            println!("input  {name}: {ty}");
            assert_eq!(ty.dtype, DType::F32, "this example feeds f32 inputs");
            let n = ty.numel();
            Tensor::from_f32(ty.shape.clone(), (0..n).map(|i| (i % 17) as f32 / 17.0).collect())
        })
        .collect::<Result<_, _>>()?;

    // `run` takes `&self`: a `Model` can serve many threads at once.
    let outputs = model.run(&inputs)?;
    for ((name, _), t) in model.outputs().iter().zip(&outputs) {
        let head: Vec<f32> = t.as_f32().map(|v| v.iter().take(5).copied().collect()).unwrap_or_default();
        println!("output {name}: {} first values {head:?}", t.ty());
    }
    println!("activation arena: {} bytes", model.arena_bytes());
    Ok(())
}
