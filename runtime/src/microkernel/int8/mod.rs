//! int8 register-tile microkernels (u8 activations × i8 weights, exact i32 sums) and the
//! im2col packing routine that feeds them, for the Cranelift int8 GEMM driver to call through
//! `call_indirect`; also a depthwise conv kernel (AVX2, both tiers; `depthwise.rs`, its
//! contract on `qdw_conv_2d`) that computes whole planes, staging and requantization included.
//! Three tiers, chosen at load from the host's CPU features ([`QTier`]): an AMX tile
//! (`tdpbssd`, `amx.rs`: the same contract on activations shifted to i8, see there), an
//! AVX-512 VNNI tile (`vpdpbusd`) and an AVX2 tile (`vpmaddubsw` + `vpmaddwd`).
//!
//! # The contract: exact integer GEMM with a requantizing epilogue
//! `Y[r][c]` is a reduction of length K over A = weights (i8, `M × K`) and B = activations
//! (u8, `K × N`). K is grouped in quads of 4 (`k4 = ⌈K/4⌉`), zero-padded.
//!
//! - **Packed A** ([`pack_a`], at load): per tier, tiles of `mr` rows; the K block starting at
//!   quad `q` of tile `t` is at byte `t·panel_stride + q·k4_stride` ([`PackedA`]). Rows past
//!   M and `k` past K are 0. AMX: `[k64][32][64]` per tile (see `amx.rs`).
//!   VNNI: `[k4][8][4]` per tile. AVX2: `[k4][mr][4]`, or, when
//!   [`PackedA::wide`], `[k4][mr][4]` i16 (little-endian; see [`pack_a`]).
//! - **Packed B** (`pack_b_im2col_u8`, per K block): strips of `nr` columns, each `[k4][nr][4]`
//!   u8: element `(kk, col)` of a strip at byte `(kk/4)·nr·4 + col·4 + kk%4`.
//! - **Tile kernel** (one per tier, C ABI, [`QKernels::gemm`]):
//!   `(k4: usize, a: *const i8, b: *const u8, part: *mut i32, ldp: usize, out: *mut u8,
//!   ldo: usize, flags: u32, bias: *const i32, scale: *const f32, zw: *const i32,
//!   colsum: *const i32, qp: *const i32)`. It computes, for the valid rows `r < rows` and
//!   columns `c < cols` (`flags` bits 8..16 and 16..24),
//!   `acc[r][c] = Σ_{q<k4} Σ_{j<4} a(r, 4q+j)·b(4q+j, c)` exactly in i32 (wrapping, as
//!   `vpdpbusd` does; `a` is the weight, an i16 in a wide panel). Then: with [`ACCUMULATE`], `acc += part[r·ldp + c]`. Without [`FINAL`]
//!   it stores `acc` to `part[r·ldp + c]` and returns. With [`FINAL`]: `acc += bias[r]` (a null
//!   `bias` is 0); if `zw` is non-null, `acc -= zw[r]·colsum[c]` (wrapping); then by the
//!   output kind ([`QOut`], `flags` bits 24..26), element `r·ldo + c` of `out` gets:
//!   `I32`: `acc`; `F32`: `acc as f32 · scale[r]` (one f32 multiply; `acc as f32` rounds to
//!   nearest even); `U8`/`I8`: with `qp = [zy, lo, hi]`, `v = acc as f32 · scale[r]`, clamped
//!   to `[(lo − zy) as f32, (hi − zy) as f32]` (a NaN, only possible from a non-finite scale,
//!   becomes the lower bound), `y = round_half_to_even(v) as i32 + zy`, one byte. That is
//!   onnxruntime/MLAS's requantization (`cvtps2dq` under the default MXCSR, which Rust code
//!   assumes throughout). `bias`, `scale` and `zw` point at the tile's first row, `colsum` at
//!   its first column. Nothing outside the `rows × cols` tile of `part`/`out` is read or
//!   written.
//!
//! `flags` ([`qtile_flags`]): bit 0 [`ACCUMULATE`], bit 1 [`FINAL`], bit 4 [`WIDE`] (AVX2),
//! bits 8..16 the valid rows (`1..=mr`), bits 16..24 the valid columns (`1..=nr`), bits 24..26
//! the output kind (0 `I32`, 1 `F32`, 2 `U8`, 3 `I8`).
//!
//! The scalar reference of the whole contract is in `tests.rs` (`reference_tile`,
//! `reference_im2col`); every kernel is checked bit for bit against it.
//!
//! The one `unsafe` boundary: [`qkernels`] is the only place that takes the kernels'
//! addresses, and it does so only after checking the CPU features their `#[target_feature]`
//! needs. The contract a caller (generated code) must keep is documented on each kernel.

