"""Drivers loaded from a library at run time: Driver(backend="name:lib.so").

scripts/python.sh builds tests/dylib-driver (the files driver exported as "dyfiles" from its
own cdylib) and passes its path in DIASPORA_TEST_DYLIB; without it (pytest run by hand) the
test is skipped."""

import os

import pytest

import diaspora_stream.api as api
from diaspora_stream.api import Driver
from conftest import wait

LIB = os.environ.get("DIASPORA_TEST_DYLIB")


@pytest.mark.skipif(not LIB, reason="DIASPORA_TEST_DYLIB not set (scripts/python.sh sets it)")
def test_driver_from_a_library(root):
    assert os.path.exists(LIB), LIB
    d = Driver(backend=f"dyfiles:{LIB}", options={"root_path": root})
    assert d.name == "dyfiles"
    assert "dyfiles" in api.registered_drivers()
    d.create_topic("t")
    t = d.open_topic("t")
    p = t.producer()
    wait(p.push({"via": "dylib"}, b"payload"))
    ev = wait(t.consumer("c").pull())
    assert ev.metadata == {"via": "dylib"} and bytes(ev.data[0]) == b"payload"
    with pytest.raises(api.Exception, match="nosuch"):
        Driver(backend=f"nosuch:{LIB}", options={"root_path": root})
