//! Data movement: Reshape, Transpose, Slice, Gather, Expand, Concat, Split, Pad, Cast.
//! All of them work on every dtype.

use cnnc_ir::{DType, PadMode, SliceAxis, Tensor, TensorData};

use super::{StridedOffsets, broadcast_shape, broadcast_strides, contiguous_strides, count, elems, make, with_elem};

/// ONNX `Reshape` (and Flatten, Squeeze, Unsqueeze): same elements, new shape.
pub(super) fn reshape(shape: &[usize], x: &Tensor) -> Result<Tensor, String> {
    if count(shape)? != x.numel() {
        return Err(format!("cannot reshape {:?} to {shape:?}", x.shape()));
    }
    x.clone().reshaped(shape.to_vec()).map_err(|e| e.to_string())
}

/// Copies `x`'s elements at `offsets` into a new tensor of `shape`.
fn take(x: &Tensor, shape: Vec<usize>, offsets: impl Iterator<Item = usize>) -> Result<Tensor, String> {
    with_elem!(x.dtype(), T => {
        let v = elems::<T>(x, "x")?;
        make(shape, offsets.map(|i| v[i]).collect::<Vec<T>>())
    })
}

/// ONNX `Transpose`: output axis `i` is input axis `perm[i]`.
pub(super) fn transpose(perm: &[usize], x: &Tensor) -> Result<Tensor, String> {
    let rank = x.shape().len();
    let mut seen = vec![false; rank];
    for &p in perm {
        if p >= rank || std::mem::replace(&mut seen[p], true) {
            return Err(format!("{perm:?} is not a permutation of {rank} axes"));
        }
    }
    if perm.len() != rank {
        return Err(format!("{perm:?} is not a permutation of {rank} axes"));
    }
    let in_strides = contiguous_strides(x.shape());
    let shape: Vec<usize> = perm.iter().map(|&p| x.shape()[p]).collect();
    let strides: Vec<isize> = perm.iter().map(|&p| in_strides[p] as isize).collect();
    take(x, shape.clone(), StridedOffsets::new(&shape, &strides, 0))
}

/// ONNX `Slice` with normalized axes: indices `start, start+step, …` up to (excluding) `end`.
pub(super) fn slice(axes: &[SliceAxis], x: &Tensor) -> Result<Tensor, String> {
    let in_shape = x.shape();
    let in_strides = contiguous_strides(in_shape);
    let mut shape = in_shape.to_vec();
    let mut strides: Vec<isize> = in_strides.iter().map(|&s| s as isize).collect();
    let mut base = 0usize;
    let mut seen = vec![false; in_shape.len()];
    for sa in axes {
        let SliceAxis { axis, start, end, step } = *sa;
        if axis >= in_shape.len() || std::mem::replace(&mut seen[axis], true) {
            return Err(format!("slice axis {axis} is out of range or repeated"));
        }
        if step == 0 {
            return Err(format!("axis {axis}: step is 0"));
        }
        let (start, end, step) = (i128::from(start), i128::from(end), i128::from(step));
        let len = if step > 0 {
            if end > start { (end - start + step - 1) / step } else { 0 }
        } else if start > end {
            (start - end - step - 1) / -step
        } else {
            0
        };
        if len > 0 {
            let last = start + (len - 1) * step;
            let dim = in_shape[axis] as i128;
            if start < 0 || start >= dim || last < 0 || last >= dim {
                return Err(format!("axis {axis}: indices {start}..{end} step {step} leave [0, {dim})"));
            }
            base += start as usize * in_strides[axis];
        }
        shape[axis] = len as usize;
        // With two or more indices the step is bounded by the axis length, so this cannot overflow.
        strides[axis] = if len > 1 { step as isize * in_strides[axis] as isize } else { 0 };
    }
    take(x, shape.clone(), StridedOffsets::new(&shape, &strides, base))
}

/// ONNX `Gather`: `out[pre, idx…, post] = data[pre, indices[idx…], post]`, negative indices
/// counting from the end of `axis`.
pub(super) fn gather(axis: usize, data: &Tensor, indices: &Tensor) -> Result<Tensor, String> {
    let ds = data.shape();
    if axis >= ds.len() {
        return Err(format!("axis {axis} is out of range for rank {}", ds.len()));
    }
    let dim = ds[axis];
    let idx = elems::<i64>(indices, "indices")?
        .iter()
        .map(|&i| {
            let j = if i < 0 { i + dim as i64 } else { i };
            usize::try_from(j)
                .ok()
                .filter(|&j| j < dim)
                .ok_or_else(|| format!("index {i} is out of range for axis of length {dim}"))
        })
        .collect::<Result<Vec<usize>, String>>()?;
    let outer: usize = ds[..axis].iter().product();
    let inner: usize = ds[axis + 1..].iter().product();
    let mut shape = ds[..axis].to_vec();
    shape.extend_from_slice(indices.shape());
    shape.extend_from_slice(&ds[axis + 1..]);
    let offsets =
        (0..outer).flat_map(|o| idx.iter().flat_map(move |&i| (0..inner).map(move |k| (o * dim + i) * inner + k)));
    take(data, shape, offsets)
}

