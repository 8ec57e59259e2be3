//! The AVX2/FMA f32 microkernel (a 6×16 register tile: 12 ymm accumulators) with its fused
//! epilogue (bias, residual, then one activation of [`Act`](super::Act), in registers before
//! the store), and the im2col packing routine that feeds it.

use std::arch::x86_64::*;

use super::{
    ACCUMULATE, ACT_CLAMP, ACT_HARD_SIGMOID, ACT_HARD_SWISH, ACT_LEAKY_RELU, ACT_SIGMOID, ACT_SILU, ACT_SWISH, BIAS,
    MR, NR, PackGeo, RESIDUAL, with_act,
};

pub(super) type SgemmFn =
    unsafe extern "C" fn(usize, *const f32, *const f32, *mut f32, usize, u32, *const f32, *const f32, f32, f32);
pub(super) type PackFn = unsafe extern "C" fn(*const i64, *const f32, usize, usize, usize, usize, *mut f32);
pub(super) type SgemmRowsFn = unsafe extern "C" fn(
    usize,
    *const f32,
    *const f32,
    *const i64,
    *mut f32,
    usize,
    u32,
    *const f32,
    *const f32,
    f32,
    f32,
);

/// `C[r][c] (+)= Σ_k a[k·6 + r]·b[k·16 + c]` for the tile's valid rows `r < m` and columns
/// `c < n` (`flags` bits 8..16 and 16..24), then, in this order and as `flags` says: `+ C`
/// (ACCUMULATE), `+ bias[r]` (BIAS), `+ residual[r·ldc + c]` (RESIDUAL), the activation of
/// kind `flags` bits 24..28 with parameters `p0, p1` (see [`Act`](super::Act); kind 0 is
/// none). Nothing outside the `m × n` tile of C is read or written.
///
/// # Safety
/// The host supports AVX2 and FMA (checked by `select`, the only place this address is
/// taken). `k ≥ 1`; `a` points at `6·k` readable f32 (a packed A panel, rows past `m` may
/// hold anything finite), `b` at `16·k` (columns past `n` likewise); `c` at an `m × n` tile
/// with row stride `ldc` elements, readable and writable; `bias` at `m` f32 when BIAS is set
/// and `residual` at an `m × n` tile of stride `ldc` when RESIDUAL is set (otherwise either
/// may be null). No buffer may alias `c`. (An unknown activation kind is treated as none.)
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
    p0: f32,
    p1: f32,
) {
    // SAFETY: the caller's contract above.
    unsafe { store(product(k, a, b), c, ldc, flags, bias, residual, p0, p1) }
}

/// [`sgemm_6x16`] with B read in place instead of from a packed panel: row `kk` of B is the
/// 16 f32 at `x + offs[kk]` (element offsets), e.g. 16 adjacent pixels of an input row of a
/// stride-1 conv, the im2col row `kk` being an input channel and tap. The sums are the same
/// operations in the same order as [`sgemm_6x16`] on the packed copy of those rows, so the two
/// give the same bits.
///
/// # Safety
/// As [`sgemm_6x16`], with `b` replaced by: `offs` points at `k` readable i64 and
/// `x.offset(offs[kk])` at 16 readable f32 for every `kk < k`.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe extern "C" fn sgemm_6x16_rows(
    k: usize,
    a: *const f32,
    x: *const f32,
    offs: *const i64,
    c: *mut f32,
    ldc: usize,
    flags: u32,
    bias: *const f32,
    residual: *const f32,
    p0: f32,
    p1: f32,
) {
    // SAFETY: the caller's contract above.
    unsafe { store(product_rows(k, a, x, offs), c, ldc, flags, bias, residual, p0, p1) }
}

