//! The `--calib` flag group and its validation into a [`CalibSpec`].

use std::fmt::Write as _;
use std::path::PathBuf;

use regex::Regex;

use super::CalibError;

/// A height × width pair (`--resize 256x256`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hw {
    pub h: u32,
    pub w: u32,
}

/// `--letterbox HxW[:FILL]`: the canvas and the padding value (0..=255).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Letterbox {
    pub size: Hw,
    pub fill: u8,
}

/// One value per channel (`--mean 104,117,123`).
#[derive(Clone, Debug, PartialEq)]
pub struct PerChannel(pub Vec<f32>);

/// `--split FIT,VALIDATION,TEST`: three non-negative fractions summing to 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fractions(pub [f64; 3]);

/// Element order of a sample: channels first (`nchw`) or last (`nhwc`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Layout {
    Nchw,
    Nhwc,
}

/// Resampling filter of the resize.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Interp {
    /// Triangle filter, its support widened when downscaling (as Pillow's BILINEAR).
    Bilinear,
    /// Lanczos3, widened when downscaling (as Pillow's LANCZOS).
    Lanczos,
    Nearest,
}

/// Calibration data: where it is, how its files become model inputs, labels and splits.
#[derive(Clone, Debug, Default, clap::Args)]
#[command(next_help_heading = "Calibration data")]
pub struct CalibArgs {
    /// Calibration samples: a folder of .png/.jpg images, a folder of .npy files (one model
    /// input each, batch 1), or FILE.npz[:KEY] (first axis = samples).
    #[arg(long, value_name = "PATH")]
    pub calib: Option<String>,
    /// Resize images to exactly H×W (aspect ratio not kept).
    #[arg(long, value_name = "HxW", value_parser = parse_hw)]
    pub resize: Option<Hw>,
    /// Resize images so that the short side is N, keeping the aspect ratio.
    #[arg(long = "resize-short", value_name = "N", value_parser = parse_positive)]
    pub resize_short: Option<u32>,
    /// Scale images to fit in H×W keeping the aspect ratio, centered, padded with FILL (default 114).
    #[arg(long, value_name = "HxW[:FILL]", value_parser = parse_letterbox)]
    pub letterbox: Option<Letterbox>,
    /// Center-crop images to H×W after the resize.
    #[arg(long, value_name = "HxW", value_parser = parse_hw)]
    pub crop: Option<Hw>,
    /// Reverse the channel order (RGB → BGR).
    #[arg(long)]
    pub bgr: bool,
    /// Divide pixel values (0..255) by X [default: 1].
    #[arg(long, value_name = "X", value_parser = parse_scale)]
    pub scale: Option<f32>,
    /// Subtract a per-channel mean after the scale [default: 0].
    #[arg(long, value_name = "a,b,c", value_parser = parse_per_channel)]
    pub mean: Option<PerChannel>,
    /// Divide by a per-channel standard deviation after the mean [default: 1].
    #[arg(long, value_name = "a,b,c", value_parser = parse_std)]
    pub std: Option<PerChannel>,
    /// Element order of the model input [default: nchw].
    #[arg(long, value_enum)]
    pub layout: Option<Layout>,
    /// Resampling filter of the resize [default: bilinear].
    #[arg(long, value_enum)]
    pub interp: Option<Interp>,
    /// Convert images to one grayscale channel (else grayscale images widen to RGB).
    #[arg(long)]
    pub gray: bool,
    /// Labels: FILE.csv with a `file,label` header, or FILE.npz:KEY (one integer per sample).
    #[arg(long, value_name = "FILE.csv|FILE.npz:KEY")]
    pub labels: Option<String>,
    /// Fractions of the groups in the fit, validation and test splits [default: 0.5,0.25,0.25].
    #[arg(long, value_name = "FIT,VAL,TEST", value_parser = parse_fractions)]
    pub split: Option<Fractions>,
    /// Group samples by what REGEX captures from the file name (first capture group, else the
    /// whole match); a group's samples share a split.
    #[arg(long = "group-by", value_name = "REGEX")]
    pub group_by: Option<String>,
    /// Deterministic views per image (view 0 plain; others vary the crop offset and flip).
    #[arg(long, value_name = "N", value_parser = parse_positive)]
    pub views: Option<u32>,
}

