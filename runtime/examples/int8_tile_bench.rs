//! Throughput of the int8 register tiles (`microkernel::int8`), single-threaded: the tile in
//! L1, then whole GEMMs of conv-sized shapes through a plain Rust driver (K blocks, strips,
//! tiles; pre-packed A and B, u8 requantized output), and the im2col packer on the matching
//! 3×3 convs. Median of 9 runs; pin it to one core:
//!
//! ```sh
//! cargo build --release -p cnnc-runtime --example int8_tile_bench
//! taskset -c 0 target/release/examples/int8_tile_bench
//! ```
//!
//! Numbers from a shared host are only good while the other cores are idle: on the 2-vCPU
//! Zen 4 development VM, the VNNI tile drops from ~440 to ~250 GOP/s whenever the other vCPU
//! runs vector-heavy work (a compile), and the GEMM lines jump between the two levels.
//!
//! The kernels are crate-private (the Cranelift driver calls them by address), so this binary
//! compiles the `microkernel` module's source itself.

#[allow(dead_code)]
#[path = "../src/expf.rs"]
mod expf;
#[allow(dead_code, unused_imports)]
#[path = "../src/microkernel/mod.rs"]
mod microkernel;

use std::time::Instant;

use microkernel::PackGeo;
use microkernel::int8::{KBlock, QOut, QTier, pack_a, qkernels, qtile_flags};

type Gemm = unsafe extern "C" fn(
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
type Pack = unsafe extern "C" fn(*const i64, *const u8, usize, usize, usize, usize, usize, u8, u8, *mut u8, *mut i32);

const RUNS: usize = 9;
/// Most K rows per block: a VNNI B strip block (32 columns) stays within 32 KiB of L1.
const KC: usize = 1024;

fn lcg(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 33) as u8
        })
        .collect()
}

