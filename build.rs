//! Compiles csrc/cnnrs_ext.cpp, the C++ shim for the libtorch features tch
//! 0.24 does not expose (autocast for any device and dtype, per-model random
//! generators), against the libtorch that torch-sys found.
//!
//! torch-sys (`links = "tch"`) prints `cargo:libtorch_lib=<dir>`; Cargo hands
//! that only to the build scripts of packages that depend on torch-sys
//! directly, as `DEP_TCH_LIBTORCH_LIB`, which is why Cargo.toml names
//! torch-sys beside tch. The headers sit next to that lib dir, in the layout
//! of both the pip torch package and the libtorch zip.
//!
//! No rpath: Cargo's `rustc-link-arg-tests` reaches only integration tests
//! (cargo#10937) and fails the build when there are none, and
//! `rustc-link-arg` would also stamp the Python extension, which finds
//! libtorch because `import torch` loaded it first. `cargo test` needs
//! `LD_LIBRARY_PATH=<torch>/lib`, as before.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=csrc/cnnrs_ext.cpp");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");

    let lib = env::var_os("DEP_TCH_LIBTORCH_LIB")
        .map(PathBuf::from)
        .expect(
            "DEP_TCH_LIBTORCH_LIB is not set: torch-sys must be a direct dependency and find \
         libtorch (set LIBTORCH_USE_PYTORCH=1 with torch installed, or LIBTORCH)",
        );
    let root = lib
        .parent()
        .expect("the libtorch lib dir has a parent")
        .to_path_buf();
    let include = root.join("include");
    let api_include = include.join("torch/csrc/api/include");
    assert!(
        include.join("ATen/core/Tensor.h").exists(),
        "no libtorch headers in {}",
        include.display()
    );
    // torch-sys asks Python for this when LIBTORCH_USE_PYTORCH is set but
    // does not pass it on. Our pip torch 2.11 uses the new ABI
    // (torch._C._GLIBCXX_USE_CXX11_ABI is True), as do the cxx11 libtorch
    // zips; 1 is torch-sys's own default too.
    let cxx11_abi = env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_owned());

    let mut build = cc::Build::new();
    build
        .cpp(true)
        .pic(true)
        .file("csrc/cnnrs_ext.cpp")
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={cxx11_abi}"))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .warnings(true)
        .extra_warnings(true);
    // -isystem: warnings in our file, none from libtorch's headers.
    for dir in [&include, &api_include] {
        build.flag("-isystem").flag(dir.display().to_string());
    }
    build.compile("cnnrs_ext");
}
