//! The int8 kernels against a plain scalar reference of the whole contract (the module doc of
//! [`int8`](super)): results must be bit-identical. Each tier's tests skip, saying why on
//! stderr, only when the host lacks the tier's CPU features.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use super::super::{PackGeo, code_mapping_end};
use super::{
    ACCUMULATE, AMX_B_SLACK, FINAL, KBlock, OUT_F32, OUT_I8, OUT_I32, OUT_SHIFT, OUT_U8, PackedA, QGemmFn, QOut, QTier,
    WIDE, amx, avx2, pack, pack_a, qkernels, qtile_flags, vnni,
};

/// The tier's tile kernel, or `None` (and a note on stderr) when the host lacks its features.
fn kernel_or_skip(tier: QTier, test: &str) -> Option<QGemmFn> {
    if qkernels(tier).is_none() {
        crate::testing::cpu_skip(test, tier.env_name());
        return None;
    }
    Some(match tier {
        QTier::Amx => amx::qgemm_32x32,
        QTier::Vnni => vnni::qgemm_8x32,
        QTier::Avx2 => avx2::qgemm_4x16,
    })
}

fn config(cases: u32) -> Config {
    Config { cases, failure_persistence: None, ..Config::default() }
}

#[test]
fn qkernels_give_each_supported_tier_its_tile_shape_and_kernels() {
    assert_eq!(QTier::best().is_some(), QTier::Avx2.supported());
    // The best tier is the first supported one, AMX before VNNI before AVX2.
    let best = [QTier::Amx, QTier::Vnni, QTier::Avx2].into_iter().find(|t| t.supported());
    assert_eq!(QTier::best(), best);
    for tier in [QTier::Amx, QTier::Vnni, QTier::Avx2] {
        let Some(k) = qkernels(tier) else {
            crate::testing::cpu_skip("qkernels_give_each_supported_tier_its_tile_shape_and_kernels", tier.env_name());
            continue;
        };
        let gemm: QGemmFn =
            kernel_or_skip(tier, "qkernels_give_each_supported_tier_its_tile_shape_and_kernels").unwrap();
        let pack_b: pack::PackU8Fn = if tier == QTier::Amx { pack::pack_b_im2col_s8 } else { pack::pack_b_im2col_u8 };
        assert_eq!((k.tier, k.mr, k.nr), (tier, tier.mr(), tier.nr()));
        assert_eq!((k.gemm, k.pack_b), (gemm as usize as u64, pack_b as usize as u64));
    }
    assert_eq!((QTier::Vnni.mr(), QTier::Vnni.nr(), QTier::Avx2.mr(), QTier::Avx2.nr()), (8, 32, 4, 16));
    assert_eq!((QTier::Amx.mr(), QTier::Amx.nr()), (32, 32));
}

/// SplitMix64: the cases' data from a seed proptest draws.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.below(from.len())]
    }

    /// In `lo..=hi`.
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }
}

/// How a case draws its weights and inputs.
#[derive(Clone, Copy, Debug)]
enum Values {
    /// Uniform over i8 and u8.
    Random,
    /// Mostly −128/127 weights and 255 inputs: adjacent pairs overflow i16 (wide on AVX2).
    Extreme,
    /// Weight pairs whose positive and negative parts each sum to at most 128 in magnitude,
    /// with extreme members, and 255 inputs: `vpmaddubsw` at the edge of i16, unsplit.
    Edge,
    /// Tiny weights and inputs: small sums, so power-of-two scales land exactly on ties.
    Small,
}

/// One call of a tile kernel, with everything it reads and the buffers it may write.
#[derive(Clone, Debug)]
struct TileCase {
    rows: usize,
    cols: usize,
    /// The real K (`k4 = ⌈k/4⌉`).
    k: usize,
    /// `mr × k` weights (every row of the tile, also those past `rows`).
    w: Vec<i8>,
    /// The B strip, `k4·nr·4` bytes (columns past `cols` and rows past `k` hold anything).
    b: Vec<u8>,
    /// [`ACCUMULATE`], [`FINAL`] and the output kind.
    flags: u32,
    part: Vec<i32>,
    ldp: usize,
    /// The output buffer, `mr·ldo` elements of 4 bytes (bytes outputs use the first `mr·ldo`).
    out: Vec<u8>,
    ldo: usize,
    bias: Option<Vec<i32>>,
    zw: Option<Vec<i32>>,
    colsum: Vec<i32>,
    scale: Vec<f32>,
    qp: [i32; 3],
}

