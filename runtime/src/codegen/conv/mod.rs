//! Convolutions. Dense 1-D/2-D convs with constant weights and a reduction (input channels ×
//! taps per group) of at least 12 (except strided ones with few output channels) run as a
//! packed GEMM over the host's AVX2/FMA microkernel
//! when it has one ([`packed`]; `CNNC_KERNELS=cranelift` disables it); the rest are direct
//! Cranelift loop nests that need no scratch memory.
//!
//! - [`packed`]: im2col panels packed per cache block into the run's [`Aux::Scratch`] (each
//!   concurrent `Model::run` has its own), weights packed at load into 6-channel panels, a
//!   generated driver calling the precompiled 6×16 microkernel per register tile; bias,
//!   residual and every fused activation applied by the microkernel in registers. 1×1
//!   stride-1 convs with few output channels read the input in place instead of packing it;
//!   1×1 convs on small output maps (≤ 256 pixels; ≤ 1024 strided; ≤ 4096 with ≤ 64
//!   channels) run
//!   transposed (`packed/swap.rs`: pixels as the tile's 6-row side read in place, channels
//!   its 16-wide side, the whole reduction in registers, no scratch); stride-2 columns are
//!   packed by deinterleaving contiguous loads.
//! - [`direct`]: every conv; vectorized over output channels. Weights are packed at load
//!   (`[group][tile of 8 channels][c][taps][8]`) so one f32x4 load gives 4 output channels; each
//!   input pixel is `splat(load)`ed and feeds 2 such vectors. A register tile is 8 output
//!   channels × 4 output pixels (6 for 1×1 kernels). Many input channels are reduced in
//!   cache-sized blocks, partial sums kept in the output (the first block starts from the
//!   bias). 1×1 stride-1 unpadded convs are the same code over the flattened plane, i.e. a
//!   GEMM with `M` = channels, `N` = pixels.
//! - [`winograd`]: 2-D 3×3 stride-1 single-group convs whose [`ConvAttrs::algo`] asks for
//!   Winograd F(2×2,3×3) or F(4×4,3×3), with constant weights, when the host has the
//!   microkernels: weights transformed at load, per block of tiles an input transform into
//!   packed GEMM strips, α² GEMMs on the 6×16 microkernel, an output transform with the
//!   epilogue. Otherwise (`CNNC_KERNELS=cranelift`, no AVX2/FMA, runtime weights) a Winograd
//!   algo runs the paths below: the same meaning (the direct sum), with their rounding.
//! - [`depthwise_avx2`]: one input channel per group and fewer than 4 output channels per
//!   group, 1-D/2-D, with the microkernels: a generated driver calls the precompiled AVX2
//!   routine per (output channel, block of rows); it stages the input rows of a band into
//!   scratch (zero-padded, split into column phases when strided) and computes 8 rows × 8
//!   columns per register tile (4 rows with the weights in registers for 3×3), taps in
//!   row-major order, epilogue in registers. The same sums in the same order as
//!   [`depthwise`], the portable Cranelift kernel for the rest: vectorized over 4 adjacent
//!   output pixels with the tap weight splatted.
//! - [`gemv`]: with the microkernels, convs with one output pixel per image whose kernel
//!   covers the unpadded input (a 1×1 conv after global pooling): a matrix-vector product over
//!   weights packed at load into 8-channel panels, streamed at memory bandwidth.
//! - [`transpose`]: ConvTranspose. Kernel = stride without padding (upsampling) goes to
//!   [`transpose_upsample`] (a GEMM on the microkernel into scratch, then a bias + interleaving
//!   store; or, for few output channels × taps, a Cranelift register tile over L1-staged input
//!   rows); other geometries with the microkernel to [`transpose_cols`] (GEMM per block of
//!   output rows, then taps summed in a fixed order); the rest to a gather-form Cranelift
//!   kernel vectorized over output channels.
//!
//! Padding never costs a branch in the inner loops: rows (and depth) loop over the valid taps
//! of each output row, read from a table built at load; columns are split at compile time into
//! an interior, where every tap is in range, and border columns, each with its own taps.
//!
//! [`emit_conv_with`] applies an [`Epilogue`] (residual add, activation) to the final sums in
//! registers at every store of the direct and depthwise paths; a channel-blocked direct conv
//! applies it in its last channel block only. ConvTranspose has no fused form.

