//! The config file key by key: which TOML type each key takes, and, when a
//! value has another type, one plain message naming the key and the file,
//! what the key expects and what was found ("exempt in FILE: expected a CIDR
//! string or a list of CIDR strings, found the integer 5"), never a Rust or
//! serde type name. Every problem of the file is reported at once. Pure.

use super::{FileConfig, OneOrMany};
use crate::cli::LogFormat;
use crate::core::nft_ownership::TableOwnership;
use crate::core::policy::{Action, BackendChoice, Mode};
use clap::ValueEnum;
use std::path::{Path, PathBuf};
use toml::Value;

/// Every key the file may hold, in the order the README lists them.
pub const KEYS: [&str; 20] = [
    "container_cidr",
    "apiserver",
    "mode",
    "backend",
    "exempt",
    "action",
    "log_group",
    "resync_interval",
    "listen",
    "cleanup_on_exit",
    "log_format",
    "probe_interval",
    "ready_requires_probe",
    "node_taint",
    "kubeconfig",
    "node_name",
    "allow_pods",
    "allow_namespaces",
    "discovery_cache",
    "table_ownership",
];

/// The parsed TOML table as a `FileConfig`; `path` names the file in messages.
pub fn from_table(table: toml::Table, path: &Path) -> Result<FileConfig, Vec<String>> {
    let mut f = FileConfig {
        path: Some(path.to_path_buf()),
        ..FileConfig::default()
    };
    let mut problems = Vec::new();
    for (key, value) in table {
        let at = format!("{key} in {}", path.display());
        let done = match key.as_str() {
            "container_cidr" => {
                list(&at, value, "a CIDR string or a list of CIDR strings").map(|v| f.container_cidr = Some(v))
            }
            "exempt" => list(&at, value, "a CIDR string or a list of CIDR strings").map(|v| f.exempt = Some(v)),
            "apiserver" => list(
                &at,
                value,
                "an address string (\"IP\", \"IP:PORT\", \"[IPv6]:PORT\" or \"auto\") or a list of them",
            )
            .map(|v| f.apiserver = Some(v)),
            "allow_pods" => {
                list(&at, value, "a \"NAMESPACE/SELECTOR\" string or a list of them").map(|v| f.allow_pods = Some(v))
            }
            "allow_namespaces" => {
                list(&at, value, "a namespace name string or a list of them").map(|v| f.allow_namespaces = Some(v))
            }
            "mode" => choice::<Mode>(&at, value).map(|v| f.mode = Some(v)),
            "backend" => choice::<BackendChoice>(&at, value).map(|v| f.backend = Some(v)),
            "action" => choice::<Action>(&at, value).map(|v| f.action = Some(v)),
            "log_format" => choice::<LogFormat>(&at, value).map(|v| f.log_format = Some(v)),
            "log_group" => log_group(&at, value).map(|v| f.log_group = Some(v)),
            "resync_interval" => duration(
                &at,
                value,
                "a duration such as \"10s\", \"500ms\" or \"1m\" (a bare number is seconds)",
            )
            .map(|v| f.resync_interval = Some(v)),
            "probe_interval" => duration(
                &at,
                value,
                "a duration such as \"60s\" (a bare number is seconds), or \"off\"",
            )
            .map(|v| f.probe_interval = Some(v)),
            "listen" => listen(&at, value).map(|v| f.listen = Some(v)),
            "table_ownership" => table_ownership(&at, value).map(|v| f.table_ownership = Some(v)),
            "cleanup_on_exit" => boolean(&at, value).map(|v| f.cleanup_on_exit = Some(v)),
            "ready_requires_probe" => boolean(&at, value).map(|v| f.ready_requires_probe = Some(v)),
            "node_taint" => string(
                &at,
                value,
                "a taint key string such as \"apiserver-guard.io/not-ready\"",
            )
            .map(|v| f.node_taint = Some(v)),
            "node_name" => string(&at, value, "a node name string").map(|v| f.node_name = Some(v)),
            "kubeconfig" => string(&at, value, "a file path string").map(|v| f.kubeconfig = Some(PathBuf::from(v))),
            "discovery_cache" => {
                string(&at, value, "a file path string").map(|v| f.discovery_cache = Some(PathBuf::from(v)))
            }
            _ => Err(unknown(&key, path)),
        };
        if let Err(e) = done {
            problems.push(e);
        }
    }
    if problems.is_empty() {
        Ok(f)
    } else {
        Err(problems)
    }
}

