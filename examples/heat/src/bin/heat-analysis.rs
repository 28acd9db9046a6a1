//! `heat-analysis`: consumes the simulation's events, fetches data only for every k-th step
//! (optionally a column window through a strided view), reassembles each step from all ranks,
//! prints and logs global min/max/mean per completed step, writes PNGs, and acknowledges only
//! what belongs to completed steps. Restarted with the same `--consumer` and `--log`, it
//! neither loses nor repeats a step: steps already in the log are acknowledged, not repeated.

use clap::Parser;
use diaspora_api::{ConsumerOptions, DataDescriptor, Metadata};
use diaspora_example_heat::meta::SlabMeta;
use diaspora_example_heat::tracker::{Slab, Tracker};
use diaspora_example_heat::{open_driver, png, HeatError};
use std::collections::BTreeSet;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// Files driver: the topics' root directory.
    #[arg(long)]
    root: Option<String>,
    /// Fabric driver (feature `fabric`): the servers' group file.
    #[arg(long)]
    group_file: Option<String>,
    /// Topic.
    #[arg(long, default_value = "heat")]
    topic: String,
    /// Consumer name (its acknowledgements survive a restart).
    #[arg(long, default_value = "heat-analysis")]
    consumer: String,
    /// Analyse only steps that are a multiple of this.
    #[arg(long, default_value_t = 20)]
    k: u64,
    /// Only columns C0:C1 (a strided view: one block per row).
    #[arg(long)]
    cols: Option<String>,
    /// Completed steps, one line each, appended and fsynced before acknowledging.
    #[arg(long)]
    log: String,
    /// Write a PNG of the field at these steps (comma-separated).
    #[arg(long, value_delimiter = ',')]
    png_steps: Vec<u64>,
    /// Directory of the PNGs.
    #[arg(long, default_value = ".")]
    png_dir: String,
    /// Give up after this long without an event.
    #[arg(long, default_value_t = 60_000)]
    timeout_ms: i64,
}

fn io(path: &str) -> impl FnOnce(std::io::Error) -> HeatError + '_ {
    move |source| HeatError::Io {
        path: path.to_string(),
        source,
    }
}

fn parse_cols(s: &str) -> Result<(u64, u64), HeatError> {
    let bad = || HeatError::BadArgument(format!("--cols {s:?}: want C0:C1 with C0 < C1"));
    let (a, b) = s.split_once(':').ok_or_else(bad)?;
    let (a, b) = (
        a.parse::<u64>().map_err(|_| bad())?,
        b.parse::<u64>().map_err(|_| bad())?,
    );
    if a >= b {
        return Err(bad());
    }
    Ok((a, b))
}

/// The line logged and printed for a completed step.
fn line(step: u64, (min, max, mean): (f64, f64, f64)) -> String {
    format!("step {step} min {min:.15e} max {max:.15e} mean {mean:.15e}")
}

