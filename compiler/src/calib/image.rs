//! Image files → model inputs: header checks, decoding, and the preprocessing chain.

use std::path::Path;

use image::imageops::FilterType;
use image::{DynamicImage, GenericImageView, ImageDecoder, ImageReader};

use super::CalibError;
use super::args::{Interp, Layout, Preprocess, Resize};

/// Largest image, in pixels, at any step of the preprocessing (the decoded file is bounded by the
/// image crate's own 512 MiB allocation limit): 64 Mpx, 192 MiB as RGB.
const MAX_PIXELS: u64 = 1 << 26;

/// Sizes an image goes through: after the resize, after the letterbox padding (the canvas the
/// crop is taken from), and the final (cropped) size; all (h, w).
#[derive(Clone, Copy, Debug)]
pub(super) struct Geometry {
    resized: (u32, u32),
    canvas: (u32, u32),
    pub(super) out: (u32, u32),
}

/// Plans the resize and crop of an `h`×`w` image; an error names `name` and the flags to change.
pub(super) fn geometry(name: &str, (h, w): (u32, u32), p: &Preprocess) -> Result<Geometry, CalibError> {
    let bad = |reason: String| CalibError::Preprocess { name: name.to_owned(), reason };
    if h == 0 || w == 0 {
        return Err(bad(format!("image is {h}×{w} pixels")));
    }
    let scaled = |x: u32, num: u32, den: u32| -> u32 {
        ((f64::from(x) * f64::from(num) / f64::from(den)).round() as u32).max(1)
    };
    let (resized, canvas) = match p.resize {
        Resize::None => ((h, w), (h, w)),
        Resize::Exact(hw) => ((hw.h, hw.w), (hw.h, hw.w)),
        Resize::ShortSide(n) => {
            let r = if h <= w { (n, scaled(w, n, h)) } else { (scaled(h, n, w), n) };
            (r, r)
        }
        Resize::Letterbox(lb) => {
            let (ch, cw) = (lb.size.h, lb.size.w);
            // Fit the side whose ratio is smaller exactly; the other is rounded like the short-side resize.
            let r = if u64::from(ch) * u64::from(w) <= u64::from(cw) * u64::from(h) {
                (ch, scaled(w, ch, h).min(cw))
            } else {
                (scaled(h, cw, w).min(ch), cw)
            };
            (r, (ch, cw))
        }
    };
    for (what, (a, b)) in [("resized", resized), ("letterboxed", canvas)] {
        if u64::from(a) * u64::from(b) > MAX_PIXELS {
            return Err(bad(format!("the {h}×{w} image would be {what} to {a}×{b} pixels, more than {MAX_PIXELS}")));
        }
    }
    let out = match p.crop {
        None => canvas,
        Some(c) if c.h <= canvas.0 && c.w <= canvas.1 => (c.h, c.w),
        Some(c) => {
            return Err(bad(format!(
                "`--crop {}x{}` is larger than the {}×{} image it crops (after the resize); resize to at least the crop size",
                c.h, c.w, canvas.0, canvas.1
            )));
        }
    };
    Ok(Geometry { resized, canvas, out })
}

/// Reads only the header of an image file: (h, w).
pub(super) fn header_size(path: &Path) -> Result<(u32, u32), CalibError> {
    let bad = |reason: String| CalibError::Image { path: path.to_owned(), reason };
    let reader = ImageReader::open(path)
        .map_err(|source| CalibError::Io { path: path.to_owned(), source })?
        .with_guessed_format()
        .map_err(|source| CalibError::Io { path: path.to_owned(), source })?;
    let decoder = reader.into_decoder().map_err(|e| bad(e.to_string()))?;
    let (w, h) = decoder.dimensions();
    Ok((h, w))
}

/// The shape a preprocessed image of final size `out` takes (batch 1).
pub(super) fn sample_shape(out: (u32, u32), p: &Preprocess) -> Vec<usize> {
    let (h, w, c) = (out.0 as usize, out.1 as usize, p.n_channels());
    match p.layout {
        Layout::Nchw => vec![1, c, h, w],
        Layout::Nhwc => vec![1, h, w, c],
    }
}

