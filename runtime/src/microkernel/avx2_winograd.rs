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

use super::{ACT_CLAMP, ACT_HARD_SIGMOID, ACT_HARD_SWISH, ACT_LEAKY_RELU, ACT_SHIFT, ACT_SIGMOID, BIAS, NR, RESIDUAL};

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
/// `ih·iw + iw + A < 2³¹`; `ntiles.div_ceil(16)·c·16 ≤ vstride`; `v` has room for `A²·vstride` f32 and
/// does not overlap `x`.
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
    for grp in 0..ntiles.div_ceil(L) {
        let (s, half) = (grp / 2, grp % 2);
        let first = grp * L;
        let n = (ntiles - first).min(L);
        // Per lane: top-left input position of its patch (lanes past `n` are masked off).
        let mut iy0 = [0i32; L];
        let mut ix0 = [0i32; L];
        for l in 0..n {
            let t = tile0 + first + l;
            iy0[l] = ((t / tw) * M) as i32 - ph as i32;
            ix0[l] = ((t % tw) * M) as i32 - pw as i32;
        }
        let (ty0, tx0) = ((tile0 + first) / tw, (tile0 + first) % tw);
        // The common case: 8 tiles of one tile row whose patches all lie inside the input.
        let (fy, fx) = ((ty0 * M) as isize - ph as isize, (tx0 * M) as isize - pw as isize);
        let fast = n == L
            && tx0 + L <= tw
            && fy >= 0
            && fy as usize + A <= ih
            && fx >= 0
            && fx as usize + (L - 1) * M + A <= iw;
        // SAFETY: 8 i32 each.
        let (y0, x0) = unsafe { (_mm256_loadu_si256(iy0.as_ptr().cast()), _mm256_loadu_si256(ix0.as_ptr().cast())) };
        let valid = _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), lane);
        let base = _mm256_add_epi32(_mm256_mullo_epi32(y0, _mm256_set1_epi32(iw as i32)), x0);
        // `0 ≤ p + i < len` for each lane, as a mask.
        let inside = |p: __m256i, i: usize, len: usize| {
            let q = _mm256_add_epi32(p, _mm256_set1_epi32(i as i32));
            _mm256_andnot_si256(
                _mm256_cmpgt_epi32(_mm256_setzero_si256(), q),
                _mm256_cmpgt_epi32(_mm256_set1_epi32(len as i32), q),
            )
        };
        let mut masks = [zero; 36];
        let mut offs = [_mm256_setzero_si256(); 36];
        if !fast {
            for i in 0..A {
                let row = _mm256_and_si256(valid, inside(y0, i, ih));
                for j in 0..A {
                    masks[i * A + j] = _mm256_castsi256_ps(_mm256_and_si256(row, inside(x0, j, iw)));
                    offs[i * A + j] = _mm256_add_epi32(base, _mm256_set1_epi32((i * iw + j) as i32));
                }
            }
        }
        for ic in 0..c {
            // SAFETY: channel `ic < c` of `x`.
            let xc = unsafe { x.add(ic * plane) };
            let mut d = [[zero; 6]; 6];
            if fast {
                for i in 0..A {
                    // SAFETY: the 8 patches' row `i` lies inside the plane (`fast`).
                    let row = unsafe { load_row::<M>(xc.add((fy as usize + i) * iw + fx as usize)) };
                    for j in 0..A {
                        d[j][i] = row[j];
                    }
                }
            } else {
                for i in 0..A {
                    for j in 0..A {
                        // SAFETY: masked-off lanes are not read (AVX2 gather semantics), and
                        // every unmasked offset is a position inside the plane.
                        d[j][i] = unsafe { _mm256_mask_i32gather_ps::<4>(zero, xc, offs[i * A + j], masks[i * A + j]) };
                    }
                }
            }
            // Columns first (`d[j]` is column j: Bᵀ over the rows), then rows.
            for col in d.iter_mut().take(A) {
                bt::<A>(col);
            }
            for r in 0..A {
                let mut row = [zero; 6];
                for j in 0..A {
                    row[j] = d[j][r];
                }
                bt::<A>(&mut row);
                for (cc, &val) in row.iter().enumerate().take(A) {
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
/// `j` of the result, lane `l`, is `p[l·M + j]` for `j < M + 2`, by loads and in-register
/// deinterleaving (the same values a gather would read).
///
/// # Safety
/// `p` is readable for `7·M + M + 2` f32.
#[target_feature(enable = "avx2,fma")]
unsafe fn load_row<const M: usize>(p: *const f32) -> [__m256; 6] {
    let z = _mm256_setzero_ps();
    // Lanes 1..8 of `v` followed by `next`: the vector one tile further right.
    let shift = |v: __m256, next: f32| {
        let r = _mm256_permutevar8x32_ps(v, _mm256_setr_epi32(1, 2, 3, 4, 5, 6, 7, 0));
        _mm256_blend_ps::<0x80>(r, _mm256_set1_ps(next))
    };
    // SAFETY: reads `p[0..8·M + 2]` (the caller's contract).
    unsafe {
        if M == 2 {
            let (a0, a1) = (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)));
            let ev =
                _mm256_castpd_ps(_mm256_permute4x64_pd::<0xD8>(_mm256_castps_pd(_mm256_shuffle_ps::<0x88>(a0, a1))));
            let od =
                _mm256_castpd_ps(_mm256_permute4x64_pd::<0xD8>(_mm256_castps_pd(_mm256_shuffle_ps::<0xDD>(a0, a1))));
            [ev, od, shift(ev, *p.add(16)), shift(od, *p.add(17)), z, z]
        } else {
            let (a0, a1, a2, a3) =
                (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)), _mm256_loadu_ps(p.add(16)), _mm256_loadu_ps(p.add(24)));
            let b0 = _mm256_permute2f128_ps::<0x20>(a0, a2);
            let b1 = _mm256_permute2f128_ps::<0x31>(a0, a2);
            let b2 = _mm256_permute2f128_ps::<0x20>(a1, a3);
            let b3 = _mm256_permute2f128_ps::<0x31>(a1, a3);
            let u0 = _mm256_unpacklo_ps(b0, b1);
            let u1 = _mm256_unpackhi_ps(b0, b1);
            let u2 = _mm256_unpacklo_ps(b2, b3);
            let u3 = _mm256_unpackhi_ps(b2, b3);
            let d0 = _mm256_shuffle_ps::<0x44>(u0, u2);
            let d1 = _mm256_shuffle_ps::<0xEE>(u0, u2);
            let d2 = _mm256_shuffle_ps::<0x44>(u1, u3);
            let d3 = _mm256_shuffle_ps::<0xEE>(u1, u3);
            [d0, d1, d2, d3, shift(d0, *p.add(32)), shift(d1, *p.add(33))]
        }
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
        match (flags >> ACT_SHIFT) & 0xf {
            ACT_CLAMP => output_with::<A, M, ACT_CLAMP>(geo, mb, tile0, ntiles, mc, y, bias, res, flags, p0, p1),
            ACT_LEAKY_RELU => {
                output_with::<A, M, ACT_LEAKY_RELU>(geo, mb, tile0, ntiles, mc, y, bias, res, flags, p0, p1)
            }
            ACT_HARD_SIGMOID => {
                output_with::<A, M, ACT_HARD_SIGMOID>(geo, mb, tile0, ntiles, mc, y, bias, res, flags, p0, p1)
            }
            ACT_HARD_SWISH => {
                output_with::<A, M, ACT_HARD_SWISH>(geo, mb, tile0, ntiles, mc, y, bias, res, flags, p0, p1)
            }
            ACT_SIGMOID => output_with::<A, M, ACT_SIGMOID>(geo, mb, tile0, ntiles, mc, y, bias, res, flags, p0, p1),
            _ => output_with::<A, M, 0>(geo, mb, tile0, ntiles, mc, y, bias, res, flags, p0, p1),
        }
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
            // Edge groups: tile by tile, row by row, through a stack buffer.
            let mut lanes = [[0f32; L]; 16];
            for i in 0..M {
                for j in 0..M {
                    // SAFETY: 8 f32.
                    unsafe { _mm256_storeu_ps(lanes[i * M + j].as_mut_ptr(), out[i][j]) };
                }
            }
            for l in 0..n {
                let t = t0 + l;
                let (oy0, ox0) = ((t / tw) * M, (t % tw) * M);
                let cols = ow.saturating_sub(ox0).min(M);
                for i in 0..M.min(oh.saturating_sub(oy0)) {
                    let at = (oy0 + i) * ow + ox0;
                    let mut vals = [0f32; L];
                    let mut rs = [0f32; L];
                    for j in 0..cols {
                        vals[j] = lanes[i * M + j][l];
                        if has_res {
                            // SAFETY: pixel inside the plane.
                            rs[j] = unsafe { *rc.add(at + j) };
                        }
                    }
                    // SAFETY: 8 f32 each; `cols` pixels inside the plane.
                    unsafe {
                        let v = epi(_mm256_loadu_ps(vals.as_ptr()), _mm256_loadu_ps(rs.as_ptr()));
                        _mm256_storeu_ps(vals.as_mut_ptr(), v);
                        std::ptr::copy_nonoverlapping(vals.as_ptr(), yc.add(at), cols);
                    }
                }
            }
        }
    }
}

