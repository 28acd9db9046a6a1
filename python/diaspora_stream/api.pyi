"""Type stubs of diaspora_stream.api (the extension module diaspora_stream._api)."""

import builtins
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence, Union

from collections.abc import Buffer

Json = Union[None, bool, int, float, str, Sequence["Json"], Mapping[str, "Json"]]
DataArg = Union[None, Buffer, Sequence[Buffer]]
Selector = Callable[[Any, "DataDescriptor"], "DataDescriptor | None"]
Allocator = Callable[[Any, "DataDescriptor"], "Buffer | Sequence[Buffer]"]

#: batch_size value meaning "adaptive" (send a batch as soon as the previous one is stored).
AdaptiveBatchSize: int

class Exception(builtins.RuntimeError):
    """Error raised by the Diaspora Stream API; the message says what failed and why."""

ClientException = Exception

class StopEventProcessor(builtins.Exception):
    """Raise from a Consumer.process processor to stop processing (upstream's name)."""

class Ordering:
    """Ordering guarantee of a producer."""
    Strict: Ordering
    Loose: Ordering

class ThreadPool:
    """A pool of threads producers store batches with."""
    def __init__(self, count: int = 1) -> None: ...
    @property
    def thread_count(self) -> int: ...

class DataDescriptor:
    """An event's stored data and a selection of it (returned by a data_selector)."""
    def __init__(self, location: str | bytes | None = None, size: int = 0) -> None: ...
    @property
    def size(self) -> int:
        """Number of selected bytes."""
    @property
    def total_size(self) -> int: ...
    @property
    def location(self) -> bytes: ...
    def flatten(self) -> list[tuple[int, int]]:
        """The selected (offset, size) ranges of the stored data, in delivery order."""
    def make_sub_view(self, *, offset: int, size: int) -> DataDescriptor: ...
    def make_stride_view(
        self, *, offset: int, num_blocks: int, block_size: int, gap_size: int
    ) -> DataDescriptor: ...
    def make_unstructured_view(self, *, segments: Sequence[tuple[int, int]]) -> DataDescriptor: ...

class DataSegment:
    """Read-only received data (buffer protocol; wrapped in memoryview by Event.data)."""
    def __len__(self) -> int: ...
    def __buffer__(self, flags: int) -> memoryview: ...

class FutureUint:
    """Future of a push."""
    def wait(self, timeout_ms: int = -1) -> int | None:
        """The event id once stored; None if timeout_ms (>= 0) expired first."""
    @property
    def completed(self) -> bool: ...

class FutureIds:
    """Future of a push_many."""
    def wait(self, timeout_ms: int = -1) -> list[int] | None:
        """The events' ids, in order, once all are stored; None if timeout_ms (>= 0) expired first."""
    @property
    def completed(self) -> bool: ...

class FutureFlushed:
    """Future of a flush."""
    def wait(self, timeout_ms: int = -1) -> bool | None:
        """True once every pushed event is stored; None on timeout; raises if events were lost."""
    @property
    def completed(self) -> bool: ...

class FutureEvent:
    """Future of a pull."""
    def wait(self, timeout_ms: int = -1) -> Event | None:
        """The next event; None on timeout."""
    @property
    def completed(self) -> bool: ...

class Event:
    """An event read by a consumer."""
    @property
    def metadata(self) -> Any:
        """The metadata (a dict for JSON objects)."""
    @property
    def data(self) -> list[Any]:
        """Read-only memoryviews over the received data, or the data_allocator's buffers."""
    @property
    def event_id(self) -> int | None:
        """Id in the partition; None for the end-of-stream marker of a completed topic."""
    @property
    def partition(self) -> int: ...
    def acknowledge(self) -> None:
        """Acknowledges this event (and earlier ones of its partition) for the consumer."""

