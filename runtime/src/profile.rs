//! Per-kernel timing of one run ([`Model::run_profiled`](crate::Model::run_profiled)).

use std::time::Duration;

use cnnc_ir::{Op, TensorType, node_macs};

/// One kernel launch of a profiled run, in execution order.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerTime {
    /// The node's name.
    pub name: String,
    /// The op's kebab-case name (as `cnnc inspect` prints it).
    pub op: &'static str,
    /// Which kernel family ran, e.g. `conv-direct`, `conv-depthwise`, `gemv`.
    pub kernel: &'static str,
    /// Multiply-accumulates of the node ([`cnnc_ir::node_macs`]).
    pub macs: u64,
    /// Shape of the node's first output.
    pub output_shape: Vec<usize>,
    /// Spatial kernel size of a conv or pool (`[kh, kw]` in 2-D), empty for other ops.
    pub window: Vec<usize>,
    /// Independent work units of the kernel (threads share a launch by units).
    pub units: u64,
    /// Threads that shared this launch (1 when it ran on the calling thread alone).
    pub threads: usize,
    /// Wall-clock time of the kernel call (all threads' shares of it, when split).
    pub time: Duration,
}

/// The per-kernel times of one run: one row per kernel launch, in execution order. Views
/// (reshapes, slab splits) and in-place concats run no kernel and have no row.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Profile {
    pub layers: Vec<LayerTime>,
}

impl Profile {
    /// Sum of the kernel times.
    pub fn total(&self) -> Duration {
        self.layers.iter().map(|l| l.time).sum()
    }
}

/// What a profile row says about a launch, fixed at compile time.
#[derive(Clone, Debug)]
pub(crate) struct LaunchInfo {
    pub name: String,
    pub op: &'static str,
    pub kernel: &'static str,
    pub macs: u64,
    pub output_shape: Vec<usize>,
    pub window: Vec<usize>,
    /// Elements read or written, whichever is more (all inputs / all outputs): a size measure
    /// for launches without MACs.
    pub elems: u64,
    /// Work units of the kernel (set by `Model::compile`).
    pub units: u64,
}

impl LaunchInfo {
    pub(crate) fn new(name: &str, op: &Op, inputs: &[TensorType], outputs: &[TensorType]) -> LaunchInfo {
        let refs: Vec<&TensorType> = inputs.iter().collect();
        LaunchInfo {
            name: name.to_owned(),
            op: op.name(),
            kernel: kernel_variant(op, inputs),
            macs: node_macs(op, &refs, outputs),
            output_shape: outputs.first().map(|t| t.shape.clone()).unwrap_or_default(),
            window: match op {
                Op::Conv(a) => a.kernel.clone(),
                Op::ConvTranspose(a) => a.kernel.clone(),
                Op::MaxPool(p) => p.kernel.clone(),
                Op::AvgPool { pool, .. } => pool.kernel.clone(),
                _ => Vec::new(),
            },
            elems: outputs
                .iter()
                .map(|t| t.numel() as u64)
                .sum::<u64>()
                .max(inputs.iter().map(|t| t.numel() as u64).sum()),
            units: 1,
        }
    }

    pub(crate) fn timed(&self, time: Duration, threads: usize) -> LayerTime {
        LayerTime {
            name: self.name.clone(),
            op: self.op,
            kernel: self.kernel,
            macs: self.macs,
            output_shape: self.output_shape.clone(),
            window: self.window.clone(),
            units: self.units,
            threads,
            time,
        }
    }
}

