//! Empty on purpose: the XDP program is the `relay-ebpf` binary (`src/main.rs`), built for the
//! bpf target by `relay/build.rs`. This library target only lets the relay list this package as a
//! build-dependency, so that cargo rebuilds the relay when the program changes.
#![no_std]
