//! Real-kernel tests of Kubernetes discovery against a fake apiserver that
//! speaks the real protocol (HTTPS + bearer token, list + watch with
//! resourceVersion, chunked watch events, 410 Gone), run inside the test's
//! node namespace: apiserver endpoints follow the `kubernetes`
//! EndpointSlices live, allowed pods on this node get through while their
//! neighbours and pods of other nodes do not, the block stays when the
//! apiserver goes away, a control-plane node blocks through INPUT, the node
//! taint goes only after the block is proven, and bad discovery flags change
//! nothing. The allow-list: a label counts only in the namespace its
//! `--allow-pods` entry names, and an allowed pod loses its exemption as
//! soon as it terminates or another pod of the node shows up with its IP. Every check is on real packets (curl from the pod namespace)
//! and on the kernel's objects.

mod common;

use std::time::{Duration, Instant};

use common::daemon_cases::*;
use common::discovery_cases::*;
use common::fake_apiserver::PodSpec;
use common::guard_cases::*;
use common::*;

/// The allow-list entry for labelled pods of `namespace` (`NAMESPACE/SELECTOR`).
fn allow_labelled_in(namespace: &str) -> String {
    format!("{namespace}/{}={}", ALLOW_LABEL.0, ALLOW_LABEL.1)
}

/// The daemon with discovered apiservers, a fixed container CIDR and the
/// allow-list label selector, scoped to `default`.
fn spawn_allowing_labelled(c: &Cluster, backend: Backend) -> Daemon<'_> {
    let allow = allow_labelled_in("default");
    let flags = [
        "--apiserver",
        "auto",
        "--container-cidr",
        CONTAINER_CIDR_V4,
        "--allow-pods",
        &allow,
    ];
    c.spawn(backend, &flags)
}

fn labelled(node: &str, ip: &str) -> PodSpec {
    PodSpec {
        labels: vec![(ALLOW_LABEL.0.into(), ALLOW_LABEL.1.into())],
        ..PodSpec::new(node, &[ip])
    }
}

#[test]
fn apiserver_endpoints_follow_the_endpointslices_live() {
    if !can_run() {
        return;
    }
    let c = Cluster::new("slices");
    c.api.set_endpoint_slice("kubernetes", &[API_V4], API_PORT);
    // A slice of another Service is not an apiserver.
    c.api
        .set_endpoint_slice_labelled("web", &[("kubernetes.io/service-name", "web")], &[OTHER_V4], API_PORT);
    let d = c.spawn(
        Backend::Nftables,
        &["--apiserver", "auto", "--container-cidr", CONTAINER_CIDR_V4],
    );
    d.wait_ready();
    assert_refused(&pod_curl(&c, None, API_V4, API_PORT), "discovered endpoint");
    assert_served(&pod_curl(&c, None, OTHER_V4, API_PORT), "another Service's endpoint");
    assert_served(&curl(&c.topo.node, API_V4, API_PORT, 3), "the node itself");

    // The control plane moves: the new address is blocked, the old one released.
    let t = Instant::now();
    c.api.set_endpoint_slice("kubernetes", &[OTHER_V4], API_PORT);
    wait_refused(&c, &d, None, OTHER_V4, API_PORT, "new endpoint");
    let moved = t.elapsed();
    wait_served(&c, &d, None, API_V4, API_PORT, "released endpoint");
    eprintln!("endpoint change -> pod refused at the new address in {moved:?}");
    assert!(nft_set(&c.topo.node, "api_port_v4").contains(OTHER_V4));
    assert!(!nft_set(&c.topo.node, "api_port_v4").contains(API_V4));

    // A second slice adds to the first; deleting it releases only its endpoints.
    c.api.set_endpoint_slice("kubernetes-2", &[API_V4], API_PORT);
    wait_refused(&c, &d, None, API_V4, API_PORT, "second slice");
    assert_refused(&pod_curl(&c, None, OTHER_V4, API_PORT), "first slice still blocked");
    c.api.delete_endpoint_slice("kubernetes-2");
    wait_served(&c, &d, None, API_V4, API_PORT, "deleted slice released");
    assert_refused(&pod_curl(&c, None, OTHER_V4, API_PORT), "remaining slice");

    // 410 Gone: the watch re-lists, nothing is lost and later changes still arrive.
    c.api.expire_watches();
    assert!(
        c.api.wait_watches("endpointslices", 1, Duration::from_secs(10)),
        "re-watch after 410"
    );
    assert_refused(&pod_curl(&c, None, OTHER_V4, API_PORT), "after the re-list");
    c.api.set_endpoint_slice("kubernetes", &[API_V4, OTHER_V4], API_PORT);
    wait_refused(&c, &d, None, API_V4, API_PORT, "change after the re-list");
    assert!(d.log().contains("discovery: applied"), "{}", d.log());
    // The cache holds the last known endpoints (written right after the kernel change).
    wait_until("cache written", &d, CHANGE_DEADLINE, || {
        let cache = std::fs::read_to_string(c.dir.join("discovered.json")).unwrap_or_default();
        cache.contains(API_V4) && cache.contains(OTHER_V4)
    });
}

