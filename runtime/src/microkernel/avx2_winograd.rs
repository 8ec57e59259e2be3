//! AVX2/FMA Winograd transforms for F(2×2,3×3) and F(4×4,3×3) (α = 4 or 6 input tile, m = 2
//! or 4 output tile), vectorized across 8 tiles: lane `l` of every vector is tile `l` of a
//! group of 8 consecutive tiles. The input transform writes `V = Bᵀ d B` straight into the
//! packed-B strips the 6×16 GEMM microkernel reads; the output transform reads the GEMM's
//! `M` and stores `Y = Aᵀ M A` with the fused epilogue (bias, residual, activation) to NCHW.
//!
//! Each output element's arithmetic depends only on its tile (never on its lane or on which
//! other tiles share a call), so any blocking of tiles into calls gives the same bits.
//!
//! Transform matrices (Lavin & Gray; F(4,3) on the points 0, ±1, ±2, ∞):
//! - F(2,3): `Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1]`, `Aᵀ = [1 1 1 0; 0 1 −1 −1]`.
//! - F(4,3): `Bᵀ = [4 0 −5 0 1 0; 0 −4 −4 1 1 0; 0 4 −4 −1 1 0; 0 −2 −1 2 1 0; 0 2 −1 −2 1 0;
//!   0 4 0 −5 0 1]`, `Aᵀ = [1 1 1 1 1 0; 0 1 −1 2 −2 0; 0 1 1 4 4 0; 0 1 −1 8 −8 1]`.
//!
//! The `G` of each variant (the weight transform) is applied at load, in f64
//! (`codegen::conv::winograd`).

// The transforms index several arrays by the same tile coordinates (ξ, row, column).
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use super::avx2::activate;
use super::{BIAS, NR, RESIDUAL, with_act};

pub(super) type InputFn = unsafe extern "C" fn(*const i64, *const f32, usize, usize, *mut f32);
pub(super) type OutputFn =
    unsafe extern "C" fn(*const i64, *const f32, usize, usize, usize, *mut f32, *const f32, *const f32, u32, f32, f32);

/// Lanes per vector (tiles per group).
const L: usize = 8;

/// Input transform of F(2×2,3×3); see [`input`].
///
/// # Safety
/// As [`input`].
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe extern "C" fn winograd_input_f2(
    geo: *const i64,
    x: *const f32,
    tile0: usize,
    ntiles: usize,
    v: *mut f32,
) {
    // SAFETY: forwarded (the same contract).
    unsafe { input::<4, 2>(geo, x, tile0, ntiles, v) }
}

/// Input transform of F(4×4,3×3); see [`input`].
///
/// # Safety
/// As [`input`].
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe extern "C" fn winograd_input_f4(
    geo: *const i64,
    x: *const f32,
    tile0: usize,
    ntiles: usize,
    v: *mut f32,
) {
    // SAFETY: forwarded (the same contract).
    unsafe { input::<6, 4>(geo, x, tile0, ntiles, v) }
}

/// Output transform of F(2×2,3×3); see [`output`].
///
/// # Safety
/// As [`output`].
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe extern "C" fn winograd_output_f2(
    geo: *const i64,
    mb: *const f32,
    tile0: usize,
    ntiles: usize,
    mc: usize,
    y: *mut f32,
    bias: *const f32,
    res: *const f32,
    flags: u32,
    p0: f32,
    p1: f32,
) {
    // SAFETY: forwarded (the same contract).
    unsafe { output::<4, 2>(geo, mb, tile0, ntiles, mc, y, bias, res, flags, p0, p1) }
}

/// Output transform of F(4×4,3×3); see [`output`].
///
/// # Safety
/// As [`output`].
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe extern "C" fn winograd_output_f4(
    geo: *const i64,
    mb: *const f32,
    tile0: usize,
    ntiles: usize,
    mc: usize,
    y: *mut f32,
    bias: *const f32,
    res: *const f32,
    flags: u32,
    p0: f32,
    p1: f32,
) {
    // SAFETY: forwarded (the same contract).
    unsafe { output::<6, 4>(geo, mb, tile0, ntiles, mc, y, bias, res, flags, p0, p1) }
}

