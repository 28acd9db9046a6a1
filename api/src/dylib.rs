//! Drivers loaded from shared libraries: `Driver::new("name:libname.so", ...)` loads the
//! library and takes driver `name` from it; `Driver::new("name", ...)` with no driver
//! registered under `name` loads `lib<name>.so` from a directory of `LD_LIBRARY_PATH`.
//!
//! # The entry point
//!
//! A driver library is a `cdylib` that exports one C symbol, written by [`export_drivers!`](crate::export_drivers!):
//!
//! ```text
//! int32_t diaspora_register_driver(const AbiStamp *host, AbiStamp *library,
//!                                  const Registrar *registrar);
//! ```
//!
//! The host passes its own [`AbiStamp`]; the library writes its stamp into `library`, and
//! registers its drivers through `registrar` only if both stamps are equal. It returns
//! [`ENTRY_OK`], [`ENTRY_ABI_MISMATCH`] or [`ENTRY_PANICKED`]. The signature and the stamp's
//! layout (144 bytes, below) never change; everything else may, and the stamp says what.
//!
//! ```text
//! AbiStamp (144 bytes, native endian, repr(C))
//! 0             4          8              16                   48                     144
//! +-------------+----------+--------------+--------------------+----------------------+
//! | abi_version | reserved | layout u64   | api_version [32]   | rustc_version [96]   |
//! | u32         | u32 = 0  | (type sizes) | NUL-padded UTF-8   | NUL-padded UTF-8     |
//! +-------------+----------+--------------+--------------------+----------------------+
//! ```
//!
//! # The Rust-ABI caveat
//!
//! Drivers are Rust trait objects (`Arc<dyn DriverBackend>`, `serde_json::Value`, ...). Rust has
//! no stable ABI, so a library works only if it was built by the same compiler (`rustc -V`,
//! commit included) against the same `diaspora-api` version, with the same dependency types.
//! The stamp checks the first two and a fingerprint of the sizes and alignments of the types
//! that cross the boundary; a library that differs is refused with an error naming both
//! sides, never called into. Libraries are never unloaded (their code backs the drivers).

use std::ffi::c_void;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::driver::{DriverBackend, DriverFactory};
use crate::error::{Error, Result};

/// Version of the driver-library interface (the registrar and the calling convention of
/// driver factories). Bumped on any incompatible change: 2 since `ProducerBackend` gained
/// `push_many` (a library built against version 1 has the older vtable).
pub const DRIVER_ABI_VERSION: u32 = 2;
/// Name of the entry symbol every driver library exports.
pub const ENTRY_SYMBOL: &str = "diaspora_register_driver";
/// The entry registered its drivers.
pub const ENTRY_OK: i32 = 0;
/// The stamps differ: nothing was registered.
pub const ENTRY_ABI_MISMATCH: i32 = 1;
/// A driver registration panicked inside the library.
pub const ENTRY_PANICKED: i32 = 2;

/// Identifies what a side of the driver-library boundary was built with (layout above).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct AbiStamp {
    /// [`DRIVER_ABI_VERSION`].
    pub abi_version: u32,
    /// Zero.
    pub reserved: u32,
    /// Fingerprint of the sizes and alignments of the types crossing the boundary.
    pub layout: u64,
    /// `diaspora-api`'s version, NUL-padded.
    pub api_version: [u8; 32],
    /// `rustc -V` of the compiler that built `diaspora-api`, NUL-padded.
    pub rustc_version: [u8; 96],
}

impl AbiStamp {
    /// The stamp of this build.
    pub fn current() -> Self {
        AbiStamp {
            abi_version: DRIVER_ABI_VERSION,
            reserved: 0,
            layout: layout_fingerprint(),
            api_version: padded(env!("CARGO_PKG_VERSION")),
            rustc_version: padded(env!("DIASPORA_RUSTC_VERSION")),
        }
    }

    /// An all-zero stamp (what a library that wrote nothing leaves).
    pub fn zeroed() -> Self {
        AbiStamp {
            abi_version: 0,
            reserved: 0,
            layout: 0,
            api_version: [0; 32],
            rustc_version: [0; 96],
        }
    }

