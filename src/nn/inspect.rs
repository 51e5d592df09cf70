//! Looking inside a trained network: the activations after each layer
//! (feature maps), a convolution's learned kernels, Grad-CAM heatmaps
//! (Selvaraju et al., 2017) and input-gradient saliency (Simonyan et al.,
//! 2014).
//!
//! Everything runs on the model's device, with its normalisation and its
//! precision, in inference mode (no dropout, batch norm with its running
//! averages, no test-time augmentation), chunk by chunk so a huge batch never
//! sits on the device at once, and comes back as float32 in Keras's layouts:
//! feature maps `(N, H, W, C)`, vectors `(N, units)`, kernels `(kh, kw, in, out)`.
//!
//! Gradients are taken with `torch.autograd.grad`'s semantics
//! ([`Tensor::f_run_backward`]): only the tensors asked for receive them, so
//! the weights' own gradients (the optimiser's business) are never touched.

use tch::{Device, Kind, Tensor};

use super::built::Built;
use super::device::PREFERRED_LAYOUT;
use super::input::{DeviceNormalization, Images, Pixels};
use super::model::Model;
use super::network::{LayerRole, Network};
use super::train::{BatchProgress, Monitor};
use crate::error::{Error, Result};

/// The most float32 values one `feature_maps` call returns (4 GiB): every
/// layer of a large batch would otherwise allocate until the machine gives up.
pub const MAX_OUTPUT_VALUES: usize = 1 << 30;

/// One named array: shape and row-major float32 values.
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// Which class a heatmap explains.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The model's own prediction for each image (its plain forward pass).
    Predicted,
    /// The same class for every image.
    Class(usize),
    /// One class per image.
    PerImage(Vec<usize>),
}

/// One heatmap per image, `(N, H, W)` at the input's size.
#[derive(Clone, Debug, PartialEq)]
pub struct Heatmaps {
    pub shape: [usize; 3],
    pub values: Vec<f32>,
    /// The class each heatmap explains.
    pub classes: Vec<i64>,
    /// Grad-CAM's layer (None for saliency).
    pub layer: Option<String>,
}

/// The layers an inspection may name: every layer that computes at inference
/// (the augmentation layers, which pass images through there, are left out).
fn inspectable(net: &Network) -> Vec<usize> {
    (0..net.layer_names().len())
        .filter(|&i| !matches!(net.layer_role(i), LayerRole::Augmentation))
        .collect()
}

/// The names of `indices`, quoted, for error messages.
fn quoted(net: &Network, indices: &[usize]) -> String {
    let names: Vec<String> = indices
        .iter()
        .map(|&i| format!("{:?}", net.layer_names()[i]))
        .collect();
    format!("[{}]", names.join(", "))
}

/// The index of the layer called `name`, or an error listing the valid names.
fn layer_index(net: &Network, name: &str, what: &str) -> Result<usize> {
    let valid = inspectable(net);
    valid
        .iter()
        .copied()
        .find(|&i| net.layer_names()[i] == name)
        .ok_or_else(|| {
            Error::invalid(format!(
                "{what}: unknown layer {name:?}; the model's layers are {}",
                quoted(net, &valid)
            ))
        })
}

/// The model's parts once it has weights.
fn weights<'a>(m: &'a Model, what: &str) -> Result<&'a Built> {
    m.built().ok_or_else(|| {
        Error::invalid(format!(
            "{what}: the model has no weights yet; call fit first (or build it with \
             input_shape and num_classes)"
        ))
    })
}

/// The model's parts once it is trained, with `x` checked against its input.
fn trained<'a>(m: &'a Model, x: &Images, batch_size: usize, what: &str) -> Result<&'a Built> {
    if batch_size == 0 {
        return Err(Error::invalid(format!(
            "{what}: batch_size must be >= 1, got 0"
        )));
    }
    let b = weights(m, what)?;
    if b.normalization.is_none() {
        return Err(Error::invalid(format!(
            "{what}: the model has not been trained yet (it has no input normalisation); \
             call fit first"
        )));
    }
    x.validate("images")?;
    if x.image_shape() != b.input_shape {
        return Err(Error::invalid(format!(
            "{what}: images must be of shape (N, {}, {}, {}) as the model was trained on, got \
             (N, {}, {}, {})",
            b.input_shape[0],
            b.input_shape[1],
            b.input_shape[2],
            x.shape[1],
            x.shape[2],
            x.shape[3]
        )));
    }
    Ok(b)
}