/// `Bᵀ d` on one column of `A` vectors (the first `A` entries of `d`), in place.
#[target_feature(enable = "avx2,fma")]
fn bt<const A: usize>(d: &mut [__m256; 6]) {
    if A == 4 {
        let [d0, d1, d2, d3] = [d[0], d[1], d[2], d[3]];
        d[0] = _mm256_sub_ps(d0, d2);
        d[1] = _mm256_add_ps(d1, d2);
        d[2] = _mm256_sub_ps(d2, d1);
        d[3] = _mm256_sub_ps(d1, d3);
    } else {
        let [d0, d1, d2, d3, d4, d5] = *d;
        let (c4, c2) = (_mm256_set1_ps(4.0), _mm256_set1_ps(2.0));
        let (m4, m5) = (_mm256_set1_ps(-4.0), _mm256_set1_ps(-5.0));
        d[0] = _mm256_fmadd_ps(c4, d0, _mm256_fmadd_ps(m5, d2, d4));
        d[1] = _mm256_fmadd_ps(m4, _mm256_add_ps(d1, d2), _mm256_add_ps(d3, d4));
        d[2] = _mm256_fmadd_ps(c4, _mm256_sub_ps(d1, d2), _mm256_sub_ps(d4, d3));
        let (e, f) = (_mm256_sub_ps(d3, d1), _mm256_sub_ps(d4, d2));
        d[3] = _mm256_fmadd_ps(c2, e, f);
        d[4] = _mm256_fnmadd_ps(c2, e, f);
        d[5] = _mm256_fmadd_ps(c4, d1, _mm256_fmadd_ps(m5, d3, d5));
    }
}

/// `Aᵀ v` of `A` vectors into `M` vectors (the first `M` entries of the result).
#[target_feature(enable = "avx2,fma")]
fn at<const A: usize>(v: &[__m256; 6]) -> [__m256; 4] {
    let z = _mm256_setzero_ps();
    if A == 4 {
        let o0 = _mm256_add_ps(_mm256_add_ps(v[0], v[1]), v[2]);
        let o1 = _mm256_sub_ps(_mm256_sub_ps(v[1], v[2]), v[3]);
        [o0, o1, z, z]
    } else {
        let (s12, d12) = (_mm256_add_ps(v[1], v[2]), _mm256_sub_ps(v[1], v[2]));
        let (s34, d34) = (_mm256_add_ps(v[3], v[4]), _mm256_sub_ps(v[3], v[4]));
        let o0 = _mm256_add_ps(_mm256_add_ps(v[0], s12), s34);
        let o1 = _mm256_fmadd_ps(_mm256_set1_ps(2.0), d34, d12);
        let o2 = _mm256_fmadd_ps(_mm256_set1_ps(4.0), s34, s12);
        let o3 = _mm256_add_ps(_mm256_fmadd_ps(_mm256_set1_ps(8.0), d34, d12), v[5]);
        [o0, o1, o2, o3]
    }
}

