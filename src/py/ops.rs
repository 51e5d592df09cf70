//! Bindings for `crate::ops`: `create_padding`, `convolution`, `pooling`,
//! `load_image`.
//!
//! Each wrapper turns its argument into a native-byte-order numpy array, picks
//! the element type with one `match` on the dtype, checks the shapes users get
//! wrong (with messages in their terms), and runs the core with the GIL
//! released.

use std::path::PathBuf;

use ndarray::{ArrayView3, ArrayView4, ArrayViewD, Axis, Ix2, Ix3, Ix4};
use numpy::{
    Element, IntoPyArray, PyArrayDescrMethods, PyReadonlyArrayDyn, PyUntypedArray,
    PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyString};

use crate::ops::{self, shape_str, ConvElem, ConvParams, Padding, Pixel};

/// The numpy dtypes the image operations accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dt {
    U8,
    U16,
    U32,
    U64,
    I8,
    I16,
    I32,
    I64,
    F32,
    F64,
}

impl Dt {
    fn of(kind: u8, size: usize) -> Option<Dt> {
        Some(match (kind, size) {
            (b'u', 1) => Dt::U8,
            (b'u', 2) => Dt::U16,
            (b'u', 4) => Dt::U32,
            (b'u', 8) => Dt::U64,
            (b'i', 1) => Dt::I8,
            (b'i', 2) => Dt::I16,
            (b'i', 4) => Dt::I32,
            (b'i', 8) => Dt::I64,
            (b'f', 4) => Dt::F32,
            (b'f', 8) => Dt::F64,
            _ => return None,
        })
    }

    fn is_int(self) -> bool {
        !matches!(self, Dt::F32 | Dt::F64)
    }

    /// Integers float32 holds exactly: numpy promotes them with float32 to float32.
    fn fits_f32(self) -> bool {
        matches!(self, Dt::U8 | Dt::U16 | Dt::I8 | Dt::I16 | Dt::F32)
    }
}

/// Runs `$body` with `$t` bound to the Rust type of `$dt`.
macro_rules! with_pixel {
    ($dt:expr, $t:ident => $body:expr) => {
        match $dt {
            Dt::U8 => {
                type $t = u8;
                $body
            }
            Dt::U16 => {
                type $t = u16;
                $body
            }
            Dt::U32 => {
                type $t = u32;
                $body
            }
            Dt::U64 => {
                type $t = u64;
                $body
            }
            Dt::I8 => {
                type $t = i8;
                $body
            }
            Dt::I16 => {
                type $t = i16;
                $body
            }
            Dt::I32 => {
                type $t = i32;
                $body
            }
            Dt::I64 => {
                type $t = i64;
                $body
            }
            Dt::F32 => {
                type $t = f32;
                $body
            }
            Dt::F64 => {
                type $t = f64;
                $body
            }
        }
    };
}

/// `obj` as a numpy array in native byte order and aligned, with its dtype.
/// Lists and other array-likes go through `numpy.asarray`; big-endian or
/// unaligned arrays are copied. Bool, complex, object, float16 and other
/// dtypes are a `TypeError` naming `name`.
fn as_numpy<'py>(
    obj: &Bound<'py, PyAny>,
    name: &str,
) -> PyResult<(Bound<'py, PyUntypedArray>, Dt)> {
    let py = obj.py();
    let mut arr = match obj.cast::<PyUntypedArray>() {
        Ok(a) => a.clone(),
        Err(_) => py
            .import("numpy")?
            .call_method1("asarray", (obj,))?
            .cast_into::<PyUntypedArray>()?,
    };
    let dtype = arr.dtype();
    let dt = Dt::of(dtype.kind(), dtype.itemsize()).ok_or_else(|| {
        PyTypeError::new_err(format!(
            "{name} must hold real numbers (an integer or float32/float64 dtype), got dtype {dtype}"
        ))
    })?;
    if dtype.is_native_byteorder() == Some(false) || !arr.is_aligned() {
        let native = dtype.call_method1("newbyteorder", ("=",))?;
        arr = arr
            .call_method1("astype", (native,))?
            .cast_into::<PyUntypedArray>()?;
    }
    Ok((arr, dt))
}

