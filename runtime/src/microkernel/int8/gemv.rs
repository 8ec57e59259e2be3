//! Quantized matrix-vector products (a `qlinear` gemm or matmul, one row of `x` at a time):
//! `acc[c] = Σ_k x[k]·w'[c][k] + corr[c]`, exact in i32, then the [`QOut`] epilogue — the
//! reference's integers bit for bit (`reference/qlinear.rs`). Batch-1 fully connected layers
//! are weight-bound, so the point is streaming the weights once, at 1 byte (VNNI) or 2 (AVX2)
//! per multiply-add, with several output blocks sharing each broadcast of `x`.
//!
//! # The contract
//! `geo` is the table [`geo`] builds: `[k, out_kind, zy, lo, hi, x_i8]`. `w'` are the centred
//! weights `w − zw[c]`, packed at load ([`pack_vnni`] or [`pack_avx2`]); `corr[c] = bias[c] −
//! zx'·Σ_k w'[c][k]`, where `zx'` is the input's zero point plus the offset the kernel adds to
//! its bytes (VNNI reads `x` as u8: an i8 input is XORed with 0x80, i.e. +128); `scale[c]` is the
//! f32 output's scale or the requantization multiplier. A call computes the channels of blocks
//! `b0..b1` (16 channels per block on VNNI, 8 on AVX2), never past `n` (`len(corr)`), reading
//! the `k` bytes at `x` and writing channel `c`'s output at `y + c·size` (size 4 for i32/f32, 1
//! for u8/i8).
//!
//! Output: `I32`: `acc`; `F32`: `acc as f32 · scale[c]`; `U8`/`I8`:
//! [`cnnc_ir::QLinear::requantize`]`(acc, scale[c], zy, lo, hi)`.

use std::arch::x86_64::*;

use cnnc_ir::QLinear;

use super::QOut;

/// Channels per block.
pub(crate) const VNNI_BLOCK: usize = 16;
pub(crate) const AVX2_BLOCK: usize = 8;

/// The C signature: `(geo, w, x, corr, scale, y, b0, b1)`.
pub(crate) type QGemvFn =
    unsafe extern "C" fn(*const i64, *const u8, *const u8, *const i32, *const f32, *mut u8, usize, usize);

/// The geometry table of the contract.
pub(crate) fn geo(k: usize, n: usize, out: QOut, zy: i32, lo: i32, hi: i32, x_i8: bool) -> Vec<i64> {
    let kind = match out {
        QOut::I32 => 0,
        QOut::F32 => 1,
        QOut::U8 => 2,
        QOut::I8 => 3,
    };
    vec![k as i64, kind, i64::from(zy), i64::from(lo), i64::from(hi), i64::from(x_i8), n as i64]
}

/// `w'` (`n × k` i32 values in `[−128, 127]`) as `[⌈n/16⌉][⌈k/4⌉][16][4]` i8, zero-padded.
pub(crate) fn pack_vnni(w: &[i32], n: usize, k: usize) -> Vec<u8> {
    let (blocks, quads) = (n.div_ceil(VNNI_BLOCK), k.div_ceil(4));
    let mut out = vec![0u8; blocks * quads * VNNI_BLOCK * 4];
    for c in 0..n {
        for kk in 0..k {
            let at = ((c / VNNI_BLOCK * quads + kk / 4) * VNNI_BLOCK + c % VNNI_BLOCK) * 4 + kk % 4;
            out[at] = w[c * k + kk] as i8 as u8;
        }
    }
    out
}

/// `w'` (`n × k` i32 values in i16 range) as `[⌈n/8⌉][⌈k/2⌉][8][2]` i16 (little-endian
/// bytes), zero-padded.
pub(crate) fn pack_avx2(w: &[i32], n: usize, k: usize) -> Vec<u8> {
    let (blocks, pairs) = (n.div_ceil(AVX2_BLOCK), k.div_ceil(2));
    let mut out = vec![0u8; blocks * pairs * AVX2_BLOCK * 2 * 2];
    for c in 0..n {
        for kk in 0..k {
            let at = ((c / AVX2_BLOCK * pairs + kk / 2) * AVX2_BLOCK + c % AVX2_BLOCK) * 2 + kk % 2;
            out[at * 2..at * 2 + 2].copy_from_slice(&(w[c * k + kk] as i16).to_le_bytes());
        }
    }
    out
}

/// The epilogue of channel `c` (see the module doc) into `y`.
///
/// # Safety
/// `geo` is the table of [`geo`], `scale` holds channel `c`, `y` has room for channel `c`.
#[inline(always)]
unsafe fn store(geo: *const i64, acc: i32, scale: *const f32, y: *mut u8, c: usize) {
    // SAFETY: the caller's contract.
    unsafe {
        match *geo.add(1) {
            0 => y.cast::<i32>().add(c).write_unaligned(acc),
            1 => y.cast::<f32>().add(c).write_unaligned(acc as f32 * *scale.add(c)),
            _ => {
                let (zy, lo, hi) = (*geo.add(2) as i32, *geo.add(3) as i32, *geo.add(4) as i32);
                let v = QLinear::requantize(acc, *scale.add(c), zy, lo, hi);
                *y.add(c) = v as u8;
            }
        }
    }
}

