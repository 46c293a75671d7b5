//! Tests of the fake kube-apiserver itself (tests/common/fake_apiserver),
//! each in its own network namespace: curl sees a real-looking apiserver
//! (401 without the token, lists with a resourceVersion, filtered watches
//! with replay and selector transitions, 410 Expired, JSON and merge PATCH,
//! Events created (POST, 409 on a second create) and patched,
//! connection refused while stopped, IPv6), and kube-rs (`Client`, `Api`,
//! `watcher` including re-list after 410 and streaming lists, PATCH) works
//! against it.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::fake_apiserver::{FakeApiServer, PodSpec};
use common::*;

const WATCH_WAIT: Duration = Duration::from_secs(5);

/// A unique temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("fakeapi-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// curl against the fake, from inside its namespace.
struct Curl<'a> {
    ns: &'a Netns,
    server: &'a FakeApiServer,
    ca_file: String,
    _dir: TempDir,
}

struct Reply {
    exit_code: i32,
    code: u16,
    body: Value,
    stderr: String,
}

impl<'a> Curl<'a> {
    fn new(ns: &'a Netns, server: &'a FakeApiServer) -> Curl<'a> {
        let dir = TempDir::new("curl");
        let ca = dir.0.join("ca.pem");
        std::fs::write(&ca, server.ca_pem()).expect("write CA");
        Curl {
            ns,
            server,
            ca_file: ca.to_string_lossy().into_owned(),
            _dir: dir,
        }
    }

    fn argv(&self, auth: &'a str, extra: &[&'a str], path: &str) -> Vec<String> {
        let mut argv: Vec<String> = ["curl", "-sS", "--noproxy", "*", "--globoff", "--cacert", &self.ca_file]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if !auth.is_empty() {
            argv.extend(["-H".to_string(), auth.to_string()]);
        }
        argv.extend(extra.iter().map(|s| s.to_string()));
        argv.push(format!("{}{path}", self.server.url()));
        argv
    }

    fn run(&self, auth: &str, extra: &[&str], path: &str) -> Reply {
        let mut argv = self.argv(auth, extra, path);
        argv.splice(1..1, ["-w".to_string(), "\n%{http_code}".to_string()]);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let out = self.ns.run(&argv);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
        Reply {
            exit_code: out.status.code().unwrap_or(-1),
            code: code.trim().parse().unwrap_or(0),
            body: serde_json::from_str(body).unwrap_or(Value::Null),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn auth(&self) -> String {
        format!("Authorization: Bearer {}", self.server.token())
    }

    fn get(&self, path: &str) -> Reply {
        self.run(&self.auth(), &[], path)
    }

    fn patch(&self, path: &str, content_type: &str, body: &Value) -> Reply {
        let ct = format!("Content-Type: {content_type}");
        let data = body.to_string();
        self.run(&self.auth(), &["-X", "PATCH", "-H", &ct, "--data-binary", &data], path)
    }

    fn post(&self, path: &str, body: &Value) -> Reply {
        let data = body.to_string();
        let extra = [
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &data,
        ];
        self.run(&self.auth(), &extra, path)
    }

    /// Start `curl -N` on a watch URL in the background; returns its pid.
    fn spawn_watch(&self, path: &str) -> u32 {
        let auth = self.auth();
        // curl's messages go to stdout too (`--stderr -`): one stream keeps
        // them in order with the events. Two pipes read by two threads could
        // interleave a message's pieces with an event line (seen once).
        let argv = self.argv(&auth, &["-N", "--max-time", "20", "--stderr", "-"], path);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        self.ns.spawn(&argv)
    }

    /// Wait (<= 10 s) for a spawned watch to end; its exit code and events.
    fn finish_watch(&self, pid: u32) -> (i32, Vec<Value>) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(s) = self.ns.try_wait(pid) {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "watch did not end: {}",
                self.ns.output_of(pid)
            );
            thread::sleep(Duration::from_millis(20));
        };
        let out = self.ns.output_of(pid);
        // stdout and stderr are interleaved: events are the JSON lines.
        let events = out
            .lines()
            .filter(|l| !l.starts_with("curl: "))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad watch line {l:?}: {e}\n{out}")))
            .collect();
        (status.code().unwrap_or(-1), events)
    }

    /// A watch that ends by itself (timeoutSeconds or an error): its events.
    fn watch(&self, path: &str) -> Vec<Value> {
        let pid = self.spawn_watch(path);
        let (code, events) = self.finish_watch(pid);
        assert_eq!(code, 0, "watch {path} exited {code}: {events:?}");
        events
    }
}

