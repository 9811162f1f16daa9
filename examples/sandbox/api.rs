//! Request routing and the API handlers: auth, faults, discovery, OpenAPI, CRUD, lists
//! (JSON, metadata-only, Table), watch, and the `/_sandbox/` admin endpoints.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::discovery;
use crate::faults::{Fault, FaultKind, Faults};
use crate::http::{self, Request, Response, Segment};
use crate::resources::{RESOURCES, Resource};
use crate::selector::Selector;
use crate::store::{ApiError, ListQuery, Obj, PatchKind, Store};

pub struct State {
    pub store: Store,
    pub tokens: RwLock<Tokens>,
    pub faults: Faults,
    pub stats: Mutex<BTreeMap<(String, String, String), u64>>,
    pub server_addr: String,
    pub shutdown: AtomicBool,
    /// Gzip large answers to clients sending `Accept-Encoding: gzip`, as the API server does.
    pub gzip: bool,
    /// Resources (`plural.group`, or the plural for the core group) every token is refused,
    /// as when RBAC grants nothing on them: set with `POST /_sandbox/forbidden`.
    pub forbidden: RwLock<HashSet<String>>,
}

/// Accepted bearer tokens: full access, or access limited to some namespaces (as a RoleBinding
/// per namespace grants), so namespace-scoped RBAC can be exercised.
#[derive(Default)]
pub struct Tokens {
    pub full: HashSet<String>,
    pub namespaced: HashMap<String, Vec<String>>,
}

enum Access {
    Denied,
    Full,
    Namespaces(Vec<String>),
}

pub enum Outcome {
    Respond(Response),
    /// Send this response with a Content-Length larger than the bytes sent, then close.
    Truncate(Response),
    /// Close without answering.
    Drop,
    Watch(WatchSpec),
}

/// A `metadata.name`/`metadata.namespace` field selector: value and whether it is `=` (true) or `!=`.
type FieldFilter = Option<(String, bool)>;

pub struct WatchSpec {
    res: usize,
    ns: Option<String>,
    selector: Selector,
    field_name: Option<(String, bool)>,
    from_rv: Option<u64>,
    timeout: Duration,
    repr: Repr,
    bookmarks: bool,
    send_initial: bool,
}

/// The representation a client asked for in its Accept header.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Repr {
    Full,
    Metadata,
    MetadataList,
    Table,
}

fn repr_of(req: &Request) -> Repr {
    let accept = req.header("accept").unwrap_or("");
    // The first acceptable type wins, as the API server negotiates.
    for part in accept.split(',') {
        let p = part.replace(' ', "");
        if p.contains("as=Table") {
            return Repr::Table;
        }
        if p.contains("as=PartialObjectMetadataList") {
            return Repr::MetadataList;
        }
        if p.contains("as=PartialObjectMetadata") {
            return Repr::Metadata;
        }
        if p.starts_with("application/json") || p.starts_with("*/*") {
            return Repr::Full;
        }
    }
    Repr::Full
}

fn status_response(e: &ApiError) -> Response {
    let mut r = Response::json(e.code, e.status_json());
    if let Some(s) = e
        .details
        .as_ref()
        .and_then(|d| d.get("retryAfterSeconds"))
        .and_then(Value::as_u64)
    {
        r.headers.push(("Retry-After".into(), s.to_string()));
    }
    r
}

fn ok_json(status: u16, v: &Value) -> Response {
    Response::json(status, serde_json::to_vec(v).unwrap_or_default())
}

/// Where a request path points.
enum Target {
    Open(&'static str),
    Discovery(String),
    OpenApi(String),
    Admin(String),
    Collection {
        res: usize,
        ns: Option<String>,
    },
    Object {
        res: usize,
        ns: String,
        name: String,
    },
    Unknown,
}

fn parse_target(path: &str) -> Target {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    match segs.as_slice() {
        ["version"] => return Target::Open("version"),
        ["healthz"] | ["livez"] | ["readyz"] => return Target::Open("ok"),
        ["api"] | ["apis"] | ["api", "v1"] => return Target::Discovery(path.to_string()),
        ["apis", _] | ["apis", _, _] => return Target::Discovery(path.to_string()),
        ["openapi", ..] => return Target::OpenApi(path.to_string()),
        ["_sandbox", rest @ ..] => return Target::Admin(rest.join("/")),
        _ => {}
    }
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Target::Unknown,
    };
    let find = |plural: &str| crate::resources::find(group, version, plural);
    // Core namespaces are both a resource and a path prefix.
    if group.is_empty()
        && rest.len() == 2
        && rest[0] == "namespaces"
        && let Some(res) = find("namespaces")
    {
        return Target::Object {
            res,
            ns: String::new(),
            name: rest[1].to_string(),
        };
    }
    match rest {
        [plural] => {
            find(plural).map_or(Target::Unknown, |res| Target::Collection { res, ns: None })
        }
        ["namespaces", ns, plural] => match find(plural) {
            Some(res) if RESOURCES[res].namespaced => Target::Collection {
                res,
                ns: Some(ns.to_string()),
            },
            _ => Target::Unknown,
        },
        ["namespaces", ns, plural, name] | ["namespaces", ns, plural, name, "status"] => {
            match find(plural) {
                Some(res) if RESOURCES[res].namespaced => Target::Object {
                    res,
                    ns: ns.to_string(),
                    name: name.to_string(),
                },
                _ => Target::Unknown,
            }
        }
        [plural, name] | [plural, name, "status"] => match find(plural) {
            Some(res) if !RESOURCES[res].namespaced => Target::Object {
                res,
                ns: String::new(),
                name: name.to_string(),
            },
            _ => Target::Unknown,
        },
        _ => Target::Unknown,
    }
}

