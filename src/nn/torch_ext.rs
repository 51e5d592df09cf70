//! libtorch features tch 0.24 does not expose, through our C++ shim
//! (csrc/cnnrs_ext.cpp, compiled by build.rs):
//!
//! - [`AutocastGuard`] / [`with_autocast`]: libtorch's autocast for CPU or
//!   CUDA with bfloat16 or float16, as `torch.autocast(device, dtype)` does.
//!   tch's own `autocast` only toggles CUDA float16.
//! - [`Generator`]: a random generator owned by one model, so that "same
//!   seed, same history" holds while other threads train other models; the
//!   draws a training loop needs (permutation, dropout, uniform, integers,
//!   Bernoulli) take it explicitly, and its state can be saved and restored.
//!
//! Every call into C++ catches the C++ exceptions there; a failure comes back
//! as [`Error::Torch`] with libtorch's message.

use std::ffi::{c_char, c_int, CStr};
use std::marker::PhantomData;
use std::ptr::{self, NonNull};

use tch::{Device, Kind, Tensor};
use torch_sys::C_tensor;

use crate::error::{Error, Result};

/// The C ABI of csrc/cnnrs_ext.cpp. Integers stand for `c10::DeviceType` and
/// `c10::ScalarType` values, which the C++ side pins with `static_assert`s.
mod ffi {
    use super::{c_char, c_int, C_tensor};

    /// `CnnrsAutocastPrev`: the autocast state before a guard changed it.
    #[repr(C)]
    #[derive(Debug, Default, Clone, Copy)]
    pub struct AutocastPrev {
        pub device_type: i32,
        pub enabled: i32,
        pub dtype: i32,
        pub cache_enabled: i32,
    }

    /// An `at::Generator` on the C++ heap, only ever handled by pointer.
    #[repr(C)]
    pub struct CGenerator {
        _opaque: [u8; 0],
    }

    extern "C" {
        pub fn cnnrs_last_error() -> *const c_char;
        pub fn cnnrs_cuda_supports_bf16() -> c_int;
        pub fn cnnrs_cpu_supports_bf16() -> c_int;

        pub fn cnnrs_autocast_enter(
            device_type: i32,
            dtype: i32,
            enabled: i32,
            prev: *mut AutocastPrev,
        ) -> c_int;
        pub fn cnnrs_autocast_exit(prev: *const AutocastPrev) -> c_int;
        pub fn cnnrs_autocast_query(device_type: i32, enabled: *mut i32, dtype: *mut i32) -> c_int;

        pub fn cnnrs_generator_new(
            device_type: i32,
            device_index: i32,
            seed: u64,
        ) -> *mut CGenerator;
        pub fn cnnrs_generator_free(gen: *mut CGenerator);
        pub fn cnnrs_generator_get_state(gen: *mut CGenerator, out: *mut *mut C_tensor) -> c_int;
        pub fn cnnrs_generator_set_state(gen: *mut CGenerator, state: *const C_tensor) -> c_int;
        pub fn cnnrs_generator_randperm(
            gen: *mut CGenerator,
            n: i64,
            out: *mut *mut C_tensor,
        ) -> c_int;
        pub fn cnnrs_generator_rand(
            gen: *mut CGenerator,
            shape: *const i64,
            ndim: usize,
            dtype: i32,
            out: *mut *mut C_tensor,
        ) -> c_int;
        pub fn cnnrs_generator_randint(
            gen: *mut CGenerator,
            low: i64,
            high: i64,
            shape: *const i64,
            ndim: usize,
            out: *mut *mut C_tensor,
        ) -> c_int;
        pub fn cnnrs_generator_bernoulli(
            gen: *mut CGenerator,
            p: f64,
            shape: *const i64,
            ndim: usize,
            out: *mut *mut C_tensor,
        ) -> c_int;
        pub fn cnnrs_generator_dropout(
            gen: *mut CGenerator,
            x: *const C_tensor,
            p: f64,
            out: *mut *mut C_tensor,
        ) -> c_int;
        pub fn cnnrs_addmm(
            input: *const C_tensor,
            m1: *const C_tensor,
            m2: *const C_tensor,
            beta: f64,
            alpha: f64,
            out: *mut *mut C_tensor,
        ) -> c_int;
        pub fn cnnrs_add_scaled_(t: *mut C_tensor, other: *const C_tensor, alpha: f64) -> c_int;
    }
}

const DEVICE_CPU: i32 = 0;
const DEVICE_CUDA: i32 = 1;

/// `c10::ScalarType` of the kinds that cross the shim.
fn scalar_type(kind: Kind) -> Option<i32> {
    match kind {
        Kind::Half => Some(5),
        Kind::Float => Some(6),
        Kind::Double => Some(7),
        Kind::BFloat16 => Some(15),
        _ => None,
    }
}

