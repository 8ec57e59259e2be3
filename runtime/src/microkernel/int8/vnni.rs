//! The AVX-512 VNNI int8 tile: 8 rows × 32 columns, 16 zmm i32 accumulators, one `vpdpbusd`
//! per accumulator and K quad (per quad: two 64-byte loads of B, eight `vpbroadcastd` of the
//! weight quads, sixteen `vpdpbusd`; no spills), with the epilogue of the module doc in
//! registers and masked stores for partial tiles.
//!
//! Measured on the Zen 4 host (`examples/int8_tile_bench.rs`, one core): 440 GOP/s with the
//! tile's operands in L1 (about 0.94 `vpdpbusd` zmm per cycle at 3.7 GHz), 390–450 GOP/s over
//! whole conv-sized GEMMs whose N fills the 32-column strips. The tile is near the core's
//! `vpdpbusd` throughput, so no other shape was tried.

use std::arch::x86_64::*;

use super::{ACCUMULATE, FINAL, OUT_F32, OUT_I8, OUT_I32, OUT_SHIFT, OUT_U8, VNNI_MR as MR, VNNI_NR as NR};

/// The tile of the module doc of [`int8`](super) with `mr = 8`, `nr = 32`: the A panel is
/// `[k4][8][4]` i8 (32 bytes per quad), the B strip `[k4][32][4]` u8 (128 bytes per quad).
/// [`WIDE`](super::WIDE) is ignored.
///
/// # Safety
/// The host supports AVX-512 F, BW and VNNI (checked by `qkernels`, the only place this
/// address is taken). `flags` holds `1 ≤ rows ≤ 8` and `1 ≤ cols ≤ 32`. `a` points at
/// `32·k4` readable bytes and `b` at `128·k4` (rows and columns past the valid ones may hold
/// anything: they are computed, never stored). With [`ACCUMULATE`], `part` points at a
/// readable `rows × cols` i32 tile of row stride `ldp` elements; without [`FINAL`], at a
/// writable one. With [`FINAL`]: `out` points at a writable `rows × cols` tile of row stride
/// `ldo` elements of the output kind (i32, f32 or bytes); `bias` at `rows` i32 or null; `zw`
/// at `rows` i32 or null, and when non-null `colsum` at `cols` i32; `scale` at `rows` f32
/// unless the kind is I32; `qp` at 3 i32 `[zy, lo, hi]` for U8/I8 (as [`QOut`](super::QOut)
/// says). Unused pointers may be null. `out` and `part` do not overlap any input.
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vnni")]
pub(super) unsafe extern "C" fn qgemm_8x32(
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
        let acc = product(k4, a, b);
        epilogue(acc, &Tile { part, ldp, out, ldo, flags, bias, scale, zw, colsum, qp });
    }
}

/// The tile's epilogue on 8 rows × 32 columns of sums (`[r·2 + half]`): a non-final tile's
/// store to `part`, or a final tile's bias, zero-point correction and conversion (the module
/// doc of [`int8`](super)). The AMX tile (`amx.rs`) runs its 32 × 32 sums through it 8 rows
/// at a time.
///
/// # Safety
/// AVX-512 F/BW; the kernel contract of [`qgemm_8x32`] on `t`'s pointers, for `t.rows() ≤ 8`.
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vnni")]
#[inline]
pub(super) unsafe fn epilogue(acc: [__m512i; 2 * MR], t: &Tile) {
    // SAFETY: the caller's contract.
    unsafe {
        if t.flags & FINAL == 0 {
            store_part(acc, t);
            return;
        }
        match (t.flags >> OUT_SHIFT) & 3 {
            OUT_I32 => finish::<OUT_I32>(acc, t),
            OUT_F32 => finish::<OUT_F32>(acc, t),
            OUT_U8 => finish::<OUT_U8>(acc, t),
            _ => finish::<OUT_I8>(acc, t),
        }
    }
}

/// The epilogue's arguments (as passed to the kernel).
pub(super) struct Tile {
    pub part: *mut i32,
    pub ldp: usize,
    pub out: *mut u8,
    pub ldo: usize,
    pub flags: u32,
    pub bias: *const i32,
    pub scale: *const f32,
    pub zw: *const i32,
    pub colsum: *const i32,
    pub qp: *const i32,
}

impl Tile {
    fn rows(&self) -> usize {
        ((self.flags >> 8) & 0xff) as usize
    }

    /// The column masks of the two 16-lane halves.
    fn masks(&self) -> [__mmask16; 2] {
        let cols = (self.flags >> 16) & 0xff;
        let half = |n: u32| if n >= 16 { 0xffff } else { ((1u32 << n) - 1) as u16 };
        [half(cols), half(cols.saturating_sub(16))]
    }
}

