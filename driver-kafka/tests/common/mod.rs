//! A tansu broker process for the tests: its own free loopback port and storage directory,
//! killed (SIGKILL) when dropped, also when the test panics.

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use diaspora_api::{json, Driver};

/// Where the broker's records live.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Storage {
    /// `memory://`: lost when the broker stops.
    Memory,
    /// `sqlite://<dir>/tansu.db`: survives a `kill -9`.
    Sqlite,
}

/// The tansu binary: `$TANSU`, else `/opt/tansu/bin/tansu`, else `tansu` on the PATH.
pub fn tansu_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("TANSU").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let opt = Path::new("/opt/tansu/bin/tansu");
    if opt.exists() {
        return opt.to_path_buf();
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let c = dir.join("tansu");
            if c.is_file() {
                return c;
            }
        }
    }
    panic!(
        "tansu broker not found: set TANSU, install it in /opt/tansu/bin (scripts/install-deps.sh) \
         or put it on the PATH"
    );
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

/// A running tansu broker.
pub struct Broker {
    child: Option<Child>,
    /// `127.0.0.1:port`.
    pub addr: String,
    port: u16,
    storage: Storage,
    dir: tempfile::TempDir,
}

impl Broker {
    /// Starts a broker and waits until it accepts connections.
    pub fn start(storage: Storage) -> Broker {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let mut b = Broker {
            child: None,
            addr: format!("127.0.0.1:{port}"),
            port,
            storage,
            dir,
        };
        b.spawn();
        b
    }

    fn spawn(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let engine = match self.storage {
            Storage::Memory => "memory://tansu/".to_owned(),
            // Relative to the broker's cwd (the storage dir): tansu 0.6.0 joins even an
            // absolute sqlite path onto its cwd.
            Storage::Sqlite => "sqlite://tansu.db".to_owned(),
        };
        let log = std::fs::File::create(self.dir.path().join("tansu.log")).expect("log file");
        let child = Command::new(tansu_binary())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", &engine])
            .current_dir(self.dir.path())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start tansu");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect(&self.addr).is_ok() {
                return;
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!("tansu exited at start ({status}): {}", self.log());
                }
            }
            assert!(
                Instant::now() < deadline,
                "tansu did not listen within 20 s: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The broker's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tansu.log")).unwrap_or_default()
    }

    /// `kill -9`s the broker and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills the broker and starts it again on the same port and storage.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Driver options for this broker.
    pub fn options(&self) -> diaspora_api::Value {
        // tansu 0.6.0 cannot fetch from inside a record batch: resume by scanning.
        json!({"bootstrap_servers": self.addr, "timeout_ms": 10_000, "resume": "scan"})
    }

    /// A new driver instance on this broker.
    pub fn driver(&self) -> Driver {
        diaspora_driver_kafka::register();
        match Driver::new("kafka", self.options()) {
            Ok(d) => d,
            Err(e) => panic!("kafka driver: {e}; broker log:\n{}", self.log()),
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}
