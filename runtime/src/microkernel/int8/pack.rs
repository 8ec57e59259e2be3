//! The u8 im2col packer for both int8 tiers: B strips `[k4][nr][4]`.
//!
//! Columns are packed in chunks of [`CHUNK`]. For each K quad of a chunk, the quad's four B
//! rows are first laid out as four contiguous lines of packed values, then 32 columns at a time
//! are interleaved into `[col][4]` quads by byte and word unpacks and stored to their strips. A
//! line is, by case: the input channel row itself, read in place (1×1 stride-1 unpadded convs,
//! whole chunks); copies from the chunk's padded [`Plane`] of the row's channel (one plain copy
//! per output row, no bounds checks); or, when that plane would be too large, tap segments
//! assembled with bounds checks ([`build_line`]).
//!
//! Copy and fill loops go through an opaque vector (`black_box`, or the `xor` argument):
//! otherwise LLVM turns them into `memcpy`/`memset` calls, which cost more than the short
//! copies themselves (profiled: a row segment is often 7–56 bytes).

use std::arch::x86_64::*;
use std::hint::black_box;
use std::mem::MaybeUninit;

use super::super::PackGeo;

pub(super) type PackU8Fn =
    unsafe extern "C" fn(*const i64, *const u8, usize, usize, usize, usize, usize, u8, u8, *mut u8, *mut i32);

/// Columns per chunk: the four lines of a quad (4 × 512 bytes) stay in L1 with their output.
const CHUNK: usize = 512;
/// Slack after a line: copies and fills store whole 32-byte vectors and may run past the end.
const SLACK: usize = 32;
/// Most bytes of a chunk's padded input plane ([`Plane`]); larger ones take [`build_line`].
const PLANE_MAX: usize = 16 << 10;
/// Slack after a plane: copies read whole vectors (stride 2: two per 32 outputs) past the end.
const PLANE_SLACK: usize = 128;

/// Packs the im2col matrix of one group of a 2-D conv input (`x` is `[C][ih][iw]` u8; row
/// `kk` of B is input channel `kk / (kh·kw)`, tap `(ky, kx)` = `kk % (kh·kw)` split by `kw`;
/// column `n` is output pixel `(n / ow, n % ow)`), rows `k0..k0 + kc` and columns
/// `n0..n0 + nc`, into `nc.div_ceil(nr)` consecutive strips of `nr` columns, each
/// `⌈kc/4⌉·nr·4` bytes in the `[k4][nr][4]` layout: row `k0 + kk`, column `n0 + s·nr + l` at
/// byte `s·⌈kc/4⌉·nr·4 + (kk/4)·nr·4 + l·4 + kk%4` of `dst`.
///
/// Each byte read from `x` is stored as `x ^ xor` (`xor = 0x80` turns i8 activations into
/// u8); taps in the image's zero padding get `pad` (the activations' zero point, as stored);
/// the rows `kc..4·⌈kc/4⌉` of the last quad and the columns past `nc` of the last strip get 0.
/// So the last K block of a reduction of length K passes `kc = K − k0` and the padding rows up
/// to the quad come out 0, as the A panel's are.
///
/// If `colsum` is non-null, `colsum[n − n0] += Σ` of column `n`'s packed values over these
/// rows, for `n0 ≤ n < n0 + nc` (i32, exact: the caller zeroes it before the first K block).
///
/// # Safety
/// The host supports AVX2 (checked by `qkernels`, the only place this address is taken).
/// `geo` points at a [`PackGeo::table`]; `k0` is a multiple of 4; `nr` is a multiple of 16
/// (at most 255); `x` points at the channels `0..⌈(k0+kc)/(kh·kw)⌉` of an `ih × iw` input
/// (channel stride `ih·iw` bytes); the pixels exist (`n0 + nc ≤ oh·ow` with `oh` consistent
/// with the geometry, so every in-range tap reads inside `x`); `dst` has room for
/// `nc.div_ceil(nr)·⌈kc/4⌉·nr·4` bytes and `colsum`, when non-null, for `nc` i32; neither
/// overlaps `x` or the other. The thread has about 26 KiB of stack to spare (the lines and
/// the plane live there).
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe extern "C" fn pack_b_im2col_u8(
    geo: *const i64,
    x: *const u8,
    k0: usize,
    kc: usize,
    n0: usize,
    nc: usize,
    nr: usize,
    xor: u8,
    pad: u8,
    dst: *mut u8,
    colsum: *mut i32,
) {
    // SAFETY: the same contract.
    unsafe { pack::<false>(geo, x, k0, kc, n0, nc, nr, xor, pad, dst, colsum) }
}

