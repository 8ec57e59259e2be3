//! AVX2/FMA routines for convs whose output maps are small or whose input is read at stride 2:
//! a transposed 6×16 register tile (6 output pixels × 16 output channels, stored
//! channel-major, i.e. transposed, with the fused epilogue) that reads its 6 pixels' inputs in
//! place through an offset table, and an im2col packer for stride-2 columns that deinterleaves
//! contiguous loads instead of gathering.

use std::arch::x86_64::*;

use super::avx2::{activate, pack_b_im2col};
use super::{BIAS, MR, NR};
use super::{PackGeo, RESIDUAL, SmallKernels, with_act};

/// The addresses of this file's kernels; called by `select` only, after it has checked AVX2
/// and FMA (the contracts of [`sgemm_6x16_t`] and [`pack_b_im2col_s2`] hold from there on).
pub(super) fn kernels() -> SmallKernels {
    let t: SgemmTFn = sgemm_6x16_t;
    let p: super::avx2::PackFn = pack_b_im2col_s2;
    let pt: PackTFn = pack_im2col_t;
    SmallKernels {
        sgemm_t: t as usize as u64,
        t_pixels: MR,
        sgemm_t_wide: 0,
        sgemm_t_32: 0,
        pack_b_im2col_s2: p as usize as u64,
        pack_im2col_t: pt as usize as u64,
    }
}

/// [`pack_im2col_t`]'s C signature.
pub(super) type PackTFn = unsafe extern "C" fn(*const i64, *const f32, usize, usize, usize, usize, *mut f32);

/// Packs the im2col rows of output pixels `n0..n0 + nc` pixel-major, for [`sgemm_6x16_t`] and
/// its AVX-512 twins read with `lda = 1`: row `r` (pixel `n0 + r`) holds its `k = cg·kh·kw`
/// taps at `dst[r·k..][..k]` in the weights' order (input channel, kernel row, kernel column),
/// zero where a tap falls in the padding; rows `nc..rows` are zero (the partial pixel tile's
/// unused rows, read but never stored).
///
/// # Safety
/// The host supports AVX2 (checked by `select`, the only place this address is taken). `geo`
/// points at a [`PackGeo::table`]; `x` at `k / (kh·kw)` channels of an `ih × iw` input
/// (channel stride `ih·iw`); the pixels exist (`n0 + nc ≤ oh·ow`, `oh` consistent with the
/// geometry); `nc ≤ rows`; `dst` has room for `rows·k` f32 and does not overlap `x`.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe extern "C" fn pack_im2col_t(
    geo: *const i64,
    x: *const f32,
    k: usize,
    n0: usize,
    nc: usize,
    rows: usize,
    dst: *mut f32,
) {
    let g = PackGeo::read(geo);
    let (plane, cg) = (g.ih * g.iw, k / (g.kh * g.kw));
    for r in 0..nc {
        let p = n0 + r;
        let (oy, ox) = (p / g.ow, p % g.ow);
        let iy0 = (oy * g.sh) as isize - g.ph as isize;
        let ix0 = (ox * g.sw) as isize - g.pw as isize;
        // Kernel columns `kx_lo..kx_hi` fall inside the row (the same for every channel).
        let in_x = |kx: usize| {
            let ix = ix0 + (kx * g.dw) as isize;
            ix >= 0 && ix < g.iw as isize
        };
        let kx_lo = (0..g.kw).find(|&kx| in_x(kx)).unwrap_or(g.kw);
        let kx_hi = (kx_lo..g.kw).find(|&kx| !in_x(kx)).unwrap_or(g.kw);
        let full = kx_lo == 0 && kx_hi == g.kw && g.dw == 1;
        let rows_in = iy0 >= 0 && iy0 + (((g.kh - 1) * g.dh) as isize) < g.ih as isize;
        if full && rows_in && g.kw <= 8 {
            // The whole window inside the input: per channel and kernel row, one run of `kw`.
            // SAFETY: as below, with every tap inside the input.
            unsafe {
                let mut out = dst.add(r * k);
                let base = x.offset(iy0 * g.iw as isize + ix0);
                for ic in 0..cg {
                    let xc = base.add(ic * plane);
                    for ky in 0..g.kh {
                        let src = xc.add(ky * g.dh * g.iw);
                        if g.kw == 3 {
                            *out = *src;
                            *out.add(1) = *src.add(1);
                            *out.add(2) = *src.add(2);
                        } else {
                            std::ptr::copy_nonoverlapping(src, out, g.kw);
                        }
                        out = out.add(g.kw);
                    }
                }
            }
            continue;
        }
        // SAFETY: row `r` lies inside `dst` (`r < nc ≤ rows`), and every read is a tap inside
        // the input (its row and column checked above), per the caller's contract; masked
        // lanes are neither read nor written.
        unsafe {
            let mut out = dst.add(r * k);
            for ic in 0..cg {
                let xc = x.add(ic * plane);
                for ky in 0..g.kh {
                    let iy = iy0 + (ky * g.dh) as isize;
                    if iy < 0 || iy >= g.ih as isize {
                        copy_masked(std::ptr::null(), out, g.kw);
                    } else {
                        let src = xc.add(iy as usize * g.iw);
                        if full {
                            // The common case: the kernel row's taps are one run of the input row.
                            copy_masked(src.offset(ix0), out, g.kw);
                        } else {
                            for kx in 0..g.kw {
                                *out.add(kx) = if (kx_lo..kx_hi).contains(&kx) {
                                    *src.offset(ix0 + (kx * g.dw) as isize)
                                } else {
                                    0.0
                                };
                            }
                        }
                    }
                    out = out.add(g.kw);
                }
            }
        }
    }
    // SAFETY: rows `nc..rows` lie inside `dst` (the caller's contract).
    unsafe { std::ptr::write_bytes(dst.add(nc * k), 0, (rows - nc) * k) };
}