/// ONNX `Expand`: `x` broadcast (bidirectionally) with `shape`.
pub(super) fn expand(shape: &[usize], x: &Tensor) -> Result<Tensor, String> {
    let out = broadcast_shape(x.shape(), shape)?;
    let strides = broadcast_strides(x.shape(), &out)?;
    take(x, out.clone(), StridedOffsets::new(&out, &strides, 0))
}

/// Checks the operands of a concat along `axis`; returns the output shape.
fn concat_shape(axis: usize, inputs: &[&Tensor]) -> Result<Vec<usize>, String> {
    let first = inputs.first().ok_or("concat needs at least one input")?;
    let rank = first.shape().len();
    if axis >= rank {
        return Err(format!("axis {axis} is out of range for rank {rank}"));
    }
    let mut shape = first.shape().to_vec();
    shape[axis] = 0;
    for t in inputs {
        let s = t.shape();
        let agrees = s.len() == rank && (0..rank).all(|i| i == axis || s[i] == shape[i]);
        if !agrees || t.dtype() != first.dtype() {
            return Err(format!("cannot concatenate {} and {} along axis {axis}", first.ty(), t.ty()));
        }
        shape[axis] += s[axis];
    }
    Ok(shape)
}

/// ONNX `Concat` along `axis`.
pub(super) fn concat(axis: usize, inputs: &[&Tensor]) -> Result<Tensor, String> {
    let shape = concat_shape(axis, inputs)?;
    let outer: usize = shape[..axis].iter().product();
    with_elem!(inputs[0].dtype(), T => {
        let parts = inputs.iter().map(|t| elems::<T>(t, "x")).collect::<Result<Vec<_>, _>>()?;
        let chunk: Vec<usize> = inputs.iter().map(|t| t.shape()[axis..].iter().product()).collect();
        let mut out: Vec<T> = Vec::with_capacity(count(&shape)?);
        for o in 0..outer {
            for (p, &c) in parts.iter().zip(&chunk) {
                out.extend_from_slice(&p[o * c..][..c]);
            }
        }
        make(shape, out)
    })
}

/// ONNX `Split` along `axis` into pieces of `sizes`.
pub(super) fn split(axis: usize, sizes: &[usize], x: &Tensor) -> Result<Vec<Tensor>, String> {
    let xs = x.shape();
    if axis >= xs.len() {
        return Err(format!("axis {axis} is out of range for rank {}", xs.len()));
    }
    if sizes.iter().try_fold(0usize, |a, &s| a.checked_add(s)) != Some(xs[axis]) {
        return Err(format!("split sizes {sizes:?} do not add up to {}", xs[axis]));
    }
    let outer: usize = xs[..axis].iter().product();
    let inner: usize = xs[axis + 1..].iter().product();
    let mut start = 0;
    let mut out = Vec::with_capacity(sizes.len());
    for &size in sizes {
        let mut shape = xs.to_vec();
        shape[axis] = size;
        let (row, first) = (xs[axis] * inner, start * inner);
        let offsets = (0..outer).flat_map(|o| (0..size * inner).map(move |k| o * row + first + k));
        out.push(take(x, shape, offsets)?);
        start += size;
    }
    Ok(out)
}

/// ONNX `Cast` between any two dtypes. f32 → integer truncates toward zero (onnxruntime's
/// `static_cast`; NaN becomes 0 and out-of-range values saturate instead of being undefined);
/// integer → narrower integer keeps the low bits (two's complement, as `static_cast` and numpy);
/// integer → f32 rounds to nearest; anything → bool is `x != 0`; bool → number is 0 or 1.
pub(super) fn cast(to: DType, x: &Tensor) -> Result<Tensor, String> {
    if x.dtype() == to {
        return Ok(x.clone());
    }
    let shape = x.shape().to_vec();
    let data = match x.data() {
        TensorData::F32(v) => match to {
            DType::F32 => TensorData::F32(v.clone()),
            DType::I64 => TensorData::I64(v.iter().map(|&f| f as i64).collect()),
            DType::I32 => TensorData::I32(v.iter().map(|&f| f as i32).collect()),
            DType::U8 => TensorData::U8(v.iter().map(|&f| f as u8).collect()),
            DType::I8 => TensorData::I8(v.iter().map(|&f| f as i8).collect()),
            DType::Bool => TensorData::Bool(v.iter().map(|&f| f != 0.0).collect()),
        },
        TensorData::Bool(v) => ints_to(to, v.iter().map(|&b| i64::from(b)).collect()),
        other => ints_to(to, other.to_i64_vec().ok_or_else(|| format!("cast from {} is not supported", x.dtype()))?),
    };
    Tensor::new(shape, data).map_err(|e| e.to_string())
}

