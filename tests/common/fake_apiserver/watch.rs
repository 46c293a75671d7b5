//! Serving one watch: a chunked stream of `{"type":..,"object":..}` lines
//! (replayed history or synthetic ADDED events, then live changes, with
//! selector transitions turned into ADDED/DELETED), bookmarks, the initial
//! events end marker, `timeoutSeconds`, and the 410 ERROR for expired
//! resourceVersions. Notices the server stopping, `expire_watches` and the
//! client going away within `POLL`.

use std::io::{self, Write};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::http;
use super::objects::{self, Resource};
use super::selector::Filter;
use super::store::{Event, EventKind, State, Store};

const POLL: Duration = Duration::from_millis(50);
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(2);

/// A validated watch request.
#[derive(Debug)]
pub struct Watch {
    pub resource: Resource,
    pub filter: Filter,
    /// `resourceVersion`; None for absent, empty or "0" (start with the current state).
    pub since: Option<u64>,
    pub timeout: Option<Duration>,
    pub bookmarks: bool,
    pub send_initial_events: bool,
}

/// Counts the watch as open while alive.
struct OpenGuard<'a>(&'a Store, Resource);

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.update(|s| {
            if let Some(n) = s.open_watches.get_mut(&self.1) {
                *n = n.saturating_sub(1);
            }
        });
    }
}

fn line(kind: &str, object: Value) -> Vec<u8> {
    let mut l = serde_json::to_vec(&json!({ "type": kind, "object": object })).expect("serialize event");
    l.push(b'\n');
    l
}

/// How `ev` looks to a watcher with `filter` (None: invisible).
fn visible(ev: &Event, w: &Watch) -> Option<Vec<u8>> {
    if ev.resource != w.resource {
        return None;
    }
    let now = w.filter.matches(&ev.object);
    let before = ev.prev.as_ref().is_some_and(|p| w.filter.matches(p));
    match (ev.kind, before, now) {
        (EventKind::Added, _, true) => Some(line("ADDED", ev.object.clone())),
        (EventKind::Modified, true, true) => Some(line("MODIFIED", ev.object.clone())),
        (EventKind::Modified, false, true) => Some(line("ADDED", ev.object.clone())),
        (EventKind::Modified, true, false) => {
            // Like the apiserver: the last matching state, at this event's resourceVersion.
            let mut last = ev.prev.clone().expect("modified event has a previous state");
            objects::set_rv(&mut last, ev.rv);
            Some(line("DELETED", last))
        }
        (EventKind::Deleted, _, true) => Some(line("DELETED", ev.object.clone())),
        _ => None,
    }
}

/// Lines for the events after `cursor`; advances `cursor`.
fn pending_events(state: &State, w: &Watch, cursor: &mut u64) -> Vec<Vec<u8>> {
    let from = *cursor;
    let mut out = Vec::new();
    for ev in state.events.iter().filter(|e| e.rv > from) {
        out.extend(visible(ev, w));
        *cursor = ev.rv;
    }
    out
}

/// Whether the peer has closed (or reset) its side of the connection.
fn peer_gone(fd: RawFd) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    n > 0 && pfd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
}

/// Stream the watch to `out` until it times out (Ok: the response ended
/// cleanly and the connection may be reused) or the client, the server or
/// an error ends it (Err).
pub fn serve<W: Write>(w: &Watch, store: &Store, stop: &AtomicBool, out: &mut W, fd: RawFd) -> io::Result<()> {
    let started = Instant::now();
    let mut lines: Vec<Vec<u8>> = Vec::new();
    let (mut cursor, expire_gen) = {
        let mut st = store.lock();
        match w.since {
            Some(n) if n < st.compacted => {
                let oldest = st.compacted;
                drop(st);
                http::write_stream_head(out)?;
                http::write_chunk(out, &line("ERROR", objects::expired(n, oldest)))?;
                return http::end_stream(out);
            }
            Some(_) if !w.send_initial_events => {}
            _ => {
                lines.extend(
                    st.all(w.resource)
                        .filter(|o| w.filter.matches(o))
                        .map(|o| line("ADDED", o.clone())),
                );
                if w.send_initial_events {
                    lines.push(line("BOOKMARK", objects::bookmark(w.resource, st.rv, true)));
                }
            }
        }
        let cursor = match w.since {
            Some(n) if !w.send_initial_events => n,
            _ => st.rv,
        };
        *st.open_watches.entry(w.resource).or_default() += 1;
        (cursor, st.expire_gen)
    };
    store.notify();
    let _open = OpenGuard(store, w.resource);
    http::write_stream_head(out)?;
    let mut last_bookmark = Instant::now();
    loop {
        for l in lines.drain(..) {
            http::write_chunk(out, &l)?;
        }
        if stop.load(Ordering::SeqCst) || peer_gone(fd) {
            return Err(io::Error::new(io::ErrorKind::ConnectionAborted, "watch ended"));
        }
        if w.timeout.is_some_and(|t| started.elapsed() >= t) {
            return http::end_stream(out);
        }
        let st = store.lock();
        if st.expire_gen != expire_gen {
            let status = objects::expired(cursor, st.compacted);
            drop(st);
            http::write_chunk(out, &line("ERROR", status))?;
            return http::end_stream(out);
        }
        lines = pending_events(&st, w, &mut cursor);
        if lines.is_empty() && w.bookmarks && last_bookmark.elapsed() >= BOOKMARK_INTERVAL {
            cursor = st.rv;
            lines.push(line("BOOKMARK", objects::bookmark(w.resource, cursor, false)));
            last_bookmark = Instant::now();
        }
        if lines.is_empty() {
            let wait = w
                .timeout
                .map_or(POLL, |t| t.saturating_sub(started.elapsed()).min(POLL));
            drop(store.wait(st, wait));
        }
    }
}
