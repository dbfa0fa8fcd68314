//! The read model: each record's fields as JSON, written in the same transaction as the change
//! bytes that produced them, so reads never need the Automerge document in memory.

use rusqlite::{OptionalExtension, Transaction, params};

use super::{Space, Store};
use crate::error::Result;

/// One record's row, or `None` data when the document no longer holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewRow {
    /// The record id.
    pub id: String,
    /// What the document holds.
    pub data: Option<RowData>,
}

/// A record as the read model stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowData {
    /// The winning values as a JSON object.
    pub fields: String,
    /// Concurrent values as a JSON array; `None` when there are none.
    pub conflicts: Option<String>,
    /// The envelope, copied out of `fields`.
    pub envelope: Envelope,
}

/// The envelope fields a timeline page is picked by.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Envelope {
    /// The stored kind name.
    pub kind: String,
    /// The author's id.
    pub author: String,
    /// Creation time (unix ms).
    pub created_at: i64,
    /// Whether it is a removal placeholder.
    pub removed: bool,
}

/// What a space's document says after a commit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpaceView {
    /// The document's heads (hex, space separated).
    pub heads: String,
    /// The partners map as a JSON array.
    pub partners: String,
    /// The document's schema version.
    pub schema_version: i64,
}

/// A change to a space's read model, committed with the change bytes behind it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewUpdate {
    /// The space.
    pub space: Space,
    /// Its new head row.
    pub head: SpaceView,
    /// Rows to write or delete.
    pub rows: Vec<ViewRow>,
    /// Whether `rows` is every record (older rows are dropped first).
    pub full: bool,
}

impl Store {
    pub(crate) fn write_view(tx: &Transaction<'_>, update: &ViewUpdate) -> Result<()> {
        let space = update.space.as_str();
        if update.full {
            tx.execute("DELETE FROM record_views WHERE space = ?1", [space])?;
        }
        {
            let mut put = tx.prepare_cached(
                "INSERT INTO record_views \
                 (space, id, fields, conflicts, kind, author, created_at, removed) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                 ON CONFLICT (space, id) DO UPDATE SET fields = excluded.fields, \
                 conflicts = excluded.conflicts, kind = excluded.kind, \
                 author = excluded.author, created_at = excluded.created_at, \
                 removed = excluded.removed",
            )?;
            let mut delete =
                tx.prepare_cached("DELETE FROM record_views WHERE space = ?1 AND id = ?2")?;
            for row in &update.rows {
                match &row.data {
                    Some(d) => {
                        let e = &d.envelope;
                        put.execute(params![
                            space,
                            row.id,
                            d.fields,
                            d.conflicts,
                            e.kind,
                            e.author,
                            e.created_at,
                            e.removed
                        ])?;
                    }
                    None => {
                        delete.execute(params![space, row.id])?;
                    }
                }
            }
        }
        let head = &update.head;
        tx.prepare_cached(
            "INSERT INTO space_views (space, heads, partners, schema_version) \
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT (space) DO UPDATE SET heads = excluded.heads, \
             partners = excluded.partners, schema_version = excluded.schema_version",
        )?
        .execute(params![
            space,
            head.heads,
            head.partners,
            head.schema_version
        ])?;
        Ok(())
    }

    /// Writes a read-model update in its own transaction.
    pub(crate) fn update_view(&mut self, update: &ViewUpdate) -> Result<()> {
        let tx = self.conn.transaction()?;
        Self::write_view(&tx, update)?;
        tx.commit()?;
        Ok(())
    }

    /// A space's head row, or `None` before its read model was first built.
    pub fn space_view(&self, space: Space) -> Result<Option<SpaceView>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT heads, partners, schema_version FROM space_views WHERE space = ?1",
            )?
            .query_row([space.as_str()], |r| {
                Ok(SpaceView {
                    heads: r.get(0)?,
                    partners: r.get(1)?,
                    schema_version: r.get(2)?,
                })
            })
            .optional()?)
    }

    /// One record's stored data in a space.
    pub fn view_row(&self, space: Space, id: &str) -> Result<Option<RowData>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT fields, conflicts, kind, author, created_at, removed FROM record_views \
                 WHERE space = ?1 AND id = ?2",
            )?
            .query_row(params![space.as_str(), id], |r| row_data(r, 0))
            .optional()?)
    }

    /// Whether a space's document holds record `id`.
    pub fn view_has(&self, space: Space, id: &str) -> Result<bool> {
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM record_views WHERE space = ?1 AND id = ?2")?
            .exists(params![space.as_str(), id])?)
    }

    /// Every record's row in a space, in id order.
    pub fn view_rows(&self, space: Space) -> Result<Vec<ViewRow>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, fields, conflicts, kind, author, created_at, removed FROM record_views \
             WHERE space = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([space.as_str()], |r| {
            Ok(ViewRow {
                id: r.get(0)?,
                data: Some(row_data(r, 1)?),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Both spaces' envelopes newest first (by `created_at`, then id, both descending), those
    /// strictly before `before` when given; `visit` sees each row with its space and returns
    /// false to stop. Walks an index, so a page costs what it reads, not the journal's size.
    pub fn visit_newest(
        &self,
        before: Option<(i64, &str)>,
        mut visit: impl FnMut(Space, &str, Envelope) -> Result<bool>,
    ) -> Result<()> {
        const COLUMNS: &str =
            "SELECT space, id, kind, author, created_at, removed FROM record_views";
        const NEWEST: &str = "ORDER BY created_at DESC, id DESC";
        let mut stmt;
        let mut rows = match before {
            Some((at, id)) => {
                stmt = self.conn.prepare_cached(&format!(
                    "{COLUMNS} WHERE (created_at, id) < (?1, ?2) {NEWEST}"
                ))?;
                stmt.query(params![at, id])?
            }
            None => {
                stmt = self.conn.prepare_cached(&format!("{COLUMNS} {NEWEST}"))?;
                stmt.query([])?
            }
        };
        while let Some(row) = rows.next()? {
            let space = match row.get_ref(0)?.as_str().map_err(rusqlite::Error::from)? {
                "couple" => Space::Couple,
                _ => Space::Personal,
            };
            let id = row.get_ref(1)?.as_str().map_err(rusqlite::Error::from)?;
            if !visit(space, id, envelope(row, 2)?)? {
                break;
            }
        }
        Ok(())
    }
}

fn envelope(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Envelope> {
    Ok(Envelope {
        kind: r.get(at)?,
        author: r.get(at + 1)?,
        created_at: r.get(at + 2)?,
        removed: r.get(at + 3)?,
    })
}

fn row_data(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<RowData> {
    Ok(RowData {
        fields: r.get(at)?,
        conflicts: r.get(at + 1)?,
        envelope: envelope(r, at + 2)?,
    })
}
