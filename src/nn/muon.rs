//! Muon (Keller Jordan, 2024: "MomentUm Orthogonalized by Newton–Schulz"):
//! SGD momentum whose update, for each weight matrix, is replaced by the
//! nearest semi-orthogonal matrix, found by a few quintic Newton–Schulz
//! iterations in bfloat16.
//!
//! One update rule with the knobs of `torch.optim.Muon` (PyTorch 2.11) and of
//! airbench's record script (`airbench94_muon.py`, KellerJordan/cifar10-airbench):
//!
//! - momentum as `torch.optim.Muon` keeps it (`buf ← μ·buf + (1−μ)·g`,
//!   Nesterov `(1−μ)·g + μ·buf`). airbench keeps `buf ← μ·buf + g` and
//!   Nesterov `g + μ·buf`: exactly `1/(1−μ)` times larger, and the
//!   Newton–Schulz iteration first divides by the norm, so both give the
//!   same update (up to its `eps`);
//! - the iteration as `torch.optim.Muon`'s (`addmm` in bfloat16, the norm
//!   clamped at `eps`); airbench divides by `norm + eps` and rounds `b·A +
//!   c·A·A` in three operations instead of one: the same to bfloat16 rounding;
//! - a convolution's filters `(out, in, kh, kw)` are the matrix
//!   `(out, in·kh·kw)`, as airbench reshapes them (`torch.optim.Muon` takes
//!   2-D parameters only);
//! - `weight_decay`: decoupled, `θ ← θ·(1 − lr·λ)`, as `torch.optim.Muon`;
//! - `adjust_lr`: `torch.optim.Muon`'s `adjust_lr_fn` ("original":
//!   `lr·sqrt(max(1, rows/cols))`, "match_rms_adamw": `0.2·lr·sqrt(max(rows,
//!   cols))`), or none (airbench's);
//! - `renormalize`: airbench's, each weight rescaled to Frobenius norm
//!   `sqrt(out)` before its step;
//! - `variant`: whose rounding to follow ([`Variant`]): the same update,
//!   written as `torch.optim.Muon` or as airbench writes it.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::torch_ext::{add_scaled_, addmm, deep_copy};
use crate::error::{Error, Result};

/// `torch.optim.Muon`'s quintic coefficients (a, b, c) and eps.
pub const NS_COEFFICIENTS: (f64, f64, f64) = (3.4445, -4.7750, 2.0315);
pub const NS_EPS: f64 = 1e-7;
/// `torch.optim.Muon` refuses 100 steps or more.
pub const MAX_NS_STEPS: usize = 99;

/// How the learning rate scales with a matrix's shape (rows, cols).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdjustLr {
    /// `lr · sqrt(max(1, rows / cols))` (Keller Jordan's, torch's default).
    Original,
    /// `0.2 · lr · sqrt(max(rows, cols))` (Moonshot's: AdamW's update RMS).
    MatchRmsAdamw,
    /// `lr` as given (airbench's record script).
    None,
}

/// The accepted names of [`AdjustLr`], in the order messages list them.
pub const ADJUST_LR: [&str; 3] = ["original", "match_rms_adamw", "none"];

impl AdjustLr {
    /// # Errors
    /// `InvalidArgument` naming the accepted values.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "original" => Ok(AdjustLr::Original),
            "match_rms_adamw" => Ok(AdjustLr::MatchRmsAdamw),
            "none" => Ok(AdjustLr::None),
            other => Err(Error::invalid(format!(
                "adjust_lr must be one of \"original\", \"match_rms_adamw\", \"none\", got {other:?}"
            ))),
        }
    }

    #[must_use]
    pub fn name(self) -> &'static str {
        ADJUST_LR[self as usize]
    }

    /// The learning rate for a matrix of `rows × cols`.
    #[must_use]
    pub fn rate(self, lr: f64, rows: i64, cols: i64) -> f64 {
        let (a, b) = (rows as f64, cols as f64);
        match self {
            AdjustLr::Original => lr * (a / b).max(1.0).sqrt(),
            AdjustLr::MatchRmsAdamw => lr * 0.2 * a.max(b).sqrt(),
            AdjustLr::None => lr,
        }
    }
}

/// Whose rounding the update follows: the same mathematics, written two ways
/// that round differently in bfloat16 (and a few steps at airbench's rates
/// amplify the difference, so a reference is matched only by its own form).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    /// `torch.optim.Muon`'s: momentum as a moving average (`lerp`), the
    /// iteration's polynomial in one `addmm` each, the norm clamped at eps.
    #[default]
    Torch,
    /// airbench94_muon's: the momentum buffer summed (`buf·μ + g`, Nesterov
    /// `g + μ·buf`), the polynomial op by op (`b·A + (c·A)·A`, `a·X + B·X`),
    /// divided by `norm + eps`.
    Airbench,
}

/// The accepted names of [`Variant`].
pub const VARIANTS: [&str; 2] = ["torch", "airbench"];

