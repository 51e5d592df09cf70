//! Placeholder until the C++ shim lands: float32, and CUDA float16 through
//! tch's own autocast.

use tch::{Device, Kind};

use crate::error::{Error, Result};

/// Runs `f` under libtorch's autocast for `device` with `kind`.
///
/// # Errors
/// `InvalidArgument` for combinations this build cannot autocast.
pub fn with_autocast<T>(device: Device, kind: Option<Kind>, f: impl FnOnce() -> T) -> Result<T> {
    match kind {
        None => Ok(f()),
        Some(Kind::Half) if device.is_cuda() => Ok(tch::autocast(true, f)),
        Some(k) => Err(Error::invalid(format!("{k:?} autocast is not available"))),
    }
}

/// Whether the CUDA device computes bfloat16 natively.
#[must_use]
pub fn cuda_supports_bf16() -> bool {
    false
}
