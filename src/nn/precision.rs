//! Training precision: float32, or mixed precision as libtorch's autocast
//! does it (weights and optimiser state in float32; convolutions and dense
//! layers in bfloat16 or float16; the loss in float32), plus the dynamic loss
//! scaling float16 needs.

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::optim::Optimiser;

use crate::error::{Error, Result};

/// What the user asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    Fp32,
    Bf16,
    Fp16,
    /// The fastest precision that is safe on the device; see [`Precision::resolve`].
    Auto,
}

/// The accepted names, in the order messages list them.
pub const PRECISIONS: [&str; 4] = ["fp32", "bf16", "fp16", "auto"];

impl Precision {
    /// Parses "fp32", "bf16", "fp16" or "auto".
    ///
    /// # Errors
    /// `InvalidArgument` naming the accepted values.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "fp32" => Ok(Precision::Fp32),
            "bf16" => Ok(Precision::Bf16),
            "fp16" => Ok(Precision::Fp16),
            "auto" => Ok(Precision::Auto),
            other => Err(Error::invalid(format!(
                "precision must be one of \"fp32\", \"bf16\", \"fp16\", \"auto\", got {other:?}"
            ))),
        }
    }

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
            Precision::Fp16 => "fp16",
            Precision::Auto => "auto",
        }
    }

    /// The concrete precision for `device`: `Auto` becomes bf16 on CUDA
    /// devices with native bfloat16 (compute capability 8.0 and later) and on
    /// CPUs where oneDNN has AVX-512 BF16 or AMX ([`cpu_has_bf16`]), fp16 on older
    /// CUDA devices, fp32 otherwise.
    ///
    /// # Errors
    /// `InvalidArgument` for fp16 on a CPU (libtorch's CPU float16 kernels are
    /// slower than float32 and there is no loss scaling there).
    pub fn resolve(self, device: Device) -> Result<Precision> {
        match (self, device) {
            (Precision::Fp16, Device::Cpu) => Err(Error::invalid(
                "precision=\"fp16\" needs a CUDA device; on a CPU use \"bf16\" (mixed \
                 precision with bfloat16), \"fp32\" or \"auto\"",
            )),
            (Precision::Auto, Device::Cuda(_)) => Ok(if super::torch_ext::cuda_supports_bf16() {
                Precision::Bf16
            } else {
                Precision::Fp16
            }),
            (Precision::Auto, _) => Ok(if cpu_has_bf16() {
                Precision::Bf16
            } else {
                Precision::Fp32
            }),
            (p, _) => Ok(p),
        }
    }

    /// The autocast this (resolved) precision runs the forward pass under.
    #[must_use]
    pub fn autocast(self) -> Autocast {
        Autocast(match self {
            Precision::Bf16 => Some(Kind::BFloat16),
            Precision::Fp16 => Some(Kind::Half),
            Precision::Fp32 | Precision::Auto => None,
        })
    }
}

/// Whether this CPU computes bfloat16 natively: AVX-512 BF16 or AMX, as
/// libtorch's oneDNN sees it (so `ONEDNN_MAX_CPU_ISA=AVX2` turns it off, and
/// "auto" then trains in float32 as on an AVX2-only CPU).
#[must_use]
pub fn cpu_has_bf16() -> bool {
    super::torch_ext::cpu_supports_bf16()
}

/// The autocast a forward pass runs under: none (float32), or libtorch's
/// autocast for the device with bfloat16 or float16.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Autocast(pub Option<Kind>);

impl Autocast {
    /// Runs `f` under this autocast on `device`.
    ///
    /// # Errors
    /// `Torch` if libtorch refuses the autocast settings.
    pub fn run<T>(self, device: Device, f: impl FnOnce() -> T) -> Result<T> {
        super::torch_ext::with_autocast(device, self.0, f)
    }
}

/// Dynamic loss scaling as `torch.amp.GradScaler` does it: the loss is
/// multiplied by `scale` before backward so float16 gradients do not
/// underflow; the gradients are divided back before the step; a step whose
/// gradients are not all finite is skipped and the scale halved; after
/// `growth_interval` good steps in a row the scale doubles.
#[derive(Clone, Debug, PartialEq)]
pub struct GradScaler {
    pub scale: f64,
    pub growth_factor: f64,
    pub backoff_factor: f64,
    pub growth_interval: u32,
    good_steps: u32,
    /// Steps skipped so far (for tests and diagnostics).
    pub skipped: u64,
}

