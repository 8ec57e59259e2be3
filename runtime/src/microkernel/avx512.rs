//! The AVX-512F f32 register tile: the 6×16 tile of [`avx2`](super::avx2) (same packing, same
//! C signatures, same contract) with one zmm register per tile row. Per `k`: one zmm load of
//! the 16 B floats, 6 broadcasts of A, 6 `vfmadd231ps zmm`. Six dependent FMA chains cannot
//! keep two 512-bit FMA ports busy (4-cycle latency × 2 ports wants 8 in flight), so even and
//! odd `k` go to two accumulator sets (12 zmm), summed once at the end. The epilogue is the
//! AVX2 tile's (`avx2::store`): each zmm is split into its two ymm halves, so bias, residual
//! and the activations have exactly one implementation.
//!
//! Measured on the Sapphire Rapids host (`examples/sgemm_tile_bench.rs`, one pinned core,
//! another user's build running): a full tile with bias and ReLU at k = 256 (operands in L1)
//! runs 151–161 GFLOP/s against the AVX2 tile's 117–121; at k = 64, 143–150 against 110–115;
//! at k = 1024 (L2) 109–128 against 110. The two accumulator sets against one (the same
//! loop with six zmm accumulators, in a stand-alone copy): 151–157 against 139–140 GFLOP/s at
//! k = 256, 139–143 against 126–132 at k = 64, equal at k = 1024, so two are kept. The
//! row-offset variant is bound by its scattered row loads: about 95 GFLOP/s on both tiles.
//!
//! Summation order: per row and column, the even-`k` and odd-`k` partial sums, then their sum.
//! That differs from the AVX2 tile (one chain over all `k`), so the two tiers agree up to float
//! reordering; each is deterministic, so one tier gives the same bits run to run and for any
//! thread count.

use std::arch::x86_64::*;

use super::avx2::store;
use super::{MR, NR};

/// [`avx2::sgemm_6x16`](super::avx2::sgemm_6x16) on zmm registers: the same contract, and
/// the same C signature ([`SgemmFn`](super::avx2::SgemmFn)).
///
/// # Safety
/// The host supports AVX-512F, AVX2 and FMA (checked by `select`, the only place this address
/// is taken); otherwise the contract of `avx2::sgemm_6x16`.
#[target_feature(enable = "avx512f,avx2,fma")]
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
    unsafe { store(halves(product(k, a, b)), c, ldc, flags, bias, residual, p0, p1) }
}

/// [`avx2::sgemm_6x16_rows`](super::avx2::sgemm_6x16_rows) on zmm registers: row `kk` of B
/// is the 16 f32 at `x + offs[kk]`. The sums are the same operations in the same order as
/// [`sgemm_6x16`] on the packed copy of those rows, so the two give the same bits.
///
/// # Safety
/// As [`sgemm_6x16`], with `b` replaced by: `offs` points at `k` readable i64 and
/// `x.offset(offs[kk])` at 16 readable f32 for every `kk < k`.
#[target_feature(enable = "avx512f,avx2,fma")]
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
    unsafe { store(halves(product_rows(k, a, x, offs)), c, ldc, flags, bias, residual, p0, p1) }
}

/// The tile's rows as the AVX2 tile's 12 vectors (`[r·2 + half]`). The upper half is
/// `vextractf64x4` (AVX-512F; `vextractf32x8` would need DQ).
#[target_feature(enable = "avx512f,avx2,fma")]
fn halves(rows: [__m512; MR]) -> [__m256; 2 * MR] {
    let mut out = [_mm256_setzero_ps(); 2 * MR];
    for (r, &row) in rows.iter().enumerate() {
        out[2 * r] = _mm512_castps512_ps256(row);
        out[2 * r + 1] = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(row)));
    }
    out
}

/// `acc[r] += a[r]·b` for the 6 rows: one `k` step.
///
/// # Safety
/// `a` points at 6 readable f32.
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
unsafe fn step(acc: &mut [__m512; MR], a: *const f32, b: __m512) {
    for (r, acc) in acc.iter_mut().enumerate() {
        // SAFETY: `r < 6` (the caller's contract).
        let ar = _mm512_set1_ps(unsafe { *a.add(r) });
        *acc = _mm512_fmadd_ps(ar, b, *acc);
    }
}

/// The 6×16 product, one zmm per row: even `k` into one set of accumulators, odd `k` into the
/// other, then `even + odd`.
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn product(k: usize, a: *const f32, b: *const f32) -> [__m512; MR] {
    let (mut even, mut odd) = ([_mm512_setzero_ps(); MR], [_mm512_setzero_ps(); MR]);
    // SAFETY: `a` and `b` hold `6·k` and `16·k` f32 (the caller's contract).
    unsafe {
        for kk in (0..k & !1).step_by(2) {
            step(&mut even, a.add(kk * MR), _mm512_loadu_ps(b.add(kk * NR)));
            step(&mut odd, a.add((kk + 1) * MR), _mm512_loadu_ps(b.add((kk + 1) * NR)));
        }
        if k % 2 == 1 {
            step(&mut even, a.add((k - 1) * MR), _mm512_loadu_ps(b.add((k - 1) * NR)));
        }
    }
    sum(even, odd)
}

