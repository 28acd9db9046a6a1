//! The group file: how clients find a server and prove they may use it.
//!
//! Written by the server (atomically, mode 0600) once every progress thread listens:
//!
//! ```json
//! {
//!   "version": 1,
//!   "epoch": 1764745200123456789,
//!   "token": "4f1c0e8a9b2d7c6e5f4a3b2c1d0e9f8a",
//!   "provider": "tcp;ofi_rxm",
//!   "ranks": [
//!     {"rank": 0, "host": "node1", "pid": 4242,
//!      "threads": [{"core": 0, "address": "0200a4b57f000001..."}]}
//!   ]
//! }
//! ```
//!
//! * `epoch` changes on every start: a client that sees another epoch than the one it
//!   connected with knows the server restarted (and its addresses changed).
//! * `token` is 128 random bits as 32 lowercase hex digits; [`Hello`](crate::Hello) must carry
//!   it. Only who can read the file (its owner) can use the server.
//! * `ranks[i].rank == i`; every rank has at least one thread; `core` is the CPU the thread is
//!   pinned to, or null; `address` is the engine's raw address in hex.
//!
//! Parsing is strict: unknown fields, another version, a malformed token or address are
//! errors that say which field and why.

use diaspora_rpc::{Address, AddressError};
use serde::{Deserialize, Serialize};

use crate::Placement;

/// The group-file format version this crate reads and writes.
pub const GROUP_VERSION: u32 = 1;
/// Hex digits of a token.
pub const TOKEN_HEX_LEN: usize = 32;

/// A parsed group file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupFile {
    /// Format version ([`GROUP_VERSION`]).
    pub version: u32,
    /// Changes on every server start.
    pub epoch: u64,
    /// The secret clients present in Hello.
    pub token: String,
    /// libfabric provider of every address.
    pub provider: String,
    /// The ranks, in order.
    pub ranks: Vec<GroupRank>,
}

/// One server process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupRank {
    /// Its index.
    pub rank: u32,
    /// Host name (for logs and humans).
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// Its progress threads, in order.
    pub threads: Vec<GroupThread>,
}

/// One progress thread (one endpoint).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupThread {
    /// The CPU it is pinned to, if any.
    pub core: Option<u32>,
    /// The endpoint's address, hex.
    pub address: String,
}

/// Why a group file is refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GroupError {
    /// Not JSON, or not of the expected shape (serde says which field).
    #[error("group file is not valid: {0}")]
    Json(#[from] serde_json::Error),
    /// Another format version.
    #[error(
        "group file version {found} is not supported (this build reads version {GROUP_VERSION})"
    )]
    Version {
        /// The version found.
        found: u32,
    },
    /// The token is not 32 lowercase hex digits.
    #[error("group file token is malformed: {0}")]
    Token(String),
    /// The provider is empty.
    #[error("group file has an empty provider")]
    Provider,
    /// No ranks.
    #[error("group file lists no ranks")]
    NoRanks,
    /// `ranks[index].rank != index`.
    #[error("group file rank at index {index} says rank {rank} (ranks must be listed in order)")]
    RankOrder {
        /// The index.
        index: usize,
        /// The rank it says.
        rank: u32,
    },
    /// A rank without threads.
    #[error("group file rank {0} lists no threads")]
    NoThreads(u32),
    /// An address that does not decode.
    #[error("group file address of rank {rank} thread {thread} is malformed: {source}")]
    Address {
        /// The rank.
        rank: u32,
        /// The thread.
        thread: u32,
        /// Why.
        #[source]
        source: AddressError,
    },
    /// A (rank, thread) that the file does not list.
    #[error("group file has no rank {rank} thread {thread}")]
    NoSuchThread {
        /// The rank.
        rank: u32,
        /// The thread.
        thread: u32,
    },
}

impl GroupFile {
    /// Parses and checks a group file.
    pub fn parse(text: &str) -> Result<GroupFile, GroupError> {
        let g: GroupFile = serde_json::from_str(text)?;
        g.check()?;
        Ok(g)
    }

    /// Checks every rule of the module doc.
    pub fn check(&self) -> Result<(), GroupError> {
        if self.version != GROUP_VERSION {
            return Err(GroupError::Version {
                found: self.version,
            });
        }
        check_token(&self.token)?;
        if self.provider.is_empty() {
            return Err(GroupError::Provider);
        }
        if self.ranks.is_empty() {
            return Err(GroupError::NoRanks);
        }
        for (index, r) in self.ranks.iter().enumerate() {
            if r.rank as usize != index {
                return Err(GroupError::RankOrder {
                    index,
                    rank: r.rank,
                });
            }
            if r.threads.is_empty() {
                return Err(GroupError::NoThreads(r.rank));
            }
            for t in 0..r.threads.len() {
                self.address(r.rank, t as u32)?;
            }
        }
        Ok(())
    }

