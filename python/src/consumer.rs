//! `Consumer` and `Event`, with Python `data_selector` / `data_allocator` callables.
//!
//! The selector runs inside `pull()`/`wait()` on the thread that called them (the binding
//! disables prefetching when a Python selector is given, so no driver thread attaches). The
//! allocator runs in `wait()`: the api's `DataAllocator` returns a `BytesMut`, which cannot
//! wrap foreign memory, so the data is received into Rust memory and copied once into the
//! allocator's buffers (see notes/python.md for the api hook that would remove that copy).

use std::sync::Arc;

use diaspora_api as api;
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyMemoryView, PyTuple};

use crate::buffer::{copy_into, drain_releases, DataSegment};
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

/// What a pull's future needs to build the Python event.
#[derive(Clone)]
pub(crate) struct PullContext {
    allocator: Option<Arc<Py<PyAny>>>,
    /// The first exception a Python selector raised, re-raised by the next `wait()`.
    selector_error: Arc<Mutex<Option<PyErr>>>,
}

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
        let allocator = match a.data_allocator {
            Some(al) if !al.bind(py).is_callable() => {
                return Err(pyo3::exceptions::PyTypeError::new_err(
                    "data_allocator must be callable (metadata, descriptor) -> buffer(s)",
                ))
            }
            other => other.map(Arc::new),
        };
        let c = py.detach(|| topic.consumer_with(name, o)).map_err(err)?;
        Ok(Consumer {
            inner: Mutex::new(Some(c)),
            name: name.to_owned(),
            topic: topic.name().to_owned(),
            ctx: PullContext {
                allocator,
                selector_error,
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
    let data = match (&ctx.allocator, ev.is_no_more_events()) {
        (Some(alloc), false) => {
            let size = ev.data().len();
            let md = metadata_to_py(py, ev.metadata())?;
            let desc = DataDescriptor {
                inner: api::DataDescriptor::new(api::Bytes::new(), size),
            };
            let out = alloc.bind(py).call1((md, desc))?;
            let bufs: Vec<Bound<'_, PyAny>> =
                if out.is_instance_of::<PyList>() || out.is_instance_of::<PyTuple>() {
                    out.try_iter()?.collect::<PyResult<_>>()?
                } else {
                    vec![out]
                };
            copy_into(py, &bufs, &segments)?;
            bufs.into_iter().map(|b| b.unbind()).collect()
        }
        _ => segments
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
    /// buffers the consumer's `data_allocator` returned.
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

    fn __repr__(&self) -> String {
        format!(
            "Event(event_id={:?}, partition={}, metadata={})",
            self.event_id(),
            self.inner.partition(),
            self.inner.metadata().as_str()
        )
    }
}