class Producer:
    """Pushes events into a topic. Data is not copied: keep it unmodified until stored."""
    @property
    def name(self) -> str: ...
    @property
    def topic(self) -> str: ...
    def push(
        self, metadata: Json | str, data: DataArg = None, *, partition: int | None = None
    ) -> FutureUint: ...
    def push_many(
        self,
        events: Iterable[tuple[Json | str, DataArg] | Json | str],
        *,
        partition: int | None = None,
    ) -> FutureIds: ...
    def flush(self) -> FutureFlushed: ...
    def close(self) -> None: ...
    def __enter__(self) -> Producer: ...
    def __exit__(self, *exc: object) -> None: ...

class Consumer:
    """Pulls events of a topic under a consumer name."""
    @property
    def name(self) -> str: ...
    @property
    def topic(self) -> str: ...
    def pull(self) -> FutureEvent: ...
    def close(self) -> None: ...
    def process(
        self,
        processor: Callable[[Event], None],
        timeout_ms: int = 5000,
        max_events: int | None = None,
    ) -> int:
        """Calls processor(event) on this thread until it raises StopEventProcessor,
        max_events were processed, the topic is complete and drained, or no event arrives
        within timeout_ms (negative: forever). Returns how many events were passed to it;
        other exceptions propagate."""
    def __iter__(self) -> Iterator[Event]:
        """Pulls events (waiting without limit) until the topic is complete and drained."""
    def __next__(self) -> Event: ...

class TopicHandle:
    """A topic: makes producers and consumers."""
    @property
    def name(self) -> str: ...
    @property
    def options(self) -> Any: ...
    @property
    def partitions(self) -> list[dict[str, Any]]:
        """[{"index": int, "info": dict}, ...]"""
    def mark_as_complete(self) -> None: ...
    def is_complete(self) -> bool: ...
    def producer(
        self,
        name: str = "",
        *,
        batch_size: int | None = None,
        max_num_batches: int | None = None,
        ordering: Ordering | None = None,
        thread_pool: ThreadPool | None = None,
        options: Mapping[str, Json] | None = None,
    ) -> Producer: ...
    def consumer(
        self,
        name: str,
        *,
        data_selector: Selector | None = None,
        data_allocator: Allocator | None = None,
        batch_size: int | None = None,
        max_num_batches: int | None = None,
        thread_pool: ThreadPool | None = None,
        targets: Sequence[int] | None = None,
        options: Mapping[str, Json] | None = None,
    ) -> Consumer:
        """A consumer named `name`. data_selector(metadata, descriptor) returns the part of
        the data to fetch (a DataDescriptor, or None for none). data_allocator(metadata,
        descriptor) returns one writable contiguous buffer (numpy array, bytearray, ...) or a
        list of them, of descriptor.size bytes in total: the driver receives the data straight
        into them (no copy; event.data is then those objects, and they stay pinned while the
        event lives). Do not touch them until wait() returned the event. Drivers without
        native buffer allocators fill them with one copy. An exception of either callable
        fails that event's wait() with Exception, the callable's exception as __cause__; the
        next pull goes on with the following event. Either callable turns prefetching off
        (they run on the pulling thread, with the GIL)."""

class Driver:
    """A connection to a streaming engine: Driver(backend="files", options={"root_path": ...})."""
    def __init__(self, *, backend: str, options: Mapping[str, Json] | None = None) -> None: ...
    @property
    def name(self) -> str: ...
    def create_topic(self, name: str, *, options: Mapping[str, Json] | None = None) -> None: ...
    def open_topic(self, name: str) -> TopicHandle: ...
    def topic_exists(self, name: str) -> bool: ...
    def list_topics(self) -> dict[str, Any]: ...
    def make_thread_pool(self, count: int) -> ThreadPool: ...
    @property
    def default_thread_pool(self) -> ThreadPool:
        """The driver's default pool (producers without a thread_pool use it)."""

def FullDataSelector(metadata: Any, descriptor: DataDescriptor) -> DataDescriptor: ...
def NoDataSelector(metadata: Any, descriptor: DataDescriptor) -> None: ...
def ByteArrayAllocator(metadata: Any, descriptor: DataDescriptor) -> list[bytearray]: ...
def registered_drivers() -> list[str]: ...
def pending_releases() -> int:
    """Releases buffers stored events no longer need; returns how many are still held."""