/// ("TYPE", "name") of each event.
fn summary(events: &[Value]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| {
            let name = e["object"]["metadata"]["name"].as_str().unwrap_or("");
            (e["type"].as_str().unwrap_or("?").to_string(), name.to_string())
        })
        .collect()
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

fn names(list: &Value) -> Vec<&str> {
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["metadata"]["name"].as_str().expect("name"))
        .collect()
}

fn rv(v: &Value) -> u64 {
    v["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no resourceVersion in {v}"))
}

fn setup() -> (Netns, FakeApiServer) {
    let ns = Netns::new("fakeapi");
    let server = FakeApiServer::start(&ns, "127.0.0.1:0");
    (ns, server)
}

#[test]
fn token_required_and_version() {
    if !can_run() {
        return;
    }
    let (ns, server) = setup();
    let curl = Curl::new(&ns, &server);
    for auth in ["", "Authorization: Bearer wrong"] {
        let r = curl.run(auth, &[], "/api/v1/pods");
        assert_eq!((r.exit_code, r.code), (0, 401), "{}", r.stderr);
        assert_eq!(r.body["kind"], "Status");
        assert_eq!(r.body["reason"], "Unauthorized");
        assert_eq!(r.body["code"], 401);
    }
    let r = curl.get("/version");
    assert_eq!(r.code, 200, "{}", r.stderr);
    assert_eq!(
        (r.body["major"].as_str(), r.body["minor"].as_str()),
        (Some("1"), Some("33"))
    );
    // HTTP/1.1 although curl offers h2, and keep-alive: the second request
    // reuses the first one's connection.
    let auth = curl.auth();
    let first = format!("{}/version", server.url());
    let w = "%{http_version} %{num_connects}\n";
    let argv = curl.argv(
        &auth,
        &["-o", "/dev/null", "-o", "/dev/null", "-w", w, &first],
        "/version",
    );
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    assert_eq!(ns.run_ok(&argv), "1.1 1\n1.1 0\n");
    let r = curl.get("/api/v1/services");
    assert_eq!((r.code, r.body["reason"].as_str()), (404, Some("NotFound")));
    assert_eq!(
        server.requests(),
        [
            "GET /api/v1/pods",
            "GET /api/v1/pods",
            "GET /version",
            "GET /version",
            "GET /version",
            "GET /api/v1/services"
        ]
    );
}