/// [`pack_b_im2col_u8`] for the AMX tile, whose B operand is signed: the column sums add the
/// packed bytes read as **i8** (`colsum[n − n0] += Σ (v as i8)`); everything else is the same.
///
/// # Safety
/// As [`pack_b_im2col_u8`].
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe extern "C" fn pack_b_im2col_s8(
    geo: *const i64,
    x: *const u8,
    k0: usize,
    kc: usize,
    n0: usize,
    nc: usize,
    nr: usize,
    xor: u8,
    pad: u8,
    dst: *mut u8,
    colsum: *mut i32,
) {
    // SAFETY: the same contract.
    unsafe { pack::<true>(geo, x, k0, kc, n0, nc, nr, xor, pad, dst, colsum) }
}

/// The packer of [`pack_b_im2col_u8`]; `SIGNED` sums the column sums' bytes as i8.
///
/// # Safety
/// As [`pack_b_im2col_u8`].
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
#[inline]
unsafe fn pack<const SIGNED: bool>(
    geo: *const i64,
    x: *const u8,
    k0: usize,
    kc: usize,
    n0: usize,
    nc: usize,
    nr: usize,
    xor: u8,
    pad: u8,
    dst: *mut u8,
    colsum: *mut i32,
) {
    let g = PackGeo::read(geo);
    let q4 = kc.div_ceil(4);
    let padded = nc.div_ceil(nr) * nr;
    let in_place = g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.ph == 0 && g.pw == 0;
    let bytes = Bytes { xor, pad, flip: _mm256_set1_epi8(xor as i8) };
    // Built lines hold packed values (`x ^ xor`, `pad`, 0); rows read in place get their
    // `^ xor` in the interleave, and their zero rows are `xor` before it.
    // Two sets: quad `q`'s lines are built while quad `q − 1`'s are interleaved, so the
    // interleave's loads do not wait on the stores that just wrote them (a store-forwarding
    // stall: the loads span several overlapping stores).
    let mut lines = [[[0u8; CHUNK + SLACK]; 4]; 2];
    let zeros = [0u8; CHUNK + SLACK];
    let xors = [xor; CHUNK + SLACK];
    // Filled with `pad` only as far as a chunk's plane reaches ([`Plane::start`]): most calls
    // need a few rows, or no plane at all, and filling all 16 KiB per call was 4 % of opennsfw's
    // int8 time.
    let mut plane_bytes = [const { MaybeUninit::<u8>::uninit() }; PLANE_MAX + PLANE_SLACK];
    let mut segs = [(0u32, 0u16, 0u16); CHUNK];
    let mut plane = Plane {
        bytes: &mut plane_bytes,
        filled: 0,
        pad,
        seg: &mut segs,
        segs: 0,
        channel: usize::MAX,
        oy0: 0,
        hp: 0,
        wp: 0,
    };
    let out = Strips { dst, strip_bytes: q4 * nr * 4, nr, colsum, signed: SIGNED };
    for c0 in (0..padded).step_by(CHUNK) {
        let width = (padded - c0).min(CHUNK);
        // Every chunk starts a strip, and every strip has a valid column: `valid ≥ 1`.
        let valid = (nc - c0).min(width);
        // In place when the interleave's whole-vector reads (`width` rounded up to 32) stay in
        // the row's channel: 208-column blocks of a 28×28 map qualify except the last.
        let direct = in_place
            && valid == width
            && (width.is_multiple_of(32) || n0 + c0 + width.next_multiple_of(32) <= g.ih * g.iw);
        let planed = !direct && plane.start(&g, n0 + c0, valid);
        let (flip, zero) = if direct { (bytes.flip, xors.as_ptr()) } else { (_mm256_setzero_si256(), zeros.as_ptr()) };
        // The row's tap, stepped row by row (no divisions per row).
        let mut tap = Tap::of(&g, k0);
        let mut prev = None;
        for q in 0..q4 {
            let mut src = [zero; 4];
            for (j, line) in lines[q % 2].iter_mut().enumerate() {
                if 4 * q + j >= kc {
                    continue;
                }
                // SAFETY: the row is inside the caller's channels; the columns are pixels
                // that exist (the caller's contract); lines have `CHUNK + SLACK` bytes.
                unsafe {
                    src[j] = if direct {
                        x.add(tap.ch * g.ih * g.iw + n0 + c0)
                    } else if planed {
                        plane.line(&g, x, tap, (valid, width), &bytes, line.as_mut_ptr());
                        line.as_ptr()
                    } else {
                        build_line(&g, x, tap, n0 + c0, (valid, width), &bytes, line.as_mut_ptr());
                        line.as_ptr()
                    };
                }
                tap.step(&g);
            }
            if let Some(p) = prev {
                // SAFETY: the lines hold `width` bytes (rounded up to 32 by the slack or, in
                // place, `width` is a multiple of 32); the strips lie in `dst` (the contract).
                unsafe { out.interleave(p, flip, q - 1, c0, width, valid) };
            }
            prev = Some(src);
        }
        if let Some(p) = prev {
            // SAFETY: as above.
            unsafe { out.interleave(p, flip, q4 - 1, c0, width, valid) };
        }
    }
}