/// Copies `n` f32 from `src` to `dst` (zeros when `src` is null), 8 lanes at a time through
/// masked loads and stores (all lanes on, but the last group's past `n`), which touch no
/// memory past `n`.
///
/// # Safety
/// `src` (unless null) readable and `dst` writable for `n` f32; the host supports AVX2.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn copy_masked(src: *const f32, dst: *mut f32, n: usize) {
    const LANES: [i32; 16] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];
    let mut i = 0;
    // SAFETY: lanes below `n - i` are inside both runs (the caller's contract); the rest are
    // masked off.
    unsafe {
        while i < n {
            let left = (n - i).min(8);
            let mask = _mm256_loadu_si256(LANES.as_ptr().add(8 - left) as *const __m256i);
            let v = if src.is_null() { _mm256_setzero_ps() } else { _mm256_maskload_ps(src.add(i), mask) };
            _mm256_maskstore_ps(dst.add(i), mask, v);
            i += 8;
        }
    }
}

pub(super) type SgemmTFn = unsafe extern "C" fn(
    usize,
    *const f32,
    usize,
    *const i64,
    *const f32,
    *mut f32,
    usize,
    u32,
    *const f32,
    *const f32,
    u64,
);

/// `Y[c][r] = Σ_kk x[offs[r] + kk·lda] · w[kk·16 + c]` for the tile's valid pixels `r < m` and
/// channels `c < n` (`flags` bits 8..16 and 16..24, as [`tile_flags`](super::tile_flags)`(m,
/// n)`), then, in this order and as `flags` says: `+ bias[c]` (BIAS), `+ residual[c·ldy + r]`
/// (RESIDUAL), the activation of kind `flags` bits 24..28 with parameters `p0, p1` (the f32
/// bits of `params`: `p0` in bits 0..32, `p1` in 32..64; passed as an integer so that no vector
/// register holds them across the loop, where LLVM spilled an accumulator instead); stored at
/// `y[c·ldy + r]`. That is the transposed [`sgemm_6x16`](super::avx2::sgemm_6x16) tile with the
/// same epilogue operations in the same order: pixels are the 6-row side (A read in place,
/// row `r` of the tile from input element `offs[r]`, K rows `lda` apart), output channels the
/// 16-wide side (`w`, a panel of 16 channels packed at load), and the store transposes. The
/// sum over `kk` runs in order from 0, in one accumulator per element. ACCUMULATE is not
/// supported (the whole reduction runs in registers). Nothing outside the `n × m` tile of `y`
/// is read or written.
///
/// # Safety
/// The host supports AVX2 and FMA (checked by `select`, the only place this address is
/// taken). `k ≥ 1`; `offs` points at 6 i64 and `x.offset(offs[r] + kk·lda)` is readable for
/// every `r < 6` (also past `m`: point those at a valid pixel) and `kk < k`; `w` at `16·k`
/// readable f32 (columns past `n` may hold anything finite); `y` at an `n × m` tile of row
/// stride `ldy`, writable; `bias` at `n` f32 when BIAS is set and `residual` at an `n × m`
/// tile of stride `ldy` when RESIDUAL is set (otherwise either may be null). `y` does not
/// alias any input.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe extern "C" fn sgemm_6x16_t(
    k: usize,
    x: *const f32,
    lda: usize,
    offs: *const i64,
    w: *const f32,
    y: *mut f32,
    ldy: usize,
    flags: u32,
    bias: *const f32,
    residual: *const f32,
    params: u64,
) {
    let (p0, p1) = (f32::from_bits(params as u32), f32::from_bits((params >> 32) as u32));
    // SAFETY: the caller's contract above.
    unsafe {
        let m = (flags >> 8) & 0xff;
        let acc = if m <= 2 { product_t2(k, x, lda, offs, w) } else { product_t(k, x, lda, offs, w) };
        with_act!(flags, ACT => store_t::<ACT>(acc, y, ldy, flags, bias, residual, p0, p1))
    }
}