/// The output shape the plan gives layer `name`, without the batch axis.
fn output_shape(b: &Built, name: &str) -> Vec<usize> {
    b.plan
        .layers
        .iter()
        .find(|l| l.name == name)
        .map(|l| l.output_shape.clone())
        .expect("every layer of the network is in its plan")
}

/// Images `start..start + len` of `x`.
fn rows<'a>(x: &Images<'a>, start: usize, len: usize) -> Images<'a> {
    let per: usize = x.shape[1..].iter().product();
    let range = start * per..(start + len) * per;
    let pixels = match x.pixels {
        Pixels::U8(p) => Pixels::U8(&p[range]),
        Pixels::F32(p) => Pixels::F32(&p[range]),
    };
    Images {
        pixels,
        shape: [len, x.shape[1], x.shape[2], x.shape[3]],
    }
}

/// `(start, len)` of each chunk of `n` images in chunks of `batch_size`.
fn chunks(n: usize, batch_size: usize) -> Vec<(usize, usize)> {
    (0..n.div_ceil(batch_size))
        .map(|i| (i * batch_size, batch_size.min(n - i * batch_size)))
        .collect()
}

/// A chunk of images as the network's normalised float32 input.
fn network_input(x: &Images, norm: &DeviceNormalization, device: Device) -> Result<Tensor> {
    norm.batch(&x.to_device(device)?, PREFERRED_LAYOUT)
}

/// An activation as float32 on the CPU in Keras's layout, flattened.
fn keras_values(t: &Tensor) -> Result<Vec<f32>> {
    let t = t.f_to_kind(Kind::Float)?.f_to_device(Device::Cpu)?;
    let t = if t.dim() == 4 {
        t.f_permute([0, 2, 3, 1])?
    } else {
        t
    };
    Ok(Vec::<f32>::try_from(t.f_contiguous()?.f_flatten(0, -1)?)?)
}

/// The names of the layers [`feature_maps`] and [`gradcam`] accept, in order.
///
/// # Errors
/// `InvalidArgument` before the model has weights.
pub fn layer_names(m: &Model) -> Result<Vec<String>> {
    let net = &weights(m, "layer_names")?.net;
    Ok(inspectable(net)
        .into_iter()
        .map(|i| net.layer_names()[i].clone())
        .collect())
}

/// The activations after each of `layers` (None: every layer of
/// [`layer_names`]) for images `x`, in the order asked, computed `batch_size`
/// images at a time.
///
/// # Errors
/// `InvalidArgument` for an untrained model, images of another shape, an
/// unknown layer or an output beyond [`MAX_OUTPUT_VALUES`]; whatever the
/// monitor returns; libtorch failures.
pub fn feature_maps(
    m: &Model,
    x: Images,
    layers: Option<&[String]>,
    batch_size: usize,
    monitor: &mut dyn Monitor,
) -> Result<Vec<Array>> {
    let what = "feature_maps";
    let b = trained(m, &x, batch_size, what)?;
    let net = &b.net;
    let wanted = match layers {
        None => inspectable(net),
        Some([]) => return Err(Error::invalid(format!("{what}: layers is empty"))),
        Some(names) => names
            .iter()
            .map(|n| layer_index(net, n, what))
            .collect::<Result<_>>()?,
    };
    let n = x.len();
    let mut out: Vec<Array> = wanted
        .iter()
        .map(|&i| {
            let name = net.layer_names()[i].clone();
            let mut shape = output_shape(b, &name);
            shape.insert(0, n);
            Array {
                name,
                shape,
                values: Vec::new(),
            }
        })
        .collect();
    let total = out.iter().try_fold(0usize, |acc, a| {
        a.shape
            .iter()
            .try_fold(1usize, |p, &d| p.checked_mul(d))
            .and_then(|v| acc.checked_add(v))
    });
    match total {
        Some(t) if t <= MAX_OUTPUT_VALUES => {
            for a in &mut out {
                a.values.reserve_exact(a.shape.iter().product());
            }
        }
        _ => {
            return Err(Error::invalid(format!(
                "{what}: {n} images through {} layers would return more than {MAX_OUTPUT_VALUES} \
                 values (4 GiB); ask for fewer images or name fewer layers",
                out.len()
            )))
        }
    }
    let last = *wanted.iter().max().expect("at least one layer");
    let device = m.device();
    let norm = b.normalization.as_ref().expect("trained").on(device)?;
    let autocast = m.precision().autocast();
    let parts = chunks(n, batch_size);
    for (k, &(start, len)) in parts.iter().enumerate() {
        let xb = network_input(&rows(&x, start, len), &norm, device)?;
        tch::no_grad(|| {
            autocast.run(device, || -> Result<()> {
                let mut h = xb;
                for i in 0..=last {
                    h = net.run_layer(i, &h)?;
                    for (a, _) in out.iter_mut().zip(&wanted).filter(|(_, &w)| w == i) {
                        a.values.extend(keras_values(&h)?);
                    }
                }
                Ok(())
            })
        })??;
        monitor.batch(&BatchProgress::inference(k, parts.len()))?;
    }
    for a in &out {
        assert_eq!(a.values.len(), a.shape.iter().product::<usize>());
    }
    Ok(out)
}

