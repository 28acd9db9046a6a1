//! Results of a phase, their text and JSON rendering, medians and peak memory.

use serde_json::json;

use crate::ceiling::{Ceiling, Side};
use crate::histogram::Histogram;
use crate::netceiling::NetCeiling;

/// What one phase of one run measured.
#[derive(Clone, Debug, PartialEq)]
pub struct PhaseResult {
    /// "produce" or "consume".
    pub phase: &'static str,
    /// Events pushed or pulled.
    pub events: u64,
    /// Metadata plus data bytes pushed or pulled.
    pub bytes: u64,
    /// Wall-clock time of the phase.
    pub seconds: f64,
    /// Peak resident set size during the phase, in KiB (if the platform reports it).
    pub peak_rss_kib: Option<u64>,
    /// The ceiling measured in the same run, and the side of it this phase is compared with
    /// (files driver; `None` for other drivers or with `--no-ceiling`).
    pub ceiling: Option<(Side, Ceiling)>,
    /// The raw-read ceiling measured in the same run (fabric driver with data; `None`
    /// otherwise or with `--no-ceiling`).
    pub net_ceiling: Option<NetCeiling>,
    /// Wall-clock start of the phase, nanoseconds since the Unix epoch (to aggregate ranks).
    pub start_unix_ns: u64,
    /// Push latencies of the sampled pushes (produce only).
    pub push_latency: Option<Histogram>,
}

impl PhaseResult {
    /// Events per second.
    pub fn events_per_sec(&self) -> f64 {
        rate(self.events as f64, self.seconds)
    }

    /// MiB (metadata + data) per second.
    pub fn mib_per_sec(&self) -> f64 {
        rate(self.bytes as f64 / (1024.0 * 1024.0), self.seconds)
    }

    /// Bytes (metadata + data) per second.
    pub fn bytes_per_sec(&self) -> f64 {
        rate(self.bytes as f64, self.seconds)
    }

    /// This phase's speed as a fraction of its ceiling, if one was measured.
    pub fn ceiling_ratio(&self) -> Option<f64> {
        let (side, c) = self.ceiling.as_ref()?;
        Some(c.ratio(*side, self.bytes_per_sec()))
    }

    /// This phase's speed as fractions of the raw reads into reused buffers and into fresh
    /// memory, if they were measured.
    pub fn net_ceiling_ratios(&self) -> Option<(f64, f64)> {
        Some(self.net_ceiling.as_ref()?.ratios(self.bytes_per_sec()))
    }

    /// Push latency quantile `q` in microseconds, if measured.
    pub fn latency_us(&self, q: f64) -> Option<f64> {
        self.push_latency
            .as_ref()
            .and_then(|h| h.quantile(q))
            .map(|ns| ns as f64 / 1000.0)
    }

    /// One human-readable line; `label` is e.g. "run 1/3" or "median".
    pub fn text(&self, label: &str) -> String {
        let rss = match self.peak_rss_kib {
            Some(k) => format!("{:.1} MiB", k as f64 / 1024.0),
            None => "n/a".to_owned(),
        };
        let ratio = match (&self.ceiling, self.ceiling_ratio()) {
            (Some((side, _)), Some(r)) => {
                format!("  {:.1}% of {} ceiling", r * 100.0, side_name(*side))
            }
            _ => String::new(),
        };
        let net = match self.net_ceiling_ratios() {
            Some((reused, fresh)) => format!(
                "  {:.1}% of raw fi_read (reused buffers), {:.1}% (fresh memory)",
                reused * 100.0,
                fresh * 100.0
            ),
            None => String::new(),
        };
        let latency = match (self.latency_us(0.5), self.latency_us(0.99)) {
            (Some(p50), Some(p99)) => format!("  push p50 {p50:.0} us p99 {p99:.0} us"),
            _ => String::new(),
        };
        format!(
            "{label:>9} {:<8} {:>10} events {:>9.3} s {:>12.0} events/s {:>11.2} MiB/s  peak RSS {rss}{latency}{ratio}{net}",
            self.phase,
            self.events,
            self.seconds,
            self.events_per_sec(),
            self.mib_per_sec(),
        )
    }