fn kind_of_scalar_type(code: i32) -> Option<Kind> {
    [Kind::Half, Kind::Float, Kind::Double, Kind::BFloat16]
        .into_iter()
        .find(|&k| scalar_type(k) == Some(code))
}

/// `(c10::DeviceType, index)` of a device the shim supports.
fn device_code(device: Device) -> Result<(i32, i32)> {
    match device {
        Device::Cpu => Ok((DEVICE_CPU, -1)),
        Device::Cuda(i) => i32::try_from(i)
            .map(|i| (DEVICE_CUDA, i))
            .map_err(|_| Error::invalid(format!("CUDA device index {i} is out of range"))),
        other => Err(Error::invalid(format!(
            "device must be the CPU or a CUDA device, got {other:?}"
        ))),
    }
}

/// The message the C++ side left for the failure it just reported.
fn last_error() -> Error {
    // SAFETY: the shim returns a pointer to its thread-local, NUL-terminated
    // message, valid until the next shim call on this thread; it is copied
    // before anything else runs.
    let msg = unsafe { CStr::from_ptr(ffi::cnnrs_last_error()) }
        .to_string_lossy()
        .into_owned();
    Error::Torch(tch::TchError::Torch(msg))
}

fn check(rc: c_int) -> Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(last_error())
    }
}

/// Calls a shim function that returns a tensor through `out`.
fn tensor_from(call: impl FnOnce(*mut *mut C_tensor) -> c_int) -> Result<Tensor> {
    let mut out: *mut C_tensor = ptr::null_mut();
    check(call(&raw mut out))?;
    assert!(!out.is_null(), "the shim reported success without a tensor");
    // SAFETY: on success the shim stored a fresh `new at::Tensor(...)` that
    // nothing else references; the Rust tensor takes ownership and frees it
    // through tch on drop.
    Ok(unsafe { Tensor::from_ptr(out) })
}

fn check_shape(shape: &[i64]) -> Result<()> {
    if let Some(d) = shape.iter().find(|&&d| d < 0) {
        return Err(Error::invalid(format!(
            "shape must have non-negative sizes, got {d} in {shape:?}"
        )));
    }
    Ok(())
}

fn check_probability(name: &str, p: f64) -> Result<()> {
    if (0.0..=1.0).contains(&p) {
        Ok(())
    } else {
        Err(Error::invalid(format!("{name} must be in [0, 1], got {p}")))
    }
}

// ---------------------------------------------------------------- autocast

/// Autocast enabled for one device type with a lower-precision dtype, on
/// this thread, until the guard is dropped; then the previous state comes
/// back, as at the end of a `with torch.autocast(...)` block. Leaving the
/// outermost autocast region also clears libtorch's cache of weights cast
/// to the lower precision.
///
/// Weights stay float32: libtorch's autocast op lists decide what runs in
/// the lower precision (matmul and convolutions do, reductions and losses
/// stay float32). Autocast state is per thread, hence the guard is neither
/// `Send` nor `Sync`; it is per device *type*, so `Device::Cuda(1)` and
/// `Device::Cuda(0)` share it. Nested guards must be dropped in the reverse
/// order of their creation, which scopes do by themselves.
#[derive(Debug)]
#[must_use = "autocast is off again as soon as the guard is dropped"]
pub struct AutocastGuard {
    prev: ffi::AutocastPrev,
    /// Thread-bound: a raw pointer makes the guard !Send and !Sync.
    _thread: PhantomData<*const ()>,
}

impl AutocastGuard {
    /// Turns autocast on for `device`'s type with `kind`
    /// (`Kind::BFloat16` or `Kind::Half`).
    ///
    /// # Errors
    /// [`Error::InvalidType`] for another kind, [`Error::InvalidArgument`]
    /// for a device other than the CPU or CUDA.
    pub fn new(device: Device, kind: Kind) -> Result<Self> {
        let dtype = match kind {
            Kind::BFloat16 | Kind::Half => scalar_type(kind).expect("a low-precision kind"),
            other => {
                return Err(Error::invalid_type(format!(
                    "autocast dtype must be BFloat16 or Half, got {other:?}"
                )))
            }
        };
        Self::enter(device, dtype, true)
    }

    /// Turns autocast off for `device`'s type (`torch.autocast(enabled=False)`):
    /// a float32 model computes in float32 even inside a caller's autocast block.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a device other than the CPU or CUDA.
    pub fn off(device: Device) -> Result<Self> {
        Self::enter(device, 0, false)
    }

