//! RFC 6902 JSON patch (`kubectl patch --type=json`): add, remove, replace, test, move, copy.

use serde_json::Value;

fn unescape(s: &str) -> String {
    s.replace("~1", "/").replace("~0", "~")
}

fn split(path: &str) -> Result<(Vec<String>, String), String> {
    let mut parts: Vec<String> = path.split('/').skip(1).map(unescape).collect();
    let last = parts
        .pop()
        .ok_or_else(|| format!("invalid JSON pointer {path:?}"))?;
    Ok((parts, last))
}

fn parent<'a>(doc: &'a mut Value, parts: &[String], path: &str) -> Result<&'a mut Value, String> {
    let mut cur = doc;
    for p in parts {
        cur = match cur {
            Value::Object(m) => m.get_mut(p),
            Value::Array(a) => p.parse::<usize>().ok().and_then(move |i| a.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| format!("path {path:?} does not exist"))?;
    }
    Ok(cur)
}

fn get(doc: &Value, path: &str) -> Option<Value> {
    doc.pointer(path).cloned()
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, String> {
    let (parts, last) = split(path)?;
    match parent(doc, &parts, path)? {
        Value::Object(m) => m
            .remove(&last)
            .ok_or_else(|| format!("path {path:?} does not exist")),
        Value::Array(a) => {
            let i: usize = last.parse().map_err(|_| format!("bad index in {path:?}"))?;
            (i < a.len())
                .then(|| a.remove(i))
                .ok_or_else(|| format!("index out of range in {path:?}"))
        }
        _ => Err(format!("path {path:?} does not exist")),
    }
}

fn add(doc: &mut Value, path: &str, v: Value) -> Result<(), String> {
    if path.is_empty() {
        *doc = v;
        return Ok(());
    }
    let (parts, last) = split(path)?;
    match parent(doc, &parts, path)? {
        Value::Object(m) => {
            m.insert(last, v);
            Ok(())
        }
        Value::Array(a) => {
            let i = if last == "-" {
                a.len()
            } else {
                last.parse().map_err(|_| format!("bad index in {path:?}"))?
            };
            if i > a.len() {
                return Err(format!("index out of range in {path:?}"));
            }
            a.insert(i, v);
            Ok(())
        }
        _ => Err(format!("path {path:?} does not exist")),
    }
}

pub fn apply(doc: &mut Value, ops: &Value) -> Result<(), String> {
    let ops = ops
        .as_array()
        .ok_or("a JSON patch must be an array of operations")?;
    for op in ops {
        let kind = op
            .get("op")
            .and_then(Value::as_str)
            .ok_or("operation without \"op\"")?;
        let path = op
            .get("path")
            .and_then(Value::as_str)
            .ok_or("operation without \"path\"")?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| format!("{kind} at {path:?} needs a value"))
        };
        match kind {
            "add" => add(doc, path, value()?)?,
            "remove" => {
                remove(doc, path)?;
            }
            "replace" => {
                remove(doc, path)?;
                add(doc, path, value()?)?;
            }
            "test" => {
                if get(doc, path) != Some(value()?) {
                    return Err(format!("test failed at {path:?}"));
                }
            }
            "move" | "copy" => {
                let from = op
                    .get("from")
                    .and_then(Value::as_str)
                    .ok_or("move/copy without \"from\"")?;
                let v = if kind == "move" {
                    remove(doc, from)?
                } else {
                    get(doc, from).ok_or_else(|| format!("path {from:?} does not exist"))?
                };
                add(doc, path, v)?;
            }
            other => return Err(format!("unknown JSON patch operation {other:?}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn operations_apply_in_order() {
        let cases = [
            (
                json!({"a": 1}),
                json!([{"op": "add", "path": "/b", "value": 2}]),
                Ok(json!({"a": 1, "b": 2})),
            ),
            (
                json!({"a": [1, 3]}),
                json!([{"op": "add", "path": "/a/1", "value": 2}]),
                Ok(json!({"a": [1, 2, 3]})),
            ),
            (
                json!({"a": [1]}),
                json!([{"op": "add", "path": "/a/-", "value": 2}]),
                Ok(json!({"a": [1, 2]})),
            ),
            (
                json!({"a": 1, "b": 2}),
                json!([{"op": "remove", "path": "/a"}]),
                Ok(json!({"b": 2})),
            ),
            (
                json!({"a": 1}),
                json!([{"op": "replace", "path": "/a", "value": 5}]),
                Ok(json!({"a": 5})),
            ),
            (
                json!({"a": {"x": 1}}),
                json!([{"op": "move", "from": "/a/x", "path": "/y"}]),
                Ok(json!({"a": {}, "y": 1})),
            ),
            (
                json!({"a": 1}),
                json!([{"op": "copy", "from": "/a", "path": "/b"}]),
                Ok(json!({"a": 1, "b": 1})),
            ),
            (
                json!({"m": {"l/k": 1}}),
                json!([{"op": "remove", "path": "/m/l~1k"}]),
                Ok(json!({"m": {}})),
            ),
            (
                json!({"a": 1}),
                json!([{"op": "test", "path": "/a", "value": 2}]),
                Err(()),
            ),
            (
                json!({"a": 1}),
                json!([{"op": "remove", "path": "/zz"}]),
                Err(()),
            ),
            (json!({"a": 1}), json!({"op": "add"}), Err(())),
        ];
        for (mut doc, ops, want) in cases {
            let got = apply(&mut doc, &ops).map(|()| doc.clone()).map_err(|_| ());
            assert_eq!(got, want, "{ops}");
        }
    }
}
