//! A new epoch's document: a space's state at some heads, with none of its history.
//!
//! Every device that moves to the new epoch builds it itself from the same heads, so the result
//! must be the same bytes everywhere: the genesis change every replica starts from, then one
//! change by a fixed actor (named after the epoch) at time 0 that fills the genesis maps, its
//! operations in key order. Nobody signs it: a device
//! trusts the one it built, and a device that joins later checks the one it is given against
//! the hash its inviter handed over.
//!
//! What does not carry over: every value that lost a concurrent write (the winner stays; the
//! new epoch starts without conflicts), the words of removed records (they keep their place,
//! kind, author and times), and the certificates of removed devices. A partner who rejoins
//! (every device lost) keeps only the identity claim the other partner vouched for.

use automerge::{
    ActorId, Automerge, ChangeHash, ObjId, ObjType, ROOT, ReadDoc, ScalarValue, Value,
    transaction::{CommitOptions, Transactable, Transaction},
};

use super::{ENVELOPE_KEYS, MAX_DEPTH, SpaceDoc};
use crate::error::{Error, Result};

/// Copies the map `from` into the map `to`, keys `keep` allows only, every value as it is
/// (bytes stay bytes), the winner of each key only. Objects more than `depth` levels below
/// `from` are left out (see [`MAX_DEPTH`]): the copy never recurses without bound, and every
/// device leaves out the same ones.
/// Which values a copy takes, by the id of the operation that put each one.
pub(crate) type Carry<'a> = &'a dyn Fn(&ObjId) -> bool;

fn copy_map(
    src: &Automerge,
    from: &ObjId,
    tx: &mut Transaction<'_>,
    to: &ObjId,
    keep: &dyn Fn(&str) -> bool,
    carry: Carry<'_>,
    depth: usize,
) -> Result<()> {
    for key in src.keys(from) {
        if !keep(&key) {
            continue;
        }
        match src.get(from, key.as_str())? {
            Some((_, id)) if !carry(&id) => {}
            Some((Value::Object(kind), child)) if depth > 1 => {
                let copy = tx.put_object(to, key.as_str(), kind)?;
                copy_within(src, &child, kind, tx, &copy, carry, depth.saturating_sub(1))?;
            }
            Some((Value::Scalar(value), _)) => tx.put(to, key.as_str(), value.into_owned())?,
            Some((Value::Object(_), _)) | None => {}
        }
    }
    Ok(())
}

/// Copies the object `from` (of `kind`) into `to`, the same kind, as far down as
/// [`MAX_DEPTH`] levels below it, leaving out the map entries and list elements `carry`
/// refuses (and what is below them).
pub(crate) fn copy_obj(
    src: &Automerge,
    from: &ObjId,
    kind: ObjType,
    tx: &mut Transaction<'_>,
    to: &ObjId,
    carry: Carry<'_>,
) -> Result<()> {
    copy_within(src, from, kind, tx, to, carry, MAX_DEPTH)
}

fn copy_within(
    src: &Automerge,
    from: &ObjId,
    kind: ObjType,
    tx: &mut Transaction<'_>,
    to: &ObjId,
    carry: Carry<'_>,
    depth: usize,
) -> Result<()> {
    match kind {
        ObjType::Map | ObjType::Table => copy_map(src, from, tx, to, &|_| true, carry, depth),
        ObjType::Text => {
            let text = src.text(from)?;
            tx.splice_text(to, 0, 0, &text)?;
            Ok(())
        }
        ObjType::List => {
            let mut at = 0;
            for i in 0..src.length(from) {
                match src.get(from, i)? {
                    Some((_, id)) if !carry(&id) => {}
                    Some((Value::Object(kind), child)) if depth > 1 => {
                        let copy = tx.insert_object(to, at, kind)?;
                        copy_within(src, &child, kind, tx, &copy, carry, depth.saturating_sub(1))?;
                        at = at.saturating_add(1);
                    }
                    Some((Value::Scalar(value), _)) => {
                        tx.insert(to, at, value.into_owned())?;
                        at = at.saturating_add(1);
                    }
                    Some((Value::Object(_), _)) | None => {}
                }
            }
            Ok(())
        }
    }
}

/// The prefix of a partner entry's identity claims (`journal/registry.rs`).
const IDENTITY_PREFIX: &str = "identity:";

/// The root key an epoch's first change names its epoch under.
pub(crate) const EPOCH_ROOT_KEY: &str = "epoch";

/// The actor of epoch `epoch`'s first change: never a device's (those are 24 bytes) nor the
/// genesis change's (16 zero bytes).
pub(crate) fn epoch_actor(epoch: u32) -> ActorId {
    let mut actor = [0u8; 16];
    actor[..10].copy_from_slice(b"mend-epoch");
    actor[12..].copy_from_slice(&epoch.to_be_bytes());
    ActorId::from(actor)
}

/// The epoch whose first change `actor` makes ([`epoch_actor`]), if it is such an actor.
pub(crate) fn epoch_of_actor(actor: &ActorId) -> Option<u32> {
    let bytes = actor.to_bytes();
    let (head, number) = (bytes.get(..12)?, bytes.get(12..16)?);
    if bytes.len() != 16 || head[..10] != *b"mend-epoch" || head[10..] != [0, 0] {
        return None;
    }
    let n = u32::from_be_bytes(number.try_into().ok()?);
    (n > 0).then_some(n)
}