/// Where the samples are.
#[derive(Clone, Debug, PartialEq)]
pub enum SourceSpec {
    /// A folder of images or of `.npy` files (which one is decided when it is listed).
    Folder(PathBuf),
    /// One array of a `.npz` archive; `None` = its only array.
    Npz { path: PathBuf, key: Option<String> },
}

/// The one resize of the image preprocessing.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Resize {
    None,
    Exact(Hw),
    ShortSide(u32),
    Letterbox(Letterbox),
}

/// How an image file becomes a model input, in the order applied.
#[derive(Clone, Debug, PartialEq)]
pub struct Preprocess {
    pub resize: Resize,
    pub interp: Interp,
    pub crop: Option<Hw>,
    pub gray: bool,
    pub bgr: bool,
    pub scale: f32,
    /// Empty = 0 for every channel.
    pub mean: Vec<f32>,
    /// Empty = 1 for every channel.
    pub std: Vec<f32>,
    pub layout: Layout,
}

impl Preprocess {
    /// Channels of a preprocessed image.
    pub fn n_channels(&self) -> usize {
        if self.gray { 1 } else { 3 }
    }
}

/// Where the labels are.
#[derive(Clone, Debug, PartialEq)]
pub enum LabelsSpec {
    Csv(PathBuf),
    Npz { path: PathBuf, key: String },
}

/// Validated calibration flags ([`CalibArgs::spec`]); [`super::CalibSet::open`] reads the data.
#[derive(Clone, Debug)]
pub struct CalibSpec {
    pub source: SourceSpec,
    pub preprocess: Preprocess,
    /// The image preprocessing flags given, as spelled on the command line (`--crop`, …):
    /// an error with `.npy`/`.npz` samples, which are model inputs already.
    pub image_flags: Vec<&'static str>,
    pub labels: Option<LabelsSpec>,
    pub split: [f64; 3],
    pub group_by: Option<Regex>,
    pub views: usize,
}

impl CalibSpec {
    /// A canonical one-line description of every flag that decides the samples, their inputs and
    /// their splits (paths excluded): part of [`super::CalibSet::hash`], fit for provenance.
    pub fn describe(&self) -> String {
        let p = &self.preprocess;
        let mut s = String::new();
        let _ = match p.resize {
            Resize::None => write!(s, "resize=none"),
            Resize::Exact(hw) => write!(s, "resize={}x{}", hw.h, hw.w),
            Resize::ShortSide(n) => write!(s, "resize-short={n}"),
            Resize::Letterbox(lb) => write!(s, "letterbox={}x{}:{}", lb.size.h, lb.size.w, lb.fill),
        };
        let crop = p.crop.map_or("none".to_owned(), |c| format!("{}x{}", c.h, c.w));
        let key = match &self.source {
            SourceSpec::Npz { key: Some(k), .. } => k.as_str(),
            _ => "",
        };
        let labels_key = match &self.labels {
            Some(LabelsSpec::Npz { key, .. }) => key.as_str(),
            _ => "",
        };
        let _ = write!(
            s,
            " interp={:?} crop={crop} gray={} bgr={} scale={:?} mean={:?} std={:?} layout={:?} npz-key={key:?} \
             labels-key={labels_key:?} split={:?} group-by={:?} views={}",
            p.interp,
            p.gray,
            p.bgr,
            p.scale,
            p.mean,
            p.std,
            p.layout,
            self.split,
            self.group_by.as_ref().map(Regex::as_str),
            self.views
        );
        s
    }
}

