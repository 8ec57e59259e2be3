//! cnnc: compiles trained ONNX CNNs. This crate holds the ONNX importer, the model summary
//! behind `cnnc inspect`, the benchmark behind `cnnc bench`, the measured cost model and its
//! cache behind `cnnc opt -O1` ([`cost`]), `.npy` input/output, and (later)
//! the exporter and calibration driver. It is the only crate that names onnx-protobuf types.

pub mod bench;
pub mod cost;
pub mod inspect;
pub mod npy;
pub mod onnx;
