//! Emission helpers shared by the GEMM and convolution kernels: loops with run-time bounds,
//! loads and stores at large constant offsets, partial vectors, and accumulator tiles.

use cnnc_ir::UnaryOp;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{BlockArg, ConstantData, Endianness, InstBuilder, MemFlagsData, Value, types};
use cranelift_frontend::{FunctionBuilder, Variable};

use crate::codegen::builder::{address, mem};
use crate::codegen::unary::apply_vec;
use crate::codegen::{Epilogue, Kb};

/// Flags for loads of memory that nothing writes while the kernel runs (its inputs, weights
/// and load-time tables): the optimizer may merge such loads, hoist them out of loops and
/// place each next to its first use, which keeps register pressure low in unrolled bodies.
pub(crate) fn mem_ro() -> MemFlagsData {
    mem().with_readonly().with_can_move()
}

/// [`load_v`] of read-only memory (see [`mem_ro`]).
pub(crate) fn load_v_ro(b: &mut FunctionBuilder, ptr: Value, off: i64) -> Value {
    let (p, o) = address(b, ptr, off);
    b.ins().load(types::F32X4, mem_ro(), p, o)
}

/// [`splat_load`] of read-only memory (see [`mem_ro`]).
pub(crate) fn splat_load_ro(b: &mut FunctionBuilder, ptr: Value, off: i64) -> Value {
    let (p, o) = address(b, ptr, off);
    let s = b.ins().load(types::F32, mem_ro(), p, o);
    b.ins().splat(types::F32X4, s)
}

/// Loads one f32 at `ptr + off` bytes.
pub(crate) fn load_f32(b: &mut FunctionBuilder, ptr: Value, off: i64) -> Value {
    let (p, o) = address(b, ptr, off);
    b.ins().load(types::F32, mem(), p, o)
}

/// Loads four f32 at `ptr + off` bytes.
pub(crate) fn load_v(b: &mut FunctionBuilder, ptr: Value, off: i64) -> Value {
    let (p, o) = address(b, ptr, off);
    b.ins().load(types::F32X4, mem(), p, o)
}

/// Loads one f32 at `ptr + off` and broadcasts it to four lanes.
pub(crate) fn splat_load(b: &mut FunctionBuilder, ptr: Value, off: i64) -> Value {
    let s = load_f32(b, ptr, off);
    b.ins().splat(types::F32X4, s)
}

/// Loads an `i64` at `ptr + off` bytes.
pub(crate) fn load_i64(b: &mut FunctionBuilder, ptr: Value, off: i64) -> Value {
    let (p, o) = address(b, ptr, off);
    b.ins().load(types::I64, mem(), p, o)
}

pub(crate) fn store(b: &mut FunctionBuilder, v: Value, ptr: Value, off: i64) {
    let (p, o) = address(b, ptr, off);
    b.ins().store(mem(), v, p, o);
}

pub(crate) fn splat_const(b: &mut FunctionBuilder, c: f32) -> Value {
    let s = b.ins().f32const(c);
    b.ins().splat(types::F32X4, s)
}

/// A vector whose lane `l < lanes` is the f32 at `ptr + off + l·stride` and whose other lanes
/// are zero (never read). A unit stride with four lanes is one vector load.
pub(crate) fn gather(b: &mut FunctionBuilder, ptr: Value, off: i64, stride: i64, lanes: usize) -> Value {
    debug_assert!((1..=4).contains(&lanes));
    if lanes == 4 && stride == 4 {
        return load_v(b, ptr, off);
    }
    if stride == 0 {
        return splat_load(b, ptr, off);
    }
    let mut v = splat_const(b, 0.0);
    for l in 0..lanes {
        let s = load_f32(b, ptr, off + l as i64 * stride);
        v = b.ins().insertlane(v, s, l as u8);
    }
    v
}

/// Stores the first `lanes` lanes of `v` at `ptr + off + l·stride`.
pub(crate) fn scatter(b: &mut FunctionBuilder, v: Value, ptr: Value, off: i64, stride: i64, lanes: usize) {
    if lanes == 4 && stride == 4 {
        store(b, v, ptr, off);
        return;
    }
    for l in 0..lanes {
        let s = b.ins().extractlane(v, l as u8);
        store(b, s, ptr, off + l as i64 * stride);
    }
}