/// Packs the Winograd input transform of tiles `tile0..tile0+ntiles` (row-major over the
/// `tw`-wide tile grid; tile `(ty, tx)` reads the `A × A` patch at input row `ty·M − ph`,
/// column `tx·M − pw`, zero outside the input) for every input channel into GEMM B strips:
/// `v[ξ·vstride + (s·c + ic)·16 + l]` is transform element `ξ` (row-major in `A × A`) of channel
/// `ic`, tile `tile0 + s·16 + l`, for the strips `s < ntiles.div_ceil(16)`; lanes of the last
/// strip past `ntiles` are zero.
///
/// `geo` = `[ih, iw, ph, pw, tw, c, vstride]` (`i64`).
///
/// # Safety
/// The host supports AVX2 and FMA (checked by `select`, the only place this address is
/// taken). `geo` points at the table; `x` at `c` readable planes of `ih × iw` f32, with
/// `iw + pw + 48 < 2³¹` (column indices are `i32` lanes); the tiles lie in the grid of the
/// `oh × ow` output (`oh = ih + ph + pb − 2` rows, `tw = ow.div_ceil(M)`);
/// `ntiles.div_ceil(16)·c·16 ≤ vstride`; `v` has room for `A²·vstride` f32 and does not
/// overlap `x`.
#[target_feature(enable = "avx2,fma")]
unsafe fn input<const A: usize, const M: usize>(
    geo: *const i64,
    x: *const f32,
    tile0: usize,
    ntiles: usize,
    v: *mut f32,
) {
    // SAFETY: `geo` holds 7 values (the caller's contract).
    let g = |i: usize| unsafe { *geo.add(i) } as usize;
    let (ih, iw, ph, pw, tw, c, vstride) = (g(0), g(1), g(2), g(3), g(4), g(5), g(6));
    let plane = ih * iw;
    let zero = _mm256_setzero_ps();
    let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    // Chunks of 8 floats a row of 8 patches spans: `7·M + A` floats.
    let chunks = if M == 2 { 3 } else { 5 };
    for grp in 0..ntiles.div_ceil(L) {
        let (s, half) = (grp / 2, grp % 2);
        let first = grp * L;
        let n = (ntiles - first).min(L);
        // Runs of lanes whose tiles share a tile row: (first lane, lanes, tile row, tile column
        // of lane 0 as if the run extended to it).
        let mut runs = [(0usize, 0usize, 0usize, 0isize); L];
        let mut n_runs = 0;
        for l in 0..n {
            let t = tile0 + first + l;
            let (ty, tx) = (t / tw, t % tw);
            if n_runs > 0 && runs[n_runs - 1].2 == ty {
                runs[n_runs - 1].1 += 1;
            } else {
                runs[n_runs] = (l, 1, ty, tx as isize - l as isize);
                n_runs += 1;
            }
        }
        // Per run: the first input column of lane 0's patch, the lanes it owns, the chunks'
        // in-range masks, and whether every tap lies inside the input (plain loads).
        let mut run_x0 = [0isize; L];
        let mut run_lanes = [zero; L];
        let mut run_masks = [[_mm256_setzero_si256(); 5]; L];
        let mut run_full = [false; L];
        for r in 0..n_runs {
            let (l0, cnt, ty, tx0) = runs[r];
            let x0 = tx0 * M as isize - pw as isize;
            run_x0[r] = x0;
            let (lo, hi) = (_mm256_set1_epi32(l0 as i32 - 1), _mm256_set1_epi32((l0 + cnt) as i32));
            run_lanes[r] =
                _mm256_castsi256_ps(_mm256_and_si256(_mm256_cmpgt_epi32(lane, lo), _mm256_cmpgt_epi32(hi, lane)));
            for (k, mk) in run_masks[r].iter_mut().enumerate().take(chunks) {
                let col = _mm256_add_epi32(lane, _mm256_set1_epi32((x0 + 8 * k as isize) as i32));
                *mk = _mm256_andnot_si256(
                    _mm256_cmpgt_epi32(_mm256_setzero_si256(), col),
                    _mm256_cmpgt_epi32(_mm256_set1_epi32(iw as i32), col),
                );
            }
            let y0 = (ty * M) as isize - ph as isize;
            run_full[r] = n_runs == 1
                && cnt == L
                && y0 >= 0
                && y0 as usize + A <= ih
                && x0 >= 0
                && x0 as usize + (L - 1) * M + A <= iw;
        }
        for ic in 0..c {
            // SAFETY: channel `ic < c` of `x`.
            let xc = unsafe { x.add(ic * plane) };
            // `t[i][cc]`: `d B` (Bᵀ applied along each patch row), row by row as it is loaded.
            let mut t = [[zero; 6]; 6];
            for i in 0..A {
                // Row `i` of the 8 patches, blended run by run in registers (a blend into
                // memory compiles to masked stores, which are slow on AMD cores).
                let mut acc = [zero; 6];
                for r in 0..n_runs {
                    let iy = (runs[r].2 * M) as isize - ph as isize + i as isize;
                    if iy < 0 || iy >= ih as isize {
                        continue;
                    }
                    let p = xc.wrapping_offset(iy * iw as isize + run_x0[r]);
                    // The same row segment two channels ahead: a hint (it never faults); the
                    // segments of one unit are short rows of many planes, which the hardware
                    // prefetcher does not follow.
                    let ahead = p.wrapping_add(2 * plane);
                    for k in (0..chunks * 8).step_by(16) {
                        _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(k).cast());
                    }
                    // SAFETY: with `run_full`, the 8 patches' row `i` lies inside the plane;
                    // otherwise only in-range columns of row `iy` are read (masked-off lanes
                    // of `vmaskmovps` are not accessed).
                    let row = unsafe {
                        if run_full[r] {
                            load_row::<M>(p)
                        } else {
                            let mut a = [zero; 5];
                            for k in 0..chunks {
                                a[k] = _mm256_maskload_ps(p.wrapping_add(8 * k), run_masks[r][k]);
                            }
                            deinterleave::<M>(a)
                        }
                    };
                    for j in 0..A {
                        acc[j] = if run_full[r] { row[j] } else { _mm256_blendv_ps(acc[j], row[j], run_lanes[r]) };
                    }
                }
                bt::<A>(&mut acc);
                t[i] = acc;
            }
            // Then Bᵀ along each column: V[r][cc].
            for cc in 0..A {
                let mut col = [zero; 6];
                for i in 0..A {
                    col[i] = t[i][cc];
                }
                bt::<A>(&mut col);
                for (r, &val) in col.iter().enumerate().take(A) {
                    let xi = r * A + cc;
                    // SAFETY: `xi < A²`, `s < ns`, `ic < c`: inside `v` (the caller's contract).
                    unsafe { _mm256_storeu_ps(v.add(xi * vstride + (s * c + ic) * NR + half * L), val) };
                }
            }
        }
    }
    // The last strip's upper half, when no tile reaches it, is zero.
    if !ntiles.is_multiple_of(NR) && ntiles % NR <= L {
        let s = ntiles / NR;
        for xi in 0..A * A {
            for ic in 0..c {
                // SAFETY: as above.
                unsafe { _mm256_storeu_ps(v.add(xi * vstride + (s * c + ic) * NR + L), zero) };
            }
        }
    }
}

