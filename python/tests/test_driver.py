"""Driver, TopicHandle, ThreadPool: topics, options and bad input."""

import pytest

import diaspora_stream.api as api
from diaspora_stream.api import Driver, ThreadPool


def test_files_driver_is_registered():
    assert "files" in api.registered_drivers()


def test_fabric_driver_is_registered_and_needs_a_group_file(tmp_path):
    assert "fabric" in api.registered_drivers()
    missing = tmp_path / "no-such-group.json"
    with pytest.raises(api.Exception, match="no-such-group.json"):
        Driver(backend="fabric", options={"group_file": str(missing)})


def test_exception_class_is_a_runtime_error():
    assert issubclass(api.Exception, RuntimeError)
    assert api.ClientException is api.Exception


def test_unknown_driver_names_it_and_the_known_ones(root):
    with pytest.raises(api.Exception, match="nope") as e:
        Driver(backend="nope", options={"root_path": root})
    assert "files" in str(e.value)


def test_missing_driver_library_is_an_error(root):
    with pytest.raises(api.Exception, match="libdoesnotexist"):
        Driver(backend="x:libdoesnotexist.so", options={"root_path": root})


def test_bad_driver_options(root):
    with pytest.raises(api.Exception, match="root_path"):
        Driver(backend="files", options={"root_path": 5})
    with pytest.raises(api.Exception, match="bogus"):
        Driver(backend="files", options={"root_path": root, "bogus": 1})
    with pytest.raises(TypeError, match="dict"):
        Driver(backend="files", options=["root_path", root])
    with pytest.raises(TypeError, match="JSON"):
        Driver(backend="files", options={"root_path": object()})
    with pytest.raises(TypeError):
        Driver("files")  # backend is keyword-only, as upstream


def test_topics(driver):
    assert driver.name == "files"
    assert not driver.topic_exists("a")
    driver.create_topic("a", options={"num_partitions": 3})
    driver.create_topic("b")
    assert driver.topic_exists("a")
    topics = driver.list_topics()
    assert set(topics) == {"a", "b"}
    assert isinstance(topics["a"], dict)
    t = driver.open_topic("a")
    assert t.name == "a"
    assert t == driver.open_topic("a")
    assert t != driver.open_topic("b")
    parts = t.partitions
    assert [p["index"] for p in parts] == [0, 1, 2]
    assert all(isinstance(p["info"], dict) for p in parts)
    assert not t.is_complete()
    t.mark_as_complete()
    assert t.is_complete()


def test_topic_errors(driver):
    driver.create_topic("a")
    with pytest.raises(api.Exception, match="a"):
        driver.create_topic("a")
    with pytest.raises(api.Exception, match="missing"):
        driver.open_topic("missing")
    with pytest.raises(api.Exception):
        driver.create_topic("../escape")
    with pytest.raises(api.Exception, match="num_partitions"):
        driver.create_topic("c", options={"num_partitions": "many"})


def test_thread_pools(driver):
    assert ThreadPool(3).thread_count == 3
    assert driver.make_thread_pool(2).thread_count == 2


def test_help_shows_docstrings():
    assert "driver" in (Driver.__doc__ or "").lower()
    assert "timeout" in (api.FutureUint.wait.__doc__ or "")
    assert "acknowledg" in (api.Event.acknowledge.__doc__ or "").lower()