/// Applies the epilogue and stores the tile's valid `m × n` part (`flags` bits 8..24): the one
/// epilogue of both f32 tiles (the AVX-512 tile passes its zmm rows as ymm halves).
///
/// # Safety
/// The contract of [`sgemm_6x16`] on `c`, `bias` and `residual`.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn store(
    acc: [__m256; 12],
    c: *mut f32,
    ldc: usize,
    flags: u32,
    bias: *const f32,
    residual: *const f32,
    p0: f32,
    p1: f32,
) {
    let m = ((flags >> 8) & 0xff) as usize;
    let n = ((flags >> 16) & 0xff) as usize;
    // SAFETY: the caller's contract.
    unsafe {
        if m == MR && n == NR {
            finish(acc, c, ldc, flags, bias, residual, p0, p1);
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
        finish(acc, tile.as_mut_ptr(), NR, flags, bias6.as_ptr(), res.as_ptr(), p0, p1);
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

/// [`product`] with row `kk` of B at `x + offs[kk]`.
#[target_feature(enable = "avx2,fma")]
unsafe fn product_rows(k: usize, a: *const f32, x: *const f32, offs: *const i64) -> [__m256; 12] {
    let mut acc = [_mm256_setzero_ps(); 12];
    let mut a = a;
    // SAFETY: `a` holds `6·k` f32, `offs` `k` offsets of 16 readable f32 each (the caller's
    // contract).
    unsafe {
        for kk in 0..k {
            let b = x.offset(*offs.add(kk) as isize);
            // The same row of the next strip, which the driver reads next: a hint (it never
            // faults, even past the input's end); measured 5–20% faster on 1×1 convs.
            _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(NR).cast());
            let b0 = _mm256_loadu_ps(b);
            let b1 = _mm256_loadu_ps(b.add(8));
            for r in 0..MR {
                let ar = _mm256_broadcast_ss(&*a.add(r));
                acc[r * 2] = _mm256_fmadd_ps(ar, b0, acc[r * 2]);
                acc[r * 2 + 1] = _mm256_fmadd_ps(ar, b1, acc[r * 2 + 1]);
            }
            a = a.add(MR);
        }
    }
    acc
}

/// Applies the epilogue `flags` asks for to a full tile and stores it at `c` (stride `ldc`):
/// one copy of the store loop per activation kind, chosen once per tile.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn finish(
    acc: [__m256; 12],
    c: *mut f32,
    ldc: usize,
    flags: u32,
    bias: *const f32,
    residual: *const f32,
    p0: f32,
    p1: f32,
) {
    // SAFETY: forwarded (the same contract).
    unsafe { with_act!(flags, ACT => finish_with::<ACT>(acc, c, ldc, flags, bias, residual, p0, p1)) }
}

/// [`finish`] with the activation of kind `ACT`.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn finish_with<const ACT: u32>(
    mut acc: [__m256; 12],
    c: *mut f32,
    ldc: usize,
    flags: u32,
    bias: *const f32,
    residual: *const f32,
    p0: f32,
    p1: f32,
) {
    let (p0, p1) = (_mm256_set1_ps(p0), _mm256_set1_ps(p1));
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
                *v = activate::<ACT>(*v, p0, p1);
                _mm256_storeu_ps(row.add(h * 8), *v);
            }
        }
    }
}

// The activations below mirror `codegen::unary` operation for operation. Its `max(v, c)` is
// `v < c ? c : v`, which is `_mm256_max_ps(c, v)` (the second operand wins on NaN and on equal
// values, so NaN and −0 pass through alike), and `min(v, c)` is `_mm256_min_ps(c, v)`;
// multiplies and adds stay separate instructions where it has them separate (Rust never
// contracts them into FMAs), and its `fma` is `_mm256_fmadd_ps` (both round once).

/// The activation of kind `ACT` on 8 lanes, with parameters `p0, p1` splatted.
#[target_feature(enable = "avx2,fma")]
pub(super) fn activate<const ACT: u32>(v: __m256, p0: __m256, p1: __m256) -> __m256 {
    let zero = _mm256_setzero_ps();
    let one = _mm256_set1_ps(1.0);
    match ACT {
        ACT_CLAMP => _mm256_min_ps(p1, _mm256_max_ps(p0, v)),
        ACT_LEAKY_RELU => {
            let scaled = _mm256_mul_ps(v, p0);
            _mm256_blendv_ps(v, scaled, _mm256_cmp_ps::<_CMP_LT_OQ>(v, zero))
        }
        ACT_HARD_SIGMOID => {
            let t = _mm256_add_ps(_mm256_mul_ps(v, p0), p1);
            _mm256_min_ps(one, _mm256_max_ps(zero, t))
        }
        ACT_HARD_SWISH => {
            let t = _mm256_add_ps(_mm256_mul_ps(v, _mm256_set1_ps(1.0 / 6.0)), _mm256_set1_ps(0.5));
            let t = _mm256_min_ps(one, _mm256_max_ps(zero, t));
            _mm256_mul_ps(v, t)
        }
        ACT_SIGMOID => sigmoid(v),
        ACT_SWISH => _mm256_mul_ps(v, sigmoid(_mm256_mul_ps(v, p0))),
        ACT_SILU => _mm256_mul_ps(v, sigmoid(v)),
        _ => v,
    }
}

