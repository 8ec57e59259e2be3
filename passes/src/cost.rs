//! The cost model: kernel latencies measured (or estimated) by a [`CostOracle`] that `compiler`
//! implements over the runtime, kept in a [`TableCost`] that prices e-nodes for extraction and
//! IR nodes for the report.
//!
//! A kernel is identified by a [`KernelKey`]: the op with its attributes, each operand's type
//! and whether it is a constant of the weight store (the runtime packs constant weights at load
//! time, so a conv whose weights are computed at run time is a different kernel), the output
//! types, and the thread count. Its [`KernelKey::text`] is exact and deterministic (the `Debug`
//! text of `Op`, as the attribute table uses) and serves as the cache key. Latencies are in
//! **microseconds** of kernel time for one launch.
//!
//! "Constant" means the operand's e-class holds a `(weight wN)` node (in an IR graph: the
//! operand is produced by an `Op::Weight` node), not the analysis' `weights_only`: a class
//! computed from weights alone by an op that was not folded is computed at run time, and its
//! consumer sees an ordinary input buffer.

use std::collections::BTreeMap;

use cnnc_ir::{Graph, NodeId, Op, TensorType};
use egg::EGraph;

use crate::analysis::CnnAnalysis;
use crate::analysis::{attr_of, weight_of};
use crate::extract::NodeCost;
use crate::lang::Cnn;

/// The price, in µs, of a kernel the oracle could not time: high enough that extraction takes
/// any measurable alternative, finite so that a graph whose only form is unmeasurable (an op
/// without a native kernel, which `cnnc run` executes with the reference interpreter) still
/// extracts.
pub const UNMEASURABLE_US: f64 = 1e9;

/// One operand of a kernel.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Operand {
    pub ty: TensorType,
    /// A constant of the weight store, available (and packed) at load time.
    pub constant: bool,
}

/// What identifies a kernel's latency: op and attributes, operands, outputs, threads.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelKey {
    pub op: Op,
    pub inputs: Vec<Operand>,
    pub outputs: Vec<TensorType>,
    /// Threads the kernel may use.
    pub threads: usize,
}

/// A deterministic stand-in for a measured oracle (tests, and comparisons with measurement):
/// [`crate::MacCost`]'s estimate, multiplies ([`cnnc_ir::node_multiplies`]: fewer for a
/// Winograd conv; a quantized op's count a quarter, as one 32-bit lane of an int8 dot-product
/// instruction does four u8×i8 products where an f32 lane does one) plus 0.25 per output
/// byte, in its own unit.
pub fn mac_estimate(key: &KernelKey) -> Result<f64, CostError> {
    let inputs: Vec<&TensorType> = key.inputs.iter().map(|o| &o.ty).collect();
    let per_mac = if matches!(key.op, Op::QLinear(_)) { 0.25 } else { 1.0 };
    let macs = per_mac * cnnc_ir::node_multiplies(&key.op, &inputs, &key.outputs) as f64;
    let bytes: f64 = key.outputs.iter().map(|t| (t.numel() * t.dtype.size_bytes()) as f64).sum();
    Ok(macs + 0.25 * bytes)
}

impl KernelKey {
    /// The exact, deterministic text form, e.g.
    /// `Unary(Relu) (f32[1,8,4,4]) -> (f32[1,8,4,4]) threads=1`; constant operands are marked
    /// `const`.
    pub fn text(&self) -> String {
        let inputs: Vec<String> =
            self.inputs.iter().map(|o| if o.constant { format!("const {}", o.ty) } else { o.ty.to_string() }).collect();
        let outputs: Vec<String> = self.outputs.iter().map(ToString::to_string).collect();
        // `Op`'s `Debug` text is exact (shortest round-trip floats) and deterministic.
        format!("{:?} ({}) -> ({}) threads={}", self.op, inputs.join(", "), outputs.join(", "), self.threads)
    }

