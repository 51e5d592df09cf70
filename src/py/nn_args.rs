//! What `Network`'s arguments become: images and labels borrowed from numpy,
//! layer specs, and the fixed-choice arguments (device, precision, tta) parsed
//! once into Rust enums by `FromPyObject`.

use std::borrow::Cow;

use numpy::{PyReadonlyArray1, PyReadonlyArray4, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};

use super::args;
use crate::error::Error;
use crate::nn::arch::Layer;
use crate::nn::config::{Architecture, Given, MuonGiven};
use crate::nn::device;
use crate::nn::input::{Images, Pixels};
use crate::nn::muon::{AdjustLr, Variant, ADJUST_LR, MAX_NS_STEPS, VARIANTS};
use crate::nn::optim::{OptimizerKind, OPTIMIZERS};
use crate::nn::precision::{Precision, PRECISIONS};
use crate::nn::spec::{parse_specs, SpecArg};
use crate::nn::tta::Tta;

/// Images as numpy gave them: uint8 or float32 (N, H, W, C).
pub(super) enum ImageArg<'py> {
    U8(PyReadonlyArray4<'py, u8>),
    F32(PyReadonlyArray4<'py, f32>),
}

/// The images' pixels, borrowed when contiguous, else copied in order.
pub(super) enum Owned<'a> {
    U8(Cow<'a, [u8]>),
    F32(Cow<'a, [f32]>),
}

pub(super) fn contiguous<T: Copy, D: ndarray::Dimension>(
    v: ndarray::ArrayView<'_, T, D>,
) -> Cow<'_, [T]> {
    match v.to_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(v.iter().copied().collect()),
    }
}

pub(super) fn extract_images<'py>(x: &Bound<'py, PyAny>, what: &str) -> PyResult<ImageArg<'py>> {
    if let Ok(a) = x.extract::<PyReadonlyArray4<'py, u8>>() {
        return Ok(ImageArg::U8(a));
    }
    if let Ok(a) = x.extract::<PyReadonlyArray4<'py, f32>>() {
        return Ok(ImageArg::F32(a));
    }
    Err(PyTypeError::new_err(format!(
        "{what} must be a 4-D uint8 or float32 array (N, H, W, C)"
    )))
}

impl ImageArg<'_> {
    pub(super) fn shape(&self) -> [usize; 4] {
        let s = match self {
            ImageArg::U8(a) => a.shape(),
            ImageArg::F32(a) => a.shape(),
        };
        [s[0], s[1], s[2], s[3]]
    }

    pub(super) fn owned(&self) -> Owned<'_> {
        match self {
            ImageArg::U8(a) => Owned::U8(contiguous(a.as_array())),
            ImageArg::F32(a) => Owned::F32(contiguous(a.as_array())),
        }
    }
}

pub(super) fn images<'a>(data: &'a Owned<'_>, shape: [usize; 4]) -> Images<'a> {
    let pixels = match data {
        Owned::U8(d) => Pixels::U8(d),
        Owned::F32(d) => Pixels::F32(d),
    };
    Images { pixels, shape }
}

pub(super) fn labels<'a>(y: &'a PyReadonlyArray1<'_, i64>) -> Cow<'a, [i64]> {
    contiguous(y.as_array())
}

pub(super) fn spec_arg(v: &Bound<'_, PyAny>, layer: usize) -> PyResult<SpecArg> {
    if v.is_instance_of::<pyo3::types::PyBool>() {
        return Err(Error::invalid(format!("layer {layer}: unexpected boolean argument")).into());
    }
    if let Ok(i) = v.extract::<i64>() {
        return Ok(SpecArg::Int(i));
    }
    if let Ok(f) = v.extract::<f64>() {
        return Ok(SpecArg::Float(f));
    }
    if let Ok(s) = v.extract::<String>() {
        return Ok(SpecArg::Str(s));
    }
    Err(Error::invalid(format!(
        "layer {layer}: arguments must be numbers or strings, got {}",
        v.get_type().name()?
    ))
    .into())
}

/// A built-in name or a list of layer tuples, as layer specs.
pub(super) fn architecture_arg(a: &Bound<'_, PyAny>) -> PyResult<Architecture> {
    if let Ok(name) = a.cast::<PyString>() {
        return Ok(Architecture::Named(name.to_cow()?.into_owned()));
    }
    let Ok(items) = a.try_iter() else {
        return Err(PyTypeError::new_err(
            "architecture must be a built-in name (str) or a list of layer tuples such as \
             [(\"conv\", 32), (\"maxpool\", 2), (\"flatten\",), (\"dense\", 128)]",
        ));
    };
    Ok(Architecture::Layers(layer_list(items)?))
}

/// The settings `cnnrs.Model(...)` passes on (the keywords a user gave, by
/// name); everything else takes the recipe's or Keras's default.
pub const MODEL_SETTINGS: [&str; 8] = [
    "learning_rate",
    "precision",
    "optimizer",
    "momentum",
    "nesterov",
    "weight_decay",
    "label_smoothing",
    "augment",
];

