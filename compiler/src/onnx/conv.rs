//! `Conv` and `ConvTranspose`, and the padding rules pooling shares with them.

use cnnc_ir::{ConvAttrs, ConvTransposeAttrs, Op};

use super::context::{LowerCx, Lowered, OnnxNode};
use super::error::ImportError;

pub(super) fn lower_conv(cx: &mut LowerCx, node: &OnnxNode) -> Result<Lowered, ImportError> {
    let x = cx.input(node, 0)?;
    let w = cx.input(node, 1)?;
    let b = cx.opt_input(node, 2)?;
    let op = Op::Conv(conv_attrs(node, &cx.shape(x), &cx.shape(w))?);
    let inputs: Vec<_> = [Some(x), Some(w), b].into_iter().flatten().collect();
    Ok(vec![cx.add1(node, op, &inputs)?])
}

/// The attributes of a Conv-like node (Conv, QLinearConv, ConvInteger) with input shape `xs`
/// and weight shape `ws`.
pub(super) fn conv_attrs(node: &OnnxNode, xs: &[usize], ws: &[usize]) -> Result<ConvAttrs, ImportError> {
    let n = spatial_rank(node, xs, ws)?;
    let kernel = kernel_shape(node, &ws[2..])?;
    let strides = per_axis(node, "strides", n)?;
    let dilations = per_axis(node, "dilations", n)?;
    let group = group(node)?;
    let pads = resolve_pads(node, &xs[2..], &kernel, &strides, &dilations)?;
    Ok(ConvAttrs { kernel, strides, dilations, pads, group, algo: Default::default() })
}

pub(super) fn lower_conv_transpose(cx: &mut LowerCx, node: &OnnxNode) -> Result<Lowered, ImportError> {
    let x = cx.input(node, 0)?;
    let w = cx.input(node, 1)?;
    let b = cx.opt_input(node, 2)?;
    let (xs, ws) = (cx.shape(x), cx.shape(w));
    let n = spatial_rank(node, &xs, &ws)?;
    let kernel = kernel_shape(node, &ws[2..])?;
    let strides = per_axis(node, "strides", n)?;
    let dilations = per_axis(node, "dilations", n)?;
    let group = group(node)?;
    let output_padding = node.usizes("output_padding", 0)?.unwrap_or_else(|| vec![0; n]);
    if output_padding.len() != n {
        return Err(node.bad_attr("output_padding", format!("needs {n} values, got {output_padding:?}")));
    }
    for i in 0..n {
        if output_padding[i] >= strides[i].max(dilations[i]) {
            return Err(node.bad_attr(
                "output_padding",
                format!("{output_padding:?} must be smaller than the stride or the dilation of each axis"),
            ));
        }
    }
    let auto_pad = node.string_or("auto_pad", "NOTSET")?;
    let output_shape = match node.usizes("output_shape", 1)? {
        None => None,
        Some(s) if s.len() == n => Some(s),
        Some(s) if s.len() == n + 2 => Some(s[2..].to_vec()),
        Some(s) => return Err(node.bad_attr("output_shape", format!("needs {n} spatial sizes, got {s:?}"))),
    };
    let target = match (auto_pad.as_str(), output_shape) {
        (_, Some(s)) => Some(s),
        ("SAME_UPPER" | "SAME_LOWER", None) => {
            Some(xs[2..].iter().zip(&strides).map(|(&i, &s)| i.saturating_mul(s)).collect())
        }
        ("NOTSET" | "" | "VALID", None) => None,
        (other, None) => return Err(node.bad_attr("auto_pad", format!("unknown value `{other}`"))),
    };
    let mut output_padding = output_padding;
    let pads = match target {
        None if auto_pad == "VALID" => vec![0; 2 * n],
        None => explicit_pads(node, n)?,
        Some(target) => {
            let mut pads = vec![0; 2 * n];
            for i in 0..n {
                let full = strides[i]
                    .saturating_mul(xs[2 + i].saturating_sub(1))
                    .saturating_add(output_padding[i])
                    .saturating_add(effective_kernel(kernel[i], dilations[i]));
                let total = i64::try_from(full).unwrap_or(i64::MAX) - i64::try_from(target[i]).unwrap_or(i64::MAX);
                // The ONNX rule, with floor division (onnxruntime agrees; see the
                // convtranspose_output_shape* op cases): SAME_UPPER puts the odd pad at the end,
                // NOTSET and SAME_LOWER at the beginning.
                let (head, tail) = if auto_pad == "SAME_UPPER" {
                    (total.div_euclid(2), total - total.div_euclid(2))
                } else {
                    (total - total.div_euclid(2), total.div_euclid(2))
                };
                if head < 0 {
                    return Err(node.bad_attr(
                        "output_shape",
                        format!(
                            "output size {} on spatial axis {i} needs {} row(s) before the first input \
                             position (largest supported size {})",
                            target[i],
                            -head,
                            full.saturating_add(1)
                        ),
                    ));
                }
                pads[i] = head as usize;
                // A negative end pad grows the output by bias-only rows: that is output_padding.
                if tail < 0 {
                    output_padding[i] += tail.unsigned_abs() as usize;
                } else {
                    pads[n + i] = tail as usize;
                }
            }
            pads
        }
    };
    let inputs: Vec<_> = [Some(x), Some(w), b].into_iter().flatten().collect();
    let op = Op::ConvTranspose(ConvTransposeAttrs { kernel, strides, dilations, pads, output_padding, group });
    Ok(vec![cx.add1(node, op, &inputs)?])
}

