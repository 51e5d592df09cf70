//! Image operations from scratch: padding, convolution, pooling, image loading.
//!
//! Pure Rust on `ndarray`; no Python, no torch. Every kernel takes views and
//! returns owned arrays, validates its arguments once at the top and returns
//! [`Error::InvalidArgument`](crate::Error::InvalidArgument) for anything a
//! caller can get wrong. Images are `(H, W, C)` (a grayscale image is `C = 1`);
//! kernel banks are `(n, kh, kw, C)`.
//!
//! Speed: rows are spread over rayon's pool once an image is big enough, inner
//! loops run over contiguous slices so the compiler vectorises them, the 3×3
//! convolution and the 2×2 pooling have fused paths, and each row function is
//! compiled three times (baseline x86-64, AVX2+FMA, AVX-512) with the best one
//! picked at run time ([`simd`]), so one wheel runs on any x86-64 CPU.

pub mod conv;
pub mod image_io;
pub mod padding;
pub mod pool;
pub mod simd;

pub use conv::{conv2d, ConvElem, ConvParams, Padding};
pub use image_io::{load_image, LoadOptions};
pub use padding::{pad, Pad, PadMode};
pub use pool::{avg_pool, max_pool, PoolParams};

use std::mem::MaybeUninit;

use crate::error::{Error, Result};

/// Below this many multiply-adds (or compared elements) a kernel runs on the
/// calling thread: handing a job to rayon's sleeping workers and waiting for
/// them costs about 10 µs (more with other libraries' thread pools spinning
/// beside them), more than it saves on small images. Kernels scale it by how
/// much work an element costs them.
pub(crate) const PARALLEL_WORK: usize = 1 << 18;

/// The largest result an image operation makes: 4 GiB (a 32768 × 32768
/// float32 image). A padding or size beyond it is a mistake, refused before
/// anything is allocated (with overcommit, a huge allocation can succeed and
/// the process be killed later, when the pages are touched).
pub const MAX_RESULT_BYTES: usize = 1 << 32;

/// Checks that a result of `elements` values of `T` (`None`: more than
/// `usize` counts) stays under [`MAX_RESULT_BYTES`]; `blame` says which
/// argument made it so big.
///
/// # Errors
/// [`Error::InvalidArgument`] naming `blame` when it does not.
pub(crate) fn check_result_size<T>(shape: &[usize], blame: &str) -> Result<()> {
    let bytes = shape
        .iter()
        .try_fold(std::mem::size_of::<T>(), |acc, &d| acc.checked_mul(d));
    match bytes {
        Some(b) if b <= MAX_RESULT_BYTES => Ok(()),
        _ => Err(Error::invalid(format!(
            "{blame} makes a result of shape {}, more than fits in memory \
             ({} GiB at most); use a smaller {blame}",
            shape_str(shape),
            MAX_RESULT_BYTES >> 30
        ))),
    }
}

/// Builds an output of `rows` rows of `row_len` elements: `f(first_row, chunk)`
/// fills each chunk of whole rows, which starts zeroed. Chunks run on rayon's
/// pool when `parallel`.
///
/// Each task zeroes a few rows at a time just before `f` fills them, so the
/// zeroing is parallel and the rows are still in L1 when the kernel writes them; large
/// outputs are advised to use transparent huge pages (as numpy does for its own
/// arrays): first-touching 64 MiB in 4 KiB pages costs more page faults than a
/// 3×3 convolution costs arithmetic.
///
/// # Errors
/// [`Error::OutOfMemory`] when the output cannot be allocated, instead of
/// aborting (kernels check [`MAX_RESULT_BYTES`] before they get here).
pub(crate) fn build_rows<T, F>(rows: usize, row_len: usize, parallel: bool, f: F) -> Result<Vec<T>>
where
    T: Default + Copy + Send + Sync,
    F: Fn(usize, &mut [T]) + Sync,
{
    // Rows per call of `f`: about 32 KiB, so the zeroed rows are still in L1
    // when the kernel writes them.
    let rows_per_call = ((32 << 10) / (row_len * std::mem::size_of::<T>()).max(1)).max(1);
    let zero_then_fill = |first: usize, chunk: &mut [MaybeUninit<T>]| {
        let step = rows_per_call * row_len.max(1);
        for (n, part) in chunk.chunks_mut(step).enumerate() {
            for m in part.iter_mut() {
                m.write(T::default());
            }
            // SAFETY: every element of `part` was initialised just above, and
            // `MaybeUninit<T>` has the same size and alignment as `T`.
            let part = unsafe { &mut *(std::ptr::from_mut(part) as *mut [T]) };
            f(first + n * rows_per_call, part);
        }
    };
    // SAFETY: `zero_then_fill` initialises every element it is given.
    unsafe { build_rows_uninit(rows, row_len, parallel, zero_then_fill) }
}