/// Parses the settings dict into [`Given`], each value checked and named.
pub(super) fn given_arg(settings: Option<&Bound<'_, PyDict>>, seed: u64) -> PyResult<Given> {
    let mut given = Given {
        seed,
        ..Given::default()
    };
    let Some(settings) = settings else {
        return Ok(given);
    };
    // cnnrs.optimizers.Muon(...)'s settings, read after the rest so a setting
    // given both ways is refused whatever the dict's order.
    let mut muon = None;
    for (key, v) in settings.iter() {
        let key = args::str_key(&key, "settings")?;
        if v.is_none() {
            continue;
        }
        match key.as_str() {
            "learning_rate" => given.learning_rate = Some(args::positive_number(&v, &key)?),
            "precision" => given.precision = Some(v.extract::<PrecisionArg>()?.0),
            "optimizer" => {
                if let Ok(d) = v.cast::<PyDict>() {
                    given.optimizer = Some(OptimizerKind::Muon);
                    muon = Some(d.clone());
                } else {
                    given.optimizer =
                        Some(OptimizerKind::parse(args::choice(&v, &key, &OPTIMIZERS)?)?);
                }
            }
            "momentum" => given.momentum = Some(args::number(&v, &key, true)?),
            "nesterov" => given.nesterov = Some(args::flag(&v, &key)?),
            "weight_decay" => given.weight_decay = Some(args::number(&v, &key, true)?),
            "label_smoothing" => given.label_smoothing = Some(args::number(&v, &key, true)?),
            "augment" => given.augment = Some(augment_arg(&v)?),
            other => {
                return Err(PyTypeError::new_err(format!(
                    "Model() got an unexpected setting {other:?}; accepted: {}",
                    MODEL_SETTINGS.join(", ")
                )))
            }
        }
    }
    if let Some(d) = muon {
        given.muon = Some(muon_arg(&d, &mut given)?);
    }
    Ok(given)
}

/// Muon's settings as `cnnrs.optimizers.Muon` passes them: its momentum,
/// Nesterov and weight decay go where the keywords of the same names do (a
/// setting given both ways is refused), the rest into [`MuonGiven`].
fn muon_arg(d: &Bound<'_, PyDict>, given: &mut Given) -> PyResult<MuonGiven> {
    let mut m = MuonGiven::default();
    for (key, v) in d.iter() {
        let key = args::str_key(&key, "Muon's settings")?;
        if v.is_none() {
            continue;
        }
        let name = format!("Muon's {key}");
        let twice = |set: bool| -> PyResult<()> {
            if set {
                return Err(PyValueError::new_err(format!(
                    "{key} was given both to Model() and to cnnrs.optimizers.Muon(); give it once"
                )));
            }
            Ok(())
        };
        match key.as_str() {
            "momentum" => {
                twice(given.momentum.is_some())?;
                given.momentum = Some(args::number(&v, &name, true)?);
            }
            "nesterov" => {
                twice(given.nesterov.is_some())?;
                given.nesterov = Some(args::flag(&v, &name)?);
            }
            "weight_decay" => {
                twice(given.weight_decay.is_some())?;
                given.weight_decay = Some(args::number(&v, &name, true)?);
            }
            "variant" => {
                m.variant = Some(Variant::parse(args::choice(&v, &name, &VARIANTS)?)?);
            }
            "ns_steps" => {
                m.ns_steps = Some(args::int_in(&v, &name, 1, MAX_NS_STEPS as i64)? as usize);
            }
            "adjust_lr" => {
                m.adjust_lr = Some(AdjustLr::parse(args::choice(&v, &name, &ADJUST_LR)?)?);
            }
            "renormalize" => m.renormalize = Some(args::flag(&v, &name)?),
            "dense" => m.dense = Some(args::flag(&v, &name)?),
            "fallback" => {
                // "muon" parses; the core refuses it, naming the choices.
                m.fallback = Some(OptimizerKind::parse(args::choice(&v, &name, &OPTIMIZERS)?)?);
            }
            "fallback_lr_ratio" => m.fallback_lr_ratio = Some(args::number(&v, &name, true)?),
            "fallback_momentum" => m.fallback_momentum = Some(args::number(&v, &name, true)?),
            "fallback_nesterov" => m.fallback_nesterov = Some(args::flag(&v, &name)?),
            "fallback_weight_decay" => {
                m.fallback_weight_decay = Some(args::number(&v, &name, true)?);
            }
            other => {
                return Err(PyTypeError::new_err(format!(
                    "Muon got an unexpected setting {other:?}; accepted: {}",
                    MUON_SETTINGS.join(", ")
                )))
            }
        }
    }
    Ok(m)
}

