//! Zero-copy buffers between Python and Rust.
//!
//! - Push: [`bytes_from_buffer`] exports a Python object's buffer (`PyObject_GetBuffer`, C- or
//!   Fortran-contiguous, any item format) and wraps it in a [`Bytes`] without copying. The
//!   export pins the object (and forbids resizing a `bytearray`) until the `Bytes` is dropped.
//! - Release: the last `Bytes` clone is usually dropped by a driver thread, which must never
//!   attach to the interpreter (it may hold driver locks that an attached thread waits for:
//!   a deadlock). So the export is queued, and released by [`drain_releases`] from binding
//!   calls that are attached anyway, or by a helper thread that holds no driver lock.
//! - Pull: [`DataSegment`] exposes received `Bytes` through the buffer protocol, read-only.
//! - Receive into application memory: [`writable_buffer`] exports a `data_allocator`'s buffer
//!   writable and wraps it in an `ExternalBuffer` the driver writes into (no copy); its
//!   export is released through the same queue.

use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use bytes::Bytes;
use diaspora_api as api;
use parking_lot::{Condvar, Mutex};
use pyo3::exceptions::{PyBufferError, PyTypeError};
use pyo3::ffi;
use pyo3::prelude::*;

/// A buffer export of a Python object; the `Py_buffer` holds a strong reference to it.
struct Export(Box<ffi::Py_buffer>);

// SAFETY: without the GIL the exported memory is only read (pushed data) or written by the
// driver receiving into a data_allocator's buffer (which the application does not touch until
// the event is returned); the export is released (PyBuffer_Release) only by `release_now`,
// which requires the GIL.
unsafe impl Send for Export {}

/// Number of exports not yet released (queued ones included).
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// Exports dropped by threads that must not attach, waiting for [`drain_releases`].
struct ReleaseQueue {
    queue: Mutex<Vec<Export>>,
    cond: Condvar,
}

fn release_queue() -> &'static ReleaseQueue {
    static Q: OnceLock<ReleaseQueue> = OnceLock::new();
    Q.get_or_init(|| {
        let spawned = std::thread::Builder::new()
            .name("diaspora-py-release".into())
            .spawn(release_loop);
        // Without the helper, exports are still released by the next wait/flush/push.
        drop(spawned);
        ReleaseQueue {
            queue: Mutex::new(Vec::new()),
            cond: Condvar::new(),
        }
    })
}

/// The helper thread: attaches only to release exports, holding no other lock meanwhile.
fn release_loop() {
    loop {
        let batch: Vec<Export> = {
            let q = release_queue();
            let mut g = q.queue.lock();
            while g.is_empty() {
                q.cond.wait(&mut g);
            }
            g.drain(..).collect()
        };
        // None while the interpreter finalizes: leak the exports, the process is exiting.
        let released = Python::try_attach(|py| batch.into_iter().for_each(|e| release_now(py, e)));
        if released.is_none() {
            return;
        }
    }
}

fn release_now(_py: Python<'_>, mut e: Export) {
    // SAFETY: `e.0` was filled by a successful PyObject_GetBuffer and is released exactly once
    // (Export is moved in); the GIL is held (`_py`).
    unsafe { ffi::PyBuffer_Release(&mut *e.0) };
    LIVE.fetch_sub(1, Ordering::Relaxed);
}

/// Releases every queued export now (the caller is attached).
pub(crate) fn drain_releases(py: Python<'_>) {
    let batch: Vec<Export> = release_queue().queue.lock().drain(..).collect();
    batch.into_iter().for_each(|e| release_now(py, e));
}

/// Exports not yet released.
pub(crate) fn live_exports() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// Owner of an export inside a `Bytes`.
struct PyBufferOwner(Option<Export>);

impl AsRef<[u8]> for PyBufferOwner {
    fn as_ref(&self) -> &[u8] {
        match &self.0 {
            Some(e) if e.0.len > 0 && !e.0.buf.is_null() => {
                // SAFETY: buf/len describe the contiguous memory of the exporter, which the
                // export keeps alive and unmoved until PyBuffer_Release (after this owner dies).
                unsafe { std::slice::from_raw_parts(e.0.buf as *const u8, e.0.len as usize) }
            }
            _ => &[],
        }
    }
}

impl Drop for PyBufferOwner {
    fn drop(&mut self) {
        if let Some(e) = self.0.take() {
            let q = release_queue();
            q.queue.lock().push(e);
            q.cond.notify_one();
        }
    }
}

