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

/// `dst[i] = table[256·a[i] + b[i]]` for `i < n`: 16 indices per `vpgatherdd` (each lane
/// loads the 4 bytes at its entry; the low one is the entry), packed with `vpmovdb`.
///
/// # Safety
/// The host supports AVX-512 F (checked by `qkernels`). `table` points at 65,536 + 3 readable
/// bytes (the entries and 3 bytes of padding for the last entry's dword); `a`, `b` at `n`
/// readable bytes; `dst` at `n` writable bytes, overlapping neither `a` nor `b` except by being
/// equal to one of them.
#[target_feature(enable = "avx512f")]
pub(super) unsafe extern "C" fn lookup2_u8_avx512(
    table: *const u8,
    a: *const u8,
    b: *const u8,
    dst: *mut u8,
    n: usize,
) {
    // SAFETY: the caller's contract: each index is 256·a + b < 65,536, within the table; the
    // loop reads and writes 16 bytes at `i + 16 ≤ n`, the tail one byte at a time below `n`.
    unsafe {
        let mut i = 0;
        while i + 16 <= n {
            let va = _mm512_cvtepu8_epi32(_mm_loadu_si128(a.add(i) as *const __m128i));
            let vb = _mm512_cvtepu8_epi32(_mm_loadu_si128(b.add(i) as *const __m128i));
            let idx = _mm512_or_si512(_mm512_slli_epi32::<8>(va), vb);
            let v = _mm512_i32gather_epi32::<1>(idx, table as *const i32);
            _mm_storeu_si128(dst.add(i) as *mut __m128i, _mm512_cvtepi32_epi8(v));
            i += 16;
        }
        while i < n {
            let k = 256 * usize::from(*a.add(i)) + usize::from(*b.add(i));
            *dst.add(i) = *table.add(k);
            i += 1;
        }
    }
}

/// The AVX2 form of the lookups, for hosts without AVX-512: `dst[i] = table[idx(i)]` with
/// `idx(i) = a[i]`, or `256·a[i] + b[i]` when `b` is non-null. One operand: the 256-entry table
/// as sixteen 16-byte rows, each applied with `vpshufb` to the lanes whose high nibble selects
/// it (`idx ⊕ 16k` is below 16 exactly there; adding 112 with unsigned saturation sets bit 7,
/// which `vpshufb` zeroes, everywhere else), 32 bytes per 64 instructions. Two operands: 8
/// indices per `vpgatherdd` (the low byte of each lane's dword), four gathers packed into 32
/// bytes.
///
/// # Safety
/// The host supports AVX2 (checked by `qkernels`). `table` points at 256 (`b` null) or 65,536
/// entries plus 3 bytes of padding, all readable; `a` (and `b` unless null) at `n` readable
/// bytes; `dst` at `n` writable bytes, overlapping no operand except by being equal to it.
#[target_feature(enable = "avx2")]
pub(super) unsafe extern "C" fn lookup_u8_avx2(table: *const u8, a: *const u8, b: *const u8, dst: *mut u8, n: usize) {
    if b.is_null() {
        // SAFETY: the caller's contract, with 256 table bytes.
        unsafe { lookup_u8_pshufb(table, a, dst, n) };
        return;
    }
    unsafe {
        let index = |i: usize| {
            let va = _mm256_cvtepu8_epi32(_mm_loadl_epi64(a.add(i) as *const __m128i));
            if b.is_null() {
                va
            } else {
                let vb = _mm256_cvtepu8_epi32(_mm_loadl_epi64(b.add(i) as *const __m128i));
                _mm256_or_si256(_mm256_slli_epi32::<8>(va), vb)
            }
        };
        let t = table as *const i32;
        let low = _mm256_set1_epi32(0xff);
        // packus interleaves the 128-bit halves; this restores element order.
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        let mut i = 0;
        while i + 32 <= n {
            let g: [__m256i; 4] =
                std::array::from_fn(|k| _mm256_and_si256(_mm256_i32gather_epi32::<1>(t, index(i + 8 * k)), low));
            let w01 = _mm256_packus_epi32(g[0], g[1]);
            let w23 = _mm256_packus_epi32(g[2], g[3]);
            let bytes = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(w01, w23), order);
            _mm256_storeu_si256(dst.add(i) as *mut __m256i, bytes);
            i += 32;
        }
        while i < n {
            let mut k = usize::from(*a.add(i));
            if !b.is_null() {
                k = 256 * k + usize::from(*b.add(i));
            }
            *dst.add(i) = *table.add(k);
            i += 1;
        }
    }
}

/// [`lookup_u8_avx2`] with one operand (its doc): the table's sixteen rows through `vpshufb`.
///
/// # Safety
/// As [`lookup_u8_avx2`] with a null `b`: AVX2, 256 readable table bytes, `n` bytes at `src`
/// and `dst`.
#[target_feature(enable = "avx2")]
unsafe fn lookup_u8_pshufb(table: *const u8, src: *const u8, dst: *mut u8, n: usize) {
    // SAFETY: the caller's contract: the rows are the table's 256 bytes; the loop reads and
    // writes 32 bytes at `i + 32 ≤ n`, the tail one byte at a time below `n`.
    unsafe {
        let rows: [__m256i; 16] =
            std::array::from_fn(|k| _mm256_broadcastsi128_si256(_mm_loadu_si128(table.add(16 * k) as *const __m128i)));
        let bias = _mm256_set1_epi8(112);
        let mut i = 0;
        while i + 32 <= n {
            let idx = _mm256_loadu_si256(src.add(i) as *const __m256i);
            let mut out = _mm256_setzero_si256();
            for (k, row) in rows.iter().enumerate() {
                let sel = _mm256_xor_si256(idx, _mm256_set1_epi8((16 * k) as u8 as i8));
                let sel = _mm256_adds_epu8(sel, bias);
                out = _mm256_or_si256(out, _mm256_shuffle_epi8(*row, sel));
            }
            _mm256_storeu_si256(dst.add(i) as *mut __m256i, out);
            i += 32;
        }
        while i < n {
            *dst.add(i) = *table.add(usize::from(*src.add(i)));
            i += 1;
        }
    }
}