impl TileCase {
    /// A case for `tier` from proptest's choices and a seed for the data.
    #[allow(clippy::too_many_arguments)]
    fn new(
        tier: QTier,
        (rows, cols, k): (usize, usize, usize),
        (accumulate, last, kind): (bool, bool, u32),
        values: Values,
        (bias_kind, zw_kind, scale_kind): (u8, u8, u8),
        seed: u64,
    ) -> TileCase {
        let (mr, nr) = (tier.mr(), tier.nr());
        let mut g = Rng(seed);
        let k4 = k.div_ceil(4);
        let mut w = vec![0i8; mr * k];
        match values {
            Values::Random => w.iter_mut().for_each(|v| *v = g.next() as i8),
            Values::Extreme => w.iter_mut().for_each(|v| {
                let any = g.next() as i8;
                *v = g.pick(&[-128, 127, -128, 127, -1, 1, 0, any]);
            }),
            Values::Small => w.iter_mut().for_each(|v| *v = g.range(-2, 2) as i8),
            Values::Edge => {
                for r in 0..mr {
                    for p in (0..k).step_by(2) {
                        let w0 = g.pick(&[127i32, -128, 64, -64, 100, -100, 1]);
                        let w1 = if w0 > 0 { g.pick(&[128 - w0, -128]) } else { g.pick(&[-128 - w0, 127]) };
                        w[r * k + p] = w0 as i8;
                        if p + 1 < k {
                            w[r * k + p + 1] = w1 as i8;
                        }
                    }
                }
            }
        }
        let b = (0..k4 * nr * 4)
            .map(|_| match values {
                Values::Random => g.next() as u8,
                Values::Extreme | Values::Edge => {
                    let any = g.next() as u8;
                    g.pick(&[255, 255, 255, 0, any])
                }
                Values::Small => g.range(0, 3) as u8,
            })
            .collect();
        let (ldp, ldo) = (cols + g.below(nr + 4 - cols), cols + g.below(nr + 4 - cols));
        let part = (0..mr * ldp)
            .map(|_| if g.below(4) == 0 { g.next() as i32 } else { g.range(-1000, 1000) as i32 })
            .collect();
        let out = (0..mr * ldo * 4).map(|_| g.next() as u8).collect();
        let mut draw = |kind: u8, small: i64| -> Option<Vec<i32>> {
            match kind {
                0 => None,
                1 => Some((0..mr).map(|_| g.range(-small, small) as i32).collect()),
                _ => Some((0..mr).map(|_| g.next() as i32).collect()),
            }
        };
        let bias = draw(bias_kind, 1000);
        let zw = draw(zw_kind, 128);
        let colsum = (0..nr)
            .map(|_| if zw_kind == 2 { g.next() as i32 } else { g.range(0, 255 * 4 * k4 as i64) as i32 })
            .collect();
        let scale = (0..mr)
            .map(|_| match scale_kind {
                // Powers of two: exact products, ties at odd multiples of half a unit.
                0 => (0.5f32).powi(g.range(0, 12) as i32),
                1 => g.range(1, 1 << 20) as f32 * 1e-9,
                // Saturates the bytes outputs.
                2 => g.pick(&[1e6f32, -1e6, 3.0e38, 1.0]),
                _ => -(0.5f32).powi(g.range(0, 12) as i32),
            })
            .collect();
        let qp = match kind {
            OUT_U8 => {
                let (a, b) = (g.range(0, 255), g.range(0, 255));
                let zy = g.range(0, 255);
                if g.below(3) == 0 { [zy, 0, 255] } else { [zy, a.min(b), a.max(b)] }
            }
            OUT_I8 => {
                let (a, b) = (g.range(-128, 127), g.range(-128, 127));
                let zy = g.range(-128, 127);
                if g.below(3) == 0 { [zy, -128, 127] } else { [zy, a.min(b), a.max(b)] }
            }
            _ => [0; 3],
        }
        .map(|v| v as i32);
        let flags = (u32::from(accumulate) * ACCUMULATE) | (u32::from(last) * FINAL) | (kind << OUT_SHIFT);
        let mut c = TileCase { rows, cols, k, w, b, flags, part, ldp, out, ldo, bias, zw, colsum, scale, qp };
        if let Values::Small = values {
            // Everything small and scales of ½, ¼ or ⅛: many results land exactly on a tie
            // inside the output range.
            let small = |v: &mut i32| *v %= 8;
            c.part.iter_mut().for_each(small);
            c.bias.iter_mut().flatten().for_each(small);
            c.zw.iter_mut().flatten().for_each(|v| *v %= 2);
            c.colsum.iter_mut().for_each(small);
            c.scale.iter_mut().for_each(|s| *s = (0.5f32).powi(g.range(1, 3) as i32));
        }
        c
    }
}

/// Proptest's strategy for a tile case of `tier`: partial tiles, K up to 40 quads, every
/// flag combination and output kind, null and non-null bias and zero points, the value
/// distributions of [`Values`] and scales that are exact, small, saturating or negative.
fn tile_case(tier: QTier) -> impl Strategy<Value = TileCase> {
    let values = prop_oneof![Just(Values::Random), Just(Values::Extreme), Just(Values::Edge), Just(Values::Small)];
    (
        (1..=tier.mr(), 1..=tier.nr(), 1usize..=160),
        (any::<bool>(), any::<bool>(), 0u32..4),
        values,
        (0u8..3, 0u8..3, 0u8..4),
        any::<u64>(),
    )
        .prop_map(move |(shape, flags, values, kinds, seed)| TileCase::new(tier, shape, flags, values, kinds, seed))
}

/// `max(v, lo)` then `min(·, hi)` as `maxps`/`minps` compute them (the second operand wins on
/// NaN and on equal values).
fn clamp_like_sse(v: f32, lo: f32, hi: f32) -> f32 {
    let v = if v > lo { v } else { lo };
    if v < hi { v } else { hi }
}

/// The contract's epilogue on one element: what `part` or `out` receives.
///
/// The product is the contract's `Σ w·b` (w i8, b u8), except on the AMX tier, whose tile
/// computes `Σ w·(b as i8)` (`amx.rs`).
fn reference_tile(c: &TileCase, tier: QTier) -> (Vec<i32>, Vec<u8>) {
    let nr = tier.nr();
    let (mut part, mut out) = (c.part.clone(), c.out.clone());
    for r in 0..c.rows {
        for col in 0..c.cols {
            let mut acc = 0i32;
            for kk in 0..c.k {
                let b = c.b[(kk / 4) * nr * 4 + col * 4 + kk % 4];
                let w = c.w[r * c.k + kk];
                let p =
                    if tier == QTier::Amx { i32::from(w) * i32::from(b as i8) } else { i32::from(w) * i32::from(b) };
                acc = acc.wrapping_add(p);
            }
            if c.flags & ACCUMULATE != 0 {
                acc = acc.wrapping_add(c.part[r * c.ldp + col]);
            }
            if c.flags & FINAL == 0 {
                part[r * c.ldp + col] = acc;
                continue;
            }
            acc = acc.wrapping_add(c.bias.as_ref().map_or(0, |b| b[r]));
            if let Some(zw) = &c.zw {
                acc = acc.wrapping_sub(zw[r].wrapping_mul(c.colsum[col]));
            }
            let e = r * c.ldo + col;
            match (c.flags >> OUT_SHIFT) & 3 {
                OUT_I32 => out[4 * e..4 * e + 4].copy_from_slice(&acc.to_le_bytes()),
                OUT_F32 => out[4 * e..4 * e + 4].copy_from_slice(&(acc as f32 * c.scale[r]).to_le_bytes()),
                _ => {
                    let [zy, lo, hi] = c.qp;
                    let v = clamp_like_sse(acc as f32 * c.scale[r], (lo - zy) as f32, (hi - zy) as f32);
                    out[e] = (v.round_ties_even() as i32 + zy) as u8;
                }
            }
        }
    }
    (part, out)
}

