//! The packed-GEMM conv path with fused epilogues (bias, residual, every activation), against
//! the direct Cranelift conv (itself checked against the reference in `epilogue_tests`), and
//! against itself unfused followed by the Cranelift activation kernel, on a table laid out like
//! `Model::run`'s with the kernel's scratch.
//!
//! Tolerance: rel-L2 ≤ 1e-6 against the direct conv; both sum in f32, in different orders,
//! over ≤ 300 terms. Fused against unfused on the packed path: the same bits.

use cnnc_ir::{ConvAttrs, Op, Tensor, TensorType, UnaryOp};

use super::{Microkernels, emit_conv_with};
use crate::codegen::{Aux, EmitCx, Epilogue, Jit};
use crate::microkernel::F32Tile;
use crate::testing::{random, rel_l2};

/// A compiled conv kernel with its operands, ready to run repeatedly.
pub(super) struct Bench {
    _code: crate::codegen::Code,
    kernel: crate::codegen::KernelFn,
    tensors: Vec<Tensor>,
    aux: Vec<Aux>,
    units: u64,
    scratch: Vec<u64>,
    /// The variant the emitter noted (`cnnc bench`'s kernel name).
    variant: Option<&'static str>,
    pub y: Vec<f32>,
}

impl Bench {
    /// Compiles a conv of `x` (NCHW) to `m` channels with `a`, its bias and an optional residual.
    pub(super) fn new(
        x: &[usize],
        m: usize,
        a: &ConvAttrs,
        ep_act: Option<UnaryOp>,
        bias: bool,
        residual: bool,
        mk: Option<Microkernels>,
    ) -> Bench {
        let mut w_shape = vec![m, x[1] / a.group];
        w_shape.extend(&a.kernel);
        let op = Op::Conv(a.clone());
        let mut tensors = vec![random(x, 1), random(&w_shape, 2)];
        if bias {
            tensors.push(random(&[m], 3));
        }
        let out = {
            let ys: Vec<usize> = (0..a.kernel.len())
                .map(|i| {
                    let ext = a.dilations[i] * (a.kernel[i] - 1) + 1;
                    (x[2 + i] + a.pads[i] + a.pads[i + a.kernel.len()] - ext) / a.strides[i] + 1
                })
                .collect();
            TensorType::f32([vec![x[0], m], ys].concat())
        };
        if residual {
            tensors.push(random(&out.shape, 4));
        }
        let ep = Epilogue { act: ep_act, residual: residual.then_some(2 + usize::from(bias)) };
        let inputs: Vec<TensorType> = tensors.iter().map(Tensor::ty).collect();
        let consts: Vec<Option<&Tensor>> =
            tensors.iter().enumerate().map(|(i, t)| (i == 1 || (bias && i == 2)).then_some(t)).collect();
        let outputs = [out.clone()];
        let cx = EmitCx { name: "conv", op: &op, inputs: &inputs, outputs: &outputs, consts: &consts };
        let mut jit = Jit::new().expect("jit");
        let emitted = emit_conv_with(&mut jit, &cx, a, &ep, mk).expect("emits");
        let variant = jit.take_variant();
        let (code, kernels) = jit.finish(&[emitted.func]).expect("finishes");
        let bytes = emitted.aux.iter().map(|a| if let Aux::Scratch(n) = a { *n } else { 0 }).max().unwrap_or(0);
        Bench {
            _code: code,
            kernel: kernels[0],
            tensors,
            aux: emitted.aux,
            units: emitted.units,
            scratch: vec![0; bytes.div_ceil(8)],
            variant,
            y: vec![f32::NAN; out.numel()],
        }
    }

    /// Runs every work unit in one call.
    pub(super) fn run(&mut self) {
        self.run_units(&[(0, self.units)]);
    }

