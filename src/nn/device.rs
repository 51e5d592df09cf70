//! Devices as users name them ("auto", "cpu", "cuda", "cuda:N") and the
//! memory layout each device computes convolutions fastest in.

use tch::Device;

use crate::error::{Error, Result};

/// Parses "auto", "cpu", "cuda" or "cuda:N".
///
/// # Errors
/// `InvalidArgument` for any other string or a CUDA device that is not there.
pub fn parse_device(spec: &str) -> Result<Device> {
    let count = super::cuda_device_count();
    let cuda = |i: usize| {
        if i < count {
            Ok(Device::Cuda(i))
        } else if count == 0 {
            Err(Error::invalid(format!(
                "device {spec:?} was requested but libtorch sees no CUDA device; \
                 use device=\"cpu\" or \"auto\""
            )))
        } else {
            Err(Error::invalid(format!(
                "device {spec:?} does not exist: libtorch sees {count} CUDA device(s), cuda:0..cuda:{}",
                count - 1
            )))
        }
    };
    match spec {
        "auto" => Ok(if count > 0 {
            Device::Cuda(0)
        } else {
            Device::Cpu
        }),
        "cpu" => Ok(Device::Cpu),
        "cuda" => cuda(0),
        s => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(i)) => cuda(i),
            _ => Err(Error::invalid(format!(
                "device must be \"auto\", \"cpu\", \"cuda\" or \"cuda:N\", got {spec:?}"
            ))),
        },
    }
}

/// The name of a device as users write it.
#[must_use]
pub fn device_name(d: Device) -> String {
    match d {
        Device::Cuda(i) => format!("cuda:{i}"),
        Device::Mps => "mps".into(),
        Device::Vulkan => "vulkan".into(),
        Device::Cpu => "cpu".into(),
    }
}

/// How activations (and convolution weights) are laid out in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// NCHW logical shape with NHWC strides: what our NHWC images already are
    /// when viewed as NCHW, and what tensor cores and oneDNN's blocked
    /// kernels prefer.
    ChannelsLast,
    /// Plain contiguous NCHW.
    Contiguous,
}

/// The layout a network runs in on `device`, as measured (benchmarks/RESULTS.md):
/// channels-last on CUDA (what tensor cores and cuDNN's NHWC kernels want);
/// on a CPU, channels-last for plain conv/pool/dense stacks (oneDNN's blocked
/// kernels: baseline 1.1× faster in float32, 1.5× in bfloat16) but contiguous
/// NCHW as soon as there is batch normalisation, whose CPU kernels are many
/// times slower on channels-last input (with_batch_norm: 4× in float32, 16×
/// in bfloat16, on a 2-core Xeon with AMX).
#[must_use]
pub fn preferred_layout(device: Device, has_batch_norm: bool) -> Layout {
    if device.is_cuda() || !has_batch_norm {
        Layout::ChannelsLast
    } else {
        Layout::Contiguous
    }
}
