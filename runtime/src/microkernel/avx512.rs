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
//! Its two-strip form [`sgemm_6x32_rows`] (the driver pairs adjacent strips of a 1×1 conv that
//! reads its input plane as it writes its output) reads 32 floats per row and feeds 24
//! accumulators: 119–121 against 91–93 GFLOP/s at k = 256 (2026-12-07, same run); ppocr_v4_det's
//! 96 → 18 conv at 80×80 0.52 → 0.37 ms.
//!
//! Summation order: per row and column, the even-`k` and odd-`k` partial sums, then their sum.
//! That differs from the AVX2 tile (one chain over all `k`), so the two tiers agree up to float
//! reordering; each is deterministic, so one tier gives the same bits run to run and for any
//! thread count.

use std::arch::x86_64::*;

use super::avx2::store;
use super::avx2_small::{SgemmTFn, store_t};
use super::{MR, NR, SmallKernels, T_WIDE, with_act};

/// The small-map kernels on this tile: the 12-pixel transposed tile [`sgemm_12x16_t`], the wide
/// one [`sgemm_6x64_t`] and the AVX2 stride-2 packer (packing is load/store bound; it has no zmm version). Called by
/// `select` only, after it has checked AVX-512F, AVX2 and FMA.
pub(super) fn small_kernels() -> SmallKernels {
    let (t, wide, t32): (SgemmTFn, SgemmTFn, SgemmTFn) = (sgemm_12x16_t, sgemm_6x64_t, sgemm_12x32_t);
    SmallKernels {
        sgemm_t: t as usize as u64,
        t_pixels: T_PIXELS,
        sgemm_t_wide: wide as usize as u64,
        sgemm_t_32: t32 as usize as u64,
        ..super::avx2_small::kernels()
    }
}

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

/// [`sgemm_6x16`] with one chain per element: `Σ_k a·b` accumulated in `k` order from zero
/// with one FMA per step, as the AVX2 tile and onnxruntime's MLAS SGEMM sum. About 8 % slower
/// than the two chains at `k = 256` (see the module doc); ConvTranspose uses it (see
/// `codegen::conv::transpose_cols`) so that an f32 conv-transpose between a DequantizeLinear
/// and a QuantizeLinear rounds as onnxruntime's does.
///
/// # Safety
/// As [`sgemm_6x16`].
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) unsafe extern "C" fn sgemm_6x16_seq(
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
    let mut acc = [_mm512_setzero_ps(); MR];
    // SAFETY: `a` and `b` hold `6·k` and `16·k` f32, and the rest is `sgemm_6x16`'s contract.
    unsafe {
        for kk in 0..k {
            step(&mut acc, a.add(kk * MR), _mm512_loadu_ps(b.add(kk * NR)));
        }
        store(halves(acc), c, ldc, flags, bias, residual, p0, p1)
    }
}

