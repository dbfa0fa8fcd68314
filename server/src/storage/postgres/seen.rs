//! When the relay last served each device of a space, in PostgreSQL (see the SQLite backend's
//! `seen.rs`). Writes come at most once an hour per device and relay instance.

use std::sync::Arc;

use mend_protocol::{DeviceId, DeviceList, DeviceSeen, MAX_LISTED_DEVICES, SpaceId};

use super::{PgError, Shared, nonneg};
use crate::storage::{StorageError, last_seen_hour};

type Outcome<T> = Result<Result<T, StorageError>, PgError>;

/// Records `device` seen at `at` (rounded down to the hour, never moved back), then forgets
/// the longest unseen devices past the bound. An unknown space records nothing. The space's row
/// is locked while the row is written: a touch racing an erase waits for it and then finds no
/// space, instead of writing after the erase cleared the space's devices, to be kept for good.
pub(super) async fn touch(
    shared: Arc<Shared>,
    space: SpaceId,
    device: DeviceId,
    at: u64,
) -> Outcome<()> {
    let client = shared.client().await?;
    let hour = i64::try_from(last_seen_hour(at)).unwrap_or(i64::MAX);
    let touched = client
        .execute(
            "INSERT INTO device_seen (space, device_id, last_seen)
             SELECT id, $2, $3 FROM spaces WHERE space_id = $1 FOR KEY SHARE
             ON CONFLICT (space, device_id)
             DO UPDATE SET last_seen = GREATEST(device_seen.last_seen, excluded.last_seen)",
            &[&&space.0[..], &&device.0[..], &hour],
        )
        .await?;
    if touched > 0 {
        client
            .execute(
                "DELETE FROM device_seen d USING spaces s
                 WHERE s.space_id = $1 AND d.space = s.id AND d.device_id NOT IN (
                     SELECT device_id FROM device_seen WHERE space = s.id
                     ORDER BY last_seen DESC, device_id LIMIT $2)",
                &[&&space.0[..], &(MAX_LISTED_DEVICES as i64)],
            )
            .await?;
    }
    Ok(Ok(()))
}

/// The devices of `space`, in id order.
pub(super) async fn list(shared: Arc<Shared>, space: SpaceId) -> Outcome<DeviceList> {
    let client = shared.client().await?;
    let rows = client
        .query(
            "SELECT d.device_id, d.last_seen FROM device_seen d JOIN spaces s ON s.id = d.space
             WHERE s.space_id = $1 ORDER BY d.device_id LIMIT $2",
            &[&&space.0[..], &(MAX_LISTED_DEVICES as i64)],
        )
        .await?;
    let mut devices = Vec::with_capacity(rows.len());
    for row in rows {
        let id: Vec<u8> = row.try_get(0)?;
        // A row of another length was not written by this relay: left out.
        let Ok(id) = <[u8; 16]>::try_from(id) else {
            continue;
        };
        devices.push(DeviceSeen {
            device_id: DeviceId(id),
            last_seen: nonneg(row.try_get(1)?),
        });
    }
    Ok(Ok(DeviceList { devices }))
}
