//! The AVX2/FMA f32 microkernel (a 6×16 register tile: 12 ymm accumulators) and the im2col
//! packing routine that feeds it.

use std::arch::x86_64::*;

use super::{ACCUMULATE, BIAS, CLAMP, MR, NR, PackGeo, RESIDUAL};

pub(super) type SgemmFn =
    unsafe extern "C" fn(usize, *const f32, *const f32, *mut f32, usize, u32, *const f32, *const f32, f32, f32);
pub(super) type PackFn = unsafe extern "C" fn(*const i64, *const f32, usize, usize, usize, usize, *mut f32);

/// `C[r][c] (+)= Σ_k a[k·6 + r]·b[k·16 + c]` for the tile's valid rows `r < m` and columns
/// `c < n` (`flags` bits 8..16 and 16..24), then, in this order and as `flags` says: `+ C`
/// (ACCUMULATE), `+ bias[r]` (BIAS), `+ residual[r·ldc + c]` (RESIDUAL), clamp to `[lo, hi]`
/// (CLAMP). Nothing outside the `m × n` tile of C is read or written.
///
/// # Safety
/// The host supports AVX2 and FMA (checked by `select`, the only place this address is
/// taken). `k ≥ 1`; `a` points at `6·k` readable f32 (a packed A panel, rows past `m` may
/// hold anything finite), `b` at `16·k` (columns past `n` likewise); `c` at an `m × n` tile
/// with row stride `ldc` elements, readable and writable; `bias` at `m` f32 when BIAS is set
/// and `residual` at an `m × n` tile of stride `ldc` when RESIDUAL is set (otherwise either
/// may be null). No buffer may alias `c`.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe extern "C" fn sgemm_6x16(
    k: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    flags: u32,
    bias: *const f32,
    residual: *const f32,
    lo: f32,
    hi: f32,
) {
    let m = ((flags >> 8) & 0xff) as usize;
    let n = ((flags >> 16) & 0xff) as usize;
    // SAFETY: the caller's contract above.
    unsafe {
        let acc = product(k, a, b);
        if m == MR && n == NR {
            finish(acc, c, ldc, flags, bias, residual, lo, hi);
            return;
        }
        // A partial tile goes through a full one on the stack.
        let mut tile = [0f32; MR * NR];
        let mut res = [0f32; MR * NR];
        let mut bias6 = [0f32; MR];
        if flags & BIAS != 0 {
            std::ptr::copy_nonoverlapping(bias, bias6.as_mut_ptr(), m);
        }
        for r in 0..m {
            if flags & ACCUMULATE != 0 {
                std::ptr::copy_nonoverlapping(c.add(r * ldc), tile.as_mut_ptr().add(r * NR), n);
            }
            if flags & RESIDUAL != 0 {
                std::ptr::copy_nonoverlapping(residual.add(r * ldc), res.as_mut_ptr().add(r * NR), n);
            }
        }
        finish(acc, tile.as_mut_ptr(), NR, flags, bias6.as_ptr(), res.as_ptr(), lo, hi);
        for r in 0..m {
            std::ptr::copy_nonoverlapping(tile.as_ptr().add(r * NR), c.add(r * ldc), n);
        }
    }
}

/// The 6×16 product as 12 vectors, row-major (`[r·2 + half]`).
#[target_feature(enable = "avx2,fma")]
unsafe fn product(k: usize, a: *const f32, b: *const f32) -> [__m256; 12] {
    let mut acc = [_mm256_setzero_ps(); 12];
    let (mut a, mut b) = (a, b);
    // SAFETY: `a` and `b` hold `6·k` and `16·k` f32 (the caller's contract).
    unsafe {
        for _ in 0..k {
            let b0 = _mm256_loadu_ps(b);
            let b1 = _mm256_loadu_ps(b.add(8));
            for r in 0..MR {
                let ar = _mm256_broadcast_ss(&*a.add(r));
                acc[r * 2] = _mm256_fmadd_ps(ar, b0, acc[r * 2]);
                acc[r * 2 + 1] = _mm256_fmadd_ps(ar, b1, acc[r * 2 + 1]);
            }
            a = a.add(MR);
            b = b.add(NR);
        }
    }
    acc
}

