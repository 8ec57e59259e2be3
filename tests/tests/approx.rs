//! Approximate proposals (`cnnc_passes::approx`) and budgeted extraction: each family fires
//! where it should and not where it must not, its predicted layer error is the error measured
//! by running the proposal, the error falls as the rank rises, proposals never merge e-classes
//! that existed before them, and the budget is honoured.
//!
//! Calibration data here: seeded uniform inputs through the reference interpreter
//! (`ReferenceEvaluator`), every output pixel sampled, so the fit split's statistics are exact.

use std::collections::{HashMap, HashSet};

use cnnc_ir::{ConvAttrs, Graph, Op, Tensor, TensorType, UnaryOp, VerifiedGraph, verify};
use cnnc_passes::approx::stats::collect_moments;
use cnnc_passes::approx::{
    ApplyError, Family, Proposal, ProposalConfig, apply, augmented_weight, error, refit, svd, tucker2,
};
use cnnc_passes::extract::exact;
use cnnc_passes::{
    BudgetMemo, Cnn, CnnAnalysis, Limits, Lossless, MacCost, Metric, NodeCost, OptConfig, RuleOptions, SpeedSearch,
    Split, WeightRef, extract_budgeted, extract_budgeted_memo, extract_dag_choice, to_graph, weight_of,
};
use cnnc_runtime::run_reference;
use cnnc_tests::{ReferenceEvaluator, rel_l2, uniform};
use egg::{EGraph, Id};

/// Sensitivities on rel-L2, at relative error 0.05, over every fit sample.
const PROBE: error::Probe =
    error::Probe { metric: Metric::RelL2, eps: 0.05, split: Split::Fit, max_samples: usize::MAX };

/// Every output pixel of the test layers is sampled (they have at most 16×16 outputs).
const ALL_PIXELS: usize = 1 << 20;

fn conv_attrs(k: usize, stride: usize, pad: usize, group: usize) -> ConvAttrs {
    ConvAttrs::new(&[k, k]).strides(&[stride, stride]).pads(&[pad; 4]).group(group)
}

/// Weights `[m, c/group, k, k]` of rank about `rank` (a product of two random factors) plus
/// 1 % noise, so the output spectrum decays as trained layers' do.
fn low_rank_weights(m: usize, cols: usize, rank: usize, seed: u64) -> Vec<f32> {
    let a = uniform(m * rank, seed);
    let b = uniform(rank * cols, seed + 1);
    let noise = uniform(m * cols, seed + 2);
    (0..m * cols)
        .map(|i| {
            let (o, j) = (i / cols, i % cols);
            let s: f32 = (0..rank).map(|t| a[o * rank + t] * b[t * cols + j] * (1.0 / (t as f32 + 1.0))).sum();
            s + 0.01 * noise[i]
        })
        .collect()
}

/// `x → conv → (relu)` with `layers` convs `(c_in, c_out, k, stride, pad, group)` in a chain.
fn conv_chain(input: [usize; 4], layers: &[(usize, usize, usize, usize, usize, usize)], relu: bool) -> VerifiedGraph {
    let mut g = Graph::new("chain");
    let mut x = g.add_input("x", TensorType::f32(input.to_vec()));
    for (i, &(c, m, k, s, p, group)) in layers.iter().enumerate() {
        let cols = c / group * k * k;
        let w = g.add_weight(
            format!("w{i}"),
            Tensor::from_f32([m, c / group, k, k], low_rank_weights(m, cols, 4, 10 * i as u64)).expect("shape"),
        );
        let b = g.add_weight(format!("b{i}"), Tensor::from_f32([m], uniform(m, 99 + i as u64)).expect("shape"));
        x = g.add_node(format!("conv{i}"), Op::Conv(conv_attrs(k, s, p, group)), &[x, w, b]).expect("infers")[0];
        if relu {
            x = g.add_node(format!("relu{i}"), Op::Unary(UnaryOp::Relu), &[x]).expect("infers")[0];
        }
    }
    g.add_output("y", x);
    verify(g).expect("verifies")
}

