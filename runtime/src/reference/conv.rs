//! Conv and ConvTranspose.

use cnnc_ir::{ConvAttrs, ConvTransposeAttrs, Tensor};

use super::window::{Window3, check_attrs, conv_out_len, valid_range};
use super::{Sum, f32s, make};

/// Operand shapes shared by conv and conv-transpose.
struct ConvOperands<'a> {
    x: &'a [f32],
    w: &'a [f32],
    bias: Option<&'a [f32]>,
    in_channels: usize,
    out_channels: usize,
    group: usize,
}

impl ConvOperands<'_> {
    fn in_per_group(&self) -> usize {
        self.in_channels / self.group
    }

    fn out_per_group(&self) -> usize {
        self.out_channels / self.group
    }
}

/// ONNX `Conv`: `y[n,m,o] = b[m] + Σ_{c∈group(m), k} x[n,c,o·s + k·d − p_begin] · w[m,c,k]`,
/// positions outside the input reading zero.
pub(super) fn conv(a: &ConvAttrs, inputs: &[&Tensor]) -> Result<Tensor, String> {
    let (shape, y) = conv_sums::<f32>(a, inputs)?;
    make(shape, y)
}

/// [`conv`]'s output shape and elements, each element the f64 sum converted by [`Sum`].
pub(super) fn conv_sums<T: Sum>(a: &ConvAttrs, inputs: &[&Tensor]) -> Result<(Vec<usize>, Vec<T>), String> {
    let (xt, wt) = (inputs[0], inputs[1]);
    let xs = xt.shape();
    let n_spatial = a.kernel.len();
    check_attrs(n_spatial, &a.kernel, &a.strides, &a.dilations, &a.pads)?;
    if xs.len() != n_spatial + 2 {
        return Err(format!("x has rank {}, expected {}", xs.len(), n_spatial + 2));
    }
    let (batch, in_channels) = (xs[0], xs[1]);
    let group = a.group;
    let out_channels = wt.shape().first().copied().unwrap_or(0);
    if group == 0 || in_channels % group != 0 || out_channels % group != 0 {
        return Err(format!(
            "group {group} must divide input channels {in_channels} and output channels {out_channels}"
        ));
    }
    let mut w_shape = vec![out_channels, in_channels / group];
    w_shape.extend_from_slice(&a.kernel);
    if wt.shape() != w_shape.as_slice() {
        return Err(format!("w has shape {:?}, expected {w_shape:?}", wt.shape()));
    }
    let bias = bias_operand(inputs, out_channels)?;
    let spatial_in = &xs[2..];
    let (pb, pe) = a.pads.split_at(n_spatial);
    let spatial_out = (0..n_spatial)
        .map(|i| conv_out_len(spatial_in[i], a.kernel[i], a.strides[i], a.dilations[i], pb[i], pe[i]))
        .collect::<Result<Vec<_>, _>>()?;
    let pointwise =
        a.kernel.iter().all(|&k| k == 1) && a.strides.iter().all(|&s| s == 1) && a.pads.iter().all(|&p| p == 0);
    let geo = if pointwise {
        // A 1×…×1 kernel with unit strides and no padding is a 1-D conv over the flattened plane.
        let len = spatial_in.iter().product::<usize>();
        Window3::new(&[len], &[len], &[1], &[1], &[1], &[0])?
    } else {
        Window3::new(spatial_in, &spatial_out, &a.kernel, &a.strides, &a.dilations, pb)?
    };
    let ops = ConvOperands { x: f32s(xt, "x")?, w: f32s(wt, "w")?, bias, in_channels, out_channels, group };
    let mut out_shape = vec![batch, out_channels];
    out_shape.extend_from_slice(&spatial_out);
    let mut y = vec![T::default(); super::count(&out_shape)?];
    let macs = y.len().saturating_mul(ops.in_per_group()).saturating_mul(geo.kernel_len());
    for_each_plane(&mut y, geo.output_len(), out_channels, macs, |n, m, plane| conv_plane(&ops, &geo, n, m, plane));
    Ok((out_shape, y))
}

