//! The conformance suite through the fabric driver with `inline_progress` (callers drive
//! progress while they wait) against a real `diaspora-server` process on `tcp;ofi_rxm`
//! loopback, one server per case. Known issue 14 (a self-deadlock in this mode) was found by
//! this suite.

mod common;

use common::fixture::ServerFixture;
use diaspora_api::json;

diaspora_conformance::conformance_tests!(ServerFixture::new(
    "tcp;ofi_rxm",
    json!({"inline_progress": true})
));