impl CalibArgs {
    /// Validates the flags. `Ok(None)` when `--calib` is absent and no other calibration flag
    /// is given; any other calibration flag without `--calib` is an error naming it.
    pub fn spec(&self) -> Result<Option<CalibSpec>, CalibError> {
        let given = self.given_flags();
        let Some(calib) = &self.calib else {
            return match given.first() {
                Some(&flag) => Err(CalibError::NeedsCalib { flag }),
                None => Ok(None),
            };
        };
        let resizes: Vec<&str> =
            given.iter().copied().filter(|f| matches!(*f, "--resize" | "--resize-short" | "--letterbox")).collect();
        if resizes.len() > 1 {
            return Err(flag_err(resizes[1], format!("conflicts with `{}`: give one resize", resizes[0])));
        }
        let resize = match (self.resize, self.resize_short, self.letterbox) {
            (Some(hw), _, _) => Resize::Exact(hw),
            (_, Some(n), _) => Resize::ShortSide(n),
            (_, _, Some(lb)) => Resize::Letterbox(lb),
            _ => Resize::None,
        };
        if self.gray && self.bgr {
            return Err(flag_err("--bgr", "a grayscale image (`--gray`) has one channel, nothing to reorder"));
        }
        let n_channels = if self.gray { 1 } else { 3 };
        for (flag, values) in [("--mean", &self.mean), ("--std", &self.std)] {
            if let Some(PerChannel(v)) = values
                && v.len() != n_channels
            {
                let what = if self.gray {
                    "1 value (`--gray`)"
                } else {
                    "3 values, in the input's channel order (B,G,R with `--bgr`)"
                };
                return Err(flag_err(
                    flag,
                    format!("got {} values, images have {n_channels} channels: give {what}", v.len()),
                ));
            }
        }
        let views = self.views.map_or(1, |v| v as usize);
        if views > 2 && self.crop.is_none() {
            return Err(flag_err(
                "--views",
                format!(
                    "{views} views need `--crop` to vary the crop offset; without it only the horizontal flip varies (at most 2 views)"
                ),
            ));
        }
        let group_by = match &self.group_by {
            Some(re) => Some(Regex::new(re).map_err(|e| flag_err("--group-by", format!("not a valid regex: {e}")))?),
            None => None,
        };
        let labels = match &self.labels {
            None => None,
            Some(l) => Some(parse_labels_arg(l)?),
        };
        let preprocess = Preprocess {
            resize,
            interp: self.interp.unwrap_or(Interp::Bilinear),
            crop: self.crop,
            gray: self.gray,
            bgr: self.bgr,
            scale: self.scale.unwrap_or(1.0),
            mean: self.mean.clone().map_or_else(Vec::new, |m| m.0),
            std: self.std.clone().map_or_else(Vec::new, |s| s.0),
            layout: self.layout.unwrap_or(Layout::Nchw),
        };
        let image_flags = given.iter().copied().filter(|f| IMAGE_FLAGS.contains(f)).collect();
        Ok(Some(CalibSpec {
            source: parse_source(calib)?,
            preprocess,
            image_flags,
            labels,
            split: self.split.map_or(DEFAULT_SPLIT, |f| f.0),
            group_by,
            views,
        }))
    }

    /// The calibration flags given other than `--calib`, in declaration order.
    fn given_flags(&self) -> Vec<&'static str> {
        [
            ("--resize", self.resize.is_some()),
            ("--resize-short", self.resize_short.is_some()),
            ("--letterbox", self.letterbox.is_some()),
            ("--crop", self.crop.is_some()),
            ("--bgr", self.bgr),
            ("--scale", self.scale.is_some()),
            ("--mean", self.mean.is_some()),
            ("--std", self.std.is_some()),
            ("--layout", self.layout.is_some()),
            ("--interp", self.interp.is_some()),
            ("--gray", self.gray),
            ("--views", self.views.is_some_and(|v| v > 1)),
            ("--labels", self.labels.is_some()),
            ("--split", self.split.is_some()),
            ("--group-by", self.group_by.is_some()),
        ]
        .into_iter()
        .filter_map(|(flag, given)| given.then_some(flag))
        .collect()
    }
}

const DEFAULT_SPLIT: [f64; 3] = [0.5, 0.25, 0.25];

/// Flags that only make sense for image files.
const IMAGE_FLAGS: &[&str] = &[
    "--resize",
    "--resize-short",
    "--letterbox",
    "--crop",
    "--bgr",
    "--scale",
    "--mean",
    "--std",
    "--layout",
    "--interp",
    "--gray",
    "--views",
];

fn flag_err(flag: &'static str, reason: impl Into<String>) -> CalibError {
    CalibError::BadFlag { flag, reason: reason.into() }
}

fn parse_source(arg: &str) -> Result<SourceSpec, CalibError> {
    if arg.is_empty() {
        return Err(flag_err("--calib", "empty path"));
    }
    if let Some((path, key)) = split_npz_key(arg) {
        if key.is_empty() {
            return Err(flag_err("--calib", format!("`{arg}`: empty array name after `:`")));
        }
        return Ok(SourceSpec::Npz { path: PathBuf::from(path), key: Some(key.to_owned()) });
    }
    if arg.to_ascii_lowercase().ends_with(".npz") {
        return Ok(SourceSpec::Npz { path: PathBuf::from(arg), key: None });
    }
    Ok(SourceSpec::Folder(PathBuf::from(arg)))
}

