//! One log line, one `write(2)`.
//!
//! `eprintln!` writes a formatted line in several pieces (stderr is unbuffered), so the lines
//! of ranks that share a log file (srun, mpirun) interleave mid-line. [`say!`](crate::say!)
//! formats the whole line first and writes it with a single call; lines shorter than
//! `PIPE_BUF` (4 KiB) then never mix, on a pipe or on a shared file.

use std::io::Write;

/// Writes `args` and a newline to stderr in one call (errors ignored, as `eprintln!` panics
/// on them would only lose the log).
pub fn line(args: std::fmt::Arguments<'_>) {
    let mut s = args.to_string();
    s.push('\n');
    let _ = std::io::stderr().lock().write_all(s.as_bytes());
}

/// `eprintln!` whose line is written with one call: see [`line`](crate::say::line).
#[macro_export]
macro_rules! say {
    ($($t:tt)*) => {
        $crate::say::line(format_args!($($t)*))
    };
}
