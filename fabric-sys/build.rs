//! Generates the libfabric bindings from whatever headers pkg-config points at.
//!
//! * `pkg-config libfabric` finds the headers and the library; `PKG_CONFIG_PATH` selects a custom
//!   install (e.g. a libfabric 2.x prefix).
//! * bindgen's `wrap_static_fns` emits a C file with one exported shim per `static inline` `fi_*`
//!   function found in *those* headers (so nothing here names a symbol that exists in one version
//!   only); `cc` compiles it into `libfabric_shims.a`.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo:rerun-if-changed=helpers.h");
    println!("cargo:rerun-if-changed=helpers.c");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");

    let lib = match pkg_config::Config::new()
        .atleast_version("1.10")
        .probe("libfabric")
    {
        Ok(lib) => lib,
        Err(e) => panic!(
            "fabric-sys: pkg-config could not find libfabric ({e}). Install libfabric-dev \
             (scripts/install-deps.sh) or point PKG_CONFIG_PATH at a libfabric.pc"
        ),
    };

    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let shim_c = out.join("fabric_shims");

    let mut builder = bindgen::Builder::default()
        .header("wrapper.h")
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .allowlist_function("fi_.*|diaspora_fi_.*")
        .allowlist_type("fi_.*|fid_.*|fid")
        .allowlist_var("FI_.*")
        .allowlist_type("fi_addr_t")
        .derive_default(true)
        .derive_debug(true)
        .prepend_enum_name(false)
        .layout_tests(false)
        .wrap_unsafe_ops(true)
        .wrap_static_fns(true)
        .wrap_static_fns_path(&shim_c);
    for path in &lib.include_paths {
        builder = builder.clang_arg(format!("-I{}", path.display()));
    }
    let bindings = builder
        .generate()
        .unwrap_or_else(|e| panic!("fabric-sys: bindgen failed on the libfabric headers: {e}"));
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("fabric-sys: cannot write bindings.rs");

    // bindgen writes `<path>.c`; it includes wrapper.h by absolute path.
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let mut cc = cc::Build::new();
    cc.file(shim_c.with_extension("c"))
        .file(manifest.join("helpers.c"))
        .include(&manifest)
        .warnings(false);
    for path in &lib.include_paths {
        cc.include(path);
    }
    cc.compile("fabric_shims");
}
