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

use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use bytes::Bytes;
use parking_lot::{Condvar, Mutex};
use pyo3::exceptions::{PyBufferError, PyTypeError};
use pyo3::ffi;
use pyo3::prelude::*;

/// A buffer export of a Python object; the `Py_buffer` holds a strong reference to it.
struct Export(Box<ffi::Py_buffer>);

// SAFETY: the exported memory is only read (never written) without the GIL, and the export is
// released (PyBuffer_Release) only by `release_now`, which requires the GIL.
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
        let msg = format!(
            "event data must be a contiguous buffer (bytes, bytearray, memoryview, numpy array...), \
             not {}",
            crate::json::type_name(obj)
        );
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

/// Copies `src` (the segments, in order) into the writable buffers `dst`, whose total size
/// must equal the data's size. Returns the error message otherwise.
pub(crate) fn copy_into(py: Python<'_>, dst: &[Bound<'_, PyAny>], src: &[Bytes]) -> PyResult<()> {
    let mut exports = Vec::with_capacity(dst.len());
    for d in dst {
        exports.push(export(d, ffi::PyBUF_ANY_CONTIGUOUS | ffi::PyBUF_WRITABLE)?);
    }
    let total: usize = exports.iter().map(|e| e.0.len.max(0) as usize).sum();
    let size: usize = src.iter().map(|s| s.len()).sum();
    let result = if total != size {
        Err(crate::error::exc(format!(
            "data_allocator returned buffers of {total} bytes in total, the selected data is \
             {size} bytes"
        )))
    } else {
        let mut src_iter = src.iter().flat_map(|s| s.chunks(1 << 20));
        let mut pending: &[u8] = &[];
        for e in &exports {
            let len = e.0.len.max(0) as usize;
            if len == 0 {
                continue;
            }
            // SAFETY: a writable, contiguous export of `len` bytes, alive until released below;
            // the GIL is held so no Python code runs concurrently with this copy.
            let out = unsafe { std::slice::from_raw_parts_mut(e.0.buf as *mut u8, len) };
            let mut filled = 0;
            while filled < len {
                if pending.is_empty() {
                    pending = src_iter.next().unwrap_or(&[]);
                }
                let n = pending.len().min(len - filled);
                out[filled..filled + n].copy_from_slice(&pending[..n]);
                pending = &pending[n..];
                filled += n;
            }
        }
        Ok(())
    };
    exports.into_iter().for_each(|e| release_now(py, e));
    result
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
