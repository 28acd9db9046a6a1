//! `diaspora-bench compare`: the same workloads on every driver in one run.
//!
//! For each driver (files, the in-memory baseline, fabric over `tcp;ofi_rxm`, fabric over
//! `shm`, and, when asked, the kafka driver on a tansu broker) it runs the three standard cases ((a) 1M × 30 B metadata, (b) 64 KiB data, (c)
//! 1 KiB data) with 1..P producers and as many consumers, and a sweep of data sizes (0 B to
//! 1 MiB) with one producer and one consumer. Each row is a fresh set of processes:
//! `diaspora-bench ranks` with `--rank i --size 2P` (producers and consumers are separate
//! processes; the memory driver, which lives in one process, runs P pushing threads and one
//! consumer in one process), and for fabric rows a fresh `diaspora-server` on 127.0.0.1
//! (`--storage memory` by default), stopped after the row, whose peak RSS is reported too.
//! Kafka rows (`--drivers ...,kafka`) start a fresh tansu broker (`memory://`) per row the
//! same way.
//! Before the rows it measures raw `fi_read` on each fabric provider with
//! `diaspora-fabric-bench`, and prints produce bandwidth of case (b) against raw `fi_read` of
//! 64 KiB (the size of one event's data segment) with 1 and 8 reads in flight.
//!
//! Output in `--out`: `results.csv` (one line per row), `raw_fi_read.csv`, `results.json`
//! (everything, with latency histograms), `results.md` (tables), `throughput.svg` (produce and
//! consume MiB/s against event size per driver) and `latency.svg` (push latency CDF per
//! driver for cases a, b, c).

mod output;
mod procs;
mod raw;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{json, Value};

pub use raw::RawRead;

/// Compares drivers: one command, every driver, the standard cases and a size sweep.
#[derive(Parser, Debug, Clone)]
#[command(name = "diaspora-bench compare")]
pub struct CompareArgs {
    /// Where results, tables and plots are written (created if needed).
    #[arg(long, default_value = "compare-results")]
    pub out: PathBuf,

    /// Drivers, comma-separated: files, memory, fabric-tcp, fabric-shm, kafka (the kafka
    /// driver on a tansu broker the command starts per row; not in the default list: tansu's
    /// fetch path is about 22 MB/s, so its rows take minutes).
    #[arg(
        long,
        default_value = "files,memory,fabric-tcp,fabric-shm",
        value_delimiter = ','
    )]
    pub drivers: Vec<String>,

    /// Producer counts of the standard cases (each with as many consumers), comma-separated.
    #[arg(long, default_value = "1,2", value_delimiter = ',')]
    pub procs: Vec<u32>,

    /// Data sizes of the sweep in bytes (one producer, one consumer), comma-separated; empty
    /// for none.
    #[arg(
        long,
        default_value = "0,64,1024,16384,65536,262144,1048576",
        value_delimiter = ','
    )]
    pub sizes: Vec<String>,

    /// Multiplies every event count (e.g. 0.001 for a smoke test).
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,

    /// Bytes of data per sweep point (before --scale): events = this / size, within
    /// 200..=200000.
    #[arg(long, default_value_t = 512 << 20)]
    pub sweep_bytes: u64,

    /// Seconds per case of the raw fi_read measurement.
    #[arg(long, default_value_t = 0.5)]
    pub raw_secs: f64,

    /// The diaspora-server binary (default: next to this one).
    #[arg(long)]
    pub server: Option<PathBuf>,

    /// The diaspora-fabric-bench binary (default: next to this one).
    #[arg(long)]
    pub fabric_bench: Option<PathBuf>,

    /// The tansu broker binary of kafka rows (default: $TANSU, /opt/tansu/bin/tansu, PATH).
    #[arg(long)]
    pub tansu: Option<PathBuf>,

    /// Storage of the fabric rows' server: memory (the network path alone) or files.
    #[arg(long, default_value = "memory")]
    pub server_storage: String,

    /// Progress threads of the fabric rows' server.
    #[arg(long, default_value_t = 1)]
    pub server_threads: u32,

    /// Scratch space for topics, servers and run directories (default: <out>/scratch);
    /// each row's is removed after it.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,

    /// A row still running after this many seconds is killed and reported as failed.
    #[arg(long, default_value_t = 600)]
    pub row_timeout_s: u64,
}