/// The learned kernels of convolution `layer` (None: the first learned
/// convolution; airbench's frozen whitening layer is skipped, but may be
/// named) as `(kh, kw, in, out)`; a conv group's are its first convolution's.
///
/// # Errors
/// `InvalidArgument` before the model has weights, for an unknown layer or a
/// layer without kernels (listing the ones with them).
pub fn filters(m: &Model, layer: Option<&str>) -> Result<Array> {
    let what = "filters";
    let net = &weights(m, what)?.net;
    let convs: Vec<usize> = (0..net.layer_names().len())
        .filter(|&i| matches!(net.layer_role(i), LayerRole::Convolution { .. }))
        .collect();
    let i = match layer {
        Some(name) => {
            let i = layer_index(net, name, what)?;
            if !convs.contains(&i) {
                return Err(Error::invalid(format!(
                    "{what}: layer {name:?} has no convolution kernels; the model's \
                     convolutions are {}",
                    quoted(net, &convs)
                )));
            }
            i
        }
        None => convs
            .iter()
            .copied()
            .find(|&i| {
                matches!(
                    net.layer_role(i),
                    LayerRole::Convolution { learned: true, .. }
                )
            })
            .or_else(|| convs.first().copied())
            .ok_or_else(|| Error::invalid(format!("{what}: the model has no convolution")))?,
    };
    let LayerRole::Convolution { weight, .. } = net.layer_role(i) else {
        unreachable!("checked above")
    };
    let w = tch::no_grad(|| -> Result<Tensor> {
        Ok(weight
            .f_to_kind(Kind::Float)?
            .f_to_device(Device::Cpu)?
            .f_permute([2, 3, 1, 0])?
            .f_contiguous()?)
    })?;
    let shape = w.size().iter().map(|&d| d as usize).collect();
    Ok(Array {
        name: net.layer_names()[i].clone(),
        shape,
        values: Vec::<f32>::try_from(w.f_flatten(0, -1)?)?,
    })
}

/// The classes `target` asks of images `start..start + len`, given their logits.
fn classes(target: &Target, logits: &Tensor, start: usize, len: usize) -> Result<Tensor> {
    let device = logits.device();
    Ok(match target {
        Target::Predicted => logits.f_argmax(-1, false)?,
        Target::Class(c) => Tensor::f_full([len as i64], *c as i64, (Kind::Int64, device))?,
        Target::PerImage(cs) => {
            let cs: Vec<i64> = cs[start..start + len].iter().map(|&c| c as i64).collect();
            Tensor::f_from_slice(&cs)?.f_to_device(device)?
        }
    })
}

