//! Small helpers every kernel emitter uses: argument loads, counted loops, addressing.

use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Value, types};
use cranelift_frontend::FunctionBuilder;

/// Flags for loads/stores of kernel buffers: never trap (bounds are proven at compile time
/// from the static shapes), no alignment promise (vector accesses may be unaligned).
pub(crate) fn mem() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// The address `ptr + off` bytes as the base and `i32` immediate offset a load or store takes:
/// `(ptr, off)` when `off` fits in an `i32`, else the sum computed into a register and offset 0.
pub(crate) fn address(b: &mut FunctionBuilder, ptr: Value, off: i64) -> (Value, i32) {
    match i32::try_from(off) {
        Ok(o) => (ptr, o),
        Err(_) => (b.ins().iadd_imm_s(ptr, off), 0),
    }
}

/// Loads buffer pointer number `i` from the kernel's argument table.
pub(crate) fn arg(b: &mut FunctionBuilder, args: Value, i: usize) -> Value {
    let off = i32::try_from(i * 8).expect("fewer than 2^28 kernel arguments");
    b.ins().load(types::I64, mem(), args, off)
}

/// Emits `for iv in (start..end).step_by(step) { body(iv) }` with an `i64` induction variable.
/// Nothing is emitted for an empty range.
pub(crate) fn for_range(
    b: &mut FunctionBuilder,
    start: i64,
    end: i64,
    step: i64,
    mut body: impl FnMut(&mut FunctionBuilder, Value),
) {
    assert!(step > 0, "loop step must be positive");
    if start >= end {
        return;
    }
    if end - start <= step {
        let iv = b.ins().iconst(types::I64, start);
        body(b, iv);
        return;
    }
    let header = b.create_block();
    let body_blk = b.create_block();
    let exit = b.create_block();
    b.append_block_param(header, types::I64);
    let s = b.ins().iconst(types::I64, start);
    b.ins().jump(header, &[s.into()]);
    b.switch_to_block(header);
    let iv = b.block_params(header)[0];
    let more = b.ins().icmp_imm_s(cranelift_codegen::ir::condcodes::IntCC::SignedLessThan, iv, end);
    b.ins().brif(more, body_blk, &[], exit, &[]);
    b.switch_to_block(body_blk);
    body(b, iv);
    let next = b.ins().iadd_imm_s(iv, step);
    b.ins().jump(header, &[next.into()]);
    b.switch_to_block(exit);
}

/// Emits `if cond { then() } else { other() }` (`cond` an `i8` truth value).
pub(crate) fn if_else(
    b: &mut FunctionBuilder,
    cond: Value,
    then: impl FnOnce(&mut FunctionBuilder),
    other: impl FnOnce(&mut FunctionBuilder),
) {
    let (t, e, join) = (b.create_block(), b.create_block(), b.create_block());
    b.ins().brif(cond, t, &[], e, &[]);
    b.switch_to_block(t);
    then(b);
    b.ins().jump(join, &[]);
    b.switch_to_block(e);
    other(b);
    b.ins().jump(join, &[]);
    b.switch_to_block(join);
}

/// Emits `if cond { then() }` (`cond` an `i8` truth value).
pub(crate) fn if_then(b: &mut FunctionBuilder, cond: Value, then: impl FnOnce(&mut FunctionBuilder)) {
    let (t, join) = (b.create_block(), b.create_block());
    b.ins().brif(cond, t, &[], join, &[]);
    b.switch_to_block(t);
    then(b);
    b.ins().jump(join, &[]);
    b.switch_to_block(join);
}

/// Work units for an outermost loop of `total` iterations cut into chunks of `grain`: how many
/// units there are (at least 1).
pub(crate) fn units_of(total: i64, grain: i64) -> u64 {
    (total.max(0) as u64).div_ceil(grain.max(1) as u64).max(1)
}

/// The grain to cut a flat loop of `total` iterations with in place of `grain`: when that gives
/// fewer than 8 units per host thread and not a multiple of the host's threads, the grain (a
/// multiple of `align`, so the units keep their callers' vector structure, and at most `grain`)
/// whose busiest thread has the least work, counting each unit it runs as 1/64 of a grain.
/// 13 units on 2 threads leave one thread 7 to the other's 6 and cap the speed-up at 1.86×;
/// 14 units of 13/14 the size do not. Depends only on the host (like every unit split), so
/// results stay the same for any thread count.
pub(crate) fn balanced_grain(total: i64, grain: i64, align: i64) -> i64 {
    balanced_grain_for(crate::threads::available() as u64, total, grain, align)
}

/// [`balanced_grain`] for a host of `threads` threads.
pub(crate) fn balanced_grain_for(threads: u64, total: i64, grain: i64, align: i64) -> i64 {
    let grain = grain.max(1);
    let units = units_of(total, grain);
    if threads < 2 || units < 2 || units.is_multiple_of(threads) || units >= 8 * threads {
        return grain;
    }
    let (total, align) = (total as u64, align.max(1) as u64);
    // The busiest thread's iterations when units of `g` (the last one shorter) are handed out
    // largest first to the least loaded thread.
    let busiest = |g: u64| {
        let mut loads = vec![0u64; threads as usize];
        let n = total.div_ceil(g);
        for size in std::iter::once(g.min(total - (n - 1) * g)).chain(std::iter::repeat_n(g, n as usize - 1)).rev() {
            *loads.iter_mut().min().expect("threads ≥ 2") += size;
        }
        loads.into_iter().max().unwrap_or(0)
    };
    (units..=8 * threads)
        .map(|u| total.div_ceil(u).next_multiple_of(align).clamp(1, grain as u64))
        .map(|g| {
            // Each unit a thread runs costs it about 1/64 of a grain (a call, a repack).
            let overhead = total.div_ceil(g).div_ceil(threads) as f64 * grain as f64 / 64.0;
            (busiest(g) as f64 + overhead, g)
        })
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map_or(grain, |(_, g)| g as i64)
}

/// The iteration range `lo·grain .. min(hi·grain, total)` that units `lo..hi` (the kernel's
/// parameters) cover of a loop of `total` iterations cut as in [`units_of`]; loop over it with
/// [`super::gemm::kit::for_dyn`].
pub(crate) fn unit_span(b: &mut FunctionBuilder, lo: Value, hi: Value, total: i64, grain: i64) -> (Value, Value) {
    let start = b.ins().imul_imm_s(lo, grain);
    let end = b.ins().imul_imm_s(hi, grain);
    let cap = b.ins().iconst(types::I64, total);
    let end = b.ins().smin(end, cap);
    (start, end)
}