/// [`build_rows`] without the zeroing, for kernels that write every output
/// element (the fused 3×3 convolution): `f(first_row, chunk)` receives whole
/// rows, uninitialised: on one thread all of them in one call, in parallel a
/// few dozen per task.
///
/// # Safety
/// `f` must initialise every element of each chunk it is given.
///
/// # Errors
/// As [`build_rows`].
pub(crate) unsafe fn build_rows_uninit<T, F>(
    rows: usize,
    row_len: usize,
    parallel: bool,
    f: F,
) -> Result<Vec<T>>
where
    T: Copy + Send + Sync,
    F: Fn(usize, &mut [MaybeUninit<T>]) + Sync,
{
    let too_big = || {
        Error::OutOfMemory(format!(
            "cannot allocate a result of {rows} × {row_len} elements"
        ))
    };
    let len = rows.checked_mul(row_len).ok_or_else(too_big)?;
    let mut out: Vec<T> = Vec::new();
    out.try_reserve_exact(len).map_err(|_| too_big())?;
    #[cfg(target_os = "linux")]
    advise_huge_pages(out.as_ptr().cast(), len * std::mem::size_of::<T>());
    let spare = &mut out.spare_capacity_mut()[..len];
    if parallel && row_len > 0 && rows > 1 {
        use rayon::prelude::*;
        let per_task = rows.div_ceil(rayon::current_num_threads() * 8).max(1);
        spare
            .par_chunks_mut(per_task * row_len)
            .enumerate()
            .for_each(|(t, chunk)| f(t * per_task, chunk));
    } else {
        f(0, spare);
    }
    // SAFETY: the chunks above cover all `len` elements of the spare capacity
    // and the caller promised that `f` initialised each of them.
    unsafe { out.set_len(len) };
    Ok(out)
}

#[cfg(target_os = "linux")]
fn advise_huge_pages(ptr: *const u8, bytes: usize) {
    const PAGE: usize = 4096;
    const MADV_HUGEPAGE: std::ffi::c_int = 14;
    extern "C" {
        fn madvise(
            addr: *mut std::ffi::c_void,
            len: usize,
            advice: std::ffi::c_int,
        ) -> std::ffi::c_int;
    }
    if bytes < (4 << 20) {
        return;
    }
    let start = (ptr as usize).next_multiple_of(PAGE);
    let end = (ptr as usize + bytes) / PAGE * PAGE;
    if end > start {
        // SAFETY: [start, end) lies inside the live allocation `ptr..ptr+bytes`
        // and is page-aligned; MADV_HUGEPAGE only changes how the kernel backs
        // those pages (their contents stay the same). A failure (THP disabled)
        // is harmless, so the result is ignored.
        unsafe {
            madvise(start as *mut std::ffi::c_void, end - start, MADV_HUGEPAGE);
        }
    }
}