/// Lanes `idx` (0–3 from `x`, 4–7 from `y`) of two f32x4 vectors: a byte shuffle that
/// x64 lowers to `shufps` / `unpck*ps` / `punpck*qdq` for the usual patterns.
pub(crate) fn shuffle32(b: &mut FunctionBuilder, x: Value, y: Value, idx: [u8; 4]) -> Value {
    let mut mask = [0u8; 16];
    for (i, &lane) in idx.iter().enumerate() {
        for j in 0..4 {
            mask[i * 4 + j] = lane * 4 + j as u8;
        }
    }
    let imm = b.func.dfg.immediates.push(ConstantData::from(mask.to_vec()));
    let le = MemFlagsData::new().with_endianness(Endianness::Little);
    let x = b.ins().bitcast(types::I8X16, le, x);
    let y = b.ins().bitcast(types::I8X16, le, y);
    let r = b.ins().shuffle(x, y, imm);
    b.ins().bitcast(types::F32X4, le, r)
}

/// `ptr + off` bytes.
pub(crate) fn add(b: &mut FunctionBuilder, ptr: Value, off: i64) -> Value {
    if off == 0 { ptr } else { b.ins().iadd_imm_s(ptr, off) }
}

/// `ptr + index·scale + off` bytes, `index` an `i64` value.
pub(crate) fn offset(b: &mut FunctionBuilder, ptr: Value, index: Value, scale: i64, off: i64) -> Value {
    let scaled = match scale {
        0 => return add(b, ptr, off),
        1 => index,
        _ => b.ins().imul_imm_s(index, scale),
    };
    let p = b.ins().iadd(ptr, scaled);
    if off == 0 { p } else { b.ins().iadd_imm_s(p, off) }
}

/// `for iv in (start..end).step_by(step) { body(iv) }` with run-time `i64` bounds.
pub(crate) fn for_dyn(
    b: &mut FunctionBuilder,
    start: Value,
    end: Value,
    step: i64,
    mut body: impl FnMut(&mut FunctionBuilder, Value),
) {
    let header = b.create_block();
    let body_blk = b.create_block();
    let exit = b.create_block();
    b.append_block_param(header, types::I64);
    b.ins().jump(header, &[start.into()]);
    b.switch_to_block(header);
    let iv = b.block_params(header)[0];
    let more = b.ins().icmp(IntCC::SignedLessThan, iv, end);
    b.ins().brif(more, body_blk, &[], exit, &[]);
    b.switch_to_block(body_blk);
    body(b, iv);
    let next = b.ins().iadd_imm_s(iv, step);
    b.ins().jump(header, &[next.into()]);
    b.switch_to_block(exit);
}

/// `for iv in (start..end).step_by(step)` with compile-time bounds, carrying `init` through
/// the iterations as explicit block parameters, in order; returns the values after the last
/// iteration (`init` for an empty range). A range of one iteration is emitted inline.
///
/// Cranelift's optimizer places the pure operations of a loop body when the back edge needs
/// them, carried value by carried value in this order, so the order of `init` decides the
/// schedule: values shared by several carried values (e.g. one weight vector feeding a row of
/// accumulators) stay live from the first to the last that uses them. The loop tests at the
/// top so that each carried value is used once, by the back edge: a value used twice (by the
/// back edge and the exit) keeps the loads it depends on from folding into their users.
pub(crate) fn for_carry(
    b: &mut FunctionBuilder,
    start: i64,
    end: i64,
    step: i64,
    init: Vec<Value>,
    body: impl FnMut(&mut FunctionBuilder, Value, Vec<Value>) -> Vec<Value>,
) -> Vec<Value> {
    assert!(step > 0, "loop step must be positive");
    if start >= end {
        return init;
    }
    let first = b.ins().iconst(types::I64, start);
    if end - start <= step {
        let mut body = body;
        return body(b, first, init);
    }
    let last = b.ins().iconst(types::I64, end);
    for_carry_dyn(b, first, last, step, init, body)
}

