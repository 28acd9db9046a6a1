//! `Producer`: pushes events (metadata + zero-copy data) into a topic.

use diaspora_api as api;
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};

use crate::buffer::{bytes_from_buffer, drain_releases};
use crate::error::exc;
use crate::future::{FutureFlushed, FutureIds, FutureUint};

/// Pushes events into a topic. Data is not copied: keep it unmodified until the push's
/// future or a flush completed.
#[pyclass(frozen, module = "diaspora_stream.api")]
pub struct Producer {
    inner: Mutex<Option<api::Producer>>,
    name: String,
    topic: String,
}

impl Producer {
    pub(crate) fn new(p: api::Producer, name: String, topic: String) -> Self {
        Producer {
            inner: Mutex::new(Some(p)),
            name,
            topic,
        }
    }

    fn get(&self) -> PyResult<api::Producer> {
        self.inner
            .lock()
            .clone()
            .ok_or_else(|| exc(format!("producer {:?} is closed", self.name)))
    }
}

/// The data argument of push: None, one buffer, or a list/tuple of buffers (one segment each).
fn data_view(data: Option<&Bound<'_, PyAny>>) -> PyResult<api::DataView> {
    let Some(d) = data else {
        return Ok(api::DataView::new());
    };
    if d.is_none() {
        return Ok(api::DataView::new());
    }
    if d.is_instance_of::<PyList>() || d.is_instance_of::<PyTuple>() {
        let mut segments = Vec::new();
        for item in d.try_iter()? {
            segments.push(bytes_from_buffer(&item?)?);
        }
        return Ok(api::DataView::from_segments(segments));
    }
    Ok(api::DataView::from(bytes_from_buffer(d)?))
}

#[pymethods]
impl Producer {
    /// Queues an event; returns a future of its id. `metadata` is a JSON `str` or a JSON-like
    /// object (dict...); `data` is a buffer (bytes, bytearray, memoryview, numpy array...) or a
    /// list of buffers, not copied. `partition` forces the target partition.
    #[pyo3(signature = (metadata, data = None, *, partition = None))]
    fn push(
        &self,
        py: Python<'_>,
        metadata: &Bound<'_, PyAny>,
        data: Option<&Bound<'_, PyAny>>,
        partition: Option<usize>,
    ) -> PyResult<FutureUint> {
        let md = crate::json::metadata(metadata)?;
        let view = data_view(data)?;
        let p = self.get()?;
        // Detached: push may block on max_num_batches and takes driver locks.
        let fut = py.detach(move || match partition {
            Some(i) => p.push_to(i, md, view),
            None => p.push(md, view),
        });
        drain_releases(py);
        Ok(FutureUint::new(fut))
    }

    /// Queues several events in one call, for less per event than `push`; returns one future
    /// of their ids, in order. Each item of `events` is a `(metadata, data)` tuple or a
    /// metadata alone (no data), converted as `push` converts them; an item that cannot be
    /// converted raises before any event is queued. If one is refused (the topic's validator,
    /// say), none is queued and the future raises; the next flush counts them all.
    /// `partition` forces the target partition of every event.
    #[pyo3(signature = (events, *, partition = None))]
    fn push_many(
        &self,
        py: Python<'_>,
        events: &Bound<'_, PyAny>,
        partition: Option<usize>,
    ) -> PyResult<FutureIds> {
        let mut converted = Vec::new();
        for item in events.try_iter()? {
            let item = item?;
            let pair = match item.cast::<PyTuple>() {
                Ok(t) if t.len() == 2 => {
                    let data = t.get_item(1)?;
                    (
                        crate::json::metadata(&t.get_item(0)?)?,
                        data_view(Some(&data))?,
                    )
                }
                Ok(t) => {
                    return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                        "push_many: event {} is a tuple of {} items, not (metadata, data)",
                        converted.len(),
                        t.len()
                    )))
                }
                Err(_) => (crate::json::metadata(&item)?, api::DataView::new()),
            };
            converted.push(pair);
        }
        let p = self.get()?;
        // Detached: push_many may block on max_num_batches and takes driver locks.
        let fut = py.detach(move || match partition {
            Some(i) => p.push_many_to(i, converted),
            None => p.push_many(converted),
        });
        drain_releases(py);
        Ok(FutureIds::new(fut))
    }

    /// Sends every queued event; the future completes when they are all stored (it raises if
    /// any event pushed since the previous flush was lost, saying how many and why).
    fn flush(&self, py: Python<'_>) -> PyResult<FutureFlushed> {
        let p = self.get()?;
        let fut = py.detach(move || p.flush());
        drain_releases(py);
        Ok(FutureFlushed::new(fut))
    }

    /// Flushes and stores every pushed event, then closes the producer (further pushes raise).
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let p = self.inner.lock().take();
        if let Some(p) = p {
            let r = py.detach(move || {
                let r = p.flush().get();
                drop(p);
                r
            });
            drain_releases(py);
            r.map_err(crate::error::err)?;
        }
        Ok(())
    }

    /// Name of the producer.
    #[getter]
    fn name(&self) -> String {
        self.name.clone()
    }

    /// Name of the topic.
    #[getter]
    fn topic(&self) -> String {
        self.topic.clone()
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        _t: Option<&Bound<'_, PyAny>>,
        _v: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.close(py)
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        // The Rust producer stores pending events in its Drop (blocking): never while attached.
        if let Some(p) = self.inner.get_mut().take() {
            Python::attach(|py| py.detach(move || drop(p)));
        }
    }
}