/// Two full 16-pixel strips of [`sgemm_6x16`]'s contract at once: B's second strip is the
/// `16·k` floats after the first (as the packer lays strips out), `c` and `residual` cover 32
/// columns, and `flags` bits 16..24 are ignored (always 32 columns). Per `k`: two zmm loads of
/// B, six broadcasts of A, 12 `vfmadd231ps zmm` into 12 independent chains (each broadcast
/// serves two FMAs; the one-strip tile: one), one chain per element from `kk = 0`. The epilogue
/// is the AVX2 tile's, per strip.
///
/// # Safety
/// The host supports AVX-512F, AVX2 and FMA (checked by `select`, the only place this address
/// is taken); `a` holds `6·k` f32, `b` `32·k`; otherwise `sgemm_6x16`'s contract for a 6 × 32
/// tile.
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) unsafe extern "C" fn sgemm_6x32(
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
    unsafe {
        let (mut s0, mut s1) = ([_mm512_setzero_ps(); MR], [_mm512_setzero_ps(); MR]);
        let b1 = b.add(NR * k);
        for kk in 0..k {
            _mm_prefetch::<_MM_HINT_T0>(a.wrapping_add((kk + 16) * MR).cast());
            let (x0, x1) = (_mm512_loadu_ps(b.add(kk * NR)), _mm512_loadu_ps(b1.add(kk * NR)));
            for r in 0..MR {
                let ar = _mm512_set1_ps(*a.add(kk * MR + r));
                s0[r] = _mm512_fmadd_ps(ar, x0, s0[r]);
                s1[r] = _mm512_fmadd_ps(ar, x1, s1[r]);
            }
        }
        let f = (flags & !0xff_0000) | ((NR as u32) << 16);
        store(halves(s0), c, ldc, f, bias, residual, p0, p1);
        store(halves(s1), c.add(NR), ldc, f, bias, residual.wrapping_add(NR), p0, p1);
    }
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

/// Two adjacent full strips of [`sgemm_6x16_rows`] at once: row `kk` of B is the 32 f32 at
/// `x + offs[kk]` (the first strip's 16, then the second's), `c` and `residual` cover 32
/// columns, and `flags` bits 16..24 are ignored (always 32 columns). Each strip's sums are
/// [`sgemm_6x16_rows`]'s, the same operations in the same order (even and odd `k` apart, then
/// their sum), so pairing strips changes no bit; per `k` the six broadcasts of A serve both
/// strips' FMAs (24 accumulators), which the one-strip tile's scattered row loads left
/// latency-bound.
///
/// # Safety
/// As [`sgemm_6x16_rows`] for a 6 × 32 tile: `x.offset(offs[kk])` points at 32 readable f32
/// for every `kk < k`.
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) unsafe extern "C" fn sgemm_6x32_rows(
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
    unsafe {
        let (s0, s1) = product_rows2(k, a, x, offs);
        let f = (flags & !0xff_0000) | ((NR as u32) << 16);
        store(halves(s0), c, ldc, f, bias, residual, p0, p1);
        store(halves(s1), c.add(NR), ldc, f, bias, residual.wrapping_add(NR), p0, p1);
    }
}

/// Pixels per transposed tile on this tile set: twice the AVX2 transposed tile's 6.
pub(super) const T_PIXELS: usize = 2 * MR;

/// [`avx2_small::sgemm_6x16_t`](super::avx2_small::sgemm_6x16_t) on zmm registers and for 12
/// pixels: `offs` holds 12 offsets and `m` (`flags` bits 8..16) may be up to 12; otherwise the
/// same contract and C signature. One zmm per pixel holds its 16 channels; per `k` one zmm load
/// of the weights, 12 broadcasts, 12 `vfmadd231ps zmm` (12 independent chains keep both
/// 512-bit FMA ports busy), so each input cache line the broadcasts touch serves twice the
/// multiply-adds of a 6-pixel tile. Full and 7..12-pixel tiles sum each element in one chain
/// from `kk = 0` — the AVX2 transposed tile's order, so the two give the same bits there;
/// tiles of 3..6 pixels split even and odd `k` over 6 rows, of ≤ 2 over 2 rows (enough chains;
/// which pixels fall in a partial tile is fixed per layer, so any unit split gives the same
/// bits). The epilogue is the AVX2 transposed tile's (`store_t`, per 6-pixel half).
///
/// # Safety
/// The host supports AVX-512F, AVX2 and FMA (checked by `select`, the only place this address
/// is taken); otherwise the contract of `avx2_small::sgemm_6x16_t` with 12 pixels.
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) unsafe extern "C" fn sgemm_12x16_t(
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
    // SAFETY: the caller's contract above (rows `r < 12` of `offs` are valid pixels).
    unsafe {
        let m = ((flags >> 8) & 0xff) as usize;
        let z = _mm512_setzero_ps();
        let (lo, hi) = if m > MR {
            let acc = product_t12(k, x, lda, offs, w);
            (std::array::from_fn(|r| acc[r]), std::array::from_fn(|r| acc[MR + r]))
        } else if m > 2 {
            (product_t::<MR>(k, x, lda, offs, w), [z; MR])
        } else {
            (product_t::<2>(k, x, lda, offs, w), [z; MR])
        };
        let rows = |f: u32, m: usize| (f & !0xff00) | ((m as u32) << 8);
        with_act!(flags, ACT => {
            store_t::<ACT>(halves(lo), y, ldy, rows(flags, m.min(MR)), bias, residual, p0, p1);
            if m > MR {
                let (y, res) = (y.add(MR), residual.wrapping_add(MR));
                store_t::<ACT>(halves(hi), y, ldy, rows(flags, m - MR), bias, res, p0, p1);
            }
        })
    }
}

