//! A planned architecture made real on libtorch: parameters in a `VarStore`
//! (named after the Keras layers) and a forward pass in NCHW (logical shape;
//! the memory may be channels-last, see [`super::device::Layout`]).

use tch::nn::Path;
use tch::Kind;
use tch::Tensor;

use super::arch::{Init, Layer, Plan};
use super::augment::Augment;
use super::device::Layout;
use super::torch_ext::Generator;
use crate::error::Result;

/// Keras's BatchNormalization(momentum=0.99, epsilon=1e-3) in PyTorch's terms.
const BN_MOMENTUM: f64 = 0.01;
const BN_EPS: f64 = 1e-3;
/// airbench's BatchNorm(momentum=0.6, eps=1e-12), in PyTorch's terms.
const AIRBENCH_BN_MOMENTUM: f64 = 0.4;
const AIRBENCH_BN_EPS: f64 = 1e-12;
/// The optimiser group of airbench's batch-norm biases (a larger learning rate).
pub const BN_BIAS_GROUP: usize = 1;
/// The optimiser group of the whitening layer's bias (airbench94_muon gives
/// it a schedule of its own; the others step it with group 0).
pub const WHITENING_BIAS_GROUP: usize = 2;

/// A batch norm's tensors and constants.
struct Norm {
    w: Tensor,
    b: Tensor,
    mean: Tensor,
    var: Tensor,
    momentum: f64,
    eps: f64,
}

impl Norm {
    fn run(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Ok(x.f_batch_norm(
            Some(&self.w),
            Some(&self.b),
            Some(&self.mean),
            Some(&self.var),
            train,
            self.momentum,
            self.eps,
            true,
        )?)
    }
}

enum Op {
    Augment(Augment),
    Conv {
        w: Tensor,
        b: Tensor,
    },
    MaxPool(i64),
    AvgPool(i64),
    Dropout(f64),
    BatchNorm(Norm),
    Flatten,
    Dense {
        w: Tensor,
        b: Tensor,
        relu: bool,
    },
    /// Valid convolution with bias, then GELU.
    Whitening {
        w: Tensor,
        b: Tensor,
    },
    ConvGroup {
        w1: Tensor,
        n1: Norm,
        w2: Tensor,
        n2: Norm,
        /// A residual group's third conv and batch norm.
        third: Option<(Tensor, Norm)>,
    },
    Classifier {
        w: Tensor,
        scale: f64,
    },
}

/// The layers of one network, ready to run forward.
pub struct Network {
    ops: Vec<Op>,
    /// The plan's name of each op (`conv2d`, `dense_1`, ...), for inspection.
    names: Vec<String>,
}

/// What [`super::inspect`] needs to know of one layer.
pub(crate) enum LayerRole<'a> {
    /// Training-time augmentation: passes images through unchanged at inference.
    Augmentation,
    /// A convolution: its weight `(out, in, kh, kw)` (a conv group's first
    /// one), and whether training learns it (the whitening layer's is fitted
    /// once and frozen).
    Convolution { weight: &'a Tensor, learned: bool },
    /// Anything else (pooling, batch norm, dropout, flatten, dense).
    Other,
}

/// A weight of `shape` under `p`, drawn from `U(-l, l)` by the model's own
/// generator (so initialisation does not depend on other threads' draws).
fn uniform(
    p: &Path,
    shape: &[i64],
    init: Init,
    fans: (usize, usize),
    gen: &mut Generator,
) -> Result<Tensor> {
    let l = init.limit(fans.0, fans.1);
    let mut w = p.f_zeros("weight", shape)?;
    let values = gen
        .rand(shape, Kind::Float)?
        .f_mul_scalar(2.0 * l)?
        .f_sub_scalar(l)?;
    tch::no_grad(|| w.f_copy_(&values))?;
    Ok(w)
}

fn i(v: usize) -> i64 {
    v as i64
}

