//! PATCH bodies applied to a stored object: RFC 6902 JSON patch (add,
//! remove, replace, test, move, copy over JSON pointers) and RFC 7386 merge
//! patch (also used, as an approximation, for strategic-merge and apply
//! patches).

use serde_json::Value;

/// Why a patch could not be applied.
#[derive(Debug)]
pub enum PatchError {
    /// Malformed patch document (400 BadRequest).
    BadRequest(String),
    /// Well-formed but not applicable, e.g. a failing `test` (422 Invalid).
    Invalid(String),
}

/// Apply a JSON patch (an array of operations) to `doc`, all or nothing.
pub fn json_patch(doc: &Value, ops: &Value) -> Result<Value, PatchError> {
    let ops = ops
        .as_array()
        .ok_or_else(|| PatchError::BadRequest("json patch must be an array of operations".into()))?;
    let mut out = doc.clone();
    for op in ops {
        apply_op(&mut out, op)?;
    }
    Ok(out)
}

fn apply_op(doc: &mut Value, op: &Value) -> Result<(), PatchError> {
    let field = |name: &str| {
        op[name]
            .as_str()
            .ok_or_else(|| PatchError::BadRequest(format!("json patch operation without string {name:?}: {op}")))
    };
    let value = || {
        op.get("value")
            .cloned()
            .ok_or_else(|| PatchError::BadRequest(format!("json patch operation without \"value\": {op}")))
    };
    let path = pointer(field("path")?)?;
    match field("op")? {
        "add" => add(doc, &path, value()?),
        "remove" => remove(doc, &path).map(drop),
        "replace" => {
            let target = get_mut(doc, &path)?;
            *target = value()?;
            Ok(())
        }
        "test" => {
            let expected = value()?;
            match get_mut(doc, &path) {
                Ok(actual) if *actual == expected => Ok(()),
                Ok(actual) => Err(PatchError::Invalid(format!(
                    "testing value {} failed: {actual} != {expected}",
                    field("path")?
                ))),
                Err(e) => Err(e),
            }
        }
        "move" => {
            let v = remove(doc, &pointer(field("from")?)?)?;
            add(doc, &path, v)
        }
        "copy" => {
            let v = get_mut(doc, &pointer(field("from")?)?)?.clone();
            add(doc, &path, v)
        }
        other => Err(PatchError::BadRequest(format!(
            "unknown json patch operation {other:?}"
        ))),
    }
}

/// Parse a JSON pointer into its unescaped reference tokens.
fn pointer(p: &str) -> Result<Vec<String>, PatchError> {
    if p.is_empty() {
        return Ok(Vec::new());
    }
    let rest = p
        .strip_prefix('/')
        .ok_or_else(|| PatchError::BadRequest(format!("invalid JSON pointer {p:?}")))?;
    Ok(rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn missing(path: &[String]) -> PatchError {
    PatchError::Invalid(format!("path /{} does not exist", path.join("/")))
}

fn index(token: &str, len: usize, path: &[String]) -> Result<usize, PatchError> {
    token
        .parse::<usize>()
        .ok()
        .filter(|&i| i < len)
        .ok_or_else(|| missing(path))
}

fn get_mut<'a>(doc: &'a mut Value, path: &[String]) -> Result<&'a mut Value, PatchError> {
    let mut cur = doc;
    for token in path {
        cur = match cur {
            Value::Object(m) => m.get_mut(token).ok_or_else(|| missing(path))?,
            Value::Array(a) => {
                let i = index(token, a.len(), path)?;
                &mut a[i]
            }
            _ => return Err(missing(path)),
        };
    }
    Ok(cur)
}

fn add(doc: &mut Value, path: &[String], value: Value) -> Result<(), PatchError> {
    let Some((last, parent)) = path.split_last() else {
        *doc = value;
        return Ok(());
    };
    match get_mut(doc, parent)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(a) if last == "-" => {
            a.push(value);
            Ok(())
        }
        Value::Array(a) => {
            let i = index(last, a.len() + 1, path)?;
            a.insert(i, value);
            Ok(())
        }
        _ => Err(missing(path)),
    }
}

fn remove(doc: &mut Value, path: &[String]) -> Result<Value, PatchError> {
    let (last, parent) = path
        .split_last()
        .ok_or_else(|| PatchError::Invalid("cannot remove the whole document".into()))?;
    match get_mut(doc, parent)? {
        Value::Object(m) => m.remove(last).ok_or_else(|| missing(path)),
        Value::Array(a) => {
            let i = index(last, a.len(), path)?;
            Ok(a.remove(i))
        }
        _ => Err(missing(path)),
    }
}

/// RFC 7386 merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    let t = target.as_object_mut().expect("just made an object");
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}