/// The wide transposed tile: [`sgemm_12x16_t`]'s contract and C signature for 6 pixels and
/// **64** output channels, with `w` a 64-channel panel (`[k][64]`) and `y`, `bias` and
/// `residual` covering 64 channel rows; `flags` bits 8..16 give the pixels (`1 ≤ m ≤ 6`), bits
/// 16..24 are ignored (always 64 channels). Per `k`: four zmm loads of the weights, six
/// broadcasts, 24 `vfmadd231ps zmm` into 24 independent chains, so each weight load serves six
/// multiply-adds and each broadcast four (the 12 × 16 tile: 12 and 1), and the loop is bound by
/// the FMA ports instead of the loads. Every tile sums each element in one chain from `kk = 0`
/// (the 12-pixel tile's order for its full tiles). The epilogue is `store_t` per 16 channels.
///
/// # Safety
/// The host supports AVX-512F, AVX2 and FMA (checked by `select`, the only place this address
/// is taken); `offs` holds 6 readable offsets (those past `m` any valid pixel's, read and not
/// stored), `x.offset(offs[r] + kk·lda)` is readable for `r < 6`, `kk < k`; `w` holds `64·k`
/// f32; `bias` 64 f32 when `BIAS`; `y` and `residual` (when `RESIDUAL`) a 64 × `m` tile with row
/// stride `ldy`.
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) unsafe extern "C" fn sgemm_6x64_t(
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
        let m = ((flags >> 8) & 0xff) as usize;
        let acc = product_6x64(k, x, lda, offs, w);
        let f = (flags & !0xff_ff00) | ((m as u32) << 8) | ((NR as u32) << 16);
        with_act!(flags, ACT => {
            for j in 0..T_WIDE / NR {
                let block: [__m512; MR] = std::array::from_fn(|r| acc[r * 4 + j]);
                let (yj, bj, rj) = (y.add(j * NR * ldy), bias.wrapping_add(j * NR), residual.wrapping_add(j * NR * ldy));
                store_t::<ACT>(halves(block), yj, ldy, f, bj, rj, p0, p1);
            }
        })
    }
}

/// The two-panel transposed tile: [`sgemm_12x16_t`]'s contract and C signature for up to 12
/// pixels and **32** output channels, with `w` a 32-channel panel (`[k][32]`) and `y`, `bias`
/// and `residual` covering 32 channel rows; bits 16..24 of `flags` are ignored (always 32
/// channels). Per `k`: two zmm loads of the weights, twelve broadcasts, 24 `vfmadd231ps zmm`
/// into 24 independent chains (the 12 × 16 tile: 12 per 13 loads), for layers whose channel
/// tiles are too few or too narrow for the 64-channel tile. Every tile, partial ones too, sums
/// each element in one chain from `kk = 0` (the 12-pixel tile's order for its full tiles). The
/// epilogue is `store_t` per 16 channels and 6 pixels.
///
/// # Safety
/// The host supports AVX-512F, AVX2 and FMA (checked by `select`, the only place this address
/// is taken); `offs` holds 12 readable offsets (those past `m` any valid pixel's, read and not
/// stored), `x.offset(offs[r] + kk·lda)` is readable for `r < 12`, `kk < k`; `w` holds `32·k`
/// f32; `bias` 32 f32 when `BIAS`; `y` and `residual` (when `RESIDUAL`) a 32 × `m` tile with row
/// stride `ldy`.
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) unsafe extern "C" fn sgemm_12x32_t(
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
        let m = ((flags >> 8) & 0xff) as usize;
        let acc = product_12x32(k, x, lda, offs, w);
        let f = |m: usize| (flags & !0xff_ff00) | ((m as u32) << 8) | ((NR as u32) << 16);
        with_act!(flags, ACT => {
            for j in 0..2 {
                let (yj, bj, rj) = (y.add(j * NR * ldy), bias.wrapping_add(j * NR), residual.wrapping_add(j * NR * ldy));
                let lo: [__m512; MR] = std::array::from_fn(|r| acc[2 * r + j]);
                store_t::<ACT>(halves(lo), yj, ldy, f(m.min(MR)), bj, rj, p0, p1);
                if m > MR {
                    let hi: [__m512; MR] = std::array::from_fn(|r| acc[2 * (MR + r) + j]);
                    store_t::<ACT>(halves(hi), yj.add(MR), ldy, f(m - MR), bj, rj.wrapping_add(MR), p0, p1);
                }
            }
        })
    }
}

