//! The control-file language of `diaspora-ctl fifo` (pure: no I/O).
//!
//! One command per line:
//!
//! ```text
//! <path> -> <topic> [(key=value, ...)]   create FIFO <path>; each line written to it is an event
//! <path> <- <topic> [(key=value, ...)]   write the metadata of the topic's events to the
//!                                        existing FIFO <path>, one line per event
//! ```
//!
//! Options: `format=raw|json` (both directions, default `raw`: a line is the JSON string of
//! its text, and an event whose metadata is a string is written as that text), `batch_size=N`
//! or `batch_size=adaptive` (the producer's or consumer's batch size), and `consumer=NAME`
//! (`<-` only: the consumer name acknowledgements are recorded under; default
//! `fifo-<file name>`). Blank lines and lines starting with `#` are ignored.

use std::path::PathBuf;

/// Which way events flow through a FIFO.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// `path -> topic`: lines written to the FIFO become events.
    Produce,
    /// `path <- topic`: events' metadata is written to the FIFO.
    Consume,
}

/// How lines map to metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// A line is the text of a JSON string.
    Raw,
    /// A line is a JSON document.
    Json,
}

/// A batch size option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchSize {
    /// `adaptive`.
    Adaptive,
    /// A fixed number of events.
    Fixed(u64),
}

/// One parsed control command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlCommand {
    /// The FIFO.
    pub path: PathBuf,
    /// Which way events flow.
    pub direction: Direction,
    /// The topic.
    pub topic: String,
    /// `format=`.
    pub format: Format,
    /// `batch_size=`.
    pub batch_size: Option<BatchSize>,
    /// `consumer=` (consume only).
    pub consumer: Option<String>,
}

/// Why a control line was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// Neither ` -> ` nor ` <- ` in the line.
    #[error("expected `<path> -> <topic> [(options)]` or `<path> <- <topic> [(options)]`")]
    NoArrow,
    /// Nothing before the arrow.
    #[error("the FIFO path is empty")]
    EmptyPath,
    /// Nothing after the arrow.
    #[error("the topic name is empty")]
    EmptyTopic,
    /// `(` without `)`.
    #[error("missing `)` after the options")]
    UnclosedOptions,
    /// Text after `)`.
    #[error("unexpected text after `)`: {0:?}")]
    TrailingText(String),
    /// An option that is not `key=value`.
    #[error("option {0:?} is not key=value")]
    NotKeyValue(String),
    /// An option this tool does not know.
    #[error("unknown option {0:?} (known: format, batch_size, consumer)")]
    UnknownOption(String),
    /// A bad `format=`.
    #[error("format must be raw or json, not {0:?}")]
    BadFormat(String),
    /// A bad `batch_size=`.
    #[error("batch_size must be a positive integer or adaptive, not {0:?}")]
    BadBatchSize(String),
    /// `consumer=` on a `->` line.
    #[error("consumer= applies to `<-` commands only")]
    ConsumerOnProducer,
}

