"""heat-analysis in Python (numpy + diaspora_stream.api): the same selection, statistics,
log format, PNGs and exactly-once acknowledgements as the Rust `heat-analysis`.

    python3 examples/heat/analysis.py --root DIR --log steps.log [--k 20] [--cols C0:C1]
        [--png-steps 0,100] [--png-dir .] [--consumer heat-analysis-py] [--topic heat]

A step is complete when all `ranks` slabs of it arrived; it is then appended to the log
(fsync), printed, and only then are events acknowledged, and only up to the first event of
each partition that belongs to a step still incomplete. Steps already in the log (a restart)
are acknowledged without being logged again.
"""

import argparse
import os
import struct
import sys
import time
import zlib
from collections import defaultdict, deque

import numpy as np

from diaspora_stream.api import Driver


def rust_e(x):
    """Formats like Rust's `{:.15e}` (exponent without padding or '+')."""
    m, e = ("%.15e" % x).split("e")
    return f"{m}e{int(e)}"


def line(step, lo, hi, mean):
    return f"step {step} min {rust_e(lo)} max {rust_e(hi)} mean {rust_e(mean)}"


def colour(v):
    t = np.clip(np.nan_to_num(v), 0.0, 1.0)
    lo = (t * 2.0 * 255.0).astype(np.uint8)
    hi = ((1.0 - t) * 2.0 * 255.0).astype(np.uint8)
    low = t < 0.5
    r = np.where(low, lo, 255).astype(np.uint8)
    g = np.where(low, lo, hi).astype(np.uint8)
    b = np.where(low, 255, hi).astype(np.uint8)
    return np.stack([r, g, b], axis=-1)


def write_png(path, field):
    h, w = field.shape
    rgb = colour(field)
    raw = b"".join(b"\x00" + rgb[r].tobytes() for r in range(h))

    def chunk(kind, data):
        c = struct.pack(">I", len(data)) + kind + data
        return c + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(png)
    os.replace(tmp, path)


def check_meta(m):
    keys = ("step", "rank", "ranks", "nx", "ny", "row0", "row1")
    if not all(isinstance(m.get(k), int) and m[k] >= 0 for k in keys) or m.get("dtype") != "f64le":
        raise ValueError(f"bad metadata: {m}")
    if not (m["rank"] < m["ranks"] and m["row0"] < m["row1"] <= m["ny"] and m["nx"] >= 1):
        raise ValueError(f"inconsistent bounds: {m}")
    return m


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", required=True, help="files driver root directory")
    p.add_argument("--topic", default="heat")
    p.add_argument("--consumer", default="heat-analysis-py")
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--cols", default=None, help="C0:C1, a strided view of these columns")
    p.add_argument("--log", required=True)
    p.add_argument("--png-steps", default="")
    p.add_argument("--png-dir", default=".")
    p.add_argument("--timeout-ms", type=int, default=60000)
    a = p.parse_args(argv)
    if a.k < 1:
        sys.exit("analysis.py: --k must be >= 1")
    cols = None
    if a.cols:
        c0, c1 = (int(x) for x in a.cols.split(":"))
        if c0 >= c1:
            sys.exit(f"analysis.py: --cols {a.cols!r}: want C0:C1 with C0 < C1")
        cols = (c0, c1)
    pngs = {int(s) for s in a.png_steps.split(",") if s}
    done = set()
    if os.path.exists(a.log):
        with open(a.log) as f:
            done = {int(l.split()[1]) for l in f if l.startswith("step ")}
    log = open(a.log, "a")

    def selector(metadata, descriptor):
        m = metadata
        if m.get("step", 1) % a.k != 0:
            return None
        if cols is None:
            return descriptor
        nx, rows = m["nx"], m["row1"] - m["row0"]
        c0, c1 = min(cols[0], nx), min(cols[1], nx)
        return descriptor.make_stride_view(
            offset=c0 * 8, num_blocks=rows, block_size=(c1 - c0) * 8, gap_size=(nx - (c1 - c0)) * 8
        )

    driver = Driver(backend="files", options={"root_path": a.root})
    deadline = time.monotonic() + a.timeout_ms / 1000
    while not driver.topic_exists(a.topic):  # the simulation may not have created it yet
        if time.monotonic() > deadline:
            sys.exit(f"analysis.py: no topic {a.topic!r} after {a.timeout_ms} ms")
        time.sleep(0.05)
    topic = driver.open_topic(a.topic)
    consumer = topic.consumer(a.consumer, data_selector=selector)
    pending = defaultdict(dict)  # step -> rank -> (row0, values)
    completed = set()
    queues = defaultdict(deque)  # partition -> (event, step or None)
    while True:
        event = consumer.pull().wait(a.timeout_ms)
        if event is None:
            sys.exit(f"analysis.py: no event within {a.timeout_ms} ms (incomplete: {sorted(pending)})")
        if event.event_id is None:
            break
        m = check_meta(event.metadata)
        if m["step"] % a.k != 0:
            queues[event.partition].append((event, None))
        else:
            step = m["step"]
            queues[event.partition].append((event, step))
            width = m["nx"] if cols is None else min(cols[1], m["nx"]) - min(cols[0], m["nx"])
            buf = b"".join(bytes(d) for d in event.data)
            want = (m["row1"] - m["row0"]) * width * 8
            if len(buf) != want:
                sys.exit(f"analysis.py: step {step} rank {m['rank']}: {len(buf)} bytes, want {want}")
            if step not in completed:
                values = np.frombuffer(buf, dtype="<f8").reshape(m["row1"] - m["row0"], width)
                pending[step].setdefault(m["rank"], (m["row0"], values))
                if len(pending[step]) == m["ranks"]:
                    parts = [v for _, v in sorted(pending.pop(step).values(), key=lambda x: x[0])]
                    completed.add(step)
                    field = np.concatenate(parts)
                    if step not in done:
                        if step in pngs:
                            write_png(os.path.join(a.png_dir, f"heat-py-step{step:06}.png"), field)
                        l = line(step, field.min(), field.max(), field.mean())
                        log.write(l + "\n")
                        log.flush()
                        os.fsync(log.fileno())
                        print(l, flush=True)
        for q in queues.values():
            last = None
            while q and (q[0][1] is None or q[0][1] in completed):
                last = q.popleft()[0]
            if last is not None:
                last.acknowledge()
    if pending:
        sys.exit(f"analysis.py: end of stream with incomplete steps {sorted(pending)}")


if __name__ == "__main__":
    main()
