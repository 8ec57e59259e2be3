//! Calibration statistics of a layer: its input patches at subsampled output positions,
//! folded into the second moment the families fit on ([`super::linalg::Moments`]).
//!
//! Patches are laid out as the conv weight is (`c·kh·kw + i·kw + j`, zeros outside the input,
//! as padding gives), so `W̃ x̃` is the layer's output at that position. Positions are a
//! deterministic subsample (at most `max_pixels` per image, drawn by a seeded LCG), so memory
//! and time are bounded by the layer's width, not by the image size.

use cnnc_ir::Tensor;

use super::linalg::Moments;
use super::{Layer, LayerKind};

/// Adds the patches of the layer input `x` (dim 0 any multiple of the layer's batch: several
/// calibration samples) at up to `max_pixels` output positions per image to `moments`.
/// `seed` makes the choice of positions deterministic (the caller passes the sample index).
pub fn accumulate(moments: &mut Moments, layer: &Layer, x: &Tensor, max_pixels: usize, seed: u64) {
    if let Some((rows, _)) = sample_patches(layer, x, max_pixels, seed) {
        moments.add_rows(&rows);
    }
}

/// Sampled patches, row-major, and each row's `(image, output position)`.
pub type Patches = (Vec<f32>, Vec<(usize, usize)>);

/// The patches of the layer input `x` at up to `max_pixels` output positions per image (all of
/// them for a dense layer), row-major (`patch_len` per row), and for each row its image and
/// output position (`(image, y·W' + x)`; for a dense layer `(0, row)`). `None` when `x` is not
/// f32 or not shaped as the layer's input.
pub fn sample_patches(layer: &Layer, x: &Tensor, max_pixels: usize, seed: u64) -> Option<Patches> {
    let data = x.as_f32()?;
    // A grouped conv's patch is per group: its statistics are not these (the int8 family
    // models such a layer from its tensors' histograms alone).
    if layer.group() != 1 {
        return None;
    }
    match &layer.kind {
        LayerKind::Dense { .. } => {
            let d = layer.patch_len().max(1);
            (data.len() % d == 0).then(|| (data.to_vec(), (0..data.len() / d).map(|i| (0, i)).collect()))
        }
        LayerKind::Conv(a) => {
            let shape = x.shape();
            if shape.len() != 4 {
                return None;
            }
            let (c, h, w) = (shape[1], shape[2], shape[3]);
            let (oh, ow) = (layer.out_type.shape[2], layer.out_type.shape[3]);
            let (kh, kw) = (a.kernel[0], a.kernel[1]);
            let plane = c * h * w;
            let mut rows: Vec<f32> = Vec::new();
            let mut at = Vec::new();
            let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1);
            for (img, xs) in data.chunks_exact(plane).enumerate() {
                let n_out = oh * ow;
                let picks: Vec<usize> = if n_out <= max_pixels {
                    (0..n_out).collect()
                } else {
                    (0..max_pixels)
                        .map(|_| {
                            state =
                                state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407 + img as u64);
                            ((state >> 33) as usize) % n_out
                        })
                        .collect()
                };
                for p in picks {
                    let (py, px) = (p / ow, p % ow);
                    for ch in 0..c {
                        for i in 0..kh {
                            let y = (py * a.strides[0] + i * a.dilations[0]) as isize - a.pads[0] as isize;
                            for j in 0..kw {
                                let xx = (px * a.strides[1] + j * a.dilations[1]) as isize - a.pads[1] as isize;
                                let inside = y >= 0 && (y as usize) < h && xx >= 0 && (xx as usize) < w;
                                rows.push(if inside { xs[ch * h * w + y as usize * w + xx as usize] } else { 0.0 });
                            }
                        }
                    }
                    at.push((img, p));
                }
            }
            Some((rows, at))
        }
    }
}

/// The input second moment of every layer on `split`: runs `graph` (the lossless graph
/// the layers were found in) through `evaluator` with `taps[i]` (layer `i`'s input value in
/// `graph`) streamed, sampling at most `max_pixels` output positions per image. A layer whose
/// tap streamed nothing gets `None`. The statistics are folded in on `threads` threads.
pub fn collect_moments(
    evaluator: &mut dyn crate::Evaluator,
    graph: &cnnc_ir::VerifiedGraph,
    layers: &[Layer],
    taps: &[cnnc_ir::ValueRef],
    split: crate::Split,
    max_pixels: usize,
    threads: usize,
) -> Result<Vec<Option<super::linalg::SecondMoment>>, crate::EvalError> {
    let mut unique: Vec<cnnc_ir::ValueRef> = Vec::new();
    let slot: Vec<usize> = taps
        .iter()
        .map(|t| match unique.iter().position(|u| u == t) {
            Some(i) => i,
            None => {
                unique.push(*t);
                unique.len() - 1
            }
        })
        .collect();
    // Each batch's layers are folded in on `threads` threads (every layer's moments on one
    // thread, in sample order, so the sums do not depend on the count).
    let moments: Vec<std::sync::Mutex<Moments>> =
        layers.iter().map(|l| std::sync::Mutex::new(Moments::new(l.patch_len()))).collect();
    evaluator.run(graph, split, &unique, &mut |batch| {
        let next = std::sync::atomic::AtomicUsize::new(0);
        let work = || {
            loop {
                let li = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(layer) = layers.get(li) else { break };
                if let Some(x) = batch.taps.get(slot[li]) {
                    let mut m = moments[li].lock().expect("a statistics worker panicked");
                    accumulate(&mut m, layer, x, max_pixels, batch.first as u64);
                }
            }
        };
        std::thread::scope(|s| {
            for _ in 1..threads.clamp(1, layers.len().max(1)) {
                s.spawn(work);
            }
            work();
        });
        Ok(crate::Flow::Continue)
    })?;
    Ok(moments.into_iter().map(|m| m.into_inner().expect("a statistics worker panicked").finish()).collect())
}
