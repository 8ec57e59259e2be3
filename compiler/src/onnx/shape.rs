//! Data movement and shape ops: `Reshape`, `Flatten`, `Squeeze`, `Unsqueeze`, `Transpose`,
//! `Slice`, `Gather`, `Expand`, `Concat`, `Split`, `Pad`, and the ops that only make
//! constants or aliases: `Shape`, `Size`, `ConstantOfShape`, `Range`, `Cast`, `Identity`,
//! `Dropout`, `Constant`.

use cnnc_ir::{DType, Op, PadMode, SliceAxis, Tensor, TensorData, checked_numel};
use onnx_protobuf::tensor_proto::DataType;
use protobuf::Enum;

use super::context::{LowerCx, Lowered, OnnxNode};
use super::error::ImportError;
use super::proto::{checked_shape, dtype_of, tensor_from_proto};

/// `Reshape`: the target shape is an attribute before opset 5 and a constant input from 5 on;
/// a 0 copies the input's dimension unless `allowzero` (opset 14 on) makes it a size.
pub(super) fn lower_reshape(cx: &mut LowerCx, node: &OnnxNode) -> Result<Lowered, ImportError> {
    let x = cx.input(node, 0)?;
    let target = if node.opset < 5 {
        node.ints("shape")?.map(<[i64]>::to_vec).ok_or_else(|| node.bad_attr("shape", "is required"))?
    } else {
        cx.const_ints(node, 1, "shape")?.ok_or_else(|| node.bad_input("input 1 (shape) is required"))?
    };
    let allowzero = node.opset >= 14 && node.flag("allowzero", false)?;
    let in_shape = cx.shape(x);
    let total = checked_numel(&in_shape).unwrap_or(usize::MAX);
    let mut out = Vec::with_capacity(target.len());
    let mut inferred = None;
    for (i, &d) in target.iter().enumerate() {
        match d {
            -1 if inferred.is_some() => return Err(node.bad_input(format!("shape {target:?} has more than one -1"))),
            -1 => {
                inferred = Some(i);
                out.push(1);
            }
            0 if !allowzero => out.push(*in_shape.get(i).ok_or_else(|| {
                node.bad_input(format!(
                    "shape {target:?} copies dimension {i} (0) of the rank-{} input",
                    in_shape.len()
                ))
            })?),
            d if d >= 0 => out.push(d as usize),
            _ => return Err(node.bad_input(format!("shape {target:?} has a negative dimension"))),
        }
    }
    if let Some(i) = inferred {
        let known = checked_numel(&out).unwrap_or(0);
        if known == 0 || !total.is_multiple_of(known) {
            return Err(node.shape_err(format!("cannot reshape {in_shape:?} ({total} elements) to {target:?}")));
        }
        out[i] = total / known;
    }
    reshape_to(cx, node, x, out)
}

/// Reshapes `x` to `shape` (an alias when nothing changes).
fn reshape_to(
    cx: &mut LowerCx,
    node: &OnnxNode,
    x: cnnc_ir::ValueRef,
    shape: Vec<usize>,
) -> Result<Lowered, ImportError> {
    let in_shape = cx.shape(x);
    if checked_numel(&shape) != checked_numel(&in_shape) {
        return Err(node.shape_err(format!("cannot reshape {in_shape:?} to {shape:?}: element counts differ")));
    }
    if shape == in_shape {
        return Ok(vec![x]);
    }
    Ok(vec![cx.add1(node, Op::Reshape { shape }, &[x])?])
}

pub(super) fn lower_flatten(cx: &mut LowerCx, node: &OnnxNode) -> Result<Lowered, ImportError> {
    let x = cx.input(node, 0)?;
    let s = cx.shape(x);
    let r = s.len() as i64;
    let axis = node.int_or("axis", 1)?;
    if axis < -r || axis > r {
        return Err(node.bad_attr("axis", format!("{axis} is out of range for rank {r}")));
    }
    let a = if axis < 0 { axis + r } else { axis } as usize;
    let outer = checked_numel(&s[..a]).unwrap_or(usize::MAX);
    let inner = checked_numel(&s[a..]).unwrap_or(usize::MAX);
    reshape_to(cx, node, x, vec![outer, inner])
}

