//! ConvTranspose kernels called directly, on a table laid out like `Model::run`'s: every path
//! (upsampling through the microkernel, upsampling in Cranelift, the general gather form)
//! against the reference op, and each kernel's work units run one call at a time in reverse
//! order against one call over all units, bit for bit.
//!
//! Tolerance: rel-L2 ≤ 1e-6 and every element within 1e-5·max|reference|: the kernels sum at
//! most a few hundred f32 terms of magnitude ≤ 1 in another order than the f64 reference.

use cnnc_ir::{ConvTransposeAttrs, Op, Tensor, TensorType, infer_types};

use super::{Geo, const_f32, transpose, transpose_upsample};
use crate::codegen::{Aux, Code, CompileError, EmitCx, Emitted, Jit, KernelFn};
use crate::microkernel::{Choice, Microkernels, select};
use crate::reference::eval_op;
use crate::testing::{assert_close, random};

struct Case {
    x: Vec<usize>,
    mg: usize,
    attrs: ConvTransposeAttrs,
    bias: bool,
    runtime_weights: bool,
}

fn case(x: &[usize], mg: usize, kernel: &[usize], strides: &[usize]) -> Case {
    let ns = kernel.len();
    let attrs = ConvTransposeAttrs {
        kernel: kernel.to_vec(),
        strides: strides.to_vec(),
        dilations: vec![1; ns],
        pads: vec![0; 2 * ns],
        output_padding: vec![0; ns],
        group: 1,
    };
    Case { x: x.to_vec(), mg, attrs, bias: true, runtime_weights: false }
}

impl Case {
    fn group(mut self, g: usize) -> Case {
        self.attrs.group = g;
        self
    }

    fn pads(mut self, p: &[usize]) -> Case {
        self.attrs.pads = p.to_vec();
        self
    }

    fn no_bias(mut self) -> Case {
        self.bias = false;
        self
    }

    fn runtime_weights(mut self) -> Case {
        self.runtime_weights = true;
        self
    }

    /// [`Case::check_with`] through the dispatch of `transpose::emit` with `mk`.
    fn check(&self, mk: Option<Microkernels>) -> (u64, &'static str) {
        self.check_with(|jit, cx, geo| transpose::emit(jit, cx, geo, mk))
    }

    /// Compiles the case with `emit`, checks it against the reference, and checks that running
    /// its units one by one in reverse gives the same bits. Returns the kernel's unit count
    /// and variant.
    fn check_with(
        &self,
        emit: impl FnOnce(&mut Jit, &EmitCx, &Geo) -> Result<Emitted, CompileError>,
    ) -> (u64, &'static str) {
        self.compile(emit, |what, k, tensors, op, outputs| {
            let whole = k.run(tensors, outputs[0].numel(), &[(0, k.units)]);
            let want = eval_op(op, &tensors.iter().collect::<Vec<_>>(), outputs).expect("reference")[0].clone();
            assert_close(what, &whole, want.as_f32().expect("f32"));
            let calls: Vec<(u64, u64)> = (0..k.units).rev().map(|u| (u, u + 1)).collect();
            let split = k.run(tensors, outputs[0].numel(), &calls);
            assert!(
                whole.iter().zip(&split).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{what}: unit-by-unit run differs ({} units)",
                k.units
            );
        })
    }