fn run(args: Args) -> Result<(), HeatError> {
    if args.k == 0 {
        return Err(HeatError::BadArgument("--k must be >= 1".into()));
    }
    let cols = args.cols.as_deref().map(parse_cols).transpose()?;
    let done: BTreeSet<u64> = match std::fs::read_to_string(&args.log) {
        Ok(s) => s
            .lines()
            .filter_map(|l| l.strip_prefix("step ")?.split(' ').next()?.parse().ok())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
        Err(e) => return Err(io(&args.log)(e)),
    };
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.log)
        .map_err(io(&args.log))?;

    let driver = open_driver(&args.root, &args.group_file)?;
    // The simulation may not have created the topic yet.
    let deadline = Instant::now() + Duration::from_millis(args.timeout_ms.max(0) as u64);
    while !driver.topic_exists(&args.topic)? {
        if Instant::now() > deadline {
            return Err(HeatError::BadArgument(format!(
                "no topic {:?} after {} ms",
                args.topic, args.timeout_ms
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let topic = driver.open_topic(&args.topic)?;
    let k = args.k;
    // Steps logged by an earlier run: their data is not read again (see Tracker::resuming).
    let logged = Arc::new(done);
    let mut tracker = Tracker::resuming(logged.iter().copied());
    let options = ConsumerOptions {
        // Data by metadata: nothing for unselected steps, a column window if asked.
        data_selector: Some(Arc::new(move |m: &Metadata, d: &DataDescriptor| {
            let Ok(meta) = m
                .json()
                .map_err(|_| ())
                .and_then(|v| SlabMeta::from_json(v).map_err(|_| ()))
            else {
                return DataDescriptor::null();
            };
            if meta.step % k != 0 || logged.contains(&meta.step) || d.size() != meta.data_len() {
                return DataDescriptor::null();
            }
            match cols {
                None => d.clone(),
                Some((c0, c1)) => {
                    let (c0, c1) = (c0.min(meta.nx), c1.min(meta.nx));
                    let rows = meta.row1 - meta.row0;
                    d.strided_view(c0 * 8, rows, (c1 - c0) * 8, (meta.nx - (c1 - c0)) * 8)
                        .unwrap_or_else(|_| DataDescriptor::null())
                }
            }
        })),
        ..ConsumerOptions::default()
    };
    let consumer = topic.consumer_with(&args.consumer, options)?;
    let pngs: BTreeSet<u64> = args.png_steps.iter().copied().collect();
    loop {
        let Some(event) = consumer.pull().wait(args.timeout_ms)? else {
            return Err(HeatError::BadArgument(format!(
                "no event within {} ms (incomplete steps: {:?})",
                args.timeout_ms,
                tracker.incomplete()
            )));
        };
        if event.is_no_more_events() {
            break;
        }
        let meta = SlabMeta::from_json(event.metadata().json()?)?;
        let partition = event.partition();
        // Unselected, or complete (a duplicate, or logged by an earlier run that was killed
        // between two partitions' acks): acknowledged once the events before it are.
        if meta.step % k != 0 || tracker.is_complete(meta.step) {
            tracker.skip(partition, event);
        } else {
            let width = match cols {
                None => meta.nx,
                Some((c0, c1)) => c1.min(meta.nx) - c0.min(meta.nx),
            };
            let want = (meta.row1 - meta.row0) * width * 8;
            let got = event.data().len();
            if got != want {
                return Err(HeatError::DataSize {
                    step: meta.step,
                    rank: meta.rank,
                    got,
                    want,
                });
            }
            let values = event
                .data()
                .to_vec()
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
                .collect();
            if let Some(step) = tracker.add(
                partition,
                event,
                Slab {
                    meta: meta.clone(),
                    values,
                },
            ) {
                // (A logged step is complete from the start: `add` never returns it.)
                if pngs.contains(&step.step) {
                    let width = (step.field().len() as u64 / meta.ny.max(1)) as usize;
                    let path = format!("{}/heat-step{:06}.png", args.png_dir, step.step);
                    let tmp = format!("{path}.tmp");
                    let bytes = png::encode(width, meta.ny as usize, &step.field());
                    std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
                    std::fs::rename(&tmp, &path).map_err(io(&path))?;
                }
                let l = line(step.step, step.stats());
                writeln!(log, "{l}").map_err(io(&args.log))?;
                log.sync_data().map_err(io(&args.log))?;
                let mut out = std::io::stdout().lock();
                writeln!(out, "{l}")
                    .and_then(|()| out.flush())
                    .map_err(io("stdout"))?;
            }
        }
        for e in tracker.ackable() {
            e.acknowledge()?;
        }
    }
    let left = tracker.incomplete();
    if !left.is_empty() {
        return Err(HeatError::BadArgument(format!(
            "end of stream with incomplete steps {left:?}"
        )));
    }
    Ok(())
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("heat-analysis: error: {e}");
        std::process::exit(1);
    }
}
