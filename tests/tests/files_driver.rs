//! The conformance suite run against the files driver, each case in a fresh temporary
//! directory.

use diaspora_api::{json, Driver};
use diaspora_conformance::DriverFixture;

struct FilesFixture {
    dir: tempfile::TempDir,
}

impl FilesFixture {
    fn new() -> Self {
        diaspora_driver_files::register();
        FilesFixture {
            dir: tempfile::tempdir().expect("create temporary directory"),
        }
    }
}

impl DriverFixture for FilesFixture {
    fn driver(&self) -> Driver {
        Driver::new("files", json!({"root_path": self.dir.path()}))
            .expect("files driver on a temporary directory")
    }

    fn name(&self) -> &str {
        "files"
    }
}

diaspora_conformance::conformance_tests!(FilesFixture::new());
