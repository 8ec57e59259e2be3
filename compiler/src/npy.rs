//! `.npy` / `.npz` reading and writing of [`Tensor`]s (what Python users already have).

use std::fs::File;
use std::io::{self, BufWriter, Read};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use cnnc_ir::{DType, Tensor, TensorData, checked_numel, numel};
use npyz::WriterBuilder;

/// Largest tensor accepted from a file, in elements (4 GiB of f32).
const MAX_ELEMENTS: usize = 1 << 30;

/// A `.npy`/`.npz` file that could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: {reason}")]
    Format { path: PathBuf, reason: String },
}

fn format_err(path: &Path, reason: impl Into<String>) -> NpyError {
    NpyError::Format { path: path.to_owned(), reason: reason.into() }
}

/// Reads one `.npy` file. f32 stays f32; f64 becomes f32; u8, i8, i32 and i64 keep their type
/// and the other integer widths become i64; bool stays bool.
pub fn read_npy(path: &Path) -> Result<Tensor, NpyError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|source| NpyError::Io { path: path.to_owned(), source })?;
    let npy = npyz::NpyFile::new(&bytes[..]).map_err(|e| format_err(path, format!("not a valid .npy file: {e}")))?;
    tensor_from_npy(path, npy)
}

/// Reads every array of a `.npz` archive, in archive order, as (name, tensor).
pub fn read_npz(path: &Path) -> Result<Vec<(String, Tensor)>, NpyError> {
    let mut archive =
        npyz::npz::NpzArchive::open(path).map_err(|e| format_err(path, format!("not a valid .npz file: {e}")))?;
    let names: Vec<String> = archive.array_names().map(str::to_owned).collect();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let npy = archive
            .by_name(&name)
            .map_err(|e| format_err(path, format!("array `{name}`: {e}")))?
            .ok_or_else(|| format_err(path, format!("array `{name}` listed but missing")))?;
        let t = tensor_from_npy(path, npy)?;
        out.push((name, t));
    }
    Ok(out)
}

fn tensor_from_npy<R: Read>(path: &Path, npy: npyz::NpyFile<R>) -> Result<Tensor, NpyError> {
    if npy.order() != npyz::Order::C {
        return Err(format_err(path, "Fortran-ordered arrays are not supported; save with np.ascontiguousarray"));
    }
    let shape = checked_shape(path, &npy)?;
    let type_str = match npy.dtype() {
        npyz::DType::Plain(ts) => ts,
        other => return Err(format_err(path, format!("unsupported dtype {}", other.descr()))),
    };
    let kind = type_str.type_char();
    let size = type_str.size_field();
    let bad = |e: io::Error| format_err(path, format!("reading data: {e}"));
    let data = match (kind, size) {
        (npyz::TypeChar::Float, 4) => TensorData::F32(npy.into_vec::<f32>().map_err(bad)?),
        (npyz::TypeChar::Float, 8) => {
            TensorData::F32(npy.into_vec::<f64>().map_err(bad)?.into_iter().map(|x| x as f32).collect())
        }
        (npyz::TypeChar::Int, 8) => TensorData::I64(npy.into_vec::<i64>().map_err(bad)?),
        (npyz::TypeChar::Int, 4) => TensorData::I32(npy.into_vec::<i32>().map_err(bad)?),
        (npyz::TypeChar::Int, 2) => {
            TensorData::I64(npy.into_vec::<i16>().map_err(bad)?.into_iter().map(i64::from).collect())
        }
        (npyz::TypeChar::Int, 1) => TensorData::I8(npy.into_vec::<i8>().map_err(bad)?),
        (npyz::TypeChar::Uint, 1) => TensorData::U8(npy.into_vec::<u8>().map_err(bad)?),
        (npyz::TypeChar::Uint, 2) => {
            TensorData::I64(npy.into_vec::<u16>().map_err(bad)?.into_iter().map(i64::from).collect())
        }
        (npyz::TypeChar::Uint, 4) => {
            TensorData::I64(npy.into_vec::<u32>().map_err(bad)?.into_iter().map(i64::from).collect())
        }
        (npyz::TypeChar::Bool, 1) => TensorData::Bool(npy.into_vec::<bool>().map_err(bad)?),
        _ => return Err(format_err(path, format!("unsupported dtype `{type_str}`"))),
    };
    Tensor::new(shape, data).map_err(|e| format_err(path, e.to_string()))
}