    /// Builds the case's tensors (x, w, bias), compiles it with `emit` and hands
    /// `(description, kernel, tensors, op, output types)` to `test`. Returns the kernel's unit
    /// count and variant.
    fn compile(
        &self,
        emit: impl FnOnce(&mut Jit, &EmitCx, &Geo) -> Result<Emitted, CompileError>,
        test: impl FnOnce(&str, &Kernel, &[Tensor], &Op, &[TensorType]),
    ) -> (u64, &'static str) {
        let mut w_shape = vec![self.x[1], self.mg];
        w_shape.extend(&self.attrs.kernel);
        let mut tensors = vec![random(&self.x, 1), random(&w_shape, 2)];
        if self.bias {
            tensors.push(random(&[self.mg * self.attrs.group], 3));
        }
        let op = Op::ConvTranspose(self.attrs.clone());
        let inputs: Vec<TensorType> = tensors.iter().map(Tensor::ty).collect();
        let outputs = infer_types(&op, &inputs.iter().collect::<Vec<_>>()).expect("types");
        let consts: Vec<Option<&Tensor>> = tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (i > 0 && !(i == 1 && self.runtime_weights)).then_some(t))
            .collect();
        let cx = EmitCx { name: "convt", op: &op, inputs: &inputs, outputs: &outputs, consts: &consts };
        let mut jit = Jit::new().expect("jit");
        let geo = Geo::conv_transpose(&cx, &self.attrs).expect("geometry");
        let emitted = emit(&mut jit, &cx, &geo).expect("emits");
        let variant = jit.take_variant().unwrap_or("conv-transpose");
        let (code, kernels) = jit.finish(&[emitted.func]).expect("finishes");
        let k = Kernel { _code: code, kernel: kernels[0], aux: emitted.aux, units: emitted.units };
        let what = format!("{:?}→{} {:?} ({variant})", self.x, self.mg, self.attrs);
        test(&what, &k, &tensors, &op, &outputs);
        (k.units, variant)
    }
}

struct Kernel {
    _code: Code,
    kernel: KernelFn,
    aux: Vec<Aux>,
    units: u64,
}

impl Kernel {
    /// Runs the calls `(lo, hi)` in order on a NaN-filled output and returns it.
    fn run(&self, tensors: &[Tensor], out_len: usize, calls: &[(u64, u64)]) -> Vec<f32> {
        let mut y = vec![f32::NAN; out_len];
        let bytes = self.aux.iter().map(|a| if let Aux::Scratch(n) = a { *n } else { 0 }).max().unwrap_or(0);
        let mut scratch = vec![0u64; bytes.div_ceil(8) + 8];
        let sp = scratch.as_mut_ptr().cast::<u8>();
        let sp = sp.wrapping_add(sp.align_offset(64));
        let mut table: Vec<*mut u8> = tensors.iter().map(|t| t.as_f32().expect("f32").as_ptr() as *mut u8).collect();
        table.push(y.as_mut_ptr().cast());
        table.extend(self.aux.iter().map(|a| a.ptr().unwrap_or(sp)));
        for &(lo, hi) in calls {
            // SAFETY: one buffer per kernel argument, each of the size the kernel was compiled
            // for (64-byte aligned scratch of the requested size); the code is alive; only `y`
            // and the scratch are written.
            unsafe { (self.kernel)(table.as_ptr(), lo as i64, hi as i64) };
        }
        y
    }
}

/// Every kernel choice: pure Cranelift and the host's microkernels with each f32 GEMM tile it
/// has (a skip for each tile it lacks).
fn choices() -> Vec<Option<Microkernels>> {
    let mut v = vec![None];
    v.extend(each_f32_tile!().into_iter().map(Some));
    v
}

