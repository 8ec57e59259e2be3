//! cnnc: compiles trained ONNX CNNs. This crate holds the ONNX importer, the model summary
//! behind `cnnc inspect`, `.npy` input/output, and (later) the exporter and calibration driver.
//! It is the only crate that names onnx-protobuf types.

pub mod inspect;
pub mod npy;
pub mod onnx;
