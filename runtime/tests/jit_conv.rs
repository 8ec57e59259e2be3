//! JIT convolution kernels (direct, depthwise, conv-transpose) against the reference
//! interpreter on small graphs chosen to hit every code path: output-channel tails, pixel
//! tails, border columns, padded rows, strides, dilations, groups, 1-D and 3-D, and weights
//! that are graph inputs rather than constants.
//!
//! Tolerance: rel-L2 ≤ 1e-6 and every element within 1e-5·max|reference|. The kernels sum
//! in f32 in a different order than the f64 reference; with these sizes (≤ a few hundred
//! terms of magnitude ≤ 1) the rounding error stays near 1e-7 relative, so a wrong tap, a
//! missed tail or an unwritten element fails by orders of magnitude.

mod common;
use cnnc_ir::{ConvAttrs, ConvTransposeAttrs, Graph, Op, TensorType, ValueRef};
use common::*;

struct ConvCase {
    x: Vec<usize>,
    m: usize,
    kernel: Vec<usize>,
    strides: Vec<usize>,
    dilations: Vec<usize>,
    pads: Vec<usize>,
    group: usize,
    bias: bool,
    /// The weights are a graph input instead of a constant.
    runtime_weights: bool,
}

impl ConvCase {
    fn new(x: &[usize], m: usize, kernel: &[usize]) -> ConvCase {
        let ns = kernel.len();
        ConvCase {
            x: x.to_vec(),
            m,
            kernel: kernel.to_vec(),
            strides: vec![1; ns],
            dilations: vec![1; ns],
            pads: vec![0; 2 * ns],
            group: 1,
            bias: true,
            runtime_weights: false,
        }
    }

    fn strides(mut self, s: &[usize]) -> Self {
        self.strides = s.to_vec();
        self
    }

    fn dilations(mut self, d: &[usize]) -> Self {
        self.dilations = d.to_vec();
        self
    }

    fn pads(mut self, p: &[usize]) -> Self {
        self.pads = p.to_vec();
        self
    }

    fn group(mut self, g: usize) -> Self {
        self.group = g;
        self
    }

    fn no_bias(mut self) -> Self {
        self.bias = false;
        self
    }

    fn runtime_weights(mut self) -> Self {
        self.runtime_weights = true;
        self
    }

    fn check(self) {
        let mut g = Graph::new("conv");
        let x = g.add_input("x", TensorType::f32(self.x.clone()));
        let mut w_shape = vec![self.m, self.x[1] / self.group];
        w_shape.extend(&self.kernel);
        let w_val = random(&w_shape, 2);
        let mut inputs = vec![random(&self.x, 1)];
        let w = if self.runtime_weights {
            inputs.push(w_val);
            g.add_input("w", TensorType::f32(w_shape))
        } else {
            g.add_weight("w", w_val)
        };
        let mut ins = vec![x, w];
        if self.bias {
            ins.push(g.add_weight("b", random(&[self.m], 3)));
        }
        let attrs = ConvAttrs::new(&self.kernel)
            .strides(&self.strides)
            .dilations(&self.dilations)
            .pads(&self.pads)
            .group(self.group);
        let y = g.add_node("conv", Op::Conv(attrs), &ins).expect("types");
        g.add_output("y", y[0]);
        check_close(g, &inputs);
    }
}

#[test]
fn conv3x3_padded_matches_reference_with_channel_and_pixel_tails() {
    // 11 output channels: one full 8-channel tile and a 3-channel tail; 13 columns: 2 border
    // columns, 2 interior tiles of 4 and 3 single interior columns.
    ConvCase::new(&[1, 5, 9, 13], 11, &[3, 3]).pads(&[1, 1, 1, 1]).check();
}

#[test]
fn conv_strided_dilated_grouped_asymmetric_pads_matches_reference() {
    ConvCase::new(&[2, 6, 11, 17], 12, &[3, 2])
        .strides(&[2, 3])
        .dilations(&[2, 1])
        .pads(&[0, 2, 3, 1])
        .group(2)
        .no_bias()
        .check();
}

#[test]
fn pointwise_conv_matches_reference() {
    // 1×1 stride 1: a GEMM over the 35 flattened pixels, channel loop unrolled by 4 with a tail of 3.
    ConvCase::new(&[1, 7, 5, 7], 20, &[1, 1]).check();
    ConvCase::new(&[2, 16, 3, 3], 8, &[1, 1]).no_bias().check();
}

#[test]
fn strided_pointwise_conv_matches_reference() {
    ConvCase::new(&[1, 9, 8, 9], 6, &[1, 1]).strides(&[2, 2]).check();
}

#[test]
fn conv_whose_kernel_overhangs_the_input_matches_reference() {
    // Every column is a border column; some rows see no tap at all (bias only).
    ConvCase::new(&[1, 3, 2, 3], 5, &[5, 5]).pads(&[3, 3, 3, 3]).check();
}

#[test]
fn conv1d_matches_reference() {
    ConvCase::new(&[2, 3, 50], 4, &[5]).pads(&[2, 2]).check();
    ConvCase::new(&[1, 4, 23], 9, &[3]).strides(&[2]).dilations(&[3]).pads(&[1, 4]).check();
}

#[test]
fn conv3d_matches_reference() {
    ConvCase::new(&[1, 2, 5, 6, 7], 5, &[3, 2, 3]).strides(&[1, 2, 1]).pads(&[1, 0, 1, 1, 1, 2]).check();
}

#[test]
fn conv_with_runtime_weights_matches_reference() {
    ConvCase::new(&[1, 4, 7, 9], 6, &[3, 3]).pads(&[1, 1, 1, 1]).group(2).runtime_weights().check();
    ConvCase::new(&[1, 3, 6, 6], 3, &[3, 3]).group(3).runtime_weights().check();
}