    fn enter(device: Device, dtype: i32, enabled: bool) -> Result<Self> {
        let (device_type, _) = device_code(device)?;
        let mut prev = ffi::AutocastPrev::default();
        // SAFETY: `prev` is a live, writable struct with the C layout.
        check(unsafe {
            ffi::cnnrs_autocast_enter(device_type, dtype, i32::from(enabled), &raw mut prev)
        })?;
        Ok(Self {
            prev,
            _thread: PhantomData,
        })
    }
}

impl Drop for AutocastGuard {
    fn drop(&mut self) {
        // SAFETY: `prev` is what `cnnrs_autocast_enter` filled in on this
        // thread (the guard cannot leave it).
        let rc = unsafe { ffi::cnnrs_autocast_exit(&raw const self.prev) };
        // Only an invalid device type can fail, and `new` rejected those.
        debug_assert_eq!(rc, 0, "autocast exit failed");
    }
}

/// A copy of `t` with its own storage (same device, dtype and layout), made
/// without recording anything for autograd.
///
/// # Errors
/// libtorch failures (e.g. out of memory).
pub fn deep_copy(t: &Tensor) -> Result<Tensor> {
    let mut copy = t.f_empty_like()?;
    tch::no_grad(|| copy.f_copy_(t))?;
    Ok(copy)
}

/// Runs `f` under autocast for `device` with `kind`, or with autocast off for
/// `None` (whatever autocast the calling thread had on: a float32 model called
/// inside a user's `torch.autocast` block still computes in float32).
///
/// # Errors
/// As [`AutocastGuard::new`]; `f` does not run then.
pub fn with_autocast<T>(device: Device, kind: Option<Kind>, f: impl FnOnce() -> T) -> Result<T> {
    match kind {
        None if autocast_kind(device)?.is_none() => Ok(f()),
        None => {
            let _guard = AutocastGuard::off(device)?;
            Ok(f())
        }
        Some(kind) => {
            let _guard = AutocastGuard::new(device, kind)?;
            Ok(f())
        }
    }
}

/// The autocast dtype in force on this thread for `device`'s type, or
/// `None` when autocast is off there.
///
/// # Errors
/// [`Error::InvalidArgument`] for a device other than the CPU or CUDA.
pub fn autocast_kind(device: Device) -> Result<Option<Kind>> {
    let (device_type, _) = device_code(device)?;
    let (mut enabled, mut dtype) = (0, 0);
    // SAFETY: both outputs are live, writable i32s.
    check(unsafe { ffi::cnnrs_autocast_query(device_type, &raw mut enabled, &raw mut dtype) })?;
    if enabled == 0 {
        return Ok(None);
    }
    kind_of_scalar_type(dtype).map(Some).ok_or_else(|| {
        Error::Torch(tch::TchError::Torch(format!(
            "autocast uses scalar type {dtype}, which cnnrs does not know"
        )))
    })
}

// -------------------------------------------------------------- generators

/// A random generator of its own (libtorch's `at::Generator`), on the CPU
/// or one CUDA device. Draws from it do not touch libtorch's global
/// generator, nor does anything else drawing change its sequence.
///
/// `Send` (a model may move to a worker thread) but not `Sync`: draws need
/// `&mut self`.
#[derive(Debug)]
pub struct Generator {
    ptr: NonNull<ffi::CGenerator>,
    device: Device,
}

// SAFETY: an at::Generator is a reference-counted handle whose state is
// guarded by its own mutex and not tied to the thread that made it; the Rust
// value is its only owner, so moving it to another thread is sound. It stays
// !Sync (NonNull is), so no two threads use it at once.
unsafe impl Send for Generator {}

impl Generator {
    /// A generator for `device` seeded with `seed`. A CUDA generator needs
    /// a libtorch with CUDA and the device present; otherwise this fails
    /// with libtorch's reason.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a device other than the CPU or CUDA;
    /// [`Error::Torch`] when libtorch cannot make the generator.
    pub fn new(device: Device, seed: u64) -> Result<Self> {
        let (device_type, index) = device_code(device)?;
        // SAFETY: plain values in; a NULL result is reported as an error.
        let raw = unsafe { ffi::cnnrs_generator_new(device_type, index, seed) };
        let ptr = NonNull::new(raw).ok_or_else(last_error)?;
        Ok(Self { ptr, device })
    }

    /// The device its draws land on.
    #[must_use]
    pub fn device(&self) -> Device {
        self.device
    }

    fn raw(&self) -> *mut ffi::CGenerator {
        self.ptr.as_ptr()
    }