fn is_watch(req: &Request) -> bool {
    matches!(req.param("watch"), Some("1") | Some("true") | Some("True"))
}

fn verb_of(req: &Request, t: &Target) -> &'static str {
    match (req.method.as_str(), t) {
        ("GET", Target::Collection { .. }) if is_watch(req) => "watch",
        ("GET", Target::Collection { .. }) => "list",
        ("GET", _) => "get",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", Target::Collection { .. }) => "deletecollection",
        ("DELETE", _) => "delete",
        _ => "other",
    }
}

fn bearer(req: &Request) -> Option<&str> {
    let v = req.header("authorization")?;
    let (scheme, tok) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| tok.trim())
}

impl State {
    fn access(&self, req: &Request, client_cert: bool) -> Access {
        if client_cert {
            return Access::Full;
        }
        let tokens = self.tokens.read().unwrap_or_else(|e| e.into_inner());
        match bearer(req) {
            Some(t) if tokens.full.contains(t) => Access::Full,
            Some(t) => tokens
                .namespaced
                .get(t)
                .map_or(Access::Denied, |ns| Access::Namespaces(ns.clone())),
            None => Access::Denied,
        }
    }

    fn count(&self, verb: &str, path: &str, repr: Repr) {
        let repr = match repr {
            Repr::Full => "",
            Repr::Metadata => "PartialObjectMetadata",
            Repr::MetadataList => "PartialObjectMetadataList",
            Repr::Table => "Table",
        };
        let mut g = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        *g.entry((verb.to_string(), path.to_string(), repr.to_string()))
            .or_default() += 1;
    }
}