#[test]
fn allowed_pods_on_this_node_get_through_with_element_updates_only() {
    if !can_run() {
        return;
    }
    let c = Cluster::new("allow");
    c.api.set_endpoint_slice("kubernetes", &[API_V4], API_PORT);
    // The allowed pod (namespace kube-system) and a labelled pod of another node
    // that happens to have the neighbour's address: ignored.
    c.api.set_pod("kube-system", "coredns", PodSpec::new(NODE, &[POD2_V4]));
    c.api.set_pod("default", "elsewhere", labelled(OTHER_NODE, POD_V4));
    // A host-network pod in an allowed namespace is not exempted (the block never applies to it).
    c.api.set_pod(
        "kube-system",
        "kube-proxy",
        PodSpec {
            host_network: true,
            ..PodSpec::new(NODE, &[NODE_POD_V4])
        },
    );
    let allow = allow_labelled_in("default");
    let d = c.spawn(
        Backend::Nftables,
        &[
            "--apiserver",
            "auto",
            "--container-cidr",
            CONTAINER_CIDR_V4,
            "--allow-namespaces",
            "kube-system",
            "--allow-pods",
            &allow,
        ],
    );
    d.wait_ready();
    wait_served(&c, &d, Some(POD2_V4), API_V4, API_PORT, "allowed pod (kube-system)");
    assert_refused(&pod_curl(&c, Some(POD_V4), API_V4, API_PORT), "its neighbour");
    let exempt = nft_set(&c.topo.node, "exempt_v4");
    assert!(!exempt.contains(NODE_POD_V4), "host-network pod exempted: {exempt}");
    let handles = guard_rule_handles(&c.topo.node);
    assert!(!handles.is_empty());

    // The pod moves to a namespace that is not allowed, without the label: refused.
    c.api.delete_pod("kube-system", "coredns");
    c.api.set_pod("default", "app", PodSpec::new(NODE, &[POD2_V4]));
    wait_refused(&c, &d, Some(POD2_V4), API_V4, API_PORT, "pod stopped / unlabelled");
    // Labelled: through again.
    c.api.set_pod("default", "app", labelled(NODE, POD2_V4));
    wait_served(&c, &d, Some(POD2_V4), API_V4, API_PORT, "pod labelled");
    assert_refused(&pod_curl(&c, Some(POD_V4), API_V4, API_PORT), "neighbour still refused");
    // Finished pods lose their exemption.
    c.api.set_pod(
        "default",
        "app",
        PodSpec {
            phase: "Succeeded".into(),
            ..labelled(NODE, POD2_V4)
        },
    );
    wait_refused(&c, &d, Some(POD2_V4), API_V4, API_PORT, "pod finished");
    assert!(
        nft_set(&c.topo.node, "exempt_v4").contains("\"elem\": []")
            || !nft_set(&c.topo.node, "exempt_v4").contains(POD2_V4)
    );

    // Every change was a set-element update: the rules were never rewritten.
    assert_eq!(
        guard_rule_handles(&c.topo.node),
        handles,
        "rule handles changed: the chain was rewritten"
    );
    assert!(
        c.api
            .requests()
            .iter()
            .any(|r| r.contains("fieldSelector=spec.nodeName%3Dnode-a")
                || r.contains("fieldSelector=spec.nodeName=node-a")),
        "pods are watched with a field selector on this node: {:?}",
        c.api.requests()
    );
}