    /// Runs each work unit in its own call, last unit first (as threads may).
    pub(super) fn run_units_reversed(&mut self) {
        let calls: Vec<(u64, u64)> = (0..self.units).rev().map(|u| (u, u + 1)).collect();
        self.run_units(&calls);
    }

    /// Runs each work unit in its own call, last unit first, over an output filled with NaN,
    /// and asserts that it writes the bits the previous run wrote (units are independent and
    /// complete), naming `what` and the first element that differs.
    pub(super) fn assert_unit_split_gives_the_same_bits(&mut self, what: &str) {
        let blank = vec![f32::NAN; self.y.len()];
        let whole = std::mem::replace(&mut self.y, blank);
        self.run_units_reversed();
        for (i, (a, b)) in self.y.iter().zip(&whole).enumerate() {
            assert!(a.to_bits() == b.to_bits(), "{what}: unit by unit ({} units): element {i}: {a} vs {b}", self.units);
        }
    }

    fn run_units(&mut self, calls: &[(u64, u64)]) {
        let scratch = self.scratch.as_mut_ptr().cast();
        let mut table: Vec<*mut u8> =
            self.tensors.iter().map(|t| t.as_f32().expect("f32").as_ptr() as *mut u8).collect();
        table.push(self.y.as_mut_ptr().cast());
        table.extend(self.aux.iter().map(|a| a.ptr().unwrap_or(scratch)));
        // SAFETY: one buffer per kernel argument, each of the size the kernel was compiled
        // for (scratch sized to its request); the code is alive; only `y` and scratch are written.
        for &(lo, hi) in calls {
            unsafe { (self.kernel)(table.as_ptr(), lo as i64, hi as i64) };
        }
    }
}

#[test]
fn packed_conv_applies_bias_residual_and_clamp_like_the_direct_conv() {
    for mk in each_f32_tile!() {
        // Printed so that a failure's captured output names the tile.
        eprintln!("f32 tile {:?}", mk.tile);
        packed_conv_applies_bias_residual_and_clamp_like_the_direct_conv_on(mk);
    }
}

fn packed_conv_applies_bias_residual_and_clamp_like_the_direct_conv_on(mk: Microkernels) {
    let a = ConvAttrs::new(&[3, 3]).pads(&[1; 4]);
    let acts = [None, Some(UnaryOp::Relu), Some(UnaryOp::Clip { min: -0.5, max: 0.25 })];
    // 33 channels: K = 297 is two K blocks (bias in the first, epilogue in the last). 810
    // pixels are 4 pixel blocks (the last shorter); 61 and 100 output channels split their
    // channel tiles into chunks (with the partial tile in the last chunk) for work units.
    // (Maps large enough to stay off the transposed path.)
    for (x, m) in [([1, 33, 9, 20], 13), ([2, 5, 7, 6], 7), ([1, 8, 30, 27], 61), ([1, 20, 36, 36], 100)] {
        for act in acts {
            for residual in [false, true] {
                let mut packed = Bench::new(&x, m, &a, act, true, residual, Some(mk));
                let mut direct = Bench::new(&x, m, &a, act, true, residual, None);
                assert!(packed.aux.iter().any(|a| matches!(a, Aux::Scratch(_))), "took the packed path");
                if m > 60 {
                    assert!(packed.units > 1, "{x:?}→{m}: split into work units");
                }
                packed.run();
                direct.run();
                let rel = rel_l2(&packed.y, &direct.y);
                assert!(rel <= 1e-6, "{x:?}→{m} {act:?} residual {residual}: rel-L2 {rel:.3e}");
                for bench in [&mut packed, &mut direct] {
                    bench.assert_unit_split_gives_the_same_bits(&format!("{x:?}→{m} {act:?} residual {residual}"));
                }
            }
        }
    }
}

