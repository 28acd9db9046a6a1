"""Fixtures: a files driver in a fresh directory, and a topic in it.

Every wait in these tests is bounded (WAIT_MS) and its result checked, so a hang fails."""

import pytest

from diaspora_stream.api import Driver

#: Upper bound of any wait in the tests (a stored event takes milliseconds).
WAIT_MS = 30_000


@pytest.fixture
def root(tmp_path):
    return str(tmp_path / "data")


@pytest.fixture
def driver(root):
    return Driver(backend="files", options={"root_path": root})


@pytest.fixture
def topic(driver):
    driver.create_topic("t", options={"num_partitions": 1})
    return driver.open_topic("t")


def wait(fut, timeout_ms=WAIT_MS):
    """Waits for a future and fails the test if it times out."""
    r = fut.wait(timeout_ms)
    assert r is not None, f"timed out after {timeout_ms} ms"
    return r