impl Variant {
    /// # Errors
    /// `InvalidArgument` naming the accepted values.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "torch" => Ok(Variant::Torch),
            "airbench" => Ok(Variant::Airbench),
            other => Err(Error::invalid(format!(
                "variant must be one of \"torch\", \"airbench\", got {other:?}"
            ))),
        }
    }

    #[must_use]
    pub fn name(self) -> &'static str {
        VARIANTS[self as usize]
    }
}

/// The update rule's settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MuonRule {
    pub variant: Variant,
    pub momentum: f64,
    pub nesterov: bool,
    pub ns_steps: usize,
    pub weight_decay: f64,
    pub adjust_lr: AdjustLr,
    pub renormalize: bool,
}

/// The semi-orthogonal factor of `g` (a matrix) by `steps` quintic
/// Newton–Schulz iterations in bfloat16, written as `variant` writes it
/// (`torch.optim.Muon`'s `_zeropower_via_newtonschulz` or airbench94_muon's
/// `zeropower_via_newtonschulz5`, see [`Variant`]); returned in bfloat16.
///
/// Each form keeps its own order of transposing and normalising: the
/// bfloat16 norm of a transposed (strided) matrix sums in another order.
///
/// # Errors
/// `InvalidArgument` for a tensor that is not a matrix; libtorch failures.
pub fn newton_schulz(g: &Tensor, steps: usize, variant: Variant) -> Result<Tensor> {
    let shape = g.size();
    if shape.len() != 2 {
        return Err(Error::invalid(format!(
            "Newton–Schulz needs a matrix, got shape {shape:?}"
        )));
    }
    let (a, b, c) = NS_COEFFICIENTS;
    let tall = shape[0] > shape[1];
    let mut x = g.f_to_kind(Kind::BFloat16)?;
    let transpose = |x: Tensor| if tall { x.f_transpose(0, 1) } else { Ok(x) };
    x = match variant {
        Variant::Torch => {
            x = transpose(x)?;
            let norm = x.f_norm()?.f_clamp_min(NS_EPS)?;
            x.f_div(&norm)?
        }
        Variant::Airbench => transpose(x.f_div(&x.f_norm()?.f_add_scalar(NS_EPS)?)?)?,
    };
    for _ in 0..steps {
        let gram = x.f_mm(&x.f_transpose(0, 1)?)?;
        x = match variant {
            Variant::Torch => {
                let update = addmm(&gram, &gram, &gram, b, c)?;
                addmm(&x, &update, &x, a, 1.0)?
            }
            Variant::Airbench => {
                let poly = gram
                    .f_mul_scalar(b)?
                    .f_add(&gram.f_mul_scalar(c)?.f_mm(&gram)?)?;
                x.f_mul_scalar(a)?.f_add(&poly.f_mm(&x)?)?
            }
        };
    }
    Ok(transpose(x)?)
}

/// Muon over a set of weights, each with its momentum buffer.
pub struct Muon {
    params: Vec<Tensor>,
    buffers: Vec<Option<Tensor>>,
    rule: MuonRule,
    lr: f64,
}

impl Muon {
    /// Muon over `params` (each of two or more dimensions, read as the
    /// matrix `(shape[0], rest)`) at learning rate `lr`.
    ///
    /// # Errors
    /// `InvalidArgument` for a parameter of fewer than two dimensions.
    pub fn new(params: Vec<Tensor>, rule: MuonRule, lr: f64) -> Result<Self> {
        if let Some(p) = params.iter().find(|p| p.dim() < 2) {
            return Err(Error::invalid(format!(
                "Muon updates matrices and filter banks, got a parameter of shape {:?}",
                p.size()
            )));
        }
        let buffers = params.iter().map(|_| None).collect();
        Ok(Muon {
            params,
            buffers,
            rule,
            lr,
        })
    }

    /// The weights Muon steps.
    pub fn params(&self) -> &[Tensor] {
        &self.params
    }