/// Integers as `to`: f32 rounds to nearest, narrower integers keep the low bits.
fn ints_to(to: DType, v: Vec<i64>) -> TensorData {
    match to {
        DType::F32 => TensorData::F32(v.iter().map(|&i| i as f32).collect()),
        DType::I64 => TensorData::I64(v),
        DType::I32 => TensorData::I32(v.iter().map(|&i| i as i32).collect()),
        DType::U8 => TensorData::U8(v.iter().map(|&i| i as u8).collect()),
        DType::I8 => TensorData::I8(v.iter().map(|&i| i as i8).collect()),
        DType::Bool => TensorData::Bool(v.iter().map(|&i| i != 0).collect()),
    }
}

/// ONNX `Pad`: `pads` is `[begin…, end…]` over all axes, negative values crop. Out-of-range
/// positions read `value` (constant), mirror without repeating the edge (reflect), repeat the
/// edge (edge) or wrap around (wrap); reflect and wrap fold repeatedly like numpy.
pub(super) fn pad(pads: &[i64], mode: PadMode, value: f32, x: &Tensor) -> Result<Tensor, String> {
    let xs = x.shape();
    let rank = xs.len();
    if pads.len() != 2 * rank {
        return Err(format!("{} pads for rank {rank}", pads.len()));
    }
    let strides = contiguous_strides(xs);
    // Per axis and output position: the input offset read, or `None` for the constant.
    let mut tables: Vec<Vec<Option<usize>>> = Vec::with_capacity(rank);
    let mut shape = Vec::with_capacity(rank);
    for axis in 0..rank {
        let (dim, begin, end) = (xs[axis] as i128, i128::from(pads[axis]), i128::from(pads[rank + axis]));
        let len = usize::try_from(dim + begin + end).map_err(|_| format!("axis {axis}: pads crop below zero"))?;
        let table = (0..len)
            .map(|o| {
                let i = o as i128 - begin;
                let src = if (0..dim).contains(&i) {
                    Some(i)
                } else {
                    match mode {
                        PadMode::Constant => None,
                        _ if dim == 0 => return Err(format!("axis {axis}: cannot {mode:?}-pad an empty axis")),
                        PadMode::Edge => Some(i.clamp(0, dim - 1)),
                        PadMode::Wrap => Some(i.rem_euclid(dim)),
                        PadMode::Reflect if dim == 1 => Some(0),
                        PadMode::Reflect => {
                            let period = 2 * (dim - 1);
                            let m = i.rem_euclid(period);
                            Some(if m >= dim { period - m } else { m })
                        }
                    }
                };
                Ok(src.map(|i| i as usize * strides[axis]))
            })
            .collect::<Result<Vec<_>, String>>()?;
        tables.push(table);
        shape.push(len);
    }
    with_elem!(x.dtype(), T => {
        let fill: T = pad_value(value);
        let v = elems::<T>(x, "x")?;
        let mut out: Vec<T> = Vec::with_capacity(count(&shape)?);
        gather_tables(v, &tables, Some(0), fill, &mut out);
        make(shape, out)
    })
}

/// The pad constant in each element type (`as` truncation for integers, `!= 0` for bool).
trait PadValue {
    fn from_f32(v: f32) -> Self;
}

impl PadValue for f32 {
    fn from_f32(v: f32) -> f32 {
        v
    }
}

impl PadValue for bool {
    fn from_f32(v: f32) -> bool {
        v != 0.0
    }
}

/// Integer pad constants truncate toward zero and saturate (`as`).
macro_rules! int_pad_value {
    ($($t:ty),*) => {$(
        impl PadValue for $t {
            fn from_f32(v: f32) -> $t {
                v as $t
            }
        }
    )*};
}
int_pad_value!(i64, u8, i8, i32);

fn pad_value<T: PadValue>(v: f32) -> T {
    T::from_f32(v)
}

/// Appends, row-major over the tables' lengths, `src[base + Σ tables[ax][o_ax]]` or `fill`
/// where some table entry is `None`.
fn gather_tables<T: Copy>(src: &[T], tables: &[Vec<Option<usize>>], base: Option<usize>, fill: T, out: &mut Vec<T>) {
    match tables {
        [] => out.push(base.map_or(fill, |b| src[b])),
        [last] => out.extend(last.iter().map(|e| match (base, e) {
            (Some(b), Some(e)) => src[b + e],
            _ => fill,
        })),
        [first, rest @ ..] => {
            for e in first {
                let b = match (base, e) {
                    (Some(b), Some(e)) => Some(b + e),
                    _ => None,
                };
                gather_tables(src, rest, b, fill, out);
            }
        }
    }
}
