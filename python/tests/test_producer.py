"""Producer: push/flush, metadata and data forms, bad input."""

import numpy as np
import pytest

import diaspora_stream.api as api
from diaspora_stream.api import Ordering
from conftest import wait


def read_all(topic, n, name="reader"):
    c = topic.consumer(name)
    return [wait(c.pull()) for _ in range(n)]


def test_push_forms_round_trip(topic):
    p = topic.producer("p")
    assert p.name == "p" and p.topic == "t"
    arr = np.arange(10, dtype=np.float64)
    ids = [
        wait(p.push({"k": 1, "nested": {"a": [1, 2.5, None, True]}})),
        wait(p.push('{"k": 2}', b"bytes")),
        wait(p.push(metadata={"k": 3}, data=[b"ab", bytearray(b"cd"), memoryview(b"ef")])),
        wait(p.push({"k": 4}, arr)),
        wait(p.push({"k": 5}, data=None)),
        wait(p.push(b'{"k": 6}', (b"x",))),
    ]
    assert ids == [0, 1, 2, 3, 4, 5]
    assert wait(p.flush()) is True
    evs = read_all(topic, 6)
    assert evs[0].metadata == {"k": 1, "nested": {"a": [1, 2.5, None, True]}}
    assert evs[0].data == []
    assert bytes(evs[1].data[0]) == b"bytes"
    assert b"".join(bytes(d) for d in evs[2].data) == b"abcdef"
    got = np.frombuffer(evs[3].data[0], dtype=np.float64)
    assert np.array_equal(got, arr)
    assert [e.event_id for e in evs] == ids
    assert all(e.partition == 0 for e in evs)
    assert evs[5].metadata == {"k": 6}


def test_partitions_and_ordering(driver):
    driver.create_topic("m", options={"num_partitions": 2})
    t = driver.open_topic("m")
    p = t.producer(ordering=Ordering.Loose, batch_size=4, max_num_batches=1)
    for i in range(10):
        p.push({"i": i}, partition=i % 2)
    wait(p.flush())
    c = t.consumer("c", targets=[1])
    evs = [wait(c.pull()) for _ in range(5)]
    assert sorted(e.metadata["i"] for e in evs) == [1, 3, 5, 7, 9]
    assert all(e.partition == 1 for e in evs)
    assert c.pull().wait(100) is None


def test_bad_partition_fails_the_push_and_the_flush(topic):
    p = topic.producer()
    f = p.push({"a": 1}, partition=7)
    with pytest.raises(api.Exception, match="7"):
        f.wait(30_000)
    with pytest.raises(api.Exception, match="not stored"):
        p.flush().wait(30_000)


def test_non_json_metadata(topic):
    p = topic.producer()
    with pytest.raises(api.Exception, match="(?i)json"):
        p.push("{not json")
    with pytest.raises(TypeError, match="object"):
        p.push({"a": object()})
    with pytest.raises(TypeError, match="key"):
        p.push({1: "int key"})
    with pytest.raises(ValueError, match="nan"):
        p.push({"a": float("nan")})
    with pytest.raises(ValueError, match="64-bit"):
        p.push({"a": 1 << 70})
    deep = []
    for _ in range(1000):
        deep = [deep]
    with pytest.raises(ValueError, match="nested"):
        p.push({"deep": deep})


def test_non_buffer_data(topic):
    p = topic.producer()
    with pytest.raises(TypeError, match="int"):
        p.push({}, 123)
    with pytest.raises(TypeError, match="str"):
        p.push({}, "text is not bytes")
    with pytest.raises(TypeError, match="int"):
        p.push({}, [b"ok", 5])
    with pytest.raises(BufferError, match="contiguous"):
        p.push({}, np.arange(10)[::2])
    assert wait(p.flush()) is True


def test_bad_producer_options(topic):
    with pytest.raises(api.Exception, match="bogus"):
        topic.producer(options={"bogus": 1})
    with pytest.raises(api.Exception, match="max_num_batches"):
        topic.producer(max_num_batches=0)
    with pytest.raises(OverflowError):
        topic.producer(batch_size=-1)
    with pytest.raises(TypeError):
        topic.producer(ordering="strict")


def test_close_and_context_manager(topic):
    with topic.producer() as p:
        p.push({"a": 1})
    with pytest.raises(api.Exception, match="closed"):
        p.push({"a": 2})
    (e,) = read_all(topic, 1)
    assert e.metadata == {"a": 1}


