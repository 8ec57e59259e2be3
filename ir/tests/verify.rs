//! The verifier, through `cnnc_ir::check` / `verify` only.

use cnnc_ir::{BinaryOp, ConvAttrs, Graph, Op, Tensor, TensorType, UnaryOp, ValueRef, VerifyError, check, verify};

/// Every violation of `g`, as `(node, message)` pairs.
fn violations(g: &Graph) -> Vec<(String, String)> {
    check(g).into_iter().map(|VerifyError { node, message, .. }| (node, message)).collect()
}

fn relu() -> Op {
    Op::Unary(UnaryOp::Relu)
}

/// `x [1,2,4,4] → relu → "y"`
fn small_graph() -> (Graph, ValueRef, ValueRef) {
    let mut g = Graph::new("small");
    let x = g.add_input("x", TensorType::f32([1, 2, 4, 4]));
    let r = g.add_node("r", relu(), &[x]).expect("relu of f32")[0];
    g.add_output("y", r);
    (g, x, r)
}

#[test]
fn a_well_formed_graph_verifies() {
    let (g, _, _) = small_graph();
    assert_eq!(violations(&g), []);
    assert!(verify(g).is_ok());
}

#[test]
fn three_different_problems_are_all_reported() {
    let (mut g, x, r) = small_graph();
    // 1. a stored output type that inference disagrees with
    g.add_node_typed("bad_type", relu(), &[r], vec![TensorType::f32([9])]);
    // 2. a conv with a missing weight input
    let conv = Op::Conv(ConvAttrs::new(&[1, 1]));
    g.add_node_typed("lonely_conv", conv, &[x], vec![TensorType::f32([1, 2, 4, 4])]);
    // 3. operands that do not broadcast
    let w = g.add_weight("w", Tensor::full_f32([3], 1.0));
    g.add_node_typed("bad_add", Op::Binary(BinaryOp::Add), &[r, w], vec![TensorType::f32([1, 2, 4, 4])]);

    let errors = match verify(g) {
        Err(e) => e.0,
        Ok(_) => panic!("graph with three problems verified"),
    };
    assert_eq!(errors.len(), 3, "{errors:#?}");
    for (name, op) in [("bad_type", "relu"), ("lonely_conv", "conv"), ("bad_add", "add")] {
        assert!(errors.iter().any(|e| e.node == name && e.op == op), "{name} not reported: {errors:#?}");
    }
}

#[test]
fn a_wrong_stored_output_type_reports_inferred_and_stored() {
    let (mut g, x, _) = small_graph();
    g.add_node_typed("r2", relu(), &[x], vec![TensorType::f32([1, 2, 4, 5])]);
    let errors = violations(&g);
    assert_eq!(errors.len(), 1, "{errors:?}");
    let (node, message) = &errors[0];
    assert_eq!(node, "r2");
    assert!(
        message.contains("stored output type f32[1,2,4,5]") && message.contains("inferred f32[1,2,4,4]"),
        "{message}"
    );
}

#[test]
fn inference_errors_are_reported_with_the_input_types() {
    let (mut g, x, _) = small_graph();
    g.add_node_typed("soft", Op::Softmax { axis: 7, flatten: false }, &[x], vec![TensorType::f32([1])]);
    let errors = violations(&g);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].1.contains("axis 7") && errors[0].1.contains("inputs f32[1,2,4,4]"), "{errors:?}");
}

#[test]
fn a_graph_without_outputs_is_rejected() {
    let mut g = Graph::new("empty");
    g.add_input("x", TensorType::f32([1]));
    assert_eq!(violations(&g), [("<graph>".to_owned(), "graph has no outputs".to_owned())]);
}

#[test]
fn duplicate_node_names_are_reported_once_per_repeat() {
    let (mut g, x, _) = small_graph();
    g.add_node("r", relu(), &[x]).expect("relu of f32");
    let errors = violations(&g);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].1.contains("name is already used"), "{errors:?}");
}

#[test]
fn graph_outputs_need_unique_names_and_existing_values() {
    let (mut g, x, r) = small_graph();
    g.add_output("y", x);
    g.add_output("", r);
    g.add_output("z", ValueRef::new(r.node, 1));
    let messages: Vec<String> = violations(&g).into_iter().map(|(_, m)| m).collect();
    assert_eq!(messages.len(), 3, "{messages:?}");
    assert!(messages[0].contains("`y` is used twice"));
    assert!(messages[1].contains("empty name"));
    assert!(messages[2].contains("output 1 of `r`"), "{messages:?}");
}

#[test]
fn an_input_node_index_must_match_its_position() {
    let (mut g, x, _) = small_graph();
    g.node_mut(x.node).op = Op::Input { index: 3 };
    let errors = violations(&g);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].1.contains("index 3 but is graph input #0"), "{errors:?}");
}

#[test]
fn a_weight_node_type_must_match_its_tensor() {
    let (mut g, _, r) = small_graph();
    let w = g.add_weight("w", Tensor::full_f32([2, 1, 1], 0.5));
    g.add_node("m", Op::Binary(BinaryOp::Mul), &[r, w]).expect("broadcast");
    // Still broadcastable, so `m` infers the same type and only `w` is wrong.
    g.node_mut(w.node).outputs = vec![TensorType::f32([1, 1, 1])];
    let errors = violations(&g);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].0, "w");
    assert!(errors[0].1.contains("f32[1,1,1] differs from the weight tensor's type f32[2,1,1]"), "{errors:?}");
}

#[test]
fn weights_holding_nan_and_infinity_verify() {
    let (mut g, _, r) = small_graph();
    let w = g.add_weight("w", Tensor::from_f32([2, 1, 1], vec![f32::NAN, f32::NEG_INFINITY]).expect("2 values"));
    let m = g.add_node("m", Op::Binary(BinaryOp::Mul), &[r, w]).expect("broadcast")[0];
    g.add_output("m", m);
    assert_eq!(violations(&g), []);
}

#[test]
fn a_cycle_is_reported_along_with_other_problems() {
    let (mut g, x, r) = small_graph();
    let r2 = g.add_node("r2", relu(), &[r]).expect("relu")[0];
    // r now reads r2, which reads r.
    g.replace_uses(x, r2);
    g.outputs_mut().clear();
    let errors = violations(&g);
    let nodes: Vec<&str> = errors.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(nodes.contains(&"<graph>"));
    assert!(errors.iter().any(|(_, m)| m.contains("cycle")), "{errors:?}");
}

#[test]
fn input_slots_must_be_dense_and_within_arity() {
    let (mut g, x, _) = small_graph();
    g.add_node_typed("two_in", relu(), &[x, x], vec![TensorType::f32([1, 2, 4, 4])]);
    let errors = violations(&g);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].1.contains("has 2 input(s), but relu takes 1"), "{errors:?}");
}

#[test]
fn an_input_reading_a_missing_output_slot_is_reported() {
    let (mut g, x, _) = small_graph();
    g.add_node_typed("far", relu(), &[ValueRef::new(x.node, 2)], vec![TensorType::f32([1, 2, 4, 4])]);
    let errors = violations(&g);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].1.contains("input 0 reads output 2 of `x`"), "{errors:?}");
}
