//! Cache-line eviction of load-time buffers, for timing kernels as a model whose constants
//! outgrow the caches runs them (`Model::evict_constants`). The one `unsafe` operation here is
//! `clflush` on addresses inside a borrowed slice.

use cnnc_ir::{Tensor, TensorData};

/// Bytes per cache line on every x86-64 CPU this runs on.
const LINE: usize = 64;

/// `v` viewed as bytes.
pub(crate) fn as_bytes<T: Copy>(v: &[T]) -> &[u8] {
    // SAFETY: the `T`s here are plain numbers and `bool`s, whose every byte is initialized;
    // `u8` has alignment 1 and no invalid values; the view borrows `v` for its lifetime.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
}

/// The bytes of a tensor's elements.
pub(crate) fn bytes_of(t: &Tensor) -> &[u8] {
    match t.data() {
        TensorData::F32(v) => as_bytes(v),
        TensorData::I64(v) => as_bytes(v),
        TensorData::Bool(v) => as_bytes(v),
        TensorData::U8(v) => v,
        TensorData::I8(v) => as_bytes(v),
        TensorData::I32(v) => as_bytes(v),
    }
}

/// Writes back and invalidates every cache line of `bytes` in every cache level, then fences.
#[cfg(target_arch = "x86_64")]
pub(crate) fn flush(bytes: &[u8]) {
    use std::arch::x86_64::{_mm_clflush, _mm_mfence};
    // An empty slice's pointer is dangling and may be unmapped.
    if bytes.is_empty() {
        return;
    }
    let start = bytes.as_ptr() as usize & !(LINE - 1);
    let end = bytes.as_ptr() as usize + bytes.len();
    for line in (start..end).step_by(LINE) {
        // SAFETY: `clflush` (SSE2, part of x86-64) only evicts; it reads and writes no memory
        // the program sees. Every line flushed overlaps the non-empty `bytes`, which is
        // borrowed, so its page is mapped (a line never straddles a page).
        unsafe { _mm_clflush(line as *const u8) };
    }
    // SAFETY: a fence has no memory operands.
    unsafe { _mm_mfence() };
}

/// Does nothing where `clflush` is not available.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn flush(_bytes: &[u8]) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tensor_is_viewed_as_its_little_endian_bytes() {
        let tensors = [
            Tensor::from_f32(vec![3], vec![1.5, -0.0, f32::MAX]).expect("shape"),
            Tensor::from_i64(vec![2], vec![-1, 1 << 40]).expect("shape"),
            Tensor::from_bool(vec![3], vec![true, false, true]).expect("shape"),
            Tensor::from_u8(vec![2], vec![7, 255]).expect("shape"),
            Tensor::from_i8(vec![2], vec![-128, 5]).expect("shape"),
            Tensor::from_i32(vec![1], vec![-70_000]).expect("shape"),
        ];
        for t in &tensors {
            assert_eq!(bytes_of(t), t.data().to_le_bytes(), "{:?}", t.dtype());
        }
    }

    /// Flushing only evicts: every byte stays, for empty, unaligned and multi-line slices (an
    /// empty slice's dangling pointer must not be touched).
    #[test]
    fn flushing_keeps_every_byte_of_any_slice() {
        let v: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        flush(&v[3..777]);
        flush(&v[..0]);
        flush(&[]);
        flush(&Vec::<u8>::new());
        flush(&v[999..]);
        assert!(v.iter().enumerate().all(|(i, &b)| b == (i as u32 * 7) as u8));
    }
}
