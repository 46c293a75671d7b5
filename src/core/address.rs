//! Strict parsing of the addresses an operator gives us: CIDRs (no host bits,
//! no names, no stray characters) and apiserver endpoints (`IP`, `IP:PORT`,
//! `[IPv6]:PORT`). Pure; every error says what would be right.

use ipnet::IpNet;
use std::fmt;
use std::net::IpAddr;

/// An apiserver endpoint: an address and, optionally, one TCP port.
/// Without a port every protocol and port to that address is blocked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub port: Option<u16>,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.ip, self.port) {
            (ip, None) => write!(f, "{ip}"),
            (IpAddr::V4(ip), Some(p)) => write!(f, "{ip}:{p}"),
            (IpAddr::V6(ip), Some(p)) => write!(f, "[{ip}]:{p}"),
        }
    }
}

/// Characters that can appear in an address or CIDR; anything else is
/// refused up front with a message that does not echo shell syntax back as valid.
fn has_only_address_chars(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '/' | '[' | ']'))
}

/// One reading of a dotted IPv4 part: decimal (`010` = 10) or octal as
/// inet_aton(3) reads it (`010` = 8); None when that reading is not an address.
fn read_octets(parts: &[&str], octal: bool) -> Option<String> {
    let read = |p: &&str| {
        let n = if octal && p.len() > 1 && p.starts_with('0') {
            u32::from_str_radix(&p[1..], 8).ok()?
        } else {
            p.parse::<u32>().ok()?
        };
        (n <= 255).then(|| n.to_string())
    };
    Some(parts.iter().map(read).collect::<Option<Vec<_>>>()?.join("."))
}

/// IPv4 with a leading zero in an octet (`010.0.0.0`) means 10.0.0.0 to some
/// tools and 8.0.0.0 to others (inet_aton reads it as octal): refused,
/// showing both readings of the whole value.
fn leading_zero_problem(what: &str, s: &str) -> Option<String> {
    let token = s.split([':', '/', '[', ']']).find(|t| {
        let parts: Vec<&str> = t.split('.').collect();
        parts.len() == 4
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
            && parts.iter().any(|p| p.len() > 1 && p.starts_with('0'))
    })?;
    let parts: Vec<&str> = token.split('.').collect();
    let reading = |octal: bool| match read_octets(&parts, octal) {
        Some(ip) => s.replacen(token, &ip, 1),
        None => "not an address".to_string(),
    };
    Some(format!(
        "{what}: '{s}' is ambiguous: an IPv4 octet with a leading zero is decimal to some tools ({}) and octal to others, inet_aton(3) among them ({}); write it without leading zeros",
        reading(false),
        reading(true)
    ))
}

/// Parses a CIDR such as `10.0.0.0/16` or `fd00::/48`. A bare address is a
/// host network (/32 or /128). Host bits must be zero.
pub fn parse_cidr(what: &str, input: &str) -> Result<IpNet, String> {
    let s = input.trim();
    if s.is_empty() {
        return Err(format!(
            "{what}: empty value (expected a CIDR such as 10.0.0.0/16 or fd00::/48)"
        ));
    }
    if !has_only_address_chars(s) {
        return Err(format!(
            "{what}: '{s}' is not a CIDR (expected a CIDR such as 10.0.0.0/16 or fd00::/48; names and other characters are not allowed)"
        ));
    }
    if let Some(e) = leading_zero_problem(what, s) {
        return Err(e);
    }
    let net: IpNet = if s.contains('/') {
        s.parse().map_err(|_| {
            format!("{what}: '{s}' is not a valid CIDR (expected e.g. 10.0.0.0/16 or fd00::/48; the prefix length is at most 32 for IPv4 and 128 for IPv6)")
        })?
    } else {
        let ip: IpAddr = s.parse().map_err(|_| {
            format!("{what}: '{s}' is not a valid CIDR or address (expected e.g. 10.0.0.0/16 or fd00::/48)")
        })?;
        IpNet::from(ip)
    };
    if net.trunc() != net {
        return Err(format!(
            "{what}: '{s}' has host bits set; the network address is {} (write that, or fix the prefix length)",
            net.trunc()
        ));
    }
    Ok(net)
}

