//! The health and metrics endpoint: `GET /healthz`, `/readyz`, `/metrics`,
//! `/attempts` (JSON of the attempts table). A deliberately small HTTP/1.0
//! responder (GET only, bounded request size, read and write time, at most
//! `MAX_CONNECTIONS` at once, one response per connection): it serves four read-only pages on loopback by default, which does not justify an HTTP framework.
//! It starts after the block is in place and never holds it up: a port that
//! cannot be bound is retried in the background (`serve_with_retry`).

use super::metrics::{render, Metrics};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

const MAX_REQUEST: usize = 8192;
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long writing a response may take (a client that never reads).
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more wait in the kernel's accept queue,
/// holding no descriptor of ours (a break-it find: a pod holding a thousand
/// connections open used up the daemon's open files, and the iptables
/// backends could no longer start their tools to repair the block).
pub const MAX_CONNECTIONS: usize = 32;

/// Status, content type and body for a request line's method and path.
pub fn respond(method: &str, path: &str, m: &Metrics, stale_after: Duration) -> (u16, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    if method != "GET" && method != "HEAD" {
        return (405, TEXT, "only GET\n".into());
    }
    match path.split('?').next().unwrap_or("") {
        "/healthz" => {
            let age = m.last_turn.elapsed();
            if age <= stale_after {
                (200, TEXT, "ok\n".into())
            } else {
                (
                    503,
                    TEXT,
                    format!("control loop stuck: last turn {:.1}s ago\n", age.as_secs_f64()),
                )
            }
        }
        "/readyz" => {
            if m.ready() {
                (200, TEXT, format!("{}\n", m.ready_text()))
            } else {
                (503, TEXT, format!("not ready: {}\n", m.why_not_ready()))
            }
        }
        "/metrics" => (200, "text/plain; version=0.0.4; charset=utf-8", render(m)),
        "/attempts" => (
            200,
            "application/json",
            serde_json::to_string(&m.attempts.page()).expect("serializable") + "\n",
        ),
        _ => (
            404,
            TEXT,
            "not found: try /healthz, /readyz, /metrics or /attempts\n".into(),
        ),
    }
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    }
}

async fn serve(mut stream: TcpStream, state: Arc<Mutex<Metrics>>, stale_after: Duration) {
    let mut buf = Vec::with_capacity(1024);
    let read = tokio::time::timeout(READ_TIMEOUT, async {
        let mut chunk = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < MAX_REQUEST {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    if read.is_err() {
        return;
    }
    let head = String::from_utf8_lossy(&buf);
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (code, ctype, body) = {
        let m = state.lock().unwrap_or_else(|p| p.into_inner());
        respond(method, path, &m, stale_after)
    };
    let body = if method == "HEAD" { String::new() } else { body };
    let msg = format!(
        "HTTP/1.0 {code} {}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        reason(code),
        body.len()
    );
    let _ = tokio::time::timeout(WRITE_TIMEOUT, async {
        let _ = stream.write_all(msg.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Accepts connections until the task is dropped, at most
/// `MAX_CONNECTIONS` served at once.
pub async fn run(listener: TcpListener, state: Arc<Mutex<Metrics>>, stale_after: Duration) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, _)) => {
                let state = state.clone();
                tokio::spawn(async move {
                    serve(stream, state, stale_after).await;
                    drop(slot);
                });
            }
            // Out of descriptors or memory: let them come back, never spin.
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// First and longest wait between two attempts to bind the listener.
const BIND_BACKOFF: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(10));

/// Binds `addr` and serves it. The listener is auxiliary: the block is
/// already in place when this starts, and a port that cannot be bound (taken,
/// address not yet configured) is retried with backoff, logged on the first
/// failure and when it clears, counted, and shown as not ready, while
/// enforcement goes on.
pub async fn serve_with_retry(addr: SocketAddr, state: Arc<Mutex<Metrics>>, stale_after: Duration) {
    let mut backoff = BIND_BACKOFF.0;
    let mut failing = false;
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => {
                state.lock().unwrap_or_else(|p| p.into_inner()).listener_error = None;
                if failing {
                    log::info!(listen = addr.to_string().as_str(); "health and metrics listener is up on {addr}");
                }
                return run(listener, state, stale_after).await;
            }
            Err(e) => {
                let msg = format!("cannot listen on {addr}: {e}; retrying, the block is enforced meanwhile");
                {
                    let mut m = state.lock().unwrap_or_else(|p| p.into_inner());
                    m.listener_bind_failures += 1;
                    m.listener_error = Some(msg.clone());
                }
                if !failing {
                    log::error!(listen = addr.to_string().as_str(); "{msg}");
                    failing = true;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BIND_BACKOFF.1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m() -> Metrics {
        Metrics::new("t")
    }

    #[test]
    fn readyz_follows_state() {
        let mut s = m();
        assert_eq!(respond("GET", "/readyz", &s, Duration::from_secs(30)).0, 503);
        s.started = true;
        s.in_sync = true;
        assert_eq!(respond("GET", "/readyz", &s, Duration::from_secs(30)).0, 200);
        s.in_sync = false;
        s.not_ready_reason = "drift".into();
        let (code, _, body) = respond("GET", "/readyz", &s, Duration::from_secs(30));
        assert_eq!((code, body.as_str()), (503, "not ready: drift\n"));
    }

    #[test]
    fn readyz_says_when_the_rules_in_place_only_audit() {
        let mut s = m();
        (s.started, s.in_sync) = (true, true);
        let (code, _, body) = respond("GET", "/readyz", &s, Duration::from_secs(30));
        assert_eq!((code, body.as_str()), (200, "ready: block installed and in sync\n"));
        s.action = crate::core::policy::Action::Audit;
        let (code, _, body) = respond("GET", "/readyz", &s, Duration::from_secs(30));
        assert_eq!(code, 200, "audit rules in place and in sync: ready");
        assert!(
            body.starts_with("ready: audit rules installed and in sync (audit mode: nothing is blocked;"),
            "{body}"
        );
    }

    #[test]
    fn healthz_turns_unhealthy_when_the_loop_stalls() {
        let mut s = m();
        assert_eq!(respond("GET", "/healthz", &s, Duration::from_secs(30)).0, 200);
        s.last_turn = std::time::Instant::now() - Duration::from_secs(60);
        assert_eq!(respond("GET", "/healthz", &s, Duration::from_secs(30)).0, 503);
    }

    #[test]
    fn metrics_other_paths_and_methods() {
        let s = m();
        let (code, ctype, body) = respond("GET", "/metrics", &s, Duration::from_secs(1));
        assert_eq!(code, 200);
        assert!(ctype.contains("version=0.0.4"));
        assert!(body.contains("apiserver_guard_in_sync"));
        assert_eq!(respond("GET", "/nope", &s, Duration::from_secs(1)).0, 404);
        let (code, ctype, body) = respond("GET", "/attempts", &s, Duration::from_secs(1));
        assert_eq!((code, ctype), (200, "application/json"));
        let page: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(page["attempts"], serde_json::json!([]));
        assert_eq!(respond("POST", "/metrics", &s, Duration::from_secs(1)).0, 405);
    }
}
