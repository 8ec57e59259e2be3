//! Per-layer summary of a graph: shapes, parameters and multiply-accumulates.

use std::fmt::Write as _;

use cnnc_ir::{DType, Graph, TensorType, node_macs};
use serde::Serialize;

/// One row of `cnnc inspect`.
#[derive(Debug, Clone, Serialize)]
pub struct Layer {
    pub name: String,
    pub op: String,
    pub inputs: Vec<Vec<usize>>,
    pub outputs: Vec<Vec<usize>>,
    /// f32 weight elements this layer reads directly.
    pub params: usize,
    pub macs: u64,
}

/// What `cnnc inspect --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub model: String,
    pub inputs: Vec<(String, Vec<usize>)>,
    pub outputs: Vec<(String, Vec<usize>)>,
    /// MACs of Conv, ConvTranspose, Gemm and MatMul (MANIFEST.md § Exact MAC counts).
    pub total_macs: u64,
    /// f32 weight elements in the graph's weight store.
    pub total_params: usize,
    pub layers: Vec<Layer>,
}

/// Summarizes every non-source node of `graph`, in topological order.
pub fn summarize(graph: &Graph, model: &str) -> Summary {
    let order = graph.topo_order().unwrap_or_else(|_| graph.node_ids().collect());
    let mut layers = Vec::new();
    for id in order {
        let node = graph.node(id);
        if node.op.is_source() {
            continue;
        }
        let ins = graph.node_inputs(id);
        let in_types: Vec<&TensorType> = ins.iter().map(|v| graph.value_type(v)).collect();
        let params =
            ins.iter().filter_map(|v| graph.weight_of(v)).filter(|t| t.dtype() == DType::F32).map(|t| t.numel()).sum();
        layers.push(Layer {
            name: node.name.clone(),
            op: node.op.name().to_owned(),
            inputs: in_types.iter().map(|t| t.shape.clone()).collect(),
            outputs: node.outputs.iter().map(|t| t.shape.clone()).collect(),
            params,
            macs: node_macs(&node.op, &in_types, &node.outputs),
        });
    }
    let inputs = graph
        .inputs()
        .iter()
        .map(|&id| (graph.node(id).name.clone(), graph.node(id).outputs[0].shape.clone()))
        .collect();
    let outputs = graph.outputs().iter().map(|o| (o.name.clone(), graph.value_type(&o.value).shape.clone())).collect();
    Summary {
        model: model.to_owned(),
        inputs,
        outputs,
        total_macs: layers.iter().map(|l| l.macs).sum(),
        total_params: graph.n_params(),
        layers,
    }
}

fn shapes(list: &[Vec<usize>]) -> String {
    list.iter()
        .map(|s| format!("[{}]", s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Human-readable count: 1234567 → "1.23 M".
pub fn si(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.2} k", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2} M", n as f64 / 1e6),
        _ => format!("{:.2} G", n as f64 / 1e9),
    }
}

/// The table `cnnc inspect` prints.
pub fn render_table(s: &Summary) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "model {}", s.model);
    for (n, sh) in &s.inputs {
        let _ = writeln!(out, "  input  {n}: {}", shapes(std::slice::from_ref(sh)));
    }
    for (n, sh) in &s.outputs {
        let _ = writeln!(out, "  output {n}: {}", shapes(std::slice::from_ref(sh)));
    }
    let rows: Vec<[String; 6]> = s
        .layers
        .iter()
        .map(|l| {
            [
                l.name.clone(),
                l.op.clone(),
                shapes(&l.inputs),
                shapes(&l.outputs),
                if l.params == 0 { "-".into() } else { l.params.to_string() },
                if l.macs == 0 { "-".into() } else { l.macs.to_string() },
            ]
        })
        .collect();
    let header = ["layer", "op", "inputs", "outputs", "params", "MACs"];
    let mut width = header.map(str::len);
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: [&str; 6]| {
        let mut l = String::new();
        for (i, (c, w)) in cells.iter().zip(width).enumerate() {
            if i >= 4 {
                let _ = write!(l, "{c:>w$}  ");
            } else {
                let _ = write!(l, "{c:<w$}  ");
            }
        }
        l.trim_end().to_owned()
    };
    let _ = writeln!(out, "{}", line(header));
    for r in &rows {
        let _ = writeln!(out, "{}", line([&r[0], &r[1], &r[2], &r[3], &r[4], &r[5]].map(String::as_str)));
    }
    let _ = writeln!(
        out,
        "total: {} layers, {} params ({}), {} MACs ({})",
        s.layers.len(),
        s.total_params,
        si(s.total_params as u64),
        s.total_macs,
        si(s.total_macs)
    );
    out
}
