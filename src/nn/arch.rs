//! Architectures as data: the layers, the course's Keras networks (a
//! recipe's network lives with its recipe, user specs are parsed in `spec`),
//! and the shape/parameter plan that `summary()` shows. Nothing here touches
//! libtorch, so plans are cheap and testable.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Weight initialiser, named as in Keras.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Init {
    /// `U(-l, l)` with `l = sqrt(6 / fan_in)`.
    HeUniform,
    /// `U(-l, l)` with `l = sqrt(6 / (fan_in + fan_out))`; Keras's default.
    GlorotUniform,
}

impl Init {
    /// The half-width `l` of the uniform distribution for these fans.
    #[must_use]
    pub fn limit(self, fan_in: usize, fan_out: usize) -> f64 {
        match self {
            Init::HeUniform => (6.0 / fan_in as f64).sqrt(),
            Init::GlorotUniform => (6.0 / (fan_in + fan_out) as f64).sqrt(),
        }
    }
}

/// One hidden layer, serialised with the names users write in layer specs
/// (`{"type": "maxpool", "size": 2}`). Convolutions are 3×3-style "same" convolutions with ReLU,
/// dense layers use ReLU; the classification head (dense + softmax over the
/// classes found in the data) is added by the model, not listed here.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Layer {
    Conv {
        filters: usize,
        kernel_size: usize,
        init: Init,
    },
    #[serde(rename = "maxpool")]
    MaxPool {
        size: usize,
    },
    #[serde(rename = "avgpool")]
    AvgPool {
        size: usize,
    },
    Dropout {
        rate: f64,
    },
    #[serde(rename = "batchnorm")]
    BatchNorm,
    Flatten,
    Dense {
        units: usize,
        init: Init,
    },
    /// Augmentation (training only): flips each image with probability 1/2
    /// along the axes `mode` names.
    RandomFlip {
        mode: FlipMode,
    },
    /// Augmentation: pads by `pad` pixels (zeros or reflection) and crops back
    /// to the input size at a random offset, as torchvision's `RandomCrop(size, padding=pad)`.
    RandomCrop {
        pad: usize,
        #[serde(default)]
        fill: Fill,
    },
    /// Augmentation: shifts each image by up to `fraction` of its height and
    /// width (a whole number of pixels, zeros shifted in).
    RandomTranslation {
        fraction: f64,
    },
    /// Augmentation: one random `size`×`size` square of zeros per image,
    /// placed as `placement` says.
    Cutout {
        size: usize,
        #[serde(default)]
        placement: Placement,
    },
    /// Augmentation (airbench's "alternating flip"): each image gets one
    /// random horizontal flip at the start of a fit, and every image is
    /// mirrored again on every other epoch, so each image is seen flipped on
    /// exactly every other epoch. Applied where batches are gathered.
    AlternatingFlip,
    /// airbench's whitening layer: a `kernel_size`² "valid" convolution to
    /// `2 · C · kernel_size²` channels (the eigenvectors of the training
    /// images' patch covariance and their negatives, set at the first fit and
    /// frozen), a bias trained only for the recipe's first epochs, then GELU.
    Whitening {
        kernel_size: usize,
    },
    /// airbench's conv group: 3×3 "same" conv without bias (identity-initialised
    /// where it can be) → 2×2 max pool → batch norm → GELU → 3×3 conv → batch
    /// norm → GELU; its batch norms keep the affine weight frozen at 1 and use
    /// momentum 0.6 (Keras's convention) and epsilon 1e-12. When `residual`
    /// (airbench96's group), a third conv → batch norm → GELU follows, and the
    /// output of the first GELU is added to the group's output.
    ConvGroup {
        filters: usize,
        /// Absent (false) in the files of models saved before it existed, and
        /// not written when false, so those files stay as they were.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        residual: bool,
    },
    /// The output layer without bias, its logits multiplied by `scale`
    /// (airbench's `Linear(bias=False)` then `Mul(1/9)`). Last when present;
    /// it replaces the default head (dense with bias).
    Classifier {
        scale: f64,
    },
}

