//! A stride-2 conv over few channels (a network's stem) as a stride-1 conv over the input's
//! 2×2 space-to-depth (exact up to float reordering).
//!
//! A stem like BlazeFace's 5×5 stride-2 conv over 3 channels has a short reduction (75) and a
//! strided im2col; over `s2d(x)` (each 2×2 block of pixels as 4 channels) it is a 3×3 stride-1
//! conv over 12 channels: a longer reduction (108, the extra taps zero), a contiguous im2col, and
//! Winograd eligible. Extraction keeps whichever measures faster.
//!
//! What (`space-to-depth-conv`, with or without bias): `conv{k×l, strides=[2, 2], pads}(x, w[, b])`
//! ⇒ `conv{k′×l′, strides=[1, 1], pads′}(s2d(x), w′[, b])`. Per spatial axis, tap `t` of the
//! kernel reads input row `2i + t − p` (p: the begin pad); writing `t − p = 2a + r` (`r ∈ {0, 1}`)
//! it reads row `i + a` of parity plane `r`, so `w′[o, (2r + s)·C + c, a − a₀, b − b₀] =
//! w[o, c, 2a + r + p_h, 2b + s + p_w]` where that tap exists, else 0, with `a₀ = ⌊−p_h/2⌋`,
//! `k′ = ⌊(k − 1 − p_h)/2⌋ − a₀ + 1`, begin pad `−a₀` and the end pad that keeps the output size.
//! `s2d(x)` (channel `(2r + s)·C + c` holds `x[c, 2u + r, 2v + s]`) is `reshape [N, 4C, H/2, W/2]
//! ∘ transpose [0, 3, 5, 1, 2, 4] ∘ reshape [N, C, H/2, 2, W/2, 2]`; where `x` is itself an
//! NHWC → NCHW transpose (TensorFlow exports), the e-class also gets the one transpose of the
//! NHWC tensor that does both, `transpose [0, 2, 4, 1, 3]` of `[N, H/2, 2, W/2, 2C]` (its
//! `2C` axis is contiguous, so the kernel moves it with 4×4 register transposes).
//!
//! When: a direct 2-D conv with strides 2 × 2, dilation 1, one group, at most [`MAX_CHANNELS`]
//! input channels, a constant weight not derived by an approximate proposal, and an even
//! input height and width. It does not fire on stride 1 or 3+, dilated, grouped or wide-input
//! convs (their channels already fill the reduction).
//!
//! Numerical effect: the same products summed in another order, plus products with zero
//! weights (exact for finite inputs; an infinite input pixel that the original kernel never
//! touched gives NaN instead).
//!
//! ```text
//! before: %c = conv{kernel=[5, 5], strides=[2, 2], dilations=[1, 1], pads=[1, 1, 2, 2], group=1}(%x, %w, %b) : f32[1,24,64,64]
//! after:  %r = reshape{shape=[1, 3, 64, 2, 64, 2]}(%x)
//!         %t = transpose{perm=[0, 3, 5, 1, 2, 4]}(%r)
//!         %s = reshape{shape=[1, 12, 64, 64]}(%t)
//!         %c = conv{kernel=[3, 3], strides=[1, 1], dilations=[1, 1], pads=[1, 1, 1, 1], group=1}(%s, %w2, %b)
//! ```

use cnnc_ir::{ConvAlgo, ConvAttrs, DType, Op, Tensor, TensorType};
use egg::{Applier, EGraph, Id, Pattern, PatternAst, Rewrite, Subst, Symbol};

use super::var;
use crate::analysis::{CnnAnalysis, add_weight, attr_of, weight_of};
use crate::lang::Cnn;

/// The most input channels a conv may have for the rule to fire: an image's 3 or 4. With more
/// channels the reduction is long already and the zero taps only add work.
pub const MAX_CHANNELS: usize = 4;

/// The rules of this family.
pub fn rules() -> Vec<Rewrite<Cnn, CnnAnalysis>> {
    let rule = |name: &str, pattern: &str, bias: bool| {
        let pattern: Pattern<Cnn> = pattern.parse().expect("a valid pattern");
        Rewrite::new(name, pattern, SpaceToDepth { bias }).expect("a valid rule")
    };
    vec![
        rule("space-to-depth-conv", "(conv ?c ?x ?w ?b)", true),
        rule("space-to-depth-conv-no-bias", "(conv ?c ?x ?w)", false),
    ]
}

/// One spatial axis of the rewrite: the new kernel size, its begin and end pads, and the
/// first `a` (tap offset in the half-resolution plane).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Axis {
    kernel: usize,
    pad_begin: usize,
    pad_end: usize,
    a0: i64,
}

