//! The fake apiserver's state: objects keyed by (resource, namespace, name),
//! the global resourceVersion, the event history that watches replay (with
//! its compaction point), open-watch counts and the request log, behind one
//! mutex with a condition variable that is notified on every change.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;

use super::objects::{self, Resource};

/// (resource, namespace ("" for cluster-scoped), name)
pub type Key = (Resource, String, String);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Added,
    Modified,
    Deleted,
}

/// One recorded change. `object` is the object after the change (for a
/// deletion: the last state, with the deletion's resourceVersion); `prev`
/// the object before it (None for an addition).
#[derive(Clone, Debug)]
pub struct Event {
    pub rv: u64,
    pub resource: Resource,
    pub kind: EventKind,
    pub prev: Option<Value>,
    pub object: Value,
}

#[derive(Debug)]
pub struct State {
    /// Current global resourceVersion (of the last change).
    pub rv: u64,
    /// Watches from a resourceVersion below this get 410 Expired.
    pub compacted: u64,
    /// Bumped by `expire_watches`: open watches compare it to their own.
    pub expire_gen: u64,
    pub objects: BTreeMap<Key, Value>,
    /// Changes with rv > `compacted`, in order.
    pub events: Vec<Event>,
    pub open_watches: HashMap<Resource, usize>,
    pub requests: Vec<String>,
    uid_prefix: u32,
    uid_counter: u64,
}

/// The shared state and its change notification.
pub struct Store {
    state: Mutex<State>,
    changed: Condvar,
}

impl Store {
    pub fn new(uid_prefix: u32) -> Store {
        Store {
            state: Mutex::new(State {
                rv: 1,
                compacted: 1,
                expire_gen: 0,
                objects: BTreeMap::new(),
                events: Vec::new(),
                open_watches: HashMap::new(),
                requests: Vec::new(),
                uid_prefix,
                uid_counter: 0,
            }),
            changed: Condvar::new(),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wake everything waiting for a change (call after changing the state).
    pub fn notify(&self) {
        self.changed.notify_all();
    }

    /// Wait for a change, at most `timeout`.
    pub fn wait<'a>(&self, guard: MutexGuard<'a, State>, timeout: Duration) -> MutexGuard<'a, State> {
        match self.changed.wait_timeout(guard, timeout) {
            Ok((g, _)) => g,
            Err(p) => p.into_inner().0,
        }
    }

    /// Run `f` on the state, then notify waiters.
    pub fn update<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let r = f(&mut self.lock());
        self.notify();
        r
    }
}

impl State {
    /// Insert or replace an object (its metadata must name it). uid and
    /// creationTimestamp are kept from the stored version or assigned. A
    /// replacement equal to the stored object is a no-op (None, like a real
    /// no-op update); otherwise the global resourceVersion is bumped, set on
    /// the object, recorded as ADDED/MODIFIED, and returned.
    pub fn put(&mut self, resource: Resource, mut object: Value) -> Option<u64> {
        let key = key_of(resource, &object);
        let prev = self.objects.get(&key).cloned();
        let meta = &mut object["metadata"];
        match &prev {
            Some(old) => {
                for field in ["uid", "creationTimestamp", "resourceVersion"] {
                    meta[field] = old["metadata"][field].clone();
                }
                if &object == old {
                    return None;
                }
            }
            None => {
                self.uid_counter += 1;
                meta["uid"] = format!("{:08x}-0000-4000-8000-{:012x}", self.uid_prefix, self.uid_counter).into();
                meta["creationTimestamp"] = objects::now_rfc3339().into();
            }
        }
        self.rv += 1;
        objects::set_rv(&mut object, self.rv);
        self.objects.insert(key, object.clone());
        let kind = if prev.is_some() {
            EventKind::Modified
        } else {
            EventKind::Added
        };
        self.record(resource, kind, prev, object);
        Some(self.rv)
    }

    /// Delete an object; records DELETED. Returns whether it existed.
    pub fn remove(&mut self, resource: Resource, namespace: &str, name: &str) -> bool {
        let key = (resource, namespace.to_string(), name.to_string());
        let Some(prev) = self.objects.remove(&key) else {
            return false;
        };
        self.rv += 1;
        let mut last = prev.clone();
        objects::set_rv(&mut last, self.rv);
        self.record(resource, EventKind::Deleted, Some(prev), last);
        true
    }

    pub fn get(&self, resource: Resource, namespace: &str, name: &str) -> Option<&Value> {
        self.objects.get(&(resource, namespace.to_string(), name.to_string()))
    }

    /// All objects of `resource`, in (namespace, name) order.
    pub fn all(&self, resource: Resource) -> impl Iterator<Item = &Value> {
        self.objects
            .iter()
            .filter(move |(k, _)| k.0 == resource)
            .map(|(_, v)| v)
    }

    /// Forget the history: watches from before now get 410, open ones are told so.
    pub fn expire(&mut self) {
        self.compacted = self.rv;
        self.events.clear();
        self.expire_gen += 1;
    }

    fn record(&mut self, resource: Resource, kind: EventKind, prev: Option<Value>, object: Value) {
        self.events.push(Event {
            rv: self.rv,
            resource,
            kind,
            prev,
            object,
        });
    }
}

fn key_of(resource: Resource, object: &Value) -> Key {
    let meta = &object["metadata"];
    let name = meta["name"].as_str().expect("object without metadata.name");
    let ns = if resource.namespaced() {
        meta["namespace"]
            .as_str()
            .expect("namespaced object without metadata.namespace")
    } else {
        ""
    };
    (resource, ns.to_string(), name.to_string())
}