def test_dropping_a_producer_stores_its_events(topic):
    p = topic.producer()
    for i in range(100):
        p.push({"i": i}, b"x" * 100)
    del p
    evs = read_all(topic, 100)
    assert [e.metadata["i"] for e in evs] == list(range(100))


def test_push_after_complete_fails(topic):
    p = topic.producer()
    topic.mark_as_complete()
    with pytest.raises(api.Exception, match="(?i)complete"):
        p.push({"a": 1}).wait(30_000)
    with pytest.raises(api.Exception, match="(?i)complete"):
        topic.producer()


def random_json(rng, depth=0):
    kind = rng.randrange(8 if depth < 4 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.randrange(-(1 << 63), 1 << 64)
    if kind == 3:
        return rng.uniform(-1e300, 1e300)
    if kind == 4:
        return "".join(chr(rng.choice([rng.randrange(32, 127), rng.randrange(0x80, 0x10FFFF)]))
                       for _ in range(rng.randrange(8))).encode("utf-8", "replace").decode("utf-8", "replace")
    if kind in (5, 6):
        return {f"k{rng.randrange(100)}": random_json(rng, depth + 1) for _ in range(rng.randrange(4))}
    return [random_json(rng, depth + 1) for _ in range(rng.randrange(4))]


def test_random_metadata_round_trips(topic):
    """Property: any JSON-like dict pushed comes back equal (fixed seed, 300 cases)."""
    import random

    rng = random.Random(1234)
    cases = [{"v": random_json(rng)} for _ in range(300)]
    p = topic.producer()
    for m in cases:
        p.push(m)
    wait(p.flush())
    c = topic.consumer("c")
    for m in cases:
        assert wait(c.pull()).metadata == m


def test_hostile_json_strings_are_rejected_not_crashing(topic):
    p = topic.producer()
    for text in ["[" * 100_000, '{"a":' * 50_000, "\u0000", '"\\ud800"x', "1e999999" + "}" * 3]:
        with pytest.raises(api.Exception):
            p.push(text)
    assert wait(p.flush()) is True


def test_push_many_round_trips_in_order(driver):
    driver.create_topic("pm", options={"num_partitions": 2})
    t = driver.open_topic("pm")
    p = t.producer(batch_size=3)
    arr = np.arange(4, dtype=np.int32)
    f = p.push_many([({"i": 0}, b"zero"), {"i": 1}, ('{"i": 2}', [b"a", b"b"]), ({"i": 3}, arr)],
                    partition=1)
    assert wait(f) == [0, 1, 2, 3]
    assert f.completed
    gen = (({"i": i}, None) for i in range(4, 10))
    assert wait(p.push_many(gen, partition=0)) == [0, 1, 2, 3, 4, 5]
    assert wait(p.push_many([])) == []
    assert wait(p.flush()) is True
    c = t.consumer("c", targets=[1], data_selector=api.FullDataSelector)
    evs = [wait(c.pull()) for _ in range(4)]
    assert [e.metadata["i"] for e in evs] == [0, 1, 2, 3]
    assert bytes(evs[0].data[0]) == b"zero"
    assert evs[1].data == []
    assert b"".join(bytes(d) for d in evs[2].data) == b"ab"
    assert np.array_equal(np.frombuffer(evs[3].data[0], dtype=np.int32), arr)
    c0 = t.consumer("c0", targets=[0])
    assert [wait(c0.pull()).metadata["i"] for _ in range(6)] == [4, 5, 6, 7, 8, 9]


def test_push_many_refuses_the_whole_call(driver):
    driver.create_topic(
        "pv",
        options={
            "num_partitions": 1,
            "validator": {"type": "schema", "schema": {"required": ["i"]}},
        },
    )
    t = driver.open_topic("pv")
    p = t.producer()
    with pytest.raises(TypeError, match="event 1 is a tuple of 3 items"):
        p.push_many([{"i": 0}, ({"i": 1}, None, None)])
    f = p.push_many([{"i": 0}, {"j": 1}, {"i": 2}])
    with pytest.raises(api.Exception, match="event 1 of 3 pushed together"):
        f.wait(30_000)
    with pytest.raises(api.Exception, match="3 event"):
        p.flush().wait(30_000)
    # Nothing of either call was queued: the next event is the first.
    assert wait(p.push({"i": 9})) == 0
