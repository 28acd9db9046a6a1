"""Zero-copy receive: a data_allocator's buffers (numpy arrays, bytearrays) are the memory the
driver writes the event's data into, not a copy target; checked by address and by the buffer
exports the event holds, never by timing."""

import gc
import time

import numpy as np
import pytest

import diaspora_stream.api as api
from conftest import wait
from test_zero_copy import wait_released


def fill(topic, payloads):
    p = topic.producer()
    for d in payloads:
        p.push({"n": len(d)}, d)
    wait(p.flush())


def address(a):
    return a.__array_interface__["data"][0]


def test_numpy_allocator_receives_into_the_array(topic):
    fill(topic, [np.arange(4096, dtype=np.float64), np.arange(10, dtype=np.float64)])
    arrays = []

    def alloc(metadata, descriptor):
        a = np.empty(descriptor.size // 8, dtype=np.float64)
        arrays.append(a)
        return a

    c = topic.consumer("c", data_allocator=alloc)
    ev = wait(c.pull())
    assert ev.data[0] is arrays[0]
    assert (arrays[0] == np.arange(4096)).all()
    # The event's data is the array's memory: same address, no other buffer in between.
    assert ev._data_addresses() == [address(arrays[0])]
    ev2 = wait(c.pull())
    assert ev2._data_addresses() == [address(arrays[1])]
    assert (ev2.data[0] == np.arange(10)).all()


def test_split_allocator_buffers_are_the_segments(topic):
    fill(topic, [bytes(range(200)) * 20])

    bufs = []

    def split(metadata, descriptor):
        bufs.extend([np.empty(1000, np.uint8), bytearray(3000)])
        return bufs

    ev = wait(topic.consumer("s", data_allocator=split).pull())
    assert ev.data[0] is bufs[0] and ev.data[1] is bufs[1]
    ba_addr = address(np.frombuffer(bufs[1], np.uint8))
    assert ev._data_addresses() == [address(bufs[0]), ba_addr]
    assert bytes(bufs[0]) + bytes(bufs[1]) == bytes(range(200)) * 20


def test_event_pins_the_allocated_bytearray(topic):
    # The event's data is the bytearray's memory, so the bytearray cannot be resized while the
    # event lives (a copy would have left it free); it can once the event is gone.
    fill(topic, [b"0123456789"])
    ba = bytearray(10)
    c = topic.consumer("c", data_allocator=lambda m, d: ba)
    ev = wait(c.pull())
    assert ev.data[0] is ba and ba == b"0123456789"
    with pytest.raises(BufferError):
        ba.extend(b"x")
    del ev
    c.close()
    gc.collect()
    end = time.monotonic() + 30
    while True:
        api.pending_releases()  # releases queued exports
        try:
            ba.extend(b"x")
            break
        except BufferError:
            assert time.monotonic() < end, "the bytearray stayed exported"
            time.sleep(0.01)
    assert ba == b"0123456789x"


def test_allocator_errors_are_raised_with_their_cause(topic):
    fill(topic, [b"abcd", b"efgh", b"ijkl"])

    def boom(metadata, descriptor):
        raise ValueError("no memory today")

    c = topic.consumer("b", data_allocator=boom)
    with pytest.raises(api.Exception, match="data_allocator raised") as ei:
        wait(c.pull())
    assert isinstance(ei.value.__cause__, ValueError)
    assert "no memory today" in str(ei.value.__cause__)
    c.close()

    c = topic.consumer("r", data_allocator=lambda m, d: bytes(d.size))
    with pytest.raises(api.Exception, match="writable") as ei:
        wait(c.pull())
    assert isinstance(ei.value.__cause__, BufferError)  # read-only buffer refused
    c.close()

    c = topic.consumer("w", data_allocator=lambda m, d: bytearray(3))
    with pytest.raises(api.Exception, match="4"):
        wait(c.pull())
    c.close()

    # A failed event is skipped: the consumer goes on with the next one.
    calls = []

    def flaky(metadata, descriptor):
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("first one fails")
        return bytearray(descriptor.size)

    c = topic.consumer("f", data_allocator=flaky)
    with pytest.raises(api.Exception):
        wait(c.pull())
    ev = wait(c.pull())
    assert ev.event_id == 1 and bytes(ev.data[0]) == b"efgh"
    c.close()
    del ev, ei
    gc.collect()
    assert wait_released() == 0


def test_allocated_exports_are_released(topic):
    fill(topic, [bytes(64)] * 20)
    c = topic.consumer("c", data_allocator=lambda m, d: bytearray(d.size))
    for _ in range(20):
        ev = wait(c.pull())
        ev.acknowledge()
    del ev
    c.close()
    gc.collect()
    assert wait_released() == 0
