//! Who tried, by name, on a real kernel: with Kubernetes discovery (a fake
//! apiserver in the test's node namespace) the daemon follows the pods of
//! its node and names the pod behind each attempt in its log (fields
//! pod_namespace/pod_name/pod_uid, POD_* in the journal), `/attempts`,
//! `apiserver-guard attempts` and the namespace label of the metric, and
//! posts one aggregated Kubernetes Event per pod (at most one write per pod
//! a minute, repeats patched into it after the minute with count and
//! lastTimestamp; `ApiserverAccessAudited` for audited attempts). A pod deleted right after its attempt keeps its name; its
//! address reused by a new pod starts a new row and leaves the old one alone,
//! and none of that pod churn touches the policy (no reconcile, no cache write).
//! Event writes that fail are counted and logged and hold nothing up.
//! Without a log group no pod is watched. (Without discovery, attempts carry
//! addresses only: tests/attempts.rs.)

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::daemon_cases::*;
use common::discovery_cases::*;
use common::fake_apiserver::PodSpec;
use common::guard_cases::*;
use common::*;

const ATTEMPTS: &str = "apiserver_guard_attempts_total";
const EVENTS: &str = "apiserver_guard_pod_events_total";
const BOUND: &str = "apiserver_guard_attempt_log_bound";
/// Liveness deadline for an attempt (or its Event) to show.
const SHOW_DEADLINE: Duration = Duration::from_secs(5);

/// The daemon with discovered apiservers and a fixed container CIDR, its
/// NFLOG group bound and the pods of the node listed.
fn ready_daemon(c: &Cluster) -> Daemon<'_> {
    ready_daemon_with(c, &[])
}

fn ready_daemon_with<'a>(c: &'a Cluster, extra: &[&str]) -> Daemon<'a> {
    let mut flags = vec!["--apiserver", "auto", "--container-cidr", CONTAINER_CIDR_V4];
    flags.extend_from_slice(extra);
    let d = c.spawn(Backend::Nftables, &flags);
    d.wait_ready();
    wait_metrics(
        &c.topo.node,
        "the NFLOG group bound",
        |s| sample(s, BOUND, &[]) == Some(1.0),
        READY_TIMEOUT,
    );
    assert!(
        c.api.wait_watches("pods", 1, READY_TIMEOUT),
        "the pods of the node are watched (listed first)\n{}",
        d.log()
    );
    d
}

fn uid(c: &Cluster, ns: &str, name: &str) -> String {
    let pod = c.api.pod(ns, name).unwrap_or_else(|| panic!("no pod {ns}/{name}"));
    pod["metadata"]["uid"].as_str().unwrap().to_string()
}

fn page(c: &Cluster) -> serde_json::Value {
    attempts_page(&c.topo.node)
}

