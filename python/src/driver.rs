//! `Driver`, `TopicHandle`, `ThreadPool` and `Ordering`.

use diaspora_api as api;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::consumer::{Consumer, ConsumerArgs};
use crate::error::err;
use crate::json::{options, to_py};
use crate::producer::Producer;

/// Ordering guarantee of a producer.
#[pyclass(eq, eq_int, frozen, module = "diaspora_stream.api")]
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Ordering {
    /// Events of a partition are stored in push order.
    Strict,
    /// Batches may be stored out of order (more parallelism).
    Loose,
}

impl From<Ordering> for api::Ordering {
    fn from(o: Ordering) -> Self {
        match o {
            Ordering::Strict => api::Ordering::Strict,
            Ordering::Loose => api::Ordering::Loose,
        }
    }
}

/// A pool of threads that producers store batches with (and consumers prefetch with).
#[pyclass(frozen, module = "diaspora_stream.api")]
#[derive(Clone)]
pub struct ThreadPool {
    pub(crate) inner: api::ThreadPool,
}

#[pymethods]
impl ThreadPool {
    /// A pool of `count` threads (0: work runs in the calling thread).
    #[new]
    #[pyo3(signature = (count = 1))]
    fn new(count: usize) -> Self {
        ThreadPool {
            inner: api::ThreadPool::new(count),
        }
    }

    /// Number of threads.
    #[getter]
    fn thread_count(&self) -> usize {
        self.inner.size()
    }
}

/// A connection to a streaming engine through a driver.
///
/// `backend` is a registered driver name (`"files"`), or `"name:libname.so"` to load a driver
/// library first; `options` is a dict of driver options (e.g. `{"root_path": ...}`).
#[pyclass(frozen, module = "diaspora_stream.api")]
pub struct Driver {
    inner: api::Driver,
}

#[pymethods]
impl Driver {
    #[new]
    #[pyo3(signature = (*, backend, options = None))]
    fn new(py: Python<'_>, backend: &str, options: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        crate::register_builtin_drivers();
        let opts = crate::json::options(options, "driver options")?;
        let inner = py.detach(|| api::Driver::new(backend, opts)).map_err(err)?;
        Ok(Driver { inner })
    }

    /// Creates topic `name` with topic options (e.g. `{"num_partitions": 4}`).
    #[pyo3(signature = (name, *, options = None))]
    fn create_topic(
        &self,
        py: Python<'_>,
        name: &str,
        options: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let opts = crate::json::options(options, "topic options")?;
        py.detach(|| self.inner.create_topic(name, opts))
            .map_err(err)
    }

    /// Opens an existing topic.
    fn open_topic(&self, py: Python<'_>, name: &str) -> PyResult<TopicHandle> {
        let inner = py.detach(|| self.inner.open_topic(name)).map_err(err)?;
        Ok(TopicHandle { inner })
    }

    /// Whether topic `name` exists.
    fn topic_exists(&self, py: Python<'_>, name: &str) -> PyResult<bool> {
        py.detach(|| self.inner.topic_exists(name)).map_err(err)
    }

    /// The topics, as a dict from name to topic options.
    fn list_topics<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let topics = py
            .detach(|| -> api::Result<Vec<(String, api::Value)>> {
                let mut out = Vec::new();
                for name in self.inner.list_topics()? {
                    let opts = self.inner.open_topic(&name)?.options();
                    out.push((name, opts));
                }
                Ok(out)
            })
            .map_err(err)?;
        let d = PyDict::new(py);
        for (name, opts) in topics {
            d.set_item(name, to_py(py, &opts)?)?;
        }
        Ok(d)
    }

    /// A pool of `count` threads made by the driver.
    fn make_thread_pool(&self, count: usize) -> ThreadPool {
        ThreadPool {
            inner: self.inner.make_thread_pool(count),
        }
    }

    /// The driver's default thread pool (producers without a `thread_pool` use it; for the
    /// files driver, its `thread_count` option's threads).
    #[getter]
    fn default_thread_pool(&self) -> ThreadPool {
        ThreadPool {
            inner: self.inner.default_thread_pool(),
        }
    }

    /// Name of the driver.
    #[getter]
    fn name(&self) -> String {
        self.inner.name().to_owned()
    }
}

/// A topic: creates producers and consumers.
#[pyclass(frozen, module = "diaspora_stream.api")]
pub struct TopicHandle {
    pub(crate) inner: api::TopicHandle,
}

#[pymethods]
impl TopicHandle {
    /// Name of the topic.
    #[getter]
    fn name(&self) -> String {
        self.inner.name().to_owned()
    }