/// Checks `target` against `n` images and the model's classes.
fn check_target(target: &Target, n: usize, k: usize, what: &str) -> Result<()> {
    let bad = |c: usize| {
        Error::invalid(format!(
            "{what}: class_index {c} is out of range; the model has {k} classes [0, {k})"
        ))
    };
    match target {
        Target::Class(c) if *c >= k => Err(bad(*c)),
        Target::Predicted | Target::Class(_) => Ok(()),
        Target::PerImage(cs) if cs.len() != n => Err(Error::invalid(format!(
            "{what}: class_index has {} classes but images has {n} images; give one class, \
             one per image, or None (each image's predicted class)",
            cs.len()
        ))),
        Target::PerImage(cs) => cs
            .iter()
            .find(|&&c| c >= k)
            .map_or(Ok(()), |&c| Err(bad(c))),
    }
}

/// Each row of `maps` (N, H, W) divided by its largest value (all-zero rows stay 0).
fn scaled(maps: &Tensor) -> Result<Tensor> {
    let peak = maps
        .f_amax([1i64, 2].as_slice(), true)?
        .f_clamp_min(f64::from(f32::MIN_POSITIVE))?;
    Ok(maps.f_div(&peak)?)
}

/// The gradient of the summed target scores (logits) w.r.t. `input`.
fn score_gradient(
    logits: &Tensor,
    input: &Tensor,
    target: &Target,
    start: usize,
    len: usize,
) -> Result<(Tensor, Tensor)> {
    let logits = logits.f_to_kind(Kind::Float)?;
    let cls = classes(target, &logits, start, len)?;
    let score = logits
        .f_gather(1, &cls.f_unsqueeze(1)?, false)?
        .f_sum(Kind::Float)?;
    let mut grads = Tensor::f_run_backward(&[&score], &[input], false, false)?;
    Ok((grads.pop().expect("one input, one gradient"), cls))
}

/// Grad-CAM heatmaps of `x` for `target` at conv-like `layer` (None: the last
/// convolution): the target logit's gradients w.r.t. the layer's activations,
/// averaged over each channel's positions, weight the channels; their sum,
/// through a ReLU, is upsampled (bilinear, `align_corners=False`) to the
/// input's size and, with `normalize`, divided by each map's maximum.
///
/// # Errors
/// As [`feature_maps`], and `InvalidArgument` for a layer without spatial
/// output or classes out of range.
#[allow(clippy::too_many_arguments)]
pub fn gradcam(
    m: &Model,
    x: Images,
    target: &Target,
    layer: Option<&str>,
    normalize: bool,
    batch_size: usize,
    monitor: &mut dyn Monitor,
) -> Result<Heatmaps> {
    let what = "gradcam";
    let b = trained(m, &x, batch_size, what)?;
    let net = &b.net;
    let spatial: Vec<usize> = inspectable(net)
        .into_iter()
        .filter(|&i| output_shape(b, &net.layer_names()[i]).len() == 3)
        .collect();
    let li = match layer {
        Some(name) => {
            let i = layer_index(net, name, what)?;
            if !spatial.contains(&i) {
                return Err(Error::invalid(format!(
                    "{what}: layer {name:?} outputs {:?}, not feature maps (H, W, C); \
                     Grad-CAM weighs the maps of one of {}",
                    output_shape(b, name),
                    quoted(net, &spatial)
                )));
            }
            i
        }
        None => spatial
            .iter()
            .copied()
            .rev()
            .find(|&i| matches!(net.layer_role(i), LayerRole::Convolution { .. }))
            .ok_or_else(|| {
                Error::invalid(format!(
                    "{what}: the model has no convolution; name a layer of {}",
                    quoted(net, &spatial)
                ))
            })?,
    };
    let [h, w, _] = b.input_shape;
    let device = m.device();
    let autocast = m.precision().autocast();
    let layer = net.layer_names()[li].clone();
    heatmaps(
        m,
        b,
        &x,
        target,
        (normalize, batch_size),
        monitor,
        (what, Some(layer)),
        |rows, norm, start, len| {
            let xb = network_input(rows, norm, device)?;
            let (acts, logits) = autocast.run(device, || -> Result<(Tensor, Tensor)> {
                let mut a = tch::no_grad(|| -> Result<Tensor> {
                    let mut t = xb;
                    for i in 0..=li {
                        t = net.run_layer(i, &t)?;
                    }
                    Ok(t)
                })?;
                a = a.f_detach()?.f_set_requires_grad(true)?;
                let mut t = a.shallow_clone();
                for i in li + 1..net.layer_names().len() {
                    t = net.run_layer(i, &t)?;
                }
                Ok((a, t))
            })??;
            let (grads, cls) = score_gradient(&logits, &acts, target, start, len)?;
            let cam = tch::no_grad(|| -> Result<Tensor> {
                let acts = acts.f_detach()?.f_to_kind(Kind::Float)?;
                let weights = grads.f_to_kind(Kind::Float)?.f_mean_dim(
                    [2i64, 3].as_slice(),
                    true,
                    Kind::Float,
                )?;
                Ok(acts
                    .f_mul(&weights)?
                    .f_sum_dim_intlist([1i64].as_slice(), true, Kind::Float)?
                    .f_relu()?
                    .f_upsample_bilinear2d([h as i64, w as i64], false, None, None)?
                    .f_squeeze_dim(1)?)
            })?;
            Ok((cam, cls))
        },
    )
}

