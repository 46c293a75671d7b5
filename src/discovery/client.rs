//! The Kubernetes client: from `--kubeconfig`, in a pod from the
//! service-account token, else from the kubelet's kubeconfig; and the
//! kubeconfig's own `server:` address, resolved, which is blocked too.

use crate::core::address::Endpoint;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The kubeconfig used outside a pod when none is named (kubeadm's kubelet).
pub const KUBELET_KUBECONFIG: &str = "/etc/kubernetes/kubelet.conf";

/// Where the client's configuration comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Kubeconfig(PathBuf),
    InCluster,
}

/// `--kubeconfig` if given; in a pod (KUBERNETES_SERVICE_HOST set) the
/// mounted service-account token; else the kubelet's kubeconfig.
pub fn choose(named: Option<&Path>, in_pod: bool) -> Source {
    match named {
        Some(p) => Source::Kubeconfig(p.to_path_buf()),
        None if in_pod => Source::InCluster,
        None => Source::Kubeconfig(PathBuf::from(KUBELET_KUBECONFIG)),
    }
}

/// Where a pod's mounted service-account token lives.
pub const SERVICE_ACCOUNT_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// Whether the client's configuration can be read at all (a file that
/// exists, is readable and is a kubeconfig; in a pod, the token), so a
/// configuration mistake is told apart from an apiserver that does not answer.
pub fn check_source(source: &Source) -> Result<(), String> {
    let (path, what) = match source {
        Source::Kubeconfig(p) => (p.as_path(), "kubeconfig"),
        Source::InCluster => (Path::new(SERVICE_ACCOUNT_TOKEN), "service-account token"),
    };
    let shown = path.display();
    if path.is_dir() {
        return Err(format!("{shown} is a directory, not a {what}"));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read the {what} {shown}: {e}"))?;
    if let Source::Kubeconfig(_) = source {
        Kubeconfig::from_yaml(&text).map_err(|e| format!("{shown} is not a valid kubeconfig: {e}"))?;
    }
    Ok(())
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Kubeconfig(p) => write!(f, "kubeconfig {}", p.display()),
            Source::InCluster => write!(f, "in-cluster service account"),
        }
    }
}

/// Builds the client; returns it with the server URL it talks to.
pub async fn connect(source: &Source) -> Result<(Client, http::Uri), String> {
    let mut config = match source {
        Source::Kubeconfig(path) => {
            let kc = Kubeconfig::read_from(path).map_err(|e| format!("{source}: {e}"))?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| format!("{source}: {e}"))?
        }
        Source::InCluster => Config::incluster().map_err(|e| format!("{source}: {e}"))?,
    };
    // Notice a vanished apiserver quickly; the watches themselves are long-lived.
    config.connect_timeout = Some(Duration::from_secs(5));
    let url = config.cluster_url.clone();
    let client = Client::try_from(config).map_err(|e| format!("{source}: {e}"))?;
    Ok((client, url))
}

/// Host and port of a server URL (IPv6 brackets removed; 443 by default).
pub fn host_port(url: &http::Uri) -> Option<(String, u16)> {
    let host = url.host()?.trim_start_matches('[').trim_end_matches(']').to_string();
    Some((host, url.port_u16().unwrap_or(443)))
}

/// The server's addresses as endpoints; loopback left out (a pod cannot
/// reach the node's loopback, and blocking it is meaningless).
pub async fn server_endpoints(url: &http::Uri) -> Result<Vec<Endpoint>, String> {
    let (host, port) = host_port(url).ok_or_else(|| format!("server URL {url} has no host"))?;
    let addrs = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot resolve the kubeconfig server {host}: {e}"))?;
    let mut out: Vec<Endpoint> = addrs
        .filter(|a| !a.ip().is_loopback())
        .map(|a| Endpoint {
            ip: a.ip(),
            port: Some(a.port()),
        })
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_is_named_then_in_pod_then_kubelet() {
        assert_eq!(
            choose(Some(Path::new("/x")), true),
            Source::Kubeconfig(PathBuf::from("/x"))
        );
        assert_eq!(choose(None, true), Source::InCluster);
        assert_eq!(
            choose(None, false),
            Source::Kubeconfig(PathBuf::from(KUBELET_KUBECONFIG))
        );
    }

    #[test]
    fn unreadable_kubeconfigs_are_told_apart() {
        let e = check_source(&Source::Kubeconfig("/nonexistent/kubeconfig".into())).unwrap_err();
        assert!(e.contains("cannot read the kubeconfig /nonexistent/kubeconfig"), "{e}");
        let e = check_source(&Source::Kubeconfig("/".into())).unwrap_err();
        assert!(e.contains("is a directory"), "{e}");
        let dir = std::env::temp_dir().join(format!("ag-kc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bad = dir.join("bad");
        std::fs::write(&bad, "clusters: 7\n").unwrap();
        let e = check_source(&Source::Kubeconfig(bad.clone())).unwrap_err();
        assert!(e.contains("not a valid kubeconfig"), "{e}");
        let good = dir.join("good");
        std::fs::write(&good, "apiVersion: v1\nkind: Config\nclusters: []\n").unwrap();
        check_source(&Source::Kubeconfig(good)).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn host_port_handles_ipv6_and_default_port() {
        let u: http::Uri = "https://[fd00::1]:6443".parse().unwrap();
        assert_eq!(host_port(&u), Some(("fd00::1".into(), 6443)));
        let u: http::Uri = "https://api.example".parse().unwrap();
        assert_eq!(host_port(&u), Some(("api.example".into(), 443)));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn server_endpoints_resolve_and_skip_loopback() {
        let u: http::Uri = "https://192.168.0.5:6443".parse().unwrap();
        assert_eq!(server_endpoints(&u).await.unwrap().len(), 1);
        let u: http::Uri = "https://127.0.0.1:6443".parse().unwrap();
        assert!(server_endpoints(&u).await.unwrap().is_empty());
        let u: http::Uri = "https://localhost:6443".parse().unwrap();
        assert!(server_endpoints(&u).await.unwrap().is_empty());
    }
}
