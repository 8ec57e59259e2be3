//! The AMX int8 tile (Intel AMX-TILE + AMX-INT8, Sapphire Rapids and later): 32 rows × 32
//! columns per call in four 16 × 16 i32 accumulator tiles (`tmm0..3`), one `tdpbssd` per
//! accumulator and K step of 64, the sums stored to the stack and run through the VNNI tile's
//! epilogue ([`vnni::epilogue`](super::vnni::epilogue)) 8 rows at a time.
//!
//! AMX's unsigned × signed product (`tdpbusd`) takes the *rows* operand unsigned, the other
//! tiers' roles swapped; so this tile multiplies signed by signed (`tdpbssd`): the weights as
//! they are (an A tile is 16 output channels × 64 K bytes of i8) and the activations shifted
//! to i8, the packer storing `x' ^ 0x80 = x' − 128` in the usual `[k4][32][4]` strips, whose
//! 16 quads × 64 bytes are exactly a B tile. The tile computes `T[r][c] = Σ_k w·(x' − 128)`
//! and the driver (`codegen/qconv.rs`) recovers the contract's `Σ_k w·x' = T + 128·Σ_k w`
//! exactly (wrapping i32, like every tier) by folding `128·Σ_k w` into the bias; the
//! zero-point correction `zw·Σ_k x'` becomes `zw·S[c]` plus a per-channel term, with
//! `S[c] = Σ_k (x' − 128)` the packer's signed column sums (`pack::pack_b_im2col_s8`), needed
//! only when some `zw ≠ 0` (never for onnxruntime's symmetric s8 weights).
//!
//! The tile configuration (palette 1, eight 16-row × 64-byte tiles) is loaded once per thread;
//! nothing else in the process uses AMX. Linux gives a process the AMX tile data only on
//! request ([`enable`], `arch_prctl(ARCH_REQ_XCOMP_PERM)`), made once before the tier is
//! offered.

use std::arch::asm;
use std::arch::x86_64::*;
use std::cell::Cell;
use std::mem::MaybeUninit;

use super::vnni::{Tile, epilogue};
use super::{AMX_MR as MR, AMX_NR as NR, OUT_F32, OUT_I32, OUT_SHIFT};

/// Bytes of one A tile's K step in a packed panel (`[k64][32][64]`): 32 rows of 64 bytes.
pub(super) const A_STEP: usize = MR * 64;
/// Bytes a call may read past the strip's `k4` quads: the rest of its last 16-quad step.
pub(crate) const B_SLACK: usize = 15 * NR * 4;

/// The tile configuration (`ldtilecfg`'s 64-byte operand): palette 1; `tmm0..7` each 16 rows
/// of 64 bytes (C: 16 i32 per row; A: 64 K bytes per row; B: 16 columns × 4 bytes per quad).
#[repr(C, align(64))]
struct Config([u8; 64]);

static CONFIG: Config = {
    let mut c = [0u8; 64];
    c[0] = 1;
    let mut i = 0;
    while i < 8 {
        c[16 + 2 * i] = 64;
        c[48 + i] = 16;
        i += 1;
    }
    Config(c)
};

thread_local! {
    /// Whether this thread has loaded [`CONFIG`].
    static CONFIGURED: Cell<bool> = const { Cell::new(false) };
}

/// Whether the CPU has AMX-TILE and AMX-INT8, the OS enables their state (XCR0 bits 17, 18),
/// and Linux granted this process the tile data (`arch_prctl(ARCH_REQ_XCOMP_PERM,
/// XFEATURE_XTILEDATA)`, which the first call makes). Call once (`QTier::supported` caches it).
pub(super) fn enable() -> bool {
    if !cfg!(target_os = "linux") || !std::arch::is_x86_feature_detected!("xsave") {
        return false;
    }
    // SAFETY: `cpuid` exists on every x86_64 CPU; `xgetbv` needs OSXSAVE, which
    // `is_x86_feature_detected!("xsave")` alone does not promise, so check CPUID.1:ECX[27].
    #[allow(unused_unsafe)]
    let (l1, l7) = unsafe { (__cpuid(1), __cpuid_count(7, 0)) };
    let (tile, int8, osxsave) = (l7.edx >> 24 & 1, l7.edx >> 25 & 1, l1.ecx >> 27 & 1);
    if tile == 0 || int8 == 0 || osxsave == 0 {
        return false;
    }
    // SAFETY: OSXSAVE is set, so `xgetbv(0)` is defined.
    let xcr0 = unsafe { xcr0() };
    if xcr0 & (3 << 17) != 3 << 17 {
        return false;
    }
    request_tile_data()
}

/// XCR0.
///
/// # Safety
/// CPUID.1:ECX.OSXSAVE is set.
#[target_feature(enable = "xsave")]
unsafe fn xcr0() -> u64 {
    // SAFETY: the caller's contract.
    unsafe { _xgetbv(0) }
}

