//! Refused values of the settings that take a fixed set of choices (mode,
//! backend, action, log group, log format), from flags, environment and
//! config file, including variables that are set but empty.

use crate::common::bad_input_cases::*;

/// This topic's refused inputs, each otherwise identical to the good policy
/// with `--backend backend`. Config files are written into `dir`.
pub fn cases(dir: &TempDir, backend: &str) -> Vec<BadCase> {
    let c = CaseBuilder::new(dir, backend);
    let big_log_group = dir.file("big-log-group.toml", "log_group = 70000\n");
    let bool_log_group = dir.file("bool-log-group.toml", "log_group = true\n");
    vec![
        // Unknown enum values: clap usage errors, exit 2 too.
        c.b(
            "--mode overlay",
            &[("--mode", Some("overlay"))],
            &["invalid value 'overlay'", "--mode"],
        ),
        c.b(
            "--backend pf",
            &[("--backend", Some("pf"))],
            &["invalid value 'pf'", "--backend"],
        ),
        c.b(
            "--action accept",
            &[("--action", Some("accept"))],
            &["invalid value 'accept'", "--action"],
        ),
        c.b(
            "--log-group 70000",
            &[("--log-group", Some("70000"))],
            &["--log-group: '70000' is not an NFLOG group", "0..65535", "'off'"],
        ),
        c.b(
            "--log-group on",
            &[("--log-group", Some("on"))],
            &["--log-group: 'on' is not an NFLOG group"],
        ),
        c.be(
            "APISERVER_GUARD_LOG_GROUP=65536",
            &[],
            &[("APISERVER_GUARD_LOG_GROUP", "65536")],
            &["APISERVER_GUARD_LOG_GROUP: '65536' is not an NFLOG group"],
        )
        .without(&["--log-group:"]),
        c.b(
            "config with log_group 70000",
            &[("--config", Some(big_log_group.as_str()))],
            &[&format!("log_group in {big_log_group}: '70000' is not an NFLOG group")],
        ),
        c.b(
            "config with a boolean log_group",
            &[("--config", Some(bool_log_group.as_str()))],
            &[&format!(
                "log_group in {bool_log_group}: expected an NFLOG group number 0..65535 or \"off\", found the boolean true"
            )],
        ),
        c.be(
            "APISERVER_GUARD_MODE=overlay",
            &[("--mode", None)],
            &[("APISERVER_GUARD_MODE", "overlay")],
            &["APISERVER_GUARD_MODE: 'overlay'", "--mode", "vpc, tunnel, both"],
        ),
        c.be(
            "empty APISERVER_GUARD_MODE",
            &[("--mode", None)],
            &[("APISERVER_GUARD_MODE", "")],
            &["APISERVER_GUARD_MODE is set but empty", "vpc, tunnel, both"],
        )
        .without(&["a value is required"]),
        c.be(
            "empty APISERVER_GUARD_ACTION",
            &[],
            &[("APISERVER_GUARD_ACTION", "")],
            &["APISERVER_GUARD_ACTION is set but empty", "reject, drop"],
        ),
        c.be(
            "empty APISERVER_GUARD_BACKEND",
            &[("--backend", None)],
            &[("APISERVER_GUARD_BACKEND", "")],
            &["APISERVER_GUARD_BACKEND is set but empty", "nftables"],
        ),
        c.be(
            "APISERVER_GUARD_LOG_FORMAT=xml (a daemon setting, checked by every command)",
            &[],
            &[("APISERVER_GUARD_LOG_FORMAT", "xml")],
            &["APISERVER_GUARD_LOG_FORMAT: 'xml'", "auto, text, json"],
        ),
    ]
}