#[test]
fn allow_list_with_iptables_rerenders_the_chain() {
    if !can_run() {
        return;
    }
    let c = Cluster::new("allow-ipt");
    c.api.set_endpoint_slice("kubernetes", &[API_V4], API_PORT);
    c.api.set_pod("default", "app", labelled(NODE, POD2_V4));
    let d = spawn_allowing_labelled(&c, Backend::IptablesNft);
    d.wait_ready();
    wait_served(&c, &d, Some(POD2_V4), API_V4, API_PORT, "allowed pod");
    assert_refused(&pod_curl(&c, Some(POD_V4), API_V4, API_PORT), "neighbour");
    assert!(ipt_save(&c.topo.node, "nft").contains(&format!("-A {IPT_CHAIN} -s {POD2_V4}/32")));
    c.api.delete_pod("default", "app");
    wait_refused(&c, &d, Some(POD2_V4), API_V4, API_PORT, "pod deleted");
    assert!(!ipt_save(&c.topo.node, "nft").contains(&format!("-s {POD2_V4}/32")));
}

#[test]
fn apiserver_away_keeps_the_block_and_says_so() {
    if !can_run() {
        return;
    }
    let c = Cluster::new("away");
    c.api.set_endpoint_slice("kubernetes", &[API_V4], API_PORT);
    c.api.set_pod("default", "app", labelled(NODE, POD2_V4));
    let d = spawn_allowing_labelled(&c, Backend::Nftables);
    d.wait_ready();
    wait_http(&c.topo.node, "/readyz", 200, |_| true, Duration::from_secs(10));
    wait_served(&c, &d, Some(POD2_V4), API_V4, API_PORT, "allowed pod");

    c.api.stop();
    let (r, _) = wait_http(
        &c.topo.node,
        "/readyz",
        503,
        |b| b.contains("discovery"),
        Duration::from_secs(30),
    );
    assert!(r.body.contains("last known"), "{}", r.body);
    let s = scrape(&c.topo.node);
    assert_eq!(
        sample(&s, "apiserver_guard_discovery_up", &[("source", "endpointslices")]),
        Some(0.0)
    );
    // Fail-closed: the last known endpoints and allow-list stay enforced.
    assert_refused(
        &pod_curl(&c, Some(POD_V4), API_V4, API_PORT),
        "blocked while the apiserver is away",
    );
    assert!(
        pod_curl(&c, Some(POD2_V4), API_V4, API_PORT).served(),
        "allowed pod keeps access"
    );
    // Changes made meanwhile arrive once it is back (re-list).
    c.api.set_endpoint_slice("kubernetes", &[API_V4, OTHER_V4], API_PORT);
    c.api.resume();
    wait_refused(&c, &d, None, OTHER_V4, API_PORT, "change made while away");
    wait_until(
        "ready again once the apiserver is back",
        &d,
        Duration::from_secs(30),
        || http_get(&c.topo.node, "/readyz").is_some_and(|r| r.code == 200),
    );

    // A restart while the apiserver is away starts from the cache: blocked at once.
    c.api.stop();
    d.kill();
    let d2 = spawn_allowing_labelled(&c, Backend::Nftables);
    d2.wait_ready();
    assert_refused(
        &pod_curl(&c, Some(POD_V4), OTHER_V4, API_PORT),
        "cached endpoint after restart",
    );
    assert!(
        pod_curl(&c, Some(POD2_V4), API_V4, API_PORT).served(),
        "cached allow-list after restart"
    );
    assert!(d2.log().contains("last known state"), "{}", d2.log());
}

