//! `Consumer` and `Event`, with Python `data_selector` / `data_allocator` callables.
//!
//! The selector and the allocator run inside `pull()`/`wait()` on the thread that called them
//! (the binding disables prefetching when either is given, so no driver thread attaches; the
//! pulling thread is detached, and no binding call waits for a driver lock while attached).
//! The allocator is the api's `buffer_allocator`: its buffers are exported writable and the
//! driver receives into them (the files driver `pread`s into the numpy array: no copy).
//! Drivers without native buffer allocators get one copy, made by the api.

use std::collections::VecDeque;
use std::sync::Arc;

use diaspora_api as api;
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyMemoryView, PyTuple};

use crate::buffer::{drain_releases, writable_buffer, DataSegment};
use crate::descriptor::DataDescriptor;
use crate::error::{err, exc};
use crate::future::FutureEvent;
use crate::json::metadata_to_py;

/// Consumer arguments gathered by `TopicHandle.consumer`.
pub(crate) struct ConsumerArgs {
    pub json: api::Value,
    pub data_selector: Option<Py<PyAny>>,
    pub data_allocator: Option<Py<PyAny>>,
    pub batch_size: Option<api::BatchSize>,
    pub max_num_batches: Option<usize>,
    pub thread_pool: Option<api::ThreadPool>,
    pub targets: Option<Vec<usize>>,
}

/// Most allocations whose objects wait for their event (pulls in flight, or events that failed
/// after allocation); older entries are dropped.
const MAX_ALLOCATED: usize = 1024;

/// The Python objects a `data_allocator` returned, keyed by the address of the first non-empty
/// buffer (which the entry keeps alive, so no other live buffer has that address).
type Allocated = Arc<Mutex<VecDeque<(usize, Vec<Py<PyAny>>)>>>;

/// What a pull's future needs to build the Python event.
#[derive(Clone)]
pub(crate) struct PullContext {
    /// Whether the consumer has a Python data_allocator.
    has_allocator: bool,
    allocated: Allocated,
    /// The first exception a Python selector raised, re-raised by the next `wait()`.
    selector_error: Arc<Mutex<Option<PyErr>>>,
    /// The exception a Python allocator raised, the cause of the failed event's error.
    allocator_error: Arc<Mutex<Option<PyErr>>>,
}

impl PullContext {
    /// Adds the allocator's exception, if any, as the cause of a failed `wait()`.
    pub(crate) fn add_cause(&self, py: Python<'_>, e: &PyErr) {
        if let Some(cause) = self.allocator_error.lock().take() {
            e.set_cause(py, Some(cause));
        }
    }
}

/// A Python callback failed; its exception is the cause of the Python error.
#[derive(Debug)]
struct CallbackError(String);

impl std::fmt::Display for CallbackError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CallbackError {}

/// Pulls events of a topic under a consumer name.
#[pyclass(frozen, module = "diaspora_stream.api")]
pub struct Consumer {
    inner: Mutex<Option<api::Consumer>>,
    name: String,
    topic: String,
    ctx: PullContext,
}

impl Consumer {
    pub(crate) fn open(
        py: Python<'_>,
        topic: &api::TopicHandle,
        name: &str,
        a: ConsumerArgs,
    ) -> PyResult<Self> {
        let mut o = api::ConsumerOptions::from_json(&a.json).map_err(err)?;
        if a.json.get("data").is_none() {
            // Upstream's Python consumer fetches all data unless told otherwise.
            o.data_selector = Some(api::select_all());
        }
        if let Some(b) = a.batch_size {
            o.batch_size = b;
        }
        if let Some(m) = a.max_num_batches {
            if m == 0 {
                return Err(exc("max_num_batches must be at least 1"));
            }
            o.max_num_batches = m;
        }
        if let Some(tp) = a.thread_pool {
            o.thread_pool = Some(tp);
        }
        if let Some(t) = a.targets {
            o.partitions = Some(t);
        }
        let selector_error = Arc::new(Mutex::new(None));
        if let Some(sel) = a.data_selector {
            if !sel.bind(py).is_callable() {
                return Err(pyo3::exceptions::PyTypeError::new_err(
                    "data_selector must be callable (metadata, descriptor) -> DataDescriptor",
                ));
            }
            // The selector attaches: it must run on the pulling (Python) thread, not a pool.
            o.thread_pool = None;
            o.data_selector = Some(python_selector(sel, selector_error.clone()));
        }
        let allocated: Allocated = Arc::default();
        let allocator_error = Arc::new(Mutex::new(None));
        let has_allocator = a.data_allocator.is_some();
        if let Some(al) = a.data_allocator {
            if !al.bind(py).is_callable() {
                return Err(pyo3::exceptions::PyTypeError::new_err(
                    "data_allocator must be callable (metadata, descriptor) -> buffer(s)",
                ));
            }
            o.thread_pool = None;
            o.data_allocator = None;
            o.buffer_allocator = Some(python_allocator(
                al,
                allocated.clone(),
                allocator_error.clone(),
            ));
        }
        let c = py.detach(|| topic.consumer_with(name, o)).map_err(err)?;
        Ok(Consumer {
            inner: Mutex::new(Some(c)),
            name: name.to_owned(),
            topic: topic.name().to_owned(),
            ctx: PullContext {
                has_allocator,
                allocated,
                selector_error,
                allocator_error,
            },
        })
    }
}

