//! `cnnc bench`: latency of the JIT-compiled model on a fixed input, with a per-kernel profile.

use std::fmt::Write as _;
use std::num::NonZeroUsize;
use std::time::Duration;

use cnnc_ir::{DType, Tensor, TensorData, TensorType};
use cnnc_runtime::{Model, Profile, RunError};
use serde::Serialize;

use crate::inspect::si;

/// How many runs to make.
#[derive(Clone, Copy, Debug)]
pub struct BenchConfig {
    /// Untimed runs first (caches, page faults, branch predictors).
    pub warmup: usize,
    /// Timed runs.
    pub runs: NonZeroUsize,
}

/// What `cnnc bench --json` prints.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub model: String,
    /// Median wall-clock time of one profiled run, in milliseconds.
    pub median_ms: f64,
    pub min_ms: f64,
    pub runs: usize,
    pub warmup: usize,
    pub threads: usize,
    /// Peak resident set size of the process (`VmHWM`); `None` where it cannot be read.
    pub peak_rss_bytes: Option<u64>,
    pub arena_bytes: usize,
    /// MACs of all kernels ([`cnnc_ir::node_macs`]): `cnnc inspect`'s `total_macs`.
    pub total_macs: u64,
    /// `2 · total_macs` per median run, in 10⁹ per second.
    pub gflops: f64,
    /// One row per kernel launch, in execution order.
    pub layers: Vec<LayerRow>,
}

/// One kernel's row of the profile.
#[derive(Clone, Debug, Serialize)]
pub struct LayerRow {
    pub name: String,
    pub op: String,
    pub kernel: String,
    /// Median over the timed runs, in milliseconds.
    pub time_ms: f64,
    /// `time_ms` over the sum of every row's `time_ms` (the shares sum to 1).
    pub share: f64,
    pub macs: u64,
    /// `2 · macs / time`, in 10⁹ per second (0 for kernels without MACs).
    pub gflops: f64,
    /// Shape of the first output.
    pub output_shape: Vec<usize>,
    /// Spatial kernel size of a conv or pool, e.g. `[3, 3]`; empty for other ops.
    pub window: Vec<usize>,
    /// The kernel's independent work units.
    pub units: u64,
    /// Threads that shared each launch of this kernel (1: it ran on one thread).
    pub threads: usize,
}

/// One input per model input, of its type: f32 values uniform in [0, 1) from a fixed seed (so
/// every bench of a model sees the same input), u8 and i8 uniform over their range from the same
/// seed, i64 and i32 zeros (a valid index anywhere) and `false`.
pub fn uniform_inputs(inputs: &[(String, TensorType)]) -> Vec<Tensor> {
    let mut state = 0x0cc0_ffee_u64;
    inputs
        .iter()
        .map(|(_, ty)| {
            let n = ty.numel();
            let data = match ty.dtype {
                DType::F32 => TensorData::F32((0..n).map(|_| unit_f32(&mut state)).collect()),
                DType::I64 => TensorData::I64(vec![0; n]),
                DType::Bool => TensorData::Bool(vec![false; n]),
                DType::U8 => TensorData::U8((0..n).map(|_| (unit_f32(&mut state) * 256.0) as u8).collect()),
                DType::I8 => TensorData::I8((0..n).map(|_| (unit_f32(&mut state) * 256.0 - 128.0) as i8).collect()),
                DType::I32 => TensorData::I32(vec![0; n]),
            };
            Tensor::new(ty.shape.clone(), data).expect("the data has the type's element count")
        })
        .collect()
}

/// SplitMix64's next value, as an f32 in [0, 1) with 24 random bits.
fn unit_f32(state: &mut u64) -> f32 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 40) as f32 / (1u64 << 24) as f32
}

/// Runs `model` `cfg.warmup` times untimed, then `cfg.runs` times with [`Model::run_profiled`],
/// timing each run as a whole and each kernel. `note` receives progress lines.
pub fn bench(model: &Model, name: &str, cfg: BenchConfig, mut note: impl FnMut(&str)) -> Result<Report, RunError> {
    let inputs = uniform_inputs(model.inputs());
    note(&format!("{name}: {} warm-up run(s)", cfg.warmup));
    for _ in 0..cfg.warmup {
        model.run(&inputs)?;
    }
    let runs = cfg.runs.get();
    note(&format!("{name}: {runs} timed run(s)"));
    let mut walls = Vec::with_capacity(runs);
    let mut profiles: Vec<Profile> = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = std::time::Instant::now();
        let (_, profile) = model.run_profiled(&inputs)?;
        walls.push(start.elapsed());
        profiles.push(profile);
    }
    let first = &profiles[0].layers;
    let medians: Vec<Duration> =
        (0..first.len()).map(|i| median(&profiles.iter().map(|p| p.layers[i].time).collect::<Vec<_>>())).collect();
    let kernel_total: Duration = medians.iter().sum();
    let layers: Vec<LayerRow> = first
        .iter()
        .zip(&medians)
        .map(|(l, &t)| LayerRow {
            name: l.name.clone(),
            op: l.op.to_owned(),
            kernel: l.kernel.to_owned(),
            time_ms: ms(t),
            share: if kernel_total.is_zero() {
                1.0 / first.len() as f64
            } else {
                t.as_secs_f64() / kernel_total.as_secs_f64()
            },
            macs: l.macs,
            gflops: gflops(l.macs, t),
            output_shape: l.output_shape.clone(),
            window: l.window.clone(),
            units: l.units,
            threads: l.threads,
        })
        .collect();
    let total_macs = layers.iter().map(|l| l.macs).sum();
    let median_run = median(&walls);
    Ok(Report {
        model: name.to_owned(),
        median_ms: ms(median_run),
        min_ms: ms(walls.iter().copied().min().expect("runs ≥ 1")),
        runs,
        warmup: cfg.warmup,
        threads: model.threads(),
        peak_rss_bytes: peak_rss_bytes(),
        arena_bytes: model.arena_bytes(),
        total_macs,
        gflops: gflops(total_macs, median_run),
        layers,
    })
}