/// The case through `tier`'s kernel, A packed by [`pack_a`]: `part` and `out` afterwards.
fn run_tile(tier: QTier, kernel: QGemmFn, c: &TileCase) -> (Vec<i32>, Vec<u8>) {
    let packed = pack_a(tier, &c.w, tier.mr(), c.k);
    let flags = c.flags | ((c.rows as u32) << 8) | ((c.cols as u32) << 16) | if packed.wide { WIDE } else { 0 };
    let (mut part, mut out) = (c.part.clone(), c.out.clone());
    let opt = |v: &Option<Vec<i32>>| v.as_ref().map_or(std::ptr::null(), |v| v.as_ptr());
    // The AMX tile reads its last K step whole: the quads past `k4` hold arbitrary bytes.
    let mut b = c.b.clone();
    if tier == QTier::Amx {
        b.extend((0..AMX_B_SLACK).map(|i| (i * 37 + 11) as u8));
    }
    // SAFETY: `kernel_or_skip` found the tier's features; the panel holds `k4` quads of `mr`
    // rows, the strip `k4` quads of `nr` columns; `part` and `out` hold `mr` rows of their
    // strides (≥ cols), `bias`/`zw`/`scale` `mr` values, `colsum` `nr`, `qp` 3.
    unsafe {
        kernel(
            c.k.div_ceil(4),
            packed.data.as_ptr(),
            b.as_ptr(),
            part.as_mut_ptr(),
            c.ldp,
            out.as_mut_ptr(),
            c.ldo,
            flags,
            opt(&c.bias),
            c.scale.as_ptr(),
            opt(&c.zw),
            c.colsum.as_ptr(),
            c.qp.as_ptr(),
        )
    };
    (part, out)
}

/// Runs 1000 random tile cases of `tier` against [`reference_tile`], bit for bit.
fn check_tiles(tier: QTier, test: &str) {
    let Some(kernel) = kernel_or_skip(tier, test) else { return };
    let mut runner = TestRunner::new(config(1000));
    runner
        .run(&tile_case(tier), |c| {
            let (part, out) = run_tile(tier, kernel, &c);
            let (want_part, want_out) = reference_tile(&c, tier);
            prop_assert_eq!(part, want_part, "part");
            prop_assert_eq!(out, want_out, "out");
            Ok(())
        })
        .unwrap();
}

#[test]
fn vnni_tile_matches_the_reference_bit_for_bit() {
    check_tiles(QTier::Vnni, "vnni_tile_matches_the_reference_bit_for_bit");
}

#[test]
fn amx_tile_matches_the_reference_bit_for_bit() {
    check_tiles(QTier::Amx, "amx_tile_matches_the_reference_bit_for_bit");
}

#[test]
fn avx2_tile_matches_the_reference_bit_for_bit() {
    check_tiles(QTier::Avx2, "avx2_tile_matches_the_reference_bit_for_bit");
}

/// Ties round to even and out-of-range values saturate, pinned by value (not only against the
/// reference): `acc = c` for column `c`, scale ½, so `y = round_half_even(c/2)` clamped.
#[test]
fn requantization_rounds_ties_to_even_and_clamps_to_lo_hi() {
    for tier in [QTier::Vnni, QTier::Avx2] {
        let Some(kernel) = kernel_or_skip(tier, "requantization_rounds_ties_to_even_and_clamps_to_lo_hi") else {
            continue;
        };
        let (mr, nr) = (tier.mr(), tier.nr());
        let mut c = TileCase::new(tier, (1, nr, 4), (false, true, OUT_U8), Values::Small, (0, 0, 0), 1);
        c.w = vec![0; mr * 4];
        c.w[0] = 1;
        c.b = (0..nr * 4).map(|i| if i % 4 == 0 { (i / 4) as u8 } else { 9 }).collect();
        c.scale = vec![0.5; mr];
        c.bias = Some(vec![-6; mr]);
        c.qp = [3, 0, 9];
        let (_, out) = run_tile(tier, kernel, &c);
        // v = (col − 6)/2, clamped to [0 − 3, 9 − 3], rounded half to even, + 3.
        let want: Vec<u8> = (0..nr as i32)
            .map(|col| (((col - 6) as f32 / 2.0).clamp(-3.0, 6.0).round_ties_even() as i32 + 3) as u8)
            .collect();
        assert_eq!(&out[..nr], &want[..], "{tier:?}");
        // −3, −2.5, −2, −1.5, −1, −0.5, 0, 0.5, 1, 1.5, …, clamped at 6.
        assert_eq!(&want[..12], &[0, 1, 1, 1, 2, 3, 3, 3, 4, 5, 5, 5]);
        assert!(want.iter().skip(18).all(|&v| v == 9));
    }
}