    /// The key of an op e-node; `None` for sources, leaves, the root, and malformed nodes.
    pub fn of_enode(egraph: &EGraph<Cnn, CnnAnalysis>, node: &Cnn, threads: usize) -> Option<KernelKey> {
        let children = node.op_children()?;
        let attr = attr_of(egraph, children[0])?;
        let inputs = children[1..]
            .iter()
            .map(|&c| {
                let ty = egraph[c].data.types.first()?.clone();
                Some(Operand { ty, constant: weight_of(egraph, c).is_some() })
            })
            .collect::<Option<Vec<_>>>()?;
        // Scales and zero points do not change a kernel's time: one key for every layer of a shape.
        Some(KernelKey { op: attr.op.timing_form(), inputs, outputs: attr.outputs.clone(), threads })
    }

    /// The key of IR node `id`; `None` for sources (inputs, weights).
    pub fn of_node(graph: &Graph, id: NodeId, threads: usize) -> Option<KernelKey> {
        let node = graph.node(id);
        if node.op.is_source() {
            return None;
        }
        let inputs = graph
            .node_inputs(id)
            .iter()
            .map(|v| Operand { ty: graph.value_type(v).clone(), constant: graph.weight_of(v).is_some() })
            .collect();
        Some(KernelKey { op: node.op.timing_form(), inputs, outputs: node.outputs.clone(), threads })
    }
}

/// Why a kernel could not be timed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CostError {
    #[error("cannot time the `{op}` kernel {key}: {reason}")]
    Unmeasurable { op: String, key: String, reason: String },
}

/// Kernel latencies on demand: `compiler` times JIT kernels (with a disk cache) or estimates
/// them from a measured roofline.
pub trait CostOracle {
    /// The latency in µs of each key's kernel, in order. Called once per batch of keys the
    /// table lacks, so an implementation can measure them together; a key it cannot time gets
    /// an error (naming the op), the others still get their latency.
    fn latencies(&mut self, keys: &[KernelKey]) -> Vec<Result<f64, CostError>>;
}

impl<F: FnMut(&KernelKey) -> Result<f64, CostError>> CostOracle for F {
    fn latencies(&mut self, keys: &[KernelKey]) -> Vec<Result<f64, CostError>> {
        keys.iter().map(self).collect()
    }
}

/// Kernel latencies by [`KernelKey::text`], filled from a [`CostOracle`] and used to price
/// e-nodes ([`NodeCost`]) and IR nodes. Every entry is kept, so [`TableCost::hash`] names
/// exactly the numbers a run's decisions depended on.
#[derive(Clone, Debug)]
pub struct TableCost {
    threads: usize,
    entries: BTreeMap<String, Result<f64, CostError>>,
}