pub(super) fn lower_squeeze(cx: &mut LowerCx, node: &OnnxNode) -> Result<Lowered, ImportError> {
    let x = cx.input(node, 0)?;
    let s = cx.shape(x);
    let axes = if node.opset < 13 { node.ints("axes")?.map(<[i64]>::to_vec) } else { cx.const_ints(node, 1, "axes")? };
    let axes = match axes {
        Some(a) => node.axes("axes", &a, s.len())?,
        None => (0..s.len()).filter(|&i| s[i] == 1).collect(),
    };
    if let Some(&a) = axes.iter().find(|&&a| s[a] != 1) {
        return Err(node.shape_err(format!("cannot squeeze axis {a} of size {} in shape {s:?}", s[a])));
    }
    let out = (0..s.len()).filter(|i| !axes.contains(i)).map(|i| s[i]).collect();
    reshape_to(cx, node, x, out)
}

pub(super) fn lower_unsqueeze(cx: &mut LowerCx, node: &OnnxNode) -> Result<Lowered, ImportError> {
    let x = cx.input(node, 0)?;
    let s = cx.shape(x);
    let axes = if node.opset < 13 { node.ints("axes")?.map(<[i64]>::to_vec) } else { cx.const_ints(node, 1, "axes")? };
    let axes = axes.ok_or_else(|| node.bad_attr("axes", "is required"))?;
    let rank = s.len() + axes.len();
    let axes = node.axes("axes", &axes, rank)?;
    let mut dims = s.iter();
    let out = (0..rank).map(|i| if axes.contains(&i) { 1 } else { dims.next().copied().unwrap_or(1) }).collect();
    reshape_to(cx, node, x, out)
}

pub(super) fn lower_transpose(cx: &mut LowerCx, node: &OnnxNode) -> Result<Lowered, ImportError> {
    let x = cx.input(node, 0)?;
    let r = cx.ty(x).rank();
    let perm = match node.ints("perm")? {
        None => (0..r).rev().collect(),
        Some(p) => {
            let perm = node.axes("perm", p, r)?;
            if perm.len() != r {
                return Err(node.bad_attr("perm", format!("{p:?} is not a permutation of the {r} axes")));
            }
            perm
        }
    };
    if perm.iter().enumerate().all(|(i, &p)| i == p) {
        return Ok(vec![x]);
    }
    Ok(vec![cx.add1(node, Op::Transpose { perm }, &[x])?])
}

pub(super) fn lower_slice(cx: &mut LowerCx, node: &OnnxNode) -> Result<Lowered, ImportError> {
    let x = cx.input(node, 0)?;
    let shape = cx.shape(x);
    let (starts, ends, axes, steps) = if node.opset < 10 {
        let req = |a: &str| node.ints(a)?.map(<[i64]>::to_vec).ok_or_else(|| node.bad_attr(a, "is required"));
        (req("starts")?, req("ends")?, node.ints("axes")?.map(<[i64]>::to_vec), None)
    } else {
        let req = |i: usize, what: &str| {
            cx.const_ints(node, i, what)?.ok_or_else(|| node.bad_input(format!("input {i} ({what}) is required")))
        };
        (req(1, "starts")?, req(2, "ends")?, cx.const_ints(node, 3, "axes")?, cx.const_ints(node, 4, "steps")?)
    };
    let n = starts.len();
    let axes = axes.unwrap_or_else(|| (0..n as i64).collect());
    let steps = steps.unwrap_or_else(|| vec![1; n]);
    if ends.len() != n || axes.len() != n || steps.len() != n {
        return Err(node.bad_input(format!(
            "starts {starts:?}, ends {ends:?}, axes {axes:?} and steps {steps:?} must have equal lengths"
        )));
    }
    let axes = node.axes("axes", &axes, shape.len())?;
    let mut slices = Vec::with_capacity(n);
    for i in 0..n {
        let step = steps[i];
        if step == 0 {
            return Err(node.bad_input(format!("steps {steps:?} contain 0")));
        }
        let axis = axes[i];
        let dim = shape[axis] as i64;
        let wrap = |v: i64| if v < 0 { v.saturating_add(dim) } else { v };
        let (start, end) = (wrap(starts[i]), wrap(ends[i]));
        let (start, end) = if step > 0 {
            (start.clamp(0, dim), end.clamp(0, dim))
        } else {
            (start.max(0).min(dim - 1), end.max(-1).min(dim - 1))
        };
        if !(start == 0 && end == dim && step == 1) {
            slices.push(SliceAxis { axis, start, end, step });
        }
    }
    if slices.is_empty() {
        return Ok(vec![x]);
    }
    slices.sort_by_key(|s| s.axis);
    Ok(vec![cx.add1(node, Op::Slice { axes: slices }, &[x])?])
}

