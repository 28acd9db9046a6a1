//! Raw RMA read ceiling between two endpoints of this process (see `diaspora_fabric::ceiling`).
//!
//! ```text
//! cargo run --release -p diaspora-fabric --example read_ceiling -- [PROVIDER [SIZE [IN_FLIGHT [BYTES [reused|fresh|fresh-populate]]]]]
//! ```

use std::time::Duration;

use diaspora_fabric::ceiling::{measure_read, Landing, ReadSpec};

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, d: &str| a.get(i).cloned().unwrap_or_else(|| d.to_owned());
    let num = |i: usize, d: &str| -> u64 {
        let v = arg(i, d);
        v.parse().unwrap_or_else(|_| {
            eprintln!("argument {}: {v:?} is not a number", i + 1);
            std::process::exit(2)
        })
    };
    let landing = match arg(4, "reused").as_str() {
        "reused" => Landing::Reused,
        "fresh" | "fresh-populate" => Landing::Fresh,
        other => {
            eprintln!("landing {other:?}: reused or fresh");
            std::process::exit(2)
        }
    };
    let spec = ReadSpec {
        provider: arg(0, "tcp;ofi_rxm"),
        size: num(1, "65536") as usize,
        in_flight: num(2, "8") as usize,
        bytes: num(3, "1073741824"),
        landing,
        deadline: Duration::from_secs(120),
        populate: arg(4, "reused") == "fresh-populate",
    };
    match measure_read(&spec) {
        Ok(c) => println!(
            "{} {} B x {} {}{}: {} bytes in {:.3} s, {:.3} GiB/s",
            spec.provider,
            spec.size,
            spec.in_flight,
            landing.name(),
            if spec.populate { " (populated)" } else { "" },
            c.bytes,
            c.seconds,
            c.bytes_per_sec() / (1u64 << 30) as f64
        ),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1)
        }
    }
}
