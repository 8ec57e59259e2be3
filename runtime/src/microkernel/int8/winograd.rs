//! Exact int8 Winograd F(2×2, 3×3) for quantized 3×3 stride-1 convs (AVX2, both int8 tiers).
//!
//! F(2,3) in integers: with `G' = 2G = [[2,0,0],[1,1,1],[1,−1,1],[0,0,2]]`, the output tile of
//! a 4×4 input tile `d` (centred: `x − zx`) and a 3×3 filter `g` (centred: `w − zw`) is
//! `Y = Aᵀ[(G' g G'ᵀ) ⊙ (Bᵀ d B)]A / 4`, every matrix integer (`Bᵀ`, `Aᵀ` hold 0 and ±1), so the
//! sum is the direct conv's exactly: `4·acc` is computed modulo 2³² (vpmaddwd products are
//! exact, adds wrap) and the layer qualifies only when `|4·acc| < 2³¹` for any input
//! ([`QwGeo::exact_bound`]), so the arithmetic shift by 2 recovers `acc` bit for bit. Ranges:
//! `|Bᵀ d B| ≤ 4·255` and `|G' g G'ᵀ| ≤ 9·255` fit i16, and `vpmaddwd` never saturates on them.
//!
//! Per work unit (one image, a band of tile rows `ty0..ty1`, its `tiles = (ty1 − ty0)·tw`
//! tiles numbered row-major): the input transform writes, for each of the 16 Winograd
//! positions `ξ`, a B matrix `[C_in][tiles]` as strips of 16 tiles in the AVX2 tile's wide
//! layout (`[k4][16][4]` i16, zero-padded); then per strip and tile of 4 output channels, 16
//! i16 GEMMs (`vpmaddwd`, K = C_in) against the weights transformed at load
//! ([`transform_weights`], panels `[k4][4][4]` i16), the output transform in registers
//! (8 tiles per vector), `/ 4`, the bias, and the requantization of the int8 tiles (`acc as
//! f32 · scale[c]`, clamped to `[lo − zy, hi − zy]`, rounded half to even, `+ zy`), stored as
//! bytes. 16·C_in·C_out multiplies per 2×2 tile instead of 36·C_in·C_out.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Geometry and quantization of one quantized 3×3 stride-1 conv ([`QwGeo::table`] is what the
/// kernel reads).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct QwGeo {
    pub ih: usize,
    pub iw: usize,
    pub oh: usize,
    pub ow: usize,
    /// Leading padding (rows, columns); trailing padding is implied by `oh`, `ow`.
    pub ph: usize,
    pub pw: usize,
    pub c_in: usize,
    pub c_out: usize,
    /// The input zero point, in the input type's range.
    pub zx: i32,
    /// The output zero point and inclusive bounds (`lo ≤ hi`, in the output type's range).
    pub zy: i32,
    pub lo: i32,
    pub hi: i32,
    /// Input is i8 (else u8).
    pub x_i8: bool,
    /// Output is i8 (else u8).
    pub out_i8: bool,
    /// Tile rows per work unit (the scratch is sized for it).
    pub rows_per_unit: usize,
}

impl QwGeo {
    /// Output tiles per row and per column.
    pub(crate) fn tiles(&self) -> (usize, usize) {
        (self.oh.div_ceil(2), self.ow.div_ceil(2))
    }

    /// Whether the shift by 2 recovers every sum exactly: `4·255·max_c Σ|w − zw| < 2³¹` for the
    /// centred weights `[C_out][C_in·9]` (`|x − zx| ≤ 255`).
    pub(crate) fn exact_bound(centred: &[i32], c_out: usize) -> bool {
        let k = centred.len() / c_out.max(1);
        (0..c_out).all(|c| {
            let s: i64 = centred[c * k..(c + 1) * k].iter().map(|&w| i64::from(w).abs()).sum();
            4 * 255 * s < 1 << 31
        })
    }

