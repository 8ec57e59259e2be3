//! `MaxPool` (with its optional `Indices` output), `AveragePool`, `GlobalAveragePool`,
//! `GlobalMaxPool`.

use cnnc_ir::{BinaryOp, DType, Op, PadMode, PoolAttrs, Tensor, ValueRef};

use super::context::{LowerCx, Lowered, OnnxNode};
use super::conv::{per_axis, resolve_pads};
use super::error::ImportError;

pub(super) fn lower_max_pool(cx: &mut LowerCx, node: &OnnxNode) -> Result<Lowered, ImportError> {
    let column_major = node.flag("storage_order", false)?;
    let (x, pool) = pool_attrs(cx, node)?;
    let dtype = cx.ty(x).dtype;
    // u8/i8 (QOperator models): every value is exact in f32 and the maximum commutes with the
    // monotone conversion, so the f32 max-pool between two casts gives the same bits.
    let xf = if dtype.is_quantized() { cx.add1(node, Op::Cast { to: DType::F32 }, &[x])? } else { x };
    let yf = cx.add1(node, Op::MaxPool(pool.clone()), &[xf])?;
    let y = if dtype.is_quantized() { cx.add1(node, Op::Cast { to: dtype }, &[yf])? } else { yf };
    if !node.wants_output(1) {
        return Ok(vec![y]);
    }
    let out_spatial = cx.shape(yf)[2..].to_vec();
    let indices = max_pool_indices(cx, node, xf, &pool, &out_spatial, column_major)?;
    Ok(vec![y, indices])
}

