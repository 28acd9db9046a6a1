//! The conformance suite through the kafka driver against a real tansu broker on loopback
//! (memory storage), one broker per case.

mod common;

use common::{Broker, Storage};
use diaspora_api::Driver;
use diaspora_conformance::DriverFixture;

struct KafkaFixture {
    broker: Broker,
}

impl KafkaFixture {
    fn new() -> Self {
        // Registered before the first `driver()`: a case may list the drivers first.
        diaspora_driver_kafka::register();
        KafkaFixture {
            broker: Broker::start(Storage::Memory),
        }
    }
}

impl DriverFixture for KafkaFixture {
    fn driver(&self) -> Driver {
        self.broker.driver()
    }

    fn name(&self) -> &str {
        "kafka"
    }
}

diaspora_conformance::conformance_tests!(KafkaFixture::new());
