//! Helpers shared by the integration tests.
pub mod fixture;
pub mod memory;
pub mod server;
pub mod wire_server;

#[allow(dead_code)]
/// Providers to test on: `DIASPORA_TEST_PROVIDER` (comma-separated), else tcp and shm.
pub fn providers() -> Vec<String> {
    match std::env::var("DIASPORA_TEST_PROVIDER") {
        Ok(v) if !v.trim().is_empty() => v.split(',').map(|s| s.trim().to_owned()).collect(),
        _ => vec!["tcp;ofi_rxm".to_owned(), "shm".to_owned()],
    }
}