/// The rows of `/attempts` from `src` (most recently seen first).
fn rows_from(c: &Cluster, src: &str) -> Vec<serde_json::Value> {
    page(c)["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["source"] == src)
        .cloned()
        .collect()
}

/// Polls `/attempts` until a row from `src` satisfies `ok`; returns it.
#[track_caller]
fn wait_row(
    c: &Cluster,
    d: &Daemon,
    src: &str,
    what: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    wait_attempt_row(&c.topo.node, d, what, SHOW_DEADLINE, |r| r["source"] == src && ok(r))
}

fn pod_is(r: &serde_json::Value, ns: &str, name: &str) -> bool {
    r["pod"]["namespace"] == ns && r["pod"]["name"] == name
}

/// One blocked connect from `src` to the apiserver.
#[track_caller]
fn attempt(c: &Cluster, src: &str) {
    assert_refused(
        &pod_curl(c, Some(src), API_V4, API_PORT),
        &format!("{src} -> apiserver"),
    );
}

/// The stored Event on pod `ns/name`, polled until there is one.
#[track_caller]
fn wait_event(c: &Cluster, d: &Daemon, ns: &str, name: &str) -> serde_json::Value {
    let mut found = None;
    wait_until(&format!("an Event on {ns}/{name}"), d, SHOW_DEADLINE, || {
        found = c
            .api
            .events()
            .into_iter()
            .find(|e| e["involvedObject"]["namespace"] == ns && e["involvedObject"]["name"] == name);
        found.is_some()
    });
    found.unwrap()
}

#[test]
fn two_pods_attempts_are_named_in_every_report_and_posted_as_events() {
    if !can_run() {
        return;
    }
    let c = Cluster::new("attrib");
    c.api.set_endpoint_slice("kubernetes", &[API_V4], API_PORT);
    c.api.set_pod("kube-system", "coredns-1", PodSpec::new(NODE, &[POD_V4]));
    c.api.set_pod("team-a", "web-0", PodSpec::new(NODE, &[POD2_V4]));
    // Neither a host-network pod (its IP is the node's) nor a pod of another node names anything here.
    c.api.set_pod(
        "kube-system",
        "kube-proxy",
        PodSpec::new(NODE, &[NODE_POD_V4]).host_network(true),
    );
    c.api
        .set_pod("team-b", "elsewhere", PodSpec::new(OTHER_NODE, &[POD2_V4]));
    let d = ready_daemon(&c);
    let (dns_uid, web_uid) = (uid(&c, "kube-system", "coredns-1"), uid(&c, "team-a", "web-0"));

    let t0 = Instant::now();
    attempt(&c, POD_V4);
    attempt(&c, POD2_V4);

    // The log: one line per new (pod, apiserver) pair, with the pod's fields.
    for (src, ns, name, pod_uid) in [
        (POD_V4, "kube-system", "coredns-1", &dns_uid),
        (POD2_V4, "team-a", "web-0", &web_uid),
    ] {
        d.wait_log(&format!("blocked attempt: {src}:"), 1, SHOW_DEADLINE);
        let log = d.log();
        let line = log
            .lines()
            .find(|l| l.contains(&format!("blocked attempt: {src}:")))
            .unwrap();
        for field in [
            format!("(pod {ns}/{name}) -> {API_V4}:{API_PORT} tcp"),
            format!("pod_namespace=\"{ns}\""),
            format!("pod_name=\"{name}\""),
            format!("pod_uid=\"{pod_uid}\""),
            format!("pod_node=\"{NODE}\""),
            format!("src=\"{src}\""),
        ] {
            assert!(line.contains(&field), "log line lacks {field}: {line}");
        }
    }

    // /attempts: each row with its pod (namespace, name, uid, node).
    let dns = wait_row(&c, &d, POD_V4, "coredns-1's row", |r| {
        pod_is(r, "kube-system", "coredns-1")
    });
    assert_eq!(dns["pod"]["uid"], dns_uid.as_str());
    assert_eq!(dns["pod"]["node"], NODE, "{dns}");
    let web = wait_row(&c, &d, POD2_V4, "web-0's row", |r| pod_is(r, "team-a", "web-0"));
    assert_eq!(web["pod"]["uid"], web_uid.as_str());
    assert_eq!(web["action"], "blocked");
    assert_eq!(rows_from(&c, POD2_V4).len(), 1, "one row: {}", page(&c));

    // `apiserver-guard attempts`: the POD column.
    let out = guard(&c.topo.node, &["attempts"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.lines().nth(1).unwrap().starts_with("POD "), "{text}");
    for (pod, src) in [("kube-system/coredns-1", POD_V4), ("team-a/web-0", POD2_V4)] {
        let row = text
            .lines()
            .find(|l| l.starts_with(pod))
            .unwrap_or_else(|| panic!("no row for {pod}: {text}"));
        assert!(
            row.contains(src) && row.contains(&format!("{API_V4}:{API_PORT}")),
            "{row}"
        );
    }

    // The metric: by namespace, never a pod name in a label.
    let (s, _) = wait_metrics(
        &c.topo.node,
        "attempts counted by namespace",
        |s| {
            sample(s, ATTEMPTS, &[("namespace", "kube-system"), ("action", "blocked")]) >= Some(1.0)
                && sample(s, ATTEMPTS, &[("namespace", "team-a"), ("action", "blocked")]) >= Some(1.0)
        },
        SHOW_DEADLINE,
    );
    let family = show_family(&s, ATTEMPTS);
    assert!(!family.contains("coredns") && !family.contains("web-0"), "{family}");
    assert_eq!(
        sample(&s, ATTEMPTS, &[("namespace", "")]),
        None,
        "every attempt named: {family}"
    );

    // One Event per pod, as the kubelet writes them.
    for (ns, name, pod_uid) in [("kube-system", "coredns-1", &dns_uid), ("team-a", "web-0", &web_uid)] {
        let e = wait_event(&c, &d, ns, name);
        assert_eq!(e["metadata"]["namespace"], ns, "{e}");
        assert_eq!(e["involvedObject"]["kind"], "Pod", "{e}");
        assert_eq!(e["involvedObject"]["uid"], pod_uid.as_str(), "{e}");
        assert_eq!(
            (e["type"].as_str(), e["reason"].as_str()),
            (Some("Warning"), Some("ApiserverAccessBlocked"))
        );
        assert_eq!(e["count"], 1, "{e}");
        assert_eq!(e["source"]["component"], "apiserver-guard", "{e}");
        assert_eq!(e["source"]["host"], NODE, "{e}");
        assert!(
            e["firstTimestamp"].as_str().is_some() && e["lastTimestamp"].as_str().is_some(),
            "{e}"
        );
        let msg = e["message"].as_str().unwrap();
        assert!(
            msg.contains(&format!("{API_V4}:{API_PORT}")) && msg.starts_with("1 attempt(s)"),
            "{msg}"
        );
    }
    let to_events = t0.elapsed();
    assert_eq!(c.api.events().len(), 2, "{:?}", c.api.events());
    assert!(
        c.api.event_writes().iter().all(|w| w.starts_with("POST ")),
        "{:?}",
        c.api.event_writes()
    );

    // A second attempt within the minute: counted, but no second write.
    let writes = c.api.event_writes().len();
    attempt(&c, POD2_V4);
    wait_row(&c, &d, POD2_V4, "the second attempt counted", |r| {
        pod_is(r, "team-a", "web-0") && r["count"].as_u64() >= Some(2)
    });
    thread::sleep(Duration::from_millis(2500)); // the writer looks every second
    assert_eq!(c.api.event_writes().len(), writes, "{:?}", c.api.event_writes());
    assert_eq!(wait_event(&c, &d, "team-a", "web-0")["count"], 1);
    let (s, _) = wait_metrics(
        &c.topo.node,
        "Events counted",
        |s| sample(s, EVENTS, &[("result", "created")]) == Some(2.0),
        SHOW_DEADLINE,
    );
    assert_eq!(sample(&s, EVENTS, &[("result", "failed")]), Some(0.0));
    assert!(!d.log().contains("pod Event not written"), "{}", d.log());
    eprintln!(
        "two attempts -> both Events stored in {:.0} ms",
        to_events.as_secs_f64() * 1000.0
    );
}

#[test]
fn a_pod_deleted_just_after_its_attempt_keeps_its_name_and_a_new_pod_on_its_ip_gets_a_row_of_its_own() {
    if !can_run() {
        return;
    }
    let c = Cluster::new("attrib-del");
    c.api.set_endpoint_slice("kubernetes", &[API_V4], API_PORT);
    c.api.set_pod("team-a", "web-0", PodSpec::new(NODE, &[POD2_V4]));
    let d = ready_daemon(&c);
    let cache = c.dir.join("discovered.json");
    wait_until("the discovery cache written", &d, SHOW_DEADLINE, || cache.exists());
    let cache_written = std::fs::metadata(&cache).unwrap().modified().unwrap();
    let handles = guard_rule_handles(&c.topo.node);

    attempt(&c, POD2_V4);
    c.api.delete_pod("team-a", "web-0");
    wait_row(&c, &d, POD2_V4, "the row of the deleted pod", |r| {
        pod_is(r, "team-a", "web-0")
    });
    // Seconds later, the deletion long seen by the daemon: still web-0's address (grace period).
    thread::sleep(Duration::from_secs(1));
    attempt(&c, POD2_V4);
    wait_row(&c, &d, POD2_V4, "a second attempt on the deleted pod's row", |r| {
        pod_is(r, "team-a", "web-0") && r["count"].as_u64() >= Some(2)
    });
    wait_event(&c, &d, "team-a", "web-0");

    // A new pod takes the address: its attempt is its own, the old row stays web-0's.
    c.api.set_pod("team-b", "job-1", PodSpec::new(NODE, &[POD2_V4]));
    thread::sleep(Duration::from_secs(1));
    let old_count = rows_from(&c, POD2_V4)[0]["count"].as_u64().unwrap();
    attempt(&c, POD2_V4);
    wait_row(&c, &d, POD2_V4, "job-1's row", |r| pod_is(r, "team-b", "job-1"));
    let rows = rows_from(&c, POD2_V4);
    assert_eq!(rows.len(), 2, "{rows:?}");
    let old = rows
        .iter()
        .find(|r| pod_is(r, "team-a", "web-0"))
        .expect("web-0's row stays");
    assert_eq!(old["count"].as_u64(), Some(old_count), "not re-attributed: {old}");
    d.wait_log("(pod team-b/job-1)", 1, SHOW_DEADLINE);
    wait_event(&c, &d, "team-b", "job-1");

    // Pod churn is not policy: nothing was recomputed, written or re-applied.
    let s = scrape(&c.topo.node);
    assert_eq!(
        sample(&s, "apiserver_guard_reconciles_total", &[("trigger", "discovery")]),
        None,
        "{}",
        show_family(&s, "apiserver_guard_reconciles_total")
    );
    assert!(!d.log().contains("discovery: applied"), "{}", d.log());
    assert_eq!(
        std::fs::metadata(&cache).unwrap().modified().unwrap(),
        cache_written,
        "the cache was rewritten"
    );
    assert_eq!(guard_rule_handles(&c.topo.node), handles);
}

#[test]
fn audited_attempts_are_named_and_get_an_event_of_their_own_reason() {
    if !can_run() {
        return;
    }
    let c = Cluster::new("attrib-audit");
    c.api.set_endpoint_slice("kubernetes", &[API_V4], API_PORT);
    c.api.set_pod("kube-system", "coredns-1", PodSpec::new(NODE, &[POD_V4]));
    c.api.set_pod("team-a", "web-0", PodSpec::new(NODE, &[POD2_V4]));
    let d = ready_daemon_with(&c, &["--action", "audit"]);
    // Both pods' connections are served, and both are reported, each by name.
    for (src, ns, name) in [(POD_V4, "kube-system", "coredns-1"), (POD2_V4, "team-a", "web-0")] {
        assert_served(
            &pod_curl(&c, Some(src), API_V4, API_PORT),
            &format!("audit mode lets {ns}/{name} through"),
        );
        let row = wait_row(&c, &d, src, &format!("the audited row of {ns}/{name}"), |r| {
            pod_is(r, ns, name)
        });
        assert_eq!(row["action"], "audited", "{row}");
        d.wait_log(&format!("audited (let through) attempt: {src}:"), 1, SHOW_DEADLINE);
        assert!(d.log().contains(&format!("(pod {ns}/{name})")), "{}", d.log());
        let e = wait_event(&c, &d, ns, name);
        assert_eq!(e["reason"], "ApiserverAccessAudited", "{e}");
        assert!(e["message"].as_str().unwrap().contains("audited"), "{e}");
    }
    let (s, _) = wait_metrics(
        &c.topo.node,
        "the audited attempts counted",
        |s| {
            sample(s, ATTEMPTS, &[("namespace", "team-a"), ("action", "audited")]) >= Some(1.0)
                && sample(s, ATTEMPTS, &[("namespace", "kube-system"), ("action", "audited")]) >= Some(1.0)
        },
        SHOW_DEADLINE,
    );
    assert_eq!(sample(&s, ATTEMPTS, &[("action", "blocked")]), None);
}

/// Runs a minute and a bit: the per-pod write interval is a minute and is
/// not shortened for tests.
#[test]
fn repeats_after_the_minute_patch_the_same_event_with_the_count_and_last_timestamp() {
    if !can_run() {
        return;
    }
    let c = Cluster::new("attrib-patch");
    c.api.set_endpoint_slice("kubernetes", &[API_V4], API_PORT);
    c.api.set_pod("team-a", "web-0", PodSpec::new(NODE, &[POD2_V4]));
    let d = ready_daemon(&c);
    attempt(&c, POD2_V4);
    let first = wait_event(&c, &d, "team-a", "web-0");
    let posted = Instant::now();
    assert_eq!(first["count"], 1, "{first}");
    // Two more attempts within the minute, in a later second (timestamps
    // have second resolution): no write yet.
    thread::sleep(Duration::from_millis(1100));
    attempt(&c, POD2_V4);
    attempt(&c, POD2_V4);
    wait_row(&c, &d, POD2_V4, "three attempts counted", |r| {
        r["count"].as_u64() >= Some(3)
    });
    thread::sleep(Duration::from_secs(2));
    assert_eq!(c.api.event_writes().len(), 1, "{:?}", c.api.event_writes());
    // After the minute the same Event is patched: count and lastTimestamp.
    let deadline = Duration::from_secs(75);
    wait_until("the Event patched after the minute", &d, deadline, || {
        c.api.event_writes().len() >= 2
    });
    let since_post = posted.elapsed();
    let writes = c.api.event_writes();
    assert_eq!(writes.len(), 2, "{writes:?}");
    assert!(
        writes[1].starts_with("PATCH ") && writes[1].contains("/namespaces/team-a/events/"),
        "{writes:?}"
    );
    assert!(
        since_post >= Duration::from_secs(55),
        "patched {since_post:?} after the post: not once a minute"
    );
    // The fake apiserver logs a request before it applies it: read the
    // stored Event only once the daemon has had the patch's answer.
    let (s, _) = wait_metrics(
        &c.topo.node,
        "the patch counted",
        |s| sample(s, EVENTS, &[("result", "patched")]) == Some(1.0),
        SHOW_DEADLINE,
    );
    assert_eq!(sample(&s, EVENTS, &[("result", "failed")]), Some(0.0));
    let events = c.api.events();
    assert_eq!(events.len(), 1, "the same Event, not a second one: {events:?}");
    let e = &events[0];
    assert_eq!(e["metadata"]["name"], first["metadata"]["name"], "{e}");
    assert_eq!(e["count"], 3, "{e}");
    assert_eq!(e["firstTimestamp"], first["firstTimestamp"], "{e}");
    assert!(
        e["lastTimestamp"].as_str().unwrap() > first["lastTimestamp"].as_str().unwrap(),
        "lastTimestamp is the last attempt's, after the first: {e}"
    );
    assert!(e["message"].as_str().unwrap().starts_with("3 attempt(s)"), "{e}");
    eprintln!(
        "Event posted, then patched {:.1} s later (count 3)",
        since_post.as_secs_f64()
    );
}

#[test]
fn event_writes_that_fail_are_counted_and_hold_nothing_up() {
    if !can_run() {
        return;
    }
    let c = Cluster::new("attrib-fail");
    c.api.set_endpoint_slice("kubernetes", &[API_V4], API_PORT);
    c.api.set_pod("team-a", "web-0", PodSpec::new(NODE, &[POD2_V4]));
    let d = ready_daemon(&c);
    c.api.stop();
    let t = Instant::now();
    attempt(&c, POD2_V4);
    // Still named (the directory keeps what it knew), still reported, still blocked.
    wait_row(&c, &d, POD2_V4, "the row while the apiserver is away", |r| {
        pod_is(r, "team-a", "web-0")
    });
    let (s, failed_after) = wait_metrics(
        &c.topo.node,
        "the failed write counted",
        |s| sample(s, EVENTS, &[("result", "failed")]) >= Some(1.0),
        Duration::from_secs(15),
    );
    assert_eq!(sample(&s, EVENTS, &[("result", "created")]), Some(0.0));
    // (Not ready meanwhile: discovery is down, a matter of its own; the reader reads on.)
    assert_eq!(sample(&s, BOUND, &[]), Some(1.0));
    d.wait_log(
        "pod Event not written: cannot create Event team-a/web-0.",
        1,
        SHOW_DEADLINE,
    );
    attempt(&c, POD_V4);
    wait_row(&c, &d, POD_V4, "another attempt read meanwhile", |_| true);
    // The write waits its minute before it is tried again: one failure, one line.
    thread::sleep(Duration::from_secs(2));
    let s = scrape(&c.topo.node);
    assert_eq!(sample(&s, EVENTS, &[("result", "failed")]), Some(1.0));
    assert_eq!(d.log().matches("pod Event not written").count(), 1, "{}", d.log());
    eprintln!(
        "attempt -> failed Event write counted after {:.1} s (apiserver away; {:.1} s in all)",
        failed_after.as_secs_f64(),
        t.elapsed().as_secs_f64()
    );
}

#[test]
fn without_a_log_group_no_pod_is_watched() {
    if !can_run() {
        return;
    }
    let c = Cluster::new("attrib-off");
    c.api.set_endpoint_slice("kubernetes", &[API_V4], API_PORT);
    c.api.set_pod("team-a", "web-0", PodSpec::new(NODE, &[POD2_V4]));
    let d = c.spawn(
        Backend::Nftables,
        &[
            "--apiserver",
            "auto",
            "--container-cidr",
            CONTAINER_CIDR_V4,
            "--log-group",
            "off",
        ],
    );
    d.wait_ready();
    attempt(&c, POD2_V4);
    thread::sleep(Duration::from_secs(1));
    assert!(
        !c.api.requests().iter().any(|r| r.contains("/pods")),
        "{:?}",
        c.api.requests()
    );
    assert!(c.api.event_writes().is_empty());
    assert!(!d.log().contains("named after the pods"), "{}", d.log());
}