/// Parses an apiserver endpoint: `IP`, `IP:PORT`, `[IPv6]` or `[IPv6]:PORT`.
pub fn parse_endpoint(input: &str) -> Result<Endpoint, String> {
    parse_endpoint_as("apiserver", input)
}

/// `parse_endpoint`, naming the value's origin (`--apiserver`, a variable, a config key) in errors.
pub fn parse_endpoint_as(what: &str, input: &str) -> Result<Endpoint, String> {
    let s = input.trim();
    let hint = "expected IP, IP:PORT or [IPv6]:PORT, e.g. 192.168.0.10:5443 or [fd00::10]:6443";
    if s.is_empty() {
        return Err(format!("{what}: empty value ({hint})"));
    }
    if let Some((h, p)) = s.rsplit_once(':') {
        let ip_host = h.parse::<std::net::Ipv4Addr>().is_ok() || (h.starts_with('[') && h.ends_with(']'));
        if ip_host && !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric()) && p.parse::<u64>().is_err() {
            return Err(format!(
                "{what}: '{s}' has an invalid port '{p}' (a number from 1 to 65535)"
            ));
        }
    }
    if !has_only_address_chars(s) {
        return Err(format!(
            "{what}: '{s}' is not an IP address ({hint}; host names are not resolved, give the address)"
        ));
    }
    if let Some(e) = leading_zero_problem(what, s) {
        return Err(e);
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("{what}: '{s}' has no closing ']' ({hint})"))?;
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None => return Err(format!("{what}: '{s}' is malformed ({hint})")),
            },
        }
    } else if s.matches(':').count() == 1 {
        let (h, p) = s.split_once(':').expect("one colon");
        (h, Some(p))
    } else {
        (s, None)
    };
    let ip: IpAddr = host
        .parse()
        .map_err(|_| format!("{what}: '{s}' is not a valid address ({hint})"))?;
    if s.starts_with('[') && ip.is_ipv4() {
        return Err(format!(
            "{what}: '{s}' puts an IPv4 address in brackets, which are for IPv6 ({hint})"
        ));
    }
    let port = match port {
        None => None,
        Some(p) => Some(parse_port(what, s, p)?),
    };
    Ok(Endpoint { ip, port })
}

