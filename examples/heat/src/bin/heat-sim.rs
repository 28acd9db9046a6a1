//! `heat-sim`: 2-D heat diffusion over MPI ranks; every `--every` steps each rank pushes its
//! slab (zero copy from the simulation's buffer) with its bounds and statistics.

use clap::Parser;
use diaspora_api::{json, Bytes, EventId, Future};
use diaspora_example_heat::comm::Comm;
use diaspora_example_heat::field::{self, SlabBytes};
use diaspora_example_heat::meta::SlabMeta;
use diaspora_example_heat::{open_driver, HeatError};
use std::sync::Arc;

#[derive(Parser)]
struct Args {
    /// Files driver: the topics' root directory.
    #[arg(long)]
    root: Option<String>,
    /// Fabric driver (feature `fabric`): the servers' group file.
    #[arg(long)]
    group_file: Option<String>,
    /// Topic (created by rank 0 if missing, one partition per rank).
    #[arg(long, default_value = "heat")]
    topic: String,
    /// Global columns.
    #[arg(long, default_value_t = 64)]
    nx: usize,
    /// Global rows (split across ranks).
    #[arg(long, default_value_t = 64)]
    ny: usize,
    /// Steps to run.
    #[arg(long, default_value_t = 100)]
    steps: u64,
    /// Push one event per rank every this many steps (step 0 included).
    #[arg(long, default_value_t = 10)]
    every: u64,
    /// Sleep this long after each step (to watch a live analysis).
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Number of ranks the launcher must have started (refuse N silent singletons).
    #[arg(long)]
    expect_ranks: Option<usize>,
}

fn comm() -> Box<dyn Comm> {
    #[cfg(feature = "mpi")]
    if let Some(universe) = mpi::initialize() {
        let world = universe.world();
        return Box::new(diaspora_example_heat::comm::Mpi {
            _universe: universe,
            world,
        });
    }
    Box::new(diaspora_example_heat::comm::Single)
}

fn run(args: Args) -> Result<(), HeatError> {
    let comm = comm();
    let (rank, ranks) = (comm.rank(), comm.size());
    if let Some(n) = args.expect_ranks {
        if n != ranks {
            return Err(HeatError::BadArgument(format!(
                "this is rank {rank} of {ranks} but {n} ranks were expected (wrong launcher or a build without the `mpi` feature?)"
            )));
        }
    }
    if args.nx == 0 || args.ny < ranks || args.every == 0 {
        return Err(HeatError::BadArgument(
            "need nx >= 1, ny >= ranks, every >= 1".into(),
        ));
    }
    let (nx, ny) = (args.nx, args.ny);
    let driver = open_driver(&args.root, &args.group_file)?;
    if rank == 0 && !driver.topic_exists(&args.topic)? {
        driver.create_topic(&args.topic, json!({ "num_partitions": ranks }))?;
    }
    comm.barrier();
    let topic = driver.open_topic(&args.topic)?;
    let producer = topic.producer()?;
    let partitions = topic.partitions()?.len().max(1);

    let (row0, row1) = field::bounds(ny, rank, ranks);
    let rows = row1 - row0;
    let init: Vec<f64> = (0..rows * nx)
        .map(|i| field::initial(ny, nx, row0 + i / nx, i % nx))
        .collect();
    let mut bufs = [Arc::new(init), Arc::new(vec![0.0; rows * nx])];
    let mut pushed: [Option<Future<EventId>>; 2] = [None, None];
    let mut above = vec![field::TOP_EDGE; nx];
    let mut below = vec![field::COLD_EDGE; nx];
    let (mut cur, mut reallocs, mut events) = (0usize, 0u64, 0u64);
    for s in 0..=args.steps {
        if s % args.every == 0 {
            let (min, max, sum) = field::stats(&bufs[cur]);
            let meta = SlabMeta {
                step: s,
                rank: rank as u64,
                ranks: ranks as u64,
                nx: nx as u64,
                ny: ny as u64,
                row0: row0 as u64,
                row1: row1 as u64,
                min,
                max,
                mean: sum / (rows * nx) as f64,
            };
            // Zero copy: the event's data is the simulation's buffer itself, shared (immutable)
            // until the driver has stored it and dropped its reference.
            let data = Bytes::from_owner(SlabBytes(bufs[cur].clone()));
            pushed[cur] = Some(producer.push_to(rank % partitions, meta.to_json(), data));
            events += 1;
        }
        if s == args.steps {
            break;
        }
        let next = 1 - cur;
        {
            let c = &bufs[cur];
            comm.exchange(&c[..nx], &c[(rows - 1) * nx..], &mut above, &mut below);
        }
        if Arc::get_mut(&mut bufs[next]).is_none() {
            // The event pushed from that buffer may still be read by the driver: wait for it.
            if let Some(f) = pushed[next].take() {
                f.get()?;
            }
        }
        if Arc::get_mut(&mut bufs[next]).is_none() {
            reallocs += 1; // still shared (e.g. a driver keeping it): never write into it
            bufs[next] = Arc::new(vec![0.0; rows * nx]);
        }
        let (a, b) = bufs.split_at_mut(1);
        let (src, dst) = if cur == 0 {
            (&a[0], &mut b[0])
        } else {
            (&b[0], &mut a[0])
        };
        let dst =
            Arc::get_mut(dst).ok_or_else(|| HeatError::BadArgument("buffer shared".into()))?;
        field::step(src, &above, &below, nx, dst);
        cur = next;
        if args.delay_ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(args.delay_ms));
        }
    }
    producer.flush().get()?;
    comm.barrier();
    if rank == 0 {
        topic.mark_as_complete()?;
    }
    eprintln!("heat-sim: rank {rank} of {ranks}: rows {row0}..{row1} of {ny}x{nx}, {events} events pushed, {reallocs} buffer reallocations");
    Ok(())
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("heat-sim: error: {e}");
        std::process::exit(1);
    }
}
