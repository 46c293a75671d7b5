//! Access to the `apiserver-guard` binary under test, run inside a namespace.

use std::process::Output;

use super::netns::Netns;

/// Path of the binary built by cargo for this test run.
pub fn guard_bin() -> &'static str {
    env!("CARGO_BIN_EXE_apiserver-guard")
}

/// Run `apiserver-guard args...` inside `ns` and wait for it.
pub fn guard(ns: &Netns, args: &[&str]) -> Output {
    let mut argv = vec![guard_bin()];
    argv.extend_from_slice(args);
    ns.run(&argv)
}

/// Start `apiserver-guard args...` in the background inside `ns` (e.g. as a
/// daemon); stop it with `ns.stop(pid, grace)`, read it with `ns.output_of(pid)`.
/// It is killed when `ns` is dropped.
pub fn guard_spawn(ns: &Netns, args: &[&str]) -> u32 {
    let mut argv = vec![guard_bin()];
    argv.extend_from_slice(args);
    ns.spawn(&argv)
}
