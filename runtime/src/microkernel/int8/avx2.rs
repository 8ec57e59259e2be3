//! The AVX2 int8 tile: 4 rows × 16 columns, 8 ymm i32 accumulators. Per K quad and row, the
//! weight quad broadcast to 8 lanes, `vpmaddubsw` (u8 × i8 pair sums in a saturating i16) and
//! `vpmaddwd` by ones (the two pair sums of each column in an i32); exact because [`pack_a`]
//! packs the weights of layers where a pair could saturate as i16 ([`WIDE`]), which this tile
//! multiplies by inputs widened to i16 (`vpmovzxbw` + `vpmaddwd`, [`product_wide`]).
//!
//! The loop is bound by the two vector multiply pipes (two multiplies per 8 columns × 4 K),
//! so a taller tile is not faster: 4 × 16 uses 14 of the 16 ymm registers with no spills
//! (`objdump -d`); 6 × 16 spills an accumulator (a store and a load per quad) and measured the
//! same to 3% slower. Measured on the Zen 4 host (`examples/int8_tile_bench.rs`, one core):
//! about 220 GOP/s in L1, 170–220 GOP/s over conv-sized GEMMs. Wide panels take the same
//! multiplies per MAC but more vector ALU work (the widening, an add per 16 MACs instead of
//! per 32): 0.75–0.8 of that on an AVX2-only Zen 4 VM (140 against 180 GOP/s in L1); the
//! split panels they replaced (two i8 halves per weight, twice the multiplies) ran at half.
//!
//! [`pack_a`]: super::pack_a

use std::arch::x86_64::*;

use super::{ACCUMULATE, AVX2_MR as MR, AVX2_NR as NR, FINAL, OUT_F32, OUT_I8, OUT_I32, OUT_SHIFT, OUT_U8, WIDE};

/// The tile of the module doc of [`int8`](super) with `mr = 4`, `nr = 16`: the B strip is
/// `[k4][16][4]` u8 (64 bytes per quad); the A panel `[k4][4][4]` i8 (16 bytes per quad), or
/// with [`WIDE`] `[k4][4][4]` little-endian i16 (32 bytes per quad, as
/// [`pack_a`](super::pack_a) writes them).
///
/// Without [`WIDE`], exact only when no pair of adjacent weights (`k = 4q, 4q+1` or
/// `4q+2, 4q+3`) read in one `vpmaddubsw` can leave the i16 range times inputs in `0..=255`:
/// panels from `pack_a`. Wide panels are exact for any i8 weights.
///
/// # Safety
/// The host supports AVX2 (checked by `qkernels`, the only place this address is taken).
/// `flags` holds `1 ≤ rows ≤ 4` and `1 ≤ cols ≤ 16`. `a` points at `16·k4` readable bytes
/// (`32·k4` with [`WIDE`]) and `b` at `64·k4` (rows and columns past the valid ones may hold
/// anything: they are computed, never stored). With [`ACCUMULATE`], `part` points at a
/// readable `rows × cols` i32 tile of row stride `ldp` elements; without [`FINAL`], at a
/// writable one. With [`FINAL`]: `out` points at a writable `rows × cols` tile of row stride
/// `ldo` elements of the output kind (i32, f32 or bytes); `bias` at `rows` i32 or null; `zw`
/// at `rows` i32 or null, and when non-null `colsum` at `cols` i32; `scale` at `rows` f32
/// unless the kind is I32; `qp` at 3 i32 `[zy, lo, hi]` for U8/I8 (as [`QOut`](super::QOut)
/// says). Unused pointers may be null. `out` and `part` do not overlap any input.
#[target_feature(enable = "avx2")]
pub(super) unsafe extern "C" fn qgemm_4x16(
    k4: usize,
    a: *const i8,
    b: *const u8,
    part: *mut i32,
    ldp: usize,
    out: *mut u8,
    ldo: usize,
    flags: u32,
    bias: *const i32,
    scale: *const f32,
    zw: *const i32,
    colsum: *const i32,
    qp: *const i32,
) {
    // SAFETY: the caller's contract above.
    unsafe {
        let acc = if flags & WIDE != 0 { product_wide(k4, a, b) } else { product(k4, a, b) };
        let t = Tile { part, ldp, out, ldo, flags, bias, scale, zw, colsum, qp };
        if flags & FINAL == 0 {
            store_part(acc, &t);
            return;
        }
        match (flags >> OUT_SHIFT) & 3 {
            OUT_I32 => finish::<OUT_I32>(acc, &t),
            OUT_F32 => finish::<OUT_F32>(acc, &t),
            OUT_U8 => finish::<OUT_U8>(acc, &t),
            _ => finish::<OUT_I8>(acc, &t),
        }
    }
}