#[test]
fn avx2_pack_a_widens_exactly_the_layers_where_a_pair_could_saturate() {
    let wide = |w: &[i8]| pack_a(QTier::Avx2, w, 1, w.len()).wide;
    // 255·128 = 32640 fits an i16; 255·129 does not.
    assert!(!wide(&[127, 1, -128, 0]));
    assert!(!wide(&[100, 28, -64, -64]));
    assert!(!wide(&[127, -128, -128, 127]));
    assert!(wide(&[100, 29, 0, 0]));
    assert!(wide(&[0, 0, -64, -65]));
    assert!(wide(&[0, 0, 0, 0, 127, 127]));
    // Pairs are (4q, 4q+1) and (4q+2, 4q+3): 127 and 127 in different pairs are fine.
    assert!(!wide(&[0, 127, 127, 0]));
    // The last pair of an odd K is paired with padding.
    assert!(!wide(&[0, 0, 0, 0, -128]));
    assert!(!pack_a(QTier::Vnni, &[127, 127, -128, -128], 1, 4).wide);
    let p = pack_a(QTier::Avx2, &[127, 2, -128, -3, 1], 1, 5);
    assert!(p.wide);
    assert_eq!((p.k4_stride, p.panel_stride), (2 * 4 * 4, 2 * 2 * 4 * 4));
    // Row 0 of each quad: its 4 weights as little-endian i16; rows 1..4 (padding) are 0.
    let i16s = |b: &[i8]| b.chunks(2).map(|p| i16::from_le_bytes([p[0] as u8, p[1] as u8])).collect::<Vec<_>>();
    assert_eq!(i16s(&p.data[..8]), [127, 2, -128, -3]);
    assert!(p.data[8..32].iter().all(|&b| b == 0));
    assert_eq!(i16s(&p.data[32..40]), [1, 0, 0, 0]);
}

/// A whole `m × n` GEMM through [`pack_a`], the packer (1×1 geometry: B is `x`, `k × n`, with
/// `colsum`) and the tile kernel over tiles and K blocks of `kc` rows, u8 output; against the
/// reference on the plain matrices.
fn check_gemm(tier: QTier, kernel: QGemmFn, (m, k, n, kc): (usize, usize, usize, usize), w: &[i8], seed: u64) {
    let (mr, nr) = (tier.mr(), tier.nr());
    let mut g = Rng(seed);
    let x: Vec<u8> = (0..k * n)
        .map(|_| {
            let any = g.next() as u8;
            g.pick(&[255, 0, any])
        })
        .collect();
    let bias: Vec<i32> = (0..m).map(|_| g.range(-5000, 5000) as i32).collect();
    let zw: Vec<i32> = (0..m).map(|_| g.range(-3, 3) as i32).collect();
    let scale: Vec<f32> = (0..m).map(|_| 1.0 / g.range(1000, 40000) as f32).collect();
    let qp = [128, 0, 255];
    let packed: PackedA = pack_a(tier, w, m, k);
    let geo = PackGeo { ih: 1, iw: n, ow: n, kh: 1, kw: 1, sh: 1, sw: 1, dh: 1, dw: 1, ph: 0, pw: 0 }.table();
    let (tiles, strips) = (m.div_ceil(mr), n.div_ceil(nr));
    let mut part = vec![0i32; tiles * mr * n];
    let mut colsum = vec![0i32; n];
    let mut y = vec![0u8; m * n];
    for k0 in (0..k).step_by(kc) {
        let kb = kc.min(k - k0);
        let mut b = vec![0u8; strips * kb.div_ceil(4) * nr * 4];
        // SAFETY: AVX2 present (the tier's features include it); `x` holds the `k` channels
        // of a 1 × n image; `dst` and `colsum` are sized per the packer's contract.
        unsafe {
            pack::pack_b_im2col_u8(
                geo.as_ptr(),
                x.as_ptr(),
                k0,
                kb,
                0,
                n,
                nr,
                0,
                0,
                b.as_mut_ptr(),
                colsum.as_mut_ptr(),
            )
        };
        let block = match (k0 == 0, k0 + kb == k) {
            (true, true) => KBlock::Only,
            (true, false) => KBlock::First,
            (false, false) => KBlock::Middle,
            (false, true) => KBlock::Last,
        };
        for s in 0..strips {
            for t in 0..tiles {
                let (rows, cols) = ((m - t * mr).min(mr), (n - s * nr).min(nr));
                let flags = qtile_flags(rows, cols, block, QOut::U8, packed.wide);
                // SAFETY: the tier's features are present; the panel's K block at quad
                // `k0/4` and the strip hold `⌈kb/4⌉` quads; `part` has `tiles·mr` rows of
                // `n`, `y` `m` rows of `n`; per-row arrays from row `t·mr`, `colsum` from
                // column `s·nr`, each with at least `rows` / `cols` values.
                unsafe {
                    kernel(
                        kb.div_ceil(4),
                        packed.data.as_ptr().add(t * packed.panel_stride + k0 / 4 * packed.k4_stride),
                        b.as_ptr().add(s * kb.div_ceil(4) * nr * 4),
                        part.as_mut_ptr().add(t * mr * n + s * nr),
                        n,
                        y.as_mut_ptr().add(t * mr * n + s * nr),
                        n,
                        flags,
                        bias.as_ptr().add(t * mr),
                        scale.as_ptr().add(t * mr),
                        zw.as_ptr().add(t * mr),
                        colsum.as_ptr().add(s * nr),
                        qp.as_ptr(),
                    )
                };
            }
        }
    }
    for r in 0..m {
        for c in 0..n {
            let cs: i32 = (0..k).map(|kk| i32::from(x[kk * n + c])).sum();
            let acc: i32 = (0..k).map(|kk| i32::from(w[r * k + kk]) * i32::from(x[kk * n + c])).sum();
            let acc = acc + bias[r] - zw[r] * cs;
            let v = clamp_like_sse(acc as f32 * scale[r], -128.0, 127.0);
            let want = (v.round_ties_even() as i32 + 128) as u8;
            assert_eq!(y[r * n + c], want, "{tier:?} {m}×{k}×{n} kc {kc} wide {}: ({r}, {c})", packed.wide);
        }
    }
}