/// [`for_carry`] with run-time bounds (tested at the top; an empty range returns `init`).
pub(crate) fn for_carry_dyn(
    b: &mut FunctionBuilder,
    start: Value,
    end: Value,
    step: i64,
    init: Vec<Value>,
    mut body: impl FnMut(&mut FunctionBuilder, Value, Vec<Value>) -> Vec<Value>,
) -> Vec<Value> {
    let header = b.create_block();
    let body_blk = b.create_block();
    let exit = b.create_block();
    b.append_block_param(header, types::I64);
    for &v in &init {
        let ty = b.func.dfg.value_type(v);
        b.append_block_param(header, ty);
        b.append_block_param(exit, ty);
    }
    let args: Vec<BlockArg> = std::iter::once(start).chain(init).map(BlockArg::from).collect();
    b.ins().jump(header, &args);
    b.switch_to_block(header);
    let params = b.block_params(header).to_vec();
    let more = b.ins().icmp(IntCC::SignedLessThan, params[0], end);
    let out: Vec<BlockArg> = params[1..].iter().copied().map(BlockArg::from).collect();
    b.ins().brif(more, body_blk, &[], exit, &out);
    b.switch_to_block(body_blk);
    let next = body(b, params[0], params[1..].to_vec());
    let iv = b.ins().iadd_imm_s(params[0], step);
    let again: Vec<BlockArg> = std::iter::once(iv).chain(next).map(BlockArg::from).collect();
    b.ins().jump(header, &again);
    b.switch_to_block(exit);
    b.block_params(exit).to_vec()
}

/// A tile of f32x4 accumulators living in Cranelift variables (loop-carried across the
/// reduction loops), indexed `[row][vector]`.
pub(crate) struct Acc {
    vars: Vec<Variable>,
    cols: usize,
}

impl Acc {
    /// A `rows × cols` tile, each accumulator initialized by `init(row, col)`.
    pub(crate) fn new(
        b: &mut FunctionBuilder,
        rows: usize,
        cols: usize,
        mut init: impl FnMut(&mut FunctionBuilder, usize, usize) -> Value,
    ) -> Acc {
        let mut vars = Vec::with_capacity(rows * cols);
        for r in 0..rows {
            for c in 0..cols {
                let ty = types::F32X4;
                let v = b.declare_var(ty);
                let x = init(b, r, c);
                b.def_var(v, x);
                vars.push(v);
            }
        }
        Acc { vars, cols }
    }

    pub(crate) fn get(&self, b: &mut FunctionBuilder, r: usize, c: usize) -> Value {
        b.use_var(self.vars[r * self.cols + c])
    }

    /// `acc[r][c] += x·y`.
    pub(crate) fn fma(&self, b: &mut FunctionBuilder, r: usize, c: usize, x: Value, y: Value) {
        let var = self.vars[r * self.cols + c];
        let a = b.use_var(var);
        let s = b.ins().fma(x, y, a);
        b.def_var(var, s);
    }
}

/// An [`Epilogue`] inside one kernel: the residual is read at the output's byte offsets,
/// through its distance from the output buffer, so every store site that knows its output
/// address knows the residual's too.
#[derive(Clone, Copy)]
pub(crate) struct Epi {
    /// `residual − y` in bytes.
    delta: Option<Value>,
    act: Option<UnaryOp>,
}

impl Epi {
    /// `y` is the output buffer (argument `out_arg(0)`) the store addresses are based on.
    /// The epilogue must have passed [`Epilogue::check`].
    pub(crate) fn new(kb: &mut Kb, ep: &Epilogue, y: Value) -> Epi {
        let delta = ep.residual.map(|r| {
            let r = kb.arg(r);
            kb.b.ins().isub(r, y)
        });
        Epi { delta, act: ep.act }
    }

    /// `act(v + residual)` for the vector `v` about to be stored like
    /// `scatter(v, y, off, stride, lanes)` (lanes past `lanes` are don't-cares; a zero
    /// `stride` means `v` is one value splatted).
    pub(crate) fn apply(
        &self,
        b: &mut FunctionBuilder,
        v: Value,
        y: Value,
        off: i64,
        stride: i64,
        lanes: usize,
    ) -> Value {
        let mut v = v;
        if let Some(d) = self.delta {
            let r = b.ins().iadd(y, d);
            let rv = gather(b, r, off, stride, lanes);
            v = b.ins().fadd(v, rv);
        }
        match self.act {
            Some(op) => apply_vec(b, op, v).expect("Epilogue::check admits only inline activations"),
            None => v,
        }
    }
}
