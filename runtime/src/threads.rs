//! The persistent worker threads that share a kernel's work units.
//!
//! A run with `threads = n` uses the calling thread plus the `n − 1` workers of a pool kept
//! for the life of the process (one pool per worker count, shared by every model). Units are
//! handed out one at a time from a shared counter, the caller's from the front and the workers'
//! from the back (see [`claim`]), so uneven units balance; which thread
//! computes a unit never changes its result (see [`crate::codegen`] on work units), which is
//! what makes runs bit-identical for any `n`.
//!
//! Why not `rayon`: a launch here is often 20–200 µs of work and a model has hundreds of them
//! back to back. Measured once on this 2-core VM with a throwaway program (2,000 launches, each
//! an `in_place_scope` spawning one job that drains a 4-unit counter; not kept in the repo),
//! `rayon_core::ThreadPool::in_place_scope` cost 12 µs per launch back to back and 35 µs after a
//! 50 µs gap (its workers
//! sleep quickly and the scope waits for every spawned job to be picked up, even when the
//! caller already did all the work). These workers instead spin on an epoch counter for a
//! while ([`SPIN`]) before parking, as inference runtimes' intra-op pools do, and the caller
//! waits only for the units, not for the workers: a worker that wakes late finds nothing to
//! claim.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How long an idle worker spins before it parks.
const SPIN: Duration = Duration::from_micros(300);

/// The number of hardware threads, the default thread count (read once per process: work
/// units are cut by it for every kernel compiled, and the query reads cgroup files).
pub fn available() -> usize {
    static N: OnceLock<usize> = OnceLock::new();
    *N.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Bits of the claim word: `epoch (24) | end (20) | next unit (20)`: the units not yet claimed
/// are `next..end`.
const UNIT_BITS: u32 = 20;
/// Most units one launch may have.
pub(crate) const MAX_UNITS: u64 = (1 << UNIT_BITS) - 1;
const UNIT_MASK: u64 = MAX_UNITS;

struct Shared {
    /// Incremented once per launch (mod 2^24), after `job` and `claim` are written.
    epoch: AtomicU64,
    /// The current launch's units, tagged with its epoch (see [`UNIT_BITS`]). Claiming a unit
    /// is a compare-exchange that also checks the tag, so a worker that wakes late can never
    /// claim a unit of a launch it did not see published.
    claim: AtomicU64,
    /// Units of the current launch completed.
    done: AtomicU64,
    /// `&&(dyn Fn(slot, unit) + Sync)` of the current launch with its lifetime erased; only
    /// dereferenced by a worker holding a claimed, not yet completed unit, during which the
    /// launching caller is still waiting (it returns only when `done` reaches the unit count).
    work: AtomicPtr<&'static (dyn Fn(usize, u64) + Sync)>,
    /// Workers parked (or about to park), by slot − 1.
    parked: Vec<AtomicBool>,
    threads: Mutex<Vec<Thread>>,
}

/// Claims a unit of the launch of `epoch`: `Some(unit)`, or `None` when that launch has no
/// unit left or is no longer current. The caller (`front`) takes units from the first up, the
/// workers from the last down, so with 2 threads each keeps the same end of every launch: a
/// layer whose units are pixel blocks mostly reads, on each core, the part of its input that
/// the layer before wrote on that core. Measured on ppocr_v4_det at 640×640 (2 threads, same
/// run, medians of 3): -O1 f32 35.2 → 30.7 ms, its int8 QDQ model 27.7 → 24.3 ms, against one
/// counter that both threads take from the front; opennsfw, whose maps fit in L2, unchanged.
fn claim(s: &Shared, epoch: u64, front: bool) -> Option<u64> {
    let mut cur = s.claim.load(Ordering::Acquire);
    loop {
        let (tag, end, next) = (cur >> (2 * UNIT_BITS), (cur >> UNIT_BITS) & UNIT_MASK, cur & UNIT_MASK);
        if tag != epoch || next >= end {
            return None;
        }
        let (new, unit) = if front { (cur + 1, next) } else { (cur - (1 << UNIT_BITS), end - 1) };
        match s.claim.compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return Some(unit),
            Err(now) => cur = now,
        }
    }
}