#[test]
fn control_plane_node_blocks_pods_through_input() {
    if !can_run() {
        return;
    }
    // The apiserver runs on the node itself (its address toward the api namespace).
    let c = Cluster::with_bind("cp", &format!("{NODE_API_V4}:6443"));
    c.api.set_endpoint_slice("kubernetes", &[NODE_API_V4], 6443);
    assert_eq!(
        https_code(&c.topo.pod, NODE_API_V4, 6443),
        Ok(401),
        "before: the pod reaches the local apiserver"
    );
    for backend in [Backend::Nftables, Backend::IptablesNft] {
        let what = backend.flag();
        let d = c.spawn(backend, &["--apiserver", "auto", "--container-cidr", CONTAINER_CIDR_V4]);
        d.wait_ready();
        assert_eq!(
            https_code(&c.topo.pod, NODE_API_V4, 6443),
            Err(7),
            "{what}: the pod is refused through INPUT"
        );
        assert_eq!(
            https_code(&c.topo.node, NODE_API_V4, 6443),
            Ok(401),
            "{what}: the node is served"
        );
        let hooked = match backend {
            Backend::Nftables => c
                .topo
                .node
                .run_ok(&["nft", "list", "table", "inet", "apiserver_guard"])
                .contains("hook input"),
            _ => ipt_save(&c.topo.node, "nft").contains(&jump_line("INPUT")),
        };
        assert!(hooked, "{what}: no INPUT hook\n{}", firewall_snapshot(&c.topo.node));
        d.kill();
        remove(&c.topo.node).expect_code(0, "remove");
    }
}

#[test]
fn node_taint_goes_only_after_the_block_is_proven() {
    if !can_run() {
        return;
    }
    let c = Cluster::new("taint");
    c.api.set_endpoint_slice("kubernetes", &[API_V4], API_PORT);
    c.api.set_node(
        NODE,
        &[CONTAINER_CIDR_V4],
        &[(TAINT, "NoSchedule"), ("other", "NoExecute")],
        &[NODE_API_V4],
    );
    let pod_ns = format!("/run/netns/{}", c.topo.pod.name);
    // A probe that cannot prove anything (its namespace has no container-CIDR address): the taint stays.
    let api_ns = format!("/run/netns/{}", c.topo.api.name);
    let d = c.spawn(
        Backend::Nftables,
        &[
            "--apiserver",
            "auto",
            "--container-cidr",
            "auto",
            "--node-taint",
            TAINT,
            "--probe-netns",
            &api_ns,
        ],
    );
    d.wait_ready();
    d.wait_log("node taint", 1, Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        c.api.node_taints(NODE).contains(&TAINT.to_string()),
        "removed without a passing probe:\n{}",
        d.log()
    );
    d.kill();

    // The pod namespace without a route to the apiserver (issue #11): its probe fails with
    // "no route", which proves nothing: the taint stays.
    c.topo.pod.ip_ok(&["-4", "route", "del", "default"]);
    let d = c.spawn(
        Backend::Nftables,
        &[
            "--apiserver",
            "auto",
            "--container-cidr",
            "auto",
            "--node-taint",
            TAINT,
            "--probe-netns",
            &pod_ns,
        ],
    );
    d.wait_ready();
    d.wait_log("node taint", 1, Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        c.api.node_taints(NODE).contains(&TAINT.to_string()),
        "removed after a probe from a namespace with no route:\n{}",
        d.log()
    );
    assert!(!pod_curl(&c, None, API_V4, API_PORT).served(), "curl without a route");
    d.kill();
    c.topo.pod.ip_ok(&["-4", "route", "add", "default", "via", NODE_POD_V4]);

    // With a probe from the pod: removed, and only our taint.
    let d = c.spawn(
        Backend::Nftables,
        &[
            "--apiserver",
            "auto",
            "--container-cidr",
            "auto",
            "--node-taint",
            TAINT,
            "--probe-netns",
            &pod_ns,
        ],
    );
    d.wait_ready();
    wait_until("taint removed", &d, Duration::from_secs(15), || {
        !c.api.node_taints(NODE).contains(&TAINT.to_string())
    });
    assert_eq!(c.api.node_taints(NODE), vec!["other".to_string()]);
    // The patch reaches the apiserver a moment before the daemon logs it.
    d.wait_log("removed taint", 1, Duration::from_secs(5));
    let log = d.log();
    let (ready, removed) = (log.find(READY_LINE).unwrap(), log.find("removed taint").unwrap());
    assert!(ready < removed, "{log}");
    assert_refused(&pod_curl(&c, None, API_V4, API_PORT), "pod CIDR from the node object");
    let s = scrape(&c.topo.node);
    assert_eq!(
        sample(&s, "apiserver_guard_node_taint_removed", &[("key", TAINT)]),
        Some(1.0)
    );
}