    pub(crate) fn table(&self) -> Vec<i64> {
        let u = |v: usize| v as i64;
        vec![
            u(self.ih),
            u(self.iw),
            u(self.oh),
            u(self.ow),
            u(self.ph),
            u(self.pw),
            u(self.c_in),
            u(self.c_out),
            i64::from(self.zx),
            i64::from(self.zy),
            i64::from(self.lo),
            i64::from(self.hi),
            i64::from(self.x_i8),
            i64::from(self.out_i8),
            u(self.rows_per_unit),
        ]
    }

    #[cfg(target_arch = "x86_64")]
    fn read(t: *const i64) -> QwGeo {
        // SAFETY: `t` points at the 15 values `QwGeo::table` wrote (the kernel's contract).
        let v = |i: usize| unsafe { *t.add(i) };
        let u = |i: usize| v(i) as usize;
        QwGeo {
            ih: u(0),
            iw: u(1),
            oh: u(2),
            ow: u(3),
            ph: u(4),
            pw: u(5),
            c_in: u(6),
            c_out: u(7),
            zx: v(8) as i32,
            zy: v(9) as i32,
            lo: v(10) as i32,
            hi: v(11) as i32,
            x_i8: v(12) != 0,
            out_i8: v(13) != 0,
            rows_per_unit: u(14),
        }
    }

    /// Byte offsets in the scratch: `[B strips, transformed rows, end]`.
    fn layout(&self) -> [usize; 3] {
        let (_, tw) = self.tiles();
        let tiles = self.rows_per_unit * tw;
        let strips = tiles.div_ceil(16);
        let k4 = self.c_in.div_ceil(4);
        let b = 16 * strips * k4 * 128;
        // 16 positions × 4 channels × the unit's tiles (+ 8, whole strips), i16.
        let v = 16 * 4 * (tiles + 8).next_multiple_of(16) * 2;
        let align = |n: usize| n.next_multiple_of(64);
        let b_end = align(b);
        let v_end = b_end + align(v);
        [0, b_end, v_end]
    }

    pub(crate) fn scratch_bytes(&self) -> usize {
        self.layout()[2]
    }
}

/// The centred weights `[C_out][C_in][3][3]` transformed (`G' g G'ᵀ`) into the 16 i16 GEMM
/// A matrices of the positions `ξ = 4i + j`, packed as the AVX2 tile's wide panels: panel
/// `(ξ, t)` (output channels `4t..4t + 4`) at i16 index `(t·16 + ξ)·k4·16` (a tile's 16 panels
/// contiguous: the kernel reads them in turn), its quad `q`
/// at `+ 16q`, row `r` at `+ 4r`, channel `4q + j'` at `+ j'`; rows past C_out and channels
/// past C_in are 0.
pub(crate) fn transform_weights(centred: &[i32], c_out: usize, c_in: usize) -> Vec<i16> {
    assert_eq!(centred.len(), c_out * c_in * 9, "transform_weights: {c_out}×{c_in}×3×3 weights");
    let g2: [[i32; 3]; 4] = [[2, 0, 0], [1, 1, 1], [1, -1, 1], [0, 0, 2]];
    let (tiles, k4) = (c_out.div_ceil(4), c_in.div_ceil(4));
    let mut out = vec![0i16; 16 * tiles * k4 * 16];
    for m in 0..c_out {
        for c in 0..c_in {
            let g = &centred[(m * c_in + c) * 9..][..9];
            // tmp = G' g (4×3), u = tmp G'ᵀ (4×4).
            let mut tmp = [[0i32; 3]; 4];
            for (i, row) in tmp.iter_mut().enumerate() {
                for (j, v) in row.iter_mut().enumerate() {
                    *v = (0..3).map(|k| g2[i][k] * g[k * 3 + j]).sum();
                }
            }
            for (i, ti) in tmp.iter().enumerate() {
                for (j, gj) in g2.iter().enumerate() {
                    let u: i32 = (0..3).map(|k| ti[k] * gj[k]).sum();
                    let xi = 4 * i + j;
                    let at = (((m / 4) * 16 + xi) * k4 + c / 4) * 16 + (m % 4) * 4 + c % 4;
                    out[at] = i16::try_from(u).expect("|G' g G'ᵀ| ≤ 9·255 fits an i16");
                }
            }
        }
    }
    out
}

