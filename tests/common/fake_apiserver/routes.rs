//! Request handling: bearer-token check, URL routing to the supported
//! resources, list / get / PATCH (nodes, events), POST (events) and `/version`, each answered with JSON the
//! way the apiserver does (errors as `Status` objects); watches are handed
//! back as a `Watch` for the connection to stream.

use std::time::Duration;

use serde_json::Value;

use super::http::Request;
use super::objects::{self, Resource};
use super::patch::{self, PatchError};
use super::selector::Filter;
use super::store::Store;
use super::watch::Watch;

pub enum Reply {
    Json(u16, Value),
    Watch(Watch),
}

fn error(code: u16, reason: &str, message: &str) -> Reply {
    Reply::Json(code, objects::status(code, reason, message))
}

fn bad_request(message: &str) -> Reply {
    error(400, "BadRequest", message)
}

/// What a resource URL names.
struct Target {
    resource: Resource,
    namespace: Option<String>,
    name: Option<String>,
}

fn parse_path(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let (group_version, rest) = match segs.as_slice() {
        ["api", "v1", rest @ ..] => ("v1", rest),
        ["apis", "discovery.k8s.io", "v1", rest @ ..] => ("discovery.k8s.io/v1", rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        _ => (None, rest),
    };
    let (plural, name) = match rest {
        [plural] => (*plural, None),
        [plural, name] => (*plural, Some(name.to_string())),
        _ => return None,
    };
    let resource = Resource::from_plural(plural).filter(|r| r.api_version() == group_version)?;
    let scoped_right = if resource.namespaced() {
        name.is_none() || namespace.is_some()
    } else {
        namespace.is_none()
    };
    scoped_right.then_some(Target {
        resource,
        namespace,
        name,
    })
}

/// Answer one request (recorded in the request log first).
pub fn route(req: &Request, store: &Store, token: &str) -> Reply {
    store.update(|s| s.requests.push(format!("{} {}", req.method, req.target)));
    let authorized = req
        .header("authorization")
        .and_then(|h| h.strip_prefix("Bearer "))
        .is_some_and(|t| t.trim() == token);
    if !authorized {
        return error(401, "Unauthorized", "Unauthorized");
    }
    if req.path == "/version" && req.method == "GET" {
        return Reply::Json(200, objects::version());
    }
    let Some(t) = parse_path(&req.path) else {
        return error(404, "NotFound", "the server could not find the requested resource");
    };
    match (req.method.as_str(), &t.name) {
        ("GET", None) => list_or_watch(req, store, &t),
        ("GET", Some(name)) => get(store, &t, name),
        ("PATCH", Some(name)) if matches!(t.resource, Resource::Nodes | Resource::Events) => {
            patch(req, store, &t, name)
        }
        ("POST", None) if t.resource == Resource::Events && t.namespace.is_some() => create(req, store, &t),
        _ => error(
            405,
            "MethodNotAllowed",
            &format!(
                "the server does not allow this method on the requested resource: {}",
                req.method
            ),
        ),
    }
}

fn list_or_watch(req: &Request, store: &Store, t: &Target) -> Reply {
    let filter = match Filter::new(
        t.resource,
        t.namespace.as_deref(),
        req.param("labelSelector"),
        req.param("fieldSelector"),
    ) {
        Ok(f) => f,
        Err(e) => return bad_request(&e),
    };
    if !matches!(req.param("watch"), Some("true" | "1")) {
        let st = store.lock();
        let items = st.all(t.resource).filter(|o| filter.matches(o)).cloned().collect();
        return Reply::Json(200, objects::list(t.resource, st.rv, items));
    }
    let since = match req.param("resourceVersion") {
        None | Some("" | "0") => None,
        Some(rv) => match rv.parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => return bad_request(&format!("invalid resourceVersion {rv:?}")),
        },
    };
    let timeout = match req.param("timeoutSeconds").map(str::parse::<u64>) {
        None => None,
        Some(Ok(s)) => Some(Duration::from_secs(s)),
        Some(Err(_)) => return bad_request("invalid timeoutSeconds"),
    };
    Reply::Watch(Watch {
        resource: t.resource,
        filter,
        since,
        timeout,
        bookmarks: req.param("allowWatchBookmarks") == Some("true"),
        send_initial_events: req.param("sendInitialEvents") == Some("true"),
    })
}