#[test]
fn upsampling_paths_match_the_reference_and_any_unit_split() {
    let cases = [
        // ppocr_v4_det's two layers, scaled down; odd widths leave pixel tails.
        case(&[1, 24, 9, 21], 24, &[2, 2], &[2, 2]),
        case(&[1, 24, 13, 35], 1, &[2, 2], &[2, 2]).no_bias(),
        // The same with the bias that -O1 folds into them (a BatchNorm or Add after each).
        case(&[1, 24, 9, 21], 24, &[2, 2], &[2, 2]).no_bias(),
        case(&[1, 24, 13, 35], 1, &[2, 2], &[2, 2]),
        // Blocks of several rows, the last one shorter; wide rows cut into column chunks with
        // a narrower last chunk.
        case(&[1, 2, 23, 5], 2, &[2, 2], &[2, 2]),
        case(&[1, 3, 2, 301], 2, &[2, 2], &[2, 2]),
        // Column taps 1, 3 and 4, a 3-D kernel, a 1-D one, groups, batch.
        case(&[1, 5, 6, 7], 7, &[2, 1], &[2, 1]),
        case(&[1, 4, 5, 9], 3, &[3, 3], &[3, 3]),
        case(&[1, 6, 3, 5], 5, &[1, 4], &[1, 4]).no_bias(),
        case(&[1, 3, 3, 4, 5], 2, &[2, 2, 2], &[2, 2, 2]),
        case(&[1, 4, 37], 3, &[2], &[2]),
        case(&[2, 6, 5, 6], 4, &[2, 2], &[2, 2]).group(3),
        // More input channels than one K block of the GEMM (three blocks).
        case(&[1, 300, 3, 5], 2, &[2, 2], &[2, 2]),
    ];
    for c in &cases {
        let direct = c.check_with(transpose_upsample::emit_direct);
        assert_eq!(direct.1, "conv-transpose-upsample");
        for mk in choices().into_iter().flatten() {
            let gemm = c.check_with(|jit, cx, geo| {
                transpose_upsample::emit_gemm(jit, cx, geo, mk, const_f32(cx, 1).expect("constant weights"))
            });
            assert_eq!(gemm.1, "conv-transpose-upsample-avx2");
        }
    }
}

/// The microkernel upsampling path sums in onnxruntime's order, bit for bit (tolerance 0):
/// per output element, the input channels in one FMA chain in channel order from zero (MLAS
/// SGEMM), then `+ bias` (its col2im then bias pass). That is what makes an f32 conv-transpose
/// between a DequantizeLinear and a QuantizeLinear round to onnxruntime's integers (all of
/// ppocr_v4_det's QDQ model's outputs; with the two-chain tile, 2 of 10.6 million differed).
/// ppocr_v4_det's first conv-transpose (24 → 24, 2×2 stride 2) scaled down, and 300 input
/// channels (three K blocks of MLAS's 128, 128 and 44, each summed from zero and added on).
#[test]
fn upsampling_gemm_sums_in_onnxruntime_order() {
    for c in [case(&[1, 24, 9, 21], 24, &[2, 2], &[2, 2]), case(&[1, 300, 3, 5], 8, &[2, 2], &[2, 2])] {
        for mk in choices().into_iter().flatten() {
            let emit = |jit: &mut Jit, cx: &EmitCx, geo: &Geo| {
                transpose_upsample::emit_gemm(jit, cx, geo, mk, const_f32(cx, 1).expect("constant weights"))
            };
            c.compile(emit, |what, k, tensors, _, outputs| {
                let got = k.run(tensors, outputs[0].numel(), &[(0, k.units)]);
                let [x, w, b] = [0, 1, 2].map(|i| tensors[i].as_f32().expect("f32"));
                let (ci, h, wd, m) = (c.x[1], c.x[2], c.x[3], c.mg);
                let (oh, ow) = (2 * h, 2 * wd);
                for oc in 0..m {
                    for (oy, ox) in (0..oh).flat_map(|oy| (0..ow).map(move |ox| (oy, ox))) {
                        let tap = (oy % 2) * 2 + ox % 2;
                        let chain = |ics: std::ops::Range<usize>| {
                            ics.fold(0f32, |acc, ic| {
                                x[(ic * h + oy / 2) * wd + ox / 2].mul_add(w[(ic * m + oc) * 4 + tap], acc)
                            })
                        };
                        // K blocks of 128, each a chain from zero added to the sum before it.
                        let sum =
                            (128..ci).step_by(128).fold(chain(0..ci.min(128)), |c, k0| c + chain(k0..ci.min(k0 + 128)));
                        let want = sum + b[oc];
                        let at = (oc * oh + oy) * ow + ox;
                        assert_eq!(got[at].to_bits(), want.to_bits(), "{what}: ({oc}, {oy}, {ox})");
                    }
                }
            });
        }
    }
}

