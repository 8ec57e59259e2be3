//! MaxPool, AveragePool, GlobalAveragePool and GlobalMaxPool.

use cnnc_ir::{PoolAttrs, Tensor, TensorData};

use super::window::{Window3, check_attrs, pool_out_len};
use super::{f32s, make};

/// Shape `[N, C, out…]` and geometry of a pooling op over `x`.
fn pool_geometry(p: &PoolAttrs, x: &Tensor) -> Result<(Vec<usize>, Window3), String> {
    let xs = x.shape();
    let n_spatial = p.kernel.len();
    check_attrs(n_spatial, &p.kernel, &p.strides, &p.dilations, &p.pads)?;
    if xs.len() != n_spatial + 2 {
        return Err(format!("x has rank {}, expected {}", xs.len(), n_spatial + 2));
    }
    let (pb, pe) = p.pads.split_at(n_spatial);
    let spatial_out = (0..n_spatial)
        .map(|i| pool_out_len(xs[2 + i], p.kernel[i], p.strides[i], p.dilations[i], pb[i], pe[i], p.ceil_mode))
        .collect::<Result<Vec<_>, _>>()?;
    let geo = Window3::new(&xs[2..], &spatial_out, &p.kernel, &p.strides, &p.dilations, pb)?;
    let mut out_shape = xs[..2].to_vec();
    out_shape.extend_from_slice(&spatial_out);
    Ok((out_shape, geo))
}

/// Input positions (on one axis) of the taps of output `o`, `None` for padding.
fn taps(geo: &Window3, axis: usize, o: usize) -> impl Iterator<Item = Option<usize>> + '_ {
    let start = (o * geo.stride[axis]) as i64;
    (0..geo.kernel[axis]).map(move |k| {
        let pos = start + geo.tap_offset(axis, k);
        (pos >= 0 && (pos as usize) < geo.input[axis]).then_some(pos as usize)
    })
}

/// Calls `f(output index, input offsets of the window's in-bounds taps)` for every output of a plane.
fn for_each_window(geo: &Window3, mut f: impl FnMut(usize, &[usize])) {
    let [_, ih, iw] = geo.input;
    let [od, oh, ow] = geo.output;
    let mut offsets = Vec::with_capacity(geo.kernel_len());
    let mut out = 0;
    for z in 0..od {
        for r in 0..oh {
            for c in 0..ow {
                offsets.clear();
                for zi in taps(geo, 0, z).flatten() {
                    for ri in taps(geo, 1, r).flatten() {
                        for ci in taps(geo, 2, c).flatten() {
                            offsets.push((zi * ih + ri) * iw + ci);
                        }
                    }
                }
                f(out, &offsets);
                out += 1;
            }
        }
    }
}

/// ONNX `MaxPool`: maximum over the window, padding acting as −∞. NaN inputs are skipped like
/// onnxruntime's `if (x > y) y = x`.
///
/// On u8/i8 tensors (a quantized max-pool: the maximum of the bytes, which is the bytes' max-pool
/// of the dequantized values whenever the scale is positive), a window with no input taps gives
/// the type's minimum, as quantizing −∞ does.
pub(super) fn max_pool(p: &PoolAttrs, x: &Tensor) -> Result<Tensor, String> {
    match x.data() {
        TensorData::U8(v) => return max_pool_int(p, x, v, u8::MIN),
        TensorData::I8(v) => return max_pool_int(p, x, v, i8::MIN),
        _ => {}
    }
    let (out_shape, geo) = pool_geometry(p, x)?;
    let xv = f32s(x, "x")?;
    // A window with no input taps (all padding, or an empty input axis) has maximum −∞.
    let mut y = vec![f32::NEG_INFINITY; super::count(&out_shape)?];
    let (in_plane, out_plane) = (geo.input_len(), geo.output_len());
    if out_plane > 0 && in_plane > 0 {
        for (x_plane, y_plane) in xv.chunks(in_plane).zip(y.chunks_mut(out_plane)) {
            for_each_window(&geo, |o, offsets| {
                let mut best = f32::NEG_INFINITY;
                for &i in offsets {
                    if x_plane[i] > best {
                        best = x_plane[i];
                    }
                }
                y_plane[o] = best;
            });
        }
    }
    make(out_shape, y)
}