pub(super) fn lower_gather(cx: &mut LowerCx, node: &OnnxNode) -> Result<Lowered, ImportError> {
    let data = cx.input(node, 0)?;
    let indices = cx.input(node, 1)?;
    // A u8/i8 table read at run-time indices (the lookup `--emit-onnx` writes for a quantized
    // element-wise chain) keeps its type: its result feeds a DequantizeLinear. Constant
    // indices fold with the widened constant (shape arithmetic).
    let data = match cx.narrow_int_dtype(data) {
        Some(d) if d.is_quantized() && cx.constant(indices).is_none() => super::quantize::quantized_input(cx, node, 0)?,
        _ => data,
    };
    let shape = cx.shape(data);
    let axis = node.axis("axis", node.int_or("axis", 0)?, shape.len())?;
    if let Some(idx) = cx.constant(indices).and_then(Tensor::as_i64) {
        let dim = shape[axis] as i64;
        if let Some(bad) = idx.iter().find(|&&i| i < -dim || i >= dim) {
            return Err(node.bad_input(format!("index {bad} is out of range for axis {axis} of size {dim}")));
        }
    }
    Ok(vec![cx.add1(node, Op::Gather { axis }, &[data, indices])?])
}

pub(super) fn lower_expand(cx: &mut LowerCx, node: &OnnxNode) -> Result<Lowered, ImportError> {
    let x = cx.input(node, 0)?;
    let target = cx.const_ints(node, 1, "shape")?.ok_or_else(|| node.bad_input("input 1 (shape) is required"))?;
    let target: Vec<usize> = target
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| node.bad_input(format!("shape {target:?} has a negative dimension"))))
        .collect::<Result<_, _>>()?;
    let in_shape = cx.shape(x);
    let shape = cnnc_ir::broadcast_shapes(&in_shape, &target)
        .ok_or_else(|| node.shape_err(format!("cannot broadcast {in_shape:?} to {target:?}")))?;
    if shape == in_shape {
        return Ok(vec![x]);
    }
    Ok(vec![cx.add1(node, Op::Expand { shape }, &[x])?])
}

pub(super) fn lower_concat(cx: &mut LowerCx, node: &OnnxNode) -> Result<Lowered, ImportError> {
    let inputs = cx.inputs(node)?;
    let first = *inputs.first().ok_or_else(|| node.bad_input("needs at least one input"))?;
    let rank = cx.ty(first).rank();
    // Concat-1 makes `axis` optional, default 1; it is required from opset 4.
    let axis = match node.int("axis")? {
        None if node.opset < 4 => 1,
        a => a.ok_or_else(|| node.bad_attr("axis", "is required"))?,
    };
    let axis = node.axis("axis", axis, rank)?;
    // Inputs empty along the axis contribute nothing (exporters emit them for empty padding).
    let kept: Vec<_> = inputs.iter().copied().filter(|&v| cx.ty(v).shape.get(axis) != Some(&0)).collect();
    let inputs = if kept.is_empty() { vec![first] } else { kept };
    if let [only] = inputs.as_slice() {
        return Ok(vec![*only]);
    }
    Ok(vec![cx.add1(node, Op::Concat { axis }, &inputs)?])
}