fn evaluator(graph: &VerifiedGraph, fit: usize) -> ReferenceEvaluator {
    let ty = &graph.node(graph.inputs()[0]).outputs[0];
    let samples = |base: u64, n: usize| -> Vec<(Vec<Tensor>, Option<i64>)> {
        (0..n)
            .map(|i| {
                // Non-negative inputs with a mean, as post-ReLU activations are.
                let v: Vec<f32> = uniform(ty.numel(), base + i as u64).iter().map(|x| 0.5 * (x + 1.0)).collect();
                (vec![Tensor::from_f32(ty.shape.clone(), v).expect("shape")], None)
            })
            .collect()
    };
    ReferenceEvaluator {
        splits: HashMap::from([(Split::Fit, samples(1000, fit)), (Split::Validation, samples(2000, 2))]),
    }
}

/// Saturates, extracts the lossless graph by MACs, gathers moments and proposes.
struct Searched {
    search: SpeedSearch,
    proposals: Vec<Proposal>,
    lossless: Lossless,
    classes_before: Vec<Id>,
    ev: ReferenceEvaluator,
}

fn search(graph: &VerifiedGraph, config: &ProposalConfig) -> Searched {
    let mut search = SpeedSearch::saturate(graph, &speed_config(config));
    let lossless = search.extract_lossless(&MacCost::default()).expect("extracts");
    let mut ev = evaluator(graph, 3);
    let moments =
        collect_moments(&mut ev, &lossless.graph, &lossless.layers, &lossless.taps, Split::Fit, ALL_PIXELS, 2)
            .expect("calibration runs");
    let classes_before: Vec<Id> = search.loaded.egraph.classes().map(|c| c.id).collect();
    let (proposals, _) = search.propose(&lossless.layers, &moments, &[], &[]);
    Searched { search, proposals, lossless, classes_before, ev }
}

/// MACs, but the layer ops that read `banned` weights cannot be chosen: forces a proposal.
struct Forcing {
    banned: HashSet<WeightRef>,
}

impl NodeCost for Forcing {
    fn cost(&self, egraph: &EGraph<Cnn, CnnAnalysis>, node: &Cnn) -> f64 {
        let uses_banned = node
            .op_children()
            .is_some_and(|c| c[1..].iter().any(|&k| weight_of(egraph, k).is_some_and(|w| self.banned.contains(&w))));
        if uses_banned { f64::INFINITY } else { MacCost::default().cost(egraph, node) }
    }
}

/// The graph with proposal `p` chosen for its layer (the layer's own weight and the other
/// proposals' charged weights banned).
fn forced(s: &Searched, p: &Proposal) -> VerifiedGraph {
    let eg = &s.search.loaded.egraph;
    // The layer's original weight: the one its plain op in the lossless graph reads.
    let mut banned: HashSet<WeightRef> = s.proposals.iter().filter(|q| q.id != p.id).map(|q| q.charged).collect();
    banned.insert(s.lossless.layers[p.layer].weight);
    let ext = extract_dag_choice(eg, s.search.root(), &Forcing { banned: banned.clone() }, &s.search.seed)
        .unwrap_or_else(|e| panic!("{e}: forcing {p:?} with {banned:?} banned; proposals {:?}", s.proposals));
    verify(to_graph(&ext.expr, &eg.analysis).expect("a graph")).expect("verifies")
}

fn fit_inputs(ev: &ReferenceEvaluator) -> Vec<Vec<Tensor>> {
    ev.splits[&Split::Fit].iter().map(|(x, _)| x.clone()).collect()
}

/// rel-L2 of `got` against `want` over every fit sample, pooled.
fn pooled_rel_l2(want: &VerifiedGraph, got: &VerifiedGraph, inputs: &[Vec<Tensor>]) -> f64 {
    let (mut num, mut den) = (0.0, 0.0);
    for x in inputs {
        let a = run_reference(want, x).expect("runs");
        let b = run_reference(got, x).expect("runs");
        let e = rel_l2(&b[0], &a[0]);
        let n: f64 = cnnc_tests::values_f64(&a[0]).iter().map(|v| v * v).sum();
        num += e * e * n;
        den += n;
    }
    (num / den).sqrt()
}

/// `-O speed`'s configuration without Winograd (a Winograd conv is as cheap in MACs as the
/// direct one) and with the proposal settings `p`.
fn speed_config(p: &ProposalConfig) -> OptConfig {
    OptConfig { rules: RuleOptions { winograd: false }, limits: Limits::default(), proposals: Some(p.clone()) }
}

