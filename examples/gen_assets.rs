//! Generates the packages' documentation assets from the clap definitions in
//! `apiserver_guard::cli::Cli`, so they never drift from the binary: the man
//! pages (section 8: `apiserver-guard.8` plus one page per subcommand, e.g.
//! `apiserver-guard-run.8`) and the bash, zsh and fish completions.
//!
//! Usage: `cargo run --example gen_assets -- OUT_DIR`
//! writes `OUT_DIR/man/*.8` and `OUT_DIR/completions/{apiserver-guard.bash,
//! _apiserver-guard, apiserver-guard.fish}`. clap_mangen and clap_complete are
//! dev-dependencies: nothing of this ships in the binary.

use apiserver_guard::cli::Cli;
use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::Man;
use std::io::Write;
use std::path::Path;

const BIN: &str = "apiserver-guard";
const SECTION: &str = "8";
const MANUAL: &str = "System Administration";

fn main() {
    let mut args = std::env::args_os().skip(1);
    let (Some(out), None) = (args.next(), args.next()) else {
        eprintln!("usage: gen_assets OUT_DIR");
        std::process::exit(2);
    };
    if let Err(e) = generate(Path::new(&out)) {
        eprintln!("gen_assets: {e}");
        std::process::exit(1);
    }
}

fn generate(out: &Path) -> std::io::Result<()> {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    // The main page gets a fuller description than `--help` shows.
    let main_cmd = cmd.clone().long_about(DESCRIPTION);

    let man_dir = out.join("man");
    std::fs::create_dir_all(&man_dir)?;
    let version = cmd.get_version().unwrap_or_default().to_string();
    let source = format!("{BIN} {version}");

    let date = build_date();
    let page = |c: clap::Command| {
        Man::new(c)
            .section(SECTION)
            .manual(MANUAL)
            .source(source.clone())
            .date(date.clone())
    };
    let main = page(main_cmd);
    let mut f = create(&man_dir.join(main.get_filename()))?;
    main.render_title(&mut f)?;
    // No hyphenation: long option names and paths read better unbroken.
    writeln!(f, ".nh")?;
    main.render_name_section(&mut f)?;
    main.render_synopsis_section(&mut f)?;
    main.render_description_section(&mut f)?;
    main.render_options_section(&mut f)?;
    main.render_subcommands_section(&mut f)?;
    f.write_all(MAIN_PAGE_SECTIONS.as_bytes())?;
    writeln!(f, ".SH \"SEE ALSO\"")?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        writeln!(f, ".BR {BIN}-{} ({SECTION}),", sub.get_name())?;
    }
    writeln!(f, ".BR nft (8),\n.BR iptables (8),\n.BR systemd.service (5)")?;
    main.render_version_section(&mut f)?;
    f.flush()?;

    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let man = page(sub.clone());
        let mut f = create(&man_dir.join(man.get_filename()))?;
        man.render(&mut f)?;
        writeln!(f, ".SH \"SEE ALSO\"\n.BR {BIN} (8)")?;
        f.flush()?;
    }

    let comp_dir = out.join("completions");
    std::fs::create_dir_all(&comp_dir)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd, BIN, &comp_dir)?;
    }
    Ok(())
}

/// YYYY-MM-DD of `SOURCE_DATE_EPOCH` (reproducible builds), else of today.
fn build_date() -> String {
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse::<u128>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs().into())
                .unwrap_or(0)
        });
    apiserver_guard::logging::rfc3339_millis(secs * 1000)[..10].to_string()
}

fn create(path: &Path) -> std::io::Result<std::io::BufWriter<std::fs::File>> {
    Ok(std::io::BufWriter::new(std::fs::File::create(path)?))
}

const DESCRIPTION: &str = "A node agent that keeps pod traffic away from kube-apiserver. It installs one \
firewall block (source in the container CIDRs, destination an apiserver endpoint) atomically and \
idempotently, in native nftables (one table, inet apiserver_guard) or in iptables (legacy or nft, \
matching the host; one chain, APISERVER-GUARD, jumped to at rule 1), reads it back to prove it is \
there, and removes exactly what it installed. The run daemon keeps it in place: it repairs a \
flushed or altered block within milliseconds of the change, resyncs periodically, reloads its \
configuration on SIGHUP, and exports health and Prometheus metrics. Every policy is validated \
before anything is changed, including a refusal to cut the node itself off from the apiserver.";

/// Sections the clap definitions cannot hold: exit status, environment,
/// files (what the packages install) and the systemd units.
const MAIN_PAGE_SECTIONS: &str = r#".SH "EXIT STATUS"
.TP
.B 0
Success; for \fBstatus\fR, the block is installed and in sync.
.TP
.B 1
Runtime error (a firewall tool failed or is missing, no permission, could not probe).
.TP
.B 2
Bad input: the policy, a flag or the config file was refused and nothing was changed.
.TP
.B 3
\fBstatus\fR: the block is missing or has drifted. \fBverify\fR: a pod got through or the node is cut off.
.SH ENVIRONMENT
Every policy and daemon option can also be given as an environment variable named
\fBAPISERVER_GUARD_\fR followed by the option's long name in upper case with underscores,
e.g. \fBAPISERVER_GUARD_CONTAINER_CIDR\fR, \fBAPISERVER_GUARD_APISERVER\fR,
\fBAPISERVER_GUARD_CONFIG\fR. Precedence: flags, then environment, then the config file, then defaults.
.SH FILES
.TP
.I /etc/apiserver-guard/config.toml
The configuration: the options' long names in snake_case (\fBcontainer_cidr\fR, \fBapiserver\fR,
\fBmode\fR, \fBbackend\fR, \fBexempt\fR, \fBaction\fR and the daemon's \fBresync_interval\fR,
\fBlisten\fR, \fBcleanup_on_exit\fR, \fBlog_format\fR, \fBprobe_interval\fR,
\fBready_requires_probe\fR). Unknown keys are errors. The packaged file has every key
commented out, so nothing runs until \fBcontainer_cidr\fR and \fBapiserver\fR are set.
.TP
.I apiserver-guard.service
The daemon (\fBapiserver-guard run\fR, \fIType=notify\fR, watchdog, reload on
\fBsystemctl reload\fR), started before the network, kubelet and the container runtimes.
.TP
.I apiserver-guard-apply.service
A one-shot \fBapiserver-guard apply\fR at boot for hosts that want no daemon; applied again
when a firewall service reloads or restarts.
.TP
.I /run/xtables.lock
The lock iptables and kube-proxy take; created at boot by
.IR /usr/lib/tmpfiles.d/apiserver-guard.conf .
.PP
The packages enable nothing. After configuring, run
\fBsystemctl enable \-\-now apiserver\-guard.service\fR (or \fBapiserver\-guard\-apply.service\fR).
Stopping a unit or removing the package leaves the block in place (fail-closed);
\fBapiserver\-guard remove\fR takes it out.
"#;
