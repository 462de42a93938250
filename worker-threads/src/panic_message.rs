//! The message of a caught panic, and dropping a value whose `Drop` may
//! panic without letting the panic escape (a pool thread must never unwind).

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// The message of a panic payload: the `&str` or `String` that `panic!`
/// formatted, or a placeholder for any other payload.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

/// Drops `value`, catching a panic of its `Drop` (the panic hook still
/// reports it); whether one was caught. A payload whose own `Drop` panics
/// is leaked rather than dropped again.
pub(crate) fn drop_caught<T>(value: T) -> bool {
    match catch_unwind(AssertUnwindSafe(move || drop(value))) {
        Ok(()) => false,
        Err(payload) => {
            if let Err(nested) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
                std::mem::forget(nested);
            }
            true
        }
    }
}