#[test]
fn list_and_filtered_watch() {
    if !can_run() {
        return;
    }
    let (ns, server) = setup();
    let curl = Curl::new(&ns, &server);
    server.set_pod("default", "a", PodSpec::new("n1", &["10.0.0.5"]));
    server.set_pod("kube-system", "b", PodSpec::new("n2", &["10.0.1.6"]));
    server.set_endpoint_slice("kubernetes", &["192.168.50.1"], 6443);

    let list = curl.get("/api/v1/pods?fieldSelector=spec.nodeName%3Dn1&limit=500").body;
    assert_eq!(list["kind"], "PodList");
    assert_eq!(names(&list), ["a"]);
    let list_rv = rv(&list);
    assert_eq!(list_rv, server.resource_version());
    assert_eq!(names(&curl.get("/api/v1/namespaces/kube-system/pods").body), ["b"]);
    let slices = curl
        .get("/apis/discovery.k8s.io/v1/namespaces/default/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3Dkubernetes")
        .body;
    assert_eq!(slices["kind"], "EndpointSliceList");
    assert_eq!(slices["items"][0]["endpoints"][0]["addresses"][0], "192.168.50.1");
    assert_eq!(slices["items"][0]["ports"][0]["port"], 6443);

    let path =
        format!("/api/v1/pods?watch=true&resourceVersion={list_rv}&timeoutSeconds=2&fieldSelector=spec.nodeName%3Dn1");
    let pid = curl.spawn_watch(&path);
    assert!(server.wait_watches("pods", 1, WATCH_WAIT), "{}", ns.output_of(pid));
    server.set_pod("default", "a", PodSpec::new("n1", &["10.0.0.5"]).label("app", "x"));
    server.set_pod("default", "c", PodSpec::new("n1", &["10.0.0.7"]));
    server.set_pod("default", "d", PodSpec::new("n2", &["10.0.1.8"]));
    server.delete_pod("default", "a");
    server.set_pod("default", "c", PodSpec::new("n2", &["10.0.0.7"]));
    let (code, events) = curl.finish_watch(pid);
    assert_eq!(code, 0, "timeoutSeconds ends the stream cleanly: {events:?}");
    let expected = pairs(&[("MODIFIED", "a"), ("ADDED", "c"), ("DELETED", "a"), ("DELETED", "c")]);
    assert_eq!(summary(&events), expected);
    let rvs: Vec<u64> = events.iter().map(|e| rv(&e["object"])).collect();
    assert!(rvs.windows(2).all(|w| w[0] < w[1]), "{rvs:?}");
    assert_eq!(*rvs.last().unwrap(), server.resource_version());
    assert_eq!(server.open_watches("pods"), 0);

    // The same changes again, replayed from history.
    let replay = curl.watch(&path.replace("timeoutSeconds=2", "timeoutSeconds=1"));
    assert_eq!(summary(&replay), expected);
    // No resourceVersion: the current state as ADDED events.
    let current = curl.watch("/api/v1/pods?watch=1&timeoutSeconds=1&labelSelector=app!%3Dx");
    let current_expected = pairs(&[("ADDED", "c"), ("ADDED", "d"), ("ADDED", "b")]);
    assert_eq!(summary(&current), current_expected);
    // Streaming list: initial events, then the end marker.
    let streamed = curl.watch(
        "/api/v1/namespaces/default/pods?watch=true&sendInitialEvents=true&allowWatchBookmarks=true&timeoutSeconds=1",
    );
    assert_eq!(summary(&streamed)[..2], pairs(&[("ADDED", "c"), ("ADDED", "d")]));
    assert_eq!(streamed[2]["type"], "BOOKMARK");
    assert_eq!(
        streamed[2]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
}

#[test]
fn a_pod_being_deleted_is_modified_and_stays_listed() {
    if !can_run() {
        return;
    }
    let (ns, server) = setup();
    let curl = Curl::new(&ns, &server);
    server.set_pod("default", "a", PodSpec::new("n1", &["10.0.0.5"]));
    let before = curl.get("/api/v1/namespaces/default/pods").body;
    let path = format!(
        "/api/v1/pods?watch=true&resourceVersion={}&timeoutSeconds=1",
        rv(&before)
    );
    let pid = curl.spawn_watch(&path);
    assert!(server.wait_watches("pods", 1, WATCH_WAIT), "{}", ns.output_of(pid));
    assert!(server.start_deleting_pod("default", "a", 30));
    assert!(!server.start_deleting_pod("default", "missing", 30));
    let (_, events) = curl.finish_watch(pid);
    assert_eq!(summary(&events), pairs(&[("MODIFIED", "a")]));
    let meta = &events[0]["object"]["metadata"];
    assert!(
        meta["deletionTimestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{meta}"
    );
    assert_eq!(meta["deletionGracePeriodSeconds"], 30);
    let old = &before["items"][0]["metadata"];
    assert_eq!(
        (&meta["uid"], &meta["creationTimestamp"]),
        (&old["uid"], &old["creationTimestamp"])
    );
    assert_eq!(
        names(&curl.get("/api/v1/namespaces/default/pods").body),
        ["a"],
        "still listed"
    );
}

/// Percent-encode a selector for a query string.
fn enc(selector: &str) -> String {
    selector
        .chars()
        .map(|c| match c {
            ' ' | ',' | '=' | '!' | '(' | ')' | '/' => format!("%{:02X}", c as u32),
            c => c.to_string(),
        })
        .collect()
}

#[test]
fn selectors() {
    if !can_run() {
        return;
    }
    let (ns, server) = setup();
    let curl = Curl::new(&ns, &server);
    server.set_pod(
        "default",
        "p1",
        PodSpec::new("n1", &[]).label("app", "x").label("tier", "web"),
    );
    server.set_pod("default", "p2", PodSpec::new("n1", &[]).label("app", "y"));
    server.set_pod("other", "p3", PodSpec::new("n2", &[]).host_network(true));
    let pods = |query: &str| {
        let r = curl.get(&format!("/api/v1/pods?{query}"));
        assert_eq!(r.code, 200, "{query}: {}", r.body);
        names(&r.body).iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let cases: [(&str, &[&str]); 12] = [
        ("app=x", &["p1"]),
        ("app==x", &["p1"]),
        ("app!=x", &["p2", "p3"]),
        ("app", &["p1", "p2"]),
        ("!app", &["p3"]),
        ("app in (x, y)", &["p1", "p2"]),
        ("app notin (x)", &["p2", "p3"]),
        ("app,tier=web", &["p1"]),
        ("tier in (db)", &[]),
        ("", &["p1", "p2", "p3"]),
        ("app notin (x,y),!tier", &["p3"]),
        ("app=y,app!=y", &[]),
    ];
    for (selector, expected) in cases {
        assert_eq!(
            pods(&format!("labelSelector={}", enc(selector))),
            expected,
            "{selector}"
        );
    }
    let fields: [(&str, &[&str]); 4] = [
        ("metadata.name!=p1", &["p2", "p3"]),
        ("metadata.namespace==other", &["p3"]),
        ("spec.nodeName=n1,metadata.name=p2", &["p2"]),
        ("spec.hostNetwork=true", &["p3"]),
    ];
    for (selector, expected) in fields {
        assert_eq!(
            pods(&format!("fieldSelector={}", enc(selector))),
            expected,
            "{selector}"
        );
    }
    for bad in ["fieldSelector=spec.foo%3D1", "labelSelector=app%20in%20x"] {
        let r = curl.get(&format!("/api/v1/pods?{bad}"));
        assert_eq!((r.code, r.body["reason"].as_str()), (400, Some("BadRequest")), "{bad}");
    }

    server.set_endpoint_slice("kubernetes", &["fd00::1", "fd00::2"], 443);
    server.set_endpoint_slice_labelled("other", &[("kubernetes.io/service-name", "other")], &["10.1.1.1"], 8443);
    let path = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices";
    let list = curl
        .get(&format!(
            "{path}?labelSelector={}",
            enc("kubernetes.io/service-name=kubernetes")
        ))
        .body;
    assert_eq!(names(&list), ["kubernetes"]);
    assert_eq!(list["items"][0]["addressType"], "IPv6");
    assert_eq!(list["items"][0]["endpoints"][1]["addresses"][0], "fd00::2");
    assert_eq!(list["items"][0]["endpoints"][1]["conditions"]["ready"], true);
    server.delete_endpoint_slice("kubernetes");
    assert_eq!(names(&curl.get(path).body), ["other"]);
}

#[test]
fn expired_watches_get_410() {
    if !can_run() {
        return;
    }
    let (ns, server) = setup();
    let curl = Curl::new(&ns, &server);
    server.set_node("n1", &["10.244.1.0/24"], &[], &["192.168.1.10"]);
    let old_rv = server.resource_version();
    server.set_node("n1", &["10.244.1.0/24"], &[("t", "NoSchedule")], &["192.168.1.10"]);
    let now_rv = server.resource_version();

    let pid = curl.spawn_watch(&format!("/api/v1/nodes?watch=true&resourceVersion={now_rv}"));
    assert!(server.wait_watches("nodes", 1, WATCH_WAIT), "{}", ns.output_of(pid));
    let t0 = Instant::now();
    server.expire_watches();
    let (code, events) = curl.finish_watch(pid);
    assert!(t0.elapsed() < Duration::from_secs(2), "took {:?}", t0.elapsed());
    assert_eq!(code, 0, "{events:?}");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "ERROR");
    assert_eq!(events[0]["object"]["code"], 410);
    assert_eq!(events[0]["object"]["reason"], "Expired");
    assert_eq!(server.open_watches("nodes"), 0);

    let events = curl.watch(&format!("/api/v1/nodes?watch=true&resourceVersion={old_rv}"));
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["object"]["code"], 410);
    assert_eq!(
        events[0]["object"]["message"],
        format!("too old resource version: {old_rv} ({now_rv})")
    );
    // From the compaction point on, watching works again.
    let events = curl.watch(&format!(
        "/api/v1/nodes?watch=true&resourceVersion={now_rv}&timeoutSeconds=1"
    ));
    assert!(events.is_empty(), "{events:?}");
    // Bookmarks when asked for, carrying the current resourceVersion.
    let events = curl.watch(&format!(
        "/api/v1/nodes?watch=true&resourceVersion={now_rv}&allowWatchBookmarks=true&timeoutSeconds=3"
    ));
    assert!(!events.is_empty(), "{events:?}");
    assert!(
        events
            .iter()
            .all(|e| e["type"] == "BOOKMARK" && rv(&e["object"]) == now_rv),
        "{events:?}"
    );
}

#[test]
fn patch_nodes() {
    if !can_run() {
        return;
    }
    let (ns, server) = setup();
    let curl = Curl::new(&ns, &server);
    let taints = [("apiserver-guard/not-ready", "NoSchedule"), ("other", "NoExecute")];
    server.set_node(
        "n1",
        &["10.244.1.0/24", "fd00:10:244:1::/64"],
        &taints,
        &["192.168.1.10"],
    );
    let node = curl.get("/api/v1/nodes/n1").body;
    assert_eq!(node["spec"]["podCIDR"], "10.244.1.0/24");
    assert_eq!(
        node["spec"]["taints"][0],
        json!({"key": "apiserver-guard/not-ready", "effect": "NoSchedule"})
    );
    let before = rv(&node);

    let remove_first = json!([
        {"op": "test", "path": "/spec/taints/0/key", "value": "apiserver-guard/not-ready"},
        {"op": "remove", "path": "/spec/taints/0"},
    ]);
    let r = curl.patch("/api/v1/nodes/n1", "application/json-patch+json", &remove_first);
    assert_eq!(r.code, 200, "{}", r.body);
    assert_eq!(
        r.body["spec"]["taints"],
        json!([{"key": "other", "effect": "NoExecute"}])
    );
    assert!(rv(&r.body) > before);
    assert_eq!(server.node_taints("n1"), ["other"]);

    let r = curl.patch("/api/v1/nodes/n1", "application/json-patch+json", &remove_first);
    assert_eq!(
        (r.code, r.body["reason"].as_str()),
        (422, Some("Invalid")),
        "{}",
        r.body
    );
    assert_eq!(server.node_taints("n1"), ["other"]);

    let merge = json!({"metadata": {"labels": {"x": "y"}}, "spec": {"taints": null}});
    let r = curl.patch("/api/v1/nodes/n1", "application/merge-patch+json", &merge);
    assert_eq!(r.code, 200, "{}", r.body);
    assert_eq!(r.body["metadata"]["labels"]["x"], "y");
    assert!(server.node_taints("n1").is_empty());
    let stale = json!({"metadata": {"resourceVersion": before.to_string()}});
    let r = curl.patch("/api/v1/nodes/n1", "application/merge-patch+json", &stale);
    assert_eq!(r.code, 409, "{}", r.body);

    let r = curl.get("/api/v1/nodes/missing");
    assert_eq!((r.code, r.body["reason"].as_str()), (404, Some("NotFound")));
    let events = curl.watch(&format!(
        "/api/v1/nodes?watch=true&resourceVersion={before}&timeoutSeconds=1"
    ));
    assert_eq!(summary(&events), pairs(&[("MODIFIED", "n1"), ("MODIFIED", "n1")]));
}

#[test]
fn events_are_created_once_then_patched() {
    if !can_run() {
        return;
    }
    let (ns, server) = setup();
    let curl = Curl::new(&ns, &server);
    let event = json!({
        "metadata": {"name": "web-0.1"},
        "involvedObject": {"kind": "Pod", "namespace": "team-a", "name": "web-0", "uid": "u1"},
        "reason": "ApiserverAccessBlocked", "type": "Warning", "count": 1,
    });
    let r = curl.post("/api/v1/namespaces/team-a/events", &event);
    assert_eq!(r.code, 201, "{}", r.body);
    assert_eq!(r.body["metadata"]["namespace"], "team-a");
    assert_eq!(r.body["kind"], "Event");
    assert!(rv(&r.body) > 0);
    let again = curl.post("/api/v1/namespaces/team-a/events", &event);
    assert_eq!(
        (again.code, again.body["reason"].as_str()),
        (409, Some("AlreadyExists"))
    );
    let elsewhere = curl.post("/api/v1/namespaces/other/events", &event);
    assert_eq!(
        elsewhere.code, 201,
        "the same name in another namespace: {}",
        elsewhere.body
    );
    let mut mismatched = event.clone();
    mismatched["metadata"]["namespace"] = "x".into();
    assert_eq!(curl.post("/api/v1/namespaces/team-a/events", &mismatched).code, 400);
    assert_eq!(
        curl.post("/api/v1/events", &event).code,
        405,
        "a create names its namespace"
    );
    assert_eq!(
        curl.post("/api/v1/namespaces/team-a/pods", &event).code,
        405,
        "only Events are created"
    );

    let r = curl.patch(
        "/api/v1/namespaces/team-a/events/web-0.1",
        "application/merge-patch+json",
        &json!({"count": 4, "lastTimestamp": "2026-11-30T21:00:00Z"}),
    );
    assert_eq!(r.code, 200, "{}", r.body);
    let stored = server.events();
    assert_eq!(stored.len(), 2);
    let ours = stored.iter().find(|e| e["metadata"]["namespace"] == "team-a").unwrap();
    assert_eq!(
        (ours["count"].as_u64(), ours["reason"].as_str()),
        (Some(4), Some("ApiserverAccessBlocked"))
    );
    let r = curl.patch(
        "/api/v1/namespaces/team-a/events/missing",
        "application/merge-patch+json",
        &json!({"count": 2}),
    );
    assert_eq!(r.code, 404);
    let listed = curl.get("/api/v1/namespaces/team-a/events?fieldSelector=involvedObject.uid%3Du1");
    assert_eq!(names(&listed.body), ["web-0.1"]);
    assert_eq!(server.event_writes().len(), 7, "{:?}", server.event_writes());
}

#[test]
fn stop_refuses_and_resume_serves() {
    if !can_run() {
        return;
    }
    let (ns, server) = setup();
    let curl = Curl::new(&ns, &server);
    server.set_node("n1", &["10.244.1.0/24"], &[], &[]);
    assert_eq!(curl.get("/version").code, 200);
    let pid = curl.spawn_watch("/api/v1/nodes?watch=true");
    assert!(server.wait_watches("nodes", 1, WATCH_WAIT), "{}", ns.output_of(pid));

    let t0 = Instant::now();
    server.stop();
    assert!(t0.elapsed() < Duration::from_secs(1), "stop took {:?}", t0.elapsed());
    let (code, events) = curl.finish_watch(pid);
    assert_eq!(code, 18, "the watch was cut mid-stream: {events:?}");
    assert_eq!(summary(&events), pairs(&[("ADDED", "n1")]));
    assert_eq!(server.open_watches("nodes"), 0);
    let r = curl.get("/version");
    assert_eq!(r.exit_code, 7, "connection refused while stopped: {}", r.stderr);

    server.resume();
    let r = curl.get("/api/v1/nodes");
    assert_eq!(r.code, 200, "{}", r.stderr);
    assert_eq!(names(&r.body), ["n1"]);
}

#[test]
fn ipv6_and_kubeconfig() {
    if !can_run() {
        return;
    }
    let ns = Netns::new("fakeapi");
    let server = FakeApiServer::start(&ns, "[::1]:0");
    assert!(server.url().starts_with("https://[::1]:"), "{}", server.url());
    let curl = Curl::new(&ns, &server);
    assert_eq!(curl.get("/version").code, 200);

    let dir = TempDir::new("kubeconfig");
    let path = server.write_kubeconfig(&dir.0);
    let yaml = std::fs::read_to_string(&path).unwrap();
    assert!(yaml.contains(&format!("server: \"{}\"", server.url())), "{yaml}");
    assert!(yaml.contains(&server.token()), "{yaml}");
    assert!(yaml.contains("current-context: fake"), "{yaml}");
    let other = server.write_kubeconfig_with_server(&dir.0, "apiserver.example:6443");
    assert_ne!(other, path);
    let yaml = std::fs::read_to_string(&other).unwrap();
    assert!(yaml.contains("server: \"https://apiserver.example:6443\""), "{yaml}");
}

#[test]
fn kube_client_and_watcher() {
    if !can_run() {
        return;
    }
    let (ns, server) = setup();
    let dir = TempDir::new("kube");
    let kubeconfig = server.write_kubeconfig(&dir.0);
    server.set_pod("default", "a", PodSpec::new("n1", &["10.0.0.5"]));
    server.set_pod("default", "b", PodSpec::new("n2", &["10.0.0.6"]));
    server.set_node(
        "n1",
        &["10.244.1.0/24"],
        &[("apiserver-guard/not-ready", "NoSchedule")],
        &[],
    );
    ns.in_thread(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        rt.block_on(kube_checks(&server, &kubeconfig));
    })
    .expect("enter netns");
}