pub fn handle(state: &State, req: &Request, client_cert: bool) -> Outcome {
    let target = parse_target(&req.path);
    if let Target::Open(what) = target {
        return Outcome::Respond(match what {
            "version" => ok_json(200, &discovery::version()),
            _ => Response::new(200, "text/plain", vec![Segment::Static(b"ok")]),
        });
    }
    let verb = verb_of(req, &target);
    match state.access(req, client_cert) {
        Access::Denied => {
            return Outcome::Respond(status_response(&ApiError::new(
                401,
                "Unauthorized",
                "Unauthorized",
            )));
        }
        Access::Namespaces(allowed) => {
            let (res, ns) = match &target {
                Target::Collection { res, ns } => (Some(*res), ns.clone()),
                Target::Object { res, ns, .. } => {
                    (Some(*res), Some(ns.clone()).filter(|n| !n.is_empty()))
                }
                Target::Admin(_) => (None, None),
                _ => (None, Some(String::new())),
            };
            let permitted = match (&ns, res) {
                (Some(n), None) => n.is_empty(), // discovery and OpenAPI
                (Some(n), Some(r)) => RESOURCES[r].namespaced && allowed.contains(n),
                (None, _) => false,
            };
            if !permitted {
                return Outcome::Respond(status_response(&forbidden(res, ns.as_deref(), verb)));
            }
        }
        Access::Full => {}
    }
    let refused = |res: usize| {
        let forbidden = state.forbidden.read().unwrap_or_else(|e| e.into_inner());
        forbidden.contains(&RESOURCES[res].qualified())
    };
    match &target {
        Target::Collection { res, ns } if refused(*res) => {
            return Outcome::Respond(status_response(&forbidden(Some(*res), ns.as_deref(), verb)));
        }
        Target::Object { res, ns, .. } if refused(*res) => {
            return Outcome::Respond(status_response(&forbidden(
                Some(*res),
                Some(ns.as_str()),
                verb,
            )));
        }
        _ => {}
    }
    if let Target::Admin(what) = &target {
        return Outcome::Respond(admin(state, req, what));
    }
    let repr = repr_of(req);
    state.count(verb, &req.path, repr);
    let is_continue_list = verb == "list" && req.param("continue").is_some_and(|c| !c.is_empty());
    let full = if req.query.is_empty() {
        req.path.clone()
    } else {
        format!(
            "{}?{}",
            req.path,
            req.query
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("&")
        )
    };
    let mut truncate = false;
    if let Some(f) = state.faults.take(&full, is_continue_list) {
        log::debug!("injecting fault {:?} on {}", f.kind, req.path);
        match f.kind {
            FaultKind::Status500 => {
                return Outcome::Respond(status_response(&ApiError::new(
                    500,
                    "InternalError",
                    "Internal error occurred: injected by the sandbox",
                )));
            }
            FaultKind::Status401 => {
                return Outcome::Respond(status_response(&ApiError::new(
                    401,
                    "Unauthorized",
                    "Unauthorized",
                )));
            }
            FaultKind::Status503 => {
                let mut e = ApiError::new(
                    503,
                    "ServiceUnavailable",
                    "the server is currently unable to handle the request (injected by the sandbox)",
                );
                e.details = Some(json!({"retryAfterSeconds": f.retry_after_seconds}));
                return Outcome::Respond(status_response(&e));
            }
            FaultKind::Status429 => {
                let mut r = Response::new(
                    429,
                    "text/plain; charset=utf-8",
                    vec![Segment::Static(
                        b"Too many requests, please try again later.\n",
                    )],
                );
                r.headers
                    .push(("Retry-After".into(), f.retry_after_seconds.to_string()));
                return Outcome::Respond(r);
            }
            FaultKind::ExpireContinue => {
                return Outcome::Respond(status_response(&ApiError::expired_continue()));
            }
            FaultKind::Slow => std::thread::sleep(Duration::from_millis(f.delay_ms)),
            FaultKind::Truncate => truncate = true,
            FaultKind::Drop => return Outcome::Drop,
        }
    }
    let out = match target {
        Target::Discovery(p) => Ok(Outcome::Respond(discovery::discovery(
            &p,
            req,
            &state.server_addr,
        ))),
        Target::OpenApi(p) => Ok(Outcome::Respond(discovery::openapi(&p))),
        Target::Collection { res, ns } => collection(state, req, res, ns, repr),
        Target::Object { res, ns, name } => object(state, req, res, &ns, &name, repr),
        Target::Unknown => Err(ApiError::not_found_path()),
        Target::Open(_) | Target::Admin(_) => unreachable!("handled above"),
    };
    match out {
        Ok(Outcome::Respond(r)) if truncate => Outcome::Truncate(r),
        Ok(o) => o,
        Err(e) => {
            let r = status_response(&e);
            if truncate {
                Outcome::Truncate(r)
            } else {
                Outcome::Respond(r)
            }
        }
    }
}

fn forbidden(res: Option<usize>, ns: Option<&str>, verb: &str) -> ApiError {
    let user = "system:serviceaccount:sandbox:namespace-limited";
    let Some(r) = res.map(|i| &RESOURCES[i]) else {
        return ApiError::new(
            403,
            "Forbidden",
            format!("forbidden: User \"{user}\" cannot use the sandbox admin endpoints"),
        );
    };
    let scope = match ns {
        Some(n) if !n.is_empty() => format!("in the namespace \"{n}\""),
        _ => "at the cluster scope".to_string(),
    };
    let mut e = ApiError::new(
        403,
        "Forbidden",
        format!(
            "{} is forbidden: User \"{user}\" cannot {verb} resource \"{}\" in API group \"{}\" {scope}",
            r.qualified(),
            r.plural,
            r.group
        ),
    );
    e.details = Some(json!({"group": r.group, "kind": r.plural}));
    e
}

