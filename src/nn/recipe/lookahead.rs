//! Lookahead-style weight averaging, as airbench94's reference runs it after
//! every optimiser step (a recipe's step hook).

use tch::Tensor;

use crate::error::Result;
use crate::nn::torch_ext::deep_copy;
use crate::nn::train::StepHook;

/// The reference's `LookaheadState`: a copy of every variable; every
/// `every` steps the copy moves towards the weights by `1 − decay` (decay
/// `0.95⁵ · (step / total)³`) and the weights become the copy; at the last
/// step the weights become the copy.
pub struct Lookahead {
    pairs: Vec<(Tensor, Tensor)>,
    every: usize,
    step: usize,
    total: usize,
}

impl Lookahead {
    /// Copies `variables` (weights and batch-norm statistics), in order.
    ///
    /// # Errors
    /// libtorch failures.
    pub fn new(variables: Vec<Tensor>, every: usize, total: usize) -> Result<Self> {
        let pairs = variables
            .into_iter()
            .map(|v| {
                let copy = deep_copy(&v)?;
                Ok((v, copy))
            })
            .collect::<Result<_>>()?;
        Ok(Lookahead {
            pairs,
            every: every.max(1),
            step: 0,
            total: total.max(1),
        })
    }

    /// Steps taken so far.
    #[must_use]
    pub fn steps(&self) -> usize {
        self.step
    }

    fn update(&mut self, decay: f64) -> Result<()> {
        tch::no_grad(|| -> Result<()> {
            for (v, ema) in &mut self.pairs {
                let _ = ema.f_lerp_(v, 1.0 - decay)?;
                v.f_copy_(ema)?;
            }
            Ok(())
        })
    }

    /// Called after every optimiser step.
    ///
    /// # Errors
    /// libtorch failures.
    pub fn after_step(&mut self) -> Result<()> {
        self.step += 1;
        if self.step % self.every == 0 {
            let t = self.step as f64 / self.total as f64;
            self.update(0.95f64.powi(5) * t.powi(3))?;
        }
        if self.step == self.total {
            self.update(1.0)?;
        }
        Ok(())
    }
}

impl StepHook for Lookahead {
    fn after_step(&mut self) -> Result<()> {
        Lookahead::after_step(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn lookahead_follows_the_reference_schedule() {
        let w = Tensor::zeros([1], (Kind::Float, tch::Device::Cpu));
        let mut la = Lookahead::new(vec![w.shallow_clone()], 5, 10).unwrap();
        let mut ema = 0.0f64;
        for step in 1..=10u32 {
            // The optimiser moves the weight to `step`.
            tch::no_grad(|| {
                let _ = w.shallow_clone().fill_(f64::from(step));
            });
            la.after_step().unwrap();
            let mut expect = f64::from(step);
            if step % 5 == 0 {
                let decay = 0.95f64.powi(5) * (f64::from(step) / 10.0).powi(3);
                ema = decay * ema + (1.0 - decay) * f64::from(step);
                expect = ema;
            }
            let got = w.double_value(&[0]);
            assert!(
                (got - expect).abs() < 1e-5,
                "step {step}: {got} vs {expect}"
            );
        }
    }
}
