//! Enumerating the samples of a folder or `.npz` archive and checking their headers.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use cnnc_ir::{DType, Tensor, TensorType};

use super::CalibError;
use super::args::{Layout, Preprocess, SourceSpec};
use super::image::{geometry, header_size, sample_shape};

/// What the samples are.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum SourceKind {
    Images,
    Npy,
    Npz { path: PathBuf, key: String },
}

/// One sample source: a file, or a row of the `.npz` array.
#[derive(Clone, Debug)]
pub(super) struct Entry {
    /// The file name, or the row index as decimal text.
    pub name: String,
    /// The file (the archive for `.npz` rows).
    pub path: PathBuf,
    /// The row of the `.npz` array (0 for files).
    pub row: usize,
}

/// The enumerated samples.
pub(super) struct Listing {
    pub kind: SourceKind,
    pub entries: Vec<Entry>,
    /// Folder entries that are neither images nor `.npy` files.
    pub ignored: usize,
}

const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg"];

/// Lists the samples: a folder's images or `.npy` files in sorted name order, or the rows of an
/// `.npz` array.
pub(super) fn list(source: &SourceSpec) -> Result<Listing, CalibError> {
    match source {
        SourceSpec::Folder(dir) => list_folder(dir),
        SourceSpec::Npz { path, key } => {
            let names = crate::npy::npz_array_names(path)?;
            let key = match key {
                Some(k) if names.contains(k) => k.clone(),
                Some(k) => {
                    return Err(CalibError::NpzKey { path: path.clone(), reason: format!("no array `{k}`"), names });
                }
                None => match &names[..] {
                    [only] => only.clone(),
                    [] => return Err(CalibError::NpzKey { path: path.clone(), reason: "no arrays".into(), names }),
                    _ => {
                        let reason = "several arrays; name one as FILE.npz:KEY".into();
                        return Err(CalibError::NpzKey { path: path.clone(), reason, names });
                    }
                },
            };
            let (shape, _) = crate::npy::read_npz_header(path, &key)?;
            let n_rows = shape.first().copied().unwrap_or(0);
            let entries = (0..n_rows).map(|row| Entry { name: row.to_string(), path: path.clone(), row }).collect();
            Ok(Listing { kind: SourceKind::Npz { path: path.clone(), key }, entries, ignored: 0 })
        }
    }
}

fn list_folder(dir: &Path) -> Result<Listing, CalibError> {
    if dir.is_file() {
        return Err(CalibError::BadFlag {
            flag: "--calib",
            reason: format!("{} is a file; give a folder of images or .npy files, or FILE.npz[:KEY]", dir.display()),
        });
    }
    let io_err = |source| CalibError::Io { path: dir.to_owned(), source };
    let mut names = Vec::new();
    for item in std::fs::read_dir(dir).map_err(io_err)? {
        let item = item.map_err(io_err)?;
        names.push((item.file_name().to_string_lossy().into_owned(), item.path()));
    }
    names.sort();
    let (mut images, mut npys, mut ignored) = (Vec::new(), Vec::new(), 0);
    for (name, path) in names {
        let ext = Path::new(&name).extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
        let entry = Entry { name, path, row: 0 };
        if !entry.path.is_file() {
            ignored += 1;
        } else if IMAGE_EXTENSIONS.contains(&ext.as_str()) {
            images.push(entry);
        } else if ext == "npy" {
            npys.push(entry);
        } else {
            ignored += 1;
        }
    }
    match (images.is_empty(), npys.is_empty()) {
        (false, false) => Err(CalibError::MixedFolder {
            dir: dir.to_owned(),
            image: images[0].name.clone(),
            npy: npys[0].name.clone(),
        }),
        (true, true) => Err(CalibError::NoSamples { dir: dir.to_owned(), ignored }),
        (false, true) => Ok(Listing { kind: SourceKind::Images, entries: images, ignored }),
        (true, false) => Ok(Listing { kind: SourceKind::Npy, entries: npys, ignored }),
    }
}

