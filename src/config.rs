//! Configuration: flags and `APISERVER_GUARD_*` env (both via clap) override
//! the TOML file, which overrides the defaults. Reading the file is the only
//! I/O here; merging and parsing into a `Policy` are pure.

use crate::cli::{LogFormat, PolicyArgs};
use crate::core::address::{parse_cidr, parse_endpoint_as};
use crate::core::policy::{Action, BackendChoice, Mode, Origins, Policy};
use crate::core::special::{apiserver_problem, source_problem};
use crate::error::{Error, Result};
use crate::regular_file::ReadError;
use std::path::{Path, PathBuf};

mod keys;

pub const DEFAULT_CONFIG: &str = "/etc/apiserver-guard/config.toml";

/// The value that asks for Kubernetes discovery instead of a fixed list
/// (`--apiserver auto`, `apiserver = "auto"`).
pub fn is_auto(s: &str) -> bool {
    s.trim().eq_ignore_ascii_case("auto")
}

/// A list key that may be written as one string or as an array of strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// The TOML file; unknown keys are errors (`keys` reads it key by key).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileConfig {
    pub container_cidr: Option<OneOrMany>,
    pub apiserver: Option<OneOrMany>,
    pub mode: Option<Mode>,
    pub backend: Option<BackendChoice>,
    pub exempt: Option<OneOrMany>,
    pub action: Option<Action>,
    /// `log_group`: a number or "off", checked by `merge`.
    pub log_group: Option<String>,
    /// Daemon settings (`run`); ignored by the one-shot commands.
    pub resync_interval: Option<String>,
    pub listen: Option<String>,
    pub cleanup_on_exit: Option<bool>,
    pub log_format: Option<LogFormat>,
    pub probe_interval: Option<String>,
    pub ready_requires_probe: Option<bool>,
    pub node_taint: Option<String>,
    pub table_ownership: Option<crate::core::nft_ownership::TableOwnership>,
    /// Kubernetes discovery.
    pub kubeconfig: Option<PathBuf>,
    pub node_name: Option<String>,
    pub allow_pods: Option<OneOrMany>,
    pub allow_namespaces: Option<OneOrMany>,
    pub discovery_cache: Option<PathBuf>,
    /// The file these values were read from (None: no file), for messages.
    pub path: Option<PathBuf>,
}

/// Parses the TOML text of a config file; `origin` names it in errors.
/// A value of the wrong type is named with its key, the file, what the key
/// expects and what was found; every such problem is reported at once.
pub fn parse_file(text: &str, origin: &Path) -> Result<FileConfig> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        Error::bad_input(format!(
            "config file {}: {}",
            origin.display(),
            e.to_string().trim_end().replace('\n', "\n    ")
        ))
    })?;
    keys::from_table(table, origin).map_err(Error::BadInput)
}

/// The environment variable behind a setting (`APISERVER_GUARD_RESYNC_INTERVAL`; `NODE_NAME`).
pub fn env_name(id: &str) -> String {
    match id {
        "node_name" => "NODE_NAME".into(),
        _ => format!("APISERVER_GUARD_{}", id.to_ascii_uppercase()),
    }
}

/// How a message names a setting `id` (a clap id, which is also the config
/// key): the flag or the variable when the command line layer gave the
/// value, else the key in the config file.
pub fn origin(args: &PolicyArgs, file: &FileConfig, id: &str, from_command_line: bool) -> String {
    if from_command_line {
        if args.from_env.contains(id) {
            env_name(id)
        } else {
            format!("--{}", id.replace('_', "-"))
        }
    } else {
        match &file.path {
            Some(p) => format!("{id} in {}", p.display()),
            None => id.to_string(),
        }
    }
}

/// Loads the config file named by `--config`/env, or the default one if it exists.
pub fn load_file(named: Option<&Path>) -> Result<FileConfig> {
    let (path, required) = match named {
        Some(p) => (p.to_path_buf(), true),
        None => (PathBuf::from(DEFAULT_CONFIG), false),
    };
    match crate::regular_file::read_regular(&path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => parse_file(&text, &path),
            Err(_) => Err(Error::bad_input(format!(
                "config file {}: not UTF-8 text",
                path.display()
            ))),
        },
        Err(ReadError::NotFound) if !required => Ok(FileConfig::default()),
        Err(e) => Err(Error::bad_input(format!(
            "config file {}: cannot read it: {e}",
            path.display()
        ))),
    }
}

/// Flags/env win over the file; empty items (e.g. `APISERVER_GUARD_EXEMPT=`) are ignored.
pub(crate) fn pick(cli: &[String], file: Option<OneOrMany>) -> Vec<String> {
    pick_from(cli, file).0
}