/// One output plane `y[n, m]` of a conv, row by row into an f64 row buffer. Each element sums
/// its terms in the order (input channel, kernel depth, row, column).
fn conv_plane<T: Sum>(ops: &ConvOperands<'_>, geo: &Window3, n: usize, m: usize, y: &mut [T]) {
    let [_, ih, iw] = geo.input;
    let [od, oh, ow] = geo.output;
    let [kd, kh, kw] = geo.kernel;
    let [sd, sh, sw] = geo.stride;
    let in_plane = geo.input_len();
    let kvol = geo.kernel_len();
    let cpg = ops.in_per_group();
    let g = m / ops.out_per_group();
    let col_ranges: Vec<(usize, usize)> = (0..kw).map(|k| valid_range(ow, sw, geo.tap_offset(2, k), iw)).collect();
    let bias = ops.bias.map_or(0.0, |b| f64::from(b[m]));
    let mut acc = vec![0f64; ow];
    for z in 0..od {
        for r in 0..oh {
            acc.fill(0.0);
            for cl in 0..cpg {
                let c = g * cpg + cl;
                let x_plane = &ops.x[(n * ops.in_channels + c) * in_plane..][..in_plane];
                let w_kernel = &ops.w[(m * cpg + cl) * kvol..][..kvol];
                for a in 0..kd {
                    let Some(zi) = tap(z, sd, geo.tap_offset(0, a), geo.input[0]) else { continue };
                    for b in 0..kh {
                        let Some(ri) = tap(r, sh, geo.tap_offset(1, b), ih) else { continue };
                        let x_row = &x_plane[(zi * ih + ri) * iw..][..iw];
                        for (k, &(lo, hi)) in col_ranges.iter().enumerate() {
                            if lo >= hi {
                                continue;
                            }
                            let wv = f64::from(w_kernel[(a * kh + b) * kw + k]);
                            let start = (lo as i64 * sw as i64 + geo.tap_offset(2, k)) as usize;
                            let acc_cols = &mut acc[lo..hi];
                            if sw == 1 {
                                for (s, &xv) in acc_cols.iter_mut().zip(&x_row[start..start + (hi - lo)]) {
                                    *s += wv * f64::from(xv);
                                }
                            } else {
                                for (s, &xv) in acc_cols.iter_mut().zip(x_row[start..].iter().step_by(sw)) {
                                    *s += wv * f64::from(xv);
                                }
                            }
                        }
                    }
                }
            }
            let y_row = &mut y[(z * oh + r) * ow..][..ow];
            for (v, &s) in y_row.iter_mut().zip(&acc) {
                *v = T::from_sum(s + bias);
            }
        }
    }
}

