//! The Python exception class and the mapping of api errors to it.

use pyo3::create_exception;
use pyo3::exceptions::PyRuntimeError;
use pyo3::PyErr;

create_exception!(
    _api,
    Exception,
    PyRuntimeError,
    "Error raised by the Diaspora Stream API; the message says what failed and why."
);

create_exception!(
    _api,
    StopEventProcessor,
    pyo3::exceptions::PyException,
    "Raise from a Consumer.process processor to stop processing (upstream's StopEventProcessor)."
);

/// Converts an api error (with its source chain) into the Python exception.
pub(crate) fn err(e: diaspora_api::Error) -> PyErr {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        let s_msg = s.to_string();
        if !msg.contains(&s_msg) {
            msg.push_str(": ");
            msg.push_str(&s_msg);
        }
        src = s.source();
    }
    Exception::new_err(msg)
}

/// The Python exception with a message.
pub(crate) fn exc(msg: impl Into<String>) -> PyErr {
    Exception::new_err(msg.into())
}
