//! The `cnnc opt` pipeline through the library (`cnnc::driver`), as the CLI calls it: what it
//! writes, and that a refusal names the flag and writes nothing.

use std::path::{Path, PathBuf};

use cnnc::driver::{self, DriverError, OptLevel, OptOptions};
use cnnc::onnx::ImportOptions;

fn mnist() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/models/mnist_cnn.onnx")
}

/// A fresh, empty folder for one test.
fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cnnc-driver-{tag}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// `cnnc opt mnist_cnn.onnx -O<level> --input-shape input=1x1x28x28 -o dir/m.cnnc`.
fn options(dir: &Path, level: OptLevel) -> OptOptions {
    OptOptions {
        model: mnist(),
        level,
        output: dir.join("m.cnnc"),
        input_shapes: vec![("input".to_owned(), vec![1, 1, 28, 28])],
        report: None,
        emit_onnx: None,
        cost_cache: None,
        no_measure: false,
        threads: None,
        no_winograd: false,
        args: vec!["opt".to_owned(), "-O0".to_owned()],
        calib: None,
        speed: Default::default(),
    }
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn opt_writes_the_artifact_and_onnx_model_it_summarizes() {
    let dir = temp_dir("o0");
    let o = OptOptions { emit_onnx: Some(dir.join("m.onnx")), ..options(&dir, OptLevel::O0) };
    let summary = driver::opt(&o).expect("-O0 of mnist");
    assert_eq!(files(&dir), ["m.cnnc", "m.onnx"]);
    assert_eq!(summary.bytes as u64, std::fs::metadata(&o.output).expect("artifact").len());
    assert_eq!(summary.opt_level, OptLevel::O0);
    let loaded = driver::load_model(&o.output, &ImportOptions::default()).expect("the artifact loads");
    let provenance = loaded.artifact.expect("an artifact").meta.provenance.expect("provenance");
    assert_eq!((provenance.opt_level.as_str(), provenance.args), ("O0", o.args.clone()));
    let json = serde_json::to_value(&summary).expect("serializes");
    assert_eq!(json["onnx"], o.emit_onnx.as_ref().expect("given").display().to_string());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn refusals_name_the_flag_and_write_nothing() {
    let dir = temp_dir("refuse");
    let o0 = options(&dir, OptLevel::O0);
    let cases = [
        (OptOptions { no_measure: true, ..o0.clone() }, "--no-measure"),
        (OptOptions { threads: Some(2), ..o0.clone() }, "--threads"),
        (OptOptions { report: Some(dir.join("r.json")), ..o0.clone() }, "--report"),
        (OptOptions { output: mnist(), ..o0.clone() }, "-o"),
        (OptOptions { level: OptLevel::O1, report: Some(dir.join("r.txt")), ..o0.clone() }, "--report"),
        (OptOptions { level: OptLevel::O1, cost_cache: Some(o0.output.clone()), ..o0.clone() }, "--cost-cache"),
    ];
    for (o, flag) in cases {
        let e = driver::opt(&o).expect_err(flag);
        let named = match &e {
            DriverError::NeedsO1 { flag } | DriverError::SameFile { flag, .. } => flag,
            DriverError::ReportAtO0 { .. } | DriverError::ReportFormat { .. } => "--report",
            other => panic!("{flag}: unexpected {other:?}"),
        };
        assert_eq!(named, flag, "{e}");
        assert!(e.to_string().contains(flag), "{e}");
    }
    assert!(matches!(driver::opt(&options(&dir, OptLevel::Speed)), Err(DriverError::NeedsCalib)));
    assert_eq!(files(&dir), Vec::<String>::new());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_model_error_names_the_file_and_node() {
    let dir = temp_dir("broken");
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/broken/conv_group_zero.onnx");
    let e = driver::opt(&OptOptions { model: model.clone(), input_shapes: vec![], ..options(&dir, OptLevel::O0) })
        .expect_err("a broken model");
    assert!(matches!(e, DriverError::Import { .. }), "{e:?}");
    assert!(e.to_string().contains(&model.display().to_string()) && e.to_string().contains("node"), "{e}");
    assert_eq!(files(&dir), Vec::<String>::new());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_interrupted_message_says_what_the_cost_cache_keeps() {
    let kept = DriverError::Interrupted { measured: 7, cache: Some(PathBuf::from("c.json")) };
    assert_eq!(
        kept.to_string(),
        "interrupted: nothing written; the cost cache keeps the 7 kernel times measured so far"
    );
    let lost = DriverError::Interrupted { measured: 7, cache: None };
    assert!(lost.to_string().contains("lost"), "{lost}");
    assert_eq!(DriverError::Interrupted { measured: 0, cache: None }.to_string(), "interrupted: nothing written");
}
