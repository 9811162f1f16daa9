//! Discovery (legacy and aggregated), `/version` and the OpenAPI v3 documents kubectl 1.32
//! reads before `apply` (to learn that PATCH accepts `fieldValidation`).

use serde_json::{Value, json};

use crate::http::{Request, Response};
use crate::resources::{RESOURCES, Resource, VERBS, group_versions};

/// Minor 32 makes the gcloud kubectl dispatcher run its built-in v1.32 kubectl.
pub fn version() -> Value {
    json!({"major":"1","minor":"32","gitVersion":"v1.32.4-kijo-sandbox","gitCommit":"0000000000000000000000000000000000000000",
        "gitTreeState":"clean","buildDate":"2025-04-22T00:00:00Z","goVersion":"go1.23.8","compiler":"gc","platform":"linux/amd64"})
}

/// kubectl's `get all` expands the `all` category, which the built-in workload kinds join.
fn categories(r: &Resource) -> &'static [&'static str] {
    match r.kind {
        "Pod" | "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" | "Job" | "CronJob" => {
            &["all"]
        }
        _ => &[],
    }
}

fn api_resource(r: &Resource) -> Value {
    json!({"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind,
        "verbs": VERBS, "shortNames": r.short_names, "categories": categories(r), "storageVersionHash": ""})
}

fn aggregated_resource(r: &Resource) -> Value {
    json!({"resource": r.plural, "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "scope": if r.namespaced { "Namespaced" } else { "Cluster" }, "singularResource": r.singular,
        "shortNames": r.short_names, "verbs": VERBS, "categories": categories(r)})
}

fn aggregated_group(group: &str) -> Value {
    let versions: Vec<Value> = group_versions()
        .into_iter()
        .filter(|(g, _)| *g == group)
        .map(|(g, v)| {
            let res: Vec<Value> = RESOURCES
                .iter()
                .filter(|r| r.group == g && r.version == v)
                .map(aggregated_resource)
                .collect();
            json!({"version": v, "resources": res, "freshness": "Current"})
        })
        .collect();
    let mut meta = json!({"creationTimestamp": null});
    if !group.is_empty() {
        meta["name"] = Value::String(group.to_string());
    }
    json!({"metadata": meta, "versions": versions})
}

fn groups() -> Vec<&'static str> {
    let mut out: Vec<&str> = Vec::new();
    for (g, _) in group_versions() {
        if !g.is_empty() && !out.contains(&g) {
            out.push(g);
        }
    }
    out
}

fn api_group(g: &str) -> Value {
    let versions: Vec<Value> = group_versions()
        .into_iter()
        .filter(|(x, _)| *x == g)
        .map(|(g, v)| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    let preferred = versions.first().cloned().unwrap_or(Value::Null);
    json!({"name": g, "versions": versions, "preferredVersion": preferred})
}

fn resource_list(group: &str, version: &str) -> Option<Value> {
    let res: Vec<Value> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .map(api_resource)
        .collect();
    if res.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({"kind":"APIResourceList","apiVersion":"v1","groupVersion": gv, "resources": res}))
}

fn json_response(v: &Value, content_type: &str) -> Response {
    let mut r = Response::json(200, serde_json::to_vec(v).unwrap_or_default());
    r.headers[0].1 = content_type.to_string();
    r
}

fn not_found() -> Response {
    Response::json(404, crate::store::ApiError::not_found_path().status_json())
}

