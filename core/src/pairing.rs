//! Creating and joining a couple's journal: the secrets a device holds, invites, and the
//! first sync that fills a joining device.
//!
//! The secrets never enter the database. The app keeps a [`Keyring`] in Keychain or Keystore
//! (or, for the CLI, a file only its user can read) and hands it to the core when it opens the
//! journal.

use std::{
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use zeroize::Zeroizing;

use crate::{
    crypto::{Invite, InviteKind, SpaceSecret},
    error::{Error, Result},
    ids::PartnerId,
    journal::{JoinSource, Journal, OpenOptions},
    store::Space,
    sync::{
        SpaceLink, SyncStatus,
        transport::{SyncClient, SyncObserver},
    },
};

/// What a device must keep secret: the relay it syncs through and the two space secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct Keyring {
    /// The relay URL.
    pub relay_url: String,
    /// The couple's space.
    pub couple: SpaceSecret,
    /// This partner's personal space.
    pub personal: SpaceSecret,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("relay_url", &self.relay_url)
            .finish_non_exhaustive()
    }
}

const KEYRING_PREFIX: &str = "mend-keyring-v1:";

impl Keyring {
    /// New secrets for a new journal.
    pub fn generate(relay_url: &str) -> Result<Self> {
        crate::sync::transport::RelayHttp::new(relay_url)?;
        Ok(Self {
            relay_url: relay_url.trim().trim_end_matches('/').to_owned(),
            couple: SpaceSecret::generate()?,
            personal: SpaceSecret::generate()?,
        })
    }

    /// What the engine needs to sync both spaces.
    pub fn links(&self) -> Vec<SpaceLink> {
        vec![
            SpaceLink {
                space: Space::Couple,
                keys: self.couple.derive_keys(),
            },
            SpaceLink {
                space: Space::Personal,
                keys: self.personal.derive_keys(),
            },
        ]
    }

    /// An invite for the other partner (couple's space only).
    pub fn partner_invite(&self) -> Result<String> {
        Invite {
            relay_url: self.relay_url.clone(),
            couple: self.couple.clone(),
            kind: InviteKind::Partner,
        }
        .encode()
    }

    /// An invite for another device of this partner (both spaces).
    pub fn device_invite(&self, me: PartnerId) -> Result<String> {
        Invite {
            relay_url: self.relay_url.clone(),
            couple: self.couple.clone(),
            kind: InviteKind::Device {
                personal: self.personal.clone(),
                partner: me,
            },
        }
        .encode()
    }

    /// The secrets as one string, for storage the app trusts. Handle like a password.
    pub fn to_secret_string(&self) -> String {
        let mut raw = Zeroizing::new(Vec::with_capacity(64 + self.relay_url.len()));
        raw.extend_from_slice(self.couple.expose());
        raw.extend_from_slice(self.personal.expose());
        raw.extend_from_slice(self.relay_url.as_bytes());
        format!("{KEYRING_PREFIX}{}", URL_SAFE_NO_PAD.encode(raw.as_slice()))
    }

    /// Parses [`Keyring::to_secret_string`].
    pub fn from_secret_string(s: &str) -> Result<Self> {
        let bad = || Error::Invalid("not a Mend keyring".into());
        let body = s.trim().strip_prefix(KEYRING_PREFIX).ok_or_else(bad)?;
        let raw = Zeroizing::new(URL_SAFE_NO_PAD.decode(body).map_err(|_| bad())?);
        if raw.len() < 64 {
            return Err(bad());
        }
        Ok(Self {
            couple: SpaceSecret::from_slice(&raw[..32])?,
            personal: SpaceSecret::from_slice(&raw[32..64])?,
            relay_url: String::from_utf8(raw[64..].to_vec()).map_err(|_| bad())?,
        })
    }
}

/// A journal with its keys and its relay connection: what the CLI and the bindings hold.
pub struct Device {
    journal: Arc<Mutex<Journal>>,
    keyring: Keyring,
    client: Arc<SyncClient>,
    observer: Option<Arc<dyn SyncObserver>>,
    local: LocalQueue,
}

/// Local changes waiting to be told to the observer.
type LocalQueue = Arc<Mutex<Vec<(Space, Vec<crate::ids::RecordId>)>>>;

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("relay", &self.keyring.relay_url)
            .finish_non_exhaustive()
    }
}

