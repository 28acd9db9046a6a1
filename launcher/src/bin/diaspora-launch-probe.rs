//! `diaspora-launch-probe`: does everything a diaspora server does at start under `srun` or
//! `mpirun`, without a server: detect rank and size, plan and pin progress threads, join
//! the run directory, publish fake addresses, and (rank 0) write a group file in the
//! server's shape. For tests and for checking a cluster's launcher setup:
//!
//! ```text
//! srun -n 2 diaspora-launch-probe --run-dir R --group-file G --expect-ranks 2
//! mpirun -n 2 diaspora-launch-probe --run-dir R --group-file G --expect-ranks 2
//! ```
//!
//! Exit 0 when the group formed; 1 with the error on stderr otherwise.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use diaspora_launcher::pin::{self, PinRequest, Sharing};
use diaspora_launcher::{
    detect, write_file_atomic, BoxError, ProcessEnv, RankEntry, RendezvousOptions, RunDir,
};
use serde_json::json;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Launcher rendezvous probe (a server start without the server)"
)]
struct Args {
    /// Run directory shared by all ranks.
    #[arg(long)]
    run_dir: PathBuf,
    /// Group file rank 0 writes.
    #[arg(long)]
    group_file: PathBuf,
    /// Refuse to start unless the launcher says this many ranks.
    #[arg(long)]
    expect_ranks: Option<u32>,
    /// Progress threads per rank.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// How the node's CPUs are shared among local ranks.
    #[arg(long, value_enum, default_value_t = SharingArg::Auto)]
    sharing: SharingArg,
    /// Rendezvous deadline in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    timeout_ms: u64,
    /// How long a rank 0 of 1 looks for other copies, in milliseconds (0: no check).
    #[arg(long, default_value_t = 1_000)]
    singleton_grace_ms: u64,
    /// Run id (overrides the launcher's; also read from DIASPORA_RUN_ID).
    #[arg(long, env = "DIASPORA_RUN_ID")]
    run_id: Option<String>,
    /// Test hook: this rank records a failure instead of publishing.
    #[arg(long)]
    fail_rank: Option<u32>,
    /// Test hook: this rank joins, then sleeps forever without publishing.
    #[arg(long)]
    hang_rank: Option<u32>,
    /// Rank and size from MPI_COMM_WORLD (checked against the launcher's variables), and
    /// the rendezvous through MPI collectives instead of the run directory.
    #[cfg(feature = "mpi")]
    #[arg(long)]
    mpi: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SharingArg {
    Auto,
    Split,
    Whole,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut rank = None;
    match run(&args, &mut rank) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let who = rank.map(|r| format!("rank {r}: ")).unwrap_or_default();
            // One write, so the lines of ranks sharing a stderr never interleave mid-line.
            diaspora_launcher::say!("diaspora-launch-probe: {who}{e}");
            if rank.is_some() && rank == args.fail_rank {
                // The rank that fails on purpose exits last: mpirun tears the job down as soon
                // as one rank exits non-zero, which could cut off the others' reports of it.
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
            ExitCode::FAILURE
        }
    }
}

fn random_hex(bytes: usize) -> Result<String, std::io::Error> {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

fn run(args: &Args, rank_out: &mut Option<u32>) -> Result<(), BoxError> {
    let launch = detect(&ProcessEnv)?;
    #[cfg(feature = "mpi")]
    let world = if args.mpi {
        Some(diaspora_launcher::mpi::MpiWorld::init()?)
    } else {
        None
    };
    #[cfg(feature = "mpi")]
    let launch = match &world {
        Some(w) => w.launch(&launch)?,
        None => launch,
    };
    *rank_out = Some(launch.rank);
    if let Some(n) = args.expect_ranks {
        launch.expect_size(n)?;
    }
    println!("launch: {launch}");
    let layout = pin::plan_for_this_process(PinRequest {
        threads: args.threads,
        local_rank: launch.local_rank.unwrap_or(0),
        local_size: launch.local_size.unwrap_or(1),
        sharing: match args.sharing {
            SharingArg::Auto => Sharing::Auto,
            SharingArg::Split => Sharing::Split,
            SharingArg::Whole => Sharing::Whole,
        },
    })?;
    println!("layout: rank {}: {layout}", launch.rank);
    let opts = RendezvousOptions {
        timeout: Duration::from_millis(args.timeout_ms),
        singleton_grace: Duration::from_millis(args.singleton_grace_ms),
        run_id: args.run_id.clone(),
        ..RendezvousOptions::default()
    };
    #[cfg(feature = "mpi")]
    if let Some(w) = &world {
        let mine = if args.fail_rank == Some(launch.rank) {
            Err("injected failure (--fail-rank)".to_string())
        } else {
            Ok(json!({ "threads": pin_threads(&layout, args.threads)? }))
        };
        let group = w.rendezvous(&launch, mine, &mut group_writer(args.group_file.clone()))?;
        println!(
            "group: rank {} sees {} ranks at epoch {} (mpi)",
            launch.rank,
            group.ranks.len(),
            group.epoch
        );
        return Ok(());
    }
    let mut rd = RunDir::join(&args.run_dir, &launch, opts)?;
    if args.fail_rank == Some(launch.rank) {
        rd.fail("injected failure (--fail-rank)")?;
        return Err("failed on purpose (--fail-rank)".into());
    }
    if args.hang_rank == Some(launch.rank) {
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    rd.publish(json!({ "threads": pin_threads(&layout, args.threads)? }))?;
    let group = rd.wait(&mut group_writer(args.group_file.clone()))?;
    println!(
        "group: rank {} sees {} ranks at epoch {} (run {:?})",
        launch.rank,
        group.ranks.len(),
        group.epoch,
        rd.run_id()
    );
    Ok(())
}

/// The progress threads pin themselves and "open an endpoint" each: (cpu, fake address).
fn pin_threads(layout: &pin::Layout, n: usize) -> Result<Vec<serde_json::Value>, BoxError> {
    let host = diaspora_launcher::hostname();
    let pid = std::process::id();
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let layout = layout.clone();
            let fake = format!("{host}:{pid}:{i}");
            std::thread::spawn(move || -> Result<serde_json::Value, pin::PinError> {
                let cpu = layout.pin_current(i)?;
                let address: String = fake.bytes().map(|b| format!("{b:02x}")).collect();
                Ok(json!({"core": cpu, "address": address}))
            })
        })
        .collect();
    let mut published = Vec::new();
    for t in threads {
        match t.join() {
            Ok(r) => published.push(r?),
            Err(_) => return Err("a progress thread panicked".into()),
        }
    }
    Ok(published)
}

/// Writes the group file in the server's shape (`diaspora-proto`'s `GroupFile`), 0600.
fn group_writer(group_file: PathBuf) -> impl FnMut(u64, &[RankEntry]) -> Result<(), BoxError> {
    move |epoch: u64, ranks: &[RankEntry]| -> Result<(), BoxError> {
        let ranks: Vec<_> = ranks
            .iter()
            .map(|e| {
                json!({"rank": e.rank, "host": e.process.host, "pid": e.process.pid,
                       "threads": e.payload.get("threads").cloned().unwrap_or(json!([]))})
            })
            .collect();
        let g = json!({"version": 1, "epoch": epoch, "token": random_hex(16)?,
                       "provider": "probe", "ranks": ranks});
        let mut text = serde_json::to_vec_pretty(&g)?;
        text.push(b'\n');
        write_file_atomic(&group_file, &text, 0o600)?;
        Ok(())
    }
}