/// The product of [`sgemm_12x32_t`]: pixel `r`'s channels `16j..16j + 16` in `acc[2r + j]`,
/// one chain per element over `kk` in order.
///
/// # Safety
/// The contract of [`sgemm_12x32_t`] on `x`, `lda`, `offs` and `w`.
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn product_12x32(
    k: usize,
    x: *const f32,
    lda: usize,
    offs: *const i64,
    w: *const f32,
) -> [__m512; 2 * T_PIXELS] {
    let mut acc = [_mm512_setzero_ps(); 2 * T_PIXELS];
    // SAFETY: the caller's contract: `x.offset(offs[r] + kk·lda)` readable for `r < 12`,
    // `kk < k`; `w` holds `32·k` f32.
    unsafe {
        let xr: [*const f32; T_PIXELS] = std::array::from_fn(|r| x.offset(*offs.add(r) as isize));
        let (mut w, mut i) = (w, 0usize);
        for _ in 0..k {
            // Hints (they never fault), as the 12-pixel tile's: the first and last pixels'
            // input 8 K rows ahead, the weights 8 rows ahead (two cache lines a row).
            _mm_prefetch::<_MM_HINT_T0>(xr[0].wrapping_add(i + 8 * lda).cast());
            _mm_prefetch::<_MM_HINT_T0>(xr[T_PIXELS - 1].wrapping_add(i + 8 * lda).cast());
            _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add(8 * 2 * NR).cast());
            _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add(8 * 2 * NR + NR).cast());
            let b = [_mm512_loadu_ps(w), _mm512_loadu_ps(w.add(NR))];
            for r in 0..T_PIXELS {
                let a = _mm512_set1_ps(*xr[r].add(i));
                acc[2 * r] = _mm512_fmadd_ps(a, b[0], acc[2 * r]);
                acc[2 * r + 1] = _mm512_fmadd_ps(a, b[1], acc[2 * r + 1]);
            }
            w = w.add(2 * NR);
            i += lda;
        }
    }
    acc
}

/// The product of [`sgemm_6x64_t`]: pixel `r`'s channels `16j..16j + 16` in `acc[4r + j]`,
/// one chain per element over `kk` in order.
///
/// # Safety
/// The contract of [`sgemm_6x64_t`] on `x`, `lda`, `offs` and `w`.
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn product_6x64(k: usize, x: *const f32, lda: usize, offs: *const i64, w: *const f32) -> [__m512; 4 * MR] {
    let mut acc = [_mm512_setzero_ps(); 4 * MR];
    // SAFETY: the caller's contract: `x.offset(offs[r] + kk·lda)` readable for `r < 6`, `kk < k`;
    // `w` holds `64·k` f32.
    unsafe {
        let xr: [*const f32; MR] = std::array::from_fn(|r| x.offset(*offs.add(r) as isize));
        let (mut w, mut i) = (w, 0usize);
        for _ in 0..k {
            // Hints (they never fault): the weights 8 rows ahead (each 64-float row is 4 cache
            // lines), the first and last pixels' input 8 K rows ahead.
            for l in 0..4 {
                _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add(8 * T_WIDE + 16 * l).cast());
            }
            _mm_prefetch::<_MM_HINT_T0>(xr[0].wrapping_add(i + 8 * lda).cast());
            _mm_prefetch::<_MM_HINT_T0>(xr[MR - 1].wrapping_add(i + 8 * lda).cast());
            let b = [
                _mm512_loadu_ps(w),
                _mm512_loadu_ps(w.add(16)),
                _mm512_loadu_ps(w.add(32)),
                _mm512_loadu_ps(w.add(48)),
            ];
            for r in 0..MR {
                let a = _mm512_set1_ps(*xr[r].add(i));
                for j in 0..4 {
                    acc[4 * r + j] = _mm512_fmadd_ps(a, b[j], acc[4 * r + j]);
                }
            }
            w = w.add(T_WIDE);
            i += lda;
        }
    }
    acc
}