#[test]
fn pack_a_panels_through_the_kernel_give_the_reference_gemm_wide_or_not() {
    for tier in [QTier::Vnni, QTier::Avx2] {
        let Some(kernel) = kernel_or_skip(tier, "pack_a_panels_through_the_kernel_give_the_reference_gemm_wide_or_not")
        else {
            continue;
        };
        let mut g = Rng(5);
        for (m, k, n, kc) in [(13, 37, 45, 16), (8, 4, 32, 4), (1, 1, 1, 4), (21, 150, 70, 64), (4, 9, 17, 8)] {
            let mut random: Vec<i8> = (0..m * k).map(|_| g.next() as i8).collect();
            if k >= 2 {
                // A pair that saturates an i16 (255·254), so the AVX2 panel must be wide.
                random[..2].copy_from_slice(&[127, 127]);
            }
            let small: Vec<i8> = (0..m * k).map(|_| g.range(-64, 64) as i8).collect();
            for (w, wide) in [(random, tier == QTier::Avx2 && k >= 2), (small, false)] {
                assert_eq!(pack_a(tier, &w, m, k).wide, wide, "{tier:?} {m}×{k}");
                check_gemm(tier, kernel, (m, k, n, kc), &w, 7);
            }
        }
    }
}

/// The im2col matrix of the packer's contract: the strips and the column sums.
#[allow(clippy::too_many_arguments)]
fn reference_im2col(
    g: &PackGeo,
    x: &[u8],
    (k0, kc, n0, nc): (usize, usize, usize, usize),
    nr: usize,
    xor: u8,
    pad: u8,
) -> (Vec<u8>, Vec<i32>) {
    let q4 = kc.div_ceil(4);
    let strips = nc.div_ceil(nr);
    let mut dst = vec![0u8; strips * q4 * nr * 4];
    let mut colsum = vec![0i32; nc];
    let taps = g.kh * g.kw;
    for s in 0..strips {
        for kk in 0..4 * q4 {
            for l in 0..nr {
                let col = s * nr + l;
                let v = if kk >= kc || col >= nc {
                    0
                } else {
                    let (k, p) = (k0 + kk, n0 + col);
                    let (ch, ky, kx) = (k / taps, (k % taps) / g.kw, k % g.kw);
                    let (oy, ox) = (p / g.ow, p % g.ow);
                    let iy = (oy * g.sh + ky * g.dh) as isize - g.ph as isize;
                    let ix = (ox * g.sw + kx * g.dw) as isize - g.pw as isize;
                    if iy < 0 || ix < 0 || iy >= g.ih as isize || ix >= g.iw as isize {
                        pad
                    } else {
                        x[ch * g.ih * g.iw + iy as usize * g.iw + ix as usize] ^ xor
                    }
                };
                dst[s * q4 * nr * 4 + (kk / 4) * nr * 4 + l * 4 + kk % 4] = v;
                if col < nc {
                    colsum[col] += i32::from(v);
                }
            }
        }
    }
    (dst, colsum)
}

/// One packer call: a geometry, an input, the block of B and the packing parameters.
#[derive(Clone, Debug)]
struct PackCase {
    geo: PackGeo,
    channels: usize,
    x: Vec<u8>,
    block: (usize, usize, usize, usize),
    nr: usize,
    xor: u8,
    pad: u8,
    colsum: Option<Vec<i32>>,
}

/// Random conv geometries: odd channel counts, kernels 1–7, strides 1–3, dilations 1–2, pads
/// 0–3 (also wider than the kernel), images up to 40 × 60 (1×1 stride-1 ones take the in-place
/// path), K blocks starting at any quad, column blocks anywhere, strips of 16 and 32.
fn pack_case() -> impl Strategy<Value = PackCase> {
    (
        (1usize..=5, 1usize..=40, 1usize..=60),
        ((1usize..=7, 1usize..=7), (1usize..=3, 1usize..=3), (1usize..=2, 1usize..=2), (0usize..=3, 0usize..=3)),
        0u8..4,
        (prop_oneof![Just(16usize), Just(32)], prop_oneof![Just(0u8), Just(0x80)], any::<u8>(), any::<bool>()),
        any::<u64>(),
    )
        .prop_map(|(img, (k, s, d, p), kind, (nr, xor, pad, cs), seed)| {
            let (channels, ih, iw) = img;
            // A quarter of the cases are 1×1 stride-1 unpadded (read in place).
            let (k, s, p) = if kind == 0 { ((1, 1), (1, 1), (0, 0)) } else { (k, s, p) };
            // Kernels shrunk to fit the padded image.
            let k = (k.0.min((ih + 2 * p.0 - 1) / d.0 + 1), k.1.min((iw + 2 * p.1 - 1) / d.1 + 1));
            let (eh, ew) = (d.0 * (k.0 - 1) + 1, d.1 * (k.1 - 1) + 1);
            let (oh, ow) = ((ih + 2 * p.0 - eh) / s.0 + 1, (iw + 2 * p.1 - ew) / s.1 + 1);
            let geo = PackGeo { ih, iw, ow, kh: k.0, kw: k.1, sh: s.0, sw: s.1, dh: d.0, dw: d.1, ph: p.0, pw: p.1 };
            let mut g = Rng(seed);
            let x = (0..channels * ih * iw).map(|_| g.next() as u8).collect();
            let k_len = channels * k.0 * k.1;
            let k0 = 4 * g.below(k_len.div_ceil(4));
            let kc = 1 + g.below(k_len - k0);
            let n0 = g.below(oh * ow);
            let nc = 1 + g.below(oh * ow - n0);
            let colsum = cs.then(|| (0..nc).map(|_| g.range(-1000, 1000) as i32).collect());
            PackCase { geo, channels, x, block: (k0, kc, n0, nc), nr, xor, pad, colsum }
        })
}

