//! AVX2/FMA routines for the layers a GEMM tile does not fit: one output channel of a depthwise
//! 2-D conv over a range of output rows ([`dw_conv_2d`]), and a matrix-vector product over
//! packed 8-channel weight panels for single-pixel 1×1 convs ([`sgemv_panels`]). Both apply
//! the fused epilogue (bias, residual, one activation of [`Act`](super::Act)) in registers.

use std::arch::x86_64::*;

use super::avx2::activate;
use super::{BIAS, DwGeo, GEMV_PANEL, RESIDUAL, with_act};

pub(super) type DwFn = unsafe extern "C" fn(
    *const i64,
    *const f32,
    *const f32,
    *const f32,
    *const f32,
    *mut f32,
    usize,
    usize,
    usize,
    *mut f32,
    u32,
    f32,
    f32,
);
pub(super) type GemvFn =
    unsafe extern "C" fn(usize, *const f32, *const f32, *mut f32, usize, usize, u32, *const f32, *const f32, f32, f32);

/// Fields of a [`DwGeo::table`] before the tap offsets.
pub(super) const DW_FIELDS: usize = 15;

/// Output rows computed together (one accumulator each, sharing each tap's weight broadcast).
const R: usize = 8;
/// Output rows of a [`tile_3x3`] (4 accumulators + 9 weights + the input vector in 16 ymm).
const R3: usize = 4;

impl DwGeo {
    /// The geometry a [`DwGeo::table`] at `t` holds (its fields; the tap offsets follow).
    pub(super) fn read(t: *const i64) -> DwGeo {
        // SAFETY: `t` points at the values `DwGeo::table` wrote (the caller's contract).
        let v = |i: usize| unsafe { *t.add(i) } as usize;
        DwGeo {
            ih: v(0),
            iw: v(1),
            oh: v(2),
            ow: v(3),
            kh: v(4),
            kw: v(5),
            sh: v(6),
            sw: v(7),
            dh: v(8),
            dw: v(9),
            ph: v(10),
            pw: v(11),
            cols: v(12),
            band: v(13),
            phase: v(14),
        }
    }
}

/// Output rows `r0..r1` of `channels` consecutive channels of a depthwise 2-D conv, channel `c`
/// reading the input plane, weights, bias, residual plane and output plane `c` after those
/// passed (planes `ih·iw` and `oh·ow` f32 apart, weights `kh·kw`, biases 1); each channel:
/// `y[r][c] = act(bias + Σ_{kh,kw}
/// w[kh][kw]·x[r·sh + kh·dh − ph][c·sw + kw·dw − pw] + residual[r][c])` with taps outside the
/// input reading zero. Each sum starts from the bias (or 0) and adds the taps with one FMA
/// each, row-major (kh outer, kw inner), then the residual, then the activation of kind
/// `flags` bits 24..28 (parameters `p0, p1`, see [`Act`](super::Act)): the operations, in
/// the same order, of the Cranelift depthwise kernel, which skips the out-of-range taps this
/// one multiplies by zero (the same value except for the sign of a zero sum, or non-finite
/// weights). How rows are grouped into calls or bands never changes a sum.
///
/// The input rows a band of output rows needs are first staged into `scratch`, zero-padded and
/// (for `sw > 1`) split into `sw` column phases, so that every tap of 8 adjacent output
/// columns is one unaligned vector load.
///
/// # Safety
/// The host supports AVX2 and FMA (checked by `select`). `geo` points at a
/// [`DwGeo::table`]; `x` at `channels` input planes of `ih·iw` f32, `w` at `channels·kh·kw`
/// weights, `y` at `channels` output planes of `oh·ow` (written only in rows `r0..r1 ≤ oh`);
/// `bias` at `channels` f32 when BIAS is set, `residual` at planes like `y` when RESIDUAL is
/// set (otherwise either may be null);
/// `scratch` at [`DwGeo::scratch_floats`] writable f32. Nothing aliases `y` or `scratch`.
#[target_feature(enable = "avx2,fma")]
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

/// The arguments of [`dw_conv_2d`] besides the geometry and row range.
pub(super) struct Io {
    pub x: *const f32,
    pub w: *const f32,
    pub bias: *const f32,
    pub residual: *const f32,
    pub y: *mut f32,
    pub scratch: *mut f32,
    pub flags: u32,
    pub p0: f32,
    pub p1: f32,
}

