//! Calibration data (`--calib`): the samples `-O speed` fits, validates and tests on.
//!
//! [`CalibArgs`] is the clap flag group; [`CalibArgs::spec`] validates it into a [`CalibSpec`];
//! [`CalibSet::open`] enumerates the samples (a folder of images, a folder of `.npy` files, or an
//! `.npz` array), checks every file's header against the model input, reads the labels and
//! decides each sample's split; [`CalibSet::batches`] decodes and preprocesses lazily, so memory
//! stays bounded by one batch.
//!
//! Image preprocessing, in this order: one resize (`--resize`, `--resize-short` or
//! `--letterbox`), a center `--crop`, `--bgr`, `x / scale`, `(x − mean) / std` per channel, then
//! the `--layout`. `.npy`/`.npz` samples are model inputs already and are used as they are.
//!
//! Splits: a sample's group key is its file name (an `.npz` row: its index as decimal text) or
//! what `--group-by` captures from it; the first 8 bytes of SHA-256(key), as a fraction in
//! [0, 1), fall into the fit, validation or test range of `--split`. A file's `--views` share its
//! split.

mod args;
mod image;
mod labels;
mod source;
mod split;

use std::io;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::mpsc;

use cnnc_ir::{DType, Tensor, TensorType};
use sha2::{Digest, Sha256};

pub use args::{
    CalibArgs, CalibSpec, Fractions, Hw, Interp, LabelsSpec, Layout, Letterbox, PerChannel, Preprocess, Resize,
    SourceSpec,
};
use source::{Entry, SourceKind};

use crate::npy::NpyError;

/// Bad calibration flags or data; every message names the flag, file or split to fix.
#[derive(Debug, thiserror::Error)]
pub enum CalibError {
    #[error("`{flag}`: {reason}")]
    BadFlag { flag: &'static str, reason: String },
    #[error("`{flag}` describes calibration data, but `--calib` is not given")]
    NeedsCalib { flag: &'static str },
    #[error("`{flag}` is image preprocessing, but the samples in {} are model inputs already (.npy/.npz, used as they are); drop it", path.display())]
    FlagWithArrays { flag: &'static str, path: PathBuf },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Npy(#[from] NpyError),
    #[error("{}: cannot read the image: {reason}", path.display())]
    Image { path: PathBuf, reason: String },
    #[error("{name}: {reason}")]
    Preprocess { name: String, reason: String },
    #[error("{}: mixes images (`{image}`) and .npy files (`{npy}`); use one kind per folder", dir.display())]
    MixedFolder { dir: PathBuf, image: String, npy: String },
    #[error("{}: no .png/.jpg/.jpeg or .npy files ({ignored} other entries ignored)", dir.display())]
    NoSamples { dir: PathBuf, ignored: usize },
    #[error("{}: {reason} (arrays: {})", path.display(), names.join(", "))]
    NpzKey { path: PathBuf, reason: String, names: Vec<String> },
    #[error("{name}: makes a sample of shape {made:?}, the model input takes {model:?}; {hint}")]
    ShapeMismatch { name: String, made: Vec<usize>, model: Vec<usize>, hint: String },
    #[error("{name}: holds {got} elements, the model input takes {want}")]
    DTypeMismatch { name: String, got: DType, want: DType },
    #[error("the model input ({input}) cannot take images: {reason}")]
    InputNotImage { input: TensorType, reason: String },
    #[error("`--group-by {regex}` does not match the name `{name}`")]
    GroupByNoMatch { name: String, regex: String },
    #[error(
        "the {split} split is empty ({total} samples in all); add data, use `--views`, or give it a larger share with `--split`"
    )]
    EmptySplit { split: Split, total: usize },
    #[error("{}: {reason}", path.display())]
    Labels { path: PathBuf, reason: String },
    #[error("{}: no label for {n_missing} samples, first: {}", path.display(), first.join(", "))]
    LabelsMissing { path: PathBuf, n_missing: usize, first: Vec<String> },
}

/// The three uses of calibration samples (the search's own [`cnnc_passes::Split`]).
pub use cnnc_passes::Split;

/// A split's position in per-split tables.
fn split_index(split: Split) -> usize {
    split as usize
}

/// Samples per split (views counted), and the folder entries ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SplitSizes {
    pub fit: usize,
    pub validation: usize,
    pub test: usize,
    pub ignored_files: usize,
}

/// One calibration sample: a view of a file, or a row of an `.npz` array.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// The file name (an `.npz` row: its index as decimal text).
    pub name: String,
    /// The key that decided the split.
    pub group: String,
    /// 0 = the plain preprocessing.
    pub view: usize,
    pub label: Option<i64>,
    entry: usize,
}