/// Each proposal's predicted layer error is the one measured by running it on the fit split:
/// f32 factor weights and the 1e-9 ridge allow 1e-4 relative plus 1e-6.
fn assert_predicted_layer_errors_are_measured(s: &Searched) {
    for p in &s.proposals {
        let measured = pooled_rel_l2(&s.lossless.graph, &forced(s, p), &fit_inputs(&s.ev));
        assert!(
            (measured - p.rel_error).abs() <= 1e-4 * p.rel_error + 1e-6,
            "ranks {:?}: measured {measured:.6e}, predicted {:.6e}",
            p.ranks,
            p.rel_error
        );
    }
}

fn config(families: &[Family], energies: &[f64]) -> ProposalConfig {
    ProposalConfig {
        families: families.to_vec(),
        energies: energies.to_vec(),
        rank_quantum: 1,
        max_mac_fraction: 10.0,
        threads: 2,
    }
}

#[test]
fn svd_predicted_layer_error_is_the_measured_one() {
    // One 3×3 conv, 8 → 16 channels: the predicted error is exact on the fit split.
    let g = conv_chain([1, 8, 10, 10], &[(8, 16, 3, 1, 1, 1)], false);
    let s = search(&g, &config(&[Family::Svd], &[0.9, 0.99, 0.9999, 1.0]));
    assert!(s.proposals.len() >= 3, "{:?}", s.proposals);
    assert_predicted_layer_errors_are_measured(&s);
}

#[test]
fn held_out_errors_are_the_errors_measured_on_held_out_data() {
    // One conv, no activation: the network's output is the layer's, so the pooled rel-L2 on the
    // validation samples is the layer's held-out error (1e-4 relative: f32 factors, ridge).
    for family in [Family::Svd, Family::Tucker2] {
        let g = conv_chain([1, 8, 10, 10], &[(8, 16, 3, 1, 1, 1)], false);
        let mut search = SpeedSearch::saturate(&g, &speed_config(&config(&[family], &[0.9, 0.99])));
        let lossless = search.extract_lossless(&MacCost::default()).expect("extracts");
        let mut ev = evaluator(&g, 3);
        let (l, t) = (&lossless.layers, &lossless.taps);
        let moments = collect_moments(&mut ev, &lossless.graph, l, t, Split::Fit, ALL_PIXELS, 2).expect("runs");
        let held = collect_moments(&mut ev, &lossless.graph, l, t, Split::Validation, ALL_PIXELS, 2).expect("runs");
        let (proposals, _) = search.propose(&lossless.layers, &moments, &held, &[]);
        assert!(!proposals.is_empty());
        let inputs: Vec<Vec<Tensor>> = ev.splits[&Split::Validation].iter().map(|(x, _)| x.clone()).collect();
        for p in &proposals {
            let built = apply(&search.loaded.egraph, &lossless, &[p]).expect("builds");
            let measured = pooled_rel_l2(&lossless.graph, &built, &inputs);
            let e = p.held_out_error;
            assert!((measured - e).abs() <= 1e-4 * e + 1e-6, "{p:?}: measured {measured:.6e} on held-out data");
            // Fitted on other data, the layer does worse here than on its own fit split.
            assert!(e > p.rel_error, "{p:?}");
        }
    }
}

#[test]
fn full_rank_decompositions_reproduce_the_layer() {
    let g = conv_chain([1, 8, 8, 8], &[(8, 12, 3, 1, 1, 1)], false);
    let search = SpeedSearch::saturate(&g, &speed_config(&config(&[Family::Svd], &[0.9, 0.99])));
    let lossless = search.extract_lossless(&MacCost::default()).expect("extracts");
    let mut ev = evaluator(&g, 3);
    let moments =
        collect_moments(&mut ev, &lossless.graph, &lossless.layers, &lossless.taps, Split::Fit, ALL_PIXELS, 2)
            .expect("runs");
    let (layer, sigma) = (&lossless.layers[0], moments[0].as_ref().expect("moments"));
    let w = augmented_weight(&search.loaded.egraph, layer).expect("weights");
    // The predicted error equals the measured one (the tests above); at full rank it is the
    // ridge's (1e-9 of the mean diagonal) and f64 rounding: below 1e-5.
    let svd = svd::form_at(layer, &w, sigma, 12);
    assert!(svd.rel_error < 1e-5, "svd: {}", svd.rel_error);
    let tucker = tucker2::form_at(layer, &w, sigma, 8, 12);
    assert!(tucker.rel_error < 1e-5, "tucker2: {}", tucker.rel_error);
}

