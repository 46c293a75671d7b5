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
