//! Whole-graph evaluation: input checking, topological evaluation, multi-output ops and
//! outputs that alias inputs or each other. All expected values are exact in f32.

use cnnc_ir::{BinaryOp, ConvAttrs, Graph, Op, Tensor, TensorType, UnaryOp, ValueRef, VerifiedGraph, verify};
use cnnc_runtime::{RunError, run_reference};

fn f32t(shape: &[usize], data: &[f32]) -> Tensor {
    Tensor::from_f32(shape, data.to_vec()).expect("test tensor")
}

fn verified(g: Graph) -> VerifiedGraph {
    verify(g).unwrap_or_else(|e| panic!("{e}"))
}

/// `y = relu(conv1x1(x, w = [1, −1]) + 1)` over `x: f32[1,2,1,2]`, plus `x` itself as a second
/// output and `y` twice.
fn conv_relu_graph() -> VerifiedGraph {
    let mut g = Graph::new("conv-relu");
    let x = g.add_input("x", TensorType::f32([1, 2, 1, 2]));
    let w = g.add_weight("w", f32t(&[1, 2, 1, 1], &[1., -1.]));
    let one = g.add_weight("one", f32t(&[], &[1.]));
    let attrs = ConvAttrs::new(&[1, 1]);
    let ty = TensorType::f32([1, 1, 1, 2]);
    let conv = g.add_node_typed("conv", Op::Conv(attrs), &[x, w], vec![ty.clone()]);
    let add = g.add_node_typed("add", Op::Binary(BinaryOp::Add), &[ValueRef::new(conv, 0), one], vec![ty.clone()]);
    let relu = g.add_node_typed("relu", Op::Unary(UnaryOp::Relu), &[ValueRef::new(add, 0)], vec![ty]);
    g.add_output("y", ValueRef::new(relu, 0));
    g.add_output("x_again", x);
    g.add_output("y_again", ValueRef::new(relu, 0));
    verified(g)
}

#[test]
fn runs_nodes_in_order_and_returns_outputs_in_order() {
    let g = conv_relu_graph();
    let x = f32t(&[1, 2, 1, 2], &[5., 1., 2., 4.]);
    let out = run_reference(&g, std::slice::from_ref(&x)).expect("runs");
    // conv: [5 − 2, 1 − 4] = [3, −3]; +1 → [4, −2]; relu → [4, 0].
    let y = f32t(&[1, 1, 1, 2], &[4., 0.]);
    assert_eq!(out, vec![y.clone(), x, y]);
}

#[test]
fn wrong_input_count_is_reported() {
    let g = conv_relu_graph();
    assert_eq!(run_reference(&g, &[]), Err(RunError::InputCount { expected: 1, got: 0 }));
}

#[test]
fn wrong_input_shape_is_reported_with_its_name() {
    let g = conv_relu_graph();
    let err = run_reference(&g, &[f32t(&[1, 2, 2, 1], &[0.; 4])]).expect_err("shape mismatch");
    match err {
        RunError::InputType { index: 0, name, expected, got } => {
            assert_eq!(name, "x");
            assert_eq!(expected, TensorType::f32([1, 2, 1, 2]));
            assert_eq!(got, TensorType::f32([1, 2, 2, 1]));
        }
        other => panic!("unexpected error {other}"),
    }
}

#[test]
fn multi_output_op_with_an_unused_output() {
    let mut g = Graph::new("split");
    let x = g.add_input("x", TensorType::f32([3]));
    let split = g.add_node_typed(
        "split",
        Op::Split { axis: 0, sizes: vec![1, 2] },
        &[x],
        vec![TensorType::f32([1]), TensorType::f32([2])],
    );
    let neg = g.add_node_typed("neg", Op::Unary(UnaryOp::Neg), &[ValueRef::new(split, 1)], vec![TensorType::f32([2])]);
    g.add_output("y", ValueRef::new(neg, 0));
    let out = run_reference(&verified(g), &[f32t(&[3], &[1., 2., 3.])]).expect("runs");
    assert_eq!(out, vec![f32t(&[2], &[-2., -3.])]);
}

#[test]
fn a_failing_node_is_reported_by_name() {
    let mut g = Graph::new("gather");
    let x = g.add_input("x", TensorType::f32([2]));
    let idx = g.add_input("idx", TensorType::new(cnnc_ir::DType::I64, [1]));
    let gather = g.add_node_typed("pick", Op::Gather { axis: 0 }, &[x, idx], vec![TensorType::f32([1])]);
    g.add_output("y", ValueRef::new(gather, 0));
    let idx = Tensor::from_i64([1], vec![5]).expect("tensor");
    match run_reference(&verified(g), &[f32t(&[2], &[1., 2.]), idx]) {
        Err(RunError::Node { node, op, reason }) => {
            assert_eq!((node.as_str(), op.as_str()), ("pick", "gather"));
            assert!(reason.contains("out of range"), "{reason}");
        }
        other => panic!("expected a node error, got {other:?}"),
    }
}