    /// The JSON text (pretty, with a final newline).
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }

    /// The address of a (rank, thread).
    pub fn address(&self, rank: u32, thread: u32) -> Result<Address, GroupError> {
        let t = self
            .ranks
            .get(rank as usize)
            .and_then(|r| r.threads.get(thread as usize))
            .ok_or(GroupError::NoSuchThread { rank, thread })?;
        Address::from_hex(&self.provider, &t.address).map_err(|source| GroupError::Address {
            rank,
            thread,
            source,
        })
    }

    /// Every (rank, thread), in order.
    pub fn threads(&self) -> Vec<Placement> {
        self.ranks
            .iter()
            .flat_map(|r| {
                (0..r.threads.len()).map(move |t| Placement {
                    rank: r.rank,
                    thread: t as u32,
                })
            })
            .collect()
    }
}

/// The placement the server uses: partition p on thread `p mod T` of the `threads` listed
/// in order (T = their number; the first thread of rank 0 is also the admin thread).
pub fn placement(threads: &[Placement], num_partitions: usize) -> Vec<Placement> {
    if threads.is_empty() {
        return Vec::new();
    }
    (0..num_partitions)
        .map(|p| threads[p % threads.len()])
        .collect()
}

/// Checks a token: 32 lowercase hex digits.
pub fn check_token(token: &str) -> Result<(), GroupError> {
    if token.len() != TOKEN_HEX_LEN {
        return Err(GroupError::Token(format!(
            "{} characters, expected {TOKEN_HEX_LEN}",
            token.len()
        )));
    }
    if let Some(c) = token.chars().find(|c| !matches!(c, '0'..='9' | 'a'..='f')) {
        return Err(GroupError::Token(format!(
            "{c:?} is not a lowercase hex digit"
        )));
    }
    Ok(())
}

/// Formats 16 random bytes as a token.
pub fn token_from_bytes(bytes: [u8; 16]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares two tokens in time independent of where they differ.
pub fn tokens_match(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> GroupFile {
        GroupFile {
            version: 1,
            epoch: 7,
            token: token_from_bytes([0xab; 16]),
            provider: "tcp;ofi_rxm".into(),
            ranks: vec![GroupRank {
                rank: 0,
                host: "h".into(),
                pid: 1,
                threads: vec![
                    GroupThread {
                        core: Some(0),
                        address: "0102".into(),
                    },
                    GroupThread {
                        core: None,
                        address: "0304".into(),
                    },
                ],
            }],
        }
    }

    #[test]
    fn group_file_round_trips() {
        let g = sample();
        assert_eq!(GroupFile::parse(&g.to_json()).unwrap(), g);
        assert_eq!(g.address(0, 1).unwrap().bytes(), &[3, 4]);
        assert!(matches!(
            g.address(0, 2),
            Err(GroupError::NoSuchThread { .. })
        ));
    }

    #[test]
    fn group_file_parsing_is_strict() {
        let mut v: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
        v["extra"] = 1.into();
        assert!(matches!(
            GroupFile::parse(&v.to_string()),
            Err(GroupError::Json(_))
        ));
        type Break = fn(&mut GroupFile);
        let cases: Vec<(Break, &str)> = vec![
            (|g| g.version = 2, "version 2"),
            (|g| g.token = "ABCD".into(), "token"),
            (|g| g.token = "g".repeat(32), "hex digit"),
            (|g| g.provider.clear(), "empty provider"),
            (|g| g.ranks.clear(), "no ranks"),
            (|g| g.ranks[0].rank = 1, "index 0 says rank 1"),
            (|g| g.ranks[0].threads.clear(), "no threads"),
            (|g| g.ranks[0].threads[0].address = "xyz".into(), "address"),
        ];
        for (break_it, want) in cases {
            let mut g = sample();
            break_it(&mut g);
            let e = GroupFile::parse(&g.to_json()).unwrap_err().to_string();
            assert!(e.contains(want), "{e:?} should mention {want:?}");
        }
        assert!(GroupFile::parse("{").is_err());
        assert!(GroupFile::parse("[]").is_err());
    }

    #[test]
    fn placement_spreads_partitions_over_threads() {
        let t = sample().threads();
        let p = placement(&t, 5);
        assert_eq!(
            p.iter().map(|p| p.thread).collect::<Vec<_>>(),
            [0, 1, 0, 1, 0]
        );
        assert!(placement(&[], 3).is_empty());
    }

    #[test]
    fn tokens_compare_exactly() {
        assert!(tokens_match("ab", "ab"));
        assert!(!tokens_match("ab", "ac"));
        assert!(!tokens_match("ab", "abc"));
    }
}