/// The packer on `c`, with guard bytes after `dst` and `colsum`: the strips and column sums.
fn run_pack(c: &PackCase) -> (Vec<u8>, Option<Vec<i32>>) {
    run_packer(c, pack::pack_b_im2col_u8)
}

/// [`run_pack`] with the packer `f` (`pack_b_im2col_u8` or `pack_b_im2col_s8`).
fn run_packer(c: &PackCase, f: pack::PackU8Fn) -> (Vec<u8>, Option<Vec<i32>>) {
    const GUARD: usize = 64;
    let (k0, kc, n0, nc) = c.block;
    let size = nc.div_ceil(c.nr) * kc.div_ceil(4) * c.nr * 4;
    let mut dst = vec![0xa5u8; size + GUARD];
    let mut colsum = c.colsum.clone().map(|mut v| {
        v.extend([7; GUARD]);
        v
    });
    let table = c.geo.table();
    let cs = colsum.as_mut().map_or(std::ptr::null_mut(), |v| v.as_mut_ptr());
    assert_eq!(c.x.len(), c.channels * c.geo.ih * c.geo.iw);
    // SAFETY: the caller checked AVX2; `x` holds every channel of the geometry; `k0` is a
    // multiple of 4, `nr` of 16; the pixels exist; `dst` and `colsum` are sized per the
    // contract (plus guards).
    unsafe { f(table.as_ptr(), c.x.as_ptr(), k0, kc, n0, nc, c.nr, c.xor, c.pad, dst.as_mut_ptr(), cs) };
    assert!(dst[size..].iter().all(|&v| v == 0xa5), "wrote past dst");
    dst.truncate(size);
    let colsum = colsum.map(|mut v| {
        assert!(v[nc..].iter().all(|&v| v == 7), "wrote past colsum");
        v.truncate(nc);
        v
    });
    (dst, colsum)
}

#[test]
fn pack_b_im2col_u8_matches_a_plain_im2col() {
    if !QTier::Avx2.supported() {
        crate::testing::cpu_skip("pack_b_im2col_u8_matches_a_plain_im2col", "avx2");
        return;
    }
    let mut runner = TestRunner::new(config(1000));
    runner
        .run(&pack_case(), |c| {
            let (dst, colsum) = run_pack(&c);
            let (want, sums) = reference_im2col(&c.geo, &c.x, c.block, c.nr, c.xor, c.pad);
            prop_assert_eq!(&dst, &want);
            let want_sums = c.colsum.as_ref().map(|v| v.iter().zip(&sums).map(|(a, b)| a + b).collect::<Vec<_>>());
            prop_assert_eq!(colsum, want_sums);
            // The AMX tier's packer: the same bytes, column sums of the bytes read as i8.
            let (dst_s8, colsum_s8) = run_packer(&c, pack::pack_b_im2col_s8);
            prop_assert_eq!(&dst_s8, &want);
            let (kc, nr) = (c.block.1, c.nr);
            let signed = |col: usize| -> i32 {
                let at = (col / nr) * kc.div_ceil(4) * nr * 4 + (col % nr) * 4;
                (0..kc).map(|kk| i32::from(want[at + (kk / 4) * nr * 4 + kk % 4] as i8)).sum()
            };
            let want_s8 = c.colsum.map(|v| v.iter().enumerate().map(|(col, a)| a + signed(col)).collect::<Vec<_>>());
            prop_assert_eq!(colsum_s8, want_s8);
            Ok(())
        })
        .unwrap();
}

/// Large 1×1 stride-1 inputs read in place (whole 512-column chunks) and through lines (the
/// ragged ends), large 3×3 ones across chunks, and images so wide that a chunk's padded input
/// rows exceed the plane (packed tap by tap with bounds checks), at strides 1–3.
#[test]
fn pack_b_im2col_u8_handles_large_blocks_across_chunks_and_wide_images() {
    if !QTier::Avx2.supported() {
        crate::testing::cpu_skip("pack_b_im2col_u8_handles_large_blocks_across_chunks_and_wide_images", "avx2");
        return;
    }
    let mut g = Rng(11);
    for (ih, iw, k, s, p, block, nr) in [
        (40, 64, 1, 1, 0, (0usize, 9usize, 0usize, 2560usize), 32),
        (40, 64, 1, 1, 0, (4, 5, 0, 2048), 16),
        (37, 41, 1, 1, 0, (0, 7, 5, 1500), 32),
        (37, 41, 3, 1, 1, (8, 27, 3, 1509), 16),
        (3, 9000, 3, 1, 1, (0, 18, 100, 17000), 32),
        (4, 9001, 3, 2, 1, (4, 13, 2, 9000), 16),
        (5, 9002, 3, 3, 2, (0, 27, 1, 6000), 32),
    ] {
        let channels = (block.0 + block.1).div_ceil(k * k);
        let ow = (iw + 2 * p - k) / s + 1;
        let geo = PackGeo { ih, iw, ow, kh: k, kw: k, sh: s, sw: s, dh: 1, dw: 1, ph: p, pw: p };
        let oh = (ih + 2 * p - k) / s + 1;
        assert!(block.2 + block.3 <= oh * ow, "{geo:?}");
        let x = (0..channels * ih * iw).map(|_| g.next() as u8).collect();
        let colsum = Some(vec![0; block.3]);
        let c = PackCase { geo, channels, x, block, nr, xor: 0x80, pad: 0x80, colsum };
        let (dst, colsum) = run_pack(&c);
        let (want, sums) = reference_im2col(&c.geo, &c.x, c.block, c.nr, c.xor, c.pad);
        assert!(dst == want, "{geo:?} {block:?}");
        assert_eq!(colsum, Some(sums));
    }
}

