//! Builds the XDP program (`ebpf/program`) for the bpf target and leaves it in `OUT_DIR` for
//! `ratelimit::ebpf` to embed, only with feature `ebpf`. Without the feature it does nothing, so a
//! plain `cargo build` needs neither bpf-linker nor rust-src (see `ebpf/README.md`).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // I/O: build script

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "ebpf")]
    ebpf::build();
}

#[cfg(feature = "ebpf")]
mod ebpf {
    use std::env;

    pub(super) fn build() {
        // On a stable toolchain, `-Z build-std=core` (needed: there is no prebuilt core for the
        // bpf target) requires RUSTC_BOOTSTRAP=1. aya-build passes it on to the cargo it runs.
        println!("cargo:rerun-if-env-changed=RUSTC_BOOTSTRAP");
        if env::var_os("RUSTC_BOOTSTRAP").is_none() {
            // Edition 2021: `set_var` is safe; this build script is single-threaded here.
            env::set_var("RUSTC_BOOTSTRAP", "1");
        }
        // Build the program with the toolchain that builds us (rustup sets RUSTUP_TOOLCHAIN).
        println!("cargo:rerun-if-env-changed=RUSTUP_TOOLCHAIN");
        let toolchain = env::var("RUSTUP_TOOLCHAIN").unwrap_or_else(|_| "stable".to_owned());
        let root_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../ebpf/program");
        // aya-build runs `cargo build --package relay-ebpf` in our working directory. The program
        // is not a member of the relay's workspace (it only builds for the bpf target), so run it
        // from the program's own directory, where it is the root package with its own lock file.
        if let Err(e) = env::set_current_dir(root_dir) {
            panic!("cannot enter {root_dir}: {e}");
        }
        let package = aya_build::Package {
            name: "relay-ebpf",
            root_dir,
            ..Default::default()
        };
        if let Err(e) = aya_build::build_ebpf([package], aya_build::Toolchain::Custom(&toolchain)) {
            panic!(
                "building the XDP program failed: {e:#}\n\
                 (run ebpf/setup-toolchain.sh, or build without feature `ebpf`)"
            );
        }
    }
}
