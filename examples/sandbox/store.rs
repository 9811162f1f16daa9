//! The generic in-memory object store: every object is kept as the JSON bytes it is served as
//! (serialized once per write), plus the parsed metadata that listing, selectors, garbage
//! collection and metadata-only responses need. One global resourceVersion counter, as etcd.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Map, Value, json};

use crate::resources::{RESOURCES, Resource};
use crate::selector::Selector;

/// How many watch events are retained for watches resuming from a resourceVersion.
const HISTORY: usize = 20_000;
/// Continue tokens older than this answer 410 Expired, like a compacted etcd.
pub const CONTINUE_TTL_SECS: i64 = 300;

/// An API error, rendered as a `Status` object.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }
    fn with_details(mut self, res: &Resource, name: &str) -> Self {
        self.details = Some(json!({"name": name, "group": res.group, "kind": res.plural}));
        self
    }
    pub fn not_found(res: &Resource, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{}\" not found", res.qualified(), name),
        )
        .with_details(res, name)
    }
    pub fn already_exists(res: &Resource, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{}\" already exists", res.qualified(), name),
        )
        .with_details(res, name)
    }
    pub fn conflict(res: &Resource, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
                res.qualified(),
                name
            ),
        )
        .with_details(res, name)
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }
    pub fn invalid(res: &Resource, name: &str, message: &str) -> Self {
        Self::new(
            422,
            "Invalid",
            format!(
                "{}.{} \"{}\" is invalid: {}",
                res.kind, res.group, name, message
            ),
        )
        .with_details(res, name)
    }
    pub fn expired_continue() -> Self {
        Self::new(
            410,
            "Expired",
            "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
        )
    }
    pub fn not_found_path() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }
    pub fn status_value(&self) -> Value {
        let mut v = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code,
        });
        if let Some(d) = &self.details {
            v["details"] = d.clone();
        }
        v
    }
    pub fn status_json(&self) -> Vec<u8> {
        serde_json::to_vec(&self.status_value()).unwrap_or_default()
    }
}

/// One stored object. Cloning is cheap: the bytes and metadata are shared.
#[derive(Clone)]
pub struct Obj {
    pub res: usize,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub rv: u64,
    pub created: jiff::Timestamp,
    pub bytes: Arc<Vec<u8>>,
    pub meta: Arc<Value>,
    /// Printer-column cells (without Name and Age), precomputed for Table responses.
    pub cells: Arc<Vec<Value>>,
}

impl Obj {
    pub fn parse(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or(Value::Null)
    }
    pub fn labels(&self) -> Option<&Map<String, Value>> {
        self.meta.get("labels").and_then(Value::as_object)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

#[derive(Clone)]
pub struct Event {
    pub rv: u64,
    pub typ: EventType,
    pub obj: Obj,
}

type Key = (String, String);

/// A placeholder string value and the pre-serialized JSON that replaces it in the stored bytes,
/// so generated reports sharing an image's findings serialize them only once.
pub type Splice<'a> = Option<(&'a str, &'a [u8])>;

struct Inner {
    rv: u64,
    tables: Vec<BTreeMap<Key, Obj>>,
    events: VecDeque<Event>,
    /// Every event with rv > floor is in `events`; watching from below answers 410.
    history_floor: u64,
    /// Continue tokens minted before this rv are expired.
    compacted_rv: u64,
    recording: bool,
    uid_state: u64,
}

pub struct Store {
    inner: Mutex<Inner>,
    changed: Condvar,
}

pub enum PatchKind {
    Merge,
    Apply,
}

pub struct ListQuery {
    pub namespace: Option<String>,
    pub selector: Selector,
    pub field_name: Option<(String, bool)>,
    pub field_namespace: Option<(String, bool)>,
    pub limit: usize,
    pub continue_token: Option<String>,
}

pub struct Page {
    pub items: Vec<Obj>,
    pub rv: u64,
    pub continue_token: Option<String>,
    pub remaining: Option<u64>,
}

pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub fn uuid_from(state: &mut u64) -> String {
    let a = splitmix64(state);
    let b = splitmix64(state);
    let a = (a & 0xFFFF_FFFF_FFFF_0FFF) | 0x4000; // version 4
    let b = (b & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000; // variant
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xFFFF,
        a & 0xFFFF,
        b >> 48,
        b & 0xFFFF_FFFF_FFFF
    )
}

pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_string()
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    if let Value::Object(p) = patch {
        if !target.is_object() {
            *target = Value::Object(Map::new());
        }
        let t = target.as_object_mut().expect("just made an object");
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    } else {
        *target = patch.clone();
    }
}

fn lookup<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

/// The parts of an object that count for `metadata.generation`: everything but metadata/status.
fn spec_part(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
        m.remove("apiVersion");
        m.remove("kind");
    }
    v
}