mod depthwise;
mod depthwise_avx2;
#[cfg(test)]
mod depthwise_tests;
mod direct;
pub(super) mod gemv;
mod packed;
#[cfg(test)]
mod packed_tests;
mod transpose;
mod transpose_cols;
#[cfg(test)]
mod transpose_tests;
mod transpose_upsample;
mod winograd;

use cnnc_ir::{ConvAlgo, ConvAttrs, ConvTransposeAttrs, DType, Tensor};
use cranelift_codegen::ir::Value;
use cranelift_frontend::FunctionBuilder;

use super::builder::for_range;
use super::gemm::kit::{self, for_dyn, gather, load_i64, shuffle32};
use super::{Aux, CompileError, EmitCx, Emitted, Epilogue, Jit};
use crate::microkernel::Microkernels;

/// A conv with the epilogue `ep` (`Epilogue::default()` for a plain conv), through the
/// packed-GEMM path with the host's microkernels when they apply (see [`microkernel::select`];
/// `CNNC_KERNELS=cranelift` forces the Cranelift kernels).
pub(crate) fn emit_conv(jit: &mut Jit, cx: &EmitCx, a: &ConvAttrs, ep: &Epilogue) -> Result<Emitted, CompileError> {
    emit_conv_with(jit, cx, a, ep, super::f32_kernels()?)
}

/// A conv with `ep` applied to each output value (conv + bias) before it is stored, with the
/// Cranelift kernels only, which need no [`Aux::Scratch`]. Every conv path (direct, 1×1,
/// grouped, depthwise, 1-D to 3-D) honours it; `cx.inputs` are the conv's `x, w[, b]`
/// followed by the residual, if any. Fused convs in a model go through [`emit_conv_with`].
#[cfg(test)]
pub(crate) fn emit_conv_fused(
    jit: &mut Jit,
    cx: &EmitCx,
    a: &ConvAttrs,
    ep: &Epilogue,
) -> Result<Emitted, CompileError> {
    emit_conv_with(jit, cx, a, ep, None)
}

/// [`emit_conv_fused`] that, when `mk` is `Some`, routes Winograd-algo convs to [`winograd`],
/// depthwise 1-D/2-D convs to the AVX2 depthwise routine ([`depthwise_avx2::supports`]),
/// single-pixel convs to the matrix-vector routine ([`gemv::supports`]) and dense 1-D/2-D convs
/// with constant weights and a reduction of at least 12 (see [`packed::supports`]) to the packed
/// GEMM; the Winograd, depthwise and GEMM paths take an [`Aux::Scratch`].
pub(crate) fn emit_conv_with(
    jit: &mut Jit,
    cx: &EmitCx,
    a: &ConvAttrs,
    ep: &Epilogue,
    mk: Option<Microkernels>,
) -> Result<Emitted, CompileError> {
    ep.check(cx)?;
    if !(2..=3).contains(&ep.op_inputs(cx)) {
        return Err(cx.unsupported(format!("a conv with {} inputs", ep.op_inputs(cx))));
    }
    let geo = Geo::conv(cx, a)?;
    if a.algo != ConvAlgo::Direct
        && let Some(mk) = mk
        && winograd::supports(cx, &geo, ep)
    {
        return winograd::emit(jit, cx, &geo, ep, mk, a.algo);
    }
    if geo.cg == 1 && geo.mg < 4 {
        if let Some(mk) = mk
            && let Some(dg) = depthwise_avx2::supports(&geo, ep)
        {
            return depthwise_avx2::emit(jit, cx, &geo, dg, ep, mk);
        }
        return depthwise::emit(jit, cx, &geo, ep);
    }
    match mk {
        Some(mk) if gemv::supports(cx, &geo, ep) => gemv::emit(jit, cx, &geo, ep, mk),
        Some(mk) if packed::supports(cx, &geo, ep, &mk) => packed::emit(jit, cx, &geo, ep, mk),
        _ => direct::emit(jit, cx, &geo, ep),
    }
}

pub(crate) fn emit_conv_transpose(jit: &mut Jit, cx: &EmitCx, a: &ConvTransposeAttrs) -> Result<Emitted, CompileError> {
    let geo = Geo::conv_transpose(cx, a)?;
    transpose::emit(jit, cx, &geo, super::f32_kernels()?)
}