#[test]
fn upsampling_takes_the_microkernel_for_many_output_channels_only() {
    let many = case(&[1, 8, 5, 6], 16, &[2, 2], &[2, 2]);
    let few = case(&[1, 8, 5, 6], 2, &[2, 2], &[2, 2]);
    if let Some(mk) = select(Choice::Auto) {
        assert_eq!(many.check(Some(mk)).1, "conv-transpose-upsample-avx2");
        assert_eq!(few.check(Some(mk)).1, "conv-transpose-upsample");
    }
    assert_eq!(many.check(None).1, "conv-transpose-upsample");
}

#[test]
fn upsampling_with_runtime_weights_runs_in_cranelift() {
    let c = case(&[1, 5, 4, 9], 3, &[2, 2], &[2, 2]).runtime_weights();
    for mk in choices() {
        assert_eq!(c.check(mk).1, "conv-transpose-upsample");
    }
}

#[test]
fn general_conv_transpose_matches_the_reference_and_any_unit_split() {
    let mut out_pad = case(&[1, 3, 5, 6], 4, &[3, 3], &[2, 3]);
    out_pad.attrs.output_padding = vec![1, 2];
    let mut dilated = case(&[1, 2, 6, 5], 3, &[3, 2], &[2, 3]).pads(&[2, 0, 1, 3]);
    dilated.attrs.dilations = vec![2, 3];
    let cases = [
        // Overlapping taps (kernel 4, stride 2, pad 1), padding that crops, stride ≠ kernel.
        case(&[1, 5, 6, 7], 3, &[4, 4], &[2, 2]).pads(&[1, 1, 1, 1]),
        case(&[1, 4, 5, 5], 10, &[2, 2], &[2, 2]).pads(&[1, 0, 0, 1]),
        case(&[1, 3, 9, 8], 2, &[3, 2], &[1, 2]).no_bias(),
        case(&[2, 4, 5, 4], 3, &[3, 3], &[2, 2]).group(2),
        case(&[1, 2, 3, 4, 3], 2, &[2, 3, 2], &[1, 2, 2]),
        // Output padding (bias-only columns and rows), dilation with gaps, stride 3 and 4.
        out_pad,
        dilated,
        case(&[1, 3, 4, 11], 2, &[2, 5], &[1, 4]).pads(&[0, 1, 1, 2]),
        case(&[1, 3, 17], 5, &[5], &[3]).pads(&[2, 1]),
        // Wide rows and many output channels (several 6-row panels), two K blocks.
        case(&[1, 6, 3, 70], 13, &[3, 3], &[1, 1]).pads(&[1, 1, 1, 1]),
        case(&[1, 300, 4, 5], 3, &[4, 4], &[2, 2]).pads(&[1, 1, 1, 1]),
        // Enough output channels × taps for several channel chunks (the last one smaller).
        case(&[2, 8, 7, 6], 15, &[4, 4], &[2, 2]).pads(&[1, 2, 1, 0]).group(2),
    ];
    for c in &cases {
        for mk in choices() {
            let (units, variant) = c.check(mk);
            let want = if mk.is_some() { "conv-transpose-gemm-avx2" } else { "conv-transpose" };
            assert_eq!(variant, want, "{:?}", c.x);
            if c.x.len() == 4 && c.x[2] >= 6 {
                assert!(units > 1, "{:?}: split into units", c.x);
            }
        }
    }
    // Runtime weights stay in the gather kernel.
    let c = case(&[1, 3, 5, 4], 2, &[3, 3], &[2, 2]).pads(&[1, 1, 0, 0]).runtime_weights();
    for mk in choices() {
        assert_eq!(c.check(mk).1, "conv-transpose");
    }
}