/// Where one band's staged input lives: `sw` phases of `phase_len` floats per staged row.
pub(super) struct Staged {
    pub base: *const f32,
    pub row: usize,
    /// Offset of each column tap `kw` (its phase and its column shift) from a row's start.
    pub taps: [usize; MAX_KW],
}

/// Most kernel columns the routine handles (`DwGeo::supported`).
const MAX_KW: usize = super::DW_MAX_KW;

#[target_feature(enable = "avx2,fma")]
unsafe fn dw_run<const ACT: u32>(g: &DwGeo, table: *const i64, io: &Io, r0: usize, r1: usize) {
    // SAFETY: the table holds the fields, then `MAX_KW` tap offsets (`DwGeo::table`).
    let taps = std::array::from_fn(|k| unsafe { *table.add(DW_FIELDS + k) } as usize);
    let st = Staged { base: io.scratch, row: g.sw * g.phase, taps };
    let mut c0 = 0;
    while c0 < g.ow {
        let nc = g.cols.min(g.ow - c0);
        let mut b0 = r0;
        while b0 < r1 {
            let nb = g.band.min(r1 - b0);
            // SAFETY: the caller's contract; the band's staged rows fit the scratch
            // (`scratch_floats`), and the tiles read only staged rows and phases.
            unsafe {
                stage(g, io.x, b0, nb, c0, io.scratch);
                let mut rr = 0;
                if g.kh == 3 && g.kw == 3 && g.sh <= 2 && g.dh == 1 {
                    while rr + R3 <= nb {
                        let at = Tile { row: b0 + rr, c0, nc, srow: rr * g.sh };
                        if g.sh == 1 {
                            tile_3x3::<R3, 1, ACT>(g, io, &st, &at);
                        } else {
                            tile_3x3::<R3, 2, ACT>(g, io, &st, &at);
                        }
                        rr += R3;
                    }
                }
                while rr < nb {
                    let n = (nb - rr).min(R);
                    let at = Tile { row: b0 + rr, c0, nc, srow: rr * g.sh };
                    match n {
                        8 => tile::<8, 0, ACT>(g, io, &st, &at),
                        7 => tile::<7, 0, ACT>(g, io, &st, &at),
                        6 => tile::<6, 0, ACT>(g, io, &st, &at),
                        5 => tile::<5, 0, ACT>(g, io, &st, &at),
                        4 => tile::<4, 0, ACT>(g, io, &st, &at),
                        3 => tile::<3, 0, ACT>(g, io, &st, &at),
                        2 => tile::<2, 0, ACT>(g, io, &st, &at),
                        _ => tile::<1, 0, ACT>(g, io, &st, &at),
                    }
                    rr += n;
                }
            }
            b0 += nb;
        }
        c0 += nc;
    }
}

/// `N` output rows from `row`, columns `c0..c0+nc`, whose first staged input row is `srow`.
pub(super) struct Tile {
    pub row: usize,
    pub c0: usize,
    pub nc: usize,
    pub srow: usize,
}

