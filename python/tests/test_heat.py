"""The worked example (examples/heat): the Python analysis gives the Rust analysis's numbers,
survives a kill -9 mid-run without losing or repeating a step, and writes a PNG that decodes."""

import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
BIN = os.path.join(TARGET, "debug")
ANALYSIS_PY = os.path.join(REPO, "examples", "heat", "analysis.py")
STEPS, EVERY, K = 120, 5, 10


def binaries():
    subprocess.run(["cargo", "build", "-q", "-p", "diaspora-example-heat"], cwd=REPO, check=True, timeout=600)
    return os.path.join(BIN, "heat-sim"), os.path.join(BIN, "heat-analysis")


def sim_cmd(sim, root, delay_ms):
    args = [sim, "--root", root, "--nx", "40", "--ny", "30", "--steps", str(STEPS), "--every", str(EVERY),
            "--delay-ms", str(delay_ms)]
    if shutil.which("mpirun") and not os.environ.get("DIASPORA_SKIP_MPI_TESTS"):
        return ["mpirun", "-n", "2", "--oversubscribe", "--bind-to", "none", *args, "--expect-ranks", "2"]
    return args


def steps(log):
    out = {}
    if os.path.exists(log):
        for line in open(log):
            if not line.endswith("\n"):
                break  # a line being written while we read
            f = line.split()
            out.setdefault(int(f[1]), []).append((float(f[3]), float(f[5]), float(f[7])))
    return out


def same_numbers(a, b):
    assert sorted(a) == sorted(b)
    for s in a:
        (x,), (y,) = a[s], b[s]
        assert x[0] == y[0] and x[1] == y[1], f"step {s}: min/max {x} != {y}"
        assert abs(x[2] - y[2]) <= 1e-12 * max(abs(x[2]), 1e-300), f"step {s}: mean {x} != {y}"


def env():
    e = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    return e


def py_analysis(root, log, consumer, *extra):
    return [sys.executable, ANALYSIS_PY, "--root", root, "--log", log, "--consumer", consumer, "--k", str(K),
            "--timeout-ms", "30000", *extra]


def test_python_analysis_killed_mid_run_matches_the_rust_analysis(tmp_path):
    sim, rust = binaries()
    root = str(tmp_path / "topics")
    proc = subprocess.Popen(sim_cmd(sim, root, 20), env=env())
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(os.path.join(root, "heat")):
            assert time.monotonic() < deadline, "no topic"
            time.sleep(0.02)
        log = str(tmp_path / "py.log")
        first = subprocess.Popen(py_analysis(root, log, "py"), stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while len(steps(log)) < 3:
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.005)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        assert len(steps(log)) < STEPS // K + 1, "not killed mid-run"
        second = subprocess.run(py_analysis(root, log, "py", "--png-steps", "120", "--png-dir", str(tmp_path)),
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 0, second.stderr
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    got = steps(log)
    assert sorted(got) == list(range(0, STEPS + 1, K))
    assert all(len(v) == 1 for v in got.values()), got

    rlog = str(tmp_path / "rust.log")
    r = subprocess.run([rust, "--root", root, "--log", rlog, "--consumer", "rust", "--k", str(K)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    same_numbers(got, steps(rlog))

    # A column window through a strided view: the same numbers in both languages too.
    plog, rlog2 = str(tmp_path / "pyw.log"), str(tmp_path / "rustw.log")
    p = subprocess.run(py_analysis(root, plog, "pyw", "--cols", "5:25"), capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    r = subprocess.run([rust, "--root", root, "--log", rlog2, "--consumer", "rw", "--k", str(K), "--cols", "5:25"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    same_numbers(steps(plog), steps(rlog2))
    assert steps(plog) != got

    # The PNG decodes: 40 x 30 RGB, valid CRCs, the zlib stream inflates to the image size.
    b = open(tmp_path / "heat-py-step000120.png", "rb").read()
    assert b[:8] == b"\x89PNG\r\n\x1a\n"
    i, chunks = 8, {}
    while i < len(b):
        (n,) = struct.unpack(">I", b[i:i + 4])
        kind, data = b[i + 4:i + 8], b[i + 8:i + 8 + n]
        assert struct.unpack(">I", b[i + 8 + n:i + 12 + n])[0] == zlib.crc32(kind + data)
        chunks[kind] = data
        i += 12 + n
    w, h = struct.unpack(">II", chunks[b"IHDR"][:8])
    assert (w, h) == (40, 30)
    assert len(zlib.decompress(chunks[b"IDAT"])) == h * (1 + 3 * w)


def test_the_rust_png_of_the_readme_inflates_with_zlib():
    # examples/heat/heat-step000400.png was written by heat-analysis (stored deflate blocks);
    # an independent decoder (zlib) must inflate it to 128 x 96 RGB rows with filter 0.
    b = open(os.path.join(REPO, "examples", "heat", "heat-step000400.png"), "rb").read()
    (n,) = struct.unpack(">I", b[8:12])
    w, h = struct.unpack(">II", b[16:24])
    i = 8 + 12 + n
    (m,) = struct.unpack(">I", b[i:i + 4])
    assert b[i + 4:i + 8] == b"IDAT"
    raw = zlib.decompress(b[i + 8:i + 8 + m])
    assert (w, h) == (128, 96) and len(raw) == h * (1 + 3 * w)
    assert all(raw[r * (1 + 3 * w)] == 0 for r in range(h))