/// Row `i` of 8 adjacent tiles' patches from `p` (the first tile's first column): element
/// `j` of the result, lane `l`, is `p[l·M + j]` for `j < M + 2` (see [`deinterleave`]).
///
/// # Safety
/// `p` is readable for `7·M + M + 2` f32.
#[target_feature(enable = "avx2,fma")]
unsafe fn load_row<const M: usize>(p: *const f32) -> [__m256; 6] {
    // SAFETY: reads `p[0..8·M + 2]` (the caller's contract).
    unsafe {
        let z = _mm256_setzero_ps();
        let tail = _mm256_castps128_ps256(_mm_castpd_ps(_mm_load_sd(p.add(8 * M).cast())));
        if M == 2 {
            deinterleave::<M>([_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)), tail, z, z])
        } else {
            let a = |k: usize| _mm256_loadu_ps(p.add(8 * k));
            deinterleave::<M>([a(0), a(1), a(2), a(3), tail])
        }
    }
}

/// The patch-row elements of 8 adjacent tiles from the row segment `a` (40 floats, of which
/// the first `8·M + 2` are used): element `j < M + 2` of the result, lane `l`, is
/// `a[l·M + j]`, by in-register deinterleaving (the values a gather would read, in lanes).
#[target_feature(enable = "avx2,fma")]
fn deinterleave<const M: usize>(a: [__m256; 5]) -> [__m256; 6] {
    let z = _mm256_setzero_ps();
    // Lanes 1..8 of `v` followed by `next`: the vector one tile further right.
    let shift = |v: __m256, next: __m256| {
        let r = _mm256_permutevar8x32_ps(v, _mm256_setr_epi32(1, 2, 3, 4, 5, 6, 7, 0));
        _mm256_blend_ps::<0x80>(r, next)
    };
    // Lane `k` of `v` in every lane.
    let bcast = |v: __m256, k: i32| _mm256_permutevar8x32_ps(v, _mm256_set1_epi32(k));
    if M == 2 {
        let (a0, a1) = (a[0], a[1]);
        let ev = _mm256_castpd_ps(_mm256_permute4x64_pd::<0xD8>(_mm256_castps_pd(_mm256_shuffle_ps::<0x88>(a0, a1))));
        let od = _mm256_castpd_ps(_mm256_permute4x64_pd::<0xD8>(_mm256_castps_pd(_mm256_shuffle_ps::<0xDD>(a0, a1))));
        [ev, od, shift(ev, bcast(a[2], 0)), shift(od, bcast(a[2], 1)), z, z]
    } else {
        let b0 = _mm256_permute2f128_ps::<0x20>(a[0], a[2]);
        let b1 = _mm256_permute2f128_ps::<0x31>(a[0], a[2]);
        let b2 = _mm256_permute2f128_ps::<0x20>(a[1], a[3]);
        let b3 = _mm256_permute2f128_ps::<0x31>(a[1], a[3]);
        let u0 = _mm256_unpacklo_ps(b0, b1);
        let u1 = _mm256_unpackhi_ps(b0, b1);
        let u2 = _mm256_unpacklo_ps(b2, b3);
        let u3 = _mm256_unpackhi_ps(b2, b3);
        let d0 = _mm256_shuffle_ps::<0x44>(u0, u2);
        let d1 = _mm256_shuffle_ps::<0xEE>(u0, u2);
        let d2 = _mm256_shuffle_ps::<0x44>(u1, u3);
        let d3 = _mm256_shuffle_ps::<0xEE>(u1, u3);
        [d0, d1, d2, d3, shift(d0, bcast(a[4], 0)), shift(d1, bcast(a[4], 1))]
    }
}