    /// The stamp in words, for error messages.
    pub fn describe(&self) -> String {
        format!(
            "diaspora-api {}, {}, driver ABI {}, type layout {:016x}",
            unpadded(&self.api_version),
            unpadded(&self.rustc_version),
            self.abi_version,
            self.layout
        )
    }
}

impl std::fmt::Debug for AbiStamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

fn padded<const N: usize>(text: &str) -> [u8; N] {
    let mut out = [0u8; N];
    let n = text.len().min(N);
    out[..n].copy_from_slice(&text.as_bytes()[..n]);
    out
}

fn unpadded(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// FNV-1a over the size and alignment of every type a driver library shares with its host.
fn layout_fingerprint() -> u64 {
    use std::mem::{align_of, size_of};
    let shapes = [
        (
            size_of::<serde_json::Value>(),
            align_of::<serde_json::Value>(),
        ),
        (size_of::<serde_json::Map<String, serde_json::Value>>(), 0),
        (size_of::<Error>(), align_of::<Error>()),
        (size_of::<Result<Arc<dyn DriverBackend>>>(), 0),
        (size_of::<crate::Metadata>(), align_of::<crate::Metadata>()),
        (size_of::<crate::DataView>(), align_of::<crate::DataView>()),
        (size_of::<crate::Event>(), align_of::<crate::Event>()),
        (size_of::<crate::ProducerOptions>(), 0),
        (size_of::<crate::ConsumerOptions>(), 0),
        (size_of::<crate::Future<u64>>(), 0),
        (size_of::<crate::PartitionInfo>(), 0),
        (size_of::<crate::TopicPolicies>(), 0),
        (size_of::<crate::ThreadPool>(), 0),
        (size_of::<bytes::Bytes>(), size_of::<bytes::BytesMut>()),
        (size_of::<crate::DataDescriptor>(), 0),
        (size_of::<Arc<dyn crate::Validator>>(), 0),
        (size_of::<Result<Arc<dyn crate::Serializer>>>(), 0),
    ];
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (a, b) in shapes {
        for v in [a as u64, b as u64] {
            for byte in v.to_le_bytes() {
                h ^= u64::from(byte);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
    }
    h
}

/// What the host hands the library to register drivers with.
#[repr(C)]
pub struct Registrar {
    /// Host state passed back to `register`.
    pub ctx: *mut c_void,
    /// Registers driver `name` (`len` UTF-8 bytes) made by `factory`, a [`DriverFactory`]
    /// (passed as a data pointer: both sides were checked to share the Rust ABI).
    pub register:
        unsafe extern "C" fn(ctx: *mut c_void, name: *const u8, len: usize, factory: *const ()),
}

/// Type of the entry symbol (see the module documentation).
pub type EntryFn = unsafe extern "C" fn(
    host: *const AbiStamp,
    library: *mut AbiStamp,
    registrar: *const Registrar,
) -> i32;

/// The library side of the entry point, called by the function [`export_drivers!`](crate::export_drivers!) writes.
///
/// # Safety
///
/// `host` must point to a readable [`AbiStamp`], `library` to a writable one, and `registrar`
/// to a [`Registrar`] whose `register` may be called with its `ctx` during this call.
pub unsafe fn library_entry(
    host: *const AbiStamp,
    library: *mut AbiStamp,
    registrar: *const Registrar,
    drivers: &[(&str, DriverFactory)],
) -> i32 {
    let mine = AbiStamp::current();
    // SAFETY: the caller guarantees `library` is writable and `host` readable; both are plain
    // data of a layout that never changes.
    let host = unsafe {
        library.write(mine);
        host.read()
    };
    if host != mine {
        return ENTRY_ABI_MISMATCH;
    }
    let registered = std::panic::catch_unwind(|| {
        for (name, factory) in drivers {
            // SAFETY: the caller guarantees `registrar` is valid for this call; the stamps are
            // equal, so the host reads `factory` back as the `DriverFactory` it is.
            unsafe {
                let r = &*registrar;
                (r.register)(r.ctx, name.as_ptr(), name.len(), *factory as *const ());
            }
        }
    });
    match registered {
        Ok(()) => ENTRY_OK,
        Err(_) => ENTRY_PANICKED,
    }
}

/// Exports the entry point of a driver library (a `cdylib`) registering the given drivers:
///
/// ```
/// use std::sync::Arc;
/// use diaspora_api::{DriverBackend, Error, Result, Value};
///
/// fn create(_options: &Value) -> Result<Arc<dyn DriverBackend>> {
///     Err(Error::Unsupported("an example"))
/// }
/// diaspora_api::export_drivers!("mydriver" => create);
/// ```
///
/// Build the crate with `crate-type = ["cdylib"]`; `Driver::new("mydriver:libmycrate.so", ..)`
/// then loads it (see the module documentation for the compiler and version requirement).
#[macro_export]
macro_rules! export_drivers {
    ($($name:literal => $factory:path),+ $(,)?) => {
        /// Entry point of this driver library, see `diaspora_api::dylib`.
        ///
        /// # Safety
        ///
        /// Called by `diaspora_api` with valid pointers, see `diaspora_api::dylib::library_entry`.
        #[no_mangle]
        pub unsafe extern "C" fn diaspora_register_driver(
            host: *const $crate::dylib::AbiStamp,
            library: *mut $crate::dylib::AbiStamp,
            registrar: *const $crate::dylib::Registrar,
        ) -> i32 {
            let drivers: &[(&str, $crate::DriverFactory)] = &[$(($name, $factory)),+];
            // SAFETY: the host's contract for the entry point is the one of `library_entry`.
            unsafe { $crate::dylib::library_entry(host, library, registrar, drivers) }
        }
    };
}

/// Name of the entry symbol every policy library exports (see [`export_policies!`](crate::export_policies!)).
///
/// ```text
/// int32_t diaspora_register_policies(const AbiStamp *host, AbiStamp *library,
///                                    const PolicyRegistrar *registrar);
/// ```
///
/// Same contract as [`ENTRY_SYMBOL`]: the library writes its stamp and registers its policies
/// only if the stamps are equal; it returns [`ENTRY_OK`], [`ENTRY_ABI_MISMATCH`] or
/// [`ENTRY_PANICKED`].
pub const POLICY_ENTRY_SYMBOL: &str = "diaspora_register_policies";

/// What the host hands a policy library to register policies with.
#[repr(C)]
pub struct PolicyRegistrar {
    /// Host state passed back to `register`.
    pub ctx: *mut c_void,
    /// Registers policy `name` (`len` UTF-8 bytes) of kind `kind` (a
    /// [`PolicyKind`](crate::registry::PolicyKind) code) made by `factory`, the kind's factory
    /// function type, passed as a data pointer.
    pub register: unsafe extern "C" fn(
        ctx: *mut c_void,
        kind: u32,
        name: *const u8,
        len: usize,
        factory: *const (),
    ),
}

/// Type of the policy entry symbol.
pub type PolicyEntryFn = unsafe extern "C" fn(
    host: *const AbiStamp,
    library: *mut AbiStamp,
    registrar: *const PolicyRegistrar,
) -> i32;

/// One policy a library exports (written by [`export_policies!`](crate::export_policies!)).
#[derive(Clone, Copy)]
pub enum PolicyExport {
    /// A validator.
    Validator(&'static str, crate::registry::ValidatorFactory),
    /// A partition selector.
    PartitionSelector(&'static str, crate::registry::PartitionSelectorFactory),
    /// A serializer.
    Serializer(&'static str, crate::registry::SerializerFactory),
}

/// The library side of the policy entry point, called by the function
/// [`export_policies!`](crate::export_policies!) writes.
///
/// # Safety
///
/// As [`library_entry`], with a [`PolicyRegistrar`].
pub unsafe fn policy_library_entry(
    host: *const AbiStamp,
    library: *mut AbiStamp,
    registrar: *const PolicyRegistrar,
    policies: &[PolicyExport],
) -> i32 {
    use crate::registry::PolicyKind;
    let mine = AbiStamp::current();
    // SAFETY: the caller guarantees `library` is writable and `host` readable; both are plain
    // data of a layout that never changes.
    let host = unsafe {
        library.write(mine);
        host.read()
    };
    if host != mine {
        return ENTRY_ABI_MISMATCH;
    }
    let registered = std::panic::catch_unwind(|| {
        for p in policies {
            let (kind, name, factory) = match *p {
                PolicyExport::Validator(n, f) => (PolicyKind::Validator, n, f as *const ()),
                PolicyExport::PartitionSelector(n, f) => {
                    (PolicyKind::PartitionSelector, n, f as *const ())
                }
                PolicyExport::Serializer(n, f) => (PolicyKind::Serializer, n, f as *const ()),
            };
            // SAFETY: the caller guarantees `registrar` is valid for this call; the stamps are
            // equal, so the host reads `factory` back as the factory type `kind` says.
            unsafe {
                let r = &*registrar;
                (r.register)(r.ctx, kind as u32, name.as_ptr(), name.len(), factory);
            }
        }
    });
    match registered {
        Ok(()) => ENTRY_OK,
        Err(_) => ENTRY_PANICKED,
    }
}

/// Exports the entry point of a policy library (a `cdylib`) registering user-defined
/// validators, partition selectors and serializers, as upstream's `DIASPORA_REGISTER_*`:
///
/// ```
/// use std::sync::Arc;
/// use diaspora_api::{DataView, Error, Metadata, Result, Validator, Value};
///
/// struct Energy { max: f64 }
/// impl Validator for Energy {
///     fn validate(&self, m: &Metadata, _: &DataView) -> Result<()> {
///         match m.json()?.get("energy").and_then(Value::as_f64) {
///             Some(e) if e <= self.max => Ok(()),
///             _ => Err(Error::ValidationFailed(format!("field \"energy\" must be <= {}", self.max))),
///         }
///     }
/// }
/// fn energy(spec: &Value) -> Result<Arc<dyn Validator>> {
///     let max = spec.get("energy_max").and_then(Value::as_f64).unwrap_or(100.0);
///     Ok(Arc::new(Energy { max }))
/// }
/// diaspora_api::export_policies!(Validator "energy_validator" => energy);
/// ```
///
/// A topic then names it as `{"validator": {"type": "energy_validator:libenergy.so",
/// "energy_max": 50}}`. Kinds are `Validator`, `PartitionSelector` and `Serializer`. A library
/// may export drivers ([`export_drivers!`](crate::export_drivers!)) as well.
#[macro_export]
macro_rules! export_policies {
    ($($kind:ident $name:literal => $factory:path),+ $(,)?) => {
        /// Policy entry point of this library, see `diaspora_api::dylib`.
        ///
        /// # Safety
        ///
        /// Called by `diaspora_api` with valid pointers, see
        /// `diaspora_api::dylib::policy_library_entry`.
        #[no_mangle]
        pub unsafe extern "C" fn diaspora_register_policies(
            host: *const $crate::dylib::AbiStamp,
            library: *mut $crate::dylib::AbiStamp,
            registrar: *const $crate::dylib::PolicyRegistrar,
        ) -> i32 {
            let policies: &[$crate::dylib::PolicyExport] =
                &[$($crate::dylib::PolicyExport::$kind($name, $factory)),+];
            // SAFETY: the host's contract for the entry point is the one of
            // `policy_library_entry`.
            unsafe { $crate::dylib::policy_library_entry(host, library, registrar, policies) }
        }
    };
}

/// Libraries loaded so far; never unloaded, since registered factories point into them.
fn loaded() -> &'static Mutex<Vec<libloading::Library>> {
    static LOADED: Mutex<Vec<libloading::Library>> = Mutex::new(Vec::new());
    &LOADED
}

/// Loads the driver library `library` (a path, or a file name the dynamic loader searches
/// for) and registers the drivers it exports. Returns their names.
pub fn load_driver_library(library: &str) -> Result<Vec<String>> {
    load_driver_library_as(library, AbiStamp::current())
}

/// Opens `library` and finds its entry `symbol`; the error says which library and why.
fn open_entry(library: &str, symbol: &str) -> Result<(libloading::Library, *const ())> {
    let fail = |reason: String| Error::DriverLibrary {
        library: library.to_owned(),
        reason,
    };
    if library.is_empty() {
        return Err(fail("empty library name".into()));
    }
    // SAFETY: loading runs the library's initializers; a driver or policy library is trusted
    // code, as any library the program links. Nothing of it is called before the stamps are
    // compared.
    let lib = unsafe { libloading::Library::new(library) }.map_err(|e| fail(e.to_string()))?;
    let entry = {
        let with_nul = format!("{symbol}\0");
        // SAFETY: the symbol is only read as an address here; its type is fixed by the
        // caller's entry type (module docs).
        let entry = unsafe { lib.get::<*const ()>(with_nul.as_bytes()) }.map_err(|e| {
            fail(format!(
                "no symbol {symbol} (not a diaspora {} library, or not built with \
                 diaspora_api::{}!): {e}",
                if symbol == ENTRY_SYMBOL {
                    "driver"
                } else {
                    "policy"
                },
                if symbol == ENTRY_SYMBOL {
                    "export_drivers"
                } else {
                    "export_policies"
                },
            ))
        })?;
        // `Symbol<*const ()>` derefs to the symbol's address.
        *entry
    };
    Ok((lib, entry))
}

/// Turns an entry's return code and stamp into the error of a refused library.
fn check_entry(
    library: &str,
    symbol: &str,
    code: i32,
    theirs: &AbiStamp,
    host: &AbiStamp,
) -> Result<()> {
    let fail = |reason: String| Error::DriverLibrary {
        library: library.to_owned(),
        reason,
    };
    if theirs != host || code == ENTRY_ABI_MISMATCH {
        return Err(fail(format!(
            "built for another ABI: the library has {}, this program has {} (rebuild the \
             library with the same compiler and diaspora-api version)",
            theirs.describe(),
            host.describe()
        )));
    }
    if code != ENTRY_OK {
        return Err(fail(format!(
            "{symbol} failed (code {code}{})",
            if code == ENTRY_PANICKED {
                ": a registration panicked"
            } else {
                ""
            }
        )));
    }
    Ok(())
}

/// [`load_driver_library`] presenting `host` as this program's stamp: lets tests play a host
/// built differently and check that a real library refuses it.
#[doc(hidden)]
pub fn load_driver_library_as(library: &str, host: AbiStamp) -> Result<Vec<String>> {
    let (lib, entry) = open_entry(library, ENTRY_SYMBOL)?;
    // SAFETY: `EntryFn` is the stable signature of the entry symbol (module docs).
    let entry = unsafe { std::mem::transmute::<*const (), EntryFn>(entry) };
    let mut theirs = AbiStamp::zeroed();
    let mut found: Vec<(String, *const ())> = Vec::new();
    let registrar = Registrar {
        ctx: (&mut found as *mut Vec<(String, *const ())>).cast(),
        register: collect,
    };
    // SAFETY: the pointers are valid for the call: `host` and `theirs` are stamps on our stack,
    // `registrar.ctx` is `found`, which `collect` alone uses during the call.
    let code = unsafe { entry(&host, &mut theirs, &registrar) };
    // Once its code has run, the library is never unloaded, even when it is refused below:
    // `dlclose` of a Rust library that may have registered thread-local destructors or left
    // anything behind is a use-after-unmap waiting to happen.
    loaded().lock().push(lib);
    check_entry(library, ENTRY_SYMBOL, code, &theirs, &host)?;
    let mut names = Vec::with_capacity(found.len());
    for (name, factory) in found {
        // SAFETY: the library's stamp equals ours (same compiler, api version and layouts),
        // and its entry passed a `DriverFactory` as this pointer; the library stays loaded
        // (kept in `loaded()`), so the function it points to stays valid.
        let factory: DriverFactory =
            unsafe { std::mem::transmute::<*const (), DriverFactory>(factory) };
        crate::driver::register_driver(&name, factory);
        names.push(name);
    }
    Ok(names)
}

/// Loads the policy library `library` (a path, or a file name the dynamic loader searches
/// for) and registers the validators, partition selectors and serializers it exports
/// ([`export_policies!`](crate::export_policies!)). Returns what it registered.
pub fn load_policy_library(library: &str) -> Result<Vec<(crate::registry::PolicyKind, String)>> {
    load_policy_library_as(library, AbiStamp::current())
}

/// [`load_policy_library`] presenting `host` as this program's stamp (tests).
#[doc(hidden)]
pub fn load_policy_library_as(
    library: &str,
    host: AbiStamp,
) -> Result<Vec<(crate::registry::PolicyKind, String)>> {
    use crate::registry::{self, PolicyKind};
    let (lib, entry) = open_entry(library, POLICY_ENTRY_SYMBOL)?;
    // SAFETY: `PolicyEntryFn` is the stable signature of the policy entry symbol.
    let entry = unsafe { std::mem::transmute::<*const (), PolicyEntryFn>(entry) };
    let mut theirs = AbiStamp::zeroed();
    let mut found: Vec<(u32, String, *const ())> = Vec::new();
    let registrar = PolicyRegistrar {
        ctx: (&mut found as *mut Vec<(u32, String, *const ())>).cast(),
        register: collect_policy,
    };
    // SAFETY: as in `load_driver_library_as`, with `collect_policy` using `found`.
    let code = unsafe { entry(&host, &mut theirs, &registrar) };
    // Never unloaded once its code ran, as for driver libraries.
    loaded().lock().push(lib);
    check_entry(library, POLICY_ENTRY_SYMBOL, code, &theirs, &host)?;
    let mut out = Vec::with_capacity(found.len());
    for (code, name, factory) in found {
        let Some(kind) = PolicyKind::from_code(code) else {
            return Err(Error::DriverLibrary {
                library: library.to_owned(),
                reason: format!("it registers \"{name}\" with unknown policy kind {code}"),
            });
        };
        match kind {
            PolicyKind::Validator => {
                // SAFETY: the stamps are equal, and `policy_library_entry` passed a
                // `ValidatorFactory` for this kind; the library stays loaded (`loaded()`).
                let f = unsafe {
                    std::mem::transmute::<*const (), registry::ValidatorFactory>(factory)
                };
                registry::register_validator(&name, f);
            }
            PolicyKind::PartitionSelector => {
                // SAFETY: as above, a `PartitionSelectorFactory` for this kind.
                let f = unsafe {
                    std::mem::transmute::<*const (), registry::PartitionSelectorFactory>(factory)
                };
                registry::register_partition_selector(&name, f);
            }
            PolicyKind::Serializer => {
                // SAFETY: as above, a `SerializerFactory` for this kind.
                let f = unsafe {
                    std::mem::transmute::<*const (), registry::SerializerFactory>(factory)
                };
                registry::register_serializer(&name, f);
            }
        }
        out.push((kind, name));
    }
    Ok(out)
}

/// The host side of [`PolicyRegistrar::register`]: collects into the `Vec` at `ctx`.
unsafe extern "C" fn collect_policy(
    ctx: *mut c_void,
    kind: u32,
    name: *const u8,
    len: usize,
    factory: *const (),
) {
    // SAFETY: `ctx` is the `Vec` `load_policy_library_as` passed, alive and not otherwise
    // borrowed during the entry call; `name` points to `len` bytes of the library's literal.
    let (found, name) = unsafe {
        (
            &mut *ctx.cast::<Vec<(u32, String, *const ())>>(),
            std::slice::from_raw_parts(name, len),
        )
    };
    found.push((kind, String::from_utf8_lossy(name).into_owned(), factory));
}

/// The host side of [`Registrar::register`]: collects (name, factory) into the `Vec` at `ctx`.
unsafe extern "C" fn collect(ctx: *mut c_void, name: *const u8, len: usize, factory: *const ()) {
    // SAFETY: `ctx` is the `Vec` `load_driver_library` passed, alive and not otherwise borrowed
    // during the entry call; `name` points to `len` bytes of the library's string literal.
    let (found, name) = unsafe {
        (
            &mut *ctx.cast::<Vec<(String, *const ())>>(),
            std::slice::from_raw_parts(name, len),
        )
    };
    found.push((String::from_utf8_lossy(name).into_owned(), factory));
}

/// Where `Driver::new(name)` looks for `lib<name>.so`: the directories of `LD_LIBRARY_PATH`.
pub fn search_path() -> Vec<PathBuf> {
    std::env::var_os("LD_LIBRARY_PATH")
        .map(|v| {
            std::env::split_paths(&v)
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// Finds `lib<name>.so` in `dirs`; `Err` says what was searched.
pub fn find_library(name: &str, dirs: &[PathBuf]) -> std::result::Result<PathBuf, String> {
    let file = format!("lib{name}.so");
    if crate::driver::check_name(name).is_err() {
        return Err(format!("\"{name}\" cannot name a library file"));
    }
    dirs.iter()
        .map(|d| d.join(&file))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            if dirs.is_empty() {
                format!("no {file} searched: LD_LIBRARY_PATH is not set")
            } else {
                let list: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
                format!("no {file} in LD_LIBRARY_PATH ({})", list.join(":"))
            }
        })
}

/// Loads `path` for driver `name` and checks that it registered `name`.
pub(crate) fn load_for(name: &str, library: &Path) -> Result<()> {
    let shown = library.display().to_string();
    let names = load_driver_library(&shown)?;
    if names.iter().any(|n| n == name) {
        Ok(())
    } else {
        Err(Error::DriverLibrary {
            library: shown,
            reason: format!(
                "it registers no driver \"{name}\" (it registers: {})",
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                }
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_compare_everything_and_describe_both_sides() {
        let a = AbiStamp::current();
        assert_eq!(a, AbiStamp::current());
        assert_eq!(
            std::mem::size_of::<AbiStamp>(),
            144,
            "the stamp layout is frozen"
        );
        let mut b = a;
        b.abi_version += 1;
        assert_ne!(a, b);
        let mut c = a;
        c.rustc_version = padded("rustc 0.0.1 (other)");
        assert_ne!(a, c);
        assert!(
            c.describe().contains("rustc 0.0.1 (other)"),
            "{}",
            c.describe()
        );
        assert!(a.describe().contains(env!("CARGO_PKG_VERSION")));
        assert!(
            a.describe().starts_with("diaspora-api "),
            "{}",
            a.describe()
        );
        assert!(!unpadded(&a.rustc_version).is_empty());
    }

    #[test]
    fn library_entry_refuses_another_stamp_and_registers_nothing() {
        fn factory(_: &serde_json::Value) -> Result<Arc<dyn DriverBackend>> {
            Err(Error::Unsupported("test"))
        }
        unsafe extern "C" fn never(_: *mut c_void, _: *const u8, _: usize, _: *const ()) {
            panic!("registered despite an ABI mismatch");
        }
        let mut host = AbiStamp::current();
        host.api_version = padded("0.0.0-other");
        let mut lib = AbiStamp::zeroed();
        let registrar = Registrar {
            ctx: std::ptr::null_mut(),
            register: never,
        };
        // SAFETY: valid stamps on the stack, a registrar that is never called.
        let code = unsafe { library_entry(&host, &mut lib, &registrar, &[("x", factory)]) };
        assert_eq!(code, ENTRY_ABI_MISMATCH);
        assert_eq!(
            lib,
            AbiStamp::current(),
            "the library reports its own stamp"
        );
    }

    #[test]
    fn library_search_names_what_it_searched() {
        let dir = std::env::temp_dir();
        let e =
            find_library("no_such_driver_xyz", std::slice::from_ref(&dir)).expect_err("missing");
        assert!(e.contains("libno_such_driver_xyz.so"), "{e}");
        assert!(e.contains(&dir.display().to_string()), "{e}");
        assert!(find_library("x", &[])
            .expect_err("unset")
            .contains("LD_LIBRARY_PATH is not set"));
        assert!(find_library("../x", &[dir]).is_err());
    }

    #[test]
    fn missing_library_is_a_clear_error() {
        let e = load_driver_library("/nonexistent/libnothing.so").expect_err("missing");
        let msg = e.to_string();
        assert!(msg.contains("/nonexistent/libnothing.so"), "{msg}");
    }
}
