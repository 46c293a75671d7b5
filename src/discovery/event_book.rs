//! Which Kubernetes Events to write about the attempts of named pods, and
//! when: one Event object per (pod, reason), created once and then patched
//! with its count, lastTimestamp and message, the way the kubelet
//! aggregates a repeated event; never more than one write per pod per
//! `WRITE_EVERY_MS` (a failed write counts: a failing apiserver is not
//! hammered). Bounded: at most `MAX_AGGREGATES` (pod, reason) entries, the
//! least recently noted dropped first (counted); an entry with nothing to
//! write is forgotten after `FORGET_IDLE_MS` (the apiserver's own Event TTL).
//! Pure: the caller gives the time (UNIX milliseconds) and does the writes.

use crate::core::attempt_log::AttemptAction;
use crate::core::attempts::PodRef;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use std::collections::{BTreeMap, HashMap};

/// At most one write per pod this often.
pub const WRITE_EVERY_MS: u64 = 60_000;
/// (pod, reason) entries kept at most.
pub const MAX_AGGREGATES: usize = 1024;
/// An entry with nothing left to write is forgotten after this (the apiserver's default Event TTL).
pub const FORGET_IDLE_MS: u64 = 60 * 60 * 1000;
/// Apiserver endpoints named in one message.
const MAX_ENDPOINTS: usize = 3;
/// `source.component` and `reportingComponent` of our Events.
pub const COMPONENT: &str = "apiserver-guard";

/// The Event's reason, from the action of the attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    Blocked,
    Audited,
}

impl Reason {
    pub fn of(action: AttemptAction) -> Reason {
        match action {
            AttemptAction::Blocked => Reason::Blocked,
            AttemptAction::Audited => Reason::Audited,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Blocked => "ApiserverAccessBlocked",
            Reason::Audited => "ApiserverAccessAudited",
        }
    }
}

/// What identifies one Event object: the pod's uid and the reason.
pub type AggregateKey = (String, Reason);

#[derive(Debug, Clone)]
struct Aggregate {
    pod: PodRef,
    reason: Reason,
    /// The Event object's name once created.
    name: Option<String>,
    /// Attempts noted, and how many of them the Event object says.
    count: u64,
    written: u64,
    first_ms: u64,
    last_ms: u64,
    /// Apiserver endpoints, most recent last.
    endpoints: Vec<String>,
    /// When a write (successful or not) was last started.
    last_write_ms: Option<u64>,
    in_flight: bool,
    /// Position in the recency order.
    stamp: u64,
}

/// One write to do: create the Event, or patch the one created before.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    pub key: AggregateKey,
    pub namespace: String,
    /// The Event object's name.
    pub name: String,
    /// Create (else patch).
    pub create: bool,
    /// The whole Event (the body of a create; a patch sends `patch_body`).
    pub event: Event,
    /// The count this write sets.
    pub count: u64,
}

impl Write {
    /// The merge patch of a repeat: count, lastTimestamp and message.
    pub fn patch_body(&self) -> serde_json::Value {
        serde_json::json!({
            "count": self.event.count,
            "lastTimestamp": self.event.last_timestamp,
            "message": self.event.message,
        })
    }
}

/// How a write went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Written,
    /// The Event to patch is gone (expired): the next write creates a new one.
    NotFound,
    Failed,
}

/// The aggregates and the write limiter.
#[derive(Debug, Clone)]
pub struct EventBook {
    node: String,
    aggregates: HashMap<AggregateKey, Aggregate>,
    /// stamp -> key, least recently noted first.
    recency: BTreeMap<u64, AggregateKey>,
    next_stamp: u64,
    dropped: u64,
}