fn python_selector(sel: Py<PyAny>, error: Arc<Mutex<Option<PyErr>>>) -> api::DataSelector {
    Arc::new(move |md: &api::Metadata, d: &api::DataDescriptor| {
        Python::attach(|py| {
            let r = (|| -> PyResult<api::DataDescriptor> {
                let m = metadata_to_py(py, md)?;
                let desc = DataDescriptor { inner: d.clone() };
                let out = sel.bind(py).call1((m, desc))?;
                if out.is_none() {
                    return Ok(api::DataDescriptor::null());
                }
                let out: PyRef<'_, DataDescriptor> = out.extract().map_err(|_| {
                    pyo3::exceptions::PyTypeError::new_err(format!(
                        "data_selector must return a DataDescriptor or None, not {}",
                        crate::json::type_name(&out)
                    ))
                })?;
                Ok(out.inner.clone())
            })();
            r.unwrap_or_else(|e| {
                error.lock().get_or_insert(e);
                api::DataDescriptor::null()
            })
        })
    })
}

/// The api allocator calling a Python `data_allocator` (attached, on the pulling thread): its
/// buffers are exported writable and received into directly.
fn python_allocator(
    al: Py<PyAny>,
    allocated: Allocated,
    error: Arc<Mutex<Option<PyErr>>>,
) -> api::BufferAllocator {
    Arc::new(move |md: &api::Metadata, d: &api::DataDescriptor| {
        Python::attach(|py| {
            let r = (|| -> PyResult<(Vec<api::DataBuffer>, Vec<Py<PyAny>>)> {
                let m = metadata_to_py(py, md)?;
                let desc = DataDescriptor { inner: d.clone() };
                let out = al.bind(py).call1((m, desc))?;
                let objs: Vec<Bound<'_, PyAny>> =
                    if out.is_instance_of::<PyList>() || out.is_instance_of::<PyTuple>() {
                        out.try_iter()?.collect::<PyResult<_>>()?
                    } else {
                        vec![out]
                    };
                let bufs = objs
                    .iter()
                    .map(writable_buffer)
                    .collect::<PyResult<Vec<_>>>()?;
                Ok((bufs, objs.into_iter().map(Bound::unbind).collect()))
            })();
            match r {
                Ok((mut bufs, objs)) => {
                    if let Some(key) = first_address(bufs.iter_mut().map(|b| b.as_mut_slice())) {
                        let mut q = allocated.lock();
                        if q.len() >= MAX_ALLOCATED {
                            q.pop_front();
                        }
                        q.push_back((key, objs));
                    }
                    Ok(bufs)
                }
                Err(e) => {
                    let msg = format!("the data_allocator raised {e}");
                    *error.lock() = Some(e);
                    Err(api::Error::driver(CallbackError(msg)))
                }
            }
        })
    })
}

/// Address of the first non-empty buffer.
fn first_address<'a>(bufs: impl Iterator<Item = &'a mut [u8]>) -> Option<usize> {
    bufs.into_iter()
        .find(|b| !b.is_empty())
        .map(|b| b.as_ptr() as usize)
}

#[pymethods]
impl Consumer {
    /// Returns a future of the next event (`FutureEvent.wait()` returns it).
    fn pull(&self, py: Python<'_>) -> PyResult<FutureEvent> {
        let c = self
            .inner
            .lock()
            .clone()
            .ok_or_else(|| exc(format!("consumer {:?} is closed", self.name)))?;
        let fut = py.detach(move || c.pull());
        drain_releases(py);
        if let Some(e) = self.ctx.selector_error.lock().take() {
            let wrapped = exc(
                "the data_selector raised; the event it was called for is not delivered (a \
                 consumer of this name that restarts before acknowledging it reads it again)",
            );
            wrapped.set_cause(py, Some(e));
            return Err(wrapped);
        }
        Ok(FutureEvent::new(fut, self.ctx.clone()))
    }

    /// Closes the consumer (its acknowledgements are kept).
    fn close(&self, py: Python<'_>) {
        let c = self.inner.lock().take();
        if let Some(c) = c {
            py.detach(move || drop(c));
        }
    }

    /// Name of the consumer.
    #[getter]
    fn name(&self) -> String {
        self.name.clone()
    }

    /// Name of the topic.
    #[getter]
    fn topic(&self) -> String {
        self.topic.clone()
    }

