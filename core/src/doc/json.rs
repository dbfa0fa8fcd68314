//! Moving values between Automerge and JSON.
//!
//! Records are read into JSON and then into typed bodies with serde; edits go the other way.
//! Lists and maps become Automerge objects; a list is always written whole, because a list in a
//! journal (mood tags, feelings) is one choice, not a set of characters to interleave.

use automerge::{
    ObjId, ObjType, ReadDoc, ScalarValue, Value as AmValue, transaction::Transactable,
};
use serde_json::{Map, Number, Value};

use super::MAX_DEPTH;
use crate::error::{Error, Result};

/// Reads the value an Automerge object holds (the winner of every key) as JSON. Objects more
/// than [`MAX_DEPTH`] levels below `obj` read as null: the app writes none, and a chain of
/// nested maps must not recurse (nor build a value that recurses to write or drop) without
/// bound.
pub(crate) fn obj_to_json<R: ReadDoc>(doc: &R, obj: &ObjId) -> Value {
    obj_within(doc, obj, MAX_DEPTH)
}

fn obj_within<R: ReadDoc>(doc: &R, obj: &ObjId, depth: usize) -> Value {
    let Some(below) = depth.checked_sub(1) else {
        return Value::Null;
    };
    match doc.object_type(obj) {
        Ok(ObjType::Map) | Ok(ObjType::Table) => {
            let mut map = Map::new();
            for item in doc.map_range(obj, ..) {
                let id = item.id();
                map.insert(
                    item.key.to_string(),
                    value_within(doc, item.value.into(), &id, below),
                );
            }
            Value::Object(map)
        }
        Ok(ObjType::List) => Value::Array(
            doc.list_range(obj, ..)
                .map(|item| {
                    let id = item.id();
                    value_within(doc, item.value.into(), &id, below)
                })
                .collect(),
        ),
        Ok(ObjType::Text) => Value::String(doc.text(obj).unwrap_or_default()),
        Err(_) => Value::Null,
    }
}

/// One Automerge value as JSON; `id` names the object when the value is one (read as far as
/// [`obj_to_json`] reads).
pub(crate) fn value_to_json<R: ReadDoc>(doc: &R, value: AmValue<'_>, id: &ObjId) -> Value {
    value_within(doc, value, id, MAX_DEPTH)
}

fn value_within<R: ReadDoc>(doc: &R, value: AmValue<'_>, id: &ObjId, depth: usize) -> Value {
    match value {
        AmValue::Object(_) => obj_within(doc, id, depth),
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

#[cfg(test)]
pub(crate) mod tests {
    use automerge::{
        ActorId, Change,
        legacy::{ObjectId, OpId},
    };

    use super::*;
    use crate::doc::SpaceDoc;

    /// A journal whose one record holds `levels` nested maps under `text`, and that record's
    /// map. (Put together from its first two levels: a transaction takes seconds a thousand
    /// levels in a debug build.)
    pub(crate) fn deep(levels: u64) -> Result<(SpaceDoc, ObjId)> {
        let actor = ActorId::from([7u8; 16]);
        let mut scratch = SpaceDoc::genesis(actor.clone())?;
        let (_, bytes) = scratch.transact(|tx, h| {
            let record = tx.put_object(&h.records, "r", ObjType::Map)?;
            let text = tx.put_object(&record, "text", ObjType::Map)?;
            tx.put_object(&text, "x", ObjType::Map)?;
            Ok(())
        })?;
        let bytes = bytes.ok_or_else(|| Error::Corrupt("no change".into()))?;
        let mut change = Change::from_bytes(bytes)
            .map_err(|_| Error::Corrupt("a change".into()))?
            .decode();
        let level = change
            .operations
            .pop()
            .ok_or_else(|| Error::Corrupt("no level".into()))?;
        let start = change.start_op.get();
        for i in 2..levels {
            let mut op = level.clone();
            op.obj = ObjectId::Id(OpId(start + i - 1, actor.clone()));
            change.operations.push(op);
        }
        change.hash = None;
        let mut doc = SpaceDoc::genesis(actor)?;
        doc.apply_change(Change::from(change))?;
        let (_, record) = doc
            .am()
            .get(doc.records_obj(), "r")?
            .ok_or_else(|| Error::Corrupt("no record".into()))?;
        Ok((doc, record))
    }

    /// How many maps deep `value` goes.
    pub(crate) fn depth_of(value: &Value) -> usize {
        let mut depth = 0;
        let mut at = value;
        while let Value::Object(map) = at {
            depth += 1;
            match map.values().next() {
                Some(next) => at = next,
                None => break,
            }
        }
        depth
    }

    /// How many maps deep the object `obj` of `doc` goes, following the first key of each.
    pub(crate) fn maps_below(doc: &automerge::Automerge, obj: &ObjId) -> usize {
        let (mut depth, mut at) = (1, obj.clone());
        while let Some(key) = doc.keys(&at).next() {
            match doc.get(&at, key.as_str()) {
                Ok(Some((AmValue::Object(_), child))) => {
                    depth += 1;
                    at = child;
                }
                _ => break,
            }
        }
        depth
    }

    #[test]
    fn a_chain_of_maps_deeper_than_the_app_writes_reads_cut_short() -> Result<()> {
        let (doc, record) = deep(50_000)?;
        let read = obj_to_json(doc.am(), &record);
        assert_eq!(depth_of(&read), MAX_DEPTH);
        // What reads it next (the read model's row, its parse) takes it as it is.
        let row = serde_json::to_string(&read).map_err(|_| Error::Corrupt("row".into()))?;
        let again: Value = serde_json::from_str(&row).map_err(|_| Error::Corrupt("row".into()))?;
        assert_eq!(again, read);
        Ok(())
    }
}