pub fn discovery(path: &str, req: &Request, server_addr: &str) -> Response {
    let accept = req.header("accept").unwrap_or("").replace(' ', "");
    let aggregated = accept.split(',').next().is_some_and(|first| {
        first.contains("as=APIGroupDiscoveryList") && first.contains("g=apidiscovery.k8s.io")
    });
    let agg_version = if accept
        .split(',')
        .next()
        .is_some_and(|f| f.contains("v=v2beta1"))
    {
        "v2beta1"
    } else {
        "v2"
    };
    let agg_ct =
        format!("application/json;g=apidiscovery.k8s.io;v={agg_version};as=APIGroupDiscoveryList");
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        ["api"] if aggregated => json_response(
            &json!({"kind":"APIGroupDiscoveryList","apiVersion": format!("apidiscovery.k8s.io/{agg_version}"),"metadata":{},"items":[aggregated_group("")]}),
            &agg_ct,
        ),
        ["api"] => json_response(
            &json!({"kind":"APIVersions","versions":["v1"],"serverAddressByClientCIDRs":[{"clientCIDR":"0.0.0.0/0","serverAddress": server_addr}]}),
            "application/json",
        ),
        ["apis"] if aggregated => {
            let items: Vec<Value> = groups().into_iter().map(aggregated_group).collect();
            json_response(
                &json!({"kind":"APIGroupDiscoveryList","apiVersion": format!("apidiscovery.k8s.io/{agg_version}"),"metadata":{},"items": items}),
                &agg_ct,
            )
        }
        ["apis"] => {
            let gs: Vec<Value> = groups().into_iter().map(api_group).collect();
            json_response(
                &json!({"kind":"APIGroupList","apiVersion":"v1","groups": gs}),
                "application/json",
            )
        }
        ["api", v] => {
            resource_list("", v).map_or_else(not_found, |v| json_response(&v, "application/json"))
        }
        ["apis", g] if groups().contains(g) => {
            let mut v = api_group(g);
            v["kind"] = json!("APIGroup");
            v["apiVersion"] = json!("v1");
            json_response(&v, "application/json")
        }
        ["apis", g, v] => {
            resource_list(g, v).map_or_else(not_found, |v| json_response(&v, "application/json"))
        }
        _ => not_found(),
    }
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

const PATCH_TYPES: &[&str] = &[
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/apply-patch+yaml",
];

fn query_params() -> Value {
    json!([
        {"name":"dryRun","in":"query","schema":{"type":"string","uniqueItems":true}},
        {"name":"fieldManager","in":"query","schema":{"type":"string","uniqueItems":true}},
        {"name":"fieldValidation","in":"query","schema":{"type":"string","uniqueItems":true}},
        {"name":"force","in":"query","schema":{"type":"boolean","uniqueItems":true}}
    ])
}

fn openapi_gv(group: &str, version: &str) -> Option<Value> {
    let mut paths = serde_json::Map::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
        let prefix = format!("/{}", gv_path(group, version));
        let (coll, item) = if r.namespaced {
            (
                format!("{prefix}/namespaces/{{namespace}}/{}", r.plural),
                format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", r.plural),
            )
        } else {
            (
                format!("{prefix}/{}", r.plural),
                format!("{prefix}/{}/{{name}}", r.plural),
            )
        };
        let body = |types: &[&str]| {
            let mut c = serde_json::Map::new();
            for t in types {
                c.insert(t.to_string(), json!({"schema":{"type":"object"}}));
            }
            json!({"content": c})
        };
        let op = |action: &str, types: &[&str]| {
            json!({"operationId": format!("{action}{}", r.kind), "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk, "parameters": query_params(),
                "requestBody": body(types), "responses": {"200": {"description": "OK"}, "201": {"description": "Created"}}})
        };
        paths.insert(
            coll,
            json!({"post": op("post", &["*/*"]), "parameters": [{"name":"namespace","in":"path","required":true,"schema":{"type":"string"}}]}),
        );
        paths.insert(
            item,
            json!({"put": op("put", &["*/*"]), "patch": op("patch", PATCH_TYPES),
                "parameters": [{"name":"name","in":"path","required":true,"schema":{"type":"string"}}]}),
        );
    }
    if paths.is_empty() {
        return None;
    }
    Some(
        json!({"openapi":"3.0.0","info":{"title":"Kubernetes","version":"v1.32.4"},"paths": paths,"components":{"schemas":{}}}),
    )
}

pub fn openapi(path: &str) -> Response {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        ["openapi", "v3"] => {
            let mut paths = serde_json::Map::new();
            for (g, v) in group_versions() {
                let p = gv_path(g, v);
                paths.insert(
                    p.clone(),
                    json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash=0000000000000001")}),
                );
            }
            json_response(&json!({"paths": paths}), "application/json")
        }
        ["openapi", "v3", "api", v] => {
            openapi_gv("", v).map_or_else(not_found, |d| json_response(&d, "application/json"))
        }
        ["openapi", "v3", "apis", g, v] => {
            openapi_gv(g, v).map_or_else(not_found, |d| json_response(&d, "application/json"))
        }
        _ => not_found(),
    }
}