/// What a rebuild leaves out.
#[derive(Clone, Debug, Default)]
pub(crate) struct Leave {
    /// Prefixes of partner entry keys to drop (certificates: each device certifies itself
    /// again in the new epoch).
    pub(crate) partner_keys_prefixes: Vec<String>,
    /// A partner who lost every device and rejoined through the other partner: their entry
    /// (by id) keeps none of its identity claims but one for the new key (the claim key and
    /// its time).
    pub(crate) rekey: Option<(String, String, i64)>,
}

/// Builds epoch `epoch`'s first document from `old` as it stood at `heads`, with `actor` for
/// the edits that follow. Answers the document and its one change's hash.
pub(crate) fn rebuild(
    old: &Automerge,
    heads: &[ChangeHash],
    epoch: u32,
    leave: &Leave,
    actor: ActorId,
) -> Result<(SpaceDoc, ChangeHash)> {
    let at = old.fork_at(heads)?;
    let map = |name: &str| match at.get(ROOT, name) {
        Ok(Some((Value::Object(ObjType::Map), id))) => Ok(id),
        _ => Err(Error::Corrupt(format!("a document without {name}"))),
    };
    let (partners, records) = (map("partners")?, map("records")?);
    // On the genesis every replica holds (so a device that joins later starts from it, as it
    // starts any journal), one change fills the genesis maps.
    let genesis = SpaceDoc::genesis(epoch_actor(epoch))?;
    let (genesis_partners, genesis_records) = (genesis.partners.clone(), genesis.records.clone());
    let mut doc = genesis.doc;
    let mut tx = doc.transaction();
    // Which epoch this is: the change is never empty, and no two epochs' are the same.
    tx.put(ROOT, EPOCH_ROOT_KEY, i64::from(epoch))?;
    let to = genesis_partners;
    for id in at.keys(&partners) {
        let Some((Value::Object(ObjType::Map), from)) = at.get(&partners, id.as_str())? else {
            continue;
        };
        let entry = tx.put_object(&to, id.as_str(), ObjType::Map)?;
        let rekey = leave.rekey.as_ref().filter(|(p, _, _)| *p == id);
        copy_map(
            &at,
            &from,
            &mut tx,
            &entry,
            &|key| {
                !(leave
                    .partner_keys_prefixes
                    .iter()
                    .any(|p| key.starts_with(p.as_str()))
                    || (rekey.is_some() && key.starts_with(IDENTITY_PREFIX)))
            },
            &|_| true,
            MAX_DEPTH,
        )?;
        if let Some((_, claim, at)) = rekey {
            tx.put(&entry, claim.as_str(), *at)?;
        }
    }
    let to = genesis_records;
    for id in at.keys(&records) {
        let Some((Value::Object(ObjType::Map), from)) = at.get(&records, id.as_str())? else {
            continue;
        };
        let removed = matches!(
            at.get(&from, "removed")?,
            Some((Value::Scalar(s), _)) if s.as_ref() == &ScalarValue::Boolean(true)
        );
        let record = tx.put_object(&to, id.as_str(), ObjType::Map)?;
        // A removed record's words go; its place in threads and counts stays.
        copy_map(
            &at,
            &from,
            &mut tx,
            &record,
            &|key| !removed || ENVELOPE_KEYS.contains(&key),
            &|_| true,
            MAX_DEPTH,
        )?;
    }
    let (hash, _) = tx.commit_with(CommitOptions::default().with_time(0));
    let hash = hash.ok_or_else(|| Error::Corrupt("an empty rebuild".into()))?;
    Ok((SpaceDoc::from_doc(doc.with_actor(actor))?, hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_epochs_actor_names_its_epoch_and_no_other_actor_does() {
        for n in [1, 2, 77, u32::MAX] {
            assert_eq!(epoch_of_actor(&epoch_actor(n)), Some(n));
        }
        assert_eq!(epoch_of_actor(&ActorId::from([0u8; 16])), None);
        assert_eq!(epoch_of_actor(&ActorId::from(vec![7u8; 24])), None);
        let mut near = epoch_actor(3).to_bytes().to_vec();
        near[10] = 1;
        assert_eq!(epoch_of_actor(&ActorId::from(near)), None);
    }

    #[test]
    fn a_chain_of_maps_deeper_than_the_app_writes_is_cut_short_by_a_move() -> Result<()> {
        use crate::doc::json::tests;
        let (old, _) = tests::deep(50_000)?;
        let (new, _) = rebuild(
            old.am(),
            &old.heads(),
            1,
            &Leave::default(),
            ActorId::from([9u8; 16]),
        )?;
        let Some((_, record)) = new.am().get(new.records_obj(), "r")? else {
            return Err(Error::Corrupt("the record did not move".into()));
        };
        assert_eq!(tests::maps_below(new.am(), &record), MAX_DEPTH);
        Ok(())
    }
}
