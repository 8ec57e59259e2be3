//! Conv, conv-transpose and pooling on random shapes and attributes, against direct
//! transcriptions of the ONNX definitions over multi-indices (1-D to 3-D).
//!
//! Both sides accumulate in f64 and round once, so they agree to within f32 rounding of the
//! result (≈1e-7 here: inputs lie in [−1, 1], sums have at most a few hundred terms). The
//! absolute tolerance 1e-5 covers that, while a wrong, missing or misplaced term changes the
//! result by a product of two such values, typically ≫ 1e-5.

use cnnc_ir::{ConvAttrs, ConvTransposeAttrs, Op, PoolAttrs, Tensor, TensorType};
use cnnc_runtime::eval_op;
use cnnc_runtime::testing::random_values;
use proptest::prelude::*;

/// Every multi-index of `shape`, row-major.
fn indices(shape: &[usize]) -> Vec<Vec<usize>> {
    let mut all = vec![vec![]];
    for &d in shape {
        all = all.into_iter().flat_map(|p| (0..d).map(move |i| [p.clone(), vec![i]].concat())).collect();
    }
    all
}

fn offset(shape: &[usize], idx: &[usize]) -> usize {
    shape.iter().zip(idx).fold(0, |acc, (&d, &i)| acc * d + i)
}

fn run(op: &Op, inputs: &[Tensor], out_shape: &[usize]) -> Vec<f32> {
    let refs: Vec<&Tensor> = inputs.iter().collect();
    let out = eval_op(op, &refs, &[TensorType::f32(out_shape)]).unwrap_or_else(|e| panic!("{op:?}: {e}"));
    out[0].as_f32().expect("f32").to_vec()
}

fn assert_close(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-5, "element {i}: got {g}, want {w}");
    }
}

/// Per spatial axis: input length, kernel, stride, dilation, pad begin, pad end.
#[derive(Clone, Debug)]
struct Axis {
    input: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    pad_begin: usize,
    pad_end: usize,
}

impl Axis {
    fn extent(&self) -> usize {
        (self.kernel - 1) * self.dilation + 1
    }

    fn conv_out(&self) -> Option<usize> {
        let padded = self.input + self.pad_begin + self.pad_end;
        (padded >= self.extent()).then(|| (padded - self.extent()) / self.stride + 1)
    }

    /// ONNX pooling output length; ceil mode drops a window that would start in the end padding.
    fn pool_out(&self, ceil_mode: bool) -> Option<usize> {
        let floor_len = self.conv_out()?;
        let span = self.input + self.pad_begin + self.pad_end - self.extent();
        let mut len = if ceil_mode { span.div_ceil(self.stride) + 1 } else { floor_len };
        if len > floor_len && (len - 1) * self.stride >= self.input + self.pad_begin {
            len -= 1;
        }
        Some(len)
    }
}

fn axis_strategy() -> impl Strategy<Value = Axis> {
    (1usize..7, 1usize..4, 1usize..4, 1usize..3, 0usize..3, 0usize..3).prop_map(
        |(input, kernel, stride, dilation, pad_begin, pad_end)| Axis {
            input,
            kernel,
            stride,
            dilation,
            pad_begin,
            pad_end,
        },
    )
}

fn attrs_of(axes: &[Axis]) -> (Vec<usize>, Vec<usize>, Vec<usize>, Vec<usize>) {
    let kernel = axes.iter().map(|a| a.kernel).collect();
    let strides = axes.iter().map(|a| a.stride).collect();
    let dilations = axes.iter().map(|a| a.dilation).collect();
    let pads = axes.iter().map(|a| a.pad_begin).chain(axes.iter().map(|a| a.pad_end)).collect();
    (kernel, strides, dilations, pads)
}

/// Input position `o·s + k·d − p_begin` on every axis, if inside the input.
fn window_pos(axes: &[Axis], o: &[usize], k: &[usize]) -> Option<Vec<usize>> {
    axes.iter()
        .zip(o.iter().zip(k))
        .map(|(a, (&o, &k))| {
            let p = (o * a.stride + k * a.dilation) as i64 - a.pad_begin as i64;
            (p >= 0 && (p as usize) < a.input).then_some(p as usize)
        })
        .collect()
}

/// Direct `y[n,m,o] = b[m] + Σ_{c, k} x[n, g·cpg + c, o·s + k·d − p] · w[m, c, k]`.
#[allow(clippy::too_many_arguments)]
fn naive_conv(
    x: &[f32],
    w: &[f32],
    b: &[f32],
    batch: usize,
    group: usize,
    cpg: usize,
    mpg: usize,
    axes: &[Axis],
) -> Vec<f32> {
    let in_sp: Vec<usize> = axes.iter().map(|a| a.input).collect();
    let out_sp: Vec<usize> = axes.iter().map(|a| a.conv_out().expect("valid")).collect();
    let k_sp: Vec<usize> = axes.iter().map(|a| a.kernel).collect();
    let (c_total, m_total) = (group * cpg, group * mpg);
    let mut y = Vec::new();
    for n in 0..batch {
        for (m, &bias) in b.iter().enumerate().take(m_total) {
            let g = m / mpg;
            for o in indices(&out_sp) {
                let mut acc = 0f64;
                for c in 0..cpg {
                    for k in indices(&k_sp) {
                        if let Some(pos) = window_pos(axes, &o, &k) {
                            let xi =
                                (n * c_total + g * cpg + c) * in_sp.iter().product::<usize>() + offset(&in_sp, &pos);
                            let wi = (m * cpg + c) * k_sp.iter().product::<usize>() + offset(&k_sp, &k);
                            acc += f64::from(x[xi]) * f64::from(w[wi]);
                        }
                    }
                }
                y.push((acc + f64::from(bias)) as f32);
            }
        }
    }
    y
}

