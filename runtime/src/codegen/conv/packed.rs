//! Dense 1-D/2-D convs as a packed GEMM: `Y[m][n] = Σ_k A[m][k]·B[k][n]` per group, with
//! `m` the output channels, `n` the output pixels and `k` = (input channel, tap). A is the
//! weights, packed at load into panels of 6 rows (`[group][tile][K][6]`, zero-padded rows);
//! B is the im2col matrix, packed at run time per cache block (K split into ≤ [`KC`]-row
//! blocks, pixels into [`NC`]-column blocks) into strips of 16 pixels in the kernel's scratch.
//! The generated driver loops over batch, groups, pixel blocks, K blocks, 16-pixel strips and
//! 6-channel tiles, and calls the precompiled 6×16 microkernel per tile (and the packing
//! routine per block) through `call_indirect` at addresses baked in as constants.
//!
//! Epilogue: the bias is added by the first K block (which overwrites Y), the residual and the
//! activation by the last (the others accumulate into Y), in the microkernel's registers before
//! the store. Every activation [`Epilogue::check`] admits has a microkernel form
//! ([`microkernel::Act`]) that gives the same bits as the separate Cranelift activation kernel.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{AbiParam, InstBuilder, Signature, Value, types};
use cranelift_codegen::isa::CallConv;
use cranelift_frontend::FunctionBuilder;

use super::super::builder::for_range;
use super::super::gemm::kit::{self, for_dyn};
use super::{AuxList, Geo, const_f32};
use crate::codegen::{Aux, CompileError, EmitCx, Emitted, Epilogue, Jit};
use crate::microkernel::{self, ACCUMULATE, Act, BIAS, MR, Microkernels, NR, RESIDUAL};

/// Largest K block (rows of B per packed panel); K is split into equal blocks of at most this.
const KC: usize = 256;
/// Output pixels per packed B block (a multiple of [`NR`]).
const NC: usize = 256;
/// Smallest reduction length worth the packing.
const MIN_K: usize = 16;
/// Layers with fewer (batch, group, pixel block) units than this also split their channel tiles.
const MIN_UNITS: usize = 8;
/// Fewest channel tiles in a chunk, so that re-packing B per chunk stays cheap.
const MIN_CHUNK_TILES: usize = 8;

/// Whether the packed path handles this conv: 1-D or 2-D, constant weights, a reduction of at
/// least [`MIN_K`], and an epilogue the microkernel applies (a residual and any activation of
/// [`Act`], which covers every one [`Epilogue::check`] admits).
pub(super) fn supports(cx: &EmitCx, geo: &Geo, ep: &Epilogue) -> bool {
    let act_ok = ep.act.is_none_or(|op| Act::of(op).is_some());
    let two_d = geo.inp[0] == 1 && geo.out[0] == 1 && geo.k[0] == 1;
    act_ok && two_d && const_f32(cx, 1).is_some() && geo.cg * geo.kvol() >= MIN_K && geo.mg > 0
}

/// Packs the weights `[group·mg][cg][kvol]` into `[group][tile of 6][K][6]`.
fn pack_a(geo: &Geo, w: &[f32]) -> Vec<f32> {
    let k = geo.cg * geo.kvol();
    let tiles = geo.mg.div_ceil(MR);
    let mut out = vec![0f32; geo.group * tiles * k * MR];
    for g in 0..geo.group {
        for oc in 0..geo.mg {
            let (t, r) = (oc / MR, oc % MR);
            let src = &w[(g * geo.mg + oc) * k..][..k];
            let dst = (g * tiles + t) * k * MR + r;
            for (kk, &v) in src.iter().enumerate() {
                out[dst + kk * MR] = v;
            }
        }
    }
    out
}