/// The axis of a stride-2 conv with kernel `k`, pads `p`/`q` and input size `n` (even), or
/// `None` when the stride-1 form cannot keep the output size.
fn axis(k: usize, p: usize, q: usize, n: usize) -> Option<Axis> {
    let (k, p, q, n) = (k as i64, p as i64, q as i64, n as i64);
    let out = (n + p + q - k).div_euclid(2) + 1;
    if out < 1 {
        return None;
    }
    let a0 = (-p).div_euclid(2);
    let a1 = (k - 1 - p).div_euclid(2);
    let kernel = a1 - a0 + 1;
    let pad_end = out - n / 2 + a0 + kernel - 1;
    (pad_end >= 0).then_some(Axis { kernel: kernel as usize, pad_begin: (-a0) as usize, pad_end: pad_end as usize, a0 })
}

/// `w` (`[O, C, k, l]`) rearranged for the space-to-depth conv.
fn weight(w: &[f32], shape: &[usize], pads: (usize, usize), h: Axis, v: Axis) -> Vec<f32> {
    let (o, c, k, l) = (shape[0], shape[1], shape[2], shape[3]);
    let (kh, kw) = (h.kernel, v.kernel);
    let mut out = vec![0.0f32; o * 4 * c * kh * kw];
    for oc in 0..o {
        for ic in 0..c {
            for (r, s) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                let plane = ((oc * 4 * c) + (2 * r + s) * c + ic) * kh * kw;
                for i in 0..kh {
                    let t = 2 * (i as i64 + h.a0) + r as i64 + pads.0 as i64;
                    if !(0..k as i64).contains(&t) {
                        continue;
                    }
                    for j in 0..kw {
                        let u = 2 * (j as i64 + v.a0) + s as i64 + pads.1 as i64;
                        if (0..l as i64).contains(&u) {
                            out[plane + i * kw + j] = w[((oc * c + ic) * k + t as usize) * l + u as usize];
                        }
                    }
                }
            }
        }
    }
    out
}

struct SpaceToDepth {
    bias: bool,
}

/// Adds `op` over `operands` with output `ty` and returns its class.
fn add_op(egraph: &mut EGraph<Cnn, CnnAnalysis>, op: Op, ty: TensorType, name: &str, operands: &[Id]) -> Id {
    let attr = egraph.analysis.attrs.intern(&op, &[ty], name);
    let mut children = vec![egraph.add(Cnn::Attr(attr))];
    children.extend_from_slice(operands);
    egraph.add(Cnn::op_node(&op, children.into_boxed_slice()).expect("not a source"))
}