/// Runs claimed units of the launch of `epoch` until none is left.
fn drain(s: &Shared, epoch: u64, slot: usize) {
    while let Some(unit) = claim(s, epoch, slot == 0) {
        // SAFETY: a claimed unit of the current launch is not done yet, so its caller is still
        // waiting in `for_each_unit` and `work` points at its live closure.
        let work = unsafe { *s.work.load(Ordering::Acquire) };
        work(slot, unit);
        s.done.fetch_add(1, Ordering::AcqRel);
    }
}

/// A set of `workers` spinning-then-parking threads.
struct Pool {
    shared: Arc<Shared>,
    /// One launch at a time: a caller that finds the pool busy runs its launch alone.
    lock: Mutex<()>,
}

impl Pool {
    fn new(workers: usize) -> Option<Pool> {
        let shared = Arc::new(Shared {
            epoch: AtomicU64::new(0),
            claim: AtomicU64::new(0),
            done: AtomicU64::new(0),
            work: AtomicPtr::new(std::ptr::null_mut()),
            parked: (0..workers).map(|_| AtomicBool::new(false)).collect(),
            threads: Mutex::new(Vec::new()),
        });
        for w in 0..workers {
            let s = shared.clone();
            let handle = std::thread::Builder::new()
                .name(format!("cnnc-worker-{}/{workers}", w + 1))
                .spawn(move || worker(&s, w))
                .ok()?;
            shared.threads.lock().unwrap_or_else(|e| e.into_inner()).push(handle.thread().clone());
        }
        Some(Pool { shared, lock: Mutex::new(()) })
    }
}

fn worker(s: &Shared, w: usize) {
    let mut seen = 0u64;
    loop {
        // Wait for a new epoch: spin, then park.
        let start = Instant::now();
        let mut spins = 0u32;
        let epoch = loop {
            let e = s.epoch.load(Ordering::Acquire);
            if e != seen {
                break e;
            }
            spins = spins.saturating_add(1);
            if spins < 1000 {
                std::hint::spin_loop();
                continue;
            }
            if start.elapsed() < SPIN {
                // Give the core away when other threads want it (an oversubscribed machine).
                std::thread::yield_now();
                continue;
            }
            s.parked[w].store(true, Ordering::SeqCst);
            if s.epoch.load(Ordering::SeqCst) == seen {
                std::thread::park();
            }
            s.parked[w].store(false, Ordering::SeqCst);
        };
        seen = epoch;
        drain(s, epoch, w + 1);
    }
}

/// The pool of `workers` threads (shared by every model in the process).
fn pool(workers: usize) -> Option<Arc<Pool>> {
    static POOLS: OnceLock<Mutex<HashMap<usize, Option<Arc<Pool>>>>> = OnceLock::new();
    let pools = POOLS.get_or_init(|| Mutex::new(HashMap::new()));
    let mut pools = pools.lock().unwrap_or_else(|e| e.into_inner());
    pools.entry(workers).or_insert_with(|| Pool::new(workers).map(Arc::new)).clone()
}