/// The 6×16 product of [`sgemm_6x16_t`] as 12 vectors, pixel-major (`[r·2 + half]`).
#[target_feature(enable = "avx2,fma")]
unsafe fn product_t(k: usize, x: *const f32, lda: usize, offs: *const i64, w: *const f32) -> [__m256; 12] {
    let mut acc = [_mm256_setzero_ps(); 12];
    // SAFETY: the caller's contract on `offs`, `x`, `w`.
    unsafe {
        let xr: [*const f32; MR] = std::array::from_fn(|r| x.offset(*offs.add(r) as isize));
        let mut w = w;
        let mut i = 0usize;
        for _ in 0..k {
            // Hints (they never fault): the first and last pixels' input 8 K rows ahead and
            // the weights 16 rows ahead. Measured (opennsfw, 1 thread, same run): strided and
            // 28×28 1×1 convs 10–25% faster, others even.
            _mm_prefetch::<_MM_HINT_T0>(xr[0].wrapping_add(i + 8 * lda).cast());
            _mm_prefetch::<_MM_HINT_T0>(xr[MR - 1].wrapping_add(i + 8 * lda).cast());
            _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add(16 * NR).cast());
            let b0 = _mm256_loadu_ps(w);
            let b1 = _mm256_loadu_ps(w.add(8));
            for r in 0..MR {
                let ar = _mm256_broadcast_ss(&*xr[r].add(i));
                acc[r * 2] = _mm256_fmadd_ps(ar, b0, acc[r * 2]);
                acc[r * 2 + 1] = _mm256_fmadd_ps(ar, b1, acc[r * 2 + 1]);
            }
            w = w.add(NR);
            i += lda;
        }
    }
    acc
}

/// [`product_t`] for tiles of at most 2 pixels (the last tile of 49 = 8·6 + 1 pixels): rows 0
/// and 1 only (the others zero), each sum split into even and odd `kk` chains added at the
/// end, so that 8 independent FMA chains keep the FMA units busy (measured ~3× faster than
/// the 6-row loop on such a tile). A different order from the 6-row tile, fixed per pixel at
/// compile time (whether it falls in a partial last tile), so any unit split gives the same
/// bits.
#[target_feature(enable = "avx2,fma")]
unsafe fn product_t2(k: usize, x: *const f32, lda: usize, offs: *const i64, w: *const f32) -> [__m256; 12] {
    let z = _mm256_setzero_ps();
    let (mut e, mut o) = ([z; 4], [z; 4]);
    // SAFETY: the caller's contract on `offs`, `x`, `w` (rows 0 and 1 of `offs` are valid).
    unsafe {
        let (x0, x1) = (x.offset(*offs as isize), x.offset(*offs.add(1) as isize));
        let step = |acc: &mut [__m256; 4], w: *const f32, i: usize| {
            let (b0, b1) = (_mm256_loadu_ps(w), _mm256_loadu_ps(w.add(8)));
            let (a0, a1) = (_mm256_broadcast_ss(&*x0.add(i)), _mm256_broadcast_ss(&*x1.add(i)));
            acc[0] = _mm256_fmadd_ps(a0, b0, acc[0]);
            acc[1] = _mm256_fmadd_ps(a0, b1, acc[1]);
            acc[2] = _mm256_fmadd_ps(a1, b0, acc[2]);
            acc[3] = _mm256_fmadd_ps(a1, b1, acc[3]);
        };
        let (mut w, mut i) = (w, 0usize);
        for _ in 0..k / 2 {
            step(&mut e, w, i);
            step(&mut o, w.add(NR), i + lda);
            w = w.add(2 * NR);
            i += 2 * lda;
        }
        if k % 2 == 1 {
            step(&mut e, w, i);
        }
    }
    let s = |j: usize| _mm256_add_ps(e[j], o[j]);
    [s(0), s(1), s(2), s(3), z, z, z, z, z, z, z, z]
}

