//! Removes the start-up taint from this node (`--node-taint`), by a JSON
//! patch that tests the taint is still where it was read, so a concurrent
//! change makes the patch fail (and be retried) instead of removing another taint.

use super::extract::{taint_index, taint_removal_patch};
use k8s_openapi::api::core::v1::Node;
use kube::{Api, Client};

/// Outcome of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    Removed,
    /// The node did not carry the taint (registered without it, or removed before).
    Absent,
}

/// One attempt: read the node, patch the taint away if present.
pub async fn remove(client: &Client, node: &str, key: &str) -> Result<Removal, String> {
    let api: Api<Node> = Api::all(client.clone());
    let n = api
        .get(node)
        .await
        .map_err(|e| format!("cannot read node {node}: {e}"))?;
    let Some(index) = taint_index(&n, key) else {
        return Ok(Removal::Absent);
    };
    let body = serde_json::to_vec(&taint_removal_patch(index, key)).map_err(|e| e.to_string())?;
    let req = http::Request::patch(format!("/api/v1/nodes/{node}"))
        .header(http::header::CONTENT_TYPE, "application/json-patch+json")
        .body(body)
        .map_err(|e| e.to_string())?;
    client
        .request::<Node>(req)
        .await
        .map_err(|e| format!("cannot patch node {node}: {e}"))?;
    Ok(Removal::Removed)
}
