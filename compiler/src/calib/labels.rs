//! Labels: a `file,label` CSV, or one integer per sample from an `.npz` array.

use std::collections::HashMap;
use std::path::Path;

use super::CalibError;
use super::args::LabelsSpec;
use super::source::{Entry, SourceKind};

/// How many missing names an error lists.
const MAX_LISTED: usize = 5;

/// One label per entry, in entry order.
pub(super) fn read_labels(spec: &LabelsSpec, kind: &SourceKind, entries: &[Entry]) -> Result<Vec<i64>, CalibError> {
    match spec {
        LabelsSpec::Csv(path) => {
            let table = read_csv(path)?;
            let missing: Vec<&str> =
                entries.iter().map(|e| e.name.as_str()).filter(|name| !table.contains_key(*name)).collect();
            if !missing.is_empty() {
                return Err(CalibError::LabelsMissing {
                    path: path.clone(),
                    n_missing: missing.len(),
                    first: missing.iter().take(MAX_LISTED).map(|s| s.to_string()).collect(),
                });
            }
            Ok(entries.iter().map(|e| table[e.name.as_str()]).collect())
        }
        LabelsSpec::Npz { path, key } => {
            if matches!(kind, SourceKind::Images) {
                return Err(CalibError::BadFlag {
                    flag: "--labels",
                    reason: format!(
                        "`{}:{key}` gives labels by position, which only .npy/.npz samples have; label images with a `file,label` CSV",
                        path.display()
                    ),
                });
            }
            let t = crate::npy::read_npz_array(path, key)?;
            let bad = |reason: String| CalibError::Labels { path: path.clone(), reason };
            let values = t.data().to_i64_vec().filter(|_| t.dtype() != cnnc_ir::DType::Bool);
            let Some(values) = values else {
                return Err(bad(format!("array `{key}` holds {} values, labels must be integers", t.dtype())));
            };
            if t.shape().iter().filter(|&&d| d != 1).count() > 1 {
                return Err(bad(format!(
                    "array `{key}` has shape {:?}, labels must be one integer per sample",
                    t.shape()
                )));
            }
            if values.len() != entries.len() {
                return Err(bad(format!("array `{key}` holds {} labels for {} samples", values.len(), entries.len())));
            }
            Ok(values)
        }
    }
}

/// `file,label` rows (header required) → file name → label.
fn read_csv(path: &Path) -> Result<HashMap<String, i64>, CalibError> {
    let text = std::fs::read_to_string(path).map_err(|source| CalibError::Io { path: path.to_owned(), source })?;
    let bad = |line: usize, reason: String| CalibError::Labels {
        path: path.to_owned(),
        reason: format!("line {line}: {reason}"),
    };
    let mut lines = text.trim_start_matches('\u{feff}').lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    match lines.next() {
        Some((_, header)) if header.split(',').map(str::trim).eq(["file", "label"]) => {}
        Some((i, header)) => return Err(bad(i + 1, format!("expected the header `file,label`, got `{header}`"))),
        None => return Err(bad(1, "empty file; expected the header `file,label` and one row per file".into())),
    }
    let mut table = HashMap::new();
    for (i, line) in lines {
        let Some((file, label)) = line.rsplit_once(',') else {
            return Err(bad(i + 1, format!("expected `file,label`, got `{line}`")));
        };
        let label = label
            .trim()
            .parse::<i64>()
            .map_err(|_| bad(i + 1, format!("label `{}` is not an integer", label.trim())))?;
        if let Some(old) = table.insert(file.trim().to_owned(), label)
            && old != label
        {
            return Err(bad(i + 1, format!("`{}` labelled twice ({old} and {label})", file.trim())));
        }
    }
    Ok(table)
}