impl EventBook {
    /// A book for the Events of `node` (their `source.host`).
    pub fn new(node: &str) -> EventBook {
        EventBook {
            node: node.to_string(),
            aggregates: HashMap::new(),
            recency: BTreeMap::new(),
            next_stamp: 0,
            dropped: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.aggregates.len()
    }

    pub fn is_empty(&self) -> bool {
        self.aggregates.is_empty()
    }

    /// Entries dropped to stay within `MAX_AGGREGATES` (their pending attempts unreported as Events).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// One attempt of `pod` to `endpoint`. True when it starts a new Event
    /// (worth waking the writer for).
    pub fn note(&mut self, pod: &PodRef, action: AttemptAction, endpoint: &str, at_ms: u64) -> bool {
        let reason = Reason::of(action);
        let key = (pod.uid.clone(), reason);
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        if let Some(a) = self.aggregates.get_mut(&key) {
            self.recency.remove(&a.stamp);
            self.recency.insert(stamp, key);
            a.stamp = stamp;
            a.count += 1;
            a.first_ms = a.first_ms.min(at_ms);
            a.last_ms = a.last_ms.max(at_ms);
            if a.endpoints.last().map(String::as_str) != Some(endpoint) {
                a.endpoints.retain(|e| e != endpoint);
                a.endpoints.push(endpoint.to_string());
                if a.endpoints.len() > MAX_ENDPOINTS {
                    a.endpoints.remove(0);
                }
            }
            return false;
        }
        while self.aggregates.len() >= MAX_AGGREGATES {
            let Some(victim) = self
                .recency
                .iter()
                .find(|(_, k)| self.aggregates.get(*k).is_some_and(|a| !a.in_flight))
                .map(|(s, _)| *s)
            else {
                break;
            };
            if let Some(k) = self.recency.remove(&victim) {
                self.aggregates.remove(&k);
                self.dropped += 1;
            }
        }
        self.recency.insert(stamp, key.clone());
        self.aggregates.insert(
            key,
            Aggregate {
                pod: pod.clone(),
                reason,
                name: None,
                count: 1,
                written: 0,
                first_ms: at_ms,
                last_ms: at_ms,
                endpoints: vec![endpoint.to_string()],
                last_write_ms: None,
                in_flight: false,
                stamp,
            },
        );
        true
    }

    /// The writes due at `now_ms`, at most one per pod and none for a pod
    /// written to less than `WRITE_EVERY_MS` ago; each is marked in flight
    /// until `done`. Also forgets idle entries.
    pub fn due(&mut self, now_ms: u64) -> Vec<Write> {
        let idle =
            |a: &Aggregate| !a.in_flight && a.written == a.count && now_ms.saturating_sub(a.last_ms) > FORGET_IDLE_MS;
        let forget: Vec<(u64, AggregateKey)> = self
            .aggregates
            .iter()
            .filter(|(_, a)| idle(a))
            .map(|(k, a)| (a.stamp, k.clone()))
            .collect();
        for (stamp, k) in forget {
            self.recency.remove(&stamp);
            self.aggregates.remove(&k);
        }
        // The per-pod limiter: the latest write of any reason, and whether one is under way.
        let mut busy: HashMap<&str, bool> = HashMap::new();
        for a in self.aggregates.values() {
            let recent = a
                .last_write_ms
                .is_some_and(|t| now_ms.saturating_sub(t) < WRITE_EVERY_MS);
            *busy.entry(a.pod.uid.as_str()).or_default() |= recent || a.in_flight;
        }
        // Per pod, the Event written longest ago (never written first), so no reason starves another.
        let mut ready: Vec<(&str, Option<u64>, Reason)> = self
            .aggregates
            .values()
            .filter(|a| a.count > a.written && !busy.get(a.pod.uid.as_str()).copied().unwrap_or(false))
            .map(|a| (a.pod.uid.as_str(), a.last_write_ms, a.reason))
            .collect();
        ready.sort();
        ready.dedup_by(|a, b| a.0 == b.0);
        let keys: Vec<AggregateKey> = ready.into_iter().map(|(uid, _, r)| (uid.to_string(), r)).collect();
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let node = self.node.clone();
            let Some(a) = self.aggregates.get_mut(&key) else {
                continue;
            };
            a.in_flight = true;
            a.last_write_ms = Some(now_ms);
            let (name, create) = match &a.name {
                Some(n) => (n.clone(), false),
                None => (event_name(&a.pod.name, now_ms), true),
            };
            out.push(Write {
                key,
                namespace: a.pod.namespace.clone(),
                event: event(a, &name, &node),
                name,
                create,
                count: a.count,
            });
        }
        out
    }

    /// The outcome of a write `due` handed out.
    pub fn done(&mut self, w: &Write, outcome: Outcome) {
        let Some(a) = self.aggregates.get_mut(&w.key) else {
            return;
        };
        a.in_flight = false;
        match outcome {
            Outcome::Written => {
                a.written = a.written.max(w.count);
                a.name = Some(w.name.clone());
            }
            Outcome::NotFound => a.name = None,
            Outcome::Failed => {}
        }
    }
}