/// `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)` (Linux ≥ 5.16); true on success.
#[cfg(target_os = "linux")]
fn request_tile_data() -> bool {
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    let ret: i64;
    // SAFETY: a plain system call that only changes this process's permitted XSAVE features;
    // `syscall` clobbers rcx and r11.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret == 0
}

#[cfg(not(target_os = "linux"))]
fn request_tile_data() -> bool {
    false
}

/// The tile of the module doc: the contract of the VNNI tile ([`qgemm_8x32`](super::vnni::qgemm_8x32))
/// with `mr = nr = 32` and this product instead of `Σ a·b`: with `s = ⌈k4/16⌉` K steps,
/// `acc[r][c] = Σ_{q < 16·s} Σ_{j<4} a(r, 4q+j)·b(4q+j, c)` where `a` is the panel's byte and
/// `b` the strip's byte, both as **i8** (wrapping i32).
///
/// # Safety
/// [`enable`] returned true in this process, and the host has AVX-512 F/BW/VNNI (checked by
/// `qkernels`, the only place this address is taken). `flags` holds `1 ≤ rows ≤ 32` and
/// `1 ≤ cols ≤ 32`. `a` points at `2048·s` readable bytes (a `[k64][32][64]` panel, see
/// `pack_a`) and `b` at `128·16·s` readable bytes (the strip's `128·k4` plus up to
/// [`B_SLACK`]: the quads past `k4` may hold anything when the panel's rows there are 0). The
/// epilogue's pointers as the VNNI tile's contract says, for 32 rows.
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vnni")]
pub(super) unsafe extern "C" fn qgemm_32x32(
    k4: usize,
    a: *const i8,
    b: *const u8,
    part: *mut i32,
    ldp: usize,
    out: *mut u8,
    ldo: usize,
    flags: u32,
    bias: *const i32,
    scale: *const f32,
    zw: *const i32,
    colsum: *const i32,
    qp: *const i32,
) {
    #[repr(C, align(64))]
    struct Sums([i32; MR * NR]);
    // Not zeroed: the four `tilestored`s below write all of it before any read (zeroing it was
    // a 4 KiB `memset` per call, 3 % of opennsfw's int8 time).
    let mut sums = MaybeUninit::<Sums>::uninit();
    let sums = sums.as_mut_ptr().cast::<i32>();
    let steps = k4.div_ceil(16);
    // SAFETY: `enable` granted the tile data; the configuration is 64 aligned bytes; the
    // loads read `steps` K steps of the panel and the strip, inside the caller's buffers; the
    // stores write the 4 KiB of `sums` (row stride 128 bytes).
    unsafe {
        if !CONFIGURED.get() {
            asm!("ldtilecfg [{0}]", in(reg) CONFIG.0.as_ptr(), options(nostack, readonly));
            CONFIGURED.set(true);
        }
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            "test {n}, {n}",
            "jz 3f",
            "2:",
            "tileloadd tmm4, [{a} + {s64}*1]",
            "tileloadd tmm5, [{a} + {s64}*1 + 1024]",
            "tileloadd tmm6, [{b} + {s128}*1]",
            "tileloadd tmm7, [{b} + {s128}*1 + 64]",
            "tdpbssd tmm0, tmm4, tmm6",
            "tdpbssd tmm1, tmm4, tmm7",
            "tdpbssd tmm2, tmm5, tmm6",
            "tdpbssd tmm3, tmm5, tmm7",
            "add {a}, 2048",
            "add {b}, 2048",
            "dec {n}",
            "jnz 2b",
            "3:",
            "tilestored [{c} + {s128}*1], tmm0",
            "tilestored [{c} + {s128}*1 + 64], tmm1",
            "tilestored [{c} + {s128}*1 + 2048], tmm2",
            "tilestored [{c} + {s128}*1 + 2112], tmm3",
            a = inout(reg) a => _,
            b = inout(reg) b => _,
            n = inout(reg) steps => _,
            c = in(reg) sums,
            s64 = in(reg) 64usize,
            s128 = in(reg) 128usize,
            options(nostack),
        );
        let rows = ((flags >> 8) & 0xff) as usize;
        let es = match (flags >> OUT_SHIFT) & 3 {
            OUT_I32 | OUT_F32 => 4,
            _ => 1,
        };
        for r0 in (0..rows).step_by(8) {
            let mut acc = [_mm512_setzero_si512(); 16];
            for r in 0..8 {
                for h in 0..2 {
                    acc[2 * r + h] = _mm512_loadu_si512(sums.add((r0 + r) * NR + 16 * h).cast());
                }
            }
            let sub = ((rows - r0).min(8) as u32) << 8;
            let at = |p: *const i32| if p.is_null() { p } else { p.wrapping_add(r0) };
            let t = Tile {
                part: part.wrapping_add(r0 * ldp),
                ldp,
                out: out.wrapping_add(r0 * ldo * es),
                ldo,
                flags: (flags & !0xff00) | sub,
                bias: at(bias),
                scale: scale.wrapping_add(r0),
                zw: at(zw),
                colsum,
                qp,
            };
            epilogue(acc, &t);
        }
    }
}
