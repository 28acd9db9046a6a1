//! Allocators that fill application memory: a [`BufferAllocator`] returns, per event, one or
//! several [`DataBuffer`]s (fresh `BytesMut`s, or memory the application already owns: a
//! `Vec`, a slice of a preallocated array, a buffer from Python/numpy), and the driver writes
//! the selected data straight into them (the files driver `pread`s into them: no copy). The
//! event's [`DataView`](crate::DataView) then has one segment per buffer, pointing into that
//! memory, which stays alive as long as the event's data does.
//!
//! Drivers without native support ([`TopicBackend::supports_buffer_allocator`](crate::TopicBackend::supports_buffer_allocator)
//! false) still honour it: the API copies each event's selected data into the buffers once,
//! calling the allocator with a descriptor of the selected bytes (empty location).

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use crate::descriptor::DataDescriptor;
use crate::driver::ConsumerBackend;
use crate::error::{Error, Result};
use crate::event::{Event, EventId};
use crate::future::{Future, Waitable};
use crate::metadata::Metadata;

/// Provides the buffers the selected data of an event is written into, in order; their
/// lengths must add up to exactly `descriptor.size()`. An error fails that event's pull with
/// [`Error::EventFailed`].
pub type BufferAllocator =
    Arc<dyn Fn(&Metadata, &DataDescriptor) -> Result<Vec<DataBuffer>> + Send + Sync>;

/// Memory the selected data of an event is written into.
pub enum DataBuffer {
    /// A buffer of this crate's kind.
    Owned(BytesMut),
    /// Memory the application owns.
    External(ExternalBuffer),
}

impl DataBuffer {
    /// Length in bytes.
    pub fn len(&self) -> usize {
        match self {
            DataBuffer::Owned(b) => b.len(),
            DataBuffer::External(e) => e.len,
        }
    }

    /// Whether the buffer holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The memory, for the driver to write into.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        match self {
            DataBuffer::Owned(b) => b.as_mut(),
            DataBuffer::External(e) => e.as_mut_slice(),
        }
    }

    /// The filled buffer as the event's bytes (no copy: they point into the buffer).
    pub fn into_bytes(self) -> Bytes {
        match self {
            DataBuffer::Owned(b) => b.freeze(),
            DataBuffer::External(e) => Bytes::from_owner(e),
        }
    }
}

impl From<BytesMut> for DataBuffer {
    fn from(b: BytesMut) -> Self {
        DataBuffer::Owned(b)
    }
}

impl From<Vec<u8>> for DataBuffer {
    fn from(v: Vec<u8>) -> Self {
        DataBuffer::External(ExternalBuffer::from_owner(v))
    }
}

impl std::fmt::Debug for DataBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataBuffer::Owned(b) => write!(f, "DataBuffer::Owned({} bytes)", b.len()),
            DataBuffer::External(e) => write!(f, "DataBuffer::External({} bytes)", e.len),
        }
    }
}

/// Application memory: `len` bytes at `ptr`, kept valid by `owner` until it is dropped.
pub struct ExternalBuffer {
    ptr: *mut u8,
    len: usize,
    _owner: Box<dyn std::any::Any + Send + Sync>,
}

// SAFETY: the memory is exclusively this buffer's (constructor contracts) and its owner is
// `Send + Sync`; the pointer is only a view of that memory.
unsafe impl Send for ExternalBuffer {}
// SAFETY: shared access only reads the memory (`as_ref`); writing needs `&mut self`.
unsafe impl Sync for ExternalBuffer {}

impl ExternalBuffer {
    /// The memory of `owner` (a `Vec<u8>`, a `Box<[u8]>`, an application type exposing its
    /// bytes), which the buffer keeps: safe, since `owner` is boxed before its bytes are
    /// taken, so they do not move.
    pub fn from_owner<T: AsMut<[u8]> + Send + Sync + 'static>(owner: T) -> Self {
        let mut owner = Box::new(owner);
        let slice = (*owner).as_mut();
        let (ptr, len) = (slice.as_mut_ptr(), slice.len());
        ExternalBuffer {
            ptr,
            len,
            _owner: owner,
        }
    }

    /// `len` bytes at `ptr`, kept valid by `owner` (e.g. a Python buffer export, or an `Arc`
    /// of a preallocated array of which this is a slice).
    ///
    /// # Safety
    ///
    /// Until `owner` is dropped, `ptr..ptr+len` must stay valid for reads and writes, and no
    /// one else may access it while the driver writes into it or mutate it afterwards (the
    /// event's data reads it for as long as the event's bytes live).
    pub unsafe fn from_raw_parts(
        ptr: *mut u8,
        len: usize,
        owner: impl Send + Sync + 'static,
    ) -> Self {
        ExternalBuffer {
            ptr,
            len,
            _owner: Box::new(owner),
        }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        if self.len == 0 {
            return &mut [];
        }
        // SAFETY: constructor contracts: `len` valid, exclusive bytes at `ptr`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl AsRef<[u8]> for ExternalBuffer {
    fn as_ref(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: constructor contracts: `len` valid bytes at `ptr`, not mutated while shared.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// Calls `alloc` and checks that the buffers add up to the selection's size.
pub fn allocate(
    alloc: &BufferAllocator,
    metadata: &Metadata,
    selection: &DataDescriptor,
) -> Result<Vec<DataBuffer>> {
    let buffers = crate::catch_panic("the consumer's buffer allocator", || {
        alloc(metadata, selection)
    })??;
    let total: u64 = buffers.iter().map(|b| b.len() as u64).sum();
    if total != selection.size() {
        return Err(Error::AllocatorSize {
            expected: selection.size(),
            got: usize::try_from(total).unwrap_or(usize::MAX),
        });
    }
    Ok(buffers)
}

/// Wraps a consumer of a driver without native buffer allocators: copies each event's
/// selected data into the buffers the allocator gives.
pub(crate) struct CopyIntoBuffers {
    pub(crate) inner: Arc<dyn ConsumerBackend>,
    pub(crate) alloc: BufferAllocator,
}

impl ConsumerBackend for CopyIntoBuffers {
    fn pull(&self) -> Future<Event> {
        Future::pending(Box::new(CopyWaiter {
            future: self.inner.pull(),
            alloc: self.alloc.clone(),
        }))
    }

    fn acknowledge(&self, partition: usize, id: EventId) -> Result<()> {
        self.inner.acknowledge(partition, id)
    }
}

struct CopyWaiter {
    future: Future<Event>,
    alloc: BufferAllocator,
}

impl Waitable<Event> for CopyWaiter {
    fn wait_until(&mut self, deadline: Option<Instant>) -> Option<Result<Event>> {
        let event = match self.future.wait_until(deadline).transpose()? {
            Ok(e) => e,
            Err(e) => return Some(Err(e)),
        };
        if event.is_no_more_events() {
            return Some(Ok(event));
        }
        let (p, id) = (event.partition(), event.id());
        let selected = DataDescriptor::new(Bytes::new(), event.data().len());
        let copied = allocate(&self.alloc, event.metadata(), &selected).map(|mut buffers| {
            let mut at = 0u64;
            for b in &mut buffers {
                at += event.data().copy_to(at, b.as_mut_slice()) as u64;
            }
            crate::DataView::from_segments(buffers.into_iter().map(DataBuffer::into_bytes))
        });
        Some(match copied {
            Ok(data) => Ok(event.with_data(data)),
            Err(e) => Err(Error::EventFailed {
                partition: p,
                id,
                source: Box::new(e),
            }),
        })
    }

    fn is_ready(&self) -> bool {
        self.future.is_ready()
    }
}
