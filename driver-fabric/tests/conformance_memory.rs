//! The conformance suite run through the fabric driver's logic (producer batching, sequence
//! numbers, retries, fetch pipeline, acknowledgements) over an in-memory service: checks the
//! client without a network. The same suite runs against a real `diaspora-server` in
//! `conformance_server.rs`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::memory::MemoryService;
use diaspora_api::Driver;
use diaspora_conformance::DriverFixture;
use diaspora_driver_fabric::FabricDriver;

struct MemoryFixture {
    service: Arc<MemoryService>,
}

impl MemoryFixture {
    fn new() -> Self {
        // `Driver::new("fabric", ..)` must find a driver of that name (bad_input::unknown_driver).
        diaspora_api::register_driver("fabric", |_| {
            Ok(Arc::new(FabricDriver::with_service(
                MemoryService::new(),
                Duration::from_secs(10),
            )))
        });
        MemoryFixture {
            service: MemoryService::new(),
        }
    }
}

impl DriverFixture for MemoryFixture {
    fn driver(&self) -> Driver {
        Driver::from_backend(
            "fabric",
            Arc::new(FabricDriver::with_service(
                self.service.clone(),
                Duration::from_secs(10),
            )),
        )
    }

    fn name(&self) -> &str {
        "fabric"
    }
}

diaspora_conformance::conformance_tests!(MemoryFixture::new());
