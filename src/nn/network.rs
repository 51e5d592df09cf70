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

enum Op {
    Augment(Augment),
    Conv {
        w: Tensor,
        b: Tensor,
    },
    MaxPool(i64),
    AvgPool(i64),
    Dropout(f64),
    BatchNorm {
        w: Tensor,
        b: Tensor,
        mean: Tensor,
        var: Tensor,
    },
    Flatten,
    Dense {
        w: Tensor,
        b: Tensor,
        relu: bool,
    },
}

/// The layers of one network, ready to run forward.
pub struct Network {
    ops: Vec<Op>,
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

impl Network {
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
                Layer::MaxPool { size } => Op::MaxPool(i(size)),
                Layer::AvgPool { size } => Op::AvgPool(i(size)),
                Layer::Dropout { rate } => Op::Dropout(rate),
                Layer::BatchNorm => {
                    let n = *lp.output_shape.last().unwrap_or(&channels);
                    Op::BatchNorm {
                        w: p.f_ones("weight", &[i(n)])?,
                        b: p.f_zeros("bias", &[i(n)])?,
                        mean: p.f_zeros_no_train("running_mean", &[i(n)])?,
                        var: p.f_ones_no_train("running_var", &[i(n)])?,
                    }
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
        Ok(Network { ops })
    }

    /// Lays the convolution weights out as `layout` (the values do not
    /// change; libtorch picks its channels-last kernels when input and weight
    /// are both channels-last).
    ///
    /// # Errors
    /// A libtorch failure.
    pub fn set_layout(&mut self, layout: Layout) -> Result<()> {
        for op in &mut self.ops {
            if let Op::Conv { w, .. } = op {
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
        let train = gen.is_some();
        let mut x = x.shallow_clone();
        for op in &self.ops {
            x = match op {
                Op::Conv { w, b } => x
                    .f_conv2d_padding(w, Some(b), [1, 1], "same", [1, 1], 1)?
                    .f_relu()?,
                Op::MaxPool(k) => x.f_max_pool2d([*k, *k], [*k, *k], [0, 0], [1, 1], false)?,
                Op::AvgPool(k) => x.f_avg_pool2d([*k, *k], [*k, *k], [0, 0], false, true, None)?,
                Op::Augment(a) => match gen.as_deref_mut() {
                    Some(g) => a.apply(&x, g)?,
                    None => x,
                },
                Op::Dropout(rate) => match gen.as_deref_mut() {
                    Some(g) => g.dropout(&x, *rate, true)?,
                    None => x,
                },
                Op::BatchNorm { w, b, mean, var } => x.f_batch_norm(
                    Some(w),
                    Some(b),
                    Some(mean),
                    Some(var),
                    train,
                    BN_MOMENTUM,
                    BN_EPS,
                    true,
                )?,
                Op::Flatten => x.f_flatten(1, -1)?,
                Op::Dense { w, b, relu } => {
                    let y = x.f_linear(w, Some(b))?;
                    if *relu {
                        y.f_relu()?
                    } else {
                        y
                    }
                }
            };
        }
        Ok(x)
    }
}