/// What a value is, in words: `the integer 5`, `the string "x"`, `a list`.
pub fn found(v: &Value) -> String {
    match v {
        Value::String(s) => format!("the string \"{s}\""),
        Value::Integer(i) => format!("the integer {i}"),
        Value::Float(x) => format!("the number {x}"),
        Value::Boolean(b) => format!("the boolean {b}"),
        Value::Datetime(d) => format!("the date {d}"),
        Value::Array(a) if a.is_empty() => "an empty list".into(),
        Value::Array(_) => "a list".into(),
        Value::Table(_) => "a table".into(),
    }
}

fn mismatch(at: &str, expected: &str, v: &Value) -> String {
    format!("{at}: expected {expected}, found {}", found(v))
}

fn string(at: &str, v: Value, expected: &str) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s),
        other => Err(mismatch(at, expected, &other)),
    }
}

/// One string or a list of strings; the first item of another type is named with its place.
fn list(at: &str, v: Value, expected: &str) -> Result<OneOrMany, String> {
    match v {
        Value::String(s) => Ok(OneOrMany::One(s)),
        Value::Array(items) => {
            let count = items.len();
            let mut out = Vec::with_capacity(count);
            for (i, item) in items.into_iter().enumerate() {
                match item {
                    Value::String(s) => out.push(s),
                    other => {
                        return Err(format!(
                            "{} (item {} of {count} in the list)",
                            mismatch(at, expected, &other),
                            i + 1
                        ))
                    }
                }
            }
            Ok(OneOrMany::Many(out))
        }
        other => Err(mismatch(at, expected, &other)),
    }
}

/// One of the names the matching flag takes (`"vpc"`, `"tunnel"`, `"both"`).
fn choice<T: ValueEnum>(at: &str, v: Value) -> Result<T, String> {
    let names: Vec<String> = T::value_variants()
        .iter()
        .filter_map(|x| x.to_possible_value())
        .map(|p| format!("\"{}\"", p.get_name()))
        .collect();
    let expected = format!("one of {}", names.join(", "));
    match &v {
        Value::String(s) => T::from_str(s, false).map_err(|_| mismatch(at, &expected, &v)),
        _ => Err(mismatch(at, &expected, &v)),
    }
}

/// `auto` or `off`.
fn table_ownership(at: &str, v: Value) -> Result<TableOwnership, String> {
    let expected = format!(
        "one of {}",
        TableOwnership::VALUES.map(|n| format!("\"{n}\"")).join(", ")
    );
    match &v {
        Value::String(s) => s.parse().map_err(|_| mismatch(at, &expected, &v)),
        _ => Err(mismatch(at, &expected, &v)),
    }
}

/// A duration string, or a bare number of seconds (as the flag and the
/// variable take it: `resync_interval = 10` is `"10s"`); checked later with
/// the flag's rules.
fn duration(at: &str, v: Value, expected: &str) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s),
        Value::Integer(i) => Ok(i.to_string()),
        Value::Float(x) => Ok(x.to_string()),
        other => Err(mismatch(at, expected, &other)),
    }
}

/// An NFLOG group number or `"off"`, as text (checked later with the flag's rules).
fn log_group(at: &str, v: Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s),
        Value::Integer(i) => Ok(i.to_string()),
        other => Err(mismatch(at, "an NFLOG group number 0..65535 or \"off\"", &other)),
    }
}

