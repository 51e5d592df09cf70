//! Neural networks on libtorch: architectures, training loop, evaluation.

pub mod arch;
pub mod model;
pub mod network;
pub mod torch_ext;

pub use arch::{Layer, Plan};
pub use model::{FitConfig, History, Images, Model, Monitor, Pixels};

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