impl Default for GradScaler {
    /// PyTorch's defaults: scale 2^16, growth ×2 every 2000 good steps, backoff ×0.5.
    fn default() -> Self {
        GradScaler {
            scale: 65536.0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
            good_steps: 0,
            skipped: 0,
        }
    }
}

impl GradScaler {
    /// Backward of the scaled `loss`, unscaling, the finiteness check and
    /// (when every gradient is finite) the optimiser step. Returns whether
    /// the step was taken.
    ///
    /// # Errors
    /// `Torch` on libtorch failures.
    pub fn step(&mut self, opt: &mut Optimiser, loss: &Tensor) -> Result<bool> {
        opt.zero_grad()?;
        loss.f_mul_scalar(self.scale)?.f_backward()?;
        let params = opt.variables();
        let inv = 1.0 / self.scale;
        let mut non_finite: Option<Tensor> = None;
        tch::no_grad(|| -> Result<()> {
            for p in &params {
                let mut g = p.grad();
                if !g.defined() {
                    continue;
                }
                let _ = g.f_mul_scalar_(inv)?;
                let bad = g.f_isfinite()?.f_logical_not()?.f_any()?;
                non_finite = Some(match non_finite.take() {
                    Some(acc) => acc.f_logical_or(&bad)?,
                    None => bad,
                });
            }
            Ok(())
        })?;
        // One device synchronisation per step, as GradScaler's own step has.
        let finite = match &non_finite {
            Some(t) => t.f_int64_value(&[])? == 0,
            None => true,
        };
        if finite {
            opt.step()?;
            self.good_steps += 1;
            if self.good_steps >= self.growth_interval {
                self.scale *= self.growth_factor;
                self.good_steps = 0;
            }
        } else {
            self.scale *= self.backoff_factor;
            self.good_steps = 0;
            self.skipped += 1;
        }
        Ok(finite)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::optim::{OptimizerKind, OptimizerSpec};
    use tch::nn::VarStore;

    #[test]
    fn names_round_trip_and_fp16_needs_cuda() {
        for name in PRECISIONS {
            assert_eq!(Precision::parse(name).unwrap().name(), name);
        }
        let err = Precision::parse("float16").unwrap_err().to_string();
        assert!(err.contains("\"bf16\"") && err.contains("float16"), "{err}");
        assert!(Precision::Fp16.resolve(Device::Cpu).is_err());
        assert_eq!(
            Precision::Fp32.resolve(Device::Cpu).unwrap(),
            Precision::Fp32
        );
        let auto = Precision::Auto.resolve(Device::Cpu).unwrap();
        assert_eq!(auto == Precision::Bf16, cpu_has_bf16());
    }

    fn one_weight() -> (VarStore, Optimiser, Tensor) {
        let vs = VarStore::new(Device::Cpu);
        let w = vs.root().zeros("w", &[3]);
        let sgd = OptimizerSpec {
            kind: OptimizerKind::Sgd,
            momentum: 0.0,
            ..OptimizerSpec::default()
        };
        let opt = sgd.build(&vs, vec![], 0.1).unwrap();
        (vs, opt, w)
    }

    #[test]
    fn a_non_finite_gradient_skips_the_step_and_halves_the_scale() {
        let (_vs, mut opt, w) = one_weight();
        let mut s = GradScaler::default();
        // d/dw of sum(w * [1, inf, 2]) is [1, inf, 2]: not finite.
        let c = Tensor::from_slice(&[1.0f32, f32::INFINITY, 2.0]);
        let loss = (&w * &c).sum(Kind::Float);
        assert!(!s.step(&mut opt, &loss).unwrap());
        assert_eq!(s.scale, 32768.0);
        assert_eq!(s.skipped, 1);
        assert_eq!(Vec::<f32>::try_from(&w).unwrap(), vec![0.0, 0.0, 0.0]);

        // A finite gradient is unscaled exactly and the step taken.
        let c = Tensor::from_slice(&[1.0f32, -2.0, 0.5]);
        let loss = (&w * &c).sum(Kind::Float);
        assert!(s.step(&mut opt, &loss).unwrap());
        assert_eq!(Vec::<f32>::try_from(&w).unwrap(), vec![-0.1, 0.2, -0.05]);
        assert_eq!(s.scale, 32768.0);
    }

    #[test]
    fn the_scale_grows_after_a_run_of_good_steps() {
        let (_vs, mut opt, w) = one_weight();
        let mut s = GradScaler {
            growth_interval: 3,
            ..GradScaler::default()
        };
        for _ in 0..3 {
            let loss = w.sum(Kind::Float);
            assert!(s.step(&mut opt, &loss).unwrap());
        }
        assert_eq!(s.scale, 131_072.0);
    }
}