/// Exports `obj`'s buffer, `flags` being `PyBUF_ANY_CONTIGUOUS` (read) or with
/// `PyBUF_WRITABLE` added.
fn export(obj: &Bound<'_, PyAny>, flags: c_int) -> PyResult<Export> {
    let mut view: Box<ffi::Py_buffer> = Box::new(ffi::Py_buffer::new());
    // SAFETY: obj is a valid object, the GIL is held, and `view` is writable storage that
    // outlives the export (it is boxed, so its address is stable).
    let rc = unsafe { ffi::PyObject_GetBuffer(obj.as_ptr(), &mut *view, flags) };
    if rc != 0 {
        let cause = PyErr::take(obj.py());
        let msg = if flags & ffi::PyBUF_WRITABLE != 0 {
            format!(
                "a data_allocator must return writable contiguous buffers (bytearray, numpy \
                 array...), not {}",
                crate::json::type_name(obj)
            )
        } else {
            format!(
                "event data must be a contiguous buffer (bytes, bytearray, memoryview, numpy \
                 array...), not {}",
                crate::json::type_name(obj)
            )
        };
        let e = if obj.hasattr("__buffer__").unwrap_or(false) || is_buffer(obj) {
            PyBufferError::new_err(msg)
        } else {
            PyTypeError::new_err(msg)
        };
        e.set_cause(obj.py(), cause);
        return Err(e);
    }
    LIVE.fetch_add(1, Ordering::Relaxed);
    Ok(Export(view))
}

fn is_buffer(obj: &Bound<'_, PyAny>) -> bool {
    // SAFETY: obj is a valid object and the GIL is held.
    unsafe { ffi::PyObject_CheckBuffer(obj.as_ptr()) != 0 }
}

/// Wraps the memory of a buffer-protocol object in `Bytes`, without a copy.
pub(crate) fn bytes_from_buffer(obj: &Bound<'_, PyAny>) -> PyResult<Bytes> {
    let e = export(obj, ffi::PyBUF_ANY_CONTIGUOUS)?;
    Ok(Bytes::from_owner(PyBufferOwner(Some(e))))
}

/// Owner of a writable export inside an [`api::ExternalBuffer`]: the driver writes the event's
/// data straight into the exporter's memory (a numpy array, a bytearray...), and dropping the
/// owner queues the export for release, as for pushed buffers (the field is only dropped).
struct WritableOwner(#[allow(dead_code)] PyBufferOwner);

// SAFETY: the owner exposes nothing (no method reads or writes through `&self`); it only holds
// the export until dropped, and its drop queues the export without touching Python.
unsafe impl Sync for WritableOwner {}

/// Exports `obj`'s memory writable and wraps it in a [`api::DataBuffer`] the driver receives
/// into, without a copy. The export pins `obj` (a `bytearray` cannot be resized) until the
/// event's data is dropped.
pub(crate) fn writable_buffer(obj: &Bound<'_, PyAny>) -> PyResult<api::DataBuffer> {
    let e = export(obj, ffi::PyBUF_ANY_CONTIGUOUS | ffi::PyBUF_WRITABLE)?;
    let (ptr, len) = (e.0.buf as *mut u8, e.0.len.max(0) as usize);
    let owner = WritableOwner(PyBufferOwner(Some(e)));
    // SAFETY: `ptr..ptr+len` is the writable, contiguous memory of the export, which stays
    // valid and unmoved until PyBuffer_Release, after `owner` is dropped. The application
    // gave this buffer to receive into: it does not touch it until `wait()` returns the
    // event (the data_allocator contract, documented in api.pyi).
    let buf = unsafe { api::ExternalBuffer::from_raw_parts(ptr, len, owner) };
    Ok(api::DataBuffer::External(buf))
}

/// A read-only segment of received event data, exposed through the buffer protocol (wrap it
/// in `memoryview` or `numpy.frombuffer`: no copy).
#[pyclass(frozen, module = "diaspora_stream.api")]
pub struct DataSegment {
    data: Bytes,
}

impl DataSegment {
    pub(crate) fn new(data: Bytes) -> Self {
        DataSegment { data }
    }
}

#[pymethods]
impl DataSegment {
    fn __len__(&self) -> usize {
        self.data.len()
    }

    /// Exposes the segment's bytes, read-only.
    ///
    /// # Safety
    /// Called by the interpreter with a valid `view`.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        if flags & ffi::PyBUF_WRITABLE != 0 {
            return Err(PyBufferError::new_err("received event data is read-only"));
        }
        let data = &slf.get().data;
        // SAFETY: `view` is valid (caller contract); the memory belongs to the immutable
        // `Bytes` of this frozen object, which FillInfo keeps alive through view->obj.
        let rc = unsafe {
            ffi::PyBuffer_FillInfo(
                view,
                slf.as_ptr(),
                data.as_ptr() as *mut c_void,
                data.len() as ffi::Py_ssize_t,
                1,
                flags,
            )
        };
        if rc != 0 {
            return Err(PyErr::fetch(slf.py()));
        }
        Ok(())
    }

    /// Nothing to release: the memory lives as long as the segment.
    ///
    /// # Safety
    /// Called by the interpreter.
    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {}
}