/// Input-gradient saliency (Simonyan et al., 2014): the largest absolute
/// gradient, over the channels, of the target logit w.r.t. each input pixel
/// (the pixels as given, before normalisation); with `normalize`, divided by
/// each map's maximum.
///
/// # Errors
/// As [`gradcam`].
pub fn saliency(
    m: &Model,
    x: Images,
    target: &Target,
    normalize: bool,
    batch_size: usize,
    monitor: &mut dyn Monitor,
) -> Result<Heatmaps> {
    let what = "saliency";
    let b = trained(m, &x, batch_size, what)?;
    let device = m.device();
    let autocast = m.precision().autocast();
    heatmaps(
        m,
        b,
        &x,
        target,
        (normalize, batch_size),
        monitor,
        (what, None),
        |rows, norm, start, len| {
            let raw = rows
                .to_device(device)?
                .f_to_kind(Kind::Float)?
                .f_set_requires_grad(true)?;
            let logits = autocast.run(device, || -> Result<Tensor> {
                b.net.forward(&norm.batch(&raw, PREFERRED_LAYOUT)?)
            })??;
            let (grads, cls) = score_gradient(&logits, &raw, target, start, len)?;
            let s = tch::no_grad(|| grads.f_abs()?.f_amax([3i64].as_slice(), false))?;
            Ok((s, cls))
        },
    )
}

