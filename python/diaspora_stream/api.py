"""The Diaspora Stream API: drivers, topics, producers, consumers and events.

Example::

    from diaspora_stream.api import Driver
    driver = Driver(backend="files", options={"root_path": "/tmp/diaspora-data"})
    driver.create_topic("my_topic", options={"num_partitions": 1})
    producer = driver.open_topic("my_topic").producer()
    producer.push(metadata={"x": 1}, data=b"payload").wait()
    event = driver.open_topic("my_topic").consumer("c").pull().wait()
    print(event.metadata, bytes(event.data[0]))
    event.acknowledge()

Data passed to ``push`` is not copied (bytes, bytearray, memoryview, numpy arrays of any
dtype, C- or Fortran-contiguous); keep it unmodified until its future or a flush completed.
Received data is a list of read-only memoryviews over the received bytes (no copy), e.g.
``numpy.frombuffer(event.data[0], dtype=numpy.float64)``.
"""

import faulthandler as _faulthandler
import signal as _signal
import threading as _threading

# Debian's libfabric links libinfinipath (through libpsm_infinipath), whose library constructor
# replaces the handlers of SIGINT, SIGTERM, SIGSEGV, SIGBUS, SIGILL and SIGABRT with one that
# exits with status 1: loading the extension would make Ctrl-C kill the interpreter instead of
# raising KeyboardInterrupt. Save the dispositions Python set, load, and put them back.
_SIGNALS = [
    getattr(_signal, n)
    for n in ("SIGINT", "SIGTERM", "SIGSEGV", "SIGBUS", "SIGILL", "SIGABRT")
    if hasattr(_signal, n)
]
_saved = {s: _signal.getsignal(s) for s in _SIGNALS}
_faulthandler_was_enabled = _faulthandler.is_enabled()

from diaspora_stream._api import (
    AdaptiveBatchSize,
    Consumer,
    DataDescriptor,
    DataSegment,
    Driver,
    Event,
    Exception,
    FutureEvent,
    FutureFlushed,
    FutureIds,
    FutureUint,
    Ordering,
    Producer,
    StopEventProcessor,
    ThreadPool,
    TopicHandle,
    pending_releases,
    registered_drivers,
)



def _restore_signal_handlers():
    if _threading.current_thread() is not _threading.main_thread():
        return  # signal.signal only works there; the embedding program owns signals then
    for sig, handler in _saved.items():
        if handler is not None:  # None: set from C, not known to Python; leave it
            _signal.signal(sig, handler)
    if _faulthandler_was_enabled:
        _faulthandler.enable()  # re-installs its handlers over the constructor's


_restore_signal_handlers()

#: Upstream's name for the exception class.
ClientException = Exception


def FullDataSelector(metadata, descriptor):
    """A ``data_selector`` fetching all data of every event."""
    return descriptor


def NoDataSelector(metadata, descriptor):
    """A ``data_selector`` fetching no data (metadata only)."""
    return None


def ByteArrayAllocator(metadata, descriptor):
    """A ``data_allocator`` receiving each event's data into a new ``bytearray``."""
    return [bytearray(descriptor.size)]


__all__ = [
    "AdaptiveBatchSize",
    "ByteArrayAllocator",
    "ClientException",
    "Consumer",
    "DataDescriptor",
    "DataSegment",
    "Driver",
    "Event",
    "Exception",
    "StopEventProcessor",
    "FullDataSelector",
    "FutureEvent",
    "FutureFlushed",
    "FutureIds",
    "FutureUint",
    "NoDataSelector",
    "Ordering",
    "Producer",
    "ThreadPool",
    "TopicHandle",
    "pending_releases",
    "registered_drivers",
]
