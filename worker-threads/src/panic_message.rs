//! The message of a caught panic.

use std::any::Any;

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