/// Writes `t` as a C-ordered `.npy` file (`<f4`, `<i8`, `|b1`, `|u1`, `|i1` or `<i4`).
pub fn write_npy(path: &Path, t: &Tensor) -> Result<(), NpyError> {
    let io_err = |source: io::Error| NpyError::Io { path: path.to_owned(), source };
    let file = BufWriter::new(File::create(path).map_err(io_err)?);
    let shape: Vec<u64> = t.shape().iter().map(|&d| d as u64).collect();
    match t.data() {
        TensorData::F32(v) => write_elems(file, &shape, v),
        TensorData::I64(v) => write_elems(file, &shape, v),
        TensorData::Bool(v) => write_elems(file, &shape, v),
        TensorData::U8(v) => write_elems(file, &shape, v),
        TensorData::I8(v) => write_elems(file, &shape, v),
        TensorData::I32(v) => write_elems(file, &shape, v),
    }
    .map_err(io_err)
}

fn write_elems<T: npyz::AutoSerialize + Copy>(file: BufWriter<File>, shape: &[u64], v: &[T]) -> io::Result<()> {
    let mut w = npyz::WriteOptions::new().default_dtype().shape(shape).writer(file).begin_nd()?;
    w.extend(v.iter().copied())?;
    w.finish()
}

/// The file stem `ort_run.py` uses for an output name: every character outside
/// `[A-Za-z0-9_.-]` becomes `_`, and `""`, `.`, `..` get a leading `_`.
pub fn sanitize_name(name: &str) -> String {
    let s: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') { c } else { '_' }).collect();
    if matches!(s.as_str(), "" | "." | "..") { format!("_{s}") } else { s }
}

/// File stems for a list of output names: sanitized, with `_2`, `_3`, … appended when two
/// names sanitize to the same stem (as `ort_run.py` does).
pub fn output_file_stems(names: &[&str]) -> Vec<String> {
    let mut used = std::collections::HashSet::new();
    names
        .iter()
        .map(|name| {
            let base = sanitize_name(name);
            let mut stem = base.clone();
            let mut n = 1;
            while used.contains(&stem) {
                n += 1;
                stem = format!("{base}_{n}");
            }
            used.insert(stem.clone());
            stem
        })
        .collect()
}

/// Shape and element type (as [`read_npy`] would return it) of a `.npy` file, reading only its header.
pub fn read_npy_header(path: &Path) -> Result<(Vec<usize>, DType), NpyError> {
    let file = File::open(path).map_err(|source| NpyError::Io { path: path.to_owned(), source })?;
    let npy = npyz::NpyFile::new(io::BufReader::new(file))
        .map_err(|e| format_err(path, format!("not a valid .npy file: {e}")))?;
    Ok((checked_shape(path, &npy)?, element_type(path, &npy)?.0))
}

/// The array names of a `.npz` archive, in archive order.
pub fn npz_array_names(path: &Path) -> Result<Vec<String>, NpyError> {
    let archive =
        npyz::npz::NpzArchive::open(path).map_err(|e| format_err(path, format!("not a valid .npz file: {e}")))?;
    Ok(archive.array_names().map(str::to_owned).collect())
}

/// Shape and element type of array `name` of a `.npz` archive, decompressing only its header.
pub fn read_npz_header(path: &Path, name: &str) -> Result<(Vec<usize>, DType), NpyError> {
    let mut archive =
        npyz::npz::NpzArchive::open(path).map_err(|e| format_err(path, format!("not a valid .npz file: {e}")))?;
    let npy = npz_entry(path, &mut archive, name)?;
    Ok((checked_shape(path, &npy)?, element_type(path, &npy)?.0))
}

/// Reads array `name` of a `.npz` archive (and no other).
pub fn read_npz_array(path: &Path, name: &str) -> Result<Tensor, NpyError> {
    let mut archive =
        npyz::npz::NpzArchive::open(path).map_err(|e| format_err(path, format!("not a valid .npz file: {e}")))?;
    let npy = npz_entry(path, &mut archive, name)?;
    tensor_from_npy(path, npy)
}

