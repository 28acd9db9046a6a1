//! The conformance suite through the fabric driver against a real `diaspora-server` process
//! (temporary data directory, `tcp;ofi_rxm` on loopback), one server per case.

mod common;

use common::fixture::ServerFixture;
use diaspora_api::json;

diaspora_conformance::conformance_tests!(ServerFixture::new("tcp;ofi_rxm", json!({})));