#[cfg(target_arch = "x86_64")]
mod amx;
#[cfg(target_arch = "x86_64")]
mod avx2;
mod depthwise;
#[cfg(target_arch = "x86_64")]
pub(crate) mod gemv;
#[cfg(target_arch = "x86_64")]
mod lookup;
#[cfg(target_arch = "x86_64")]
mod pack;
#[cfg(all(test, target_arch = "x86_64"))]
mod tests;
#[cfg(target_arch = "x86_64")]
mod vnni;
mod winograd;

pub(crate) use depthwise::QdwGeo;
pub(crate) use winograd::{QwGeo, transform_weights as winograd_weights};

/// Rows (output channels) of the VNNI register tile.
pub(crate) const VNNI_MR: usize = 8;
/// Columns (output pixels) of the VNNI register tile.
pub(crate) const VNNI_NR: usize = 32;
/// Rows (output channels) of the AMX tile: two 16-row A tiles.
pub(crate) const AMX_MR: usize = 32;
/// Columns (output pixels) of the AMX tile: two 16-column B tiles.
pub(crate) const AMX_NR: usize = 32;
/// Bytes an AMX tile call may read past its B strip (see `amx::qgemm_32x32`).
#[cfg(target_arch = "x86_64")]
pub(crate) use amx::B_SLACK as AMX_B_SLACK;
#[cfg(not(target_arch = "x86_64"))]
pub(crate) const AMX_B_SLACK: usize = 0;
/// Rows of the AVX2 register tile.
pub(crate) const AVX2_MR: usize = 4;
/// Columns of the AVX2 register tile.
pub(crate) const AVX2_NR: usize = 16;

/// `flags` bit: add the partial sums in `part` to the product.
pub(crate) const ACCUMULATE: u32 = 1;
/// `flags` bit: this is the last K block: apply the epilogue and store to `out` (else store
/// the sums to `part`).
pub(crate) const FINAL: u32 = 2;
/// `flags` bit (AVX2 tier): the A panel is wide, i16 weights ([`PackedA::wide`]); the VNNI
/// tier ignores it (its panels are never wide).
pub(crate) const WIDE: u32 = 1 << 4;
/// First bit of the output kind ([`QOut`]) in `flags` (bits 24..26).
pub(crate) const OUT_SHIFT: u32 = 24;
/// The output kinds in `flags` (bits 24..26): [`QOut::I32`], [`QOut::F32`], [`QOut::U8`],
/// [`QOut::I8`].
const OUT_I32: u32 = 0;
const OUT_F32: u32 = 1;
const OUT_U8: u32 = 2;
const OUT_I8: u32 = 3;

/// What a [`FINAL`] tile stores to `out` (see the module doc for the exact arithmetic).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
// The kernels' tests build their flags with these; the driver (`codegen/qconv.rs`) emits them.
#[allow(dead_code)]
pub(crate) enum QOut {
    /// The i32 sums (`out` is an `*mut i32`).
    I32,
    /// The sums times `scale[r]` (`out` is an `*mut f32`).
    F32,
    /// Requantized to u8 with `qp = [zy, lo, hi]`, `0 ≤ lo ≤ hi ≤ 255`, `zy` in `0..=255`.
    U8,
    /// Requantized to i8 with `qp = [zy, lo, hi]`, `−128 ≤ lo ≤ hi ≤ 127`, `zy` in `−128..=127`.
    I8,
}

/// Which part of the reduction a tile call covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
// The kernels' tests build their flags with these; the driver (`codegen/qconv.rs`) emits them.
#[allow(dead_code)]
pub(crate) enum KBlock {
    /// The whole reduction: product, epilogue, store to `out`.
    Only,
    /// The first of several K blocks: store the product to `part`.
    First,
    /// A middle block: add `part`, store to `part`.
    Middle,
    /// The last block: add `part`, epilogue, store to `out`.
    Last,
}

