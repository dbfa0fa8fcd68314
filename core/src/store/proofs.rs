//! The couple's signed-change bookkeeping: each merged change's proof, the devices introduced
//! here, changes waiting for what they depend on, and changes refused for good.

use rusqlite::{Transaction, params};

use super::{Space, Store};
use crate::{crypto::GroupScope, error::Result};

/// A change's proof as stored: (change hash, signing key id, signature, whether the signature
/// is a group's, stored in `proof_groups`).
pub(crate) type ProofRow = ([u8; 32], [u8; 16], [u8; 64], bool);

/// A change waiting for its dependencies: (hash, bytes, signer, signature, whether a group's).
pub(crate) type HeldRow = ([u8; 32], Vec<u8>, [u8; 16], [u8; 64], bool);

/// One change's stored proof: (signer, signature, whether the signature is a group's).
pub(crate) type StoredProof = ([u8; 16], [u8; 64], bool);

/// A group proof as stored: (signer, the chunks it stood for, signature, hashes increasing).
pub(crate) type GroupRow = ([u8; 16], GroupScope, [u8; 64], Vec<[u8; 32]>);

/// What the guard decided in one merge, committed with it. (`Debug` shows counts only: the
/// change bytes hold journal text.)
#[derive(Default)]
pub(crate) struct Checked {
    /// The accepted changes' bytes, concatenated (stored in place of what was pulled).
    pub(crate) accepted: Vec<u8>,
    /// Their proofs.
    pub(crate) proofs: Vec<ProofRow>,
    /// Devices newly introduced: (key id, introduction).
    pub(crate) intros: Vec<([u8; 16], Vec<u8>)>,
    /// What still waits: it replaces what waited before.
    pub(crate) held: Vec<HeldRow>,
    /// Hashes refused for good.
    pub(crate) banned: Vec<[u8; 32]>,
    /// Proofs of changes held already, kept unless one is kept already.
    pub(crate) known: Vec<ProofRow>,
    /// The groups the proofs above (and the held changes') belong to.
    pub(crate) groups: Vec<GroupRow>,
}

impl std::fmt::Debug for Checked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checked")
            .field("accepted_bytes", &self.accepted.len())
            .field("proofs", &self.proofs.len())
            .field("intros", &self.intros.len())
            .field("held", &self.held.len())
            .field("banned", &self.banned.len())
            .field("known", &self.known.len())
            .field("groups", &self.groups.len())
            .finish()
    }
}

fn array<const N: usize>(bytes: Vec<u8>) -> Option<[u8; N]> {
    bytes.try_into().ok()
}

/// A group's scope as stored.
fn scope(device: [u8; 16], first: i64, last: i64) -> GroupScope {
    GroupScope {
        device,
        first_seq: u64::try_from(first).unwrap_or(0),
        last_seq: u64::try_from(last).unwrap_or(0),
    }
}

/// Hashes stored one after another (a trailing partial one is dropped).
pub(crate) fn split_hashes(bytes: &[u8]) -> Vec<[u8; 32]> {
    bytes
        .chunks_exact(32)
        .filter_map(|h| h.try_into().ok())
        .collect()
}

impl Store {
    /// Writes `checked` inside `tx`.
    pub(crate) fn write_checked(
        tx: &Transaction<'_>,
        space: Space,
        checked: &Checked,
    ) -> Result<()> {
        let s = space.as_str();
        Self::write_groups(tx, space, &checked.groups)?;
        Self::write_proofs(tx, space, &checked.proofs, true)?;
        Self::write_proofs(tx, space, &checked.known, false)?;
        Self::write_intros(tx, space, &checked.intros)?;
        {
            let mut ban = tx.prepare_cached(
                "INSERT OR IGNORE INTO refused_changes (space, hash) VALUES (?1, ?2)",
            )?;
            for hash in &checked.banned {
                ban.execute(params![s, &hash[..]])?;
            }
        }
        tx.execute("DELETE FROM held_changes WHERE space = ?1", [s])?;
        let mut held = tx.prepare_cached(
            "INSERT OR REPLACE INTO held_changes (space, hash, bytes, signer, proof, grp) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for (hash, bytes, signer, sig, grp) in &checked.held {
            held.execute(params![s, &hash[..], bytes, &signer[..], &sig[..], grp])?;
        }
        Ok(())
    }

