"""Consumer and Event: timeouts, acknowledgements and restart, completion, selectors and
allocators."""

import numpy as np
import pytest

import diaspora_stream.api as api
from diaspora_stream.api import ByteArrayAllocator, DataDescriptor, NoDataSelector
from conftest import wait


def fill(topic, n, data=lambda i: b""):
    p = topic.producer()
    for i in range(n):
        p.push({"i": i}, data(i))
    wait(p.flush())


def test_wait_returns_none_on_timeout_and_can_be_retried(topic):
    c = topic.consumer("c")
    f = c.pull()
    assert f.wait(0) is None
    assert f.wait(timeout_ms=50) is None
    assert not f.completed
    fill(topic, 1)
    ev = wait(f)
    assert ev.metadata == {"i": 0}
    assert f.completed
    assert f.wait() is ev  # a completed future keeps its result


def test_restart_after_acknowledgements(topic):
    fill(topic, 10)
    c = topic.consumer("c")
    evs = [wait(c.pull()) for _ in range(6)]
    evs[4].acknowledge()  # events 0..4 are done; 5 was read but not acknowledged
    c.close()
    with pytest.raises(api.Exception, match="closed"):
        c.pull()
    c2 = topic.consumer("c")
    assert [wait(c2.pull()).metadata["i"] for _ in range(5)] == [5, 6, 7, 8, 9]
    assert c2.pull().wait(50) is None
    # Another consumer name starts from the beginning.
    assert wait(topic.consumer("other").pull()).metadata == {"i": 0}


def test_iteration_stops_at_completion(topic):
    fill(topic, 5)
    topic.mark_as_complete()
    c = topic.consumer("c")
    assert [e.metadata["i"] for e in c] == list(range(5))
    end = wait(c.pull())
    assert end.event_id is None
    end.acknowledge()  # no-op on the end-of-stream marker


def test_bad_consumer_arguments(topic):
    with pytest.raises(api.Exception):
        topic.consumer("../bad")
    with pytest.raises(api.Exception, match="bogus"):
        topic.consumer("c", options={"bogus": True})
    with pytest.raises(TypeError, match="callable"):
        topic.consumer("c", data_selector=5)
    with pytest.raises(TypeError, match="callable"):
        topic.consumer("c", data_allocator="no")
    with pytest.raises(api.Exception, match="9"):
        topic.consumer("c", targets=[9])


def test_metadata_only_consumer(topic):
    fill(topic, 2, lambda i: b"data")
    evs = [wait(topic.consumer("a", data_selector=NoDataSelector).pull())]
    evs.append(wait(topic.consumer("b", options={"data": "none"}).pull()))
    assert all(e.data == [] for e in evs)


def test_selector_views(topic):
    fill(topic, 3, lambda i: bytes(range(i * 10, i * 10 + 10)))
    seen = []

    def selector(metadata, descriptor):
        seen.append((metadata["i"], descriptor.size))
        i = metadata["i"]
        if i == 0:
            return descriptor.make_sub_view(offset=2, size=3)
        if i == 1:
            return descriptor.make_stride_view(offset=0, num_blocks=3, block_size=1, gap_size=2)
        return descriptor.make_unstructured_view(segments=[(8, 2), (0, 1)])

    c = topic.consumer("c", data_selector=selector)
    got = [b"".join(bytes(d) for d in wait(c.pull()).data) for _ in range(3)]
    assert got == [bytes([2, 3, 4]), bytes([10, 13, 16]), bytes([28, 29, 20])]
    assert seen == [(0, 10), (1, 10), (2, 10)]


def test_descriptor_api():
    d = DataDescriptor("loc", 100)
    assert d.size == 100 and d.location == b"loc"
    s = d.make_sub_view(offset=10, size=20)
    assert s.flatten() == [(10, 20)]
    assert s.make_sub_view(offset=5, size=5).flatten() == [(15, 5)]
    # Views clamp to the data, as upstream (main's api since the parity merge).
    assert d.make_sub_view(offset=90, size=20).flatten() == [(90, 10)]
    assert d.make_sub_view(offset=120, size=5).flatten() == []
    assert DataDescriptor().size == 0


def test_selector_errors_reach_the_caller(topic):
    fill(topic, 2, lambda i: b"abc")

    def boom(metadata, descriptor):
        raise ValueError("selector broke")

    with pytest.raises(api.Exception, match="data_selector") as e:
        wait(topic.consumer("c", data_selector=boom).pull())
    assert isinstance(e.value.__cause__, ValueError)

    with pytest.raises(api.Exception, match="data_selector") as e:
        wait(topic.consumer("d", data_selector=lambda m, d: 42).pull())
    assert isinstance(e.value.__cause__, TypeError)


def test_allocators(topic):
    fill(topic, 2, lambda i: np.full(1000, i + 1, dtype=np.int32).tobytes())
    c = topic.consumer("c", data_allocator=ByteArrayAllocator)
    ev = wait(c.pull())
    assert isinstance(ev.data[0], bytearray)
    assert ev.data[0] == np.full(1000, 1, dtype=np.int32).tobytes()
    # The consumer received event 1 ahead into another bytearray: closing it releases that.
    c.close()

    arrays = []

    def numpy_alloc(metadata, descriptor):
        a = np.empty(descriptor.size // 4, dtype=np.int32)
        arrays.append(a)
        return a

    ev = wait(topic.consumer("n", data_allocator=numpy_alloc).pull())
    assert ev.data[0] is arrays[0]  # received into the application's array
    assert (arrays[0] == 1).all()

    # Two buffers of 1000 + 3000 bytes receive one event of 4000 bytes in order.
    def split(metadata, descriptor):
        return [np.empty(250, np.int32), np.empty(750, np.int32)]

    ev = wait(topic.consumer("s", data_allocator=split).pull())
    assert (np.concatenate(ev.data) == 1).all()

    # The events (and, through them, the consumers' events received ahead into allocator
    # buffers) must not stay referenced by the frame the failing waits below capture.
    del ev
    with pytest.raises(api.Exception, match="4000"):
        wait(topic.consumer("w", data_allocator=lambda m, d: bytearray(3)).pull())
    with pytest.raises(api.Exception) as ei:
        wait(topic.consumer("r", data_allocator=lambda m, d: bytes(d.size)).pull())
    assert isinstance(ei.value.__cause__, BufferError)
