//! Raw `fi_read` bandwidth on a provider, measured by the fabric benchmark
//! (`diaspora-fabric-bench` of `diaspora-rpc`, run as a child process and parsed, so its
//! code is reused, not copied).

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::procs::{scrubbed, tail, wait_until};

/// One `read` line of the fabric benchmark.
#[derive(Clone, Debug, PartialEq)]
pub struct RawRead {
    /// Provider.
    pub provider: String,
    /// Bytes per read.
    pub size: u64,
    /// Reads in flight.
    pub qd: u32,
    /// Raw `fi_read` GiB/s.
    pub raw_gib: f64,
    /// The engine with its progress thread, GiB/s.
    pub engine_gib: f64,
    /// The engine with inline progress, GiB/s.
    pub inline_gib: f64,
}

impl RawRead {
    /// As JSON.
    pub fn json(&self) -> Value {
        json!({"provider": self.provider, "size": self.size, "qd": self.qd,
               "raw_gib_s": self.raw_gib, "engine_gib_s": self.engine_gib,
               "inline_gib_s": self.inline_gib})
    }
}

/// `4KiB`, `64KiB`, `1MiB`, `8MiB`, `64B` as bytes.
fn parse_size(s: &str) -> Option<u64> {
    let (num, mul) = if let Some(n) = s.strip_suffix("MiB") {
        (n, 1u64 << 20)
    } else if let Some(n) = s.strip_suffix("KiB") {
        (n, 1 << 10)
    } else {
        (s.strip_suffix('B')?, 1)
    };
    num.parse::<u64>().ok()?.checked_mul(mul)
}

/// The `read` lines of the fabric benchmark's output:
/// `provider read size qd raw engine inline eng% inl%`.
pub fn parse(output: &str) -> Vec<RawRead> {
    output
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 7 || f[1] != "read" {
                return None;
            }
            Some(RawRead {
                provider: f[0].to_owned(),
                size: parse_size(f[2])?,
                qd: f[3].parse().ok()?,
                raw_gib: f[4].parse().ok()?,
                engine_gib: f[5].parse().ok()?,
                inline_gib: f[6].parse().ok()?,
            })
        })
        .collect()
}

/// Runs `bin --secs S --providers P` (bounded by `timeout`) and returns its read lines.
pub fn measure(
    bin: &Path,
    provider: &str,
    secs: f64,
    log: &Path,
    timeout: Duration,
) -> Result<Vec<RawRead>, String> {
    let out = std::fs::File::create(log).map_err(|e| format!("creating {}: {e}", log.display()))?;
    let err = out
        .try_clone()
        .map_err(|e| format!("{}: {e}", log.display()))?;
    let mut child = scrubbed(bin)
        .args(["--secs", &secs.to_string(), "--providers", provider])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("starting {}: {e}", bin.display()))?;
    let st = wait_until(&mut child, Instant::now() + timeout)?;
    if !st.success() {
        return Err(format!(
            "{} --providers {provider} exited with {st}:\n{}",
            bin.display(),
            tail(log, 8)
        ));
    }
    let text = std::fs::read_to_string(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let rows = parse(&text);
    if rows.is_empty() {
        return Err(format!(
            "{} --providers {provider} printed no read figures:\n{}",
            bin.display(),
            tail(log, 8)
        ));
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_fabric_bench_output() {
        let out = "# diaspora-fabric-bench: 1 s per case\n\
            provider     test    size  qd        raw     engine     inline eng/raw inl/raw\n\
            tcp;ofi_rxm  read   64KiB   8      3.520      2.120      3.230     60%     92%\n\
            tcp;ofi_rxm  rpc      64B   1      18877      15801      13943     84%     74%\n\
            shm          read    1MiB   1      6.200      7.280      9.500    117%    153%\n\
            garbage line\n";
        let rows = parse(out);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].provider, "tcp;ofi_rxm");
        assert_eq!((rows[0].size, rows[0].qd), (65536, 8));
        assert_eq!(rows[0].raw_gib, 3.52);
        assert_eq!(rows[1].size, 1 << 20);
        assert_eq!(parse_size("64B"), Some(64));
        assert_eq!(parse_size("xKiB"), None);
    }
}