/// Convs with a fused residual over one small K block run each channel tile over the whole
/// pixel block (`Group::tile_outer`): 1×1 convs with pairs of strips and a partial strip (K =
/// 24, 400 pixels in blocks of 208 and 192), and without pairs (K = 16, 81 pixels), against
/// the direct conv and any unit split, with every epilogue the residual goes with.
#[test]
fn residual_convs_run_tile_by_tile_like_the_direct_conv() {
    for mk in each_f32_tile!() {
        let a = ConvAttrs::new(&[1, 1]);
        for (x, m) in [([1, 24, 20, 20], 40), ([1, 16, 9, 9], 30)] {
            for act in [None, Some(UnaryOp::Relu), Some(UnaryOp::HardSwish)] {
                let mut packed = Bench::new(&x, m, &a, act, true, true, Some(mk));
                let mut direct = Bench::new(&x, m, &a, act, true, true, None);
                assert_eq!(packed.variant, Some("conv-packed-avx2"), "{x:?}→{m}: the channel-major path");
                packed.run();
                direct.run();
                let rel = rel_l2(&packed.y, &direct.y);
                assert!(rel <= 1e-6, "{x:?}→{m} {act:?}: rel-L2 {rel:.3e}");
                packed.assert_unit_split_gives_the_same_bits(&format!("{x:?}→{m} {act:?}"));
            }
        }
    }
}

/// `op` by the pure-Cranelift activation kernel (`codegen::unary`), in one call.
fn cranelift_activation(op: UnaryOp, x: &[f32]) -> Vec<f32> {
    let ty = TensorType::f32(vec![x.len()]);
    let (inputs, outputs) = ([ty.clone()], [ty]);
    let uop = Op::Unary(op);
    let cx = EmitCx { name: "act", op: &uop, inputs: &inputs, outputs: &outputs, consts: &[None] };
    let mut jit = Jit::new().expect("jit");
    let emitted = crate::codegen::unary::emit_unary_with(&mut jit, &cx, op, None).expect("emits");
    let (_code, kernels) = jit.finish(&[emitted.func]).expect("finishes");
    let mut y = vec![f32::NAN; x.len()];
    let table: [*mut u8; 2] = [x.as_ptr() as *mut u8, y.as_mut_ptr().cast()];
    // SAFETY: input and output of the length the kernel was compiled for; `_code` is alive.
    unsafe { kernels[0](table.as_ptr(), 0, emitted.units as i64) };
    y
}

/// Gives `fused` (a conv with `act` fused) and `plain` (the same conv without it) one
/// [`wide_residual`] if they take a residual, runs both, and asserts that `fused` wrote exactly
/// the bits of the Cranelift activation kernel applied to `plain`'s output.
fn assert_fused_is_plain_then_activation(
    fused: &mut Bench,
    plain: &mut Bench,
    act: UnaryOp,
    residual: bool,
    what: &str,
) {
    if residual {
        let r = wide_residual(fused.tensors.last().expect("residual").shape());
        *fused.tensors.last_mut().expect("residual") = r.clone();
        *plain.tensors.last_mut().expect("residual") = r;
    }
    fused.run();
    plain.run();
    let want = cranelift_activation(act, &plain.y);
    for (i, (g, w)) in fused.y.iter().zip(&want).enumerate() {
        assert_eq!(g.to_bits(), w.to_bits(), "{what} at {i}: {g} vs {w} (from {})", plain.y[i]);
    }
}

/// A residual whose sums with the conv span every activation's ranges: values scaled by
/// 1/10 to 100 (Sigmoid's `exp` clamps, HardSwish's and HardSigmoid's saturation), and NaN,
/// ±∞, −0 and a subnormal sprinkled in.
fn wide_residual(shape: &[usize]) -> Tensor {
    let t = random(shape, 4);
    let special = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, 1e-40, -1e-40, 95.0, -110.0, 3.0, -3.0];
    let data = t
        .as_f32()
        .expect("f32")
        .iter()
        .enumerate()
        .map(|(i, &v)| if i % 37 == 5 { special[(i / 37) % special.len()] } else { v * [0.1, 1.0, 10.0, 100.0][i % 4] })
        .collect();
    Tensor::from_f32(shape.to_vec(), data).expect("shape")
}

