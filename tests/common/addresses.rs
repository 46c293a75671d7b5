//! Addresses, prefixes and ports of the test topology (see `topology.rs`).
//!
//! Layout: `pod <-veth-> node <-veth-> api`. The pod and the node-local
//! "container" addresses live inside the container CIDRs; the apiserver
//! namespace carries both the apiserver address and an unrelated "other"
//! destination that must never be blocked.

/// Container (pod) CIDR, IPv4.
pub const CONTAINER_CIDR_V4: &str = "10.0.0.0/16";
/// Container (pod) CIDR, IPv6.
pub const CONTAINER_CIDR_V6: &str = "fd00:10::/48";

/// Pod namespace address (/24 on its veth, default route via `NODE_POD_V4`).
pub const POD_V4: &str = "10.0.1.2";
/// Second pod's address (`Topology::add_other_pod`), /24 on its own veth.
pub const OTHER_POD_V4: &str = "10.0.2.2";
/// Node namespace address facing the second pod.
pub const NODE_OTHER_POD_V4: &str = "10.0.2.1";
/// Node namespace address facing the pod.
pub const NODE_POD_V4: &str = "10.0.1.1";
/// Pod namespace address (/64, default route via `NODE_POD_V6`).
pub const POD_V6: &str = "fd00:10:0:1::2";
/// Node namespace address facing the pod, IPv6.
pub const NODE_POD_V6: &str = "fd00:10:0:1::1";

/// Node namespace address facing the apiserver (the node's own address used to reach it).
pub const NODE_API_V4: &str = "192.168.50.1";
/// Apiserver address (/24, default route via `NODE_API_V4`).
pub const API_V4: &str = "192.168.50.10";
/// Second address in the apiserver namespace: an "other destination", never blocked.
pub const OTHER_V4: &str = "192.168.50.20";
/// Node namespace address facing the apiserver, IPv6.
pub const NODE_API_V6: &str = "fd00:50::1";
/// Apiserver address, IPv6 (/64, default route via `NODE_API_V6`).
pub const API_V6: &str = "fd00:50::10";
/// "Other destination" in the apiserver namespace, IPv6.
pub const OTHER_V6: &str = "fd00:50::20";

/// Port listened on by every apiserver-namespace address, v4 and v6.
pub const API_PORT: u16 = 5443;
/// Second port listened on by every apiserver-namespace address.
pub const OTHER_PORT: u16 = 8080;

/// Extra /32 on the node namespace's `lo`, inside the container CIDR, used to
/// originate "VPC mode" traffic with a container source address locally.
pub const NODE_LOCAL_POD_V4: &str = "10.0.200.1";
/// Same as `NODE_LOCAL_POD_V4`, a /128 for IPv6.
pub const NODE_LOCAL_POD_V6: &str = "fd00:10:0:200::1";
