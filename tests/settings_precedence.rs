//! Where settings come from, read back through `render`: flags beat
//! environment, which beats the config file, which beats the defaults; lists
//! combine from commas, repeated flags and TOML arrays.
//!
//! Everything runs inside the test's own network namespaces.

mod common;

use common::bad_input_cases::*;
use common::bad_input_checks::*;
use common::*;

/// What a `render` output says, for either backend format.
#[derive(Debug, PartialEq, Eq)]
struct Rendered {
    backend: String,
    output_hook: bool,
    forward_hook: bool,
    drop: bool,
}

fn rendered(out: &str) -> Rendered {
    let first = out.lines().next().unwrap_or_default();
    let backend = first
        .strip_prefix("# backend: ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("render output lacks the '# backend:' header:\n{out}"))
        .to_owned();
    Rendered {
        output_hook: out.contains("chain output {") || out.contains("-I OUTPUT 1"),
        forward_hook: out.contains("chain forward {") || out.contains("-I FORWARD 1"),
        // nftables: the verdict after a match, or (logged) alone in the block's own chain.
        drop: out.contains(" drop comment") || out.contains("\tdrop comment") || out.contains("-j DROP"),
        backend,
    }
}

#[track_caller]
fn render_ok(ns: &Netns, env: &[(&str, &str)], args: &[&str]) -> String {
    let mut argv = vec!["render"];
    argv.extend_from_slice(args);
    let r = guard_run(ns, &[], env, &argv);
    assert_code(&r, 0, &format!("render env {env:?} args {args:?}"));
    r.stdout
}

#[test]
fn flags_beat_env_beat_file() {
    if !common::can_run() {
        return;
    }
    let ns = Netns::new("prec");
    let before = firewall_snapshot(&ns);
    let dir = TempDir::new("prec");
    let file = dir.file(
        "file.toml",
        "container_cidr = \"10.1.0.0/16\"\n\
         apiserver = \"192.168.50.10:5443\"\n\
         exempt = \"10.1.5.0/24\"\n\
         mode = \"vpc\"\n\
         action = \"drop\"\n\
         backend = \"iptables-legacy\"\n",
    );
    let env_all = [
        ("APISERVER_GUARD_CONFIG", file.as_str()),
        ("APISERVER_GUARD_CONTAINER_CIDR", "10.2.0.0/16"),
        ("APISERVER_GUARD_APISERVER", "192.168.50.11:6443"),
        ("APISERVER_GUARD_EXEMPT", "10.2.5.0/24"),
        ("APISERVER_GUARD_MODE", "both"),
        ("APISERVER_GUARD_ACTION", "reject"),
        ("APISERVER_GUARD_BACKEND", "iptables-nft"),
    ];
    let file_vals = ["10.1.0.0/16", "192.168.50.10", "5443", "10.1.5.0/24"];
    let env_vals = ["10.2.0.0/16", "192.168.50.11", "6443", "10.2.5.0/24"];
    let flag_vals = ["10.3.0.0/16", "192.168.50.12", "7443", "10.3.5.0/24"];

    // File alone (named with --config).
    let out = render_ok(&ns, &[], &["--config", &file]);
    assert_eq!(
        rendered(&out),
        Rendered {
            backend: "iptables-legacy".into(),
            output_hook: true,
            forward_hook: false,
            drop: true
        },
        "file alone:\n{out}"
    );
    assert_has(
        &out,
        &file_vals,
        &[&env_vals[..], &flag_vals[..]].concat(),
        "file alone",
    );

    // Env over file (the file named by APISERVER_GUARD_CONFIG).
    let out = render_ok(&ns, &env_all, &[]);
    assert_eq!(
        rendered(&out),
        Rendered {
            backend: "iptables-nft".into(),
            output_hook: true,
            forward_hook: true,
            drop: false
        },
        "env over file:\n{out}"
    );
    assert_has(
        &out,
        &env_vals,
        &[&file_vals[..], &flag_vals[..]].concat(),
        "env over file",
    );

    // Flags over env over file.
    let flags = [
        "--container-cidr",
        "10.3.0.0/16",
        "--apiserver",
        "192.168.50.12:7443",
        "--exempt",
        "10.3.5.0/24",
        "--mode",
        "tunnel",
        "--action",
        "drop",
        "--backend",
        "nftables",
    ];
    let out = render_ok(&ns, &env_all, &flags);
    assert_eq!(
        rendered(&out),
        Rendered {
            backend: "nftables".into(),
            output_hook: false,
            forward_hook: true,
            drop: true
        },
        "flags over env:\n{out}"
    );
    assert_has(
        &out,
        &["10.3.0.0/16", "192.168.50.12 . 7443", "10.3.5.0/24"],
        &[&file_vals[..], &env_vals[..]].concat(),
        "flags over env over file",
    );

    // Per key: a flag replaces only its own key; the rest still comes from the file.
    let out = render_ok(&ns, &[], &["--config", &file, "--apiserver", "192.168.50.12:7443"]);
    assert_eq!(rendered(&out).backend, "iptables-legacy", "{out}");
    assert_has(
        &out,
        &[
            "10.1.0.0/16",
            "192.168.50.12/32",
            "--dport 7443",
            "10.1.5.0/24",
            "-j DROP",
        ],
        &["192.168.50.10", "5443"],
        "one flag over the file",
    );

    // --config beats APISERVER_GUARD_CONFIG.
    let other = dir.file(
        "other.toml",
        "container_cidr = [\"10.4.0.0/16\"]\napiserver = [\"192.168.50.13:8443\"]\nbackend = \"nftables\"\n",
    );
    let out = render_ok(&ns, &[("APISERVER_GUARD_CONFIG", file.as_str())], &["--config", &other]);
    assert_eq!(
        rendered(&out),
        Rendered {
            backend: "nftables".into(),
            output_hook: true,
            forward_hook: true,
            drop: false
        },
        "defaults both/reject with --config other:\n{out}"
    );
    assert_has(
        &out,
        &["10.4.0.0/16", "192.168.50.13 . 8443"],
        &file_vals,
        "--config over env",
    );

    // An empty env value is no value: the file's apiserver stays.
    let out = render_ok(&ns, &[("APISERVER_GUARD_APISERVER", "")], &["--config", &file]);
    assert_has(&out, &["192.168.50.10/32", "--dport 5443"], &[], "empty env value");

    assert_same_snapshot(&before, &firewall_snapshot(&ns), "render with precedence cases");
}

#[test]
fn lists_combine_from_commas_repeats_and_toml_arrays() {
    if !common::can_run() {
        return;
    }
    let ns = Netns::new("lists");
    let before = firewall_snapshot(&ns);
    let dir = TempDir::new("lists");
    let empty = dir.empty_config();
    let all = [
        "10.0.0.0/16",
        "10.2.0.0/16",
        "fd00:10::/48",
        "192.168.50.10 . 5443",
        "192.168.50.11",
        "fd00:50::10 . 5443",
    ];

    // Comma-separated and repeated flags combine (spaces around items are trimmed).
    let out = render_ok(
        &ns,
        &[],
        &[
            "--config",
            &empty,
            "--backend",
            "nftables",
            "--container-cidr",
            "10.0.0.0/16, 10.2.0.0/16",
            "--container-cidr",
            "fd00:10::/48",
            "--apiserver",
            "192.168.50.10:5443,192.168.50.11",
            "--apiserver",
            "[fd00:50::10]:5443",
        ],
    );
    assert_has(&out, &all, &[], "comma-separated and repeated flags");
    assert!(
        out.contains("set api_any_v4 {"),
        "port-less apiserver set missing:\n{out}"
    );

    // Comma-separated env values.
    let out = render_ok(
        &ns,
        &[
            ("APISERVER_GUARD_CONTAINER_CIDR", "10.0.0.0/16,10.2.0.0/16,fd00:10::/48"),
            (
                "APISERVER_GUARD_APISERVER",
                "192.168.50.10:5443,192.168.50.11,[fd00:50::10]:5443",
            ),
            ("APISERVER_GUARD_EXEMPT", "10.0.5.0/24,10.2.5.0/24"),
        ],
        &["--config", &empty, "--backend", "nftables"],
    );
    assert_has(
        &out,
        &[&all[..], &["10.0.5.0/24", "10.2.5.0/24"]].concat(),
        &[],
        "comma-separated env",
    );

    // TOML: every list key as a string or as an array.
    let strings = dir.file(
        "strings.toml",
        "container_cidr = \"10.0.0.0/16\"\napiserver = \"192.168.50.10:5443\"\nexempt = \"10.0.5.0/24\"\n",
    );
    let out = render_ok(&ns, &[], &["--config", &strings, "--backend", "nftables"]);
    assert_has(
        &out,
        &["10.0.0.0/16", "192.168.50.10 . 5443", "10.0.5.0/24"],
        &["10.2.0.0/16", "fd00"],
        "TOML strings",
    );
    let arrays = dir.file(
        "arrays.toml",
        "container_cidr = [\"10.0.0.0/16\", \"10.2.0.0/16\", \"fd00:10::/48\"]\n\
         apiserver = [\"192.168.50.10:5443\", \"192.168.50.11\", \"[fd00:50::10]:5443\"]\n\
         exempt = [\"10.0.5.0/24\", \"fd00:10:0:5::/64\"]\n",
    );
    let out = render_ok(&ns, &[], &["--config", &arrays, "--backend", "nftables"]);
    assert_has(
        &out,
        &[&all[..], &["10.0.5.0/24", "fd00:10:0:5::/64"]].concat(),
        &[],
        "TOML arrays",
    );

    assert_same_snapshot(&before, &firewall_snapshot(&ns), "render with list cases");
}