/// Where cutout puts its square.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// Its centre anywhere in the image, clipped at the borders (DeVries and
    /// Taylor's cutout, as Keras examples write it).
    #[default]
    Centred,
    /// Wholly inside the image, its top-left corner uniform over the places
    /// it fits (airbench's `batch_cutout`); the image must be at least `size`.
    Inside,
}

/// Which axes a random flip may mirror, named as Keras's `RandomFlip`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlipMode {
    Horizontal,
    Vertical,
    HorizontalAndVertical,
}

/// How a random crop fills the border it pads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fill {
    #[default]
    Zeros,
    Reflect,
}

impl Layer {
    /// Whether this layer is an augmentation (training-time only, no parameters).
    #[must_use]
    pub fn is_augmentation(&self) -> bool {
        matches!(
            self,
            Layer::RandomFlip { .. }
                | Layer::RandomCrop { .. }
                | Layer::RandomTranslation { .. }
                | Layer::Cutout { .. }
                | Layer::AlternatingFlip
        )
    }
}

/// The course's architectures, in the order the course defines them (the
/// architectures that carry a training recipe are [`super::recipe`]'s).
pub const COURSE: [&str; 6] = [
    "baseline",
    "vgg3block",
    "with_dropout_0.2",
    "with_dropout_increasing",
    "custom",
    "with_batch_norm",
];

fn conv(filters: usize, init: Init) -> Layer {
    Layer::Conv {
        filters,
        kernel_size: 3,
        init,
    }
}

fn dense128() -> Layer {
    Layer::Dense {
        units: 128,
        init: Init::HeUniform,
    }
}

/// The three VGG blocks (Conv-Conv-Pool of 32, 64, 128 filters), each followed
/// by `after_pool[i]` dropout when given, with batch norm after each conv when
/// `batch_norm`.
fn vgg3(after_pool: [Option<f64>; 3], batch_norm: bool) -> Vec<Layer> {
    let mut layers = Vec::new();
    for (filters, dropout) in [32, 64, 128].into_iter().zip(after_pool) {
        for _ in 0..2 {
            layers.push(conv(filters, Init::HeUniform));
            if batch_norm {
                layers.push(Layer::BatchNorm);
            }
        }
        layers.push(Layer::MaxPool { size: 2 });
        if let Some(rate) = dropout {
            layers.push(Layer::Dropout { rate });
        }
    }
    layers.push(Layer::Flatten);
    layers
}

/// The hidden layers of one of the course's architectures, exactly as the
/// course defines it in Keras (with "same" padding on every convolution).
#[must_use]
pub fn course(name: &str) -> Option<Vec<Layer>> {
    let layers = match name {
        "baseline" => vec![
            conv(32, Init::HeUniform),
            conv(32, Init::HeUniform),
            Layer::MaxPool { size: 2 },
            Layer::Flatten,
            dense128(),
        ],
        "vgg3block" => {
            let mut l = vgg3([None; 3], false);
            l.push(dense128());
            l
        }
        "with_dropout_0.2" => {
            let mut l = vgg3([Some(0.2); 3], false);
            l.extend([dense128(), Layer::Dropout { rate: 0.2 }]);
            l
        }
        "with_dropout_increasing" => {
            let mut l = vgg3([Some(0.2), Some(0.3), Some(0.4)], false);
            l.extend([dense128(), Layer::Dropout { rate: 0.5 }]);
            l
        }
        "custom" => vec![
            conv(32, Init::GlorotUniform),
            Layer::MaxPool { size: 2 },
            conv(64, Init::GlorotUniform),
            Layer::MaxPool { size: 2 },
            Layer::Flatten,
            dense128(),
        ],
        "with_batch_norm" => {
            let mut l = vgg3([Some(0.2), Some(0.3), Some(0.4)], true);
            l.extend([dense128(), Layer::BatchNorm, Layer::Dropout { rate: 0.5 }]);
            l
        }
        _ => return None,
    };
    Some(layers)
}

