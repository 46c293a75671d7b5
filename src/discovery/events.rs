//! Writes the Events `event_book` decides on: a core/v1 Event created in
//! the pod's namespace, or its count, lastTimestamp and message patched (a
//! JSON merge patch). Each call is bounded in time; the outcome goes back to
//! the book, and failures are told in plain words (status code, reason and
//! the apiserver's message).

use super::event_book::{Outcome, Write};
use k8s_openapi::api::core::v1::Event;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use std::time::Duration;

/// Longest wait for the apiserver to answer one write.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Does one write. Err carries the outcome for the book and what went wrong.
pub async fn write(client: &Client, w: &Write) -> Result<(), (Outcome, String)> {
    let api: Api<Event> = Api::namespaced(client.clone(), &w.namespace);
    let call = async {
        if w.create {
            api.create(&PostParams::default(), &w.event).await.map(drop)
        } else {
            api.patch(&w.name, &PatchParams::default(), &Patch::Merge(&w.patch_body()))
                .await
                .map(drop)
        }
    };
    let verb = if w.create { "create" } else { "patch" };
    let what = format!("cannot {verb} Event {}/{}", w.namespace, w.name);
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(kube::Error::Api(s))) if s.code == 404 && !w.create => Err((
            Outcome::NotFound,
            format!("{what}: it is gone (expired?); the next write creates a new one"),
        )),
        Ok(Err(kube::Error::Api(s))) => Err((
            Outcome::Failed,
            format!("{what}: {} {}: {}", s.code, s.reason, s.message),
        )),
        Ok(Err(e)) => Err((Outcome::Failed, format!("{what}: {e}"))),
        Err(_) => Err((
            Outcome::Failed,
            format!(
                "{what}: the apiserver did not answer within {} s",
                CALL_TIMEOUT.as_secs()
            ),
        )),
    }
}
