//! cnnc: compiles trained ONNX CNNs. This crate holds the ONNX importer and exporter, the
//! `cnnc opt` pipeline ([`driver`]) and its typed JSON reports ([`report`]), the model summary
//! behind `cnnc inspect`, the benchmark behind `cnnc bench`, the measured cost model and its
//! cache behind `cnnc opt -O1` ([`cost`]), Ctrl-C handling ([`interrupt`]), progress bars
//! ([`progress`]), the calibration data behind `-O speed` ([`calib`]) and `.npy` input/output.
//! It is the only crate that names onnx-protobuf types.

pub mod audit;
pub mod bench;
pub mod calib;
pub mod cost;
pub mod driver;
pub mod evaluate;
pub mod inspect;
pub mod interrupt;
pub mod npy;
pub mod onnx;
pub mod progress;
pub mod report;
pub mod speed;
