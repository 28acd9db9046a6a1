//! The conformance suite through the fabric driver against a real `diaspora-server` process
//! (temporary data directory, `shm`), one server per case.

mod common;

use common::fixture::ServerFixture;
use diaspora_api::json;

diaspora_conformance::conformance_tests!(ServerFixture::new("shm", json!({})));
