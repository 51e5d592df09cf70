//! Bindings for `crate::ops`: `create_padding`, `convolution`, `pooling`,
//! `load_image`.
//!
//! Each wrapper converts its array arguments once ([`PixelArray::from_py`]),
//! parses its scalar and choice arguments into Rust values (the choices into
//! enums, by `FromPyObject`), checks the image's dimensionality, and runs the
//! core with the GIL released: dtype widening included. The core checks
//! everything else (sizes, channels, overflow) and names the argument.

use std::path::PathBuf;

use ndarray::{
    ArrayView3, ArrayView4, ArrayViewD, Axis, CowArray, Dimension, Ix2, Ix3, Ix4, IxDyn,
};
use numpy::{Element, IntoPyArray, PyArrayDescrMethods, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyString;

use super::args;
use crate::ops::{self, shape_str, ConvElem, ConvParams, Padding, Pixel};
use crate::Error;

/// A read-only numpy array of one of the dtypes the image operations
/// accept, in native byte order.
enum PixelArray<'py> {
    U8(PyReadonlyArrayDyn<'py, u8>),
    U16(PyReadonlyArrayDyn<'py, u16>),
    U32(PyReadonlyArrayDyn<'py, u32>),
    U64(PyReadonlyArrayDyn<'py, u64>),
    I8(PyReadonlyArrayDyn<'py, i8>),
    I16(PyReadonlyArrayDyn<'py, i16>),
    I32(PyReadonlyArrayDyn<'py, i32>),
    I64(PyReadonlyArrayDyn<'py, i64>),
    F32(PyReadonlyArrayDyn<'py, f32>),
    F64(PyReadonlyArrayDyn<'py, f64>),
}

/// A view of a [`PixelArray`]: what crosses into `py.detach`.
#[derive(Clone)]
enum PixelView<'a> {
    U8(ArrayViewD<'a, u8>),
    U16(ArrayViewD<'a, u16>),
    U32(ArrayViewD<'a, u32>),
    U64(ArrayViewD<'a, u64>),
    I8(ArrayViewD<'a, i8>),
    I16(ArrayViewD<'a, i16>),
    I32(ArrayViewD<'a, i32>),
    I64(ArrayViewD<'a, i64>),
    F32(ArrayViewD<'a, f32>),
    F64(ArrayViewD<'a, f64>),
}

/// Runs `$body` with `$x` bound to the typed `ArrayViewD` inside a [`PixelView`].
macro_rules! on_view {
    ($view:expr, $x:ident => $body:expr) => {
        match $view {
            PixelView::U8($x) => $body,
            PixelView::U16($x) => $body,
            PixelView::U32($x) => $body,
            PixelView::U64($x) => $body,
            PixelView::I8($x) => $body,
            PixelView::I16($x) => $body,
            PixelView::I32($x) => $body,
            PixelView::I64($x) => $body,
            PixelView::F32($x) => $body,
            PixelView::F64($x) => $body,
        }
    };
}

impl<'py> PixelArray<'py> {
    /// Converts `obj` (any array-like; views, negative strides, Fortran order
    /// and big-endian arrays included) without copying what is already a
    /// native, aligned array. Bool, complex, object, float16 and other dtypes
    /// are a `TypeError` naming `name`.
    fn from_py(obj: &Bound<'py, PyAny>, name: &str) -> PyResult<Self> {
        let arr = args::array_like(obj, name, false)?;
        let dtype = arr.dtype();
        Ok(match (dtype.kind(), dtype.itemsize()) {
            (b'u', 1) => Self::U8(arr.extract()?),
            (b'u', 2) => Self::U16(arr.extract()?),
            (b'u', 4) => Self::U32(arr.extract()?),
            (b'u', 8) => Self::U64(arr.extract()?),
            (b'i', 1) => Self::I8(arr.extract()?),
            (b'i', 2) => Self::I16(arr.extract()?),
            (b'i', 4) => Self::I32(arr.extract()?),
            (b'i', 8) => Self::I64(arr.extract()?),
            (b'f', 4) => Self::F32(arr.extract()?),
            (b'f', 8) => Self::F64(arr.extract()?),
            _ => {
                return Err(PyTypeError::new_err(format!(
                    "{name} must hold real numbers (an integer or float32/float64 dtype), \
                     got dtype {dtype}"
                )))
            }
        })
    }

    fn view(&self) -> PixelView<'_> {
        match self {
            Self::U8(a) => PixelView::U8(a.as_array()),
            Self::U16(a) => PixelView::U16(a.as_array()),
            Self::U32(a) => PixelView::U32(a.as_array()),
            Self::U64(a) => PixelView::U64(a.as_array()),
            Self::I8(a) => PixelView::I8(a.as_array()),
            Self::I16(a) => PixelView::I16(a.as_array()),
            Self::I32(a) => PixelView::I32(a.as_array()),
            Self::I64(a) => PixelView::I64(a.as_array()),
            Self::F32(a) => PixelView::F32(a.as_array()),
            Self::F64(a) => PixelView::F64(a.as_array()),
        }
    }
}

impl PixelView<'_> {
    fn shape(&self) -> &[usize] {
        on_view!(self, x => x.shape())
    }

    fn is_int(&self) -> bool {
        !matches!(self, Self::F32(_) | Self::F64(_))
    }

    /// Integers float32 holds exactly: numpy promotes them with float32 to float32.
    fn fits_f32(&self) -> bool {
        matches!(
            self,
            Self::U8(_) | Self::U16(_) | Self::I8(_) | Self::I16(_) | Self::F32(_)
        )
    }
}

/// The types a convolution computes in, reached from any input dtype:
/// borrowed when the dtype already matches, converted (numpy's `astype`)
/// otherwise. Called inside `py.detach`.
trait Compute: ConvElem + Element {
    /// # Errors
    /// [`Error::InvalidArgument`] naming `name` for `uint64` values above
    /// `int64`'s range in an integer convolution.
    fn from_view<'a>(v: PixelView<'a>, name: &str) -> crate::Result<CowArray<'a, Self, IxDyn>>;
}

/// `x` converted to `T` (numpy's `astype`); `to_i64` checks that `uint64`
/// values fit `i64`.
fn widen<'a, S: Pixel, T: ConvElem>(
    x: &ArrayViewD<'a, S>,
    name: &str,
    to_i64: bool,
) -> crate::Result<CowArray<'a, T, IxDyn>> {
    if to_i64 && x.iter().any(|v| !v.fits_i64()) {
        return Err(Error::invalid(format!(
            "{name} holds uint64 values of 2**63 or more; integer convolution is exact in \
             int64, so convert {name} to float64 first"
        )));
    }
    Ok(CowArray::from(x.mapv(T::from_pixel)))
}

macro_rules! impl_compute {
    ($t:ty, $own:ident, $int:expr) => {
        impl Compute for $t {
            fn from_view<'a>(
                v: PixelView<'a>,
                name: &str,
            ) -> crate::Result<CowArray<'a, Self, IxDyn>> {
                if let PixelView::$own(x) = v {
                    return Ok(CowArray::from(x));
                }
                on_view!(v, x => widen(&x, name, $int))
            }
        }
    };
}
impl_compute!(f32, F32, false);
impl_compute!(f64, F64, false);
impl_compute!(i64, I64, true);

fn stride_arg(obj: &Bound<'_, PyAny>) -> PyResult<usize> {
    args::usize_in(obj, "stride", 1, usize::MAX)
}

fn grayscale_arg(obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    args::flag(obj, "grayscale")
}

/// Checks that an image is 2-D `(H, W)` or 3-D `(H, W, C)`; true when 2-D.
fn image_is_2d(shape: &[usize]) -> PyResult<bool> {
    match shape.len() {
        2 => Ok(true),
        3 => Ok(false),
        _ => Err(PyValueError::new_err(format!(
            "image must be 2-D (H, W) or 3-D (H, W, C), got shape {}",
            shape_str(shape)
        ))),
    }
}

/// An image checked by [`image_is_2d`] as `(H, W, C)`.
fn hwc<T>(x: ArrayViewD<'_, T>) -> ArrayView3<'_, T> {
    if x.ndim() == 2 {
        x.into_dimensionality::<Ix2>()
            .expect("checked 2-D")
            .insert_axis(Axis(2))
    } else {
        x.into_dimensionality::<Ix3>().expect("checked 3-D")
    }
}

/// `out` as a numpy array, without its axis `drop` (the channel axis of a
/// 2-D image's result, or the bank axis of a single kernel's).
fn to_numpy<T: Element, D: Dimension + ndarray::RemoveAxis>(
    py: Python<'_>,
    out: ndarray::Array<T, D>,
    drop: Option<usize>,
) -> Bound<'_, PyAny> {
    match drop {
        Some(axis) => out.remove_axis(Axis(axis)).into_pyarray(py).into_any(),
        None => out.into_pyarray(py).into_any(),
    }
}

/// `mode=` of `create_padding`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PadModeArg {
    Constant,
    Reflect,
    Edge,
}

impl<'a, 'py> FromPyObject<'a, 'py> for PadModeArg {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        Ok(
            match args::choice(&obj, "mode", &["constant", "reflect", "edge"])? {
                "constant" => Self::Constant,
                "reflect" => Self::Reflect,
                _ => Self::Edge,
            },
        )
    }
}

/// `value=` of `create_padding`: an exact integer or a float.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fill {
    Int(i128),
    Float(f64),
}

impl<'a, 'py> FromPyObject<'a, 'py> for Fill {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        match args::exact_int(&obj, "value")? {
            Some(i) => Ok(Self::Int(i)),
            None => args::number(&obj, "value", false).map(Self::Float),
        }
    }
}

impl Fill {
    /// The value in the image's dtype, exactly, or an error naming `value`.
    fn to_pixel<T: Pixel>(self) -> crate::Result<T> {
        match self {
            Self::Int(i) => T::from_i128_exact(i, "value"),
            Self::Float(f) => T::from_f64_exact(f, "value"),
        }
    }
}

/// Pads both spatial axes of an image by ``d`` pixels on each side.
///
/// Parameters
/// ----------
/// image : array_like
///     ``(H, W)`` or ``(H, W, C)``, any real integer or float dtype.
/// d : int
///     Pixels added on each side, ``d >= 0``.
/// mode : {"constant", "reflect", "edge"}, default "constant"
///     How the border is filled, with the same results as ``numpy.pad``.
/// value : int or float, default 0
///     The fill value of ``"constant"``; must fit the image's dtype exactly
///     (integers are taken as integers, so int64 values above 2**53 stay exact).
///
/// Returns
/// -------
/// numpy.ndarray
///     ``(H + 2d, W + 2d[, C])`` with the image's dtype.
#[pyfunction]
#[pyo3(
    signature = (image, d, mode=PadModeArg::Constant, value=Fill::Int(0)),
    text_signature = "(image, d, mode='constant', value=0)"
)]
fn create_padding<'py>(
    py: Python<'py>,
    image: &Bound<'py, PyAny>,
    d: &Bound<'py, PyAny>,
    mode: PadModeArg,
    value: Fill,
) -> PyResult<Bound<'py, PyAny>> {
    let image = PixelArray::from_py(image, "image")?;
    let d = args::usize_in(d, "d", 0, usize::MAX)?;
    let view = image.view();
    let drop = image_is_2d(view.shape())?.then_some(2);
    on_view!(view, x => {
        let mode = match mode {
            PadModeArg::Constant => ops::PadMode::Constant(value.to_pixel()?),
            PadModeArg::Reflect => ops::PadMode::Reflect,
            PadModeArg::Edge => ops::PadMode::Edge,
        };
        let out = py.detach(|| ops::pad(hwc(x), ops::Pad::uniform(d), mode))?;
        Ok(to_numpy(py, out, drop))
    })
}

/// `padding=` of `convolution`: an int >= 0, "valid" or "same".
struct PaddingArg(Padding);

impl<'a, 'py> FromPyObject<'a, 'py> for PaddingArg {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        const ACCEPTED: &str = "an integer >= 0, \"valid\" or \"same\"";
        if obj.is_instance_of::<PyString>() {
            return match args::choice(&obj, "padding", &["valid", "same"]) {
                Ok("same") => Ok(Self(Padding::Same)),
                Ok(_) => Ok(Self(Padding::Explicit(0))),
                Err(_) => Err(PyValueError::new_err(format!(
                    "padding must be {ACCEPTED}, got {}",
                    args::short_repr(&obj)
                ))),
            };
        }
        match args::usize_in(&obj, "padding", 0, usize::MAX) {
            Ok(p) => Ok(Self(Padding::Explicit(p))),
            Err(e) if e.is_instance_of::<PyTypeError>(obj.py()) => Err(PyTypeError::new_err(
                format!("padding must be {ACCEPTED}, got {}", args::short_repr(&obj)),
            )),
            Err(_) => Err(PyValueError::new_err(format!(
                "padding must be {ACCEPTED}, got {}",
                args::short_repr(&obj)
            ))),
        }
    }
}

/// How the kernel argument is laid out relative to the image.
#[derive(Clone, Copy)]
struct KernelLayout {
    /// The image has no channel axis: the kernel has none either.
    image_2d: bool,
    /// The kernel is a bank `(n, ...)` of kernels.
    bank: bool,
}

impl KernelLayout {
    /// Checks the kernel's dimensionality against the image's (the channel
    /// count is the core's to check).
    fn of(kernel: &[usize], image: &[usize]) -> PyResult<Self> {
        let image_2d = image.len() == 2;
        let bank = match (image_2d, kernel.len()) {
            (true, 2) | (false, 3) => false,
            (true, 3) | (false, 4) => true,
            _ => {
                let want = if image_2d {
                    "2-D (kh, kw) or a 3-D bank (n, kh, kw)"
                } else {
                    "3-D (kh, kw, C) or a 4-D bank (n, kh, kw, C)"
                };
                return Err(PyValueError::new_err(format!(
                    "kernel must be {want} for a {}-D image of shape {}, got shape {}",
                    image.len(),
                    shape_str(image),
                    shape_str(kernel)
                )));
            }
        };
        Ok(Self { image_2d, bank })
    }

    /// The kernel as a bank `(n, kh, kw, C)`.
    fn bank_view<T>(self, k: ArrayViewD<'_, T>) -> ArrayView4<'_, T> {
        let last = Axis(k.ndim());
        let k = if self.image_2d {
            k.insert_axis(last)
        } else {
            k
        };
        let k = if self.bank { k } else { k.insert_axis(Axis(0)) };
        k.into_dimensionality::<Ix4>()
            .expect("checked by KernelLayout::of")
    }
}

fn run_conv<'py, T: Compute>(
    py: Python<'py>,
    image: PixelView<'_>,
    kernel: PixelView<'_>,
    layout: KernelLayout,
    params: &ConvParams,
) -> PyResult<Bound<'py, PyAny>> {
    let out = py.detach(|| {
        let x = T::from_view(image, "image")?;
        let k = T::from_view(kernel, "kernel")?;
        ops::conv2d(hwc(x.view()), layout.bank_view(k.view()), params)
    })?;
    Ok(to_numpy(py, out, (!layout.bank).then_some(0)))
}

/// Convolves an image with a kernel as deep learning does (cross-correlation,
/// the kernel is not flipped), summing over channels.
///
/// Parameters
/// ----------
/// image : array_like
///     ``(H, W)`` or ``(H, W, C)``, any real integer or float dtype.
/// kernel : array_like
///     ``(kh, kw)`` for a 2-D image, ``(kh, kw, C)`` for a 3-D one; or a bank of
///     ``n`` such kernels, ``(n, kh, kw)`` / ``(n, kh, kw, C)``. Non-square is fine.
/// stride : int, default 1
///     Step between windows along both axes, ``>= 1``.
/// padding : int or {"valid", "same"}, default 0
///     Zeros added on each side. ``"valid"`` is 0. ``"same"`` is TensorFlow/Keras'
///     rule: the output has ``ceil(H / stride)`` rows (``H`` with stride 1) and for
///     an even kernel the extra padding row/column goes at the bottom/right.
///
/// Returns
/// -------
/// numpy.ndarray
///     ``(H', W')``, or ``(n, H', W')`` for a bank, with
///     ``H' = (H + 2 * padding - kh) // stride + 1``. float32 stays float32,
///     float64 stays float64, integers give exact int64 (as ``numpy.einsum``;
///     inputs whose results could overflow int64 are a ValueError, never
///     wrapped); mixed dtypes promote as numpy does (int16 with float32 is
///     float32, int32 with float32 is float64).
#[pyfunction]
#[pyo3(
    signature = (image, kernel, stride=1, padding=PaddingArg(Padding::Explicit(0))),
    text_signature = "(image, kernel, stride=1, padding=0)"
)]
fn convolution<'py>(
    py: Python<'py>,
    image: &Bound<'py, PyAny>,
    kernel: &Bound<'py, PyAny>,
    #[pyo3(from_py_with = stride_arg)] stride: usize,
    padding: PaddingArg,
) -> PyResult<Bound<'py, PyAny>> {
    let image = PixelArray::from_py(image, "image")?;
    let kernel = PixelArray::from_py(kernel, "kernel")?;
    let params = ConvParams {
        stride,
        padding: padding.0,
    };
    let (x, k) = (image.view(), kernel.view());
    image_is_2d(x.shape())?;
    let layout = KernelLayout::of(k.shape(), x.shape())?;
    if x.is_int() && k.is_int() {
        run_conv::<i64>(py, x, k, layout, &params)
    } else if x.fits_f32() && k.fits_f32() {
        run_conv::<f32>(py, x, k, layout, &params)
    } else {
        run_conv::<f64>(py, x, k, layout, &params)
    }
}