/// The epilogue's arguments (as passed to the kernel).
struct Tile {
    part: *mut i32,
    ldp: usize,
    out: *mut u8,
    ldo: usize,
    flags: u32,
    bias: *const i32,
    scale: *const f32,
    zw: *const i32,
    colsum: *const i32,
    qp: *const i32,
}

impl Tile {
    fn rows(&self) -> usize {
        ((self.flags >> 8) & 0xff) as usize
    }

    fn cols(&self) -> usize {
        ((self.flags >> 16) & 0xff) as usize
    }
}

/// `Σ_j a[j]·b[j]` over each column's quad: `vpmaddubsw` then `vpmaddwd` by ones.
#[target_feature(enable = "avx2")]
#[inline]
fn quad_dot(b: __m256i, w: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(b, w), _mm256_set1_epi16(1))
}

/// Row `r`'s 4 weights at `a`, in every lane.
///
/// # Safety
/// `a` readable for 4 bytes.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn weights(a: *const i8) -> __m256i {
    // SAFETY: the caller's contract.
    _mm256_set1_epi32(unsafe { a.cast::<i32>().read_unaligned() })
}

/// The 4 × 16 product as 8 vectors, row-major (`[r·2 + half]`).
///
/// # Safety
/// AVX2; `a` and `b` hold `16·k4` and `64·k4` bytes.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn product(k4: usize, a: *const i8, b: *const u8) -> [__m256i; 2 * MR] {
    let mut acc = [_mm256_setzero_si256(); 2 * MR];
    let (mut a, mut b) = (a, b);
    // SAFETY: each quad reads `4·MR` bytes of `a` and 64 of `b`, inside the caller's buffers.
    unsafe {
        for _ in 0..k4 {
            let b0 = _mm256_loadu_si256(b.cast());
            let b1 = _mm256_loadu_si256(b.add(32).cast());
            for r in 0..MR {
                let w = weights(a.add(4 * r));
                acc[2 * r] = _mm256_add_epi32(acc[2 * r], quad_dot(b0, w));
                acc[2 * r + 1] = _mm256_add_epi32(acc[2 * r + 1], quad_dot(b1, w));
            }
            a = a.add(4 * MR);
            b = b.add(4 * NR);
        }
    }
    acc
}

/// [`product`] over a wide panel: each quad holds the 4 × 4 weights as i16 (row `r` at byte
/// `8·r`), multiplied by the inputs widened to i16 with `vpmaddwd` (exact: no i16 sum). Two
/// passes over the strip, 8 columns each: per quad 2 `vpmovzxbw` (4 columns × 4 K each), 4
/// weight broadcasts and 8 `vpmaddwd` into 8 accumulators whose lanes hold the two pair sums
/// of a column (`[c0 k01, c0 k23, c1 k01, …]`), folded by `vphaddd` at the end. The same
/// multiplies per MAC as the unsplit `vpmaddubsw` + `vpmaddwd` loop, half those of summing two
/// halves of each weight.
///
/// # Safety
/// AVX2; `a` and `b` hold `32·k4` and `64·k4` bytes.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn product_wide(k4: usize, a: *const i8, b: *const u8) -> [__m256i; 2 * MR] {
    let mut out = [_mm256_setzero_si256(); 2 * MR];
    for h in 0..2 {
        // acc[2r + g]: row r, columns 8h + 4g .. 8h + 4g + 4, two lanes per column.
        let mut acc = [_mm256_setzero_si256(); 2 * MR];
        let (mut a, mut b) = (a, b.wrapping_add(32 * h));
        // SAFETY: each quad reads `8·MR` bytes of `a` and bytes `32h..32h + 32` of the 64 of
        // `b`'s quad, inside the caller's buffers.
        unsafe {
            for _ in 0..k4 {
                let b0 = _mm256_cvtepu8_epi16(_mm_loadu_si128(b.cast()));
                let b1 = _mm256_cvtepu8_epi16(_mm_loadu_si128(b.add(16).cast()));
                for r in 0..MR {
                    let w = _mm256_set1_epi64x(a.add(8 * r).cast::<i64>().read_unaligned());
                    acc[2 * r] = _mm256_add_epi32(acc[2 * r], _mm256_madd_epi16(b0, w));
                    acc[2 * r + 1] = _mm256_add_epi32(acc[2 * r + 1], _mm256_madd_epi16(b1, w));
                }
                a = a.add(8 * MR);
                b = b.add(4 * NR);
            }
        }
        for r in 0..MR {
            // [c0 c1 c4 c5 | c2 c3 c6 c7] → columns in order.
            let s = _mm256_hadd_epi32(acc[2 * r], acc[2 * r + 1]);
            out[2 * r + h] = _mm256_permute4x64_epi64::<0b11_01_10_00>(s);
        }
    }
    out
}