pub(super) fn lower_split(cx: &mut LowerCx, node: &OnnxNode) -> Result<Lowered, ImportError> {
    let x = cx.input(node, 0)?;
    let shape = cx.shape(x);
    let axis = node.axis("axis", node.int_or("axis", 0)?, shape.len())?;
    let dim = shape[axis];
    // Split-1 takes the sizes from the attribute or from a constant second input.
    let split = match node.opset {
        ..2 => node.ints("split")?.map(<[i64]>::to_vec).or(cx.const_ints(node, 1, "split")?),
        2..13 => node.ints("split")?.map(<[i64]>::to_vec),
        _ => cx.const_ints(node, 1, "split")?,
    };
    let sizes: Vec<usize> = match split.filter(|s| !s.is_empty()) {
        Some(s) => {
            let sizes = s
                .iter()
                .map(|&v| usize::try_from(v).map_err(|_| node.bad_input(format!("split {s:?} has a negative size"))))
                .collect::<Result<Vec<_>, _>>()?;
            if sizes.iter().sum::<usize>() != dim {
                return Err(node.shape_err(format!("split {s:?} does not sum to the size {dim} of axis {axis}")));
            }
            sizes
        }
        None => {
            let n = match node.int("num_outputs")? {
                Some(n) if node.opset >= 18 => usize::try_from(n)
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| node.bad_attr("num_outputs", format!("must be positive, got {n}")))?,
                _ => node.n_outputs(),
            };
            if n == 0 {
                return Err(node.bad_input("has no outputs"));
            }
            let chunk = dim.div_ceil(n);
            if dim.is_multiple_of(n) {
                vec![dim / n; n]
            } else if node.opset >= 18 && chunk * (n - 1) < dim {
                // Opset 18: equal chunks of ceil(dim / n), the last one smaller.
                let mut sizes = vec![chunk; n - 1];
                sizes.push(dim - chunk * (n - 1));
                sizes
            } else {
                return Err(node.shape_err(format!("axis {axis} of size {dim} cannot be split into {n} equal parts")));
            }
        }
    };
    if sizes.len() != node.n_outputs() {
        return Err(node.bad_input(format!("splits into {} parts but has {} outputs", sizes.len(), node.n_outputs())));
    }
    cx.add(node, Op::Split { axis, sizes }, &[x])
}

pub(super) fn lower_pad(cx: &mut LowerCx, node: &OnnxNode) -> Result<Lowered, ImportError> {
    let x = cx.input(node, 0)?;
    let rank = cx.ty(x).rank();
    let mode = match node.string_or("mode", "constant")?.as_str() {
        "constant" => PadMode::Constant,
        "reflect" => PadMode::Reflect,
        "edge" => PadMode::Edge,
        "wrap" => PadMode::Wrap,
        m => return Err(node.bad_attr("mode", format!("unknown value `{m}`"))),
    };
    let (pads, value, axes) = if node.opset < 11 {
        let pads = node.ints("pads")?.or(node.ints("paddings")?).ok_or_else(|| node.bad_attr("pads", "is required"))?;
        (pads.to_vec(), node.float_or("value", 0.0)?, None)
    } else {
        let pads = cx.const_ints(node, 1, "pads")?.ok_or_else(|| node.bad_input("input 1 (pads) is required"))?;
        let value = cx.const_scalar(node, 2, "constant_value")?.unwrap_or(0.0);
        (pads, value, cx.const_ints(node, 3, "axes")?)
    };
    let axes = match axes {
        Some(a) => node.axes("axes", &a, rank)?,
        None => (0..rank).collect(),
    };
    let k = axes.len();
    if pads.len() != 2 * k {
        return Err(node.bad_input(format!("pads {pads:?} need {} values (begin and end for each of {k} axes)", 2 * k)));
    }
    let mut full = vec![0i64; 2 * rank];
    for (i, &a) in axes.iter().enumerate() {
        full[a] = pads[i];
        full[rank + a] = pads[k + i];
    }
    if full.iter().all(|&p| p == 0) {
        return Ok(vec![x]);
    }
    Ok(vec![cx.add1(node, Op::Pad { pads: full, mode, value }, &[x])?])
}

/// `Shape` is always a constant: shapes are static after import.
pub(super) fn lower_shape(cx: &mut LowerCx, node: &OnnxNode) -> Result<Lowered, ImportError> {
    let x = cx.input(node, 0)?;
    let shape = cx.shape(x);
    let r = shape.len() as i64;
    let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let start = clamp(node.int_or("start", 0)?);
    let end = clamp(node.int_or("end", r)?);
    let dims: Vec<i64> = shape.get(start..end.max(start)).unwrap_or(&[]).iter().map(|&d| d as i64).collect();
    let t = Tensor::from_i64(vec![dims.len()], dims).expect("length matches");
    Ok(vec![cx.add_const(&node.name, t)])
}