#[test]
fn one_shot_apply_takes_a_snapshot_keeps_it_and_falls_back_to_it() {
    if !can_run() {
        return;
    }
    let c = Cluster::new("oneshot");
    c.api.set_endpoint_slice("kubernetes", &[API_V4], API_PORT);
    let kc = c.kubeconfig.display().to_string();
    let cache = c.dir.join("oneshot-cache.json").display().to_string();
    let args = |sub: &str, cache: &str| -> Vec<String> {
        let a = [
            sub,
            "--config",
            empty_config(),
            "--mode",
            "tunnel",
            "--backend",
            "nftables",
            "--apiserver",
            "auto",
            "--container-cidr",
            CONTAINER_CIDR_V4,
            "--kubeconfig",
            &kc,
            "--node-name",
            NODE,
            "--discovery-cache",
            cache,
        ];
        a.iter().map(|s| s.to_string()).collect()
    };
    run_guard(&c.topo.node, &args("apply", &cache)).expect_code(0, "apply --apiserver auto");
    assert_refused(&pod_curl(&c, None, API_V4, API_PORT), "after one-shot apply");
    run_guard(&c.topo.node, &args("status", &cache)).expect_code(0, "status --apiserver auto");
    let kept = std::fs::read_to_string(&cache).expect("apply keeps the snapshot in the cache");
    assert!(kept.contains(API_V4), "{kept}");

    // No apiserver: the last known state is enforced (fail-closed), with a warning.
    c.api.stop();
    let before = firewall_snapshot(&c.topo.node);
    let r = run_guard(&c.topo.node, &args("apply", &cache));
    r.expect_code(0, "apply from the cache");
    assert!(r.stderr.contains("using the last known state"), "{}", r.stderr);
    assert_same_snapshot(
        &before,
        &firewall_snapshot(&c.topo.node),
        "apply from the cache changes nothing here",
    );
    // No apiserver and no cache: a clear runtime error and nothing changed.
    let none = c.dir.join("no-cache.json").display().to_string();
    let r = run_guard(&c.topo.node, &args("apply", &none));
    r.expect_code(1, "apply without an apiserver or a cache");
    assert!(r.stderr.contains("discovery"), "{}", r.stderr);
    assert_same_snapshot(&before, &firewall_snapshot(&c.topo.node), "refused apply");
}

#[test]
fn bad_discovery_flags_change_nothing() {
    if !can_run() {
        return;
    }
    let c = Cluster::new("bad");
    let kc = c.kubeconfig.display().to_string();
    let base = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "apply",
            "--config",
            empty_config(),
            "--backend",
            "nftables",
            "--container-cidr",
            CONTAINER_CIDR_V4,
            // No cache to fall back to, whatever this machine holds at the default path.
            "--discovery-cache",
            "/nonexistent/apiserver-guard-test/discovered.json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    GuardPolicy::new(
        Backend::Nftables,
        "tunnel",
        &[CONTAINER_CIDR_V4],
        &[&endpoint(API_V4, Some(API_PORT))],
    )
    .apply_ok(&c.topo.node);
    let before = firewall_snapshot(&c.topo.node);
    for (extra, why) in [
        (
            vec![
                "--apiserver",
                "auto",
                "--kubeconfig",
                &kc,
                "--allow-pods",
                "default/app in web",
            ],
            "parentheses",
        ),
        (
            vec![
                "--apiserver",
                "auto",
                "--kubeconfig",
                &kc,
                "--allow-namespaces",
                "Kube_System",
            ],
            "namespace",
        ),
        (
            vec!["--apiserver", "auto", "--kubeconfig", &kc, "--node-name", "bad node"],
            "node name",
        ),
        (
            vec!["--apiserver", API_V4, "--kubeconfig", &kc],
            "nothing uses Kubernetes",
        ),
        (
            vec!["--apiserver", "auto", "--kubeconfig", "/nonexistent/kubeconfig"],
            "kubeconfig",
        ),
    ] {
        let r = run_guard(&c.topo.node, &base(&extra));
        assert_ne!(r.code, 0, "{extra:?}");
        assert!(r.stderr.contains(why), "{extra:?}: {}", r.stderr);
        assert_same_snapshot(&before, &firewall_snapshot(&c.topo.node), &format!("{extra:?}"));
    }
    let mut run: Vec<String> = c.daemon_args(Backend::Nftables, &["--apiserver", "auto", "--node-taint=-bad"]);
    run.extend(["--container-cidr".into(), CONTAINER_CIDR_V4.into()]);
    let r = run_guard(&c.topo.node, &run);
    r.expect_code(2, "run --node-taint -bad");
    assert!(r.stderr.contains("taint"), "{}", r.stderr);
    assert_same_snapshot(&before, &firewall_snapshot(&c.topo.node), "refused run");
}