/// The 8 × 32 product as 16 vectors, row-major (`[r·2 + half]`).
///
/// # Safety
/// AVX-512 F/BW/VNNI; `a` and `b` hold `32·k4` and `128·k4` bytes.
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn product(k4: usize, a: *const i8, b: *const u8) -> [__m512i; 2 * MR] {
    let mut acc = [_mm512_setzero_si512(); 2 * MR];
    let (mut a, mut b) = (a, b);
    // SAFETY: each quad reads 32 bytes of `a` and 128 of `b`, inside the caller's buffers.
    unsafe {
        for _ in 0..k4 {
            let b0 = _mm512_loadu_si512(b.cast());
            let b1 = _mm512_loadu_si512(b.add(64).cast());
            for r in 0..MR {
                // Row `r`'s 4 weights of this quad, in every lane.
                let w = _mm512_set1_epi32(a.add(4 * r).cast::<i32>().read_unaligned());
                acc[2 * r] = _mm512_dpbusd_epi32(acc[2 * r], b0, w);
                acc[2 * r + 1] = _mm512_dpbusd_epi32(acc[2 * r + 1], b1, w);
            }
            a = a.add(4 * MR);
            b = b.add(4 * NR);
        }
    }
    acc
}

/// A non-final tile: `(+ part)`, stored to `part`.
///
/// # Safety
/// The kernel's contract on `part`.
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn store_part(acc: [__m512i; 2 * MR], t: &Tile) {
    let m = t.masks();
    let rows = t.rows();
    // SAFETY: masked-out lanes are not accessed; rows below `rows` and valid columns lie in
    // the caller's `part` tile.
    unsafe {
        for r in 0..MR {
            if r >= rows {
                break;
            }
            for h in 0..2 {
                let p = t.part.add(r * t.ldp + 16 * h);
                let mut v = acc[2 * r + h];
                if t.flags & ACCUMULATE != 0 {
                    v = _mm512_add_epi32(v, _mm512_maskz_loadu_epi32(m[h], p));
                }
                _mm512_mask_storeu_epi32(p, m[h], v);
            }
        }
    }
}

/// A final tile: `(+ part) + bias − zw·colsum`, converted to the output kind `KIND` and
/// stored to `out`.
///
/// # Safety
/// The kernel's contract on `part`, `out` and the epilogue's pointers.
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn finish<const KIND: u32>(acc: [__m512i; 2 * MR], t: &Tile) {
    let m = t.masks();
    let rows = t.rows();
    // SAFETY: masked-out lanes are not accessed; every pointer is used only as the kernel's
    // contract allows for this output kind and these flags.
    unsafe {
        let colsum = if t.zw.is_null() {
            [_mm512_setzero_si512(); 2]
        } else {
            [_mm512_maskz_loadu_epi32(m[0], t.colsum), _mm512_maskz_loadu_epi32(m[1], t.colsum.add(16))]
        };
        let (zy, lo, hi) = if KIND == OUT_U8 || KIND == OUT_I8 {
            let [zy, lo, hi] = [*t.qp, *t.qp.add(1), *t.qp.add(2)];
            (_mm512_set1_epi32(zy), _mm512_set1_ps((lo - zy) as f32), _mm512_set1_ps((hi - zy) as f32))
        } else {
            (_mm512_setzero_si512(), _mm512_setzero_ps(), _mm512_setzero_ps())
        };
        for r in 0..MR {
            if r >= rows {
                break;
            }
            let bias = if t.bias.is_null() { 0 } else { *t.bias.add(r) };
            let zw = if t.zw.is_null() { 0 } else { *t.zw.add(r) };
            let scale = if KIND == OUT_I32 { 0.0 } else { *t.scale.add(r) };
            for h in 0..2 {
                let mut v = acc[2 * r + h];
                if t.flags & ACCUMULATE != 0 {
                    v = _mm512_add_epi32(v, _mm512_maskz_loadu_epi32(m[h], t.part.add(r * t.ldp + 16 * h)));
                }
                v = _mm512_add_epi32(v, _mm512_set1_epi32(bias));
                if !t.zw.is_null() {
                    v = _mm512_sub_epi32(v, _mm512_mullo_epi32(_mm512_set1_epi32(zw), colsum[h]));
                }
                let at = r * t.ldo + 16 * h;
                match KIND {
                    OUT_I32 => _mm512_mask_storeu_epi32(t.out.cast::<i32>().add(at), m[h], v),
                    OUT_F32 => {
                        let f = _mm512_mul_ps(_mm512_cvtepi32_ps(v), _mm512_set1_ps(scale));
                        _mm512_mask_storeu_ps(t.out.cast::<f32>().add(at), m[h], f);
                    }
                    _ => {
                        let f = _mm512_mul_ps(_mm512_cvtepi32_ps(v), _mm512_set1_ps(scale));
                        // `max(f, lo)` returns `lo` when `f` is NaN (the second operand).
                        let f = _mm512_min_ps(_mm512_max_ps(f, lo), hi);
                        let y = _mm512_add_epi32(_mm512_cvtps_epi32(f), zy);
                        // In range for the output type, so truncating to a byte is exact.
                        _mm512_mask_cvtepi32_storeu_epi8(t.out.add(at).cast(), m[h], y);
                    }
                }
            }
        }
    }
}