/// PyTorch's default `Conv2d`/`Linear` weight (`U(±1/sqrt(fan_in))`), with the
/// first `min(out, in)` filters of a convolution set to the identity
/// (`torch.nn.init.dirac_` on `w[:in]`) when `dirac`; a variable under `p`.
fn torch_default(
    p: &Path,
    shape: &[i64],
    trainable: bool,
    dirac: bool,
    gen: &mut Generator,
) -> Result<Tensor> {
    let fan_in: i64 = shape[1..].iter().product();
    let l = 1.0 / (fan_in as f64).sqrt();
    let values = gen
        .rand(shape, Kind::Float)?
        .f_mul_scalar(2.0 * l)?
        .f_sub_scalar(l)?;
    if dirac {
        let (k, centre) = (shape[2], shape[2] / 2);
        for d in 0..shape[0].min(shape[1]) {
            let _ = values.f_get(d)?.f_zero_()?;
            let _ = values
                .f_get(d)?
                .f_get(d)?
                .f_narrow(0, centre, 1)?
                .f_narrow(1, centre.min(k - 1), 1)?
                .f_fill_(1.0)?;
        }
    }
    let mut w = if trainable {
        p.f_zeros("weight", shape)?
    } else {
        p.f_zeros_no_train("weight", shape)?
    };
    tch::no_grad(|| w.f_copy_(&values))?;
    Ok(w)
}

/// airbench's batch norm of `n` channels: weight frozen at 1, bias in the
/// batch-norm bias group.
fn airbench_norm(p: &Path, n: i64) -> Result<Norm> {
    Ok(Norm {
        w: p.f_ones_no_train("weight", &[n])?,
        b: p.set_group(BN_BIAS_GROUP).f_zeros("bias", &[n])?,
        mean: p.f_zeros_no_train("running_mean", &[n])?,
        var: p.f_ones_no_train("running_var", &[n])?,
        momentum: AIRBENCH_BN_MOMENTUM,
        eps: AIRBENCH_BN_EPS,
    })
}

/// airbench's conv group of `filters` on `channels` under `p`: convs
/// `conv1`, `conv2` (and `conv3` when `residual`), each with its batch norm
/// (`norm1`, ...), named as the reference's `state_dict`.
fn conv_group(
    p: &Path,
    channels: usize,
    filters: usize,
    residual: bool,
    gen: &mut Generator,
) -> Result<Op> {
    let f = i(filters);
    let w1 = torch_default(&p.sub("conv1"), &[f, i(channels), 3, 3], true, true, gen)?;
    let n1 = airbench_norm(&p.sub("norm1"), f)?;
    let w2 = torch_default(&p.sub("conv2"), &[f, f, 3, 3], true, true, gen)?;
    let n2 = airbench_norm(&p.sub("norm2"), f)?;
    let third = if residual {
        let w3 = torch_default(&p.sub("conv3"), &[f, f, 3, 3], true, true, gen)?;
        Some((w3, airbench_norm(&p.sub("norm3"), f)?))
    } else {
        None
    };
    Ok(Op::ConvGroup {
        w1,
        n1,
        w2,
        n2,
        third,
    })
}

impl Network {
    /// The network of `ops` made from `layers`, each op named as the plan
    /// names its layer: every layer but the alternating flip (applied where
    /// batches are gathered), then the default head when the plan has one.
    fn named(ops: Vec<Op>, layers: &[Layer], plan: &Plan) -> Self {
        let hidden = layers
            .iter()
            .zip(&plan.layers)
            .filter(|(l, _)| !matches!(l, Layer::AlternatingFlip))
            .map(|(_, lp)| lp.name.clone());
        let head = plan.layers[layers.len()..].iter().map(|lp| lp.name.clone());
        let names: Vec<String> = hidden.chain(head).collect();
        debug_assert_eq!(names.len(), ops.len());
        Network { ops, names }
    }