/// The enumerated calibration samples, split; metadata only (pixels are decoded on demand).
pub struct CalibSet {
    spec: CalibSpec,
    kind: SourceKind,
    entries: Vec<Entry>,
    sample_type: TensorType,
    splits: [Vec<Sample>; 3],
    ignored: usize,
    hash: String,
}

impl CalibSet {
    /// Enumerates the samples, decides each one's split and reads the labels; checks every
    /// file's header (size, channels, shape, dtype) against `input`, the model's single input,
    /// without decoding pixels. A sample is `input` with batch 1.
    pub fn open(spec: &CalibSpec, input: &TensorType) -> Result<CalibSet, CalibError> {
        let listing = source::list(&spec.source)?;
        if listing.kind != SourceKind::Images
            && let Some(&flag) = spec.image_flags.first()
        {
            let (SourceSpec::Folder(path) | SourceSpec::Npz { path, .. }) = &spec.source;
            return Err(CalibError::FlagWithArrays { flag, path: path.clone() });
        }
        let Some(rest) = input.shape.get(1..) else {
            return Err(CalibError::InputNotImage { input: input.clone(), reason: "it is a scalar".into() });
        };
        let sample_type = TensorType::new(input.dtype, [&[1][..], rest].concat());
        source::check_entries(&listing, &spec.preprocess, &sample_type)?;
        let labels = match &spec.labels {
            Some(l) => Some(labels::read_labels(l, &listing.kind, &listing.entries)?),
            None => None,
        };
        let mut splits: [Vec<Sample>; 3] = Default::default();
        for (i, e) in listing.entries.iter().enumerate() {
            let group = split::group_key(&e.name, spec.group_by.as_ref())?;
            let s = split::split_of(&group, spec.split);
            for view in 0..spec.views {
                let label = labels.as_ref().map(|l| l[i]);
                splits[split_index(s)].push(Sample {
                    name: e.name.clone(),
                    group: group.clone(),
                    view,
                    label,
                    entry: i,
                });
            }
        }
        let total = splits.iter().map(Vec::len).sum();
        for s in [Split::Fit, Split::Validation] {
            if splits[split_index(s)].is_empty() {
                return Err(CalibError::EmptySplit { split: s, total });
            }
        }
        let hash = content_hash(spec, &listing)?;
        Ok(CalibSet {
            spec: spec.clone(),
            kind: listing.kind,
            entries: listing.entries,
            sample_type,
            splits,
            ignored: listing.ignored,
            hash,
        })
    }

    /// Samples per split (views counted) and folder entries ignored. An empty test split is
    /// allowed; the caller decides.
    pub fn sizes(&self) -> SplitSizes {
        SplitSizes {
            fit: self.samples(Split::Fit).len(),
            validation: self.samples(Split::Validation).len(),
            test: self.samples(Split::Test).len(),
            ignored_files: self.ignored,
        }
    }

    /// The samples of a split, in file order (a file's views together).
    pub fn samples(&self, split: Split) -> &[Sample] {
        &self.splits[split_index(split)]
    }

    /// The type of one sample: the model input with batch 1.
    pub fn sample_type(&self) -> &TensorType {
        &self.sample_type
    }

    /// One sample as a tensor of [`CalibSet::sample_type`]; errors name the file. An `.npz` row
    /// is found by reading the array from its start: stream a split with [`CalibSet::batches`].
    pub fn load(&self, sample: &Sample) -> Result<Tensor, CalibError> {
        let entry = &self.entries[sample.entry];
        match self.kind {
            SourceKind::Images => self.view(&image::decode(&entry.path, &self.spec.preprocess)?, sample),
            _ => source::load_array(&self.kind, entry, &self.sample_type),
        }
    }

    /// `sample`'s view of its decoded image, checked against the sample type.
    fn view(&self, canvas: &image::Canvas, sample: &Sample) -> Result<Tensor, CalibError> {
        let entry = &self.entries[sample.entry];
        let p = &self.spec.preprocess;
        let (data, made) = image::view(canvas, &entry.name, sample.view, p);
        source::check_image_shape(&entry.path.display().to_string(), &made, p, &self.sample_type)?;
        Ok(Tensor::from_f32(made, data).expect("the preprocessing fills the shape it reports"))
    }

    /// Streams a split in batches of `n` samples (the last may be smaller) concatenated along
    /// dim 0, in [`CalibSet::samples`] order; `n = 0` counts as 1. Memory: one batch (an `.npz`
    /// source reads its array once, front to back, on a helper thread, `n` rows ahead).
    pub fn batches(&self, split: Split, n: usize) -> Batches<'_> {
        let samples = self.samples(split);
        let n = n.max(1);
        let rows = match &self.kind {
            SourceKind::Npz { path, key } => Some(spawn_row_reader(
                path.clone(),
                key.clone(),
                samples.iter().map(|s| self.entries[s.entry].row).collect(),
                n,
            )),
            _ => None,
        };
        Batches { set: self, samples, n, next: 0, rows }
    }

    /// SHA-256 (hex) of what decides the samples: the flags ([`CalibSpec::describe`]), and each
    /// source file's name and bytes (then the labels file's), in sample order.
    pub fn hash(&self) -> &str {
        &self.hash
    }
}