    /// A random permutation of `0..n`, int64 on the generator's device.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a negative `n`; [`Error::Torch`] if
    /// libtorch fails.
    pub fn randperm(&mut self, n: i64) -> Result<Tensor> {
        if n < 0 {
            return Err(Error::invalid(format!("n must be >= 0, got {n}")));
        }
        // SAFETY: `self.ptr` is a live generator; `out` is a live pointer slot.
        tensor_from(|out| unsafe { ffi::cnnrs_generator_randperm(self.raw(), n, out) })
    }

    /// Dropout drawing its mask from this generator: in training each
    /// element is zeroed with probability `p` and the rest are scaled by
    /// `1 / (1 - p)`, so the gradient with respect to `x` is that scaled
    /// mask. Identity when `!train` or `p == 0`; zeros (`x * 0`) for
    /// `p == 1`. `x` must be a floating tensor on the generator's device.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for `p` outside [0, 1]; [`Error::Torch`]
    /// for a non-floating `x` or one on another device type.
    pub fn dropout(&mut self, x: &Tensor, p: f64, train: bool) -> Result<Tensor> {
        check_probability("dropout probability p", p)?;
        if !train || p == 0.0 {
            return Ok(x.shallow_clone());
        }
        // SAFETY: `self.ptr` is a live generator, `x` a live tensor borrowed
        // for the call; `out` is a live pointer slot.
        tensor_from(|out| unsafe { ffi::cnnrs_generator_dropout(self.raw(), x.as_ptr(), p, out) })
    }

    /// Uniform samples in [0, 1) of a floating `kind` (Float, Double, Half,
    /// BFloat16), on the generator's device.
    ///
    /// # Errors
    /// [`Error::InvalidType`] for another kind, [`Error::InvalidArgument`]
    /// for a negative size; [`Error::Torch`] if libtorch fails.
    pub fn rand(&mut self, shape: &[i64], kind: Kind) -> Result<Tensor> {
        check_shape(shape)?;
        let dtype = scalar_type(kind).ok_or_else(|| {
            Error::invalid_type(format!(
                "rand needs a floating kind (Float, Double, Half, BFloat16), got {kind:?}"
            ))
        })?;
        // SAFETY: `self.ptr` is a live generator; `shape` is valid for
        // `shape.len()` reads during the call; `out` is a live pointer slot.
        tensor_from(|out| unsafe {
            ffi::cnnrs_generator_rand(self.raw(), shape.as_ptr(), shape.len(), dtype, out)
        })
    }

    /// Integers uniform in [low, high), int64 on the generator's device.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] unless `low < high`, or for a negative
    /// size; [`Error::Torch`] if libtorch fails.
    pub fn randint(&mut self, low: i64, high: i64, shape: &[i64]) -> Result<Tensor> {
        check_shape(shape)?;
        if low >= high {
            return Err(Error::invalid(format!(
                "randint needs low < high, got low={low}, high={high}"
            )));
        }
        // SAFETY: as in `rand`.
        tensor_from(|out| unsafe {
            ffi::cnnrs_generator_randint(self.raw(), low, high, shape.as_ptr(), shape.len(), out)
        })
    }

    /// float32 ones with probability `p`, zeros otherwise, on the
    /// generator's device.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for `p` outside [0, 1] or a negative size;
    /// [`Error::Torch`] if libtorch fails.
    pub fn bernoulli(&mut self, p: f64, shape: &[i64]) -> Result<Tensor> {
        check_shape(shape)?;
        check_probability("bernoulli probability p", p)?;
        // SAFETY: as in `rand`.
        tensor_from(|out| unsafe {
            ffi::cnnrs_generator_bernoulli(self.raw(), p, shape.as_ptr(), shape.len(), out)
        })
    }

    /// The generator's state, the bytes `torch.Generator.get_state()` holds,
    /// for a checkpoint.
    ///
    /// # Errors
    /// [`Error::Torch`] if libtorch fails.
    pub fn state(&self) -> Result<Vec<u8>> {
        // SAFETY: `self.ptr` is a live generator; the shim only locks its
        // mutex and copies the state out; `out` is a live pointer slot.
        let t = tensor_from(|out| unsafe { ffi::cnnrs_generator_get_state(self.raw(), out) })?;
        Ok(Vec::<u8>::try_from(&t.flatten(0, -1))?)
    }

    /// Restores a state from [`Generator::state`] of a generator of the same
    /// device type; the draws that followed it come again.
    ///
    /// # Errors
    /// [`Error::Torch`] for bytes that are not such a state.
    pub fn set_state(&mut self, state: &[u8]) -> Result<()> {
        let t = Tensor::from_slice(state);
        // SAFETY: `self.ptr` is a live generator, `t` a live uint8 CPU tensor
        // borrowed for the call.
        check(unsafe { ffi::cnnrs_generator_set_state(self.raw(), t.as_ptr()) })
    }
}