/// Stages the input rows output rows `b0..b0+nb` read, for output columns `c0..c0+cols`:
/// staged row `i` is input row `b0·sh − ph + i`, phase `p` element `j` is input column
/// `(c0 + j)·sw + p − pw`, zero outside the input.
///
/// # Safety
/// AVX2; `x` the input plane, `dst` holds [`DwGeo::scratch_floats`] f32, `nb ≤ band`.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn stage(g: &DwGeo, x: *const f32, b0: usize, nb: usize, c0: usize, dst: *mut f32) {
    let phase_len = g.phase;
    let rows = (nb - 1) * g.sh + (g.kh - 1) * g.dh + 1;
    let z = _mm256_setzero_ps();
    // Phase element `j` of phase `p` reads input column `first + p + j·sw`.
    let first = (c0 * g.sw) as isize - g.pw as isize;
    let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let iw = _mm256_set1_epi32(g.iw as i32);
    // Lanes `l` with `0 ≤ col + l < iw`.
    let inside = |col: isize| {
        let c = _mm256_add_epi32(_mm256_set1_epi32(col as i32), idx);
        _mm256_andnot_si256(_mm256_cmpgt_epi32(_mm256_setzero_si256(), c), _mm256_cmpgt_epi32(iw, c))
    };
    for i in 0..rows {
        let ir = (b0 * g.sh + i) as isize - g.ph as isize;
        // SAFETY: row `i < rows` of the staging buffer (`phase_len` is a multiple of 8); input
        // row `ir` when inside the plane, read only at the columns `inside` admits (masked
        // loads neither read nor fault on the other lanes, whose addresses are only computed).
        unsafe {
            let d = dst.add(i * g.sw * phase_len);
            if ir < 0 || ir >= g.ih as isize {
                let mut j = 0;
                while j < g.sw * phase_len {
                    _mm256_storeu_ps(d.add(j), z);
                    j += 8;
                }
                continue;
            }
            let src = x.wrapping_offset(ir * g.iw as isize);
            match g.sw {
                1 => {
                    let mut j = 0;
                    while j < phase_len {
                        let col = first + j as isize;
                        let p = src.wrapping_offset(col);
                        let v = if col >= 0 && col + 8 <= g.iw as isize {
                            _mm256_loadu_ps(p)
                        } else {
                            _mm256_maskload_ps(p, inside(col))
                        };
                        _mm256_storeu_ps(d.add(j), v);
                        j += 8;
                    }
                }
                2 => {
                    // 16 input columns per step: evens to phase 0, odds to phase 1.
                    let mut j = 0;
                    while j < phase_len {
                        let col = first + 2 * j as isize;
                        let p = src.wrapping_offset(col);
                        let (a, b) = if col >= 0 && col + 16 <= g.iw as isize {
                            (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)))
                        } else {
                            (_mm256_maskload_ps(p, inside(col)), _mm256_maskload_ps(p.wrapping_add(8), inside(col + 8)))
                        };
                        let ev = _mm256_shuffle_ps::<0b10_00_10_00>(a, b);
                        let od = _mm256_shuffle_ps::<0b11_01_11_01>(a, b);
                        let ev = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(ev)));
                        let od = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(od)));
                        _mm256_storeu_ps(d.add(j), ev);
                        _mm256_storeu_ps(d.add(phase_len + j), od);
                        j += 8;
                    }
                }
                _ => {
                    for p in 0..g.sw {
                        for j in 0..phase_len {
                            let col = first + (p + j * g.sw) as isize;
                            let inside = col >= 0 && col < g.iw as isize;
                            *d.add(p * phase_len + j) = if inside { *src.offset(col) } else { 0.0 };
                        }
                    }
                }
            }
        }
    }
}

/// Lanes `< n` of 8, as a mask.
#[target_feature(enable = "avx2,fma")]
fn mask8(n: usize) -> __m256i {
    let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), idx)
}

/// `N` output rows of one column tile, 8 columns at a time (the last vector masked); `KW` is
/// the kernel's width when it is a compile-time constant of this copy, else 0 (read from `g`).
///
/// # Safety
/// As [`dw_conv_2d`]; the staged band holds rows `at.srow .. at.srow + (N−1)·sh + (kh−1)·dh`.
#[target_feature(enable = "avx2,fma")]
unsafe fn tile<const N: usize, const KW: usize, const ACT: u32>(g: &DwGeo, io: &Io, st: &Staged, at: &Tile) {
    let taps = &st.taps[..if KW > 0 { KW } else { g.kw }];
    // SAFETY: the caller's contract: `bias` is readable when BIAS is set; every load below is
    // inside the staged band (phase rows hold `phase_len ≥ roundup(cols, 8) + max tap shift`
    // f32), every store and residual load inside rows `at.row..at.row+N` of the plane.
    unsafe {
        let bias = if io.flags & BIAS != 0 { _mm256_broadcast_ss(&*io.bias) } else { _mm256_setzero_ps() };
        let row_step = g.sh * st.row;
        let kh_step = g.dh * st.row;
        let mut v = 0;
        while v < at.nc {
            let mut acc = [bias; N];
            let mut src = st.base.add(at.srow * st.row + v);
            let mut wk = io.w;
            for _ in 0..g.kh {
                for &t in taps {
                    let wv = _mm256_broadcast_ss(&*wk);
                    wk = wk.add(1);
                    let s = src.add(t);
                    for (r, a) in acc.iter_mut().enumerate() {
                        *a = _mm256_fmadd_ps(_mm256_loadu_ps(s.add(r * row_step)), wv, *a);
                    }
                }
                src = src.add(kh_step);
            }
            store_rows::<N, ACT>(g, io, at, v, &acc);
            v += 8;
        }
    }
}

