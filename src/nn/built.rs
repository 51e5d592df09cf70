//! The parts a model has once it knows its input shape and classes
//! ([`Built`]: variables, network, optimiser, plan, normalisation, loss
//! scaler), and what is done with its weights: copies ([`Snapshot`]) and
//! PyTorch's `state_dict` / strict `load_state_dict` (the one weight loader:
//! model files go through it too).

use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use super::arch::Plan;
use super::input::Normalization;
use super::network::Network;
use super::optim::Optimiser;
use super::precision::GradScaler;
use super::torch_ext::deep_copy;
use crate::error::{Error, Result};

/// The parts that exist once the model knows its input shape and classes.
pub struct Built {
    pub vs: VarStore,
    pub net: Network,
    pub opt: Optimiser,
    pub plan: Plan,
    pub input_shape: [usize; 3],
    pub num_classes: usize,
    pub normalization: Option<Normalization>,
    pub scaler: Option<GradScaler>,
}

/// One variable of [`Built::state_dict`]: name, shape and float32 values.
pub type StateEntry = (String, Vec<usize>, Vec<f32>);

/// A copy of every variable (weights and batch-norm statistics), on the device.
pub struct Snapshot {
    tensors: Vec<(String, Tensor)>,
}

impl Built {
    /// A copy of every weight and batch-norm statistic (for Keras's
    /// `restore_best_weights`).
    ///
    /// # Errors
    /// libtorch failures.
    pub fn snapshot(&self) -> Result<Snapshot> {
        let b = self;
        let tensors =
            b.vs.variables()
                .into_iter()
                .map(|(name, t)| Ok((name, deep_copy(&t)?)))
                .collect::<Result<_>>()?;
        Ok(Snapshot { tensors })
    }

    /// Puts back the weights of a [`Built::snapshot`] of this model.
    ///
    /// # Errors
    /// `InvalidArgument` for a snapshot of another architecture.
    pub fn restore(&self, snapshot: &Snapshot) -> Result<()> {
        let b = self;
        let vars = b.vs.variables();
        let fits = vars.len() == snapshot.tensors.len()
            && snapshot
                .tensors
                .iter()
                .all(|(name, t)| vars.get(name).is_some_and(|v| v.size() == t.size()));
        if !fits {
            return Err(Error::invalid(
                "restore: the snapshot was taken from a model of another architecture",
            ));
        }
        for (name, t) in &snapshot.tensors {
            let mut v = vars[name].shallow_clone();
            tch::no_grad(|| v.f_copy_(t))?;
        }
        Ok(())
    }

    /// Every variable (weights, frozen weights, batch-norm statistics) as
    /// (name, shape, float32 values), sorted by name: PyTorch's `state_dict`
    /// in its layouts (convolutions `(out, in, kh, kw)`, dense `(out, in)`).
    ///
    /// # Errors
    /// libtorch failures.
    pub fn state_dict(&self) -> Result<Vec<StateEntry>> {
        let b = self;
        let mut vars: Vec<(String, Tensor)> = b.vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        vars.into_iter()
            .map(|(name, t)| {
                let t = t
                    .f_to_device(Device::Cpu)?
                    .f_to_kind(Kind::Float)?
                    .f_contiguous()?;
                let shape = t.size().iter().map(|&d| d as usize).collect();
                let values = Vec::<f32>::try_from(t.f_flatten(0, -1)?)?;
                Ok((name, shape, values))
            })
            .collect()
    }

    /// Sets every variable from `values` (name → (shape, float32 values)), as
    /// PyTorch's strict `load_state_dict`: the names must be exactly the
    /// model's and every shape must match; nothing changes otherwise.
    ///
    /// # Errors
    /// `InvalidArgument` naming the first missing, unexpected or misshapen entry.
    pub fn load_state_dict(&self, values: &[(String, Vec<usize>, &[f32])]) -> Result<()> {
        let b = self;
        let vars = b.vs.variables();
        let mut checked = Vec::with_capacity(values.len());
        for (name, shape, data) in values {
            let var = vars.get(name).ok_or_else(|| {
                let mut known: Vec<&String> = vars.keys().collect();
                known.sort();
                Error::invalid(format!(
                    "load_state_dict: unexpected key {name:?}; the model's keys are {known:?}"
                ))
            })?;
            let expected: Vec<usize> = var.size().iter().map(|&d| d as usize).collect();
            if *shape != expected || shape.iter().product::<usize>() != data.len() {
                return Err(Error::invalid(format!(
                    "load_state_dict: {name:?} has shape {shape:?}, the model's is {expected:?}"
                )));
            }
            // A NaN or infinite weight makes every prediction NaN: refuse it before
            // anything is copied, so a refused load leaves the model as it was.
            if let Some(i) = data.iter().position(|v| !v.is_finite()) {
                return Err(Error::invalid(format!(
                    "load_state_dict: {name:?} holds a non-finite value ({}) at flat index \
                     {i}; every weight must be a finite number",
                    data[i]
                )));
            }
            checked.push((var, data));
        }
        if let Some(missing) = vars
            .keys()
            .find(|k| !values.iter().any(|(n, _, _)| n == *k))
        {
            return Err(Error::invalid(format!(
                "load_state_dict: missing key {missing:?} (every variable must be given)"
            )));
        }
        for (var, data) in checked {
            let t = Tensor::f_from_slice(data)?
                .f_view(var.size().as_slice())?
                .f_to_device(var.device())?;
            let mut v = var.shallow_clone();
            tch::no_grad(|| v.f_copy_(&t))?;
        }
        Ok(())
    }
}