/// Shapes of a (transposed) convolution embedded in three spatial axes (depth, rows,
/// columns): 1-D and 2-D convs get leading unit axes with kernel 1, stride 1 and no padding.
#[derive(Clone, Debug)]
pub(super) struct Geo {
    pub batch: usize,
    pub group: usize,
    /// Input channels per group.
    pub cg: usize,
    /// Output channels per group.
    pub mg: usize,
    pub inp: [usize; 3],
    pub out: [usize; 3],
    pub k: [usize; 3],
    pub s: [usize; 3],
    pub d: [usize; 3],
    pub pb: [usize; 3],
}

fn embed(v: &[usize], fill: usize) -> [usize; 3] {
    let mut out = [fill; 3];
    out[3 - v.len()..].copy_from_slice(v);
    out
}

impl Geo {
    fn conv(cx: &EmitCx, a: &ConvAttrs) -> Result<Geo, CompileError> {
        let ns = a.kernel.len();
        check_types(cx, ns)?;
        let (xs, ys, ws) = (&cx.inputs[0].shape, &cx.outputs[0].shape, &cx.inputs[1].shape);
        let group = a.group;
        let mut geo = Geo {
            batch: xs[0],
            group,
            cg: ws[1],
            mg: ws[0] / group,
            inp: embed(&xs[2..], 1),
            out: embed(&ys[2..], 1),
            k: embed(&a.kernel, 1),
            s: embed(&a.strides, 1),
            d: embed(&a.dilations, 1),
            pb: embed(&a.pads[..ns], 0),
        };
        let pointwise =
            a.kernel.iter().all(|&k| k == 1) && a.strides.iter().all(|&s| s == 1) && a.pads.iter().all(|&p| p == 0);
        if pointwise {
            // A 1×…×1 kernel with unit strides and no padding is a 1-D conv over the plane.
            let len = geo.in_len();
            geo.inp = [1, 1, len];
            geo.out = [1, 1, len];
        }
        Ok(geo)
    }

    fn conv_transpose(cx: &EmitCx, a: &ConvTransposeAttrs) -> Result<Geo, CompileError> {
        let ns = a.kernel.len();
        check_types(cx, ns)?;
        let (xs, ys, ws) = (&cx.inputs[0].shape, &cx.outputs[0].shape, &cx.inputs[1].shape);
        let group = a.group;
        Ok(Geo {
            batch: xs[0],
            group,
            cg: xs[1] / group,
            mg: ws[1],
            inp: embed(&xs[2..], 1),
            out: embed(&ys[2..], 1),
            k: embed(&a.kernel, 1),
            s: embed(&a.strides, 1),
            d: embed(&a.dilations, 1),
            pb: embed(&a.pads[..ns], 0),
        })
    }

    /// Whether reading `rows` input channel planes in place, one row of each per tile, would
    /// keep them in too few L1 sets: see [`rows_alias`].
    pub fn planes_alias(&self, rows: usize) -> bool {
        rows_alias(self.in_len() * 4, rows)
    }

    /// The 2-D geometry the im2col packers read (the last two spatial axes).
    pub fn pack_geo(&self) -> crate::microkernel::PackGeo {
        crate::microkernel::PackGeo {
            ih: self.inp[1],
            iw: self.inp[2],
            ow: self.out[2],
            kh: self.k[1],
            kw: self.k[2],
            sh: self.s[1],
            sw: self.s[2],
            dh: self.d[1],
            dw: self.d[2],
            ph: self.pb[1],
            pw: self.pb[2],
        }
    }

    pub fn in_len(&self) -> usize {
        self.inp.iter().product()
    }

    pub fn out_len(&self) -> usize {
        self.out.iter().product()
    }

    pub fn kvol(&self) -> usize {
        self.k.iter().product()
    }

    /// Output channels.
    pub fn m(&self) -> usize {
        self.mg * self.group
    }

    /// Input channels.
    pub fn c(&self) -> usize {
        self.cg * self.group
    }

    /// Taps `k` on `axis` that read inside the input for output index `o`, as `lo..hi`.
    pub fn taps(&self, axis: usize, o: usize) -> (usize, usize) {
        let ok = |k: usize| {
            let pos = (o * self.s[axis] + k * self.d[axis]) as i64 - self.pb[axis] as i64;
            pos >= 0 && pos < self.inp[axis] as i64
        };
        let lo = (0..self.k[axis]).find(|&k| ok(k)).unwrap_or(0);
        let hi = (lo..self.k[axis]).find(|&k| !ok(k)).unwrap_or(self.k[axis]);
        if ok(lo) { (lo, hi) } else { (0, 0) }
    }