/// Streams array `name` of a `.npz` archive along its first axis: calls `f(i, row)` for each
/// row in order, `row` shaped `[1, …the remaining dims]`, until `f` breaks. Memory: one row.
pub fn for_each_npz_row(
    path: &Path,
    name: &str,
    mut f: impl FnMut(usize, Tensor) -> ControlFlow<()>,
) -> Result<(), NpyError> {
    let mut archive =
        npyz::npz::NpzArchive::open(path).map_err(|e| format_err(path, format!("not a valid .npz file: {e}")))?;
    let npy = npz_entry(path, &mut archive, name)?;
    if npy.order() != npyz::Order::C {
        return Err(format_err(path, "Fortran-ordered arrays are not supported; save with np.ascontiguousarray"));
    }
    let shape = checked_shape(path, &npy)?;
    let Some((&n_rows, rest)) = shape.split_first() else {
        return Err(format_err(path, format!("array `{name}` is a scalar, not samples along a first axis")));
    };
    let row_shape: Vec<usize> = std::iter::once(1).chain(rest.iter().copied()).collect();
    let (_, kind, size) = element_type(path, &npy)?;
    let rows = Rows { path, n_rows, row_shape: &row_shape, f: &mut f };
    match (kind, size) {
        (npyz::TypeChar::Float, 4) => rows.stream(npy, |x: f32| x, TensorData::F32),
        (npyz::TypeChar::Float, 8) => rows.stream(npy, |x: f64| x as f32, TensorData::F32),
        (npyz::TypeChar::Int, 8) => rows.stream(npy, |x: i64| x, TensorData::I64),
        (npyz::TypeChar::Int, 4) => rows.stream(npy, |x: i32| x, TensorData::I32),
        (npyz::TypeChar::Int, 2) => rows.stream(npy, |x: i16| i64::from(x), TensorData::I64),
        (npyz::TypeChar::Int, 1) => rows.stream(npy, |x: i8| x, TensorData::I8),
        (npyz::TypeChar::Uint, 1) => rows.stream(npy, |x: u8| x, TensorData::U8),
        (npyz::TypeChar::Uint, 2) => rows.stream(npy, |x: u16| i64::from(x), TensorData::I64),
        (npyz::TypeChar::Uint, 4) => rows.stream(npy, |x: u32| i64::from(x), TensorData::I64),
        _ => rows.stream(npy, |x: bool| x, TensorData::Bool),
    }
}

/// The row-by-row reader behind [`for_each_npz_row`].
struct Rows<'a, F> {
    path: &'a Path,
    n_rows: usize,
    row_shape: &'a [usize],
    f: &'a mut F,
}

impl<F: FnMut(usize, Tensor) -> ControlFlow<()>> Rows<'_, F> {
    fn stream<R: Read, T: npyz::Deserialize, U>(
        self,
        npy: npyz::NpyFile<R>,
        convert: impl Fn(T) -> U,
        wrap: impl Fn(Vec<U>) -> TensorData,
    ) -> Result<(), NpyError> {
        let path = self.path;
        let row_len = numel(self.row_shape);
        let mut elements = npy.data::<T>().map_err(|e| format_err(path, format!("reading data: {e}")))?;
        for i in 0..self.n_rows {
            let mut row = Vec::with_capacity(row_len);
            for _ in 0..row_len {
                let x = elements
                    .next()
                    .ok_or_else(|| format_err(path, "data ends before the shape says"))?
                    .map_err(|e| format_err(path, format!("reading data: {e}")))?;
                row.push(convert(x));
            }
            let t = Tensor::new(self.row_shape.to_vec(), wrap(row)).map_err(|e| format_err(path, e.to_string()))?;
            if (self.f)(i, t).is_break() {
                break;
            }
        }
        Ok(())
    }
}

fn npz_entry<'a, R: io::Read + io::Seek>(
    path: &Path,
    archive: &'a mut npyz::npz::NpzArchive<R>,
    name: &str,
) -> Result<npyz::NpyFile<impl Read + 'a>, NpyError> {
    archive
        .by_name(name)
        .map_err(|e| format_err(path, format!("array `{name}`: {e}")))?
        .ok_or_else(|| format_err(path, format!("no array `{name}`")))
}

fn checked_shape<R: Read>(path: &Path, npy: &npyz::NpyFile<R>) -> Result<Vec<usize>, NpyError> {
    let shape: Vec<usize> = npy
        .shape()
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format_err(path, "dimension does not fit in memory")))
        .collect::<Result<_, _>>()?;
    match checked_numel(&shape) {
        Some(n) if n <= MAX_ELEMENTS => Ok(shape),
        _ => Err(format_err(path, format!("array of shape {shape:?} is larger than {MAX_ELEMENTS} elements"))),
    }
}

/// The [`DType`] an array becomes (as in [`read_npy`]), with npy's type char and size.
fn element_type<R: Read>(path: &Path, npy: &npyz::NpyFile<R>) -> Result<(DType, npyz::TypeChar, u64), NpyError> {
    let type_str = match npy.dtype() {
        npyz::DType::Plain(ts) => ts,
        other => return Err(format_err(path, format!("unsupported dtype {}", other.descr()))),
    };
    let (kind, size) = (type_str.type_char(), type_str.size_field());
    let dtype = match (kind, size) {
        (npyz::TypeChar::Float, 4 | 8) => DType::F32,
        (npyz::TypeChar::Uint, 1) => DType::U8,
        (npyz::TypeChar::Int, 1) => DType::I8,
        (npyz::TypeChar::Int, 4) => DType::I32,
        (npyz::TypeChar::Int, 2 | 8) | (npyz::TypeChar::Uint, 2 | 4) => DType::I64,
        (npyz::TypeChar::Bool, 1) => DType::Bool,
        _ => return Err(format_err(path, format!("unsupported dtype `{type_str}`"))),
    };
    Ok((dtype, kind, size))
}