/// [`max_pool`] over integers: the maximum of each window's taps, `min` for a window without any.
fn max_pool_int<T: super::Elem + Ord>(p: &PoolAttrs, x: &Tensor, xv: &[T], min: T) -> Result<Tensor, String> {
    let (out_shape, geo) = pool_geometry(p, x)?;
    let mut y = vec![min; super::count(&out_shape)?];
    let (in_plane, out_plane) = (geo.input_len(), geo.output_len());
    if out_plane > 0 && in_plane > 0 {
        for (x_plane, y_plane) in xv.chunks(in_plane).zip(y.chunks_mut(out_plane)) {
            for_each_window(&geo, |o, offsets| {
                y_plane[o] = offsets.iter().map(|&i| x_plane[i]).max().unwrap_or(min);
            });
        }
    }
    make(out_shape, y)
}

/// ONNX `AveragePool`. With `count_include_pad` the divisor counts the taps inside the padded
/// input `[−pad_begin, in + pad_end)` but not those of a ceil-mode window hanging past the end
/// padding (onnxruntime); otherwise it counts the taps inside the input.
pub(super) fn avg_pool(p: &PoolAttrs, count_include_pad: bool, x: &Tensor) -> Result<Tensor, String> {
    let (out_shape, geo) = pool_geometry(p, x)?;
    let n_spatial = p.kernel.len();
    let mut pad_end = [0usize; 3];
    pad_end[3 - n_spatial..].copy_from_slice(&p.pads[n_spatial..]);
    // Divisor per axis and output position; the window is a box, so divisors multiply.
    let divisors: Vec<Vec<usize>> = (0..3)
        .map(|axis| {
            (0..geo.output[axis])
                .map(|o| {
                    if count_include_pad {
                        let start = (o * geo.stride[axis]) as i64 - geo.pad_begin[axis] as i64;
                        let limit = (geo.input[axis] + pad_end[axis]) as i64;
                        (0..geo.kernel[axis]).filter(|&k| start + ((k * geo.dilation[axis]) as i64) < limit).count()
                    } else {
                        taps(&geo, axis, o).flatten().count()
                    }
                })
                .collect()
        })
        .collect();
    let xv = f32s(x, "x")?;
    let mut y = vec![0f32; super::count(&out_shape)?];
    let (in_plane, out_plane) = (geo.input_len(), geo.output_len());
    let [_, oh, ow] = geo.output;
    if out_plane > 0 {
        // Planes are counted on the output side: an empty input axis still has (empty) windows.
        for (p, y_plane) in y.chunks_mut(out_plane).enumerate() {
            let x_plane = if in_plane > 0 { &xv[p * in_plane..][..in_plane] } else { &[][..] };
            for_each_window(&geo, |o, offsets| {
                let sum: f64 = offsets.iter().map(|&i| f64::from(x_plane[i])).sum();
                let (z, r, c) = (o / (oh * ow), o / ow % oh, o % ow);
                let divisor = divisors[0][z] * divisors[1][r] * divisors[2][c];
                // A window entirely in padding has divisor 0 and gives NaN, not a panic.
                y_plane[o] = (sum / divisor as f64) as f32;
            });
        }
    }
    make(out_shape, y)
}

/// `[N, C, 1, …]` and the plane length of a global pool over `x`.
fn global_geometry(x: &Tensor) -> Result<(Vec<usize>, usize), String> {
    let xs = x.shape();
    if xs.len() < 2 {
        return Err(format!("x has rank {}, expected at least 2", xs.len()));
    }
    let mut out_shape = xs[..2].to_vec();
    out_shape.resize(xs.len(), 1);
    Ok((out_shape, xs[2..].iter().product()))
}

/// ONNX `GlobalAveragePool`: mean over all spatial axes.
pub(super) fn global_avg_pool(x: &Tensor) -> Result<Tensor, String> {
    let (out_shape, plane) = global_geometry(x)?;
    let xv = f32s(x, "x")?;
    let n_planes = super::count(&out_shape)?;
    let y = (0..n_planes)
        .map(|p| {
            let sum: f64 = xv[p * plane..][..plane].iter().map(|&v| f64::from(v)).sum();
            (sum / plane as f64) as f32
        })
        .collect();
    make(out_shape, y)
}

/// ONNX `GlobalMaxPool`: maximum over all spatial axes.
pub(super) fn global_max_pool(x: &Tensor) -> Result<Tensor, String> {
    let (out_shape, plane) = global_geometry(x)?;
    let xv = f32s(x, "x")?;
    let n_planes = super::count(&out_shape)?;
    let y = (0..n_planes)
        .map(|p| xv[p * plane..][..plane].iter().fold(f32::NEG_INFINITY, |best, &v| if v > best { v } else { best }))
        .collect();
    make(out_shape, y)
}