    pub fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    /// Zeroes the weights' gradients.
    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.zero_grad();
        }
    }

    /// One step on every weight that has a gradient.
    ///
    /// # Errors
    /// libtorch failures.
    pub fn step(&mut self) -> Result<()> {
        let r = self.rule;
        tch::no_grad(|| -> Result<()> {
            for (p, slot) in self.params.iter_mut().zip(&mut self.buffers) {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                let buf = match slot {
                    Some(b) => b,
                    None => slot.insert(g.f_zeros_like()?),
                };
                let update = match r.variant {
                    Variant::Torch => {
                        let _ = buf.f_lerp_(&g, 1.0 - r.momentum)?;
                        if r.nesterov {
                            g.f_lerp(buf, r.momentum)?
                        } else {
                            buf.shallow_clone()
                        }
                    }
                    Variant::Airbench => {
                        let _ = buf.f_mul_scalar_(r.momentum)?.f_add_(&g)?;
                        if r.nesterov {
                            let mut u = deep_copy(&g)?;
                            add_scaled_(&mut u, buf, r.momentum)?;
                            u
                        } else {
                            buf.shallow_clone()
                        }
                    }
                };
                let shape = p.size();
                let (rows, cols) = (shape[0], shape[1..].iter().product::<i64>());
                let matrix = update.f_reshape([rows, cols])?;
                let ortho =
                    newton_schulz(&matrix, r.ns_steps, r.variant)?.f_view(shape.as_slice())?;
                if r.renormalize {
                    // A weight of norm 0 (zeroed by the user) stays 0, not NaN;
                    // any other norm is unchanged by the floor.
                    let scale = p
                        .f_norm()?
                        .f_clamp_min(1e-30)?
                        .f_reciprocal()?
                        .f_mul_scalar((rows as f64).sqrt())?;
                    let _ = p.f_mul_(&scale)?;
                }
                if r.weight_decay != 0.0 {
                    let _ = p.f_mul_scalar_(1.0 - self.lr * r.weight_decay)?;
                }
                add_scaled_(p, &ortho, -r.adjust_lr.rate(self.lr, rows, cols))?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// The iteration pushes every singular value of a random matrix into the
    /// band the quintic's coefficients aim for (about 0.7 to 1.2 after 5
    /// steps), whatever the matrix's scale and shape.
    #[test]
    fn newton_schulz_orthogonalises() {
        tch::manual_seed(0);
        let cases = [(16, 48, 1e-3), (48, 16, 10.0), (32, 32, 1.0)];
        for ((rows, cols, scale), variant) in cases
            .into_iter()
            .flat_map(|c| [(c, Variant::Torch), (c, Variant::Airbench)])
        {
            let g = Tensor::randn([rows, cols], (Kind::Float, Device::Cpu)) * scale;
            let x = newton_schulz(&g, 5, variant).unwrap().to_kind(Kind::Float);
            assert_eq!(x.size(), vec![rows, cols]);
            // Singular values: square roots of the eigenvalues of the smaller Gram matrix.
            let gram = if rows <= cols {
                x.mm(&x.transpose(0, 1))
            } else {
                x.transpose(0, 1).mm(&x)
            };
            let s: Vec<f32> = Vec::<f32>::try_from(gram.linalg_eigvalsh("U"))
                .unwrap()
                .into_iter()
                .map(f32::sqrt)
                .collect();
            assert!(
                s.iter().all(|&v| (0.6..1.25).contains(&v)),
                "{variant:?} {rows}×{cols}: {s:?}"
            );
        }
        assert!(newton_schulz(
            &Tensor::zeros([3], (Kind::Float, Device::Cpu)),
            5,
            Variant::Torch
        )
        .is_err());
    }

    #[test]
    fn adjusted_rates_are_torchs() {
        assert!((AdjustLr::Original.rate(0.1, 64, 16) - 0.2).abs() < 1e-15);
        assert!((AdjustLr::Original.rate(0.1, 16, 64) - 0.1).abs() < 1e-15);
        assert!((AdjustLr::MatchRmsAdamw.rate(0.1, 16, 100) - 0.2).abs() < 1e-15);
        assert!((AdjustLr::None.rate(0.1, 16, 100) - 0.1).abs() < 1e-15);
        for name in ADJUST_LR {
            assert_eq!(AdjustLr::parse(name).unwrap().name(), name);
        }
        assert!(AdjustLr::parse("sqrt").is_err());
    }

    /// Renormalisation puts each weight at Frobenius norm sqrt(out) before the
    /// step, as airbench's `p.data.mul_(len(p.data)**0.5 / p.data.norm())`.
    #[test]
    fn renormalised_step_is_the_references() {
        tch::manual_seed(1);
        let w = Tensor::randn([8, 3, 3, 3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let before = w.detach().copy();
        (&w * &w).sum(Kind::Float).backward();
        let rule = MuonRule {
            variant: Variant::Torch,
            momentum: 0.6,
            nesterov: true,
            ns_steps: 3,
            weight_decay: 0.0,
            adjust_lr: AdjustLr::None,
            renormalize: true,
        };
        let mut m = Muon::new(vec![w.shallow_clone()], rule, 0.24).unwrap();
        m.step().unwrap();
        // First step: buf = 0.4 g; Nesterov g.lerp(buf, 0.6), with g = 2w.
        let g = &before * 2.0;
        let update = g.lerp(&g.zeros_like().lerp(&g, 0.4), 0.6);
        let ortho = newton_schulz(&update.reshape([8, 27]), 3, Variant::Torch)
            .unwrap()
            .to_kind(Kind::Float)
            .view([8, 3, 3, 3]);
        let renormed = &before * (8f64.sqrt() / before.norm().double_value(&[]));
        let expected = renormed - ortho * 0.24;
        let diff = (w.detach() - expected).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "{diff}");
        // A zeroed weight stays finite: it takes the step, not NaN.
        let z = Tensor::zeros([8, 3, 3, 3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        (&z * &before).sum(Kind::Float).backward();
        let mut m = Muon::new(vec![z.shallow_clone()], rule, 0.24).unwrap();
        m.step().unwrap();
        assert!(bool::try_from(z.detach().isfinite().all()).unwrap());
        assert!(z.detach().abs().max().double_value(&[]) > 0.0);
        assert!(Muon::new(
            vec![Tensor::zeros([4], (Kind::Float, Device::Cpu))],
            rule,
            0.1
        )
        .is_err());
    }
}