fn spatial_rank(node: &OnnxNode, xs: &[usize], ws: &[usize]) -> Result<usize, ImportError> {
    if xs.len() < 3 {
        return Err(node.shape_err(format!("input must have rank at least 3 (N, C, spatial…), got shape {xs:?}")));
    }
    if ws.len() != xs.len() {
        return Err(node.shape_err(format!("weight of shape {ws:?} must have the input's rank {}", xs.len())));
    }
    Ok(xs.len() - 2)
}

fn group(node: &OnnxNode) -> Result<usize, ImportError> {
    let g = node.int_or("group", 1)?;
    usize::try_from(g)
        .ok()
        .filter(|&g| g >= 1)
        .ok_or_else(|| node.bad_attr("group", format!("must be at least 1, got {g}")))
}

/// `kernel_shape`, or the weight's spatial dims when absent; the two must agree.
fn kernel_shape(node: &OnnxNode, weight_spatial: &[usize]) -> Result<Vec<usize>, ImportError> {
    match node.usizes("kernel_shape", 1)? {
        None => Ok(weight_spatial.to_vec()),
        Some(k) if k == weight_spatial => Ok(k),
        Some(k) => {
            Err(node
                .bad_attr("kernel_shape", format!("{k:?} disagrees with the weight's spatial dims {weight_spatial:?}")))
        }
    }
}

/// A per-spatial-axis attribute of positive values (`strides`, `dilations`), default all 1.
pub(super) fn per_axis(node: &OnnxNode, attr: &str, n: usize) -> Result<Vec<usize>, ImportError> {
    let v = node.usizes(attr, 1)?.unwrap_or_else(|| vec![1; n]);
    if v.len() != n {
        return Err(node.bad_attr(attr, format!("needs {n} values (one per spatial axis), got {v:?}")));
    }
    Ok(v)
}

fn effective_kernel(k: usize, d: usize) -> usize {
    k.saturating_sub(1).saturating_mul(d).saturating_add(1)
}

fn explicit_pads(node: &OnnxNode, n: usize) -> Result<Vec<usize>, ImportError> {
    let Some(p) = node.ints("pads")? else { return Ok(vec![0; 2 * n]) };
    if p.len() != 2 * n {
        return Err(
            node.bad_attr("pads", format!("needs {} values (begin and end per spatial axis), got {p:?}", 2 * n))
        );
    }
    p.iter()
        .map(|&v| usize::try_from(v).map_err(|_| node.bad_attr("pads", format!("must be non-negative, got {p:?}"))))
        .collect()
}

/// Explicit `[begin…, end…]` pads of a sliding window, resolving `auto_pad`.
pub(super) fn resolve_pads(
    node: &OnnxNode,
    input: &[usize],
    kernel: &[usize],
    strides: &[usize],
    dilations: &[usize],
) -> Result<Vec<usize>, ImportError> {
    let n = input.len();
    let auto_pad = node.string_or("auto_pad", "NOTSET")?;
    let upper = match auto_pad.as_str() {
        "NOTSET" | "" => return explicit_pads(node, n),
        "VALID" => return Ok(vec![0; 2 * n]),
        "SAME_UPPER" => true,
        "SAME_LOWER" => false,
        other => return Err(node.bad_attr("auto_pad", format!("unknown value `{other}`"))),
    };
    let mut pads = vec![0; 2 * n];
    for i in 0..n {
        let out = input[i].div_ceil(strides[i]);
        let total = out
            .saturating_sub(1)
            .saturating_mul(strides[i])
            .saturating_add(effective_kernel(kernel[i], dilations[i]))
            .saturating_sub(input[i]);
        let (small, big) = (total / 2, total - total / 2);
        (pads[i], pads[n + i]) = if upper { (small, big) } else { (big, small) };
    }
    Ok(pads)
}
