//! Neural networks on libtorch, one room per concern:
//! - [`arch`]: architectures as data, their limits and the shape/parameter plan;
//! - [`spec`]: layer specs as users write them, parsed into layers;
//! - [`network`]: the plan made real on libtorch and its forward pass;
//! - [`augment`]: random flips, crops, translations and cutout on device batches;
//! - [`input`]: images, labels and the fitted normalisation;
//! - [`device`]: device names and the memory layout per device;
//! - [`optim`]: Adam, AdamW and SGD with Keras's names and defaults;
//! - [`precision`]: fp32 / bf16 / fp16 (autocast) and loss scaling;
//! - [`train`]: the training and inference loops and their progress protocol;
//! - [`recipe`]: training recipes architectures carry (airbench94's);
//! - [`model`]: `Model`, which owns a model and drives the loops;
//! - [`inspect`]: what a trained network learned: feature maps, kernels,
//!   Grad-CAM and saliency;
//! - [`checkpoint`]: the saved-model file format;
//! - [`torch_ext`]: what tch lacks (autocast per device and dtype, per-model
//!   random generators), through our own small C++ shim.

pub mod arch;
pub mod augment;
pub mod checkpoint;
pub mod device;
pub mod input;
pub mod inspect;
pub mod model;
pub mod network;
pub mod optim;
pub mod precision;
pub mod recipe;
pub mod spec;
pub mod torch_ext;
pub mod train;

pub use arch::{Layer, Plan};
pub use input::{Images, Pixels};
pub use model::{Model, ModelConfig};
pub use precision::Precision;
pub use train::{FitConfig, History, Monitor};

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