/// Lanes `< n` of an 8-lane vector, as a mask.
#[target_feature(enable = "avx2")]
#[inline]
fn mask(n: usize) -> __m256i {
    _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
}

/// 8 i32 from `p`, only the lanes of `m` read (others 0) unless `full`.
///
/// # Safety
/// AVX2; `p` readable for the lanes of `m` (all 8 when `full`).
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn load(p: *const i32, full: bool, m: __m256i) -> __m256i {
    // SAFETY: masked-out lanes are not accessed (`vpmaskmovd` semantics).
    unsafe { if full { _mm256_loadu_si256(p.cast()) } else { _mm256_maskload_epi32(p, m) } }
}

/// Stores the lanes of `m` of `v` at `p` (all 8 when `full`).
///
/// # Safety
/// AVX2; `p` writable for the lanes of `m` (all 8 when `full`).
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn store(p: *mut i32, full: bool, m: __m256i, v: __m256i) {
    // SAFETY: masked-out lanes are not accessed (`vpmaskmovd` semantics).
    unsafe { if full { _mm256_storeu_si256(p.cast(), v) } else { _mm256_maskstore_epi32(p, m, v) } }
}

/// A non-final tile: `(+ part)`, stored to `part`.
///
/// # Safety
/// The kernel's contract on `part`.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn store_part(acc: [__m256i; 2 * MR], t: &Tile) {
    let (rows, cols) = (t.rows(), t.cols());
    let m = [mask(cols), mask(cols.saturating_sub(8))];
    let full = [cols >= 8, cols >= 16];
    // SAFETY: only the valid rows and (masked) columns of the caller's `part` tile are touched.
    unsafe {
        for r in 0..MR {
            if r >= rows {
                break;
            }
            for h in 0..2 {
                if h * 8 >= cols {
                    break;
                }
                let p = t.part.add(r * t.ldp + 8 * h);
                let mut v = acc[2 * r + h];
                if t.flags & ACCUMULATE != 0 {
                    v = _mm256_add_epi32(v, load(p, full[h], m[h]));
                }
                store(p, full[h], m[h], v);
            }
        }
    }
}