/// The kernel family codegen picks for `op` on `inputs`, as a short name, unless the emitter
/// noted a more specific one (`Jit::note_variant`, e.g. `conv-packed-avx2`). It mirrors the
/// emitters' dispatch (a depthwise conv has one input channel and fewer than 4 output channels
/// per group; a 1×1 conv has unit kernel and strides and no padding; `M = 1` products are GEMVs).
pub(crate) fn kernel_variant(op: &Op, inputs: &[TensorType]) -> &'static str {
    match op {
        Op::Fused(f) => kernel_variant(&f.base, &inputs[..f.base_inputs(inputs.len())]),
        Op::Conv(a) => {
            let per_group = |axis: usize| inputs.get(1).and_then(|w| w.shape.get(axis)).copied();
            let out_per_group = per_group(0).map(|m| m / a.group.max(1));
            if per_group(1) == Some(1) && out_per_group.is_some_and(|m| m < 4) {
                "conv-depthwise"
            } else if a.kernel.iter().all(|&k| k == 1)
                && a.strides.iter().all(|&s| s == 1)
                && a.pads.iter().all(|&p| p == 0)
            {
                "conv-1x1"
            } else {
                "conv-direct"
            }
        }
        Op::QLinear(q) => match q.base {
            Op::Conv(_) => "qconv",
            _ => "qgemm",
        },
        Op::ConvTranspose(_) => "conv-transpose",
        Op::Gemm { trans_a, .. } => {
            let a = inputs.first().map(|t| &t.shape[..]).unwrap_or_default();
            let m = if *trans_a { a.get(1) } else { a.first() };
            if m == Some(&1) { "gemv" } else { "gemm" }
        }
        Op::MatMul => {
            let a = inputs.first().map(|t| &t.shape[..]).unwrap_or_default();
            let m = if a.len() < 2 { Some(&1) } else { a.get(a.len() - 2) };
            if m == Some(&1) { "gemv" } else { "gemm" }
        }
        Op::BatchNorm { .. }
        | Op::Unary(_)
        | Op::Binary(_)
        | Op::Where
        | Op::Cast { .. }
        | Op::Quantize { .. }
        | Op::Dequantize(_)
        | Op::Lookup => "elementwise",
        Op::MaxPool(_) | Op::AvgPool { .. } => "pool",
        Op::GlobalAvgPool | Op::GlobalMaxPool => "global-pool",
        Op::Resize(_) => "resize",
        Op::Concat { .. }
        | Op::Split { .. }
        | Op::Reshape { .. }
        | Op::Transpose { .. }
        | Op::Slice { .. }
        | Op::Gather { .. }
        | Op::Expand { .. }
        | Op::Pad { .. } => "movement",
        Op::Softmax { .. } => "softmax",
        Op::Reduce { .. } | Op::ArgReduce { .. } => "reduce",
        Op::Input { .. } | Op::Weight(_) => "none",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cnnc_ir::{ConvAttrs, DType};

    fn conv(kernel: usize, stride: usize, pad: usize, group: usize) -> Op {
        Op::Conv(ConvAttrs::new(&[kernel; 2]).strides(&[stride; 2]).pads(&[pad; 4]).group(group))
    }

    fn t(shape: &[usize]) -> TensorType {
        TensorType { dtype: DType::F32, shape: shape.to_vec() }
    }

    #[test]
    fn kernel_variant_follows_the_emitters_dispatch() {
        let x = t(&[1, 8, 6, 6]);
        assert_eq!(kernel_variant(&conv(3, 1, 1, 8), &[x.clone(), t(&[8, 1, 3, 3])]), "conv-depthwise");
        assert_eq!(kernel_variant(&conv(1, 1, 0, 1), &[x.clone(), t(&[16, 8, 1, 1])]), "conv-1x1");
        assert_eq!(kernel_variant(&conv(1, 2, 0, 1), &[x.clone(), t(&[16, 8, 1, 1])]), "conv-direct");
        assert_eq!(kernel_variant(&conv(3, 1, 1, 1), &[x, t(&[16, 8, 3, 3])]), "conv-direct");
        let gemm = Op::Gemm { alpha: 1.0, beta: 1.0, trans_a: false, trans_b: true };
        assert_eq!(kernel_variant(&gemm, &[t(&[1, 64]), t(&[10, 64])]), "gemv");
        assert_eq!(kernel_variant(&gemm, &[t(&[4, 64]), t(&[10, 64])]), "gemm");
        assert_eq!(kernel_variant(&Op::MatMul, &[t(&[64]), t(&[64, 10])]), "gemv");
    }
}