/// `pick`, and whether the values came from the command line (flag or env) rather than the file.
pub(crate) fn pick_from(cli: &[String], file: Option<OneOrMany>) -> (Vec<String>, bool) {
    let cli: Vec<String> = cli
        .iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if !cli.is_empty() {
        return (cli, true);
    }
    (file.map(OneOrMany::into_vec).unwrap_or_default(), false)
}

/// `--log-group`: a group number, `off` (no log rules), unset (the default group).
pub fn parse_log_group(from: &str, raw: Option<&str>) -> std::result::Result<Option<u16>, String> {
    match raw.map(str::trim) {
        None => Ok(Some(crate::core::attempt_log::DEFAULT_LOG_GROUP)),
        Some("off") => Ok(None),
        Some(s) => s
            .parse::<u16>()
            .map(Some)
            .map_err(|_| format!("{from}: '{s}' is not an NFLOG group (a number 0..65535, or 'off' for no log rules)")),
    }
}

/// Merges flags/env with the file and parses every value, collecting all
/// problems; each message names the flag, variable or config key the value
/// came from. Values that parse but cannot work (a multicast apiserver, an
/// IPv4-mapped range) are refused here too, before any discovery.
pub fn merge(args: &PolicyArgs, file: FileConfig) -> Result<Policy> {
    let mut problems = Vec::new();
    // The values of one list key, where they came from ("(auto: discovered)" when discovery adds some).
    let list = |id: &str, cli: &[String], from_file: Option<OneOrMany>| {
        let (raw, from_cli) = pick_from(cli, from_file);
        let mut label = origin(args, &file, id, from_cli);
        if raw.iter().any(|s| is_auto(s)) {
            label.push_str(" (auto: discovered)");
        }
        (raw.into_iter().filter(|s| !is_auto(s)).collect::<Vec<_>>(), label)
    };
    let (raw_sources, sources_from) = list("container_cidr", &args.container_cidr, file.container_cidr.clone());
    let (raw_exempt, exempt_from) = list("exempt", &args.exempt, file.exempt.clone());
    let (raw_apis, apis_from) = list("apiserver", &args.apiserver, file.apiserver.clone());
    let mut nets = |what: &str, raw: Vec<String>| {
        raw.iter()
            .filter_map(|s| {
                parse_cidr(what, s)
                    .and_then(|n| source_problem(what, &n).map_or(Ok(n), Err))
                    .map_err(|e| problems.push(e))
                    .ok()
            })
            .collect::<Vec<_>>()
    };
    let sources = nets(&sources_from, raw_sources);
    let exempt = nets(&exempt_from, raw_exempt);
    let apiservers = raw_apis
        .iter()
        .filter_map(|s| {
            parse_endpoint_as(&apis_from, s)
                .and_then(|ep| apiserver_problem(&apis_from, &ep).map_or(Ok(ep), Err))
                .map_err(|e| problems.push(e))
                .ok()
        })
        .collect();
    let log_group = parse_log_group(
        &origin(args, &file, "log_group", args.log_group.is_some()),
        args.log_group.as_deref().or(file.log_group.as_deref()),
    )
    .map_err(|e| problems.push(e))
    .unwrap_or(None);
    if !problems.is_empty() {
        return Err(Error::BadInput(problems));
    }
    Ok(Policy {
        sources,
        exempt,
        apiservers,
        mode: args.mode.or(file.mode).unwrap_or(Mode::Both),
        action: args.action.or(file.action).unwrap_or(Action::Reject),
        backend: args.backend.or(file.backend).unwrap_or(BackendChoice::Auto),
        local_apiservers: Vec::new(),
        dynamic_exempt: false,
        log_group,
        origins: Origins {
            sources: sources_from,
            exempt: exempt_from,
            apiservers: apis_from,
        },
    })
}