/// A driver of the comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The files driver.
    Files,
    /// The in-memory baseline (`diaspora-bench`'s `memory` driver).
    Memory,
    /// The fabric driver and a diaspora-server over tcp;ofi_rxm.
    FabricTcp,
    /// The fabric driver and a diaspora-server over shm.
    FabricShm,
    /// The kafka driver and a tansu broker (memory storage).
    Kafka,
}

impl Kind {
    fn parse(s: &str) -> Result<Kind, String> {
        match s.trim() {
            "files" => Ok(Kind::Files),
            "memory" => Ok(Kind::Memory),
            "fabric-tcp" => Ok(Kind::FabricTcp),
            "fabric-shm" => Ok(Kind::FabricShm),
            "kafka" => Ok(Kind::Kafka),
            other => Err(format!(
                "unknown driver {other:?} (files, memory, fabric-tcp, fabric-shm, kafka)"
            )),
        }
    }

    /// Its name in the results.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Files => "files",
            Kind::Memory => "memory",
            Kind::FabricTcp => "fabric-tcp",
            Kind::FabricShm => "fabric-shm",
            Kind::Kafka => "kafka",
        }
    }

    /// The libfabric provider of a fabric row.
    pub fn provider(self) -> Option<&'static str> {
        match self {
            Kind::FabricTcp => Some("tcp;ofi_rxm"),
            Kind::FabricShm => Some("shm"),
            _ => None,
        }
    }
}

/// One row to run.
#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    /// Driver.
    pub kind: Kind,
    /// "a", "b", "c" or "sweep".
    pub case: &'static str,
    /// Producers (and consumers).
    pub procs: u32,
    /// Events in all.
    pub events: u64,
    /// Metadata bytes per event.
    pub metadata_size: usize,
    /// Data bytes per event.
    pub data_size: usize,
}

fn scaled(n: u64, scale: f64, min: u64) -> u64 {
    ((n as f64 * scale).round() as u64).max(min)
}

/// Every row of a comparison, in run order (driver by driver).
pub fn plan(a: &CompareArgs) -> Result<Vec<Spec>, String> {
    if !(a.scale > 0.0 && a.scale.is_finite()) {
        return Err(format!("--scale {} must be positive", a.scale));
    }
    let kinds = a
        .drivers
        .iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| Kind::parse(s))
        .collect::<Result<Vec<_>, _>>()?;
    if kinds.is_empty() {
        return Err("--drivers names no driver".into());
    }
    if a.procs.contains(&0) {
        return Err("--procs must be positive".into());
    }
    let sizes = a
        .sizes
        .iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.trim()
                .parse::<usize>()
                .map_err(|_| format!("--sizes: {s:?} is not a byte count"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut rows = Vec::new();
    for &kind in &kinds {
        for &procs in &a.procs {
            for (case, events, data) in [
                ("a", 1_000_000u64, 0usize),
                ("b", 20_000, 65536),
                ("c", 200_000, 1024),
            ] {
                rows.push(Spec {
                    kind,
                    case,
                    procs,
                    events: scaled(events, a.scale, 2 * u64::from(procs)),
                    metadata_size: 30,
                    data_size: data,
                });
            }
        }
        for &size in &sizes {
            let n = (a.sweep_bytes / (size as u64 + 30)).clamp(200, 200_000);
            rows.push(Spec {
                kind,
                case: "sweep",
                procs: 1,
                events: scaled(n, a.scale, 2),
                metadata_size: 30,
                data_size: size,
            });
        }
    }
    Ok(rows)
}

/// What one row measured.
#[derive(Clone, Debug, Default)]
pub struct Row {
    /// Driver name.
    pub driver: String,
    /// Provider of a fabric row.
    pub provider: Option<String>,
    /// Storage behind the driver.
    pub storage: String,
    /// Case.
    pub case: String,
    /// Producer processes (memory: pushing threads).
    pub producers: u32,
    /// Consumer processes.
    pub consumers: u32,
    /// Events asked for.
    pub events: u64,
    /// Metadata bytes per event.
    pub metadata_size: usize,
    /// Data bytes per event.
    pub data_size: usize,
    /// The `produce` object of the ranks' results file.
    pub produce: Value,
    /// The `consume` object.
    pub consume: Value,
    /// The server's peak RSS, KiB.
    pub server_rss_kib: Option<u64>,
    /// Why the row failed.
    pub error: Option<String>,
}

impl Row {
    /// A number of the produce or consume object.
    pub fn num(&self, phase: &str, key: &str) -> Option<f64> {
        let v = if phase == "produce" {
            &self.produce
        } else {
            &self.consume
        };
        v.get(key).and_then(Value::as_f64)
    }
}

fn sibling(name: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("finding this binary: {e}"))?;
    Ok(exe.with_file_name(name))
}

