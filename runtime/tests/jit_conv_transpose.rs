//! JIT ConvTranspose through `Model` against the reference interpreter: upsampling layers
//! (kernel = stride, through the microkernel or the Cranelift tile depending on the output
//! channels and the host) and the general gather form (overlapping taps, pads, output padding,
//! stride ≠ kernel, dilation, groups), with and without bias, odd sizes that leave pixel tails;
//! then runs at 1, 2 and 3 threads, which must give the same bits.
//!
//! Tolerance: rel-L2 ≤ 1e-6 and every element within 1e-5·max|reference| (`assert_close`).
//! The kernels sum at most a few hundred f32 products of magnitude ≤ 1 in another order than
//! the f64 reference, a rounding error near 1e-7 relative; a wrong tap or an unwritten
//! element fails by orders of magnitude.

mod common;
use cnnc_ir::{ConvTransposeAttrs, Graph, Op, Tensor, TensorType, ValueRef, verify};
use cnnc_runtime::Model;
use common::*;

struct Case {
    x: Vec<usize>,
    mg: usize,
    attrs: ConvTransposeAttrs,
    bias: bool,
    runtime_weights: bool,
}

/// A ConvTranspose of `x` to `mg` channels per group with `kernel` and `strides`, no padding,
/// dilation 1, one group, with bias.
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
    fn pads(mut self, p: &[usize]) -> Case {
        self.attrs.pads = p.to_vec();
        self
    }

    fn output_padding(mut self, p: &[usize]) -> Case {
        self.attrs.output_padding = p.to_vec();
        self
    }

    fn dilations(mut self, d: &[usize]) -> Case {
        self.attrs.dilations = d.to_vec();
        self
    }

    fn group(mut self, g: usize) -> Case {
        self.attrs.group = g;
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

    fn graph(&self) -> (Graph, Vec<Tensor>) {
        let mut g = Graph::new("conv-transpose");
        let x = g.add_input("x", TensorType::f32(self.x.clone()));
        let mut w_shape = vec![self.x[1], self.mg];
        w_shape.extend(&self.attrs.kernel);
        let w_val = random(&w_shape, 12);
        let mut inputs = vec![random(&self.x, 11)];
        let w = if self.runtime_weights {
            inputs.push(w_val);
            g.add_input("w", TensorType::f32(w_shape))
        } else {
            g.add_weight("w", w_val)
        };
        let mut ins: Vec<ValueRef> = vec![x, w];
        if self.bias {
            ins.push(g.add_weight("b", random(&[self.mg * self.attrs.group], 13)));
        }
        let y = g.add_node("convt", Op::ConvTranspose(self.attrs.clone()), &ins).expect("types");
        g.add_output("y", y[0]);
        (g, inputs)
    }

    /// The JIT against the reference.
    fn check(&self) {
        let (g, inputs) = self.graph();
        check_close(g, &inputs);
    }

    /// The JIT at 1, 2 and 3 threads: the same bits (and close to the reference).
    fn check_threads(&self) {
        let (g, inputs) = self.graph();
        let g = verify(g).unwrap_or_else(|e| panic!("{e}"));
        let mut model = Model::compile(&g).unwrap_or_else(|e| panic!("{e}"));
        model.set_threads(1);
        let one = model.run(&inputs).expect("runs");
        let want = cnnc_runtime::run_reference(&g, &inputs).expect("reference runs");
        assert_close(&format!("{:?}→{}", self.x, self.mg), &one[0], &want[0]);
        for threads in [2, 3] {
            model.set_threads(threads);
            let again = model.run(&inputs).expect("runs");
            let (a, b) = (one[0].as_f32().expect("f32"), again[0].as_f32().expect("f32"));
            assert!(
                a.iter().zip(b).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{:?}→{} {:?}: {threads} threads differ from 1",
                self.x,
                self.mg,
                self.attrs
            );
        }
    }
}

#[test]
fn upsampling_conv_transpose_matches_reference() {
    // ppocr_v4_det's two layers at small sizes: 24 → 24 channels (the microkernel where the
    // host has one) and 24 → 1; odd widths leave pixel tails.
    case(&[1, 24, 7, 19], 24, &[2, 2], &[2, 2]).check();
    case(&[1, 24, 9, 13], 1, &[2, 2], &[2, 2]).no_bias().check();
    case(&[1, 24, 9, 13], 1, &[2, 2], &[2, 2]).check();
    case(&[1, 24, 7, 19], 24, &[2, 2], &[2, 2]).no_bias().check();
    case(&[2, 6, 5, 3], 5, &[3, 3], &[3, 3]).check();
    case(&[1, 4, 6, 5], 3, &[2, 1], &[2, 1]).no_bias().check();
    case(&[1, 6, 4, 4], 20, &[2, 2], &[2, 2]).group(2).check();
    case(&[1, 3, 41], 2, &[4], &[4]).check();
    case(&[1, 2, 3, 3, 5], 3, &[2, 2, 2], &[2, 2, 2]).check();
    case(&[1, 5, 4, 7], 3, &[2, 2], &[2, 2]).runtime_weights().check();
}

#[test]
fn general_conv_transpose_matches_reference() {
    // Overlapping taps (kernel 4, stride 2, pad 1: the usual ×2 upsampling of decoders).
    case(&[1, 6, 7, 9], 5, &[4, 4], &[2, 2]).pads(&[1, 1, 1, 1]).check();
    // Kernel = stride but padded or output-padded: not every output has a source pixel.
    case(&[1, 4, 5, 6], 3, &[2, 2], &[2, 2]).pads(&[1, 0, 0, 1]).no_bias().check();
    case(&[1, 4, 5, 6], 3, &[2, 2], &[2, 2]).output_padding(&[1, 1]).check();
    // Stride ≠ kernel, stride 1, dilation, groups, runtime weights.
    case(&[1, 3, 6, 5], 4, &[3, 2], &[1, 2]).check();
    case(&[1, 3, 6, 5], 2, &[3, 3], &[1, 1]).pads(&[1, 1, 1, 1]).check();
    case(&[1, 2, 5, 5], 3, &[3, 3], &[2, 2]).dilations(&[2, 1]).check();
    case(&[2, 6, 4, 5], 2, &[3, 3], &[2, 2]).group(3).pads(&[1, 0, 1, 2]).output_padding(&[1, 1]).check();
    case(&[1, 4, 5, 4], 3, &[2, 3], &[2, 1]).runtime_weights().no_bias().check();
}

#[test]
fn conv_transpose_is_bit_identical_at_1_2_and_3_threads() {
    // Large enough that `Model::run` splits each launch across threads.
    case(&[1, 24, 40, 41], 24, &[2, 2], &[2, 2]).check_threads();
    case(&[1, 24, 64, 63], 1, &[2, 2], &[2, 2]).check_threads();
    case(&[1, 4, 2, 900], 3, &[2, 2], &[2, 2]).no_bias().check_threads();
    case(&[1, 8, 30, 31], 8, &[4, 4], &[2, 2]).pads(&[1, 1, 1, 1]).check_threads();
    case(&[2, 8, 20, 20], 6, &[2, 2], &[2, 2]).group(2).pads(&[1, 1, 0, 0]).check_threads();
}