/// The 12-pixel product of [`sgemm_12x16_t`]: pixel `r`'s 16 channels in `acc[r]`, one chain
/// per element over `kk` in order.
///
/// # Safety
/// The contract of [`sgemm_12x16_t`] on `x`, `lda`, `offs` and `w`.
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn product_t12(k: usize, x: *const f32, lda: usize, offs: *const i64, w: *const f32) -> [__m512; T_PIXELS] {
    let mut acc = [_mm512_setzero_ps(); T_PIXELS];
    // SAFETY: the caller's contract: `x.offset(offs[r] + kk·lda)` readable for `r < 12`, `kk < k`;
    // `w` holds `16·k` f32.
    unsafe {
        let xr: [*const f32; T_PIXELS] = std::array::from_fn(|r| x.offset(*offs.add(r) as isize));
        let (mut w, mut i) = (w, 0usize);
        for _ in 0..k {
            // The AVX2 tile's hints (they never fault): the first and last pixels' input 8 K
            // rows ahead, the weights 16 rows ahead. Without the input hints (which cost two
            // registers: 5 pixel offsets are reloaded from the stack each step instead of 3),
            // opennsfw's transposed layers ran 8.4 ms instead of 7.5 (1 thread, same session).
            _mm_prefetch::<_MM_HINT_T0>(xr[0].wrapping_add(i + 8 * lda).cast());
            _mm_prefetch::<_MM_HINT_T0>(xr[T_PIXELS - 1].wrapping_add(i + 8 * lda).cast());
            _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add(16 * NR).cast());
            let b = _mm512_loadu_ps(w);
            for (r, acc) in acc.iter_mut().enumerate() {
                *acc = _mm512_fmadd_ps(_mm512_set1_ps(*xr[r].add(i)), b, *acc);
            }
            w = w.add(NR);
            i += lda;
        }
    }
    acc
}

/// The transposed tile's product for its first `R` pixels (the others zero): pixel `r`'s 16
/// channels in `acc[r]`, even `k` into one set, odd into the other, then `even + odd`.
///
/// # Safety
/// The contract of [`sgemm_12x16_t`] on `x`, `lda`, `offs` (its first `R` rows) and `w`.
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn product_t<const R: usize>(
    k: usize,
    x: *const f32,
    lda: usize,
    offs: *const i64,
    w: *const f32,
) -> [__m512; MR] {
    let (mut even, mut odd) = ([_mm512_setzero_ps(); MR], [_mm512_setzero_ps(); MR]);
    // SAFETY: the caller's contract: `x.offset(offs[r] + kk·lda)` readable for `r < R`, `kk < k`;
    // `w` holds `16·k` f32.
    unsafe {
        let xr: [*const f32; MR] = std::array::from_fn(|r| if r < R { x.offset(*offs.add(r) as isize) } else { x });
        let (mut w, mut i) = (w, 0usize);
        for _ in 0..k / 2 {
            _mm_prefetch::<_MM_HINT_T0>(xr[0].wrapping_add(i + 8 * lda).cast());
            _mm_prefetch::<_MM_HINT_T0>(xr[R - 1].wrapping_add(i + 8 * lda).cast());
            _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add(16 * NR).cast());
            step_t::<R>(&mut even, &xr, i, _mm512_loadu_ps(w));
            step_t::<R>(&mut odd, &xr, i + lda, _mm512_loadu_ps(w.add(NR)));
            w = w.add(2 * NR);
            i += 2 * lda;
        }
        if k % 2 == 1 {
            step_t::<R>(&mut even, &xr, i, _mm512_loadu_ps(w));
        }
    }
    sum(even, odd)
}

