//! `apiserver-guard attempts`: who tried to reach the apiserver, from the
//! running daemon's `GET /attempts` on its health listener. A plain HTTP/1.0
//! GET over loopback (bounded in time and size), then a table for a person
//! or the JSON for scripts. Exit 0 with the table (empty included), 1 when
//! the daemon cannot be reached or answers something unexpected.

use crate::cli::{AttemptsArgs, OutputFormat};
use crate::daemon::attempts::{AttemptsPage, RowView};
use crate::error::{exit, Error, Result};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Far above a full table (4,096 rows of ~400 bytes).
const MAX_BODY: u64 = 16 << 20;

/// Entry point; returns the exit code.
pub fn command(args: &AttemptsArgs) -> Result<i32> {
    let addr = target(args.listen);
    let page = fetch(addr)?;
    match args.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&page).expect("serializable")),
        OutputFormat::Text => print!("{}", to_text(&page)),
    }
    Ok(exit::OK)
}

/// Where to connect: a daemon listening on every address is reached on loopback.
pub fn target(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), listen.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), listen.port()),
        _ => listen,
    }
}

fn unreachable(addr: SocketAddr, why: impl std::fmt::Display) -> Error {
    Error::runtime(format!(
        "cannot reach the daemon at {addr} ({why}): is `apiserver-guard run` running on this node, listening there (--listen)?"
    ))
}

/// Connected, but no answer came: the listener is there, so the daemon
/// runs; it serves `http::MAX_CONNECTIONS` at once and the rest wait in
/// the kernel's queue (a break-it find: with every slot held the old hint
/// said the daemon might not be running).
fn no_answer(addr: SocketAddr, why: impl std::fmt::Display) -> Error {
    Error::runtime(format!(
        "the daemon's listener at {addr} took the connection but sent no answer ({why}): it serves {} connections \
         at once and may be busy (see `ss -tn state established '( sport = :{} )'` for who holds them), or the \
         daemon is stuck (see its log)",
        crate::daemon::http::MAX_CONNECTIONS,
        addr.port()
    ))
}

