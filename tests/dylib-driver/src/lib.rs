//! A driver library for the tests of dynamic driver loading (`diaspora_api::dylib`).
//!
//! It exports the files driver under two names: `dyfiles`, loaded with
//! `Driver::new("dyfiles:/path/to/libdiaspora_dylib_driver.so", ...)`, and
//! `diaspora_dylib_driver`, found by `Driver::new("diaspora_dylib_driver", ...)` as
//! `libdiaspora_dylib_driver.so` on `LD_LIBRARY_PATH`. Its copy of the files driver is its own
//! (the host need not link one), which is what a third-party driver library looks like.

use std::sync::Arc;

use diaspora_api::{DriverBackend, Result, Value};
use diaspora_driver_files::{FilesDriver, FilesDriverOptions};

fn create(options: &Value) -> Result<Arc<dyn DriverBackend>> {
    Ok(Arc::new(FilesDriver::new(FilesDriverOptions::from_json(
        options,
    )?)?))
}

diaspora_api::export_drivers!("dyfiles" => create, "diaspora_dylib_driver" => create);