fn obj_name(v: &Value) -> Option<String> {
    v.get("metadata")?
        .get("name")?
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    rv: u64,
    ns: String,
    name: String,
    t: i64,
}

impl Store {
    pub fn new(seed: u64) -> Self {
        Store {
            inner: Mutex::new(Inner {
                rv: 1,
                tables: RESOURCES.iter().map(|_| BTreeMap::new()).collect(),
                events: VecDeque::new(),
                history_floor: 0,
                compacted_rv: 0,
                recording: false,
                uid_state: seed,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Called once loading is done: from now on writes are recorded as watch events.
    pub fn start_recording(&self) {
        let mut g = self.lock();
        g.recording = true;
        g.history_floor = g.rv;
    }

    /// Expires every continue token handed out so far and the watch history (as an etcd compaction).
    pub fn compact(&self) {
        let mut g = self.lock();
        g.compacted_rv = g.rv + 1;
        g.history_floor = g.rv;
        g.events.clear();
    }

    /// Lists at a resourceVersion below this answer 410 (history compacted away).
    pub fn compacted_rv(&self) -> u64 {
        self.lock().compacted_rv
    }

    pub fn current_rv(&self) -> u64 {
        self.lock().rv
    }

    pub fn get(&self, res: usize, ns: &str, name: &str) -> Result<Obj, ApiError> {
        let g = self.lock();
        g.tables[res]
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
            .ok_or_else(|| ApiError::not_found(&RESOURCES[res], name))
    }

    pub fn create(&self, res: usize, ns: &str, obj: Value) -> Result<Obj, ApiError> {
        let r = self.lock().create(res, ns, obj, None);
        self.changed.notify_all();
        r
    }

    /// PUT: replace an existing object; a stale resourceVersion is a 409.
    pub fn replace(&self, res: usize, ns: &str, name: &str, obj: Value) -> Result<Obj, ApiError> {
        let mut g = self.lock();
        let r = &RESOURCES[res];
        if obj_name(&obj).is_some_and(|n| n != name) {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({})",
                obj_name(&obj).unwrap_or_default(),
                name
            )));
        }
        let old = g.tables[res]
            .get(&(ns.to_string(), name.to_string()))
            .cloned();
        let Some(old) = old else {
            return Err(ApiError::not_found(r, name));
        };
        let want_rv = obj
            .get("metadata")
            .and_then(|m| m.get("resourceVersion"))
            .and_then(Value::as_str);
        if let Some(want) = want_rv
            && !want.is_empty()
            && want != old.rv.to_string()
        {
            return Err(ApiError::conflict(r, name));
        }
        let r = g.commit(res, ns, obj, Some(&old), None);
        drop(g);
        self.changed.notify_all();
        r
    }

    pub fn patch(
        &self,
        res: usize,
        ns: &str,
        name: &str,
        patch: &Value,
        kind: PatchKind,
    ) -> Result<(Obj, bool), ApiError> {
        let mut g = self.lock();
        let r = &RESOURCES[res];
        let old = g.tables[res]
            .get(&(ns.to_string(), name.to_string()))
            .cloned();
        match old {
            None => match kind {
                PatchKind::Merge => Err(ApiError::not_found(r, name)),
                PatchKind::Apply => {
                    let mut obj = patch.clone();
                    if obj_name(&obj).is_none() {
                        merge_patch(&mut obj, &json!({"metadata": {"name": name}}));
                    }
                    let r = g.create(res, ns, obj, None).map(|o| (o, true));
                    drop(g);
                    self.changed.notify_all();
                    r
                }
            },
            Some(old) => {
                let mut cur = old.parse();
                if let Some(want) = patch
                    .get("metadata")
                    .and_then(|m| m.get("resourceVersion"))
                    .and_then(Value::as_str)
                    && !want.is_empty()
                    && want != old.rv.to_string()
                {
                    return Err(ApiError::conflict(r, name));
                }
                merge_patch(&mut cur, patch);
                let r = g.commit(res, ns, cur, Some(&old), None).map(|o| (o, false));
                drop(g);
                self.changed.notify_all();
                r
            }
        }
    }

    /// Deletes an object and, as the garbage collector does, everything it owns (recursively).
    pub fn delete(
        &self,
        res: usize,
        ns: &str,
        name: &str,
        preconditions: Option<&Value>,
        orphan: bool,
    ) -> Result<Obj, ApiError> {
        let mut g = self.lock();
        let r = &RESOURCES[res];
        let Some(obj) = g.tables[res]
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
        else {
            return Err(ApiError::not_found(r, name));
        };
        if let Some(p) = preconditions {
            let uid_ok = p
                .get("uid")
                .and_then(Value::as_str)
                .is_none_or(|u| u == obj.uid);
            let rv_ok = p
                .get("resourceVersion")
                .and_then(Value::as_str)
                .is_none_or(|v| v == obj.rv.to_string());
            if !uid_ok || !rv_ok {
                return Err(ApiError::conflict(r, name));
            }
        }
        let mut doomed: Vec<(usize, Key)> = vec![(res, (ns.to_string(), name.to_string()))];
        let mut uids: Vec<String> = vec![obj.uid.clone()];
        if r.kind == "Namespace" {
            for (i, t) in g.tables.iter().enumerate() {
                if RESOURCES[i].namespaced {
                    doomed.extend(t.keys().filter(|k| k.0 == name).map(|k| (i, k.clone())));
                }
            }
        }
        // Garbage collection: index owner uid -> dependents once, then follow it breadth-first.
        if !orphan {
            let mut dependents: std::collections::HashMap<String, Vec<(usize, Key, String)>> =
                std::collections::HashMap::new();
            for (ti, t) in g.tables.iter().enumerate() {
                for (k, o) in t {
                    let refs = o.meta.get("ownerReferences").and_then(Value::as_array);
                    for owner in refs
                        .into_iter()
                        .flatten()
                        .filter_map(|r| r.get("uid").and_then(Value::as_str))
                    {
                        dependents.entry(owner.to_string()).or_default().push((
                            ti,
                            k.clone(),
                            o.uid.clone(),
                        ));
                    }
                }
            }
            let mut seen: std::collections::HashSet<String> = uids.iter().cloned().collect();
            let mut i = 0;
            while i < uids.len() {
                for (ti, k, uid) in dependents.get(&uids[i]).into_iter().flatten() {
                    if seen.insert(uid.clone()) {
                        uids.push(uid.clone());
                        doomed.push((*ti, k.clone()));
                    }
                }
                i += 1;
            }
        }
        let mut first = None;
        for (ti, k) in doomed {
            if let Some(o) = g.tables[ti].remove(&k) {
                g.rv += 1;
                let rv = g.rv;
                let gone = with_rv(&o, rv);
                g.record(EventType::Deleted, gone.clone());
                if first.is_none() {
                    first = Some(gone);
                }
            }
        }
        self.changed.notify_all();
        first.ok_or_else(|| ApiError::not_found(r, name))
    }

    pub fn list(&self, res: usize, q: &ListQuery) -> Result<Page, ApiError> {
        let g = self.lock();
        let (list_rv, start) = match &q.continue_token {
            Some(tok) => {
                let t = decode_token(tok)
                    .ok_or_else(|| ApiError::bad_request("continue key is not valid"))?;
                let age = jiff::Timestamp::now().as_second() - t.t;
                if t.rv < g.compacted_rv || age > CONTINUE_TTL_SECS {
                    return Err(ApiError::expired_continue());
                }
                (t.rv, Some((t.ns, t.name)))
            }
            None => (g.rv, None),
        };
        let table = &g.tables[res];
        let lower = match (&start, &q.namespace) {
            (Some(k), Some(ns)) if k.0 < *ns => Bound::Included((ns.clone(), String::new())),
            (Some(k), _) => Bound::Excluded(k.clone()),
            (None, Some(ns)) => Bound::Included((ns.clone(), String::new())),
            (None, None) => Bound::Unbounded,
        };
        let matches = |k: &Key, o: &Obj| -> bool {
            if let Some((v, eq)) = &q.field_name
                && ((&k.1 == v) != *eq)
            {
                return false;
            }
            if let Some((v, eq)) = &q.field_namespace
                && ((&k.0 == v) != *eq)
            {
                return false;
            }
            q.selector.matches(o.labels())
        };
        let mut iter = table
            .range((lower, Bound::Unbounded))
            .take_while(|(k, _)| q.namespace.as_ref().is_none_or(|ns| &k.0 == ns))
            .filter(|(k, o)| matches(k, o));
        let mut items = Vec::new();
        let mut last: Option<Key> = None;
        for (k, o) in iter.by_ref() {
            items.push(o.clone());
            last = Some(k.clone());
            if q.limit > 0 && items.len() >= q.limit {
                break;
            }
        }
        let mut continue_token = None;
        let mut remaining = None;
        if q.limit > 0 && items.len() >= q.limit {
            let rest = iter.count() as u64;
            if rest > 0 {
                let (ns, name) = last.unwrap_or_default();
                continue_token = Some(encode_token(&ContinueToken {
                    rv: list_rv,
                    ns,
                    name,
                    t: jiff::Timestamp::now().as_second(),
                }));
                remaining = Some(rest);
            }
        }
        Ok(Page {
            items,
            rv: list_rv.max(1),
            continue_token,
            remaining,
        })
    }

    /// Snapshot for a watch without a resourceVersion: all current objects plus the rv to follow from.
    pub fn snapshot(&self, res: usize, ns: Option<&str>) -> (Vec<Obj>, u64) {
        let g = self.lock();
        let items = g.tables[res]
            .iter()
            .filter(|(k, _)| ns.is_none_or(|ns| k.0 == ns))
            .map(|(_, o)| o.clone())
            .collect();
        (items, g.rv)
    }

    /// Events after `after_rv` for resource `res`, waiting up to `wait` for one to arrive.
    /// `Err(floor)` means `after_rv` is older than the retained history (410).
    pub fn events_after(
        &self,
        res: usize,
        after_rv: u64,
        wait: Duration,
    ) -> Result<(Vec<Event>, u64), u64> {
        let mut g = self.lock();
        if after_rv < g.history_floor {
            return Err(g.history_floor);
        }
        if g.rv <= after_rv {
            g = self
                .changed
                .wait_timeout(g, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            if after_rv < g.history_floor {
                return Err(g.history_floor);
            }
        }
        let evs: Vec<Event> = g
            .events
            .iter()
            .filter(|e| e.rv > after_rv && e.obj.res == res)
            .cloned()
            .collect();
        Ok((evs, g.rv))
    }

    /// Bulk insert of a new object whose bytes get `splice` applied (see [`Splice`]).
    pub fn insert_spliced(
        &self,
        res: usize,
        ns: &str,
        obj: Value,
        splice: Splice,
    ) -> Result<Obj, ApiError> {
        self.lock().create(res, ns, obj, splice)
    }

    /// Bulk insert used by the loaders; records no watch events.
    pub fn insert_loaded(&self, res: usize, ns: &str, obj: Value) -> Result<Obj, ApiError> {
        let mut g = self.lock();
        let name = obj_name(&obj).unwrap_or_default();
        let old = g.tables[res].get(&(ns.to_string(), name)).cloned();
        match old {
            Some(old) => g.commit(res, ns, obj, Some(&old), None),
            None => g.create(res, ns, obj, None),
        }
    }
}

/// The object as deleted at `rv`: DELETED events carry the deletion's resourceVersion, so a
/// client resuming a watch from it does not replay the event. The stored bytes are patched in
/// place (serde_json writes object keys sorted, so `metadata` precedes any body field).
fn with_rv(o: &Obj, rv: u64) -> Obj {
    let mut meta = (*o.meta).clone();
    meta["resourceVersion"] = Value::String(rv.to_string());
    let old = format!("\"resourceVersion\":\"{}\"", o.rv);
    let new = format!("\"resourceVersion\":\"{rv}\"");
    let bytes = match o.bytes.windows(old.len()).position(|w| w == old.as_bytes()) {
        Some(at) => {
            let mut b = Vec::with_capacity(o.bytes.len() + new.len());
            b.extend_from_slice(&o.bytes[..at]);
            b.extend_from_slice(new.as_bytes());
            b.extend_from_slice(&o.bytes[at + old.len()..]);
            b
        }
        None => {
            let mut v = o.parse();
            v["metadata"]["resourceVersion"] = Value::String(rv.to_string());
            serde_json::to_vec(&v).unwrap_or_default()
        }
    };
    Obj {
        rv,
        bytes: Arc::new(bytes),
        meta: Arc::new(meta),
        ..o.clone()
    }
}

fn encode_token(t: &ContinueToken) -> String {
    base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(t).unwrap_or_default())
}

fn decode_token(s: &str) -> Option<ContinueToken> {
    let b = base64::engine::general_purpose::STANDARD
        .decode(s)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(s))
        .ok()?;
    serde_json::from_slice(&b).ok()
}