fn need(path: &Path, build: &str) -> Result<(), String> {
    if path.exists() {
        Ok(())
    } else {
        Err(format!(
            "{} is missing: build it first ({build}), or pass its path",
            path.display()
        ))
    }
}

/// Runs the comparison; an error if any part failed (after writing every result).
pub fn run(a: &CompareArgs) -> Result<(), String> {
    let started = Instant::now();
    let specs = plan(a)?;
    let bench = std::env::current_exe().map_err(|e| format!("finding this binary: {e}"))?;
    let fabric = specs.iter().any(|s| s.kind.provider().is_some());
    let server = match &a.server {
        Some(p) => p.clone(),
        None => sibling("diaspora-server")?,
    };
    let fabric_bench = match &a.fabric_bench {
        Some(p) => p.clone(),
        None => sibling("diaspora-fabric-bench")?,
    };
    if fabric {
        need(&server, "cargo build -p diaspora-server")?;
        need(
            &fabric_bench,
            "cargo build -p diaspora-rpc --bin diaspora-fabric-bench",
        )?;
    }
    let tansu = if specs.iter().any(|s| s.kind == Kind::Kafka) {
        let t = a.tansu.clone().or_else(procs::find_tansu).ok_or(
            "kafka rows need the tansu broker: install it (scripts/install-deps.sh), set TANSU or pass --tansu",
        )?;
        need(&t, "bash scripts/install-deps.sh")?;
        Some(t)
    } else {
        None
    };
    if !["memory", "files"].contains(&a.server_storage.as_str()) {
        return Err(format!(
            "--server-storage {:?}: memory or files",
            a.server_storage
        ));
    }
    let logs = a.out.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| format!("creating {}: {e}", logs.display()))?;
    let scratch = a.data_dir.clone().unwrap_or_else(|| a.out.join("scratch"));
    let timeout = Duration::from_secs(a.row_timeout_s);
    println!(
        "diaspora-bench compare: {} rows ({}), output in {}",
        specs.len(),
        a.drivers.join(", "),
        a.out.display()
    );

    // Raw fi_read, once per fabric provider, before the rows.
    let mut raws: Vec<RawRead> = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    let mut providers: Vec<&str> = specs.iter().filter_map(|s| s.kind.provider()).collect();
    providers.dedup();
    for p in providers {
        let log = logs.join(format!("raw-{}.log", p.replace(';', "_")));
        match raw::measure(&fabric_bench, p, a.raw_secs, &log, timeout) {
            Ok(r) => {
                for x in r.iter().filter(|x| x.size == 65536) {
                    println!(
                        "  raw fi_read {p} 64 KiB, {} in flight: {:.3} GiB/s",
                        x.qd, x.raw_gib
                    );
                }
                raws.extend(r);
            }
            Err(e) => {
                eprintln!("  raw fi_read {p}: {e}");
                errors.push(format!("raw fi_read {p}: {e}"));
            }
        }
    }

    let mut rows = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let id = format!(
            "{i:03}-{}-{}-{}B-p{}",
            spec.kind.name(),
            spec.case,
            spec.data_size,
            spec.procs
        );
        let row_logs = logs.join(&id);
        let dir = scratch.join(&id);
        let bins = Bins {
            bench: &bench,
            server: &server,
            tansu: tansu.as_deref(),
        };
        let row = run_row(a, spec, &bins, &dir, &row_logs, &id, timeout);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                eprintln!("warning: could not remove {}: {e}", dir.display());
            }
        }
        println!("{}", output::line(&row));
        if let Some(e) = &row.error {
            errors.push(format!("{id}: {e}"));
        }
        rows.push(row);
    }
    let _ = std::fs::remove_dir(&scratch);
    let meta = json!({
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "started_unix_s": crate::report::unix_ns() / 1_000_000_000 - started.elapsed().as_secs(),
        "seconds": started.elapsed().as_secs_f64(),
        "host": diaspora_launcher::hostname(),
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "server_storage": a.server_storage,
        "server_threads": a.server_threads,
        "scale": a.scale,
    });
    output::write_all(&a.out, &meta, &rows, &raws, &errors)?;
    for line in output::ratios(&rows, &raws) {
        println!("{line}");
    }
    println!(
        "diaspora-bench compare: {} rows in {:.1} s; wrote results.csv, raw_fi_read.csv, results.json, results.md, throughput.svg, latency.svg in {}",
        rows.len(),
        started.elapsed().as_secs_f64(),
        a.out.display()
    );
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} part(s) failed:\n  {}",
            errors.len(),
            errors.join("\n  ")
        ))
    }
}