/// Every fused activation on the packed path gives exactly the bits of the same packed conv
/// unfused followed by the Cranelift activation kernel: the microkernel computes each
/// activation with the same operations in the same order (see `microkernel::Act`).
#[test]
fn packed_fused_activation_matches_the_cranelift_activation_kernel_bit_for_bit() {
    for mk in each_f32_tile!() {
        // Printed so that a failure's captured output names the tile.
        eprintln!("f32 tile {:?}", mk.tile);
        packed_fused_activation_matches_the_cranelift_activation_kernel_bit_for_bit_on(mk);
    }
}

fn packed_fused_activation_matches_the_cranelift_activation_kernel_bit_for_bit_on(mk: Microkernels) {
    let a = ConvAttrs::new(&[3, 3]).pads(&[1; 4]);
    let acts = [
        UnaryOp::Relu,
        UnaryOp::LeakyRelu { alpha: 0.1 },
        UnaryOp::Clip { min: -0.5, max: 0.25 },
        UnaryOp::Clip { min: 0.0, max: 6.0 },
        UnaryOp::HardSigmoid { alpha: 0.2, beta: 0.5 },
        UnaryOp::HardSwish,
        UnaryOp::Sigmoid,
        UnaryOp::Swish { beta: 1.0 },
        UnaryOp::Swish { beta: 1.702 },
    ];
    // Two K blocks (K = 297), partial channel tiles and strips, with and without bias.
    for (x, m, bias) in [([1, 33, 9, 20], 13, true), ([1, 30, 7, 6], 11, false)] {
        for act in acts {
            for residual in [false, true] {
                let mut fused = Bench::new(&x, m, &a, Some(act), bias, residual, Some(mk));
                let mut plain = Bench::new(&x, m, &a, None, bias, residual, Some(mk));
                assert!(fused.aux.iter().any(|a| matches!(a, Aux::Scratch(_))), "took the packed path");
                let what = format!("{x:?}→{m} {act:?} bias {bias} residual {residual}");
                assert_fused_is_plain_then_activation(&mut fused, &mut plain, act, residual, &what);
            }
        }
    }
}

/// 1×1 stride-1 convs with few output channels read the input in place (`InPlace`: an extra
/// row-offset table among the aux buffers): against the direct conv, with every epilogue, K
/// split into two blocks, groups, batch, a partial last strip and partial channel tiles; unit
/// by unit in reverse gives the same bits.
#[test]
fn in_place_1x1_conv_matches_the_direct_conv_and_any_unit_split() {
    for mk in each_f32_tile!() {
        // Printed so that a failure's captured output names the tile.
        eprintln!("f32 tile {:?}", mk.tile);
        in_place_1x1_conv_matches_the_direct_conv_and_any_unit_split_on(mk);
    }
}

