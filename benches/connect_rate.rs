//! Connect-rate probe for `benches/datapath.sh`: short TCP connects per second between two
//! existing network namespaces (one job: count completed handshakes; the script builds the
//! namespaces and the firewall configurations).
//!
//! A listener thread joins `--server-ns` (setns(2) on `/run/netns/NAME`), binds `--addr` and
//! accepts and closes every connection; `--threads` client threads join `--client-ns` and connect
//! back to back for `--seconds`, closing each connection at once with RST (SO_LINGER 0, so no
//! TIME_WAIT and no port exhaustion). Prints one line: `<completed connects per second> <failed
//! connects>`. Never touches a firewall; traffic only between the two named namespaces.
//!
//! Run as root, normally through `benches/datapath.sh`; by hand:
//! `cargo bench --bench connect_rate -- --client-ns A --server-ns B --addr 192.168.50.20:7000
//! [--seconds 3] [--threads 2]`. Under `cargo test` (no `--bench` argument) it does nothing.

#[path = "shared/mod.rs"]
mod shared;

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use shared::cli::{args_or_exit, bench_argv};
use shared::netns::enter;
use shared::probe::set_linger0;
use shared::R;

const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const BACKLOG: libc::c_int = 4096;

struct Args {
    client_ns: String,
    server_ns: String,
    addr: SocketAddr,
    seconds: f64,
    threads: usize,
}

fn parse_args() -> R<Option<Args>> {
    let Some(argv) = bench_argv() else {
        return Ok(None);
    };
    let (mut client_ns, mut server_ns, mut addr) = (None, None, None);
    let (mut seconds, mut threads) = (3.0, 2);
    let mut it = argv.iter();
    while let Some(k) = it.next() {
        let mut val = || it.next().cloned().ok_or_else(|| format!("{k} needs a value"));
        match k.as_str() {
            "--bench" => {}
            "--client-ns" => client_ns = Some(val()?),
            "--server-ns" => server_ns = Some(val()?),
            "--addr" => addr = Some(val()?.parse().map_err(|e| format!("--addr: {e}"))?),
            "--seconds" => seconds = val()?.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--threads" => threads = val()?.parse().map_err(|e| format!("--threads: {e}"))?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Some(Args {
        client_ns: client_ns.ok_or("--client-ns is required")?,
        server_ns: server_ns.ok_or("--server-ns is required")?,
        addr: addr.ok_or("--addr is required")?,
        seconds,
        threads: threads.max(1),
    }))
}

/// Run `f` on a new thread that has joined the named network namespace; errors if joining failed.
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> R<JoinHandle<T>> {
    let file = File::open(format!("/run/netns/{ns}")).map_err(|e| format!("open /run/netns/{ns}: {e}"))?;
    let (tx, rx) = mpsc::channel::<R<()>>();
    let h = thread::spawn(move || {
        if let Err(e) = enter(file.as_raw_fd()) {
            let _ = tx.send(Err(e.to_string()));
            // Never run `f` in the wrong namespace: park until the process exits with the error.
            loop {
                thread::park();
            }
        }
        let _ = tx.send(Ok(()));
        f()
    });
    match rx.recv() {
        Ok(Ok(())) => Ok(h),
        Ok(Err(e)) => Err(format!("setns {ns}: {e}")),
        Err(_) => Err(format!("thread for {ns} died")),
    }
}

fn run(a: &Args) -> R<(f64, u64)> {
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = mpsc::channel::<R<()>>();
    let (flag, addr) = (stop.clone(), a.addr);
    let server = in_netns(&a.server_ns, move || {
        let l = match TcpListener::bind(addr) {
            Ok(l) => l,
            Err(e) => {
                let _ = ready_tx.send(Err(format!("bind {addr}: {e}")));
                return;
            }
        };
        let _ = l.set_nonblocking(true);
        // SAFETY: listen(2) again on a listening socket only changes its backlog.
        unsafe { libc::listen(l.as_raw_fd(), BACKLOG) };
        let _ = ready_tx.send(Ok(()));
        let mut pfd = libc::pollfd {
            fd: l.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        while !flag.load(Ordering::Relaxed) {
            // SAFETY: one valid pollfd, bounded timeout.
            unsafe { libc::poll(&mut pfd, 1, 50) };
            // Close normally (FIN): a server RST could reach the client before its connect()
            // returned and turn a completed handshake into ECONNRESET. The client's RST then
            // removes the server socket too (it never sees the client's FIN: no TIME_WAIT).
            while let Ok((s, _)) = l.accept() {
                drop(s);
            }
        }
    })?;
    ready_rx.recv().map_err(|_| "listener thread died".to_string())??;

    let duration = Duration::from_secs_f64(a.seconds);
    let start = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..a.threads {
        clients.push(in_netns(&a.client_ns, move || {
            let (mut ok, mut failed) = (0u64, 0u64);
            let mut last_err = None;
            while start.elapsed() < duration {
                match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                    Ok(s) => {
                        set_linger0(&s);
                        ok += 1;
                    }
                    Err(e) => {
                        failed += 1;
                        last_err = Some(e.to_string());
                    }
                }
            }
            if let Some(e) = last_err {
                eprintln!("connect_rate: {failed} connects failed, last: {e}");
            }
            (ok, failed)
        })?);
    }
    let (mut ok, mut failed) = (0, 0);
    for c in clients {
        let (o, f) = c.join().map_err(|_| "client thread panicked".to_string())?;
        ok += o;
        failed += f;
    }
    let secs = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = server.join();
    Ok((ok as f64 / secs, failed))
}

fn main() {
    let how = "used by benches/datapath.sh (needs root)";
    let Some(args) = args_or_exit("connect_rate", how, parse_args()) else {
        return;
    };
    match run(&args) {
        Ok((rate, failed)) => println!("{rate:.0} {failed}"),
        Err(e) => {
            eprintln!("connect_rate: {e}");
            std::process::exit(1);
        }
    }
}