pub(super) fn lower_size(cx: &mut LowerCx, node: &OnnxNode) -> Result<Lowered, ImportError> {
    let x = cx.input(node, 0)?;
    let n = cx.ty(x).numel() as i64;
    let t = Tensor::from_i64(Vec::<usize>::new(), vec![n]).expect("scalar");
    Ok(vec![cx.add_const(&node.name, t)])
}

pub(super) fn lower_constant_of_shape(cx: &mut LowerCx, node: &OnnxNode) -> Result<Lowered, ImportError> {
    let dims = cx.const_ints(node, 0, "shape")?.ok_or_else(|| node.bad_input("input 0 (shape) is required"))?;
    let value = match node.tensor("value")? {
        Some(t) => tensor_from_proto(t, &format!("{}.value", node.name))?,
        None => Tensor::from_f32(vec![1], vec![0.0]).expect("one element"),
    };
    if value.numel() != 1 {
        return Err(node.bad_attr("value", format!("must hold one element, got {}", value.numel())));
    }
    let (shape, n) = checked_shape(&node.name, &dims, value.dtype())?;
    super::proto::check_computed(&node.name, n, value.dtype().size_bytes())?;
    let data = TensorData::from_le_bytes(value.dtype(), &value.data().to_le_bytes().repeat(n))
        .expect("whole elements of one dtype");
    let t = Tensor::new(shape, data).expect("element count checked");
    Ok(vec![cx.add_const(&node.name, t)])
}

pub(super) fn lower_range(cx: &mut LowerCx, node: &OnnxNode) -> Result<Lowered, ImportError> {
    let operand = |i: usize, what: &str| -> Result<&Tensor, ImportError> {
        let t =
            cx.const_input(node, i, what)?.ok_or_else(|| node.bad_input(format!("input {i} ({what}) is required")))?;
        if t.numel() != 1 {
            return Err(node.bad_input(format!("input {i} ({what}) must be a scalar, got shape {:?}", t.shape())));
        }
        Ok(t)
    };
    let (start, limit, delta) = (operand(0, "start")?, operand(1, "limit")?, operand(2, "delta")?);
    let too_many =
        || ImportError::TensorTooLarge { tensor: node.name.clone(), reason: "the range has too many elements".into() };
    let t = match (start.data(), limit.data(), delta.data()) {
        (TensorData::I64(s), TensorData::I64(l), TensorData::I64(d)) => {
            let (s, l, d) = (i128::from(s[0]), i128::from(l[0]), i128::from(d[0]));
            if d == 0 {
                return Err(node.bad_input("delta is 0"));
            }
            let n = ((l - s + d - d.signum()) / d).max(0);
            let n = usize::try_from(n).ok().filter(|&n| n <= super::proto::MAX_TENSOR_ELEMENTS).ok_or_else(too_many)?;
            super::proto::check_computed(&node.name, n, 8)?;
            let v = (0..n).map(|i| (s + i as i128 * d) as i64).collect();
            Tensor::from_i64(vec![n], v).expect("length matches")
        }
        (TensorData::F32(s), TensorData::F32(l), TensorData::F32(d)) => {
            let (s, l, d) = (s[0], l[0], d[0]);
            let n = ((l - s) / d).ceil();
            if !n.is_finite() {
                return Err(node.bad_input(format!("range from {s} to {l} by {d} is not finite")));
            }
            let n = n.max(0.0);
            if n > super::proto::MAX_TENSOR_ELEMENTS as f32 {
                return Err(too_many());
            }
            let n = n as usize;
            super::proto::check_computed(&node.name, n, 4)?;
            Tensor::from_f32(vec![n], (0..n).map(|i| s + i as f32 * d).collect()).expect("length matches")
        }
        _ => return Err(node.bad_input("start, limit and delta must all be float or all be integer")),
    };
    Ok(vec![cx.add_const(&node.name, t)])
}