/// `1 / (1 + e⁻ˣ)` as `codegen::unary` computes it: `s / (1 + s)` with `s = e^{-|x|}` for
/// negative `x`, else `1 / (1 + s)`.
///
/// Applied in registers like the other activations. Measured against a second pass over the
/// freshly stored tile (in L1) inside the same call: in registers was faster on a 1×1 conv
/// with K = 32 (fused vs conv + separate sigmoid kernel: 0.69 vs 0.75 of the time) and even
/// at K ≥ 96.
#[target_feature(enable = "avx2,fma")]
pub(super) fn sigmoid(x: __m256) -> __m256 {
    // `−|x|` as one `or` of the sign bit. The numerator takes `s` where the sign bit of `x` is
    // set, not where `x < 0`: the two differ only at −0 (where `s = e⁰ = 1` anyway) and at a NaN
    // (where the denominator is NaN anyway).
    let s = exp_nonpos(_mm256_or_ps(x, _mm256_set1_ps(-0.0)));
    let one = _mm256_set1_ps(1.0);
    let den = _mm256_add_ps(one, s);
    let num = _mm256_blendv_ps(one, s, x);
    _mm256_div_ps(num, den)
}

/// `eˣ` on 8 lanes: `crate::expf::exp`'s operations in its order (`maxps`/`minps` keep a NaN
/// `x` as its compare-and-select clamps do), so the bits equal the Cranelift kernels'.
#[target_feature(enable = "avx2,fma")]
pub(super) fn exp(x: __m256) -> __m256 {
    use crate::expf::{HI, LO, SHIFTER};
    let x = _mm256_max_ps(_mm256_set1_ps(LO), x);
    let x = _mm256_min_ps(_mm256_set1_ps(HI), x);
    let (t, y) = exp_reduce(x);
    let ni = _mm256_sub_epi32(_mm256_castps_si256(t), _mm256_set1_epi32(SHIFTER.to_bits() as i32));
    let n1 = _mm256_srai_epi32::<1>(ni);
    let n2 = _mm256_sub_epi32(ni, n1);
    let scale = |n: __m256i| _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(n, _mm256_set1_epi32(127))));
    _mm256_mul_ps(_mm256_mul_ps(y, scale(n1)), scale(n2))
}

/// [`exp`] for lanes `≤ 0` (or NaN): the same bits, with `crate::expf::exp_nonpos`'s
/// operations.
#[target_feature(enable = "avx2,fma")]
pub(super) fn exp_nonpos(x: __m256) -> __m256 {
    use crate::expf::{LO, NONPOS_BIAS, NONPOS_SHIFT};
    let x = _mm256_max_ps(_mm256_set1_ps(LO), x);
    let (t, y) = exp_reduce(x);
    let s = _mm256_slli_epi32::<23>(_mm256_add_epi32(_mm256_castps_si256(t), _mm256_set1_epi32(NONPOS_BIAS)));
    let down = _mm256_set1_ps(f32::from_bits(((127 - NONPOS_SHIFT) << 23) as u32));
    _mm256_mul_ps(_mm256_mul_ps(y, _mm256_castsi256_ps(s)), down)
}

/// The shared middle of [`exp`] and [`exp_nonpos`] on clamped `x`: `t = x·log₂e + SHIFTER`
/// (whose bits hold `n`) and `eʳ`.
#[target_feature(enable = "avx2,fma")]
fn exp_reduce(x: __m256) -> (__m256, __m256) {
    use crate::expf::{LN2_HI, LN2_LO, LOG2E, P, SHIFTER};
    let shifter = _mm256_set1_ps(SHIFTER);
    let t = _mm256_fmadd_ps(x, _mm256_set1_ps(LOG2E), shifter);
    let n = _mm256_sub_ps(t, shifter);
    let r = _mm256_fmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
    let r = _mm256_fmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
    let mut p = _mm256_set1_ps(P[5]);
    for &k in P[..5].iter().rev() {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(k));
    }
    let r2 = _mm256_mul_ps(r, r);
    let y = _mm256_fmadd_ps(p, r2, r);
    (t, _mm256_add_ps(y, _mm256_set1_ps(1.0)))
}