/// B row `(ch, ky, kx)`: input channel and kernel tap.
#[derive(Clone, Copy)]
struct Tap {
    ch: usize,
    ky: usize,
    kx: usize,
}

impl Tap {
    fn of(g: &PackGeo, k: usize) -> Tap {
        let taps = g.kh * g.kw;
        Tap { ch: k / taps, ky: (k % taps) / g.kw, kx: k % g.kw }
    }

    /// The next row's.
    fn step(&mut self, g: &PackGeo) {
        self.kx += 1;
        if self.kx == g.kw {
            self.kx = 0;
            self.ky += 1;
            if self.ky == g.kh {
                self.ky = 0;
                self.ch += 1;
            }
        }
    }
}

/// The packer's byte parameters.
struct Bytes {
    xor: u8,
    pad: u8,
    /// `xor` in every byte.
    flip: __m256i,
}

/// The input rows a chunk's pixels read, for one channel at a time, as packed values with the
/// padding materialized: row `py`, column `px` is input `(oy0·sh − ph + py, px − pw)`, for
/// `py < hp`, `px < wp` (the padded width all output columns reach). Every B row of the chunk
/// is then a few plain copies (one per output row) without bounds checks: a segment of output
/// row `oy` starting at column `ox` for tap `(ky, kx)` reads from
/// `((oy − oy0)·sh + ky·dh)·wp + ox·sw + kx·dw`, at stride `sw`.
struct Plane<'a> {
    /// Filled with `pad` below `filled` (before any read there); the columns outside the image
    /// (`wp` is the same for every chunk of a call) are never written again, every write to the
    /// others is exact.
    bytes: &'a mut [MaybeUninit<u8>; PLANE_MAX + PLANE_SLACK],
    filled: usize,
    pad: u8,
    /// The chunk's segments on one output row each: (plane offset for tap (0, 0), first line
    /// column, length).
    seg: &'a mut [(u32, u16, u16); CHUNK],
    segs: usize,
    /// The channel in `bytes` (`usize::MAX`: none yet).
    channel: usize,
    oy0: usize,
    hp: usize,
    wp: usize,
}