/// The `flags` of a tile call: `rows × cols` valid (`1..=mr`, `1..=nr` of the tier), the K
/// block, the output kind (ignored unless the block is the last), and whether the A panel is
/// wide ([`PackedA::wide`]).
// The kernels' tests build their flags with these; the driver (`codegen/qconv.rs`) emits them.
#[allow(dead_code)]
pub(crate) fn qtile_flags(rows: usize, cols: usize, block: KBlock, out: QOut, wide: bool) -> u32 {
    debug_assert!((1..=255).contains(&rows) && (1..=255).contains(&cols));
    let block = match block {
        KBlock::Only => FINAL,
        KBlock::First => 0,
        KBlock::Middle => ACCUMULATE,
        KBlock::Last => ACCUMULATE | FINAL,
    };
    let out = match out {
        QOut::I32 => OUT_I32,
        QOut::F32 => OUT_F32,
        QOut::U8 => OUT_U8,
        QOut::I8 => OUT_I8,
    };
    let wide = if wide { WIDE } else { 0 };
    ((rows as u32) << 8) | ((cols as u32) << 16) | block | (out << OUT_SHIFT) | wide
}

/// The int8 kernel tiers, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum QTier {
    /// AMX-TILE + AMX-INT8 (with the VNNI tier's features for the epilogue): a 32 × 32 tile of
    /// `tdpbssd` on four accumulator tiles.
    Amx,
    /// AVX-512 F/BW/VNNI: an 8 × 32 tile of `vpdpbusd` on zmm registers.
    Vnni,
    /// AVX2: a 4 × 16 tile of `vpmaddubsw` + `vpmaddwd` on ymm registers, exact through
    /// wide weight panels where a weight pair could saturate ([`pack_a`]).
    Avx2,
}

impl QTier {
    /// Whether this host has the CPU features the tier's kernels (and the packer, AVX2) need.
    pub(crate) fn supported(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            match self {
                QTier::Amx => QTier::Vnni.supported() && amx_enabled(),
                QTier::Vnni => has!("avx2") && has!("avx512f") && has!("avx512bw") && has!("avx512vnni"),
                QTier::Avx2 => has!("avx2"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    }

    /// The best tier this host supports, if any.
    pub(crate) fn best() -> Option<QTier> {
        [QTier::Amx, QTier::Vnni, QTier::Avx2].into_iter().find(|t| t.supported())
    }

    /// Rows of the tier's register tile (and of a packed A tile).
    /// The tier's name in `CNNC_KERNELS` and `CNNC_REQUIRE_CPU`.
    #[cfg(test)]
    pub(crate) fn env_name(self) -> &'static str {
        match self {
            QTier::Amx => "amx",
            QTier::Vnni => "vnni",
            QTier::Avx2 => "avx2",
        }
    }

    pub(crate) fn mr(self) -> usize {
        match self {
            QTier::Amx => AMX_MR,
            QTier::Vnni => VNNI_MR,
            QTier::Avx2 => AVX2_MR,
        }
    }

    /// Columns of the tier's register tile (and of a packed B strip).
    pub(crate) fn nr(self) -> usize {
        match self {
            QTier::Amx => AMX_NR,
            QTier::Vnni => VNNI_NR,
            QTier::Avx2 => AVX2_NR,
        }
    }
}

/// Whether AMX is usable by this process (`amx::enable`, asked once).
#[cfg(target_arch = "x86_64")]
fn amx_enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(amx::enable)
}

