//! Element-wise ops of several inputs: arithmetic, comparisons, logic, `Where`, and the
//! variadic `Sum`/`Max`/`Min`/`Mean` (lowered to chains of binary ops).

use cnnc_ir::{BinaryOp, DType, Op, ValueRef};

use super::context::{LowerCx, Lowered, OnnxNode};
use super::error::ImportError;
use super::quantize::quantized_input;

/// The two operands of a binary op. Before opset 7, B broadcasts to A only with
/// `broadcast = 1`: B has one element, or its shape is a run of A's axes starting at `axis`
/// (default: A's last axes); B is reshaped so that numpy broadcasting means the same.
fn binary_operands(cx: &mut LowerCx, node: &OnnxNode) -> Result<(ValueRef, ValueRef), ImportError> {
    let a = cx.input(node, 0)?;
    let b = cx.input(node, 1)?;
    if node.opset >= 7 {
        return Ok((a, b));
    }
    let (sa, sb) = (cx.shape(a), cx.shape(b));
    if !node.flag("broadcast", false)? {
        if sa != sb {
            return Err(node.shape_err(format!(
                "operands have shapes {sa:?} and {sb:?}; before opset 7 they must be equal unless broadcast = 1"
            )));
        }
        return Ok((a, b));
    }
    if cnnc_ir::checked_numel(&sb) == Some(1) && sb.len() <= sa.len() {
        return Ok((a, b));
    }
    let default_axis = sa.len().checked_sub(sb.len()).map_or(-1, |d| d as i64);
    let axis = node.int_or("axis", default_axis)?;
    let start = usize::try_from(if axis < 0 { axis + sa.len() as i64 } else { axis }).ok();
    let Some(start) = start.filter(|&s| sa.get(s..s + sb.len()) == Some(&sb[..])) else {
        return Err(node.bad_attr(
            "axis",
            format!("B of shape {sb:?} is not the run of A's shape {sa:?} starting at axis {axis}"),
        ));
    };
    let mut shape = sb;
    shape.resize(sa.len() - start, 1);
    if shape.len() == cx.shape(b).len() {
        return Ok((a, b));
    }
    let b = cx.add1(node, Op::Reshape { shape }, &[b])?;
    Ok((a, b))
}

pub(super) fn lower_binary(cx: &mut LowerCx, node: &OnnxNode, op: BinaryOp) -> Result<Lowered, ImportError> {
    let (mut a, mut b) = binary_operands(cx, node)?;
    // A u8/i8/i32 constant arrives widened to i64 (shape tensors need that); beside a run-time
    // operand of its own ONNX type it gets that type back.
    let narrow_to = |cx: &LowerCx, c: ValueRef, other: ValueRef| {
        let d = cx.narrow_int_dtype(c)?;
        (cx.constant(c).is_some() && cx.constant(other).is_none() && cx.ty(other).dtype == d).then_some(d)
    };
    if narrow_to(cx, a, b).is_some() {
        a = quantized_input(cx, node, 0)?;
    } else if narrow_to(cx, b, a).is_some() {
        b = quantized_input(cx, node, 1)?;
    }
    if op == BinaryOp::Pow {
        b = pow_exponent(cx, node, a, b)?;
    }
    Ok(vec![cx.add1(node, Op::Binary(op), &[a, b])?])
}

/// `Pow`'s exponent in its base's type. ONNX (opset 12 on) lets an integer exponent raise an
/// f32 base, as onnxruntime does through `std::pow` on doubles: the exponent is cast to f32,
/// exact for every |y| < 2^24 (larger integer powers of any |x| ≠ 1 overflow or vanish in
/// f32 anyway), and a constant exponent folds at import. An integer exponent of another
/// integer type than an i64 base is widened to i64.
fn pow_exponent(cx: &mut LowerCx, node: &OnnxNode, base: ValueRef, exp: ValueRef) -> Result<ValueRef, ImportError> {
    let (tb, te) = (cx.ty(base).dtype, cx.ty(exp).dtype);
    let integer = |d: DType| d.int_range().is_some();
    match (tb, te) {
        _ if tb == te => Ok(exp),
        (DType::F32, e) if integer(e) => cx.add1(node, Op::Cast { to: DType::F32 }, &[exp]),
        (DType::I64, e) if integer(e) => cx.add1(node, Op::Cast { to: DType::I64 }, &[exp]),
        _ => Err(node.bad_input(format!(
            "Pow with base type {tb} and exponent type {te} is not supported (an f32 base takes f32 or integer \
             exponents, an i64 base integer exponents)"
        ))),
    }
}