/// An input array in the compute type: borrowed from numpy when the dtype
/// already matches, converted otherwise.
enum Input<'py, T: Element> {
    Borrowed(PyReadonlyArrayDyn<'py, T>),
    Owned(ndarray::ArrayD<T>),
}

impl<'py, T: Element + ConvElem> Input<'py, T> {
    fn new(arr: &Bound<'py, PyUntypedArray>, dt: Dt) -> PyResult<Self> {
        if let Ok(ro) = arr.extract::<PyReadonlyArrayDyn<'py, T>>() {
            return Ok(Input::Borrowed(ro));
        }
        with_pixel!(dt, S => {
            let ro = arr.extract::<PyReadonlyArrayDyn<'py, S>>()?;
            Ok(Input::Owned(ro.as_array().mapv(T::from_pixel)))
        })
    }

    fn view(&self) -> ArrayViewD<'_, T> {
        match self {
            Input::Borrowed(ro) => ro.as_array(),
            Input::Owned(a) => a.view(),
        }
    }
}

/// A 2-D `(H, W)` or 3-D `(H, W, C)` image as `(H, W, C)`.
fn hwc<T>(x: ArrayViewD<'_, T>) -> PyResult<ArrayView3<'_, T>> {
    match x.ndim() {
        2 => Ok(x
            .into_dimensionality::<Ix2>()
            .expect("2-D")
            .insert_axis(Axis(2))),
        3 => Ok(x.into_dimensionality::<Ix3>().expect("3-D")),
        _ => Err(PyValueError::new_err(format!(
            "image must be 2-D (H, W) or 3-D (H, W, C), got shape {}",
            shape_str(x.shape())
        ))),
    }
}

fn check_ndim(arr: &Bound<'_, PyUntypedArray>) -> PyResult<()> {
    if matches!(arr.ndim(), 2 | 3) {
        Ok(())
    } else {
        Err(PyValueError::new_err(format!(
            "image must be 2-D (H, W) or 3-D (H, W, C), got shape {}",
            shape_str(arr.shape())
        )))
    }
}

fn positive(v: i64, name: &str) -> PyResult<usize> {
    usize::try_from(v)
        .ok()
        .filter(|&v| v >= 1)
        .ok_or_else(|| PyValueError::new_err(format!("{name} must be an integer >= 1, got {v}")))
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
///     The fill value of ``"constant"``; must fit the image's dtype.
///
/// Returns
/// -------
/// numpy.ndarray
///     ``(H + 2d, W + 2d[, C])`` with the image's dtype.
#[pyfunction]
#[pyo3(signature = (image, d, mode="constant", value=0.0), text_signature = "(image, d, mode='constant', value=0)")]
fn create_padding<'py>(
    py: Python<'py>,
    image: &Bound<'py, PyAny>,
    d: i64,
    mode: &str,
    value: f64,
) -> PyResult<Bound<'py, PyAny>> {
    let (arr, dt) = as_numpy(image, "image")?;
    check_ndim(&arr)?;
    let d = usize::try_from(d)
        .map_err(|_| PyValueError::new_err(format!("d must be an integer >= 0, got {d}")))?;
    let two_d = arr.ndim() == 2;
    with_pixel!(dt, T => {
        let ro = arr.extract::<PyReadonlyArrayDyn<'py, T>>()?;
        let x = hwc(ro.as_array())?;
        let mode = ops::PadMode::parse(mode, T::from_f64_exact(value, "value")?)?;
        let out = py.detach(|| ops::pad(x, ops::Pad::uniform(d), mode))?;
        Ok(if two_d {
            out.remove_axis(Axis(2)).into_pyarray(py).into_any()
        } else {
            out.into_pyarray(py).into_any()
        })
    })
}

