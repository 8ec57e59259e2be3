//! Sliding-window geometry shared by conv, conv-transpose and pooling.
//!
//! Kernels run over exactly three spatial axes: 1-D and 2-D windows are embedded with leading
//! unit axes (kernel 1, stride 1, no padding), which leaves every sum unchanged.

/// Spatial geometry of a window op over three spatial axes.
#[derive(Clone, Debug)]
pub(super) struct Window3 {
    /// Extent of the windowed tensor (the conv input; the conv-transpose input).
    pub input: [usize; 3],
    /// Extent of the result.
    pub output: [usize; 3],
    pub kernel: [usize; 3],
    pub stride: [usize; 3],
    pub dilation: [usize; 3],
    pub pad_begin: [usize; 3],
}

impl Window3 {
    /// Embeds per-axis attributes of `n ≤ 3` spatial axes.
    pub fn new(
        input: &[usize],
        output: &[usize],
        kernel: &[usize],
        stride: &[usize],
        dilation: &[usize],
        pad_begin: &[usize],
    ) -> Result<Window3, String> {
        Ok(Window3 {
            input: embed(input, 1)?,
            output: embed(output, 1)?,
            kernel: embed(kernel, 1)?,
            stride: embed(stride, 1)?,
            dilation: embed(dilation, 1)?,
            pad_begin: embed(pad_begin, 0)?,
        })
    }

    pub fn input_len(&self) -> usize {
        self.input.iter().product()
    }

    pub fn output_len(&self) -> usize {
        self.output.iter().product()
    }

    pub fn kernel_len(&self) -> usize {
        self.kernel.iter().product()
    }

    /// Offset `k·dilation − pad_begin` of tap `k` on `axis`: the windowed position of output
    /// `o` is `o·stride + offset`.
    pub fn tap_offset(&self, axis: usize, k: usize) -> i64 {
        (k * self.dilation[axis]) as i64 - self.pad_begin[axis] as i64
    }
}

fn embed(v: &[usize], fill: usize) -> Result<[usize; 3], String> {
    if v.len() > 3 {
        return Err(format!("{} spatial axes are not supported (at most 3)", v.len()));
    }
    let mut out = [fill; 3];
    out[3 - v.len()..].copy_from_slice(v);
    Ok(out)
}

/// Checks the per-axis attributes of a window op over `n_spatial` axes.
pub(super) fn check_attrs(
    n_spatial: usize,
    kernel: &[usize],
    strides: &[usize],
    dilations: &[usize],
    pads: &[usize],
) -> Result<(), String> {
    if kernel.len() != n_spatial {
        return Err(format!("kernel has {} axes, input has {n_spatial} spatial axes", kernel.len()));
    }
    if strides.len() != n_spatial || dilations.len() != n_spatial || pads.len() != 2 * n_spatial {
        return Err(format!(
            "attribute lengths disagree: kernel {}, strides {}, dilations {}, pads {}",
            kernel.len(),
            strides.len(),
            dilations.len(),
            pads.len()
        ));
    }
    if kernel.contains(&0) || strides.contains(&0) || dilations.contains(&0) {
        return Err("kernel, strides and dilations must be positive".into());
    }
    Ok(())
}

/// Extent of the dilated kernel, `(k − 1)·d + 1`.
pub(super) fn dilated_extent(k: usize, d: usize) -> Result<usize, String> {
    (k - 1).checked_mul(d).and_then(|e| e.checked_add(1)).ok_or_else(|| "dilated kernel overflows".into())
}

/// Output length of a convolution axis: `⌊(in + pads − ((k−1)·d+1)) / s⌋ + 1`.
pub(super) fn conv_out_len(input: usize, k: usize, s: usize, d: usize, pb: usize, pe: usize) -> Result<usize, String> {
    let extent = dilated_extent(k, d)?;
    let padded = input.checked_add(pb).and_then(|v| v.checked_add(pe)).ok_or("padded extent overflows")?;
    if padded < extent {
        return Err(format!("padded input extent {padded} is smaller than the dilated kernel {extent}"));
    }
    Ok((padded - extent) / s + 1)
}

/// Output length of a pooling axis. With `ceil_mode` the division rounds up, but a window
/// that would start inside the end padding is dropped (ONNX reference and onnxruntime).
pub(super) fn pool_out_len(
    input: usize,
    k: usize,
    s: usize,
    d: usize,
    pb: usize,
    pe: usize,
    ceil_mode: bool,
) -> Result<usize, String> {
    let floor_len = conv_out_len(input, k, s, d, pb, pe)?;
    if !ceil_mode {
        return Ok(floor_len);
    }
    let span = input + pb + pe - dilated_extent(k, d)?;
    let mut len = span.div_ceil(s) + 1;
    if len > floor_len && (len - 1).saturating_mul(s) >= input + pb {
        len -= 1;
    }
    Ok(len)
}

/// The `o` in `0..count` with `0 ≤ o·stride + offset < limit`, as a half-open range
/// (empty ranges come back as `(lo, lo)`).
pub(super) fn valid_range(count: usize, stride: usize, offset: i64, limit: usize) -> (usize, usize) {
    let s = stride as i64;
    let lo = if offset >= 0 { 0 } else { (-offset + s - 1) / s };
    let room = limit as i64 - offset;
    let hi = if room <= 0 { 0 } else { (room + s - 1) / s };
    let lo = (lo as usize).min(count);
    let hi = (hi as usize).min(count).max(lo);
    (lo, hi)
}