impl Inner {
    fn record(&mut self, typ: EventType, obj: Obj) {
        if !self.recording {
            return;
        }
        self.events.push_back(Event {
            rv: self.rv,
            typ,
            obj,
        });
        while self.events.len() > HISTORY {
            if let Some(e) = self.events.pop_front() {
                self.history_floor = e.rv;
            }
        }
    }

    fn create(
        &mut self,
        res: usize,
        ns: &str,
        mut obj: Value,
        splice: Splice,
    ) -> Result<Obj, ApiError> {
        let r = &RESOURCES[res];
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the request body is not a JSON object",
            ));
        }
        let name = match obj_name(&obj) {
            Some(n) => n,
            None => {
                let gen_name = obj
                    .get("metadata")
                    .and_then(|m| m.get("generateName"))
                    .and_then(Value::as_str);
                match gen_name {
                    Some(prefix) if !prefix.is_empty() => {
                        let suffix: String = format!("{:x}", splitmix64(&mut self.uid_state))
                            .chars()
                            .take(5)
                            .collect();
                        let n = format!("{prefix}{suffix}");
                        obj["metadata"]["name"] = Value::String(n.clone());
                        n
                    }
                    _ => {
                        return Err(ApiError::invalid(
                            r,
                            "",
                            "metadata.name: Required value: name or generateName is required",
                        ));
                    }
                }
            }
        };
        if self.tables[res].contains_key(&(ns.to_string(), name.clone())) {
            return Err(ApiError::already_exists(r, &name));
        }
        self.commit(res, ns, obj, None, splice)
    }

    /// Stamps server-owned metadata, serializes once and stores.
    fn commit(
        &mut self,
        res: usize,
        ns: &str,
        mut obj: Value,
        old: Option<&Obj>,
        splice: Splice,
    ) -> Result<Obj, ApiError> {
        let r = &RESOURCES[res];
        let name = obj_name(&obj).unwrap_or_default();
        if !obj.get("metadata").is_some_and(Value::is_object) {
            return Err(ApiError::invalid(r, &name, "metadata: Required value"));
        }
        if let Some(body_ns) = obj["metadata"].get("namespace").and_then(Value::as_str)
            && r.namespaced
            && !body_ns.is_empty()
            && body_ns != ns
        {
            return Err(ApiError::bad_request(format!(
                "the namespace of the provided object ({body_ns}) does not match the namespace sent on the request ({ns})"
            )));
        }
        if let Some(ak) = obj.get("kind").and_then(Value::as_str)
            && ak != r.kind
        {
            return Err(ApiError::bad_request(format!(
                "kind {ak} does not match the resource {}",
                r.qualified()
            )));
        }
        self.rv += 1;
        let rv = self.rv;
        let (uid, created, generation) = match old {
            Some(o) => {
                let old_v = o.parse();
                let gen_old = old_v["metadata"]["generation"].as_i64().unwrap_or(1);
                let generation = if spec_part(&old_v) == spec_part(&obj) {
                    gen_old
                } else {
                    gen_old + 1
                };
                (
                    o.uid.clone(),
                    old_v["metadata"]["creationTimestamp"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                    generation,
                )
            }
            None => {
                let uid = obj["metadata"]
                    .get("uid")
                    .and_then(Value::as_str)
                    .filter(|u| !u.is_empty())
                    .map(str::to_string)
                    .unwrap_or_else(|| uuid_from(&mut self.uid_state));
                let created = obj["metadata"]
                    .get("creationTimestamp")
                    .and_then(Value::as_str)
                    .filter(|s| s.parse::<jiff::Timestamp>().is_ok())
                    .map(str::to_string)
                    .unwrap_or_else(now_rfc3339);
                (uid, created, 1)
            }
        };
        let m = obj["metadata"].as_object_mut().expect("checked above");
        m.insert("uid".into(), Value::String(uid.clone()));
        m.insert("resourceVersion".into(), Value::String(rv.to_string()));
        m.insert("creationTimestamp".into(), Value::String(created.clone()));
        m.insert("generation".into(), json!(generation));
        if r.namespaced {
            m.insert("namespace".into(), Value::String(ns.to_string()));
        } else {
            m.remove("namespace");
        }
        m.remove("deletionTimestamp");
        m.remove("selfLink");
        let meta = Value::Object(m.clone());
        let body = obj.as_object_mut().expect("checked above");
        // apiVersion and kind first, as the API server prints them.
        let mut ordered = Map::new();
        ordered.insert("apiVersion".into(), Value::String(r.api_version()));
        ordered.insert("kind".into(), Value::String(r.kind.to_string()));
        for (k, v) in std::mem::take(body) {
            if k != "apiVersion" && k != "kind" {
                ordered.insert(k, v);
            }
        }
        let obj = Value::Object(ordered);
        let cells = r
            .columns
            .iter()
            .filter(|c| !c.path.is_empty())
            .map(|c| lookup(&obj, c.path).cloned().unwrap_or(Value::Null))
            .collect();
        let mut bytes = serde_json::to_vec(&obj)
            .map_err(|e| ApiError::new(500, "InternalError", e.to_string()))?;
        if let Some((placeholder, raw)) = splice {
            let needle = serde_json::to_vec(placeholder).unwrap_or_default();
            if let Some(at) = bytes
                .windows(needle.len())
                .position(|w| w == needle.as_slice())
            {
                let mut out = Vec::with_capacity(bytes.len() + raw.len());
                out.extend_from_slice(&bytes[..at]);
                out.extend_from_slice(raw);
                out.extend_from_slice(&bytes[at + needle.len()..]);
                bytes = out;
            }
        }
        let stored = Obj {
            res,
            namespace: if r.namespaced {
                ns.to_string()
            } else {
                String::new()
            },
            name: name.clone(),
            uid,
            rv,
            created: created.parse().unwrap_or(jiff::Timestamp::UNIX_EPOCH),
            bytes: Arc::new(bytes),
            meta: Arc::new(meta),
            cells: Arc::new(cells),
        };
        let key = (stored.namespace.clone(), name);
        let typ = if old.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.tables[res].insert(key, stored.clone());
        self.record(typ, stored.clone());
        Ok(stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;

    fn vr(name: &str, labels: Value) -> Value {
        json!({"apiVersion":"aquasecurity.github.io/v1alpha1","kind":"VulnerabilityReport",
            "metadata":{"name": name, "labels": labels},"report":{"summary":{"criticalCount":1}}})
    }

    fn q(ns: Option<&str>, limit: usize, cont: Option<String>) -> ListQuery {
        ListQuery {
            namespace: ns.map(str::to_string),
            selector: Selector::default(),
            field_name: None,
            field_namespace: None,
            limit,
            continue_token: cont,
        }
    }

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let cases = [
            (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            (
                json!({"a": "b"}),
                json!({"b": "c"}),
                json!({"a": "b", "b": "c"}),
            ),
            (json!({"a": "b"}), json!({"a": null}), json!({})),
            (json!({"a": [1, 2]}), json!({"a": [3]}), json!({"a": [3]})),
            (
                json!({"a": {"b": "c"}}),
                json!({"a": {"b": "d", "c": null}}),
                json!({"a": {"b": "d"}}),
            ),
            (json!("x"), json!({"a": 1}), json!({"a": 1})),
        ];
        for (mut target, patch, want) in cases {
            merge_patch(&mut target, &patch);
            assert_eq!(target, want, "{patch}");
        }
    }

    #[test]
    fn writes_stamp_metadata_like_the_api_server() {
        let s = Store::new(1);
        let res = find("aquasecurity.github.io", "v1alpha1", "vulnerabilityreports").unwrap();
        let a = s.create(res, "ns", vr("a", json!({}))).unwrap();
        let meta = a.parse()["metadata"].clone();
        assert_eq!(meta["namespace"], "ns");
        assert_eq!(meta["generation"], 1);
        assert_eq!(meta["uid"].as_str().unwrap().len(), 36);
        assert!(meta["creationTimestamp"].as_str().unwrap().ends_with('Z'));
        assert_eq!(
            s.create(res, "ns", vr("a", json!({})))
                .err()
                .unwrap()
                .reason,
            "AlreadyExists"
        );
        // A label change keeps the generation, a report change bumps it; rv always moves.
        let (b, _) = s
            .patch(
                res,
                "ns",
                "a",
                &json!({"metadata":{"labels":{"x":"y"}}}),
                PatchKind::Merge,
            )
            .unwrap();
        assert_eq!(b.parse()["metadata"]["generation"], 1);
        assert!(b.rv > a.rv);
        let (c, _) = s
            .patch(
                res,
                "ns",
                "a",
                &json!({"report":{"summary":{"criticalCount":2}}}),
                PatchKind::Merge,
            )
            .unwrap();
        assert_eq!(c.parse()["metadata"]["generation"], 2);
        assert_eq!(c.uid, a.uid);
        // A stale resourceVersion on replace is a conflict.
        let mut stale = a.parse();
        stale["report"] = json!({});
        assert_eq!(s.replace(res, "ns", "a", stale).err().unwrap().code, 409);
        // Apply creates when absent.
        let (d, created) = s
            .patch(res, "ns", "new", &vr("new", json!({})), PatchKind::Apply)
            .unwrap();
        assert!(created && d.name == "new");
        assert_eq!(
            s.patch(res, "ns", "none", &json!({}), PatchKind::Merge)
                .err()
                .unwrap()
                .code,
            404
        );
    }

    #[test]
    fn pages_cover_everything_once_and_tokens_expire_on_compaction() {
        let s = Store::new(2);
        let res = find("aquasecurity.github.io", "v1alpha1", "vulnerabilityreports").unwrap();
        for ns in ["a", "b", "c"] {
            for i in 0..5 {
                s.create(res, ns, vr(&format!("r{i}"), json!({}))).unwrap();
            }
        }
        for (ns, limit, want) in [
            (None, 4, 15),
            (Some("b"), 2, 5),
            (None, 0, 15),
            (Some("zz"), 3, 0),
        ] {
            let mut seen = Vec::new();
            let mut cont = None;
            loop {
                let page = s.list(res, &q(ns, limit, cont)).unwrap();
                assert!(limit == 0 || page.items.len() <= limit);
                seen.extend(
                    page.items
                        .iter()
                        .map(|o| (o.namespace.clone(), o.name.clone())),
                );
                cont = page.continue_token;
                if cont.is_none() {
                    break;
                }
            }
            let n = seen.len();
            seen.dedup();
            assert_eq!((n, seen.len()), (want, want), "{ns:?} limit {limit}");
        }
        let page = s.list(res, &q(None, 2, None)).unwrap();
        s.compact();
        let err = s.list(res, &q(None, 2, page.continue_token)).err().unwrap();
        assert_eq!((err.code, err.reason), (410, "Expired"));
        assert_eq!(
            s.list(res, &q(None, 2, Some("garbage".into())))
                .err()
                .unwrap()
                .code,
            400
        );
    }

    #[test]
    fn deletion_collects_dependents_recursively_unless_orphaned() {
        let s = Store::new(3);
        let deploy = find("apps", "v1", "deployments").unwrap();
        let rs = find("apps", "v1", "replicasets").unwrap();
        let res = find("aquasecurity.github.io", "v1alpha1", "vulnerabilityreports").unwrap();
        let owned = |name: &str, kind: &str, uid: &str| {
            json!({"metadata":{"name": name,
            "ownerReferences":[{"apiVersion":"apps/v1","kind": kind,"name":"x","uid": uid}]}})
        };
        let d = s
            .create(deploy, "ns", json!({"metadata":{"name":"web"}}))
            .unwrap();
        let r = s
            .create(rs, "ns", owned("web-1", "Deployment", &d.uid))
            .unwrap();
        s.create(
            res,
            "ns",
            owned("replicaset-web-1-app", "ReplicaSet", &r.uid),
        )
        .unwrap();
        s.create(res, "ns", vr("unrelated", json!({}))).unwrap();
        s.delete(deploy, "ns", "web", None, true).unwrap();
        assert!(s.get(rs, "ns", "web-1").is_ok(), "orphaned");
        s.delete(rs, "ns", "web-1", Some(&json!({"uid": "other"})), false)
            .err()
            .map(|e| assert_eq!(e.code, 409))
            .unwrap();
        s.delete(rs, "ns", "web-1", None, false).unwrap();
        assert!(s.get(res, "ns", "replicaset-web-1-app").is_err());
        assert!(s.get(res, "ns", "unrelated").is_ok());
    }

    #[test]
    fn watch_history_serves_events_after_a_resource_version() {
        let s = Store::new(4);
        let res = find("coordination.k8s.io", "v1", "leases").unwrap();
        s.start_recording();
        let start = s.current_rv();
        s.create(res, "ns", json!({"metadata":{"name":"l"}}))
            .unwrap();
        s.delete(res, "ns", "l", None, false).unwrap();
        let (events, _) = s
            .events_after(res, start, Duration::from_millis(1))
            .unwrap();
        let types: Vec<_> = events.iter().map(|e| e.typ).collect();
        assert_eq!(types, [EventType::Added, EventType::Deleted]);
        assert!(events[1].rv > events[0].rv);
        assert_eq!(
            events[1].obj.parse()["metadata"]["resourceVersion"],
            events[1].rv.to_string()
        );
        s.compact();
        assert!(
            s.events_after(res, start, Duration::from_millis(1))
                .is_err(),
            "compacted history answers 410"
        );
    }
}