/// Applies the epilogue `flags` asks for to a full tile and stores it at `c` (stride `ldc`).
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn finish(
    mut acc: [__m256; 12],
    c: *mut f32,
    ldc: usize,
    flags: u32,
    bias: *const f32,
    residual: *const f32,
    lo: f32,
    hi: f32,
) {
    // SAFETY: full 6×16 tiles at `c`/`residual` and 6 biases (the caller's contract).
    unsafe {
        for r in 0..MR {
            let row = c.add(r * ldc);
            for h in 0..2 {
                let v = &mut acc[r * 2 + h];
                if flags & ACCUMULATE != 0 {
                    *v = _mm256_add_ps(*v, _mm256_loadu_ps(row.add(h * 8)));
                }
                if flags & BIAS != 0 {
                    *v = _mm256_add_ps(*v, _mm256_broadcast_ss(&*bias.add(r)));
                }
                if flags & RESIDUAL != 0 {
                    *v = _mm256_add_ps(*v, _mm256_loadu_ps(residual.add(r * ldc + h * 8)));
                }
                if flags & CLAMP != 0 {
                    *v = _mm256_min_ps(_mm256_max_ps(*v, _mm256_set1_ps(lo)), _mm256_set1_ps(hi));
                }
                _mm256_storeu_ps(row.add(h * 8), *v);
            }
        }
    }
}

impl PackGeo {
    fn read(t: *const i64) -> PackGeo {
        // SAFETY: `t` points at the 11 values `table` wrote (the caller's contract).
        let v = |i: usize| unsafe { *t.add(i) } as usize;
        PackGeo {
            ih: v(0),
            iw: v(1),
            ow: v(2),
            kh: v(3),
            kw: v(4),
            sh: v(5),
            sw: v(6),
            dh: v(7),
            dw: v(8),
            ph: v(9),
            pw: v(10),
        }
    }
}