/// Runs `work(slot, unit)` for every `unit` in `0..units`, on up to `threads` threads: the
/// caller (slot 0) and pool workers (slots `1..threads`). Returns when every unit is done. Runs
/// everything on the caller when the pool is in use by another launch, cannot be created, or
/// `units` exceeds [`MAX_UNITS`].
pub(crate) fn for_each_unit(threads: usize, units: u64, work: &(dyn Fn(usize, u64) + Sync)) {
    let alone = || (0..units).for_each(|u| work(0, u));
    let pool = (threads > 1 && (2..=MAX_UNITS).contains(&units)).then(|| pool(threads - 1)).flatten();
    let Some(pool) = pool else { return alone() };
    let Ok(_guard) = pool.lock.try_lock() else { return alone() };
    let s = &pool.shared;
    // Publish: the closure, a zeroed done count, the tagged claim word, then the epoch.
    // SAFETY (lifetime erasure): `work` is only dereferenced through a claimed unit (see
    // `drain`), and this function returns only after every unit is done.
    let erased: &'static (dyn Fn(usize, u64) + Sync) = unsafe { std::mem::transmute(work) };
    let slot = &erased as *const &'static (dyn Fn(usize, u64) + Sync);
    s.work.store(slot.cast_mut(), Ordering::Release);
    s.done.store(0, Ordering::Release);
    let epoch = (s.epoch.load(Ordering::Relaxed) + 1) & ((1 << (64 - 2 * UNIT_BITS)) - 1);
    s.claim.store((epoch << (2 * UNIT_BITS)) | (units << UNIT_BITS), Ordering::Release);
    s.epoch.store(epoch, Ordering::SeqCst);
    {
        let threads = s.threads.lock().unwrap_or_else(|e| e.into_inner());
        for (w, t) in threads.iter().enumerate() {
            if s.parked[w].load(Ordering::SeqCst) {
                t.unpark();
            }
        }
    }
    drain(s, epoch, 0);
    // The last units may still be running on workers.
    let mut spins = 0u32;
    while s.done.load(Ordering::Acquire) != units {
        spins = spins.saturating_add(1);
        if spins < 1000 { std::hint::spin_loop() } else { std::thread::yield_now() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    /// Every unit runs exactly once, on a valid slot, for many launches back to back (workers
    /// spinning, parking and waking late), with uneven units.
    #[test]
    fn every_unit_runs_exactly_once_on_a_valid_slot() {
        for threads in 1..=4 {
            for launch in 0..300u64 {
                let units = 1 + launch % 37;
                let hits: Vec<AtomicU32> = (0..units).map(|_| AtomicU32::new(0)).collect();
                let bad_slot = AtomicBool::new(false);
                for_each_unit(threads, units, &|slot, u| {
                    if slot >= threads {
                        bad_slot.store(true, Ordering::Relaxed);
                    }
                    if u % 5 == 0 {
                        std::thread::sleep(Duration::from_micros(20));
                    }
                    hits[u as usize].fetch_add(1, Ordering::Relaxed);
                });
                assert!(!bad_slot.load(Ordering::Relaxed), "{threads} threads: slot out of range");
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1), "{threads} threads, launch {launch}");
                if launch % 100 == 99 {
                    // Long enough for the workers to park.
                    std::thread::sleep(SPIN * 3);
                }
            }
        }
    }

    /// The caller takes units from the front and the workers from the back: each slot's units
    /// come in order, rising on slot 0 and falling on the others, and slot 0 holds unit 0 when
    /// it ran anything.
    #[test]
    fn the_caller_takes_units_from_the_front_and_workers_from_the_back() {
        for launch in 0..200u64 {
            let units = 2 + launch % 23;
            let seen: Vec<Mutex<Vec<u64>>> = (0..2).map(|_| Mutex::new(Vec::new())).collect();
            for_each_unit(2, units, &|slot, u| {
                seen[slot].lock().unwrap().push(u);
                std::hint::black_box((0..2_000u64).sum::<u64>());
            });
            let caller = seen[0].lock().unwrap().clone();
            let worker = seen[1].lock().unwrap().clone();
            assert!(caller.windows(2).all(|w| w[0] < w[1]), "launch {launch}: caller {caller:?}");
            assert!(worker.windows(2).all(|w| w[0] > w[1]), "launch {launch}: worker {worker:?}");
            assert_eq!(caller.len() + worker.len(), units as usize);
            assert!(caller.is_empty() || caller[0] == 0, "launch {launch}: caller {caller:?}");
        }
    }

    /// Launches from several threads at once share one pool: each completes all its units.
    #[test]
    fn concurrent_launches_each_complete() {
        std::thread::scope(|sc| {
            for caller in 0..4u64 {
                sc.spawn(move || {
                    for launch in 0..200u64 {
                        let units = 2 + (launch + caller) % 17;
                        let sum = AtomicU64::new(0);
                        for_each_unit(2, units, &|_, u| {
                            sum.fetch_add(u + 1, Ordering::Relaxed);
                        });
                        assert_eq!(sum.load(Ordering::Relaxed), units * (units + 1) / 2);
                    }
                });
            }
        });
    }
}
