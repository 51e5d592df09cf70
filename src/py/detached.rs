//! [`Detached`]: a lock around a Rust object reachable from Python whose only
//! way in releases the GIL first (tokenizers' rule: never block on the lock
//! while attached to the interpreter), catches libtorch panics, refuses a
//! re-entrant call from the holder's own thread (a progress printer or
//! callback) instead of deadlocking, refuses to wait for a second lock from
//! inside a first (two such threads would wait for each other for good), and
//! marks the object unusable when a mutating call failed halfway.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError, TryLockError};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

use crate::error::{Error, TorchError};

/// The payload of a caught panic, as text.
pub(super) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_string()))
        .map_or_else(
            || "unknown failure".into(),
            |m| crate::error::torch_message(&m).to_string(),
        )
}

thread_local! {
    /// How many `Detached` locks the calling thread holds (nested through callbacks).
    static HOLDING: Cell<usize> = const { Cell::new(0) };
}

/// An identifier of the calling OS thread (the address of a thread-local).
fn thread_tag() -> usize {
    thread_local!(static TAG: u8 = const { 0 });
    TAG.with(|t| std::ptr::from_ref(t) as usize)
}

/// Whether a call may change the object (a panic inside it breaks it).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    Read,
    Write,
}

/// A `T` behind a lock taken only with the GIL released.
pub(super) struct Detached<T> {
    inner: Mutex<T>,
    /// `thread_tag()` of the thread holding `inner`, 0 when free.
    holder: AtomicUsize,
    /// Why the object is unusable, once a mutating call failed halfway.
    broken: OnceLock<String>,
}

impl<T: Send> Detached<T> {
    pub(super) fn new(value: T) -> Self {
        Detached {
            inner: Mutex::new(value),
            holder: AtomicUsize::new(0),
            broken: OnceLock::new(),
        }
    }

    /// The value, for an owner nobody else can see yet (no lock needed).
    pub(super) fn get_mut(&mut self) -> &mut T {
        self.inner.get_mut().unwrap_or_else(PoisonError::into_inner)
    }

    /// Releases the GIL, then takes the lock and runs `f` with panics
    /// caught; `after` sees the value whatever `f` did (to publish what
    /// became known). `what` names the Python method in errors.
    pub(super) fn with<R: Send>(
        &self,
        py: Python<'_>,
        what: &str,
        access: Access,
        f: impl FnOnce(&mut T) -> PyResult<R> + Send,
        after: impl FnOnce(&T) + Send,
    ) -> PyResult<R> {
        let me = thread_tag();
        if self.holder.load(Ordering::Acquire) == me {
            return Err(PyRuntimeError::new_err(format!(
                "Model.{what} cannot be called from inside this model's own fit/evaluate/predict \
                 (a progress printer or callback runs while the model is busy); read properties \
                 there, or call it after the fit returns"
            )));
        }
        let unusable = |why: &String| -> PyErr {
            Error::Unusable(format!(
                "this model can no longer be used: {why}. Its weights may be half-updated; \
                 load a saved copy (cnnrs.Model.load) or create a new model"
            ))
            .into()
        };
        if let Some(why) = self.broken.get() {
            return Err(unusable(why));
        }
        py.detach(|| {
            let mut guard = if HOLDING.get() > 0 {
                match self.inner.try_lock() {
                    Ok(g) => g,
                    Err(TryLockError::Poisoned(p)) => p.into_inner(),
                    Err(TryLockError::WouldBlock) => {
                        return Err(PyRuntimeError::new_err(format!(
                            "Model.{what}: this model is busy in another thread, and this \
                             thread is inside another model's fit (a printer or callback), \
                             where waiting could deadlock; call it after the fit returns"
                        )))
                    }
                }
            } else {
                self.inner.lock().unwrap_or_else(PoisonError::into_inner)
            };
            HOLDING.set(HOLDING.get() + 1);
            if let Some(why) = self.broken.get() {
                HOLDING.set(HOLDING.get() - 1);
                return Err(unusable(why));
            }
            self.holder.store(me, Ordering::Release);
            let result = catch_unwind(AssertUnwindSafe(|| f(&mut guard)));
            self.holder.store(0, Ordering::Release);
            HOLDING.set(HOLDING.get() - 1);
            after(&guard);
            match result {
                Ok(r) => r,
                Err(payload) => {
                    let msg = panic_message(payload.as_ref());
                    if access == Access::Write {
                        let _ = self
                            .broken
                            .set(format!("libtorch failed during {what}: {msg}"));
                    }
                    Err(TorchError::new_err(format!("libtorch failed: {msg}")))
                }
            }
        })
    }
}