/// `acc[r] += x_r[i]·b` for the first `R` pixels: one `k` step of the transposed tile.
///
/// # Safety
/// `xr[r].add(i)` is readable for `r < R`.
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
unsafe fn step_t<const R: usize>(acc: &mut [__m512; MR], xr: &[*const f32; MR], i: usize, b: __m512) {
    for r in 0..R {
        // SAFETY: the caller's contract.
        let ar = _mm512_set1_ps(unsafe { *xr[r].add(i) });
        acc[r] = _mm512_fmadd_ps(ar, b, acc[r]);
    }
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

/// [`product_rows`] of two adjacent strips: row `kk` of the second is the 16 f32 after the
/// first's. Each strip's accumulators take the one-strip product's operations in its order.
///
/// # Safety
/// `a` holds `6·k` f32; `offs` `k` offsets of 32 readable f32 each.
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn product_rows2(k: usize, a: *const f32, x: *const f32, offs: *const i64) -> ([__m512; MR], [__m512; MR]) {
    let z = _mm512_setzero_ps();
    let (mut e0, mut o0, mut e1, mut o1) = ([z; MR], [z; MR], [z; MR], [z; MR]);
    // SAFETY: `a` holds `6·k` f32, `offs` `k` offsets of 32 readable f32 each (the caller's
    // contract).
    unsafe {
        for kk in (0..k & !1).step_by(2) {
            let (b0, b1) = row2(x, offs, kk);
            step(&mut e0, a.add(kk * MR), b0);
            step(&mut e1, a.add(kk * MR), b1);
            let (b0, b1) = row2(x, offs, kk + 1);
            step(&mut o0, a.add((kk + 1) * MR), b0);
            step(&mut o1, a.add((kk + 1) * MR), b1);
        }
        if k % 2 == 1 {
            let (b0, b1) = row2(x, offs, k - 1);
            step(&mut e0, a.add((k - 1) * MR), b0);
            step(&mut e1, a.add((k - 1) * MR), b1);
        }
    }
    (sum(e0, o0), sum(e1, o1))
}

/// [`row`] of two adjacent strips: the 32 f32 at `x + offs[kk]`, prefetching the same row of
/// the next pair.
///
/// # Safety
/// `offs` points at more than `kk` i64 and `x.offset(offs[kk])` at 32 readable f32.
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
unsafe fn row2(x: *const f32, offs: *const i64, kk: usize) -> (__m512, __m512) {
    // SAFETY: the caller's contract.
    unsafe {
        let b = x.offset(*offs.add(kk) as isize);
        _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(2 * NR).cast());
        _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(3 * NR).cast());
        (_mm512_loadu_ps(b), _mm512_loadu_ps(b.add(NR)))
    }
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
pub(super) mod tests {
    use super::super::{F32Tile, avx2, code_mapping_end, each_tile_or_skip};
    use super::*;