/// What one layer does to the data: its Keras name, output shape (without the
/// batch axis) and parameter counts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LayerPlan {
    pub name: String,
    pub kind: &'static str,
    pub output_shape: Vec<usize>,
    pub trainable_params: usize,
    pub non_trainable_params: usize,
}

/// A network fully planned for an input shape `(H, W, C)` and a class count.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Plan {
    pub layers: Vec<LayerPlan>,
}

impl Plan {
    #[must_use]
    pub fn trainable_params(&self) -> usize {
        self.layers.iter().map(|l| l.trainable_params).sum()
    }
    #[must_use]
    pub fn non_trainable_params(&self) -> usize {
        self.layers.iter().map(|l| l.non_trainable_params).sum()
    }
    #[must_use]
    pub fn total_params(&self) -> usize {
        self.trainable_params() + self.non_trainable_params()
    }
}

/// The most parameters a network may have (2 GiB of float32 weights): beyond
/// that a typo (`("dense", 2000000)`) or a hostile model file would allocate
/// until the machine gives up.
pub const MAX_PARAMS: usize = 1 << 29;
/// The most classes a classifier may have (a label of 10⁹ would otherwise make
/// the output layer 10⁹ wide).
pub const MAX_CLASSES: usize = 100_000;
/// The most layers an architecture may list.
pub const MAX_LAYERS: usize = 1000;
/// The largest convolution kernel and pooling window accepted.
pub const MAX_WINDOW: usize = 256;

impl Layer {
    /// Checks the layer's own values, exactly as `spec::parse_specs` checks a
    /// user's: layers read from a file go through this too.
    ///
    /// # Errors
    /// `InvalidArgument` naming layer `i`.
    pub fn validate(&self, i: usize) -> Result<()> {
        // A whole number in [lo, hi], or the error naming the layer and the setting.
        let count = |what: &str, v: usize, lo: usize, hi: usize| -> Result<()> {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(Error::invalid(format!(
                    "layer {i}: {what} must be in [{lo}, {hi}], got {v}"
                )))
            }
        };
        // A number that `ok` accepts, or the error saying what is accepted.
        let number = |what: &str, v: f64, ok: bool| -> Result<()> {
            if ok {
                Ok(())
            } else {
                Err(Error::invalid(format!("layer {i}: {what}, got {v}")))
            }
        };
        match *self {
            Layer::Conv {
                filters,
                kernel_size,
                ..
            } => {
                count("conv filters", filters, 1, MAX_PARAMS)?;
                count("conv kernel size", kernel_size, 1, MAX_WINDOW)
            }
            Layer::MaxPool { size } | Layer::AvgPool { size } => {
                count("pool size", size, 1, MAX_WINDOW)
            }
            Layer::Dropout { rate } => number(
                "dropout rate must be a number in [0, 1)",
                rate,
                (0.0..1.0).contains(&rate),
            ),
            Layer::Dense { units, .. } => count("dense units", units, 1, MAX_PARAMS),
            Layer::RandomCrop { pad, .. } => count("random_crop pad", pad, 0, MAX_WINDOW),
            Layer::RandomTranslation { fraction } => number(
                "random_translation fraction must be a number in [0, 1)",
                fraction,
                (0.0..1.0).contains(&fraction),
            ),
            Layer::Cutout { size, .. } => count("cutout size", size, 1, MAX_WINDOW),
            Layer::Whitening { kernel_size } => count("whitening kernel size", kernel_size, 1, 8),
            Layer::ConvGroup { filters, .. } => count("conv_group filters", filters, 1, MAX_PARAMS),
            Layer::Classifier { scale } => number(
                "classifier scale must be a positive finite number",
                scale,
                scale.is_finite() && scale > 0.0,
            ),
            Layer::BatchNorm
            | Layer::Flatten
            | Layer::RandomFlip { .. }
            | Layer::AlternatingFlip => Ok(()),
        }
    }
}

