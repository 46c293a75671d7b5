//! Refused config files: unknown keys, not TOML, missing or a directory,
//! bad values, and values of the wrong TOML type named key by key in plain
//! words (no Rust or serde type names).

use crate::common::bad_input_cases::*;

/// This topic's refused inputs, each otherwise identical to the good policy
/// with `--backend backend`. Config files are written into `dir`.
pub fn cases(dir: &TempDir, backend: &str) -> Vec<BadCase> {
    let c = CaseBuilder::new(dir, backend);
    let unknown_key = dir.file("unknown-key.toml", "container_cidrs = [\"10.0.0.0/16\"]\n");
    let not_toml = dir.file("not-toml.toml", "this is not toml\n");
    let bad_value = dir.file(
        "bad-value.toml",
        "container_cidr = \"10.0.1.5/16\"\napiserver = \"192.168.50.10:5443\"\nmode = \"tunnel\"\n",
    );
    let bad_mode = dir.file("bad-mode.toml", "mode = \"overlay\"\n");
    let bad_type = dir.file("bad-type.toml", "container_cidr = 10\n");
    let smuggled = dir.file(
        "smuggled.toml",
        "container_cidr = [\"10.0.0.0/16; nft flush ruleset\"]\napiserver = \"192.168.50.10:5443\"\n",
    );
    let config_dir = dir.path().to_str().expect("utf-8 temp path").to_owned();
    // Values of the wrong TOML type: each message says what the key takes, in plain words.
    let int_in_exempt = dir.file("int-in-exempt.toml", "exempt = [\"10.0.1.0/24\", 5]\n");
    let int_mode = dir.file("int-mode.toml", "mode = 3\n");
    let quoted_bool = dir.file("quoted-bool.toml", "cleanup_on_exit = \"true\"\n");
    let port_only_listen = dir.file("port-only-listen.toml", "listen = 9440\n");
    let bool_resync = dir.file("bool-resync.toml", "resync_interval = true\n");
    let long_resync = dir.file("long-resync.toml", "resync_interval = 7200\n");
    let table_api = dir.file(
        "table-api.toml",
        "apiserver = { ip = \"192.168.50.10\", port = 5443 }\n",
    );
    let bool_backend = dir.file("bool-backend.toml", "backend = false\n");
    vec![
        // Config files.
        c.file(
            "config with an unknown key",
            &unknown_key,
            &[
                &unknown_key,
                "unknown key 'container_cidrs'",
                "did you mean container_cidr?",
            ],
        ),
        c.file("config that is not TOML", &not_toml, &[&not_toml, "TOML parse error"]),
        c.file(
            "named config that does not exist",
            MISSING_CONFIG,
            &[MISSING_CONFIG, "cannot read it"],
        ),
        c.file(
            "config that is a directory",
            &config_dir,
            &[&config_dir, "cannot read it"],
        ),
        c.file(
            "config with a host-bit cidr",
            &bad_value,
            &["'10.0.1.5/16'", "host bits", "10.0.0.0/16"],
        ),
        c.file(
            "config with mode overlay",
            &bad_mode,
            &[&format!(
                "mode in {bad_mode}: expected one of \"vpc\", \"tunnel\", \"both\", found the string \"overlay\""
            )],
        ),
        c.file(
            "config with a number as cidr",
            &bad_type,
            &[&format!(
                "container_cidr in {bad_type}: expected a CIDR string or a list of CIDR strings, found the integer 10"
            )],
        ),
        // Wrong TOML types, key by key: plain words, no Rust or serde type names.
        c.b(
            "config with an integer in the exempt list",
            &[("--config", Some(int_in_exempt.as_str()))],
            &[&format!(
                "exempt in {int_in_exempt}: expected a CIDR string or a list of CIDR strings, found the integer 5"
            )],
        )
        .without(&["untagged", "OneOrMany", "variant"]),
        c.b(
            "config with an integer mode",
            &[("--mode", None), ("--config", Some(int_mode.as_str()))],
            &[&format!(
                "mode in {int_mode}: expected one of \"vpc\", \"tunnel\", \"both\", found the integer 3"
            )],
        )
        .without(&["wanted", "string or table"]),
        c.b(
            "config with a quoted boolean",
            &[("--config", Some(quoted_bool.as_str()))],
            &[
                &format!("cleanup_on_exit in {quoted_bool}: expected true or false, found the string \"true\""),
                "without quotes",
            ],
        ),
        c.b(
            "config with a port alone as listen",
            &[("--config", Some(port_only_listen.as_str()))],
            &[
                &format!("listen in {port_only_listen}: expected an address:port string"),
                "found the integer 9440",
                "write \"127.0.0.1:9440\"",
            ],
        ),
        c.b(
            "config with a boolean resync_interval",
            &[("--config", Some(bool_resync.as_str()))],
            &[
                &format!("resync_interval in {bool_resync}: expected a duration such as \"10s\""),
                "found the boolean true",
            ],
        ),
        c.b(
            "config with a bare-seconds resync_interval out of range",
            &[("--config", Some(long_resync.as_str()))],
            &[&format!(
                "resync_interval in {long_resync}: '7200' is outside 100ms..1h"
            )],
        ),
        c.b(
            "config with a table as apiserver",
            &[("--apiserver", None), ("--config", Some(table_api.as_str()))],
            &[
                &format!("apiserver in {table_api}: expected an address string"),
                "found a table",
            ],
        ),
        c.b(
            "config with a boolean backend",
            &[("--backend", None), ("--config", Some(bool_backend.as_str()))],
            &[
                &format!("backend in {bool_backend}: expected one of \"auto\", \"nftables\""),
                "found the boolean false",
            ],
        ),
        c.file("config with a smuggled command", &smuggled, &["not a CIDR"]),
        c.be(
            "APISERVER_GUARD_CONFIG names a missing file",
            &[("--config", None)],
            &[("APISERVER_GUARD_CONFIG", MISSING_CONFIG)],
            &[MISSING_CONFIG, "cannot read it"],
        ),
    ]
}