/// 8×8 transpose: lane `j` of output `i` is lane `i` of input `j`.
#[target_feature(enable = "avx2,fma")]
fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
    let t = [
        _mm256_unpacklo_ps(r[0], r[1]),
        _mm256_unpackhi_ps(r[0], r[1]),
        _mm256_unpacklo_ps(r[2], r[3]),
        _mm256_unpackhi_ps(r[2], r[3]),
        _mm256_unpacklo_ps(r[4], r[5]),
        _mm256_unpackhi_ps(r[4], r[5]),
        _mm256_unpacklo_ps(r[6], r[7]),
        _mm256_unpackhi_ps(r[6], r[7]),
    ];
    let s = [
        _mm256_shuffle_ps::<0x44>(t[0], t[2]),
        _mm256_shuffle_ps::<0xEE>(t[0], t[2]),
        _mm256_shuffle_ps::<0x44>(t[1], t[3]),
        _mm256_shuffle_ps::<0xEE>(t[1], t[3]),
        _mm256_shuffle_ps::<0x44>(t[4], t[6]),
        _mm256_shuffle_ps::<0xEE>(t[4], t[6]),
        _mm256_shuffle_ps::<0x44>(t[5], t[7]),
        _mm256_shuffle_ps::<0xEE>(t[5], t[7]),
    ];
    [
        _mm256_permute2f128_ps::<0x20>(s[0], s[4]),
        _mm256_permute2f128_ps::<0x20>(s[1], s[5]),
        _mm256_permute2f128_ps::<0x20>(s[2], s[6]),
        _mm256_permute2f128_ps::<0x20>(s[3], s[7]),
        _mm256_permute2f128_ps::<0x31>(s[0], s[4]),
        _mm256_permute2f128_ps::<0x31>(s[1], s[5]),
        _mm256_permute2f128_ps::<0x31>(s[2], s[6]),
        _mm256_permute2f128_ps::<0x31>(s[3], s[7]),
    ]
}