/// Whether `code[i..]` starts with an EVEX-encoded `vpdpbusd` on zmm registers
/// (`EVEX.512.66.0F38.W0 50 /r`): byte 0x62, then P0 with map `0F38` (`mmm` = 010 in bits
/// 2..0), P1 with W = 0, the fixed bit 2 set and `pp` = 01 (the 66 prefix), P2 with vector
/// length `L'L` = 10 (512 bits) in bits 6..5, then opcode 0x50. (`vpdpbusds` is 0x51.)
fn is_vpdpbusd_zmm(code: &[u8]) -> bool {
    matches!(code, [0x62, p0, p1, p2, 0x50, ..] if p0 & 0x07 == 0x02 && p1 & 0x87 == 0x05 && p2 & 0x60 == 0x40)
}

/// The VNNI kernel really is `vpdpbusd` code: its first 4 KiB of machine code (bounded by the
/// end of its executable mapping) hold one 512-bit `vpdpbusd` per accumulator (16). Checked
/// against `objdump -d` of the test binary: in that window the matcher finds exactly the 16
/// `vpdpbusd zmm` objdump lists, at the same addresses.
#[test]
fn vnni_tile_machine_code_is_zmm_vpdpbusd() {
    if kernel_or_skip(QTier::Vnni, "vnni_tile_machine_code_is_zmm_vpdpbusd").is_none() {
        return;
    }
    let f: QGemmFn = vnni::qgemm_8x32;
    let addr = f as usize;
    let Some(end) = code_mapping_end(addr) else {
        eprintln!("vnni_tile_machine_code_is_zmm_vpdpbusd: skipped, no /proc/self/maps");
        return;
    };
    let len = (end - addr).min(4096);
    // SAFETY: `addr..addr + len` lies inside a mapped, readable executable segment of this
    // process (checked against /proc/self/maps), which stays mapped while the test runs.
    let code = unsafe { std::slice::from_raw_parts(addr as *const u8, len) };
    let found = (0..code.len()).filter(|&i| is_vpdpbusd_zmm(&code[i..])).count();
    assert!(found >= 16, "{found} zmm vpdpbusd in the first {len} bytes of qgemm_8x32");
}

/// Whether `code[i..]` starts with `tdpbssd tmm, tmm, tmm` (`VEX.128.F2.0F38.W0 5E 11:rrr:bbb`):
/// the 3-byte VEX prefix 0xC4, P0 with map `0F38` (`mmmmm` = 00010), P1 with W = 0, L = 0 and
/// `pp` = 11 (the F2 prefix; `tdpbusd`/`tdpbsud`/`tdpbuud` have 66/F3/none), opcode 0x5E, and
/// a register-form ModRM.
fn is_tdpbssd(code: &[u8]) -> bool {
    matches!(code, [0xc4, p0, p1, 0x5e, modrm, ..] if p0 & 0x1f == 0x02 && p1 & 0x87 == 0x03 && modrm & 0xc0 == 0xc0)
}

/// The AMX kernel really is `tdpbssd` code: four (one per accumulator tile) in its first 4 KiB.
/// The matcher checked against `objdump -d` of the test binary (`c4 e2 4b 5e c4  tdpbssd
/// tmm0,tmm4,tmm6`, `c4 e2 43 5e cc  tdpbssd tmm1,tmm4,tmm7`).
#[test]
fn amx_tile_machine_code_is_tdpbssd() {
    if kernel_or_skip(QTier::Amx, "amx_tile_machine_code_is_tdpbssd").is_none() {
        return;
    }
    assert!(is_tdpbssd(&[0xc4, 0xe2, 0x4b, 0x5e, 0xc4]) && is_tdpbssd(&[0xc4, 0xe2, 0x43, 0x5e, 0xcc]));
    // `ldtilecfg [rcx]` and `tileloadd tmm4, [r13 + rdx]` are not.
    assert!(!is_tdpbssd(&[0xc4, 0xe2, 0x78, 0x49, 0x01]) && !is_tdpbssd(&[0xc4, 0xc2, 0x7b, 0x4b, 0x64, 0x15, 0x00]));
    let f: QGemmFn = amx::qgemm_32x32;
    let addr = f as usize;
    let Some(end) = code_mapping_end(addr) else {
        eprintln!("amx_tile_machine_code_is_tdpbssd: skipped, no /proc/self/maps");
        return;
    };
    let len = (end - addr).min(4096);
    // SAFETY: as in `vnni_tile_machine_code_is_zmm_vpdpbusd`.
    let code = unsafe { std::slice::from_raw_parts(addr as *const u8, len) };
    let found = (0..code.len()).filter(|&i| is_tdpbssd(&code[i..])).count();
    assert!(found >= 4, "{found} tdpbssd in the first {len} bytes of qgemm_32x32");
}