#[test]
fn tucker2_predicted_layer_error_is_the_measured_one() {
    let g = conv_chain([1, 16, 8, 8], &[(16, 16, 3, 1, 1, 1)], false);
    let s = search(&g, &config(&[Family::Tucker2], &[0.9, 0.99, 1.0]));
    assert!(!s.proposals.is_empty());
    assert_predicted_layer_errors_are_measured(&s);
}

#[test]
fn error_falls_as_rank_rises() {
    let g = conv_chain([1, 16, 8, 8], &[(16, 24, 3, 1, 1, 1)], true);
    for family in [Family::Svd, Family::Tucker2] {
        let s = search(&g, &config(&[family], &[0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999]));
        let mut ps: Vec<&Proposal> = s.proposals.iter().collect();
        assert!(ps.len() >= 3, "{family:?}: {ps:?}");
        ps.sort_by_key(|p| p.ranks.clone());
        for w in ps.windows(2) {
            // Tucker pairs rise together; a larger rank never fits worse (1e-9: rounding).
            assert!(w[1].rel_error <= w[0].rel_error + 1e-9, "{family:?}: {:?} then {:?}", w[0], w[1]);
        }
    }
}

#[test]
fn tucker2_does_not_fire_on_depthwise_or_grouped_convs_nor_on_1x1() {
    let g = conv_chain([1, 16, 8, 8], &[(16, 16, 3, 1, 1, 16), (16, 16, 3, 1, 1, 2), (16, 24, 1, 1, 0, 1)], true);
    let s = search(&g, &config(&[Family::Tucker2], &[0.5, 0.9]));
    assert!(s.proposals.is_empty(), "{:?}", s.proposals);
    // SVD takes the 1×1 conv (the only one-group conv) and nothing else; the grouped convs are
    // layers too (for the int8 family), without low-rank proposals.
    let s = search(&g, &config(&[Family::Svd], &[0.5, 0.9]));
    assert!(!s.proposals.is_empty());
    assert_eq!(s.lossless.layers.len(), 3);
    let plain = |p: &Proposal| s.lossless.layers[p.layer].group() == 1 && s.lossless.layers[p.layer].kernel() == (1, 1);
    assert!(s.proposals.iter().all(plain), "{:?}", s.proposals);
}

#[test]
fn svd_does_not_fire_where_no_rank_saves_macs() {
    // 1 → 4 channels, 3×3: any useful rank (≥ 1 of 4 outputs, rounded to 8) costs more.
    let g = conv_chain([1, 1, 8, 8], &[(1, 4, 3, 1, 1, 1)], true);
    let s = search(&g, &ProposalConfig::default());
    assert!(s.proposals.is_empty(), "{:?}", s.proposals);
}

#[test]
fn proposals_never_merge_classes_that_existed_before_them() {
    let g = conv_chain([1, 16, 8, 8], &[(16, 24, 3, 1, 1, 1), (24, 24, 1, 1, 0, 1), (24, 16, 3, 2, 1, 1)], true);
    let s = search(&g, &config(&[Family::Svd, Family::Tucker2], &[0.6, 0.9, 0.99]));
    assert!(s.proposals.len() >= 6, "{:?}", s.proposals);
    let eg = &s.search.loaded.egraph;
    let canon: HashSet<Id> = s.classes_before.iter().map(|&c| eg.find(c)).collect();
    assert_eq!(canon.len(), s.classes_before.len(), "two classes that existed before the proposals were merged");
}

