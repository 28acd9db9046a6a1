//! The metadata of one event: one rank's slab at one step.
//!
//! `{"step": S, "rank": R, "ranks": N, "nx": NX, "ny": NY, "row0": A, "row1": B,
//!   "min": .., "max": .., "mean": .., "dtype": "f64le"}`; the data is rows `[A, B)` of the
//! global `NY x NX` grid, row-major, little-endian f64.

use crate::HeatError;
use serde_json::{json, Value};

/// One slab's metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct SlabMeta {
    /// Simulation step.
    pub step: u64,
    /// Rank that produced the slab.
    pub rank: u64,
    /// Number of ranks (slabs per step).
    pub ranks: u64,
    /// Global columns.
    pub nx: u64,
    /// Global rows.
    pub ny: u64,
    /// First row of the slab.
    pub row0: u64,
    /// One past the last row.
    pub row1: u64,
    /// Minimum over the slab.
    pub min: f64,
    /// Maximum over the slab.
    pub max: f64,
    /// Mean over the slab.
    pub mean: f64,
}

impl SlabMeta {
    /// The JSON document pushed with the slab.
    pub fn to_json(&self) -> Value {
        json!({"step": self.step, "rank": self.rank, "ranks": self.ranks, "nx": self.nx,
               "ny": self.ny, "row0": self.row0, "row1": self.row1, "min": self.min,
               "max": self.max, "mean": self.mean, "dtype": "f64le"})
    }

    /// Parses and checks the metadata (bounds inside the grid, rank below ranks, sizes that
    /// cannot overflow).
    pub fn from_json(v: &Value) -> Result<Self, HeatError> {
        let u = |k: &str| {
            v.get(k)
                .and_then(Value::as_u64)
                .ok_or_else(|| HeatError::BadMetadata(format!("no unsigned integer {k:?}")))
        };
        let f = |k: &str| {
            v.get(k)
                .and_then(Value::as_f64)
                .ok_or_else(|| HeatError::BadMetadata(format!("no number {k:?}")))
        };
        let m = SlabMeta {
            step: u("step")?,
            rank: u("rank")?,
            ranks: u("ranks")?,
            nx: u("nx")?,
            ny: u("ny")?,
            row0: u("row0")?,
            row1: u("row1")?,
            min: f("min")?,
            max: f("max")?,
            mean: f("mean")?,
        };
        if v.get("dtype").and_then(Value::as_str) != Some("f64le") {
            return Err(HeatError::BadMetadata("dtype is not \"f64le\"".into()));
        }
        let ok = m.rank < m.ranks
            && m.ranks <= 1 << 20
            && m.row0 < m.row1
            && m.row1 <= m.ny
            && m.nx >= 1
            && m.nx
                .checked_mul(m.ny)
                .and_then(|c| c.checked_mul(8))
                .is_some_and(|b| b <= 1 << 40);
        if !ok {
            return Err(HeatError::BadMetadata(format!("inconsistent bounds: {v}")));
        }
        Ok(m)
    }

    /// Bytes of the slab's data.
    pub fn data_len(&self) -> u64 {
        (self.row1 - self.row0) * self.nx * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_json_parses_or_fails_cleanly(s in ".{0,200}") {
            if let Ok(v) = serde_json::from_str::<Value>(&s) { let _ = SlabMeta::from_json(&v); }
        }

        #[test]
        fn metadata_round_trips(step in 0u64..1<<40, ranks in 1u64..64, ny in 64u64..1000, nx in 1u64..1000) {
            let rank = step % ranks;
            let m = SlabMeta { step, rank, ranks, nx, ny, row0: rank, row1: rank + 1,
                               min: -1.5, max: 2.25, mean: 0.125 };
            prop_assert_eq!(SlabMeta::from_json(&m.to_json()).expect("round trip"), m);
        }
    }

    #[test]
    fn hostile_bounds_are_refused() {
        let mut v = SlabMeta {
            step: 0,
            rank: 0,
            ranks: 1,
            nx: 4,
            ny: 4,
            row0: 0,
            row1: 4,
            min: 0.0,
            max: 0.0,
            mean: 0.0,
        }
        .to_json();
        v["nx"] = json!(u64::MAX);
        assert!(matches!(
            SlabMeta::from_json(&v),
            Err(HeatError::BadMetadata(_))
        ));
        v["nx"] = json!(4);
        v["row1"] = json!(5);
        assert!(matches!(
            SlabMeta::from_json(&v),
            Err(HeatError::BadMetadata(_))
        ));
    }
}