    /// Creates the parameters of `layers` (planned for an input with
    /// `in_channels` channels) under `root`, initialised as Keras would, with
    /// draws from `gen`.
    ///
    /// # Errors
    /// A libtorch failure while allocating.
    pub fn build(
        root: &Path,
        layers: &[Layer],
        plan: &Plan,
        in_channels: usize,
        gen: &mut Generator,
    ) -> Result<Self> {
        let mut ops = Vec::with_capacity(plan.layers.len());
        let mut channels = in_channels;
        let mut features = 0usize;
        let head = plan
            .layers
            .last()
            .expect("a plan always ends with its head");
        let hidden = layers.iter().zip(&plan.layers);
        for (layer, lp) in hidden {
            let p = root.sub(&lp.name);
            let op = match *layer {
                Layer::Conv {
                    filters,
                    kernel_size: k,
                    init,
                } => {
                    let (fan_in, fan_out) = (channels * k * k, filters * k * k);
                    let w = uniform(
                        &p,
                        &[i(filters), i(channels), i(k), i(k)],
                        init,
                        (fan_in, fan_out),
                        gen,
                    )?;
                    let b = p.f_zeros("bias", &[i(filters)])?;
                    channels = filters;
                    Op::Conv { w, b }
                }
                Layer::RandomFlip { .. }
                | Layer::RandomCrop { .. }
                | Layer::RandomTranslation { .. }
                | Layer::Cutout { .. } => {
                    Op::Augment(Augment::from_layer(layer).expect("an augmentation layer"))
                }
                // Applied where the fit gathers its batches (it needs the
                // image's index and the epoch).
                Layer::AlternatingFlip => continue,
                Layer::Whitening { kernel_size: k } => {
                    let width = 2 * channels * k * k;
                    let w =
                        torch_default(&p, &[i(width), i(channels), i(k), i(k)], false, true, gen)?;
                    let b = p
                        .set_group(WHITENING_BIAS_GROUP)
                        .f_zeros("bias", &[i(width)])?;
                    channels = width;
                    Op::Whitening { w, b }
                }
                Layer::ConvGroup { filters, residual } => {
                    let op = conv_group(&p, channels, filters, residual, gen)?;
                    channels = filters;
                    op
                }
                Layer::Classifier { scale } => {
                    let classes = i(lp.output_shape[0]);
                    let w = torch_default(&p, &[classes, i(features)], true, false, gen)?;
                    ops.push(Op::Classifier { w, scale });
                    return Ok(Network::named(ops, layers, plan));
                }
                Layer::MaxPool { size } => Op::MaxPool(i(size)),
                Layer::AvgPool { size } => Op::AvgPool(i(size)),
                Layer::Dropout { rate } => Op::Dropout(rate),
                Layer::BatchNorm => {
                    let n = *lp.output_shape.last().unwrap_or(&channels);
                    Op::BatchNorm(Norm {
                        w: p.f_ones("weight", &[i(n)])?,
                        b: p.f_zeros("bias", &[i(n)])?,
                        mean: p.f_zeros_no_train("running_mean", &[i(n)])?,
                        var: p.f_ones_no_train("running_var", &[i(n)])?,
                        momentum: BN_MOMENTUM,
                        eps: BN_EPS,
                    })
                }
                Layer::Flatten => {
                    features = lp.output_shape[0];
                    Op::Flatten
                }
                Layer::Dense { units, init } => {
                    let w = uniform(&p, &[i(units), i(features)], init, (features, units), gen)?;
                    let b = p.f_zeros("bias", &[i(units)])?;
                    features = units;
                    Op::Dense { w, b, relu: true }
                }
            };
            ops.push(op);
        }
        let classes = head.output_shape[0];
        let p = root.sub(&head.name);
        let w = uniform(
            &p,
            &[i(classes), i(features)],
            Init::GlorotUniform,
            (features, classes),
            gen,
        )?;
        let b = p.f_zeros("bias", &[i(classes)])?;
        ops.push(Op::Dense { w, b, relu: false });
        Ok(Network::named(ops, layers, plan))
    }