/// `pooling_type=` of `pooling`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PoolType {
    Max,
    Average,
}

impl<'a, 'py> FromPyObject<'a, 'py> for PoolType {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let accepted = ["max_pooling", "avg_pooling", "max", "avg"];
        Ok(match args::choice(&obj, "pooling_type", &accepted)? {
            "max_pooling" | "max" => Self::Max,
            _ => Self::Average,
        })
    }
}

fn run_pool<'py, T: Pixel + Element>(
    py: Python<'py>,
    x: ArrayViewD<'_, T>,
    kind: PoolType,
    params: &ops::PoolParams,
    drop: Option<usize>,
) -> PyResult<Bound<'py, PyAny>>
where
    T::Avg: Element,
{
    Ok(match kind {
        PoolType::Max => to_numpy(py, py.detach(|| ops::max_pool(hwc(x), params))?, drop),
        PoolType::Average => to_numpy(py, py.detach(|| ops::avg_pool(hwc(x), params))?, drop),
    })
}

/// Max or average pooling over ``p × p`` windows, channel by channel.
///
/// Parameters
/// ----------
/// image : array_like
///     ``(H, W)`` or ``(H, W, C)``, any real integer or float dtype.
/// p : int
///     Window side, ``1 <= p <= min(H, W)``.
/// pooling_type : {"max_pooling", "avg_pooling", "max", "avg"}, default "max_pooling"
/// stride : int, default 1
///     Step between windows along both axes, ``>= 1``.
///
/// Returns
/// -------
/// numpy.ndarray
///     ``(H', W'[, C])`` with ``H' = (H - p) // stride + 1``. Max keeps the dtype
///     and propagates NaN like ``numpy.max``; average keeps float32/float64 and
///     gives float64 for integers, like ``numpy.mean``.
#[pyfunction]
#[pyo3(
    signature = (image, p, pooling_type=PoolType::Max, stride=1),
    text_signature = "(image, p, pooling_type='max_pooling', stride=1)"
)]
fn pooling<'py>(
    py: Python<'py>,
    image: &Bound<'py, PyAny>,
    p: &Bound<'py, PyAny>,
    pooling_type: PoolType,
    #[pyo3(from_py_with = stride_arg)] stride: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let image = PixelArray::from_py(image, "image")?;
    let params = ops::PoolParams {
        size: args::usize_in(p, "p", 1, usize::MAX)?,
        stride,
    };
    let view = image.view();
    let drop = image_is_2d(view.shape())?.then_some(2);
    on_view!(view, x => run_pool(py, x, pooling_type, &params, drop))
}

