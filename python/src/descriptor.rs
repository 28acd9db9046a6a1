//! `DataDescriptor`: where an event's data is stored and which part of it is selected.

use bytes::Bytes;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

use crate::error::err;

/// Describes an event's stored data and a selection of it. A `data_selector` receives one and
/// returns it (all data), a view of it (`make_sub_view`, ...), or None (no data).
#[pyclass(frozen, module = "diaspora_stream.api")]
#[derive(Clone)]
pub struct DataDescriptor {
    pub(crate) inner: diaspora_api::DataDescriptor,
}

#[pymethods]
impl DataDescriptor {
    /// A descriptor selecting all `size` bytes at the driver-defined `location`.
    #[new]
    #[pyo3(signature = (location = None, size = 0))]
    fn new(location: Option<&Bound<'_, PyAny>>, size: u64) -> PyResult<Self> {
        let loc = match location {
            None => Bytes::new(),
            Some(l) if l.is_none() => Bytes::new(),
            Some(l) => {
                if let Ok(s) = l.cast::<PyString>() {
                    Bytes::copy_from_slice(s.to_str()?.as_bytes())
                } else if let Ok(b) = l.cast::<PyBytes>() {
                    Bytes::copy_from_slice(b.as_bytes())
                } else {
                    return Err(pyo3::exceptions::PyTypeError::new_err(
                        "location must be str or bytes",
                    ));
                }
            }
        };
        Ok(DataDescriptor {
            inner: diaspora_api::DataDescriptor::new(loc, size),
        })
    }

    /// Number of selected bytes.
    #[getter]
    fn size(&self) -> u64 {
        self.inner.size()
    }

    /// Size of the whole stored data.
    #[getter]
    fn total_size(&self) -> u64 {
        self.inner.total_size()
    }

    /// The driver-defined location (bytes).
    #[getter]
    fn location<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.inner.location())
    }

    /// The selected `(offset, size)` ranges of the original data, in delivery order.
    fn flatten(&self) -> Vec<(u64, u64)> {
        self.inner
            .flatten()
            .iter()
            .map(|s| (s.offset, s.len))
            .collect()
    }

    /// Selects `size` bytes from `offset` of this view.
    #[pyo3(signature = (*, offset, size))]
    fn make_sub_view(&self, offset: u64, size: u64) -> PyResult<Self> {
        Ok(DataDescriptor {
            inner: self.inner.sub_view(offset, size).map_err(err)?,
        })
    }

    /// Selects `num_blocks` blocks of `block_size` bytes from `offset`, `gap_size` bytes apart.
    #[pyo3(signature = (*, offset, num_blocks, block_size, gap_size))]
    fn make_stride_view(
        &self,
        offset: u64,
        num_blocks: u64,
        block_size: u64,
        gap_size: u64,
    ) -> PyResult<Self> {
        Ok(DataDescriptor {
            inner: self
                .inner
                .strided_view(offset, num_blocks, block_size, gap_size)
                .map_err(err)?,
        })
    }

    /// Selects a list of `(offset, size)` ranges of this view, in the given order.
    #[pyo3(signature = (*, segments))]
    fn make_unstructured_view(&self, segments: Vec<(u64, u64)>) -> PyResult<Self> {
        Ok(DataDescriptor {
            inner: self.inner.unstructured_view(&segments).map_err(err)?,
        })
    }

    fn __eq__(&self, other: &Self) -> bool {
        self.inner == other.inner
    }

    fn __repr__(&self) -> String {
        format!(
            "DataDescriptor(size={}, total_size={}, segments={:?})",
            self.inner.size(),
            self.inner.total_size(),
            self.flatten()
        )
    }
}
