//! A real `diaspora-server` process on a temporary data directory and loopback.
//!
//! The binary is the workspace's `target/<profile>/diaspora-server` (next to this test's
//! `deps/` directory); if it is missing it is built with `cargo build -p diaspora-server`.
//! The process is killed (SIGKILL) and reaped when the value drops.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The server binary, built once if needed.
pub fn server_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("current exe");
        // target/<profile>/deps/<test> -> target/<profile>/diaspora-server
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target profile directory")
            .to_path_buf();
        let bin = profile_dir.join("diaspora-server");
        if !bin.exists() {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "-p", "diaspora-server", "--bin", "diaspora-server"])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .expect("run cargo build -p diaspora-server");
            assert!(status.success(), "cargo build -p diaspora-server failed");
        }
        assert!(bin.exists(), "{} not found", bin.display());
        bin
    })
    .clone()
}

pub struct ServerProcess {
    child: Option<Child>,
    pub provider: String,
    pub data_dir: PathBuf,
    pub group_file: PathBuf,
    pub log: PathBuf,
}

impl ServerProcess {
    /// Starts a server on `data_dir` and waits (at most 30 s) for its group file. A server
    /// that exits at once because its shm endpoint name is busy (EBUSY from libfabric 1.17's
    /// shm provider, seen under parallel test load) is started again, up to 3 times.
    pub fn start(provider: &str, data_dir: &Path, group_file: &Path) -> ServerProcess {
        let mut tries = 0;
        loop {
            match Self::try_start(provider, data_dir, group_file) {
                Ok(s) => return s,
                Err(log) if tries < 3 && log.contains("Device or resource busy") => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(log) => panic!("diaspora-server exited: {log}"),
            }
        }
    }

    fn try_start(
        provider: &str,
        data_dir: &Path,
        group_file: &Path,
    ) -> Result<ServerProcess, String> {
        let log = data_dir.with_extension(format!("log-{}", rand_suffix()));
        let old_epoch = read_epoch(group_file);
        let child = Command::new(server_binary())
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--group-file")
            .arg(group_file)
            .args(["--provider", provider, "--threads", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("server log file"))
            .spawn()
            .expect("spawn diaspora-server");
        let mut s = ServerProcess {
            child: Some(child),
            provider: provider.into(),
            data_dir: data_dir.into(),
            group_file: group_file.into(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let epoch = read_epoch(group_file);
            if epoch.is_some() && epoch != old_epoch {
                return Ok(s);
            }
            if let Some(Ok(Some(status))) = s.child.as_mut().map(diaspora_fabric::try_reap_child) {
                s.child = None;
                return Err(format!(
                    "{status}: {}",
                    std::fs::read_to_string(&s.log).unwrap_or_default()
                ));
            }
            assert!(
                Instant::now() < deadline,
                "diaspora-server wrote no group file within 30 s: {}",
                std::fs::read_to_string(&s.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `kill -9` and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            // SIGKILL leaves its shm names behind: removed before the reap.
            let _ = diaspora_fabric::reap_child(&mut c);
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn read_epoch(group_file: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(group_file).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("epoch")?.as_u64()
}

fn rand_suffix() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    )
}