#[test]
fn budgeted_extraction_honours_the_budget_and_traces_the_curve() {
    let g = conv_chain([1, 16, 10, 10], &[(16, 32, 3, 1, 1, 1), (32, 32, 3, 1, 1, 1)], true);
    let s = search(&g, &config(&[Family::Svd, Family::Tucker2], &[0.6, 0.8, 0.9, 0.99]));
    let errors: Vec<f64> = s.proposals.iter().map(|p| p.rel_error * p.rel_error).collect();
    let eg = &s.search.loaded.egraph;
    let cost = MacCost::default();
    let lossless = extract_budgeted(eg, s.search.root(), &cost, &errors, 0.0, &s.search.seed).expect("extracts");
    assert!(lossless.point.proposals.is_empty() && lossless.point.error == 0.0, "{:?}", lossless.point);
    let mut last = lossless.point.latency;
    // One memo across the budgets (as the -O speed search keeps): the same answers as without.
    let mut memo = BudgetMemo::default();
    for budget in [1e-4, 1e-3, 1e-2, 4e-2, 1e-1, 1.0] {
        let b = extract_budgeted(eg, s.search.root(), &cost, &errors, budget, &s.search.seed).expect("extracts");
        let m = extract_budgeted_memo(eg, s.search.root(), &cost, &errors, budget, &s.search.seed, &mut memo)
            .expect("extracts");
        assert_eq!((&m.point, &m.curve, &m.extracted.expr), (&b.point, &b.curve, &b.extracted.expr), "budget {budget}");
        assert!(b.point.error <= budget, "budget {budget}: {:?}", b.point);
        // The curve starts at the lossless point, which every chosen point beats or equals.
        assert!(b.curve[0].lambda == f64::INFINITY && b.curve[0].proposals.is_empty(), "{:?}", b.curve[0]);
        assert!(b.point.latency <= b.curve[0].latency);
        assert!(b.point.latency <= last + 1e-9, "a larger budget gave a slower graph: {:?}", b.point);
        last = b.point.latency;
        // The chosen point is the fastest of the curve within budget.
        let fastest = b.curve.iter().filter(|p| p.error <= budget).map(|p| p.latency).fold(f64::INFINITY, f64::min);
        assert_eq!(b.point.latency, fastest);
        // Each proposal at most once per layer, and the errors are the chosen proposals' sum.
        let layers: HashSet<usize> = b.point.proposals.iter().map(|p| s.proposals[p.0 as usize].layer).collect();
        assert_eq!(layers.len(), b.point.proposals.len(), "{:?}", b.point);
        let sum: f64 = b.point.proposals.iter().map(|p| errors[p.0 as usize]).sum();
        assert!((sum - b.point.error).abs() <= 1e-12);
        let graph = verify(to_graph(&b.extracted.expr, &eg.analysis).expect("a graph")).expect("verifies");
        assert_eq!(graph.outputs().len(), 1);
    }
    assert!(last < lossless.point.latency, "the largest budget approximates something");
}

#[test]
fn dense_layers_get_svd_proposals_that_match_their_prediction() {
    let mut g = Graph::new("fc");
    let x = g.add_input("x", TensorType::f32(vec![1, 64]));
    let w = g.add_weight("w", Tensor::from_f32([48, 64], low_rank_weights(48, 64, 6, 5)).expect("shape"));
    let b = g.add_weight("b", Tensor::from_f32([48], uniform(48, 6)).expect("shape"));
    let gemm = Op::Gemm { alpha: 1.0, beta: 1.0, trans_a: false, trans_b: true };
    let y = g.add_node("conv0", gemm, &[x, w, b]).expect("infers")[0];
    g.add_output("y", y);
    let g = verify(g).expect("verifies");
    let cfg = ProposalConfig { rank_quantum: 8, ..config(&[Family::Svd], &[0.9, 0.99]) };
    let mut search = SpeedSearch::saturate(&g, &speed_config(&cfg));
    let lossless = search.extract_lossless(&MacCost::default()).expect("extracts");
    assert_eq!(lossless.layers.len(), 1);
    // 100 samples > 65 inputs: the second moment becomes a Gram matrix.
    let mut ev = evaluator(&g, 100);
    let moments =
        collect_moments(&mut ev, &lossless.graph, &lossless.layers, &lossless.taps, Split::Fit, ALL_PIXELS, 2)
            .expect("runs");
    let (proposals, _) = search.propose(&lossless.layers, &moments, &[], &[]);
    assert!(!proposals.is_empty());
    let s = Searched { search, proposals: proposals.clone(), lossless, classes_before: vec![], ev };
    assert!(proposals.iter().all(|p| p.ranks[0] % 8 == 0), "ranks snap to the quantum: {proposals:?}");
    assert_predicted_layer_errors_are_measured(&s);
}

