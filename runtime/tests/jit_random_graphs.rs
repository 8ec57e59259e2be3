//! Random small graphs — convolutions (dense, grouped, depthwise; strides, pads, dilations),
//! max/avg pooling, unary and broadcasting binary element-wise ops, concat, transpose, slice,
//! pad — built through shape inference (`Graph::add_node`; an op whose inference fails is
//! skipped) and run through the JIT and the reference interpreter.
//!
//! Tolerance: rel-L2 ≤ 1e-5 per output. The JIT's f32 kernels reorder and round the sums the
//! reference accumulates in f64; with values in [−1, 1], weights scaled by 1/√fan-in and a few
//! hundred terms per sum the difference stays around 1e-7 relative. The element-wise functions
//! chosen here are continuous (no floor/ceil, whose jumps would turn 1e-7 into 1) and cannot
//! overflow or produce NaN on such values.
//!
//! The number of cases is `PROPTEST_CASES` (default 256); ≥ 1000 cases run in well under a
//! minute.

use cnnc_ir::{
    BinaryOp, ConvAttrs, Graph, Op, PadMode, PoolAttrs, SliceAxis, Tensor, TensorType, UnaryOp, ValueRef, verify,
};
use cnnc_runtime::{Model, run_reference};
use proptest::prelude::*;

/// splitmix64: the graph is a pure function of the case's seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }

    fn irange(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }

    fn coin(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.range(0, xs.len() - 1)]
    }

    /// Uniform in [−scale, scale).
    fn values(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| ((self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale).collect()
    }
}

/// Builds a random graph on one 3-D or 4-D f32 input; every value nothing consumes is an
/// output.
fn random_graph(seed: u64, n_ops: usize) -> (Graph, Tensor) {
    let mut r = Rng(seed);
    let rank = if r.coin(0.2) { 3 } else { 4 };
    let mut shape = vec![r.range(1, 2), r.range(1, 6)];
    shape.extend((2..rank).map(|_| r.range(1, 11)));
    let mut g = Graph::new("random");
    let x = g.add_input("x", TensorType::f32(shape.clone()));
    let input = Tensor::from_f32(shape.clone(), r.values(shape.iter().product(), 1.0)).expect("shape");
    let mut pool: Vec<ValueRef> = vec![x];
    let mut consumed = vec![false];
    for k in 0..n_ops {
        // Prefer recent values so that graphs are chains with occasional branches.
        let a_idx = if r.coin(0.7) { pool.len() - 1 } else { r.range(0, pool.len() - 1) };
        let a = pool[a_idx];
        let ty = g.value_type(&a).clone();
        let Some((op, operands)) = random_op(&mut r, &mut g, &pool, a, &ty, k) else { continue };
        let Ok(outs) = g.add_node(format!("n{k}"), op, &operands) else { continue };
        for v in &operands {
            if let Some(i) = pool.iter().position(|p| p == v) {
                consumed[i] = true;
            }
        }
        for v in outs {
            pool.push(v);
            consumed.push(false);
        }
    }
    for (i, v) in pool.iter().enumerate() {
        if !consumed[i] || i + 1 == pool.len() {
            g.add_output(format!("y{i}"), *v);
        }
    }
    (g, input)
}

fn weight(r: &mut Rng, g: &mut Graph, shape: Vec<usize>, scale: f32, k: usize) -> ValueRef {
    let n = shape.iter().product();
    let v = r.values(n, scale);
    // Node names are unique: the node count only grows.
    let name = format!("w{k}_{}", g.node_count());
    g.add_weight(name, Tensor::from_f32(shape, v).expect("shape"))
}

