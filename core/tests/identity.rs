//! The couple's registry of identities and devices: each device records its own certificate
//! once, the partners' list shows each partner's devices, and every replica agrees on which
//! identity and which certificates count, whatever order the changes arrived in.

use std::cell::Cell;

use anyhow::{Result, ensure};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use mend_core::{
    Certified, Error, JoinSource, Journal, Keyring, MAX_DEVICES, Partner, PartnerId, Space,
    crypto::{CERTIFICATE_LEN, DeviceCertificate, DeviceKey, Invite, PartnerIdentity},
};
use proptest::prelude::*;
use tempfile::TempDir;

const START_MS: i64 = 1_780_000_000_000;

thread_local! {
    static NOW: Cell<i64> = const { Cell::new(START_MS) };
}

/// Every reading one second after the previous one. Each test runs on its own thread.
fn clock() -> i64 {
    NOW.with(|now| {
        let t = now.get();
        now.set(t + 1_000);
        t
    })
}

/// A device: its replica and its keyring.
struct Phone {
    journal: Journal,
    keyring: Keyring,
}

impl Phone {
    /// Whether it wrote.
    fn certify(&mut self) -> mend_core::Result<bool> {
        let space = self.keyring.couple.derive_space_id();
        let (Some(identity), Some(key)) = (&self.keyring.identity, &self.keyring.device_key) else {
            return Err(Error::Invalid("no signing keys".into()));
        };
        Ok(self.journal.certify_device(&space, identity, key)? == Certified::Written)
    }

    fn partner(&self, id: PartnerId) -> Result<Partner> {
        self.journal
            .partners()
            .into_iter()
            .find(|p| p.id == id)
            .ok_or_else(|| anyhow::anyhow!("no partner {id}"))
    }

    /// Another device of this phone's partner, joined from this phone's documents, with a key
    /// of its own and the identity the partner's personal secret gives.
    fn second_device(&self, dir: &TempDir, name: &str) -> Result<Phone> {
        let source = JoinSource {
            couple: self.journal.save_space(Space::Couple)?,
            personal: Some(self.journal.save_space(Space::Personal)?),
            partner: Some(self.journal.me()),
        };
        let mut journal = Journal::join(&dir.path().join(name), &source, "")?;
        journal.set_clock(clock);
        let mut keyring = Keyring {
            identity: None,
            device_key: None,
            ..self.keyring.clone()
        };
        keyring.ensure_signing_keys()?;
        Ok(Phone { journal, keyring })
    }
}

/// Exchanges what the other lacks, both ways (the couple's document only, unless both are the
/// same partner's).
fn sync(x: &mut Phone, y: &mut Phone) -> Result<()> {
    let (x, y) = (&mut x.journal, &mut y.journal);
    let spaces: &[Space] = if x.me() == y.me() {
        &Space::ALL
    } else {
        &[Space::Couple]
    };
    for &space in spaces {
        let to_y = x.changes_since(space, &y.heads(space)?)?;
        y.apply_changes(space, &to_y)?;
        let to_x = y.changes_since(space, &x.heads(space)?)?;
        x.apply_changes(space, &to_x)?;
    }
    Ok(())
}

/// Alex creates the journal; Blake joins it.
fn couple(dir: &TempDir) -> Result<(Phone, Phone)> {
    let keyring = Keyring::generate("http://127.0.0.1:8787")?;
    let mut journal = Journal::create(&dir.path().join("alex.db"), "Alex")?;
    journal.set_clock(clock);
    let alex = Phone { journal, keyring };
    let source = JoinSource {
        couple: alex.journal.save_space(Space::Couple)?,
        personal: None,
        partner: None,
    };
    let mut journal = Journal::join(&dir.path().join("blake.db"), &source, "Blake")?;
    journal.set_clock(clock);
    let blake = Phone {
        journal,
        keyring: Keyring {
            personal: mend_core::crypto::SpaceSecret::generate()?,
            identity: None,
            device_key: None,
            ..alex.keyring.clone()
        },
    };
    let mut blake = blake;
    blake.keyring.ensure_signing_keys()?;
    Ok((alex, blake))
}

fn denied(r: mend_core::Result<bool>) -> bool {
    matches!(r, Err(Error::PermissionDenied(_)))
}

