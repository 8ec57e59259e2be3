//! JIT resize against the reference interpreter: every mode, nearest rounding and coordinate
//! transform, up and down, resized axes with untouched axes before, between and after them,
//! and tf-crop-and-resize with extrapolation.

use cnnc_ir::{CoordTransform, Graph, NearestMode, Op, ResizeAttrs, ResizeMode, Tensor, verify};
use cnnc_runtime::testing::random_values;
use cnnc_runtime::{Model, run_reference};

/// Deterministic pseudo-random values in [-2, 2).
fn noise(shape: &[usize], seed: u64) -> Tensor {
    Tensor::from_f32(shape.to_vec(), random_values(shape.iter().product(), seed, 2.0)).expect("shape")
}

/// Runs the resize through the JIT and the reference. `tol == 0` demands identical bits.
fn check(a: ResizeAttrs, x: Tensor, tol: f32) {
    let mut g = Graph::new("g");
    let xin = g.add_input("x", x.ty());
    let y = g.add_node("resize", Op::Resize(a.clone()), &[xin]).expect("infers")[0];
    g.add_output("y", y);
    let g = verify(g).expect("verifies");
    let got = Model::compile(&g).expect("compiles").run(std::slice::from_ref(&x)).expect("runs");
    let want = run_reference(&g, &[x]).expect("reference runs");
    assert_eq!(got[0].shape(), want[0].shape());
    let (got, want) = (got[0].as_f32().expect("f32"), want[0].as_f32().expect("f32"));
    for (i, (a_, b)) in got.iter().zip(want).enumerate() {
        let ok = if tol == 0.0 { a_.to_bits() == b.to_bits() } else { (a_ - b).abs() <= tol * (1.0 + b.abs()) };
        assert!(ok, "{a:?}: element {i}: JIT {a_} vs reference {b}");
    }
}

fn attrs(
    mode: ResizeMode,
    coord: CoordTransform,
    nearest: NearestMode,
    in_shape: &[usize],
    out: &[usize],
) -> ResizeAttrs {
    let scales = in_shape.iter().zip(out).map(|(&i, &o)| o as f32 / i as f32).collect();
    ResizeAttrs { mode, coord, nearest, scales, out_shape: out.to_vec() }
}

fn coords() -> Vec<CoordTransform> {
    vec![
        CoordTransform::HalfPixel,
        CoordTransform::HalfPixelSymmetric,
        CoordTransform::PytorchHalfPixel,
        CoordTransform::AlignCorners,
        CoordTransform::Asymmetric,
        CoordTransform::TfHalfPixelForNn,
    ]
}

const SHAPES: [([usize; 4], [usize; 4]); 4] = [
    ([1, 2, 4, 5], [1, 2, 8, 10]),
    ([2, 1, 7, 9], [2, 1, 3, 4]),
    ([1, 3, 3, 3], [1, 3, 1, 7]),
    ([1, 1, 5, 6], [1, 1, 5, 11]),
];

#[test]
fn nearest_matches_reference_bit_for_bit_in_every_rounding_and_transform() {
    let modes = [NearestMode::RoundPreferFloor, NearestMode::RoundPreferCeil, NearestMode::Floor, NearestMode::Ceil];
    for coord in coords() {
        for nearest in modes {
            for (i, (s_in, s_out)) in SHAPES.iter().enumerate() {
                let a = attrs(ResizeMode::Nearest, coord.clone(), nearest, s_in, s_out);
                check(a, noise(s_in, i as u64), 0.0);
            }
        }
    }
}

// Linear and cubic sum 2–16 weighted samples in f32 (the reference sums in f64).
const INTERP_TOL: f32 = 2e-6;

#[test]
fn linear_and_cubic_match_reference_in_every_transform() {
    let modes = [
        ResizeMode::Linear,
        ResizeMode::Cubic { a: -0.75, exclude_outside: false },
        ResizeMode::Cubic { a: -0.5, exclude_outside: true },
    ];
    for coord in coords() {
        for mode in modes {
            for (i, (s_in, s_out)) in SHAPES.iter().enumerate() {
                let a = attrs(mode, coord.clone(), NearestMode::RoundPreferFloor, s_in, s_out);
                check(a, noise(s_in, i as u64), INTERP_TOL);
            }
        }
    }
}

#[test]
fn scales_that_differ_from_the_size_ratio_are_used_for_coordinates() {
    let a = ResizeAttrs {
        mode: ResizeMode::Linear,
        coord: CoordTransform::Asymmetric,
        nearest: NearestMode::Floor,
        scales: vec![1.0, 1.0, 1.7, 2.3],
        out_shape: vec![1, 2, 6, 11],
    };
    check(a, noise(&[1, 2, 4, 5], 3), INTERP_TOL);
}

#[test]
fn resizing_a_middle_axis_runs_the_inner_axes_as_vectors() {
    for mode in [ResizeMode::Nearest, ResizeMode::Linear] {
        let tol = if mode == ResizeMode::Nearest { 0.0 } else { INTERP_TOL };
        let a = attrs(mode, CoordTransform::HalfPixel, NearestMode::RoundPreferCeil, &[2, 5, 3, 9], &[2, 8, 3, 9]);
        check(a, noise(&[2, 5, 3, 9], 4), tol);
        // Resized axes 1 and 3 with an untouched axis between them.
        let a = attrs(mode, CoordTransform::AlignCorners, NearestMode::Floor, &[2, 5, 3, 9], &[2, 3, 3, 13]);
        check(a, noise(&[2, 5, 3, 9], 5), tol);
        // Every axis, batch included, in rank 3.
        let a = attrs(mode, CoordTransform::Asymmetric, NearestMode::Ceil, &[2, 3, 4], &[3, 5, 2]);
        check(a, noise(&[2, 3, 4], 6), tol);
    }
}

#[test]
fn tf_crop_and_resize_extrapolates_outside_the_box() {
    let roi = vec![0.0, 0.0, -0.2, 0.4, 1.0, 1.0, 0.9, 1.3];
    for (mode, tol) in [
        (ResizeMode::Nearest, 0.0),
        (ResizeMode::Linear, INTERP_TOL),
        (ResizeMode::Cubic { a: -0.75, exclude_outside: false }, INTERP_TOL),
    ] {
        let coord = CoordTransform::TfCropAndResize { roi: roi.clone(), extrapolation: 7.5 };
        let a = attrs(mode, coord, NearestMode::RoundPreferFloor, &[1, 2, 6, 5], &[1, 2, 7, 4]);
        check(a, noise(&[1, 2, 6, 5], 7), tol);
    }
}

#[test]
fn resize_to_the_same_shape_copies() {
    let a = ResizeAttrs {
        mode: ResizeMode::Linear,
        coord: CoordTransform::HalfPixel,
        nearest: NearestMode::Floor,
        scales: vec![1.0, 1.0, 1.5, 1.0],
        out_shape: vec![1, 2, 3, 5],
    };
    check(a, noise(&[1, 2, 3, 5], 8), 0.0);
    let a = ResizeAttrs {
        mode: ResizeMode::Nearest,
        coord: CoordTransform::HalfPixel,
        nearest: NearestMode::Floor,
        scales: vec![1.0, 1.0, 2.0, 2.0],
        out_shape: vec![0, 2, 6, 10],
    };
    check(a, noise(&[0, 2, 3, 5], 9), 0.0);
}