/// The element types every image operation accepts: all of numpy's real
/// integer and float types. Padding and max pooling keep them; convolution
/// computes in a [`ConvElem`]; average pooling in [`Pixel::Avg`].
pub trait Pixel: Copy + Default + Send + Sync + PartialOrd + std::fmt::Debug + 'static {
    /// The element type of an average: the float itself, or `f64` for integers
    /// (as `numpy.mean` does).
    type Avg: AvgElem;

    /// The value as `f64` (exact for every integer up to 2^53).
    fn to_f64(self) -> f64;
    /// The value as `f32` (rounded, as numpy's `astype(float32)`).
    fn to_f32(self) -> f32;
    /// The value as `i64` (`u64` above `i64::MAX` wraps; floats truncate).
    fn to_i64(self) -> i64;
    /// The value in this type's average type.
    fn to_avg(self) -> Self::Avg;
    /// `v` as this type, or an error naming `what` if `v` is not representable
    /// (a fraction or an out-of-range value for an integer type).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `v` does not fit.
    fn from_f64_exact(v: f64, what: &str) -> Result<Self>;
    /// The larger of two values; a NaN in either gives NaN, as `numpy.max` does.
    #[must_use]
    fn max_nan(self, other: Self) -> Self;
    /// `if self > other { self } else { other }`: one `maxps` on x86, but a
    /// NaN in `self` is lost. Kernels use it with [`Pixel::is_nan`] checks and
    /// redo a row with [`Pixel::max_nan`] when a NaN shows up.
    #[must_use]
    fn fast_max(self, other: Self) -> Self;
    /// Whether this is a float NaN (always `false` for integers).
    fn is_nan(self) -> bool;
    /// Whether `to_i64` is exact (false only for `u64` above `i64::MAX`;
    /// floats are never widened to `i64`).
    fn fits_i64(self) -> bool;
    /// The integer `v` as this type, or an error naming `what` if it does not
    /// fit an integer type (floats round it, as numpy does).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `v` does not fit.
    fn from_i128_exact(v: i128, what: &str) -> Result<Self>;
}

macro_rules! impl_pixel_int {
    ($($t:ty),*) => {$(
        impl Pixel for $t {
            type Avg = f64;
            #[inline(always)]
            #[allow(clippy::cast_lossless, clippy::cast_precision_loss)]
            fn to_f64(self) -> f64 { self as f64 }
            #[inline(always)]
            #[allow(clippy::cast_lossless, clippy::cast_precision_loss)]
            fn to_f32(self) -> f32 { self as f32 }
            #[inline(always)]
            #[allow(clippy::cast_lossless, clippy::cast_possible_wrap)]
            fn to_i64(self) -> i64 { self as i64 }
            #[inline(always)]
            #[allow(clippy::cast_lossless, clippy::cast_precision_loss)]
            fn to_avg(self) -> f64 { self as f64 }
            fn from_f64_exact(v: f64, what: &str) -> Result<Self> {
                // Through i128 (exact for every float that is an integer
                // below 2**127): comparing with `MAX as f64` would let 2**63
                // through for i64, since `i64::MAX as f64` rounds up to it.
                if v.fract() == 0.0 {
                    if let Ok(x) = <$t>::try_from(v as i128) {
                        return Ok(x);
                    }
                }
                Err(Error::invalid(format!(
                    "{what} must be an integer in [{}, {}] for a {} image, got {v}",
                    <$t>::MIN, <$t>::MAX, stringify!($t)
                )))
            }
            #[inline(always)]
            fn max_nan(self, other: Self) -> Self { if self > other { self } else { other } }
            #[inline(always)]
            fn fast_max(self, other: Self) -> Self { if self > other { self } else { other } }
            #[inline(always)]
            fn is_nan(self) -> bool { false }
            #[inline(always)]
            fn fits_i64(self) -> bool { <i64 as TryFrom<$t>>::try_from(self).is_ok() }
            fn from_i128_exact(v: i128, what: &str) -> Result<Self> {
                <$t>::try_from(v).map_err(|_| Error::invalid(format!(
                    "{what} must be an integer in [{}, {}] for a {} image, got {v}",
                    <$t>::MIN, <$t>::MAX, stringify!($t)
                )))
            }
        }
    )*};
}
impl_pixel_int!(u8, u16, u32, u64, i8, i16, i32, i64);