/// One random op applied to `a` (and possibly other values or new weights).
fn random_op(
    r: &mut Rng,
    g: &mut Graph,
    pool: &[ValueRef],
    a: ValueRef,
    ty: &TensorType,
    k: usize,
) -> Option<(Op, Vec<ValueRef>)> {
    let rank = ty.rank();
    let ns = rank.saturating_sub(2);
    match r.range(0, 9) {
        // A cropping pad can empty the channel axis; a conv needs at least one channel.
        0 | 1 if rank >= 3 && ty.shape[1] > 0 => {
            // Convolution: dense, grouped or depthwise.
            let c = ty.shape[1];
            let divisors: Vec<usize> = (1..=c).filter(|&d| c.is_multiple_of(d)).collect();
            let group = if r.coin(0.3) { c } else { r.pick(&divisors) };
            let m = group * r.range(1, if group == c { 2 } else { 3 });
            let kernel: Vec<usize> = (0..ns).map(|_| r.range(1, 3)).collect();
            let strides: Vec<usize> = (0..ns).map(|_| r.range(1, 2)).collect();
            let dilations: Vec<usize> = (0..ns).map(|_| if r.coin(0.25) { 2 } else { 1 }).collect();
            let pads: Vec<usize> = (0..2 * ns).map(|i| r.range(0, kernel[i % ns].min(2))).collect();
            let fan_in = (c / group) * kernel.iter().product::<usize>();
            let mut wshape = vec![m, c / group];
            wshape.extend(&kernel);
            let w = weight(r, g, wshape, 1.0 / (fan_in as f32).sqrt(), k);
            let mut ins = vec![a, w];
            if r.coin(0.6) {
                ins.push(weight(r, g, vec![m], 0.5, k));
            }
            Some((
                Op::Conv(ConvAttrs::new(&kernel).strides(&strides).dilations(&dilations).pads(&pads).group(group)),
                ins,
            ))
        }
        2 if rank >= 3 => {
            let kernel: Vec<usize> = (0..ns).map(|_| r.range(1, 3)).collect();
            let pool_attrs = PoolAttrs {
                strides: (0..ns).map(|_| r.range(1, 3)).collect(),
                dilations: (0..ns).map(|_| if r.coin(0.2) { 2 } else { 1 }).collect(),
                pads: (0..2 * ns).map(|i| r.range(0, kernel[i % ns] - 1)).collect(),
                ceil_mode: r.coin(0.3),
                kernel,
            };
            let op = if r.coin(0.5) {
                Op::MaxPool(pool_attrs)
            } else {
                Op::AvgPool { pool: pool_attrs, count_include_pad: r.coin(0.5) }
            };
            Some((op, vec![a]))
        }
        3 => {
            let u = r.pick(&[
                UnaryOp::Relu,
                UnaryOp::LeakyRelu { alpha: 0.1 },
                UnaryOp::Clip { min: -0.5, max: 0.7 },
                UnaryOp::Sigmoid,
                UnaryOp::HardSigmoid { alpha: 0.2, beta: 0.5 },
                UnaryOp::HardSwish,
                UnaryOp::Tanh,
                UnaryOp::Neg,
                UnaryOp::Abs,
                UnaryOp::Erf,
            ]);
            Some((Op::Unary(u), vec![a]))
        }
        4 | 5 => {
            let op =
                r.pick(&[BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Max, BinaryOp::Min, BinaryOp::PRelu]);
            // The other operand: a value of the pool (if it broadcasts) or a weight whose
            // shape is `a`'s with some axes set to 1 and possibly leading axes dropped.
            let other = pool[r.range(0, pool.len() - 1)];
            if op != BinaryOp::PRelu && r.coin(0.3) {
                let (a, b) = if r.coin(0.5) { (a, other) } else { (other, a) };
                return Some((Op::Binary(op), vec![a, b]));
            }
            let drop = r.range(0, rank);
            let bshape: Vec<usize> = ty.shape[drop..].iter().map(|&d| if r.coin(0.5) { 1 } else { d }).collect();
            let w = weight(r, g, bshape, 1.0, k);
            let swap = op != BinaryOp::PRelu && r.coin(0.3);
            Some((Op::Binary(op), if swap { vec![w, a] } else { vec![a, w] }))
        }
        6 if rank >= 1 => {
            let axis = r.range(0, rank - 1);
            let mut wshape = ty.shape.clone();
            wshape[axis] = r.range(1, 4);
            let other = if r.coin(0.5) { a } else { weight(r, g, wshape, 1.0, k) };
            let ins = if r.coin(0.5) { vec![a, other] } else { vec![other, a, a] };
            Some((Op::Concat { axis }, ins))
        }
        7 => {
            let mut perm: Vec<usize> = (0..rank).collect();
            for i in (1..rank).rev() {
                perm.swap(i, r.range(0, i));
            }
            Some((Op::Transpose { perm }, vec![a]))
        }
        8 => {
            let mut axes = Vec::new();
            for axis in 0..rank {
                let dim = ty.shape[axis] as i64;
                if dim < 2 || r.coin(0.5) {
                    continue;
                }
                let step = r.pick(&[1i64, 1, 2, 3, -1, -2]);
                let start = r.irange(0, dim - 1);
                let end = if step > 0 { r.irange(start + 1, dim) } else { r.irange(-1, start - 1) };
                axes.push(SliceAxis { axis, start, end, step });
            }
            Some((Op::Slice { axes }, vec![a]))
        }
        _ => {
            let mode = r.pick(&[PadMode::Constant, PadMode::Reflect, PadMode::Edge, PadMode::Wrap]);
            let pads =
                (0..2 * rank).map(|i| if i % rank < rank.saturating_sub(2) { 0 } else { r.irange(-1, 3) }).collect();
            Some((Op::Pad { pads, mode, value: 0.25 }, vec![a]))
        }
    }
}