fn in_place_1x1_conv_matches_the_direct_conv_and_any_unit_split_on(mk: Microkernels) {
    let pointwise = |group| ConvAttrs::new(&[1, 1]).group(group);
    let offset_tables = |b: &Bench| b.aux.iter().filter(|a| matches!(a, Aux::I64(_))).count();
    // (x, m, group, in place): 189 pixels are 11 full strips and one of 13; K = 300 is two
    // K blocks; 30 channels are 5 tiles, packed as before.
    let cases = [
        ([1, 20, 9, 21], 5, 1, true),
        ([1, 20, 9, 21], 13, 1, true),
        ([1, 96, 16, 20], 24, 1, true),
        ([2, 300, 5, 7], 12, 1, true),
        ([1, 32, 7, 9], 8, 2, true),
        ([1, 20, 9, 21], 30, 1, false),
        // 64×64 planes are 16 KiB apart, one L1 set: packed, not read in place.
        ([1, 24, 64, 64], 24, 1, false),
    ];
    for (x, m, group, in_place) in cases {
        let a = pointwise(group);
        for (act, residual, bias) in
            [(None, false, true), (Some(UnaryOp::Relu), true, true), (Some(UnaryOp::Sigmoid), false, false)]
        {
            let mut packed = Bench::new(&x, m, &a, act, bias, residual, Some(mk));
            let mut direct = Bench::new(&x, m, &a, act, bias, residual, None);
            assert!(packed.aux.iter().any(|a| matches!(a, Aux::Scratch(_))), "took the packed path");
            assert_eq!(offset_tables(&packed) == 2, in_place, "{x:?}→{m}: in place");
            packed.run();
            direct.run();
            let rel = rel_l2(&packed.y, &direct.y);
            assert!(rel <= 1e-6, "{x:?}→{m} {act:?} residual {residual}: rel-L2 {rel:.3e}");
            packed.assert_unit_split_gives_the_same_bits(&format!("{x:?}→{m} {act:?}"));
        }
    }
}

/// The reduction lengths and strides that choose between the microkernel and Cranelift.
#[test]
fn small_reductions_and_strided_few_channel_convs_route_by_measurement() {
    // On every f32 tile set this host has: the strided few-channel limit is the tile's.
    for mk in each_f32_tile!() {
        let conv = |k: usize, s: usize| ConvAttrs::new(&[k, k]).strides(&[s, s]).pads(&[k / 2; 4]);
        let packed = |x: [usize; 4], m: usize, a: &ConvAttrs| {
            Bench::new(&x, m, a, None, true, false, Some(mk)).aux.iter().any(|a| matches!(a, Aux::Scratch(_)))
        };
        // (17×17 pixels: more than the transposed 1×1 path takes, which has no scratch.)
        assert!(packed([1, 12, 17, 17], 96, &conv(1, 1)), "K = 12");
        assert!(!packed([1, 8, 8, 8], 96, &conv(1, 1)), "K = 8");
        // 1×1 convs with few output channels on larger maps: transposed from K = 48 (no
        // scratch), channel-major below it and on channel planes that alias in L1.
        assert!(!packed([1, 128, 56, 56], 32, &conv(1, 1)), "K = 128 at 56×56");
        assert!(packed([1, 32, 31, 31], 36, &conv(1, 1)), "K = 32 at 31×31");
        assert!(packed([1, 128, 32, 32], 32, &conv(1, 1)), "K = 128 at 32×32 (4 KiB planes)");
        assert!(!packed([1, 1, 8, 8], 16, &conv(3, 1)), "K = 9");
        assert!(packed([1, 3, 16, 16], 32, &conv(3, 2)), "stride 2, 32 channels");
        // 16 strided channels: the direct kernel on the AVX2 tile, the microkernel on AVX-512's;
        // 8 stay direct on both.
        let wide = mk.tile == F32Tile::Avx512;
        assert_eq!(packed([1, 3, 16, 16], 16, &conv(3, 2)), wide, "stride 2, 16 channels ({:?})", mk.tile);
        assert_eq!(packed([1, 32, 16, 16], 16, &conv(3, 2)), wide, "stride 2, 16 channels, K = 288 ({:?})", mk.tile);
        assert!(!packed([1, 32, 16, 16], 8, &conv(3, 2)), "stride 2, 8 channels ({:?})", mk.tile);
    }
}