    fn write_groups(tx: &Transaction<'_>, space: Space, groups: &[GroupRow]) -> Result<()> {
        let mut insert = tx.prepare_cached(
            "INSERT OR IGNORE INTO proof_groups \
             (space, signature, signer, device, first_seq, last_seq, hashes) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        for (signer, scope, sig, hashes) in groups {
            insert.execute(params![
                space.as_str(),
                &sig[..],
                &signer[..],
                &scope.device[..],
                i64::try_from(scope.first_seq).unwrap_or(i64::MAX),
                i64::try_from(scope.last_seq).unwrap_or(i64::MAX),
                hashes.as_flattened()
            ])?;
        }
        Ok(())
    }

    /// The group stored under `signature`.
    pub(crate) fn group(&self, space: Space, signature: &[u8; 64]) -> Result<Option<GroupRow>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT signer, device, first_seq, last_seq, hashes FROM proof_groups \
             WHERE space = ?1 AND signature = ?2",
        )?;
        let mut rows = stmt.query(params![space.as_str(), &signature[..]])?;
        let Some(row) = rows.next()? else {
            return Ok(None);
        };
        let (signer, device) = (row.get::<_, Vec<u8>>(0)?, row.get::<_, Vec<u8>>(1)?);
        let (first, last): (i64, i64) = (row.get(2)?, row.get(3)?);
        let hashes: Vec<u8> = row.get(4)?;
        Ok(array(signer).zip(array(device)).map(|(s, device)| {
            (
                s,
                scope(device, first, last),
                *signature,
                split_hashes(&hashes),
            )
        }))
    }

    /// Every stored group.
    pub(crate) fn all_groups(&self, space: Space) -> Result<Vec<GroupRow>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT signer, signature, device, first_seq, last_seq, hashes FROM proof_groups \
             WHERE space = ?1",
        )?;
        let rows = stmt.query_map([space.as_str()], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, Vec<u8>>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, Vec<u8>>(5)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (signer, sig, device, first, last, hashes) = row?;
            if let (Some(s), Some(g), Some(device)) = (array(signer), array(sig), array(device)) {
                out.push((s, scope(device, first, last), g, split_hashes(&hashes)));
            }
        }
        Ok(out)
    }

    /// Keeps introductions admitted outside a merge (this device's own).
    pub(crate) fn keep_intros(
        &mut self,
        space: Space,
        intros: &[([u8; 16], Vec<u8>)],
    ) -> Result<()> {
        let tx = self.conn.transaction()?;
        Self::write_intros(&tx, space, intros)?;
        tx.commit()?;
        Ok(())
    }

    fn write_intros(
        tx: &Transaction<'_>,
        space: Space,
        intros: &[([u8; 16], Vec<u8>)],
    ) -> Result<()> {
        let mut intro = tx.prepare_cached(
            "INSERT OR IGNORE INTO known_devices (space, key_id, intro) VALUES (?1, ?2, ?3)",
        )?;
        for (key, bytes) in intros {
            intro.execute(params![space.as_str(), &key[..], bytes])?;
        }
        Ok(())
    }

    /// Queues changes to push (signed when batched).
    pub(crate) fn queue_changes(&mut self, space: Space, changes: &[Vec<u8>]) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut insert =
                tx.prepare_cached("INSERT INTO unsent (space, bytes) VALUES (?1, ?2)")?;
            for change in changes {
                insert.execute(params![space.as_str(), change])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Keeps proofs this device made for its own changes (and the groups they belong to).
    pub(crate) fn keep_proofs(
        &mut self,
        space: Space,
        proofs: &[ProofRow],
        groups: &[GroupRow],
    ) -> Result<()> {
        let tx = self.conn.transaction()?;
        Self::write_groups(&tx, space, groups)?;
        Self::write_proofs(&tx, space, proofs, true)?;
        tx.commit()?;
        Ok(())
    }

    /// Writes proofs, each replacing a stored one for its change unless `replace` is false.
    fn write_proofs(
        tx: &Transaction<'_>,
        space: Space,
        proofs: &[ProofRow],
        replace: bool,
    ) -> Result<()> {
        let sql = if replace {
            "INSERT OR REPLACE INTO change_proofs (space, hash, signer, proof, grp) \
             VALUES (?1, ?2, ?3, ?4, ?5)"
        } else {
            "INSERT OR IGNORE INTO change_proofs (space, hash, signer, proof, grp) \
             VALUES (?1, ?2, ?3, ?4, ?5)"
        };
        let mut proof = tx.prepare_cached(sql)?;
        for (hash, signer, sig, grp) in proofs {
            proof.execute(params![
                space.as_str(),
                &hash[..],
                &signer[..],
                &sig[..],
                grp
            ])?;
        }
        Ok(())
    }

    /// The stored proof of the change with hash `hash`.
    pub(crate) fn proof_of(&self, space: Space, hash: &[u8; 32]) -> Result<Option<StoredProof>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT signer, proof, grp FROM change_proofs WHERE space = ?1 AND hash = ?2",
        )?;
        let mut rows = stmt.query(params![space.as_str(), &hash[..]])?;
        let Some(row) = rows.next()? else {
            return Ok(None);
        };
        let signer: Vec<u8> = row.get(0)?;
        let proof: Vec<u8> = row.get(1)?;
        let grp: bool = row.get(2)?;
        Ok(array(signer).zip(array(proof)).map(|(s, p)| (s, p, grp)))
    }

    /// Every stored proof.
    pub(crate) fn all_proofs(&self, space: Space) -> Result<Vec<ProofRow>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT hash, signer, proof, grp FROM change_proofs WHERE space = ?1",
        )?;
        let rows = stmt.query_map([space.as_str()], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, Vec<u8>>(2)?,
                r.get::<_, bool>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (hash, signer, proof, grp) = row?;
            if let (Some(h), Some(s), Some(p)) = (array(hash), array(signer), array(proof)) {
                out.push((h, s, p, grp));
            }
        }
        Ok(out)
    }

    /// The introductions admitted here, in the order they were admitted.
    pub(crate) fn known_devices(&self, space: Space) -> Result<Vec<Vec<u8>>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT intro FROM known_devices WHERE space = ?1 ORDER BY id")?;
        let rows = stmt.query_map([space.as_str()], |r| r.get::<_, Vec<u8>>(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Changes waiting for what they depend on.
    pub(crate) fn held(&self, space: Space) -> Result<Vec<HeldRow>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT hash, bytes, signer, proof, grp FROM held_changes WHERE space = ?1",
        )?;
        let rows = stmt.query_map([space.as_str()], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, Vec<u8>>(2)?,
                r.get::<_, Vec<u8>>(3)?,
                r.get::<_, bool>(4)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (hash, bytes, signer, proof, grp) = row?;
            if let (Some(h), Some(s), Some(p)) = (array(hash), array(signer), array(proof)) {
                out.push((h, bytes, s, p, grp));
            }
        }
        Ok(out)
    }

    /// Hashes refused for good.
    pub(crate) fn banned(&self, space: Space) -> Result<Vec<[u8; 32]>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT hash FROM refused_changes WHERE space = ?1")?;
        let rows = stmt.query_map([space.as_str()], |r| r.get::<_, Vec<u8>>(0))?;
        let mut out = Vec::new();
        for row in rows {
            out.extend(array(row?));
        }
        Ok(out)
    }

    /// Local changes not yet in a batch.
    pub(crate) fn unsent(&self, space: Space) -> Result<Vec<Vec<u8>>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT bytes FROM unsent WHERE space = ?1 ORDER BY id")?;
        let rows = stmt.query_map([space.as_str()], |r| r.get::<_, Vec<u8>>(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}