macro_rules! impl_pixel_float {
    ($($t:ty),*) => {$(
        impl Pixel for $t {
            type Avg = $t;
            #[inline(always)]
            #[allow(clippy::cast_lossless)]
            fn to_f64(self) -> f64 { self as f64 }
            #[inline(always)]
            #[allow(clippy::cast_possible_truncation)]
            fn to_f32(self) -> f32 { self as f32 }
            #[inline(always)]
            #[allow(clippy::cast_possible_truncation)]
            fn to_i64(self) -> i64 { self as i64 }
            #[inline(always)]
            fn to_avg(self) -> $t { self }
            #[allow(clippy::cast_possible_truncation)]
            fn from_f64_exact(v: f64, _what: &str) -> Result<Self> { Ok(v as $t) }
            #[inline(always)]
            fn max_nan(self, other: Self) -> Self {
                // `a > b` is false when either is NaN: then keep `self` only if
                // it is the NaN, otherwise `other` (which then is the NaN).
                #[allow(clippy::eq_op)]
                if self > other || self != self { self } else { other }
            }
            #[inline(always)]
            fn fast_max(self, other: Self) -> Self { if self > other { self } else { other } }
            #[inline(always)]
            #[allow(clippy::eq_op)]
            fn is_nan(self) -> bool { self != self }
            #[inline(always)]
            fn fits_i64(self) -> bool { true }
            #[allow(clippy::cast_possible_truncation)]
            fn from_i128_exact(v: i128, _what: &str) -> Result<Self> { Ok(v as $t) }
        }
    )*};
}
impl_pixel_float!(f32, f64);

/// The element type of an average: `f32` or `f64`.
pub trait AvgElem:
    Copy
    + Send
    + Sync
    + Default
    + std::fmt::Debug
    + std::ops::Add<Output = Self>
    + std::ops::Div<Output = Self>
    + 'static
{
    /// `n` in this type (window sizes are small, so exact).
    fn from_count(n: usize) -> Self;
}

impl AvgElem for f32 {
    #[allow(clippy::cast_precision_loss)]
    fn from_count(n: usize) -> Self {
        n as f32
    }
}

impl AvgElem for f64 {
    #[allow(clippy::cast_precision_loss)]
    fn from_count(n: usize) -> Self {
        n as f64
    }
}

pub use crate::error::shape_str;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_nan_propagates_from_either_side() {
        assert!(f32::NAN.max_nan(1.0).is_nan());
        assert!(1.0f32.max_nan(f32::NAN).is_nan());
        assert_eq!(2.0f64.max_nan(1.0), 2.0);
        assert_eq!(f64::NEG_INFINITY.max_nan(-1.0), -1.0);
        assert_eq!(3u8.max_nan(7), 7);
    }

    #[test]
    fn pad_value_must_fit_integer_types() {
        assert_eq!(u8::from_f64_exact(255.0, "value").unwrap(), 255);
        assert!(u8::from_f64_exact(256.0, "value").is_err());
        assert!(i16::from_f64_exact(0.5, "value").is_err());
        assert!(i64::from_f64_exact(9_223_372_036_854_775_808.0, "value").is_err());
        assert!(u64::from_f64_exact(18_446_744_073_709_551_616.0, "value").is_err());
        assert!(u8::from_f64_exact(f64::NAN, "value").is_err());
        assert!(u8::from_f64_exact(f64::INFINITY, "value").is_err());
        assert_eq!(
            i64::from_f64_exact(-9.0e18, "value").unwrap(),
            -9_000_000_000_000_000_000
        );
        assert!(f32::from_f64_exact(f64::NAN, "value").unwrap().is_nan());
        let big = (1i128 << 62) + 1;
        assert_eq!(i64::from_i128_exact(big, "value").unwrap(), (1 << 62) + 1);
        assert!(i64::from_i128_exact(1 << 63, "value").is_err());
        assert_eq!(u64::from_i128_exact(1 << 63, "value").unwrap(), 1 << 63);
        assert!(u8::from_i128_exact(-1, "value").is_err());
        assert!(!u64::MAX.fits_i64() && (1u64 << 62).fits_i64() && i64::MIN.fits_i64());
    }

    #[test]
    fn shapes_print_like_numpy() {
        assert_eq!(shape_str(&[3, 3, 2]), "(3, 3, 2)");
        assert_eq!(shape_str(&[5]), "(5,)");
    }
}