#[test]
fn vpdpbusd_matcher_recognizes_the_encodings_objdump_shows() {
    // Bytes as `objdump -d` shows them: two from `qgemm_8x32` in this test binary, a
    // broadcast-memory form from GNU as (`vpdpbusd zmm1, zmm2, dword ptr [rdi+4]{1to16}`).
    assert!(is_vpdpbusd_zmm(&[0x62, 0x32, 0x75, 0x40, 0x50, 0xfa])); // zmm15, zmm17, zmm18
    assert!(is_vpdpbusd_zmm(&[0x62, 0xb2, 0x7d, 0x40, 0x50, 0xc2])); // zmm0, zmm16, zmm18
    assert!(is_vpdpbusd_zmm(&[0x62, 0xf2, 0x6d, 0x58, 0x50, 0x4f, 0x01]));
    // Not matched (GNU as): the ymm and xmm forms, vpdpbusds, vpdpwssd.
    assert!(!is_vpdpbusd_zmm(&[0x62, 0xf2, 0x6d, 0x28, 0x50, 0xcb]));
    assert!(!is_vpdpbusd_zmm(&[0x62, 0xf2, 0x6d, 0x08, 0x50, 0xcb]));
    assert!(!is_vpdpbusd_zmm(&[0x62, 0xf2, 0x6d, 0x48, 0x51, 0xcb]));
    assert!(!is_vpdpbusd_zmm(&[0x62, 0xf2, 0x6d, 0x48, 0x52, 0xcb]));
}

/// The VBMI table lookup against `table[src[i]]` on random tables and bytes, for every length
/// 0..=200 (every tail of the 64-byte loop, and no full block at all) and 4,099; the bytes past
/// `n` in the destination must stay untouched (the masked tail store).
#[test]
fn vbmi_lookup_equals_indexing() {
    let Some(f) = qkernels(QTier::Vnni).and_then(|k| k.lookup_u8) else {
        crate::testing::cpu_skip("vbmi_lookup_equals_indexing", "vbmi");
        return;
    };
    // SAFETY: `lookup_u8` is `lookup_u8_vbmi`, whose features `qkernels` checked.
    let f: unsafe extern "C" fn(*const u8, *const u8, *mut u8, usize) = unsafe { std::mem::transmute(f as usize) };
    let mut runner = TestRunner::new(config(64));
    let lens: Vec<usize> = (0..=200).chain([4099]).collect();
    runner
        .run(&(proptest::collection::vec(any::<u8>(), 256), any::<u64>()), |(table, seed)| {
            let mut state = seed | 1;
            for &n in &lens {
                let src: Vec<u8> = (0..n)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        state as u8
                    })
                    .collect();
                let mut dst = vec![0xA5u8; n + 64];
                // SAFETY: 256 table bytes, `n` source bytes, `n + 64` destination bytes.
                unsafe { f(table.as_ptr(), src.as_ptr(), dst.as_mut_ptr(), n) };
                let want: Vec<u8> = src.iter().map(|&b| table[usize::from(b)]).collect();
                prop_assert_eq!(&dst[..n], &want[..], "n = {}", n);
                prop_assert!(dst[n..].iter().all(|&b| b == 0xA5), "n = {}: wrote past the end", n);
            }
            Ok(())
        })
        .expect("the VBMI lookup equals indexing");
}

/// The AVX2 lookups (`lookup_avx2`: one operand by `vpshufb` rows, two by gathers) and the
/// AVX-512 gather (`lookup2_avx512`) against indexing the table, on every length 0..=100 (each tail of the 16- and 32-element
/// loops) and 4,099, for random tables and bytes; bytes past `n` must stay untouched.
#[test]
fn gather_lookups_equal_indexing() {
    type GatherFn = unsafe extern "C" fn(*const u8, *const u8, *const u8, *mut u8, usize);
    let mut kernels: Vec<(String, GatherFn, bool)> = Vec::new();
    for tier in [QTier::Vnni, QTier::Avx2] {
        let Some(k) = qkernels(tier) else {
            crate::testing::cpu_skip("gather_lookups_equal_indexing", tier.env_name());
            continue;
        };
        // SAFETY: addresses of `GatherFn` kernels whose features `qkernels` checked.
        let f = |a: u64| unsafe { std::mem::transmute::<usize, GatherFn>(a as usize) };
        kernels.push((format!("{tier:?} avx2, one operand"), f(k.lookup_avx2), false));
        kernels.push((format!("{tier:?} avx2, two operands"), f(k.lookup_avx2), true));
        if let Some(a) = k.lookup2_avx512 {
            kernels.push((format!("{tier:?} avx512, two operands"), f(a), true));
        }
    }
    let mut runner = TestRunner::new(config(16));
    let lens: Vec<usize> = (0..=100).chain([4099]).collect();
    runner
        .run(&any::<u64>(), |seed| {
            let mut state = seed | 1;
            let mut next = || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state
            };
            // 65,536 entries and the 3 bytes of padding the kernels may read.
            let table: Vec<u8> = (0..65536 + 3).map(|_| next() as u8).collect();
            for (name, f, two) in &kernels {
                for &n in &lens {
                    let a: Vec<u8> = (0..n).map(|_| next() as u8).collect();
                    let b: Vec<u8> = (0..n).map(|_| next() as u8).collect();
                    let mut dst = vec![0xA5u8; n + 64];
                    let bp = if *two { b.as_ptr() } else { std::ptr::null() };
                    // SAFETY: 65,536 + 3 table bytes, `n` operand bytes, `n + 64` output bytes.
                    unsafe { f(table.as_ptr(), a.as_ptr(), bp, dst.as_mut_ptr(), n) };
                    let want: Vec<u8> = (0..n)
                        .map(|i| {
                            let k = if *two { 256 * usize::from(a[i]) + usize::from(b[i]) } else { usize::from(a[i]) };
                            table[k]
                        })
                        .collect();
                    prop_assert_eq!(&dst[..n], &want[..], "{}, n = {}", name, n);
                    prop_assert!(dst[n..].iter().all(|&v| v == 0xA5), "{}, n = {}: wrote past the end", name, n);
                }
            }
            Ok(())
        })
        .expect("the gather lookups equal indexing");
}
