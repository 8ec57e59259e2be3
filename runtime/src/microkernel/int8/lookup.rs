//! A 256-entry byte table applied to a byte array with AVX-512 VBMI: the table sits in four
//! zmm registers; each 64 input bytes take two `vpermi2b` (bits 0–6 of the index pick among
//! 128 table bytes) and one `vpblendmb` on bit 7, so the loop runs at memory speed rather than
//! one scalar load per element.

use std::arch::x86_64::*;

/// `dst[i] = table[src[i]]` for `i < n`.
///
/// # Safety
/// The host supports AVX-512 F, BW and VBMI (checked by `qkernels`, the only place this
/// address is taken). `table` points at 256 readable bytes, `src` at `n` readable bytes and
/// `dst` at `n` writable bytes; `dst` may equal `src` but not otherwise overlap it.
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
pub(super) unsafe extern "C" fn lookup_u8_vbmi(table: *const u8, src: *const u8, dst: *mut u8, n: usize) {
    // SAFETY: the caller's contract: `table` has 256 bytes, `src`/`dst` have `n` bytes each;
    // the tail's masked load and store touch only the first `n % 64` bytes of their block.
    unsafe {
        let t0 = _mm512_loadu_si512(table as *const __m512i);
        let t1 = _mm512_loadu_si512(table.add(64) as *const __m512i);
        let t2 = _mm512_loadu_si512(table.add(128) as *const __m512i);
        let t3 = _mm512_loadu_si512(table.add(192) as *const __m512i);
        let apply = |idx: __m512i| {
            let lo = _mm512_permutex2var_epi8(t0, idx, t1);
            let hi = _mm512_permutex2var_epi8(t2, idx, t3);
            _mm512_mask_blend_epi8(_mm512_movepi8_mask(idx), lo, hi)
        };
        let mut i = 0;
        while i + 64 <= n {
            let idx = _mm512_loadu_si512(src.add(i) as *const __m512i);
            _mm512_storeu_si512(dst.add(i) as *mut __m512i, apply(idx));
            i += 64;
        }
        if i < n {
            let mask: __mmask64 = (1u64 << (n - i)) - 1;
            let idx = _mm512_maskz_loadu_epi8(mask, src.add(i) as *const i8);
            _mm512_mask_storeu_epi8(dst.add(i) as *mut i8, mask, apply(idx));
        }
    }
}
