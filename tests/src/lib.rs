//! Conformance suite
