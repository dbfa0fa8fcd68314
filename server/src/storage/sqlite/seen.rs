//! When the relay last served each device of a space, in SQLite: written by the writer thread
//! (at most once an hour per device, see `crate::seen`), read on the read pool.

use mend_protocol::{DeviceId, DeviceList, DeviceSeen, MAX_LISTED_DEVICES, SpaceId};
use rusqlite::{Connection, Transaction, params};

use crate::storage::{StorageError, last_seen_hour};

/// Unix seconds as stored (the relay's times fit in a signed column).
fn db(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Records `device` seen at `at` (rounded down to the hour, never moved back) in the space
/// with row id `space`, then forgets the longest unseen devices past the bound.
pub(crate) fn touch(
    tx: &Transaction<'_>,
    space: i64,
    device: DeviceId,
    at: u64,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO device_seen (space, device_id, last_seen) VALUES (?1, ?2, ?3)
         ON CONFLICT (space, device_id) DO UPDATE SET last_seen = max(last_seen, excluded.last_seen)",
    )?
    .execute(params![space, &device.0[..], db(last_seen_hour(at))])?;
    tx.prepare_cached(
        "DELETE FROM device_seen WHERE space = ?1 AND device_id NOT IN (
             SELECT device_id FROM device_seen WHERE space = ?1
             ORDER BY last_seen DESC, device_id LIMIT ?2)",
    )?
    .execute(params![space, MAX_LISTED_DEVICES as i64])?;
    Ok(())
}

/// Forgets every device of the space with row id `space` (it is being erased).
pub(crate) fn forget(tx: &Transaction<'_>, space: i64) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM device_seen WHERE space = ?1")?
        .execute([space])?;
    Ok(())
}

/// The devices of `space`, in id order.
pub(crate) fn list(
    conn: &mut Connection,
    space: &SpaceId,
) -> rusqlite::Result<Result<DeviceList, StorageError>> {
    let mut statement = conn.prepare_cached(
        "SELECT d.device_id, d.last_seen FROM device_seen d JOIN spaces s ON s.id = d.space
         WHERE s.space_id = ?1 ORDER BY d.device_id LIMIT ?2",
    )?;
    let rows = statement.query_map(params![&space.0[..], MAX_LISTED_DEVICES as i64], |row| {
        let id: Vec<u8> = row.get(0)?;
        let last_seen: i64 = row.get(1)?;
        Ok((id, last_seen))
    })?;
    let mut devices = Vec::new();
    for row in rows {
        let (id, last_seen) = row?;
        // A row of another length was not written by this relay: left out.
        let Ok(id) = <[u8; 16]>::try_from(id) else {
            continue;
        };
        devices.push(DeviceSeen {
            device_id: DeviceId(id),
            last_seen: u64::try_from(last_seen).unwrap_or(0),
        });
    }
    Ok(Ok(DeviceList { devices }))
}
