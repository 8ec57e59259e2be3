//! Multiply-accumulate counts, the work measure `cnnc inspect` and `cnnc bench` report.

use crate::{Op, TensorType, numel};

/// Multiply-accumulates of one node, counted as MANIFEST.md defines: Conv
/// `N·H_out·W_out·C_out·(C_in/group)·k…`, ConvTranspose on the input side
/// `N·H_in·W_in·C_in·(C_out/group)·k…`, Gemm/MatMul `output elements · K`, a fused or quantized op its base's; other ops 0.
pub fn node_macs(op: &Op, inputs: &[&TensorType], outputs: &[TensorType]) -> u64 {
    let out_elems = || outputs.first().map_or(0, |t| numel(&t.shape)) as u64;
    match op {
        Op::Conv(_) => {
            let Some(w) = inputs.get(1) else { return 0 };
            // w is [M, C/group, k...]: every output element reads C/group · Πk inputs.
            let per_out: usize = w.shape.iter().skip(1).product();
            out_elems() * per_out as u64
        }
        Op::ConvTranspose(_) => {
            let (Some(x), Some(w)) = (inputs.first(), inputs.get(1)) else { return 0 };
            // w is [C, M/group, k...]: every input element scatters into M/group · Πk outputs.
            let per_in: usize = w.shape.iter().skip(1).product();
            numel(&x.shape) as u64 * per_in as u64
        }
        Op::Gemm { trans_a, .. } => {
            let Some(a) = inputs.first() else { return 0 };
            let k = if *trans_a { a.shape.first() } else { a.shape.get(1) };
            out_elems() * k.copied().unwrap_or(0) as u64
        }
        Op::MatMul => {
            let Some(a) = inputs.first() else { return 0 };
            out_elems() * a.shape.last().copied().unwrap_or(0) as u64
        }
        Op::Fused(f) => node_macs(&f.base, &inputs[..f.base_inputs(inputs.len())], outputs),
        // The base's count over x and w; the bias joins the epilogue.
        Op::QLinear(q) => node_macs(&q.base, &inputs[..inputs.len().min(2)], outputs),
        _ => 0,
    }
}

/// Multiplies the kernel that computes `op` actually performs, for cost estimates: a Winograd
/// conv (output tile `m`, input tile `α = m + 2`) does `N·⌈H/m⌉·⌈W/m⌉·α²·C·M` in its batched
/// GEMMs plus its tile transforms, about `α²·(C + M)·α` per tile; every other op its
/// [`node_macs`].
pub fn node_multiplies(op: &Op, inputs: &[&TensorType], outputs: &[TensorType]) -> u64 {
    let conv = match op {
        Op::Conv(a) => Some(a),
        Op::Fused(f) => match &f.base {
            Op::Conv(a) => Some(a),
            _ => None,
        },
        _ => None,
    };
    let (Some(m), Some(x), Some(y)) = (conv.and_then(|a| a.algo.winograd_tile()), inputs.first(), outputs.first())
    else {
        return node_macs(op, inputs, outputs);
    };
    if x.rank() != 4 || y.rank() != 4 {
        return node_macs(op, inputs, outputs);
    }
    let alpha = (m + 2) as u64;
    let tiles = (y.shape[0] * y.shape[2].div_ceil(m) * y.shape[3].div_ceil(m)) as u64;
    let (c, k) = (x.shape[1] as u64, y.shape[1] as u64);
    tiles * alpha * alpha * (c * k + (c + k) * alpha)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DType;

    #[test]
    fn conv_gemm_and_matmul_count_as_manifest_defines() {
        let t = |s: &[usize]| TensorType { dtype: DType::F32, shape: s.to_vec() };
        let conv = Op::Conv(crate::ConvAttrs::new(&[3, 3]).pads(&[1; 4]).group(2));
        // N·Ho·Wo·Cout · Cin/g·k·k = 1·8·8·6 · 2·3·3.
        assert_eq!(node_macs(&conv, &[&t(&[1, 4, 8, 8]), &t(&[6, 2, 3, 3])], &[t(&[1, 6, 8, 8])]), 384 * 18);
        let gemm = Op::Gemm { alpha: 1.0, beta: 1.0, trans_a: true, trans_b: false };
        // A is [K, M] when transposed: K = 5, outputs 3·7.
        assert_eq!(node_macs(&gemm, &[&t(&[5, 3]), &t(&[5, 7])], &[t(&[3, 7])]), 21 * 5);
        assert_eq!(node_macs(&Op::MatMul, &[&t(&[2, 3, 4]), &t(&[4, 5])], &[t(&[2, 3, 5])]), 30 * 4);
    }

    #[test]
    fn other_ops_count_zero() {
        let t = TensorType { dtype: DType::F32, shape: vec![1, 3, 4, 4] };
        assert_eq!(
            node_macs(&Op::GlobalAvgPool, &[&t], &[TensorType { dtype: DType::F32, shape: vec![1, 3, 1, 1] }]),
            0
        );
    }
}