/// A final tile: `(+ part) + bias − zw·colsum`, converted to the output kind `KIND` and
/// stored to `out`.
///
/// # Safety
/// The kernel's contract on `part`, `out` and the epilogue's pointers.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn finish<const KIND: u32>(acc: [__m256i; 2 * MR], t: &Tile) {
    let (rows, cols) = (t.rows(), t.cols());
    let m = [mask(cols), mask(cols.saturating_sub(8))];
    let full = [cols >= 8, cols >= 16];
    let zero = _mm256_setzero_si256();
    // SAFETY: only the valid rows and (masked) columns of the caller's tiles are touched;
    // every pointer is used only as the kernel's contract allows for this kind and flags.
    unsafe {
        let colsum = if t.zw.is_null() {
            [zero; 2]
        } else {
            [load(t.colsum, full[0], m[0]), if cols > 8 { load(t.colsum.add(8), full[1], m[1]) } else { zero }]
        };
        let (zy, lo, hi) = if KIND == OUT_U8 || KIND == OUT_I8 {
            let [zy, lo, hi] = [*t.qp, *t.qp.add(1), *t.qp.add(2)];
            (_mm256_set1_epi32(zy), _mm256_set1_ps((lo - zy) as f32), _mm256_set1_ps((hi - zy) as f32))
        } else {
            (zero, _mm256_setzero_ps(), _mm256_setzero_ps())
        };
        for r in 0..MR {
            if r >= rows {
                break;
            }
            let bias = _mm256_set1_epi32(if t.bias.is_null() { 0 } else { *t.bias.add(r) });
            let zw = _mm256_set1_epi32(if t.zw.is_null() { 0 } else { *t.zw.add(r) });
            let scale = _mm256_set1_ps(if KIND == OUT_I32 { 0.0 } else { *t.scale.add(r) });
            let mut v = [zero; 2];
            for h in 0..2 {
                v[h] = acc[2 * r + h];
                if t.flags & ACCUMULATE != 0 && h * 8 < cols {
                    v[h] = _mm256_add_epi32(v[h], load(t.part.add(r * t.ldp + 8 * h), full[h], m[h]));
                }
                v[h] = _mm256_add_epi32(v[h], bias);
                if !t.zw.is_null() {
                    v[h] = _mm256_sub_epi32(v[h], _mm256_mullo_epi32(zw, colsum[h]));
                }
            }
            let at = r * t.ldo;
            match KIND {
                OUT_I32 | OUT_F32 => {
                    for h in 0..2 {
                        if h * 8 >= cols {
                            break;
                        }
                        let y = if KIND == OUT_I32 {
                            v[h]
                        } else {
                            _mm256_castps_si256(_mm256_mul_ps(_mm256_cvtepi32_ps(v[h]), scale))
                        };
                        store(t.out.cast::<i32>().add(at + 8 * h), full[h], m[h], y);
                    }
                }
                _ => {
                    let mut y = [zero; 2];
                    for h in 0..2 {
                        let f = _mm256_mul_ps(_mm256_cvtepi32_ps(v[h]), scale);
                        // `max(f, lo)` returns `lo` when `f` is NaN (the second operand).
                        let f = _mm256_min_ps(_mm256_max_ps(f, lo), hi);
                        y[h] = _mm256_add_epi32(_mm256_cvtps_epi32(f), zy);
                    }
                    // In range for the output type, so the saturating packs are exact:
                    // i32 → i16 (lanes interleaved by 128-bit halves, then put in order) → bytes.
                    let w = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi32(y[0], y[1]));
                    let (w0, w1) = (_mm256_castsi256_si128(w), _mm256_extracti128_si256::<1>(w));
                    let bytes = if KIND == OUT_U8 { _mm_packus_epi16(w0, w1) } else { _mm_packs_epi16(w0, w1) };
                    let dst = t.out.add(at);
                    if cols == NR {
                        _mm_storeu_si128(dst.cast(), bytes);
                    } else {
                        store_bytes(dst, bytes, cols);
                    }
                }
            }
        }
    }
}

/// Stores the first `n < 16` bytes of `v` at `dst`, in pieces of 8, 4, 2 and 1 (a `memcpy`
/// call, which LLVM makes of a byte loop, costs more).
///
/// # Safety
/// AVX2; `dst` writable for `n` bytes.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn store_bytes(dst: *mut u8, v: __m128i, n: usize) {
    let (mut rest, hi) = (_mm_cvtsi128_si64(v) as u64, _mm_extract_epi64::<1>(v) as u64);
    let mut at = 0;
    // SAFETY: the pieces cover `[0, n)` exactly.
    unsafe {
        if n & 8 != 0 {
            dst.cast::<u64>().write_unaligned(rest);
            (rest, at) = (hi, 8);
        }
        if n & 4 != 0 {
            dst.add(at).cast::<u32>().write_unaligned(rest as u32);
            (rest, at) = (rest >> 32, at + 4);
        }
        if n & 2 != 0 {
            dst.add(at).cast::<u16>().write_unaligned(rest as u16);
            (rest, at) = (rest >> 16, at + 2);
        }
        if n & 1 != 0 {
            *dst.add(at) = rest as u8;
        }
    }
}
