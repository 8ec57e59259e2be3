//! Quantized 1-D/2-D convs on the int8 microkernels (`microkernel::int8`): a Cranelift driver,
//! shape-specialized, that packs the im2col matrix per block with `pack_b_im2col_u8` and calls
//! the tier's register tile (VNNI 8×32, AVX2 4×16) through `call_indirect`, the epilogue
//! (bias, zero-point correction, requantization) in the tile's registers.
//!
//! GEMM per image and group: `Y[m][n] = Σ_k A[m][k]·B[k][n]` with `m` the output channels, `n`
//! the output pixels, `k` = (input channel, tap). The tile multiplies u8 by i8 only, so the
//! operands are shifted at load and pack time and the shift is corrected exactly (wrapping i32,
//! like every tier): i8 activations are stored `x ^ 0x80` (`x' = x + 128`, zero point
//! `zx' = zx + 128`), u8 weights as `w − 128` (`zw' = zw − 128`). Then
//! `Σ (x − zx)(w − zw) = Σ x'w' − zx'·Σ_k w' − zw'·Σ_k x' + K·zx'·zw'`: the second and fourth
//! terms are per output channel and fold into the bias at load; the third needs each column's
//! sum, which the packer accumulates (`colsum`) only when some `zw' ≠ 0`. Padded taps read
//! `x' = zx'` (their `x − zx` is 0) and count in the column sums, as the formula needs.
//!
//! Blocking: K in blocks of at most [`KC`] rows (a multiple of 4; partial sums in an i32 buffer
//! between blocks), pixels in blocks of at most [`NC`] columns. Work units: (image, group, pixel
//! block, chunk of channel tiles); each unit runs every K block of its outputs with the same
//! code, so results do not depend on the thread count (and i32 sums not even on the blocking).
//! A call covering several chunks of one pixel block packs its B blocks once for all of them.

use cnnc_ir::{ConvAttrs, DType, QLinear, QLinearOut, TensorData};
use cranelift_codegen::ir::{AbiParam, InstBuilder, Signature, types};
use cranelift_codegen::isa::CallConv;

use super::builder::{for_range, mem};
use super::gemm::kit::{for_dyn, offset};
use super::{Aux, CompileError, EmitCx, Emitted, Jit};
use crate::microkernel::PackGeo;
use crate::microkernel::int8::{
    ACCUMULATE, AMX_B_SLACK, FINAL, OUT_SHIFT, QKernels, QTier, WIDE, needs_wide, pack_a_as,
};

/// Largest K block (rows of B per packed strip), a multiple of 4.
const KC: usize = 512;
/// Output pixels per packed B block (a multiple of every tier's tile width).
const NC: usize = 256;
/// Layers with fewer (image, group, pixel block) units than the host has threads (at least 2)
/// first cut their pixels into smaller blocks (whole strips), then, if still too few, split
/// their channel tiles, at the price of packing B once per chunk. Splitting for more
/// threads than the host has only repacks: on opennsfw's int8 convs (2 vCPUs, same session) a
/// fixed 8 ran at 215 GOP/s on 1 thread and 391 on 2; the host's count (2) at 270 and 510. The
/// split never changes a result (every i32 sum is exact), only the work units.
fn min_units() -> usize {
    crate::threads::available().max(2)
}
/// Fewest channel tiles in a chunk: each chunk packs its B blocks again.
const MIN_CHUNK_TILES: usize = 4;

/// Whether the driver handles this quantized op: a 1-D or 2-D conv with constant weights that
/// is not depthwise (one input channel per group: no reduction worth a GEMM tile).
pub(crate) fn supports(cx: &EmitCx, q: &QLinear) -> bool {
    let cnnc_ir::Op::Conv(a) = &q.base else { return false };
    let w = &cx.inputs[1].shape;
    a.kernel.len() <= 2
        && cx.consts.get(1).copied().flatten().is_some()
        && w.get(1).is_some_and(|&cg| cg * w[2..].iter().product::<usize>() >= 8)
}

/// The weights of `[C_out][K]` as i8 with their per-channel zero points, shifted to i8 when u8.
fn weights_i8(cx: &EmitCx, q: &QLinear, c_out: usize) -> Option<(Vec<i8>, Vec<i32>)> {
    let w = cx.consts.get(1).copied().flatten()?;
    let zw = |c: usize| if q.w.axis.is_some() { q.w.zero_points[c] } else { q.w.zero_points[0] };
    Some(match w.data() {
        TensorData::I8(v) => (v.clone(), (0..c_out).map(zw).collect()),
        TensorData::U8(v) => (v.iter().map(|&b| (b ^ 0x80) as i8).collect(), (0..c_out).map(|c| zw(c) - 128).collect()),
        _ => return None,
    })
}