/// The C signature of [`qwino_f2`].
#[cfg(target_arch = "x86_64")]
pub(super) type QwFn =
    unsafe extern "C" fn(*const i64, *const u8, *const i16, *const i32, *const f32, *mut u8, usize, usize, *mut u8);

/// One work unit of a quantized 3×3 stride-1 conv by exact Winograd F(2×2, 3×3) (module doc):
/// the output tile rows `ty0..ty1` of one image, every output channel.
///
/// # Safety
/// AVX2 (checked by `qkernels`, the only place this address is taken). `geo` points at a
/// [`QwGeo::table`]; `x` at the image's `C_in × ih × iw` input bytes; `a` at
/// [`transform_weights`]' panels for this geometry; `bias` at `C_out` i32 or null (0);
/// `scale` at `C_out` f32; `y` at the image's writable `C_out × oh × ow` output bytes;
/// `ty0 < ty1 ≤ ⌈oh/2⌉` with `ty1 − ty0 ≤ rows_per_unit`; `scratch` at
/// [`QwGeo::scratch_bytes`] writable bytes (any alignment), not overlapping the others.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe extern "C" fn qwino_f2(
    geo: *const i64,
    x: *const u8,
    a: *const i16,
    bias: *const i32,
    scale: *const f32,
    y: *mut u8,
    ty0: usize,
    ty1: usize,
    scratch: *mut u8,
) {
    let g = QwGeo::read(geo);
    let (_, tw) = g.tiles();
    let tiles = (ty1 - ty0) * tw;
    let strips = tiles.div_ceil(16);
    let k4 = g.c_in.div_ceil(4);
    let [b_at, v_at, _] = g.layout();
    // SAFETY: the regions lie inside the caller's scratch (`layout`), disjoint.
    let (bbuf, vbuf) = unsafe { (scratch.add(b_at).cast::<i16>(), scratch.add(v_at).cast::<i16>()) };
    // Whole strips, and room for the last 8-tile block of a row to run past the unit's tiles.
    let vstride = (tiles + 8).next_multiple_of(16);
    // SAFETY: each step's contract is met by the geometry and the caller's buffers.
    let mut work = Work { rows: vec![vec![0i16; 2 * tw + 2 + 16]; 4] };
    unsafe {
        for q in 0..k4 {
            input_quad(&g, x, q, ty0, ty1, vbuf, vstride, &mut work);
            interleave_quad(vbuf, vstride, strips, k4, q, bbuf);
        }
        let mtiles = g.c_out.div_ceil(4);
        let panel = k4 * 16;
        for s in 0..strips {
            for t in 0..mtiles {
                let mut m = [[_mm256_setzero_si256(); 8]; 16];
                for (xi, mx) in m.iter_mut().enumerate() {
                    let ap = a.add((t * 16 + xi) * panel);
                    let bp = bbuf.add((s * 16 + xi) * k4 * 64);
                    *mx = product_i16(k4, ap, bp);
                }
                output_tile(&g, &m, t, s, tiles, tw, ty0, bias, scale, y);
            }
        }
    }
}

/// Per-unit working rows of [`input_quad`]: 4 centred input rows (`2·tw + 2` i16 and 16 of
/// zero slack).
#[cfg(target_arch = "x86_64")]
struct Work {
    rows: Vec<Vec<i16>>,
}

/// Centred input row `iy` (0 outside the image) over the columns `−pw .. −pw + 2·tw + 2`, as
/// i16 into `row` (the rest of `row` 0).
///
/// # Safety
/// `plane` holds the channel's `ih × iw` bytes; `row` has `2·tw + 2 + 16` writable i16.
#[cfg(target_arch = "x86_64")]
#[inline]
unsafe fn centred_row(g: &QwGeo, plane: *const u8, iy: isize, tw: usize, row: &mut [i16]) {
    let len = 2 * tw + 2;
    row.fill(0);
    if iy < 0 || iy as usize >= g.ih {
        return;
    }
    let xor = if g.x_i8 { 0x80u8 } else { 0 };
    let zx = (if g.x_i8 { g.zx + 128 } else { g.zx }) as i16;
    // Columns c ∈ [pw, pw + iw) of the row hold input column c − pw.
    let c1 = (g.pw + g.iw).min(len);
    if g.pw >= c1 {
        return;
    }
    // SAFETY: input columns 0..c1 − pw of row iy exist (the caller's contract).
    let src = unsafe { std::slice::from_raw_parts(plane.add(iy as usize * g.iw), c1 - g.pw) };
    for (d, &v) in row[g.pw..c1].iter_mut().zip(src) {
        *d = i16::from(v ^ xor) - zx;
    }
}