fn parse_labels_arg(arg: &str) -> Result<LabelsSpec, CalibError> {
    if let Some((path, key)) = split_npz_key(arg) {
        if key.is_empty() {
            return Err(flag_err("--labels", format!("`{arg}`: empty array name after `:`")));
        }
        return Ok(LabelsSpec::Npz { path: PathBuf::from(path), key: key.to_owned() });
    }
    if arg.to_ascii_lowercase().ends_with(".csv") {
        return Ok(LabelsSpec::Csv(PathBuf::from(arg)));
    }
    if arg.to_ascii_lowercase().ends_with(".npz") {
        return Err(flag_err("--labels", format!("`{arg}`: name the array, as `{arg}:KEY`")));
    }
    Err(flag_err("--labels", format!("`{arg}`: expected FILE.csv or FILE.npz:KEY")))
}

/// `dir/a.npz:x` → (`dir/a.npz`, `x`).
fn split_npz_key(arg: &str) -> Option<(&str, &str)> {
    let lower = arg.to_ascii_lowercase();
    let at = lower.rfind(".npz:")?;
    Some((&arg[..at + 4], &arg[at + 5..]))
}

fn parse_hw(s: &str) -> Result<Hw, String> {
    let (h, w) = s.split_once(['x', 'X']).ok_or_else(|| format!("`{s}`: expected HxW, e.g. 224x224"))?;
    let dim = |d: &str| match d.trim().parse::<u32>() {
        Ok(0) => Err(format!("`{s}`: height and width must be positive")),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{s}`: `{d}` is not a whole number")),
    };
    Ok(Hw { h: dim(h)?, w: dim(w)? })
}

fn parse_letterbox(s: &str) -> Result<Letterbox, String> {
    let (size, fill) = match s.split_once(':') {
        Some((size, fill)) => {
            let fill = fill
                .trim()
                .parse::<u8>()
                .map_err(|_| format!("`{s}`: FILL `{fill}` must be a whole number 0..=255"))?;
            (size, fill)
        }
        None => (s, 114),
    };
    Ok(Letterbox { size: parse_hw(size)?, fill })
}

fn parse_positive(s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{s}` is not a positive whole number")),
    }
}

fn parse_finite(s: &str) -> Result<f32, String> {
    match s.trim().parse::<f32>() {
        Ok(x) if x.is_finite() => Ok(x),
        _ => Err(format!("`{s}` is not a finite number")),
    }
}

fn parse_scale(s: &str) -> Result<f32, String> {
    let x = parse_finite(s)?;
    if x <= 0.0 {
        return Err(format!("`{s}`: the scale divides pixel values, so it must be positive"));
    }
    Ok(x)
}

fn parse_per_channel(s: &str) -> Result<PerChannel, String> {
    Ok(PerChannel(s.split(',').map(parse_finite).collect::<Result<_, _>>()?))
}

fn parse_std(s: &str) -> Result<PerChannel, String> {
    let v = parse_per_channel(s)?;
    if v.0.iter().any(|&x| x <= 0.0) {
        return Err(format!("`{s}`: standard deviations divide, so they must be positive"));
    }
    Ok(v)
}

fn parse_fractions(s: &str) -> Result<Fractions, String> {
    let v: Vec<f64> = s
        .split(',')
        .map(|p| match p.trim().parse::<f64>() {
            Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
            _ => Err(format!("`{s}`: `{p}` is not a non-negative number")),
        })
        .collect::<Result<_, _>>()?;
    let [fit, val, test] = v[..] else {
        return Err(format!("`{s}`: expected three fractions FIT,VALIDATION,TEST"));
    };
    // Fractions typed as decimals (0.7,0.2,0.1) do not sum to 1 exactly in binary.
    if (fit + val + test - 1.0).abs() > 1e-6 {
        return Err(format!("`{s}`: the fractions sum to {}, not 1", fit + val + test));
    }
    Ok(Fractions([fit, val, test]))
}