fn too_big(what: &str) -> Error {
    Error::invalid(format!(
        "{what}: the network would have more than {MAX_PARAMS} parameters (2 GiB of float32 \
         weights); use fewer filters or units, or pool before flatten"
    ))
}

/// `a * b + c`, or the "too big" error.
fn params(a: usize, b: usize, c: usize, what: &str) -> Result<usize> {
    a.checked_mul(b)
        .and_then(|v| v.checked_add(c))
        .filter(|&v| v <= MAX_PARAMS)
        .ok_or_else(|| too_big(what))
}

/// Keras's automatic layer names: `conv2d`, `conv2d_1`, …
struct Namer(std::collections::HashMap<&'static str, usize>);

impl Namer {
    fn next(&mut self, base: &'static str) -> String {
        let n = self.0.entry(base).or_insert(0);
        let name = if *n == 0 {
            base.to_string()
        } else {
            format!("{base}_{n}")
        };
        *n += 1;
        name
    }
}

/// The input shape, class count and layer count a plan may start from.
fn check_inputs(input_shape: [usize; 3], num_classes: usize, layers: usize) -> Result<()> {
    if layers > MAX_LAYERS {
        return Err(Error::invalid(format!(
            "an architecture may list at most {MAX_LAYERS} layers, got {layers}"
        )));
    }
    let [h, w, c] = input_shape;
    if h == 0 || w == 0 || c == 0 {
        return Err(Error::invalid(format!(
            "input shape must be (height, width, channels) with every size >= 1, got ({h}, {w}, {c})"
        )));
    }
    if num_classes < 2 {
        return Err(Error::invalid(format!(
            "a classifier needs at least 2 classes, got {num_classes}"
        )));
    }
    if num_classes > MAX_CLASSES {
        return Err(Error::invalid(format!(
            "num_classes (the largest label + 1) must be at most {MAX_CLASSES}, got {num_classes}; \
             labels must be class indices 0..num_classes-1"
        )));
    }
    if h.checked_mul(w)
        .and_then(|v| v.checked_mul(c))
        .is_none_or(|v| v > MAX_PARAMS)
    {
        return Err(Error::invalid(format!(
            "input shape ({h}, {w}, {c}) is too large: at most {MAX_PARAMS} values per image"
        )));
    }
    Ok(())
}

/// Checks an augmentation layer can take `shape`; its Keras name and type.
fn plan_augmentation(
    i: usize,
    aug: &Layer,
    shape: &[usize],
    spatial: bool,
) -> Result<(&'static str, &'static str)> {
    if !spatial {
        return Err(Error::invalid(format!(
            "layer {i} (augmentation) needs an image-shaped input (H, W, C); put \
             augmentations first, before flatten"
        )));
    }
    if let Layer::RandomCrop {
        pad,
        fill: Fill::Reflect,
    } = aug
    {
        if *pad >= shape[0] || *pad >= shape[1] {
            return Err(Error::invalid(format!(
                "layer {i}: a reflect-padded random_crop needs pad < the image size, \
                 got pad {pad} for {shape:?}"
            )));
        }
    }
    if let Layer::Cutout {
        size,
        placement: Placement::Inside,
    } = aug
    {
        if *size > shape[0] || *size > shape[1] {
            return Err(Error::invalid(format!(
                "layer {i}: cutout \"inside\" needs a square no larger than the image, \
                 got size {size} for {shape:?}"
            )));
        }
    }
    Ok(match aug {
        Layer::RandomFlip { .. } => ("random_flip", "RandomFlip"),
        Layer::AlternatingFlip => ("alternating_flip", "AlternatingFlip"),
        Layer::RandomCrop { .. } => ("random_crop", "RandomCrop"),
        Layer::RandomTranslation { .. } => ("random_translation", "RandomTranslation"),
        _ => ("cutout", "Cutout"),
    })
}

/// A dense-like layer's input must be a vector (after flatten).
fn needs_vector(i: usize, what: &str, shape: &[usize]) -> Result<()> {
    if shape.len() == 1 {
        return Ok(());
    }
    Err(Error::invalid(format!(
        "layer {i} ({what}) receives an image-shaped input {shape:?}; \
         add a (\"flatten\",) layer before it"
    )))
}

/// airbench's whitening layer on `shape`: (trainable, frozen) parameter counts.
fn plan_whitening(i: usize, k: usize, shape: &mut Vec<usize>) -> Result<(usize, usize)> {
    if shape.len() != 3 || shape[0] < k || shape[1] < k {
        return Err(Error::invalid(format!(
            "layer {i} (whitening) needs an image of at least {k}×{k}, got {shape:?}"
        )));
    }
    let what = format!("layer {i} (whitening)");
    let width = params(2 * k * k, shape[2], 0, &what)?;
    let weights = params(width, k * k * shape[2], 0, &what)?;
    *shape = vec![shape[0] - k + 1, shape[1] - k + 1, width];
    Ok((width, weights))
}

/// airbench's conv group of `f` filters on `shape`: (trainable, frozen) counts
/// (the batch norms' frozen weights and running statistics are the frozen ones).
fn plan_conv_group(
    i: usize,
    f: usize,
    residual: bool,
    shape: &mut Vec<usize>,
) -> Result<(usize, usize)> {
    if shape.len() != 3 || shape[0] < 2 || shape[1] < 2 {
        return Err(Error::invalid(format!(
            "layer {i} (conv_group, which pools 2×2) receives a feature map of shape \
             {shape:?}, too small for it"
        )));
    }
    let what = format!("layer {i} (conv_group)");
    let conv1 = params(9 * shape[2], f, 0, &what)?;
    // conv2 and its batch norm, twice when residual (conv3 and norm3).
    let convs = if residual { 2 } else { 1 };
    let later = params(9 * f, f, f, &what)?;
    let trainable = params(convs, later, conv1 + f, &what)?;
    *shape = vec![shape[0] / 2, shape[1] / 2, f];
    Ok((trainable, 3 * f * (1 + convs)))
}

/// Plans layer `i`: updates `shape`; returns its name, type and parameter counts.
fn plan_layer(
    i: usize,
    layer: &Layer,
    shape: &mut Vec<usize>,
    num_classes: usize,
    last: bool,
    namer: &mut Namer,
) -> Result<(String, &'static str, usize, usize)> {
    let spatial = shape.len() == 3;
    Ok(match layer {
        Layer::Conv {
            filters,
            kernel_size,
            ..
        } => {
            if !spatial {
                return Err(Error::invalid(format!(
                    "layer {i} (conv) needs an image-shaped input (H, W, C), but it comes \
                     after flatten and receives {shape:?}"
                )));
            }
            let what = format!("layer {i} (conv)");
            let fan_in = params(kernel_size * kernel_size, shape[2], 0, &what)?;
            let params = params(fan_in, *filters, *filters, &what)?;
            shape[2] = *filters;
            (namer.next("conv2d"), "Conv2D", params, 0)
        }
        Layer::MaxPool { size } | Layer::AvgPool { size } => {
            let (base, kind) = if matches!(layer, Layer::MaxPool { .. }) {
                ("max_pooling2d", "MaxPooling2D")
            } else {
                ("average_pooling2d", "AveragePooling2D")
            };
            if !spatial || shape[0] < *size || shape[1] < *size {
                return Err(Error::invalid(format!(
                    "layer {i} ({size}×{size} pooling) receives a feature map of shape \
                     {shape:?}, too small for it; use a larger input or fewer pooling layers"
                )));
            }
            shape[0] /= size;
            shape[1] /= size;
            (namer.next(base), kind, 0, 0)
        }
        Layer::Dropout { .. } => (namer.next("dropout"), "Dropout", 0, 0),
        aug @ (Layer::RandomFlip { .. }
        | Layer::AlternatingFlip
        | Layer::RandomCrop { .. }
        | Layer::RandomTranslation { .. }
        | Layer::Cutout { .. }) => {
            let (base, kind) = plan_augmentation(i, aug, shape, spatial)?;
            (namer.next(base), kind, 0, 0)
        }
        Layer::BatchNorm => {
            let ch = *shape.last().unwrap_or(&0);
            (
                namer.next("batch_normalization"),
                "BatchNormalization",
                2 * ch,
                2 * ch,
            )
        }
        Layer::Flatten => {
            *shape = vec![shape.iter().product()];
            (namer.next("flatten"), "Flatten", 0, 0)
        }
        Layer::Whitening { kernel_size } => {
            let (trainable, frozen) = plan_whitening(i, *kernel_size, shape)?;
            (namer.next("whitening"), "Whitening", trainable, frozen)
        }
        Layer::ConvGroup { filters, residual } => {
            let (trainable, frozen) = plan_conv_group(i, *filters, *residual, shape)?;
            (namer.next("conv_group"), "ConvGroup", trainable, frozen)
        }
        Layer::Classifier { .. } => {
            if !last {
                return Err(Error::invalid(format!(
                    "layer {i} (classifier) must be the last layer"
                )));
            }
            needs_vector(i, "classifier", shape)?;
            let params = params(shape[0], num_classes, 0, "the output layer")?;
            *shape = vec![num_classes];
            (namer.next("dense"), "Dense", params, 0)
        }
        Layer::Dense { units, .. } => {
            needs_vector(i, "dense", shape)?;
            let params = params(shape[0], *units, *units, &format!("layer {i} (dense)"))?;
            *shape = vec![*units];
            (namer.next("dense"), "Dense", params, 0)
        }
    })
}

/// Follows the shapes through `layers` plus the classification head.
///
/// # Errors
/// `InvalidArgument` when a layer cannot take the shape it receives (a pool
/// that would leave 0×0, dense before flatten, conv after flatten) or when
/// the input shape or class count is degenerate.
pub fn plan(layers: &[Layer], input_shape: [usize; 3], num_classes: usize) -> Result<Plan> {
    check_inputs(input_shape, num_classes, layers.len())?;
    let mut namer = Namer(std::collections::HashMap::new());
    let mut shape = input_shape.to_vec();
    let mut out = Vec::with_capacity(layers.len() + 1);
    let mut total = 0usize;
    for (i, layer) in layers.iter().enumerate() {
        layer.validate(i)?;
        let last = i + 1 == layers.len();
        let (name, kind, trainable, non_trainable) =
            plan_layer(i, layer, &mut shape, num_classes, last, &mut namer)?;
        total = params(1, total, trainable + non_trainable, &format!("layer {i}"))?;
        out.push(LayerPlan {
            name,
            kind,
            output_shape: shape.clone(),
            trainable_params: trainable,
            non_trainable_params: non_trainable,
        });
    }
    if shape.len() != 1 {
        return Err(Error::invalid(format!(
            "the last hidden layer outputs {shape:?}; add a (\"flatten\",) layer so the \
             classification head receives a vector"
        )));
    }
    if matches!(layers.last(), Some(Layer::Classifier { .. })) {
        return Ok(Plan { layers: out });
    }
    let head = params(shape[0], num_classes, num_classes, "the output layer")?;
    params(1, total, head, "the output layer")?;
    out.push(LayerPlan {
        name: namer.next("dense"),
        kind: "Dense",
        output_shape: vec![num_classes],
        trainable_params: head,
        non_trainable_params: 0,
    });
    Ok(Plan { layers: out })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Parameter counts worked out by hand for 32×32×3 input and 10 classes,
    // as Keras's model.summary() reports them.
    #[test]
    fn builtin_parameter_counts_match_keras() {
        let conv = |k: usize, cin: usize, f: usize| k * k * cin * f + f;
        let vgg_convs = conv(3, 3, 32)
            + conv(3, 32, 32)
            + conv(3, 32, 64)
            + conv(3, 64, 64)
            + conv(3, 64, 128)
            + conv(3, 128, 128);
        let head = 128 * 10 + 10;
        let expected = [
            (
                "baseline",
                conv(3, 3, 32) + conv(3, 32, 32) + (16 * 16 * 32 * 128 + 128) + head,
                0,
            ),
            ("vgg3block", vgg_convs + (4 * 4 * 128 * 128 + 128) + head, 0),
            (
                "with_dropout_0.2",
                vgg_convs + (4 * 4 * 128 * 128 + 128) + head,
                0,
            ),
            (
                "with_dropout_increasing",
                vgg_convs + (4 * 4 * 128 * 128 + 128) + head,
                0,
            ),
            (
                "custom",
                conv(3, 3, 32) + conv(3, 32, 64) + (8 * 8 * 64 * 128 + 128) + head,
                0,
            ),
        ];
        for (name, trainable, non_trainable) in expected {
            let p = plan(&course(name).unwrap(), [32, 32, 3], 10).unwrap();
            assert_eq!(p.trainable_params(), trainable, "{name}");
            assert_eq!(p.non_trainable_params(), non_trainable, "{name}");
        }
        // Batch norm: gamma/beta trainable, moving mean/variance not.
        let bn_channels = 2 * 32 + 2 * 64 + 2 * 128 + 128;
        let p = plan(&course("with_batch_norm").unwrap(), [32, 32, 3], 10).unwrap();
        assert_eq!(
            p.trainable_params(),
            vgg_convs + 4 * 4 * 128 * 128 + 128 + head + 2 * bn_channels
        );
        assert_eq!(p.non_trainable_params(), 2 * bn_channels);
        assert_eq!(
            p.total_params(),
            vgg_convs + 4 * 4 * 128 * 128 + 128 + head + 4 * bn_channels
        );
    }

    #[test]
    fn keras_names_and_shapes() {
        let p = plan(&course("baseline").unwrap(), [32, 32, 3], 10).unwrap();
        let names: Vec<_> = p.layers.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "conv2d",
                "conv2d_1",
                "max_pooling2d",
                "flatten",
                "dense",
                "dense_1"
            ]
        );
        assert_eq!(p.layers[2].output_shape, [16, 16, 32]);
        assert_eq!(p.layers[3].output_shape, [8192]);
        assert_eq!(p.total_params(), 1_060_138);
    }

    /// Model files saved before airbench96 name neither `residual` nor
    /// `placement`: they load as the layers they were, and a plain conv group
    /// is still written as before.
    #[test]
    fn older_layer_json_loads_and_plain_groups_are_written_as_before() {
        let old = r#"[{"type":"conv_group","filters":64},{"type":"cutout","size":2}]"#;
        let layers: Vec<Layer> = serde_json::from_str(old).unwrap();
        assert_eq!(
            layers,
            [
                Layer::ConvGroup {
                    filters: 64,
                    residual: false
                },
                Layer::Cutout {
                    size: 2,
                    placement: Placement::Centred
                }
            ]
        );
        let json = serde_json::to_string(&layers[0]).unwrap();
        assert_eq!(json, r#"{"type":"conv_group","filters":64}"#);
        let residual = Layer::ConvGroup {
            filters: 64,
            residual: true,
        };
        let json = serde_json::to_string(&residual).unwrap();
        assert_eq!(serde_json::from_str::<Layer>(&json).unwrap(), residual);
    }

    #[test]
    fn pooling_too_far_is_an_error() {
        let err = plan(&course("vgg3block").unwrap(), [4, 4, 1], 10).unwrap_err();
        assert!(err.to_string().contains("too small"), "{err}");
    }
}