/// `padding=`: an int >= 0, "valid" or "same".
fn parse_padding(padding: Option<&Bound<'_, PyAny>>) -> PyResult<Padding> {
    let Some(p) = padding else {
        return Ok(Padding::Explicit(0));
    };
    if let Ok(s) = p.cast::<PyString>() {
        return match s.to_cow()?.as_ref() {
            "valid" => Ok(Padding::Explicit(0)),
            "same" => Ok(Padding::Same),
            other => Err(PyValueError::new_err(format!(
                "padding must be an int >= 0, 'valid' or 'same', got {other:?}"
            ))),
        };
    }
    if p.is_instance_of::<PyBool>() {
        return Err(PyTypeError::new_err(
            "padding must be an int >= 0, 'valid' or 'same', got a bool",
        ));
    }
    let v: i64 = p.extract().map_err(|_| {
        PyTypeError::new_err(format!(
            "padding must be an int >= 0, 'valid' or 'same', got {}",
            p.get_type()
                .name()
                .map_or_else(|_| "?".into(), |n| n.to_string())
        ))
    })?;
    usize::try_from(v).map(Padding::Explicit).map_err(|_| {
        PyValueError::new_err(format!(
            "padding must be an int >= 0, 'valid' or 'same', got {v}"
        ))
    })
}

/// The kernel as a bank `(n, kh, kw, C)`, and whether it was a bank.
fn kernel_bank<'a, T>(
    k: ArrayViewD<'a, T>,
    image_shape: &[usize],
) -> PyResult<(ArrayView4<'a, T>, bool)> {
    let image_c = image_shape.get(2).copied();
    let bad = |want: &str| {
        PyValueError::new_err(format!(
            "kernel must be {want} for a {}-D image of shape {}, got shape {}",
            image_shape.len(),
            shape_str(image_shape),
            shape_str(k.shape())
        ))
    };
    let (bank, is_bank) = match (image_c, k.ndim()) {
        (None, 2) => (
            k.into_dimensionality::<Ix2>()
                .expect("2-D")
                .insert_axis(Axis(0))
                .insert_axis(Axis(3)),
            false,
        ),
        (None, 3) => (
            k.into_dimensionality::<Ix3>()
                .expect("3-D")
                .insert_axis(Axis(3)),
            true,
        ),
        (None, _) => return Err(bad("2-D (kh, kw) or a 3-D bank (n, kh, kw)")),
        (Some(_), 3) => (
            k.into_dimensionality::<Ix3>()
                .expect("3-D")
                .insert_axis(Axis(0)),
            false,
        ),
        (Some(_), 4) => (k.into_dimensionality::<Ix4>().expect("4-D"), true),
        (Some(_), _) => return Err(bad("3-D (kh, kw, C) or a 4-D bank (n, kh, kw, C)")),
    };
    if let Some(c) = image_c {
        let kc = bank.dim().3;
        if kc != c {
            return Err(PyValueError::new_err(format!(
                "kernel has {kc} channels (shape {}) but the image has {c} (shape {}); they must match",
                shape_str(bank.shape()).replacen("(1, ", "(", usize::from(!is_bank)),
                shape_str(image_shape)
            )));
        }
    }
    Ok((bank, is_bank))
}

