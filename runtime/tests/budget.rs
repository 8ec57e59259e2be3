//! The activation budget (`cnnc_runtime::budget`): a graph whose node outputs sum to more than
//! the limit is refused by `Model::compile` and `run_reference` before anything is planned or
//! allocated, with an error that names the total, the limit and the variable that raises it.
//!
//! One test function: it sets `CNNC_MAX_ACTIVATION_BYTES`, which no other test in this binary
//! may see.

use cnnc_ir::{Graph, Op, Tensor, TensorType, UnaryOp, VerifiedGraph, verify};
use cnnc_runtime::budget::{BudgetError, DEFAULT_LIMIT, LIMIT_ENV, total_bytes};
use cnnc_runtime::{CompileError, Model, RunError, run_reference};

/// `x → relu → relu → …` (`n` nodes) on an f32 input of `len` elements.
fn chain(len: usize, n: usize) -> VerifiedGraph {
    let mut g = Graph::new("chain");
    let mut v = g.add_input("x", TensorType::f32([1, len]));
    for i in 0..n {
        v = g.add_node(format!("relu{i}"), Op::Unary(UnaryOp::Relu), &[v]).expect("infers")[0];
    }
    g.add_output("y", v);
    verify(g).expect("verifies")
}

fn set_limit(v: Option<&str>) {
    // SAFETY: this binary's only test runs on one thread and no other thread reads the
    // environment meanwhile.
    unsafe {
        match v {
            Some(v) => std::env::set_var(LIMIT_ENV, v),
            None => std::env::remove_var(LIMIT_ENV),
        }
    }
}

#[test]
fn graphs_over_the_activation_budget_are_refused_before_planning() {
    // Five nodes of 4 GiB each: 20 GiB, over the default 16 GiB. Planning it would ask for
    // gigabytes; the check refuses it first (this test would abort on the allocation otherwise).
    set_limit(None);
    let huge = chain(1 << 30, 5);
    assert_eq!(total_bytes(&huge), 5 * (4u128 << 30));
    let want = BudgetError::OverLimit { total: 5 * (4u128 << 30), limit: DEFAULT_LIMIT };
    match Model::compile(&huge) {
        Err(CompileError::Budget(e)) => assert_eq!(e, want),
        Err(e) => panic!("the wrong error: {e}"),
        Ok(_) => panic!("a 20 GiB graph compiled"),
    }
    let x = Tensor::from_f32(vec![1, 1], vec![0.0]).expect("x");
    // (The input's type does not match, but the budget is checked first.)
    match run_reference(&huge, std::slice::from_ref(&x)) {
        Err(RunError::Budget(e)) => assert_eq!(e, want),
        other => panic!("the reference ran a 20 GiB graph: {:?}", other.map(|_| ())),
    }
    let msg = want.to_string();
    for part in ["21474836480 bytes (20.0 GiB)", "17179869184 bytes (16.0 GiB)", "CNNC_MAX_ACTIVATION_BYTES"] {
        assert!(msg.contains(part), "{msg:?} lacks {part:?}");
    }

    // A small graph around a limit set in the environment: 3 × 4 KiB of outputs.
    let small = chain(1024, 3);
    let x = Tensor::from_f32(vec![1, 1024], (0..1024).map(|i| i as f32 - 512.0).collect()).expect("x");
    set_limit(Some("12287"));
    let over = BudgetError::OverLimit { total: 12288, limit: 12287 };
    assert!(matches!(Model::compile(&small), Err(CompileError::Budget(ref e)) if *e == over));
    assert!(matches!(run_reference(&small, std::slice::from_ref(&x)), Err(RunError::Budget(ref e)) if *e == over));
    set_limit(Some("12288"));
    let model = Model::compile(&small).expect("at the limit it compiles");
    let got = model.run(std::slice::from_ref(&x)).expect("runs");
    assert_eq!(got, run_reference(&small, std::slice::from_ref(&x)).expect("the reference runs"));
    // A value that is not a byte count is an error naming it, not the default.
    set_limit(Some("12GB"));
    let bad = BudgetError::BadLimit { value: "12GB".into() };
    assert!(matches!(Model::compile(&small), Err(CompileError::Budget(ref e)) if *e == bad));
    assert!(bad.to_string().contains("CNNC_MAX_ACTIVATION_BYTES=\"12GB\""), "{bad}");
    set_limit(None);
}
