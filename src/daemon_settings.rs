//! Daemon settings (`run`): flags/env > config file > defaults, parsed and
//! checked before anything starts. Pure.

use crate::cli::{LogFormat, RunArgs};
use crate::config::FileConfig;
use crate::core::nft_ownership::TableOwnership;
use crate::error::{Error, Result};
use crate::verify::{Vantage, VerifyOptions};
use std::net::SocketAddr;
use std::time::Duration;

pub const DEFAULT_RESYNC: Duration = Duration::from_secs(10);
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9440";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonSettings {
    pub resync_interval: Duration,
    pub listen: SocketAddr,
    pub cleanup_on_exit: bool,
    pub log_format: LogFormat,
    /// Periodic `verify` (None: off) and how it probes.
    pub probe_interval: Option<Duration>,
    pub probe: VerifyOptions,
    pub ready_requires_probe: bool,
    /// Whether the daemon owns its nftables table (`--table-ownership`).
    pub table_ownership: TableOwnership,
}

use crate::core::duration::parse_duration;

impl DaemonSettings {
    /// Messages name the flag, variable or config key each value came from.
    pub fn merge(args: &RunArgs, file: &FileConfig) -> Result<DaemonSettings> {
        let mut problems = Vec::new();
        let name = |id: &str, from_cli: bool| crate::config::origin(&args.policy, file, id, from_cli);
        let resync_name = name("resync_interval", args.resync_interval.is_some());
        let resync_interval = match args.resync_interval.as_deref().or(file.resync_interval.as_deref()) {
            None => DEFAULT_RESYNC,
            Some(s) => match parse_duration(&resync_name, s) {
                Ok(d) if d >= Duration::from_millis(100) && d <= Duration::from_secs(3600) => d,
                Ok(_) => {
                    problems.push(format!("{resync_name}: '{s}' is outside 100ms..1h"));
                    DEFAULT_RESYNC
                }
                Err(e) => {
                    problems.push(e);
                    DEFAULT_RESYNC
                }
            },
        };
        let listen_raw = args
            .listen
            .as_deref()
            .or(file.listen.as_deref())
            .unwrap_or(DEFAULT_LISTEN);
        let listen = listen_raw.parse().unwrap_or_else(|_| {
            problems.push(format!(
                "{}: '{listen_raw}' is not an address:port (e.g. 127.0.0.1:9440 or [::1]:9440)",
                name("listen", args.listen.is_some())
            ));
            DEFAULT_LISTEN.parse().expect("default parses")
        });
        let probe_name = name("probe_interval", args.probe_interval.is_some());
        let probe_interval = match args.probe_interval.as_deref().or(file.probe_interval.as_deref()) {
            None | Some("off") | Some("0") => None,
            Some(s) => match parse_duration(&probe_name, s) {
                Ok(d) if d >= Duration::from_secs(1) => Some(d),
                Ok(_) => {
                    problems.push(format!("{probe_name}: '{s}' is below 1s (or 'off')"));
                    None
                }
                Err(e) => {
                    problems.push(e);
                    None
                }
            },
        };
        let ready_requires_probe = args.ready_requires_probe || file.ready_requires_probe.unwrap_or(false);
        if ready_requires_probe && probe_interval.is_none() {
            problems.push(format!(
                "{} needs a probe interval: set {} (e.g. 60s)",
                name("ready_requires_probe", args.ready_requires_probe),
                name("probe_interval", true)
            ));
        }
        let vantage = match (&args.probe_netns, args.probe_source) {
            (Some(path), _) => Vantage::Netns(path.clone()),
            (None, Some(ip)) => Vantage::Source(ip),
            (None, None) => Vantage::Auto,
        };
        let control = match args.probe_control.as_deref().map(str::trim).filter(|c| !c.is_empty()) {
            None => None,
            Some(raw) => match crate::core::address::parse_endpoint(raw) {
                Ok(ep) => Some(ep),
                Err(e) => {
                    problems.push(format!(
                        "--probe-control (APISERVER_GUARD_PROBE_CONTROL): {}",
                        e.replacen("apiserver: ", "", 1)
                    ));
                    None
                }
            },
        };
        if !problems.is_empty() {
            return Err(Error::BadInput(problems));
        }
        Ok(DaemonSettings {
            probe_interval,
            probe: VerifyOptions {
                vantage,
                control,
                ..VerifyOptions::default()
            },
            ready_requires_probe,
            resync_interval,
            listen,
            cleanup_on_exit: args.cleanup_on_exit || file.cleanup_on_exit.unwrap_or(false),
            table_ownership: args.table_ownership.or(file.table_ownership).unwrap_or_default(),
            log_format: args.log_format.or(file.log_format).unwrap_or(LogFormat::Auto),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::PolicyArgs;

    fn args() -> RunArgs {
        RunArgs {
            policy: PolicyArgs::default(),
            resync_interval: None,
            listen: None,
            cleanup_on_exit: false,
            log_format: None,
            probe_interval: None,
            ready_requires_probe: false,
            probe_netns: None,
            probe_source: None,
            probe_control: None,
            node_taint: None,
            table_ownership: None,
        }
    }

    #[test]
    fn probe_control_is_parsed_or_refused_naming_the_flag() {
        let file = crate::config::FileConfig::default();
        let mut a = args();
        a.probe_control = Some("10.0.1.1:10250".into());
        let s = DaemonSettings::merge(&a, &file).unwrap();
        assert_eq!(s.probe.control.map(|c| c.to_string()), Some("10.0.1.1:10250".into()));
        a.probe_control = Some("not-an-address".into());
        let e = DaemonSettings::merge(&a, &file).err().unwrap().to_string();
        assert!(e.contains("--probe-control (APISERVER_GUARD_PROBE_CONTROL)"), "{e}");
    }

    #[test]
    fn a_bare_number_is_seconds_from_the_variable_and_from_the_file_alike() {
        for file in [
            "resync_interval = 10\nprobe_interval = 90\n",
            "resync_interval = \"10\"\nprobe_interval = \"90\"\n",
        ] {
            let f = crate::config::parse_file(file, std::path::Path::new("g.toml")).unwrap();
            let s = DaemonSettings::merge(&args(), &f).unwrap();
            assert_eq!(s.resync_interval, Duration::from_secs(10), "{file}");
            assert_eq!(s.probe_interval, Some(Duration::from_secs(90)), "{file}");
        }
        let f = crate::config::parse_file(
            "probe_interval = 0\nresync_interval = 0.5\n",
            std::path::Path::new("g.toml"),
        )
        .unwrap();
        let s = DaemonSettings::merge(&args(), &f).unwrap();
        assert_eq!(
            (s.probe_interval, s.resync_interval),
            (None, Duration::from_millis(500))
        );
        let a = RunArgs {
            resync_interval: Some("5".into()),
            ..args()
        };
        assert_eq!(
            DaemonSettings::merge(&a, &FileConfig::default())
                .unwrap()
                .resync_interval,
            Duration::from_secs(5)
        );
        // Out of range either way, with the same words.
        let f = crate::config::parse_file("resync_interval = 7200\n", std::path::Path::new("g.toml")).unwrap();
        let e = DaemonSettings::merge(&args(), &f).unwrap_err().to_string();
        assert!(
            e.contains("resync_interval in g.toml: '7200' is outside 100ms..1h"),
            "{e}"
        );
    }

    #[test]
    fn defaults_are_loopback_10s_fail_closed() {
        let s = DaemonSettings::merge(&args(), &FileConfig::default()).unwrap();
        assert_eq!(s.resync_interval, DEFAULT_RESYNC);
        assert_eq!(s.listen.to_string(), DEFAULT_LISTEN);
        assert!(!s.cleanup_on_exit);
        assert_eq!(s.log_format, LogFormat::Auto);
    }

    #[test]
    fn flags_beat_file() {
        let file = FileConfig {
            resync_interval: Some("30s".into()),
            listen: Some("0.0.0.0:9000".into()),
            cleanup_on_exit: Some(true),
            ..Default::default()
        };
        let s = DaemonSettings::merge(&args(), &file).unwrap();
        assert_eq!(
            (s.resync_interval, s.listen.port(), s.cleanup_on_exit),
            (Duration::from_secs(30), 9000, true)
        );
        let a = RunArgs {
            resync_interval: Some("1s".into()),
            listen: Some("[::1]:1".into()),
            ..args()
        };
        let s = DaemonSettings::merge(&a, &file).unwrap();
        assert_eq!(
            (s.resync_interval, s.listen.to_string()),
            (Duration::from_secs(1), "[::1]:1".to_string())
        );
    }

    #[test]
    fn probe_is_off_by_default_and_ready_requires_it_to_be_on() {
        let s = DaemonSettings::merge(&args(), &FileConfig::default()).unwrap();
        assert_eq!(s.probe_interval, None);
        let a = RunArgs {
            ready_requires_probe: true,
            ..args()
        };
        assert!(DaemonSettings::merge(&a, &FileConfig::default()).is_err());
        let a = RunArgs {
            ready_requires_probe: true,
            probe_interval: Some("60s".into()),
            ..args()
        };
        let s = DaemonSettings::merge(&a, &FileConfig::default()).unwrap();
        assert_eq!(s.probe_interval, Some(Duration::from_secs(60)));
        assert_eq!(s.probe.vantage, Vantage::Auto);
    }

    #[test]
    fn bad_values_are_all_reported() {
        let a = RunArgs {
            resync_interval: Some("1ms".into()),
            listen: Some("localhost".into()),
            ..args()
        };
        let Err(Error::BadInput(p)) = DaemonSettings::merge(&a, &FileConfig::default()) else {
            panic!()
        };
        assert_eq!(p.len(), 2, "{p:?}");
    }
}