fn listen(at: &str, v: Value) -> Result<String, String> {
    let expected = "an address:port string such as \"127.0.0.1:9440\" or \"[::1]:9440\"";
    match v {
        Value::String(s) => Ok(s),
        Value::Integer(port @ 1..=65535) => Err(format!(
            "{}; a port alone is not enough: write \"127.0.0.1:{port}\" to serve it on loopback",
            mismatch(at, expected, &Value::Integer(port))
        )),
        other => Err(mismatch(at, expected, &other)),
    }
}

fn boolean(at: &str, v: Value) -> Result<bool, String> {
    match &v {
        Value::Boolean(b) => Ok(*b),
        Value::String(s) if matches!(s.as_str(), "true" | "false") => Err(format!(
            "{}: write {s} without quotes",
            mismatch(at, "true or false", &v)
        )),
        _ => Err(mismatch(at, "true or false", &v)),
    }
}

/// An unknown key, with the known key it most likely meant.
fn unknown(key: &str, path: &Path) -> String {
    let near = KEYS
        .iter()
        .map(|k| (distance(key, k), *k))
        .min()
        .filter(|(d, _)| *d <= 2)
        .map(|(_, k)| format!("; did you mean {k}?"))
        .unwrap_or_default();
    format!(
        "config file {}: unknown key '{key}'{near} (the keys are {})",
        path.display(),
        KEYS.join(", ")
    )
}

