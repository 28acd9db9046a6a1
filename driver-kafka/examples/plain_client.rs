//! The baseline for the kafka driver's benchmark: a plain rdkafka client (the same bundled
//! librdkafka and the same producer and consumer settings as the driver, through
//! [`KafkaOptions`]) producing N records of `metadata-size + data-size` bytes to partition 0 of
//! a new topic, waiting until every delivery report is in, then reading them back from the
//! beginning. What the driver adds on top (framing, CRCs, futures, the Diaspora consumer) is
//! the difference between this and `diaspora-bench --driver kafka` with the same sizes.
//!
//! ```text
//! cargo run --release -p diaspora-driver-kafka --example plain_client -- \
//!     --bootstrap 127.0.0.1:9092 --events 100000 --metadata-size 30 --data-size 1024
//! ```
//! Prints one line per phase: `produce|consume <events> events <bytes> bytes <secs> s
//! <events/s> ev/s <MiB/s> MiB/s`.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diaspora_api::json;
use diaspora_driver_kafka::KafkaOptions;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::{Message, Offset, TopicPartitionList};

struct Args {
    bootstrap: String,
    topic: String,
    events: u64,
    metadata_size: usize,
    data_size: usize,
    timeout: Duration,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        bootstrap: "127.0.0.1:9092".into(),
        topic: format!("plain-{}", std::process::id()),
        events: 100_000,
        metadata_size: 30,
        data_size: 0,
        timeout: Duration::from_secs(600),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let num = |v: String| v.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--bootstrap" => a.bootstrap = value()?,
            "--topic" => a.topic = value()?,
            "--events" => a.events = num(value()?)?,
            "--metadata-size" => a.metadata_size = num(value()?)? as usize,
            "--data-size" => a.data_size = num(value()?)? as usize,
            "--timeout-secs" => a.timeout = Duration::from_secs(num(value()?)?),
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    Ok(a)
}

/// Counts delivery reports and failures.
#[derive(Default)]
struct Reports {
    ok: AtomicU64,
    failed: AtomicU64,
}

struct Ctx(Arc<Reports>);

impl ClientContext for Ctx {}

impl ProducerContext for Ctx {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        match r {
            Ok(_) => self.0.ok.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.0.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

fn report(phase: &str, events: u64, bytes: u64, secs: f64) {
    println!(
        "{phase} {events} events {bytes} bytes {secs:.3} s {:.0} ev/s {:.1} MiB/s",
        events as f64 / secs,
        bytes as f64 / secs / (1 << 20) as f64
    );
}

fn run(a: &Args) -> Result<(), String> {
    let opts = KafkaOptions::from_json(&json!({"bootstrap_servers": a.bootstrap}))
        .map_err(|e| e.to_string())?;
    let admin: AdminClient<DefaultClientContext> =
        opts.admin().create().map_err(|e| format!("admin: {e}"))?;
    let created = futures_executor::block_on(admin.create_topics(
        &[NewTopic::new(&a.topic, 1, TopicReplication::Fixed(1))],
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
    ))
    .map_err(|e| format!("create topic: {e}"))?;
    for r in created {
        r.map_err(|(t, e)| format!("create topic {t}: {e}"))?;
    }

    // One payload, sent N times: what a user's event is (metadata + data).
    let payload = vec![b'x'; a.metadata_size + a.data_size];
    let reports = Arc::new(Reports::default());
    let producer: BaseProducer<Ctx> = opts
        .producer()
        .create_with_context(Ctx(reports.clone()))
        .map_err(|e| format!("producer: {e}"))?;
    let start = Instant::now();
    let deadline = start + a.timeout;
    for _ in 0..a.events {
        loop {
            match producer.send(
                BaseRecord::<(), _>::to(&a.topic)
                    .partition(0)
                    .payload(&payload),
            ) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    if Instant::now() > deadline {
                        return Err("producer queue stayed full past the deadline".into());
                    }
                    producer.poll(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(format!("send: {e}")),
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer
        .flush(deadline.saturating_duration_since(Instant::now()))
        .map_err(|e| format!("flush: {e}"))?;
    let secs = start.elapsed().as_secs_f64();
    let failed = reports.failed.load(Ordering::Relaxed);
    let ok = reports.ok.load(Ordering::Relaxed);
    if failed > 0 || ok != a.events {
        return Err(format!("{ok} delivered, {failed} failed of {}", a.events));
    }
    report("produce", a.events, a.events * payload.len() as u64, secs);

    let consumer: BaseConsumer = opts
        .consumer(&format!("{}-reader", a.topic))
        .create()
        .map_err(|e| format!("consumer: {e}"))?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&a.topic, 0, Offset::Beginning)
        .map_err(|e| format!("assign: {e}"))?;
    consumer.assign(&tpl).map_err(|e| format!("assign: {e}"))?;
    let start = Instant::now();
    let deadline = start + a.timeout;
    let (mut n, mut bytes) = (0u64, 0u64);
    while n < a.events {
        if Instant::now() > deadline {
            return Err(format!("consumed {n} of {} before the deadline", a.events));
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                n += 1;
                bytes += m.payload().map_or(0, |p| p.len() as u64);
            }
            Some(Err(e)) => return Err(format!("poll: {e}")),
            None => {}
        }
    }
    report("consume", n, bytes, start.elapsed().as_secs_f64());
    Ok(())
}

fn main() -> ExitCode {
    match parse().and_then(|a| run(&a)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