#[test]
fn the_last_layers_sensitivity_to_rel_l2_is_one() {
    // Without a final activation the last layer's relative output error is the network's.
    let g = conv_chain([1, 8, 8, 8], &[(8, 16, 3, 1, 1, 1), (16, 16, 3, 1, 1, 1)], false);
    let mut s = search(&g, &config(&[Family::Svd], &[0.9, 0.99]));
    let sens =
        error::sensitivities(&mut s.ev, &s.search.loaded.egraph, &s.lossless, &s.proposals, PROBE).expect("runs");
    assert_eq!(sens.len(), 2);
    // The probe's rel-L2 is pooled over the same samples its layer error was fitted on, so it is
    // that error up to f32 rounding of the factors: 1e-4.
    assert!((sens[1] - 1.0).abs() < 1e-4, "{sens:?}");
    assert!(sens[0] > 0.0 && sens[0].is_finite(), "{sens:?}");
}

#[test]
fn a_layer_without_proposals_gets_no_sensitivity() {
    // Only the 1×1 conv gets SVD proposals (Tucker-2 is off); the depthwise conv gets none.
    let g = conv_chain([1, 16, 8, 8], &[(16, 16, 3, 1, 1, 16), (16, 32, 1, 1, 0, 1)], true);
    let s = search(&g, &config(&[Family::Svd], &[0.9, 0.99]));
    assert!(s.proposals.iter().all(|p| p.layer == s.proposals[0].layer));
    let mut ev = evaluator(&g, 4);
    let sens = error::sensitivities(&mut ev, &s.search.loaded.egraph, &s.lossless, &s.proposals, PROBE).expect("runs");
    let probed = s.proposals[0].layer;
    for (i, v) in sens.iter().enumerate() {
        assert_eq!(v.is_nan(), i != probed, "{sens:?}");
    }
}

#[test]
fn predicted_network_errors_track_measured_ones() {
    let g = conv_chain([1, 8, 8, 8], &[(8, 16, 3, 1, 1, 1), (16, 16, 3, 1, 1, 1)], true);
    let s = search(&g, &config(&[Family::Svd], &[0.9, 0.95, 0.99]));
    let mut ev = evaluator(&g, 4);
    let sens = error::sensitivities(&mut ev, &s.search.loaded.egraph, &s.lossless, &s.proposals, PROBE).expect("runs");
    assert!(s.proposals.len() >= 2);
    let predicted = error::predicted_errors(&s.proposals, &sens);
    for (p, e) in s.proposals.iter().zip(&predicted) {
        let measured = pooled_rel_l2(&s.lossless.graph, &forced(&s, p), &fit_inputs(&s.ev));
        let ratio = measured / e.sqrt();
        // The acceptance bar for the error model on real networks: within [0.5, 2].
        assert!((0.5..=2.0).contains(&ratio), "{p:?}: measured {measured:.4e}, predicted {:.4e}", e.sqrt());
    }
}

/// The Lagrangian's latency against the exact multiple-choice knapsack's at several budgets:
/// within 5 % (the acceptance bar), and never over budget.
fn assert_lagrangian_matches_exact(s: &Searched, cost: &impl NodeCost) {
    let eg = &s.search.loaded.egraph;
    let errors: Vec<f64> = s.proposals.iter().map(|p| p.rel_error * p.rel_error).collect();
    let layer_of: Vec<usize> = s.proposals.iter().map(|p| p.layer).collect();
    let max: f64 = errors.iter().sum();
    for budget in [max * 0.01, max * 0.05, max * 0.2, max * 0.5, max] {
        let lagrange = extract_budgeted(eg, s.search.root(), cost, &errors, budget, &s.search.seed).expect("extracts");
        let exact = exact::extract_exact(eg, s.search.root(), cost, &layer_of, &errors, budget, &s.search.seed)
            .expect("small enough");
        assert!(lagrange.point.error <= budget && exact.error <= budget);
        let ratio = lagrange.point.latency / exact.latency;
        assert!(
            (1.0 / 1.05..=1.05).contains(&ratio),
            "budget {budget:.3e}: Lagrangian {:?} vs exact {exact:?}; curve {:?}; errors {errors:?}",
            lagrange.point,
            lagrange.curve
        );
    }
}

