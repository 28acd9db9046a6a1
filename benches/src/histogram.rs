//! A log-linear latency histogram: 8 sub-buckets per power of two (relative error under
//! 12.5%), mergeable across ranks, serialised sparse as JSON `[[bucket, count], ...]`.
//!
//! Bucket layout (values in nanoseconds): values `0..8` have a bucket each; a value `v` in
//! `[2^e, 2^(e+1))` with `e >= 3` goes to bucket `(e - 2) * 8 + ((v >> (e - 3)) & 7)`, so
//! [`BUCKETS`] buckets cover every `u64`.

use serde_json::{json, Value};

/// Sub-buckets per power of two.
const SUB: u64 = 8;
/// Number of buckets covering every `u64` value.
pub const BUCKETS: usize = 496;

/// Counts of latencies in nanoseconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
        }
    }
}

/// The bucket of value `v`.
pub fn bucket(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let e = 63 - u64::from(v.leading_zeros());
    ((e - 2) * SUB + ((v >> (e - 3)) & (SUB - 1))) as usize
}

/// The smallest and largest value of bucket `i` (`i < BUCKETS`).
pub fn bounds(i: usize) -> (u64, u64) {
    let i = i as u64;
    if i < SUB {
        return (i, i);
    }
    let e = i / SUB + 2;
    let sub = i % SUB;
    let lo = (SUB + sub) << (e - 3);
    (lo, lo + ((1u64 << (e - 3)) - 1))
}

impl Histogram {
    /// Records one value.
    pub fn record(&mut self, ns: u64) {
        self.counts[bucket(ns)] += 1;
        self.total += 1;
        self.max = self.max.max(ns);
    }

    /// Number of values recorded.
    #[cfg(test)]
    pub fn count(&self) -> u64 {
        self.total
    }

    /// Adds `other`'s counts.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a = a.saturating_add(*b);
        }
        self.total = self.total.saturating_add(other.total);
        self.max = self.max.max(other.max);
    }

    /// The value at quantile `q` (0..=1): the upper bound of the bucket holding it, never
    /// above the largest recorded value. `None` if empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(bounds(i).1.min(self.max));
            }
        }
        Some(self.max)
    }

    /// Points `(upper bound in ns, fraction of values at or below it)` of every non-empty
    /// bucket, in increasing order: the cumulative distribution.
    pub fn cdf(&self) -> Vec<(u64, f64)> {
        let mut seen = 0u64;
        let mut out = Vec::new();
        for (i, &c) in self.counts.iter().enumerate() {
            if c > 0 {
                seen += c;
                out.push((bounds(i).1.min(self.max), seen as f64 / self.total as f64));
            }
        }
        out
    }

    /// `{"max_ns": M, "buckets": [[i, count], ...]}` (non-empty buckets only).
    pub fn to_json(&self) -> Value {
        let buckets: Vec<Value> = self
            .counts
            .iter()
            .enumerate()
            .filter(|(_, &c)| c > 0)
            .map(|(i, &c)| json!([i, c]))
            .collect();
        json!({"max_ns": self.max, "buckets": buckets})
    }

    /// Parses [`Histogram::to_json`]'s output (e.g. another rank's); bad input is an error
    /// naming what is wrong, never a panic.
    pub fn from_json(v: &Value) -> Result<Histogram, String> {
        let max = v
            .get("max_ns")
            .and_then(Value::as_u64)
            .ok_or("histogram: \"max_ns\" must be an unsigned integer")?;
        let buckets = v
            .get("buckets")
            .and_then(Value::as_array)
            .ok_or("histogram: \"buckets\" must be an array")?;
        let mut h = Histogram {
            max,
            ..Histogram::default()
        };
        for b in buckets {
            let pair = b
                .as_array()
                .filter(|p| p.len() == 2)
                .ok_or("histogram: each bucket must be [index, count]")?;
            let (Some(i), Some(c)) = (pair[0].as_u64(), pair[1].as_u64()) else {
                return Err("histogram: bucket index and count must be unsigned integers".into());
            };
            let i = usize::try_from(i)
                .ok()
                .filter(|&i| i < BUCKETS)
                .ok_or_else(|| format!("histogram: bucket index {i} is not below {BUCKETS}"))?;
            if bounds(i).0 > max {
                return Err(format!("histogram: bucket {i} starts above max_ns {max}"));
            }
            h.counts[i] = h.counts[i].saturating_add(c);
            h.total = h.total.saturating_add(c);
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn buckets_cover_every_value_in_order() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(7), 7);
        assert_eq!(bucket(8), 8);
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
        for i in 0..BUCKETS {
            let (lo, hi) = bounds(i);
            assert_eq!(bucket(lo), i, "lo of {i}");
            assert_eq!(bucket(hi), i, "hi of {i}");
            if i + 1 < BUCKETS {
                assert_eq!(bounds(i + 1).0, hi + 1, "contiguous at {i}");
            }
        }
    }

    #[test]
    fn quantiles_are_within_an_eighth() {
        let mut h = Histogram::default();
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        let p50 = h.quantile(0.5).expect("some") as f64;
        let p99 = h.quantile(0.99).expect("some") as f64;
        assert!((500_000.0..=500_000.0 * 1.125).contains(&p50), "{p50}");
        assert!((990_000.0..=1_000_000.0).contains(&p99), "{p99}");
        assert_eq!(h.quantile(1.0), Some(1_000_000));
        assert!(Histogram::default().quantile(0.5).is_none());
    }

    #[test]
    fn json_roundtrips_and_merges() {
        let mut a = Histogram::default();
        let mut b = Histogram::default();
        a.record(5);
        a.record(123_456);
        b.record(99);
        let back = Histogram::from_json(&a.to_json()).expect("ok");
        assert_eq!(back, a);
        a.merge(&b);
        assert_eq!(a.count(), 3);
        assert_eq!(a.cdf().last().map(|p| p.1), Some(1.0));
    }

    #[test]
    fn bad_json_is_an_error() {
        for bad in [
            json!({}),
            json!({"max_ns": 1, "buckets": [[1]]}),
            json!({"max_ns": 1, "buckets": [[100000, 1]]}),
            json!({"max_ns": 1, "buckets": [[400, 1]]}),
            json!({"max_ns": -1, "buckets": []}),
        ] {
            assert!(Histogram::from_json(&bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_values_are_recorded_in_their_bucket(v in any::<u64>()) {
            let (lo, hi) = bounds(bucket(v));
            prop_assert!(lo <= v && v <= hi);
        }

        #[test]
        fn arbitrary_json_never_panics(s in ".{0,200}") {
            if let Ok(v) = serde_json::from_str::<Value>(&s) {
                let _ = Histogram::from_json(&v);
            }
        }

        #[test]
        fn arbitrary_bucket_lists_never_panic(
            max in any::<u64>(),
            pairs in proptest::collection::vec((any::<u64>(), any::<u64>()), 0..20),
        ) {
            let v = json!({"max_ns": max, "buckets": pairs.iter().map(|(i, c)| json!([i, c])).collect::<Vec<_>>()});
            if let Ok(h) = Histogram::from_json(&v) {
                let _ = h.quantile(0.99);
                let _ = h.cdf();
            }
        }
    }
}
