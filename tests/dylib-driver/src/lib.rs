//! A driver library for the tests of dynamic driver loading (`diaspora_api::dylib`).
//!
//! It exports the files driver under two names: `dyfiles`, loaded with
//! `Driver::new("dyfiles:/path/to/libdiaspora_dylib_driver.so", ...)`, and
//! `diaspora_dylib_driver`, found by `Driver::new("diaspora_dylib_driver", ...)` as
//! `libdiaspora_dylib_driver.so` on `LD_LIBRARY_PATH`. Its copy of the files driver is its own
//! (the host need not link one), which is what a third-party driver library looks like.

use std::sync::Arc;

use diaspora_api::{DriverBackend, Result, Value};
use diaspora_driver_files::{FilesDriver, FilesDriverOptions};

fn create(options: &Value) -> Result<Arc<dyn DriverBackend>> {
    Ok(Arc::new(FilesDriver::new(FilesDriverOptions::from_json(
        options,
    )?)?))
}

diaspora_api::export_drivers!("dyfiles" => create, "diaspora_dylib_driver" => create);

// The worked example of upstream's `topics.rst`: an energy validator, partition selector and
// serializer, loaded by a topic as `"energy_validator:/path/to/libdiaspora_dylib_driver.so"`.

use diaspora_api::{Bytes, DataView, Error, Metadata, PartitionSelector, Serializer, Validator};

/// Accepts events whose metadata has a numeric `energy` of at most `energy_max`.
struct EnergyValidator {
    energy_max: u64,
}

fn energy_of(m: &Metadata) -> Result<u64> {
    m.json()?
        .get("energy")
        .and_then(Value::as_u64)
        .ok_or_else(|| {
            Error::ValidationFailed("field \"energy\" must be a non-negative integer".into())
        })
}

impl Validator for EnergyValidator {
    fn validate(&self, m: &Metadata, _: &DataView) -> Result<()> {
        match energy_of(m)? {
            e if e <= self.energy_max => Ok(()),
            e => Err(Error::ValidationFailed(format!(
                "field \"energy\" is {e}, above energy_max {}",
                self.energy_max
            ))),
        }
    }
}

fn energy_validator(spec: &Value) -> Result<Arc<dyn Validator>> {
    let energy_max = spec
        .get("energy_max")
        .and_then(Value::as_u64)
        .unwrap_or(100);
    Ok(Arc::new(EnergyValidator { energy_max }))
}

/// Sends events to partition `energy * num_partitions / (energy_max + 1)`.
struct EnergyPartitionSelector {
    energy_max: u64,
}

impl PartitionSelector for EnergyPartitionSelector {
    fn select(&self, m: &Metadata, n: usize, requested: Option<usize>) -> Result<usize> {
        if let Some(p) = requested {
            return Ok(p);
        }
        let e = energy_of(m)?.min(self.energy_max);
        Ok((e as usize * n) / (self.energy_max as usize + 1))
    }
}

fn energy_selector(spec: &Value) -> Result<Arc<dyn PartitionSelector>> {
    let energy_max = spec
        .get("energy_max")
        .and_then(Value::as_u64)
        .unwrap_or(100);
    Ok(Arc::new(EnergyPartitionSelector { energy_max }))
}

/// Stores `{"energy": n}` (n < 256) as the single byte n.
struct EnergySerializer;

impl Serializer for EnergySerializer {
    fn serialize(&self, m: &Metadata, out: &mut Vec<u8>) -> Result<()> {
        let e = energy_of(m)?;
        out.push(u8::try_from(e).map_err(|_| Error::ValidationFailed("energy above 255".into()))?);
        Ok(())
    }
    fn deserialize(&self, bytes: Bytes) -> Result<Metadata> {
        match bytes.as_ref() {
            [e] => Ok(Metadata::from_value(serde_json::json!({ "energy": e }))),
            other => Err(Error::Corrupted(format!(
                "an energy event is 1 byte, not {}",
                other.len()
            ))),
        }
    }
}

fn energy_serializer(_spec: &Value) -> Result<Arc<dyn Serializer>> {
    Ok(Arc::new(EnergySerializer))
}

diaspora_api::export_policies!(
    Validator "energy_validator" => energy_validator,
    PartitionSelector "energy_partition_selector" => energy_selector,
    Serializer "energy_serializer" => energy_serializer,
);