/// [`product`] with row `kk` of B at `x + offs[kk]`.
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn product_rows(k: usize, a: *const f32, x: *const f32, offs: *const i64) -> [__m512; MR] {
    let (mut even, mut odd) = ([_mm512_setzero_ps(); MR], [_mm512_setzero_ps(); MR]);
    // SAFETY: `a` holds `6·k` f32, `offs` `k` offsets of 16 readable f32 each (the caller's
    // contract).
    unsafe {
        for kk in (0..k & !1).step_by(2) {
            step(&mut even, a.add(kk * MR), row(x, offs, kk));
            step(&mut odd, a.add((kk + 1) * MR), row(x, offs, kk + 1));
        }
        if k % 2 == 1 {
            step(&mut even, a.add((k - 1) * MR), row(x, offs, k - 1));
        }
    }
    sum(even, odd)
}

/// Row `kk` of B in place, prefetching the same row of the next strip, which the driver reads
/// next: a hint (it never faults, even past the input's end), as in the AVX2 tile.
///
/// # Safety
/// `offs` points at more than `kk` i64 and `x.offset(offs[kk])` at 16 readable f32.
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
unsafe fn row(x: *const f32, offs: *const i64, kk: usize) -> __m512 {
    // SAFETY: the caller's contract.
    unsafe {
        let b = x.offset(*offs.add(kk) as isize);
        _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(NR).cast());
        _mm512_loadu_ps(b)
    }
}

/// `even + odd`, row by row.
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
fn sum(even: [__m512; MR], odd: [__m512; MR]) -> [__m512; MR] {
    let mut out = even;
    for (o, v) in out.iter_mut().zip(odd) {
        *o = _mm512_add_ps(*o, v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::{F32Tile, avx2, code_mapping_end, each_tile_or_skip};
    use super::*;

    /// Whether `code[i..]` starts with an EVEX-encoded `vfmadd231ps` on zmm registers
    /// (`EVEX.512.66.0F38.W0 B8 /r`): byte 0x62, then P0 with map `0F38` (`mmm` = 010 in bits
    /// 2..0), P1 with W = 0, the fixed bit 2 set and `pp` = 01 (the 66 prefix), P2 with vector
    /// length `L'L` = 10 (512 bits) in bits 6..5, then opcode 0xB8. (W = 1 is `vfmadd231pd`;
    /// the VEX forms on xmm/ymm start with 0xC4.)
    fn is_vfmadd231ps_zmm(code: &[u8]) -> bool {
        matches!(code, [0x62, p0, p1, p2, 0xb8, ..] if p0 & 0x07 == 0x02 && p1 & 0x87 == 0x05 && p2 & 0x60 == 0x40)
    }

    #[test]
    fn vfmadd231ps_matcher_recognizes_the_encodings_objdump_shows() {
        // Bytes as `objdump -d` shows them (assembled by GNU as 2.x): `vfmadd231ps zmm0, zmm1,
        // zmm2`, `zmm17, zmm19, zmm18`, and with a broadcast memory operand
        // `dword ptr [rdi]{1to16}`.
        assert!(is_vfmadd231ps_zmm(&[0x62, 0xf2, 0x75, 0x48, 0xb8, 0xc2]));
        assert!(is_vfmadd231ps_zmm(&[0x62, 0xa2, 0x65, 0x40, 0xb8, 0xca]));
        assert!(is_vfmadd231ps_zmm(&[0x62, 0xf2, 0x75, 0x58, 0xb8, 0x07]));
        // Not matched: the ymm and xmm EVEX forms, `vfmadd231pd zmm`, `vfmadd213ps zmm` (0xA8),
        // the VEX ymm form.
        assert!(!is_vfmadd231ps_zmm(&[0x62, 0xe2, 0x75, 0x28, 0xb8, 0xc2])); // ymm16, ymm1, ymm2
        assert!(!is_vfmadd231ps_zmm(&[0x62, 0xe2, 0x75, 0x08, 0xb8, 0xc2])); // xmm16, xmm1, xmm2
        assert!(!is_vfmadd231ps_zmm(&[0x62, 0xf2, 0xf5, 0x48, 0xb8, 0xc2]));
        assert!(!is_vfmadd231ps_zmm(&[0x62, 0xf2, 0x75, 0x48, 0xa8, 0xc2]));
        assert!(!is_vfmadd231ps_zmm(&[0xc4, 0xe2, 0x75, 0xb8, 0xc2]));
    }

    /// The AVX-512 tile really is zmm FMA code: each of its two kernels' first 4 KiB of
    /// machine code (bounded by the end of their executable mapping) holds at least the 12
    /// zmm `vfmadd231ps` of one unrolled step pair.
    #[test]
    fn avx512_tile_machine_code_is_zmm_vfmadd231ps() {
        if !each_tile_or_skip("avx512_tile_machine_code_is_zmm_vfmadd231ps").iter().any(|mk| mk.tile == F32Tile::Avx512)
        {
            return;
        }
        let gemm: avx2::SgemmFn = sgemm_6x16;
        let rows: avx2::SgemmRowsFn = sgemm_6x16_rows;
        for (name, addr) in [("sgemm_6x16", gemm as usize), ("sgemm_6x16_rows", rows as usize)] {
            let Some(end) = code_mapping_end(addr) else {
                eprintln!("avx512_tile_machine_code_is_zmm_vfmadd231ps: skipped, no /proc/self/maps");
                return;
            };
            let len = (end - addr).min(4096);
            // SAFETY: `addr..addr + len` lies inside a mapped, readable executable segment of
            // this process (checked against /proc/self/maps), which stays mapped while the test
            // runs.
            let code = unsafe { std::slice::from_raw_parts(addr as *const u8, len) };
            let found = (0..code.len()).filter(|&i| is_vfmadd231ps_zmm(&code[i..])).count();
            assert!(found >= 12, "{found} zmm vfmadd231ps in the first {len} bytes of {name}");
        }
    }
}