/// 1×1 convs on small output maps take the transposed GEMM (`packed/swap.rs`: no scratch,
/// a pixel-offset table): against the direct conv with every epilogue, strides 1 and 2, end
/// padding that no pixel reads, groups, batch, partial pixel and channel tiles and several
/// channel chunks; unit by unit in reverse gives the same bits. Tolerance as above (K ≤ 300).
#[test]
fn transposed_1x1_conv_matches_the_direct_conv_and_any_unit_split() {
    // Every f32 tile set this host has (6- and 12-pixel transposed tiles).
    for mk in each_f32_tile!() {
        let pointwise = |s: usize, group: usize, pads: Vec<usize>| {
            ConvAttrs::new(&[1, 1]).strides(&[s, s]).pads(&pads).group(group)
        };
        // (x, m, stride, group, pads): 49 pixels are 8 tiles and one of 1; 40 channels two tiles
        // and one of 8; 300 → 512 channels at 7×7 is several chunks; stride 2 with an odd input;
        // 2025 pixels with few channels are blocks of pixel tiles (the last with a partial tile).
        let cases = [
            ([1, 64, 7, 7], 40, 1, 1, vec![0; 4]),
            ([1, 300, 7, 7], 512, 1, 1, vec![0; 4]),
            ([1, 32, 13, 13], 64, 2, 1, vec![0; 4]),
            ([2, 24, 6, 5], 96, 1, 2, vec![0; 4]),
            ([1, 16, 9, 9], 32, 2, 1, vec![0, 0, 1, 1]),
            ([1, 200, 45, 45], 40, 1, 1, vec![0; 4]),
            // Whole 64-channel tiles on maps of ≥ 144 pixels: the wide tile where the tile set
            // has one (AVX-512), stride 1 and 2.
            ([1, 96, 14, 14], 128, 1, 1, vec![0; 4]),
            ([1, 64, 27, 27], 64, 2, 1, vec![0; 4]),
        ];
        for (x, m, s, group, pads) in cases {
            let a = pointwise(s, group, pads);
            for (act, residual, bias) in [
                (None, false, true),
                (Some(UnaryOp::Relu), true, true),
                (Some(UnaryOp::Sigmoid), false, false),
                (Some(UnaryOp::HardSwish), true, false),
            ] {
                let mut packed = Bench::new(&x, m, &a, act, bias, residual, Some(mk));
                let mut direct = Bench::new(&x, m, &a, act, bias, residual, None);
                assert!(!packed.aux.iter().any(|a| matches!(a, Aux::Scratch(_))), "{x:?}→{m}: transposed path");
                assert!(packed.aux.iter().any(|a| matches!(a, Aux::I64(_))), "{x:?}→{m}: pixel offsets");
                packed.run();
                direct.run();
                let rel = rel_l2(&packed.y, &direct.y);
                assert!(rel <= 1e-6, "{x:?}→{m} {act:?} residual {residual}: rel-L2 {rel:.3e}");
                packed.assert_unit_split_gives_the_same_bits(&format!("{x:?}→{m} {act:?}"));
                if m == 512 || x[2] == 45 {
                    assert!(packed.units > 2, "{x:?}→{m}: split into channel chunks or pixel blocks");
                }
                let pixels = packed.y.len() / (x[0] * m);
                assert_eq!(packed.variant, Some(transposed_variant(mk, m / group, pixels)), "{x:?}→{m}");
            }
        }
    }
}

/// The transposed tile a conv with `mg` output channels per group and `pixels` output pixels
/// takes: on AVX-512, the wide tile for whole 64-channel tiles on ≥ 144 pixels, else the
/// two-panel tile for whole 32-channel tiles; the 16-channel tile otherwise.
fn transposed_variant(mk: Microkernels, mg: usize, pixels: usize) -> &'static str {
    let avx512 = mk.tile == F32Tile::Avx512;
    if avx512 && mg.is_multiple_of(64) && pixels >= 144 {
        "conv-packed-t64"
    } else if avx512 && mg.is_multiple_of(32) {
        "conv-packed-t32"
    } else {
        "conv-packed-t-avx2"
    }
}