impl Plane<'_> {
    /// Prepares the chunk of pixels `p0..p0 + valid`: `false` (use [`build_line`]) when its
    /// plane exceeds [`PLANE_MAX`].
    fn start(&mut self, g: &PackGeo, p0: usize, valid: usize) -> bool {
        let (oy0, oy1) = (p0 / g.ow, (p0 + valid - 1) / g.ow);
        let hp = (oy1 - oy0) * g.sh + (g.kh - 1) * g.dh + 1;
        let wp = (g.ow - 1) * g.sw + (g.kw - 1) * g.dw + 1;
        if hp * wp > PLANE_MAX {
            return false;
        }
        (self.oy0, self.hp, self.wp) = (oy0, hp, wp);
        // Every read and write of this chunk's plane lies below `hp·wp + PLANE_SLACK`.
        let reach = hp * wp + PLANE_SLACK;
        if reach > self.filled {
            self.bytes[self.filled..reach].fill(MaybeUninit::new(self.pad));
            self.filled = reach;
        }
        self.channel = usize::MAX;
        self.segs = 0;
        let (mut oy, mut ox, mut o) = (oy0, p0 % g.ow, 0);
        while o < valid {
            let len = (g.ow - ox).min(valid - o);
            self.seg[self.segs] = (((oy - oy0) * g.sh * wp + ox * g.sw) as u32, o as u16, len as u16);
            self.segs += 1;
            o += len;
            ox = 0;
            oy += 1;
        }
        true
    }

    /// Lays out B row `tap` over the chunk's pixels at `line` (0 from `valid` to `width`), from
    /// the plane of its channel, built first if it is not the one held.
    ///
    /// # Safety
    /// AVX2; the packer's contract on `x` for the row; `line` writable for `width + SLACK`.
    #[target_feature(enable = "avx2")]
    unsafe fn line(
        &mut self,
        g: &PackGeo,
        x: *const u8,
        Tap { ch, ky, kx }: Tap,
        (valid, width): (usize, usize),
        b: &Bytes,
        line: *mut u8,
    ) {
        let keep = black_box(_mm256_setzero_si256());
        // SAFETY: the plane's reads stay in `bytes` (offsets below `hp·wp ≤ PLANE_MAX`, vector
        // overreads within `PLANE_SLACK`); the line's writes below `width + SLACK`, in order,
        // each vector's overrun rewritten by the next segment.
        unsafe {
            if ch != self.channel {
                self.build(g, x.add(ch * g.ih * g.iw), b);
                self.channel = ch;
            }
            let base = self.bytes.as_ptr().cast::<u8>().add(ky * g.dh * self.wp + kx * g.dw);
            for &(at, o, len) in &self.seg[..self.segs] {
                let (src, dst, len) = (base.add(at as usize), line.add(o as usize), len as usize);
                match g.sw {
                    1 if len <= 8 => dst.cast::<u64>().write_unaligned(src.cast::<u64>().read_unaligned()),
                    1 if len <= 16 => _mm_storeu_si128(dst.cast(), _mm_loadu_si128(src.cast())),
                    1 => {
                        for i in (0..len).step_by(32) {
                            let v = _mm256_xor_si256(_mm256_loadu_si256(src.add(i).cast()), keep);
                            _mm256_storeu_si256(dst.add(i).cast(), v);
                        }
                    }
                    2 => {
                        let even = _mm256_set1_epi16(0xff);
                        for i in (0..len).step_by(32) {
                            let a = _mm256_and_si256(_mm256_loadu_si256(src.add(2 * i).cast()), even);
                            let b = _mm256_and_si256(_mm256_loadu_si256(src.add(2 * i + 32).cast()), even);
                            // Packing works per 128-bit half: the quarters come out a0 b0 a1 b1.
                            let v = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packus_epi16(a, b));
                            _mm256_storeu_si256(dst.add(i).cast(), v);
                        }
                    }
                    sw => {
                        for i in 0..len {
                            *dst.add(i) = *src.add(i * sw);
                        }
                    }
                }
            }
            fill(line.add(valid), keep, width - valid);
        }
    }

    /// Fills the plane's image columns from channel `xc` (`x ^ xor`, or `pad` on rows outside
    /// the image), exactly.
    ///
    /// # Safety
    /// AVX2; the packer's contract on `x` (the chunk's in-range taps lie in the channel).
    #[target_feature(enable = "avx2")]
    unsafe fn build(&mut self, g: &PackGeo, xc: *const u8, b: &Bytes) {
        let iy0 = (self.oy0 * g.sh) as isize - g.ph as isize;
        // Plane columns `lo..hi` are inside the image.
        let lo = g.pw.min(self.wp);
        let hi = (g.pw + g.iw).min(self.wp);
        let pad = black_box(_mm256_set1_epi8(b.pad as i8));
        for py in 0..self.hp {
            let iy = iy0 + py as isize;
            // SAFETY: input row `iy` exists when read; plane row `py` lies below
            // `hp·wp ≤ PLANE_MAX`.
            unsafe {
                let dst = self.bytes.as_mut_ptr().cast::<u8>().add(py * self.wp + lo);
                if hi <= lo {
                    // The image lies wholly in this plane's padding columns (a narrow input
                    // with wide padding): nothing of it to copy or fill on this row.
                } else if iy < 0 || iy >= g.ih as isize {
                    fill_exact(dst, pad, b.pad, hi - lo);
                } else {
                    copy_run(dst, xc.add(iy as usize * g.iw + lo - g.pw), hi - lo, b);
                }
            }
        }
    }
}