fn fetch(addr: SocketAddr) -> Result<AttemptsPage> {
    let mut s = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(|e| unreachable(addr, e))?;
    let _ = s.set_read_timeout(Some(READ_TIMEOUT));
    let _ = s.set_write_timeout(Some(READ_TIMEOUT));
    s.write_all(format!("GET /attempts HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .map_err(|e| no_answer(addr, e))?;
    let mut raw = Vec::new();
    s.take(MAX_BODY).read_to_end(&mut raw).map_err(|e| no_answer(addr, e))?;
    parse_response(&raw)
        .map_err(|why| Error::runtime(format!("the daemon at {addr} answered /attempts unexpectedly: {why}")))
}

/// The page in an HTTP response, or why not.
pub fn parse_response(raw: &[u8]) -> std::result::Result<AttemptsPage, String> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP response")?;
    let status = head.lines().next().unwrap_or("");
    let code = status.split_whitespace().nth(1).unwrap_or("");
    if code == "404" {
        return Err("no /attempts page (a daemon older than this command?)".into());
    }
    if code != "200" {
        return Err(format!("'{status}': {}", body.trim()));
    }
    serde_json::from_str(body).map_err(|e| format!("not an attempts page ({e})"))
}

fn endpoint(ip: IpAddr, port: Option<u16>) -> String {
    match (ip, port) {
        (IpAddr::V6(v6), Some(p)) => format!("[{v6}]:{p}"),
        (ip, Some(p)) => format!("{ip}:{p}"),
        (ip, None) => ip.to_string(),
    }
}

/// The table for a person: a state line, then one row per (source, apiserver, protocol).
pub fn to_text(page: &AttemptsPage) -> String {
    let mut out = match (page.group, page.bound) {
        (None, _) => "attempts are not read by this daemon\n".to_string(),
        (Some(g), true) => format!("NFLOG group {g}: read"),
        (Some(g), false) => format!(
            "NFLOG group {g}: NOT read ({}): attempts go unreported",
            page.problem.as_deref().unwrap_or("not bound yet")
        ),
    };
    if page.group.is_some() {
        out.push_str(&format!(
            "; {} row(s) of at most {}, {} evicted, {} overflow(s)\n",
            page.attempts.len(),
            page.capacity,
            page.evicted,
            page.overflows
        ));
    }
    if page.attempts.is_empty() {
        out.push_str("no attempts seen since the daemon started\n");
        return out;
    }
    let with_pods = page.attempts.iter().any(|r| r.row.pod.is_some());
    let with_interfaces = page.attempts.iter().any(|r| r.row.interface.is_some());
    let mut rows: Vec<Vec<String>> = vec![];
    let mut header = vec![
        "SOURCE",
        "APISERVER",
        "PROTOCOL",
        "COUNT",
        "FIRST SEEN",
        "LAST SEEN",
        "ACTION",
    ];
    if with_interfaces {
        header.insert(1, "INTERFACE");
    }
    if with_pods {
        header.insert(0, "POD");
    }
    rows.push(header.iter().map(|s| s.to_string()).collect());
    for RowView {
        row,
        first_seen,
        last_seen,
    } in &page.attempts
    {
        let mut cells = vec![
            row.source.to_string(),
            endpoint(row.apiserver, row.port),
            row.protocol.name(),
            row.count.to_string(),
            first_seen.clone(),
            last_seen.clone(),
            row.action.clone(),
        ];
        if with_interfaces {
            cells.insert(1, row.interface.clone().unwrap_or_else(|| "-".into()));
        }
        if with_pods {
            let pod = row
                .pod
                .as_ref()
                .map_or("-".to_string(), |p| format!("{}/{}", p.namespace, p.name));
            cells.insert(0, pod);
        }
        rows.push(cells);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    for r in rows {
        let line: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::attempt_packet::Protocol;
    use crate::core::attempts::{PodRef, Row};

    fn row(src: &str, api: &str, port: Option<u16>, protocol: Protocol) -> RowView {
        RowView::from(Row {
            source: src.parse().unwrap(),
            source_port: Some(40000),
            apiserver: api.parse().unwrap(),
            port,
            protocol,
            action: "blocked".into(),
            rule: "block-tcp-port-v4".into(),
            pod: None,
            interface: None,
            count: 12,
            first_seen_unix_ms: 1_795_880_400_123,
            last_seen_unix_ms: 1_795_880_460_000,
        })
    }

    fn page(attempts: Vec<RowView>) -> AttemptsPage {
        AttemptsPage {
            group: Some(1443),
            bound: true,
            problem: None,
            capacity: 4096,
            evicted: 0,
            overflows: 1,
            attempts,
        }
    }

    #[test]
    fn the_table_lines_up_and_brackets_ipv6() {
        let t = to_text(&page(vec![
            row("10.0.1.2", "192.168.50.10", Some(5443), Protocol::Tcp),
            row("fd00:10:0:1::2", "fd00:50::10", None, Protocol::Other(58)),
        ]));
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "NFLOG group 1443: read; 2 row(s) of at most 4096, 0 evicted, 1 overflow(s)"
        );
        assert_eq!(
            lines[1],
            "SOURCE          APISERVER           PROTOCOL   COUNT  FIRST SEEN                LAST SEEN                 ACTION"
        );
        assert_eq!(
            lines[2],
            "10.0.1.2        192.168.50.10:5443  tcp        12     2026-11-28T15:40:00.123Z  2026-11-28T15:41:00.000Z  blocked"
        );
        assert!(
            lines[3].starts_with("fd00:10:0:1::2  fd00:50::10         ipv6-icmp"),
            "{t}"
        );
    }

    #[test]
    fn empty_unbound_and_attributed_pages() {
        let mut p = page(vec![]);
        p.bound = false;
        p.problem = Some("NFLOG group 1443 is already bound by another process".into());
        let t = to_text(&p);
        assert!(
            t.starts_with("NFLOG group 1443: NOT read (NFLOG group 1443 is already bound"),
            "{t}"
        );
        assert!(t.ends_with("no attempts seen since the daemon started\n"));
        let mut r = row("10.0.1.2", "192.168.50.10", Some(5443), Protocol::Tcp);
        r.row.pod = Some(PodRef {
            namespace: "team-a".into(),
            name: "web-0".into(),
            uid: "0b6c0f38-1d2e-4b7a-9f5e-3c1d2e4b7a9f".into(),
            node: "node-a".into(),
        });
        let t = to_text(&page(vec![
            r,
            row("10.0.0.9", "192.168.50.10", Some(5443), Protocol::Udp),
        ]));
        assert!(t.lines().nth(1).unwrap().starts_with("POD           SOURCE"), "{t}");
        assert!(t.contains("\nteam-a/web-0  10.0.1.2"), "{t}");
        assert!(t.contains("\n-             10.0.0.9"), "{t}");
        assert!(!t.contains("INTERFACE"), "no interface, no column: {t}");
    }

    #[test]
    fn rows_with_an_interface_get_the_column_after_the_source() {
        let mut r = row("10.0.1.2", "192.168.50.10", Some(5443), Protocol::Tcp);
        r.row.interface = Some("cali1a2b3c".into());
        let t = to_text(&page(vec![
            r,
            row("10.0.0.9", "192.168.50.10", Some(5443), Protocol::Tcp),
        ]));
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[1].starts_with("SOURCE    INTERFACE   APISERVER"), "{t}");
        assert!(lines[2].starts_with("10.0.1.2  cali1a2b3c  192.168.50.10:5443"), "{t}");
        assert!(lines[3].starts_with("10.0.0.9  -           192.168.50.10:5443"), "{t}");
    }

    #[test]
    fn responses_and_targets() {
        let body = serde_json::to_string(&page(vec![])).unwrap();
        let ok = format!("HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{body}\n");
        assert_eq!(parse_response(ok.as_bytes()).unwrap(), page(vec![]));
        let e = parse_response(b"HTTP/1.0 404 Not Found\r\n\r\nnot found\n").unwrap_err();
        assert!(e.contains("older"), "{e}");
        assert!(parse_response(b"HTTP/1.0 200 OK\r\n\r\n{}")
            .unwrap_err()
            .contains("not an attempts page"));
        assert!(parse_response(b"garbage").is_err());
        assert_eq!(
            target("0.0.0.0:9440".parse().unwrap()),
            "127.0.0.1:9440".parse().unwrap()
        );
        assert_eq!(target("[::]:9440".parse().unwrap()), "[::1]:9440".parse().unwrap());
        assert_eq!(target("10.1.2.3:9".parse().unwrap()), "10.1.2.3:9".parse().unwrap());
    }
}
