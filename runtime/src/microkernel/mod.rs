//! Precompiled register-tile microkernels (stable Rust, `std::arch`) that Cranelift-generated
//! drivers call through `call_indirect`, selected at load from the host's CPU features.
//!
//! Cranelift's x64 backend stops at 128-bit vectors; these kernels use 256-bit AVX2/FMA for the
//! innermost register tile, while the driver (loops over cache blocks and tiles, shapes and
//! blockings baked in) stays generated code. See DESIGN.md § "Code generation".
//!
//! Selection: [`select`] returns the kernels when the host has AVX2 and FMA, unless the
//! environment variable `CNNC_KERNELS=cranelift` forces the portable pure-Cranelift kernels
//! ([`Choice::from_env`]); the env var is read each time a model is compiled.
//!
//! The one `unsafe` boundary: [`select`] is the only place that takes the kernels' addresses,
//! and it does so only after checking the CPU features their `#[target_feature]` needs. The
//! contract a caller (generated code) must keep is documented on each kernel.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx2_small;
#[cfg(target_arch = "x86_64")]
mod avx2_winograd;

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
    debug_assert!((1..=MR).contains(&rows) && (1..=NR).contains(&cols));
    ((rows as u32) << 8) | ((cols as u32) << 16)
}

/// First bit of the activation kind in `flags` (bits 24..28; 0 is none).
pub(super) const ACT_SHIFT: u32 = 24;
pub(super) const ACT_CLAMP: u32 = 1;
pub(super) const ACT_LEAKY_RELU: u32 = 2;
pub(super) const ACT_HARD_SIGMOID: u32 = 3;
pub(super) const ACT_HARD_SWISH: u32 = 4;
pub(super) const ACT_SIGMOID: u32 = 5;

/// The activation `sgemm_6x16` applies last, after the bias and residual: its kind goes into
/// `flags` ([`Act::flags`]) and its two parameters into the kernel's `p0, p1` arguments
/// ([`Act::params`]). Each is computed exactly as the Cranelift activation kernels compute it
/// (`codegen::unary`: the same operations in the same order, with the same NaN and signed-zero
/// behaviour, the same inline `exp` polynomial for Sigmoid), so a fused activation gives the
/// bits of the conv followed by the separate activation kernel.
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
    /// `1 / (1 + e⁻ˣ)` through the inline Cephes-style `exp` (within 1.7e-7 relative).
    Sigmoid,
}

impl Act {
    /// The microkernel form of a fused activation; `None` for ops it does not apply.
    pub(crate) fn of(op: UnaryOp) -> Option<Act> {
        Some(match op {
            UnaryOp::Relu => Act::Clamp { lo: 0.0, hi: f32::INFINITY },
            UnaryOp::Clip { min, max } => Act::Clamp { lo: min, hi: max },
            UnaryOp::LeakyRelu { alpha } => Act::LeakyRelu { alpha },
            UnaryOp::HardSigmoid { alpha, beta } => Act::HardSigmoid { alpha, beta },
            UnaryOp::HardSwish => Act::HardSwish,
            UnaryOp::Sigmoid => Act::Sigmoid,
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
        };
        kind << ACT_SHIFT
    }

    /// The kernel's `(p0, p1)` arguments for this activation (unused ones are 0).
    pub(crate) fn params(self) -> (f32, f32) {
        match self {
            Act::Clamp { lo, hi } => (lo, hi),
            Act::LeakyRelu { alpha } => (alpha, 0.0),
            Act::HardSigmoid { alpha, beta } => (alpha, beta),
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

/// Which kernels a compile may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Choice {
    /// The precompiled microkernels when the host supports them.
    Auto,
    /// Only the pure-Cranelift kernels.
    Cranelift,
}

impl Choice {
    /// `CNNC_KERNELS=cranelift` forces [`Choice::Cranelift`]; anything else is [`Choice::Auto`].
    pub(crate) fn from_env() -> Choice {
        match std::env::var("CNNC_KERNELS") {
            Ok(v) if v.eq_ignore_ascii_case("cranelift") => Choice::Cranelift,
            _ => Choice::Auto,
        }
    }
}

/// Addresses of the host's microkernels, for `iconst` + `call_indirect` in generated code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Microkernels {
    /// `avx2::sgemm_6x16`, with the C signature
    /// `(k: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize, flags: u32,
    /// bias: *const f32, residual: *const f32, p0: f32, p1: f32)`; `p0, p1` are the
    /// parameters of the activation `flags` selects ([`Act`]).
    pub sgemm_6x16: u64,
    /// `avx2::sgemm_6x16_rows`: `sgemm_6x16` reading row `kk` of B in place at
    /// `x + offs[kk]`, with the C signature `(k: usize, a: *const f32, x: *const f32,
    /// offs: *const i64, c: *mut f32, ldc: usize, flags: u32, bias: *const f32,
    /// residual: *const f32, p0: f32, p1: f32)`.
    pub sgemm_6x16_rows: u64,
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
    /// Small output maps and stride-2 columns (`avx2_small`): the transposed tile
    /// `sgemm_6x16_t` (6 pixels read in place × 16 channels, stored channel-major) with the C
    /// signature `(k: usize, x: *const f32, lda: usize, offs: *const i64, w: *const f32,
    /// y: *mut f32, ldy: usize, flags: u32, bias: *const f32, residual: *const f32,
    /// params: u64)` (`params`: the activation's `p0` and `p1` as f32 bits, low and high
    /// half), and `pack_b_im2col_s2`, `pack_b_im2col` for column stride 2 (same signature).
    pub small: SmallKernels,
}

/// See [`Microkernels::small`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SmallKernels {
    pub sgemm_6x16_t: u64,
    pub pack_b_im2col_s2: u64,
}

/// The microkernels this host may run under `choice`, or `None` (use the Cranelift kernels).
pub(crate) fn select(choice: Choice) -> Option<Microkernels> {
    if choice == Choice::Cranelift {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // The addresses are of functions whose target features were just checked; calling
            // them is sound under the contracts on `avx2::sgemm_6x16`, `avx2::sgemm_6x16_rows`,
            // `avx2::pack_b_im2col` and the `avx2_winograd` transforms, which the generated
            // drivers keep.
            let gemm: avx2::SgemmFn = avx2::sgemm_6x16;
            let rows: avx2::SgemmRowsFn = avx2::sgemm_6x16_rows;
            let pack: avx2::PackFn = avx2::pack_b_im2col;
            let win: [avx2_winograd::InputFn; 2] = [avx2_winograd::winograd_input_f2, avx2_winograd::winograd_input_f4];
            let wout: [avx2_winograd::OutputFn; 2] =
                [avx2_winograd::winograd_output_f2, avx2_winograd::winograd_output_f4];
            return Some(Microkernels {
                sgemm_6x16: gemm as usize as u64,
                sgemm_6x16_rows: rows as usize as u64,
                pack_b_im2col: pack as usize as u64,
                winograd_input: win.map(|f| f as usize as u64),
                winograd_output: wout.map(|f| f as usize as u64),
                small: avx2_small::kernels(),
            });
        }
    }
    None
}