/// Median seconds per call of `f` over [`RUNS`] runs of `reps` calls.
fn median_secs(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..RUNS)
        .map(|_| {
            let t0 = Instant::now();
            for _ in 0..reps {
                f();
            }
            t0.elapsed().as_secs_f64() / reps as f64
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[RUNS / 2]
}

fn main() {
    for tier in [QTier::Vnni, QTier::Avx2] {
        let Some(k) = qkernels(tier) else {
            println!("{tier:?}: not supported on this host");
            continue;
        };
        // SAFETY: `qkernels` checked the tier's CPU features; the signatures are the
        // documented ones.
        let (gemm, pack) =
            unsafe { (std::mem::transmute::<u64, Gemm>(k.gemm), std::mem::transmute::<u64, Pack>(k.pack_b)) };
        println!("{tier:?} ({}×{} tile)", k.mr, k.nr);
        for wide in [false, true] {
            if wide && tier == QTier::Vnni {
                continue;
            }
            let w: Vec<i8> =
                lcg(k.mr * 256, 1).into_iter().map(|v| if wide { v as i8 } else { (v as i8) / 2 }).collect();
            let a = pack_a(tier, &w, k.mr, 256);
            assert_eq!(a.wide, wide);
            let b = lcg(256 * k.nr, 2);
            let mut part = vec![0i32; k.mr * k.nr];
            let flags = qtile_flags(k.mr, k.nr, KBlock::First, QOut::I32, wide);
            let s = median_secs(20_000, || {
                // SAFETY: a full panel and strip of 64 quads, a full `part` tile.
                unsafe {
                    gemm(
                        64,
                        a.data.as_ptr(),
                        b.as_ptr(),
                        part.as_mut_ptr(),
                        k.nr,
                        std::ptr::null_mut(),
                        0,
                        flags,
                        std::ptr::null(),
                        std::ptr::null(),
                        std::ptr::null(),
                        std::ptr::null(),
                        std::ptr::null(),
                    )
                }
            });
            let ops = 2.0 * (k.mr * k.nr * 256) as f64;
            println!("  tile in L1, k4 = 64{}: {:.0} GOP/s", if wide { ", wide" } else { "" }, ops / s / 1e9);
        }
        for (m, c, hw) in [(64, 64, 56), (128, 128, 28), (256, 256, 14), (512, 512, 7)] {
            let (kk, n) = (c * 9, hw * hw);
            for wide in [false, true] {
                if wide && tier == QTier::Vnni {
                    continue;
                }
                let w: Vec<i8> =
                    lcg(m * kk, 3).into_iter().map(|v| if wide { v as i8 } else { (v as i8) / 2 }).collect();
                let a = pack_a(tier, &w, m, kk);
                let x = lcg(c * hw * hw, 4);
                let geo = PackGeo { ih: hw, iw: hw, ow: hw, kh: 3, kw: 3, sh: 1, sw: 1, dh: 1, dw: 1, ph: 1, pw: 1 };
                let table = geo.table();
                let strips = n.div_ceil(k.nr);
                let blocks: Vec<(usize, usize)> = (0..kk).step_by(KC).map(|k0| (k0, KC.min(kk - k0))).collect();
                let mut b: Vec<Vec<u8>> =
                    blocks.iter().map(|&(_, kc)| vec![0u8; strips * kc.div_ceil(4) * k.nr * 4]).collect();
                let pack_all = |b: &mut Vec<Vec<u8>>| {
                    for (bb, &(k0, kc)) in b.iter_mut().zip(&blocks) {
                        // SAFETY: `x` holds the `c` channels of the image; `bb` is sized for
                        // the block's strips.
                        unsafe {
                            pack(
                                table.as_ptr(),
                                x.as_ptr(),
                                k0,
                                kc,
                                0,
                                n,
                                k.nr,
                                0x80,
                                0x80,
                                bb.as_mut_ptr(),
                                std::ptr::null_mut(),
                            )
                        };
                    }
                };
                let t_pack = median_secs(10, || pack_all(&mut b));
                let bias = vec![100i32; m.next_multiple_of(k.mr)];
                let scale = vec![1.0f32 / 4096.0; m.next_multiple_of(k.mr)];
                let qp = [0i32, 0, 255];
                let mut part = vec![0i32; m.next_multiple_of(k.mr) * n];
                let mut y = vec![0u8; m * n];
                let tiles = m.div_ceil(k.mr);
                let t_gemm = median_secs(10, || {
                    for (bi, (bb, &(k0, kc))) in b.iter().zip(&blocks).enumerate() {
                        let block = match (bi == 0, bi + 1 == blocks.len()) {
                            (true, true) => KBlock::Only,
                            (true, false) => KBlock::First,
                            (false, false) => KBlock::Middle,
                            (false, true) => KBlock::Last,
                        };
                        let q4 = kc.div_ceil(4);
                        for s in 0..strips {
                            let cols = (n - s * k.nr).min(k.nr);
                            for t in 0..tiles {
                                let rows = (m - t * k.mr).min(k.mr);
                                let flags = qtile_flags(rows, cols, block, QOut::U8, a.wide);
                                // SAFETY: the driver's indexing keeps every pointer inside
                                // its buffer, as the kernel's contract asks.
                                unsafe {
                                    gemm(
                                        q4,
                                        a.data.as_ptr().add(t * a.panel_stride + k0 / 4 * a.k4_stride),
                                        bb.as_ptr().add(s * q4 * k.nr * 4),
                                        part.as_mut_ptr().add(t * k.mr * n + s * k.nr),
                                        n,
                                        y.as_mut_ptr().add(t * k.mr * n + s * k.nr),
                                        n,
                                        flags,
                                        bias.as_ptr().add(t * k.mr),
                                        scale.as_ptr().add(t * k.mr),
                                        std::ptr::null(),
                                        std::ptr::null(),
                                        qp.as_ptr(),
                                    )
                                }
                            }
                        }
                    }
                });
                let ops = 2.0 * (m * kk * n) as f64;
                println!(
                    "  M={m} K={kk} N={n}{}: tiles {:.0} GOP/s ({:.3} ms), im2col pack {:.3} ms ({:.1} GB/s), both {:.0} GOP/s",
                    if wide { " wide" } else { "" },
                    ops / t_gemm / 1e9,
                    t_gemm * 1e3,
                    t_pack * 1e3,
                    (kk * strips * k.nr) as f64 / t_pack / 1e9,
                    ops / (t_gemm + t_pack) / 1e9,
                );
            }
        }
    }
}
