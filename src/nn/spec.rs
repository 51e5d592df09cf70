//! Layer specs as users write them (`("conv", 32)`, `("dropout", 0.2)`,
//! `("random_crop", 4, "reflect")`, ...), parsed into [`Layer`]s with errors
//! that name the layer and what it accepts.

use super::arch::{Fill, FlipMode, Init, Layer, Placement};
use crate::error::{Error, Result};

/// One argument of a user-written layer spec, as the binding layer extracts it.
#[derive(Clone, Debug, PartialEq)]
pub enum SpecArg {
    Int(i64),
    Float(f64),
    Str(String),
}

impl std::fmt::Display for SpecArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpecArg::Int(v) => write!(f, "{v}"),
            SpecArg::Float(v) => write!(f, "{v}"),
            SpecArg::Str(v) => write!(f, "{v:?}"),
        }
    }
}

fn positive(
    layer: usize,
    what: &str,
    arg: Option<&SpecArg>,
    default: Option<usize>,
) -> Result<usize> {
    match (arg, default) {
        (Some(SpecArg::Int(v)), _) if *v >= 1 => Ok(usize::try_from(*v).unwrap_or(usize::MAX)),
        (None, Some(d)) => Ok(d),
        (Some(other), _) => Err(Error::invalid(format!(
            "layer {layer}: {what} must be a positive integer, got {other}"
        ))),
        (None, None) => Err(Error::invalid(format!("layer {layer}: {what} is required"))),
    }
}

fn init_arg(layer: usize, arg: Option<&SpecArg>) -> Result<Init> {
    match arg {
        None => Ok(Init::HeUniform),
        Some(SpecArg::Str(s)) if s == "he_uniform" => Ok(Init::HeUniform),
        Some(SpecArg::Str(s)) if s == "glorot_uniform" => Ok(Init::GlorotUniform),
        Some(other) => Err(Error::invalid(format!(
            "layer {layer}: initializer must be \"he_uniform\" or \"glorot_uniform\", got {other}"
        ))),
    }
}

fn parse_augmentation(i: usize, kind: &str, args: &[SpecArg]) -> Result<Layer> {
    let non_negative = |what: &str, arg: Option<&SpecArg>| match arg {
        Some(SpecArg::Int(v)) if *v >= 0 => Ok(usize::try_from(*v).unwrap_or(usize::MAX)),
        other => Err(Error::invalid(format!(
            "layer {i}: {what} must be an integer >= 0, got {}",
            other.map_or("nothing".to_string(), ToString::to_string)
        ))),
    };
    Ok(match kind {
        "random_flip" => Layer::RandomFlip {
            mode: match args.first() {
                None => FlipMode::HorizontalAndVertical,
                Some(SpecArg::Str(s)) if s == "horizontal" => FlipMode::Horizontal,
                Some(SpecArg::Str(s)) if s == "vertical" => FlipMode::Vertical,
                Some(SpecArg::Str(s)) if s == "horizontal_and_vertical" => {
                    FlipMode::HorizontalAndVertical
                }
                Some(other) => {
                    return Err(Error::invalid(format!(
                        "layer {i}: random_flip mode must be \"horizontal\", \"vertical\" or \
                         \"horizontal_and_vertical\", got {other}"
                    )))
                }
            },
        },
        "random_crop" => {
            if args.len() > 2 {
                return Err(Error::invalid(format!(
                    "layer {i}: \"random_crop\" takes (pad) or (pad, \"zeros\"|\"reflect\")"
                )));
            }
            Layer::RandomCrop {
                pad: non_negative("random_crop pad", args.first())?,
                fill: match args.get(1) {
                    None => Fill::Zeros,
                    Some(SpecArg::Str(s)) if s == "zeros" || s == "constant" => Fill::Zeros,
                    Some(SpecArg::Str(s)) if s == "reflect" => Fill::Reflect,
                    Some(other) => {
                        return Err(Error::invalid(format!(
                        "layer {i}: random_crop fill must be \"zeros\" or \"reflect\", got {other}"
                    )))
                    }
                },
            }
        }
        "random_translation" => Layer::RandomTranslation {
            fraction: match args.first() {
                Some(SpecArg::Float(f)) => *f,
                Some(SpecArg::Int(v)) => *v as f64,
                _ => f64::NAN,
            },
        },
        _ => Layer::Cutout {
            size: non_negative("cutout size", args.first())?,
            placement: match args.get(1) {
                None => Placement::Centred,
                Some(SpecArg::Str(s)) if s == "centred" => Placement::Centred,
                Some(SpecArg::Str(s)) if s == "inside" => Placement::Inside,
                Some(other) => {
                    return Err(Error::invalid(format!(
                        "layer {i}: cutout placement must be \"centred\" (the square's centre \
                         anywhere, clipped at the borders) or \"inside\" (wholly inside the \
                         image), got {other}"
                    )))
                }
            },
        },
    })
}

