//! Throughput of the f32 register tiles (`microkernel::avx2`, `microkernel::avx512`),
//! single-threaded: one full 6×16 tile call (packed A and B, bias and ReLU epilogue) for
//! reductions of 64 and 256 (operands in L1) and 1024 (in L2), the row-offset variant
//! at 256, and the transposed small-map tile (`small.sgemm_t`: 6 or 12 pixels read in place
//! from channel planes of 49 and 196 floats, 16 channels) at k = 256 and 1024. Median of 9
//! runs; pin it to one core:
//!
//! ```sh
//! cargo build --release -p cnnc-runtime --example sgemm_tile_bench
//! taskset -c 1 target/release/examples/sgemm_tile_bench
//! ```
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

use microkernel::{Act, BIAS, Choice, F32Tile, MR, NR, select, tile_flags};

type Sgemm =
    unsafe extern "C" fn(usize, *const f32, *const f32, *mut f32, usize, u32, *const f32, *const f32, f32, f32);
type SgemmT = unsafe extern "C" fn(
    usize,
    *const f32,
    usize,
    *const i64,
    *const f32,
    *mut f32,
    usize,
    u32,
    *const f32,
    *const f32,
    u64,
);
type SgemmRows = unsafe extern "C" fn(
    usize,
    *const f32,
    *const f32,
    *const i64,
    *mut f32,
    usize,
    u32,
    *const f32,
    *const f32,
    f32,
    f32,
);

const RUNS: usize = 9;

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
    for tile in [F32Tile::Avx512, F32Tile::Avx2] {
        let Some(mk) = select(Choice::Tile(tile)) else {
            println!("{tile:?}: not supported on this host");
            continue;
        };
        // SAFETY: `select` checked the tile's CPU features; the signatures are the documented
        // ones.
        let (gemm, rows) = unsafe {
            (
                std::mem::transmute::<u64, Sgemm>(mk.sgemm_6x16),
                std::mem::transmute::<u64, SgemmRows>(mk.sgemm_6x16_rows),
            )
        };
        let relu = Act::Clamp { lo: 0.0, hi: f32::INFINITY };
        let flags = BIAS | relu.flags() | tile_flags(MR, NR);
        let bias = [0.5f32; MR];
        let mut c = vec![0f32; MR * NR];
        println!("{tile:?}");
        for k in [64, 256, 1024] {
            let a: Vec<f32> = (0..k * MR).map(|i| (i % 7) as f32 * 0.01).collect();
            let b: Vec<f32> = (0..k * NR).map(|i| (i % 5) as f32 * 0.01).collect();
            let s = median_secs(4_000_000 / k, || {
                // SAFETY: a full panel and strip of `k` rows, a full tile of C, 6 biases.
                unsafe {
                    gemm(
                        k,
                        a.as_ptr(),
                        b.as_ptr(),
                        c.as_mut_ptr(),
                        NR,
                        flags,
                        bias.as_ptr(),
                        std::ptr::null(),
                        0.0,
                        0.0,
                    )
                };
                std::hint::black_box(&mut c);
            });
            println!("  sgemm_6x16, k = {k}: {:.1} GFLOP/s", 2.0 * (MR * NR * k) as f64 / s / 1e9);
        }
        let k = 256;
        let a: Vec<f32> = (0..k * MR).map(|i| (i % 7) as f32 * 0.01).collect();
        let x: Vec<f32> = (0..k * 64).map(|i| (i % 5) as f32 * 0.01).collect();
        let offs: Vec<i64> = (0..k as i64).map(|kk| kk * 64).collect();
        let s = median_secs(4_000_000 / k, || {
            // SAFETY: every row offset leaves 64 readable f32 in `x`.
            unsafe {
                rows(
                    k,
                    a.as_ptr(),
                    x.as_ptr(),
                    offs.as_ptr(),
                    c.as_mut_ptr(),
                    NR,
                    flags,
                    bias.as_ptr(),
                    std::ptr::null(),
                    0.0,
                    0.0,
                )
            };
            std::hint::black_box(&mut c);
        });
        println!("  sgemm_6x16_rows, k = {k}: {:.1} GFLOP/s", 2.0 * (MR * NR * k) as f64 / s / 1e9);
        // SAFETY: `select` checked the tile's CPU features; the documented signature.
        let gemm_t = unsafe { std::mem::transmute::<u64, SgemmT>(mk.small.sgemm_t) };
        let pr = mk.small.t_pixels;
        let flags_t = BIAS | relu.flags() | tile_flags(pr, NR);
        let bias_t = [0.5f32; NR];
        for (k, plane) in [(256, 49), (1024, 49), (256, 196), (1024, 196)] {
            let x: Vec<f32> = (0..k * plane).map(|i| (i % 5) as f32 * 0.01).collect();
            let w: Vec<f32> = (0..k * NR).map(|i| (i % 7) as f32 * 0.01).collect();
            // Consecutive pixels of one plane, as a 1×1 conv's first tile.
            let offs: Vec<i64> = (0..pr as i64).collect();
            let mut y = vec![0f32; NR * plane];
            let s = median_secs(4_000_000 / k, || {
                // SAFETY: `pr` offsets, each leaving `k` rows `plane` apart readable in `x`;
                // `16·k` weights; a 16 × `pr` tile of `y` with row stride `plane`; 16 biases.
                unsafe {
                    gemm_t(
                        k,
                        x.as_ptr(),
                        plane,
                        offs.as_ptr(),
                        w.as_ptr(),
                        y.as_mut_ptr(),
                        plane,
                        flags_t,
                        bias_t.as_ptr(),
                        std::ptr::null(),
                        0,
                    )
                };
                std::hint::black_box(&mut y);
            });
            let gf = 2.0 * (pr * NR * k) as f64 / s / 1e9;
            println!("  sgemm_t ({pr} pixels), k = {k}, plane {plane}: {gf:.1} GFLOP/s");
            if mk.small.sgemm_t_wide == 0 {
                continue;
            }
            // SAFETY: as above; the wide tile's documented signature (6 pixels, 64 channels).
            let wide = unsafe { std::mem::transmute::<u64, SgemmT>(mk.small.sgemm_t_wide) };
            let w: Vec<f32> = (0..k * 64).map(|i| (i % 7) as f32 * 0.01).collect();
            let bias_w = [0.5f32; 64];
            let mut y = vec![0f32; 64 * plane];
            let flags_w = BIAS | relu.flags() | tile_flags(MR, NR);
            let s = median_secs(4_000_000 / k, || {
                // SAFETY: 6 offsets, each leaving `k` rows `plane` apart readable in `x`; `64·k`
                // weights; a 64 × 6 tile of `y` with row stride `plane`; 64 biases.
                unsafe {
                    wide(
                        k,
                        x.as_ptr(),
                        plane,
                        offs.as_ptr(),
                        w.as_ptr(),
                        y.as_mut_ptr(),
                        plane,
                        flags_w,
                        bias_w.as_ptr(),
                        std::ptr::null(),
                        0,
                    )
                };
                std::hint::black_box(&mut y);
            });
            let gf = 2.0 * (MR * 64 * k) as f64 / s / 1e9;
            println!("  sgemm_t_wide (6 pixels × 64 channels), k = {k}, plane {plane}: {gf:.1} GFLOP/s");
        }
    }
}