    /// Calls `processor(event)` for each event, on this thread, until it raises
    /// `StopEventProcessor`, `max_events` events were processed (None: no limit), the topic is
    /// complete and drained, or no event arrives within `timeout_ms` milliseconds (negative:
    /// wait forever). Returns how many events were passed to the processor (the one that
    /// raised `StopEventProcessor` included). Any other exception of the processor propagates
    /// (the event it was processing is not acknowledged unless the processor did so).
    #[pyo3(signature = (processor, timeout_ms = api::DEFAULT_TIMEOUT_MS, max_events = None))]
    fn process(
        &self,
        py: Python<'_>,
        processor: Bound<'_, PyAny>,
        timeout_ms: i64,
        max_events: Option<u64>,
    ) -> PyResult<u64> {
        if !processor.is_callable() {
            return Err(pyo3::exceptions::PyTypeError::new_err(
                "processor must be callable (event) -> None",
            ));
        }
        let max = max_events.unwrap_or(u64::MAX);
        let mut processed = 0u64;
        while processed < max {
            let Some(ev) = self.pull(py)?.wait(py, timeout_ms)? else {
                break;
            };
            let ev: Py<Event> = ev.extract(py)?;
            if ev.get().inner.is_no_more_events() {
                break;
            }
            processed += 1;
            if let Err(e) = processor.call1((ev,)) {
                if e.is_instance_of::<crate::error::StopEventProcessor>(py) {
                    break;
                }
                return Err(e);
            }
        }
        Ok(processed)
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// The next event; stops once the topic is complete and drained.
    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<Event>>> {
        let f = self.pull(py)?;
        let Some(ev) = f.wait(py, -1)? else {
            return Ok(None);
        };
        let ev: Py<Event> = ev.extract(py)?;
        if ev.get().inner.is_no_more_events() {
            return Ok(None);
        }
        Ok(Some(ev))
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        if let Some(c) = self.inner.get_mut().take() {
            Python::attach(|py| py.detach(move || drop(c)));
        }
    }
}

/// An event: metadata (a dict), data (a list of buffers), id and partition.
#[pyclass(frozen, module = "diaspora_stream.api")]
pub struct Event {
    inner: api::Event,
    data: Vec<Py<PyAny>>,
}

/// Builds the Python event (runs in `wait()`, attached).
pub(crate) fn make_event(py: Python<'_>, ev: api::Event, ctx: &PullContext) -> PyResult<Py<Event>> {
    if let Some(e) = ctx.selector_error.lock().take() {
        let wrapped = exc(format!(
            "the data_selector raised for event {} of partition {}",
            ev.id(),
            ev.partition()
        ));
        wrapped.set_cause(py, Some(e));
        return Err(wrapped);
    }
    let segments = ev.data().segments().to_vec();
    // The allocator's objects, when the event's data is their memory.
    let objects = match segments.iter().find(|s| !s.is_empty()) {
        Some(first) if ctx.has_allocator => {
            let key = first.as_ptr() as usize;
            let mut q = ctx.allocated.lock();
            q.iter()
                .position(|(k, _)| *k == key)
                .and_then(|i| q.remove(i))
                .map(|(_, objs)| objs)
        }
        _ => None,
    };
    let data = match objects {
        Some(objs) => objs,
        None => segments
            .into_iter()
            .map(|s| {
                let seg = Bound::new(py, DataSegment::new(s))?;
                Ok(PyMemoryView::from(seg.as_any())?.into_any().unbind())
            })
            .collect::<PyResult<_>>()?,
    };
    Py::new(py, Event { inner: ev, data })
}

#[pymethods]
impl Event {
    /// The metadata, converted from JSON (a dict for JSON objects).
    #[getter]
    fn metadata<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        metadata_to_py(py, self.inner.metadata())
    }

    /// The data: a list of read-only memoryviews over the received bytes (no copy), or the
    /// buffers the consumer's `data_allocator` returned, which the data was received into.
    #[getter]
    fn data<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.data.iter().map(|d| d.clone_ref(py)))
    }

    /// The event's id in its partition; None for the end-of-stream marker of a completed topic.
    #[getter]
    fn event_id(&self) -> Option<u64> {
        (!self.inner.is_no_more_events()).then(|| self.inner.id())
    }

    /// The partition the event was read from.
    #[getter]
    fn partition(&self) -> usize {
        self.inner.partition()
    }

    /// Acknowledges this event and every earlier one of its partition for the consumer: a
    /// restarted consumer of the same name resumes after it.
    fn acknowledge(&self, py: Python<'_>) -> PyResult<()> {
        if self.inner.is_no_more_events() {
            return Ok(());
        }
        py.detach(|| self.inner.acknowledge()).map_err(err)
    }

    /// Start addresses of the event's data segments, as the driver delivered them (for tests
    /// and diagnostics: with a `data_allocator` they are the addresses of its buffers).
    fn _data_addresses(&self) -> Vec<usize> {
        self.inner
            .data()
            .segments()
            .iter()
            .map(|s| s.as_ptr() as usize)
            .collect()
    }

    fn __repr__(&self) -> String {
        format!(
            "Event(event_id={:?}, partition={}, metadata={})",
            self.event_id(),
            self.inner.partition(),
            self.inner.metadata().as_str()
        )
    }
}