impl Applier<Cnn, CnnAnalysis> for SpaceToDepth {
    fn apply_one(
        &self,
        egraph: &mut EGraph<Cnn, CnnAnalysis>,
        eclass: Id,
        subst: &Subst,
        _searcher_ast: Option<&PatternAst<Cnn>>,
        _rule_name: Symbol,
    ) -> Vec<Id> {
        let (x, w) = (subst[var("?x")], subst[var("?w")]);
        let Some(entry) = attr_of(egraph, subst[var("?c")]).cloned() else { return Vec::new() };
        let Op::Conv(a) = &entry.op else { return Vec::new() };
        let key = format!("space-to-depth {} {} {}", egraph.find(subst[var("?c")]), egraph.find(x), egraph.find(w));
        let memo = |egraph: &EGraph<Cnn, CnnAnalysis>| {
            let (attr, s) = *egraph.analysis.derived.get(&key)?;
            let (w2, _) = *egraph.analysis.derived.get(&format!("{key} weight"))?;
            Some((attr, s, w2))
        };
        if let Some((attr, s, w2)) = memo(egraph) {
            let node = self.conv(egraph, attr, s, w2, subst);
            return if egraph.union(eclass, node) { vec![eclass] } else { Vec::new() };
        }
        let eligible = a.algo == ConvAlgo::Direct
            && a.kernel.len() == 2
            && a.strides == [2, 2]
            && a.dilations == [1, 1]
            && a.group == 1;
        let (Some(x_ty), Some(out)) = (egraph[x].data.types.first().cloned(), entry.outputs.first().cloned()) else {
            return Vec::new();
        };
        let Some(wref) = weight_of(egraph, w) else { return Vec::new() };
        if !eligible || egraph.analysis.charged.contains_key(&wref) || x_ty.dtype != DType::F32 {
            return Vec::new();
        }
        let [n, c, hh, ww] = x_ty.shape[..] else { return Vec::new() };
        if c > MAX_CHANNELS || hh % 2 != 0 || ww % 2 != 0 {
            return Vec::new();
        }
        let (Some(h), Some(v)) =
            (axis(a.kernel[0], a.pads[0], a.pads[2], hh), axis(a.kernel[1], a.pads[1], a.pads[3], ww))
        else {
            return Vec::new();
        };
        let Some(wt) = egraph.analysis.weights.get(wref.0 as usize).cloned() else { return Vec::new() };
        let Some(wv) = wt.as_f32() else { return Vec::new() };
        if wt.shape().len() != 4 || wt.shape()[1] != c {
            return Vec::new();
        }
        let w2 = weight(wv, wt.shape(), (a.pads[0], a.pads[1]), h, v);
        let w2_shape = vec![wt.shape()[0], 4 * c, h.kernel, v.kernel];
        let Ok(w2) = Tensor::from_f32(w2_shape, w2) else { return Vec::new() };
        let name = &entry.name;
        let w2 = add_weight(egraph, w2, format!("{name}/s2d_weight"));

        // s2d(x) from the NCHW tensor, and where x is an NHWC → NCHW transpose, from its source.
        let (hs, ws) = (hh / 2, ww / 2);
        let f32 = |shape: Vec<usize>| TensorType::new(DType::F32, shape);
        let s_ty = f32(vec![n, 4 * c, hs, ws]);
        let r =
            add_op(egraph, Op::Reshape { shape: vec![n, c, hs, 2, ws, 2] }, f32(vec![n, c, hs, 2, ws, 2]), name, &[x]);
        let t =
            add_op(egraph, Op::Transpose { perm: vec![0, 3, 5, 1, 2, 4] }, f32(vec![n, 2, 2, c, hs, ws]), name, &[r]);
        let s = add_op(egraph, Op::Reshape { shape: s_ty.shape.clone() }, s_ty.clone(), name, &[t]);
        let nhwc = egraph[x].nodes.iter().find_map(|node| match node {
            Cnn::Transpose(ch) => match attr_of(egraph, ch[0]).map(|e| &e.op) {
                Some(Op::Transpose { perm }) if perm == &[0, 3, 1, 2] => Some(ch[1]),
                _ => None,
            },
            _ => None,
        });
        if let Some(src) = nhwc {
            let r = add_op(
                egraph,
                Op::Reshape { shape: vec![n, hs, 2, ws, 2 * c] },
                f32(vec![n, hs, 2, ws, 2 * c]),
                name,
                &[src],
            );
            let t =
                add_op(egraph, Op::Transpose { perm: vec![0, 2, 4, 1, 3] }, f32(vec![n, 2, 2 * c, hs, ws]), name, &[r]);
            let s2 = add_op(egraph, Op::Reshape { shape: s_ty.shape.clone() }, s_ty, name, &[t]);
            egraph.union(s, s2);
        }
        let attrs = ConvAttrs {
            kernel: vec![h.kernel, v.kernel],
            strides: vec![1, 1],
            dilations: vec![1, 1],
            pads: vec![h.pad_begin, v.pad_begin, h.pad_end, v.pad_end],
            group: 1,
            algo: ConvAlgo::Direct,
        };
        let attr = egraph.analysis.attrs.intern_tagged(&Op::Conv(attrs), &[out], name, entry.proposal);
        let attr = egraph.add(Cnn::Attr(attr));
        egraph.analysis.derived.insert(key.clone(), (attr, s));
        egraph.analysis.derived.insert(format!("{key} weight"), (w2, w2));
        let node = self.conv(egraph, attr, s, w2, subst);
        if egraph.union(eclass, node) { vec![eclass] } else { Vec::new() }
    }
}

impl SpaceToDepth {
    /// The stride-1 conv over `s`, with the match's bias if the rule has one.
    fn conv(&self, egraph: &mut EGraph<Cnn, CnnAnalysis>, attr: Id, s: Id, w2: Id, subst: &Subst) -> Id {
        let mut children = vec![attr, s, w2];
        if self.bias {
            children.push(subst[var("?b")]);
        }
        egraph.add(Cnn::Conv(children.into_boxed_slice()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_keep_the_output_size() {
        // BlazeFace: 5×5, pads 1/2, 128 → 64: a 3×3 over the half-resolution planes, pads 1/1.
        assert_eq!(axis(5, 1, 2, 128), Some(Axis { kernel: 3, pad_begin: 1, pad_end: 1, a0: -1 }));
        // ResNet-style 7×7, pads 3/3, 224 → 112: 4×4, pads 2/1.
        assert_eq!(axis(7, 3, 3, 224), Some(Axis { kernel: 4, pad_begin: 2, pad_end: 1, a0: -2 }));
        // 3×3, pads 1/1, 224 → 112: 2×2, pads 1/0.
        assert_eq!(axis(3, 1, 1, 224), Some(Axis { kernel: 2, pad_begin: 1, pad_end: 0, a0: -1 }));
        // No padding: 3×3 on 8 → 3 outputs; taps 0..2 are planes 0..1 at offsets 0 and 1.
        assert_eq!(axis(3, 0, 0, 8), Some(Axis { kernel: 2, pad_begin: 0, pad_end: 0, a0: 0 }));
    }
}