/// The transformed input of the four channels `4q..4q + 4` (0 past C_in) for the unit's tiles:
/// `v[(ξ·4 + ch)·vstride + j]` i16, tiles `tiles ≤ j < vstride` 0.
///
/// # Safety
/// AVX2; `x` holds the image's input; `v` has `64·vstride` writable i16, `vstride ≥ tiles + 8`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn input_quad(
    g: &QwGeo,
    x: *const u8,
    q: usize,
    ty0: usize,
    ty1: usize,
    v: *mut i16,
    vstride: usize,
    work: &mut Work,
) {
    let (_, tw) = g.tiles();
    let tiles = (ty1 - ty0) * tw;
    // Evens of each 128-bit lane's 8 i16 to its low 8 bytes, odds to its high 8 bytes.
    let split = _mm256_setr_epi8(
        0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15, 0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15,
    );
    for ch in 0..4 {
        let c = 4 * q + ch;
        if c >= g.c_in {
            for xi in 0..16 {
                // SAFETY: the line of (ξ, ch) is inside `v`.
                unsafe { std::slice::from_raw_parts_mut(v.add((xi * 4 + ch) * vstride), vstride) }.fill(0);
            }
            continue;
        }
        // SAFETY: channel c < C_in of the image.
        let plane = unsafe { x.add(c * g.ih * g.iw) };
        for ty in ty0..ty1 {
            for (k, row) in work.rows.iter_mut().enumerate() {
                let iy = (2 * ty + k) as isize - g.ph as isize;
                // SAFETY: as above.
                unsafe { centred_row(g, plane, iy, tw, row) };
            }
            let j0 = (ty - ty0) * tw;
            for tx in (0..tw).step_by(8) {
                // t[k][0..4] for input row k over tiles tx..tx + 8: d_i = row[2·tx + i].
                let mut t = [[_mm_setzero_si128(); 4]; 4];
                for (k, row) in work.rows.iter().enumerate() {
                    // SAFETY: rows hold 2·tw + 2 + 16 i16 (zero slack): 2·tx + 18 ≤ that.
                    let (a, b) = unsafe {
                        (
                            _mm256_loadu_si256(row.as_ptr().add(2 * tx).cast()),
                            _mm256_loadu_si256(row.as_ptr().add(2 * tx + 2).cast()),
                        )
                    };
                    // [evens | odds] of the 16 values: E = row[2tx'], O = row[2tx' + 1].
                    let a = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_shuffle_epi8(a, split));
                    let b = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_shuffle_epi8(b, split));
                    let (d0, d1) = (_mm256_castsi256_si128(a), _mm256_extracti128_si256::<1>(a));
                    let (d2, d3) = (_mm256_castsi256_si128(b), _mm256_extracti128_si256::<1>(b));
                    t[k] = [_mm_sub_epi16(d0, d2), _mm_add_epi16(d1, d2), _mm_sub_epi16(d2, d1), _mm_sub_epi16(d1, d3)];
                }
                for (j, ((&a0, &a1), (&a2, &a3))) in t[0].iter().zip(&t[1]).zip(t[2].iter().zip(&t[3])).enumerate() {
                    let vals =
                        [_mm_sub_epi16(a0, a2), _mm_add_epi16(a1, a2), _mm_sub_epi16(a2, a1), _mm_sub_epi16(a1, a3)];
                    for (i, val) in vals.into_iter().enumerate() {
                        // SAFETY: j0 + tx + 8 ≤ tiles + 8 ≤ vstride; lanes past the row's
                        // tiles are rewritten by the next row or zeroed below.
                        unsafe { _mm_storeu_si128(v.add(((4 * i + j) * 4 + ch) * vstride + j0 + tx).cast(), val) };
                    }
                }
            }
        }
        for xi in 0..16 {
            // SAFETY: as above.
            let line = unsafe { std::slice::from_raw_parts_mut(v.add((xi * 4 + ch) * vstride), vstride) };
            line[tiles..].fill(0);
        }
    }
}

