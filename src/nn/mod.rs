//! Neural networks on libtorch, one room per concern (each file imports
//! only files listed above it here, never one below):
//! - [`torch_ext`]: what tch lacks (autocast per device and dtype, per-model
//!   random generators), through our own small C++ shim;
//! - [`device`]: device names and the memory layout per device;
//! - [`muon`]: the Muon update (Newton–Schulz orthogonalised momentum);
//! - [`optim`]: Adam, AdamW, SGD and Muon with Keras's names and defaults,
//!   stepped as one [`optim::Optimiser`], and the decoupled SGD
//!   parametrisation recipes use;
//! - [`precision`]: fp32 / bf16 / fp16 (autocast) and loss scaling;
//! - [`tta`]: test-time augmentation as users name it;
//! - [`arch`]: layers and the course's architectures as data, their limits
//!   and the shape/parameter plan; [`spec`]: layer specs as users write them;
//! - [`input`]: images, labels and the fitted normalisation;
//! - [`augment`]: random flips, crops, translations and cutout on device batches;
//! - [`network`]: the plan made real on libtorch and its forward pass;
//! - [`train`]: the training step and epoch, the inference loops, progress;
//! - [`recipe`]: training recipes, one file each (data plus hooks);
//! - [`config`]: a model's settings, resolved from recipe and user;
//! - [`built`]: a built model's parts and its weights;
//! - [`fit`]: a fit in progress (the one training loop);
//! - [`model`]: `Model`, which owns all of the above for one model;
//! - [`inspect`]: what a trained network learned: feature maps, kernels,
//!   Grad-CAM and saliency;
//! - [`checkpoint`]: the saved-model file format.

pub mod arch;
pub mod augment;
pub mod built;
pub mod checkpoint;
pub mod config;
pub mod device;
pub mod fit;
pub mod input;
pub mod inspect;
pub mod model;
pub mod muon;
pub mod network;
pub mod optim;
pub mod precision;
pub mod recipe;
pub mod spec;
pub mod torch_ext;
pub mod train;
pub mod tta;

pub use arch::{Layer, Plan};
pub use config::ModelConfig;
pub use input::{Images, Pixels};
pub use model::Model;
pub use precision::Precision;
pub use train::Monitor;

/// The version of libtorch this build links, e.g. "2.11.0".
#[must_use]
pub fn torch_version() -> String {
    // tch exposes no version getter; torch-sys pins the version it was built for.
    String::from(TORCH_VERSION)
}

/// The libtorch version torch-sys 0.24 builds against.
pub const TORCH_VERSION: &str = "2.11.0";

/// Whether libtorch sees a usable CUDA device.
#[must_use]
pub fn cuda_available() -> bool {
    tch::Cuda::is_available()
}

/// Number of CUDA devices libtorch sees.
#[must_use]
pub fn cuda_device_count() -> usize {
    usize::try_from(tch::Cuda::device_count()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn libtorch_links_and_computes() {
        let t = tch::Tensor::from_slice(&[1.0f32, 2.0, 3.0]);
        let s: f64 = t.sum(tch::Kind::Float).double_value(&[]);
        assert!((s - 6.0).abs() < 1e-12);
    }
}
