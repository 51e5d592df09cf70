//! Bindings for `crate::nn::inspect` (feature maps, kernels, Grad-CAM,
//! saliency), called by `Network`'s inspection methods in `nn.rs`: each
//! extracts its arguments, reaches the model through `PyModel::with_model`
//! (the GIL released, read access) and returns numpy arrays.

use ndarray::{Array1, Array3, ArrayD};
use numpy::{IntoPyArray, PyArray1, PyArray3, PyArrayDyn};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use super::args;
use super::detached::Access;
use super::nn::PyModel;
use super::nn_args::{extract_images, images};
use super::progress::PyMonitor;
use crate::error::Error;
use crate::nn::inspect::{self, Array, Heatmaps, Target};

/// Images per chunk when the call names none: feature maps keep every
/// layer's activations of a chunk at once, heatmaps a backward pass.
const FEATURE_MAPS_BATCH: usize = 256;
const HEATMAPS_BATCH: usize = 64;

fn batch_arg(batch_size: Option<&Bound<'_, PyAny>>, default: usize) -> PyResult<usize> {
    batch_size.map_or(Ok(default), |b| args::usize_in(b, "batch_size", 1, 1 << 31))
}

/// `layers=`: None, one name, or a sequence of names.
fn layers_arg(layers: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Vec<String>>> {
    let Some(l) = layers.filter(|l| !l.is_none()) else {
        return Ok(None);
    };
    if let Ok(s) = l.cast::<PyString>() {
        return Ok(Some(vec![s.to_cow()?.into_owned()]));
    }
    l.extract::<Vec<String>>().map(Some).map_err(|_| {
        PyTypeError::new_err(format!(
            "layers must be None, a layer name or a list of names (see layer_names), got {}",
            args::short_repr(l)
        ))
    })
}

/// `layer=`: None or one name.
fn layer_arg(layer: Option<&Bound<'_, PyAny>>) -> PyResult<Option<String>> {
    let Some(l) = layer.filter(|l| !l.is_none()) else {
        return Ok(None);
    };
    l.extract::<String>().map(Some).map_err(|_| {
        PyTypeError::new_err(format!(
            "layer must be None or a layer name (see layer_names), got {}",
            args::short_repr(l)
        ))
    })
}

/// `class_index=`: None (each image's predicted class), one class for every
/// image, or one class per image.
fn target_arg(class_index: Option<&Bound<'_, PyAny>>) -> PyResult<Target> {
    let Some(c) = class_index.filter(|c| !c.is_none()) else {
        return Ok(Target::Predicted);
    };
    let negative = |v: i128| -> PyErr {
        Error::invalid(format!("class_index must be >= 0 (a class), got {v}")).into()
    };
    if let Some(v) = args::exact_int(c, "class_index")? {
        return usize::try_from(v)
            .map(Target::Class)
            .map_err(|_| negative(v));
    }
    let per_image: Vec<i64> = if c.is_instance_of::<PyString>() {
        None
    } else {
        c.extract().ok()
    }
    .ok_or_else(|| {
        PyTypeError::new_err(format!(
            "class_index must be None, an integer, or one integer per image, got {}",
            args::short_repr(c)
        ))
    })?;
    per_image
        .into_iter()
        .map(|v| usize::try_from(v).map_err(|_| negative(i128::from(v))))
        .collect::<PyResult<_>>()
        .map(Target::PerImage)
}

fn array(py: Python<'_>, a: Array) -> PyResult<Bound<'_, PyArrayDyn<f32>>> {
    let arr =
        ArrayD::from_shape_vec(a.shape, a.values).map_err(|e| Error::format(e.to_string()))?;
    Ok(arr.into_pyarray(py))
}

/// Heatmaps as (maps (N, H, W) float32, classes (N,) int64).
pub(super) type HeatmapArrays<'py> = (Bound<'py, PyArray3<f32>>, Bound<'py, PyArray1<i64>>);

fn heatmap_arrays(py: Python<'_>, h: Heatmaps) -> PyResult<HeatmapArrays<'_>> {
    let [n, rows, cols] = h.shape;
    let maps = Array3::from_shape_vec((n, rows, cols), h.values)
        .map_err(|e| Error::format(e.to_string()))?;
    Ok((
        maps.into_pyarray(py),
        Array1::from_vec(h.classes).into_pyarray(py),
    ))
}

pub(super) fn layer_names(net: &PyModel, py: Python<'_>) -> PyResult<Vec<String>> {
    net.with_model(py, "layer_names", Access::Read, |m| {
        Ok(inspect::layer_names(m)?)
    })
}

pub(super) fn feature_maps<'py>(
    net: &PyModel,
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    layers: Option<&Bound<'py, PyAny>>,
    batch_size: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let batch_size = batch_arg(batch_size, FEATURE_MAPS_BATCH)?;
    let layers = layers_arg(layers)?;
    let xa = extract_images(x, "images")?;
    let (xo, shape) = (xa.owned(), xa.shape());
    let mut monitor = PyMonitor::new(None);
    let r = net.with_model(py, "feature_maps", Access::Read, |m| {
        Ok(inspect::feature_maps(
            m,
            images(&xo, shape),
            layers.as_deref(),
            batch_size,
            &mut monitor,
        ))
    });
    let maps = monitor.finish(r?)?;
    let d = PyDict::new(py);
    for a in maps {
        d.set_item(a.name.clone(), array(py, a)?)?;
    }
    Ok(d)
}

pub(super) fn filters<'py>(
    net: &PyModel,
    py: Python<'py>,
    layer: Option<&Bound<'py, PyAny>>,
) -> PyResult<(String, Bound<'py, PyArrayDyn<f32>>)> {
    let layer = layer_arg(layer)?;
    let a = net.with_model(py, "filters", Access::Read, |m| {
        Ok(inspect::filters(m, layer.as_deref())?)
    })?;
    Ok((a.name.clone(), array(py, a)?))
}

pub(super) fn gradcam<'py>(
    net: &PyModel,
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    class_index: Option<&Bound<'py, PyAny>>,
    layer: Option<&Bound<'py, PyAny>>,
    normalize: bool,
    batch_size: Option<&Bound<'py, PyAny>>,
) -> PyResult<(HeatmapArrays<'py>, String)> {
    let batch_size = batch_arg(batch_size, HEATMAPS_BATCH)?;
    let (target, layer) = (target_arg(class_index)?, layer_arg(layer)?);
    let xa = extract_images(x, "images")?;
    let (xo, shape) = (xa.owned(), xa.shape());
    let mut monitor = PyMonitor::new(None);
    let r = net.with_model(py, "gradcam", Access::Read, |m| {
        Ok(inspect::gradcam(
            m,
            images(&xo, shape),
            &target,
            layer.as_deref(),
            normalize,
            batch_size,
            &mut monitor,
        ))
    });
    let mut h = monitor.finish(r?)?;
    let layer = h.layer.take().unwrap_or_default();
    Ok((heatmap_arrays(py, h)?, layer))
}

pub(super) fn saliency<'py>(
    net: &PyModel,
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    class_index: Option<&Bound<'py, PyAny>>,
    normalize: bool,
    batch_size: Option<&Bound<'py, PyAny>>,
) -> PyResult<HeatmapArrays<'py>> {
    let batch_size = batch_arg(batch_size, HEATMAPS_BATCH)?;
    let target = target_arg(class_index)?;
    let xa = extract_images(x, "images")?;
    let (xo, shape) = (xa.owned(), xa.shape());
    let mut monitor = PyMonitor::new(None);
    let r = net.with_model(py, "saliency", Access::Read, |m| {
        Ok(inspect::saliency(
            m,
            images(&xo, shape),
            &target,
            normalize,
            batch_size,
            &mut monitor,
        ))
    });
    heatmap_arrays(py, monitor.finish(r?)?)
}