/// Interleaves the four channels of each position's rows into quad `q` of the B strips:
/// strip `s` of position `ξ` at i16 `(s·16 + ξ)·k4·64`, quad `q` at `+ 64q`, tile `l` at
/// `+ 4l`, channel `ch` at `+ ch`.
///
/// # Safety
/// AVX2; `v` as [`input_quad`] wrote it; `b` the unit's B region.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn interleave_quad(v: *const i16, vstride: usize, strips: usize, k4: usize, q: usize, b: *mut i16) {
    for xi in 0..16 {
        for s in 0..strips {
            // SAFETY: rows of `vstride = 16·strips` i16; the strip's quad is in `b`.
            unsafe {
                let src = |ch: usize| _mm256_loadu_si256(v.add((xi * 4 + ch) * vstride + 16 * s).cast());
                let (c0, c1, c2, c3) = (src(0), src(1), src(2), src(3));
                // Per 128-bit half (tiles 0..8 | 8..16): [t0c0 t0c1 t1c0 t1c1 …] then quads.
                let (l01, h01) = (_mm256_unpacklo_epi16(c0, c1), _mm256_unpackhi_epi16(c0, c1));
                let (l23, h23) = (_mm256_unpacklo_epi16(c2, c3), _mm256_unpackhi_epi16(c2, c3));
                // q0 = tiles 0,1 | 8,9; q1 = 2,3 | 10,11; q2 = 4,5 | 12,13; q3 = 6,7 | 14,15.
                let (q0, q1) = (_mm256_unpacklo_epi32(l01, l23), _mm256_unpackhi_epi32(l01, l23));
                let (q2, q3) = (_mm256_unpacklo_epi32(h01, h23), _mm256_unpackhi_epi32(h01, h23));
                let dst = b.add((s * 16 + xi) * k4 * 64 + 64 * q);
                _mm256_storeu_si256(dst.cast(), _mm256_permute2x128_si256::<0x20>(q0, q1));
                _mm256_storeu_si256(dst.add(16).cast(), _mm256_permute2x128_si256::<0x20>(q2, q3));
                _mm256_storeu_si256(dst.add(32).cast(), _mm256_permute2x128_si256::<0x31>(q0, q1));
                _mm256_storeu_si256(dst.add(48).cast(), _mm256_permute2x128_si256::<0x31>(q2, q3));
            }
        }
    }
}

/// The 4 × 16 i32 product of a wide panel (`[k4][4][4]` i16) and an i16 strip (`[k4][16][4]`),
/// as 8 vectors `[2r + h]` (row `r`, columns `8h..8h + 8`), by `vpmaddwd` over row pairs.
///
/// # Safety
/// AVX2; `a` and `b` hold `16·k4` and `64·k4` i16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn product_i16(k4: usize, a: *const i16, b: *const i16) -> [__m256i; 8] {
    let mut out = [_mm256_setzero_si256(); 8];
    for pair in 0..2 {
        // acc[4i + g]: row 2·pair + i, columns 4g .. 4g + 4, two lanes per column.
        let mut acc = [_mm256_setzero_si256(); 8];
        let (mut a, mut b) = (a.wrapping_add(8 * pair), b);
        // SAFETY: each quad reads i16 `8·pair .. 8·pair + 8` of `a`'s 16 and the 64 of `b`'s.
        unsafe {
            for _ in 0..k4 {
                let x = [
                    _mm256_loadu_si256(b.cast()),
                    _mm256_loadu_si256(b.add(16).cast()),
                    _mm256_loadu_si256(b.add(32).cast()),
                    _mm256_loadu_si256(b.add(48).cast()),
                ];
                for i in 0..2 {
                    let w = _mm256_set1_epi64x(a.add(4 * i).cast::<i64>().read_unaligned());
                    for g in 0..4 {
                        acc[4 * i + g] = _mm256_add_epi32(acc[4 * i + g], _mm256_madd_epi16(x[g], w));
                    }
                }
                a = a.add(16);
                b = b.add(64);
            }
        }
        for i in 0..2 {
            for h in 0..2 {
                // [c0 c1 c4 c5 | c2 c3 c6 c7] of the 8 columns → in order.
                let s = _mm256_hadd_epi32(acc[4 * i + 2 * h], acc[4 * i + 2 * h + 1]);
                out[2 * (2 * pair + i) + h] = _mm256_permute4x64_epi64::<0b11_01_10_00>(s);
            }
        }
    }
    out
}