impl TableCost {
    /// An empty table for kernels running on `threads` threads.
    pub fn new(threads: usize) -> TableCost {
        TableCost { threads: threads.max(1), entries: BTreeMap::new() }
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Asks `oracle`, in one batch, for every op e-node of `egraph` the table lacks.
    pub fn add_egraph(&mut self, egraph: &EGraph<Cnn, CnnAnalysis>, oracle: &mut dyn CostOracle) {
        let keys = egraph
            .classes()
            .flat_map(|c| c.nodes.iter())
            .filter(|n| !reads_dequantized_weight(egraph, n))
            .filter_map(|n| KernelKey::of_enode(egraph, n, self.threads));
        self.add(keys.collect(), oracle);
    }

    /// Asks `oracle`, in one batch, for every node of `graph` the table lacks.
    pub fn add_graph(&mut self, graph: &Graph, oracle: &mut dyn CostOracle) {
        let keys = graph.node_ids().filter_map(|id| KernelKey::of_node(graph, id, self.threads));
        self.add(keys.collect(), oracle);
    }

    fn add(&mut self, keys: Vec<KernelKey>, oracle: &mut dyn CostOracle) {
        let mut missing: BTreeMap<String, KernelKey> = BTreeMap::new();
        for k in keys {
            let text = k.text();
            if !self.entries.contains_key(&text) {
                missing.entry(text).or_insert(k);
            }
        }
        if missing.is_empty() {
            return;
        }
        let (texts, keys): (Vec<String>, Vec<KernelKey>) = missing.into_iter().unzip();
        let got = oracle.latencies(&keys);
        for (i, text) in texts.into_iter().enumerate() {
            let value = got.get(i).cloned().unwrap_or_else(|| {
                Err(CostError::Unmeasurable {
                    op: keys[i].op.name().to_owned(),
                    key: text.clone(),
                    reason: "the oracle returned no latency for it".to_owned(),
                })
            });
            self.entries.insert(text, value);
        }
    }

    /// The latency of `key` in µs: `Some` if the table holds a measurement.
    pub fn price(&self, key: &KernelKey) -> Option<f64> {
        self.entries.get(&key.text()).and_then(|r| r.as_ref().ok().copied())
    }

    /// The price of IR node `id` in µs: 0 for sources, `None` if the table has no measurement.
    pub fn node_cost(&self, graph: &Graph, id: NodeId) -> Option<f64> {
        match KernelKey::of_node(graph, id, self.threads) {
            None => Some(0.0),
            Some(k) => self.price(&k),
        }
    }

    /// The predicted kernel time of `graph` in µs: the sum of its nodes' prices, unmeasurable
    /// ones at [`UNMEASURABLE_US`].
    pub fn graph_cost(&self, graph: &Graph) -> f64 {
        graph.node_ids().map(|id| self.node_cost(graph, id).unwrap_or(UNMEASURABLE_US)).sum()
    }

    /// The keys the oracle could not time, with why.
    pub fn failures(&self) -> impl Iterator<Item = &CostError> {
        self.entries.values().filter_map(|r| r.as_ref().err())
    }

    /// Entries (measured or failed).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// FNV-1a (64-bit) of every entry in key order — the key text, then the latency's bits or
    /// the error text — as 16 hex digits: equal tables give equal hashes on every platform.
    pub fn hash(&self) -> String {
        let mut h = Fnv::default();
        for (k, v) in &self.entries {
            h.write(k.as_bytes());
            h.write(b"\t");
            match v {
                Ok(us) => h.write(&us.to_bits().to_le_bytes()),
                Err(e) => h.write(e.to_string().as_bytes()),
            }
            h.write(b"\n");
        }
        format!("{:016x}", h.0)
    }
}

impl NodeCost for TableCost {
    fn cost(&self, egraph: &EGraph<Cnn, CnnAnalysis>, node: &Cnn) -> f64 {
        if node.op_children().is_none() {
            return 0.0;
        }
        if reads_dequantized_weight(egraph, node) {
            return UNMEASURABLE_US;
        }
        let Some(key) = KernelKey::of_enode(egraph, node, self.threads) else { return f64::INFINITY };
        match self.entries.get(&key.text()) {
            Some(Ok(us)) => *us,
            Some(Err(_)) => UNMEASURABLE_US,
            // Not asked for: `add_egraph` was not run on this e-graph (a caller bug); such a
            // node is never chosen.
            None => f64::INFINITY,
        }
    }
}

/// Whether `node` reads an operand that is a dequantized constant not folded into one (an int8
/// proposal's `dequantize(w)`, which only the `qdq` rules consume): such a node would compute
/// its weights at run time, every run — never the form to run, so it is priced as
/// unmeasurable without being timed (timing an f32 conv on run-time weights takes seconds on a
/// large layer).
fn reads_dequantized_weight(egraph: &EGraph<Cnn, CnnAnalysis>, node: &Cnn) -> bool {
    let Some(children) = node.op_children() else { return false };
    children.iter().skip(1).any(|&c| {
        let class = &egraph[c];
        class.data.weights_only
            && !class.nodes.iter().any(|n| matches!(n, Cnn::Weight(_)))
            && class.nodes.iter().any(|n| matches!(n, Cnn::Dequantize(_)))
    })
}

/// 64-bit FNV-1a: a small, stable hash (std's `DefaultHasher` may change between releases).
pub struct Fnv(pub u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::to_egraph;
    use crate::extract::extract_dag;
    use cnnc_ir::verify;

    const CONV_RELU: &str = r#"graph "g" {
  %x = input f32[1,2,4,4]
  %w = weight f32[3,2,1,1] [1, 2, 3, 4, 5, 6]
  %c = conv{kernel=[1, 1], strides=[1, 1], dilations=[1, 1], pads=[0, 0, 0, 0], group=1}(%x, %w) : f32[1,3,4,4]
  %r = relu(%c) : f32[1,3,4,4]
  %s = reshape{shape=[1, 48]}(%r) : f32[1,48]
  output "y" = %s
}"#;