    /// Lays the convolution weights out as `layout` (the values do not
    /// change; libtorch picks its channels-last kernels when input and weight
    /// are both channels-last).
    ///
    /// # Errors
    /// A libtorch failure.
    pub fn set_layout(&mut self, layout: Layout) -> Result<()> {
        for op in &mut self.ops {
            let weights: Vec<&mut Tensor> = match op {
                Op::Conv { w, .. } | Op::Whitening { w, .. } => vec![w],
                Op::ConvGroup { w1, w2, third, .. } => {
                    let mut w = vec![w1, w2];
                    w.extend(third.as_mut().map(|(w3, _)| w3));
                    w
                }
                _ => vec![],
            };
            for w in weights {
                let data = match layout {
                    Layout::ChannelsLast => w
                        .f_permute([0, 2, 3, 1])?
                        .f_contiguous()?
                        .f_permute([0, 3, 1, 2])?,
                    Layout::Contiguous => w.f_contiguous()?,
                };
                tch::no_grad(|| w.f_set_data(&data))?;
            }
        }
        Ok(())
    }

    /// The weights Muon steps: every learned convolution's filters (the
    /// frozen whitening excluded) and, with `dense`, the hidden dense layers'
    /// weights; never the output layer's (as airbench's record script and
    /// PyTorch's advice: the head goes to the fallback optimiser).
    #[must_use]
    pub fn muon_weights(&self, dense: bool) -> Vec<Tensor> {
        let mut out = Vec::new();
        for op in &self.ops {
            match op {
                Op::Conv { w, .. } => out.push(w),
                Op::ConvGroup { w1, w2, third, .. } => {
                    out.extend([w1, w2]);
                    out.extend(third.iter().map(|(w3, _)| w3));
                }
                Op::Dense { w, relu: true, .. } if dense => out.push(w),
                _ => {}
            }
        }
        out.into_iter()
            .filter(|w| w.requires_grad())
            .map(Tensor::shallow_clone)
            .collect()
    }

    /// airbench's classifier weight, if the network ends in one.
    #[must_use]
    pub fn classifier(&self) -> Option<&Tensor> {
        self.ops.iter().find_map(|op| match op {
            Op::Classifier { w, .. } => Some(w),
            _ => None,
        })
    }

    /// The whitening layer's (weight, bias), if the network has one.
    #[must_use]
    pub fn whitening(&self) -> Option<(&Tensor, &Tensor)> {
        self.ops.iter().find_map(|op| match op {
            Op::Whitening { w, b } => Some((w, b)),
            _ => None,
        })
    }

    /// Sets the whitening weights (keeping the weight's memory layout).
    ///
    /// # Errors
    /// A libtorch failure, or weights of another shape.
    pub fn set_whitening(&self, values: &Tensor) -> Result<()> {
        if let Some((w, _)) = self.whitening() {
            let mut w = w.shallow_clone();
            tch::no_grad(|| w.f_copy_(values))?;
        }
        Ok(())
    }