/// `LessOrEqual` as `not (a > b)`, `GreaterOrEqual` as `not (a < b)`.
pub(super) fn lower_negated_comparison(
    cx: &mut LowerCx,
    node: &OnnxNode,
    op: BinaryOp,
) -> Result<Lowered, ImportError> {
    let a = cx.input(node, 0)?;
    let b = cx.input(node, 1)?;
    let cmp = cx.add1(node, Op::Binary(op), &[a, b])?;
    let (f, t) = (cx.scalar_bool(node, "false", false), cx.scalar_bool(node, "true", true));
    Ok(vec![cx.add1(node, Op::Where, &[cmp, f, t])?])
}

/// `Not x` as `where(x, false, true)`.
pub(super) fn lower_not(cx: &mut LowerCx, node: &OnnxNode) -> Result<Lowered, ImportError> {
    let x = cx.input(node, 0)?;
    let (f, t) = (cx.scalar_bool(node, "false", false), cx.scalar_bool(node, "true", true));
    Ok(vec![cx.add1(node, Op::Where, &[x, f, t])?])
}

/// `a and b` as `where(a, b, false)`.
pub(super) fn lower_and(cx: &mut LowerCx, node: &OnnxNode) -> Result<Lowered, ImportError> {
    let (a, b) = binary_operands(cx, node)?;
    let f = cx.scalar_bool(node, "false", false);
    Ok(vec![cx.add1(node, Op::Where, &[a, b, f])?])
}

/// `a or b` as `where(a, true, b)`.
pub(super) fn lower_or(cx: &mut LowerCx, node: &OnnxNode) -> Result<Lowered, ImportError> {
    let (a, b) = binary_operands(cx, node)?;
    let t = cx.scalar_bool(node, "true", true);
    Ok(vec![cx.add1(node, Op::Where, &[a, t, b])?])
}

pub(super) fn lower_where(cx: &mut LowerCx, node: &OnnxNode) -> Result<Lowered, ImportError> {
    let inputs = (0..3).map(|i| cx.input(node, i)).collect::<Result<Vec<_>, _>>()?;
    Ok(vec![cx.add1(node, Op::Where, &inputs)?])
}

/// `Sum`, `Max`, `Min` of one or more inputs, as a left fold of the binary op.
pub(super) fn lower_variadic(cx: &mut LowerCx, node: &OnnxNode, op: BinaryOp) -> Result<Lowered, ImportError> {
    let inputs = cx.inputs(node)?;
    Ok(vec![fold(cx, node, op, &inputs)?])
}

/// `Mean` as the sum divided by the number of inputs.
pub(super) fn lower_mean(cx: &mut LowerCx, node: &OnnxNode) -> Result<Lowered, ImportError> {
    let inputs = cx.inputs(node)?;
    let sum = fold(cx, node, BinaryOp::Add, &inputs)?;
    if inputs.len() == 1 {
        return Ok(vec![sum]);
    }
    let n = cx.scalar_f32(node, "count", inputs.len() as f32);
    Ok(vec![cx.add1(node, Op::Binary(BinaryOp::Div), &[sum, n])?])
}

fn fold(
    cx: &mut LowerCx,
    node: &OnnxNode,
    op: BinaryOp,
    inputs: &[cnnc_ir::ValueRef],
) -> Result<cnnc_ir::ValueRef, ImportError> {
    let (&first, rest) = inputs.split_first().ok_or_else(|| node.bad_input("needs at least one input"))?;
    rest.iter().try_fold(first, |acc, &v| cx.add1(node, Op::Binary(op), &[acc, v]))
}
