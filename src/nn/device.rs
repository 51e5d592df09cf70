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

/// The layout networks run in, on every device, as measured
/// (benchmarks/RESULTS.md): channels-last. On CUDA it is what tensor cores and
/// cuDNN's NHWC kernels want; on a CPU, oneDNN's blocked kernels (baseline
/// 1.1× faster than NCHW in float32, 1.5× in bfloat16; with_batch_norm 1.2× and
/// 1.3×; airbench94 1.8×, on a 2-core Xeon with AMX). Batch-norm networks once
/// ran many times slower channels-last on a CPU: dropout's mask was drawn
/// contiguous, which made every gradient before it contiguous against
/// channels-last activations; the mask now keeps its input's layout.
pub const PREFERRED_LAYOUT: Layout = Layout::ChannelsLast;
