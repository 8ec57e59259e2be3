//! Throughput of the f32 register tiles (`microkernel::avx2`, `microkernel::avx512`),
//! single-threaded: one full 6×16 tile call (packed A and B, bias and ReLU epilogue) for
//! reductions of 64 and 256 (operands in L1) and 1024 (in L2), the row-offset variant
//! (and on the AVX-512 tile set its two-strip form, 6 × 32) at 256, the two-strip packed tile
//! at 147 and 256, and the transposed small-map tiles (`small.sgemm_t`: 6 or 12 pixels read in place
//! from channel planes of 49 and 196 floats, 16 channels; on the AVX-512 tile set also
//! `small.sgemm_t_wide`, 6 pixels × 64 channels) at k = 256 and 1024. Median of 9 runs; pin it
//! to one core:
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
        // The two-strip tile (B strips `16·k` floats apart) where the tile set has it.
        for (name, addr, strips) in [("sgemm_6x32", mk.sgemm_6x32, 2)] {
            if addr == 0 {
                continue;
            }
            // SAFETY: the two-strip tile has the `sgemm_6x16` signature.
            let tile = unsafe { std::mem::transmute::<u64, Sgemm>(addr) };
            for k in [147, 256] {
                let a: Vec<f32> = (0..k * MR).map(|i| (i % 7) as f32 * 0.01).collect();
                let b: Vec<f32> = (0..k * NR * strips).map(|i| (i % 5) as f32 * 0.01).collect();
                let mut cw = vec![0f32; MR * NR * strips];
                let s = median_secs(4_000_000 / k, || {
                    // SAFETY: a full panel and `strips` strips of `k` rows, a full C tile.
                    unsafe {
                        tile(
                            k,
                            a.as_ptr(),
                            b.as_ptr(),
                            cw.as_mut_ptr(),
                            NR * strips,
                            flags,
                            bias.as_ptr(),
                            std::ptr::null(),
                            0.0,
                            0.0,
                        )
                    };
                    std::hint::black_box(&mut cw);
                });
                println!("  {name}, k = {k}: {:.1} GFLOP/s", 2.0 * (MR * NR * strips * k) as f64 / s / 1e9);
            }
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
        if mk.sgemm_6x32_rows != 0 {
            // SAFETY: as above; the two-strip in-place tile has the same signature.
            let rows2 = unsafe { std::mem::transmute::<u64, SgemmRows>(mk.sgemm_6x32_rows) };
            let mut c2 = vec![0f32; MR * 2 * NR];
            let s = median_secs(4_000_000 / k, || {
                // SAFETY: every row offset leaves 64 readable f32 in `x` (32 read), C is 6 × 32.
                unsafe {
                    rows2(
                        k,
                        a.as_ptr(),
                        x.as_ptr(),
                        offs.as_ptr(),
                        c2.as_mut_ptr(),
                        2 * NR,
                        flags,
                        bias.as_ptr(),
                        std::ptr::null(),
                        0.0,
                        0.0,
                    )
                };
                std::hint::black_box(&mut c2);
            });
            println!("  sgemm_6x32_rows, k = {k}: {:.1} GFLOP/s", 2.0 * (MR * 2 * NR * k) as f64 / s / 1e9);
        }
        // The transposed tiles: (name, address, pixels, channels); the wide one where the tile
        // set has it.
        let mut variants = vec![("sgemm_t", mk.small.sgemm_t, mk.small.t_pixels, NR)];
        if mk.small.sgemm_t_wide != 0 {
            variants.push(("sgemm_t_wide", mk.small.sgemm_t_wide, MR, 4 * NR));
        }
        for (k, plane) in [(256, 49), (1024, 49), (256, 196), (1024, 196)] {
            let x: Vec<f32> = (0..k * plane).map(|i| (i % 5) as f32 * 0.01).collect();
            for &(name, addr, pr, tc) in &variants {
                // SAFETY: `select` checked the tile's CPU features; the documented signature.
                let gemm_t = unsafe { std::mem::transmute::<u64, SgemmT>(addr) };
                // (The wide tile ignores the flags' channel count: always 64.)
                let flags_t = BIAS | relu.flags() | tile_flags(pr, NR);
                let bias_t = vec![0.5f32; tc];
                let w: Vec<f32> = (0..k * tc).map(|i| (i % 7) as f32 * 0.01).collect();
                // Consecutive pixels of one plane, as a 1×1 conv's first tile.
                let offs: Vec<i64> = (0..pr as i64).collect();
                let mut y = vec![0f32; tc * plane];
                let s = median_secs(4_000_000 / k, || {
                    // SAFETY: `pr` offsets, each leaving `k` rows `plane` apart readable in `x`;
                    // `tc·k` weights; a `tc` × `pr` tile of `y` with row stride `plane`; `tc`
                    // biases.
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
                let gf = 2.0 * (pr * tc * k) as f64 / s / 1e9;
                println!("  {name} ({pr} pixels × {tc} channels), k = {k}, plane {plane}: {gf:.1} GFLOP/s");
            }
        }
    }
}