    fn graph() -> cnnc_ir::VerifiedGraph {
        verify(CONV_RELU.parse::<Graph>().expect("parses")).expect("verifies")
    }

    /// An oracle pricing each op kind by name, counting the keys it is asked for.
    fn by_op(asked: &mut Vec<String>) -> impl FnMut(&KernelKey) -> Result<f64, CostError> + '_ {
        move |k: &KernelKey| {
            asked.push(k.text());
            match k.op.name() {
                "conv" => Ok(10.0),
                "relu" => Ok(2.0),
                "reshape" => Ok(0.0),
                other => Err(CostError::Unmeasurable { op: other.into(), key: k.text(), reason: "test".into() }),
            }
        }
    }

    #[test]
    fn keys_mark_constant_operands_and_threads() {
        let g = graph();
        let conv = g.node_ids().find(|&id| g.node(id).op.name() == "conv").expect("a conv");
        let text = KernelKey::of_node(&g, conv, 2).expect("a kernel").text();
        assert!(text.starts_with("Conv(ConvAttrs {"), "{text}");
        assert!(text.ends_with("(f32[1,2,4,4], const f32[3,2,1,1]) -> (f32[1,3,4,4]) threads=2"), "{text}");
        let input = g.inputs()[0];
        assert_eq!(KernelKey::of_node(&g, input, 1), None, "sources are not kernels");
    }

    #[test]
    fn egraph_and_graph_keys_agree_and_each_is_asked_once() {
        let g = graph();
        let loaded = to_egraph(&g);
        let mut asked = Vec::new();
        let mut table = TableCost::new(1);
        table.add_egraph(&loaded.egraph, &mut by_op(&mut asked));
        assert_eq!(asked.len(), 3, "{asked:?}");
        // The IR graph's nodes have the same keys: nothing new to ask.
        table.add_graph(&g, &mut by_op(&mut asked));
        table.add_egraph(&loaded.egraph, &mut by_op(&mut asked));
        assert_eq!(asked.len(), 3, "{asked:?}");
        assert_eq!(table.graph_cost(&g), 12.0);
        let (_, cost) = extract_dag(&loaded.egraph, loaded.root, &table).expect("extracts");
        assert_eq!(cost, 12.0);
    }

    #[test]
    fn unmeasurable_kernels_are_priced_high_and_listed() {
        let g = graph();
        let mut asked = Vec::new();
        let mut table = TableCost::new(1);
        let mut oracle = |k: &KernelKey| match k.op.name() {
            "relu" => Err(CostError::Unmeasurable { op: "relu".into(), key: k.text(), reason: "no kernel".into() }),
            _ => by_op(&mut asked)(k),
        };
        table.add_graph(&g, &mut oracle);
        assert_eq!(table.graph_cost(&g), 10.0 + UNMEASURABLE_US);
        let failures: Vec<String> = table.failures().map(ToString::to_string).collect();
        assert_eq!(failures.len(), 1);
        assert!(failures[0].contains("`relu`") && failures[0].contains("no kernel"), "{failures:?}");
    }

    #[test]
    fn the_hash_follows_the_entries() {
        let g = graph();
        let mut a = TableCost::new(1);
        a.add_graph(&g, &mut by_op(&mut Vec::new()));
        let mut b = TableCost::new(1);
        b.add_graph(&g, &mut by_op(&mut Vec::new()));
        assert_eq!(a.hash(), b.hash());
        assert_eq!(a.hash().len(), 16);
        let mut c = TableCost::new(1);
        c.add_graph(&g, &mut |k: &KernelKey| by_op(&mut Vec::new())(k).map(|us| us * 1.5));
        assert_ne!(a.hash(), c.hash());
    }
}