    /// Whether `code[i..]` starts with an EVEX-encoded `vfmadd231ps` on zmm registers
    /// (`EVEX.512.66.0F38.W0 B8 /r`): byte 0x62, then P0 with map `0F38` (`mmm` = 010 in bits
    /// 2..0), P1 with W = 0, the fixed bit 2 set and `pp` = 01 (the 66 prefix), P2 with vector
    /// length `L'L` = 10 (512 bits) in bits 6..5, then opcode 0xB8. (W = 1 is `vfmadd231pd`;
    /// the VEX forms on xmm/ymm start with 0xC4.)
    pub(in crate::microkernel) fn is_vfmadd231ps_zmm(code: &[u8]) -> bool {
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

    /// `n` floats in [-1, 1) from a seeded LCG.
    fn lcg(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1664525).wrapping_add(1013904223);
                (s >> 8) as f32 / (1 << 24) as f32 * 2.0 - 1.0
            })
            .collect()
    }

    /// `sgemm_6x16_seq` on every tile the host has (the AVX-512 one, or the AVX2 tile it stands
    /// for) equals an in-order `mul_add` chain from zero bit for bit (tolerance 0: the order is
    /// the contract, onnxruntime's SGEMM order), for K = 1, 2, 24 (ppocr_v4_det's
    /// conv-transpose) and 300; and the two-chain `sgemm_6x16` differs from it on some element
    /// at K = 300, so the comparison can tell the orders apart.
    #[test]
    fn sequential_tile_sums_in_k_order_bit_for_bit() {
        use super::super::tile_flags;
        for mk in each_tile_or_skip("sequential_tile_sums_in_k_order_bit_for_bit") {
            // SAFETY: `select` checked the tile's target features; the buffers hold the 6·k and
            // 16·k operands and the 6 × 16 tile (ldc 16) the contract asks for.
            let seq: avx2::SgemmFn = unsafe { std::mem::transmute(mk.sgemm_6x16_seq as usize) };
            let two: avx2::SgemmFn = unsafe { std::mem::transmute(mk.sgemm_6x16 as usize) };
            let mut differs = false;
            for k in [1, 2, 24, 300] {
                let (a, b) = (lcg(k * MR, 11), lcg(k * NR, 12));
                let run = |f: avx2::SgemmFn| {
                    let mut c = vec![f32::NAN; MR * NR];
                    let flags = tile_flags(MR, NR);
                    let null = std::ptr::null();
                    // SAFETY: as above.
                    unsafe { f(k, a.as_ptr(), b.as_ptr(), c.as_mut_ptr(), NR, flags, null, null, 0.0, 0.0) };
                    c
                };
                let got = run(seq);
                for r in 0..MR {
                    for j in 0..NR {
                        let want = (0..k).fold(0f32, |acc, kk| a[kk * MR + r].mul_add(b[kk * NR + j], acc));
                        assert_eq!(got[r * NR + j].to_bits(), want.to_bits(), "{:?} k {k} ({r}, {j})", mk.tile);
                    }
                }
                differs |= run(two).iter().zip(&got).any(|(x, y)| x.to_bits() != y.to_bits());
            }
            assert!(mk.tile == F32Tile::Avx2 || differs, "the two-chain AVX-512 tile summed in k order everywhere");
        }
    }

    /// Columns of the C and residual tiles the two-strip tests use (32 of them in the tile).
    const LDC: usize = 40;

    /// Runs `case(k, flags, p0, p1, got, want)` (a two-strip tile into `got`, the one-strip
    /// tile twice into `want`, both starting from the same C of 6 rows × [`LDC`]) for K = 1, 7
    /// and 40, every epilogue flag set, four activations and 6, 1 or 4 rows, and checks that
    /// the two agree bit for bit and that nothing outside the 6 × 32 tile was written. Skipped,
    /// saying so, where this host lacks the AVX-512 tile.
    fn two_strip_cases(test: &str, case: impl Fn(usize, u32, f32, f32, &mut [f32], &mut [f32])) {
        use super::super::{ACCUMULATE, Act, BIAS, RESIDUAL, tile_flags};
        if !each_tile_or_skip(test).iter().any(|mk| mk.tile == F32Tile::Avx512) {
            return;
        }
        let c0 = lcg(MR * LDC, 5);
        let acts = [None, Some(Act::Clamp { lo: 0.0, hi: f32::INFINITY }), Some(Act::HardSwish), Some(Act::Sigmoid)];
        for k in [1, 7, 40] {
            for flags in [0, BIAS, RESIDUAL, BIAS | RESIDUAL, ACCUMULATE | RESIDUAL] {
                for act in acts {
                    for m in [MR, 1, 4] {
                        let f = flags | act.map_or(0, Act::flags) | tile_flags(m, NR);
                        let (p0, p1) = act.map_or((0.0, 0.0), Act::params);
                        let (mut got, mut want) = (c0.clone(), c0.clone());
                        case(k, f, p0, p1, &mut got, &mut want);
                        let same = got.iter().zip(&want).all(|(x, y)| x.to_bits() == y.to_bits());
                        assert!(same, "{test}: k {k}, flags {flags:#x}, {act:?}, {m} rows");
                        for (i, (g, c)) in got.iter().zip(&c0).enumerate() {
                            if i / LDC >= m || i % LDC >= 2 * NR {
                                assert_eq!(g.to_bits(), c.to_bits(), "{test}: outside the tile at {i}");
                            }
                        }
                    }
                }
            }
        }
    }

    /// The two-strip tile gives, bit for bit, the AVX2 tile's results on each of its strips
    /// (both sum each element in one chain from `kk = 0`), on every case of
    /// [`two_strip_cases`].
    #[test]
    fn two_strip_tile_gives_the_avx2_tiles_bits_per_strip() {
        let (bias, res) = (lcg(MR, 3), lcg(MR * LDC, 4));
        two_strip_cases("two_strip_tile_gives_the_avx2_tiles_bits_per_strip", |k, f, p0, p1, got, want| {
            let (a, b) = (lcg(MR * k, 1), lcg(2 * NR * k, 2));
            // SAFETY: this host has the AVX-512 tile (`two_strip_cases` checked); the buffers
            // hold the tiles the contracts name (6 rows of 40 columns, 32 used).
            unsafe {
                let (ap, bp, bs, rp) = (a.as_ptr(), b.as_ptr(), bias.as_ptr(), res.as_ptr());
                sgemm_6x32(k, ap, bp, got.as_mut_ptr(), LDC, f, bs, rp, p0, p1);
                for s in 0..2 {
                    let (bs_, cs, rs) = (bp.add(s * NR * k), want.as_mut_ptr().add(s * NR), rp.add(s * NR));
                    avx2::sgemm_6x16(k, ap, bs_, cs, LDC, f, bs, rs, p0, p1);
                }
            }
        });
    }

    /// The two-strip in-place tile gives, bit for bit, two calls of the one-strip in-place
    /// tile (the second at `x + 16`), on every case of [`two_strip_cases`], with the rows of B
    /// scattered in any order.
    #[test]
    fn two_strip_in_place_tile_gives_the_one_strip_tiles_bits() {
        let (bias, res) = (lcg(MR, 3), lcg(MR * LDC, 4));
        let plane = 50;
        two_strip_cases("two_strip_in_place_tile_gives_the_one_strip_tiles_bits", |k, f, p0, p1, got, want| {
            let (a, x) = (lcg(MR * k, 1), lcg(plane * k, 2));
            // Row `kk` of B starts 3 floats into plane `(kk·7) mod k`: scattered, unaligned.
            let offs: Vec<i64> = (0..k).map(|kk| ((kk * 7) % k * plane + 3) as i64).collect();
            // SAFETY: this host has the AVX-512 tile (`two_strip_cases` checked); every row
            // `x + offs[kk]` has 32 readable floats (3 + 32 ≤ 50 in its plane), and C and the
            // residual 6 rows of 40 columns (32 used).
            unsafe {
                let (ap, xp, op) = (a.as_ptr(), x.as_ptr(), offs.as_ptr());
                let (bs, rp) = (bias.as_ptr(), res.as_ptr());
                sgemm_6x32_rows(k, ap, xp, op, got.as_mut_ptr(), LDC, f, bs, rp, p0, p1);
                for s in 0..2 {
                    let (xs, cs, rs) = (xp.add(s * NR), want.as_mut_ptr().add(s * NR), rp.add(s * NR));
                    sgemm_6x16_rows(k, ap, xs, op, cs, LDC, f, bs, rs, p0, p1);
                }
            }
        });
    }

    /// The AVX-512 tile really is zmm FMA code: each of its three kernels' first 4 KiB of
    /// machine code (bounded by the end of their executable mapping) holds at least the 12
    /// zmm `vfmadd231ps` of one unrolled step pair.
    #[test]
    fn avx512_tile_machine_code_is_zmm_vfmadd231ps() {
        if !each_tile_or_skip("avx512_tile_machine_code_is_zmm_vfmadd231ps").iter().any(|mk| mk.tile == F32Tile::Avx512)
        {
            return;
        }
        let gemm: avx2::SgemmFn = sgemm_6x16;
        let (rows, rows2): (avx2::SgemmRowsFn, avx2::SgemmRowsFn) = (sgemm_6x16_rows, sgemm_6x32_rows);
        let tiles =
            [("sgemm_6x16", gemm as usize), ("sgemm_6x16_rows", rows as usize), ("sgemm_6x32_rows", rows2 as usize)];
        for (name, addr) in tiles {
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