/// The scatter `y[n, g·mpg + m, i·s + k·d − p] += x[n, c, i] · w[c, m, k]`, then `+ b`.
#[allow(clippy::too_many_arguments)]
fn naive_conv_transpose(
    x: &[f32],
    w: &[f32],
    b: &[f32],
    batch: usize,
    group: usize,
    cpg: usize,
    mpg: usize,
    axes: &[Axis],
    out_sp: &[usize],
) -> Vec<f32> {
    let in_sp: Vec<usize> = axes.iter().map(|a| a.input).collect();
    let k_sp: Vec<usize> = axes.iter().map(|a| a.kernel).collect();
    let (c_total, m_total) = (group * cpg, group * mpg);
    let out_plane: usize = out_sp.iter().product();
    let mut acc = vec![0f64; batch * m_total * out_plane];
    for n in 0..batch {
        for c in 0..c_total {
            let g = c / cpg;
            for i in indices(&in_sp) {
                let xv = f64::from(x[(n * c_total + c) * in_sp.iter().product::<usize>() + offset(&in_sp, &i)]);
                for m in 0..mpg {
                    for k in indices(&k_sp) {
                        let pos: Option<Vec<usize>> = (0..axes.len())
                            .map(|ax| {
                                let a = &axes[ax];
                                let p = (i[ax] * a.stride + k[ax] * a.dilation) as i64 - a.pad_begin as i64;
                                (p >= 0 && (p as usize) < out_sp[ax]).then_some(p as usize)
                            })
                            .collect();
                        if let Some(pos) = pos {
                            let wv = f64::from(w[(c * mpg + m) * k_sp.iter().product::<usize>() + offset(&k_sp, &k)]);
                            acc[(n * m_total + g * mpg + m) * out_plane + offset(out_sp, &pos)] += xv * wv;
                        }
                    }
                }
            }
        }
    }
    acc.iter().enumerate().map(|(i, &s)| (s + f64::from(b[i / out_plane % m_total])) as f32).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn conv_matches_direct_definition(
        axes in prop::collection::vec(axis_strategy(), 1..4),
        batch in 1usize..3, group in 1usize..3, cpg in 1usize..3, mpg in 1usize..3,
        with_bias: bool, seed: u64,
    ) {
        prop_assume!(axes.iter().all(|a| a.conv_out().is_some()));
        let (kernel, strides, dilations, pads) = attrs_of(&axes);
        let op = Op::Conv(ConvAttrs::new(&kernel).strides(&strides).dilations(&dilations).pads(&pads).group(group));
        let in_sp: Vec<usize> = axes.iter().map(|a| a.input).collect();
        let out_sp: Vec<usize> = axes.iter().map(|a| a.conv_out().unwrap()).collect();
        let x_shape = [vec![batch, group * cpg], in_sp].concat();
        let w_shape = [vec![group * mpg, cpg], kernel].concat();
        let x = random_values(x_shape.iter().product(), seed, 1.0);
        let w = random_values(w_shape.iter().product(), seed ^ 1, 1.0);
        let b = if with_bias { random_values(group * mpg, seed ^ 2, 1.0) } else { vec![0.0; group * mpg] };
        let mut inputs = vec![Tensor::from_f32(x_shape, x.clone()).unwrap(), Tensor::from_f32(w_shape, w.clone()).unwrap()];
        if with_bias {
            inputs.push(Tensor::from_f32([group * mpg], b.clone()).unwrap());
        }
        let out_shape = [vec![batch, group * mpg], out_sp].concat();
        let got = run(&op, &inputs, &out_shape);
        assert_close(&got, &naive_conv(&x, &w, &b, batch, group, cpg, mpg, &axes));
    }

    #[test]
    fn conv_transpose_matches_scatter_definition(
        axes in prop::collection::vec(axis_strategy(), 1..4),
        output_padding in prop::collection::vec(0usize..2, 3),
        batch in 1usize..3, group in 1usize..3, cpg in 1usize..3, mpg in 1usize..3,
        with_bias: bool, seed: u64,
    ) {
        let n = axes.len();
        let out_sp: Vec<i64> = axes.iter().zip(&output_padding).map(|(a, &op)| {
            ((a.input - 1) * a.stride + op + a.extent()) as i64 - (a.pad_begin + a.pad_end) as i64
        }).collect();
        prop_assume!(out_sp.iter().all(|&l| l > 0));
        let out_sp: Vec<usize> = out_sp.into_iter().map(|l| l as usize).collect();
        let (kernel, strides, dilations, pads) = attrs_of(&axes);
        let op = Op::ConvTranspose(ConvTransposeAttrs {
            kernel: kernel.clone(), strides, dilations, pads, output_padding: output_padding[..n].to_vec(), group,
        });
        let in_sp: Vec<usize> = axes.iter().map(|a| a.input).collect();
        let x_shape = [vec![batch, group * cpg], in_sp].concat();
        let w_shape = [vec![group * cpg, mpg], kernel].concat();
        let x = random_values(x_shape.iter().product(), seed, 1.0);
        let w = random_values(w_shape.iter().product(), seed ^ 1, 1.0);
        let b = if with_bias { random_values(group * mpg, seed ^ 2, 1.0) } else { vec![0.0; group * mpg] };
        let mut inputs = vec![Tensor::from_f32(x_shape, x.clone()).unwrap(), Tensor::from_f32(w_shape, w.clone()).unwrap()];
        if with_bias {
            inputs.push(Tensor::from_f32([group * mpg], b.clone()).unwrap());
        }
        let out_shape = [vec![batch, group * mpg], out_sp.clone()].concat();
        let got = run(&op, &inputs, &out_shape);
        assert_close(&got, &naive_conv_transpose(&x, &w, &b, batch, group, cpg, mpg, &axes, &out_sp));
    }

    #[test]
    fn pools_match_direct_definition(
        axes in prop::collection::vec(axis_strategy(), 1..4),
        ceil_mode: bool, count_include_pad: bool, seed: u64,
    ) {
        prop_assume!(axes.iter().all(|a| a.conv_out().is_some()));
        let (kernel, strides, dilations, pads) = attrs_of(&axes);
        let attrs = PoolAttrs { kernel: kernel.clone(), strides, dilations, pads, ceil_mode };
        let in_sp: Vec<usize> = axes.iter().map(|a| a.input).collect();
        let out_sp: Vec<usize> = axes.iter().map(|a| a.pool_out(ceil_mode).unwrap()).collect();
        let x_shape = [vec![1, 2], in_sp.clone()].concat();
        let x = random_values(x_shape.iter().product(), seed, 1.0);
        let mut want_max = Vec::new();
        let mut want_avg = Vec::new();
        for c in 0..2 {
            let plane = &x[c * in_sp.iter().product::<usize>()..];
            for o in indices(&out_sp) {
                let (mut best, mut sum, mut valid, mut padded) = (f32::NEG_INFINITY, 0f64, 0usize, 0usize);
                for k in indices(&kernel) {
                    // A tap counts for count_include_pad if it lies before the end of the end padding.
                    let in_padded = axes.iter().zip(o.iter().zip(&k)).all(|(a, (&o, &k))| {
                        ((o * a.stride + k * a.dilation) as i64 - (a.pad_begin as i64)) < (a.input + a.pad_end) as i64
                    });
                    padded += usize::from(in_padded);
                    if let Some(pos) = window_pos(&axes, &o, &k) {
                        let v = plane[offset(&in_sp, &pos)];
                        best = best.max(v);
                        sum += f64::from(v);
                        valid += 1;
                    }
                }
                want_max.push(best);
                want_avg.push((sum / if count_include_pad { padded } else { valid } as f64) as f32);
            }
        }
        let input = [Tensor::from_f32(x_shape, x).unwrap()];
        let out_shape = [vec![1, 2], out_sp].concat();
        let got_max = run(&Op::MaxPool(attrs.clone()), &input, &out_shape);
        prop_assert_eq!(got_max, want_max);
        let got_avg = run(&Op::AvgPool { pool: attrs, count_include_pad }, &input, &out_shape);
        // Windows entirely in padding give 0/0 = NaN on both sides.
        for (g, w) in got_avg.iter().zip(&want_avg) {
            prop_assert!((g.is_nan() && w.is_nan()) || (g - w).abs() <= 1e-6, "{} vs {}", g, w);
        }
    }
}

#[test]
fn threaded_conv_matches_direct_definition() {
    // Large enough (≈5M MACs) to take the multi-threaded path.
    let axes: Vec<Axis> =
        (0..2).map(|_| Axis { input: 48, kernel: 3, stride: 1, dilation: 1, pad_begin: 1, pad_end: 1 }).collect();
    let (cin, cout) = (16, 16);
    let op = Op::Conv(ConvAttrs::new(&[3, 3]).pads(&[1; 4]));
    let x = random_values(cin * 48 * 48, 7, 1.0);
    let w = random_values(cout * cin * 9, 8, 1.0);
    let b = random_values(cout, 9, 1.0);
    let inputs = [
        Tensor::from_f32([1, cin, 48, 48], x.clone()).unwrap(),
        Tensor::from_f32([cout, cin, 3, 3], w.clone()).unwrap(),
        Tensor::from_f32([cout], b.clone()).unwrap(),
    ];
    let got = run(&op, &inputs, &[1, cout, 48, 48]);
    assert_close(&got, &naive_conv(&x, &w, &b, 1, 1, cin, cout, &axes));
}