/// Parses one control line; `Ok(None)` for blank lines and `#` comments.
pub fn parse(line: &str) -> Result<Option<ControlCommand>, ControlError> {
    // Leading blanks are kept for finding the arrow: ` -> t` has an empty path.
    let line = line.trim_end();
    if line.trim_start().is_empty() || line.trim_start().starts_with('#') {
        return Ok(None);
    }
    let (path, rest, direction) = match (line.find(" -> "), line.find(" <- ")) {
        (Some(p), Some(c)) if c < p => (&line[..c], &line[c + 4..], Direction::Consume),
        (Some(p), _) => (&line[..p], &line[p + 4..], Direction::Produce),
        (None, Some(c)) => (&line[..c], &line[c + 4..], Direction::Consume),
        (None, None) => return Err(ControlError::NoArrow),
    };
    let path = path.trim();
    if path.is_empty() {
        return Err(ControlError::EmptyPath);
    }
    let (topic, options) = match rest.split_once('(') {
        None => (rest.trim(), ""),
        Some((topic, opts)) => {
            let (opts, after) = opts.split_once(')').ok_or(ControlError::UnclosedOptions)?;
            if !after.trim().is_empty() {
                return Err(ControlError::TrailingText(after.trim().to_owned()));
            }
            (topic.trim(), opts)
        }
    };
    if topic.is_empty() {
        return Err(ControlError::EmptyTopic);
    }
    let mut command = ControlCommand {
        path: PathBuf::from(path),
        direction,
        topic: topic.to_owned(),
        format: Format::Raw,
        batch_size: None,
        consumer: None,
    };
    for pair in options.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| ControlError::NotKeyValue(pair.to_owned()))?;
        let value = value.trim();
        match key.trim() {
            "format" => {
                command.format = match value {
                    "raw" => Format::Raw,
                    "json" => Format::Json,
                    other => return Err(ControlError::BadFormat(other.to_owned())),
                }
            }
            "batch_size" => {
                command.batch_size = Some(match value {
                    "adaptive" => BatchSize::Adaptive,
                    n => match n.parse::<u64>() {
                        Ok(n) if n > 0 => BatchSize::Fixed(n),
                        _ => return Err(ControlError::BadBatchSize(n.to_owned())),
                    },
                })
            }
            "consumer" if direction == Direction::Consume => {
                command.consumer = Some(value.to_owned())
            }
            "consumer" => return Err(ControlError::ConsumerOnProducer),
            other => return Err(ControlError::UnknownOption(other.to_owned())),
        }
    }
    Ok(Some(command))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(line: &str) -> ControlCommand {
        parse(line).expect("valid").expect("a command")
    }

    #[test]
    fn commands_parse() {
        let c = ok("/tmp/in -> events");
        assert_eq!(c.path, PathBuf::from("/tmp/in"));
        assert_eq!(c.direction, Direction::Produce);
        assert_eq!(c.topic, "events");
        assert_eq!(c.format, Format::Raw);
        assert_eq!(c.batch_size, None);
        let c = ok("  /tmp/out <- events (format=json, batch_size=8, consumer=viz)\r");
        assert_eq!(c.direction, Direction::Consume);
        assert_eq!(c.format, Format::Json);
        assert_eq!(c.batch_size, Some(BatchSize::Fixed(8)));
        assert_eq!(c.consumer.as_deref(), Some("viz"));
        let c = ok("a b -> t(batch_size=adaptive,)");
        assert_eq!(c.path, PathBuf::from("a b"));
        assert_eq!(c.batch_size, Some(BatchSize::Adaptive));
        assert_eq!(ok("p -> t ()").topic, "t");
        assert_eq!(parse("").expect("blank"), None);
        assert_eq!(parse("  # comment -> x").expect("comment"), None);
    }

    #[test]
    fn bad_commands_say_why() {
        for (line, error) in [
            ("/tmp/in => t", ControlError::NoArrow),
            ("/tmp/in->t", ControlError::NoArrow),
            (" -> t", ControlError::EmptyPath),
            ("p ->  ()", ControlError::EmptyTopic),
            ("p -> (format=json)", ControlError::EmptyTopic),
            ("p -> t (format=json", ControlError::UnclosedOptions),
            (
                "p -> t (format=json) x",
                ControlError::TrailingText("x".into()),
            ),
            ("p -> t (json)", ControlError::NotKeyValue("json".into())),
            (
                "p -> t (speed=3)",
                ControlError::UnknownOption("speed".into()),
            ),
            ("p -> t (format=xml)", ControlError::BadFormat("xml".into())),
            (
                "p -> t (batch_size=0)",
                ControlError::BadBatchSize("0".into()),
            ),
            (
                "p -> t (batch_size=-1)",
                ControlError::BadBatchSize("-1".into()),
            ),
            ("p -> t (consumer=c)", ControlError::ConsumerOnProducer),
        ] {
            assert_eq!(parse(line), Err(error), "{line}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_lines_never_panic(line in ".{0,200}") {
            let _ = parse(&line);
        }

        #[test]
        fn generated_commands_round_trip(
            path in "[a-z/._]{1,20}",
            topic in "[a-z0-9_-]{1,20}",
            consume in any::<bool>(),
            n in 1u64..1_000_000,
        ) {
            let arrow = if consume { "<-" } else { "->" };
            let c = ok(&format!("{path} {arrow} {topic} (batch_size={n}, format=json)"));
            prop_assert_eq!(c.path, PathBuf::from(path.trim()));
            prop_assert_eq!(c.topic, topic);
            prop_assert_eq!(c.batch_size, Some(BatchSize::Fixed(n)));
            prop_assert_eq!(c.direction == Direction::Consume, consume);
        }
    }
}
