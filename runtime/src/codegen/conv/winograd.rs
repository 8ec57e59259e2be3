//! Winograd convolution, F(2×2,3×3) and F(4×4,3×3), for 2-D 3×3 convs with stride 1,
//! dilation 1, one group and constant weights, on the host's AVX2/FMA microkernels.
//!
//! With α = m + 2 (4 or 6) and output tiles of m × m pixels (the tile grid covers the output;
//! partial edge tiles compute zeros past the input and store only their valid pixels):
//! - at load, `U[ξ] = G g Gᵀ` per (output, input channel), in f64 and rounded once, packed as
//!   6-row A panels of the GEMM microkernel: `[ξ][channel tile of 6][c][6]`;
//! - per work unit (a block of `16·ns` consecutive tiles × a chunk of output-channel tiles),
//!   the input transform routine writes `V[ξ] = Bᵀ d B` for every input channel as packed
//!   16-tile B strips into the scratch; then for each of the α² transform points ξ, each strip
//!   and each 6-channel tile, one `sgemm_6x16` call over all `c` input channels writes
//!   `M[ξ] = U[ξ]·V[ξ]` into the scratch; last the output transform routine stores
//!   `Y = Aᵀ M A` plus bias and residual, activated, to the NCHW output.
//!
//! Blocking: a unit's V (α²·c·16·ns floats) and M (α²·6·ct·16·ns) stay within about half of
//! L2 ([`L2_BUDGET`]); within a transform point the B strip (c × 16) stays in L1 while the
//! channel tiles' A panels stream from L2. Layers with few tile blocks split their channel
//! tiles into chunks (each unit then redoes its block's input transform).
//!
//! Every output element is computed by the same arithmetic whatever the split: a tile's
//! transforms do not depend on its lane, and each GEMM sum runs over all input channels in one
//! microkernel call.

use cnnc_ir::ConvAlgo;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{AbiParam, InstBuilder, Signature, Value, types};
use cranelift_codegen::isa::CallConv;
use cranelift_frontend::FunctionBuilder;

use super::super::builder::for_range;
use super::super::gemm::kit::{self, for_dyn};
use super::{AuxList, Geo, const_f32};
use crate::codegen::{Aux, CompileError, EmitCx, Emitted, Epilogue, Jit};
use crate::microkernel::{Act, BIAS, MR, Microkernels, NR, RESIDUAL, tile_flags};

/// Bytes of V and M a unit may keep in flight (Zen 4: 1 MiB of L2 per core).
const L2_BUDGET: usize = 512 << 10;
/// Tile blocks a layer is cut into when it has at least this many 16-tile strips (for threads
/// to share); fewer, larger blocks only lengthen the units.
const TARGET_BLOCKS: usize = 8;
/// Layers with fewer (batch, tile block) units than this also split their channel tiles into
/// chunks, each unit then redoing its block's input transform. That redundancy is costly
/// (measured at 1 thread, 128 → 128 channels at 14×14, F(4,3): 0.27 ms in 3 chunks, 0.31–0.37
/// in 4, 0.36 in 6; 32 channels at 56×56 in 7 blocks × 2 chunks 0.36 ms, in 13 blocks 0.29),
/// so layers are split only as far as 2–3 threads need.
const MIN_UNITS: usize = 4;
/// Fewest channel tiles (of 6) in a chunk.
const MIN_CHUNK_TILES: usize = 6;