impl Drop for Generator {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from `cnnrs_generator_new` and is freed once,
        // here.
        unsafe { ffi::cnnrs_generator_free(self.ptr.as_ptr()) }
    }
}

/// `beta · input + alpha · (m1 @ m2)` as one kernel, as `torch.addmm` with
/// `beta` and `alpha` (tch's `addmm` has neither).
///
/// # Errors
/// [`Error::Torch`] for shapes or dtypes `torch.addmm` refuses.
pub fn addmm(input: &Tensor, m1: &Tensor, m2: &Tensor, beta: f64, alpha: f64) -> Result<Tensor> {
    // SAFETY: the three tensors are live and borrowed for the call; `out` is a
    // live pointer slot.
    tensor_from(|out| unsafe {
        ffi::cnnrs_addmm(input.as_ptr(), m1.as_ptr(), m2.as_ptr(), beta, alpha, out)
    })
}

/// `t += alpha · other` in place, as `t.add_(other, alpha=alpha)` (one
/// rounding, where a multiply then an add would round twice).
///
/// # Errors
/// [`Error::Torch`] for shapes or dtypes `add_` refuses.
pub fn add_scaled_(t: &mut Tensor, other: &Tensor, alpha: f64) -> Result<()> {
    // SAFETY: both tensors are live for the call; `t` is borrowed mutably.
    check(unsafe { ffi::cnnrs_add_scaled_(t.as_mut_ptr(), other.as_ptr(), alpha) })
}

/// Whether the current CUDA device computes bfloat16 natively (compute
/// capability 8.0 or later); false without CUDA.
#[must_use]
pub fn cuda_supports_bf16() -> bool {
    // SAFETY: takes no arguments and catches every C++ exception.
    unsafe { ffi::cnnrs_cuda_supports_bf16() == 1 }
}

