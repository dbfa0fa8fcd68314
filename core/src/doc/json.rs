//! Moving values between Automerge and JSON.
//!
//! Records are read into JSON and then into typed bodies with serde; edits go the other way.
//! Lists and maps become Automerge objects; a list is always written whole, because a list in a
//! journal (mood tags, feelings) is one choice, not a set of characters to interleave.

use automerge::{
    ObjId, ObjType, ReadDoc, ScalarValue, Value as AmValue, transaction::Transactable,
};
use serde_json::{Map, Number, Value};

use crate::error::{Error, Result};

/// Reads the value an Automerge object holds (the winner of every key) as JSON.
pub(crate) fn obj_to_json<R: ReadDoc>(doc: &R, obj: &ObjId) -> Value {
    match doc.object_type(obj) {
        Ok(ObjType::Map) | Ok(ObjType::Table) => {
            let mut map = Map::new();
            for item in doc.map_range(obj, ..) {
                let id = item.id();
                map.insert(
                    item.key.to_string(),
                    value_to_json(doc, item.value.into(), &id),
                );
            }
            Value::Object(map)
        }
        Ok(ObjType::List) => Value::Array(
            doc.list_range(obj, ..)
                .map(|item| {
                    let id = item.id();
                    value_to_json(doc, item.value.into(), &id)
                })
                .collect(),
        ),
        Ok(ObjType::Text) => Value::String(doc.text(obj).unwrap_or_default()),
        Err(_) => Value::Null,
    }
}

/// One Automerge value as JSON; `id` names the object when the value is one.
pub(crate) fn value_to_json<R: ReadDoc>(doc: &R, value: AmValue<'_>, id: &ObjId) -> Value {
    match value {
        AmValue::Object(_) => obj_to_json(doc, id),
        AmValue::Scalar(s) => scalar_to_json(&s),
    }
}

fn scalar_to_json(s: &ScalarValue) -> Value {
    match s {
        ScalarValue::Str(s) => Value::String(s.to_string()),
        ScalarValue::Int(i) => Value::Number((*i).into()),
        ScalarValue::Uint(u) => Value::Number((*u).into()),
        ScalarValue::F64(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
        ScalarValue::Counter(c) => Value::Number(i64::from(c).into()),
        ScalarValue::Timestamp(t) => Value::Number((*t).into()),
        ScalarValue::Boolean(b) => Value::Bool(*b),
        ScalarValue::Null => Value::Null,
        // Bytes and unknown scalars are not used by this version; show them as null.
        _ => Value::Null,
    }
}

fn json_to_scalar(v: &Value) -> Result<ScalarValue> {
    Ok(match v {
        Value::Null => ScalarValue::Null,
        Value::Bool(b) => ScalarValue::Boolean(*b),
        Value::String(s) => ScalarValue::Str(s.as_str().into()),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                ScalarValue::Int(i)
            } else if let Some(u) = n.as_u64() {
                ScalarValue::Uint(u)
            } else {
                ScalarValue::F64(n.as_f64().unwrap_or_default())
            }
        }
        Value::Array(_) | Value::Object(_) => {
            return Err(Error::Corrupt("expected a scalar".into()));
        }
    })
}

/// Writes `value` at `key` of the map `obj`, replacing what was there.
pub(crate) fn put_json<T: Transactable>(
    tx: &mut T,
    obj: &ObjId,
    key: &str,
    value: &Value,
) -> Result<()> {
    match value {
        Value::Array(items) => {
            let list = tx.put_object(obj, key, ObjType::List)?;
            fill_list(tx, &list, items)?;
        }
        Value::Object(map) => {
            let child = tx.put_object(obj, key, ObjType::Map)?;
            for (k, v) in map {
                put_json(tx, &child, k, v)?;
            }
        }
        scalar => tx.put(obj, key, json_to_scalar(scalar)?)?,
    }
    Ok(())
}

fn fill_list<T: Transactable>(tx: &mut T, list: &ObjId, items: &[Value]) -> Result<()> {
    for (i, item) in items.iter().enumerate() {
        match item {
            Value::Array(inner) => {
                let child = tx.insert_object(list, i, ObjType::List)?;
                fill_list(tx, &child, inner)?;
            }
            Value::Object(map) => {
                let child = tx.insert_object(list, i, ObjType::Map)?;
                for (k, v) in map {
                    put_json(tx, &child, k, v)?;
                }
            }
            scalar => tx.insert(list, i, json_to_scalar(scalar)?)?,
        }
    }
    Ok(())
}