    /// The columns whose taps all read inside the input, `c0..c1` (empty: `c0 == c1`).
    pub fn interior_cols(&self) -> (usize, usize) {
        let full = |o: usize| self.taps(2, o) == (0, self.k[2]);
        let c0 = (0..self.out[2]).find(|&o| full(o)).unwrap_or(self.out[2]);
        let c1 = (c0..self.out[2]).find(|&o| !full(o)).unwrap_or(self.out[2]);
        (c0, c1)
    }
}

fn check_types(cx: &EmitCx, ns: usize) -> Result<(), CompileError> {
    if cx.inputs.iter().chain(cx.outputs).any(|t| t.dtype != DType::F32) {
        return Err(cx.unsupported("non-f32 operands"));
    }
    if ns == 0 || ns > 3 || cx.inputs[0].rank() != ns + 2 || cx.outputs[0].rank() != ns + 2 {
        return Err(cx.unsupported(format!("{ns} spatial axes (1 to 3 are supported)")));
    }
    Ok(())
}

/// The valid tap range of the depth and row axes for the current output row: compile-time
/// constants when every output index has the full range, else loaded from a table.
#[derive(Clone, Copy)]
pub(super) enum Range {
    Const(i64, i64),
    Dyn(Value, Value),
}

pub(super) fn loop_range(b: &mut FunctionBuilder, r: Range, body: impl FnMut(&mut FunctionBuilder, Value)) {
    match r {
        Range::Const(lo, hi) => for_range(b, lo, hi, 1, body),
        Range::Dyn(lo, hi) => for_dyn(b, lo, hi, 1, body),
    }
}

/// Per-axis tap ranges of the depth and row axes (`RowTaps::build`), as an aux table of
/// `(lo, hi)` pairs where some output index lacks taps.
pub(super) struct RowTaps {
    /// For axes 0 and 1: `None` when every output index has the full range, else the
    /// element offset of its `(lo, hi)` pairs in the table.
    table_at: [Option<usize>; 2],
    pub table: Vec<i64>,
}

impl RowTaps {
    pub fn build(geo: &Geo) -> RowTaps {
        let mut table = Vec::new();
        let mut table_at = [None, None];
        for (axis, at) in table_at.iter_mut().enumerate() {
            let ranges: Vec<(usize, usize)> = (0..geo.out[axis]).map(|o| geo.taps(axis, o)).collect();
            if ranges.iter().any(|&r| r != (0, geo.k[axis])) {
                *at = Some(table.len());
                table.extend(ranges.iter().flat_map(|&(lo, hi)| [lo as i64, hi as i64]));
            }
        }
        RowTaps { table_at, table }
    }

    /// The range of `axis` at output index `o` (`table` is the aux pointer, if any).
    pub fn range(&self, b: &mut FunctionBuilder, geo: &Geo, table: Option<Value>, axis: usize, o: Value) -> Range {
        match (self.table_at[axis], table) {
            (Some(at), Some(t)) => {
                let p = kit::offset(b, t, o, 16, at as i64 * 8);
                Range::Dyn(load_i64(b, p, 0), load_i64(b, p, 8))
            }
            _ => Range::Const(0, geo.k[axis] as i64),
        }
    }

    pub fn needs_table(&self) -> bool {
        !self.table.is_empty()
    }
}

/// Where the per-output-channel vectors of a tile's weights come from, as byte strides.
#[derive(Clone, Copy, Debug)]
pub(super) struct WLayout {
    pub group: i64,
    /// Per tile of 8 output channels.
    pub tile: i64,
    pub ic: i64,
    /// Per flattened tap.
    pub tap: i64,
    /// `None`: packed, 4 channels per vector load; `Some(stride)`: the weight tensor itself,
    /// channel lanes `stride` bytes apart.
    pub lane: Option<i64>,
}

impl WLayout {
    /// Output channels `v·4 ..` of the tile (`lanes` of them valid) at `ptr + off`.
    pub fn load(&self, b: &mut FunctionBuilder, ptr: Value, off: i64, v: usize, lanes: usize) -> Value {
        match self.lane {
            None => kit::load_v_ro(b, ptr, off + v as i64 * 16),
            Some(s) => gather(b, ptr, off + v as i64 * 4 * s, s, lanes),
        }
    }
}