impl PackGeo {
    pub(super) fn read(t: *const i64) -> PackGeo {
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
/// Copies are AVX2 (masked loads and stores for partial runs, which never touch the masked-out
/// lanes' memory), never calls to `memcpy`/`memset`: a strip row is 16 floats, far too short
/// for a library call to pay (profiled: the calls cost more than the copies).
///
/// # Safety
/// The host supports AVX2 (checked by `select`, the only place this address is taken). `geo`
/// points at a [`PackGeo::table`]; `x` at the channels `0..(k0+kc)/(kh·kw)` rounded up of a
/// `ih × iw` input (channel stride `ih·iw`); the pixels exist (`n0 + nc ≤ oh·ow` with `oh`
/// consistent with the geometry, so every in-range tap reads inside `x`); `dst` has room for
/// `nc.div_ceil(16)·kc·16` f32 and does not overlap `x`.
#[target_feature(enable = "avx2,fma")]
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
        for c in 0..chunk {
            let first = (s0 + c) * NR;
            let lanes = (nc - first).min(NR);
            let mut l = 0;
            while l < lanes {
                let p = n0 + first + l;
                let (oy, ox) = (p / g.ow, p % g.ow);
                let len = (g.ow - ox).min(lanes - l);
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
                    let segs = &segs[c][..n_segs[c]];
                    // The common case: the whole strip is one in-range run of 16 input pixels.
                    if let [(0, NR, oy, ox0)] = *segs {
                        let iy = (oy * g.sh + ky * g.dh) as isize - g.ph as isize;
                        let ix0 = (ox0 * g.sw + kx * g.dw) as isize - g.pw as isize;
                        let last = ix0 + ((NR - 1) * g.sw) as isize;
                        if iy >= 0 && iy < g.ih as isize && ix0 >= 0 && last < g.iw as isize {
                            let src = xc.add(iy as usize * g.iw).offset(ix0);
                            let (a, b) = if g.sw == 1 {
                                (_mm256_loadu_ps(src), _mm256_loadu_ps(src.add(8)))
                            } else {
                                gather_upto_16(src, g.sw, NR)
                            };
                            _mm256_storeu_ps(out, a);
                            _mm256_storeu_ps(out.add(8), b);
                            continue;
                        }
                    }
                    // The strip row is assembled in two registers, then stored once.
                    let mut r = (_mm256_setzero_ps(), _mm256_setzero_ps());
                    for &(l0, len, oy, ox0) in segs {
                        let iy = (oy * g.sh + ky * g.dh) as isize - g.ph as isize;
                        if iy < 0 || iy >= g.ih as isize {
                            continue;
                        }
                        let row = xc.add(iy as usize * g.iw);
                        let ix0 = (ox0 * g.sw + kx * g.dw) as isize - g.pw as isize;
                        if g.sw == 1 {
                            // Valid lanes `i` have `0 ≤ ix0 + i < iw`.
                            let lo = (-ix0).clamp(0, len as isize) as usize;
                            let hi = (g.iw as isize - ix0).clamp(lo as isize, len as isize) as usize;
                            let (a, b) = load_upto_16(row.offset(ix0 + lo as isize), hi - lo);
                            r = insert(r, l0 + lo, hi - lo, a, b);
                        } else {
                            // Valid lanes `i` have `0 ≤ ix0 + i·sw < iw`.
                            let sw = g.sw as isize;
                            let lo = if ix0 >= 0 { 0 } else { (-ix0 + sw - 1) / sw }.clamp(0, len as isize);
                            let hi = (g.iw as isize - ix0 + sw - 1).div_euclid(sw).clamp(lo, len as isize);
                            let (lo, hi) = (lo as usize, hi as usize);
                            let (a, b) = gather_upto_16(row.offset(ix0 + (lo * g.sw) as isize), g.sw, hi - lo);
                            r = insert(r, l0 + lo, hi - lo, a, b);
                        }
                    }
                    _mm256_storeu_ps(out, r.0);
                    _mm256_storeu_ps(out.add(8), r.1);
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

/// Lanes `< n` of the two 8-lane halves of a 16-lane vector, as masks.
#[target_feature(enable = "avx2,fma")]
fn masks(n: usize) -> (__m256i, __m256i) {
    let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let lo = _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), idx);
    let hi = _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32 - 8), idx);
    (lo, hi)
}