/// Parses user layer specs such as `("conv", 32)`, `("conv", 64, 5)`,
/// `("maxpool", 2)`, `("avgpool", 2)`, `("dropout", 0.2)`, `("batchnorm",)`,
/// `("flatten",)`, `("dense", 128)`; conv and dense take an optional
/// initializer name last ("he_uniform", the default, or "glorot_uniform");
/// airbench's `("conv_group", 128)` or `("conv_group", 128, "residual")`
/// (airbench96's group), and `("cutout", 12)` or `("cutout", 12, "inside")`.
///
/// # Errors
/// `InvalidArgument` naming the layer index and what is accepted.
pub fn parse_specs(specs: &[(String, Vec<SpecArg>)]) -> Result<Vec<Layer>> {
    if specs.is_empty() {
        return Err(Error::invalid("architecture must list at least one layer"));
    }
    let mut layers = Vec::with_capacity(specs.len());
    for (i, (kind, args)) in specs.iter().enumerate() {
        let max_args = match kind.as_str() {
            "conv" | "random_crop" => 3,
            "dense" | "cutout" | "conv_group" => 2,
            "maxpool" | "avgpool" | "dropout" | "random_flip" | "random_translation"
            | "whitening" | "classifier" => 1,
            "batchnorm" | "flatten" | "alternating_flip" => 0,
            other => {
                return Err(Error::invalid(format!(
                    "layer {i}: unknown layer type {other:?}; accepted: \"conv\", \"maxpool\", \
                     \"avgpool\", \"dropout\", \"batchnorm\", \"flatten\", \"dense\", airbench's \
                     \"whitening\", \"conv_group\", \"classifier\", and the augmentations \
                     \"random_flip\", \"random_crop\", \"random_translation\", \"cutout\", \
                     \"alternating_flip\""
                )))
            }
        };
        if args.len() > max_args {
            return Err(Error::invalid(format!(
                "layer {i}: {kind:?} takes at most {max_args} argument(s), got {}",
                args.len()
            )));
        }
        let layer = match kind.as_str() {
            "conv" => {
                let (ks, init) = match args.get(1) {
                    Some(SpecArg::Str(_)) => (None, args.get(1)),
                    ks => (ks, args.get(2)),
                };
                Layer::Conv {
                    filters: positive(i, "conv filters", args.first(), None)?,
                    kernel_size: positive(i, "conv kernel size", ks, Some(3))?,
                    init: init_arg(i, init)?,
                }
            }
            "dense" => Layer::Dense {
                units: positive(i, "dense units", args.first(), None)?,
                init: init_arg(i, args.get(1))?,
            },
            "maxpool" => Layer::MaxPool {
                size: positive(i, "pool size", args.first(), Some(2))?,
            },
            "avgpool" => Layer::AvgPool {
                size: positive(i, "pool size", args.first(), Some(2))?,
            },
            "dropout" => {
                let rate = match args.first() {
                    Some(SpecArg::Float(r)) => *r,
                    Some(SpecArg::Int(r)) => *r as f64,
                    _ => -1.0,
                };
                if !(0.0..1.0).contains(&rate) {
                    return Err(Error::invalid(format!(
                        "layer {i}: dropout rate must be a number in [0, 1), got {}",
                        args.first()
                            .map_or("nothing".to_string(), ToString::to_string)
                    )));
                }
                Layer::Dropout { rate }
            }
            "batchnorm" => Layer::BatchNorm,
            "flatten" => Layer::Flatten,
            "alternating_flip" => Layer::AlternatingFlip,
            "whitening" => Layer::Whitening {
                kernel_size: positive(i, "whitening kernel size", args.first(), Some(2))?,
            },
            "conv_group" => Layer::ConvGroup {
                filters: positive(i, "conv_group filters", args.first(), None)?,
                residual: match args.get(1) {
                    None => false,
                    Some(SpecArg::Str(s)) if s == "residual" => true,
                    Some(other) => {
                        return Err(Error::invalid(format!(
                            "layer {i}: conv_group takes (filters) or (filters, \"residual\"), \
                             got {other}"
                        )))
                    }
                },
            },
            "classifier" => Layer::Classifier {
                scale: match args.first() {
                    None => 1.0,
                    Some(SpecArg::Float(f)) => *f,
                    Some(SpecArg::Int(v)) => *v as f64,
                    Some(SpecArg::Str(_)) => f64::NAN,
                },
            },
            _ => parse_augmentation(i, kind, args)?,
        };
        layers.push(layer);
    }
    Ok(layers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::arch::plan;

    #[test]
    fn specs_parse_and_reject() {
        let s = |k: &str, a: Vec<SpecArg>| (k.to_string(), a);
        let layers = parse_specs(&[
            s("conv", vec![SpecArg::Int(32)]),
            s("batchnorm", vec![]),
            s("maxpool", vec![SpecArg::Int(2)]),
            s("dropout", vec![SpecArg::Float(0.2)]),
            s("flatten", vec![]),
            s(
                "dense",
                vec![SpecArg::Int(128), SpecArg::Str("glorot_uniform".into())],
            ),
        ])
        .unwrap();
        assert_eq!(layers.len(), 6);
        assert_eq!(
            layers[5],
            Layer::Dense {
                units: 128,
                init: Init::GlorotUniform
            }
        );
        assert!(parse_specs(&[s("lstm", vec![])]).is_err());
        assert!(parse_specs(&[s("dropout", vec![SpecArg::Float(1.5)])]).is_err());
        assert!(parse_specs(&[s("conv", vec![SpecArg::Int(0)])]).is_err());
        assert!(parse_specs(&[]).is_err());
        // Limits: a huge dense layer or class count is refused before anything is built.
        let huge = parse_specs(&[
            s("flatten", vec![]),
            s("dense", vec![SpecArg::Int(200_000)]),
        ])
        .unwrap();
        let err = plan(&huge, [64, 64, 3], 10).unwrap_err().to_string();
        assert!(err.contains("parameters"), "{err}");
        let flat = parse_specs(&[s("flatten", vec![])]).unwrap();
        assert!(plan(&flat, [8, 8, 1], 1_000_000_000).is_err());
        assert!(plan(&flat, [usize::MAX, 2, 1], 10).is_err());
        // Layers that did not come through parse_specs (a model file) are checked too.
        for bad in [
            Layer::MaxPool { size: 0 },
            Layer::Dropout { rate: 5.0 },
            Layer::Dropout { rate: f64::NAN },
            Layer::Conv {
                filters: 0,
                kernel_size: 3,
                init: Init::HeUniform,
            },
            Layer::Conv {
                filters: usize::MAX,
                kernel_size: 3,
                init: Init::HeUniform,
            },
        ] {
            assert!(
                plan(&[bad.clone(), Layer::Flatten], [8, 8, 1], 10).is_err(),
                "{bad:?}"
            );
        }
        let dense_first = parse_specs(&[s("dense", vec![SpecArg::Int(4)])]).unwrap();
        assert!(plan(&dense_first, [8, 8, 1], 10).is_err());
    }

    #[test]
    fn airbench96_specs_parse_and_reject() {
        let s = |k: &str, a: Vec<SpecArg>| (k.to_string(), a);
        let word = |w: &str| SpecArg::Str(w.into());
        let layers = parse_specs(&[
            s("cutout", vec![SpecArg::Int(3), word("inside")]),
            s("cutout", vec![SpecArg::Int(3)]),
            s("conv_group", vec![SpecArg::Int(4), word("residual")]),
            s("conv_group", vec![SpecArg::Int(4)]),
            s("flatten", vec![]),
        ])
        .unwrap();
        let cutout = |placement| Layer::Cutout { size: 3, placement };
        let group = |residual| Layer::ConvGroup {
            filters: 4,
            residual,
        };
        assert_eq!(
            layers[..4],
            [
                cutout(Placement::Inside),
                cutout(Placement::Centred),
                group(true),
                group(false)
            ]
        );
        // A residual group holds a third conv (9·4·4) and batch norm (bias
        // trainable; weight and statistics frozen).
        let [a, b] = [group(true), group(false)].map(|g| {
            let p = plan(&[g, Layer::Flatten], [8, 8, 4], 10).unwrap();
            (
                p.layers[0].trainable_params,
                p.layers[0].non_trainable_params,
            )
        });
        assert_eq!((a.0 - b.0, a.1 - b.1), (9 * 4 * 4 + 4, 3 * 4));
        assert!(parse_specs(&[s("cutout", vec![SpecArg::Int(3), word("corner")])]).is_err());
        assert!(parse_specs(&[s("conv_group", vec![SpecArg::Int(4), word("skip")])]).is_err());
        // A square wholly inside needs an image at least as large.
        let big = parse_specs(&[
            s("cutout", vec![SpecArg::Int(9), word("inside")]),
            s("flatten", vec![]),
        ])
        .unwrap();
        let err = plan(&big, [8, 8, 1], 10).unwrap_err().to_string();
        assert!(err.contains("no larger than the image"), "{err}");
        assert!(plan(&big, [9, 9, 1], 10).is_ok());
    }
}