/// Checks, from headers only, that every entry makes a sample of type `sample`.
pub(super) fn check_entries(listing: &Listing, p: &Preprocess, sample: &TensorType) -> Result<(), CalibError> {
    match &listing.kind {
        SourceKind::Images => {
            if sample.dtype != DType::F32 {
                return Err(CalibError::InputNotImage {
                    input: sample.clone(),
                    reason: format!("it takes {} elements, images give f32", sample.dtype),
                });
            }
            for e in &listing.entries {
                let size = header_size(&e.path)?;
                let name = e.path.display().to_string();
                check_image_shape(&name, &sample_shape(geometry(&name, size, p)?.out, p), p, sample)?;
            }
        }
        SourceKind::Npy => {
            for e in &listing.entries {
                let (shape, dtype) = crate::npy::read_npy_header(&e.path)?;
                check_array(&e.path.display().to_string(), &shape, dtype, sample)?;
            }
        }
        SourceKind::Npz { path, key } => {
            let (shape, dtype) = crate::npy::read_npz_header(path, key)?;
            let name = format!("{}:{key}", path.display());
            if shape.is_empty() {
                return Err(CalibError::NpzKey {
                    path: path.clone(),
                    reason: format!("array `{key}` is a scalar, not samples along a first axis"),
                    names: vec![key.clone()],
                });
            }
            let row: Vec<usize> = std::iter::once(1).chain(shape[1..].iter().copied()).collect();
            check_array(&name, &row, dtype, sample)?;
        }
    }
    Ok(())
}

/// Reads the sample of an `.npy` file or `.npz` row and checks its type.
pub(super) fn load_array(kind: &SourceKind, entry: &Entry, sample: &TensorType) -> Result<Tensor, CalibError> {
    let t = match kind {
        SourceKind::Npz { path, key } => {
            let mut found = None;
            crate::npy::for_each_npz_row(path, key, |i, row| {
                if i == entry.row {
                    found = Some(row);
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })?;
            found.ok_or_else(|| crate::npy::NpyError::Format {
                path: path.clone(),
                reason: format!("array `{key}` has no row {} any more (the file changed?)", entry.row),
            })?
        }
        _ => crate::npy::read_npy(&entry.path)?,
    };
    check_array(&entry.path.display().to_string(), t.shape(), t.dtype(), sample)?;
    Ok(t)
}

/// A preprocessed image must be of the model input's shape.
pub(super) fn check_image_shape(
    name: &str,
    made: &[usize],
    p: &Preprocess,
    sample: &TensorType,
) -> Result<(), CalibError> {
    check_shape(name, made, sample, || image_hint(p, made, sample))
}

/// An `.npy`/`.npz` sample must be the model input as it is.
pub(super) fn check_array(name: &str, shape: &[usize], dtype: DType, sample: &TensorType) -> Result<(), CalibError> {
    check_shape(name, shape, sample, || {
        "`.npy`/`.npz` samples are used as they are: save each sample in the model's input shape (batch 1)".into()
    })?;
    if dtype != sample.dtype {
        return Err(CalibError::DTypeMismatch { name: name.to_owned(), got: dtype, want: sample.dtype });
    }
    Ok(())
}

fn check_shape(
    name: &str,
    made: &[usize],
    sample: &TensorType,
    hint: impl FnOnce() -> String,
) -> Result<(), CalibError> {
    if made == sample.shape.as_slice() {
        return Ok(());
    }
    Err(CalibError::ShapeMismatch {
        name: name.to_owned(),
        made: made.to_vec(),
        model: sample.shape.clone(),
        hint: hint(),
    })
}

/// Which flags would make images that came out `made` fit an input of type `sample`.
fn image_hint(p: &Preprocess, made: &[usize], sample: &TensorType) -> String {
    let [_, a, b, c] = sample.shape[..] else {
        return format!("the model input has rank {}, images make rank-4 samples", sample.rank());
    };
    let (ch, h, w, other_layout, other_ch) = match p.layout {
        Layout::Nchw => (a, b, c, "--layout nhwc", c),
        Layout::Nhwc => (c, a, b, "--layout nchw", a),
    };
    if !matches!(ch, 1 | 3) && matches!(other_ch, 1 | 3) {
        return format!("try `{other_layout}` (the model takes channels on the other axis)");
    }
    let mut hints = Vec::new();
    if ch != p.n_channels() {
        hints.push(match ch {
            1 => "`--gray` (the model takes 1 channel)".to_owned(),
            3 => "drop `--gray` (the model takes 3 channels)".to_owned(),
            _ => format!("nothing: the model takes {ch} channels, images give 1 (`--gray`) or 3"),
        });
    }
    let made_hw = match p.layout {
        Layout::Nchw => (made[2], made[3]),
        Layout::Nhwc => (made[1], made[2]),
    };
    if made_hw != (h, w) {
        hints.push(format!(
            "`--resize {h}x{w}`, `--resize-short {s} --crop {h}x{w}` or `--letterbox {h}x{w}` for its {h}×{w} pixels",
            s = h.min(w)
        ));
    }
    format!("try {}", hints.join("; "))
}