/// `n ≤ 16` f32 from `src` as two 8-lane vectors, zero past `n` (masked loads: lanes past `n`
/// are not read).
///
/// # Safety
/// AVX2; `src` readable for `n` f32.
#[target_feature(enable = "avx2,fma")]
unsafe fn load_upto_16(src: *const f32, n: usize) -> (__m256, __m256) {
    debug_assert!(n <= 16);
    let (lo, hi) = masks(n);
    // SAFETY: masked-out lanes are not accessed (AVX `vmaskmovps` semantics).
    unsafe {
        let b = if n > 8 { _mm256_maskload_ps(src.add(8), hi) } else { _mm256_setzero_ps() };
        (_mm256_maskload_ps(src, lo), b)
    }
}

/// `n ≤ 16` f32 at stride `stride` (elements) from `src`, as two 8-lane vectors, zero past `n`
/// (masked gathers: lanes past `n` are not read).
///
/// # Safety
/// AVX2; `src.add(i·stride)` readable for `i < n`; `16·stride` fits in an `i32`.
#[target_feature(enable = "avx2,fma")]
unsafe fn gather_upto_16(src: *const f32, stride: usize, n: usize) -> (__m256, __m256) {
    debug_assert!(n <= 16);
    let (lo, hi) = masks(n);
    let offs = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(stride as i32));
    let zero = _mm256_setzero_ps();
    // SAFETY: masked-out lanes are not accessed (AVX2 gather semantics).
    unsafe {
        let a = _mm256_mask_i32gather_ps::<4>(zero, src, offs, _mm256_castsi256_ps(lo));
        let b = if n > 8 {
            _mm256_mask_i32gather_ps::<4>(zero, src.add(8 * stride), offs, _mm256_castsi256_ps(hi))
        } else {
            zero
        };
        (a, b)
    }
}

/// The 16-lane row `r` with lanes `off..off + n` replaced by lanes `0..n` of `(a, b)`, by
/// lane permutes and blends in registers (masked stores, the alternative, are slow on AMD
/// cores: profiled, they dominated the packer on 7×7 and 14×14 outputs).
#[target_feature(enable = "avx2,fma")]
fn insert(r: (__m256, __m256), off: usize, n: usize, a: __m256, b: __m256) -> (__m256, __m256) {
    debug_assert!(off + n <= NR);
    let j_lo = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let j_hi = _mm256_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15);
    let (first, end) = (_mm256_set1_epi32(off as i32 - 1), _mm256_set1_epi32((off + n) as i32));
    let off_v = _mm256_set1_epi32(off as i32);
    // Lane `j` of the row takes element `e = j − off` of (a, b); a permute uses `e mod 8`.
    let (e_lo, e_hi) = (_mm256_sub_epi32(j_lo, off_v), _mm256_sub_epi32(j_hi, off_v));
    let lo_val = _mm256_permutevar8x32_ps(a, e_lo);
    let from_a = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(8), e_hi));
    let hi_val = _mm256_blendv_ps(_mm256_permutevar8x32_ps(b, e_hi), _mm256_permutevar8x32_ps(a, e_hi), from_a);
    let inside =
        |j: __m256i| _mm256_castsi256_ps(_mm256_and_si256(_mm256_cmpgt_epi32(j, first), _mm256_cmpgt_epi32(end, j)));
    (_mm256_blendv_ps(r.0, lo_val, inside(j_lo)), _mm256_blendv_ps(r.1, hi_val, inside(j_hi)))
}

#[cfg(test)]
mod tests {
    use super::super::{Act, F32Tile, each_tile_or_skip, lcg};
    use super::*;

    /// The f32 GEMM tiles this host has, as functions (a skip for each one it lacks).
    fn tiles(test: &str) -> Vec<(F32Tile, SgemmFn, SgemmRowsFn)> {
        let tile = |t: F32Tile| -> (F32Tile, SgemmFn, SgemmRowsFn) {
            match t {
                F32Tile::Avx512 => (t, super::super::avx512::sgemm_6x16, super::super::avx512::sgemm_6x16_rows),
                F32Tile::Avx2 => (t, sgemm_6x16, sgemm_6x16_rows),
            }
        };
        each_tile_or_skip(test).into_iter().map(|mk| tile(mk.tile)).collect()
    }