/// The settings `cnnrs.optimizers.Muon` takes (`_core.MUON_SETTINGS`).
pub const MUON_SETTINGS: [&str; 13] = [
    "momentum",
    "nesterov",
    "weight_decay",
    "variant",
    "ns_steps",
    "adjust_lr",
    "renormalize",
    "dense",
    "fallback",
    "fallback_lr_ratio",
    "fallback_momentum",
    "fallback_nesterov",
    "fallback_weight_decay",
];

/// `augment=`: augmentation layer tuples put in front of the architecture.
pub(super) fn augment_arg(a: &Bound<'_, PyAny>) -> PyResult<Vec<Layer>> {
    let items = match a.try_iter() {
        Ok(items) if !a.is_instance_of::<PyString>() => items,
        _ => {
            return Err(PyTypeError::new_err(format!(
                "augment must be a list of augmentation tuples such as \
                 [(\"random_flip\", \"horizontal\"), (\"random_crop\", 4)], got {}",
                args::short_repr(a)
            )))
        }
    };
    let items: Vec<Bound<'_, PyAny>> = items.collect::<PyResult<_>>()?;
    if items.is_empty() {
        // `augment=[]`: none (also turns a recipe's augmentation off).
        return Ok(Vec::new());
    }
    // layer_list names items as an architecture's ("layer 2: ..."); here they are the
    // user's augment list.
    let layers = layer_list(PyList::new(a.py(), items)?.as_any().try_iter()?).map_err(|e| {
        let py = a.py();
        let msg = e.value(py).to_string();
        match msg
            .strip_prefix("layer ")
            .and_then(|rest| rest.split_once(": "))
        {
            Some((i, detail)) => Error::invalid(format!("augment[{i}]: {detail}")).into(),
            None => e,
        }
    })?;
    if let Some((i, l)) = layers
        .iter()
        .enumerate()
        .find(|(_, l)| !l.is_augmentation())
    {
        return Err(Error::invalid(format!(
            "augment[{i}] is not an augmentation ({l:?}); accepted: \"random_flip\", \
             \"random_crop\", \"random_translation\", \"cutout\", \"alternating_flip\""
        ))
        .into());
    }
    Ok(layers)
}

/// Layer tuples as layer specs.
pub(super) fn layer_list(items: Bound<'_, pyo3::types::PyIterator>) -> PyResult<Vec<Layer>> {
    let mut specs = Vec::new();
    for (i, item) in items.enumerate() {
        let item = item?;
        let parts: Vec<Bound<'_, PyAny>> = if let Ok(s) = item.cast::<PyString>() {
            vec![s.clone().into_any()]
        } else if let Ok(t) = item.cast::<PyTuple>() {
            t.iter().collect()
        } else if let Ok(l) = item.cast::<PyList>() {
            l.iter().collect()
        } else {
            return Err(Error::invalid(format!(
                "layer {i}: each layer must be a tuple like (\"conv\", 32), got {}",
                item.repr()?
            ))
            .into());
        };
        let Some((kind, args)) = parts.split_first() else {
            return Err(Error::invalid(format!("layer {i}: empty layer tuple")).into());
        };
        let kind: String = kind.extract().map_err(|_| {
            Error::invalid(format!(
                "layer {i}: the first item must be the layer type (a str)"
            ))
        })?;
        let args = args
            .iter()
            .map(|v| spec_arg(v, i))
            .collect::<PyResult<_>>()?;
        specs.push((kind.to_lowercase(), args));
    }
    Ok(parse_specs(&specs)?)
}

/// `"fp32" | "bf16" | "fp16" | "auto"`, parsed once at the boundary.
pub(super) struct PrecisionArg(pub(super) Precision);

impl<'a, 'py> FromPyObject<'a, 'py> for PrecisionArg {
    type Error = PyErr;
    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let s = args::choice(&obj, "precision", &PRECISIONS)?;
        Ok(PrecisionArg(Precision::parse(s)?))
    }
}

/// `"auto" | "cpu" | "cuda" | "cuda:N"`, parsed once at the boundary.
pub(super) struct DeviceArg(pub(super) tch::Device);

impl<'a, 'py> FromPyObject<'a, 'py> for DeviceArg {
    type Error = PyErr;
    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let Ok(s) = obj.cast::<PyString>() else {
            return Err(PyTypeError::new_err(format!(
                "device must be \"auto\", \"cpu\", \"cuda\" or \"cuda:N\", got {}",
                args::short_repr(&obj)
            )));
        };
        let s = s.to_cow()?;
        Ok(DeviceArg(obj.py().detach(|| device::parse_device(&s))?))
    }
}

/// `tta="none" | "flip" | "flip_translate"`, parsed once at the boundary.
pub(super) struct TtaArg(pub(super) Tta);

impl<'a, 'py> FromPyObject<'a, 'py> for TtaArg {
    type Error = PyErr;
    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let s = args::choice(&obj, "tta", &Tta::NAMES)?;
        Ok(TtaArg(Tta::parse(s)?))
    }
}
