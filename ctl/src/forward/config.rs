//! The configuration of `diaspora-ctl forward` (pure: parsing and checks, no I/O).
//!
//! ```yaml
//! drivers:
//!   local:                      # a name used in policies
//!     type: files               # the driver (any registered driver, or NAME:LIBRARY.so)
//!     options:                  # passed to the driver as JSON
//!       root_path: /data/local
//!   remote:
//!     type: fabric
//!     options: {group_file: /shared/diaspora.group}
//! forward:
//!   - from: local/source-topic  # driver/topic
//!     to:   remote/dest-topic
//!     consumer: fwd-1           # optional: the source consumer name
//! ```
//!
//! The same document in JSON is accepted too.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not valid YAML/JSON, or not the expected shape.
    #[error("not a valid forward configuration: {0}")]
    Syntax(String),
    /// `forward:` is empty.
    #[error("no forwarding policy under `forward:`")]
    NoPolicy,
    /// `from`/`to` is not `driver/topic`.
    #[error("policy {index}: {field}: {value:?} is not `driver/topic`")]
    BadEndpoint {
        /// Position of the policy in `forward:` (from 0).
        index: usize,
        /// `from` or `to`.
        field: &'static str,
        /// What was given.
        value: String,
    },
    /// A policy names a driver that `drivers:` does not define.
    #[error(
        "policy {index}: driver {driver:?} is not defined under `drivers:` (defined: {defined})"
    )]
    UnknownDriver {
        /// Position of the policy.
        index: usize,
        /// The driver name.
        driver: String,
        /// The names defined.
        defined: String,
    },
    /// A policy forwarding a topic to itself.
    #[error("policy {index}: forwards {endpoint} to itself")]
    Loop {
        /// Position of the policy.
        index: usize,
        /// `driver/topic`.
        endpoint: String,
    },
    /// Data selection or allocation plug-ins, which this version does not load.
    #[error("policy {index}: `{field}` plug-ins are not supported by this version (every event's data is forwarded whole)")]
    Unsupported {
        /// Position of the policy.
        index: usize,
        /// The field.
        field: &'static str,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    drivers: BTreeMap<String, RawDriver>,
    forward: Vec<RawPolicy>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDriver {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    options: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    from: String,
    to: String,
    #[serde(default)]
    consumer: Option<String>,
    #[serde(default)]
    data_selector: Option<Value>,
    #[serde(default)]
    data_allocator: Option<Value>,
}

/// A driver definition.
#[derive(Clone, Debug, PartialEq)]
pub struct DriverSpec {
    /// The driver type (`files`, `fabric`, `NAME:LIBRARY.so`).
    pub kind: String,
    /// Its options.
    pub options: Value,
}

/// One end of a policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The driver's name in `drivers:`.
    pub driver: String,
    /// The topic.
    pub topic: String,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.driver, self.topic)
    }
}

/// A forwarding policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// The source.
    pub from: Endpoint,
    /// The destination.
    pub to: Endpoint,
    /// The consumer name on the source.
    pub consumer: String,
}

/// A checked configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct ForwardConfig {
    /// Drivers by name.
    pub drivers: BTreeMap<String, DriverSpec>,
    /// The policies, in file order.
    pub policies: Vec<Policy>,
}

