//! `--load DIR`: every *.json / *.yaml / *.yml file, single objects, multi-document YAML or `List`s.

use std::path::Path;

use serde_json::{Value, json};

use crate::resources::{RESOURCES, find, find_kind};
use crate::store::Store;

fn parse_file(path: &Path) -> Result<Vec<Value>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let is_json = path.extension().is_some_and(|e| e == "json");
    let docs: Vec<Value> = if is_json {
        vec![
            serde_json::from_str(&text)
                .map_err(|e| format!("{}: invalid JSON: {e}", path.display()))?,
        ]
    } else {
        serde_saphyr::from_multiple::<Value>(&text)
            .map_err(|e| format!("{}: invalid YAML: {e}", path.display()))?
    };
    let mut out = Vec::new();
    for d in docs {
        match d.get("items").and_then(Value::as_array) {
            Some(items)
                if d.get("kind")
                    .and_then(Value::as_str)
                    .is_some_and(|k| k.ends_with("List")) =>
            {
                out.extend(items.iter().cloned())
            }
            _ if d.is_null() => {}
            _ => out.push(d),
        }
    }
    Ok(out)
}

/// Stores one object at the place its apiVersion/kind/namespace say; returns false if unknown.
pub fn store_object(store: &Store, obj: Value, origin: &str) -> bool {
    let api_version = obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let kind = obj
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let Some(res) = find_kind(&api_version, &kind) else {
        log::warn!("{origin}: skipping {api_version} {kind}: not a resource the sandbox serves");
        return false;
    };
    let ns = if RESOURCES[res].namespaced {
        obj.get("metadata")
            .and_then(|m| m.get("namespace"))
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_string()
    } else {
        String::new()
    };
    match store.insert_loaded(res, &ns, obj) {
        Ok(_) => true,
        Err(e) => {
            log::warn!("{origin}: skipping {kind}: {}", e.message);
            false
        }
    }
}

pub fn load_dir(store: &Store, dir: &Path) -> Result<usize, String> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("--load {}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "json" || e == "yaml" || e == "yml")
        })
        .collect();
    files.sort();
    let mut n = 0;
    for f in files {
        match parse_file(&f) {
            Ok(objs) => {
                for o in objs {
                    if store_object(store, o, &f.display().to_string()) {
                        n += 1;
                    }
                }
            }
            Err(e) => log::warn!("{e}"),
        }
    }
    Ok(n)
}

/// Creates the Namespace objects that stored objects refer to, as a real cluster would have them.
pub fn ensure_namespaces(store: &Store) {
    let Some(ns_res) = find("", "v1", "namespaces") else {
        return;
    };
    let mut names: std::collections::BTreeSet<String> = ["default", "kube-system"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for (i, r) in RESOURCES.iter().enumerate() {
        if r.namespaced {
            let (items, _) = store.snapshot(i, None);
            names.extend(items.into_iter().map(|o| o.namespace));
        }
    }
    for n in names {
        if store.get(ns_res, "", &n).is_err() {
            let _ = store.insert_loaded(
                ns_res,
                "",
                json!({"apiVersion":"v1","kind":"Namespace","metadata":{"name": n, "labels": {"kubernetes.io/metadata.name": n}},"spec":{"finalizers":["kubernetes"]},"status":{"phase":"Active"}}),
            );
        }
    }
}