    /// `act` on one value, in f64 (the kernel's own formulas are pinned bit for bit against
    /// the Cranelift activation kernels in `codegen::conv::packed_tests`).
    fn act_f64(act: Option<Act>, x: f32) -> f32 {
        let x = f64::from(x);
        let clamp01 = |t: f64| t.clamp(0.0, 1.0);
        (match act {
            None => x,
            Some(Act::Clamp { lo, hi }) => x.clamp(f64::from(lo), f64::from(hi)),
            Some(Act::LeakyRelu { alpha }) => {
                if x < 0.0 {
                    f64::from(alpha) * x
                } else {
                    x
                }
            }
            Some(Act::HardSigmoid { alpha, beta }) => clamp01(f64::from(alpha) * x + f64::from(beta)),
            Some(Act::HardSwish) => x * clamp01(x / 6.0 + 0.5),
            Some(Act::Sigmoid) => 1.0 / (1.0 + (-x).exp()),
            Some(Act::Swish { beta }) => x / (1.0 + (-f64::from(beta) * x).exp()),
        }) as f32
    }

    /// Every tile shape, flag combination and activation and a large `ldc`, against a plain
    /// loop. Biases of up to ±4 put the values in every activation's clamped ranges too.
    /// Tolerance 1e-5 absolute: 7 products of values below 1/2 summed in another order (the
    /// AVX-512 tile sums even and odd `k` apart), and the activations' own rounding (the
    /// inline sigmoid is within 1.7e-7 relative). Every tile the host has.
    #[test]
    fn sgemm_6x16_matches_plain_loops_on_partial_tiles_and_every_flag() {
        for (tile, gemm, _) in tiles("sgemm_6x16_matches_plain_loops_on_partial_tiles_and_every_flag") {
            let k = 7;
            let ldc = 21;
            let (a, b) = (lcg(k * MR, 1), lcg(k * NR, 2));
            let bias: Vec<f32> = lcg(MR, 3).iter().map(|v| v * 8.0).collect();
            let c0 = lcg(MR * ldc, 4);
            let res = lcg(MR * ldc, 5);
            let acts = [
                None,
                Some(Act::Clamp { lo: -0.2, hi: 0.3 }),
                Some(Act::Clamp { lo: 0.0, hi: f32::INFINITY }),
                Some(Act::LeakyRelu { alpha: 0.1 }),
                Some(Act::HardSigmoid { alpha: 0.2, beta: 0.5 }),
                Some(Act::HardSwish),
                Some(Act::Sigmoid),
                Some(Act::Swish { beta: 1.0 }),
                Some(Act::Swish { beta: 1.702 }),
            ];
            for flags in 0..8u32 {
                for act in acts {
                    for (m, n) in [(6, 16), (1, 1), (5, 16), (6, 3), (2, 9)] {
                        let mut c = c0.clone();
                        let f = flags | act.map_or(0, Act::flags) | super::super::tile_flags(m, n);
                        let (p0, p1) = act.map_or((f32::NAN, f32::NAN), Act::params);
                        // SAFETY: the host has the tile's features (`select` returned it); buffers are sized above.
                        unsafe {
                            gemm(k, a.as_ptr(), b.as_ptr(), c.as_mut_ptr(), ldc, f, bias.as_ptr(), res.as_ptr(), p0, p1)
                        };
                        for r in 0..MR {
                            for j in 0..ldc {
                                let i = r * ldc + j;
                                if r >= m || j >= n {
                                    assert_eq!(c[i].to_bits(), c0[i].to_bits(), "outside the tile");
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
                                let v = act_f64(act, v);
                                assert!(
                                    (c[i] - v).abs() < 1e-5,
                                    "{tile:?}: flags {flags} {act:?} tile {m}x{n} at ({r}, {j}): {} vs {v}",
                                    c[i]
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// `sgemm_6x16_rows` reading B's rows in place at scattered offsets gives the bits of
    /// `sgemm_6x16` on the packed copy of the same rows, for every flag and tile shape, on
    /// every tile the host has (`k` odd: the AVX-512 tile's last, unpaired step too).
    #[test]
    fn sgemm_6x16_rows_matches_sgemm_6x16_on_the_packed_rows() {
        for (tile, gemm, gemm_rows) in tiles("sgemm_6x16_rows_matches_sgemm_6x16_on_the_packed_rows") {
            let k = 9;
            let ldc = 21;
            let x = lcg(1000, 6);
            let offs: Vec<i64> = (0..k as i64).map(|i| (i * 97 + 13 * (i % 3)) % 950).collect();
            let packed: Vec<f32> = offs.iter().flat_map(|&o| x[o as usize..o as usize + NR].to_vec()).collect();
            let a = lcg(k * MR, 1);
            let bias = lcg(MR, 3);
            let (c0, res) = (lcg(MR * ldc, 4), lcg(MR * ldc, 5));
            for flags in 0..8u32 {
                for (m, n) in [(6, 16), (1, 1), (5, 16), (6, 3)] {
                    let f = flags | Act::Sigmoid.flags() | super::super::tile_flags(m, n);
                    let (mut c1, mut c2) = (c0.clone(), c0.clone());
                    // SAFETY: the tile's features are present (`select`); every buffer is sized for the calls.
                    unsafe {
                        let (bp, rp) = (bias.as_ptr(), res.as_ptr());
                        gemm(k, a.as_ptr(), packed.as_ptr(), c1.as_mut_ptr(), ldc, f, bp, rp, 0.0, 0.0);
                        let c2p = c2.as_mut_ptr();
                        gemm_rows(k, a.as_ptr(), x.as_ptr(), offs.as_ptr(), c2p, ldc, f, bp, rp, 0.0, 0.0);
                    }
                    assert!(
                        c1.iter().zip(&c2).all(|(p, q)| p.to_bits() == q.to_bits()),
                        "{tile:?}: flags {flags} tile {m}x{n}"
                    );
                }
            }
        }
    }

    /// The packer against a plain im2col over random geometries (strides, dilations, pads, row
    /// lengths that strips straddle, partial last strips, K blocks starting mid-channel).
    #[test]
    fn pack_b_im2col_matches_a_plain_im2col() {
        let _ = microkernels_or_skip!();
        let mut seed = 7u32;
        let mut next = |m: usize| {
            seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
            (seed >> 8) as usize % m
        };
        for _ in 0..300 {
            let (kh, kw) = (1 + next(3), 1 + next(3));
            let (sh, sw, dh, dw) = (1 + next(2), 1 + next(3), 1 + next(2), 1 + next(2));
            let (ph, pw) = (next(3), next(3));
            let (ih, iw, c) = (1 + next(12), 1 + next(40), 1 + next(4));
            let (eh, ew) = (dh * (kh - 1) + 1, dw * (kw - 1) + 1);
            if ih + 2 * ph < eh || iw + 2 * pw < ew {
                continue;
            }
            let (oh, ow) = ((ih + 2 * ph - eh) / sh + 1, (iw + 2 * pw - ew) / sw + 1);
            let g = PackGeo { ih, iw, ow, kh, kw, sh, sw, dh, dw, ph, pw };
            let x = lcg(c * ih * iw, 9);
            let k_len = c * kh * kw;
            let (k0, n0) = (next(k_len), next(oh * ow));
            let (kc, nc) = (1 + next(k_len - k0), 1 + next(oh * ow - n0));
            let strips = nc.div_ceil(NR);
            let mut dst = vec![f32::NAN; strips * kc * NR];
            let table = g.table();
            // SAFETY: AVX2 is present (`select`); buffers sized per the contract.
            unsafe { pack_b_im2col(table.as_ptr(), x.as_ptr(), k0, kc, n0, nc, dst.as_mut_ptr()) };
            for s in 0..strips {
                for kk in 0..kc {
                    for l in 0..NR {
                        let (k, p) = (k0 + kk, n0 + s * NR + l);
                        let want = if s * NR + l >= nc {
                            0.0
                        } else {
                            let (ic, ty, tx) = (k / (kh * kw), (k % (kh * kw)) / kw, k % kw);
                            let (oy, ox) = (p / ow, p % ow);
                            let iy = (oy * sh + ty * dh) as isize - ph as isize;
                            let ix = (ox * sw + tx * dw) as isize - pw as isize;
                            if iy < 0 || ix < 0 || iy >= ih as isize || ix >= iw as isize {
                                0.0
                            } else {
                                x[ic * ih * iw + iy as usize * iw + ix as usize]
                            }
                        };
                        let got = dst[(s * kc + kk) * NR + l];
                        assert_eq!(got.to_bits(), want.to_bits(), "{g:?} k0 {k0} kc {kc} n0 {n0} nc {nc}: ({kk}, {l})");
                    }
                }
            }
        }
    }
}