fn admin(state: &State, req: &Request, what: &str) -> Response {
    let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
    match (req.method.as_str(), what) {
        ("POST", "faults") => {
            let list = match &body {
                Value::Array(a) => a.clone(),
                v => vec![v.clone()],
            };
            for v in &list {
                match Fault::from_json(v) {
                    Ok(f) => state.faults.add(f),
                    Err(e) => return status_response(&ApiError::bad_request(e)),
                }
            }
            ok_json(200, &json!({"pending": state.faults.pending()}))
        }
        ("GET", "faults") => ok_json(200, &json!({"pending": state.faults.pending()})),
        ("POST", "forbidden") => {
            let Some(list) = body.get("resources").and_then(Value::as_array) else {
                return status_response(&ApiError::bad_request(
                    "expected {\"resources\": [\"rollouts.argoproj.io\", ...]}",
                ));
            };
            let set: HashSet<String> = list
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect();
            let shown: Vec<&String> = set.iter().collect();
            let reply = json!({"forbidden": shown});
            *state.forbidden.write().unwrap_or_else(|e| e.into_inner()) = set;
            ok_json(200, &reply)
        }
        ("DELETE", "faults") => {
            state.faults.clear();
            ok_json(200, &json!({"pending": []}))
        }
        ("POST", "tokens") => {
            let Some(list) = body.get("tokens").and_then(Value::as_array) else {
                return status_response(&ApiError::bad_request("expected {\"tokens\": [\"...\"]}"));
            };
            let full: HashSet<String> = list
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect();
            let mut namespaced = HashMap::new();
            if let Some(m) = body.get("namespaced").and_then(Value::as_object) {
                for (tok, nss) in m {
                    let nss = nss
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(Value::as_str)
                                .map(str::to_string)
                                .collect()
                        })
                        .unwrap_or_default();
                    namespaced.insert(tok.clone(), nss);
                }
            }
            let n = full.len() + namespaced.len();
            *state.tokens.write().unwrap_or_else(|e| e.into_inner()) = Tokens { full, namespaced };
            ok_json(200, &json!({"tokens": n}))
        }
        ("GET", "stats") => {
            let g = state.stats.lock().unwrap_or_else(|e| e.into_inner());
            let requests: Vec<Value> = g
                .iter()
                .map(|((verb, path, repr), n)| json!({"verb": verb, "path": path, "as": repr, "count": n}))
                .collect();
            let total: u64 = g.values().sum();
            ok_json(200, &json!({"total": total, "requests": requests}))
        }
        ("DELETE", "stats") => {
            state
                .stats
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
            ok_json(200, &json!({"total": 0, "requests": []}))
        }
        ("POST", "compact") => {
            state.store.compact();
            ok_json(
                200,
                &json!({"compactedAt": state.store.current_rv().to_string()}),
            )
        }
        _ => status_response(&ApiError::not_found_path()),
    }
}

fn parse_body(req: &Request) -> Result<Value, ApiError> {
    if req.body.is_empty() {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    let ct = req.header("content-type").unwrap_or("application/json");
    let parsed = match serde_json::from_slice::<Value>(&req.body) {
        Ok(v) => Ok(v),
        Err(e) if ct.contains("yaml") => {
            let s = String::from_utf8_lossy(&req.body);
            serde_saphyr::from_str::<Value>(&s).map_err(|e2| format!("{e}; as YAML: {e2}"))
        }
        Err(e) => Err(e.to_string()),
    };
    let v = parsed
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    Ok(v)
}

fn field_selector(req: &Request) -> Result<(FieldFilter, FieldFilter), ApiError> {
    let mut name = None;
    let mut ns = None;
    let Some(fs) = req.param("fieldSelector").filter(|s| !s.is_empty()) else {
        return Ok((None, None));
    };
    for term in fs.split(',') {
        let (k, v, eq) = if let Some((k, v)) = term.split_once("!=") {
            (k, v, false)
        } else if let Some((k, v)) = term.split_once("==") {
            (k, v, true)
        } else if let Some((k, v)) = term.split_once('=') {
            (k, v, true)
        } else {
            return Err(ApiError::bad_request(format!(
                "invalid field selector: {term}"
            )));
        };
        match k.trim() {
            "metadata.name" => name = Some((v.trim().to_string(), eq)),
            "metadata.namespace" => ns = Some((v.trim().to_string(), eq)),
            other => {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {other}"
                )));
            }
        }
    }
    Ok((name, ns))
}

fn selector(req: &Request) -> Result<Selector, ApiError> {
    Selector::parse(req.param("labelSelector").unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))
}

