//! Refused addresses that parse but cannot work: IPv4-mapped and
//! IPv4-compatible IPv6, multicast, broadcast, loopback, unspecified,
//! reserved, and ambiguous leading zeros, from flags, environment and file.

use crate::common::bad_input_cases::*;

/// This topic's refused inputs, each otherwise identical to the good policy
/// with `--backend backend`. Config files are written into `dir`.
pub fn cases(dir: &TempDir, backend: &str) -> Vec<BadCase> {
    let c = CaseBuilder::new(dir, backend);
    let loopback_api = dir.file(
        "loopback-api.toml",
        "container_cidr = \"10.0.0.0/16\"\napiserver = \"127.0.0.1:6443\"\nmode = \"tunnel\"\n",
    );
    let mapped_cidr = dir.file(
        "mapped-cidr.toml",
        "container_cidr = \"::ffff:10.0.0.0/104\"\napiserver = \"192.168.50.10:5443\"\nmode = \"tunnel\"\n",
    );
    vec![
        // Addresses that parse but cannot work.
        c.b(
            "ipv4-mapped container cidr and apiserver",
            &[
                ("--container-cidr", Some("::ffff:10.0.0.0/104")),
                ("--apiserver", Some("[::ffff:192.168.50.10]:5443")),
            ],
            &[
                "--container-cidr: '::ffff:10.0.0.0/104'",
                "IPv4 form 10.0.0.0/8",
                "--apiserver: '[::ffff:192.168.50.10]:5443'",
                "IPv4 form 192.168.50.10:5443",
            ],
        ),
        c.b(
            "ipv4-mapped exempt",
            &[("--exempt", Some("::ffff:10.0.5.0/120"))],
            &["--exempt: '::ffff:10.0.5.0/120'", "IPv4 form 10.0.5.0/24"],
        )
        .without(&["not inside any container CIDR"]),
        c.b(
            "link-local multicast apiserver",
            &api("224.0.0.1:443"),
            &["--apiserver: '224.0.0.1:443'", "link-local multicast"],
        ),
        c.b(
            "multicast apiserver",
            &api("239.1.2.3"),
            &["--apiserver: '239.1.2.3'", "multicast"],
        ),
        c.b(
            "ipv6 multicast apiserver",
            &[
                ("--container-cidr", Some("fd00:10::/48")),
                ("--apiserver", Some("[ff02::1]:443")),
            ],
            &["--apiserver: '[ff02::1]:443'", "link-local multicast"],
        ),
        c.b(
            "broadcast apiserver",
            &api("255.255.255.255"),
            &["--apiserver: '255.255.255.255'", "broadcast"],
        ),
        c.b(
            "loopback apiserver",
            &api("127.0.0.1:6443"),
            &["--apiserver: '127.0.0.1:6443'", "loopback"],
        ),
        c.b(
            "ipv6 loopback apiserver",
            &[
                ("--container-cidr", Some("fd00:10::/48")),
                ("--apiserver", Some("[::1]:6443")),
            ],
            &["--apiserver: '[::1]:6443'", "loopback"],
        ),
        c.b(
            "ipv6 unspecified apiserver",
            &[
                ("--container-cidr", Some("fd00:10::/48")),
                ("--apiserver", Some("[::]:443")),
            ],
            &["--apiserver: '[::]:443'", "unspecified"],
        ),
        c.b(
            "multicast container cidr",
            &cidr("224.0.0.0/4"),
            &["--container-cidr: '224.0.0.0/4'", "multicast"],
        ),
        c.b(
            "reserved container cidr",
            &cidr("240.0.0.0/4"),
            &["--container-cidr: '240.0.0.0/4'", "reserved"],
        ),
        c.b(
            "container cidr overlapping multicast",
            &cidr("192.0.0.0/2"),
            &["--container-cidr: '192.0.0.0/2'", "overlaps 224.0.0.0/4"],
        ),
        c.b(
            "ipv6 multicast container cidr",
            &[
                ("--container-cidr", Some("ff00::/8")),
                ("--apiserver", Some("[fd00:50::10]:5443")),
            ],
            &["--container-cidr: 'ff00::/8'", "multicast"],
        ),
        c.b(
            "leading zeros in the container cidr",
            &cidr("010.000.000.000/16"),
            &[
                "--container-cidr: '010.000.000.000/16' is ambiguous",
                "(10.0.0.0/16)",
                "(8.0.0.0/16)",
            ],
        ),
        c.b(
            "leading zeros in the apiserver",
            &api("192.168.050.010:5443"),
            &[
                "--apiserver: '192.168.050.010:5443' is ambiguous",
                "(192.168.50.10:5443)",
                "(192.168.40.8:5443)",
            ],
        ),
        c.b(
            "leading zeros in exempt",
            &[("--exempt", Some("10.0.05.0/24"))],
            &["--exempt: '10.0.05.0/24' is ambiguous", "(10.0.5.0/24)"],
        ),
        c.be(
            "multicast apiserver via APISERVER_GUARD_APISERVER",
            &[("--apiserver", None)],
            &[("APISERVER_GUARD_APISERVER", "224.0.0.1:443")],
            &["APISERVER_GUARD_APISERVER: '224.0.0.1:443'", "multicast"],
        ),
        c.be(
            "leading zeros via APISERVER_GUARD_CONTAINER_CIDR",
            &[("--container-cidr", None)],
            &[("APISERVER_GUARD_CONTAINER_CIDR", "010.000.000.000/16")],
            &["APISERVER_GUARD_CONTAINER_CIDR: '010.000.000.000/16' is ambiguous"],
        ),
        c.file(
            "config with a loopback apiserver",
            &loopback_api,
            &[&format!("apiserver in {loopback_api}: '127.0.0.1:6443'"), "loopback"],
        ),
        c.file(
            "config with an ipv4-mapped container cidr",
            &mapped_cidr,
            &[
                &format!("container_cidr in {mapped_cidr}: '::ffff:10.0.0.0/104'"),
                "10.0.0.0/8",
            ],
        ),
        c.b(
            "ipv4-compatible apiserver",
            &api("[::192.168.50.10]:5443"),
            &[
                "--apiserver: '[::192.168.50.10]:5443' is an IPv4-compatible IPv6 address",
                "RFC 4291",
                "write the IPv4 form 192.168.50.10:5443",
            ],
        )
        .without(&["c0a8", "share no address family"]),
        c.b(
            "ipv4-compatible container cidr",
            &cidr("::10.0.0.0/104"),
            &[
                "--container-cidr: '::10.0.0.0/104' is IPv4-compatible IPv6",
                "write the IPv4 form 10.0.0.0/8",
            ],
        )
        .without(&["a00:0", "share no address family"]),
    ]
}