#[test]
fn ipv6_endpoints_and_pod_cidrs_are_discovered_too() {
    if !can_run() {
        return;
    }
    let c = Cluster::new("v6");
    c.api.set_endpoint_slice("kubernetes", &[API_V4], API_PORT);
    c.api.set_endpoint_slice("kubernetes-v6", &[API_V6], API_PORT);
    c.api
        .set_node(NODE, &[CONTAINER_CIDR_V4, CONTAINER_CIDR_V6], &[], &[NODE_API_V4]);
    let d = c.spawn(Backend::Nftables, &["--apiserver", "auto", "--container-cidr", "auto"]);
    d.wait_ready();
    assert_refused(&pod_curl(&c, None, API_V4, API_PORT), "IPv4 endpoint");
    assert_refused(&pod_curl(&c, None, API_V6, API_PORT), "IPv6 endpoint, IPv6 pod CIDR");
    assert_served(&pod_curl(&c, None, OTHER_V6, API_PORT), "other IPv6 address");
    c.api.delete_endpoint_slice("kubernetes-v6");
    wait_served(&c, &d, None, API_V6, API_PORT, "IPv6 slice deleted");
    assert_refused(&pod_curl(&c, None, API_V4, API_PORT), "IPv4 still blocked");
}

#[test]
fn a_discovered_policy_that_fails_validation_is_refused_and_the_old_one_kept() {
    if !can_run() {
        return;
    }
    let c = Cluster::new("refused");
    c.api.set_endpoint_slice("kubernetes", &[API_V4], API_PORT);
    c.api.set_node(NODE, &[CONTAINER_CIDR_V4], &[], &[NODE_API_V4]);
    // Mode both hooks OUTPUT: a pod CIDR holding the node's own address would cut the node off.
    let mut args = c.daemon_args(Backend::Nftables, &["--apiserver", "auto", "--container-cidr", "auto"]);
    let mode = args.iter().position(|a| a == "tunnel").unwrap();
    args[mode] = "both".into();
    let d = Daemon::spawn(&c.topo.node, &args);
    d.wait_ready();
    assert_refused(&pod_curl(&c, None, API_V4, API_PORT), "before");
    let before = firewall_snapshot(&c.topo.node);
    c.api.set_node(NODE, &["192.168.50.0/30"], &[], &[NODE_API_V4]);
    d.wait_log("discovered policy is refused", 1, Duration::from_secs(10));
    assert!(d.log().contains("self-lockout"), "{}", d.log());
    assert_same_snapshot(&before, &firewall_snapshot(&c.topo.node), "refused discovered policy");
    assert_refused(&pod_curl(&c, None, API_V4, API_PORT), "old policy still enforced");
    assert_served(&curl(&c.topo.node, API_V4, API_PORT, 3), "the node is not cut off");
    let s = scrape(&c.topo.node);
    assert_eq!(
        sample(&s, "apiserver_guard_discovery_changes_total", &[("outcome", "refused")]),
        Some(1.0)
    );
    // A good change afterwards is applied again.
    c.api.set_endpoint_slice("kubernetes", &[OTHER_V4], API_PORT);
    c.api.set_node(NODE, &[CONTAINER_CIDR_V4], &[], &[NODE_API_V4]);
    wait_refused(&c, &d, None, OTHER_V4, API_PORT, "valid change after a refused one");
}