/// Addresses of one tier's int8 kernels, for `iconst` + `call_indirect` in generated code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct QKernels {
    pub tier: QTier,
    /// Rows of the register tile.
    pub mr: usize,
    /// Columns of the register tile; pass it as the packer's `nr`.
    pub nr: usize,
    /// The tile kernel (`amx::qgemm_32x32`, `vnni::qgemm_8x32` or `avx2::qgemm_4x16`), with
    /// the C signature
    /// `(k4: usize, a: *const i8, b: *const u8, part: *mut i32, ldp: usize, out: *mut u8,
    /// ldo: usize, flags: u32, bias: *const i32, scale: *const f32, zw: *const i32,
    /// colsum: *const i32, qp: *const i32)`; `flags` from [`qtile_flags`].
    pub gemm: u64,
    /// `pack::pack_b_im2col_u8` (AVX2; on the AMX tier `pack_b_im2col_s8`, whose column sums
    /// read the packed bytes as i8), with the C signature
    /// `(geo: *const i64, x: *const u8, k0: usize, kc: usize, n0: usize, nc: usize, nr: usize,
    /// xor: u8, pad: u8, dst: *mut u8, colsum: *mut i32)` (`geo` a
    /// [`PackGeo::table`](super::PackGeo::table); Cranelift callers declare `xor` and `pad` as
    /// `I8` parameters with `uext`, as the C ABI wants).
    pub pack_b: u64,
    /// On the VNNI tier of a host with AVX-512 VBMI, `lookup::lookup_u8_vbmi`, the C signature
    /// `(table: *const u8, src: *const u8, dst: *mut u8, n: usize)`: `dst[i] = table[src[i]]`
    /// for a 256-byte table (`Op::Lookup` of one 8-bit operand).
    pub lookup_u8: Option<u64>,
    /// `lookup::lookup_u8_avx2` (both tiers have AVX2): a lookup of one byte operand (`vpshufb`
    /// over the table's sixteen rows) or two (`vpgatherdd`) in a byte table followed by 3 bytes
    /// of padding (a copy made at load), C
    /// signature `(table: *const u8, a: *const u8, b: *const u8, dst: *mut u8, n: usize)`, one
    /// operand when `b` is null.
    pub lookup_avx2: u64,
    /// On the VNNI tier, `lookup::lookup2_u8_avx512`: the two-operand gather lookup on zmm
    /// registers, the same signature with a non-null `b`.
    pub lookup2_avx512: Option<u64>,
    /// `depthwise::qdw_conv_2d` (AVX2), or on the VNNI tier of a host with AVX-512 VL
    /// `depthwise::qdw_conv_2d_vnni` (the same results): planes of a depthwise conv with a
    /// quantized output, the C signature `(geo: *const i64, x: *const u8, w: *const i32,
    /// bias: *const i32, scale: *const f32, y: *mut u8, p0: usize, p1: usize, r0: usize,
    /// r1: usize, scratch: *mut u8)` (`geo` a [`QdwGeo::table`]).
    pub depthwise: u64,
    /// The profile's name of [`QKernels::depthwise`]: `qconv-depthwise-avx2` or
    /// `qconv-depthwise-vnni`.
    pub depthwise_variant: &'static str,
    /// `winograd::qwino_f2` (AVX2, both tiers): a work unit of a quantized 3×3 stride-1 conv
    /// by exact Winograd F(2×2, 3×3), the C signature `(geo: *const i64, x: *const u8,
    /// a: *const i16, bias: *const i32, scale: *const f32, y: *mut u8, ty0: usize, ty1: usize,
    /// scratch: *mut u8)` (`geo` a [`QwGeo::table`], `a` [`winograd_weights`]' panels).
    pub winograd: u64,
    /// `gemv::qgemv_avx2` (both tiers) and `gemv::qgemv_vnni` (VNNI and AMX tiers): a block
    /// range of a quantized matrix-vector product, contract in `gemv.rs`.
    pub gemv_avx2: u64,
    pub gemv_vnni: Option<u64>,
}