/// Packs the im2col matrix of a 2-D conv input, rows `k0..k0+kc` (row `k` is input channel
/// `k / (kh·kw)`, tap `k % (kh·kw)`) and output pixels `n0..n0+nc`, into strips of 16 pixels:
/// `dst[s·kc·16 + kk·16 + l]` is row `k0 + kk`, pixel `n0 + s·16 + l`, zero where the tap
/// reads padding and for pixels past `nc` in the last strip.
///
/// # Safety
/// `geo` points at a [`PackGeo::table`]; `x` at the channels `0..(k0+kc)/(kh·kw)` rounded up
/// of a `ih × iw` input (channel stride `ih·iw`); the pixels exist (`n0 + nc ≤ oh·ow` with
/// `oh` consistent with the geometry, so every in-range tap reads inside `x`); `dst` has room
/// for `nc.div_ceil(16)·kc·16` f32 and does not overlap `x`.
pub(super) unsafe extern "C" fn pack_b_im2col(
    geo: *const i64,
    x: *const f32,
    k0: usize,
    kc: usize,
    n0: usize,
    nc: usize,
    dst: *mut f32,
) {
    let g = PackGeo::read(geo);
    let taps = g.kh * g.kw;
    let plane = g.ih * g.iw;
    // Strips are packed in chunks, row by row of B, so each input row is read sequentially.
    const CHUNK: usize = 16;
    let n_strips = nc.div_ceil(NR);
    for s0 in (0..n_strips).step_by(CHUNK) {
        let chunk = (n_strips - s0).min(CHUNK);
        // Segments of each strip that lie on one output row: (first lane, lanes, oy, first ox).
        let mut segs = [[(0usize, 0usize, 0usize, 0usize); NR]; CHUNK];
        let mut n_segs = [0usize; CHUNK];
        let mut lanes = [0usize; CHUNK];
        for c in 0..chunk {
            let first = (s0 + c) * NR;
            lanes[c] = (nc - first).min(NR);
            let mut l = 0;
            while l < lanes[c] {
                let p = n0 + first + l;
                let (oy, ox) = (p / g.ow, p % g.ow);
                let len = (g.ow - ox).min(lanes[c] - l);
                segs[c][n_segs[c]] = (l, len, oy, ox);
                n_segs[c] += 1;
                l += len;
            }
        }
        let (mut ic, mut ky, mut kx) = (k0 / taps, (k0 % taps) / g.kw, k0 % g.kw);
        for kk in 0..kc {
            // SAFETY: each strip's `kc·16` f32 lie inside `dst` (the caller's contract); every
            // read below is a tap inside the input (checked).
            unsafe {
                let xc = x.add(ic * plane);
                for c in 0..chunk {
                    let out = dst.add(((s0 + c) * kc + kk) * NR);
                    if lanes[c] < NR {
                        std::ptr::write_bytes(out.add(lanes[c]), 0, NR - lanes[c]);
                    }
                    for &(l0, len, oy, ox0) in &segs[c][..n_segs[c]] {
                        let iy = (oy * g.sh + ky * g.dh) as isize - g.ph as isize;
                        let o = out.add(l0);
                        if iy < 0 || iy >= g.ih as isize {
                            std::ptr::write_bytes(o, 0, len);
                            continue;
                        }
                        let row = xc.add(iy as usize * g.iw);
                        let ix0 = (ox0 * g.sw + kx * g.dw) as isize - g.pw as isize;
                        if g.sw == 1 {
                            // Valid lanes `i` have `0 ≤ ix0 + i < iw`.
                            let lo = (-ix0).clamp(0, len as isize) as usize;
                            let hi = (g.iw as isize - ix0).clamp(lo as isize, len as isize) as usize;
                            std::ptr::write_bytes(o, 0, lo);
                            std::ptr::copy_nonoverlapping(row.offset(ix0 + lo as isize), o.add(lo), hi - lo);
                            std::ptr::write_bytes(o.add(hi), 0, len - hi);
                        } else {
                            for i in 0..len {
                                let ix = ix0 + (i * g.sw) as isize;
                                *o.add(i) = if ix >= 0 && ix < g.iw as isize { *row.offset(ix) } else { 0.0 };
                            }
                        }
                    }
                }
            }
            kx += 1;
            if kx == g.kw {
                kx = 0;
                ky += 1;
                if ky == g.kh {
                    ky = 0;
                    ic += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1664525).wrapping_add(1013904223);
                (s >> 8) as f32 / (1 << 24) as f32 - 0.5
            })
            .collect()
    }

    /// Every tile shape, flag combination and a large `ldc`, against a plain loop.
    #[test]
    fn sgemm_6x16_matches_plain_loops_on_partial_tiles_and_every_flag() {
        let Some(_) = super::super::select(super::super::Choice::Auto) else { return };
        let k = 7;
        let ldc = 21;
        let (a, b, bias) = (lcg(k * MR, 1), lcg(k * NR, 2), lcg(MR, 3));
        let c0 = lcg(MR * ldc, 4);
        let res = lcg(MR * ldc, 5);
        for flags in 0..16u32 {
            for (m, n) in [(6, 16), (1, 1), (5, 16), (6, 3), (2, 9)] {
                let mut c = c0.clone();
                let f = flags | super::super::tile_flags(m, n);
                // SAFETY: the host has AVX2/FMA (`select` returned Some); buffers are sized above.
                unsafe {
                    sgemm_6x16(
                        k,
                        a.as_ptr(),
                        b.as_ptr(),
                        c.as_mut_ptr(),
                        ldc,
                        f,
                        bias.as_ptr(),
                        res.as_ptr(),
                        -0.2,
                        0.3,
                    )
                };
                for r in 0..MR {
                    for j in 0..ldc {
                        let i = r * ldc + j;
                        if r >= m || j >= n {
                            assert_eq!(c[i], c0[i], "outside the tile");
                            continue;
                        }
                        let mut v: f32 = (0..k).map(|kk| a[kk * MR + r] * b[kk * NR + j]).sum();
                        if flags & ACCUMULATE != 0 {
                            v += c0[i];
                        }
                        if flags & BIAS != 0 {
                            v += bias[r];
                        }
                        if flags & RESIDUAL != 0 {
                            v += res[i];
                        }
                        if flags & CLAMP != 0 {
                            v = v.clamp(-0.2, 0.3);
                        }
                        assert!((c[i] - v).abs() < 1e-5, "flags {flags} tile {m}x{n} at ({r}, {j}): {} vs {v}", c[i]);
                    }
                }
            }
        }
    }
}
