//! What a comparison writes: CSV, JSON, Markdown and SVG plots.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{json, Value};

use super::{RawRead, Row};
use crate::histogram::Histogram;
use crate::plot::{self, Axis, Panel, Series};

/// Columns of `results.csv`.
pub const CSV_HEADER: &str =
    "driver,provider,storage,case,producers,consumers,events,metadata_size,data_size,\
produce_events_s,produce_mib_s,consume_events_s,consume_mib_s,push_p50_us,push_p99_us,\
client_peak_rss_mib,server_peak_rss_mib,produced,consumed,error";

/// Columns of `raw_fi_read.csv`.
pub const RAW_CSV_HEADER: &str =
    "provider,size,in_flight,raw_gib_s,engine_gib_s,engine_inline_gib_s";

fn f(v: Option<f64>, digits: usize) -> String {
    v.filter(|x| x.is_finite())
        .map_or(String::new(), |x| format!("{x:.digits$}"))
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn mib(kib: Option<f64>) -> Option<f64> {
    kib.map(|k| k / 1024.0)
}

fn csv_line(r: &Row) -> String {
    [
        r.driver.clone(),
        csv_field(r.provider.as_deref().unwrap_or("")),
        r.storage.clone(),
        r.case.clone(),
        r.producers.to_string(),
        r.consumers.to_string(),
        r.events.to_string(),
        r.metadata_size.to_string(),
        r.data_size.to_string(),
        f(r.num("produce", "events_per_sec"), 0),
        f(r.num("produce", "mib_per_sec"), 2),
        f(r.num("consume", "events_per_sec"), 0),
        f(r.num("consume", "mib_per_sec"), 2),
        f(r.num("produce", "push_p50_us"), 1),
        f(r.num("produce", "push_p99_us"), 1),
        f(
            mib(r.num("produce", "peak_rss_kib_max"))
                .into_iter()
                .chain(mib(r.num("consume", "peak_rss_kib_max")))
                .reduce(f64::max),
            1,
        ),
        f(mib(r.server_rss_kib.map(|k| k as f64)), 1),
        f(r.num("produce", "events"), 0),
        f(r.num("consume", "events"), 0),
        csv_field(&r.error.clone().unwrap_or_default().replace('\n', " | ")),
    ]
    .join(",")
}

/// One line for the terminal.
pub fn line(r: &Row) -> String {
    if let Some(e) = &r.error {
        return format!(
            "  {:<10} {:<5} {:>8} B x{} FAILED: {}",
            r.driver,
            r.case,
            r.data_size,
            r.producers,
            e.lines().next().unwrap_or("")
        );
    }
    format!(
        "  {:<10} {:<5} {:>8} B x{}: produce {:>10} ev/s {:>9} MiB/s, consume {:>10} ev/s {:>9} MiB/s, push p50 {} us p99 {} us",
        r.driver,
        r.case,
        r.data_size,
        r.producers,
        f(r.num("produce", "events_per_sec"), 0),
        f(r.num("produce", "mib_per_sec"), 1),
        f(r.num("consume", "events_per_sec"), 0),
        f(r.num("consume", "mib_per_sec"), 1),
        f(r.num("produce", "push_p50_us"), 0),
        f(r.num("produce", "push_p99_us"), 0),
    )
}

fn raw_at(raws: &[RawRead], provider: &str, size: u64, qd: u32) -> Option<f64> {
    raws.iter()
        .find(|x| x.provider == provider && x.size == size && x.qd == qd)
        .map(|x| x.raw_gib * 1024.0)
}

/// Case (b) produce bandwidth against raw `fi_read` of 64 KiB on the same provider, one
/// line per fabric row of case (b) and number of reads in flight.
pub fn ratios(rows: &[Row], raws: &[RawRead]) -> Vec<String> {
    let mut out = Vec::new();
    for r in rows.iter().filter(|r| r.case == "b" && r.error.is_none()) {
        let Some(p) = &r.provider else { continue };
        let Some(produce) = r.num("produce", "mib_per_sec") else {
            continue;
        };
        for qd in [1, 8] {
            if let Some(raw) = raw_at(raws, p, 65536, qd) {
                out.push(format!(
                    "case (b) {} x{}: produce {produce:.1} MiB/s = {:.0}% of raw fi_read 64 KiB with {qd} in flight ({raw:.1} MiB/s)",
                    r.driver,
                    r.producers,
                    100.0 * produce / raw
                ));
            }
        }
    }
    out
}

fn markdown(meta: &Value, rows: &[Row], raws: &[RawRead], errors: &[String]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Driver comparison\n");
    let _ = writeln!(
        s,
        "Command: `{}`  \nHost: {} ({} CPUs), {:.0} s. Fabric rows: one `diaspora-server` per row on 127.0.0.1, storage `{}`, {} progress thread(s). Producers and consumers are separate processes (memory: pushing threads in one process and one consumer). Rates: events (or metadata + data bytes) over the time from the first rank's start to the last rank's end. Push latency: push() to its future complete, sampled. RSS: peak per process, the largest client and the server.\n",
        meta["command"].as_str().unwrap_or(""),
        meta["host"].as_str().unwrap_or(""),
        meta["cpus"],
        meta["seconds"].as_f64().unwrap_or(0.0),
        meta["server_storage"].as_str().unwrap_or(""),
        meta["server_threads"],
    );
    let _ = writeln!(
        s,
        "| driver | case | data | P | events | produce ev/s | produce MiB/s | consume ev/s | consume MiB/s | push p50 µs | push p99 µs | client RSS MiB | server RSS MiB |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let c: Vec<String> = csv_line(r).split(',').map(str::to_owned).collect();
        if r.error.is_some() {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | failed: see results.csv | | | | | | | |",
                r.driver,
                r.case,
                plot::bytes_label(r.data_size as f64),
                r.producers,
                r.events
            );
            continue;
        }
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.driver,
            r.case,
            plot::bytes_label(r.data_size as f64),
            r.producers,
            r.events,
            c.get(9).map_or("", |x| x),
            c.get(10).map_or("", |x| x),
            c.get(11).map_or("", |x| x),
            c.get(12).map_or("", |x| x),
            c.get(13).map_or("", |x| x),
            c.get(14).map_or("", |x| x),
            c.get(15).map_or("", |x| x),
            c.get(16).map_or("", |x| x),
        );
    }
    if !raws.is_empty() {
        let _ = writeln!(
            s,
            "\nRaw `fi_read` (`diaspora-fabric-bench`, same run), GiB/s:\n\n| provider | size | in flight | raw | engine | engine inline |\n|---|---|---|---|---|---|"
        );
        for x in raws {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:.3} | {:.3} | {:.3} |",
                x.provider,
                plot::bytes_label(x.size as f64),
                x.qd,
                x.raw_gib,
                x.engine_gib,
                x.inline_gib
            );
        }
    }
    let r = ratios(rows, raws);
    if !r.is_empty() {
        let _ = writeln!(s);
        for l in r {
            let _ = writeln!(s, "- {l}");
        }
    }
    if !errors.is_empty() {
        let _ = writeln!(s, "\nFailures:\n");
        for e in errors {
            let _ = writeln!(s, "- {}", e.lines().next().unwrap_or(""));
        }
    }
    let _ = writeln!(
        s,
        "\n![throughput](throughput.svg)\n\n![push latency](latency.svg)"
    );
    s
}