/// Where and how [`interleave`](Strips::interleave) stores.
struct Strips {
    dst: *mut u8,
    strip_bytes: usize,
    nr: usize,
    colsum: *mut i32,
    /// The column sums read the packed bytes as i8 (the AMX tile's signed operand).
    signed: bool,
}

impl Strips {
    /// Interleaves columns `0..width` of the four lines at `src` (each byte `^ flip`) into
    /// quad `q` of the strips, columns `c0..c0 + width` of the block, adding the packed values
    /// of the first `valid` columns to `colsum` when it is non-null.
    ///
    /// # Safety
    /// AVX2; `src[j]` readable for `width` rounded up to 32 bytes; the strips of the block's
    /// columns `c0..c0 + width` and `colsum[c0..c0 + valid]` (when non-null) in bounds.
    #[target_feature(enable = "avx2")]
    unsafe fn interleave(&self, src: [*const u8; 4], flip: __m256i, q: usize, c0: usize, width: usize, valid: usize) {
        let (ones8, ones16) = (_mm256_set1_epi8(1), _mm256_set1_epi16(1));
        // Where each 8-column piece goes, stepped (no division or multiply per piece): the
        // next 32 bytes of the strip's quad, or at the strip's end the next strip's.
        let (strip, mut off) = (c0 / self.nr, c0 % self.nr);
        let mut at = strip * self.strip_bytes + q * self.nr * 4 + off * 4;
        let wrap = self.strip_bytes - (self.nr - 8) * 4;
        for g in (0..width).step_by(32) {
            // SAFETY: the caller's contract: 32 readable bytes at `src[j] + g`; every store
            // below is an 8-column piece of a strip column range inside `c0..c0 + width`.
            unsafe {
                // (No closures here: they would not inherit the target feature.)
                let r = [
                    _mm256_xor_si256(_mm256_loadu_si256(src[0].add(g).cast()), flip),
                    _mm256_xor_si256(_mm256_loadu_si256(src[1].add(g).cast()), flip),
                    _mm256_xor_si256(_mm256_loadu_si256(src[2].add(g).cast()), flip),
                    _mm256_xor_si256(_mm256_loadu_si256(src[3].add(g).cast()), flip),
                ];
                let (a, b) = (_mm256_unpacklo_epi8(r[0], r[1]), _mm256_unpackhi_epi8(r[0], r[1]));
                let (c, d) = (_mm256_unpacklo_epi8(r[2], r[3]), _mm256_unpackhi_epi8(r[2], r[3]));
                // Each 128-bit half holds 4 columns: o0 = cols 0..4 | 16..20, o1 = 4..8 | 20..24, …
                let (o0, o1) = (_mm256_unpacklo_epi16(a, c), _mm256_unpackhi_epi16(a, c));
                let (o2, o3) = (_mm256_unpacklo_epi16(b, d), _mm256_unpackhi_epi16(b, d));
                let cols = [
                    _mm256_permute2x128_si256::<0x20>(o0, o1),
                    _mm256_permute2x128_si256::<0x20>(o2, o3),
                    _mm256_permute2x128_si256::<0x31>(o0, o1),
                    _mm256_permute2x128_si256::<0x31>(o2, o3),
                ];
                for (i, v) in cols.into_iter().enumerate() {
                    let col = c0 + g + 8 * i;
                    if g + 8 * i >= width {
                        break;
                    }
                    _mm256_storeu_si256(self.dst.add(at).cast(), v);
                    off += 8;
                    if off == self.nr {
                        (off, at) = (0, at + wrap);
                    } else {
                        at += 32;
                    }
                    let n = valid.saturating_sub(g + 8 * i).min(8);
                    if !self.colsum.is_null() && n > 0 {
                        // `vpmaddubsw` takes its first operand as u8 and its second as i8.
                        let pairs =
                            if self.signed { _mm256_maddubs_epi16(ones8, v) } else { _mm256_maddubs_epi16(v, ones8) };
                        let sums = _mm256_madd_epi16(pairs, ones16);
                        let cs = self.colsum.add(col);
                        if n == 8 {
                            _mm256_storeu_si256(cs.cast(), _mm256_add_epi32(_mm256_loadu_si256(cs.cast()), sums));
                        } else {
                            let mut s = [0i32; 8];
                            _mm256_storeu_si256(s.as_mut_ptr().cast(), sums);
                            for (l, &v) in s.iter().enumerate().take(n) {
                                *cs.add(l) += v;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Lays out B row `tap` over the pixels `p0..p0 + valid` at `line` as packed values (`x ^ xor`,
/// `pad` for padded taps), then 0 up to `width`: tap by tap with bounds checks, for chunks
/// whose [`Plane`] would be too large.
///
/// # Safety
/// AVX2; the pixels exist and the row's channel is in `x` (the packer's contract); `line`
/// writable for `width + SLACK` bytes.
#[target_feature(enable = "avx2")]
unsafe fn build_line(
    g: &PackGeo,
    x: *const u8,
    Tap { ch, ky, kx }: Tap,
    p0: usize,
    (valid, width): (usize, usize),
    b: &Bytes,
    line: *mut u8,
) {
    let pad = black_box(_mm256_set1_epi8(b.pad as i8));
    let (mut oy, mut ox) = (p0 / g.ow, p0 % g.ow);
    let mut o = 0;
    // SAFETY: every write stays below `width + SLACK` (fills run at most 31 bytes past their
    // end, and are overwritten in order by what follows); reads are in-range taps.
    unsafe {
        let xc = x.add(ch * g.ih * g.iw);
        while o < valid {
            let len = (g.ow - ox).min(valid - o);
            let iy = (oy * g.sh + ky * g.dh) as isize - g.ph as isize;
            if iy < 0 || iy >= g.ih as isize {
                fill(line.add(o), pad, len);
            } else {
                let row = xc.add(iy as usize * g.iw);
                let ix0 = (ox * g.sw + kx * g.dw) as isize - g.pw as isize;
                // Lanes `i < len` with `0 ≤ ix0 + i·sw < iw` read the row; the rest is padding.
                let (lo, hi) = if g.sw == 1 {
                    let lo = (-ix0).clamp(0, len as isize);
                    (lo as usize, (g.iw as isize - ix0).clamp(lo, len as isize) as usize)
                } else {
                    let sw = g.sw as isize;
                    let lo = if ix0 >= 0 { 0 } else { (-ix0 + sw - 1) / sw }.clamp(0, len as isize);
                    (lo as usize, (g.iw as isize - ix0 + sw - 1).div_euclid(sw).clamp(lo, len as isize) as usize)
                };
                fill(line.add(o), pad, lo);
                let from = row.offset(ix0 + (lo * g.sw) as isize);
                if g.sw == 1 {
                    copy_run(line.add(o + lo), from, hi - lo, b);
                } else {
                    for i in 0..hi - lo {
                        *line.add(o + lo + i) = *from.add(i * g.sw) ^ b.xor;
                    }
                }
                fill(line.add(o + hi), pad, len - hi);
            }
            o += len;
            ox = 0;
            oy += 1;
        }
        fill(line.add(valid), black_box(_mm256_setzero_si256()), width - valid);
    }
}

/// `n` bytes of `v` (opaque to LLVM, see the module doc) at `dst`, in whole 32-byte stores
/// (up to 31 bytes past `dst + n`).
///
/// # Safety
/// AVX2; `dst` writable for `n` rounded up to 32 bytes.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn fill(dst: *mut u8, v: __m256i, n: usize) {
    let mut i = 0;
    while i < n {
        // SAFETY: the caller's contract.
        unsafe { _mm256_storeu_si256(dst.add(i).cast(), v) };
        i += 32;
    }
}

/// Exactly `n` bytes of `v` (`v32`: the same, in every byte of a vector opaque to LLVM) at
/// `dst`, by overlapping vector pieces inside the range.
///
/// # Safety
/// AVX2; `dst` writable for `n` bytes.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn fill_exact(dst: *mut u8, v32: __m256i, v: u8, n: usize) {
    // SAFETY: every piece lies inside `[0, n)`.
    unsafe {
        if n >= 32 {
            let mut i = 0;
            while i + 32 < n {
                _mm256_storeu_si256(dst.add(i).cast(), v32);
                i += 32;
            }
            _mm256_storeu_si256(dst.add(n - 32).cast(), v32);
        } else {
            for i in 0..n {
                *dst.add(i) = v;
            }
        }
    }
}

/// Copies exactly `n` bytes from `src` to `dst`, each `^ xor` (overlapping vector pieces,
/// never reading or writing outside the two ranges: `src` may end at the end of the input).
///
/// # Safety
/// AVX2; `src` readable and `dst` writable for `n` bytes; they do not overlap.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn copy_run(dst: *mut u8, src: *const u8, n: usize, b: &Bytes) {
    // SAFETY: every piece lies inside `[0, n)` of both ranges.
    unsafe {
        if n >= 32 {
            let mut i = 0;
            while i + 32 < n {
                _mm256_storeu_si256(dst.add(i).cast(), _mm256_xor_si256(_mm256_loadu_si256(src.add(i).cast()), b.flip));
                i += 32;
            }
            let last = _mm256_xor_si256(_mm256_loadu_si256(src.add(n - 32).cast()), b.flip);
            _mm256_storeu_si256(dst.add(n - 32).cast(), last);
        } else if n >= 16 {
            let flip = _mm256_castsi256_si128(b.flip);
            _mm_storeu_si128(dst.cast(), _mm_xor_si128(_mm_loadu_si128(src.cast()), flip));
            _mm_storeu_si128(dst.add(n - 16).cast(), _mm_xor_si128(_mm_loadu_si128(src.add(n - 16).cast()), flip));
        } else if n >= 8 {
            let flip = u64::from_ne_bytes([b.xor; 8]);
            dst.cast::<u64>().write_unaligned(src.cast::<u64>().read_unaligned() ^ flip);
            dst.add(n - 8).cast::<u64>().write_unaligned(src.add(n - 8).cast::<u64>().read_unaligned() ^ flip);
        } else if n >= 4 {
            let flip = u32::from_ne_bytes([b.xor; 4]);
            dst.cast::<u32>().write_unaligned(src.cast::<u32>().read_unaligned() ^ flip);
            dst.add(n - 4).cast::<u32>().write_unaligned(src.add(n - 4).cast::<u32>().read_unaligned() ^ flip);
        } else {
            for i in 0..n {
                *dst.add(i) = *src.add(i) ^ b.xor;
            }
        }
    }
}
