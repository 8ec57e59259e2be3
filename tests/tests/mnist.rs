//! MNIST through the reference interpreter: its predictions equal onnxruntime's image for
//! image, so its top-1 equals onnxruntime's 99.05%.
//!
//! The default run covers the first 1,000 test digits (a few seconds); the full set is
//! `CNNC_MNIST_N=10000 cargo test --release -p cnnc-tests --test mnist -- --nocapture`.

use cnnc_ir::Tensor;
use cnnc_tests::{fixtures_dir, import_with_inputs, model_path, shared_dir};

#[test]
fn reference_predictions_equal_onnxruntime_on_mnist() {
    let Some(shared) = shared_dir() else { return };
    let n: usize = std::env::var("CNNC_MNIST_N").ok().and_then(|v| v.parse().ok()).unwrap_or(1000).clamp(1, 10_000);
    let data = cnnc::npy::read_npz(&shared.join("data/mnist_test.npz")).expect("mnist_test.npz");
    let images = &data.iter().find(|(k, _)| k == "images").expect("images").1;
    let labels = data.iter().find(|(k, _)| k == "labels").expect("labels").1.data().to_i64_vec().expect("int labels");
    let pixels = images.data().to_i64_vec().expect("u8 images");
    let x: Vec<f32> = pixels[..n * 784].iter().map(|&p| ((p as f32) / 255.0 - 0.1307) / 0.3081).collect();
    let x = Tensor::from_f32(vec![n, 1, 28, 28], x).expect("shape");

    let golden: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures_dir().join("goldens/mnist_predictions.json")).expect("predictions"),
    )
    .expect("json");
    let ort: Vec<i64> =
        golden["predictions"].as_array().expect("predictions").iter().map(|v| v.as_i64().expect("int")).collect();

    let path = model_path("mnist_cnn").expect("bundled");
    let inputs = vec![("input".to_owned(), x)];
    let graph = import_with_inputs(&path, &inputs);
    let out = cnnc_runtime::run_reference(&graph, &[inputs[0].1.clone()]).expect("runs");
    let logits = out[0].as_f32().expect("f32 logits");
    assert_eq!(out[0].shape(), &[n, 10]);
    let pred: Vec<i64> = logits
        .chunks(10)
        .map(|row| (0..10).max_by(|&a, &b| row[a].total_cmp(&row[b])).expect("10 logits") as i64)
        .collect();
    let correct = pred.iter().zip(&labels).filter(|(p, l)| p == l).count();
    let ort_correct = ort[..n].iter().zip(&labels).filter(|(p, l)| p == l).count();
    let disagreements: Vec<usize> = (0..n).filter(|&i| pred[i] != ort[i]).collect();
    eprintln!(
        "MNIST first {n}: reference top-1 {:.4} ({correct}/{n}), onnxruntime {:.4}; {} disagreement(s)",
        correct as f64 / n as f64,
        ort_correct as f64 / n as f64,
        disagreements.len()
    );
    assert!(disagreements.is_empty(), "reference and onnxruntime disagree on images {disagreements:?}");
    assert_eq!(correct, ort_correct);
    if n == 10_000 {
        assert_eq!(golden["ort_top1"].as_f64(), Some(0.9905));
        assert_eq!(correct, 9905);
    }
}