/// Adds the residual to the `N` accumulated rows of output columns `at.c0 + v ..` (at most
/// 8 of them, the rest masked), applies the activation and stores them.
///
/// # Safety
/// As [`dw_conv_2d`], for rows `at.row..at.row+N` and those columns.
#[target_feature(enable = "avx2,fma")]
unsafe fn store_rows<const N: usize, const ACT: u32>(g: &DwGeo, io: &Io, at: &Tile, v: usize, acc: &[__m256; N]) {
    let (p0, p1) = (_mm256_set1_ps(io.p0), _mm256_set1_ps(io.p1));
    let lanes = (at.nc - v).min(8);
    // SAFETY: the caller's contract.
    unsafe {
        let out = io.y.add(at.row * g.ow + at.c0 + v);
        let res = io.residual.wrapping_add(at.row * g.ow + at.c0 + v);
        if lanes == 8 {
            for (r, a) in acc.iter().enumerate() {
                let mut s = *a;
                if io.flags & RESIDUAL != 0 {
                    s = _mm256_add_ps(s, _mm256_loadu_ps(res.add(r * g.ow)));
                }
                _mm256_storeu_ps(out.add(r * g.ow), activate::<ACT>(s, p0, p1));
            }
        } else {
            let m = mask8(lanes);
            for (r, a) in acc.iter().enumerate() {
                let mut s = *a;
                if io.flags & RESIDUAL != 0 {
                    s = _mm256_add_ps(s, _mm256_maskload_ps(res.add(r * g.ow), m));
                }
                _mm256_maskstore_ps(out.add(r * g.ow), m, activate::<ACT>(s, p0, p1));
            }
        }
    }
}

/// [`tile`] for 3×3 kernels with row stride `SH` (1 or 2) and unit row dilation: the 9
/// weights stay in registers and each input vector is loaded once for the (up to 3, or 2 for
/// stride 2) output rows that use it.
/// Each sum still adds its taps in row-major order (input rows ascending, columns inner).
///
/// # Safety
/// As [`tile`].
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_3x3<const N: usize, const SH: usize, const ACT: u32>(g: &DwGeo, io: &Io, st: &Staged, at: &Tile) {
    let taps = [st.taps[0], st.taps[1], st.taps[2]];
    // SAFETY: as in `tile`: 9 weights, rows `at.srow .. at.srow + (N−1)·SH + 3` of the staged
    // band.
    unsafe {
        let w: [__m256; 9] = std::array::from_fn(|k| _mm256_broadcast_ss(&*io.w.add(k)));
        let bias = if io.flags & BIAS != 0 { _mm256_broadcast_ss(&*io.bias) } else { _mm256_setzero_ps() };
        let mut v = 0;
        while v < at.nc {
            let mut acc = [bias; N];
            let src = st.base.add(at.srow * st.row + v);
            for i in 0..(N - 1) * SH + 3 {
                let row = src.add(i * st.row);
                for (kw, &t) in taps.iter().enumerate() {
                    let x = _mm256_loadu_ps(row.add(t));
                    for (r, a) in acc.iter_mut().enumerate() {
                        if i >= r * SH && i - r * SH < 3 {
                            *a = _mm256_fmadd_ps(x, w[(i - r * SH) * 3 + kw], *a);
                        }
                    }
                }
            }
            store_rows::<N, ACT>(g, io, at, v, &acc);
            v += 8;
        }
    }
}

/// `y[p·8 + l] = act(Σ_k a[p][k][l]·x[k] + bias[p·8 + l] + residual[p·8 + l])` for panels
/// `p < panels` and channels `p·8 + l < m` (the valid channels; nothing past them is read or
/// written): a matrix-vector product over weights packed at load into 8-channel panels
/// (`[panel][k][8]`, channels past `m` zero). Each channel's sum is 4 partial sums over
/// `k ≡ 0, 1, 2, 3 (mod 4)`, each accumulated in increasing `k` with one FMA per term, added as
/// `(s0 + s1) + (s2 + s3)`, then the bias, the residual and the activation of kind `flags` bits
/// 24..28 (parameters `p0, p1`; see [`Act`](super::Act)). The order depends only on `k`, so
/// every channel gets the same sum whichever call or panel group computes it.
///
/// # Safety
/// The host supports AVX2 and FMA (checked by `select`). `a` points at `panels·k·8` readable
/// f32, `x` at `k`, `y` at `m ≤ panels·8` writable f32; `bias` at `m` f32 when BIAS is set and
/// `residual` at `m` when RESIDUAL is set (otherwise either may be null). Nothing aliases `y`.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe extern "C" fn sgemv_panels(
    k: usize,
    a: *const f32,
    x: *const f32,
    y: *mut f32,
    m: usize,
    panels: usize,
    flags: u32,
    bias: *const f32,
    residual: *const f32,
    p0: f32,
    p1: f32,
) {
    // SAFETY: the caller's contract, forwarded.
    unsafe { with_act!(flags, ACT => gemv_run::<ACT>(k, a, x, y, m, panels, flags, bias, residual, p0, p1)) }
}