fn run_conv<'py, T: Element + ConvElem>(
    py: Python<'py>,
    image: (&Bound<'py, PyUntypedArray>, Dt),
    kernel: (&Bound<'py, PyUntypedArray>, Dt),
    params: &ConvParams,
) -> PyResult<Bound<'py, PyAny>> {
    let x_in = Input::<T>::new(image.0, image.1)?;
    let k_in = Input::<T>::new(kernel.0, kernel.1)?;
    let xv = x_in.view();
    let image_shape = xv.shape().to_vec();
    let x = hwc(xv)?;
    let (k, is_bank) = kernel_bank(k_in.view(), &image_shape)?;
    let out = py.detach(|| ops::conv2d(x, k, params))?;
    Ok(if is_bank {
        out.into_pyarray(py).into_any()
    } else {
        out.remove_axis(Axis(0)).into_pyarray(py).into_any()
    })
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
///     float64 stays float64, integers give exact int64 (as ``numpy.einsum``);
///     mixed dtypes promote as numpy does (int16 with float32 is float32,
///     int32 with float32 is float64).
#[pyfunction]
#[pyo3(signature = (image, kernel, stride=1, padding=None), text_signature = "(image, kernel, stride=1, padding=0)")]
fn convolution<'py>(
    py: Python<'py>,
    image: &Bound<'py, PyAny>,
    kernel: &Bound<'py, PyAny>,
    stride: i64,
    padding: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let (img, img_dt) = as_numpy(image, "image")?;
    let (ker, ker_dt) = as_numpy(kernel, "kernel")?;
    check_ndim(&img)?;
    let params = ConvParams {
        stride: positive(stride, "stride")?,
        padding: parse_padding(padding)?,
    };
    let (i, k) = ((&img, img_dt), (&ker, ker_dt));
    if img_dt.is_int() && ker_dt.is_int() {
        run_conv::<i64>(py, i, k, &params)
    } else if img_dt.fits_f32() && ker_dt.fits_f32() {
        run_conv::<f32>(py, i, k, &params)
    } else {
        run_conv::<f64>(py, i, k, &params)
    }
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
#[pyo3(signature = (image, p, pooling_type="max_pooling", stride=1))]
fn pooling<'py>(
    py: Python<'py>,
    image: &Bound<'py, PyAny>,
    p: i64,
    pooling_type: &str,
    stride: i64,
) -> PyResult<Bound<'py, PyAny>> {
    let (arr, dt) = as_numpy(image, "image")?;
    check_ndim(&arr)?;
    let max = match pooling_type {
        "max_pooling" | "max" => true,
        "avg_pooling" | "avg" => false,
        other => {
            return Err(PyValueError::new_err(format!(
            "pooling_type must be 'max_pooling' or 'avg_pooling' (or 'max'/'avg'), got {other:?}"
        )))
        }
    };
    let params = ops::PoolParams {
        size: positive(p, "p")?,
        stride: positive(stride, "stride")?,
    };
    let two_d = arr.ndim() == 2;
    with_pixel!(dt, T => {
        let ro = arr.extract::<PyReadonlyArrayDyn<'py, T>>()?;
        let x = hwc(ro.as_array())?;
        if max {
            let out = py.detach(|| ops::max_pool(x, &params))?;
            Ok(if two_d { out.remove_axis(Axis(2)).into_pyarray(py).into_any() } else { out.into_pyarray(py).into_any() })
        } else {
            let out = py.detach(|| ops::avg_pool(x, &params))?;
            Ok(if two_d { out.remove_axis(Axis(2)).into_pyarray(py).into_any() } else { out.into_pyarray(py).into_any() })
        }
    })
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
///     Resize to ``(width, height)`` (PIL's order) with a bilinear filter.
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
///     The file is not a GIF/PNG/JPEG/BMP image or is corrupt.
#[pyfunction]
#[pyo3(signature = (path, grayscale=true, size=None))]
fn load_image(
    py: Python<'_>,
    path: PathBuf,
    grayscale: bool,
    size: Option<Vec<i64>>,
) -> PyResult<Bound<'_, PyAny>> {
    let size = match size.as_deref() {
        None => None,
        Some(&[w, h]) => {
            let side = |v: i64| u32::try_from(v).ok().filter(|&v| v >= 1);
            match (side(w), side(h)) {
                (Some(w), Some(h)) => Some((w, h)),
                _ => {
                    return Err(PyValueError::new_err(format!(
                        "size must be (width, height) with both >= 1, got ({w}, {h})"
                    )))
                }
            }
        }
        Some(other) => {
            return Err(PyValueError::new_err(format!(
                "size must be a pair (width, height), got {} values",
                other.len()
            )))
        }
    };
    let opts = ops::LoadOptions { grayscale, size };
    let out = py.detach(|| ops::load_image(&path, &opts))?;
    Ok(if grayscale {
        out.remove_axis(Axis(2)).into_pyarray(py).into_any()
    } else {
        out.into_pyarray(py).into_any()
    })
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