/// The kernels of `tier`, or `None` when this host lacks its CPU features.
pub(crate) fn qkernels(tier: QTier) -> Option<QKernels> {
    if !tier.supported() {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    {
        // The addresses are of functions whose target features `supported` just checked;
        // calling them is sound under the contracts on `vnni::qgemm_8x32`, `avx2::qgemm_4x16`,
        // `pack::pack_b_im2col_u8`, `depthwise::qdw_conv_2d{,_vnni}`, `winograd::qwino_f2` and the `lookup` kernels,
        // which the generated code keeps.
        let gemm: QGemmFn = match tier {
            QTier::Amx => amx::qgemm_32x32,
            QTier::Vnni => vnni::qgemm_8x32,
            QTier::Avx2 => avx2::qgemm_4x16,
        };
        let pack_b: pack::PackU8Fn = if tier == QTier::Amx { pack::pack_b_im2col_s8 } else { pack::pack_b_im2col_u8 };
        // The AMX tier has every VNNI feature: it shares the VNNI tier's other kernels.
        let wide_regs = tier != QTier::Avx2;
        // The VNNI tier's features plus VL (for `vpdpwssd` on ymm), checked here.
        let dw_vnni = wide_regs && std::arch::is_x86_feature_detected!("avx512vl");
        let (depthwise, depthwise_variant): (depthwise::QdwFn, _) = if dw_vnni {
            (depthwise::qdw_conv_2d_vnni, "qconv-depthwise-vnni")
        } else {
            (depthwise::qdw_conv_2d, "qconv-depthwise-avx2")
        };
        // The VNNI tier's features (AVX-512 F, BW) plus VBMI, checked here.
        let lookup_u8 = (wide_regs && std::arch::is_x86_feature_detected!("avx512vbmi")).then(|| {
            let f: unsafe extern "C" fn(*const u8, *const u8, *mut u8, usize) = lookup::lookup_u8_vbmi;
            f as usize as u64
        });
        let winograd: winograd::QwFn = winograd::qwino_f2;
        let (gemv_avx2, gemv_vnni): (gemv::QGemvFn, gemv::QGemvFn) = (gemv::qgemv_avx2, gemv::qgemv_vnni);
        type GatherFn = unsafe extern "C" fn(*const u8, *const u8, *const u8, *mut u8, usize);
        let (avx2, avx512): (GatherFn, GatherFn) = (lookup::lookup_u8_avx2, lookup::lookup2_u8_avx512);
        Some(QKernels {
            tier,
            mr: tier.mr(),
            nr: tier.nr(),
            gemm: gemm as usize as u64,
            pack_b: pack_b as usize as u64,
            lookup_u8,
            lookup_avx2: avx2 as usize as u64,
            lookup2_avx512: wide_regs.then_some(avx512 as usize as u64),
            depthwise: depthwise as usize as u64,
            depthwise_variant,
            winograd: winograd as usize as u64,
            gemv_avx2: gemv_avx2 as usize as u64,
            gemv_vnni: wide_regs.then_some(gemv_vnni as usize as u64),
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    None
}

/// The C signature of a tile kernel (see the module doc).
#[cfg(target_arch = "x86_64")]
pub(super) type QGemmFn = unsafe extern "C" fn(
    usize,
    *const i8,
    *const u8,
    *mut i32,
    usize,
    *mut u8,
    usize,
    u32,
    *const i32,
    *const f32,
    *const i32,
    *const i32,
    *const i32,
);

/// Weights packed for one tier's tile kernel (see the module doc for the layouts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PackedA {
    pub data: Vec<i8>,
    /// Bytes between tiles of `mr` rows.
    pub panel_stride: usize,
    /// Bytes per quad of K inside a tile: the K block starting at quad `q` of tile `t` starts
    /// at byte `t·panel_stride + q·k4_stride`.
    pub k4_stride: usize,
    /// (AVX2 only) every weight is stored as a little-endian i16; pass [`WIDE`] in `flags`.
    pub wide: bool,
}

/// Packs the `m × k` row-major weights `w` for `tier`'s tile kernel, zero-padding rows to a
/// multiple of `mr` and K to a multiple of 4.
///
/// AVX2: `vpmaddubsw` sums adjacent weight pairs (`k = 4q, 4q+1` and `4q+2, 4q+3`) times u8
/// inputs into a *saturating* i16. When some pair could leave the i16 range for inputs in
/// `0..=255` (`255·(max(w₀,0) + max(w₁,0)) > 32767` or `255·(min(w₀,0) + min(w₁,0)) < −32768`),
/// the whole layer is packed wide: each quad holds the `mr × 4` weights as little-endian i16
/// (row `r` at byte `8·r`), which the kernel (given [`WIDE`]) multiplies by the inputs widened
/// to i16 with `vpmaddwd`, exactly and at the unsplit loop's multiplies per MAC. VNNI
/// (`vpdpbusd` sums in i32) is never wide.
///
/// # Panics
/// If `w.len() != m·k` (a bug in the caller).
// The kernels' tests build their flags with these; the driver (`codegen/qconv.rs`) emits them.
#[allow(dead_code)]
pub(crate) fn pack_a(tier: QTier, w: &[i8], m: usize, k: usize) -> PackedA {
    pack_a_as(tier, w, m, k, needs_wide(tier, w, m, k))
}

/// Whether [`pack_a`] packs these weights wide (AVX2 only).
pub(crate) fn needs_wide(tier: QTier, w: &[i8], m: usize, k: usize) -> bool {
    tier == QTier::Avx2 && pairs_may_saturate(w, m, k)
}

/// [`pack_a`] with the layout decided by the caller (`wide` is ignored by VNNI): the groups
/// of a grouped conv share one kernel flag, so one group that needs wide panels widens them all.
pub(crate) fn pack_a_as(tier: QTier, w: &[i8], m: usize, k: usize, wide: bool) -> PackedA {
    assert_eq!(w.len(), m * k, "pack_a: {m}×{k} weights");
    if tier == QTier::Amx {
        return pack_a_amx(w, m, k);
    }
    let mr = tier.mr();
    let k4 = k.div_ceil(4);
    let at = |r: usize, kk: usize| if r < m && kk < k { w[r * k + kk] } else { 0 };
    let wide = wide && tier == QTier::Avx2;
    // A wide quad holds i16 weights: twice the bytes.
    let k4_stride = if wide { 2 * mr * 4 } else { mr * 4 };
    let panel_stride = k4 * k4_stride;
    let tiles = m.div_ceil(mr);
    let mut data = vec![0i8; tiles * panel_stride];
    for t in 0..tiles {
        for q in 0..k4 {
            for r in 0..mr {
                for j in 0..4 {
                    let v = at(t * mr + r, 4 * q + j);
                    let quad = t * panel_stride + q * k4_stride;
                    if wide {
                        // Row r's 4 weights as little-endian i16 at byte 8·r of the quad.
                        let [lo, hi] = i16::from(v).to_le_bytes();
                        data[quad + r * 8 + 2 * j] = lo as i8;
                        data[quad + r * 8 + 2 * j + 1] = hi as i8;
                    } else {
                        data[quad + r * 4 + j] = v;
                    }
                }
            }
        }
    }
    PackedA { data, panel_stride, k4_stride, wide }
}

/// The AMX panels: per tile of 32 rows, `⌈k/64⌉` K steps of `[32 rows][64 bytes]` of the i8
/// weights, and 0 for rows past `m` and `k` past `k` (so whatever the B tile holds there
/// contributes 0). A K block at quad `q` (a multiple of 16) starts at
/// `q·128` bytes into its tile: `k4_stride = 128`.
fn pack_a_amx(w: &[i8], m: usize, k: usize) -> PackedA {
    const STEP: usize = amx::A_STEP;
    let panel_stride = k.div_ceil(64) * STEP;
    let mut data = vec![0i8; m.div_ceil(AMX_MR) * panel_stride];
    for r in 0..m {
        for (kk, &v) in w[r * k..(r + 1) * k].iter().enumerate() {
            data[(r / AMX_MR) * panel_stride + (kk / 64) * STEP + (r % AMX_MR) * 64 + kk % 64] = v;
        }
    }
    PackedA { data, panel_stride, k4_stride: AMX_MR * 4, wide: false }
}

/// Whether some pair `(w[r][2p], w[r][2p+1])` times inputs in `0..=255` could saturate the i16
/// of `vpmaddubsw` (pairs never straddle a quad: K is padded with zeros to a multiple of 4).
fn pairs_may_saturate(w: &[i8], m: usize, k: usize) -> bool {
    (0..m).any(|r| {
        let row = &w[r * k..(r + 1) * k];
        row.chunks(2).any(|p| {
            let pos: i32 = p.iter().map(|&v| i32::from(v).max(0)).sum();
            let neg: i32 = p.iter().map(|&v| i32::from(v).min(0)).sum();
            255 * pos > i32::from(i16::MAX) || 255 * neg < i32::from(i16::MIN)
        })
    })
}