/// The transposed path's fused activations give the bits of the same conv unfused followed by
/// the Cranelift activation kernel, as on the channel-major path.
#[test]
fn transposed_fused_activation_matches_the_cranelift_activation_kernel_bit_for_bit() {
    // Every f32 tile set this host has (6- and 12-pixel transposed tiles).
    for mk in each_f32_tile!() {
        let a = ConvAttrs::new(&[1, 1]);
        let acts = [
            UnaryOp::Relu,
            UnaryOp::LeakyRelu { alpha: 0.1 },
            UnaryOp::Clip { min: -0.5, max: 0.25 },
            UnaryOp::HardSigmoid { alpha: 0.2, beta: 0.5 },
            UnaryOp::HardSwish,
            UnaryOp::Sigmoid,
            UnaryOp::Swish { beta: 1.0 },
            UnaryOp::Swish { beta: 1.702 },
        ];
        // (64 channels at 7×7: the two-panel tile on AVX-512.)
        for (x, m, bias) in [([1, 40, 7, 7], 37, true), ([1, 20, 5, 4], 48, false), ([1, 40, 7, 7], 64, true)] {
            for act in acts {
                for residual in [false, true] {
                    let mut fused = Bench::new(&x, m, &a, Some(act), bias, residual, Some(mk));
                    let mut plain = Bench::new(&x, m, &a, None, bias, residual, Some(mk));
                    assert!(!fused.aux.iter().any(|a| matches!(a, Aux::Scratch(_))), "transposed path");
                    let what = format!("{x:?}→{m} {act:?} bias {bias} residual {residual}");
                    assert_fused_is_plain_then_activation(&mut fused, &mut plain, act, residual, &what);
                }
            }
        }
    }
}

/// Stride-2 convs on the channel-major path pack with the deinterleaving packer
/// (`pack_b_im2col_s2`): a 7×7 stride-2 stem-like conv (3 channels, pad 3, output rows of 32
/// pixels and of 40, which strips straddle) and a 3×3 stride-2 conv, on maps large enough to
/// stay off the transposed path, against the direct conv and any unit split.
#[test]
fn stride_2_packed_convs_match_the_direct_conv_and_any_unit_split() {
    for mk in each_f32_tile!() {
        // Printed so that a failure's captured output names the tile.
        eprintln!("f32 tile {:?}", mk.tile);
        stride_2_packed_convs_match_the_direct_conv_and_any_unit_split_on(mk);
    }
}

fn stride_2_packed_convs_match_the_direct_conv_and_any_unit_split_on(mk: Microkernels) {
    let conv = |k: usize, p: usize| ConvAttrs::new(&[k, k]).strides(&[2, 2]).pads(&[p; 4]);
    for (x, m, k, p) in [([1, 3, 80, 64], 64, 7, 3), ([1, 3, 46, 80], 40, 7, 3), ([1, 24, 34, 66], 48, 3, 1)] {
        let a = conv(k, p);
        let mut packed = Bench::new(&x, m, &a, Some(UnaryOp::Relu), true, false, Some(mk));
        let mut direct = Bench::new(&x, m, &a, Some(UnaryOp::Relu), true, false, None);
        assert_eq!(packed.variant, Some("conv-packed-avx2"), "{x:?}→{m}: the channel-major path");
        packed.run();
        direct.run();
        let rel = rel_l2(&packed.y, &direct.y);
        assert!(rel <= 1e-6, "{x:?}→{m} k {k}: rel-L2 {rel:.3e}");
        packed.assert_unit_split_gives_the_same_bits(&format!("{x:?}→{m}"));
    }
}