#[test]
fn each_device_records_its_certificate_once_and_everyone_sees_the_devices() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (mut alex, mut blake) = couple(&dir)?;
    ensure!(alex.certify()?, "the first open records the certificate");
    ensure!(!alex.certify()?, "and later opens write nothing");
    let (space, keys) = (alex.keyring.couple.derive_space_id(), alex.keyring.clone());
    if let (Some(identity), Some(key)) = (&keys.identity, &keys.device_key) {
        ensure!(alex.journal.certify_device(&space, identity, key)? == Certified::Present);
    }
    let mut tablet = alex.second_device(&dir, "alex-tablet.db")?;
    ensure!(tablet.certify()?);
    sync(&mut alex, &mut tablet)?;
    sync(&mut alex, &mut blake)?;
    ensure!(blake.certify()?);
    sync(&mut alex, &mut blake)?;
    sync(&mut alex, &mut tablet)?;

    let id = alex.journal.me();
    let seen = alex.partner(id)?;
    let fingerprints =
        |p: &Partner| -> Vec<String> { p.devices.iter().map(|d| d.fingerprint.clone()).collect() };
    let expected: Vec<String> = [&alex, &tablet]
        .iter()
        .filter_map(|p| {
            p.keyring
                .device_key
                .as_ref()
                .map(|k| k.public().fingerprint())
        })
        .collect();
    ensure!(fingerprints(&seen) == expected, "{seen:?}");
    ensure!(
        seen.identity
            == alex
                .keyring
                .identity
                .as_ref()
                .map(|i| i.public().fingerprint())
    );
    ensure!(seen.devices.first().map(|d| d.id) == Some(alex.journal.device()));
    // Every replica lists the same partners, devices and all.
    for other in [&blake, &tablet] {
        ensure!(other.journal.partners() == alex.journal.partners());
    }
    ensure!(blake.partner(blake.journal.me())?.devices.len() == 1);

    // A reopened journal still shows them, from its read model.
    let before = alex.journal.partners();
    drop(alex);
    let reopened = Journal::open(&dir.path().join("alex.db"))?;
    ensure!(reopened.partners() == before);
    Ok(())
}

#[test]
fn a_second_device_certifies_itself_once_its_partner_is_in_the_document() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (mut alex, _blake) = couple(&dir)?;
    ensure!(alex.certify()?);
    // A device joined from an invite starts with empty documents; they fill on its first sync.
    let mut journal = Journal::join(
        &dir.path().join("alex-tablet.db"),
        &JoinSource {
            couple: Vec::new(),
            personal: Some(Vec::new()),
            partner: Some(alex.journal.me()),
        },
        "",
    )?;
    journal.set_clock(clock);
    let mut keyring = Keyring {
        identity: None,
        device_key: None,
        ..alex.keyring.clone()
    };
    keyring.ensure_signing_keys()?;
    let mut tablet = Phone { journal, keyring };
    ensure!(
        !tablet.certify()?,
        "nothing to attach the certificate to yet"
    );
    sync(&mut alex, &mut tablet)?;
    ensure!(tablet.certify()?);
    sync(&mut alex, &mut tablet)?;
    ensure!(alex.partner(alex.journal.me())?.devices.len() == 2);
    Ok(())
}

#[test]
fn a_device_with_another_identity_is_refused_and_not_listed() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (mut alex, _blake) = couple(&dir)?;
    ensure!(alex.certify()?);
    let mut tablet = alex.second_device(&dir, "alex-tablet.db")?;
    tablet.keyring.identity = Some(PartnerIdentity::generate()?);
    let before = tablet.journal.heads(Space::Couple)?;
    ensure!(denied(tablet.certify()));
    ensure!(
        tablet.journal.heads(Space::Couple)? == before,
        "nothing was written"
    );
    // Only the phone's certificate is listed.
    let devices = tablet.partner(alex.journal.me())?.devices;
    ensure!(devices.iter().map(|d| d.id).eq([alex.journal.device()]));
    Ok(())
}

