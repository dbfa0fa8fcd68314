//! Turning a record into labelled lines, shared by both formats.

use serde_json::Value;

use crate::{
    model::{Body, Record},
    query::BoundaryStatus,
};

/// A record's fields as (label, value) pairs worth printing, in the body's field order.
pub(crate) fn fields(record: &Record, boundary: Option<&BoundaryStatus>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Ok(Value::Object(map)) = serde_json::to_value(&record.body) else {
        return out;
    };
    for (key, value) in map {
        if matches!(
            key.as_str(),
            "kind" | "consents" | "claims" | "views" | "private_fields"
        ) {
            continue;
        }
        let text = match value {
            Value::Null => continue,
            Value::String(s) if s.is_empty() => continue,
            Value::String(s) => s,
            Value::Bool(true) => "yes".into(),
            Value::Bool(false) => continue,
            Value::Number(n) => n.to_string(),
            Value::Array(items) if items.is_empty() => continue,
            Value::Array(items) => items
                .iter()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                .collect::<Vec<_>>()
                .join(", "),
            Value::Object(o) => o
                .iter()
                .filter(|(k, _)| *k != "at")
                .map(|(k, v)| {
                    format!(
                        "{k}: {}",
                        v.as_str().map_or_else(|| v.to_string(), str::to_owned)
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
        };
        out.push((label(&key), text));
    }
    if let Some(b) = boundary {
        out.push(("Status".into(), format!("{:?}", b.state).to_lowercase()));
    }
    if let Body::Commitment(c) = &record.body {
        let done = c
            .claims
            .values()
            .filter(|x| x.status == crate::model::ClaimStatus::Done)
            .count();
        let confirmed = c
            .views
            .values()
            .filter(|v| v.view == crate::model::PartnerView::Confirmed)
            .count();
        out.push((
            "Follow-through".into(),
            format!("{done} claimed done, {confirmed} confirmed"),
        ));
    }
    out
}

fn label(key: &str) -> String {
    let spaced = key.replace('_', " ");
    let mut chars = spaced.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}
