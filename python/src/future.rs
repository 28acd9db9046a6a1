//! Futures returned by `push`, `flush` and `pull`: `wait(timeout_ms=-1)` returns the result,
//! or `None` when the timeout expires first (a timed-out wait can be retried).

use std::time::{Duration, Instant};

use diaspora_api::{EventId, Future};
use parking_lot::Mutex;
use pyo3::prelude::*;

use crate::buffer::drain_releases;
use crate::consumer::{make_event, PullContext};
use crate::error::{err, exc};

/// How long a wait stays detached before it checks for signals (Ctrl-C).
const SLICE: Duration = Duration::from_millis(100);

/// A pending api future and, once it completed, its converted result (waits are repeatable).
pub(crate) struct Slot<T> {
    fut: Option<Future<T>>,
    done: Option<Result<Py<PyAny>, PyErr>>,
}

impl<T: Send> Slot<T> {
    pub(crate) fn new(fut: Future<T>) -> Mutex<Self> {
        Mutex::new(Slot {
            fut: Some(fut),
            done: None,
        })
    }
}

/// Waits for `slot`'s future, detached, in slices; converts the value with `convert`.
fn wait_slot<T: Send>(
    py: Python<'_>,
    slot: &Mutex<Slot<T>>,
    timeout_ms: i64,
    convert: impl FnOnce(Python<'_>, T) -> PyResult<Py<PyAny>>,
) -> PyResult<Option<Py<PyAny>>> {
    // Never block on this mutex while attached: its holder is detached and may need the GIL.
    let mut g = slot
        .try_lock()
        .ok_or_else(|| exc("another thread is waiting on this future"))?;
    if let Some(done) = &g.done {
        return done
            .as_ref()
            .map(|v| Some(v.clone_ref(py)))
            .map_err(|e| e.clone_ref(py));
    }
    let Some(fut) = g.fut.as_mut() else {
        return Err(exc("the future was consumed"));
    };
    let deadline =
        (timeout_ms >= 0).then(|| Instant::now() + Duration::from_millis(timeout_ms as u64));
    let outcome = loop {
        let slice_end = {
            let s = Instant::now() + SLICE;
            deadline.map_or(s, |d| d.min(s))
        };
        let r = if fut.is_ready() {
            fut.wait(0)
        } else {
            py.detach(|| fut.wait_until(Some(slice_end)))
        };
        drain_releases(py);
        match r {
            Ok(Some(v)) => break Ok(v),
            Err(e) => break Err(err(e)),
            Ok(None) if deadline.is_some_and(|d| Instant::now() >= d) => return Ok(None),
            Ok(None) => py.check_signals()?,
        }
    };
    g.fut = None;
    let done = outcome.and_then(|v| convert(py, v));
    g.done = Some(
        done.as_ref()
            .map(|v| v.clone_ref(py))
            .map_err(|e| e.clone_ref(py)),
    );
    done.map(Some)
}

fn completed<T>(slot: &Mutex<Slot<T>>) -> bool {
    match slot.try_lock() {
        Some(g) => g.done.is_some() || g.fut.as_ref().is_some_and(|f| f.is_ready()),
        None => false,
    }
}

/// The future of a push: `wait()` returns the event's id once it is stored.
#[pyclass(frozen, module = "diaspora_stream.api")]
pub struct FutureUint {
    slot: Mutex<Slot<EventId>>,
}

impl FutureUint {
    pub(crate) fn new(f: Future<EventId>) -> Self {
        FutureUint { slot: Slot::new(f) }
    }
}

#[pymethods]
impl FutureUint {
    /// Waits up to `timeout_ms` milliseconds (negative: forever) for the event id; returns None
    /// on timeout, raises `Exception` if the event was not stored.
    #[pyo3(signature = (timeout_ms = -1))]
    fn wait(&self, py: Python<'_>, timeout_ms: i64) -> PyResult<Option<Py<PyAny>>> {
        wait_slot(py, &self.slot, timeout_ms, |py, id| {
            Ok(id.into_pyobject(py)?.into_any().unbind())
        })
    }

    /// Whether `wait` would return without blocking.
    #[getter]
    fn completed(&self) -> bool {
        completed(&self.slot)
    }
}

/// The future of a `push_many`: `wait()` returns the events' ids, in order, once all are
/// stored.
#[pyclass(frozen, module = "diaspora_stream.api")]
pub struct FutureIds {
    slot: Mutex<Slot<Vec<EventId>>>,
}

impl FutureIds {
    pub(crate) fn new(f: Future<Vec<EventId>>) -> Self {
        FutureIds { slot: Slot::new(f) }
    }
}

#[pymethods]
impl FutureIds {
    /// Waits up to `timeout_ms` milliseconds (negative: forever) for the list of event ids;
    /// returns None on timeout, raises `Exception` if an event was refused or not stored.
    #[pyo3(signature = (timeout_ms = -1))]
    fn wait(&self, py: Python<'_>, timeout_ms: i64) -> PyResult<Option<Py<PyAny>>> {
        wait_slot(py, &self.slot, timeout_ms, |py, ids| {
            Ok(pyo3::types::PyList::new(py, ids)?.into_any().unbind())
        })
    }

    /// Whether `wait` would return without blocking.
    #[getter]
    fn completed(&self) -> bool {
        completed(&self.slot)
    }
}

/// The future of a flush: `wait()` returns True once every pushed event is stored.
#[pyclass(frozen, module = "diaspora_stream.api")]
pub struct FutureFlushed {
    slot: Mutex<Slot<()>>,
}

impl FutureFlushed {
    pub(crate) fn new(f: Future<()>) -> Self {
        FutureFlushed { slot: Slot::new(f) }
    }
}

#[pymethods]
impl FutureFlushed {
    /// Waits up to `timeout_ms` milliseconds (negative: forever); returns True when flushed,
    /// None on timeout; raises `Exception` (how many events were lost, and why) otherwise.
    #[pyo3(signature = (timeout_ms = -1))]
    fn wait(&self, py: Python<'_>, timeout_ms: i64) -> PyResult<Option<Py<PyAny>>> {
        wait_slot(py, &self.slot, timeout_ms, |py, ()| {
            Ok(pyo3::types::PyBool::new(py, true)
                .to_owned()
                .into_any()
                .unbind())
        })
    }

    /// Whether `wait` would return without blocking.
    #[getter]
    fn completed(&self) -> bool {
        completed(&self.slot)
    }
}

/// The future of a pull: `wait()` returns the next `Event`.
#[pyclass(frozen, module = "diaspora_stream.api")]
pub struct FutureEvent {
    slot: Mutex<Slot<diaspora_api::Event>>,
    ctx: PullContext,
}

impl FutureEvent {
    pub(crate) fn new(f: Future<diaspora_api::Event>, ctx: PullContext) -> Self {
        FutureEvent {
            slot: Slot::new(f),
            ctx,
        }
    }
}

#[pymethods]
impl FutureEvent {
    /// Waits up to `timeout_ms` milliseconds (negative: forever) for the next event; returns
    /// None on timeout. Once the topic is complete and drained, the event's `event_id` is None.
    #[pyo3(signature = (timeout_ms = -1))]
    pub(crate) fn wait(&self, py: Python<'_>, timeout_ms: i64) -> PyResult<Option<Py<PyAny>>> {
        wait_slot(py, &self.slot, timeout_ms, |py, ev| {
            Ok(make_event(py, ev, &self.ctx)?.into_any())
        })
        .inspect_err(|e| self.ctx.add_cause(py, e))
    }

    /// Whether `wait` would return without blocking.
    #[getter]
    fn completed(&self) -> bool {
        completed(&self.slot)
    }
}
