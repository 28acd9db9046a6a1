"""Consumer.process (StopEventProcessor, max_events, timeout, exceptions), iteration, and
Driver.default_thread_pool."""

import pytest

import diaspora_stream.api as api
from diaspora_stream.api import StopEventProcessor
from conftest import wait


def fill(topic, n):
    p = topic.producer()
    for i in range(n):
        p.push({"i": i}, b"x%d" % i)
    wait(p.flush())


def test_process_until_stop(topic):
    fill(topic, 10)
    seen = []

    def proc(event):
        seen.append(event.metadata["i"])
        event.acknowledge()
        if event.metadata["i"] == 3:
            raise StopEventProcessor()

    c = topic.consumer("c")
    assert c.process(proc, timeout_ms=30_000) == 4
    assert seen == [0, 1, 2, 3]
    # The next call resumes after the stopped event.
    assert c.process(lambda e: seen.append(e.metadata["i"]), 30_000, 2) == 2
    assert seen == [0, 1, 2, 3, 4, 5]
    # A restarted consumer resumes after the last acknowledgement (event 3).
    c.close()
    ev = wait(topic.consumer("c").pull())
    assert ev.event_id == 4


def test_process_timeout_and_end_of_stream(topic):
    fill(topic, 3)
    seen = []
    # No more events within the timeout: returns how many were processed.
    assert topic.consumer("t").process(lambda e: seen.append(e.event_id), timeout_ms=200) == 3
    topic.mark_as_complete()
    # A complete topic: process returns at the end of the stream, even without a timeout.
    assert topic.consumer("u").process(lambda e: None, timeout_ms=-1) == 3
    assert seen == [0, 1, 2]


def test_process_propagates_other_exceptions(topic):
    fill(topic, 5)
    c = topic.consumer("c")

    def proc(event):
        if event.event_id == 1:
            raise KeyError("bad event")

    with pytest.raises(KeyError, match="bad event"):
        c.process(proc, timeout_ms=30_000)
    # The loop stopped at the raising event; the next one is still there.
    assert wait(c.pull()).event_id == 2
    with pytest.raises(TypeError):
        c.process("not callable")
    assert issubclass(StopEventProcessor, Exception)
    assert not issubclass(StopEventProcessor, api.Exception)


def test_iteration_yields_every_event_then_stops(topic):
    fill(topic, 4)
    topic.mark_as_complete()
    c = topic.consumer("c")
    assert [(e.event_id, bytes(e.data[0])) for e in c] == [(i, b"x%d" % i) for i in range(4)]
    assert list(c) == []


def test_default_thread_pool(root):
    d = api.Driver(backend="files", options={"root_path": root, "thread_count": 3})
    tp = d.default_thread_pool
    assert isinstance(tp, api.ThreadPool)
    assert tp.thread_count == 3
    d.create_topic("t")
    p = d.open_topic("t").producer(thread_pool=d.default_thread_pool)
    assert wait(p.push({}, b"a")) == 0