pub(crate) fn emit(
    jit: &mut Jit,
    cx: &EmitCx,
    q: &QLinear,
    a: &ConvAttrs,
    mk: QKernels,
) -> Result<Emitted, CompileError> {
    let (xs, ys, ws) = (&cx.inputs[0].shape, &cx.outputs[0].shape, &cx.inputs[1].shape);
    let two = |v: &[usize], fill: usize| if v.len() == 2 { [v[0], v[1]] } else { [fill, v[0]] };
    let sp = |s: &[usize]| if s.len() == 4 { [s[2], s[3]] } else { [1, s[2]] };
    let ns = a.kernel.len();
    let (batch, c_in, c_out) = (xs[0], xs[1], ys[1]);
    let group = a.group;
    let (cg, mg) = (c_in / group, c_out / group);
    let (inp, out) = (sp(xs), sp(ys));
    let k = two(&a.kernel, 1);
    let geo = PackGeo {
        ih: inp[0],
        iw: inp[1],
        ow: out[1],
        kh: k[0],
        kw: k[1],
        sh: two(&a.strides, 1)[0],
        sw: two(&a.strides, 1)[1],
        dh: two(&a.dilations, 1)[0],
        dw: two(&a.dilations, 1)[1],
        ph: two(&a.pads[..ns], 0)[0],
        pw: two(&a.pads[..ns], 0)[1],
    };
    let k_len: usize = ws[1..].iter().product();
    let n_len = out[0] * out[1];
    let (wv, zw) =
        weights_i8(cx, q, c_out).ok_or_else(|| cx.unsupported("quantized weights that are not constant u8/i8"))?;
    let x_ty = cx.inputs[0].dtype;
    let (xor, zx) = match x_ty {
        DType::U8 => (0u8, q.x.zero_points[0]),
        DType::I8 => (0x80u8, q.x.zero_points[0] + 128),
        other => return Err(cx.unsupported(format!("a quantized conv on {other}"))),
    };
    // The bias with the per-channel terms of the shift correction folded in (wrapping).
    let bias_in = cx.consts.get(2).copied().flatten().and_then(|t| t.as_i32());
    if cx.inputs.len() > 2 && bias_in.is_none() {
        return Err(cx.unsupported("a quantized conv with a run-time bias"));
    }
    let amx = mk.tier == QTier::Amx;
    let bias: Vec<i32> = (0..c_out)
        .map(|c| {
            let wsum = wv[c * k_len..][..k_len].iter().fold(0i32, |s, &w| s.wrapping_add(i32::from(w)));
            let b = bias_in.map_or(0, |b| b[c]);
            let b =
                b.wrapping_sub(zx.wrapping_mul(wsum)).wrapping_add((k_len as i32).wrapping_mul(zx).wrapping_mul(zw[c]));
            if amx {
                // The AMX tile's sum is `T = Σ w·(x' − 128) = Σ w·x' − 128·Σ w`
                // (`microkernel/int8/amx.rs`), and `Σ x' = S + 128·K` with `S = Σ (x' − 128)`:
                // the contract's `Σ w·x' + b − zw·Σ x'` is `T + (b + 128·Σ w − 128·K·zw) − zw·S`.
                b.wrapping_add(wsum.wrapping_mul(128))
                    .wrapping_sub((k_len as i32).wrapping_mul(128).wrapping_mul(zw[c]))
            } else {
                b
            }
        })
        .collect();
    // The AMX tile's activations are signed (`x' ^ 0x80`), their column sums too.
    let (xor, pad) = if amx { (xor ^ 0x80, zx as u8 ^ 0x80) } else { (xor, zx as u8) };
    let with_colsum = zw.iter().any(|&z| z != 0);
    let (out_kind, scale, qp) = match &q.out {
        QLinearOut::I32 => (0u32, vec![1.0; c_out], [0, 0, 0]),
        QLinearOut::F32 => (1, (0..c_out).map(|c| q.acc_scale(c)).collect(), [0, 0, 0]),
        QLinearOut::Quantized { params, to } => {
            let (lo, hi) = q.out_bounds().ok_or_else(|| cx.unsupported("invalid output bounds"))?;
            let kind = if *to == DType::U8 { 2 } else { 3 };
            (kind, (0..c_out).map(|c| q.requant_scale(c)).collect(), [params.zero_points[0], lo, hi])
        }
    };
    let es = cx.outputs[0].dtype.size_bytes() as i64;
    // A panels per group, all wide alike (one kernel flag for the layer).
    let wide = (0..group).any(|g| needs_wide(mk.tier, &wv[g * mg * k_len..][..mg * k_len], mg, k_len));
    let mut a_bytes = Vec::new();
    let (mut group_stride, mut panel_stride, mut k4_stride) = (0, 0, 0);
    for g in 0..group {
        let p = pack_a_as(mk.tier, &wv[g * mg * k_len..][..mg * k_len], mg, k_len, wide);
        (group_stride, panel_stride, k4_stride) = (p.data.len(), p.panel_stride, p.k4_stride);
        a_bytes.extend(p.data.iter().map(|&b| b as u8));
    }
    let (mr, nr) = (mk.mr, mk.nr);
    let tiles = mg.div_ceil(mr);
    let n_kb = k_len.div_ceil(KC);
    // AMX K blocks start on whole 64-byte K steps of its panels.
    let kc = k_len.div_ceil(n_kb).next_multiple_of(if amx { 64 } else { 4 });
    let n_kb = k_len.div_ceil(kc);
    let kc_last = k_len - (n_kb - 1) * kc;
    let min_units = min_units();
    let nc = NC.min(n_len.next_multiple_of(nr));
    let mut n_blocks = n_len.div_ceil(nc);
    if batch * group * n_blocks < min_units {
        // Too few pixel blocks for the host's threads: cut the pixels finer first (down to one
        // strip per block), which packs each B column once, before splitting channel tiles,
        // which packs B again per chunk.
        n_blocks = min_units.div_ceil(batch * group).min(n_len.div_ceil(nr)).max(n_blocks);
    }
    // Few blocks split evenly over the threads: a multiple of the thread count where the strips
    // allow, of equal strips (784 pixels in 4 blocks of 13, 13, 13 and 10 strips of 16, not 16,
    // 16, 16 and 1; 3,136 in 14 blocks, not 13).
    let strips_total = n_len.div_ceil(nr);
    let bg = batch * group;
    if bg * n_blocks < 8 * min_units {
        while !(bg * n_blocks).is_multiple_of(min_units) && n_blocks < strips_total {
            n_blocks += 1;
        }
    }
    let nc = (strips_total.div_ceil(n_blocks) * nr).min(nc);
    let n_blocks = n_len.div_ceil(nc);
    let outer = batch * group * n_blocks;
    let chunks =
        if outer >= min_units { 1 } else { min_units.div_ceil(outer).min(tiles.div_ceil(MIN_CHUNK_TILES)).max(1) };
    let chunk_tiles = tiles.div_ceil(chunks);
    let chunks = tiles.div_ceil(chunk_tiles);
    let units = (outer * chunks) as u64;
    let strips = nc.div_ceil(nr);
    // The AMX tile reads its last strip's final K step whole (`AMX_B_SLACK`).
    let b_bytes = strips * kc.div_ceil(4) * nr * 4 + if amx { AMX_B_SLACK } else { 0 };
    let part_bytes = if n_kb > 1 { tiles * mr * nc * 4 } else { 0 };
    let colsum_bytes = nc * 4;
    let scratch = b_bytes + part_bytes + colsum_bytes;

    let aux = vec![
        Aux::Bytes(a_bytes),
        Aux::I64(geo.table()),
        Aux::U32(bias.iter().map(|&b| b as u32).collect()),
        Aux::F32(scale),
        Aux::U32(zw.iter().map(|&z| z as u32).collect()),
        Aux::U32(qp.iter().map(|&v| v as u32).collect()),
        Aux::Scratch(scratch),
    ];
    let args: Vec<usize> = (0..aux.len()).map(|i| cx.aux_arg(i)).collect();
    let (x_arg, y_arg) = (cx.in_arg(0), cx.out_arg(0));
    let in_plane = (inp[0] * inp[1]) as i64;
    let base_flags = (out_kind << OUT_SHIFT) | if wide { WIDE } else { 0 };
    if n_len == 0 || batch == 0 || mg == 0 {
        let func = jit.kernel(cx.name, |_| {})?;
        return Ok(Emitted::serial(func, aux));
    }
    jit.note_variant(match mk.tier {
        QTier::Amx => "qconv-amx",
        QTier::Vnni => "qconv-vnni",
        QTier::Avx2 => "qconv-avx2",
    });
    let func = jit.kernel(cx.name, |kb| {
        let x = kb.arg(x_arg);
        let y = kb.arg(y_arg);
        let [pa, pgeo, pbias, pscale, pzw, pqp, pscr] = [0, 1, 2, 3, 4, 5, 6].map(|i| kb.arg(args[i]));
        let (lo, hi) = (kb.lo, kb.hi);
        let b = &mut kb.b;
        let ptr = types::I64;
        let mut gemm_sig = Signature::new(CallConv::SystemV);
        for t in [ptr, ptr, ptr, ptr, ptr, ptr, ptr, types::I32, ptr, ptr, ptr, ptr, ptr] {
            gemm_sig.params.push(AbiParam::new(t));
        }
        let mut pack_sig = Signature::new(CallConv::SystemV);
        for t in [ptr, ptr, ptr, ptr, ptr, ptr, ptr] {
            pack_sig.params.push(AbiParam::new(t));
        }
        pack_sig.params.push(AbiParam::new(types::I8).uext());
        pack_sig.params.push(AbiParam::new(types::I8).uext());
        pack_sig.params.push(AbiParam::new(ptr));
        pack_sig.params.push(AbiParam::new(ptr));
        let gemm_sig = b.import_signature(gemm_sig);
        let pack_sig = b.import_signature(pack_sig);
        let bbuf = pscr;
        let part = b.ins().iadd_imm_s(pscr, b_bytes as i64);
        let colsum = b.ins().iadd_imm_s(pscr, (b_bytes + part_bytes) as i64);
        // u = ((n · group + g) · n_blocks + blk) · chunks + chunk. The units `lo..hi` are walked by
        // (image, group, pixel block) with the range of their chunks this call covers, so a thread
        // that runs several chunks of one block (every chunk, on 1 thread) packs B once for them.
        let o_lo = b.ins().udiv_imm_u(lo, chunks as i64);
        let hi_up = b.ins().iadd_imm_s(hi, chunks as i64 - 1);
        let o_hi = b.ins().udiv_imm_u(hi_up, chunks as i64);
        for_dyn(b, o_lo, o_hi, 1, |b, rest| {
            let first = b.ins().imul_imm_s(rest, chunks as i64);
            let c0 = b.ins().isub(lo, first);
            let zero = b.ins().iconst(ptr, 0);
            let c0 = b.ins().smax(c0, zero);
            let c1 = b.ins().isub(hi, first);
            let all_chunks = b.ins().iconst(ptr, chunks as i64);
            let c1 = b.ins().smin(c1, all_chunks);
            let blk = b.ins().urem_imm_u(rest, n_blocks as i64);
            let rest = b.ins().udiv_imm_u(rest, n_blocks as i64);
            let g = b.ins().urem_imm_u(rest, group as i64);
            let n = b.ins().udiv_imm_u(rest, group as i64);
            // This image's and group's input planes and output planes.
            let plane0 = b.ins().imul_imm_s(n, c_in as i64);
            let gc = b.ins().imul_imm_s(g, cg as i64);
            let plane0 = b.ins().iadd(plane0, gc);
            let x_g = offset(b, x, plane0, in_plane, 0);
            let oplane0 = b.ins().imul_imm_s(n, c_out as i64);
            let gm = b.ins().imul_imm_s(g, mg as i64);
            let ch0 = gm;
            let oplane0 = b.ins().iadd(oplane0, gm);
            let y_g = offset(b, y, oplane0, n_len as i64 * es, 0);
            let a_g = offset(b, pa, g, group_stride as i64, 0);
            let n0 = b.ins().imul_imm_s(blk, nc as i64);
            let total = b.ins().iconst(ptr, n_len as i64);
            let left = b.ins().isub(total, n0);
            let nc_v = b.ins().iconst(ptr, nc as i64);
            let cols = b.ins().smin(left, nc_v);
            let t0 = b.ins().imul_imm_s(c0, chunk_tiles as i64);
            let t_end = b.ins().imul_imm_s(c1, chunk_tiles as i64);
            let all = b.ins().iconst(ptr, tiles as i64);
            let t1 = b.ins().smin(t_end, all);
            let null = b.ins().iconst(ptr, 0);
            let cs = if with_colsum {
                // The packer adds into the column sums: start them at 0.
                for_range(b, 0, nc as i64, 1, |b, i| {
                    let p = offset(b, colsum, i, 4, 0);
                    let z = b.ins().iconst(types::I32, 0);
                    b.ins().store(mem(), z, p, 0);
                });
                colsum
            } else {
                null
            };
            let zw_base = if with_colsum { pzw } else { null };
            for kbi in 0..n_kb {
                let (k0, kcb) = (kbi * kc, if kbi + 1 == n_kb { kc_last } else { kc });
                let k4c = kcb.div_ceil(4);
                let block = match (kbi == 0, kbi + 1 == n_kb) {
                    (true, true) => FINAL,
                    (true, false) => 0,
                    (false, false) => ACCUMULATE,
                    (false, true) => ACCUMULATE | FINAL,
                };
                let pack_args = [
                    pgeo,
                    x_g,
                    b.ins().iconst(ptr, k0 as i64),
                    b.ins().iconst(ptr, kcb as i64),
                    n0,
                    cols,
                    b.ins().iconst(ptr, nr as i64),
                    b.ins().iconst(types::I8, i64::from(xor)),
                    b.ins().iconst(types::I8, i64::from(pad)),
                    bbuf,
                    cs,
                ];
                let pack = b.ins().iconst(ptr, mk.pack_b as i64);
                b.ins().call_indirect(pack_sig, pack, &pack_args);
                let n_strips = b.ins().iadd_imm_s(cols, nr as i64 - 1);
                let n_strips = b.ins().udiv_imm_u(n_strips, nr as i64);
                let zero = b.ins().iconst(ptr, 0);
                for_dyn(b, zero, n_strips, 1, |b, s| {
                    let c0 = b.ins().imul_imm_s(s, nr as i64);
                    let cleft = b.ins().isub(cols, c0);
                    let nr_v = b.ins().iconst(ptr, nr as i64);
                    let c = b.ins().smin(cleft, nr_v);
                    let bs = offset(b, bbuf, s, (k4c * nr * 4) as i64, 0);
                    let col = b.ins().iadd(n0, c0);
                    let cs_s = if with_colsum { offset(b, colsum, c0, 4, 0) } else { null };
                    for_dyn(b, t0, t1, 1, |b, t| {
                        let r0 = b.ins().imul_imm_s(t, mr as i64);
                        let mg_v = b.ins().iconst(ptr, mg as i64);
                        let rleft = b.ins().isub(mg_v, r0);
                        let mr_v = b.ins().iconst(ptr, mr as i64);
                        let rows = b.ins().smin(rleft, mr_v);
                        let a_t = offset(b, a_g, t, panel_stride as i64, (k0 / 4 * k4_stride) as i64);
                        // part: rows of nc i32 per channel of the tile.
                        let pr = b.ins().imul_imm_s(r0, nc as i64);
                        let pr = b.ins().iadd(pr, c0);
                        let part_t = offset(b, part, pr, 4, 0);
                        let orow = b.ins().imul_imm_s(r0, n_len as i64);
                        let orow = b.ins().iadd(orow, col);
                        let out_t = offset(b, y_g, orow, es, 0);
                        let ch = b.ins().iadd(ch0, r0);
                        let bias_t = offset(b, pbias, ch, 4, 0);
                        let scale_t = offset(b, pscale, ch, 4, 0);
                        let zw_t = if with_colsum { offset(b, zw_base, ch, 4, 0) } else { null };
                        let rows32 = b.ins().ireduce(types::I32, rows);
                        let cols32 = b.ins().ireduce(types::I32, c);
                        let rf = b.ins().ishl_imm_u(rows32, 8);
                        let cf = b.ins().ishl_imm_u(cols32, 16);
                        let fl = b.ins().bor(rf, cf);
                        let fl = b.ins().bor_imm_u(fl, i64::from(base_flags | block));
                        let call_args = [
                            b.ins().iconst(ptr, k4c as i64),
                            a_t,
                            bs,
                            part_t,
                            b.ins().iconst(ptr, nc as i64),
                            out_t,
                            b.ins().iconst(ptr, n_len as i64),
                            fl,
                            bias_t,
                            scale_t,
                            zw_t,
                            cs_s,
                            pqp,
                        ];
                        let gemm = b.ins().iconst(ptr, mk.gemm as i64);
                        b.ins().call_indirect(gemm_sig, gemm, &call_args);
                    });
                });
            }
        });
    })?;
    Ok(Emitted::parallel(func, aux, units))
}