/// Drivers in first-appearance order (the same colour in every panel).
fn drivers(rows: &[Row]) -> Vec<String> {
    let mut d: Vec<String> = Vec::new();
    for r in rows {
        if !d.contains(&r.driver) {
            d.push(r.driver.clone());
        }
    }
    d
}

fn throughput_svg(rows: &[Row]) -> String {
    let names = drivers(rows);
    let panel = |phase: &str| Panel {
        title: format!("{phase}: MiB/s against event size (1 producer, 1 consumer)"),
        x_label: "event size (30 B metadata + data)".into(),
        y_label: "MiB/s (metadata + data)".into(),
        x: Axis::Log2Bytes,
        y: Axis::Log10,
        series: names
            .iter()
            .map(|d| Series {
                name: d.clone(),
                points: rows
                    .iter()
                    .filter(|r| &r.driver == d && r.case == "sweep" && r.error.is_none())
                    .filter_map(|r| {
                        Some((
                            (r.metadata_size + r.data_size) as f64,
                            r.num(phase, "mib_per_sec")?,
                        ))
                    })
                    .collect(),
            })
            .collect(),
    };
    plot::svg(&[panel("produce"), panel("consume")])
}

fn latency_svg(rows: &[Row]) -> String {
    let names = drivers(rows);
    let panels: Vec<Panel> = [
        ("a", "30 B metadata"),
        ("b", "64 KiB data"),
        ("c", "1 KiB data"),
    ]
    .iter()
    .map(|(case, what)| Panel {
        title: format!("push latency, case ({case}) {what}, 1 producer"),
        x_label: "push() to future complete (µs)".into(),
        y_label: "fraction of pushes".into(),
        x: Axis::Log10,
        y: Axis::Linear,
        series: names
            .iter()
            .map(|d| Series {
                name: d.clone(),
                points: rows
                    .iter()
                    .find(|r| {
                        &r.driver == d && r.case == *case && r.producers == 1 && r.error.is_none()
                    })
                    .and_then(|r| r.produce.get("push_latency"))
                    .and_then(|h| Histogram::from_json(h).ok())
                    .map(|h| {
                        h.cdf()
                            .into_iter()
                            .map(|(ns, q)| ((ns as f64 / 1000.0).max(0.001), q))
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .collect(),
    })
    .collect();
    plot::svg(&panels)
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// Writes every output file into `out`.
pub fn write_all(
    out: &Path,
    meta: &Value,
    rows: &[Row],
    raws: &[RawRead],
    errors: &[String],
) -> Result<(), String> {
    let mut csv = format!("{CSV_HEADER}\n");
    for r in rows {
        csv.push_str(&csv_line(r));
        csv.push('\n');
    }
    write(&out.join("results.csv"), &csv)?;
    let mut raw_csv = format!("{RAW_CSV_HEADER}\n");
    for x in raws {
        let _ = writeln!(
            raw_csv,
            "{},{},{},{:.4},{:.4},{:.4}",
            csv_field(&x.provider),
            x.size,
            x.qd,
            x.raw_gib,
            x.engine_gib,
            x.inline_gib
        );
    }
    write(&out.join("raw_fi_read.csv"), &raw_csv)?;
    let json_rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "driver": r.driver, "provider": r.provider, "storage": r.storage,
                "case": r.case, "producers": r.producers, "consumers": r.consumers,
                "events": r.events, "metadata_size": r.metadata_size,
                "data_size": r.data_size, "produce": r.produce, "consume": r.consume,
                "server_peak_rss_kib": r.server_rss_kib, "error": r.error,
            })
        })
        .collect();
    let doc = json!({
        "meta": meta,
        "rows": json_rows,
        "raw_fi_read": raws.iter().map(RawRead::json).collect::<Vec<_>>(),
        "ratios": ratios(rows, raws),
        "errors": errors,
    });
    let text = serde_json::to_string_pretty(&doc).map_err(|e| format!("results.json: {e}"))?;
    write(&out.join("results.json"), &format!("{text}\n"))?;
    write(&out.join("results.md"), &markdown(meta, rows, raws, errors))?;
    write(&out.join("throughput.svg"), &throughput_svg(rows))?;
    write(&out.join("latency.svg"), &latency_svg(rows))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_lines_have_every_column_and_quote_errors() {
        let mut r = Row {
            driver: "fabric-tcp".into(),
            provider: Some("tcp;ofi_rxm".into()),
            case: "b".into(),
            produce: json!({"events_per_sec": 10.0, "mib_per_sec": 1.5, "events": 4}),
            ..Row::default()
        };
        assert_eq!(
            csv_line(&r).split(',').count(),
            CSV_HEADER.split(',').count()
        );
        r.error = Some("a, \"b\"\nc".into());
        let l = csv_line(&r);
        assert!(l.ends_with("\"a, \"\"b\"\" | c\""), "{l}");
        let raws = [RawRead {
            provider: "tcp;ofi_rxm".into(),
            size: 65536,
            qd: 8,
            raw_gib: 1.0,
            engine_gib: 1.0,
            inline_gib: 1.0,
        }];
        r.error = None;
        let lines = ratios(&[r], &raws);
        assert_eq!(lines.len(), 1);
        assert!(lines[0].contains("0% of raw"), "{lines:?}");
    }
}