/// k×k convs on small maps take the transposed tiles over pixel-major im2col rows packed per
/// work unit (`packed/swap.rs`, `pack_im2col_t`): against the direct conv with every epilogue,
/// padding (also asymmetric), strides 1 and 2, dilation, 5×5 kernels, groups, batch, partial
/// pixel and channel tiles, the wide tile (whole 64-channel tiles on ≥ 144 pixels, AVX-512) and
/// a layer whose weights outweigh its pixels (one unit per host thread, every pixel in each);
/// unit by unit in reverse gives the same bits. Tolerance as above (K ≤ 576).
#[test]
fn transposed_im2col_conv_matches_the_direct_conv_and_any_unit_split() {
    for mk in each_f32_tile!() {
        eprintln!("f32 tile {:?}", mk.tile);
        // (x, m, kernel, stride, dilation, group, pads)
        let cases = [
            ([1, 32, 14, 14], 64, 3, 1, 1, 1, vec![1; 4]),
            ([1, 16, 7, 7], 40, 3, 1, 1, 1, vec![1; 4]),
            ([1, 24, 15, 15], 64, 3, 2, 1, 1, vec![1; 4]),
            ([2, 32, 9, 9], 128, 3, 1, 1, 2, vec![1; 4]),
            ([1, 16, 12, 12], 32, 3, 1, 2, 1, vec![2; 4]),
            ([1, 8, 10, 10], 64, 5, 1, 1, 1, vec![2, 1, 1, 2]),
            ([1, 64, 5, 5], 256, 3, 1, 1, 1, vec![1; 4]),
        ];
        for (x, m, k, s, d, group, pads) in cases {
            let a = ConvAttrs::new(&[k, k]).strides(&[s, s]).dilations(&[d, d]).pads(&pads).group(group);
            for (act, residual, bias) in
                [(None, false, true), (Some(UnaryOp::Relu), true, true), (Some(UnaryOp::HardSwish), false, false)]
            {
                let mut packed = Bench::new(&x, m, &a, act, bias, residual, Some(mk));
                let mut direct = Bench::new(&x, m, &a, act, bias, residual, None);
                let what = format!("{x:?}→{m} {k}×{k} s{s} d{d} g{group} {act:?} residual {residual}");
                let pixels = packed.y.len() / (x[0] * m);
                assert_eq!(packed.variant, Some(transposed_variant(mk, m / group, pixels)), "{what}");
                assert!(packed.aux.iter().any(|a| matches!(a, Aux::Scratch(_))), "{what}: packs im2col rows");
                packed.run();
                direct.run();
                let rel = rel_l2(&packed.y, &direct.y);
                assert!(rel <= 1e-6, "{what}: rel-L2 {rel:.3e}");
                packed.assert_unit_split_gives_the_same_bits(&what);
                if m == 256 {
                    let threads = crate::threads::available().min(m / 16) as u64;
                    assert_eq!(packed.units, threads, "{what}: one unit per host thread");
                }
            }
        }
        // Larger maps and few channels stay on the channel-major path.
        let conv3 = ConvAttrs::new(&[3, 3]).pads(&[1; 4]);
        for (x, m) in [([1, 64, 56, 56], 64), ([1, 32, 28, 28], 32)] {
            let packed = Bench::new(&x, m, &conv3, None, true, false, Some(mk));
            assert_eq!(packed.variant, Some("conv-packed-avx2"), "{x:?}→{m}");
        }
    }
}

/// Channel planes whose rows share L1 sets: power-of-two planes of 1 KiB and more with enough
/// rows; planes of other sizes, and few rows, do not.
#[test]
fn power_of_two_planes_alias_in_l1() {
    use super::rows_alias;
    // (plane bytes, rows, aliases)
    let cases = [
        (64 * 64 * 4, 24, true),
        (32 * 32 * 4, 9, true),
        (32 * 32 * 4, 8, false),
        (16 * 16 * 4, 64, true),
        (16 * 16 * 4, 32, false),
        (8 * 8 * 4, 512, false),
        (60 * 60 * 4, 24, false),
        (63 * 63 * 4, 512, false),
        (28 * 28 * 4, 256, false),
        (7 * 7 * 4, 1024, false),
    ];
    for (stride, rows, aliases) in cases {
        assert_eq!(rows_alias(stride, rows), aliases, "{stride} bytes apart, {rows} rows");
    }
}