/// The iterator of [`CalibSet::batches`]: `(samples, tensor)` per batch.
pub struct Batches<'a> {
    set: &'a CalibSet,
    samples: &'a [Sample],
    n: usize,
    next: usize,
    rows: Option<mpsc::Receiver<Result<Tensor, CalibError>>>,
}

impl<'a> Iterator for Batches<'a> {
    type Item = Result<(Vec<&'a Sample>, Tensor), CalibError>;

    fn next(&mut self) -> Option<Self::Item> {
        let batch = &self.samples[self.next..(self.next + self.n).min(self.samples.len())];
        if batch.is_empty() {
            return None;
        }
        match self.load_batch(batch) {
            Ok(tensors) => {
                self.next += batch.len();
                Some(Ok((
                    batch.iter().collect(),
                    Tensor::concat_batches(&tensors).expect("every sample has the sample type"),
                )))
            }
            Err(e) => {
                // The row reader has moved on; an error ends the stream.
                self.next = self.samples.len();
                Some(Err(e))
            }
        }
    }
}

impl Batches<'_> {
    fn load_batch(&self, batch: &[Sample]) -> Result<Vec<Tensor>, CalibError> {
        let set = self.set;
        let mut tensors = Vec::with_capacity(batch.len());
        // A file's views are consecutive: decode each image once per batch.
        let mut canvas: Option<(usize, image::Canvas)> = None;
        for s in batch {
            let t = match (&self.rows, &set.kind) {
                (Some(rows), _) => rows.recv().unwrap_or_else(|_| {
                    Err(CalibError::Npy(NpyError::Format {
                        path: set.entries[s.entry].path.clone(),
                        reason: "the array ended early (the file changed?)".into(),
                    }))
                })?,
                (None, SourceKind::Images) => {
                    let c = match canvas {
                        Some((entry, ref c)) if entry == s.entry => c,
                        _ => {
                            &canvas
                                .insert((s.entry, image::decode(&set.entries[s.entry].path, &set.spec.preprocess)?))
                                .1
                        }
                    };
                    set.view(c, s)?
                }
                (None, _) => set.load(s)?,
            };
            tensors.push(t);
        }
        Ok(tensors)
    }
}

/// Reads the `rows` (increasing) of an `.npz` array on a thread, at most `ahead` rows ahead of
/// the receiver; the thread stops when the receiver is dropped.
fn spawn_row_reader(
    path: PathBuf,
    key: String,
    rows: Vec<usize>,
    ahead: usize,
) -> mpsc::Receiver<Result<Tensor, CalibError>> {
    let (tx, rx) = mpsc::sync_channel(ahead);
    std::thread::spawn(move || {
        let mut wanted = rows.iter().peekable();
        let result = crate::npy::for_each_npz_row(&path, &key, |i, row| {
            if wanted.peek() != Some(&&i) {
                return if wanted.peek().is_some() { ControlFlow::Continue(()) } else { ControlFlow::Break(()) };
            }
            wanted.next();
            match tx.send(Ok(row)) {
                Ok(()) if wanted.peek().is_some() => ControlFlow::Continue(()),
                _ => ControlFlow::Break(()),
            }
        });
        if let Err(e) = result {
            let _ = tx.send(Err(e.into()));
        }
    });
    rx
}

/// SHA-256 over the flags, then each source file's name, length and bytes, then the labels file's.
fn content_hash(spec: &CalibSpec, listing: &source::Listing) -> Result<String, CalibError> {
    let mut h = Sha256::new();
    h.update(b"cnnc-calib-v1\n");
    h.update(spec.describe().as_bytes());
    let mut files: Vec<(String, PathBuf)> = match &listing.kind {
        SourceKind::Npz { path, .. } => vec![(file_name(path), path.clone())],
        _ => listing.entries.iter().map(|e| (e.name.clone(), e.path.clone())).collect(),
    };
    match &spec.labels {
        Some(LabelsSpec::Csv(path) | LabelsSpec::Npz { path, .. }) => files.push((file_name(path), path.clone())),
        None => {}
    }
    for (name, path) in files {
        let io_err = |source| CalibError::Io { path: path.clone(), source };
        let mut file = std::fs::File::open(&path).map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        h.update(b"\n");
        h.update(name.as_bytes());
        h.update(b"\0");
        h.update(len.to_le_bytes());
        io::copy(&mut file, &mut h).map_err(io_err)?;
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn file_name(path: &std::path::Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}