#[test]
fn concurrent_identity_claims_resolve_to_the_earliest_on_every_replica() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (mut alex, _blake) = couple(&dir)?;
    // Two of Alex's devices, apart, each claim an identity for Alex: the tablet (with a
    // stranger's identity) first by the clock, then the phone (with Alex's own).
    let mut tablet = alex.second_device(&dir, "alex-tablet.db")?;
    let stranger = PartnerIdentity::generate()?;
    tablet.keyring.identity = Some(stranger.clone());
    ensure!(tablet.certify()?);
    ensure!(alex.certify()?);
    sync(&mut alex, &mut tablet)?;

    let id = alex.journal.me();
    for phone in [&alex, &tablet] {
        let seen = phone.partner(id)?;
        // The earliest claim holds, and only certificates it signed count.
        ensure!(
            seen.identity == Some(stranger.public().fingerprint()),
            "{seen:?}"
        );
        let ids: Vec<_> = seen.devices.iter().map(|d| d.id).collect();
        ensure!(ids == vec![tablet.journal.device()], "{seen:?}");
    }
    // The phone notices that its identity is not the one in force.
    ensure!(denied(alex.certify()));
    Ok(())
}

#[test]
fn a_partner_has_at_most_eight_devices_even_after_a_merge() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (mut alex, _blake) = couple(&dir)?;
    ensure!(alex.certify()?);
    for i in 1..MAX_DEVICES - 1 {
        let mut device = alex.second_device(&dir, &format!("alex-{i}.db"))?;
        ensure!(device.certify()?);
        sync(&mut alex, &mut device)?;
    }
    let id = alex.journal.me();
    ensure!(alex.partner(id)?.devices.len() == MAX_DEVICES - 1);
    // Two more, apart from each other: each sees room for one, and both take it.
    let mut eighth = alex.second_device(&dir, "alex-eighth.db")?;
    let mut ninth = alex.second_device(&dir, "alex-ninth.db")?;
    ensure!(eighth.certify()?);
    ensure!(ninth.certify()?);
    sync(&mut alex, &mut eighth)?;
    sync(&mut alex, &mut ninth)?;
    sync(&mut alex, &mut eighth)?;
    for phone in [&alex, &eighth, &ninth] {
        let devices = phone.partner(id)?.devices;
        // The earlier certificate counts, the later one does not.
        ensure!(devices.len() == MAX_DEVICES);
        ensure!(devices.iter().any(|d| d.id == eighth.journal.device()));
        ensure!(!devices.iter().any(|d| d.id == ninth.journal.device()));
    }
    // A tenth is refused before it writes anything.
    let mut tenth = alex.second_device(&dir, "alex-tenth.db")?;
    ensure!(denied(tenth.certify()));
    Ok(())
}

#[test]
fn a_device_key_that_changed_is_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (mut alex, _blake) = couple(&dir)?;
    ensure!(alex.certify()?);
    // A keyring restored without this device's key cannot re-certify the same device.
    alex.keyring.device_key = Some(DeviceKey::generate()?);
    ensure!(denied(alex.certify()));
    Ok(())
}

/// Bytes for a decoder: often the exact shape it expects, sometimes anything.
fn shaped(len: usize, first: u8) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), len..=len).prop_map(move |mut b| {
            b[0] = first;
            b
        }),
        prop::collection::vec(any::<u8>(), 0..len * 2),
    ]
}

