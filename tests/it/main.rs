//! End-to-end tests: the real `mirror` binary against real registries.
//!
//! Every test starts its own `docker-registry` processes (and, where it needs
//! them, a recording/fault-injecting proxy or a token server) from
//! `mirror-testkit`, seeds them with deterministic images, runs
//! `target/debug/mirror` as a child process and then checks what landed at the
//! destination with the test kit's own client and, for the main cases, with
//! skopeo. Exit codes, stderr and the `--json` report are asserted too, but a
//! test never trusts the binary's word alone.
//!
//! Run with `cargo test --test it -- --test-threads=4`.

mod airgap;
mod auth;
mod copy;
mod daemon;
mod ecr;
mod engine;
mod errors;
mod fault_matrix;
mod faults;
mod fixture;
mod hostile;
mod inspect;
mod large;
mod layout;
mod mounts;
mod platforms;
mod referrers;
mod support;
mod sync;
mod tls;