/// Reads a GIF, PNG, JPEG or BMP image into a ``uint8`` array.
///
/// Parameters
/// ----------
/// path : str or os.PathLike
/// grayscale : bool, default True
///     One luma channel, exactly as PIL's ``convert("L")`` (ITU-R 601:
///     ``L = (19595 R + 38470 G + 7471 B + 32768) >> 16``); otherwise RGB.
/// size : (int, int), optional
///     Resize to ``(width, height)`` (PIL's order) with a bilinear filter;
///     each side at most 32768 and at most 2**26 pixels.
///
/// Returns
/// -------
/// numpy.ndarray
///     ``(H, W)`` uint8 when grayscale, else ``(H, W, 3)``.
///
/// Raises
/// ------
/// FileNotFoundError
///     No file at ``path``.
/// cnnrs.DataFormatError
///     The file is not a GIF/PNG/JPEG/BMP image, is corrupt, or is larger
///     than cnnrs reads (256 MiB of file, 32768 pixels a side, 2**26 pixels).
#[pyfunction]
#[pyo3(signature = (path, *, grayscale=true, size=None))]
fn load_image<'py>(
    py: Python<'py>,
    path: PathBuf,
    #[pyo3(from_py_with = grayscale_arg)] grayscale: bool,
    size: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let size = match size {
        Some(s) if !s.is_none() => {
            let (w, h) = args::int_pair(s, "size", "(width, height)")?;
            Some(ops::image_io::check_size(w, h)?)
        }
        _ => None,
    };
    let opts = ops::LoadOptions { grayscale, size };
    let out = py.detach(|| ops::load_image(&path, &opts))?;
    Ok(to_numpy(py, out, grayscale.then_some(2)))
}

/// The instruction set the image kernels run with on this CPU
/// (``"avx512"``, ``"avx2+fma"`` or ``"baseline"``); for benchmark reports.
#[pyfunction]
#[pyo3(name = "_simd_isa")]
fn simd_isa() -> &'static str {
    ops::simd::Isa::detect().name()
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(create_padding, m)?)?;
    m.add_function(wrap_pyfunction!(convolution, m)?)?;
    m.add_function(wrap_pyfunction!(pooling, m)?)?;
    m.add_function(wrap_pyfunction!(load_image, m)?)?;
    m.add_function(wrap_pyfunction!(simd_isa, m)?)?;
    Ok(())
}
