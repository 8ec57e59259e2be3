//! Unary and binary element-wise ops, and Where.

use cnnc_ir::{BinaryOp, DType, Tensor, UnaryOp};

use super::{Elem, StridedOffsets, broadcast_shape, broadcast_strides, elems, make, with_elem};

/// ONNX unary activations and math functions on f32 (`Neg` and `Abs` also on i64).
/// Transcendental functions are evaluated in f64 and rounded once.
pub(super) fn unary(u: UnaryOp, x: &Tensor) -> Result<Tensor, String> {
    if let Some(v) = x.as_i64() {
        let y: Vec<i64> = match u {
            UnaryOp::Neg => v.iter().map(|a| a.wrapping_neg()).collect(),
            UnaryOp::Abs => v.iter().map(|a| a.wrapping_abs()).collect(),
            UnaryOp::Relu => v.iter().map(|&a| a.max(0)).collect(),
            _ => return Err(format!("{} is not defined on i64", u.name())),
        };
        return make(x.shape().to_vec(), y);
    }
    let v = super::f32s(x, "x")?;
    make(x.shape().to_vec(), v.iter().map(|&a| u.eval_f32(a)).collect::<Vec<f32>>())
}

/// ONNX binary arithmetic and comparisons with multidirectional broadcasting.
pub(super) fn binary(op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor, String> {
    let shape = broadcast_shape(a.shape(), b.shape())?;
    if op == BinaryOp::PRelu && shape != a.shape() {
        return Err(format!("prelu slope {:?} does not broadcast to x {:?}", b.shape(), a.shape()));
    }
    match (a.dtype(), b.dtype()) {
        (DType::F32, DType::F32) => {
            let (av, bv) = (elems::<f32>(a, "a")?, elems::<f32>(b, "b")?);
            if op.is_comparison() {
                let f: fn(f32, f32) -> bool = match op {
                    BinaryOp::Equal => |x, y| x == y,
                    BinaryOp::Less => |x, y| x < y,
                    _ => |x, y| x > y,
                };
                return zip_broadcast(av, a.shape(), bv, b.shape(), shape, f);
            }
            let f = |x: f32, y: f32| op.eval_f32(x, y).unwrap_or(f32::NAN);
            zip_broadcast(av, a.shape(), bv, b.shape(), shape, f)
        }
        (DType::F32, DType::I64) if op == BinaryOp::Pow => {
            let (av, bv) = (elems::<f32>(a, "a")?, elems::<i64>(b, "b")?);
            zip_broadcast(av, a.shape(), bv, b.shape(), shape, |x, y| f64::from(x).powf(y as f64) as f32)
        }
        (DType::I32, DType::I32) if matches!(op, BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul) => {
            let (av, bv) = (elems::<i32>(a, "a")?, elems::<i32>(b, "b")?);
            let f: fn(i32, i32) -> i32 = match op {
                // Wrapping, as onnxruntime's integer kernels.
                BinaryOp::Add => i32::wrapping_add,
                BinaryOp::Sub => i32::wrapping_sub,
                _ => i32::wrapping_mul,
            };
            zip_broadcast(av, a.shape(), bv, b.shape(), shape, f)
        }
        (DType::I64, DType::I64) => {
            let (av, bv) = (elems::<i64>(a, "a")?, elems::<i64>(b, "b")?);
            if op.is_comparison() {
                let f: fn(i64, i64) -> bool = match op {
                    BinaryOp::Equal => |x, y| x == y,
                    BinaryOp::Less => |x, y| x < y,
                    _ => |x, y| x > y,
                };
                return zip_broadcast(av, a.shape(), bv, b.shape(), shape, f);
            }
            if op == BinaryOp::Div && bv.contains(&0) {
                return Err("integer division by zero".into());
            }
            let f: fn(i64, i64) -> i64 = match op {
                // Integer overflow wraps, as in onnxruntime's C++ kernels.
                BinaryOp::Add => i64::wrapping_add,
                BinaryOp::Sub => i64::wrapping_sub,
                BinaryOp::Mul => i64::wrapping_mul,
                BinaryOp::Div => i64::wrapping_div,
                BinaryOp::Max => |x, y| x.max(y),
                BinaryOp::Min => |x, y| x.min(y),
                // onnxruntime evaluates integer Pow through std::pow on doubles.
                BinaryOp::Pow => |x, y| (x as f64).powf(y as f64) as i64,
                BinaryOp::PRelu => |x, s| if x < 0 { s.wrapping_mul(x) } else { x },
                _ => unreachable!("comparisons handled above"),
            };
            zip_broadcast(av, a.shape(), bv, b.shape(), shape, f)
        }
        (DType::Bool, DType::Bool) if op == BinaryOp::Equal => {
            let (av, bv) = (elems::<bool>(a, "a")?, elems::<bool>(b, "b")?);
            zip_broadcast(av, a.shape(), bv, b.shape(), shape, |x, y| x == y)
        }
        (da, db) => Err(format!("{} is not defined on ({da}, {db})", op.name())),
    }
}

/// `f(a[i], b[i])` over the broadcast `shape`.
fn zip_broadcast<A: Copy, B: Copy, R: Elem>(
    a: &[A],
    a_shape: &[usize],
    b: &[B],
    b_shape: &[usize],
    shape: Vec<usize>,
    f: impl Fn(A, B) -> R,
) -> Result<Tensor, String> {
    let out: Vec<R> = if a_shape == b_shape {
        a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect()
    } else {
        let ia = StridedOffsets::new(&shape, &broadcast_strides(a_shape, &shape)?, 0);
        let ib = StridedOffsets::new(&shape, &broadcast_strides(b_shape, &shape)?, 0);
        ia.zip(ib).map(|(i, j)| f(a[i], b[j])).collect()
    };
    make(shape, out)
}

/// ONNX `Where`: `cond ? a : b`, all three broadcast together.
pub(super) fn where_(cond: &Tensor, a: &Tensor, b: &Tensor) -> Result<Tensor, String> {
    let c = elems::<bool>(cond, "cond")?;
    if a.dtype() != b.dtype() {
        return Err(format!("branches have dtypes {} and {}", a.dtype(), b.dtype()));
    }
    let shape = broadcast_shape(cond.shape(), &broadcast_shape(a.shape(), b.shape())?)?;
    let ic = StridedOffsets::new(&shape, &broadcast_strides(cond.shape(), &shape)?, 0);
    let ia = StridedOffsets::new(&shape, &broadcast_strides(a.shape(), &shape)?, 0);
    let ib = StridedOffsets::new(&shape, &broadcast_strides(b.shape(), &shape)?, 0);
    with_elem!(a.dtype(), T => {
        let (av, bv) = (elems::<T>(a, "a")?, elems::<T>(b, "b")?);
        let out: Vec<T> = ic.zip(ia).zip(ib).map(|((k, i), j)| if c[k] { av[i] } else { bv[j] }).collect();
        make(shape, out)
    })
}

#[cfg(test)]
mod tests {
    use cnnc_ir::erf;

    // Reference values from CPython's `math.erf` (correctly rounded to within 1 ulp); the
    // series is accurate to ~2e-14 absolute, so 1e-13 leaves headroom and is far below 1e-12.
    #[test]
    fn erf_matches_known_values() {
        let table = [
            (0.0, 0.0),
            (1e-3, 0.0011283787909692365),
            (0.1, 0.1124629160182849),
            (0.5, 0.5204998778130465),
            (1.0, 0.8427007929497149),
            (1.5, 0.9661051464753108),
            (2.0, 0.9953222650189527),
            (2.5, 0.999593047982555),
            (3.0, 0.9999779095030014),
            (3.5, 0.9999992569016276),
            (4.0, 0.9999999845827421),
            (4.5, 0.9999999998033839),
            (5.0, 0.9999999999984626),
            (5.5, 0.9999999999999927),
            (5.9, 0.9999999999999999),
            (6.0, 1.0),
            (-0.7, -0.6778011938374184),
            (-2.2, -0.9981371537020182),
            (10.0, 1.0),
            (-10.0, -1.0),
        ];
        for (x, want) in table {
            let got = erf(x);
            assert!((got - want).abs() < 1e-13, "erf({x}) = {got}, expected {want}");
        }
        assert!(erf(f64::NAN).is_nan());
    }

    #[test]
    fn erf_is_odd_and_monotonic_up_to_rounding() {
        let mut prev = -1.0;
        for i in -700..=700 {
            let x = f64::from(i) / 100.0;
            let y = erf(x);
            assert_eq!(y, -erf(-x));
            // Monotonic up to rounding noise of a few ulp near ±1.
            assert!(y >= prev - 1e-14, "erf not monotonic at {x}");
            prev = y;
        }
    }
}