#[test]
fn budgeted_extraction_is_within_5_percent_of_the_exact_solver_on_a_chain() {
    let g = conv_chain([1, 16, 10, 10], &[(16, 32, 3, 1, 1, 1), (32, 32, 3, 1, 1, 1), (32, 16, 1, 1, 0, 1)], true);
    let s = search(&g, &config(&[Family::Svd, Family::Tucker2], &[0.6, 0.8, 0.9, 0.95, 0.99]));
    assert!(s.proposals.len() >= 8, "{:?}", s.proposals);
    assert_lagrangian_matches_exact(&s, &MacCost::default());
}

#[test]
fn budgeted_extraction_is_within_5_percent_of_the_exact_solver_on_mnist_and_svhn() {
    for stem in ["mnist_cnn", "svhn_cnn"] {
        let Some(path) = cnnc_tests::model_path(stem) else { return };
        let graph = cnnc::onnx::import_file(
            &path,
            &cnnc::onnx::ImportOptions {
                input_shapes: vec![(
                    "input".into(),
                    if stem == "mnist_cnn" { vec![1, 1, 28, 28] } else { vec![1, 3, 32, 32] },
                )],
                ..Default::default()
            },
        )
        .expect("imports");
        let ty = graph.node(graph.inputs()[0]).outputs[0].clone();
        // Normalised-image-like inputs: what matters here is the pricing, not the accuracy.
        let samples: Vec<cnnc_tests::Sample> = (0..3)
            .map(|i| {
                let v = uniform(ty.numel(), 500 + i).iter().map(|x| 2.0 * x).collect();
                (vec![Tensor::from_f32(ty.shape.clone(), v).expect("shape")], None)
            })
            .collect();
        let mut ev = ReferenceEvaluator { splits: HashMap::from([(Split::Fit, samples)]) };
        let cfg = ProposalConfig::default();
        let mut search = SpeedSearch::saturate(&graph, &speed_config(&cfg));
        let lossless = search.extract_lossless(&MacCost::default()).expect("extracts");
        let moments = collect_moments(&mut ev, &lossless.graph, &lossless.layers, &lossless.taps, Split::Fit, 64, 2)
            .expect("runs");
        let (proposals, _) = search.propose(&lossless.layers, &moments, &[], &[]);
        assert!(!proposals.is_empty(), "{stem}");
        let s = Searched { search, proposals, lossless, classes_before: vec![], ev };
        assert_lagrangian_matches_exact(&s, &MacCost::default());
    }
}

#[test]
fn svd_and_tucker2_fire_on_a_conv_and_relu_fuses_into_the_last_factor() {
    // conv 3×3 16 → 24 then ReLU; one proposal per family (the lowest-rank one) forced.
    let g = conv_chain([1, 16, 8, 8], &[(16, 24, 3, 1, 1, 1)], true);
    for (family, name) in [(Family::Svd, "svd_fires"), (Family::Tucker2, "tucker2_fires")] {
        let s = search(&g, &config(&[family], &[0.99]));
        let p = s.proposals.first().expect("a proposal");
        let graph = forced(&s, p);
        insta::assert_snapshot!(name, graph.display_without_weights().to_string());
    }
}

#[test]
fn apply_builds_what_extraction_of_the_same_choice_computes() {
    // Two 3×3 convs, each fused with its ReLU in the lossless graph: `apply` must move the
    // epilogue onto the last factor. Same weights, same ops: equal within f32 reordering (1e-5).
    let g = conv_chain([1, 8, 8, 8], &[(8, 16, 3, 1, 1, 1), (16, 16, 3, 1, 1, 1)], true);
    let s = search(&g, &config(&[Family::Svd, Family::Tucker2], &[0.9, 0.99]));
    let eg = &s.search.loaded.egraph;
    assert!(s.proposals.iter().any(|p| p.layer == 0) && s.proposals.iter().any(|p| p.layer == 1));
    let inputs = fit_inputs(&s.ev);
    for p in &s.proposals {
        let built = apply(eg, &s.lossless, &[p]).expect("builds");
        let e = pooled_rel_l2(&forced(&s, p), &built, &inputs);
        assert!(e < 1e-5, "{p:?}: apply vs forced extraction rel-L2 {e:e}");
        // The factors replaced the layer: its MACs are the proposal's.
        let macs = |g: &VerifiedGraph| -> u64 {
            g.node_ids()
                .map(|n| {
                    let ins = g.node_inputs(n);
                    let types: Vec<&TensorType> = ins.iter().map(|v| g.value_type(v)).collect();
                    cnnc_ir::node_macs(&g.node(n).op, &types, &g.node(n).outputs)
                })
                .sum()
        };
        let layer_macs = s.lossless.layers[p.layer].macs();
        assert_eq!(macs(&built), macs(&s.lossless.graph) - layer_macs + p.macs, "{p:?}");
    }
    // A choice for both layers at once runs, and two proposals for one layer are refused.
    let (a, b) =
        (s.proposals.iter().find(|p| p.layer == 0).unwrap(), s.proposals.iter().find(|p| p.layer == 1).unwrap());
    let both = apply(eg, &s.lossless, &[a, b]).expect("builds");
    assert!(pooled_rel_l2(&s.lossless.graph, &both, &inputs) > 0.0);
    let again = s.proposals.iter().find(|q| q.layer == 0 && q.id != a.id).expect("a second proposal for layer 0");
    assert_eq!(
        apply(eg, &s.lossless, &[a, again]).unwrap_err(),
        ApplyError::TwoForOneLayer(s.lossless.layers[0].name.clone())
    );
}