fn collection(
    state: &State,
    req: &Request,
    res: usize,
    ns: Option<String>,
    repr: Repr,
) -> Result<Outcome, ApiError> {
    let r = &RESOURCES[res];
    match req.method.as_str() {
        "GET" if is_watch(req) => {
            let (field_name, _) = field_selector(req)?;
            let from_rv = match req.param("resourceVersion").filter(|s| !s.is_empty()) {
                None => None,
                Some(s) => Some(s.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(format!("invalid resourceVersion {s:?}"))
                })?),
            };
            let timeout = req
                .param("timeoutSeconds")
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(1800)
                .min(86_400); // keeps Instant + timeout from overflowing
            Ok(Outcome::Watch(WatchSpec {
                res,
                ns,
                selector: selector(req)?,
                field_name,
                from_rv,
                timeout: Duration::from_secs(timeout),
                repr,
                bookmarks: req.param("allowWatchBookmarks") == Some("true"),
                send_initial: req.param("sendInitialEvents") == Some("true"),
            }))
        }
        "GET" => {
            if repr == Repr::Metadata {
                return Err(ApiError::new(
                    406,
                    "NotAcceptable",
                    "only the following media types are accepted: application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
                ));
            }
            let (field_name, field_namespace) = field_selector(req)?;
            let cont = req
                .param("continue")
                .filter(|s| !s.is_empty())
                .map(str::to_string);
            if cont.is_some() && req.param("resourceVersion").is_some_and(|s| !s.is_empty()) {
                return Err(ApiError::bad_request(
                    "specifying resource version is not allowed when using continue",
                ));
            }
            let rv_match = req.param("resourceVersionMatch").filter(|s| !s.is_empty());
            if cont.is_some() && rv_match.is_some() {
                return Err(ApiError::bad_request(
                    "resourceVersionMatch is forbidden when continue is provided",
                ));
            }
            let rv = req.param("resourceVersion").filter(|s| !s.is_empty());
            match (rv_match, rv) {
                (Some("Exact" | "NotOlderThan"), None) => {
                    return Err(ApiError::bad_request(
                        "resourceVersionMatch is forbidden unless resourceVersion is provided",
                    ));
                }
                (Some("Exact"), Some("0")) => {
                    return Err(ApiError::bad_request(
                        "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
                    ));
                }
                (Some("Exact"), Some(v))
                    if v.parse::<u64>()
                        .is_ok_and(|v| v < state.store.compacted_rv()) =>
                {
                    return Err(ApiError::new(
                        410,
                        "Expired",
                        "The resourceVersion for the provided list is too old.",
                    ));
                }
                (Some(m), _) if m != "Exact" && m != "NotOlderThan" => {
                    return Err(ApiError::bad_request(format!(
                        "unsupported resourceVersionMatch {m:?}"
                    )));
                }
                _ => {}
            }
            // As the watch cache does: resourceVersion=0 without a match rule ignores `limit`.
            let any_rv = rv == Some("0") && rv_match.is_none();
            let limit = match req.param("limit").filter(|s| !s.is_empty()) {
                _ if any_rv => 0,
                None => 0,
                Some(s) => s
                    .parse::<usize>()
                    .map_err(|_| ApiError::bad_request(format!("invalid limit {s:?}")))?,
            };
            let q = ListQuery {
                namespace: ns,
                selector: selector(req)?,
                field_name,
                field_namespace,
                limit,
                continue_token: cont,
            };
            let page = state.store.list(res, &q)?;
            Ok(Outcome::Respond(list_response(r, page, repr, req)))
        }
        "POST" => {
            let body = parse_body(req)?;
            let ns = match (r.namespaced, ns) {
                (true, Some(ns)) => ns,
                (true, None) => {
                    return Err(ApiError::new(
                        405,
                        "MethodNotAllowed",
                        "create needs a namespaced URL",
                    ));
                }
                (false, _) => String::new(),
            };
            let o = state.store.create(res, &ns, body)?;
            Ok(Outcome::Respond(object_response(201, &o, repr)))
        }
        "DELETE" => {
            let (field_name, field_namespace) = field_selector(req)?;
            let q = ListQuery {
                namespace: ns,
                selector: selector(req)?,
                field_name,
                field_namespace,
                limit: 0,
                continue_token: None,
            };
            let page = state.store.list(res, &q)?;
            let mut gone = Vec::new();
            for o in &page.items {
                if let Ok(d) = state.store.delete(res, &o.namespace, &o.name, None, false) {
                    gone.push(d);
                }
            }
            let page = crate::store::Page {
                items: gone,
                rv: state.store.current_rv(),
                continue_token: None,
                remaining: None,
            };
            Ok(Outcome::Respond(list_response(r, page, Repr::Full, req)))
        }
        _ => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!(
                "the server does not allow this method on the requested resource ({})",
                req.method
            ),
        )),
    }
}