/// ONNX `ConvTranspose`, as the scatter it is defined by:
/// `y[n,m,i·s + k·d − p_begin] += x[n,c,i] · w[c,m,k]` for every input position `i` and tap `k`,
/// plus `b[m]`; output length `s·(in−1) + output_padding + (k−1)·d + 1 − pads`.
pub(super) fn conv_transpose(a: &ConvTransposeAttrs, inputs: &[&Tensor]) -> Result<Tensor, String> {
    let (xt, wt) = (inputs[0], inputs[1]);
    let xs = xt.shape();
    let n_spatial = a.kernel.len();
    check_attrs(n_spatial, &a.kernel, &a.strides, &a.dilations, &a.pads)?;
    if a.output_padding.len() != n_spatial {
        return Err(format!("output_padding has {} axes, expected {n_spatial}", a.output_padding.len()));
    }
    if xs.len() != n_spatial + 2 {
        return Err(format!("x has rank {}, expected {}", xs.len(), n_spatial + 2));
    }
    let (batch, in_channels) = (xs[0], xs[1]);
    let group = a.group;
    let out_per_group = wt.shape().get(1).copied().unwrap_or(0);
    if group == 0 || in_channels % group != 0 {
        return Err(format!("group {group} must divide input channels {in_channels}"));
    }
    let out_channels = out_per_group.checked_mul(group).ok_or("output channel count overflows")?;
    let mut w_shape = vec![in_channels, out_per_group];
    w_shape.extend_from_slice(&a.kernel);
    if wt.shape() != w_shape.as_slice() {
        return Err(format!("w has shape {:?}, expected {w_shape:?}", wt.shape()));
    }
    let bias = bias_operand(inputs, out_channels)?;
    let spatial_in = &xs[2..];
    let (pb, pe) = a.pads.split_at(n_spatial);
    let spatial_out = (0..n_spatial)
        .map(|i| {
            let full = (spatial_in[i] as i128 - 1) * a.strides[i] as i128
                + a.output_padding[i] as i128
                + (a.kernel[i] as i128 - 1) * a.dilations[i] as i128
                + 1;
            let len = full - pb[i] as i128 - pe[i] as i128;
            usize::try_from(len).map_err(|_| format!("axis {i}: output length {len} is not positive"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let geo = Window3::new(spatial_in, &spatial_out, &a.kernel, &a.strides, &a.dilations, pb)?;
    let ops = ConvOperands { x: f32s(xt, "x")?, w: f32s(wt, "w")?, bias, in_channels, out_channels, group };
    let mut out_shape = vec![batch, out_channels];
    out_shape.extend_from_slice(&spatial_out);
    let mut y = vec![0f32; super::count(&out_shape)?];
    let macs = xt.numel().saturating_mul(out_per_group).saturating_mul(geo.kernel_len());
    for_each_plane(&mut y, geo.output_len(), out_channels, macs, |n, m, plane| {
        conv_transpose_plane(&ops, &geo, n, m, plane)
    });
    make(out_shape, y)
}

/// One output plane `y[n, m]` of a conv-transpose, scattered into an f64 plane buffer. Each
/// element sums its terms in the order (input channel, kernel tap).
fn conv_transpose_plane(ops: &ConvOperands<'_>, geo: &Window3, n: usize, m: usize, y: &mut [f32]) {
    let [id, ih, iw] = geo.input;
    let [_, oh, ow] = geo.output;
    let [kd, kh, kw] = geo.kernel;
    let [sd, sh, sw] = geo.stride;
    let in_plane = geo.input_len();
    let kvol = geo.kernel_len();
    let cpg = ops.in_per_group();
    let mpg = ops.out_per_group();
    let (g, ml) = (m / mpg, m % mpg);
    let col_ranges: Vec<(usize, usize)> = (0..kw).map(|k| valid_range(iw, sw, geo.tap_offset(2, k), ow)).collect();
    let mut acc = vec![0f64; geo.output_len()];
    for cl in 0..cpg {
        let c = g * cpg + cl;
        let x_plane = &ops.x[(n * ops.in_channels + c) * in_plane..][..in_plane];
        let w_kernel = &ops.w[(c * mpg + ml) * kvol..][..kvol];
        for a in 0..kd {
            for b in 0..kh {
                for (k, &(lo, hi)) in col_ranges.iter().enumerate() {
                    let wv = f64::from(w_kernel[(a * kh + b) * kw + k]);
                    for zi in 0..id {
                        let Some(z) = tap(zi, sd, geo.tap_offset(0, a), geo.output[0]) else { continue };
                        for ri in 0..ih {
                            let Some(r) = tap(ri, sh, geo.tap_offset(1, b), oh) else { continue };
                            let x_row = &x_plane[(zi * ih + ri) * iw..][..iw];
                            let acc_row = &mut acc[(z * oh + r) * ow..][..ow];
                            for (i, &xv) in x_row.iter().enumerate().take(hi).skip(lo) {
                                let col = (i as i64 * sw as i64 + geo.tap_offset(2, k)) as usize;
                                acc_row[col] += wv * f64::from(xv);
                            }
                        }
                    }
                }
            }
        }
    }
    let bias = ops.bias.map_or(0.0, |b| f64::from(b[m]));
    for (v, &s) in y.iter_mut().zip(&acc) {
        *v = (s + bias) as f32;
    }
}

/// Position `o·stride + offset` if it lies in `0..limit`.
fn tap(o: usize, stride: usize, offset: i64, limit: usize) -> Option<usize> {
    let pos = (o * stride) as i64 + offset;
    (pos >= 0 && (pos as usize) < limit).then_some(pos as usize)
}

fn bias_operand<'a>(inputs: &[&'a Tensor], out_channels: usize) -> Result<Option<&'a [f32]>, String> {
    let Some(bt) = inputs.get(2) else { return Ok(None) };
    if bt.shape() != [out_channels] {
        return Err(format!("bias has shape {:?}, expected [{out_channels}]", bt.shape()));
    }
    Ok(Some(f32s(bt, "b")?))
}

/// Calls `plane_fn(n, m, plane)` for every output plane `y[n, m]` of `plane_len` elements.
/// Large problems split the planes over threads; each plane is computed by exactly one thread
/// with the same code, so results do not depend on the thread count.
fn for_each_plane<T: Send>(
    y: &mut [T],
    plane_len: usize,
    channels: usize,
    macs: usize,
    plane_fn: impl Fn(usize, usize, &mut [T]) + Sync,
) {
    if y.is_empty() || plane_len == 0 || channels == 0 {
        return;
    }
    let n_planes = y.len() / plane_len;
    let threads = if macs < 1 << 22 {
        1
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get()).min(8).min(n_planes)
    };
    let run = |first: usize, chunk: &mut [T]| {
        for (i, plane) in chunk.chunks_mut(plane_len).enumerate() {
            let p = first + i;
            plane_fn(p / channels, p % channels, plane);
        }
    };
    if threads <= 1 {
        run(0, y);
        return;
    }
    let per_thread = n_planes.div_ceil(threads);
    std::thread::scope(|s| {
        for (t, chunk) in y.chunks_mut(per_thread * plane_len).enumerate() {
            let run = &run;
            s.spawn(move || run(t * per_thread, chunk));
        }
    });
}
