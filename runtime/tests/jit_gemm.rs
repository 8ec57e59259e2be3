//! JIT Gemm and MatMul kernels against the reference interpreter: the batch-1 GEMV tiling,
//! row and column tails of the register tile, transposes, alpha/beta, every broadcast of C
//! (constant and not), weights packed at load or read in place, numpy 1-D promotion and
//! batch broadcasting.
//!
//! Tolerance: rel-L2 ≤ 1e-6 and every element within 1e-5·max|reference|: the kernels sum
//! `K ≤ 70` products of magnitude ≤ 1 in f32 (the reference in f64), so rounding stays near
//! 1e-7 relative, far below what a wrong index or a missed tail produces.

mod common;
use cnnc_ir::{Graph, Op, TensorType};
use common::*;

/// An operand: a constant weight or a graph input.
enum Operand<'a> {
    Const(&'a [usize]),
    Input(&'a [usize]),
}

/// Builds `op(operands…)`; graph inputs get random values in order.
fn check_op(op: Op, operands: &[Operand]) {
    let mut g = Graph::new("g");
    let mut inputs = Vec::new();
    let ins: Vec<_> = operands
        .iter()
        .enumerate()
        .map(|(i, o)| match o {
            Operand::Const(s) => g.add_weight(format!("w{i}"), random(s, 10 + i as u64)),
            Operand::Input(s) => {
                inputs.push(random(s, 20 + i as u64));
                g.add_input(format!("x{i}"), TensorType::f32(s.to_vec()))
            }
        })
        .collect();
    let y = g.add_node("op", op, &ins).expect("types");
    g.add_output("y", y[0]);
    check_close(g, &inputs);
}

fn gemm(alpha: f32, beta: f32, trans_a: bool, trans_b: bool) -> Op {
    Op::Gemm { alpha, beta, trans_a, trans_b }
}

use Operand::{Const, Input};

#[test]
fn gemv_with_constant_weights_matches_reference() {
    // M = 1: panels of 32 columns plus a 13-column tail (a partial vector of 1 lane).
    check_op(gemm(1.0, 1.0, false, false), &[Input(&[1, 37]), Const(&[37, 45]), Const(&[45])]);
    check_op(gemm(1.0, 1.0, false, true), &[Input(&[1, 70]), Const(&[3, 70])]);
}

#[test]
fn gemm_row_and_column_tails_match_reference() {
    // 7 rows = a 4-row tile + 3; 10 columns = an 8-wide panel + 2.
    check_op(gemm(1.0, 1.0, false, false), &[Input(&[7, 9]), Const(&[9, 10]), Const(&[7, 10])]);
    check_op(gemm(1.0, 1.0, false, false), &[Input(&[2, 5]), Const(&[5, 3])]);
}

#[test]
fn gemm_transposes_alpha_and_beta_match_reference() {
    check_op(gemm(0.5, -1.5, true, true), &[Input(&[9, 7]), Const(&[10, 9]), Const(&[7, 1])]);
    check_op(gemm(2.0, 0.25, true, false), &[Input(&[6, 1]), Const(&[6, 11]), Const(&[1, 11])]);
}

#[test]
fn gemm_with_runtime_operands_matches_reference() {
    check_op(gemm(1.0, 2.0, false, false), &[Input(&[5, 6]), Input(&[6, 9]), Input(&[1, 9])]);
    check_op(gemm(0.5, 1.0, true, true), &[Input(&[6, 5]), Input(&[9, 6]), Input(&[5, 9])]);
    check_op(gemm(1.0, -1.0, false, true), &[Input(&[1, 8]), Input(&[7, 8]), Input(&[])]);
    check_op(gemm(1.0, 3.0, false, false), &[Input(&[3, 4]), Input(&[4, 5]), Input(&[3, 1])]);
}

#[test]
fn matmul_batched_with_broadcast_matches_reference() {
    check_op(Op::MatMul, &[Input(&[2, 1, 3, 4]), Input(&[3, 4, 5])]);
    check_op(Op::MatMul, &[Input(&[2, 3, 6]), Const(&[6, 4])]);
    check_op(Op::MatMul, &[Input(&[3, 5, 6]), Const(&[3, 6, 9])]);
    check_op(Op::MatMul, &[Input(&[1, 5, 6]), Const(&[2, 1, 6, 9])]);
}

#[test]
fn matmul_one_dimensional_operands_match_reference() {
    check_op(Op::MatMul, &[Input(&[4]), Input(&[2, 4, 5])]);
    check_op(Op::MatMul, &[Input(&[2, 3, 4]), Input(&[4])]);
    check_op(Op::MatMul, &[Input(&[4]), Input(&[4])]);
    check_op(Op::MatMul, &[Input(&[1, 33]), Const(&[33, 2])]);
}

#[test]
fn empty_products_are_no_ops_or_just_the_c_term() {
    check_op(gemm(1.0, 1.0, false, false), &[Input(&[0, 4]), Const(&[4, 3]), Const(&[3])]);
    check_op(gemm(1.0, 0.5, false, false), &[Input(&[2, 0]), Const(&[0, 3]), Const(&[2, 3])]);
    check_op(Op::MatMul, &[Input(&[0, 3, 4]), Const(&[4, 5])]);
}