#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn gemv_run<const ACT: u32>(
    k: usize,
    a: *const f32,
    x: *const f32,
    y: *mut f32,
    m: usize,
    panels: usize,
    flags: u32,
    bias: *const f32,
    residual: *const f32,
    p0: f32,
    p1: f32,
) {
    let (p0, p1) = (_mm256_set1_ps(p0), _mm256_set1_ps(p1));
    let panel = k * GEMV_PANEL;
    let mut p = 0;
    // SAFETY: the caller's contract (panels `p < panels` of `a`, `m` channels of y, bias and
    // residual).
    unsafe {
        while p < panels {
            let two = p + 1 < panels;
            let (s0, s1) = if two {
                dot2(k, a.add(p * panel), a.add((p + 1) * panel), x)
            } else {
                (dot2(k, a.add(p * panel), a.add(p * panel), x).0, _mm256_setzero_ps())
            };
            for (q, s) in [(p, s0), (p + 1, s1)].into_iter().take(if two { 2 } else { 1 }) {
                let c0 = q * GEMV_PANEL;
                let lanes = m.saturating_sub(c0).min(GEMV_PANEL);
                if lanes == 0 {
                    continue;
                }
                let msk = mask8(lanes);
                let mut s = s;
                if flags & BIAS != 0 {
                    s = _mm256_add_ps(s, _mm256_maskload_ps(bias.add(c0), msk));
                }
                if flags & RESIDUAL != 0 {
                    s = _mm256_add_ps(s, _mm256_maskload_ps(residual.add(c0), msk));
                }
                let s = activate::<ACT>(s, p0, p1);
                if lanes == GEMV_PANEL {
                    _mm256_storeu_ps(y.add(c0), s);
                } else {
                    _mm256_maskstore_ps(y.add(c0), msk, s);
                }
            }
            p += 2;
        }
    }
}

/// Two panels' dot products with `x` (each as [`sgemv_panels`] describes), interleaved.
///
/// # Safety
/// AVX2; `a0`, `a1` hold `8·k` f32, `x` `k` f32.
#[target_feature(enable = "avx2,fma")]
unsafe fn dot2(k: usize, a0: *const f32, a1: *const f32, x: *const f32) -> (__m256, __m256) {
    let z = _mm256_setzero_ps();
    let (mut s, mut t) = ([z; 4], [z; 4]);
    let mut kk = 0;
    // SAFETY: reads `kk < k` only (the caller's contract).
    unsafe {
        while kk + 4 <= k {
            for j in 0..4 {
                let xv = _mm256_broadcast_ss(&*x.add(kk + j));
                s[j] = _mm256_fmadd_ps(_mm256_loadu_ps(a0.add((kk + j) * GEMV_PANEL)), xv, s[j]);
                t[j] = _mm256_fmadd_ps(_mm256_loadu_ps(a1.add((kk + j) * GEMV_PANEL)), xv, t[j]);
            }
            kk += 4;
        }
        for j in 0..k - kk {
            let xv = _mm256_broadcast_ss(&*x.add(kk + j));
            s[j] = _mm256_fmadd_ps(_mm256_loadu_ps(a0.add((kk + j) * GEMV_PANEL)), xv, s[j]);
            t[j] = _mm256_fmadd_ps(_mm256_loadu_ps(a1.add((kk + j) * GEMV_PANEL)), xv, t[j]);
        }
    }
    let sum = |v: [__m256; 4]| _mm256_add_ps(_mm256_add_ps(v[0], v[1]), _mm256_add_ps(v[2], v[3]));
    (sum(s), sum(t))
}