    /// One JSON object; `label` is "run" (with `run` set) or "median".
    pub fn json(&self, label: &str, run: Option<u64>, config: &serde_json::Value) -> String {
        json!({
            "kind": label,
            "run": run,
            "phase": self.phase,
            "events": self.events,
            "bytes": self.bytes,
            "seconds": self.seconds,
            "events_per_sec": self.events_per_sec(),
            "mib_per_sec": self.mib_per_sec(),
            "peak_rss_kib": self.peak_rss_kib,
            "ceiling": self.ceiling.as_ref().map(|(side, c)| {
                let mut j = c.json();
                j["compared_with"] = side_name(*side).into();
                j
            }),
            "ceiling_ratio": self.ceiling_ratio(),
            "net_ceiling": self.net_ceiling.as_ref().map(NetCeiling::json),
            "net_ceiling_ratio": self.net_ceiling_ratios().map(|(reused, fresh)| {
                json!({"reused": reused, "fresh": fresh})
            }),
            "push_p50_us": self.latency_us(0.5),
            "push_p99_us": self.latency_us(0.99),
            "config": config,
        })
        .to_string()
    }
}

fn side_name(side: Side) -> &'static str {
    match side {
        Side::Write => "write",
        Side::Read => "read",
    }
}

fn rate(amount: f64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        amount / seconds
    } else {
        f64::INFINITY
    }
}

/// The run with the median duration (the lower middle one for an even count), with the
/// largest peak RSS of all runs. `None` if `runs` is empty.
pub fn median(runs: &[PhaseResult]) -> Option<PhaseResult> {
    let mut sorted: Vec<&PhaseResult> = runs.iter().collect();
    sorted.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
    let mid = *sorted.get((sorted.len().checked_sub(1)?) / 2)?;
    let mut m = mid.clone();
    m.peak_rss_kib = runs.iter().filter_map(|r| r.peak_rss_kib).max();
    Some(m)
}

/// Peak resident set size of this process in KiB (`VmHWM` of `/proc/self/status`).
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Nanoseconds since the Unix epoch.
pub fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Resets the peak RSS to the current RSS (Linux ≥ 4.0), so each phase reports its own peak.
/// Without it the figure is the process-wide peak so far.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(seconds: f64, rss: u64) -> PhaseResult {
        PhaseResult {
            phase: "produce",
            events: 1000,
            bytes: 1024 * 1024,
            seconds,
            peak_rss_kib: Some(rss),
            ceiling: None,
            net_ceiling: None,
            start_unix_ns: 0,
            push_latency: None,
        }
    }

    #[test]
    fn median_picks_middle_duration_and_max_rss() {
        let m = median(&[r(3.0, 10), r(1.0, 30), r(2.0, 20)]).expect("some");
        assert_eq!(m.seconds, 2.0);
        assert_eq!(m.peak_rss_kib, Some(30));
        assert_eq!(median(&[r(2.0, 1), r(1.0, 1)]).expect("some").seconds, 1.0);
        assert!(median(&[]).is_none());
    }

    #[test]
    fn rates() {
        let x = r(0.5, 1);
        assert_eq!(x.events_per_sec(), 2000.0);
        assert_eq!(x.mib_per_sec(), 2.0);
    }

    #[test]
    fn results_show_their_ratio_to_the_ceiling() {
        let mut x = r(0.5, 1);
        assert_eq!(x.ceiling_ratio(), None);
        assert!(!x.text("median").contains("ceiling"));
        assert!(x
            .json("median", None, &json!({}))
            .contains("\"ceiling_ratio\":null"));
        x.ceiling = Some((
            Side::Write,
            Ceiling {
                dir: "/x".into(),
                bytes: 1024 * 1024,
                call_size: 1 << 20,
                write_seconds: 0.25,
                read_seconds: 1.0,
                resident_after_write: Some(1.0),
            },
        ));
        // 2 MiB/s against a 4 MiB/s write ceiling.
        assert_eq!(x.ceiling_ratio(), Some(0.5));
        assert!(
            x.text("median").ends_with("50.0% of write ceiling"),
            "{}",
            x.text("median")
        );
        let j: serde_json::Value =
            serde_json::from_str(&x.json("run", Some(0), &json!({}))).expect("json");
        assert_eq!(j["ceiling_ratio"], 0.5);
        assert_eq!(j["ceiling"]["compared_with"], "write");
        assert_eq!(j["ceiling"]["write_mib_per_sec"], 4.0);
        assert_eq!(j["ceiling"]["fit_in_page_cache"], true);
    }

    #[test]
    fn rss_is_readable_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(peak_rss_kib().is_some_and(|k| k > 0));
        }
    }
}