impl Device {
    fn assemble(
        mut journal: Journal,
        keyring: Keyring,
        observer: Option<Arc<dyn SyncObserver>>,
    ) -> Result<Self> {
        // Local edits reach the same observer as remote ones, but not from inside the edit: the
        // journal is locked then, and an observer that reads it back would deadlock. They wait
        // here until the caller, lock released, calls `flush_local_changes`.
        let local: LocalQueue = Arc::default();
        if observer.is_some() {
            let queue = Arc::clone(&local);
            journal.set_change_listener(Some(Arc::new(move |space, ids| {
                if let Ok(mut q) = queue.lock() {
                    q.push((space, ids));
                }
            })));
        }
        let journal = Arc::new(Mutex::new(journal));
        let client = Arc::new(SyncClient::new(
            Arc::clone(&journal),
            &keyring.relay_url,
            keyring.links(),
            observer.clone(),
        )?);
        Ok(Self {
            journal,
            keyring,
            client,
            observer,
            local,
        })
    }

    /// Tells the observer about local edits made since the last call. Call it after each
    /// write, once the journal lock is released, on a thread where calling the app is fine.
    pub fn flush_local_changes(&self) {
        let pending = match self.local.lock() {
            Ok(mut q) => std::mem::take(&mut *q),
            Err(_) => return,
        };
        if let Some(o) = &self.observer {
            for (space, ids) in pending {
                o.records_changed(space, ids);
            }
        }
    }

    /// Creates a new journal at `path` for its first partner, with new secrets.
    pub fn create(
        path: &Path,
        name: &str,
        relay_url: &str,
        options: OpenOptions,
        observer: Option<Arc<dyn SyncObserver>>,
    ) -> Result<Self> {
        let keyring = Keyring::generate(relay_url)?;
        let journal = Journal::create_with(path, name, options)?;
        Self::assemble(journal, keyring, observer)
    }

    /// Joins with an invite code: the other partner (`name` is theirs) or another device of
    /// the same partner. The journal fills on the first sync.
    pub fn join(
        path: &Path,
        invite: &str,
        name: &str,
        options: OpenOptions,
        observer: Option<Arc<dyn SyncObserver>>,
    ) -> Result<Self> {
        let invite = Invite::decode(invite)?;
        let (keyring, source) = match invite.kind {
            InviteKind::Partner => (
                Keyring {
                    relay_url: invite.relay_url,
                    couple: invite.couple,
                    personal: SpaceSecret::generate()?,
                },
                JoinSource {
                    couple: Vec::new(),
                    personal: None,
                    partner: None,
                },
            ),
            InviteKind::Device { personal, partner } => (
                Keyring {
                    relay_url: invite.relay_url,
                    couple: invite.couple,
                    personal,
                },
                JoinSource {
                    couple: Vec::new(),
                    personal: Some(Vec::new()),
                    partner: Some(partner),
                },
            ),
        };
        crate::sync::transport::RelayHttp::new(&keyring.relay_url)?;
        let journal = Journal::join_with(path, &source, name, options)?;
        Self::assemble(journal, keyring, observer)
    }

    /// Opens an existing journal with the keys the app kept.
    pub fn open(
        path: &Path,
        keyring: Keyring,
        options: OpenOptions,
        observer: Option<Arc<dyn SyncObserver>>,
    ) -> Result<Self> {
        let journal = Journal::open_with(path, options)?;
        Self::assemble(journal, keyring, observer)
    }

    /// The journal, shared with the sync task. Lock it briefly.
    pub fn journal(&self) -> &Arc<Mutex<Journal>> {
        &self.journal
    }

    /// The keys to keep.
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// The relay connection.
    pub fn client(&self) -> &Arc<SyncClient> {
        &self.client
    }

    /// An invite for the other partner.
    pub fn partner_invite(&self) -> Result<String> {
        self.keyring.partner_invite()
    }

    /// An invite for another of this partner's devices.
    pub fn device_invite(&self) -> Result<String> {
        let me = self
            .journal
            .lock()
            .map_err(|_| Error::Corrupt("journal lock poisoned".into()))?
            .me();
        self.keyring.device_invite(me)
    }

    /// Erases this partner's spaces at the relay: the couple's space (for both partners) and
    /// this partner's personal space. The local journal is left to the caller.
    pub async fn erase_remote(&self) -> Result<()> {
        let http = crate::sync::transport::RelayHttp::new(&self.keyring.relay_url)?;
        for link in self.keyring.links() {
            http.erase(&link).await?;
        }
        Ok(())
    }

    /// One bounded push and pull.
    pub async fn sync_now(&self, budget: Duration) -> Result<SyncStatus> {
        self.client.sync_now(budget).await
    }
}