/// Stores the Winograd output transform of GEMM results with the fused epilogue: for output
/// channels `ml < mc` and tiles `tile0..tile0+ntiles` (the tile grid of [`input`]), `Y = Aᵀ
/// M A` of `M[ξ] = mb[(ξ·mrows + ml)·ns·16 + t − tile0]`, then, as `flags` says, `+ bias[ml]`
/// (BIAS), `+ res[…]` (RESIDUAL, the element at the output position) and the activation of
/// kind `flags` bits 24..28 with parameters `p0, p1` (as `sgemm_6x16`), stored at
/// `y[ml·oh·ow + oy·ow + ox]` for the tile's pixels inside the `oh × ow` output.
///
/// `geo` = `[oh, ow, tw, mstride, ns]` (`i64`).
///
/// # Safety
/// The host supports AVX2 and FMA (checked by `select`). `geo` points at the table; `mb` at
/// `A²·mstride` readable f32 with the entries above initialized, `mc·ns·16 ≤ mstride`,
/// `ntiles ≤ ns·16`; `y` at `mc` writable `oh × ow` planes, `res` (RESIDUAL) at `mc` readable
/// ones and `bias` (BIAS) at `mc` f32 (else either may be null); every tile is inside the grid
/// (`(tile0 + ntiles) ≤ tw·oh.div_ceil(M)`); `y` overlaps no other buffer.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn output<const A: usize, const M: usize>(
    geo: *const i64,
    mb: *const f32,
    tile0: usize,
    ntiles: usize,
    mc: usize,
    y: *mut f32,
    bias: *const f32,
    res: *const f32,
    flags: u32,
    p0: f32,
    p1: f32,
) {
    // SAFETY: forwarded (the same contract).
    unsafe {
        with_act!(flags, ACT => output_with::<A, M, ACT>(geo, mb, tile0, ntiles, mc, y, bias, res, flags, p0, p1))
    }
}