pub(super) fn emit(
    jit: &mut Jit,
    cx: &EmitCx,
    geo: &Geo,
    ep: &Epilogue,
    mk: Microkernels,
) -> Result<Emitted, CompileError> {
    let w = const_f32(cx, 1).ok_or_else(|| cx.unsupported("packed conv with runtime weights"))?;
    jit.note_variant("conv-packed-avx2");
    let k_len = geo.cg * geo.kvol();
    let n_len = geo.out_len();
    let (mg, tiles) = (geo.mg, geo.mg.div_ceil(MR));
    let n_kb = k_len.div_ceil(KC);
    let kc = k_len.div_ceil(n_kb);
    let kc_last = k_len - (n_kb - 1) * kc;
    let nc = NC.min(n_len.next_multiple_of(NR));
    let pack_geo = microkernel::PackGeo {
        ih: geo.inp[1],
        iw: geo.inp[2],
        ow: geo.out[2],
        kh: geo.k[1],
        kw: geo.k[2],
        sh: geo.s[1],
        sw: geo.s[2],
        dh: geo.d[1],
        dw: geo.d[2],
        ph: geo.pb[1],
        pw: geo.pb[2],
    };
    let mut aux = AuxList::new(cx);
    let a_arg = aux.push(Aux::F32(pack_a(geo, w)));
    let geo_arg = aux.push(Aux::I64(pack_geo.table()));
    let scratch_arg = aux.push(Aux::Scratch(kc * nc * 4));
    let bias_arg = (ep.op_inputs(cx) > 2).then(|| cx.in_arg(2));
    let res_arg = ep.residual;
    let act = ep.act.and_then(Act::of);
    let (p0, p1) = act.map_or((0.0, 0.0), Act::params);
    let last_flags = act.map_or(0, Act::flags) | if res_arg.is_some() { RESIDUAL } else { 0 };
    let first_flags = if bias_arg.is_some() { BIAS } else { 0 };
    let (x_arg, y_arg) = (cx.in_arg(0), cx.out_arg(0));
    let in_len = geo.in_len() as i64;
    let out_bytes = n_len as i64 * 4;
    // Work units: (batch, group, pixel block, chunk of channel tiles), in that order. Pixel
    // blocks are balanced (equal up to one strip); layers with few pixel blocks also split their
    // channel tiles so that there are enough units to share, at the price of packing each B
    // block once per chunk. Neither changes any output element's sum (that is fixed by `kc`).
    if n_len == 0 || geo.batch == 0 {
        // Nothing to compute (an empty output).
        let func = jit.kernel(cx.name, |_| {})?;
        return Ok(Emitted::serial(func, aux.bufs));
    }
    let n_blocks = n_len.div_ceil(nc);
    let nc = n_len.div_ceil(n_blocks).next_multiple_of(NR).min(nc);
    let n_blocks = n_len.div_ceil(nc);
    let outer = geo.batch * geo.group * n_blocks;
    let chunks =
        if outer >= MIN_UNITS { 1 } else { MIN_UNITS.div_ceil(outer).min(tiles.div_ceil(MIN_CHUNK_TILES)).max(1) };
    let chunk_tiles = tiles.div_ceil(chunks);
    let chunks = tiles.div_ceil(chunk_tiles);
    let units = (outer * chunks) as u64;
    let func = jit.kernel(cx.name, |kb| {
        let x = kb.arg(x_arg);
        let y = kb.arg(y_arg);
        let a = kb.arg(a_arg);
        let geo_t = kb.arg(geo_arg);
        let scratch = kb.arg(scratch_arg);
        let bias = bias_arg.map(|i| kb.arg(i));
        let res = res_arg.map(|i| kb.arg(i));
        let (lo, hi) = (kb.lo, kb.hi);
        let b = &mut kb.b;
        let ptr = types::I64;
        let mut gemm_sig = Signature::new(CallConv::SystemV);
        for t in [ptr, ptr, ptr, ptr, ptr, types::I32, ptr, ptr, types::F32, types::F32] {
            gemm_sig.params.push(AbiParam::new(t));
        }
        let mut pack_sig = Signature::new(CallConv::SystemV);
        for _ in 0..7 {
            pack_sig.params.push(AbiParam::new(ptr));
        }
        let gemm_sig = b.import_signature(gemm_sig);
        let pack_sig = b.import_signature(pack_sig);
        let cs = Calls { gemm_sig, pack_sig, gemm: mk.sgemm_6x16 as i64, pack: mk.pack_b_im2col as i64, p0, p1 };
        for_dyn(b, lo, hi, 1, |b, u| {
            // u = ((n · group + g) · n_blocks + blk) · chunks + chunk
            let chunk = b.ins().urem_imm_u(u, chunks as i64);
            let rest = b.ins().udiv_imm_u(u, chunks as i64);
            let blk = b.ins().urem_imm_u(rest, n_blocks as i64);
            let rest = b.ins().udiv_imm_u(rest, n_blocks as i64);
            let g = b.ins().urem_imm_u(rest, geo.group as i64);
            let n = b.ins().udiv_imm_u(rest, geo.group as i64);
            let x_n = kit::offset(b, x, n, geo.c() as i64 * in_len * 4, 0);
            let y_n = kit::offset(b, y, n, geo.m() as i64 * out_bytes, 0);
            let r_n = res.map(|r| kit::offset(b, r, n, geo.m() as i64 * out_bytes, 0));
            let t0 = b.ins().imul_imm_s(chunk, chunk_tiles as i64);
            let t_end = b.ins().iadd_imm_s(t0, chunk_tiles as i64);
            let full = b.ins().iconst(ptr, (mg / MR) as i64);
            let t1 = b.ins().smin(t_end, full);
            // The partial tile (if any) belongs to the last chunk.
            let last_chunk = b.ins().icmp_imm_s(IntCC::Equal, chunk, chunks as i64 - 1);
            let grp = Group {
                x: kit::offset(b, x_n, g, geo.cg as i64 * in_len * 4, 0),
                y: kit::offset(b, y_n, g, mg as i64 * out_bytes, 0),
                res: r_n.map(|r| kit::offset(b, r, g, mg as i64 * out_bytes, 0)),
                a: kit::offset(b, a, g, (tiles * k_len * MR * 4) as i64, 0),
                bias: bias.map(|p| kit::offset(b, p, g, mg as i64 * 4, 0)),
                geo_t,
                scratch,
                k_len,
                n_len,
                mg,
                t0,
                t1,
                last_chunk,
            };
            // One pixel block: every K block, first and last peeled for their flags.
            let block = |b: &mut FunctionBuilder, n0: Value, cols: usize| {
                let single = if n_kb == 1 { first_flags | last_flags } else { first_flags };
                let k0 = b.ins().iconst(ptr, 0);
                grp.k_block(b, &cs, n0, cols, k0, if n_kb == 1 { kc_last } else { kc }, single);
                if n_kb > 2 {
                    for_range(b, 1, n_kb as i64 - 1, 1, |b, i| {
                        let k0 = b.ins().imul_imm_s(i, kc as i64);
                        grp.k_block(b, &cs, n0, cols, k0, kc, ACCUMULATE);
                    });
                }
                if n_kb > 1 {
                    let k0 = b.ins().iconst(ptr, ((n_kb - 1) * kc) as i64);
                    grp.k_block(b, &cs, n0, cols, k0, kc_last, ACCUMULATE | last_flags);
                }
            };
            let n0 = b.ins().imul_imm_s(blk, nc as i64);
            let tail = n_len - (n_blocks - 1) * nc;
            if tail == nc {
                block(b, n0, nc);
            } else {
                let is_tail = b.ins().icmp_imm_s(IntCC::Equal, blk, n_blocks as i64 - 1);
                if_else(b, is_tail, |b| block(b, n0, tail), |b| block(b, n0, nc));
            }
        });
    })?;
    Ok(Emitted::parallel(func, aux.bufs, units))
}