/// `G` of F(2×2,3×3) (rows: transform points 0, 1, −1, ∞).
const G2: [[f64; 3]; 4] = [[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]];
/// `G` of F(4×4,3×3) (points 0, 1, −1, 2, −2, ∞).
const G4: [[f64; 3]; 6] = [
    [1.0 / 4.0, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

/// Whether this conv runs as Winograd (given a Winograd algo and the microkernels): a 2-D 3×3
/// stride-1 undilated single-group conv (what the verifier admits for a Winograd algo), constant
/// weights, at least one input channel, an activation the output routine applies (every one
/// [`Epilogue::check`] admits) and planes small enough for the transforms' `i32` column indices.
pub(super) fn supports(cx: &EmitCx, geo: &Geo, ep: &Epilogue) -> bool {
    let shape_ok = geo.inp[0] == 1
        && geo.k == [1, 3, 3]
        && geo.s == [1, 1, 1]
        && geo.d == [1, 1, 1]
        && geo.group == 1
        && geo.cg >= 1
        && geo.in_len() < (1 << 28)
        && geo.out_len() < (1 << 28);
    shape_ok && const_f32(cx, 1).is_some() && ep.act.is_none_or(|op| Act::of(op).is_some())
}

/// `U = G g Gᵀ` for every (output, input) channel pair, packed `[ξ][tile][c][6]` (rows past
/// `m` zero). The loops run in the packed order per channel tile, so the α² planes are
/// written as α² sequential streams (scattered writes cost ~15 ms on 256 → 256 channels).
fn transform_weights<const A: usize>(g: &[[f64; 3]; A], w: &[f32], m: usize, c: usize) -> Vec<f32> {
    let mtiles = m.div_ceil(MR);
    let mut out = vec![0f32; A * A * mtiles * c * MR];
    for t in 0..mtiles {
        for ic in 0..c {
            for r6 in 0..MR.min(m - t * MR) {
                let oc = t * MR + r6;
                let k = &w[(oc * c + ic) * 9..][..9];
                let mut gk = [[0f64; 3]; A];
                for (r, row) in gk.iter_mut().enumerate() {
                    for (j, v) in row.iter_mut().enumerate() {
                        *v = g[r][0] * f64::from(k[j]) + g[r][1] * f64::from(k[3 + j]) + g[r][2] * f64::from(k[6 + j]);
                    }
                }
                for r in 0..A {
                    for cc in 0..A {
                        let u = gk[r][0] * g[cc][0] + gk[r][1] * g[cc][1] + gk[r][2] * g[cc][2];
                        out[(((r * A + cc) * mtiles + t) * c + ic) * MR + r6] = u as f32;
                    }
                }
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
    algo: ConvAlgo,
) -> Result<Emitted, CompileError> {
    let w = const_f32(cx, 1).ok_or_else(|| cx.unsupported("Winograd conv with runtime weights"))?;
    let f4 = algo == ConvAlgo::Winograd4;
    jit.note_variant(if f4 { "conv-winograd-f4-avx2" } else { "conv-winograd-f2-avx2" });
    let (alpha, tm) = if f4 { (6, 4) } else { (4, 2) };
    let (c, m) = (geo.cg, geo.mg);
    let [_, ih, iw] = geo.inp;
    let [_, oh, ow] = geo.out;
    let (ph, pw) = (geo.pb[1], geo.pb[2]);
    let tw = ow.div_ceil(tm);
    let tiles = oh.div_ceil(tm) * tw;
    let xi = alpha * alpha;
    let mtiles = m.div_ceil(MR);
    let u = if f4 { transform_weights(&G4, w, m, c) } else { transform_weights(&G2, w, m, c) };
    let mut aux = AuxList::new(cx);
    if geo.batch == 0 || tiles == 0 || m == 0 {
        // Nothing to compute (an empty output).
        let func = jit.kernel(cx.name, |_| {})?;
        return Ok(Emitted::serial(func, aux.bufs));
    }
    // Tile blocks of `ns` strips (at least TARGET_BLOCKS blocks where there are that many
    // strips), balanced (equal up to one strip).
    let strips = tiles.div_ceil(NR);
    let per_strip = xi * NR * (c + m.next_multiple_of(MR)) * 4;
    let ns = (strips / TARGET_BLOCKS).clamp(1, (L2_BUDGET / per_strip).max(1));
    let ns = strips.div_ceil(strips.div_ceil(ns));
    let nb = ns * NR;
    let n_blocks = tiles.div_ceil(nb);
    let outer = geo.batch * n_blocks;
    // At least one unit per host thread where the channel tiles allow: mnist_cnn's 32 → 64
    // channels at 14×14 (16 tiles, one block, 11 channel tiles) ran as one unit, 40 % of the
    // model's time on one of 2 threads.
    let for_threads = crate::threads::available().div_ceil(outer).min(mtiles);
    let chunks = if outer >= MIN_UNITS { 1 } else { MIN_UNITS.div_ceil(outer).min(mtiles / MIN_CHUNK_TILES) };
    let chunks = chunks.max(for_threads).max(1);
    let ct = mtiles.div_ceil(chunks);
    let chunks = mtiles.div_ceil(ct);
    let mrows = ct * MR;
    let units = outer * chunks;

    // The α² planes of V and of M are `vstride` / `mstride` floats apart, an odd multiple of
    // 64 bytes: the transforms touch all α² planes at the same offset, and an odd number of
    // cache lines apart those accesses fall in distinct L1 sets (64 sets). At a multiple of
    // 4 KiB they shared one set (measured: the input transform took twice the GEMM's time on
    // 32 channels at 56×56).
    let plane_stride = |floats: usize| (floats.div_ceil(16) | 1) * 16;
    let (vstride, mstride) = (plane_stride(ns * c * NR), plane_stride(mrows * nb));
    let u_arg = aux.push(Aux::F32(u));
    let in_tab = aux.push(Aux::I64([ih, iw, ph, pw, tw, c, vstride].map(|v| v as i64).to_vec()));
    let out_tab = aux.push(Aux::I64([oh, ow, tw, mstride, ns].map(|v| v as i64).to_vec()));
    let v_bytes = xi * vstride * 4;
    let scratch_arg = aux.push(Aux::Scratch(v_bytes + xi * mstride * 4));
    let bias_arg = (ep.op_inputs(cx) > 2).then(|| cx.in_arg(2));
    let res_arg = ep.residual;
    let act = ep.act.and_then(Act::of);
    let (p0, p1) = act.map_or((0.0, 0.0), Act::params);
    let out_flags = act.map_or(0, Act::flags)
        | if bias_arg.is_some() { BIAS } else { 0 }
        | if res_arg.is_some() { RESIDUAL } else { 0 };
    let (x_arg, y_arg) = (cx.in_arg(0), cx.out_arg(0));
    let (in_len, out_len) = (geo.in_len() as i64, geo.out_len() as i64);
    let idx = usize::from(f4);
    let (input_fn, output_fn, gemm_fn) = (mk.winograd_input[idx], mk.winograd_output[idx], mk.sgemm_6x16);
    // The two-strip tile (`packed.rs`'s rule: K of at least `MIN_PAIR_K` rows).
    let (gemm2_fn, pairs) = (mk.sgemm_6x32, mk.sgemm_6x32 != 0 && c >= super::packed::MIN_PAIR_K);

    let func = jit.kernel(cx.name, |kb| {
        let x = kb.arg(x_arg);
        let y = kb.arg(y_arg);
        let ua = kb.arg(u_arg);
        let in_t = kb.arg(in_tab);
        let out_t = kb.arg(out_tab);
        let scratch = kb.arg(scratch_arg);
        let bias = bias_arg.map(|i| kb.arg(i));
        let res = res_arg.map(|i| kb.arg(i));
        let (lo, hi) = (kb.lo, kb.hi);
        let b = &mut kb.b;
        let ptr = types::I64;
        let sig = |b: &mut FunctionBuilder, params: &[types::Type]| {
            let mut s = Signature::new(CallConv::SystemV);
            s.params.extend(params.iter().map(|&t| AbiParam::new(t)));
            b.import_signature(s)
        };
        let gemm_sig = sig(b, &[ptr, ptr, ptr, ptr, ptr, types::I32, ptr, ptr, types::F32, types::F32]);
        let in_sig = sig(b, &[ptr; 5]);
        let out_sig = sig(b, &[ptr, ptr, ptr, ptr, ptr, ptr, ptr, ptr, types::I32, types::F32, types::F32]);
        for_dyn(b, lo, hi, 1, |b, unit| {
            // unit = (n · n_blocks + blk) · chunks + chunk
            let chunk = b.ins().urem_imm_u(unit, chunks as i64);
            let rest = b.ins().udiv_imm_u(unit, chunks as i64);
            let blk = b.ins().urem_imm_u(rest, n_blocks as i64);
            let n = b.ins().udiv_imm_u(rest, n_blocks as i64);
            let x_n = kit::offset(b, x, n, c as i64 * in_len * 4, 0);
            let y_n = kit::offset(b, y, n, m as i64 * out_len * 4, 0);
            let r_n = res.map(|r| kit::offset(b, r, n, m as i64 * out_len * 4, 0));
            let tile0 = b.ins().imul_imm_s(blk, nb as i64);
            let total = b.ins().iconst(ptr, tiles as i64);
            let left = b.ins().isub(total, tile0);
            let nb_v = b.ins().iconst(ptr, nb as i64);
            let ntiles = b.ins().smin(left, nb_v);
            let vbuf = scratch;
            let mbuf = kit::add(b, scratch, v_bytes as i64);
            let f = b.ins().iconst(ptr, input_fn as i64);
            b.ins().call_indirect(in_sig, f, &[in_t, x_n, tile0, ntiles, vbuf]);
            let ns_u = b.ins().iadd_imm_s(ntiles, NR as i64 - 1);
            let ns_u = b.ins().ushr_imm_u(ns_u, 4);
            let t0 = b.ins().imul_imm_s(chunk, ct as i64);
            let t1 = b.ins().iadd_imm_s(t0, ct as i64);
            let full = b.ins().iconst(ptr, (m / MR) as i64);
            let t1 = b.ins().smin(t1, full);
            let last_chunk = b.ins().icmp_imm_s(IntCC::Equal, chunk, chunks as i64 - 1);
            let (kc, ldc) = (b.ins().iconst(ptr, c as i64), b.ins().iconst(ptr, nb as i64));
            let zero = b.ins().iconst(ptr, 0);
            let fz = b.ins().f32const(0.0);
            let call_gemm = |b: &mut FunctionBuilder, a: Value, bp: Value, cp: Value, rows: usize, pair: bool| {
                let fl = b.ins().iconst(types::I32, i64::from(tile_flags(rows, NR)));
                let g = b.ins().iconst(ptr, if pair { gemm2_fn } else { gemm_fn } as i64);
                b.ins().call_indirect(gemm_sig, g, &[kc, a, bp, cp, ldc, fl, zero, zero, fz, fz]);
            };
            for_range(b, 0, xi as i64, 1, |b, p| {
                let a_p = kit::offset(b, ua, p, (mtiles * c * MR * 4) as i64, 0);
                let v_p = kit::offset(b, vbuf, p, (vstride * 4) as i64, 0);
                let m_p = kit::offset(b, mbuf, p, (mstride * 4) as i64, 0);
                // Strip `s` (or strips `s, s + 1` through the two-strip tile) by every tile.
                let strip = |b: &mut FunctionBuilder, s: Value, pair: bool| {
                    let bp = kit::offset(b, v_p, s, (c * NR * 4) as i64, 0);
                    let m_s = kit::offset(b, m_p, s, (NR * 4) as i64, 0);
                    // Row (t − t0)·6 of this unit's M.
                    let m_s0 = kit::offset(b, m_s, t0, -((MR * nb * 4) as i64), 0);
                    for_dyn(b, t0, t1, 1, |b, t| {
                        let a = kit::offset(b, a_p, t, (c * MR * 4) as i64, 0);
                        let cp = kit::offset(b, m_s0, t, (MR * nb * 4) as i64, 0);
                        call_gemm(b, a, bp, cp, MR, pair);
                    });
                    if !m.is_multiple_of(MR) {
                        let (then, join) = (b.create_block(), b.create_block());
                        b.ins().brif(last_chunk, then, &[], join, &[]);
                        b.switch_to_block(then);
                        let t = b.ins().iconst(ptr, (m / MR) as i64);
                        let a = kit::offset(b, a_p, t, (c * MR * 4) as i64, 0);
                        let cp = kit::offset(b, m_s0, t, (MR * nb * 4) as i64, 0);
                        call_gemm(b, a, bp, cp, m % MR, pair);
                        b.ins().jump(join, &[]);
                        b.switch_to_block(join);
                    }
                };
                // Pairs of strips on the two-strip tile where the tile set has one and K (the
                // input channels) is long enough; an odd last strip alone.
                let s0 = b.ins().iconst(ptr, 0);
                if pairs {
                    let np = b.ins().ushr_imm_u(ns_u, 1);
                    for_dyn(b, s0, np, 1, |b, q| {
                        let s = b.ins().imul_imm_s(q, 2);
                        strip(b, s, true);
                    });
                    let s_end = b.ins().imul_imm_s(np, 2);
                    for_dyn(b, s_end, ns_u, 1, |b, s| strip(b, s, false));
                } else {
                    for_dyn(b, s0, ns_u, 1, |b, s| strip(b, s, false));
                }
            });
            let m0 = b.ins().imul_imm_s(t0, MR as i64);
            let m_v = b.ins().iconst(ptr, m as i64);
            let mc = b.ins().isub(m_v, m0);
            let mrows_v = b.ins().iconst(ptr, mrows as i64);
            let mc = b.ins().smin(mc, mrows_v);
            let y_c = kit::offset(b, y_n, m0, out_len * 4, 0);
            let r_c = r_n.map_or(zero, |r| kit::offset(b, r, m0, out_len * 4, 0));
            let bias_c = bias.map_or(zero, |p| kit::offset(b, p, m0, 4, 0));
            let fl = b.ins().iconst(types::I32, i64::from(out_flags));
            let (p0, p1) = (b.ins().f32const(p0), b.ins().f32const(p1));
            let f = b.ins().iconst(ptr, output_fn as i64);
            b.ins().call_indirect(out_sig, f, &[out_t, mbuf, tile0, ntiles, mc, y_c, bias_c, r_c, fl, p0, p1]);
        });
    })?;
    Ok(Emitted::parallel(func, aux.bufs, units as u64))
}

#[cfg(test)]
mod tests {
    //! The kernel run unit by unit in reverse order gives the bits of one call over all units
    //! (the threading contract), and without the microkernels a Winograd algo falls back to
    //! the direct kernels (what `CNNC_KERNELS=cranelift` selects). Numerics against f64 are in
    //! `runtime/tests/jit_winograd.rs`.

    use cnnc_ir::{ConvAlgo, ConvAttrs, Op, Tensor, TensorType, UnaryOp};

    use super::super::emit_conv_with;
    use crate::codegen::{Aux, EmitCx, Epilogue, Jit};
    use crate::microkernel::{Choice, F32Tile, Microkernels, lcg, select};

    /// Deterministic values in [-1, 1): the microkernel tests' data, doubled (exactly).
    fn random(n: usize, seed: u32) -> Vec<f32> {
        lcg(n, seed).into_iter().map(|v| 2.0 * v).collect()
    }

    /// Compiles a 3×3 conv (bias, residual, HardSwish) of `[n, c, h, w]` to `m` channels with
    /// pads `[1, 2, 0, 1]` and runs it as the unit ranges `calls`; returns the output, the
    /// variant and the unit count.
    fn run(
        x: [usize; 4],
        m: usize,
        algo: ConvAlgo,
        mk: Option<Microkernels>,
        calls: impl Fn(u64) -> Vec<(u64, u64)>,
    ) -> (Vec<f32>, Option<&'static str>, u64) {
        let [n, c, h, w] = x;
        let pads = [1, 2, 0, 1];
        let (oh, ow) = (h + pads[0] + pads[2] - 2, w + pads[1] + pads[3] - 2);
        let a = ConvAttrs::new(&[3, 3]).pads(&pads).algo(algo);
        let y_len = n * m * oh * ow;
        let tensors = [
            Tensor::from_f32(x.to_vec(), random(n * c * h * w, 1)).expect("shape"),
            Tensor::from_f32(vec![m, c, 3, 3], random(m * c * 9, 2)).expect("shape"),
            Tensor::from_f32(vec![m], random(m, 3)).expect("shape"),
            Tensor::from_f32(vec![n, m, oh, ow], random(y_len, 4)).expect("shape"),
        ];
        let inputs: Vec<TensorType> = tensors.iter().map(Tensor::ty).collect();
        let outputs = [TensorType::f32(vec![n, m, oh, ow])];
        let consts = [None, Some(&tensors[1]), Some(&tensors[2]), None];
        let op = Op::Conv(a.clone());
        let cx = EmitCx { name: "conv", op: &op, inputs: &inputs, outputs: &outputs, consts: &consts };
        let ep = Epilogue { act: Some(UnaryOp::HardSwish), residual: Some(3) };
        let mut jit = Jit::new().expect("jit");
        let emitted = emit_conv_with(&mut jit, &cx, &a, &ep, mk).expect("emits");
        let variant = jit.take_variant();
        let (_code, kernels) = jit.finish(&[emitted.func]).expect("finishes");
        let bytes = emitted.aux.iter().map(|a| if let Aux::Scratch(n) = a { *n } else { 0 }).max().unwrap_or(0);
        let mut scratch = vec![0u64; bytes.div_ceil(8)];
        let mut y = vec![f32::NAN; y_len];
        let mut table: Vec<*mut u8> = tensors.iter().map(|t| t.as_f32().expect("f32").as_ptr() as *mut u8).collect();
        table.push(y.as_mut_ptr().cast());
        table.extend(emitted.aux.iter().map(|a| a.ptr().unwrap_or(scratch.as_mut_ptr().cast())));
        for (lo, hi) in calls(emitted.units) {
            // SAFETY: one buffer per kernel argument, each of the size the kernel was compiled
            // for (scratch sized to its request); `_code` is alive; only `y` and scratch are
            // written.
            unsafe { kernels[0](table.as_ptr(), lo as i64, hi as i64) };
        }
        (y, variant, emitted.units)
    }

    #[test]
    fn winograd_units_in_reverse_give_the_bits_of_one_call() {
        for mk in each_f32_tile!() {
            let tile = mk.tile;
            for algo in [ConvAlgo::Winograd2, ConvAlgo::Winograd4] {
                // Many tile blocks; few blocks with channel chunks and a partial channel tile;
                // two images; one block of 11 channel tiles (mnist_cnn's second conv: split
                // for the host's threads, at least 2 in CI).
                let small = ([1, 32, 14, 14], 64);
                for (x, m) in [([1, 8, 61, 37], 20), ([1, 16, 9, 11], 83), ([2, 5, 18, 18], 13), small] {
                    if (x, m) == small && crate::threads::available() < 2 {
                        continue;
                    }
                    let (whole, variant, units) = run(x, m, algo, Some(mk), |u| vec![(0, u)]);
                    assert!(variant.is_some_and(|v| v.starts_with("conv-winograd")), "{variant:?}");
                    assert!(units >= 2, "{tile:?} {x:?}→{m}: {units} units");
                    let (split, _, _) = run(x, m, algo, Some(mk), |u| (0..u).rev().map(|i| (i, i + 1)).collect());
                    assert!(
                        whole.iter().zip(&split).all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{tile:?} {algo:?} {x:?}→{m}: unit-by-unit run differs ({units} units)"
                    );
                }
            }
        }
    }

    /// Without the microkernels a Winograd algo runs the direct kernel, whose result agrees
    /// with the Winograd kernel's within F(4,3)'s rounding (rel-L2 ≤ 1e-5; measured ~2e-6).
    #[test]
    fn winograd_algo_without_microkernels_falls_back_to_the_direct_conv() {
        assert_eq!(select(Choice::Cranelift), None);
        for algo in [ConvAlgo::Winograd2, ConvAlgo::Winograd4] {
            let (direct, variant, _) = run([1, 9, 14, 10], 11, algo, None, |u| vec![(0, u)]);
            assert!(!variant.is_some_and(|v| v.starts_with("conv-winograd")), "{variant:?}");
            for tile in F32Tile::ALL {
                let Some(mk) = select(Choice::Tile(tile)) else { continue };
                let (wino, _, _) = run([1, 9, 14, 10], 11, algo, Some(mk), |u| vec![(0, u)]);
                let (mut d, mut nrm) = (0f64, 0f64);
                for (a, b) in wino.iter().zip(&direct) {
                    d += f64::from(a - b).powi(2);
                    nrm += f64::from(*b).powi(2);
                }
                assert!((d / nrm).sqrt() <= 1e-5, "{algo:?} {tile:?}: rel-L2 {:.2e}", (d / nrm).sqrt());
            }
        }
    }
}