/// MaxPool's `Indices` output: for each output element, the flat index into `x` (`[N, C,
/// spatial…]`, padding not counted) of the first maximum of its window in scan order (kernel
/// offsets row-major), as onnxruntime picks it; spatial offsets row-major, or column-major
/// (the first spatial axis fastest) with `storage_order = 1`.
///
/// Built from existing ops: `x` padded with −∞ so that every window lies inside it and
/// flattened to `[N·C, plane]`, a `gather` of every window's elements through a constant
/// `[outputs, kernel offsets]` table of plane positions, `arg-max` over the offsets (the first
/// maximum, so ties go to the earliest offset), then `index = base[n, c] + start[o] +
/// offset[j]`: the flat position of the plane, of output `o`'s window origin and of kernel
/// offset `j` in `x`.
fn max_pool_indices(
    cx: &mut LowerCx,
    node: &OnnxNode,
    x: ValueRef,
    pool: &PoolAttrs,
    out_spatial: &[usize],
    column_major: bool,
) -> Result<ValueRef, ImportError> {
    let xs = cx.shape(x);
    let (n, c, spatial) = (xs[0], xs[1], &xs[2..]);
    let ns = spatial.len();
    let too_large = || node.shape_err("the index arithmetic of the Indices output overflows");
    let to_i64 = |v: usize| i64::try_from(v).map_err(|_| too_large());
    // The declared begin pads, and at the end whatever the last window needs.
    let mut pads = vec![0i64; 2 * (ns + 2)];
    let mut padded_spatial = Vec::with_capacity(ns);
    for i in 0..ns {
        let (k, s, d, o) = (pool.kernel[i], pool.strides[i], pool.dilations[i], out_spatial[i]);
        let reach = o.saturating_sub(1) * s + (k - 1) * d + 1;
        let end = reach.saturating_sub(pool.pads[i] + spatial[i]);
        pads[2 + i] = to_i64(pool.pads[i])?;
        pads[ns + 4 + i] = to_i64(end)?;
        padded_spatial.push(spatial[i] + pool.pads[i] + end);
    }
    let padded = if pads.iter().any(|&p| p != 0) {
        cx.add1(node, Op::Pad { pads, mode: PadMode::Constant, value: f32::NEG_INFINITY }, &[x])?
    } else {
        x
    };
    let plane: usize = padded_spatial.iter().product();
    let rows = cx.add1(node, Op::Reshape { shape: vec![n * c, plane] }, &[padded])?;
    // Row-major strides of the padded plane and flat-index strides of `x`'s spatial axes.
    let padded_strides: Vec<usize> = (0..ns).map(|i| padded_spatial[i + 1..].iter().product()).collect();
    let strides: Vec<usize> = (0..ns)
        .map(|i| if column_major { spatial[..i].iter().product() } else { spatial[i + 1..].iter().product() })
        .collect();
    let multi = |mut flat: usize, dims: &[usize]| {
        let mut idx = vec![0usize; dims.len()];
        for i in (0..dims.len()).rev() {
            idx[i] = flat % dims[i];
            flat /= dims[i];
        }
        idx
    };
    let n_out: usize = out_spatial.iter().product();
    let n_offsets: usize = pool.kernel.iter().product();
    let dims = [to_i64(n_out)?, to_i64(n_offsets)?];
    let (_, n_table) = super::proto::checked_shape(&format!("{}/windows", node.name), &dims, DType::I64)?;
    let mut table = Vec::with_capacity(n_table);
    let mut start = Vec::with_capacity(n_out);
    for o in 0..n_out {
        let oi = multi(o, out_spatial);
        let origin: Vec<usize> = (0..ns).map(|i| oi[i] * pool.strides[i]).collect();
        for j in 0..n_offsets {
            let kk = multi(j, &pool.kernel);
            table.push(to_i64((0..ns).map(|i| (origin[i] + kk[i] * pool.dilations[i]) * padded_strides[i]).sum())?);
        }
        let mut flat = 0i64;
        for i in 0..ns {
            flat += (to_i64(origin[i])? - to_i64(pool.pads[i])?) * to_i64(strides[i])?;
        }
        start.push(flat);
    }
    let offset = (0..n_offsets)
        .map(|j| {
            let kk = multi(j, &pool.kernel);
            to_i64((0..ns).map(|i| kk[i] * pool.dilations[i] * strides[i]).sum())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let table = i64_const(cx, node, "windows", vec![n_out, n_offsets], table)?;
    let windows = cx.add1(node, Op::Gather { axis: 1 }, &[rows, table])?;
    let arg =
        cx.add1(node, Op::ArgReduce { max: true, axis: 2, keepdims: false, select_last_index: false }, &[windows])?;
    let offset = i64_const(cx, node, "offsets", vec![n_offsets], offset)?;
    let within = cx.add1(node, Op::Gather { axis: 0 }, &[offset, arg])?;
    let mut out_shape = vec![n, c];
    out_shape.extend_from_slice(out_spatial);
    let within = cx.add1(node, Op::Reshape { shape: out_shape }, &[within])?;
    let mut start_shape = vec![1, 1];
    start_shape.extend_from_slice(out_spatial);
    let start = i64_const(cx, node, "starts", start_shape, start)?;
    let plane_len = to_i64(spatial.iter().product())?;
    let base = (0..n * c).map(|p| to_i64(p).map(|p| p * plane_len)).collect::<Result<Vec<_>, _>>()?;
    let mut base_shape = vec![n, c];
    base_shape.resize(ns + 2, 1);
    let base = i64_const(cx, node, "planes", base_shape, base)?;
    let at = cx.add1(node, Op::Binary(BinaryOp::Add), &[within, start])?;
    cx.add1(node, Op::Binary(BinaryOp::Add), &[at, base])
}

fn i64_const(
    cx: &mut LowerCx,
    node: &OnnxNode,
    what: &str,
    shape: Vec<usize>,
    v: Vec<i64>,
) -> Result<ValueRef, ImportError> {
    let t = Tensor::from_i64(shape, v).map_err(|e| node.shape_err(format!("{what}: {e}")))?;
    Ok(cx.add_const(&format!("{}/{what}", node.name), t))
}
pub(super) fn lower_avg_pool(cx: &mut LowerCx, node: &OnnxNode) -> Result<Lowered, ImportError> {
    let count_include_pad = node.flag("count_include_pad", false)?;
    let (x, pool) = pool_attrs(cx, node)?;
    Ok(vec![cx.add1(node, Op::AvgPool { pool, count_include_pad }, &[x])?])
}

pub(super) fn lower_global_avg_pool(cx: &mut LowerCx, node: &OnnxNode) -> Result<Lowered, ImportError> {
    let x = cx.input(node, 0)?;
    Ok(vec![cx.add1(node, Op::GlobalAvgPool, &[x])?])
}

pub(super) fn lower_global_max_pool(cx: &mut LowerCx, node: &OnnxNode) -> Result<Lowered, ImportError> {
    let x = cx.input(node, 0)?;
    Ok(vec![cx.add1(node, Op::GlobalMaxPool, &[x])?])
}

fn pool_attrs(cx: &LowerCx, node: &OnnxNode) -> Result<(cnnc_ir::ValueRef, PoolAttrs), ImportError> {
    let x = cx.input(node, 0)?;
    let xs = cx.shape(x);
    if xs.len() < 3 {
        return Err(node.shape_err(format!("input must have rank at least 3 (N, C, spatial…), got shape {xs:?}")));
    }
    let n = xs.len() - 2;
    let kernel = node.usizes("kernel_shape", 1)?.ok_or_else(|| node.bad_attr("kernel_shape", "is required"))?;
    if kernel.len() != n {
        return Err(node.bad_attr("kernel_shape", format!("needs {n} values (one per spatial axis), got {kernel:?}")));
    }
    let strides = per_axis(node, "strides", n)?;
    let dilations = per_axis(node, "dilations", n)?;
    let ceil_mode = node.flag("ceil_mode", false)?;
    let pads = resolve_pads(node, &xs[2..], &kernel, &strides, &dilations)?;
    Ok((x, PoolAttrs { kernel, strides, dilations, pads, ceil_mode }))
}