// The activations below are `avx2::activate` (private to that module), operation for
// operation; `output_matches_sgemm_epilogue_bits` pins them to the GEMM kernel's bits.

/// The activation of kind `ACT` on 8 lanes, with parameters `p0, p1` splatted.
#[target_feature(enable = "avx2,fma")]
fn activate<const ACT: u32>(v: __m256, p0: __m256, p1: __m256) -> __m256 {
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
        _ => v,
    }
}

/// `1 / (1 + e⁻ˣ)` as `avx2::sigmoid`.
#[target_feature(enable = "avx2,fma")]
fn sigmoid(x: __m256) -> __m256 {
    let sign = _mm256_set1_ps(-0.0);
    let ax = _mm256_andnot_ps(sign, x);
    let s = exp(_mm256_xor_ps(ax, sign));
    let one = _mm256_set1_ps(1.0);
    let den = _mm256_add_ps(one, s);
    let num = _mm256_blendv_ps(one, s, _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_setzero_ps()));
    _mm256_div_ps(num, den)
}

/// `eˣ` as `avx2::exp`.
#[target_feature(enable = "avx2,fma")]
fn exp(x: __m256) -> __m256 {
    const SHIFTER: f32 = 12_582_912.0;
    const P: [f32; 6] = [5e-1, 1.666_666_5e-1, 4.166_579_6e-2, 8.333_452e-3, 1.398_2e-3, 1.987_569_1e-4];
    let x = _mm256_max_ps(_mm256_set1_ps(-104.0), x);
    let x = _mm256_min_ps(_mm256_set1_ps(89.0), x);
    let shifter = _mm256_set1_ps(SHIFTER);
    let t = _mm256_fmadd_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E), shifter);
    let n = _mm256_sub_ps(t, shifter);
    let r = _mm256_fmadd_ps(n, _mm256_set1_ps(-0.693_359_4), x);
    let r = _mm256_fmadd_ps(n, _mm256_set1_ps(2.121_944_4e-4), r);
    let mut p = _mm256_set1_ps(P[5]);
    for &k in P[..5].iter().rev() {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(k));
    }
    let r2 = _mm256_mul_ps(r, r);
    let y = _mm256_fmadd_ps(p, r2, r);
    let y = _mm256_add_ps(y, _mm256_set1_ps(1.0));
    let ni = _mm256_sub_epi32(_mm256_castps_si256(t), _mm256_set1_epi32(SHIFTER.to_bits() as i32));
    let n1 = _mm256_srai_epi32::<1>(ni);
    let n2 = _mm256_sub_epi32(ni, n1);
    let scale = |n: __m256i| _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(n, _mm256_set1_epi32(127))));
    _mm256_mul_ps(_mm256_mul_ps(y, scale(n1)), scale(n2))
}
