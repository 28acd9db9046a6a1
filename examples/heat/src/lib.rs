//! The worked HPC example: a 2-D heat diffusion split across MPI ranks (`heat-sim`) streams
//! one event per rank every few steps into a diaspora topic; `heat-analysis` selects steps by
//! metadata, reassembles them, computes global statistics, writes PNGs and acknowledges so a
//! restarted analysis neither loses nor repeats a step.
//!
//! Pure logic lives here (no I/O): [`field`] (the grid and the stencil), [`meta`] (the event
//! metadata), [`tracker`] (step assembly and the acknowledgement frontier), [`png`] (encoder).

pub mod comm;
pub mod field;
pub mod meta;
pub mod png;
pub mod tracker;

/// Errors of the example.
#[derive(Debug, thiserror::Error)]
pub enum HeatError {
    /// An event's metadata is not the example's (missing or mistyped field).
    #[error("bad metadata: {0}")]
    BadMetadata(String),
    /// An event's data does not have the size its metadata announces.
    #[error("step {step} rank {rank}: data has {got} bytes, metadata implies {want}")]
    DataSize {
        /// Step of the event.
        step: u64,
        /// Rank of the event.
        rank: u64,
        /// Bytes received.
        got: u64,
        /// Bytes expected.
        want: u64,
    },
    /// Bad command-line value.
    #[error("bad argument: {0}")]
    BadArgument(String),
    /// The stream API failed.
    #[error(transparent)]
    Api(#[from] diaspora_api::Error),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Opens the driver named by the command line: `--root DIR` (files) or `--group-file G`
/// (fabric, feature `fabric`).
pub fn open_driver(
    root: &Option<String>,
    group_file: &Option<String>,
) -> Result<diaspora_api::Driver, HeatError> {
    use diaspora_api::{json, Driver};
    match (root, group_file) {
        (Some(root), None) => {
            diaspora_driver_files::register();
            Ok(Driver::new("files", json!({ "root_path": root }))?)
        }
        #[cfg(feature = "fabric")]
        (None, Some(g)) => {
            diaspora_driver_fabric::register();
            Ok(Driver::new("fabric", json!({ "group_file": g }))?)
        }
        _ => Err(HeatError::BadArgument(
            "give --root DIR (files driver) or --group-file G (fabric driver, feature `fabric`)"
                .into(),
        )),
    }
}
