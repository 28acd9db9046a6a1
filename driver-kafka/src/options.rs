//! The kafka driver's options:
//!
//! | key | type | default | meaning |
//! |---|---|---|---|
//! | `bootstrap_servers` | string | required | librdkafka's `bootstrap.servers` (`host:port,...`) |
//! | `timeout_ms` | integer ≥ 1 | 10000 | deadline of every admin call, of connecting, of a blocked `push` (queue full) and of delivering an event (librdkafka's `message.timeout.ms`) |
//! | `resume` | `"seek"` or `"scan"` | `"seek"` | how a consumer starts at its group's committed offset: `seek` fetches from that offset; `scan` fetches from the partition's start and skips the records before it (for brokers that cannot fetch from inside a record batch: tansu 0.6.0 returns only batches whose *base* offset is at or after the fetch offset) |
//! | `config` | object | `{}` | librdkafka settings passed to every client (security, SASL/SSL, batching...); values are strings, numbers or booleans |
//! | `producer_config` | object | `{}` | librdkafka settings for producers only (override `config`) |
//! | `consumer_config` | object | `{}` | librdkafka settings for consumers only (override `config`) |
//!
//! The driver's own defaults, each overridable through `config`: producers `linger.ms=5`,
//! `enable.idempotence=true` (no duplicate, no reordering on retries), `message.max.bytes=16777216`;
//! consumers `queued.max.messages.kbytes=65536` (the memory bound of prefetched records),
//! `fetch.max.bytes=67108864`, `max.partition.fetch.bytes=16777216`, `fetch.wait.max.ms=100`.
//! Consumers always set `group.id` (the consumer's name), `enable.auto.commit=false`,
//! `enable.auto.offset.store=false`, `auto.offset.reset=earliest` and
//! `enable.partition.eof=true` (the round robin over partitions needs to know when one has
//! nothing more stored, see `crate::turns`); `consumer_config` cannot change these.

use std::collections::BTreeMap;
use std::time::Duration;

use diaspora_api::{Error, Result, Value};
use rdkafka::ClientConfig;

/// Default deadline.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// Default `message.max.bytes` (largest record a producer sends).
pub const DEFAULT_MESSAGE_MAX_BYTES: usize = 16 << 20;

/// Parsed driver options.
#[derive(Clone, Debug)]
pub struct KafkaOptions {
    /// `bootstrap.servers`.
    pub bootstrap_servers: String,
    /// Deadline of admin calls, connection, blocked pushes and deliveries.
    pub timeout: Duration,
    /// Consumers fetch from the start and skip acknowledged records (`resume: "scan"`).
    pub resume_scan: bool,
    /// Pass-through settings for every client.
    pub config: BTreeMap<String, String>,
    /// Pass-through settings for producers.
    pub producer_config: BTreeMap<String, String>,
    /// Pass-through settings for consumers.
    pub consumer_config: BTreeMap<String, String>,
}

fn settings(v: &Value, key: &str) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    flatten(v, key, "", &mut out)?;
    Ok(out)
}

/// Flattens `{"security": {"protocol": "SSL"}}` into `security.protocol=SSL` (how
/// `diaspora-ctl --driver.config.security.protocol SSL` arrives).
fn flatten(v: &Value, key: &str, prefix: &str, out: &mut BTreeMap<String, String>) -> Result<()> {
    let obj = v
        .as_object()
        .ok_or_else(|| Error::option(key, "must be an object of librdkafka settings"))?;
    for (k, val) in obj {
        let name = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        let s = match val {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Object(_) => {
                flatten(val, key, &name, out)?;
                continue;
            }
            _ => {
                return Err(Error::option(
                    format!("{key}.{name}"),
                    "must be a string, a number or a boolean",
                ))
            }
        };
        if name == "bootstrap.servers" {
            return Err(Error::option(
                format!("{key}.{name}"),
                "set the driver's \"bootstrap_servers\" option instead",
            ));
        }
        out.insert(name, s);
    }
    Ok(())
}