/// The chunk loop Grad-CAM and saliency share: checks the targets, runs
/// `map` on each chunk of `x` (its rows, the normalisation on the device, the
/// chunk's start and length) for its (N, H, W) maps and explained classes,
/// scales each map to a peak of 1 with `normalize`, and collects the results.
#[allow(clippy::too_many_arguments)]
fn heatmaps(
    m: &Model,
    b: &Built,
    x: &Images,
    target: &Target,
    (normalize, batch_size): (bool, usize),
    monitor: &mut dyn Monitor,
    (what, layer): (&str, Option<String>),
    mut map: impl FnMut(&Images, &DeviceNormalization, usize, usize) -> Result<(Tensor, Tensor)>,
) -> Result<Heatmaps> {
    let n = x.len();
    check_target(target, n, b.num_classes, what)?;
    let [h, w, _] = b.input_shape;
    let norm = b.normalization.as_ref().expect("trained").on(m.device())?;
    let mut values = Vec::with_capacity(n * h * w);
    let mut used = Vec::with_capacity(n);
    let parts = chunks(n, batch_size);
    for (k, &(start, len)) in parts.iter().enumerate() {
        let (maps, cls) = map(&rows(x, start, len), &norm, start, len)?;
        let maps = if normalize {
            tch::no_grad(|| scaled(&maps))?
        } else {
            maps
        };
        values.extend(keras_values(&maps)?);
        used.extend(Vec::<i64>::try_from(cls.f_to_device(Device::Cpu)?)?);
        monitor.batch(&BatchProgress::inference(k, parts.len()))?;
    }
    Ok(Heatmaps {
        shape: [n, h, w],
        values,
        classes: used,
        layer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::config::{Architecture, Given, ModelConfig};
    use crate::nn::train::Silent;
    use crate::nn::tta::Tta;

    /// Two classes of 6×6 images: a bright left half or a bright right half.
    fn halves(n: usize) -> (Vec<u8>, Vec<i64>) {
        let mut x = vec![0u8; n * 36];
        let mut y = Vec::with_capacity(n);
        for i in 0..n {
            let class = i % 2;
            for r in 0..6 {
                for c in 0..6 {
                    let bright = (c < 3) == (class == 0);
                    x[i * 36 + r * 6 + c] =
                        if bright { 200 } else { 30 } + u8::try_from((i * 5 + r + c) % 20).unwrap();
                }
            }
            y.push(i64::try_from(class).unwrap());
        }
        (x, y)
    }

    fn trained_model(x: &[u8], y: &[i64]) -> Model {
        let given = Given {
            learning_rate: Some(1e-3),
            seed: 3,
            ..Given::default()
        };
        let config =
            ModelConfig::resolve(Architecture::Named("custom".into()), Device::Cpu, given).unwrap();
        let mut m = Model::new(config).unwrap();
        let images = Images {
            pixels: Pixels::U8(x),
            shape: [y.len(), 6, 6, 1],
        };
        m.fit((images, y, 2), None, (3, 8, true), &mut Silent)
            .unwrap();
        m
    }

    #[test]
    fn feature_maps_follow_the_plan_and_end_in_the_logits() {
        let (x, y) = halves(32);
        let m = trained_model(&x, &y);
        let images = Images {
            pixels: Pixels::U8(&x),
            shape: [32, 6, 6, 1],
        };
        assert_eq!(
            layer_names(&m).unwrap(),
            [
                "conv2d",
                "max_pooling2d",
                "conv2d_1",
                "max_pooling2d_1",
                "flatten",
                "dense",
                "dense_1"
            ]
        );
        let maps = feature_maps(&m, images, None, 5, &mut Silent).unwrap();
        let shapes: Vec<Vec<usize>> = maps.iter().map(|a| a.shape.clone()).collect();
        assert_eq!(
            shapes,
            [
                vec![32, 6, 6, 32],
                vec![32, 3, 3, 32],
                vec![32, 3, 3, 64],
                vec![32, 1, 1, 64],
                vec![32, 64],
                vec![32, 128],
                vec![32, 2]
            ]
        );
        // The head's output, through a softmax, is predict's answer.
        let probs = m.predict(images, 32, Tta::None, &mut Silent).unwrap();
        let logits = &maps[6].values;
        for (row, p) in logits.chunks(2).zip(probs.chunks(2)) {
            let e = [row[0].exp(), row[1].exp()];
            let s = e[0] + e[1];
            assert!((e[0] / s - p[0]).abs() < 1e-6 && (e[1] / s - p[1]).abs() < 1e-6);
        }
        // Chunks of 5 give what one chunk gives; a ReLU conv is never negative.
        let one = feature_maps(&m, images, Some(&["conv2d".into()]), 64, &mut Silent).unwrap();
        assert_eq!(
            (&one[0].name, &one[0].shape),
            (&maps[0].name, &maps[0].shape)
        );
        let diff = one[0]
            .values
            .iter()
            .zip(&maps[0].values)
            .map(|(a, b)| (a - b).abs());
        assert!(diff.fold(0.0f32, f32::max) < 1e-5);
        assert!(maps[0].values.iter().all(|&v| v >= 0.0));
    }

    #[test]
    fn filters_are_the_state_dict_weights_in_keras_layout() {
        let (x, y) = halves(16);
        let m = trained_model(&x, &y);
        let f = filters(&m, None).unwrap();
        assert_eq!(
            (f.name.as_str(), f.shape.as_slice()),
            ("conv2d", &[3, 3, 1, 32][..])
        );
        let state = m.state_dict().unwrap();
        let (_, shape, w) = state.iter().find(|(n, _, _)| n == "conv2d.weight").unwrap();
        assert_eq!(shape, &[32, 1, 3, 3]);
        for (o, r, c) in [(0, 0, 0), (5, 1, 2), (31, 2, 1)] {
            assert_eq!(f.values[(r * 3 + c) * 32 + o], w[o * 9 + r * 3 + c]);
        }
        let second = filters(&m, Some("conv2d_1")).unwrap();
        assert_eq!(second.shape, [3, 3, 32, 64]);
        let err = filters(&m, Some("dense")).unwrap_err().to_string();
        assert!(err.contains("[\"conv2d\", \"conv2d_1\"]"), "{err}");
    }

    #[test]
    fn gradcam_and_saliency_are_scaled_maps_of_the_input_size() {
        let (x, y) = halves(32);
        let m = trained_model(&x, &y);
        let images = Images {
            pixels: Pixels::U8(&x),
            shape: [32, 6, 6, 1],
        };
        let probs = m.predict(images, 32, Tta::None, &mut Silent).unwrap();
        let grads = |m: &Model| -> Vec<Vec<f32>> {
            let vars = m.built().unwrap().vs.trainable_variables();
            vars.iter()
                .map(|v| {
                    let g = v.grad();
                    if g.defined() {
                        Vec::<f32>::try_from(g.flatten(0, -1)).unwrap()
                    } else {
                        Vec::new()
                    }
                })
                .collect()
        };
        let before = grads(&m);
        let cam = gradcam(&m, images, &Target::Predicted, None, true, 7, &mut Silent).unwrap();
        assert_eq!(
            (cam.shape, cam.layer.as_deref()),
            ([32, 6, 6], Some("conv2d_1"))
        );
        for (i, map) in cam.values.chunks(36).enumerate() {
            let peak = map.iter().copied().fold(0.0f32, f32::max);
            assert!(map.iter().all(|&v| (0.0..=1.0).contains(&v)));
            assert!(peak == 1.0 || peak == 0.0, "{peak}");
            let predicted = i64::from(probs[2 * i + 1] > probs[2 * i]);
            assert_eq!(cam.classes[i], predicted);
        }
        // One chunk gives what chunks of 7 give, to rounding (kernels may differ by batch size).
        let whole = gradcam(&m, images, &Target::Predicted, None, true, 64, &mut Silent).unwrap();
        assert_eq!((whole.classes, whole.layer), (cam.classes, cam.layer));
        let diff = whole
            .values
            .iter()
            .zip(&cam.values)
            .map(|(a, b)| (a - b).abs());
        assert!(diff.fold(0.0f32, f32::max) < 1e-5);
        let sal = saliency(&m, images, &Target::Class(1), false, 10, &mut Silent).unwrap();
        assert_eq!(sal.classes, vec![1; 32]);
        assert!(sal.values.iter().all(|&v| v >= 0.0) && sal.values.iter().any(|&v| v > 0.0));
        // Only the activations and pixels got gradients: the weights' own are untouched.
        assert_eq!(grads(&m), before);
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let (x, y) = halves(16);
        let m = trained_model(&x, &y);
        let images = Images {
            pixels: Pixels::U8(&x),
            shape: [16, 6, 6, 1],
        };
        let err = |r: Result<Heatmaps>| r.unwrap_err().to_string();
        let e = err(gradcam(
            &m,
            images,
            &Target::Predicted,
            Some("conv"),
            true,
            8,
            &mut Silent,
        ));
        assert!(
            e.contains("unknown layer \"conv\"") && e.contains("\"conv2d_1\""),
            "{e}"
        );
        let e = err(gradcam(
            &m,
            images,
            &Target::Predicted,
            Some("dense"),
            true,
            8,
            &mut Silent,
        ));
        assert!(e.contains("not feature maps"), "{e}");
        let e = err(gradcam(
            &m,
            images,
            &Target::Class(2),
            None,
            true,
            8,
            &mut Silent,
        ));
        assert!(e.contains("class_index 2 is out of range"), "{e}");
        let e = err(saliency(
            &m,
            images,
            &Target::PerImage(vec![0; 3]),
            true,
            8,
            &mut Silent,
        ));
        assert!(e.contains("has 3 classes but images has 16"), "{e}");
        let small = Images {
            pixels: Pixels::U8(&x[..16 * 25]),
            shape: [16, 5, 5, 1],
        };
        let e = feature_maps(&m, small, None, 8, &mut Silent)
            .unwrap_err()
            .to_string();
        assert!(e.contains("images must be of shape (N, 6, 6, 1)"), "{e}");
        let fresh = Model::new(ModelConfig::clone(m.config())).unwrap();
        let e = feature_maps(&fresh, images, None, 8, &mut Silent)
            .unwrap_err()
            .to_string();
        assert!(e.contains("call fit first"), "{e}");
        assert!(filters(&fresh, None).is_err() && layer_names(&fresh).is_err());
    }
}