/// Edit distance (insertions, deletions, substitutions) between two short keys.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let here = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(here + 1);
            prev = here;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<FileConfig, Vec<String>> {
        from_table(text.parse().unwrap(), Path::new("/etc/g.toml"))
    }

    fn err(text: &str) -> String {
        let e = parse(text).unwrap_err();
        assert_eq!(e.len(), 1, "{e:?}");
        e[0].clone()
    }

    /// No Rust or serde vocabulary reaches the operator.
    fn plain(e: &str) {
        for word in [
            "enum",
            "variant",
            "OneOrMany",
            "untagged",
            "wanted",
            "Some(",
            "Err(",
            "\\\"",
            "i64",
            "f64",
            "sequence",
        ] {
            assert!(!e.contains(word), "{word:?} in {e}");
        }
    }

    #[test]
    fn every_key_of_the_right_type_is_read() {
        let f = parse(
            "container_cidr = [\"10.0.0.0/16\"]\napiserver = \"auto\"\nmode = \"tunnel\"\nbackend = \"iptables-legacy\"\n\
             exempt = []\naction = \"drop\"\nresync_interval = \"5s\"\nlisten = \"[::1]:9\"\ncleanup_on_exit = true\n\
             log_format = \"json\"\nprobe_interval = \"off\"\nready_requires_probe = false\nnode_taint = \"a/b\"\n\
             kubeconfig = \"/k\"\nnode_name = \"n\"\nallow_pods = \"ns/a=b\"\nallow_namespaces = [\"kube-system\"]\n\
             discovery_cache = \"/c\"\n",
        )
        .unwrap();
        assert_eq!(f.mode, Some(Mode::Tunnel));
        assert_eq!(f.backend, Some(BackendChoice::IptablesLegacy));
        assert_eq!(f.exempt, Some(OneOrMany::Many(vec![])));
        assert_eq!(f.log_format, Some(LogFormat::Json));
        assert_eq!(f.kubeconfig, Some(PathBuf::from("/k")));
        assert_eq!(f.path, Some(PathBuf::from("/etc/g.toml")));
    }

    #[test]
    fn list_keys_name_the_item_of_the_wrong_type() {
        let e = err("exempt = [\"10.0.1.0/24\", 5]\n");
        assert!(
            e.starts_with(
                "exempt in /etc/g.toml: expected a CIDR string or a list of CIDR strings, found the integer 5"
            ) && e.contains("item 2 of 2"),
            "{e}"
        );
        plain(&e);
        let e = err("container_cidr = 10\n");
        assert!(e.ends_with("found the integer 10"), "{e}");
        let e = err("apiserver = { ip = \"1.2.3.4\" }\n");
        assert!(
            e.starts_with("apiserver in /etc/g.toml: expected an address string") && e.ends_with("found a table"),
            "{e}"
        );
        plain(&e);
        let e = err("allow_pods = [[\"a/b=c\"]]\n");
        assert!(
            e.contains("\"NAMESPACE/SELECTOR\"") && e.contains("found a list"),
            "{e}"
        );
        let e = err("allow_namespaces = true\n");
        assert!(
            e.contains("namespace name") && e.ends_with("found the boolean true"),
            "{e}"
        );
    }

    #[test]
    fn choices_list_the_names_the_flag_takes() {
        let e = err("mode = 3\n");
        assert_eq!(
            e,
            "mode in /etc/g.toml: expected one of \"vpc\", \"tunnel\", \"both\", found the integer 3"
        );
        plain(&e);
        let e = err("mode = \"overlay\"\n");
        assert!(e.ends_with("found the string \"overlay\""), "{e}");
        let e = err("backend = [\"nftables\"]\n");
        assert!(e.contains("\"iptables-legacy\"") && e.ends_with("found a list"), "{e}");
        let e = err("action = true\n");
        assert!(e.contains("one of \"reject\", \"drop\", \"audit\""), "{e}");
        let e = err("log_group = true\n");
        assert_eq!(
            e,
            "log_group in /etc/g.toml: expected an NFLOG group number 0..65535 or \"off\", found the boolean true"
        );
        assert_eq!(parse("log_group = 7\n").unwrap().log_group.as_deref(), Some("7"));
        assert_eq!(
            parse("log_group = \"off\"\n").unwrap().log_group.as_deref(),
            Some("off")
        );
        let e = err("log_format = 1.5\n");
        assert!(e.contains("\"json\"") && e.ends_with("found the number 1.5"), "{e}");
    }

    #[test]
    fn durations_take_a_bare_number_as_seconds_as_the_flag_does() {
        assert_eq!(
            parse("resync_interval = 10\n").unwrap().resync_interval.as_deref(),
            Some("10")
        );
        assert_eq!(
            parse("probe_interval = 0.5\n").unwrap().probe_interval.as_deref(),
            Some("0.5")
        );
        let e = err("resync_interval = true\n");
        assert!(
            e.starts_with("resync_interval in /etc/g.toml: expected a duration such as \"10s\""),
            "{e}"
        );
        let e = err("probe_interval = [60]\n");
        assert!(e.contains("\"off\"") && e.ends_with("found a list"), "{e}");
    }

    #[test]
    fn booleans_ports_strings_and_paths() {
        let e = err("cleanup_on_exit = \"true\"\n");
        assert!(
            e.contains("expected true or false, found the string \"true\"") && e.contains("without quotes"),
            "{e}"
        );
        let e = err("ready_requires_probe = 1\n");
        assert!(e.ends_with("expected true or false, found the integer 1"), "{e}");
        let e = err("listen = 9440\n");
        assert!(
            e.contains("expected an address:port string") && e.contains("write \"127.0.0.1:9440\""),
            "{e}"
        );
        let e = err("listen = 1979-05-27\n");
        assert!(e.ends_with("found the date 1979-05-27"), "{e}");
        let e = err("kubeconfig = 7\n");
        assert!(
            e.starts_with("kubeconfig in /etc/g.toml: expected a file path string, found the integer 7"),
            "{e}"
        );
        let e = err("node_taint = false\n");
        assert!(e.contains("taint key"), "{e}");
        let e = err("node_name = []\n");
        assert!(e.ends_with("found an empty list"), "{e}");
    }

    #[test]
    fn unknown_keys_suggest_the_near_one_and_every_problem_is_listed() {
        let e = err("container_cidrs = [\"10.0.0.0/16\"]\n");
        assert!(
            e.contains("unknown key 'container_cidrs'; did you mean container_cidr?"),
            "{e}"
        );
        let e = err("daemon = 1\n");
        assert!(e.contains("unknown key 'daemon' (the keys are container_cidr,"), "{e}");
        let e = parse("mode = 3\nexempt = 5\nlisten = true\n").unwrap_err();
        assert_eq!(e.len(), 3, "{e:?}");
    }
}