    /// Logits for a batch `x` of shape (N, C, H, W) in inference mode
    /// (no dropout, batch norm with its running averages).
    ///
    /// # Errors
    /// A libtorch failure (e.g. out of memory on the device).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.run(x, None)
    }

    /// Logits for a training batch: dropout masks drawn from `gen`, batch
    /// norm on batch statistics (updating its running averages).
    ///
    /// # Errors
    /// A libtorch failure (e.g. out of memory on the device).
    pub fn forward_train(&self, x: &Tensor, gen: &mut Generator) -> Result<Tensor> {
        self.run(x, Some(gen))
    }

    fn run(&self, x: &Tensor, mut gen: Option<&mut Generator>) -> Result<Tensor> {
        let mut x = x.shallow_clone();
        for op in &self.ops {
            x = op.run(x, gen.as_deref_mut())?;
        }
        Ok(x)
    }

    /// The plan's names of the layers that run, in order (the head included;
    /// airbench's alternating flip, applied where batches are gathered, is not
    /// one of them).
    pub(crate) fn layer_names(&self) -> &[String] {
        &self.names
    }

    /// Layer `i` alone in inference mode (no dropout, batch norm with its
    /// running averages, augmentation passing `x` through).
    ///
    /// # Errors
    /// A libtorch failure.
    pub(crate) fn run_layer(&self, i: usize, x: &Tensor) -> Result<Tensor> {
        self.ops[i].run(x.shallow_clone(), None)
    }

    /// What layer `i` is, as inspection needs to know it.
    pub(crate) fn layer_role(&self, i: usize) -> LayerRole<'_> {
        match &self.ops[i] {
            Op::Augment(_) => LayerRole::Augmentation,
            Op::Conv { w, .. } | Op::ConvGroup { w1: w, .. } => LayerRole::Convolution {
                weight: w,
                learned: true,
            },
            Op::Whitening { w, .. } => LayerRole::Convolution {
                weight: w,
                learned: false,
            },
            _ => LayerRole::Other,
        }
    }
}

impl Op {
    /// The op on `x`: training mode (dropout, batch statistics, augmentation)
    /// with a generator, inference mode without.
    fn run(&self, x: Tensor, gen: Option<&mut Generator>) -> Result<Tensor> {
        let train = gen.is_some();
        Ok(match self {
            Op::Conv { w, b } => x
                .f_conv2d_padding(w, Some(b), [1, 1], "same", [1, 1], 1)?
                .f_relu()?,
            Op::MaxPool(k) => x.f_max_pool2d([*k, *k], [*k, *k], [0, 0], [1, 1], false)?,
            Op::AvgPool(k) => x.f_avg_pool2d([*k, *k], [*k, *k], [0, 0], false, true, None)?,
            Op::Augment(a) => match gen {
                Some(g) => a.apply(&x, g)?,
                None => x,
            },
            Op::Dropout(rate) => match gen {
                Some(g) => g.dropout(&x, *rate, true)?,
                None => x,
            },
            Op::BatchNorm(norm) => norm.run(&x, train)?,
            Op::Whitening { w, b } => x
                .f_conv2d(w, Some(b), [1, 1], [0, 0], [1, 1], 1)?
                .f_gelu("none")?,
            Op::ConvGroup {
                w1,
                n1,
                w2,
                n2,
                third,
            } => {
                let conv = |x: &Tensor, w: &Tensor, n: &Norm| -> Result<Tensor> {
                    let y = x.f_conv2d_padding::<Tensor>(w, None, [1, 1], "same", [1, 1], 1)?;
                    Ok(n.run(&y, train)?.f_gelu("none")?)
                };
                let y = x
                    .f_conv2d_padding::<Tensor>(w1, None, [1, 1], "same", [1, 1], 1)?
                    .f_max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false)?;
                let x0 = n1.run(&y, train)?.f_gelu("none")?;
                let y = conv(&x0, w2, n2)?;
                match third {
                    // In place, as the reference's `x += x0` (GELU's backward
                    // needs its input, not its output): an out-of-place sum
                    // costs a fresh allocation per group and step.
                    Some((w3, n3)) => {
                        let mut z = conv(&y, w3, n3)?;
                        let _ = z.f_add_(&x0)?;
                        z
                    }
                    None => y,
                }
            }
            Op::Classifier { w, scale } => x.f_linear::<Tensor>(w, None)?.f_mul_scalar(*scale)?,
            Op::Flatten => x.f_flatten(1, -1)?,
            Op::Dense { w, b, relu } => {
                let y = x.f_linear(w, Some(b))?;
                if *relu {
                    y.f_relu()?
                } else {
                    y
                }
            }
        })
    }
}