fn median(times: &[Duration]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort_unstable();
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 { sorted[mid] } else { (sorted[mid - 1] + sorted[mid]) / 2 }
}

fn ms(t: Duration) -> f64 {
    t.as_secs_f64() * 1e3
}

fn gflops(macs: u64, t: Duration) -> f64 {
    if macs == 0 || t.is_zero() { 0.0 } else { 2.0 * macs as f64 / t.as_secs_f64() / 1e9 }
}

/// The process's peak resident set size, from `VmHWM` in `/proc/self/status` (Linux only).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib * 1024)
}

fn bytes(n: u64) -> String {
    match n {
        0..1_024 => format!("{n} B"),
        1_024..1_048_576 => format!("{:.1} KiB", n as f64 / 1024.0),
        _ => format!("{:.1} MiB", n as f64 / 1_048_576.0),
    }
}

/// The table `cnnc bench` prints: a header, one row per kernel from slowest to fastest, totals.
pub fn render_table(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "model {}: median {:.3} ms, min {:.3} ms over {} runs ({} warm-up), {} thread",
        r.model, r.median_ms, r.min_ms, r.runs, r.warmup, r.threads
    );
    let mut sorted: Vec<&LayerRow> = r.layers.iter().collect();
    sorted.sort_by(|a, b| b.time_ms.total_cmp(&a.time_ms));
    let rows: Vec<[String; 7]> = sorted
        .iter()
        .map(|l| {
            [
                l.name.clone(),
                l.op.clone(),
                l.kernel.clone(),
                format!("{:.3}", l.time_ms),
                format!("{:.1}%", 100.0 * l.share),
                if l.macs == 0 { "-".into() } else { si(l.macs) },
                if l.macs == 0 { "-".into() } else { format!("{:.2}", l.gflops) },
            ]
        })
        .collect();
    let header = ["layer", "op", "kernel", "time ms", "share", "MACs", "GFLOP/s"];
    let mut width = header.map(str::len);
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: [&str; 7]| {
        let mut l = String::new();
        for (i, (c, w)) in cells.iter().zip(width).enumerate() {
            if i >= 3 {
                let _ = write!(l, "{c:>w$}  ");
            } else {
                let _ = write!(l, "{c:<w$}  ");
            }
        }
        l.trim_end().to_owned()
    };
    let _ = writeln!(out, "{}", line(header));
    for row in &rows {
        let _ = writeln!(
            out,
            "{}",
            line([&row[0], &row[1], &row[2], &row[3], &row[4], &row[5], &row[6]].map(String::as_str))
        );
    }
    let kernel_ms: f64 = r.layers.iter().map(|l| l.time_ms).sum();
    let _ = writeln!(
        out,
        "total: {} kernels, {:.3} ms in kernels, {} MACs ({}), {:.2} GFLOP/s at the median run",
        r.layers.len(),
        kernel_ms,
        r.total_macs,
        si(r.total_macs),
        r.gflops
    );
    let _ = writeln!(
        out,
        "peak RSS {}, arena {}",
        r.peak_rss_bytes.map_or_else(|| "n/a".to_owned(), bytes),
        bytes(r.arena_bytes as u64)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_inputs_are_deterministic_and_in_the_unit_interval() {
        let types = vec![("x".to_owned(), TensorType { dtype: DType::F32, shape: vec![2, 3, 5] })];
        let a = uniform_inputs(&types);
        assert_eq!(a, uniform_inputs(&types));
        let v = a[0].as_f32().expect("f32");
        assert!(v.iter().all(|&x| (0.0..1.0).contains(&x)));
        assert!(v.windows(2).any(|w| w[0] != w[1]));
    }

    #[test]
    fn median_of_an_even_count_is_the_mean_of_the_middle_two() {
        let d = |ms: u64| Duration::from_millis(ms);
        assert_eq!(median(&[d(4), d(1), d(3), d(2)]), Duration::from_micros(2500));
        assert_eq!(median(&[d(5), d(1), d(3)]), d(3));
    }
}
