//! The cost model: extraction follows the cost table, not MAC counts, where they disagree; the
//! measured oracle's disk cache round-trips, survives corruption and makes a warm run measure
//! nothing.

use std::path::PathBuf;

use cnnc::cost::{CostCache, Machine, MeasuredOracle};
use cnnc_ir::{Graph, Op, VerifiedGraph, verify};
use cnnc_passes::{CostError, KernelKey, Limits, MacCost, TableCost, exact_rules, extract_dag, saturate, to_egraph};

/// A conv without bias feeding an (unfolded) BatchNorm: the BN-fold rule offers a conv with a
/// bias instead, which has the same MACs and no BatchNorm pass, so MAC counting always folds.
const CONV_BN: &str = r#"graph "conv_bn" {
  %x = input f32[1,2,6,6]
  %w = weight f32[4,2,1,1] [0.1, -0.2, 0.3, 0.4, -0.5, 0.6, 0.7, -0.8]
  %s = weight f32[4] [1.0, 0.5, 2.0, 1.5]
  %t = weight f32[4] [0.1, 0.2, 0.3, 0.4]
  %m = weight f32[4] [0.0, 0.1, -0.1, 0.2]
  %v = weight f32[4] [1.0, 2.0, 0.5, 1.0]
  %c = conv{kernel=[1, 1], strides=[1, 1], dilations=[1, 1], pads=[0, 0, 0, 0], group=1}(%x, %w) : f32[1,4,6,6]
  %y = batchnorm{epsilon=1e-5}(%c, %s, %t, %m, %v) : f32[1,4,6,6]
  output "y" = %y
}"#;

fn conv_bn() -> VerifiedGraph {
    verify(CONV_BN.parse::<Graph>().expect("parses")).expect("verifies")
}

/// Runs the exact optimizer with a table filled by `price` (µs per kernel).
fn optimize_with(g: &VerifiedGraph, price: impl Fn(&KernelKey) -> f64) -> Graph {
    let mut table = TableCost::new(1);
    let mut oracle = |k: &KernelKey| -> Result<f64, CostError> { Ok(price(k)) };
    let (out, _) = cnnc_passes::optimize_exact(g, &cnnc_passes::OptConfig::lossless(), &mut table, &mut oracle)
        .expect("optimizes");
    out
}

fn batchnorms(g: &Graph) -> usize {
    g.node_ids().filter(|&id| matches!(g.node(id).op, Op::BatchNorm { .. })).count()
}

fn is_conv_with_bias(k: &KernelKey) -> bool {
    matches!(k.op, Op::Conv(_)) && k.inputs.len() == 3
}

#[test]
fn mac_counting_folds_the_batchnorm() {
    let (loaded, _) = saturate(to_egraph(&conv_bn()), &exact_rules(), Limits::default());
    let (expr, _) = extract_dag(&loaded.egraph, loaded.root, &MacCost::default()).expect("extracts");
    let g = cnnc_passes::to_graph(&expr, &loaded.egraph.analysis).expect("a graph");
    assert_eq!(batchnorms(&g), 0);
}

#[test]
fn the_extractor_follows_the_measurement_where_flops_disagree() {
    let g = conv_bn();
    // A measurement that says the biased conv is slow (as a kernel without a fused bias
    // epilogue could be): conv 10 µs + BatchNorm 5 µs beats the folded conv's 40 µs, though
    // it has more work by any MAC or byte count.
    let slow_bias = optimize_with(&g, |k| {
        if is_conv_with_bias(k) {
            40.0
        } else if matches!(k.op, Op::Conv(_)) {
            10.0
        } else {
            5.0
        }
    });
    assert_eq!(batchnorms(&slow_bias), 1, "the measured-cheaper conv + BatchNorm is kept:\n{slow_bias}");
    // And the reverse: the folded conv measured cheaper is taken.
    let fast_bias = optimize_with(&g, |k| {
        if is_conv_with_bias(k) {
            11.0
        } else if matches!(k.op, Op::Conv(_)) {
            10.0
        } else {
            5.0
        }
    });
    assert_eq!(batchnorms(&fast_bias), 0, "the measured-cheaper folded conv is taken:\n{fast_bias}");
}

/// A fresh, empty folder for one test.
fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cnnc-cost-{tag}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// Prices `g`'s kernels through a measured oracle over the cache at `path`; returns the table,
/// how many kernels were measured, and the warnings.
fn price(g: &VerifiedGraph, path: &std::path::Path) -> (TableCost, usize, Vec<String>) {
    let mut warnings = Vec::new();
    let mut cache = CostCache::open(path, Machine::this(), &mut |w| warnings.push(w));
    let mut table = TableCost::new(1);
    let stats = {
        // A named cache file: used as it is (no provisional entry is timed again).
        let mut oracle = MeasuredOracle::new(&mut cache, false);
        table.add_graph(g, &mut oracle);
        oracle.stats
    };
    assert_eq!(stats.failed, 0);
    let measured = stats.measured;
    cache.save().expect("saves");
    (table, measured, warnings)
}

#[test]
fn the_cache_round_trips_and_a_warm_run_measures_nothing() {
    let dir = temp_dir("warm");
    let path = dir.join("sub").join("cost.json");
    let g = conv_bn();
    let (cold, measured, warnings) = price(&g, &path);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(measured, 2, "the conv and the BatchNorm");
    assert!(path.is_file(), "the cache file (and its folder) is written");
    let (warm, measured, warnings) = price(&g, &path);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(measured, 0, "a warm run measures nothing");
    // The same numbers, bit for bit: times are stored as integer nanoseconds.
    assert_eq!(warm.hash(), cold.hash());
    assert_eq!(warm.graph_cost(&g), cold.graph_cost(&g));
    assert!(cold.graph_cost(&g) > 0.0);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_corrupt_or_foreign_cache_is_ignored_with_a_warning_and_rewritten() {
    let dir = temp_dir("corrupt");
    let path = dir.join("cost.json");
    let g = conv_bn();
    std::fs::write(&path, b"{\"format\": 1, \"kernels\": {\"x\": -3").expect("write");
    let (_, measured, warnings) = price(&g, &path);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains(&path.display().to_string()) && warnings[0].contains("not a cnnc cost cache"));
    assert_eq!(measured, 2);
    let (_, measured, warnings) = price(&g, &path);
    assert!(warnings.is_empty() && measured == 0, "rewritten whole: {warnings:?}");

    // The same file from another CPU is not trusted.
    let text = std::fs::read_to_string(&path).expect("read");
    let cpu = Machine::this().cpu;
    let foreign = text.replacen(
        &format!("\"cpu\": {}", serde_json::to_string(&cpu).expect("json")),
        "\"cpu\": \"Other CPU 9000\"",
        1,
    );
    assert_ne!(foreign, text);
    std::fs::write(&path, foreign).expect("write");
    let (_, measured, warnings) = price(&g, &path);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("Other CPU 9000"), "{warnings:?}");
    assert_eq!(measured, 2);

    // Nor one whose times were taken another way (here: before the timing method was
    // versioned), which also lives in another default file.
    let mut file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
    let machine = file["machine"].as_object_mut().expect("a machine object");
    assert_eq!(machine.remove("timing"), Some(serde_json::json!(cnnc::cost::TIMING_METHOD)));
    std::fs::write(&path, serde_json::to_string(&file).expect("json")).expect("write");
    let (_, measured, warnings) = price(&g, &path);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(measured, 2);
    let old_machine = Machine { timing: 1, ..Machine::this() };
    assert_ne!(old_machine.id(), Machine::this().id(), "the default file name changes with the method");
    std::fs::remove_dir_all(&dir).ok();
}
