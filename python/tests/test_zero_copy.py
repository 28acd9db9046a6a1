"""Zero copy: pushed buffers are exported (not copied) until stored, received data is a view of
the received bytes, and peak memory does not grow by a copy of large arrays."""

import resource
import time

import numpy as np
import pytest

import diaspora_stream.api as api
from conftest import wait

MIB = 1 << 20


def peak_rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def wait_released(deadline_s=30):
    end = time.monotonic() + deadline_s
    while api.pending_releases() and time.monotonic() < end:
        time.sleep(0.01)
    return api.pending_releases()


def test_pushed_bytearray_is_exported_not_copied(topic):
    p = topic.producer(batch_size=1000)  # the event stays queued until the flush
    ba = bytearray(b"abc")
    f = p.push({}, ba)
    with pytest.raises(BufferError):
        ba.extend(b"more")  # only possible if nothing else holds its memory
    wait(p.flush())
    wait(f)
    assert wait_released() == 0
    ba.extend(b"d")  # released once stored
    assert bytes(wait(topic.consumer("c").pull()).data[0]) == b"abc"


def test_numpy_arrays_of_any_dtype_and_layout(topic):
    p = topic.producer()
    arrays = [
        np.arange(12, dtype=np.float32).reshape(3, 4),
        np.asfortranarray(np.arange(12, dtype=np.int16).reshape(3, 4)),
        np.array([1 + 2j], dtype=np.complex128),
        np.zeros(0, dtype=np.uint8),
    ]
    for a in arrays:
        p.push({"dtype": str(a.dtype)}, a)
    wait(p.flush())
    c = topic.consumer("c")
    for a in arrays:
        ev = wait(c.pull())
        raw = b"".join(bytes(d) for d in ev.data)
        assert raw == a.tobytes(order="A")


def test_received_data_is_a_read_only_view(topic):
    p = topic.producer()
    wait(p.push({}, np.arange(1000, dtype=np.float64)))
    ev = wait(topic.consumer("c").pull())
    (mv,) = ev.data
    assert isinstance(mv, memoryview) and mv.readonly
    assert isinstance(mv.obj, api.DataSegment)
    a = np.frombuffer(mv, dtype=np.float64)
    b = np.frombuffer(ev.data[0], dtype=np.float64)
    assert np.shares_memory(a, b)  # both view the one received buffer
    assert np.array_equal(a, np.arange(1000, dtype=np.float64))
    with pytest.raises(ValueError):
        a[0] = 1


def test_large_arrays_do_not_double_peak_memory(topic):
    a = np.random.default_rng(1).random(64 * MIB // 8)  # 64 MiB of float64
    p = topic.producer(max_num_batches=2)
    base = peak_rss()
    for i in range(6):
        p.push({"i": i}, a)
    wait(p.flush(), 120_000)
    pushed_growth = peak_rss() - base
    assert pushed_growth < 32 * MIB, f"push grew peak RSS by {pushed_growth / MIB:.0f} MiB"
    assert wait_released() == 0

    c = topic.consumer("c")
    ev = wait(c.pull(), 120_000)
    base = peak_rss()
    got = np.frombuffer(ev.data[0], dtype=np.float64)
    assert got.shape == a.shape and got[123] == a[123] and got[-1] == a[-1]
    viewed_growth = peak_rss() - base
    assert viewed_growth < 16 * MIB, f"viewing grew peak RSS by {viewed_growth / MIB:.0f} MiB"