/// Packs weights for a tile over output channels: `[group][tile][ic][tap][T]`, tiles of 8
/// channels with the last one 4 or 8 wide, zero-padded. `at(g, oc, ic, tap)` reads the weight.
pub(super) fn pack_oc_tiles(geo: &Geo, at: impl Fn(usize, usize, usize, usize) -> f32) -> Vec<f32> {
    let kvol = geo.kvol();
    let mut out = Vec::with_capacity(geo.group * geo.mg.next_multiple_of(4) * geo.cg * kvol);
    for g in 0..geo.group {
        let mut t0 = 0;
        while t0 < geo.mg {
            let w = (geo.mg - t0).min(8).next_multiple_of(4);
            for ic in 0..geo.cg {
                for tap in 0..kvol {
                    for l in 0..w {
                        let oc = t0 + l;
                        out.push(if oc < geo.mg { at(g, oc, ic, tap) } else { 0.0 });
                    }
                }
            }
            t0 += 8;
        }
    }
    out
}

/// Tiles of output channels within a group: `(count, width T, valid lanes)` for the runs of
/// full 8-wide tiles and the last partial one.
pub(super) fn oc_tiles(mg: usize) -> [(usize, usize, usize); 2] {
    let rem = mg % 8;
    [(mg / 8, 8, 8), (usize::from(rem > 0), rem.next_multiple_of(4), rem)]
}

/// Bias vector `v` of a tile (`lanes` valid), or zeros.
pub(super) fn bias_vec(b: &mut FunctionBuilder, bias: Option<Value>, v: usize, lanes: usize) -> Value {
    match bias {
        Some(p) => gather(b, p, v as i64 * 16, 4, lanes.min(4)),
        None => kit::splat_const(b, 0.0),
    }
}

/// Transposes 4 vectors (`a[p]` lane `l`) into 4 vectors (`r[l]` lane `p`).
pub(super) fn transpose4(b: &mut FunctionBuilder, a: [Value; 4]) -> [Value; 4] {
    let t0 = shuffle32(b, a[0], a[1], [0, 4, 1, 5]);
    let t1 = shuffle32(b, a[2], a[3], [0, 4, 1, 5]);
    let t2 = shuffle32(b, a[0], a[1], [2, 6, 3, 7]);
    let t3 = shuffle32(b, a[2], a[3], [2, 6, 3, 7]);
    [
        shuffle32(b, t0, t1, [0, 1, 4, 5]),
        shuffle32(b, t0, t1, [2, 3, 6, 7]),
        shuffle32(b, t2, t3, [0, 1, 4, 5]),
        shuffle32(b, t2, t3, [2, 3, 6, 7]),
    ]
}

/// The constant tensor of input `i`, as f32.
pub(super) fn const_f32<'t>(cx: &EmitCx<'t>, i: usize) -> Option<&'t [f32]> {
    cx.consts.get(i).copied().flatten().and_then(Tensor::as_f32)
}

/// Aux buffers under construction, with their argument indices.
pub(super) struct AuxList<'c, 'a> {
    cx: &'c EmitCx<'a>,
    pub bufs: Vec<Aux>,
}

impl<'c, 'a> AuxList<'c, 'a> {
    pub fn new(cx: &'c EmitCx<'a>) -> Self {
        AuxList { cx, bufs: Vec::new() }
    }

    /// Adds a buffer and returns its kernel argument index.
    pub fn push(&mut self, a: Aux) -> usize {
        self.bufs.push(a);
        self.cx.aux_arg(self.bufs.len() - 1)
    }
}

/// Whether `rows` rows `stride` bytes apart, read at one column each (a tile's step over K),
/// start in so few L1 sets that they cannot all stay in L1: the first 64 of them (or all) in
/// fewer than an eighth as many sets (64 sets of 64-byte lines on Zen 4 and Intel cores alike,
/// 8 ways on Zen 4, 12 on Intel; the other ways hold the weights and outputs). Planes of a power-of-two size are the common case: a
/// 64×64 or 32×32 f32 plane is a multiple of 4 KiB, so every channel maps to one set. Measured
/// on 1×1 convs (1 thread): 24 → 24 channels at 64×64 read in place ran at 67–70 GFLOP/s
/// against 84–93 at 60, 62, 63 and 65; 32 → 36 at 32×32 at 37–38 against 52–55 at 31 and 33.
pub(crate) fn rows_alias(stride: usize, rows: usize) -> bool {
    let rows = rows.min(64);
    let mut sets = 0u64;
    for k in 0..rows {
        sets |= 1 << ((k * stride / 64) % 64);
    }
    (sets.count_ones() as usize) * 8 < rows
}