/// The output transform, `/ 4`, bias and requantization of output channels `4t..4t + 4` over
/// strip `s`'s tiles, stored to `y`.
///
/// # Safety
/// AVX2; `bias`, `scale`, `y` as [`qwino_f2`] says.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn output_tile(
    g: &QwGeo,
    m: &[[__m256i; 8]; 16],
    t: usize,
    s: usize,
    tiles: usize,
    tw: usize,
    ty0: usize,
    bias: *const i32,
    scale: *const f32,
    y: *mut u8,
) {
    let plane = g.oh * g.ow;
    let zy = _mm256_set1_epi32(g.zy);
    let (lo, hi) = (_mm256_set1_ps((g.lo - g.zy) as f32), _mm256_set1_ps((g.hi - g.zy) as f32));
    for r in 0..4 {
        let c = 4 * t + r;
        if c >= g.c_out {
            break;
        }
        // SAFETY: c < C_out: inside `bias` and `scale`.
        let (bc, sc) = unsafe { (if bias.is_null() { 0 } else { *bias.add(c) }, *scale.add(c)) };
        let (bv, sv) = (_mm256_set1_epi32(bc), _mm256_set1_ps(sc));
        for h in 0..2 {
            let j0 = 16 * s + 8 * h;
            if j0 >= tiles {
                break;
            }
            let mv = |xi: usize| m[xi][2 * r + h];
            let add = |p: __m256i, q: __m256i| _mm256_add_epi32(p, q);
            let sub = |p: __m256i, q: __m256i| _mm256_sub_epi32(p, q);
            // u[i][0] = m[4i] + m[4i+1] + m[4i+2], u[i][1] = m[4i+1] − m[4i+2] − m[4i+3].
            let mut u = [[_mm256_setzero_si256(); 2]; 4];
            for (i, ui) in u.iter_mut().enumerate() {
                let (a0, a1, a2, a3) = (mv(4 * i), mv(4 * i + 1), mv(4 * i + 2), mv(4 * i + 3));
                ui[0] = add(add(a0, a1), a2);
                ui[1] = sub(sub(a1, a2), a3);
            }
            let mut q = [[_mm256_setzero_si256(); 2]; 2];
            for col in 0..2 {
                let y0 = add(add(u[0][col], u[1][col]), u[2][col]);
                let y1 = sub(sub(u[1][col], u[2][col]), u[3][col]);
                for (row, v) in [y0, y1].into_iter().enumerate() {
                    let acc = add(_mm256_srai_epi32::<2>(v), bv);
                    let f = _mm256_mul_ps(_mm256_cvtepi32_ps(acc), sv);
                    // `max(f, lo)` returns `lo` when `f` is NaN (the second operand).
                    let f = _mm256_min_ps(_mm256_max_ps(f, lo), hi);
                    q[row][col] = add(_mm256_cvtps_epi32(f), zy);
                }
            }
            // SAFETY: channel c's plane inside `y`; the tiles from j0 are the unit's.
            unsafe { store_tiles(g, &q, y.add(c * plane), (tiles - j0).min(8), tw, ty0, j0) };
        }
    }
}