/// `bytes` with the 4-byte checksum an invite ends with.
fn with_checksum(mut bytes: Vec<u8>) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let sum = Sha256::digest(&bytes);
    bytes.extend_from_slice(&sum[..4]);
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        rng_seed: proptest::test_runner::RngSeed::Fixed(25519),
        ..ProptestConfig::default()
    })]

    /// No input makes a decoder panic, and whatever one accepts encodes back to what it read.
    #[test]
    fn identity_decoders_never_panic_and_round_trip(
        cert in shaped(CERTIFICATE_LEN, 1),
        keyring in shaped(KEYRING_LEN, FLAG_ALL),
        invite in shaped(INVITE_LEN, 2),
    ) {
        if let Ok(c) = DeviceCertificate::from_bytes(&cert) {
            prop_assert_eq!(c.to_bytes().to_vec(), cert);
        }
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        // The keyring's flags sit after the two secrets.
        let mut keyring = keyring;
        if keyring.len() == KEYRING_LEN {
            // Flags after the two secrets, a readable URL at the end: a keyring v3 accepts.
            keyring.swap(0, 64);
            for b in &mut keyring[KEYRING_LEN - 20..] {
                *b = b'a' + *b % 26;
            }
        }
        for prefix in ["mend-keyring-v1:", "mend-keyring-v2:", "mend-keyring-v3:"] {
            if let Ok(k) = Keyring::from_secret_string(&format!("{prefix}{}", b64(&keyring))) {
                prop_assert_eq!(Keyring::from_secret_string(&k.to_secret_string()).ok(), Some(k));
            }
        }
        let mut invite = invite;
        if invite.len() == INVITE_LEN {
            // A device invite with a readable 20-byte URL, a pin and an identity: MEND3 accepts.
            invite[1] = 20;
            for b in &mut invite[2..22] {
                *b = b'a' + *b % 26;
            }
            invite[102] = 3;
        }
        for prefix in ["MEND1-", "MEND2-", "MEND3-"] {
            let code = format!("{prefix}{}", b64(&with_checksum(invite.clone())));
            if let Ok(i) = Invite::decode(&code) {
                prop_assert_eq!(Invite::decode(&i.encode()?).ok(), Some(i));
            }
        }
    }
}

/// Every flag a v3 keyring knows.
const FLAG_ALL: u8 = 7;
/// Two secrets, flags, pin, identity, device key and a 20-byte URL.
const KEYRING_LEN: usize = 64 + 1 + 96 + 20;
/// Kind, URL length, URL, two secrets and a partner id, flags, pin and identity.
const INVITE_LEN: usize = 2 + 20 + 80 + 1 + 64;

#[test]
fn device_names_round_trip_and_every_device_of_both_partners_is_listed() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (mut alex, mut blake) = couple(&dir)?;
    // Chosen before the certificate is written: kept, then written beside it.
    alex.journal.set_device_name("  Alex's phone ")?;
    ensure!(alex.journal.devices().is_empty(), "no certificate yet");
    ensure!(alex.certify()?);
    let mut tablet = alex.second_device(&dir, "alex-tablet.db")?;
    ensure!(tablet.certify()?);
    tablet.journal.set_device_name("Tablet")?;
    ensure!(blake.certify()?);
    sync(&mut alex, &mut tablet)?;
    sync(&mut alex, &mut blake)?;
    sync(&mut alex, &mut tablet)?;

    let (a, b) = (alex.journal.me(), blake.journal.me());
    for phone in [&alex, &tablet, &blake] {
        let listed = phone.journal.devices();
        let seen: Vec<_> = listed
            .iter()
            .map(|d| (d.partner, d.partner_name.as_str(), d.id, d.name.as_deref()))
            .collect();
        let mut expected = vec![
            (a, "Alex", alex.journal.device(), Some("Alex's phone")),
            (a, "Alex", tablet.journal.device(), Some("Tablet")),
            (b, "Blake", blake.journal.device(), None),
        ];
        if phone.journal.me() == b {
            expected.rotate_left(2);
        }
        ensure!(seen == expected, "{seen:?}");
        for d in &listed {
            ensure!(d.mine == (d.partner == phone.journal.me()));
            ensure!(d.this_device == (d.id == phone.journal.device()));
            ensure!(d.fingerprint.len() == 16 && d.added_at >= START_MS);
        }
    }

    // A name can change, and the change reaches the other partner.
    tablet.journal.set_device_name("Old tablet")?;
    sync(&mut alex, &mut tablet)?;
    sync(&mut alex, &mut blake)?;
    let renamed = blake
        .journal
        .devices()
        .into_iter()
        .find(|d| d.id == tablet.journal.device())
        .and_then(|d| d.name);
    ensure!(renamed.as_deref() == Some("Old tablet"), "{renamed:?}");
    ensure!(tablet.journal.device_name()?.as_deref() == Some("Old tablet"));
    // What no device may record is refused before anything is written.
    let heads = alex.journal.heads(Space::Couple)?;
    for bad in [
        "",
        "   ",
        &"x".repeat(mend_core::MAX_DEVICE_NAME + 1),
        "a\u{1b}[2J",
    ] {
        ensure!(alex.journal.set_device_name(bad).is_err(), "{bad:?}");
    }
    ensure!(alex.journal.heads(Space::Couple)? == heads);
    Ok(())
}