/// The programs a row starts.
struct Bins<'a> {
    bench: &'a Path,
    server: &'a Path,
    tansu: Option<&'a Path>,
}

fn run_row(
    a: &CompareArgs,
    spec: &Spec,
    bins: &Bins<'_>,
    dir: &Path,
    logs: &Path,
    id: &str,
    timeout: Duration,
) -> Row {
    let memory = spec.kind == Kind::Memory;
    let mut row = Row {
        driver: spec.kind.name().into(),
        provider: spec.kind.provider().map(str::to_owned),
        storage: match spec.kind {
            Kind::Files => "files".into(),
            Kind::Memory => "none".into(),
            Kind::Kafka => "tansu-memory".into(),
            _ => a.server_storage.clone(),
        },
        case: spec.case.into(),
        producers: spec.procs,
        consumers: if memory { 1 } else { spec.procs },
        events: spec.events,
        metadata_size: spec.metadata_size,
        data_size: spec.data_size,
        ..Row::default()
    };
    if let Err(e) = (|| -> Result<(), String> {
        for d in [dir, logs] {
            std::fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
        }
        let deadline = Instant::now() + timeout;
        let mut server = match spec.kind.provider() {
            Some(p) => Some(procs::Server::start(
                bins.server,
                p,
                &a.server_storage,
                a.server_threads,
                &dir.join("server"),
                &logs.join("server.log"),
                Duration::from_secs(30),
            )?),
            None => None,
        };
        let mut broker = match (spec.kind, bins.tansu) {
            (Kind::Kafka, Some(t)) => Some(procs::Broker::start(
                t,
                &logs.join("tansu.log"),
                Duration::from_secs(30),
            )?),
            (Kind::Kafka, None) => return Err("no tansu binary".into()),
            _ => None,
        };
        let results = dir.join("results.json");
        let mut args: Vec<String> = vec![
            "--events".into(),
            spec.events.to_string(),
            "--metadata-size".into(),
            spec.metadata_size.to_string(),
            "--data-size".into(),
            spec.data_size.to_string(),
            "--run-dir".into(),
            dir.join("run").to_string_lossy().into_owned(),
            "--run-id".into(),
            id.into(),
            "--results".into(),
            results.to_string_lossy().into_owned(),
            "--rendezvous-timeout-s".into(),
            timeout.as_secs().to_string(),
            "--topic".into(),
            "compare".into(),
        ];
        let size = match spec.kind {
            Kind::Files => {
                let root = dir.join("files");
                std::fs::create_dir_all(&root)
                    .map_err(|e| format!("creating {}: {e}", root.display()))?;
                args.extend([
                    "--driver".into(),
                    "files".into(),
                    "--driver.root_path".into(),
                ]);
                args.push(root.to_string_lossy().into_owned());
                2 * spec.procs
            }
            Kind::Memory => {
                args.extend(["--driver".into(), "memory".into()]);
                args.extend(["--push-threads".into(), spec.procs.to_string()]);
                1
            }
            Kind::FabricTcp | Kind::FabricShm => {
                let g = server
                    .as_ref()
                    .map(|s| s.group_file.clone())
                    .unwrap_or_default();
                args.extend([
                    "--driver".into(),
                    "fabric".into(),
                    "--driver.group_file".into(),
                    g.to_string_lossy().into_owned(),
                ]);
                2 * spec.procs
            }
            Kind::Kafka => {
                let addr = broker.as_ref().map(|b| b.addr.clone()).unwrap_or_default();
                args.extend([
                    "--driver".into(),
                    "kafka".into(),
                    "--driver.bootstrap_servers".into(),
                    addr,
                    // tansu 0.6.0 cannot fetch from inside a record batch.
                    "--driver.resume".into(),
                    "scan".into(),
                ]);
                2 * spec.procs
            }
        };
        if size > 1 {
            args.extend(["--producers".into(), spec.procs.to_string()]);
        }
        let mut ranks = procs::Ranks::spawn(bins.bench, size, &args, logs)?;
        let ran = ranks.wait(deadline);
        row.server_rss_kib = server
            .as_ref()
            .and_then(procs::Server::peak_rss_kib)
            .or_else(|| broker.as_ref().and_then(procs::Broker::peak_rss_kib));
        if let Some(b) = broker.as_mut() {
            b.stop();
        }
        let stopped = server.as_mut().map_or(Ok(()), procs::Server::stop);
        ran?;
        let text = std::fs::read_to_string(&results)
            .map_err(|e| format!("reading {}: {e}", results.display()))?;
        let v: Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", results.display()))?;
        row.produce = v.get("produce").cloned().unwrap_or(Value::Null);
        row.consume = v.get("consume").cloned().unwrap_or(Value::Null);
        stopped
    })() {
        row.error = Some(e);
    }
    row
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &str) -> CompareArgs {
        CompareArgs::parse_from(format!("compare {extra}").split_whitespace())
    }

    #[test]
    fn plan_has_three_cases_per_producer_count_and_a_sweep_per_driver() {
        let rows = plan(&args("")).expect("ok");
        assert_eq!(rows.len(), 4 * (3 * 2 + 7));
        assert_eq!(rows[0].events, 1_000_000);
        assert!(rows
            .iter()
            .any(|r| r.case == "sweep" && r.data_size == 1 << 20));
        let tiny = plan(&args(
            "--scale 0.0001 --drivers files --sizes 0,65536 --procs 2",
        ))
        .expect("ok");
        assert_eq!(tiny.len(), 3 + 2);
        assert!(tiny.iter().all(|r| r.events >= 2));
        assert!(plan(&args("--drivers nope")).is_err());
        let kafka = plan(&args("--drivers kafka --sizes 0 --procs 1")).expect("ok");
        assert_eq!(kafka.len(), 3 + 1);
        assert!(kafka.iter().all(|r| r.kind == Kind::Kafka));
        assert!(plan(&args("--scale 0")).is_err());
        assert!(plan(&args("--sizes x")).is_err());
    }
}
