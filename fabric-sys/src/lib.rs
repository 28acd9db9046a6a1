//! Raw libfabric bindings, generated at build time by bindgen from the headers that
//! `pkg-config libfabric` selects (`PKG_CONFIG_PATH` picks a custom install).
//!
//! No policy lives here. The `static inline` calls of the headers (`fi_getinfo` is a real
//! symbol, but `fi_domain`, `fi_cq_read`, `fi_read`, `fi_close`, ... are inline) are reachable
//! under their own names: bindgen's `wrap_static_fns` compiles one C shim per inline function
//! (`<name>__extern`) and links the Rust declaration to it.
//!
//! Fields whose layout differs between versions have C accessors (`helpers.c`):
//! `diaspora_fi_domain_attr_{get,set}_data_progress` (2.x puts `data_progress` in a union).
//!
//! `FI_VERSION(major, minor)` is a macro; [`fi_version_num`] is its Rust form.
//!
//! The safe layer is `diaspora-fabric`.

#![allow(
    non_upper_case_globals,
    non_camel_case_types,
    non_snake_case,
    dead_code
)]
#![allow(clippy::all, clippy::undocumented_unsafe_blocks)]
#![allow(rustdoc::all)]

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));

/// `FI_VERSION(major, minor)` from `rdma/fabric.h`.
pub const fn fi_version_num(major: u32, minor: u32) -> u32 {
    (major << 16) | minor
}

/// `FI_MAJOR(version)`.
pub const fn fi_major(version: u32) -> u32 {
    version >> 16
}

/// `FI_MINOR(version)`.
pub const fn fi_minor(version: u32) -> u32 {
    version & 0xffff
}

/// `FI_ADDR_NOTAVAIL` (`((uint64_t) -1)`, a cast bindgen does not evaluate).
pub const FI_ADDR_NOTAVAIL_VALUE: fi_addr_t = u64::MAX;

/// `FI_KEY_NOTAVAIL` (`((uint64_t) -1)`).
pub const FI_KEY_NOTAVAIL_VALUE: u64 = u64::MAX;