/// An image decoded, resized and padded: what its views are cropped from.
pub(super) struct Canvas {
    image: DynamicImage,
    geometry: Geometry,
}

/// Decodes `path` and runs the preprocessing up to the crop (the part every view shares).
pub(super) fn decode(path: &Path, p: &Preprocess) -> Result<Canvas, CalibError> {
    let bad = |reason: String| CalibError::Image { path: path.to_owned(), reason };
    let decoded = ImageReader::open(path)
        .map_err(|source| CalibError::Io { path: path.to_owned(), source })?
        .with_guessed_format()
        .map_err(|source| CalibError::Io { path: path.to_owned(), source })?
        .decode()
        .map_err(|e| bad(e.to_string()))?;
    let (w0, h0) = decoded.dimensions();
    let g = geometry(&path.display().to_string(), (h0, w0), p)?;
    let img =
        if p.gray { DynamicImage::ImageLuma8(decoded.to_luma8()) } else { DynamicImage::ImageRgb8(decoded.to_rgb8()) };
    let filter = match p.interp {
        Interp::Bilinear => FilterType::Triangle,
        Interp::Lanczos => FilterType::Lanczos3,
        Interp::Nearest => FilterType::Nearest,
    };
    let resized = if g.resized == (h0, w0) { img } else { img.resize_exact(g.resized.1, g.resized.0, filter) };
    let image = match p.resize {
        Resize::Letterbox(lb) if g.canvas != g.resized => pad_centered(&resized, g.canvas, lb.fill),
        _ => resized,
    };
    Ok(Canvas { image, geometry: g })
}

/// View `view` of the image `name`: its crop and flip of `canvas`, then the channel order,
/// scale, mean/std and layout. Returns the f32 elements in `p.layout` order and their shape.
pub(super) fn view(canvas: &Canvas, name: &str, view: usize, p: &Preprocess) -> (Vec<f32>, Vec<usize>) {
    let g = canvas.geometry;
    let ((top, left), flip) = super::split::view_placement(name, view, g.canvas, g.out);
    let mut cropped = canvas.image.crop_imm(left, top, g.out.1, g.out.0);
    if flip {
        cropped = cropped.fliph();
    }
    (normalize(cropped.as_bytes(), g.out, p), sample_shape(g.out, p))
}

/// `img` centered on an `h`×`w` canvas filled with `fill`.
fn pad_centered(img: &DynamicImage, (h, w): (u32, u32), fill: u8) -> DynamicImage {
    let top = i64::from((h - img.height()) / 2);
    let left = i64::from((w - img.width()) / 2);
    let mut canvas = match img {
        DynamicImage::ImageLuma8(_) => {
            DynamicImage::ImageLuma8(image::GrayImage::from_pixel(w, h, image::Luma([fill])))
        }
        _ => DynamicImage::ImageRgb8(image::RgbImage::from_pixel(w, h, image::Rgb([fill; 3]))),
    };
    image::imageops::replace(&mut canvas, img, left, top);
    canvas
}

/// Interleaved u8 pixels (h, w, c) → `(x / scale − mean) / std` per output channel, channels
/// reversed first with `--bgr`, in the requested layout.
fn normalize(pixels: &[u8], (h, w): (u32, u32), p: &Preprocess) -> Vec<f32> {
    let (h, w, c) = (h as usize, w as usize, p.n_channels());
    let mean = |oc: usize| p.mean.get(oc).copied().unwrap_or(0.0);
    let std = |oc: usize| p.std.get(oc).copied().unwrap_or(1.0);
    let mut out = vec![0.0f32; h * w * c];
    for y in 0..h {
        for x in 0..w {
            for oc in 0..c {
                let ic = if p.bgr { c - 1 - oc } else { oc };
                let v = (f32::from(pixels[(y * w + x) * c + ic]) / p.scale - mean(oc)) / std(oc);
                let at = match p.layout {
                    Layout::Nchw => (oc * h + y) * w + x,
                    Layout::Nhwc => (y * w + x) * c + oc,
                };
                out[at] = v;
            }
        }
    }
    out
}
