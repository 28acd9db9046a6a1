//! The files driver (work in progress skeleton).
use std::sync::Arc;
use diaspora_api::{DriverBackend, Error, Result, Value};

/// Registers the "files" driver in the API's registry (idempotent).
pub fn register() {
    diaspora_api::register_driver("files", create);
}

fn create(_options: &Value) -> Result<Arc<dyn DriverBackend>> {
    Err(Error::Unsupported("files driver not yet implemented"))
}