async fn kube_checks(server: &FakeApiServer, kubeconfig: &Path) {
    use futures_util::StreamExt;
    use k8s_openapi::api::core::v1::{Node, Pod};
    use kube::api::{Api, ListParams, Patch, PatchParams};
    use kube::runtime::watcher::{self, Event};

    let kc = kube::config::Kubeconfig::read_from(kubeconfig).expect("read kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("kubeconfig");
    let client = kube::Client::try_from(config).expect("client");
    let pods: Api<Pod> = Api::all(client.clone());
    let list = pods
        .list(&ListParams::default().fields("spec.nodeName=n1"))
        .await
        .expect("list pods");
    let listed: Vec<_> = list.items.iter().map(|p| p.metadata.name.clone().unwrap()).collect();
    assert_eq!(listed, ["a"]);

    let describe = |e: Result<Event<Pod>, watcher::Error>| match e {
        Ok(Event::Init) => "Init".to_string(),
        Ok(Event::InitApply(p)) => format!("InitApply {}", p.metadata.name.unwrap()),
        Ok(Event::InitDone) => "InitDone".to_string(),
        Ok(Event::Apply(p)) => format!("Apply {}", p.metadata.name.unwrap()),
        Ok(Event::Delete(p)) => format!("Delete {}", p.metadata.name.unwrap()),
        Err(watcher::Error::WatchError(status)) => format!("Err {}", status.code),
        Err(e) => format!("Err {e}"),
    };
    for streaming in [false, true] {
        let mut config = watcher::Config::default().fields("spec.nodeName=n1");
        if streaming {
            config = config.streaming_lists();
        }
        let mut stream = watcher::watcher(pods.clone(), config).boxed();
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.push(describe(next_event(&mut stream).await));
        }
        assert_eq!(seen, ["Init", "InitApply a", "InitDone"], "streaming={streaming}");
        // (Only) a list-then-watch opens its watch after InitDone: wait for it
        // before changing anything.
        let first = {
            let poll = next_event(&mut stream);
            tokio::pin!(poll);
            let deadline = Instant::now() + WATCH_WAIT;
            while server.open_watches("pods") < 1 {
                assert!(Instant::now() < deadline, "no watch opened: {:?}", server.requests());
                tokio::select! {
                    e = &mut poll => panic!("unexpected event {}", describe(e)),
                    _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                }
            }
            server.set_pod("default", "c", PodSpec::new("n1", &["10.0.0.7"]));
            poll.await
        };
        assert_eq!(describe(first), "Apply c");
        server.delete_pod("default", "c");
        assert_eq!(describe(next_event(&mut stream).await), "Delete c");
        server.expire_watches();
        assert_eq!(describe(next_event(&mut stream).await), "Err 410");
        let mut relist = Vec::new();
        for _ in 0..3 {
            relist.push(describe(next_event(&mut stream).await));
        }
        assert_eq!(relist, ["Init", "InitApply a", "InitDone"], "streaming={streaming}");
    }

    let nodes: Api<Node> = Api::all(client);
    let patch = json!({"spec": {"taints": null}});
    let node = nodes
        .patch("n1", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch node");
    assert!(node.spec.unwrap().taints.is_none());
    assert!(server.node_taints("n1").is_empty());
    let err = nodes.get("missing").await.expect_err("missing node");
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 404), "{err:?}");
}

/// The next watcher item, within 10 s.
async fn next_event<S: futures_util::Stream + Unpin>(stream: &mut S) -> S::Item {
    use futures_util::StreamExt;
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("watcher event within 10 s")
        .expect("watcher stream ended")
}
