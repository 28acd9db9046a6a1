//! The conformance suite through the whole fabric driver (RemoteService: group file, Hello
//! with token, staging buffers read by RDMA, landing buffers written by RDMA) against a
//! stand-in server on `shm`. See `common/wire_server.rs`.

mod common;

use common::wire_server::WireServer;
use diaspora_api::{json, Driver};
use diaspora_conformance::DriverFixture;

struct WireFixture {
    _dir: tempfile::TempDir,
    server: WireServer,
}

impl WireFixture {
    fn new(provider: &str) -> Self {
        diaspora_driver_fabric::register();
        let dir = tempfile::tempdir().expect("tempdir");
        let server = WireServer::start(provider, dir.path());
        WireFixture { _dir: dir, server }
    }
}

impl DriverFixture for WireFixture {
    fn driver(&self) -> Driver {
        Driver::new(
            "fabric",
            json!({"group_file": self.server.group_file, "timeout_ms": 10_000}),
        )
        .expect("fabric driver")
    }

    fn name(&self) -> &str {
        "fabric"
    }
}

diaspora_conformance::conformance_tests!(WireFixture::new("shm"));
