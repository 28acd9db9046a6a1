//! Python bindings of the Diaspora Stream API: the extension module `diaspora_stream._api`,
//! re-exported under the upstream names by `diaspora_stream/api.py`.
//!
//! Threading rules (see the "Python" section of the root README):
//! - every call that enters a driver (which may take driver locks or block) detaches from the
//!   interpreter, so driver threads never wait for the GIL held by a thread waiting for them;
//! - driver threads never attach: Python buffers they drop are released later by
//!   [`buffer::drain_releases`] on a thread that is attached anyway;
//! - waits run in 100 ms detached slices with `check_signals` between them (Ctrl-C works).

use pyo3::prelude::*;

mod buffer;
mod consumer;
mod descriptor;
mod driver;
mod error;
mod future;
mod json;
mod producer;

/// Registers the drivers linked into the extension (once per process). Drivers in other
/// libraries are loaded by `Driver(backend="name:libname.so")` through the api's loader.
pub(crate) fn register_builtin_drivers() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        diaspora_driver_files::register();
        diaspora_driver_fabric::register();
    });
}

#[pymodule]
fn _api(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("Exception", py.get_type::<error::Exception>())?;
    m.add(
        "StopEventProcessor",
        py.get_type::<error::StopEventProcessor>(),
    )?;
    m.add("AdaptiveBatchSize", 0usize)?;
    m.add_class::<driver::Driver>()?;
    m.add_class::<driver::TopicHandle>()?;
    m.add_class::<driver::ThreadPool>()?;
    m.add_class::<driver::Ordering>()?;
    m.add_class::<producer::Producer>()?;
    m.add_class::<consumer::Consumer>()?;
    m.add_class::<consumer::Event>()?;
    m.add_class::<descriptor::DataDescriptor>()?;
    m.add_class::<buffer::DataSegment>()?;
    m.add_class::<future::FutureUint>()?;
    m.add_class::<future::FutureIds>()?;
    m.add_class::<future::FutureFlushed>()?;
    m.add_class::<future::FutureEvent>()?;
    m.add_function(wrap_pyfunction!(registered_drivers, m)?)?;
    m.add_function(wrap_pyfunction!(pending_releases, m)?)?;
    Ok(())
}

/// Names of the drivers registered in this process.
#[pyfunction]
fn registered_drivers() -> Vec<String> {
    register_builtin_drivers();
    diaspora_api::registered_drivers()
}

/// Releases the Python buffers that stored events no longer need, and returns how many
/// exports are still held by pending (not yet stored) events' data.
#[pyfunction]
fn pending_releases(py: Python<'_>) -> usize {
    buffer::drain_releases(py);
    buffer::live_exports()
}