/// The epilogue of [`sgemm_6x16_t`] with the activation of kind `ACT`: bias on the
/// pixel-major tile, transpose to channel-major (8 lanes per channel, pixels 6 and 7 zero),
/// then residual and activation per channel, stored 6 (or `m`) pixels at a time.
///
/// # Safety
/// The contract of [`sgemm_6x16_t`] on `y`, `bias` and `residual`.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn store_t<const ACT: u32>(
    mut acc: [__m256; 12],
    y: *mut f32,
    ldy: usize,
    flags: u32,
    bias: *const f32,
    residual: *const f32,
    p0: f32,
    p1: f32,
) {
    let m = ((flags >> 8) & 0xff) as usize;
    let n = ((flags >> 16) & 0xff) as usize;
    let (p0, p1) = (_mm256_set1_ps(p0), _mm256_set1_ps(p1));
    // SAFETY: the caller's contract: `n` biases, `n × m` tiles at `y` and `residual`.
    unsafe {
        if flags & BIAS != 0 {
            let mut b16 = [0f32; NR];
            let bp = if n == NR {
                bias
            } else {
                for (c, v) in b16.iter_mut().enumerate().take(n) {
                    *v = *bias.add(c);
                }
                b16.as_ptr()
            };
            let bv = [_mm256_loadu_ps(bp), _mm256_loadu_ps(bp.add(8))];
            for r in 0..MR {
                for h in 0..2 {
                    acc[r * 2 + h] = _mm256_add_ps(acc[r * 2 + h], bv[h]);
                }
            }
        }
        let z = _mm256_setzero_ps();
        let halves = [
            transpose8([acc[0], acc[2], acc[4], acc[6], acc[8], acc[10], z, z]),
            transpose8([acc[1], acc[3], acc[5], acc[7], acc[9], acc[11], z, z]),
        ];
        if m == MR && n == NR {
            for c in 0..NR {
                let mut v = halves[c / 8][c % 8];
                if flags & RESIDUAL != 0 {
                    let rp = residual.add(c * ldy);
                    let lo = _mm_loadu_ps(rp);
                    let hi = _mm_castpd_ps(_mm_load_sd(rp.add(4).cast()));
                    v = _mm256_add_ps(v, _mm256_insertf128_ps::<1>(_mm256_castps128_ps256(lo), hi));
                }
                let v = activate::<ACT>(v, p0, p1);
                let yp = y.add(c * ldy);
                _mm_storeu_ps(yp, _mm256_castps256_ps128(v));
                _mm_store_sd(yp.add(4).cast(), _mm_castps_pd(_mm256_extractf128_ps::<1>(v)));
            }
            return;
        }
        // A partial tile: residual in and results out through a row on the stack.
        let mut row = [0f32; 8];
        for c in 0..n {
            let mut v = halves[c / 8][c % 8];
            if flags & RESIDUAL != 0 {
                for (r, e) in row.iter_mut().enumerate().take(m) {
                    *e = *residual.add(c * ldy + r);
                }
                v = _mm256_add_ps(v, _mm256_loadu_ps(row.as_ptr()));
            }
            _mm256_storeu_ps(row.as_mut_ptr(), activate::<ACT>(v, p0, p1));
            for (r, &e) in row.iter().enumerate().take(m) {
                *y.add(c * ldy + r) = e;
            }
        }
    }
}

