//! Refused policy values, from flags, environment and config file alike:
//! malformed and unsafe CIDRs, bad ports, empty lists, exempt ranges that
//! are outside or cover the container CIDR, host names, smuggled commands,
//! and several problems named at once.

use crate::common::bad_input_cases::*;

/// This topic's refused inputs, each otherwise identical to the good policy
/// with `--backend backend`. Config files are written into `dir`.
pub fn cases(dir: &TempDir, backend: &str) -> Vec<BadCase> {
    let c = CaseBuilder::new(dir, backend);
    let split_exempt = dir.file("split-exempt.toml", "exempt = [\"10.0.0.0/17\", \"10.0.128.0/17\"]\n");
    vec![
        // Malformed CIDRs.
        c.b(
            "malformed cidr 10.0.0/16",
            &cidr("10.0.0/16"),
            &["'10.0.0/16'", "not a valid CIDR"],
        ),
        c.b("malformed cidr banana", &cidr("banana"), &["'banana'", "not a CIDR"]),
        c.b(
            "host bits v4",
            &cidr("10.0.1.5/16"),
            &["'10.0.1.5/16'", "host bits", "network address is 10.0.0.0/16"],
        ),
        c.b(
            "host bits v6 next to a good v4 cidr",
            &cidr("10.0.0.0/16,fd00::1/48"),
            &["'fd00::1/48'", "host bits", "network address is fd00::/48"],
        ),
        c.b(
            "prefix too long v4",
            &cidr("10.0.0.0/33"),
            &["'10.0.0.0/33'", "not a valid CIDR", "at most 32"],
        ),
        c.b(
            "prefix too long v6",
            &cidr("fd00::/129"),
            &["'fd00::/129'", "not a valid CIDR"],
        ),
        // Ports.
        c.b("port 0", &api("192.168.50.10:0"), &["port 0", "1..65535"]),
        c.b("port 65536", &api("192.168.50.10:65536"), &["port 65536", "1..65535"]),
        c.b(
            "port https",
            &api("192.168.50.10:https"),
            // Port names are not resolved: the message says the port is invalid and what is valid.
            &["'192.168.50.10:https'", "invalid port 'https'", "1 to 65535"],
        ),
        c.b(
            "port abc (hex letters reach the port parser)",
            &api("192.168.50.10:abc"),
            &["invalid port 'abc'", "1 to 65535"],
        ),
        // Unsafe policies.
        c.b("0.0.0.0/0 source", &cidr("0.0.0.0/0"), &["0.0.0.0/0", "every source"]),
        c.b(
            "::/0 source",
            &[
                ("--container-cidr", Some("::/0")),
                ("--apiserver", Some("[fd00:50::10]:5443")),
            ],
            &["::/0", "every source"],
        ),
        c.b(
            "apiserver inside a blocked cidr",
            &api("10.0.3.4:443"),
            &["10.0.3.4:443", "inside the blocked container CIDR 10.0.0.0/16"],
        ),
        c.b(
            "unspecified apiserver",
            &api("0.0.0.0:443"),
            &["0.0.0.0:443", "unspecified"],
        ),
        c.b(
            "ipv4 apiserver in brackets",
            &api("[192.168.50.10]:5443"),
            &["[192.168.50.10]:5443", "brackets"],
        ),
        // Empty lists.
        c.b(
            "no container cidr",
            &[("--container-cidr", None)],
            &["no container CIDR"],
        ),
        c.b("empty container cidr value", &cidr(""), &["no container CIDR"]),
        c.b("no apiserver", &[("--apiserver", None)], &["no apiserver"]),
        c.b("empty apiserver value", &api(",,"), &["no apiserver"]),
        c.b(
            "nothing to block for any family",
            &api("[fd00:50::10]:5443"),
            &["nothing to block", "10.0.0.0/16", "[fd00:50::10]:5443"],
        ),
        // Exempt.
        c.b(
            "exempt outside every cidr",
            &[("--exempt", Some("10.9.0.0/24"))],
            &["exempt 10.9.0.0/24", "not inside any container CIDR"],
        ),
        c.b(
            "exempt covering the whole cidr",
            &[("--exempt", Some("10.0.0.0/8"))],
            &[
                "--exempt: exempt 10.0.0.0/8",
                "covers the whole container CIDR 10.0.0.0/16",
            ],
        )
        // One problem, one message: not also "outside every container CIDR".
        .without(&["not inside any container CIDR"]),
        c.be(
            "exempt covering the whole cidr via APISERVER_GUARD_EXEMPT",
            &[],
            &[("APISERVER_GUARD_EXEMPT", "10.0.0.0/8")],
            &[
                "APISERVER_GUARD_EXEMPT: exempt 10.0.0.0/8",
                "covers the whole container CIDR",
            ],
        )
        .without(&["not inside any container CIDR"]),
        // Exempt ranges that only together cover the whole CIDR: the pods would be served.
        c.b(
            "exempt ranges together covering the whole cidr",
            &[("--exempt", Some("10.0.0.0/17,10.0.128.0/17"))],
            &[
                "--exempt: the exempt ranges 10.0.0.0/17, 10.0.128.0/17 together cover the whole container CIDR 10.0.0.0/16 (--container-cidr)",
                "nothing of it would be blocked",
            ],
        )
        .without(&["not inside any container CIDR"]),
        c.be(
            "four exempt ranges together covering the cidr via APISERVER_GUARD_EXEMPT",
            &[],
            &[(
                "APISERVER_GUARD_EXEMPT",
                "10.0.192.0/18,10.0.0.0/18,10.0.128.0/18,10.0.64.0/18",
            )],
            &["APISERVER_GUARD_EXEMPT: the exempt ranges 10.0.0.0/18, 10.0.64.0/18, 10.0.128.0/18, 10.0.192.0/18 together cover the whole container CIDR 10.0.0.0/16"],
        ),
        c.b(
            "exempt ranges together covering the cidr from the config file",
            &[("--config", Some(split_exempt.as_str()))],
            &[&format!(
                "exempt in {split_exempt}: the exempt ranges 10.0.0.0/17, 10.0.128.0/17 together cover the whole container CIDR 10.0.0.0/16"
            )],
        ),
        c.b(
            "exempt with host bits",
            &[("--exempt", Some("10.0.5.1/24"))],
            &["host bits", "10.0.5.0/24"],
        ),
        // Names are not addresses.
        c.b(
            "host name as apiserver",
            &api("kubernetes.default:443"),
            &["'kubernetes.default:443'", "host names are not resolved"],
        ),
        // Smuggled commands.
        c.b(
            "smuggled ; nft flush ruleset",
            &cidr("10.0.0.0/16; nft flush ruleset"),
            &["'10.0.0.0/16; nft flush ruleset'", "not a CIDR"],
        ),
        c.b(
            "smuggled -j ACCEPT",
            &cidr("10.0.0.0/16 -j ACCEPT"),
            &["'10.0.0.0/16 -j ACCEPT'", "not a CIDR"],
        ),
        c.b("smuggled $(reboot)", &cidr("$(reboot)"), &["'$(reboot)'", "not a CIDR"]),
        c.b(
            "smuggled in the apiserver",
            &api("192.168.50.10:5443; nft flush ruleset"),
            &["not an IP address"],
        ),
        c.b(
            "smuggled in exempt",
            &[("--exempt", Some("10.0.5.0/24 -j ACCEPT"))],
            &["'10.0.5.0/24 -j ACCEPT'", "not a CIDR"],
        ),
        c.be(
            "smuggled via APISERVER_GUARD_CONTAINER_CIDR",
            &[("--container-cidr", None)],
            &[("APISERVER_GUARD_CONTAINER_CIDR", "10.0.0.0/16; nft flush ruleset")],
            &["'10.0.0.0/16; nft flush ruleset'", "not a CIDR"],
        ),
        c.be(
            "host bits via APISERVER_GUARD_CONTAINER_CIDR",
            &[("--container-cidr", None)],
            &[("APISERVER_GUARD_CONTAINER_CIDR", "10.0.1.5/16")],
            &["host bits", "10.0.0.0/16"],
        ),
        c.be(
            "port 0 via APISERVER_GUARD_APISERVER",
            &[("--apiserver", None)],
            &[("APISERVER_GUARD_APISERVER", "192.168.50.10:0")],
            &["port 0", "1..65535"],
        ),
        // Several problems at once: each one is named.
        c.b(
            "several problems at once",
            &[
                ("--container-cidr", Some("10.0.1.5/16")),
                ("--apiserver", Some("192.168.50.10:0")),
            ],
            &["host bits", "10.0.0.0/16", "port 0"],
        ),
    ]
}
