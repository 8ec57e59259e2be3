//! Imported graphs in text IR, pinned with insta (`cargo insta review` to update). They show
//! what import does to a model: weight-only subgraphs folded, Identity/Flatten/Squeeze gone
//! or turned into `reshape`, parameter inputs turned into attributes.

use cnnc::onnx::{ImportOptions, import_file};
use cnnc_tests::fixtures_dir;

fn import_text(rel: &str, shapes: &[(&str, &[usize])]) -> String {
    let opts = ImportOptions {
        input_shapes: shapes.iter().map(|(n, d)| (n.to_string(), d.to_vec())).collect(),
        ..ImportOptions::default()
    };
    let graph = import_file(&fixtures_dir().join(rel), &opts).expect("imports");
    graph.display_without_weights().to_string()
}

#[test]
fn mnist_imports_as_conv_relu_pool_gemm_chain() {
    insta::assert_snapshot!(import_text("models/mnist_cnn.onnx", &[("input", &[1, 1, 28, 28])]));
}

#[test]
fn shape_arithmetic_folds_into_a_reshape_attribute() {
    insta::assert_snapshot!(import_text("ops/shape_gather_unsqueeze_concat_reshape.onnx", &[]));
}

#[test]
fn constant_of_shape_padding_folds_into_a_weight() {
    insta::assert_snapshot!(import_text("ops/constantofshape_default_from_shape.onnx", &[]));
}

#[test]
fn text_form_of_an_imported_model_round_trips() {
    let opts = ImportOptions::default();
    let graph = import_file(&fixtures_dir().join("models/blazeface_front_128.onnx"), &opts).expect("imports");
    let text = graph.to_string();
    let parsed: cnnc_ir::Graph = text.parse().expect("parses");
    assert_eq!(parsed.to_string(), text, "display ∘ parse is the identity on blazeface");
    cnnc_ir::verify(parsed).expect("the parsed graph verifies");
}