/// Emits `if cond { then() } else { other() }`.
fn if_else(
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

/// The microkernels as call targets.
struct Calls {
    gemm_sig: cranelift_codegen::ir::SigRef,
    pack_sig: cranelift_codegen::ir::SigRef,
    gemm: i64,
    pack: i64,
    /// The activation's parameters (see [`Act::params`]).
    p0: f32,
    p1: f32,
}

/// Pointers and sizes of one (batch, group) GEMM.
struct Group {
    x: Value,
    y: Value,
    res: Option<Value>,
    a: Value,
    bias: Option<Value>,
    geo_t: Value,
    scratch: Value,
    k_len: usize,
    n_len: usize,
    mg: usize,
    /// Full channel tiles `t0..t1` of this unit's chunk (run-time values).
    t0: Value,
    t1: Value,
    /// Whether this unit's chunk is the last one, which also runs the partial tile.
    last_chunk: Value,
}

impl Group {
    /// Packs B rows `k0..k0+kc` × pixels `n0..n0+cols`, then runs every tile over them.
    #[allow(clippy::too_many_arguments)]
    fn k_block(&self, b: &mut FunctionBuilder, cs: &Calls, n0: Value, cols: usize, k0: Value, kc: usize, flags: u32) {
        let ptr = types::I64;
        let kc_v = b.ins().iconst(ptr, kc as i64);
        let cols_v = b.ins().iconst(ptr, cols as i64);
        let pack = b.ins().iconst(ptr, cs.pack);
        b.ins().call_indirect(cs.pack_sig, pack, &[self.geo_t, self.x, k0, kc_v, n0, cols_v, self.scratch]);
        let a_k = kit::offset(b, self.a, k0, (MR * 4) as i64, 0);
        let strip = |b: &mut FunctionBuilder, s: Value, n: usize| {
            let bp = kit::offset(b, self.scratch, s, (kc * NR * 4) as i64, 0);
            // Column of the strip in Y: n0 + s·16.
            let col = b.ins().imul_imm_s(s, NR as i64);
            let col = b.ins().iadd(col, n0);
            let y_c = kit::offset(b, self.y, col, 4, 0);
            let r_c = self.res.map(|r| kit::offset(b, r, col, 4, 0));
            let tile = |b: &mut FunctionBuilder, t: Value, m: usize| {
                let a_t = kit::offset(b, a_k, t, (self.k_len * MR * 4) as i64, 0);
                let row_bytes = (MR * self.n_len * 4) as i64;
                let c = kit::offset(b, y_c, t, row_bytes, 0);
                let zero = b.ins().iconst(ptr, 0);
                let r = r_c.map_or(zero, |r| kit::offset(b, r, t, row_bytes, 0));
                let bias = self.bias.map_or(zero, |p| kit::offset(b, p, t, (MR * 4) as i64, 0));
                let f = b.ins().iconst(types::I32, i64::from(flags | microkernel::tile_flags(m, n)));
                let ldc = b.ins().iconst(ptr, self.n_len as i64);
                let (p0, p1) = (b.ins().f32const(cs.p0), b.ins().f32const(cs.p1));
                let callee = b.ins().iconst(ptr, cs.gemm);
                b.ins().call_indirect(cs.gemm_sig, callee, &[kc_v, a_t, bp, c, ldc, f, bias, r, p0, p1]);
            };
            for_dyn(b, self.t0, self.t1, 1, |b, t| tile(b, t, MR));
            if !self.mg.is_multiple_of(MR) {
                let (then, join) = (b.create_block(), b.create_block());
                b.ins().brif(self.last_chunk, then, &[], join, &[]);
                b.switch_to_block(then);
                let t = b.ins().iconst(ptr, (self.mg / MR) as i64);
                tile(b, t, self.mg % MR);
                b.ins().jump(join, &[]);
                b.switch_to_block(join);
            }
        };
        for_range(b, 0, (cols / NR) as i64, 1, |b, s| strip(b, s, NR));
        if !cols.is_multiple_of(NR) {
            let s = b.ins().iconst(ptr, (cols / NR) as i64);
            strip(b, s, cols % NR);
        }
    }
}