fn parse_port(what: &str, whole: &str, p: &str) -> Result<u16, String> {
    let n: u64 = p
        .parse()
        .map_err(|_| format!("{what}: '{whole}' has an invalid port '{p}' (a number from 1 to 65535)"))?;
    match n {
        1..=65535 => Ok(n as u16),
        _ => Err(format!(
            "{what}: '{whole}' has port {n}, outside 1..65535 (leave the port out to block every port)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_that_parse() {
        assert_eq!(parse_cidr("x", "10.0.0.0/16").unwrap().to_string(), "10.0.0.0/16");
        assert_eq!(parse_cidr("x", " fd00::/48 ").unwrap().to_string(), "fd00::/48");
        assert_eq!(parse_cidr("x", "10.0.0.7").unwrap().to_string(), "10.0.0.7/32");
        assert_eq!(parse_cidr("x", "fd00::7").unwrap().to_string(), "fd00::7/128");
        assert_eq!(parse_cidr("x", "0.0.0.0/0").unwrap().to_string(), "0.0.0.0/0");
    }

    #[test]
    fn host_bits_name_the_network_address() {
        let e = parse_cidr("container CIDR", "10.0.1.5/16").unwrap_err();
        assert!(e.contains("host bits"), "{e}");
        assert!(e.contains("10.0.0.0/16"), "{e}");
        let e = parse_cidr("container CIDR", "fd00::1/48").unwrap_err();
        assert!(e.contains("fd00::/48"), "{e}");
    }

    #[test]
    fn malformed_cidrs_are_refused() {
        for bad in [
            "",
            "10.0.0.0/33",
            "fd00::/129",
            "10.0.0/16",
            "10.0.0.0/",
            "ten.0.0.0/8",
            "10.0.0.0/16; nft flush ruleset",
            "10.0.0.0/16 -j ACCEPT",
            "$(reboot)",
            "10.0.0.0//16",
            "256.0.0.0/8",
            "10.0.0.0/-1",
        ] {
            assert!(parse_cidr("x", bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn smuggled_commands_are_named_as_not_a_cidr() {
        let e = parse_cidr("container CIDR", "10.0.0.0/16; nft flush ruleset").unwrap_err();
        assert!(e.contains("not a CIDR"), "{e}");
    }

    #[test]
    fn endpoints_that_parse() {
        let e = parse_endpoint("192.168.0.10").unwrap();
        assert_eq!((e.ip.to_string(), e.port), ("192.168.0.10".into(), None));
        let e = parse_endpoint("192.168.0.10:5443").unwrap();
        assert_eq!(e.port, Some(5443));
        let e = parse_endpoint("[fd00::10]:6443").unwrap();
        assert_eq!((e.ip.to_string(), e.port), ("fd00::10".into(), Some(6443)));
        let e = parse_endpoint("fd00::10").unwrap();
        assert_eq!((e.ip.to_string(), e.port), ("fd00::10".into(), None));
        let e = parse_endpoint("[fd00::10]").unwrap();
        assert_eq!(e.port, None);
        assert_eq!(parse_endpoint("1.2.3.4:65535").unwrap().port, Some(65535));
    }

    #[test]
    fn endpoint_display_round_trips() {
        for s in ["192.168.0.10", "192.168.0.10:5443", "[fd00::10]:6443", "fd00::10"] {
            assert_eq!(parse_endpoint(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn bad_ports_are_refused_with_the_range() {
        for bad in ["1.2.3.4:0", "1.2.3.4:65536", "[fd00::1]:0", "[fd00::1]:99999"] {
            let e = parse_endpoint(bad).unwrap_err();
            assert!(e.contains("1..65535"), "{bad}: {e}");
        }
        assert!(parse_endpoint("1.2.3.4:").is_err());
        let e = parse_endpoint("1.2.3.4:https").unwrap_err();
        assert!(e.contains("invalid port 'https'"), "{e}");
        assert!(parse_endpoint("[fd00::1]:https").unwrap_err().contains("invalid port"));
    }

    #[test]
    fn leading_zeros_are_ambiguous_and_both_readings_are_shown() {
        let e = parse_cidr("--container-cidr", "010.000.000.000/16").unwrap_err();
        assert!(
            e.starts_with("--container-cidr: '010.000.000.000/16' is ambiguous"),
            "{e}"
        );
        assert!(e.contains("(10.0.0.0/16)") && e.contains("(8.0.0.0/16)"), "{e}");
        let e = parse_cidr("--exempt", "10.0.05.0/24").unwrap_err();
        assert!(e.contains("(10.0.5.0/24)") && e.contains("(10.0.5.0/24)"), "{e}");
        // 09 is no octal number: that reading is not an address at all.
        let e = parse_cidr("x", "10.09.0.0/16").unwrap_err();
        assert!(e.contains("(10.9.0.0/16)") && e.contains("(not an address)"), "{e}");
        let e = parse_endpoint_as("APISERVER_GUARD_APISERVER", "192.168.000.010:5443").unwrap_err();
        assert!(
            e.contains("ambiguous") && e.contains("(192.168.0.10:5443)") && e.contains("(192.168.0.8:5443)"),
            "{e}"
        );
        let e = parse_endpoint("::ffff:010.0.0.1").unwrap_err();
        assert!(e.contains("ambiguous"), "{e}");
        // Plain zeros are fine.
        assert!(parse_cidr("x", "10.0.0.0/16").is_ok());
        assert!(parse_endpoint("10.0.0.100:443").is_ok());
    }

    #[test]
    fn errors_name_where_the_value_came_from() {
        let e = parse_endpoint_as("apiserver in /etc/x.toml", "1.2.3.4:0").unwrap_err();
        assert!(e.starts_with("apiserver in /etc/x.toml: '1.2.3.4:0'"), "{e}");
        let e = parse_endpoint_as("APISERVER_GUARD_APISERVER", "1.2.3.4:https").unwrap_err();
        assert!(e.starts_with("APISERVER_GUARD_APISERVER: "), "{e}");
    }

    #[test]
    fn malformed_endpoints_are_refused() {
        for bad in [
            "",
            "apiserver.local",
            "apiserver.local:443",
            "1.2.3.4/32",
            "[fd00::1",
            "[fd00::1]443",
            "1.2.3.4:443; rm -rf /",
            "[1.2.3.4]:443",
            "fd00::1:443:x",
        ] {
            assert!(parse_endpoint(bad).is_err(), "accepted {bad:?}");
        }
    }
}