#[test]
fn depthwise_conv_matches_reference() {
    // Stride 1: 37 columns = 2 border + 1 tile of 16 + 4 vectors of 4 + 3 single columns.
    ConvCase::new(&[1, 6, 10, 37], 6, &[3, 3]).pads(&[1, 1, 1, 1]).group(6).check();
    // Stride 2 (the even-lane shuffle) with asymmetric pads and a 5×5 kernel.
    ConvCase::new(&[1, 4, 12, 40], 4, &[5, 5]).strides(&[2, 2]).pads(&[0, 1, 2, 2]).group(4).check();
    // Stride 3 (gathered lanes), dilation 2.
    ConvCase::new(&[2, 3, 9, 41], 3, &[3, 3]).strides(&[1, 3]).dilations(&[2, 2]).pads(&[2, 2, 2, 2]).group(3).check();
}

#[test]
fn depthwise_conv_with_channel_multiplier_matches_reference() {
    ConvCase::new(&[1, 3, 6, 20], 6, &[3, 3]).pads(&[1, 1, 1, 1]).group(3).no_bias().check();
    // One input channel, group 1, 3 output channels.
    ConvCase::new(&[1, 1, 7, 9], 3, &[2, 2]).check();
}

struct ConvTransposeCase {
    x: Vec<usize>,
    mg: usize,
    attrs: ConvTransposeAttrs,
    bias: bool,
    runtime_weights: bool,
}

impl ConvTransposeCase {
    fn check(self) {
        let mut g = Graph::new("conv-transpose");
        let x = g.add_input("x", TensorType::f32(self.x.clone()));
        let mut w_shape = vec![self.x[1], self.mg];
        w_shape.extend(&self.attrs.kernel);
        let w_val = random(&w_shape, 5);
        let mut inputs = vec![random(&self.x, 4)];
        let w = if self.runtime_weights {
            inputs.push(w_val);
            g.add_input("w", TensorType::f32(w_shape))
        } else {
            g.add_weight("w", w_val)
        };
        let mut ins: Vec<ValueRef> = vec![x, w];
        if self.bias {
            ins.push(g.add_weight("b", random(&[self.mg * self.attrs.group], 6)));
        }
        let y = g.add_node("convt", Op::ConvTranspose(self.attrs), &ins).expect("types");
        g.add_output("y", y[0]);
        check_close(g, &inputs);
    }
}

fn ct_attrs(
    kernel: &[usize],
    strides: &[usize],
    dilations: &[usize],
    pads: &[usize],
    out_pad: &[usize],
    group: usize,
) -> ConvTransposeAttrs {
    ConvTransposeAttrs {
        kernel: kernel.to_vec(),
        strides: strides.to_vec(),
        dilations: dilations.to_vec(),
        pads: pads.to_vec(),
        output_padding: out_pad.to_vec(),
        group,
    }
}

#[test]
fn conv_transpose_upsampling_matches_reference() {
    // The 2×2 stride-2 learned upsampling of text detectors; 10 channels = 8 + a 2-channel tail.
    let attrs = ct_attrs(&[2, 2], &[2, 2], &[1, 1], &[0; 4], &[0, 0], 1);
    ConvTransposeCase { x: vec![1, 6, 5, 7], mg: 10, attrs, bias: true, runtime_weights: false }.check();
    let attrs = ct_attrs(&[2, 2], &[2, 2], &[1, 1], &[0; 4], &[0, 0], 1);
    ConvTransposeCase { x: vec![1, 5, 4, 3], mg: 1, attrs, bias: false, runtime_weights: false }.check();
}

#[test]
fn conv_transpose_grouped_padded_output_padding_matches_reference() {
    let attrs = ct_attrs(&[3, 3], &[2, 2], &[1, 1], &[1, 0, 1, 2], &[1, 1], 2);
    ConvTransposeCase { x: vec![2, 4, 5, 4], mg: 3, attrs, bias: true, runtime_weights: false }.check();
}

#[test]
fn conv_transpose_1d_dilated_matches_reference() {
    let attrs = ct_attrs(&[3], &[3], &[2], &[2, 1], &[2], 1);
    ConvTransposeCase { x: vec![1, 2, 5], mg: 9, attrs, bias: true, runtime_weights: false }.check();
}

#[test]
fn conv_transpose_with_runtime_weights_matches_reference() {
    let attrs = ct_attrs(&[3, 2], &[1, 2], &[1, 1], &[1, 0, 1, 0], &[0, 1], 1);
    ConvTransposeCase { x: vec![1, 3, 4, 5], mg: 5, attrs, bias: true, runtime_weights: true }.check();
}

#[test]
fn conv_with_many_input_channels_accumulates_channel_blocks() {
    // Enough channels that the reduction runs in cache blocks (partial sums kept in the
    // output), with a partial last block and a partial channel tile.
    ConvCase::new(&[1, 53, 6, 11], 11, &[3, 3]).pads(&[1, 1, 1, 1]).check();
    ConvCase::new(&[1, 130, 3, 5], 9, &[1, 1]).no_bias().check();
    ConvCase::new(&[1, 60, 5, 5], 4, &[3, 3]).strides(&[2, 2]).pads(&[0, 1, 1, 0]).runtime_weights().check();
}

#[test]
fn conv_on_an_empty_batch_is_a_no_op() {
    ConvCase::new(&[0, 3, 5, 5], 4, &[3, 3]).pads(&[1, 1, 1, 1]).check();
    ConvCase::new(&[0, 4, 5, 5], 4, &[3, 3]).group(4).check();
}
