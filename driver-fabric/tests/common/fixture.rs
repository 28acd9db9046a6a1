//! The conformance suite's fixture for a real server (not in `server.rs`, which other
//! crates' tests include by path without the conformance crate).
#![allow(dead_code)]

/// A conformance-suite fixture: a real `diaspora-server` on a temporary data directory, and
/// fabric drivers for it with `extra` driver options (a JSON object) beside the group file.
pub struct ServerFixture {
    _dir: tempfile::TempDir,
    server: super::server::ServerProcess,
    extra: diaspora_api::Value,
}

impl ServerFixture {
    pub fn new(provider: &str, extra: diaspora_api::Value) -> Self {
        diaspora_driver_fabric::register();
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let group = dir.path().join("group.json");
        let server = super::server::ServerProcess::start(provider, &data, &group);
        ServerFixture {
            _dir: dir,
            server,
            extra,
        }
    }
}

impl diaspora_conformance::DriverFixture for ServerFixture {
    fn driver(&self) -> diaspora_api::Driver {
        let mut options =
            diaspora_api::json!({"group_file": self.server.group_file, "timeout_ms": 10_000});
        if let (Some(o), Some(extra)) = (options.as_object_mut(), self.extra.as_object()) {
            o.extend(extra.clone());
        }
        diaspora_api::Driver::new("fabric", options).expect("fabric driver")
    }

    fn name(&self) -> &str {
        "fabric"
    }
}