/// Parses and checks a configuration (YAML, or JSON).
pub fn parse(text: &str) -> Result<ForwardConfig, ConfigError> {
    let raw: RawConfig = if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?
    } else {
        serde_norway::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?
    };
    if raw.forward.is_empty() {
        return Err(ConfigError::NoPolicy);
    }
    let drivers: BTreeMap<String, DriverSpec> = raw
        .drivers
        .into_iter()
        .map(|(name, d)| {
            let options = d
                .options
                .unwrap_or_else(|| Value::Object(Default::default()));
            (
                name,
                DriverSpec {
                    kind: d.kind,
                    options,
                },
            )
        })
        .collect();
    let defined = drivers.keys().cloned().collect::<Vec<_>>().join(", ");
    let mut policies = Vec::new();
    for (index, p) in raw.forward.into_iter().enumerate() {
        if p.data_selector.is_some() {
            return Err(ConfigError::Unsupported {
                index,
                field: "data_selector",
            });
        }
        if p.data_allocator.is_some() {
            return Err(ConfigError::Unsupported {
                index,
                field: "data_allocator",
            });
        }
        let endpoint = |field: &'static str, value: &str| -> Result<Endpoint, ConfigError> {
            let bad = || ConfigError::BadEndpoint {
                index,
                field,
                value: value.to_owned(),
            };
            let (driver, topic) = value.trim().split_once('/').ok_or_else(bad)?;
            if driver.is_empty() || topic.is_empty() {
                return Err(bad());
            }
            if !drivers.contains_key(driver) {
                return Err(ConfigError::UnknownDriver {
                    index,
                    driver: driver.to_owned(),
                    defined: defined.clone(),
                });
            }
            Ok(Endpoint {
                driver: driver.to_owned(),
                topic: topic.to_owned(),
            })
        };
        let from = endpoint("from", &p.from)?;
        let to = endpoint("to", &p.to)?;
        if from == to {
            return Err(ConfigError::Loop {
                index,
                endpoint: from.to_string(),
            });
        }
        let consumer = p.consumer.unwrap_or_else(|| default_consumer(&from, &to));
        policies.push(Policy { from, to, consumer });
    }
    Ok(ForwardConfig { drivers, policies })
}

/// `forward-<to driver>-<to topic>`, keeping only the characters consumer names allow.
fn default_consumer(_from: &Endpoint, to: &Endpoint) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .take(48)
            .collect()
    };
    format!("forward-{}-{}", clean(&to.driver), clean(&to.topic))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const YAML: &str = r#"
drivers:
  local:
    type: files
    options:
      root_path: "/tmp/x"
  remote:
    type: fabric
forward:
  - from: local/source-topic
    to:   remote/dest-topic
  - from: local/a
    to: local/b
    consumer: mine
"#;

    #[test]
    fn upstream_yaml_and_json_parse() {
        let c = parse(YAML).expect("yaml");
        assert_eq!(c.drivers["local"].kind, "files");
        assert_eq!(
            c.drivers["local"].options,
            serde_json::json!({"root_path": "/tmp/x"})
        );
        assert_eq!(c.drivers["remote"].options, serde_json::json!({}));
        assert_eq!(c.policies.len(), 2);
        assert_eq!(c.policies[0].from.to_string(), "local/source-topic");
        assert_eq!(c.policies[0].to.to_string(), "remote/dest-topic");
        assert_eq!(c.policies[0].consumer, "forward-remote-dest-topic");
        assert_eq!(c.policies[1].consumer, "mine");
        let json = r#"{"drivers": {"l": {"type": "files", "options": {"root_path": "/r"}}},
                       "forward": [{"from": "l/a", "to": "l/b"}]}"#;
        assert_eq!(parse(json).expect("json").policies[0].to.topic, "b");
    }

    #[test]
    fn bad_configurations_say_why() {
        let base = "drivers:\n  l:\n    type: files\nforward:\n";
        for (policies, needle) in [
            ("  - from: l\n    to: l/b\n", "is not `driver/topic`"),
            ("  - from: l/a\n    to: /b\n", "is not `driver/topic`"),
            ("  - from: x/a\n    to: l/b\n", "\"x\" is not defined"),
            ("  - from: l/a\n    to: l/a\n", "to itself"),
            (
                "  - from: l/a\n    to: l/b\n    data_selector: lib.so:f\n",
                "not supported",
            ),
            (
                "  - from: l/a\n    to: l/b\n    speed: 3\n",
                "unknown field",
            ),
            ("  - from: l/a\n", "missing field"),
            (" []\n", "no forwarding policy"),
        ] {
            let e = parse(&format!("{base}{policies}")).expect_err(policies);
            assert!(e.to_string().contains(needle), "{policies}: {e}");
        }
        for text in ["", "{", "- 1\n- 2\n", "drivers: 3\nforward: []\n"] {
            assert!(parse(text).is_err(), "{text:?} accepted");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in ".{0,300}") {
            let _ = parse(&text);
        }
    }
}
