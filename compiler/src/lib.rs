//! cnnc: compiles trained ONNX CNNs. This crate holds the ONNX importer, the model summary
//! behind `cnnc inspect`, the benchmark behind `cnnc bench`, the measured cost model and its
//! cache behind `cnnc opt -O1` ([`cost`]), `.npy` input/output, the calibration data behind
//! `-O speed` ([`calib`]), and (later) the exporter. It is the only crate that names onnx-protobuf types.

pub mod bench;
pub mod calib;
pub mod cost;
pub mod inspect;
pub mod npy;
pub mod onnx;
