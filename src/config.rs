//! Configuration: flags and `APISERVER_GUARD_*` env (both via clap) override
//! the TOML file, which overrides the defaults. Reading the file is the only
//! I/O here; merging and parsing into a `Policy` are pure.

use crate::cli::{LogFormat, PolicyArgs};
use crate::core::address::{parse_cidr, parse_endpoint};
use crate::core::policy::{Action, BackendChoice, Mode, Policy};
use crate::error::{Error, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

pub const DEFAULT_CONFIG: &str = "/etc/apiserver-guard/config.toml";

/// A list key that may be written as one string or as an array of strings.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
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

/// The TOML file; unknown keys are errors.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub container_cidr: Option<OneOrMany>,
    pub apiserver: Option<OneOrMany>,
    pub mode: Option<Mode>,
    pub backend: Option<BackendChoice>,
    pub exempt: Option<OneOrMany>,
    pub action: Option<Action>,
    /// Daemon settings (`run`); ignored by the one-shot commands.
    pub resync_interval: Option<String>,
    pub listen: Option<String>,
    pub cleanup_on_exit: Option<bool>,
    pub log_format: Option<LogFormat>,
    pub probe_interval: Option<String>,
    pub ready_requires_probe: Option<bool>,
    pub node_taint: Option<String>,
    /// Kubernetes discovery.
    pub kubeconfig: Option<PathBuf>,
    pub node_name: Option<String>,
    pub allow_pods: Option<OneOrMany>,
    pub allow_namespaces: Option<OneOrMany>,
    pub discovery_cache: Option<PathBuf>,
}

/// Parses the TOML text of a config file; `origin` names it in errors.
pub fn parse_file(text: &str, origin: &Path) -> Result<FileConfig> {
    toml::from_str(text).map_err(|e| {
        Error::bad_input(format!(
            "config file {}: {}",
            origin.display(),
            e.to_string().trim_end().replace('\n', "\n    ")
        ))
    })
}

/// Loads the config file named by `--config`/env, or the default one if it exists.
pub fn load_file(named: Option<&Path>) -> Result<FileConfig> {
    let (path, required) = match named {
        Some(p) => (p.to_path_buf(), true),
        None => (PathBuf::from(DEFAULT_CONFIG), false),
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => parse_file(&text, &path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => Ok(FileConfig::default()),
        Err(e) => Err(Error::bad_input(format!(
            "config file {}: cannot read it: {e}",
            path.display()
        ))),
    }
}

/// Flags/env win over the file; empty items (e.g. `APISERVER_GUARD_EXEMPT=`) are ignored.
pub(crate) fn pick(cli: &[String], file: Option<OneOrMany>) -> Vec<String> {
    let cli: Vec<String> = cli
        .iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if !cli.is_empty() {
        return cli;
    }
    file.map(OneOrMany::into_vec).unwrap_or_default()
}

/// Merges flags/env with the file and parses every value, collecting all problems.
pub fn merge(args: &PolicyArgs, file: FileConfig) -> Result<Policy> {
    let mut problems = Vec::new();
    let mut nets = |what: &str, raw: Vec<String>| {
        raw.iter()
            .filter_map(|s| parse_cidr(what, s).map_err(|e| problems.push(e)).ok())
            .collect::<Vec<_>>()
    };
    let not_auto = |v: Vec<String>| -> Vec<String> {
        v.into_iter()
            .filter(|s| !crate::discovery::settings::is_auto(s))
            .collect()
    };
    let sources = nets(
        "container CIDR",
        not_auto(pick(&args.container_cidr, file.container_cidr)),
    );
    let exempt = nets("exempt", pick(&args.exempt, file.exempt));
    let apiservers = not_auto(pick(&args.apiserver, file.apiserver))
        .iter()
        .filter_map(|s| parse_endpoint(s).map_err(|e| problems.push(e)).ok())
        .collect();
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
        input_hook: false,
        dynamic_exempt: false,
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
    fn missing_named_file_is_an_error_missing_default_is_not() {
        let e = load_file(Some(Path::new("/nonexistent/apiserver-guard.toml"))).unwrap_err();
        assert!(matches!(e, Error::BadInput(_)));
        assert!(e.to_string().contains("/nonexistent/apiserver-guard.toml"));
    }
}
