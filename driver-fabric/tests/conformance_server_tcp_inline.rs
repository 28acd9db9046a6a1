//! The conformance suite through the fabric driver with `inline_progress` (callers drive
//! progress while they wait) against a real `diaspora-server` process on `tcp;ofi_rxm`
//! loopback, one server per case. Known issue 14 (a self-deadlock in this mode) was found by
//! this suite.

mod common;

use common::server::ServerProcess;
use diaspora_api::{json, Driver};
use diaspora_conformance::DriverFixture;

struct ServerFixture {
    _dir: tempfile::TempDir,
    server: ServerProcess,
}

impl ServerFixture {
    fn new(provider: &str) -> Self {
        diaspora_driver_fabric::register();
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let group = dir.path().join("group.json");
        let server = ServerProcess::start(provider, &data, &group);
        ServerFixture { _dir: dir, server }
    }
}

impl DriverFixture for ServerFixture {
    fn driver(&self) -> Driver {
        Driver::new(
            "fabric",
            json!({
                "group_file": self.server.group_file,
                "timeout_ms": 10_000,
                "inline_progress": true,
            }),
        )
        .expect("fabric driver")
    }

    fn name(&self) -> &str {
        "fabric"
    }
}

diaspora_conformance::conformance_tests!(ServerFixture::new("tcp;ofi_rxm"));