/// ‖got − want‖₂ / max(‖want‖₂, 0.1·√n) over the finite elements; NaN or ±∞ must appear in the
/// same places in both (an average over an empty window is 0/0 in both, for example).
///
/// The floor on the denominator matters for tiny outputs: inputs and weights are O(1), so each
/// f32 product carries ~6e-8 absolute rounding; an output of, say, 0.01 that is a difference of
/// O(0.1) terms may then show a relative error above 1e-5 from rounding alone. Against a floor
/// of 0.1 per element the bound is an absolute 1e-6 per element there, still 15× the rounding
/// of one f32 op on O(1) values and far below any indexing bug.
fn rel_l2(got: &[f32], want: &[f32]) -> f64 {
    let (mut num, mut den) = (0f64, 0f64);
    for (&g, &w) in got.iter().zip(want) {
        if !w.is_finite() || !g.is_finite() {
            if g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()) {
                continue;
            }
            return f64::INFINITY;
        }
        num += (f64::from(g) - f64::from(w)).powi(2);
        den += f64::from(w).powi(2);
    }
    let floor = 0.01 * got.len() as f64;
    if num == 0.0 { 0.0 } else { (num / den.max(floor)).sqrt() }
}

/// Whether the case ran through both engines (`false`: the reference rejected the graph,
/// which is not a test of the JIT).
fn check(seed: u64, n_ops: usize) -> Result<bool, TestCaseError> {
    let (g, input) = random_graph(seed, n_ops);
    let text = g.to_string();
    let g = verify(g).map_err(|e| TestCaseError::fail(format!("verify: {e:?}\n{text}")))?;
    let want = run_reference(&g, std::slice::from_ref(&input));
    let Ok(want) = want else { return Ok(false) };
    let model = Model::compile(&g).map_err(|e| TestCaseError::fail(format!("compile: {e}\n{text}")))?;
    let got = model.run(std::slice::from_ref(&input)).map_err(|e| TestCaseError::fail(format!("run: {e}\n{text}")))?;
    prop_assert_eq!(got.len(), want.len(), "output count\n{}", text);
    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
        prop_assert_eq!(a.ty(), b.ty(), "output {}\n{}", i, text);
        let (a, b) = (a.as_f32().expect("f32"), b.as_f32().expect("f32"));
        let e = rel_l2(a, b);
        prop_assert!(e <= 1e-5, "output {}: rel-L2 {:.3e}\n{}", i, e, text);
    }
    Ok(true)
}

/// The cases: `PROPTEST_CASES`, default 256.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
}

#[test]
fn jit_matches_reference_on_random_graphs() {
    let cases = cases();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let ran = std::cell::Cell::new(0u32);
    runner
        .run(&(any::<u64>(), 1usize..7), |(seed, n_ops)| {
            if check(seed, n_ops)? {
                ran.set(ran.get() + 1);
            }
            Ok(())
        })
        .unwrap();
    // The reference rejects few random graphs; a test where most cases never reach both engines
    // tests nothing.
    assert!(ran.get() * 10 >= cases * 9, "only {} of {cases} random graphs ran through both engines", ran.get());
}