/// Stores 8 tiles' requantized outputs `q[row][col]` (lane = tile) to the channel's plane:
/// per output row the 16 bytes of the 8 tiles in order, stored whole when the tiles are in one
/// tile row and inside the plane, else run by run (the tiles of each tile row, clipped at the
/// plane's last row and column).
///
/// # Safety
/// AVX2; `plane` the channel's `oh × ow` bytes; `n ≤ 8` tiles valid, `j0` the first's index
/// in the unit.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn store_tiles(g: &QwGeo, q: &[[__m256i; 2]; 2], plane: *mut u8, n: usize, tw: usize, ty0: usize, j0: usize) {
    let mut bytes = [_mm_setzero_si128(); 2];
    for (row, qr) in q.iter().enumerate() {
        // Lanes interleaved: [t0c0 t0c1 t1c0 t1c1 …] over 8 tiles = 16 values.
        let (l, h) = (_mm256_unpacklo_epi32(qr[0], qr[1]), _mm256_unpackhi_epi32(qr[0], qr[1]));
        let (a, b) = (_mm256_permute2x128_si256::<0x20>(l, h), _mm256_permute2x128_si256::<0x31>(l, h));
        let w = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi32(a, b));
        let (w0, w1) = (_mm256_castsi256_si128(w), _mm256_extracti128_si256::<1>(w));
        bytes[row] = if g.out_i8 { _mm_packs_epi16(w0, w1) } else { _mm_packus_epi16(w0, w1) };
    }
    let (ty, tx) = (ty0 + j0 / tw, j0 % tw);
    // SAFETY: the whole stores cover rows 2ty, 2ty + 1 from column 2tx, in bounds by the
    // condition; the runs write only outputs inside the plane.
    unsafe {
        if n == 8 && tx + 8 <= tw && 2 * tx + 16 <= g.ow && 2 * ty + 1 < g.oh {
            for (row, b) in bytes.iter().enumerate() {
                _mm_storeu_si128(plane.add((2 * ty + row) * g.ow + 2 * tx).cast(), *b);
            }
            return;
        }
        let mut buf = [[0u8; 16]; 2];
        for row in 0..2 {
            _mm_storeu_si128(buf[row].as_mut_ptr().cast(), bytes[row]);
        }
        let mut l = 0;
        while l < n {
            let (ty, tx) = (ty0 + (j0 + l) / tw, (j0 + l) % tw);
            let run = (tw - tx).min(n - l);
            let cols = (2 * run).min(g.ow - 2 * tx);
            for (row, b) in buf.iter().enumerate() {
                let oy = 2 * ty + row;
                if oy < g.oh {
                    std::ptr::copy_nonoverlapping(b.as_ptr().add(2 * l), plane.add(oy * g.ow + 2 * tx), cols);
                }
            }
            l += run;
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    /// The direct conv of the same geometry, requantized as the kernel does (the reference's
    /// integer semantics): one output byte per (channel, row, column).
    fn direct(g: &QwGeo, x: &[u8], w: &[i32], bias: &[i32], scale: &[f32]) -> Vec<u8> {
        let zx = if g.x_i8 { g.zx + 128 } else { g.zx };
        let xv = |c: usize, iy: isize, ix: isize| -> i32 {
            if iy < 0 || ix < 0 || iy as usize >= g.ih || ix as usize >= g.iw {
                return 0;
            }
            let b = x[(c * g.ih + iy as usize) * g.iw + ix as usize] ^ if g.x_i8 { 0x80 } else { 0 };
            i32::from(b) - zx
        };
        let mut y = vec![0u8; g.c_out * g.oh * g.ow];
        for m in 0..g.c_out {
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let mut acc = bias[m];
                    for c in 0..g.c_in {
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let v = xv(c, (oy + ky) as isize - g.ph as isize, (ox + kx) as isize - g.pw as isize);
                                acc = acc.wrapping_add(v * w[((m * g.c_in + c) * 3 + ky) * 3 + kx]);
                            }
                        }
                    }
                    let f = (acc as f32 * scale[m]).max((g.lo - g.zy) as f32).min((g.hi - g.zy) as f32);
                    let q = f.round_ties_even() as i32 + g.zy;
                    y[(m * g.oh + oy) * g.ow + ox] = q as u8;
                }
            }
        }
        y
    }

    fn run(g: &QwGeo, x: &[u8], w: &[i32], bias: &[i32], scale: &[f32]) -> Vec<u8> {
        let a = transform_weights(w, g.c_out, g.c_in);
        let table = g.table();
        let mut y = vec![0xa5u8; g.c_out * g.oh * g.ow + 64];
        let mut scratch = vec![0u64; g.scratch_bytes() / 8 + 8];
        let (th, _) = g.tiles();
        let mut ty = 0;
        while ty < th {
            let ty1 = (ty + g.rows_per_unit).min(th);
            // SAFETY: AVX2 checked by the caller; every buffer sized per the contract.
            unsafe {
                qwino_f2(
                    table.as_ptr(),
                    x.as_ptr(),
                    a.as_ptr(),
                    bias.as_ptr(),
                    scale.as_ptr(),
                    y.as_mut_ptr(),
                    ty,
                    ty1,
                    scratch.as_mut_ptr().cast(),
                )
            };
            ty = ty1;
        }
        assert!(y[g.c_out * g.oh * g.ow..].iter().all(|&b| b == 0xa5), "wrote past the output");
        y.truncate(g.c_out * g.oh * g.ow);
        y
    }

    #[test]
    fn winograd_f2_equals_the_direct_conv_bit_for_bit() {
        if !is_x86_feature_detected!("avx2") {
            crate::testing::cpu_skip("winograd_f2_equals_the_direct_conv_bit_for_bit", "avx2");
            return;
        }
        let pads = (0usize..3, 0usize..3, 0usize..3, 0usize..3);
        let cases = (1usize..40, 1usize..13, 1usize..23, 1usize..23, pads, any::<u64>(), 1usize..5);
        let mut runner = TestRunner::new(Config { cases: 1000, ..Config::default() });
        let ran = std::cell::Cell::new(0usize);
        runner
            .run(&cases, |(c_in, c_out, ih, iw, (ph, pw, pb, pr), seed, rows)| {
                // Leading pads (ph, pw), trailing (pb, pr): outputs ih + ph + pb − 2 (at least 1).
                prop_assume!(ih + ph + pb >= 3 && iw + pw + pr >= 3);
                let mut s = seed | 1;
                let mut next = || {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    s
                };
                let x_i8 = next() % 2 == 0;
                let out_i8 = next() % 2 == 0;
                let extreme = next() % 4 == 0;
                let g = QwGeo {
                    ih,
                    iw,
                    oh: ih + ph + pb - 2,
                    ow: iw + pw + pr - 2,
                    ph,
                    pw,
                    c_in,
                    c_out,
                    zx: if x_i8 { (next() % 256) as i32 - 128 } else { (next() % 256) as i32 },
                    zy: if out_i8 { (next() % 256) as i32 - 128 } else { (next() % 256) as i32 },
                    lo: if out_i8 { -128 } else { 0 },
                    hi: if out_i8 { 127 } else { 255 },
                    x_i8,
                    out_i8,
                    rows_per_unit: rows,
                };
                let (lo, hi) = (g.lo.max(g.zy - 40), g.hi.min(g.zy + 200));
                let g = QwGeo { lo, hi, zy: g.zy.clamp(lo, hi), ..g };
                let x: Vec<u8> = (0..c_in * ih * iw).map(|_| if extreme { 255 } else { next() as u8 }).collect();
                // Centred weights of u8 (zero point up to 255 away) or i8 weights.
                let w: Vec<i32> =
                    (0..c_out * c_in * 9)
                        .map(|_| {
                            if extreme { if next() % 2 == 0 { 255 } else { -255 } } else { (next() % 511) as i32 - 255 }
                        })
                        .collect();
                prop_assume!(QwGeo::exact_bound(&w, c_out));
                let bias: Vec<i32> = (0..c_out).map(|_| (next() % 20001) as i32 - 10000).collect();
                let scale: Vec<f32> = (0..c_out).map(|_| 1.0 / (1 + next() % 3000) as f32).collect();
                let want = direct(&g, &x, &w, &bias, &scale);
                let got = run(&g, &x, &w, &bias, &scale);
                prop_assert_eq!(got, want, "{:?}", g);
                ran.set(ran.get() + 1);
                Ok(())
            })
            .unwrap();
        // Rejections (geometry, bound) are rare: most of the 1,000 cases reach the kernel.
        assert!(ran.get() >= 900, "only {} cases ran", ran.get());
    }
}