/// Whether libtorch's oneDNN computes bfloat16 natively on this CPU
/// (AVX-512 BF16 or AMX, and not capped below them by `ONEDNN_MAX_CPU_ISA`).
#[must_use]
pub fn cpu_supports_bf16() -> bool {
    // SAFETY: takes no arguments and catches every C++ exception.
    unsafe { ffi::cnnrs_cpu_supports_bf16() == 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn floats(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(&t.flatten(0, -1).to_kind(Kind::Float)).unwrap()
    }

    fn longs(t: &Tensor) -> Vec<i64> {
        Vec::<i64>::try_from(&t.flatten(0, -1)).unwrap()
    }

    // ------------------------------------------------------------ autocast

    #[test]
    fn autocast_runs_matmul_and_conv_in_bf16_on_cpu() {
        let x = Tensor::ones([2, 3], (Kind::Float, Device::Cpu));
        let w = Tensor::ones([3, 4], (Kind::Float, Device::Cpu));
        let img = Tensor::ones([1, 2, 5, 5], (Kind::Float, Device::Cpu));
        let k = Tensor::ones([3, 2, 3, 3], (Kind::Float, Device::Cpu));
        let conv = |img: &Tensor| img.conv2d::<Tensor>(&k, None, [1, 1], [0, 0], [1, 1], 1);

        assert_eq!(autocast_kind(Device::Cpu).unwrap(), None);
        {
            let _g = AutocastGuard::new(Device::Cpu, Kind::BFloat16).unwrap();
            assert_eq!(autocast_kind(Device::Cpu).unwrap(), Some(Kind::BFloat16));
            let y = x.matmul(&w);
            assert_eq!(y.kind(), Kind::BFloat16);
            assert_eq!(floats(&y), vec![3.0; 8]);
            assert_eq!(conv(&img).kind(), Kind::BFloat16);
            // The weights themselves are untouched.
            assert_eq!(w.kind(), Kind::Float);
        }
        assert_eq!(autocast_kind(Device::Cpu).unwrap(), None);
        assert_eq!(x.matmul(&w).kind(), Kind::Float);
        assert_eq!(conv(&img).kind(), Kind::Float);

        let y = with_autocast(Device::Cpu, Some(Kind::BFloat16), || x.matmul(&w)).unwrap();
        assert_eq!(y.kind(), Kind::BFloat16);
        let y = with_autocast(Device::Cpu, None, || x.matmul(&w)).unwrap();
        assert_eq!(y.kind(), Kind::Float);
        assert_eq!(autocast_kind(Device::Cpu).unwrap(), None);
    }

    #[test]
    fn nested_guards_restore_in_turn() {
        let x = Tensor::ones([2, 2], (Kind::Float, Device::Cpu));
        {
            let _outer = AutocastGuard::new(Device::Cpu, Kind::BFloat16).unwrap();
            {
                let _inner = AutocastGuard::new(Device::Cpu, Kind::Half).unwrap();
                assert_eq!(autocast_kind(Device::Cpu).unwrap(), Some(Kind::Half));
                assert_eq!(x.matmul(&x).kind(), Kind::Half);
            }
            assert_eq!(autocast_kind(Device::Cpu).unwrap(), Some(Kind::BFloat16));
            assert_eq!(x.matmul(&x).kind(), Kind::BFloat16);
        }
        assert_eq!(autocast_kind(Device::Cpu).unwrap(), None);
        // The CUDA state is separate and needs no GPU to be set or read.
        {
            let _g = AutocastGuard::new(Device::Cuda(0), Kind::BFloat16).unwrap();
            assert_eq!(
                autocast_kind(Device::Cuda(0)).unwrap(),
                Some(Kind::BFloat16)
            );
            assert_eq!(autocast_kind(Device::Cpu).unwrap(), None);
            assert_eq!(x.matmul(&x).kind(), Kind::Float);
        }
        assert_eq!(autocast_kind(Device::Cuda(0)).unwrap(), None);
    }

    /// A float32 run (`with_autocast(None)`) inside a caller's autocast block
    /// computes in float32, and the caller's autocast is back afterwards.
    #[test]
    fn float32_runs_turn_a_callers_autocast_off() {
        let x = Tensor::ones([2, 2], (Kind::Float, Device::Cpu));
        let _caller = AutocastGuard::new(Device::Cpu, Kind::BFloat16).unwrap();
        assert_eq!(x.matmul(&x).kind(), Kind::BFloat16);
        let y = with_autocast(Device::Cpu, None, || {
            assert_eq!(autocast_kind(Device::Cpu).unwrap(), None);
            x.matmul(&x)
        })
        .unwrap();
        assert_eq!(y.kind(), Kind::Float);
        assert_eq!(autocast_kind(Device::Cpu).unwrap(), Some(Kind::BFloat16));
    }

    #[test]
    fn guard_restores_after_early_return_and_panic() {
        fn early(fail: bool) -> Result<Kind> {
            let _g = AutocastGuard::new(Device::Cpu, Kind::BFloat16)?;
            if fail {
                return Err(Error::invalid("early"));
            }
            Ok(autocast_kind(Device::Cpu)?.unwrap())
        }
        assert!(early(true).is_err());
        assert_eq!(autocast_kind(Device::Cpu).unwrap(), None);
        assert_eq!(early(false).unwrap(), Kind::BFloat16);
        assert_eq!(autocast_kind(Device::Cpu).unwrap(), None);

        let r = std::panic::catch_unwind(|| {
            with_autocast(Device::Cpu, Some(Kind::BFloat16), || panic!("inside")).unwrap();
        });
        assert!(r.is_err());
        assert_eq!(autocast_kind(Device::Cpu).unwrap(), None);
    }

    #[test]
    fn autocast_rejects_other_kinds_and_devices() {
        assert!(matches!(
            AutocastGuard::new(Device::Cpu, Kind::Float),
            Err(Error::InvalidType(_))
        ));
        assert!(matches!(
            AutocastGuard::new(Device::Mps, Kind::Half),
            Err(Error::InvalidArgument(_))
        ));
        assert_eq!(autocast_kind(Device::Cpu).unwrap(), None);
    }

    // ---------------------------------------------------------- generators

    /// randperm, rand, dropout, randint and bernoulli values.
    type Draws = (Vec<i64>, Vec<f32>, Vec<f32>, Vec<i64>, Vec<f32>);

    /// A fixed mix of every draw, to compare generators by.
    fn draws(g: &mut Generator) -> Draws {
        let ones = Tensor::ones([64], (Kind::Float, Device::Cpu));
        (
            longs(&g.randperm(50).unwrap()),
            floats(&g.rand(&[3, 7], Kind::Float).unwrap()),
            floats(&g.dropout(&ones, 0.5, true).unwrap()),
            longs(&g.randint(-5, 5, &[20]).unwrap()),
            floats(&g.bernoulli(0.3, &[40]).unwrap()),
        )
    }

    #[test]
    fn same_seed_same_draws_other_seed_other_draws() {
        let mut a = Generator::new(Device::Cpu, 42).unwrap();
        let mut b = Generator::new(Device::Cpu, 42).unwrap();
        let mut c = Generator::new(Device::Cpu, 43).unwrap();
        let (da, db, dc) = (draws(&mut a), draws(&mut b), draws(&mut c));
        assert_eq!(da, db);
        assert_ne!(da.0, dc.0);
        assert_ne!(da.1, dc.1);
        assert_ne!(da.2, dc.2);
        // Later draws continue the sequence rather than repeat it.
        assert_ne!(draws(&mut a).1, da.1);

        let perm = a.randperm(50).unwrap();
        assert_eq!(perm.kind(), Kind::Int64);
        let mut sorted = longs(&perm);
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert!(longs(&a.randint(-5, 5, &[1000]).unwrap())
            .iter()
            .all(|v| (-5..5).contains(v)));
        let r = a.rand(&[1000], Kind::Double).unwrap();
        assert_eq!(r.kind(), Kind::Double);
        assert!(floats(&r).iter().all(|v| (0.0..1.0).contains(v)));
        assert_eq!(a.rand(&[2], Kind::BFloat16).unwrap().kind(), Kind::BFloat16);
        assert_eq!(a.device(), Device::Cpu);
    }

    #[test]
    fn other_generators_do_not_disturb_a_sequence() {
        let mut alone = Generator::new(Device::Cpu, 5).unwrap();
        let expected: Vec<_> = (0..3).map(|_| draws(&mut alone)).collect();

        let mut a = Generator::new(Device::Cpu, 5).unwrap();
        let mut b = Generator::new(Device::Cpu, 5).unwrap();
        for e in &expected {
            draws(&mut b);
            assert_eq!(&draws(&mut a), e);
        }
    }

    /// Touches libtorch's global generator, which model.rs's tests seed and
    /// expect to be theirs alone, so it runs in a child process: the parent
    /// test re-runs this test binary on just the child test.
    #[test]
    fn global_generator_and_other_threads_do_not_disturb_a_sequence() {
        let child = "nn::torch_ext::tests::global_generator_child";
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([child, "--exact", "--ignored", "--test-threads=1"])
            .env("CNNRS_TORCH_EXT_CHILD", "1")
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && log.contains("1 passed"),
            "child failed:\n{log}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    #[ignore = "run by global_generator_and_other_threads_do_not_disturb_a_sequence"]
    fn global_generator_child() {
        if std::env::var_os("CNNRS_TORCH_EXT_CHILD").is_none() {
            return;
        }
        let rounds = 200;
        let mut alone = Generator::new(Device::Cpu, 11).unwrap();
        let expected: Vec<_> = (0..rounds).map(|_| draws(&mut alone)).collect();

        // Interleaved with the global generator on this thread.
        tch::manual_seed(11);
        let mut a = Generator::new(Device::Cpu, 11).unwrap();
        for e in &expected[..10] {
            let _ = Tensor::rand([100], (Kind::Float, Device::Cpu));
            tch::manual_seed(3);
            assert_eq!(&draws(&mut a), e);
        }

        // Concurrently: two threads with their own generators of the same
        // seed, a third reseeding and drawing from the global one.
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            let noise = s.spawn(|| {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    tch::manual_seed(n as i64);
                    let _ = Tensor::rand([1000], (Kind::Float, Device::Cpu));
                    let _ = Tensor::randperm(1000, (Kind::Int64, Device::Cpu));
                    n += 1;
                }
                n
            });
            let workers: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        let mut g = Generator::new(Device::Cpu, 11).unwrap();
                        (0..rounds).map(|_| draws(&mut g)).collect::<Vec<_>>()
                    })
                })
                .collect();
            for w in workers {
                assert_eq!(w.join().unwrap(), expected);
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            assert!(noise.join().unwrap() > 0);
        });
    }

    #[test]
    fn state_round_trip_replays_the_draws() {
        let mut g = Generator::new(Device::Cpu, 9).unwrap();
        draws(&mut g);
        let saved = g.state().unwrap();
        assert!(!saved.is_empty());
        let first = draws(&mut g);
        assert_ne!(draws(&mut g), first);

        g.set_state(&saved).unwrap();
        assert_eq!(draws(&mut g), first);

        // Into another generator, whatever its seed.
        let mut h = Generator::new(Device::Cpu, 1234).unwrap();
        h.set_state(&saved).unwrap();
        assert_eq!(draws(&mut h), first);

        // A wrong-sized state is libtorch's error, not a crash.
        assert!(matches!(h.set_state(&[1, 2, 3]), Err(Error::Torch(_))));
    }

    #[test]
    fn dropout_gradient_is_the_scaled_mask() {
        let p = 0.25;
        let mut g = Generator::new(Device::Cpu, 3).unwrap();
        let mut replay = Generator::new(Device::Cpu, 3).unwrap();
        let x = (g.rand(&[8, 16], Kind::Float).unwrap() + 0.5).set_requires_grad(true);
        let _ = replay.rand(&[8, 16], Kind::Float).unwrap();

        let y = g.dropout(&x, p, true).unwrap();
        let ones = Tensor::ones([8, 16], (Kind::Float, Device::Cpu));
        let mask = replay.dropout(&ones, p, true).unwrap();
        let mask_values = floats(&mask);
        assert!(mask_values.iter().all(|&m| m == 0.0 || m == 1.0 / 0.75));
        assert!(mask_values.contains(&0.0) && mask_values.contains(&(1.0 / 0.75)));
        assert_eq!(floats(&y), floats(&(&x * &mask)));

        y.sum(Kind::Float).backward();
        assert_eq!(floats(&x.grad()), mask_values);
    }

    #[test]
    fn dropout_edge_cases() {
        let mut g = Generator::new(Device::Cpu, 3).unwrap();
        let x = Tensor::ones([100], (Kind::Float, Device::Cpu));
        assert_eq!(floats(&g.dropout(&x, 0.5, false).unwrap()), vec![1.0; 100]);
        assert_eq!(floats(&g.dropout(&x, 0.0, true).unwrap()), vec![1.0; 100]);
        assert_eq!(floats(&g.dropout(&x, 1.0, true).unwrap()), vec![0.0; 100]);
        for bad in [-0.1, 1.5, f64::NAN] {
            assert!(matches!(
                g.dropout(&x, bad, true),
                Err(Error::InvalidArgument(_))
            ));
        }
        let ints = Tensor::ones([4], (Kind::Int64, Device::Cpu));
        assert!(matches!(g.dropout(&ints, 0.5, true), Err(Error::Torch(_))));
        // Under autocast a bf16 activation keeps its dtype.
        let h = x.to_kind(Kind::BFloat16);
        assert_eq!(g.dropout(&h, 0.5, true).unwrap().kind(), Kind::BFloat16);
    }

    #[test]
    fn keep_fraction_matches_one_minus_p() {
        let mut g = Generator::new(Device::Cpu, 17).unwrap();
        let x = Tensor::ones([1_000_000], (Kind::Float, Device::Cpu));
        for p in [0.1, 0.5, 0.8] {
            let y = g.dropout(&x, p, true).unwrap();
            let kept = y.ne(0.0).to_kind(Kind::Double).mean(Kind::Double);
            let frac = kept.double_value(&[]);
            // The standard deviation is below 5e-4: 0.01 is 20 of them.
            assert!((frac - (1.0 - p)).abs() < 0.01, "p={p}: kept {frac}");
        }
        let b = g.bernoulli(0.3, &[1_000_000]).unwrap();
        assert_eq!(b.kind(), Kind::Float);
        let frac = b.mean(Kind::Double).double_value(&[]);
        assert!((frac - 0.3).abs() < 0.01, "bernoulli mean {frac}");
        assert_eq!(
            floats(
                &b.ne(0.0)
                    .logical_and(&b.ne(1.0))
                    .to_kind(Kind::Float)
                    .sum(Kind::Float)
            ),
            vec![0.0]
        );
    }

    #[test]
    fn bad_arguments_are_errors() {
        let mut g = Generator::new(Device::Cpu, 0).unwrap();
        assert!(matches!(g.randperm(-1), Err(Error::InvalidArgument(_))));
        assert!(matches!(
            g.rand(&[2], Kind::Int64),
            Err(Error::InvalidType(_))
        ));
        assert!(matches!(
            g.rand(&[-2], Kind::Float),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            g.randint(3, 3, &[2]),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            g.bernoulli(2.0, &[2]),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            Generator::new(Device::Mps, 0),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn cuda_generator_fails_clearly_without_cuda() {
        if tch::Cuda::is_available() {
            let mut g = Generator::new(Device::Cuda(0), 1).unwrap();
            let mut h = Generator::new(Device::Cuda(0), 1).unwrap();
            assert_eq!(g.device(), Device::Cuda(0));
            let a = g.randperm(10).unwrap();
            assert_eq!(a.device(), Device::Cuda(0));
            assert_eq!(
                longs(&a.to(Device::Cpu)),
                longs(&h.randperm(10).unwrap().to(Device::Cpu))
            );
            let s = g.state().unwrap();
            let r = g.rand(&[5], Kind::Float).unwrap().to(Device::Cpu);
            g.set_state(&s).unwrap();
            assert_eq!(
                floats(&r),
                floats(&g.rand(&[5], Kind::Float).unwrap().to(Device::Cpu))
            );
        } else {
            let err = Generator::new(Device::Cuda(0), 1).unwrap_err();
            assert!(matches!(err, Error::Torch(_)), "{err}");
            assert!(err.to_string().contains("CUDA"), "{err}");
        }
    }
}