/// [`output`] with the activation of kind `ACT`.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn output_with<const A: usize, const M: usize, const ACT: u32>(
    geo: *const i64,
    mb: *const f32,
    tile0: usize,
    ntiles: usize,
    mc: usize,
    y: *mut f32,
    bias: *const f32,
    res: *const f32,
    flags: u32,
    p0: f32,
    p1: f32,
) {
    // SAFETY: `geo` holds 5 values (the caller's contract).
    let g = |i: usize| unsafe { *geo.add(i) } as usize;
    let (oh, ow, tw, mstride, ns) = (g(0), g(1), g(2), g(3), g(4));
    let nbp = ns * NR;
    let plane = oh * ow;
    let (p0, p1) = (_mm256_set1_ps(p0), _mm256_set1_ps(p1));
    let has_res = flags & RESIDUAL != 0;
    let zero = _mm256_setzero_ps();
    for ml in 0..mc {
        // SAFETY: channel `ml < mc` of `y`, `res` and `bias` (the caller's contract).
        let (yc, rc) = unsafe { (y.add(ml * plane), if has_res { res.add(ml * plane) } else { res }) };
        let bv = if flags & BIAS != 0 { unsafe { _mm256_broadcast_ss(&*bias.add(ml)) } } else { zero };
        // The epilogue of 8 values of row `p` (residual at the same offset).
        let epi = |v: __m256, r: __m256| {
            let mut v = v;
            if flags & BIAS != 0 {
                v = _mm256_add_ps(v, bv);
            }
            if has_res {
                v = _mm256_add_ps(v, r);
            }
            activate::<ACT>(v, p0, p1)
        };
        for grp in 0..ntiles.div_ceil(L) {
            let first = grp * L;
            let n = (ntiles - first).min(L);
            // M[ξ] for the group's 8 tiles, as columns: t[c][r] = M[r·A + c].
            let mut t = [[zero; 6]; 6];
            for r in 0..A {
                for cc in 0..A {
                    // SAFETY: inside `mb` (the caller's contract).
                    t[cc][r] = unsafe { _mm256_loadu_ps(mb.add((r * A + cc) * mstride + ml * nbp + first)) };
                }
            }
            // Aᵀ over rows (per column), then over columns: out[i][j].
            let mut cols = [[zero; 4]; 6];
            for cc in 0..A {
                cols[cc] = at::<A>(&t[cc]);
            }
            let mut out = [[zero; 4]; 4];
            for i in 0..M {
                let mut row = [zero; 6];
                for cc in 0..A {
                    row[cc] = cols[cc][i];
                }
                out[i] = at::<A>(&row);
            }
            let t0 = tile0 + first;
            let (ty0, tx0) = (t0 / tw, t0 % tw);
            let fast = n == L && tx0 + L <= tw && (ty0 + 1) * M <= oh && (tx0 + L) * M <= ow;
            if fast {
                for (i, o) in out.iter().enumerate().take(M) {
                    let at = (ty0 * M + i) * ow + tx0 * M;
                    // SAFETY: the 8 tiles' `8·M` pixels of row `ty0·M + i` lie inside the plane.
                    unsafe {
                        if M == 2 {
                            let lo = _mm256_unpacklo_ps(o[0], o[1]);
                            let hi = _mm256_unpackhi_ps(o[0], o[1]);
                            let v0 = _mm256_permute2f128_ps::<0x20>(lo, hi);
                            let v1 = _mm256_permute2f128_ps::<0x31>(lo, hi);
                            for (k, v) in [v0, v1].into_iter().enumerate() {
                                let r = if has_res { _mm256_loadu_ps(rc.add(at + k * L)) } else { zero };
                                _mm256_storeu_ps(yc.add(at + k * L), epi(v, r));
                            }
                        } else {
                            let u0 = _mm256_unpacklo_ps(o[0], o[1]);
                            let u1 = _mm256_unpackhi_ps(o[0], o[1]);
                            let u2 = _mm256_unpacklo_ps(o[2], o[3]);
                            let u3 = _mm256_unpackhi_ps(o[2], o[3]);
                            let r0 = _mm256_shuffle_ps::<0x44>(u0, u2);
                            let r1 = _mm256_shuffle_ps::<0xEE>(u0, u2);
                            let r2 = _mm256_shuffle_ps::<0x44>(u1, u3);
                            let r3 = _mm256_shuffle_ps::<0xEE>(u1, u3);
                            let vs = [
                                _mm256_permute2f128_ps::<0x20>(r0, r1),
                                _mm256_permute2f128_ps::<0x20>(r2, r3),
                                _mm256_permute2f128_ps::<0x31>(r0, r1),
                                _mm256_permute2f128_ps::<0x31>(r2, r3),
                            ];
                            for (k, v) in vs.into_iter().enumerate() {
                                let r = if has_res { _mm256_loadu_ps(rc.add(at + k * L)) } else { zero };
                                _mm256_storeu_ps(yc.add(at + k * L), epi(v, r));
                            }
                        }
                    }
                }
                continue;
            }
            // Groups across tile rows or with edge tiles: the tiles' rows are transposed into a
            // tile-major stack buffer (`tr[l·M² + i·M + j]`), the residual gathered likewise,
            // the epilogue applied to the buffer as vectors, then each tile's valid pixels
            // stored (whole rows of full tiles as one copy of `M` floats).
            let mut tr = [0f32; L * 16];
            let mut rs = [0f32; L * 16];
            let mm = M * M;
            // SAFETY: every store below is inside `tr` (tile `l < 8`, row `i < M`).
            unsafe {
                let trp = tr.as_mut_ptr();
                for (i, o) in out.iter().enumerate().take(M) {
                    if M == 2 {
                        let lo = _mm256_unpacklo_ps(o[0], o[1]);
                        let hi = _mm256_unpackhi_ps(o[0], o[1]);
                        // Tiles (0, 1 | 4, 5) in `lo`, (2, 3 | 6, 7) in `hi`, 2 floats each.
                        for (v, k) in [(lo, 0), (hi, 2)] {
                            let (a, b) = (_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
                            let at = |t: usize| trp.add(t * mm + i * M).cast::<f64>();
                            _mm_store_sd(at(k), _mm_castps_pd(a));
                            _mm_storeh_pd(at(k + 1), _mm_castps_pd(a));
                            _mm_store_sd(at(k + 4), _mm_castps_pd(b));
                            _mm_storeh_pd(at(k + 5), _mm_castps_pd(b));
                        }
                    } else {
                        let u0 = _mm256_unpacklo_ps(o[0], o[1]);
                        let u1 = _mm256_unpackhi_ps(o[0], o[1]);
                        let u2 = _mm256_unpacklo_ps(o[2], o[3]);
                        let u3 = _mm256_unpackhi_ps(o[2], o[3]);
                        // `r[k]` = tile k's row i | tile k + 4's row i.
                        let r = [
                            _mm256_shuffle_ps::<0x44>(u0, u2),
                            _mm256_shuffle_ps::<0xEE>(u0, u2),
                            _mm256_shuffle_ps::<0x44>(u1, u3),
                            _mm256_shuffle_ps::<0xEE>(u1, u3),
                        ];
                        for (k, v) in r.into_iter().enumerate() {
                            _mm_storeu_ps(trp.add(k * mm + i * M), _mm256_castps256_ps128(v));
                            _mm_storeu_ps(trp.add((k + 4) * mm + i * M), _mm256_extractf128_ps::<1>(v));
                        }
                    }
                }
            }
            // Per tile: first pixel, valid rows and columns.
            let mut geo_t = [(0usize, 0usize, 0usize); L];
            for (l, gt) in geo_t.iter_mut().enumerate().take(n) {
                let t = t0 + l;
                let (oy0, ox0) = ((t / tw) * M, (t % tw) * M);
                *gt = (oy0 * ow + ox0, M.min(oh - oy0), M.min(ow - ox0));
            }
            if has_res {
                for (l, &(at, rows, cols)) in geo_t.iter().enumerate().take(n) {
                    for i in 0..rows {
                        // SAFETY: the tile's valid pixels of row `i` lie inside the plane.
                        unsafe {
                            let (src, dst) = (rc.add(at + i * ow), rs.as_mut_ptr().add(l * mm + i * M));
                            if cols == M {
                                std::ptr::copy_nonoverlapping(src, dst, M);
                            } else {
                                for j in 0..cols {
                                    *dst.add(j) = *src.add(j);
                                }
                            }
                        }
                    }
                }
            }
            for k in 0..mm {
                // SAFETY: `8·M² ≤ 128` floats in each buffer.
                unsafe {
                    let v = epi(_mm256_loadu_ps(tr.as_ptr().add(k * L)), _mm256_loadu_ps(rs.as_ptr().add(k * L)));
                    _mm256_storeu_ps(tr.as_mut_ptr().add(k * L), v);
                }
            }
            for (l, &(at, rows, cols)) in geo_t.iter().enumerate().take(n) {
                for i in 0..rows {
                    // SAFETY: the tile's valid pixels of row `i` lie inside the plane.
                    unsafe {
                        let (src, dst) = (tr.as_ptr().add(l * mm + i * M), yc.add(at + i * ow));
                        if cols == M {
                            std::ptr::copy_nonoverlapping(src, dst, M);
                        } else {
                            for j in 0..cols {
                                *dst.add(j) = *src.add(j);
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::avx2::sgemm_6x16;
    use super::super::{Act, tile_flags};
    use super::*;

    /// `activate` gives the bits of `sgemm_6x16`'s epilogue for every activation, on values
    /// across every activation's ranges (the GEMM computes `1·v + 0 = v` exactly for v ≠ 0).
    #[test]
    fn output_matches_sgemm_epilogue_bits() {
        let _ = microkernels_or_skip!();
        let vals: Vec<f32> = (0..16).map(|i| (i as f32 - 7.5) * 1.37).collect();
        let acts = [
            Act::Clamp { lo: -0.2, hi: 0.3 },
            Act::Clamp { lo: 0.0, hi: f32::INFINITY },
            Act::LeakyRelu { alpha: 0.1 },
            Act::HardSigmoid { alpha: 0.2, beta: 0.5 },
            Act::HardSwish,
            Act::Sigmoid,
            Act::Swish { beta: 1.702 },
        ];
        for act in acts {
            let mut a = [0f32; 6];
            a[0] = 1.0;
            let mut c = [0f32; 6 * 16];
            let (p0, p1) = act.params();
            // SAFETY: AVX2/FMA present (`select`); k = 1 with a 6-float A panel, a 16-float B
            // row and a 6×16 C tile.
            unsafe {
                let f = act.flags() | tile_flags(6, 16);
                sgemm_6x16(
                    1,
                    a.as_ptr(),
                    vals.as_ptr(),
                    c.as_mut_ptr(),
                    16,
                    f,
                    std::ptr::null(),
                    std::ptr::null(),
                    p0,
                    p1,
                );
            }
            let mut got = [0f32; 16];
            // SAFETY: as above; 8-float loads and stores inside `vals` and `got`.
            unsafe {
                let (p0, p1) = (_mm256_set1_ps(p0), _mm256_set1_ps(p1));
                for h in 0..2 {
                    let v = _mm256_loadu_ps(vals.as_ptr().add(h * 8));
                    let r = with_act!(act.flags(), ACT => activate::<ACT>(v, p0, p1));
                    _mm256_storeu_ps(got.as_mut_ptr().add(h * 8), r);
                }
            }
            for (i, (g, w)) in got.iter().zip(&c[..16]).enumerate() {
                assert_eq!(g.to_bits(), w.to_bits(), "{act:?} at {}: {g} vs {w}", vals[i]);
            }
        }
    }
}