/// `Cast`: `to` is a data type name (`"FLOAT"`) before opset 6 and its number from 6 on.
pub(super) fn lower_cast(cx: &mut LowerCx, node: &OnnxNode) -> Result<Lowered, ImportError> {
    let x = cx.input(node, 0)?;
    let to = if node.opset < 6 {
        let name = node.string("to")?.ok_or_else(|| node.bad_attr("to", "is required"))?;
        DataType::VALUES
            .iter()
            .find(|d| format!("{d:?}").eq_ignore_ascii_case(&name))
            .map(|d| i64::from(d.value()))
            .ok_or_else(|| node.bad_attr("to", format!("`{name}` is not an ONNX data type name")))?
    } else {
        node.int("to")?.ok_or_else(|| node.bad_attr("to", "is required"))?
    };
    let to32 = i32::try_from(to).unwrap_or(i32::MAX);
    // A run-time value cast to uint8 or int8 keeps that type (quantized data); other integer
    // casts widen to i64, as constants and shape arithmetic do.
    let narrow = super::proto::narrow_int_dtype(to32).filter(|d| d.is_quantized() && cx.constant(x).is_none());
    let to = narrow.or_else(|| dtype_of(to32)).ok_or_else(|| {
        let name = DataType::from_i32(to32).map_or(format!("{to}"), |d| format!("{d:?}").to_lowercase());
        node.bad_attr("to", format!("casting to {name} is not supported"))
    })?;
    if cx.ty(x).dtype == to {
        return Ok(vec![x]);
    }
    Ok(vec![cx.add1(node, Op::Cast { to }, &[x])?])
}

pub(super) fn lower_identity(cx: &mut LowerCx, node: &OnnxNode) -> Result<Lowered, ImportError> {
    Ok(vec![cx.input(node, 0)?])
}

/// `Dropout` at inference is the identity; its mask, when asked for, is all true. Before
/// opset 7 the mode is `is_test`, training (random dropping) by default.
pub(super) fn lower_dropout(cx: &mut LowerCx, node: &OnnxNode) -> Result<Lowered, ImportError> {
    let x = cx.input(node, 0)?;
    if node.opset < 7 && !node.flag("is_test", false)? {
        return Err(
            node.bad_attr("is_test", "training mode (is_test = 0) is not supported; export the model for inference")
        );
    }
    if node.opset >= 12
        && let Some(t) = cx.const_input(node, 2, "training_mode")?
        && t.as_bool().is_some_and(|b| b.iter().any(|&b| b))
    {
        return Err(node.bad_input("training mode is not supported"));
    }
    if !node.wants_output(1) {
        return Ok(vec![x]);
    }
    let shape = cx.shape(x);
    let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    let (_, n) = checked_shape(&format!("{}.mask", node.name), &dims, DType::Bool)?;
    super::proto::check_computed(&format!("{}.mask", node.name), n, 1)?;
    let mask = Tensor::from_bool(shape, vec![true; n]).expect("element count checked");
    let mask = cx.add_const(&format!("{}/mask", node.name), mask);
    Ok(vec![x, mask])
}

pub(super) fn lower_constant(cx: &mut LowerCx, node: &OnnxNode) -> Result<Lowered, ImportError> {
    let name = node.proto.output.first().filter(|s| !s.is_empty()).unwrap_or(&node.name).clone();
    let scalar = Vec::<usize>::new;
    let t = if let Some(t) = node.tensor("value")? {
        let tensor = tensor_from_proto(t, &name)?;
        return Ok(vec![cx.add_onnx_const(&name, tensor, t.data_type)]);
    } else if let Some(v) = node.float("value_float")? {
        Tensor::from_f32(scalar(), vec![v]).expect("scalar")
    } else if let Some(v) = node.floats("value_floats")? {
        Tensor::from_f32(vec![v.len()], v.to_vec()).expect("length matches")
    } else if let Some(v) = node.int("value_int")? {
        Tensor::from_i64(scalar(), vec![v]).expect("scalar")
    } else if let Some(v) = node.ints("value_ints")? {
        Tensor::from_i64(vec![v.len()], v.to_vec()).expect("length matches")
    } else if let Some(a) = ["sparse_value", "value_string", "value_strings"].into_iter().find(|a| node.has_attr(a)) {
        return Err(node.bad_attr(a, "string and sparse constants are not supported"));
    } else {
        return Err(node.bad_attr("value", "a Constant needs one of value, value_float(s), value_int(s)"));
    };
    Ok(vec![cx.add_const(&name, t)])
}
