//! Pixel-interleaved 3-channel planes to channel planes (`[N, H, W, 3] → [N, 3, H, W]`, 4-byte
//! elements moved as bits): the input transpose of an NHWC RGB model, which the Cranelift
//! transposes (4×4 register blocks, or one element at a time when the moved axis has 3) ran in
//! 90–93 µs on opennsfw's 224×224 input, this routine in 37–38 (BENCHMARKS.md).
//!
//! Per 8 pixels: three ymm loads hold the 24 values; element `3q + c` (pixel `q`, channel `c`)
//! sits in lane `(3q + c) mod 8` of load `⌊(3q + c)/8⌋`, and the 8 lanes a channel occupies are
//! distinct (3 is coprime to 8), so two `vblendvps` gather channel `c` into one register and
//! one `vpermps` puts its pixels in order.

use std::arch::x86_64::*;

/// For channel `c`: which of the three loads each lane comes from, and the lane of pixel `q`.
const fn layout(c: usize) -> ([i32; 8], [i32; 8]) {
    let (mut src, mut lane) = ([0; 8], [0; 8]);
    let mut q = 0;
    while q < 8 {
        let e = 3 * q + c;
        src[e % 8] = (e / 8) as i32;
        lane[q] = (e % 8) as i32;
        q += 1;
    }
    (src, lane)
}

const LAYOUT: [([i32; 8], [i32; 8]); 3] = [layout(0), layout(1), layout(2)];

/// `y[c·plane + p] = x[3p + c]` for `c < 3` and pixels `p0 ≤ p < p1`.
///
/// # Safety
/// The host supports AVX2 (checked by `select`, the only place this address is taken); `x`
/// points at `3·p1` readable 4-byte values and `y` at `2·plane + p1` writable ones, `p1 ≤ plane`,
/// and the two do not overlap.
#[target_feature(enable = "avx2")]
pub(super) unsafe extern "C" fn deinterleave3(x: *const f32, y: *mut f32, plane: usize, p0: usize, p1: usize) {
    let sel = |c: usize, from: i32| {
        let m = LAYOUT[c].0.map(|s| if s == from { -1 } else { 0 });
        // SAFETY: 8 readable i32.
        unsafe { _mm256_castsi256_ps(_mm256_loadu_si256(m.as_ptr().cast())) }
    };
    let masks = [0, 1, 2].map(|c| (sel(c, 1), sel(c, 2)));
    // SAFETY: 8 readable i32 each.
    let perms = [0, 1, 2].map(|c| unsafe { _mm256_loadu_si256(LAYOUT[c].1.as_ptr().cast()) });
    let mut p = p0;
    // SAFETY: the caller's contract: pixels `p..p + 8 ≤ p1` read `x[3p..3p + 24]` and write
    // `y[c·plane + p..][..8]`.
    unsafe {
        while p + 8 <= p1 {
            let src = x.add(3 * p);
            let (a, b, d) = (_mm256_loadu_ps(src), _mm256_loadu_ps(src.add(8)), _mm256_loadu_ps(src.add(16)));
            for c in 0..3 {
                let v = _mm256_blendv_ps(_mm256_blendv_ps(a, b, masks[c].0), d, masks[c].1);
                _mm256_storeu_ps(y.add(c * plane + p), _mm256_permutevar8x32_ps(v, perms[c]));
            }
            p += 8;
        }
        while p < p1 {
            for c in 0..3 {
                *y.add(c * plane + p) = *x.add(3 * p + c);
            }
            p += 1;
        }
    }
}
