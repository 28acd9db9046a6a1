"""Python push/pull rates, next to diaspora-bench (Rust) for the same workloads.

    python python/bench/bench.py [--root DIR] [--events N] [--large N] [--copy]

Workloads (files driver, one partition, a fresh topic each):
  small: N events with metadata {"x": i, "name": "bob"} and no data; push all, flush; then a
         consumer pulls all (metadata only) and acknowledges the last one.
  large: N events of one 64 MiB float64 numpy array (the same array each time, zero copy);
         push all, flush; then a consumer pulls them and reads each with numpy.frombuffer.
         --copy pushes a.tobytes() instead (one copy per push), to show what zero copy saves.
Prints rates and the process's peak RSS (ru_maxrss) before and after each phase.
"""

import argparse
import os
import resource
import shutil
import tempfile
import time

import numpy as np

from diaspora_stream.api import Driver, NoDataSelector

MIB = 1 << 20


def peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def topic_in(root, name):
    d = Driver(backend="files", options={"root_path": root})
    d.create_topic(name, options={"num_partitions": 1})
    return d.open_topic(name)


def small(root, n):
    t = topic_in(root, "small")
    p = t.producer()
    md = {"x": 0, "name": "bob"}
    start = time.perf_counter()
    for i in range(n):
        md["x"] = i
        p.push(md)
    assert p.flush().wait(600_000) is True
    push_s = time.perf_counter() - start
    c = t.consumer("c", data_selector=NoDataSelector)
    start = time.perf_counter()
    ev = None
    for _ in range(n):
        ev = c.pull().wait(600_000)
        _ = ev.metadata
    ev.acknowledge()
    pull_s = time.perf_counter() - start
    print(f"small  push {n / push_s:12,.0f} events/s   pull {n / pull_s:12,.0f} events/s   (n={n})")


def large(root, n, copy):
    a = np.random.default_rng(0).random(64 * MIB // 8)
    t = topic_in(root, "large")
    p = t.producer()
    before = peak_mib()
    start = time.perf_counter()
    for i in range(n):
        p.push({"i": i}, a.tobytes() if copy else a)
    assert p.flush().wait(600_000) is True
    push_s = time.perf_counter() - start
    after_push = peak_mib()
    c = t.consumer("c")
    start = time.perf_counter()
    total = 0.0
    for _ in range(n):
        ev = c.pull().wait(600_000)
        total += np.frombuffer(ev.data[0], dtype=np.float64)[-1]
        del ev
    pull_s = time.perf_counter() - start
    after_pull = peak_mib()
    gib = n * 64 / 1024
    mode = "copy (tobytes)" if copy else "zero copy"
    print(
        f"large  push {gib / push_s:6.2f} GiB/s  pull {gib / pull_s:6.2f} GiB/s   "
        f"peak RSS {before:.0f} -> {after_push:.0f} (push) -> {after_pull:.0f} MiB (pull)   "
        f"[{mode}, {n} x 64 MiB]"
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--root", default=None, help="where topics go (default: a temp dir in $TMPDIR)")
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--large", type=int, default=16)
    ap.add_argument("--copy", action="store_true")
    args = ap.parse_args()
    root = args.root or tempfile.mkdtemp(prefix="diaspora-pybench-")
    try:
        if args.events:
            small(os.path.join(root, "s"), args.events)
        if args.large:
            large(os.path.join(root, "l"), args.large, args.copy)
    finally:
        if args.root is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