/// Flags + env + file -> Policy (parsed, not yet validated).
pub fn load_policy(args: &PolicyArgs) -> Result<Policy> {
    merge(args, load_file(args.config.as_deref())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> Result<FileConfig> {
        parse_file(text, Path::new("test.toml"))
    }

    #[test]
    fn file_values_apply_when_flags_are_absent() {
        let f = file("container_cidr = [\"10.0.0.0/16\"]\napiserver = \"192.168.0.10:5443\"\nmode = \"tunnel\"\naction = \"drop\"\nbackend = \"iptables-legacy\"\nexempt = []\n").unwrap();
        let p = merge(&PolicyArgs::default(), f).unwrap();
        assert_eq!(p.sources.len(), 1);
        assert_eq!(p.apiservers[0].port, Some(5443));
        assert_eq!(
            (p.mode, p.action, p.backend),
            (Mode::Tunnel, Action::Drop, BackendChoice::IptablesLegacy)
        );
    }

    #[test]
    fn daemon_keys_are_accepted() {
        let f = file(
            "resync_interval = \"5s\"\nlisten = \"127.0.0.1:9441\"\ncleanup_on_exit = true\nlog_format = \"json\"\n",
        )
        .unwrap();
        assert_eq!(f.listen.as_deref(), Some("127.0.0.1:9441"));
        assert_eq!(f.log_format, Some(LogFormat::Json));
    }

    #[test]
    fn flags_override_the_file() {
        let f = file("container_cidr = \"10.0.0.0/16\"\nmode = \"tunnel\"\n").unwrap();
        let args = PolicyArgs {
            container_cidr: vec!["10.9.0.0/16".into()],
            mode: Some(Mode::Vpc),
            ..Default::default()
        };
        let p = merge(&args, f).unwrap();
        assert_eq!(p.sources[0].to_string(), "10.9.0.0/16");
        assert_eq!(p.mode, Mode::Vpc);
    }

    #[test]
    fn defaults_are_both_reject_auto() {
        let p = merge(&PolicyArgs::default(), FileConfig::default()).unwrap();
        assert_eq!(
            (p.mode, p.action, p.backend),
            (Mode::Both, Action::Reject, BackendChoice::Auto)
        );
        assert!(p.sources.is_empty());
    }

    #[test]
    fn empty_items_are_ignored_and_spaces_trimmed() {
        let args = PolicyArgs {
            container_cidr: vec!["".into(), " 10.0.0.0/16 ".into()],
            ..Default::default()
        };
        assert_eq!(merge(&args, FileConfig::default()).unwrap().sources.len(), 1);
    }

    #[test]
    fn unknown_keys_and_bad_values_in_the_file_are_errors() {
        let e = file("container_cidrs = [\"10.0.0.0/16\"]\n").unwrap_err().to_string();
        assert!(e.contains("test.toml") && e.contains("container_cidrs"), "{e}");
        assert!(file("mode = \"overlay\"\n").is_err());
        assert!(file("this is not toml").is_err());
    }

    #[test]
    fn every_bad_value_is_reported() {
        let args = PolicyArgs {
            container_cidr: vec!["10.0.0.1/16".into(), "bogus".into()],
            apiserver: vec!["1.2.3.4:0".into()],
            ..Default::default()
        };
        let Err(Error::BadInput(p)) = merge(&args, FileConfig::default()) else {
            panic!()
        };
        assert_eq!(p.len(), 3, "{p:?}");
    }

    #[test]
    fn messages_name_the_flag_the_variable_or_the_key() {
        let args = PolicyArgs {
            container_cidr: vec!["010.0.0.0/16".into()],
            apiserver: vec!["224.0.0.1:443".into()],
            from_env: ["apiserver".to_string()].into(),
            ..Default::default()
        };
        let f = file("exempt = \"::ffff:10.0.0.0/120\"\n").unwrap();
        let Err(Error::BadInput(p)) = merge(&args, f) else {
            panic!()
        };
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(
            p[0].starts_with("--container-cidr: '010.0.0.0/16' is ambiguous"),
            "{}",
            p[0]
        );
        assert!(
            p[1].starts_with("exempt in test.toml: '::ffff:10.0.0.0/120' is IPv4-mapped"),
            "{}",
            p[1]
        );
        assert!(
            p[2].starts_with("APISERVER_GUARD_APISERVER: '224.0.0.1:443'"),
            "{}",
            p[2]
        );
        // The origins travel with the policy, for the checks that need several values.
        let args = PolicyArgs {
            container_cidr: vec!["auto".into(), "10.0.0.0/16".into()],
            from_env: ["container_cidr".to_string()].into(),
            ..Default::default()
        };
        let p = merge(&args, file("apiserver = \"1.2.3.4\"\n").unwrap()).unwrap();
        assert_eq!(p.origins.sources, "APISERVER_GUARD_CONTAINER_CIDR (auto: discovered)");
        assert_eq!(p.origins.apiservers, "apiserver in test.toml");
        assert_eq!(p.origins.exempt, "exempt in test.toml");
        assert_eq!(env_name("node_name"), "NODE_NAME");
    }

    #[test]
    fn missing_named_file_is_an_error_missing_default_is_not() {
        let e = load_file(Some(Path::new("/nonexistent/apiserver-guard.toml"))).unwrap_err();
        assert!(matches!(e, Error::BadInput(_)));
        assert!(e.to_string().contains("/nonexistent/apiserver-guard.toml"));
    }
}
