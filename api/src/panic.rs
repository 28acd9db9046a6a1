//! Panics in user callbacks and background jobs become errors.
//!
//! A data selector, allocator, validator, serializer or partition selector is user code; a
//! background job may hit a driver bug. Neither may take a worker thread down or leave a future
//! pending forever: [`catch_panic`] runs such code and turns a panic into
//! [`Error::Panicked`], carrying the panic's message, which the caller then delivers through the
//! affected futures.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::error::{Error, Result};

/// The message of a panic payload (`panic!("...")` gives a `&str` or a `String`).
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

/// Runs `f`; a panic becomes [`Error::Panicked`] naming `what` was running.
///
/// Unwind safety is asserted: callers only catch around code whose partial effects they discard
/// or re-check (a half-serialized metadata buffer is truncated, a batch whose store panicked is
/// failed as a whole).
pub fn catch_panic<T>(what: &str, f: impl FnOnce() -> T) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| Error::Panicked {
        what: what.to_owned(),
        message: panic_message(&*payload),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_message_is_kept() {
        let e =
            catch_panic("the selector", || -> u32 { panic!("boom {}", 7) }).expect_err("panicked");
        assert!(
            matches!(&e, Error::Panicked { what, message } if what == "the selector" && message == "boom 7"),
            "{e:?}"
        );
        assert_eq!(e.to_string(), "the selector panicked: boom 7");
        let e = catch_panic("x", || std::panic::panic_any(5u8)).expect_err("panicked");
        assert!(e.to_string().contains("non-string payload"), "{e}");
        assert_eq!(catch_panic("y", || 3).expect("no panic"), 3);
    }
}
