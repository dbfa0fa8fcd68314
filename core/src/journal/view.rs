//! Keeping the store's read model in step with the documents.

use serde_json::{Map, Value};

use super::{
    Journal, Partner,
    read::{self, ClassifyName},
};
use crate::{
    doc::SpaceDoc,
    error::{Error, Result},
    ids::RecordId,
    model::Conflict,
    store::{Envelope, RowData, Space, SpaceView, ViewRow, ViewUpdate},
};

fn json_err(e: serde_json::Error) -> Error {
    Error::Corrupt(format!(
        "record view cannot be encoded: {}",
        e.classify_name()
    ))
}

/// The read-model row of record `id` as `doc` holds it.
fn row(doc: &SpaceDoc, id: RecordId) -> Result<ViewRow> {
    let data = match doc.record_json(id) {
        Some((fields, conflicts)) => {
            let text = |key: &str| {
                fields
                    .get(key)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            let envelope = Envelope {
                kind: text("kind"),
                author: text("author"),
                created_at: fields
                    .get("created_at")
                    .and_then(Value::as_i64)
                    .unwrap_or_default(),
                removed: fields
                    .get("removed")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            };
            let conflicts = if conflicts.is_empty() {
                None
            } else {
                Some(serde_json::to_string(&conflicts).map_err(json_err)?)
            };
            Some(RowData {
                fields: serde_json::to_string(&fields).map_err(json_err)?,
                conflicts,
                envelope,
            })
        }
        None => None,
    };
    Ok(ViewRow {
        id: id.to_string(),
        data,
    })
}

/// The head row of `doc`.
fn head(
    doc: &SpaceDoc,
    couple_space: Option<&[u8; 32]>,
    checker: &super::registry::CertChecker,
) -> Result<SpaceView> {
    let partners = read::partners(doc, couple_space, checker);
    Ok(SpaceView {
        heads: doc.heads_text(),
        partners: serde_json::to_string(&partners).map_err(json_err)?,
        schema_version: doc.schema_version(),
    })
}

/// Decodes a stored row into fields and conflicts.
pub(super) fn parse_row(id: &str, data: RowData) -> Result<(Map<String, Value>, Vec<Conflict>)> {
    let bad = |e: serde_json::Error| {
        Error::Corrupt(format!(
            "stored view of record {id} cannot be read: {}",
            e.classify_name()
        ))
    };
    let fields = serde_json::from_str(&data.fields).map_err(bad)?;
    let conflicts = match data.conflicts {
        Some(c) => serde_json::from_str(&c).map_err(bad)?,
        None => Vec::new(),
    };
    Ok((fields, conflicts))
}

/// The partners a head row lists.
pub(super) fn parse_partners(view: &SpaceView) -> Result<Vec<Partner>> {
    serde_json::from_str(&view.partners).map_err(|e| {
        Error::Corrupt(format!(
            "stored partners cannot be read: {}",
            e.classify_name()
        ))
    })
}

impl Journal {
    /// The read-model update for records `ids` of `space` (`None`: every record), from its
    /// document in memory.
    pub(super) fn view_update(&self, space: Space, ids: Option<&[RecordId]>) -> Result<ViewUpdate> {
        let doc = self.doc(space)?;
        let (rows, full) = match ids {
            Some(ids) => (
                ids.iter().map(|id| row(doc, *id)).collect::<Result<_>>()?,
                false,
            ),
            None => {
                let mut rows = Vec::new();
                for id in doc.record_ids() {
                    let row = row(doc, id)?;
                    // A key whose winning value is not a record map has no row.
                    if row.data.is_some() {
                        rows.push(row);
                    }
                }
                (rows, true)
            }
        };
        Ok(ViewUpdate {
            space,
            // The registry lives in the couple's document only.
            head: head(
                doc,
                self.couple_space
                    .as_ref()
                    .filter(|_| space == Space::Couple),
                &self.cert_checker,
            )?,
            rows,
            full,
        })
    }

    /// The read-model update after a merge whose touched records are unknown (a snapshot):
    /// every record is rendered and compared with what is stored, and only the rows that differ
    /// are written. Returns the update and the records that changed.
    pub(super) fn view_resync(&self, space: Space) -> Result<(ViewUpdate, Vec<RecordId>)> {
        let mut update = self.view_update(space, None)?;
        let mut stored: std::collections::BTreeMap<String, ViewRow> = self
            .store
            .view_rows(space)?
            .into_iter()
            .map(|row| (row.id.clone(), row))
            .collect();
        let mut rows: Vec<ViewRow> = Vec::new();
        for row in update.rows {
            if stored.remove(&row.id).as_ref() != Some(&row) {
                rows.push(row);
            }
        }
        rows.extend(stored.into_keys().map(|id| ViewRow { id, data: None }));
        let changed = rows.iter().filter_map(|r| r.id.parse().ok()).collect();
        update.rows = rows;
        update.full = false;
        Ok((update, changed))
    }

    /// Takes in committed read-model updates (the couple's partners and schema version are
    /// kept in memory).
    ///
    /// Runs after the commit is durable, so it never fails the call: a partners list that
    /// cannot be read is logged and the old one kept.
    pub(super) fn views_committed(&mut self, updates: &[ViewUpdate]) {
        for update in updates {
            if update.space == Space::Couple {
                match parse_partners(&update.head) {
                    Ok(partners) => self.partners = partners,
                    Err(e) => tracing::warn!(error = %e, "partners not refreshed"),
                }
                self.schema_version = update.head.schema_version;
            }
        }
    }

    /// Rebuilds a space's whole read model from its document.
    pub(super) fn rebuild_view(&mut self, space: Space) -> Result<()> {
        let update = self.view_update(space, None)?;
        self.store.update_view(&update)?;
        self.views_committed(&[update]);
        Ok(())
    }

    /// Brings a space's read model back in line with its document, writing only what differs.
    pub(super) fn resync_view(&mut self, space: Space) -> Result<()> {
        let (update, _) = self.view_resync(space)?;
        self.store.update_view(&update)?;
        self.views_committed(&[update]);
        Ok(())
    }

    /// Checks that the read model says exactly what the documents say (waits for them to
    /// load). For tests and diagnostics; names record ids, never their content.
    pub fn verify_read_model(&self) -> Result<()> {
        for space in Space::ALL {
            let want = self.view_update(space, None)?;
            let stored = self.store.view_rows(space)?;
            if stored != want.rows {
                let differs = want
                    .rows
                    .iter()
                    .zip(&stored)
                    .find(|(w, s)| w != s)
                    .map(|(w, _)| w.id.clone())
                    .unwrap_or_else(|| "(a missing or extra row)".into());
                return Err(Error::Corrupt(format!(
                    "the {} read model differs from its document at record {differs}",
                    space.as_str()
                )));
            }
            if self.store.space_view(space)?.as_ref() != Some(&want.head) {
                return Err(Error::Corrupt(format!(
                    "the {} read model's heads differ from its document",
                    space.as_str()
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partners_stored_before_devices_existed_still_read() -> Result<()> {
        let view = SpaceView {
            heads: String::new(),
            partners:
                r#"[{"id":"0192b7a4-5b6c-7d8e-9f00-112233445566","name":"Alex","joined_at":1}]"#
                    .into(),
            schema_version: 1,
        };
        let partners = parse_partners(&view)?;
        assert_eq!(partners.len(), 1);
        assert_eq!(partners[0].name, "Alex");
        assert_eq!(partners[0].identity, None);
        assert!(partners[0].devices.is_empty());
        Ok(())
    }
}
