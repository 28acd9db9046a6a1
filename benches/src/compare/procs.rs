//! Child processes of a comparison: `diaspora-server`s on 127.0.0.1 and benchmark ranks.
//! Every wait is bounded; a child still running at its deadline is killed and reaped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Variables a launcher sets; removed from every child so that a comparison started by
/// `srun` or `mpirun` does not make its servers and ranks think they are part of that job.
const LAUNCHER_PREFIXES: [&str; 5] = ["OMPI_", "PMI_", "PMIX_", "SLURM_", "MPI_LOCAL"];

/// `cmd` without the launcher's variables.
pub fn scrubbed(program: &Path) -> Command {
    let mut c = Command::new(program);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if LAUNCHER_PREFIXES.iter().any(|p| k.starts_with(p)) || k == "DIASPORA_RUN_ID" {
            c.env_remove(k.as_ref());
        }
    }
    c
}

/// The last `n` lines of a log file, for error messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Waits for `child` until `deadline`; kills and reaps it past that.
pub fn wait_until(child: &mut Child, deadline: Instant) -> Result<ExitStatus, String> {
    loop {
        match diaspora_fabric::try_reap_child(child) {
            Ok(Some(st)) => return Ok(st),
            Ok(None) => {}
            Err(e) => return Err(format!("waiting for pid {}: {e}", child.id())),
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = diaspora_fabric::reap_child(child);
            return Err(format!(
                "pid {} still running at its deadline: killed",
                child.id()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Peak resident set size of a live process, KiB (`VmHWM`).
pub fn peak_rss_kib_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// A `diaspora-server` started for one row; stopped (SIGTERM, then SIGKILL past 10 s) by
/// [`Server::stop`] or on drop.
pub struct Server {
    child: Option<Child>,
    /// Its group file.
    pub group_file: PathBuf,
    log: PathBuf,
}

impl Server {
    /// Starts `bin --storage S --provider P` under `dir` and waits (at most `timeout`) for its
    /// group file.
    pub fn start(
        bin: &Path,
        provider: &str,
        storage: &str,
        threads: u32,
        dir: &Path,
        log: &Path,
        timeout: Duration,
    ) -> Result<Server, String> {
        let group_file = dir.join("group.json");
        let data = dir.join("data");
        std::fs::create_dir_all(&data).map_err(|e| format!("creating {}: {e}", data.display()))?;
        let out =
            std::fs::File::create(log).map_err(|e| format!("creating {}: {e}", log.display()))?;
        let err = out
            .try_clone()
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let child = scrubbed(bin)
            .arg("--data-dir")
            .arg(&data)
            .arg("--group-file")
            .arg(&group_file)
            .args(["--provider", provider, "--storage", storage])
            .args(["--threads", &threads.to_string()])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        let mut server = Server {
            child: Some(child),
            group_file,
            log: log.to_owned(),
        };
        let deadline = Instant::now() + timeout;
        loop {
            if std::fs::metadata(&server.group_file).is_ok_and(|m| m.len() > 0) {
                return Ok(server);
            }
            let exited = server
                .child
                .as_mut()
                .and_then(|c| diaspora_fabric::try_reap_child(c).ok().flatten());
            if let Some(st) = exited {
                server.child = None;
                return Err(format!(
                    "diaspora-server ({provider}) exited ({st}) before writing its group file:\n{}",
                    tail(&server.log, 10)
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "diaspora-server ({provider}) wrote no group file within {timeout:?}:\n{}",
                    tail(&server.log, 10)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its peak RSS so far, KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        self.pid().and_then(peak_rss_kib_of)
    }

    /// SIGTERM, then waits 10 s (SIGKILL past that). An error if it did not stop cleanly.
    pub fn stop(&mut self) -> Result<(), String> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = child.id() as libc::pid_t;
        // SAFETY: kill has no memory-safety preconditions; the pid is our unreaped child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let st = wait_until(&mut child, Instant::now() + Duration::from_secs(10))?;
        if st.success() {
            Ok(())
        } else {
            Err(format!(
                "diaspora-server exited with {st} on SIGTERM:\n{}",
                tail(&self.log, 10)
            ))
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            // SIGKILL leaves its shm names behind: removed before the reap.
            let _ = diaspora_fabric::reap_child(&mut c);
        }
    }
}

/// Benchmark ranks of one row; killed and reaped on drop.
pub struct Ranks {
    children: Vec<(Child, PathBuf)>,
}

impl Ranks {
    /// Spawns one `bench ranks --rank i --size n ARGS` per rank, each logging to
    /// `<log_dir>/rank-<i>.log`.
    pub fn spawn(bench: &Path, n: u32, args: &[String], log_dir: &Path) -> Result<Ranks, String> {
        let mut ranks = Ranks {
            children: Vec::new(),
        };
        for i in 0..n {
            let log = log_dir.join(format!("rank-{i}.log"));
            let out = std::fs::File::create(&log)
                .map_err(|e| format!("creating {}: {e}", log.display()))?;
            let err = out
                .try_clone()
                .map_err(|e| format!("{}: {e}", log.display()))?;
            let child = scrubbed(bench)
                .arg("ranks")
                .args(["--rank", &i.to_string(), "--size", &n.to_string()])
                .args(args)
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .map_err(|e| format!("starting {}: {e}", bench.display()))?;
            ranks.children.push((child, log));
        }
        Ok(ranks)
    }

    /// Waits for every rank until `deadline`; the first failure names its rank and shows
    /// the end of its log.
    pub fn wait(&mut self, deadline: Instant) -> Result<(), String> {
        let mut first_err = None;
        for (i, (child, log)) in self.children.iter_mut().enumerate() {
            let r = wait_until(child, deadline);
            let failed = match r {
                Ok(st) if st.success() => None,
                Ok(st) => Some(format!("rank {i} exited with {st}")),
                Err(e) => Some(format!("rank {i}: {e}")),
            };
            if let (Some(why), None) = (failed, &first_err) {
                first_err = Some(format!("{why}:\n{}", tail(log, 8)));
            }
        }
        self.children.clear();
        first_err.map_or(Ok(()), Err)
    }
}

impl Drop for Ranks {
    fn drop(&mut self) {
        for (c, _) in &mut self.children {
            let _ = c.kill();
            let _ = diaspora_fabric::reap_child(c);
        }
    }
}

/// A tansu Kafka-protocol broker on a free 127.0.0.1 port (`memory://` storage), started for
/// one kafka row; killed on [`Broker::stop`] or on drop (its storage is in memory: nothing to
/// drain).
pub struct Broker {
    child: Option<Child>,
    /// `127.0.0.1:port`.
    pub addr: String,
}

impl Broker {
    /// Starts `tansu broker` with its log in `log`, and waits (at most `timeout`) until it
    /// accepts connections.
    pub fn start(bin: &Path, log: &Path, timeout: Duration) -> Result<Broker, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("finding a free port: {e}"))?
            .port();
        let url = format!("tcp://127.0.0.1:{port}");
        let out =
            std::fs::File::create(log).map_err(|e| format!("creating {}: {e}", log.display()))?;
        let err = out
            .try_clone()
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let child = scrubbed(bin)
            .args(["broker", "--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        let mut broker = Broker {
            child: Some(child),
            addr: format!("127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + timeout;
        loop {
            if std::net::TcpStream::connect(&broker.addr).is_ok() {
                return Ok(broker);
            }
            let exited = broker
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(st) = exited {
                broker.child = None;
                return Err(format!("tansu exited ({st}) at start:\n{}", tail(log, 10)));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "tansu did not listen on {} within {timeout:?}:\n{}",
                    broker.addr,
                    tail(log, 10)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its peak RSS so far, KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        self.child.as_ref().map(Child::id).and_then(peak_rss_kib_of)
    }

    /// Kills and reaps it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The tansu binary: `$TANSU`, else `/opt/tansu/bin/tansu` (where `scripts/install-deps.sh`
/// puts it), else `tansu` on the PATH.
pub fn find_tansu() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TANSU").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let opt = Path::new("/opt/tansu/bin/tansu");
    if opt.is_file() {
        return Some(opt.to_path_buf());
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("tansu"))
            .find(|c| c.is_file())
    })
}