fn object(
    state: &State,
    req: &Request,
    res: usize,
    ns: &str,
    name: &str,
    repr: Repr,
) -> Result<Outcome, ApiError> {
    let r = &RESOURCES[res];
    match req.method.as_str() {
        "GET" => {
            let o = state.store.get(res, ns, name)?;
            if repr == Repr::Table {
                let page = crate::store::Page {
                    items: vec![o.clone()],
                    rv: o.rv,
                    continue_token: None,
                    remaining: None,
                };
                return Ok(Outcome::Respond(list_response(r, page, Repr::Table, req)));
            }
            Ok(Outcome::Respond(object_response(200, &o, repr)))
        }
        "PUT" => {
            let body = parse_body(req)?;
            let o = state.store.replace(res, ns, name, body)?;
            Ok(Outcome::Respond(object_response(200, &o, repr)))
        }
        "PATCH" => {
            let ct = req
                .header("content-type")
                .unwrap_or("")
                .to_ascii_lowercase();
            let kind = if ct.starts_with("application/merge-patch+json")
                || ct.starts_with("application/strategic-merge-patch+json")
            {
                PatchKind::Merge
            } else if ct.starts_with("application/apply-patch+yaml")
                || ct.starts_with("application/apply-patch+cbor")
            {
                PatchKind::Apply
            } else if ct.starts_with("application/json-patch+json") {
                let ops: Value = serde_json::from_slice(&req.body).map_err(|e| {
                    ApiError::bad_request(format!("the request body is not valid JSON: {e}"))
                })?;
                let cur = state.store.get(res, ns, name)?;
                let mut v = cur.parse();
                crate::jsonpatch::apply(&mut v, &ops)
                    .map_err(|e| ApiError::new(422, "Invalid", e))?;
                let o = state.store.replace(res, ns, name, v)?;
                return Ok(Outcome::Respond(object_response(200, &o, repr)));
            } else {
                return Err(ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    format!(
                        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {ct:?})"
                    ),
                ));
            };
            let body = parse_body(req)?;
            let (o, created) = state.store.patch(res, ns, name, &body, kind)?;
            Ok(Outcome::Respond(object_response(
                if created { 201 } else { 200 },
                &o,
                repr,
            )))
        }
        "DELETE" => {
            let opts: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
            let orphan = opts.get("propagationPolicy").and_then(Value::as_str) == Some("Orphan")
                || opts.get("orphanDependents").and_then(Value::as_bool) == Some(true)
                || req.param("propagationPolicy") == Some("Orphan");
            let o = state
                .store
                .delete(res, ns, name, opts.get("preconditions"), orphan)?;
            if r.group == "aquasecurity.github.io" {
                let v = json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Success",
                    "details":{"name": name, "group": r.group, "kind": r.plural, "uid": o.uid}});
                Ok(Outcome::Respond(ok_json(200, &v)))
            } else {
                Ok(Outcome::Respond(object_response(200, &o, repr)))
            }
        }
        _ => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!(
                "the server does not allow this method on the requested resource ({})",
                req.method
            ),
        )),
    }
}

fn partial_meta(o: &Obj) -> Vec<u8> {
    let mut out =
        br#"{"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata":"#.to_vec();
    out.extend(serde_json::to_vec(&*o.meta).unwrap_or_default());
    out.push(b'}');
    out
}

fn object_response(status: u16, o: &Obj, repr: Repr) -> Response {
    match repr {
        Repr::Metadata | Repr::MetadataList => Response::json(status, partial_meta(o)),
        _ => Response::new(
            status,
            "application/json",
            vec![Segment::Shared(o.bytes.clone())],
        ),
    }
}

fn list_meta(page: &crate::store::Page) -> Value {
    let mut m = json!({"resourceVersion": page.rv.to_string()});
    if let Some(c) = &page.continue_token {
        m["continue"] = Value::String(c.clone());
    }
    if let Some(n) = page.remaining {
        m["remainingItemCount"] = json!(n);
    }
    m
}

/// Kubernetes' human-readable age ("5m", "3h12m", "12d").
pub fn human_age(created: jiff::Timestamp) -> String {
    let s = jiff::Timestamp::now().as_second() - created.as_second();
    if s < 0 {
        return "0s".into();
    }
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        if s % 60 == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{}s", s % 60)
        }
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        if m % 60 == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{}m", m % 60)
        }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        if h % 24 == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{}h", h % 24)
        }
    } else if d < 365 * 2 {
        format!("{d}d")
    } else if d < 365 * 8 {
        format!("{}y{}d", d / 365, d % 365)
    } else {
        format!("{}y", d / 365)
    }
}

fn column_defs(r: &Resource) -> Value {
    let mut cols = vec![
        json!({"name":"Name","type":"string","format":"name","description":"Name must be unique within a namespace.","priority":0}),
    ];
    for c in r.columns {
        cols.push(json!({"name": c.name, "type": c.typ, "format": "", "description": c.name, "priority": c.priority}));
    }
    Value::Array(cols)
}