/// Sets `new` into the e-graph's weight store.
fn set_weights(s: &mut Searched, new: &[refit::NewWeight]) {
    for n in new {
        s.search.loaded.egraph.analysis.weights[n.weight.0 as usize] = n.tensor.clone();
    }
}

const REFIT_ALL: refit::RefitData = refit::RefitData { max_samples: usize::MAX, max_pixels: ALL_PIXELS };

#[test]
fn refit_of_a_lone_proposal_reproduces_its_own_fit() {
    // One approximated layer, every position sampled: the asymmetric problem is the symmetric
    // one the proposal was fitted with, so the weights come back equal up to f32 rounding and
    // the ridge (1e-4 relative).
    let g = conv_chain([1, 8, 8, 8], &[(8, 16, 3, 1, 1, 1), (16, 16, 3, 1, 1, 1)], true);
    let mut s = search(&g, &config(&[Family::Svd, Family::Tucker2], &[0.9]));
    for p in s.proposals.clone() {
        let new = refit::refit(&mut s.ev, &s.search.loaded.egraph, &s.lossless, &[&p], REFIT_ALL).expect("runs");
        assert_eq!(new.len(), 2, "{p:?}");
        for n in &new {
            let old = s.search.loaded.egraph.analysis.weights[n.weight.0 as usize].clone();
            let e = rel_l2(&n.tensor, &old);
            assert!(e < 1e-4, "{p:?}: refit moved weight {:?} by rel-L2 {e:e}", n.weight);
        }
    }
}

#[test]
fn refit_of_a_mix_lowers_the_network_error() {
    // Both convs approximated: the second layer's input is off, and the refit fits its last
    // factor to the original outputs from the approximated input. The network's output is the
    // second layer's (no activation after it), whose error on the fit split — the data the
    // least squares solve on, every position — the refit minimises: it must fall (the ridge,
    // 1e-9 of the Gram's diagonal, and f32 factors cost far less than the 0.1 % required).
    let g = conv_chain([1, 8, 8, 8], &[(8, 16, 3, 1, 1, 1), (16, 16, 3, 1, 1, 1)], false);
    let mut s = search(&g, &config(&[Family::Svd], &[0.9, 0.99]));
    // The first layer at its lowest rank, the second at its highest (room to correct).
    let a = s.proposals.iter().find(|p| p.layer == 0).expect("a proposal for layer 0").clone();
    let b = s.proposals.iter().rfind(|p| p.layer == 1).expect("a proposal for layer 1").clone();
    let inputs = fit_inputs(&s.ev);
    let before = apply(&s.search.loaded.egraph, &s.lossless, &[&a, &b]).expect("builds");
    let e_before = pooled_rel_l2(&s.lossless.graph, &before, &inputs);
    let new = refit::refit(&mut s.ev, &s.search.loaded.egraph, &s.lossless, &[&a, &b], REFIT_ALL).expect("runs");
    set_weights(&mut s, &new);
    let after = apply(&s.search.loaded.egraph, &s.lossless, &[&a, &b]).expect("builds");
    let e_after = pooled_rel_l2(&s.lossless.graph, &after, &inputs);
    assert!(e_after < 0.999 * e_before, "network rel-L2 {e_before:.4e} before the refit, {e_after:.4e} after");
}