/// [`pack_b_im2col`] for convs with column stride 2 and column dilation 1: a strip row whose
/// 16 pixels lie on one output row reads its 31 input columns as four contiguous (masked, at
/// the row's ends) loads and keeps the even ones, instead of two 8-lane gathers; strips that
/// straddle output rows go to [`pack_b_im2col`]. Same output, same contract.
///
/// # Safety
/// As [`pack_b_im2col`], and the geometry has `sw = 2`, `dw = 1`.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe extern "C" fn pack_b_im2col_s2(
    geo: *const i64,
    x: *const f32,
    k0: usize,
    kc: usize,
    n0: usize,
    nc: usize,
    dst: *mut f32,
) {
    let g = PackGeo::read(geo);
    debug_assert!(g.sw == 2 && g.dw == 1);
    let taps = g.kh * g.kw;
    let plane = g.ih * g.iw;
    let n_strips = nc.div_ceil(NR);
    const CHUNK: usize = 16;
    let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for s0 in (0..n_strips).step_by(CHUNK) {
        let chunk = (n_strips - s0).min(CHUNK);
        // Per strip of the chunk: Some((oy, ox0)) when its 16 lanes are one output row.
        let mut one_row = [None; CHUNK];
        for (c, slot) in one_row.iter_mut().enumerate().take(chunk) {
            let first = (s0 + c) * NR;
            let lanes = (nc - first).min(NR);
            let p = n0 + first;
            let (oy, ox) = (p / g.ow, p % g.ow);
            if lanes == NR && ox + NR <= g.ow {
                *slot = Some((oy, ox));
            } else {
                // SAFETY: one strip of the block (the caller's contract covers it).
                unsafe { pack_b_im2col(geo, x, k0, kc, p, lanes, dst.add((s0 + c) * kc * NR)) };
            }
        }
        let (mut ic, mut ky, mut kx) = (k0 / taps, (k0 % taps) / g.kw, k0 % g.kw);
        for kk in 0..kc {
            // SAFETY: reads are masked to columns `0..iw` of rows `0..ih` of channel `ic`;
            // writes are the strips' rows inside `dst` (the caller's contract).
            unsafe {
                let xc = x.add(ic * plane);
                for (c, slot) in one_row.iter().enumerate().take(chunk) {
                    let Some((oy, ox0)) = *slot else { continue };
                    let out = dst.add(((s0 + c) * kc + kk) * NR);
                    let iy = (oy * g.sh + ky * g.dh) as isize - g.ph as isize;
                    if iy < 0 || iy >= g.ih as isize {
                        _mm256_storeu_ps(out, _mm256_setzero_ps());
                        _mm256_storeu_ps(out.add(8), _mm256_setzero_ps());
                        continue;
                    }
                    let ix0 = (ox0 * 2 + kx) as isize - g.pw as isize;
                    let row = xc.add(iy as usize * g.iw);
                    let v: [__m256; 4] = if ix0 >= 0 && ix0 + 32 <= g.iw as isize {
                        let p = row.offset(ix0);
                        [
                            _mm256_loadu_ps(p),
                            _mm256_loadu_ps(p.add(8)),
                            _mm256_loadu_ps(p.add(16)),
                            _mm256_loadu_ps(p.add(24)),
                        ]
                    } else {
                        // Lane `l` of load `j` is column `ix0 + 8j + l`: valid in `0..iw`.
                        std::array::from_fn(|j| {
                            let base = ix0 + 8 * j as isize;
                            let col = _mm256_add_epi32(idx, _mm256_set1_epi32(base as i32));
                            let ok = _mm256_andnot_si256(
                                _mm256_cmpgt_epi32(_mm256_setzero_si256(), col),
                                _mm256_cmpgt_epi32(_mm256_set1_epi32(g.iw as i32), col),
                            );
                            if _mm256_testz_si256(ok, ok) != 0 {
                                _mm256_setzero_ps()
                            } else {
                                // Masked-out lanes are not accessed, so the address may lie
                                // outside the row.
                                _mm256_maskload_ps(row.wrapping_offset(base), ok)
                            }
                        })
                    };
                    _mm256_storeu_ps(out, evens(v[0], v[1]));
                    _mm256_storeu_ps(out.add(8), evens(v[2], v[3]));
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

/// The even lanes of the 16-lane `(a, b)`, in order.
#[target_feature(enable = "avx2,fma")]
fn evens(a: __m256, b: __m256) -> __m256 {
    // Per 128-bit lane: [a0 a2 b0 b2 | a4 a6 b4 b6]; then reorder the 64-bit pairs.
    let s = _mm256_shuffle_ps::<0x88>(a, b);
    _mm256_castpd_ps(_mm256_permute4x64_pd::<0xD8>(_mm256_castps_pd(s)))
}

#[cfg(test)]
mod tests {
    use super::super::{Act, lcg, tile_flags};
    use super::*;

    /// The epilogue in scalar f32, operation for operation (exact except Sigmoid's and Swish's
    /// `exp`).
    fn act_f32(act: Option<Act>, v: f32) -> f32 {
        match act {
            None => v,
            Some(Act::Clamp { lo, hi }) => v.max(lo).min(hi),
            Some(Act::LeakyRelu { alpha }) => {
                if v < 0.0 {
                    v * alpha
                } else {
                    v
                }
            }
            Some(Act::HardSwish) => v * (v * (1.0 / 6.0) + 0.5).clamp(0.0, 1.0),
            Some(Act::HardSigmoid { alpha, beta }) => (v * alpha + beta).clamp(0.0, 1.0),
            Some(Act::Sigmoid) => (1.0 / (1.0 + f64::from(-v).exp())) as f32,
            Some(Act::Swish { beta }) => (f64::from(v) / (1.0 + f64::from(-(beta * v)).exp())) as f32,
        }
    }

    /// On every f32 tile the host has: its transposed tile (`small.sgemm_t`, 6 or 12 pixels)
    /// against the same sums in scalar f32 (`mul_add`, i.e. the same fused multiply-adds in the
    /// tile's documented order: one chain from `kk = 0`, or even and odd `kk` in two chains
    /// then added) followed by the epilogue in scalar f32, for every tile shape, epilogue flag
    /// and activation; nothing outside the tile is written. Bits must match except through
    /// Sigmoid and Swish (the `exp` polynomial against f64): 1e-5 absolute (values below 6,
    /// f32 rounding 2^-24). k = 11 and 12: an odd and an even count (the split chains).
    #[test]
    fn transposed_tiles_give_their_documented_sums_and_epilogue() {
        for mk in super::super::each_tile_or_skip("transposed_tiles_give_their_documented_sums_and_epilogue") {
            // SAFETY: the address `select` returned for this host, with this signature.
            let gemm_t = unsafe { std::mem::transmute::<usize, SgemmTFn>(mk.small.sgemm_t as usize) };
            let pixels = mk.small.t_pixels;
            // Which tiles split their chains: the AVX2 tile's of ≤ 2 pixels (`product_t2`), the
            // AVX-512 tile's of ≤ 6 (`avx512::sgemm_12x16_t`).
            let split = |m: usize| if pixels == MR { m <= 2 } else { m <= MR };
            for k in [11, 12] {
                transposed_tile_case(k, pixels, NR, gemm_t, split);
            }
            // The wide tile (6 pixels × 64 channels), where the tile set has one: one chain
            // per element in every tile.
            if mk.small.sgemm_t_wide != 0 {
                // SAFETY: as above.
                let wide = unsafe { std::mem::transmute::<usize, SgemmTFn>(mk.small.sgemm_t_wide as usize) };
                for k in [11, 12] {
                    transposed_tile_case(k, MR, super::super::T_WIDE, wide, |_| false);
                }
            }
            // The two-panel tile (12 pixels × 32 channels), where the tile set has one: one
            // chain per element in every tile, partial ones too.
            if mk.small.sgemm_t_32 != 0 {
                // SAFETY: as above.
                let t32 = unsafe { std::mem::transmute::<usize, SgemmTFn>(mk.small.sgemm_t_32 as usize) };
                for k in [11, 12] {
                    transposed_tile_case(k, pixels, 2 * NR, t32, |_| false);
                }
            }
        }
    }

    /// One tile of `pixels` pixels × `tc` channels (16; 64 for the wide tile and 32 for the
    /// two-panel one, which always store all their channels) against the scalar sums.
    fn transposed_tile_case(k: usize, pixels: usize, tc: usize, sgemm_t: SgemmTFn, split: impl Fn(usize) -> bool) {
        let (lda, ldy) = (37, 23);
        let x = lcg(lda * k + 40, 1);
        let offs: Vec<i64> = [0, 1, 5, 9, 30, 31, 2, 3, 17, 18, 19, 36][..pixels].to_vec();
        let w = lcg(k * tc, 2);
        let bias: Vec<f32> = lcg(tc, 3).iter().map(|v| v * 8.0).collect();
        let res = lcg(tc * ldy, 5);
        let y0 = lcg(tc * ldy, 4);
        // Pixel `j`, channel `c`: Σ x[offs[j] + kk·lda]·w[kk·tc + c] in the tile's order.
        let sum = |j: usize, c: usize, split: bool| {
            let term = |kk: usize| (x[offs[j] as usize + kk * lda], w[kk * tc + c]);
            let chain = |kks: &mut dyn Iterator<Item = usize>| {
                kks.fold(0f32, |acc, kk| {
                    let (a, b) = term(kk);
                    a.mul_add(b, acc)
                })
            };
            if split { chain(&mut (0..k).step_by(2)) + chain(&mut (1..k).step_by(2)) } else { chain(&mut (0..k)) }
        };
        let acts = [
            None,
            Some(Act::Clamp { lo: 0.0, hi: f32::INFINITY }),
            Some(Act::Clamp { lo: -0.2, hi: 0.3 }),
            Some(Act::LeakyRelu { alpha: 0.1 }),
            Some(Act::HardSigmoid { alpha: 0.2, beta: 0.5 }),
            Some(Act::HardSwish),
            Some(Act::Sigmoid),
            Some(Act::Swish { beta: 1.702 }),
        ];
        let mut shapes = vec![(6, 16), (1, 16), (2, 7), (6, 5), (3, 9), (1, 1)];
        if pixels > MR {
            shapes.extend([(12, 16), (7, 3), (9, 16), (12, 1), (11, 11)]);
        }
        if tc > NR {
            shapes = if pixels > MR {
                vec![(12, tc), (1, tc), (6, tc), (7, tc), (11, tc)]
            } else {
                vec![(6, tc), (1, tc), (2, tc), (5, tc)]
            };
        }
        for flags in [0, BIAS, RESIDUAL, BIAS | RESIDUAL] {
            for act in acts {
                for &(m, n) in &shapes {
                    let f = flags | act.map_or(0, Act::flags) | tile_flags(m, n.min(NR));
                    let (p0, p1) = act.map_or((0.0, 0.0), Act::params);
                    let params = u64::from(p0.to_bits()) | (u64::from(p1.to_bits()) << 32);
                    let mut got = y0.clone();
                    // SAFETY: the tile's CPU features present (`select`); buffers sized for the call.
                    unsafe {
                        let (xp, op, wp, bp, rp) = (x.as_ptr(), offs.as_ptr(), w.as_ptr(), bias.as_ptr(), res.as_ptr());
                        sgemm_t(k, xp, lda, op, wp, got.as_mut_ptr(), ldy, f, bp, rp, params);
                    }
                    for (c, &bias_c) in bias.iter().enumerate() {
                        for j in 0..ldy {
                            let i = c * ldy + j;
                            if c >= n || j >= m {
                                assert_eq!(got[i].to_bits(), y0[i].to_bits(), "outside the tile");
                                continue;
                            }
                            let mut v = sum(j, c, split(m));
                            if flags & BIAS != 0 {
                                v += bias_c;
                            }
                            if flags & RESIDUAL != 0 {
                                v += res[i];
                            }
                            let v = act_f32(act, v);
                            let ok = if matches!(act, Some(Act::Sigmoid | Act::Swish { .. })) {
                                (got[i] - v).abs() <= 1e-5
                            } else {
                                got[i].to_bits() == v.to_bits()
                            };
                            assert!(
                                ok,
                                "{pixels}-pixel tile, k {k}, flags {flags} {act:?} tile {m}x{n} at ({c}, {j}): {} vs {v}",
                                got[i]
                            );
                        }
                    }
                }
            }
        }
    }

    /// The stride-2 packer gives the bits of the generic one over random geometries (pads,
    /// kernel sizes, row dilation, rows that strips straddle or not, partial strips, K blocks
    /// starting mid-channel, inputs narrower than a strip's 31 columns).
    #[test]
    fn pack_b_im2col_s2_matches_the_generic_packer() {
        let _ = microkernels_or_skip!();
        let mut seed = 11u32;
        let mut next = |m: usize| {
            seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
            (seed >> 8) as usize % m
        };
        let mut cases = 0;
        while cases < 300 {
            let (kh, kw) = (1 + next(7), 1 + next(7));
            let (sh, dh) = (1 + next(2), 1 + next(2));
            let (ph, pw) = (next(4), next(4));
            let c = 1 + next(3);
            // Output widths that are multiples of 16 (strips on one row) half the time.
            let iw = if next(2) == 0 { 64 + next(3) * 32 - 1 + next(2) } else { 1 + next(70) };
            let ih = 1 + next(9);
            let eh = dh * (kh - 1) + 1;
            if ih + 2 * ph < eh || iw + 2 * pw < kw {
                continue;
            }
            cases += 1;
            let (oh, ow) = ((ih + 2 * ph - eh) / sh + 1, (iw + 2 * pw - kw) / 2 + 1);
            let g = PackGeo { ih, iw, ow, kh, kw, sh, sw: 2, dh, dw: 1, ph, pw };
            let x = lcg(c * ih * iw, 9);
            let k_len = c * kh * kw;
            let (k0, n0) = (next(k_len), next(oh * ow));
            let (kc, nc) = (1 + next(k_len - k0), 1 + next(oh * ow - n0));
            let len = nc.div_ceil(NR) * kc * NR;
            let (mut want, mut got) = (vec![f32::NAN; len], vec![f32::NAN; len]);
            let t = g.table();
            // SAFETY: AVX2 present (`select`); buffers sized per the contract.
            unsafe {
                pack_b_im2col(t.as_ptr(), x.as_ptr(), k0, kc, n0, nc, want.as_mut_ptr());
                pack_b_im2col_s2(t.as_ptr(), x.as_ptr(), k0, kc, n0, nc, got.as_mut_ptr());
            }
            assert!(
                want.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{g:?} k0 {k0} kc {kc} n0 {n0} nc {nc}"
            );
        }
    }
}