impl KafkaOptions {
    /// Options whose value is a string: a command line that parses values as JSON must keep
    /// their text.
    pub const STRING_KEYS: &'static [&'static str] = &["bootstrap_servers", "resume"];

    /// Parses the driver options; unknown keys are errors.
    pub fn from_json(v: &Value) -> Result<Self> {
        let empty = serde_json::Map::new();
        let obj = match v {
            Value::Object(o) => o,
            Value::Null => &empty,
            _ => return Err(Error::option("driver", "options must be a JSON object")),
        };
        let mut o = KafkaOptions {
            bootstrap_servers: String::new(),
            timeout: Duration::from_millis(DEFAULT_TIMEOUT_MS),
            resume_scan: false,
            config: BTreeMap::new(),
            producer_config: BTreeMap::new(),
            consumer_config: BTreeMap::new(),
        };
        for (k, val) in obj {
            match k.as_str() {
                "bootstrap_servers" => {
                    o.bootstrap_servers = val
                        .as_str()
                        .filter(|s| !s.trim().is_empty())
                        .ok_or_else(|| {
                            Error::option("bootstrap_servers", "must be a non-empty string")
                        })?
                        .to_owned()
                }
                "timeout_ms" => {
                    let ms = val.as_u64().filter(|&ms| (1..=86_400_000).contains(&ms));
                    o.timeout = Duration::from_millis(ms.ok_or_else(|| {
                        Error::option("timeout_ms", "must be an integer from 1 to 86400000")
                    })?)
                }
                "resume" => {
                    o.resume_scan = match val.as_str() {
                        Some("seek") => false,
                        Some("scan") => true,
                        _ => return Err(Error::option("resume", "must be \"seek\" or \"scan\"")),
                    }
                }
                "config" => o.config = settings(val, "config")?,
                "producer_config" => o.producer_config = settings(val, "producer_config")?,
                "consumer_config" => o.consumer_config = settings(val, "consumer_config")?,
                other => {
                    return Err(Error::option(
                        other,
                        "unknown kafka driver option (known: bootstrap_servers, timeout_ms, \
                         resume, config, producer_config, consumer_config)",
                    ))
                }
            }
        }
        if o.bootstrap_servers.is_empty() {
            return Err(Error::option(
                "bootstrap_servers",
                "required (e.g. \"127.0.0.1:9092\")",
            ));
        }
        Ok(o)
    }

    /// Deadline in milliseconds.
    pub fn timeout_ms(&self) -> u64 {
        self.timeout.as_millis() as u64
    }

    fn base(
        &self,
        defaults: &[(&str, String)],
        specific: &BTreeMap<String, String>,
    ) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers);
        c.set(
            "socket.connection.setup.timeout.ms",
            self.timeout_ms().max(1000).to_string(),
        );
        for (k, v) in defaults {
            c.set(*k, v);
        }
        for (k, v) in self.config.iter().chain(specific) {
            c.set(k, v);
        }
        c
    }

    /// Configuration of a producer.
    pub fn producer(&self) -> ClientConfig {
        self.base(
            &[
                ("linger.ms", "5".into()),
                ("enable.idempotence", "true".into()),
                ("message.max.bytes", DEFAULT_MESSAGE_MAX_BYTES.to_string()),
                ("message.timeout.ms", self.timeout_ms().to_string()),
            ],
            &self.producer_config,
        )
    }

    /// Configuration of an admin client, or of a consumer without a group.
    pub fn admin(&self) -> ClientConfig {
        self.base(&[], &self.consumer_config)
    }

    /// Configuration of the consumer of group `group`.
    pub fn consumer(&self, group: &str) -> ClientConfig {
        let mut c = self.base(
            &[
                ("queued.max.messages.kbytes", "65536".into()),
                ("fetch.max.bytes", (64u32 << 20).to_string()),
                ("max.partition.fetch.bytes", (16u32 << 20).to_string()),
                (
                    "receive.message.max.bytes",
                    ((64u32 << 20) + 4096).to_string(),
                ),
            ],
            &self.consumer_config,
        );
        c.set("group.id", group);
        c.set("enable.auto.commit", "false");
        c.set("enable.auto.offset.store", "false");
        c.set("auto.offset.reset", "earliest");
        // The consumer's round robin needs to know that a partition has nothing more stored
        // (`crate::turns`): librdkafka then queues a PARTITION_EOF after its last record.
        c.set("enable.partition.eof", "true");
        c
    }

    /// The producers' `message.max.bytes`.
    pub fn message_max_bytes(&self) -> Result<usize> {
        match self
            .producer_config
            .get("message.max.bytes")
            .or_else(|| self.config.get("message.max.bytes"))
        {
            None => Ok(DEFAULT_MESSAGE_MAX_BYTES),
            Some(s) => s
                .parse()
                .map_err(|_| Error::option("config.message.max.bytes", "must be an integer")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_and_rejects() {
        let o = KafkaOptions::from_json(&json!({
            "bootstrap_servers": "h:1", "timeout_ms": 5, "config": {"linger.ms": 0, "a": true}
        }))
        .expect("options");
        assert_eq!(o.config["linger.ms"], "0");
        assert_eq!(o.config["a"], "true");
        let o = KafkaOptions::from_json(&json!({
            "bootstrap_servers": "h:1", "config": {"security": {"protocol": "SSL"}}
        }))
        .expect("nested");
        assert_eq!(o.config["security.protocol"], "SSL");
        for bad in [
            json!({}),
            json!({"bootstrap_servers": ""}),
            json!({"bootstrap_servers": "h:1", "timeout_ms": 0}),
            json!({"bootstrap_servers": "h:1", "nope": 1}),
            json!({"bootstrap_servers": "h:1", "config": {"x": [1]}}),
            json!({"bootstrap_servers": "h:1", "config": {"bootstrap.servers": "y"}}),
            json!([1]),
        ] {
            assert!(KafkaOptions::from_json(&bad).is_err(), "{bad} accepted");
        }
    }
}
