"""The seed programs of the upstream docs (python/examples), run unchanged."""

import os
import subprocess
import sys

from diaspora_stream.api import Driver
from conftest import wait

EXAMPLES = os.path.join(os.path.dirname(__file__), os.pardir, "examples")


def run(script, *args):
    return subprocess.run(
        [sys.executable, os.path.join(EXAMPLES, script), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_seed_producer_and_consumer(root):
    Driver(backend="files", options={"root_path": root}).create_topic(
        "my_topic", options={"num_partitions": 1}
    )
    prod = run("producer.py", root, "my_topic")
    assert prod.returncode == 0, prod.stderr
    cons = run("consumer.py", root, "my_topic")
    assert cons.returncode == 0, cons.stderr
    lines = cons.stdout.splitlines()
    # The seed checks len(sys.argv) != 4 with 3 arguments, so it prints its usage line first.
    assert lines[0].startswith("Usage:")
    assert lines[1:] == [str({"name": "bob", "x": i * 42}) for i in range(100)]
    # It acknowledges when (i+1) % 10 is non-zero: the last ack is event 98, so a restarted
    # consumer of the same name resumes at event 99.
    t = Driver(backend="files", options={"root_path": root}).open_topic("my_topic")
    ev = wait(t.consumer("my_consumer").pull())
    assert ev.event_id == 99 and ev.metadata == {"name": "bob", "x": 99 * 42}