/// `<pod>.<hex nanoseconds>`, as the kubelet names its Events (the pod part
/// shortened so the whole stays a valid name of at most 253 characters).
fn event_name(pod: &str, now_ms: u64) -> String {
    let suffix = format!("{:x}", u128::from(now_ms) * 1_000_000);
    let room = 253 - 1 - suffix.len();
    let head: String = pod.chars().take(room).collect();
    let head = head.trim_end_matches(['-', '.']);
    format!("{head}.{suffix}")
}

fn time(ms: u64) -> Option<Time> {
    k8s_openapi::jiff::Timestamp::from_millisecond(i64::try_from(ms).ok()?)
        .ok()
        .map(Time)
}

/// The message: what happened, how often, to which apiserver endpoints.
fn message(a: &Aggregate, node: &str) -> String {
    let what = match a.reason {
        Reason::Blocked => "blocked",
        Reason::Audited => "audited (let through; --action reject would block them)",
    };
    format!(
        "{} attempt(s) to reach the apiserver at {} {what} by apiserver-guard on node {node}; \
         see `apiserver-guard attempts` there",
        a.count,
        a.endpoints.join(", ")
    )
}

/// The Event object of an aggregate, named `name`.
fn event(a: &Aggregate, name: &str, node: &str) -> Event {
    Event {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(a.pod.namespace.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some(a.pod.namespace.clone()),
            name: Some(a.pod.name.clone()),
            uid: Some(a.pod.uid.clone()),
            ..Default::default()
        },
        type_: Some("Warning".into()),
        reason: Some(a.reason.as_str().into()),
        message: Some(message(a, node)),
        count: Some(i32::try_from(a.count).unwrap_or(i32::MAX)),
        first_timestamp: time(a.first_ms),
        last_timestamp: time(a.last_ms),
        source: Some(EventSource {
            component: Some(COMPONENT.into()),
            host: Some(node.into()),
        }),
        reporting_component: Some(COMPONENT.into()),
        reporting_instance: Some(node.into()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ns: &str, name: &str) -> PodRef {
        PodRef {
            namespace: ns.into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            node: "node-a".into(),
        }
    }

    const EP: &str = "192.168.50.10:5443";
    const T0: u64 = 1_795_880_400_000;

    #[test]
    fn the_first_attempt_creates_an_event_and_repeats_patch_it_at_most_once_a_minute() {
        let mut b = EventBook::new("node-a");
        let web = pod("team-a", "web-0");
        assert!(b.note(&web, AttemptAction::Blocked, EP, T0));
        let w = b.due(T0);
        assert_eq!(w.len(), 1);
        let first = &w[0];
        assert!(first.create);
        assert_eq!(first.namespace, "team-a");
        assert!(first.name.starts_with("web-0."), "{}", first.name);
        let e = serde_json::to_value(&first.event).unwrap();
        assert_eq!(e["type"], "Warning");
        assert_eq!(e["reason"], "ApiserverAccessBlocked");
        assert_eq!(
            e["involvedObject"],
            serde_json::json!({"apiVersion": "v1", "kind": "Pod", "namespace": "team-a", "name": "web-0", "uid": "uid-web-0"})
        );
        assert_eq!(
            e["source"],
            serde_json::json!({"component": "apiserver-guard", "host": "node-a"})
        );
        assert_eq!(e["reportingComponent"], "apiserver-guard");
        assert_eq!(e["count"], 1);
        assert_eq!(e["firstTimestamp"], "2026-11-28T15:40:00Z");
        assert!(
            e["message"]
                .as_str()
                .unwrap()
                .starts_with(&format!("1 attempt(s) to reach the apiserver at {EP} blocked")),
            "{e}"
        );
        assert!(b.due(T0 + 10).is_empty(), "in flight");
        b.done(first, Outcome::Written);
        // Repeats within the minute: nothing is written.
        assert!(!b.note(&web, AttemptAction::Blocked, EP, T0 + 1_000));
        assert!(!b.note(&web, AttemptAction::Blocked, "[fd00:50::10]:5443", T0 + 2_000));
        assert!(b.due(T0 + 30_000).is_empty());
        assert!(b.due(T0 + WRITE_EVERY_MS - 1).is_empty());
        // A minute after the last write: one patch with the count and the new endpoint.
        let w = b.due(T0 + WRITE_EVERY_MS);
        assert_eq!(w.len(), 1);
        assert!(!w[0].create);
        assert_eq!(w[0].name, first.name, "the same Event object");
        let p = w[0].patch_body();
        assert_eq!(p["count"], 3);
        assert_eq!(p["lastTimestamp"], "2026-11-28T15:40:02Z");
        assert!(
            p["message"]
                .as_str()
                .unwrap()
                .contains(&format!("at {EP}, [fd00:50::10]:5443")),
            "{p}"
        );
        b.done(&w[0], Outcome::Written);
        // Nothing new: nothing to write, ever.
        assert!(b.due(T0 + 10 * WRITE_EVERY_MS).is_empty());
    }

    #[test]
    fn the_limit_is_per_pod_and_failures_count_against_it() {
        let mut b = EventBook::new("node-a");
        let (web, dns) = (pod("team-a", "web-0"), pod("kube-system", "dns-1"));
        b.note(&web, AttemptAction::Blocked, EP, T0);
        b.note(&dns, AttemptAction::Blocked, EP, T0);
        // Audit mode switched on meanwhile: another reason, another Event, same pod limit.
        b.note(&web, AttemptAction::Audited, EP, T0 + 1);
        let w = b.due(T0 + 5);
        let mut who: Vec<(&str, &str)> = w
            .iter()
            .map(|w| (w.namespace.as_str(), w.event.reason.as_deref().unwrap()))
            .collect();
        who.sort();
        assert_eq!(
            who,
            [
                ("kube-system", "ApiserverAccessBlocked"),
                ("team-a", "ApiserverAccessBlocked")
            ],
            "one write per pod"
        );
        for x in &w {
            b.done(x, Outcome::Failed);
        }
        // A failed write still waits its minute.
        assert!(b.due(T0 + 1_000).is_empty());
        let w = b.due(T0 + 5 + WRITE_EVERY_MS);
        assert_eq!(
            w.len(),
            2,
            "web's other Event (never written comes first) and dns's retry"
        );
        assert!(w.iter().all(|x| x.create));
        assert!(w
            .iter()
            .any(|x| x.event.reason.as_deref() == Some("ApiserverAccessAudited")));
        for x in &w {
            b.done(x, Outcome::Written);
        }
        let w = b.due(T0 + 5 + 2 * WRITE_EVERY_MS);
        assert_eq!(w.len(), 1, "web's first Event, retried");
        assert_eq!(w[0].key, ("uid-web-0".to_string(), Reason::Blocked));
        // An Event that expired meanwhile: created again at the next write.
        b.done(&w[0], Outcome::Written);
        b.note(&dns, AttemptAction::Blocked, EP, T0 + 3 * WRITE_EVERY_MS);
        let w = b.due(T0 + 3 * WRITE_EVERY_MS);
        assert!(!w[0].create);
        b.done(&w[0], Outcome::NotFound);
        b.note(&dns, AttemptAction::Blocked, EP, T0 + 4 * WRITE_EVERY_MS);
        let w = b.due(T0 + 4 * WRITE_EVERY_MS);
        assert!(w[0].create);
        assert_eq!(w[0].event.count, Some(3), "the whole count");
    }

    #[test]
    fn memory_is_bounded_and_idle_entries_are_forgotten() {
        let mut b = EventBook::new("node-a");
        for i in 0..(MAX_AGGREGATES + 10) {
            b.note(
                &pod("team-a", &format!("p{i}")),
                AttemptAction::Blocked,
                EP,
                T0 + i as u64,
            );
        }
        assert_eq!(b.len(), MAX_AGGREGATES);
        assert_eq!(b.dropped(), 10);
        assert_eq!(b.recency.len(), MAX_AGGREGATES, "the order index stays in step");
        let w = b.due(T0 + 100_000);
        assert_eq!(w.len(), MAX_AGGREGATES);
        assert!(
            !w.iter().any(|x| x.key.0 == "uid-p0"),
            "the least recently noted went first"
        );
        for x in &w {
            b.done(x, Outcome::Written);
        }
        assert!(b.due(T0 + FORGET_IDLE_MS + 200_000).is_empty());
        assert!(b.is_empty(), "written and idle for an hour: forgotten");
        assert!(b.recency.is_empty());
    }

    #[test]
    fn event_names_are_valid_and_unique_per_time() {
        let n = event_name("web-0", T0);
        assert_eq!(n, format!("web-0.{:x}", u128::from(T0) * 1_000_000));
        let long = "a".repeat(250) + "-b";
        let n = event_name(&long, T0);
        assert!(n.len() <= 253, "{}", n.len());
        assert!(!n.contains("-."), "{n}");
        assert_ne!(event_name("web-0", T0), event_name("web-0", T0 + 1));
    }
}