/// The epilogue of a block's sums `lanes` (channels `c0..`, none past `n`).
///
/// # Safety
/// As for [`store`], for every channel of the block below `n`; `corr` holds them.
#[inline(always)]
unsafe fn finish(geo: *const i64, lanes: &[i32], c0: usize, corr: *const i32, scale: *const f32, y: *mut u8) {
    // SAFETY: the caller's contract.
    unsafe {
        let n = *geo.add(6);
        for (l, &s) in lanes.iter().enumerate() {
            let c = c0 + l;
            if c as i64 >= n {
                break;
            }
            store(geo, s.wrapping_add(*corr.add(c)), scale, y, c);
        }
    }
}

/// The VNNI kernel (see the module doc): four blocks at a time share each broadcast quad of
/// `x`, one `vpdpbusd` per block and quad.
///
/// # Safety
/// The CPU has AVX-512 F/BW/VNNI; the pointers hold what the contract says, `w` packed by
/// [`pack_vnni`] for this `n` and `k`, `b0 ≤ b1 ≤ ⌈n/16⌉`.
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vnni")]
pub(super) unsafe extern "C" fn qgemv_vnni(
    geo: *const i64,
    w: *const u8,
    x: *const u8,
    corr: *const i32,
    scale: *const f32,
    y: *mut u8,
    b0: usize,
    b1: usize,
) {
    // SAFETY: the caller's contract (reads within `x[..k]` and the packed blocks, writes within
    // the channels of blocks b0..b1 below n).
    unsafe {
        let k = *geo as usize;
        let flip = if *geo.add(5) != 0 { 0x8080_8080u32 } else { 0 };
        let quads = k.div_ceil(4);
        let quad = |q: usize| -> i32 {
            let v = if 4 * q + 4 <= k {
                x.add(4 * q).cast::<u32>().read_unaligned()
            } else {
                let mut b = [0u8; 4];
                for (j, byte) in b.iter_mut().enumerate().take(k - 4 * q) {
                    *byte = *x.add(4 * q + j);
                }
                // Padding lanes multiply zero weights: their value does not matter.
                u32::from_le_bytes(b)
            };
            (v ^ flip) as i32
        };
        let block_bytes = quads * VNNI_BLOCK * 4;
        let mut b = b0;
        while b < b1 {
            let nb = (b1 - b).min(4);
            let mut acc = [_mm512_setzero_si512(); 4];
            let base = w.add(b * block_bytes);
            for q in 0..quads {
                let xv = _mm512_set1_epi32(quad(q));
                for (j, a) in acc.iter_mut().enumerate().take(nb) {
                    let wv = _mm512_loadu_si512(base.add(j * block_bytes + q * 64).cast());
                    *a = _mm512_dpbusd_epi32(*a, xv, wv);
                }
            }
            for (j, a) in acc.iter().enumerate().take(nb) {
                let mut lanes = [0i32; VNNI_BLOCK];
                _mm512_storeu_si512(lanes.as_mut_ptr().cast(), *a);
                finish(geo, &lanes, (b + j) * VNNI_BLOCK, corr, scale, y);
            }
            b += nb;
        }
    }
}

/// The AVX2 kernel (see the module doc): `vpmaddwd` on i16 weight pairs and broadcast pairs
/// of `x` widened to i16 (exact: no 16-bit saturation), four blocks per broadcast.
///
/// # Safety
/// The CPU has AVX2; the pointers hold what the contract says, `w` packed by [`pack_avx2`] for
/// this `n` and `k`, `b0 ≤ b1 ≤ ⌈n/8⌉`.
#[target_feature(enable = "avx2")]
pub(super) unsafe extern "C" fn qgemv_avx2(
    geo: *const i64,
    w: *const u8,
    x: *const u8,
    corr: *const i32,
    scale: *const f32,
    y: *mut u8,
    b0: usize,
    b1: usize,
) {
    // SAFETY: as for `qgemv_vnni`.
    unsafe {
        let k = *geo as usize;
        let signed = *geo.add(5) != 0;
        let pairs = k.div_ceil(2);
        let widen = |i: usize| -> u32 {
            if i >= k {
                0
            } else if signed {
                *x.add(i) as i8 as i16 as u16 as u32
            } else {
                u32::from(*x.add(i))
            }
        };
        let block_bytes = pairs * AVX2_BLOCK * 4;
        let mut b = b0;
        while b < b1 {
            let nb = (b1 - b).min(4);
            let mut acc = [_mm256_setzero_si256(); 4];
            let base = w.add(b * block_bytes);
            for p in 0..pairs {
                let xv = _mm256_set1_epi32((widen(2 * p) | (widen(2 * p + 1) << 16)) as i32);
                for (j, a) in acc.iter_mut().enumerate().take(nb) {
                    let wv = _mm256_loadu_si256(base.add(j * block_bytes + p * 32).cast());
                    *a = _mm256_add_epi32(*a, _mm256_madd_epi16(xv, wv));
                }
            }
            for (j, a) in acc.iter().enumerate().take(nb) {
                let mut lanes = [0i32; AVX2_BLOCK];
                _mm256_storeu_si256(lanes.as_mut_ptr().cast(), *a);
                finish(geo, &lanes, (b + j) * AVX2_BLOCK, corr, scale, y);
            }
            b += nb;
        }
    }
}