fn table_row(r: &Resource, o: &Obj, include: &str) -> Value {
    let mut cells = vec![Value::String(o.name.clone())];
    let mut extra = o.cells.iter();
    for c in r.columns {
        if c.path.is_empty() {
            cells.push(Value::String(human_age(o.created)));
        } else {
            cells.push(extra.next().cloned().unwrap_or(Value::Null));
        }
    }
    let mut row = json!({"cells": cells});
    match include {
        "None" => {}
        "Object" => row["object"] = o.parse(),
        _ => {
            row["object"] = json!({"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata": &*o.meta})
        }
    }
    row
}

fn list_response(r: &Resource, page: crate::store::Page, repr: Repr, req: &Request) -> Response {
    let meta = serde_json::to_string(&list_meta(&page)).unwrap_or_default();
    match repr {
        Repr::Table => {
            let include = req.param("includeObject").unwrap_or("Metadata");
            let rows: Vec<Value> = page
                .items
                .iter()
                .map(|o| table_row(r, o, include))
                .collect();
            let v = json!({"kind":"Table","apiVersion":"meta.k8s.io/v1","metadata": list_meta(&page),
                "columnDefinitions": column_defs(r), "rows": rows});
            ok_json(200, &v)
        }
        Repr::MetadataList | Repr::Metadata => {
            let mut body = format!(r#"{{"kind":"PartialObjectMetadataList","apiVersion":"meta.k8s.io/v1","metadata":{meta},"items":["#)
                .into_bytes();
            for (i, o) in page.items.iter().enumerate() {
                if i > 0 {
                    body.push(b',');
                }
                body.extend(partial_meta(o));
            }
            body.extend(b"]}");
            Response::json(200, body)
        }
        Repr::Full => {
            let head = format!(
                r#"{{"apiVersion":"{}","kind":"{}List","metadata":{meta},"items":["#,
                r.api_version(),
                r.kind
            );
            let mut segs = Vec::with_capacity(page.items.len() * 2 + 2);
            segs.push(Segment::Owned(head.into_bytes()));
            for (i, o) in page.items.iter().enumerate() {
                if i > 0 {
                    segs.push(Segment::Static(b","));
                }
                segs.push(Segment::Shared(o.bytes.clone()));
            }
            segs.push(Segment::Static(b"]}"));
            Response::new(200, "application/json", segs)
        }
    }
}

fn event_bytes(typ: &str, r: &Resource, o: &Obj, repr: Repr) -> Vec<u8> {
    let mut out = format!(r#"{{"type":"{typ}","object":"#).into_bytes();
    match repr {
        Repr::Metadata | Repr::MetadataList => out.extend(partial_meta(o)),
        Repr::Table => {
            let v = json!({"kind":"Table","apiVersion":"meta.k8s.io/v1","metadata":{"resourceVersion": o.rv.to_string()},
                "columnDefinitions": column_defs(r), "rows": [table_row(r, o, "Metadata")]});
            out.extend(serde_json::to_vec(&v).unwrap_or_default());
        }
        Repr::Full => out.extend_from_slice(&o.bytes),
    }
    out.extend(b"}\n");
    out
}

/// Writes a live event as two flushed chunks: clients must decode events that span reads, as
/// they do behind real API servers and proxies.
fn write_split<W: Write>(w: &mut W, event: &[u8]) -> io::Result<()> {
    let (a, b) = event.split_at(event.len() / 2);
    http::write_chunk(w, &[a])?;
    w.flush()?;
    http::write_chunk(w, &[b])
}

/// Streams watch events until the timeout, a write error or shutdown.
pub fn run_watch<W: Write>(state: &State, spec: WatchSpec, w: &mut W) -> io::Result<()> {
    let r = &RESOURCES[spec.res];
    let ct = match spec.repr {
        Repr::Table => "application/json;as=Table;v=v1;g=meta.k8s.io",
        _ => "application/json",
    };
    http::write_chunked_head(w, ct)?;
    let matches = |o: &Obj| {
        spec.ns.as_ref().is_none_or(|ns| &o.namespace == ns)
            && spec
                .field_name
                .as_ref()
                .is_none_or(|(n, eq)| (&o.name == n) == *eq)
            && spec.selector.matches(o.labels())
    };
    let bookmark = |rv: u64, initial_end: bool| {
        let annotations = if initial_end {
            r#","annotations":{"k8s.io/initial-events-end":"true"}"#
        } else {
            ""
        };
        format!(
            "{{\"type\":\"BOOKMARK\",\"object\":{{\"kind\":\"{}\",\"apiVersion\":\"{}\",\"metadata\":{{\"resourceVersion\":\"{rv}\"{annotations}}}}}}}\n",
            r.kind,
            r.api_version()
        )
    };
    let mut last = match spec.from_rv {
        Some(rv) if rv > 0 && !spec.send_initial => rv,
        _ => {
            let (items, rv) = state.store.snapshot(spec.res, spec.ns.as_deref());
            for o in items.iter().filter(|o| matches(o)) {
                http::write_chunk(w, &[&event_bytes("ADDED", r, o, spec.repr)])?;
            }
            if spec.send_initial {
                http::write_chunk(w, &[bookmark(rv, true).as_bytes()])?;
            }
            w.flush()?;
            rv
        }
    };
    let deadline = Instant::now() + spec.timeout;
    let mut last_write = Instant::now();
    while !state.shutdown.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let wait = (deadline - now).min(Duration::from_secs(1));
        match state.store.events_after(spec.res, last, wait) {
            Err(floor) => {
                let e = ApiError::new(
                    410,
                    "Expired",
                    format!("too old resource version: {last} ({floor})"),
                );
                let mut ev = br#"{"type":"ERROR","object":"#.to_vec();
                ev.extend(e.status_json());
                ev.extend(b"}\n");
                http::write_chunk(w, &[&ev])?;
                break;
            }
            Ok((events, cur)) => {
                for e in events.iter().filter(|e| matches(&e.obj)) {
                    write_split(w, &event_bytes(e.typ.as_str(), r, &e.obj, spec.repr))?;
                    last_write = Instant::now();
                }
                if !events.is_empty() {
                    w.flush()?;
                }
                last = last.max(cur);
            }
        }
        if spec.bookmarks && last_write.elapsed() > Duration::from_secs(30) {
            http::write_chunk(w, &[bookmark(last, false).as_bytes()])?;
            w.flush()?;
            last_write = Instant::now();
        }
    }
    http::write_last_chunk(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_kubectl() {
        let now = jiff::Timestamp::now().as_second();
        let at = |ago: i64| jiff::Timestamp::from_second(now - ago).unwrap();
        let cases = [
            (5, "5s"),
            (119, "119s"),
            (150, "2m30s"),
            (600, "10m"),
            (3 * 3600 + 60, "3h1m"),
            (10 * 3600, "10h"),
            (3 * 86400, "3d"),
            (3 * 86400 + 7200, "3d2h"),
            (30 * 86400, "30d"),
            (-5, "0s"),
        ];
        for (ago, want) in cases {
            assert_eq!(human_age(at(ago)), want, "{ago}s ago");
        }
    }

    #[test]
    fn paths_route_to_resources() {
        let cases: &[(&str, &str)] = &[
            (
                "/apis/aquasecurity.github.io/v1alpha1/vulnerabilityreports",
                "collection vulnerabilityreports -",
            ),
            (
                "/apis/aquasecurity.github.io/v1alpha1/namespaces/ns/vulnerabilityreports",
                "collection vulnerabilityreports ns",
            ),
            (
                "/apis/aquasecurity.github.io/v1alpha1/namespaces/ns/vulnerabilityreports/r",
                "object vulnerabilityreports ns/r",
            ),
            (
                "/apis/aquasecurity.github.io/v1alpha1/clustervulnerabilityreports/r",
                "object clustervulnerabilityreports /r",
            ),
            (
                "/apis/aquasecurity.github.io/v1alpha1/namespaces/ns/clustervulnerabilityreports",
                "unknown",
            ),
            (
                "/apis/aquasecurity.github.io/v1alpha1/clustercompliancereports/c/status",
                "object clustercompliancereports /c",
            ),
            ("/api/v1/namespaces", "collection namespaces -"),
            ("/api/v1/namespaces/shop", "object namespaces /shop"),
            ("/api/v1/namespaces/shop/pods", "collection pods shop"),
            (
                "/apis/coordination.k8s.io/v1/namespaces/kijo/leases/l",
                "object leases kijo/l",
            ),
            ("/apis/nope.io/v1/things", "unknown"),
            ("/apis/apps/v1", "discovery"),
            ("/version", "open"),
            ("/_sandbox/stats", "admin"),
        ];
        for (path, want) in cases {
            let got = match parse_target(path) {
                Target::Collection { res, ns } => format!(
                    "collection {} {}",
                    RESOURCES[res].plural,
                    ns.unwrap_or("-".into())
                ),
                Target::Object { res, ns, name } => {
                    format!("object {} {ns}/{name}", RESOURCES[res].plural)
                }
                Target::Unknown => "unknown".into(),
                Target::Discovery(_) | Target::OpenApi(_) => "discovery".into(),
                Target::Open(_) => "open".into(),
                Target::Admin(_) => "admin".into(),
            };
            assert_eq!(&got, want, "{path}");
        }
    }
}