fn get(store: &Store, t: &Target, name: &str) -> Reply {
    let st = store.lock();
    match st.get(t.resource, t.namespace.as_deref().unwrap_or(""), name) {
        Some(obj) => Reply::Json(200, obj.clone()),
        None => Reply::Json(404, objects::not_found(t.resource, name)),
    }
}

/// POST of a new object into the namespace of the URL: named by
/// `metadata.name` (or `generateName` plus a suffix); 409 if it exists.
fn create(req: &Request, store: &Store, t: &Target) -> Reply {
    let ns = t.namespace.as_deref().unwrap_or("");
    let mut body: Value = match serde_json::from_slice(&req.body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return bad_request("the body must be an object"),
        Err(e) => return bad_request(&format!("invalid body: {e}")),
    };
    match body["metadata"]["namespace"].as_str() {
        None => body["metadata"]["namespace"] = ns.into(),
        Some(n) if n == ns => {}
        Some(n) => {
            return bad_request(&format!(
                "the namespace of the provided object ({n}) does not match the namespace sent on the request ({ns})"
            ))
        }
    }
    let mut st = store.lock();
    if body["metadata"]["name"].as_str().is_none_or(str::is_empty) {
        let Some(prefix) = body["metadata"]["generateName"].as_str().map(str::to_string) else {
            return error(
                422,
                "Invalid",
                "metadata.name: Required value: name or generateName is required",
            );
        };
        body["metadata"]["name"] = format!("{prefix}{:05x}", st.rv).into();
    }
    let name = body["metadata"]["name"].as_str().expect("named above").to_string();
    if st.get(t.resource, ns, &name).is_some() {
        return Reply::Json(409, objects::already_exists(t.resource, &name));
    }
    if req.param("dryRun").is_some() {
        return Reply::Json(201, body);
    }
    body["kind"] = t.resource.kind().into();
    body["apiVersion"] = t.resource.api_version().into();
    st.put(t.resource, body);
    let stored = st.get(t.resource, ns, &name).cloned().expect("just stored");
    drop(st);
    store.notify();
    Reply::Json(201, stored)
}

fn patch(req: &Request, store: &Store, t: &Target, name: &str) -> Reply {
    let content_type = req.header("content-type").unwrap_or("");
    let content_type = content_type.split(';').next().unwrap_or("").trim();
    let body: Value = match serde_json::from_slice(&req.body) {
        Ok(v) => v,
        Err(e) => return bad_request(&format!("invalid patch body: {e}")),
    };
    let ns = t.namespace.as_deref().unwrap_or("");
    let mut st = store.lock();
    let Some(current) = st.get(t.resource, ns, name).cloned() else {
        return Reply::Json(404, objects::not_found(t.resource, name));
    };
    let patched = match content_type {
        "application/json-patch+json" => patch::json_patch(&current, &body),
        // Strategic merge and server-side apply approximated by a merge patch.
        "application/merge-patch+json" | "application/strategic-merge-patch+json" | "application/apply-patch+yaml" => {
            let mut doc = current.clone();
            patch::merge_patch(&mut doc, &body);
            Ok(doc)
        }
        other => {
            return error(
                415,
                "UnsupportedMediaType",
                &format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {other:?})"),
            )
        }
    };
    let patched = match patched {
        Ok(p) => p,
        Err(PatchError::BadRequest(m)) => return bad_request(&m),
        Err(PatchError::Invalid(m)) => return error(422, "Invalid", &m),
    };
    for field in ["/kind", "/apiVersion", "/metadata/name", "/metadata/namespace"] {
        if patched.pointer(field) != current.pointer(field) {
            return error(422, "Invalid", &format!("{field}: field is immutable"));
        }
    }
    let wanted_rv = &patched["metadata"]["resourceVersion"];
    if !wanted_rv.is_null() && *wanted_rv != current["metadata"]["resourceVersion"] {
        return error(
            409,
            "Conflict",
            &format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your \
                 changes to the latest version and try again",
                t.resource.plural()
            ),
        );
    }
    if req.param("dryRun").is_some() {
        return Reply::Json(200, patched);
    }
    st.put(t.resource, patched);
    let stored = st.get(t.resource, ns, name).cloned().expect("just stored");
    drop(st);
    store.notify();
    Reply::Json(200, stored)
}
