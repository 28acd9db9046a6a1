"""The GIL is released while waiting, Ctrl-C interrupts wait(-1), and concurrent use from
Python threads (with background buffer releases) does not deadlock."""

import os
import signal
import threading
import time

import numpy as np
import pytest

import diaspora_stream.api as api
from conftest import wait


def test_ctrl_c_interrupts_wait_forever(topic):
    c = topic.consumer("c")
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            c.pull().wait(-1)  # nothing will ever arrive
    finally:
        timer.cancel()


def test_other_threads_run_during_a_wait(topic):
    ticks = []
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            ticks.append(1)
            time.sleep(0.001)

    t = threading.Thread(target=spin)
    t.start()
    try:
        assert topic.consumer("c").pull().wait(300) is None
        n = len(ticks)
    finally:
        stop.set()
        t.join(10)
    assert n > 0, "the waiting thread held the GIL"


def test_second_waiter_is_refused_not_deadlocked(topic):
    f = topic.consumer("c").pull()
    errors = []
    started = threading.Event()

    def waiter():
        started.set()
        f.wait(1000)

    t = threading.Thread(target=waiter)
    t.start()
    started.wait(10)
    time.sleep(0.1)
    try:
        f.wait(0)
    except api.Exception as e:
        errors.append(str(e))
    t.join(10)
    assert not t.is_alive()
    assert errors == [] or "another thread" in errors[0]


def test_concurrent_large_pushes_from_threads_finish(topic):
    """Driver threads drop pushed numpy buffers while Python threads push and flush: the
    releases must not need the GIL (this deadlocked with inline releases)."""
    a = np.ones(8 << 20, dtype=np.uint8)
    p = topic.producer(max_num_batches=1)
    failures = []

    def pusher(k):
        try:
            for i in range(10):
                p.push({"k": k, "i": i}, [a, a[: 1 << 20]])
            if p.flush().wait(120_000) is not True:
                failures.append("flush timed out")
        except Exception as e:  # noqa: BLE001 - reported below
            failures.append(repr(e))

    threads = [threading.Thread(target=pusher, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert not any(t.is_alive() for t in threads), "a pushing thread hung"
    assert failures == []
    c = topic.consumer("c", data_selector=api.NoDataSelector)
    assert len([wait(c.pull()) for _ in range(30)]) == 30


def test_loading_the_extension_keeps_pythons_signal_handlers():
    """libinfinipath (linked by Debian's libfabric) replaces SIGINT/SIGTERM handlers with one
    that exits with status 1 when the extension loads; a fresh interpreter must still get
    KeyboardInterrupt on SIGINT and run its SIGTERM handler."""
    import subprocess
    import sys

    code = (
        "import os, signal, sys\n"
        "got = []\n"
        "signal.signal(signal.SIGTERM, lambda *a: got.append('term'))\n"
        "import diaspora_stream.api\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "try:\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    signal.pause() if hasattr(signal, 'pause') else None\n"
        "except KeyboardInterrupt:\n"
        "    got.append('int')\n"
        "print(','.join(got))\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "term,int"