    /// Options the topic was created with.
    #[getter]
    fn options<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &self.inner.options())
    }

    /// The partitions, as a list of `{"index": int, "info": dict}`.
    #[getter]
    fn partitions<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let parts = py.detach(|| self.inner.partitions()).map_err(err)?;
        parts
            .iter()
            .map(|p| {
                let d = PyDict::new(py);
                d.set_item("index", p.index)?;
                d.set_item("info", to_py(py, &p.info)?)?;
                Ok(d)
            })
            .collect()
    }

    /// Marks the topic complete: consumers that drained it then get an event whose
    /// `event_id` is None, and pushes fail.
    fn mark_as_complete(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.inner.mark_as_complete()).map_err(err)
    }

    /// Whether the topic was marked complete.
    fn is_complete(&self, py: Python<'_>) -> PyResult<bool> {
        py.detach(|| self.inner.is_complete()).map_err(err)
    }

    /// A producer. `batch_size` 0 (`AdaptiveBatchSize`) sends a batch as soon as the previous
    /// one is stored; `max_num_batches` bounds the batches in flight (push blocks beyond it).
    /// `options` is a dict as accepted by the Rust `ProducerOptions::from_json`; keywords
    /// override it.
    #[pyo3(signature = (name = "", *, batch_size = None, max_num_batches = None,
                        ordering = None, thread_pool = None, options = None))]
    #[allow(clippy::too_many_arguments)]
    fn producer(
        &self,
        py: Python<'_>,
        name: &str,
        batch_size: Option<usize>,
        max_num_batches: Option<usize>,
        ordering: Option<Ordering>,
        thread_pool: Option<ThreadPool>,
        options: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Producer> {
        let json = crate::json::options(options, "producer options")?;
        let mut o = api::ProducerOptions::from_json(&json).map_err(err)?;
        // Upstream's default: two batches in flight.
        if json.get("max_num_batches").is_none() {
            o.max_num_batches = 2;
        }
        if let Some(b) = batch_size {
            o.batch_size = batch(b);
        }
        if let Some(m) = max_num_batches {
            if m == 0 {
                return Err(crate::error::exc("max_num_batches must be at least 1"));
            }
            o.max_num_batches = m;
        }
        if let Some(ord) = ordering {
            o.ordering = ord.into();
        }
        if let Some(tp) = thread_pool {
            o.thread_pool = Some(tp.inner);
        }
        let p = py
            .detach(|| self.inner.producer_with(name, o))
            .map_err(err)?;
        Ok(Producer::new(
            p,
            name.to_owned(),
            self.inner.name().to_owned(),
        ))
    }

    /// A consumer named `name` (its acknowledgements are kept under that name, so a restarted
    /// consumer resumes after its last acknowledged event). Without `data_selector`, all data is
    /// fetched (as upstream's Python API does). `data_selector(metadata, descriptor)` returns a
    /// `DataDescriptor` (or None: no data); `data_allocator(metadata, descriptor)` returns a
    /// writable contiguous buffer (numpy array, bytearray...; or a list of them) of
    /// `descriptor.size` bytes in total, which the driver receives the data into without a copy
    /// (`event.data` is then those objects, pinned while the event lives; do not touch them
    /// until `wait()` returned the event). Drivers without native buffer allocators fill them
    /// with one copy. Either callable turns prefetching off (they run, with the GIL, on the
    /// thread that pulls); an exception of either fails that event's `wait()` with `Exception`,
    /// the callable's exception being its `__cause__`.
    /// `targets` lists the partitions to read (default: all).
    #[pyo3(signature = (name, *, data_selector = None, data_allocator = None, batch_size = None,
                        max_num_batches = None, thread_pool = None, targets = None,
                        options = None))]
    #[allow(clippy::too_many_arguments)]
    fn consumer(
        &self,
        py: Python<'_>,
        name: &str,
        data_selector: Option<Py<PyAny>>,
        data_allocator: Option<Py<PyAny>>,
        batch_size: Option<usize>,
        max_num_batches: Option<usize>,
        thread_pool: Option<ThreadPool>,
        targets: Option<Vec<usize>>,
        options: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Consumer> {
        let json = options_or_empty(options)?;
        Consumer::open(
            py,
            &self.inner,
            name,
            ConsumerArgs {
                json,
                data_selector,
                data_allocator,
                batch_size: batch_size.map(batch),
                max_num_batches,
                thread_pool: thread_pool.map(|t| t.inner),
                targets,
            },
        )
    }

    fn __eq__(&self, other: &Self) -> bool {
        self.inner.name() == other.inner.name()
    }

    fn __repr__(&self) -> String {
        format!("TopicHandle(name={:?})", self.inner.name())
    }
}

fn options_or_empty(o: Option<&Bound<'_, PyAny>>) -> PyResult<api::Value> {
    options(o, "consumer options")
}

fn batch(b: usize) -> api::BatchSize {
    if b == 0 {
        api::BatchSize::Adaptive
    } else {
        api::BatchSize::Fixed(b)
    }
}