#[test]
fn a_labelled_pod_in_a_namespace_the_operator_did_not_name_stays_blocked() {
    if !can_run() {
        return;
    }
    let c = Cluster::new("scoped");
    c.api.set_endpoint_slice("kubernetes", &[API_V4], API_PORT);
    // Same label, two namespaces: only the one the entry names counts.
    c.api.set_pod("monitoring", "prom", labelled(NODE, POD2_V4));
    c.api.set_pod("tenant-a", "intruder", labelled(NODE, POD_V4));
    let allow = allow_labelled_in("monitoring");
    let d = c.spawn(
        Backend::Nftables,
        &[
            "--apiserver",
            "auto",
            "--container-cidr",
            CONTAINER_CIDR_V4,
            "--allow-pods",
            &allow,
        ],
    );
    d.wait_ready();
    wait_served(&c, &d, Some(POD2_V4), API_V4, API_PORT, "labelled pod of monitoring");
    assert_refused(
        &pod_curl(&c, Some(POD_V4), API_V4, API_PORT),
        "labelled pod of tenant-a",
    );
    let exempt = nft_set(&c.topo.node, "exempt_v4");
    assert!(exempt.contains(POD2_V4) && !exempt.contains(POD_V4), "{exempt}");
    // A second entry names the tenant's namespace, but with another label: still blocked.
    d.kill();
    let d = c.spawn(
        Backend::Nftables,
        &[
            "--apiserver",
            "auto",
            "--container-cidr",
            CONTAINER_CIDR_V4,
            "--allow-pods",
            &format!("{allow};tenant-a/app=agent"),
        ],
    );
    d.wait_ready();
    wait_served(&c, &d, Some(POD2_V4), API_V4, API_PORT, "monitoring, two entries");
    assert_refused(
        &pod_curl(&c, Some(POD_V4), API_V4, API_PORT),
        "tenant-a without app=agent",
    );
    c.api.set_pod(
        "tenant-a",
        "intruder",
        PodSpec::new(NODE, &[POD_V4]).label("app", "agent"),
    );
    wait_served(
        &c,
        &d,
        Some(POD_V4),
        API_V4,
        API_PORT,
        "tenant-a pod the second entry names",
    );
}

#[test]
fn an_allowed_pods_ip_reused_by_another_pod_loses_the_exemption() {
    if !can_run() {
        return;
    }
    let c = Cluster::new("reuse");
    c.api.set_endpoint_slice("kubernetes", &[API_V4], API_PORT);
    c.api.set_pod("monitoring", "prom", labelled(NODE, POD2_V4));
    let allow = allow_labelled_in("monitoring");
    let d = c.spawn(
        Backend::Nftables,
        &[
            "--apiserver",
            "auto",
            "--container-cidr",
            CONTAINER_CIDR_V4,
            "--allow-pods",
            &allow,
        ],
    );
    d.wait_ready();
    wait_served(&c, &d, Some(POD2_V4), API_V4, API_PORT, "allowed pod");
    // The CNI hands the IP to a new pod while the old object still says Running.
    std::thread::sleep(Duration::from_millis(1100)); // a strictly later creationTimestamp (seconds)
    c.api.set_pod("default", "web", PodSpec::new(NODE, &[POD2_V4]));
    let took = wait_refused(
        &c,
        &d,
        Some(POD2_V4),
        API_V4,
        API_PORT,
        "IP reused by a pod not allowed",
    );
    eprintln!("IP reused by another pod -> refused in {took:?}");
    assert!(!nft_set(&c.topo.node, "exempt_v4").contains(POD2_V4));
    // Newest wins the other way too: a later allowed pod with that IP gets through.
    std::thread::sleep(Duration::from_millis(1100));
    c.api.set_pod("monitoring", "prom-2", labelled(NODE, POD2_V4));
    wait_served(
        &c,
        &d,
        Some(POD2_V4),
        API_V4,
        API_PORT,
        "newer allowed pod holding the IP",
    );
}

#[test]
fn an_allowed_pod_being_deleted_loses_the_exemption() {
    if !can_run() {
        return;
    }
    let c = Cluster::new("deleting");
    c.api.set_endpoint_slice("kubernetes", &[API_V4], API_PORT);
    c.api.set_pod("monitoring", "prom", labelled(NODE, POD2_V4));
    let allow = allow_labelled_in("monitoring");
    let d = c.spawn(
        Backend::Nftables,
        &[
            "--apiserver",
            "auto",
            "--container-cidr",
            CONTAINER_CIDR_V4,
            "--allow-pods",
            &allow,
        ],
    );
    d.wait_ready();
    wait_served(&c, &d, Some(POD2_V4), API_V4, API_PORT, "allowed pod");
    assert!(c.api.start_deleting_pod("monitoring", "prom", 30));
    let took = wait_refused(&c, &d, Some(POD2_V4), API_V4, API_PORT, "deletionTimestamp set");
    eprintln!("deletionTimestamp set -> refused in {took:?}");
    assert!(!nft_set(&c.topo.node, "exempt_v4").contains(POD2_V4));
    // The object is still there (grace period): the exemption does not come back.
    std::thread::sleep(Duration::from_millis(500));
    assert_refused(&pod_curl(&c, Some(POD2_V4), API_V4, API_PORT), "still terminating");
}

#[test]
fn an_unscoped_allow_selector_is_refused_with_exit_2_and_changes_nothing() {
    if !can_run() {
        return;
    }
    let c = Cluster::new("unscoped");
    c.api.set_endpoint_slice("kubernetes", &[API_V4], API_PORT);
    GuardPolicy::new(
        Backend::Nftables,
        "tunnel",
        &[CONTAINER_CIDR_V4],
        &[&endpoint(API_V4, Some(API_PORT))],
    )
    .apply_ok(&c.topo.node);
    let before = firewall_snapshot(&c.topo.node);
    let unscoped = format!("{}={}", ALLOW_LABEL.0, ALLOW_LABEL.1);
    let kc = c.kubeconfig.display().to_string();
    let one_shot = |config: &str, extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = ["apply", "--config", config, "--backend", "nftables", "--mode", "tunnel"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.extend(
            [
                "--container-cidr",
                CONTAINER_CIDR_V4,
                "--apiserver",
                "auto",
                "--kubeconfig",
                &kc,
            ]
            .map(String::from),
        );
        a.extend(["--node-name", NODE].map(String::from));
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let file = c.dir.join("unscoped.toml");
    std::fs::write(
        &file,
        format!("allow_pods = [\"monitoring/app=prom\", \"{unscoped}\"]\n"),
    )
    .unwrap();
    let runs = [
        (
            "apply --allow-pods",
            one_shot(empty_config(), &["--allow-pods", &unscoped]),
        ),
        (
            "apply allow_pods in the file",
            one_shot(&file.display().to_string(), &[]),
        ),
        (
            "run --allow-pods",
            c.daemon_args(
                Backend::Nftables,
                &[
                    "--apiserver",
                    "auto",
                    "--container-cidr",
                    CONTAINER_CIDR_V4,
                    "--allow-pods",
                    &unscoped,
                ],
            ),
        ),
    ];
    for (what, args) in runs {
        let r = run_guard(&c.topo.node, &args);
        r.expect_code(2, what);
        let scoped_form = format!("monitoring/{unscoped}");
        assert!(
            r.stderr.contains("NAMESPACE/SELECTOR") && r.stderr.contains(&scoped_form),
            "{what}: {}",
            r.stderr
        );
        assert_same_snapshot(&before, &firewall_snapshot(&c.topo.node), what);
    }
    assert_refused(&pod_curl(&c, Some(POD2_V4), API_V4, API_PORT), "the block is as it was");
}
