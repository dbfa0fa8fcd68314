//! Pairing: how a joining device gets the journal's secrets without any code carrying them.
//!
//! The inviting device (the host) opens a short-lived, single-use mailbox at the relay and
//! shows either an invite ([`PairingInvite`], a QR code or text: relay, pin, mailbox and a
//! 32-byte pairing secret) or a short code ([`ShortCode`], a mailbox number and two words, read
//! out on a phone call). The joining device (the guest) claims the mailbox; the two derive one
//! key, from the pairing secret or by SPAKE2 over the short code ([`CodeExchange`]), and talk
//! through a [`Channel`] the relay cannot read. The host offers, the guest says who it is, each
//! with a fresh X25519 key that both then mix into the channel ([`Channel::mix`]): what follows
//! stays sealed from whoever later learns the invite, and both screens show the same
//! confirmation words. Only after the host's user accepts (having compared the words with the
//! joiner's screen) does the host send the secrets ([`PairingMessage`]).
//!
//! A wrong short code leaves the two sides with different keys: the first sealed message fails
//! to open, the side that notices burns the mailbox, and both say so. Since the relay lets a
//! mailbox be claimed once, whoever guesses gets one try (1 in 65,536) per code.
//!
//! This module holds no I/O: the client drives it over the relay's pairing routes.

use std::fmt;

use chacha20poly1305::{
    KeyInit, XChaCha20Poly1305, XNonce,
    aead::{Aead, Payload},
};
use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use spake2::{Ed25519Group, Identity, Password, Spake2};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::{RelayPin, wordlist};
use crate::error::{Error, Result};

const PREFIX: &str = "MEND4-";
const KIND_PARTNER: u8 = 1;
const KIND_DEVICE: u8 = 2;
const KIND_REJOIN: u8 = 3;
const FLAG_PIN: u8 = 1;
const MAX_URL: usize = 200;
/// A long mailbox id: 16 random bytes the relay chose, as 32 hex characters.
const LONG_MAILBOX: usize = 16;
/// Words in a short code after its mailbox number.
pub const SHORT_CODE_WORDS: usize = 2;
/// The longest name a joining partner or an inviter may give, in bytes.
pub const MAX_PAIRING_NAME: usize = 200;
/// The longest secrets a welcome may carry, in bytes (an encoded handover is far smaller).
const MAX_HANDOVER: usize = 1024;

const LABEL_ROOT: &[u8] = b"mend/v1/pairing";
const LABEL_HOST: &[u8] = b"mend/v1/pairing/host-to-guest";
const LABEL_GUEST: &[u8] = b"mend/v1/pairing/guest-to-host";
const LABEL_MIX: &[u8] = b"mend/v1/pairing/mix";
const LABEL_CONFIRM: &[u8] = b"mend/v1/pairing/confirm";
const LABEL_COMMIT: &[u8] = b"mend/v1/pairing/commit";
const LABEL_TRANSCRIPT: &[u8] = b"mend/v1/pairing/transcript";

/// What the host commits to in its offer before the guest sends its key: the hash of the
/// host's fresh key, revealed only after the guest's hello ([`PairingMessage::Reveal`]).
/// Whoever sits in the middle must then pick its keys before it sees the other side's, so it
/// cannot search for keys whose words match the ones the real guest shows (three words are
/// 2^24 tries, a minute of one core, when the second key can be chosen after the first).
pub fn commitment(key: &[u8; 32]) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(LABEL_COMMIT);
    hash.update(key);
    hash.finalize().into()
}

/// What both sides said about the pairing, hashed into its keys and its words: the kind and
/// the inviter's name from the offer, the joiner's name and (for a rejoin) identity key from
/// the hello. A relay that holds the invite and re-seals a hello with another identity or
/// name makes the two screens show different words (and the welcome unreadable).
pub fn transcript(
    kind: PairingKind,
    inviter: &str,
    joiner: &str,
    identity: Option<&[u8; 32]>,
) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(LABEL_TRANSCRIPT);
    hash.update([kind.to_u8()]);
    for text in [inviter.trim(), joiner.trim()] {
        hash.update(u64::try_from(text.len()).unwrap_or(u64::MAX).to_be_bytes());
        hash.update(text.as_bytes());
    }
    match identity {
        Some(key) => {
            hash.update([1]);
            hash.update(key);
        }
        None => hash.update([0]),
    }
    hash.finalize().into()
}
/// Words of a confirmation (24 bits: a joiner who is not the one on the phone cannot make
/// their screen match by chance).
const CONFIRM_WORDS: usize = 3;
const ID_HOST: &[u8] = b"mend/v1/pairing/host";
const ID_GUEST: &[u8] = b"mend/v1/pairing/guest";

/// Why a pairing stopped, in words for the person holding the phone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PairingFailure {
    /// The code did not match on this side (this side burned the mailbox).
    WrongCode,
    /// The other side found the code did not match, or someone tried a wrong code: the
    /// mailbox is burned.
    Burned,
    /// The invite was used already.
    Used,
    /// The invite's ten minutes are over.
    Expired,
    /// The relay knows no such mailbox (mistyped, or long expired).
    Unknown,
    /// The inviting partner declined this join.
    Declined,
    /// The other side closed the pairing before it finished.
    Closed,
    /// A pairing message was altered, reordered or malformed on the way.
    Tampered,
}

impl PairingFailure {
    /// A stable name for apps and bindings.
    pub fn name(self) -> &'static str {
        match self {
            Self::WrongCode => "wrong_code",
            Self::Burned => "burned",
            Self::Used => "used",
            Self::Expired => "expired",
            Self::Unknown => "unknown",
            Self::Declined => "declined",
            Self::Closed => "closed",
            Self::Tampered => "tampered",
        }
    }
}

impl fmt::Display for PairingFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::WrongCode => {
                "the code does not match: this code no longer works; make a new code and read it \
                 out again"
            }
            Self::Burned => {
                "someone entered this code with the wrong words, so it no longer works; make a \
                 new code"
            }
            Self::Used => "this invite was already used; ask for a new one",
            Self::Expired => "this invite has expired (invites last 10 minutes); ask for a new one",
            Self::Unknown => "the relay knows no such invite: check the code, or ask for a new one",
            Self::Declined => "the inviting partner declined this join",
            Self::Closed => "the other device stopped the pairing",
            Self::Tampered => {
                "the pairing messages were altered on the way; this invite no longer works"
            }
        })
    }
}

impl From<PairingFailure> for Error {
    fn from(failure: PairingFailure) -> Self {
        Error::Pairing(failure)
    }
}

/// Who a pairing brings in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PairingKind {
    /// The other partner.
    Partner,
    /// Another device of the inviting partner.
    Device,
    /// The other partner, who lost every device, on a new one: joins as the partner they were,
    /// with a new identity the inviting partner vouches for (every old device of theirs is
    /// shut out).
    Rejoin,
}

impl PairingKind {
    fn to_u8(self) -> u8 {
        match self {
            Self::Partner => KIND_PARTNER,
            Self::Device => KIND_DEVICE,
            Self::Rejoin => KIND_REJOIN,
        }
    }

    fn from_u8(byte: u8) -> Option<Self> {
        match byte {
            KIND_PARTNER => Some(Self::Partner),
            KIND_DEVICE => Some(Self::Device),
            KIND_REJOIN => Some(Self::Rejoin),
            _ => None,
        }
    }
}

/// The 32 random bytes of an invite that only the two devices know.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct PairingSecret([u8; 32]);

impl fmt::Debug for PairingSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PairingSecret(…)")
    }
}

impl PairingSecret {
    /// A new random secret.
    pub fn generate() -> Result<Self> {
        let mut bytes = [0u8; 32];
        super::random(&mut bytes)?;
        Ok(Self(bytes))
    }
}

/// An invite as a QR code or text: where to meet and the secret to meet with. It carries no
/// journal secret, and the relay lets its mailbox be claimed once, for ten minutes.
#[derive(Clone, PartialEq, Eq)]
pub struct PairingInvite {
    /// The relay, e.g. `https://relay.example`.
    pub relay_url: String,
    /// The relay's pin, for a relay whose certificate no public CA signed.
    pub relay_pin: Option<RelayPin>,
    /// The mailbox id the relay gave (32 hex characters).
    pub mailbox: String,
    /// The secret both sides derive the channel's key from.
    pub secret: PairingSecret,
    /// Whom the invite is for.
    pub kind: PairingKind,
}

impl fmt::Debug for PairingInvite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PairingInvite")
            .field("relay_url", &self.relay_url)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

fn damaged() -> Error {
    Error::Invite("this invite code is damaged or mistyped; ask for a new one".into())
}

impl PairingInvite {
    /// The invite as text (`MEND4-…`), fit for a QR code.
    pub fn encode(&self) -> Result<Zeroizing<String>> {
        let url = self.relay_url.as_bytes();
        if url.is_empty() || url.len() > MAX_URL {
            return Err(Error::Invalid(format!(
                "a relay URL is 1 to {MAX_URL} bytes"
            )));
        }
        let mailbox = hex::decode(&self.mailbox)
            .ok()
            .filter(|m| m.len() == LONG_MAILBOX)
            .ok_or_else(|| Error::Invalid("an invite's mailbox is 32 hex characters".into()))?;
        let mut raw = Zeroizing::new(Vec::with_capacity(2 + url.len() + 16 + 32 + 33 + 4));
        raw.push(self.kind.to_u8());
        raw.push(url.len() as u8);
        raw.extend_from_slice(url);
        raw.extend_from_slice(&mailbox);
        raw.extend_from_slice(&self.secret.0);
        match &self.relay_pin {
            None => raw.push(0),
            Some(pin) => {
                raw.push(FLAG_PIN);
                raw.extend_from_slice(pin.as_bytes());
            }
        }
        let sum = Sha256::digest(raw.as_slice());
        raw.extend_from_slice(&sum[..4]);
        Ok(super::text::encode(PREFIX, raw.as_slice()))
    }

    /// Parses an invite, refusing anything damaged, and any older code that carried the
    /// journal's secrets, with a message fit for the user.
    pub fn decode(code: &str) -> Result<Self> {
        let code = super::text::compact(code);
        let Some(body) = code.strip_prefix(PREFIX) else {
            return Err(match code.get(..6) {
                Some("MEND1-" | "MEND2-" | "MEND3-") => Error::Invite(
                    "this invite comes from an older version of Mend and is no longer accepted; \
                     ask for a new one"
                        .into(),
                ),
                _ if code.starts_with("MEND") && code.get(5..6) == Some("-") => Error::Invite(
                    "this invite comes from a newer version of Mend; update the app".into(),
                ),
                _ => Error::Invite(
                    "this is not a Mend invite (it should start with MEND4-, or be a number and \
                     two words)"
                        .into(),
                ),
            });
        };
        let raw = super::text::decode(body).ok_or_else(damaged)?;
        if raw.len() < 2 + LONG_MAILBOX + 32 + 1 + 4 {
            return Err(damaged());
        }
        let (data, sum) = raw.split_at(raw.len() - 4);
        if Sha256::digest(data)[..4] != *sum {
            return Err(damaged());
        }
        let kind = PairingKind::from_u8(data[0]).ok_or_else(damaged)?;
        let url_len = usize::from(data[1]);
        let rest = &data[2..];
        let fixed = url_len + LONG_MAILBOX + 32;
        let (url, tail) = rest.split_at_checked(url_len).ok_or_else(damaged)?;
        let relay_url = std::str::from_utf8(url).map_err(|_| damaged())?.to_owned();
        let mailbox = hex::encode(&tail[..LONG_MAILBOX.min(tail.len())]);
        let secret: [u8; 32] = rest
            .get(url_len + LONG_MAILBOX..fixed)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(damaged)?;
        let secret = PairingSecret(secret);
        let relay_pin = match rest.get(fixed..) {
            Some([0]) => None,
            Some([FLAG_PIN, pin @ ..]) => {
                let pin: [u8; 32] = pin.try_into().map_err(|_| damaged())?;
                Some(RelayPin::from_bytes(pin))
            }
            _ => return Err(damaged()),
        };
        Ok(Self {
            relay_url,
            relay_pin,
            mailbox,
            secret,
            kind,
        })
    }

    /// The channel this invite opens, for `role`.
    pub fn channel(&self, role: Role) -> Channel {
        Channel::new(&self.secret.0, &self.mailbox, role)
    }
}

/// A short code: the relay's mailbox number and two words, `42-olive-harbor`. Said aloud on a
/// phone call; worth one guess to anyone who overhears only part of it.
#[derive(Clone, PartialEq, Eq)]
pub struct ShortCode {
    mailbox: String,
    words: Zeroizing<String>,
}

impl fmt::Debug for ShortCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShortCode")
            .field("mailbox", &self.mailbox)
            .finish_non_exhaustive()
    }
}

impl ShortCode {
    /// Two new random words for the mailbox the relay gave.
    pub fn generate(mailbox: &str) -> Result<Self> {
        check_short_mailbox(mailbox)?;
        let mut bytes = Zeroizing::new([0u8; SHORT_CODE_WORDS]);
        super::random(bytes.as_mut())?;
        let mut words = Zeroizing::new(String::with_capacity(2 * 9));
        for (i, byte) in bytes.iter().enumerate() {
            if i > 0 {
                words.push('-');
            }
            words.push_str(wordlist::WORDS[usize::from(*byte)]);
        }
        Ok(Self {
            mailbox: mailbox.to_owned(),
            words,
        })
    }

    /// Reads a code as a person typed it: any case, words separated by dashes or spaces.
    pub fn parse(text: &str) -> Result<Self> {
        let lowered = Zeroizing::new(text.trim().to_ascii_lowercase());
        let mut parts = lowered
            .split(|c: char| c == '-' || c.is_whitespace())
            .filter(|p| !p.is_empty());
        let mailbox = parts.next().unwrap_or_default();
        check_short_mailbox(mailbox).map_err(|_| {
            Error::Invite("a short code starts with a number, as in 42-olive-harbor".into())
        })?;
        let mut words = Zeroizing::new(String::with_capacity(2 * 9));
        let mut count = 0usize;
        for word in parts {
            if wordlist::index_of(word).is_none() {
                return Err(Error::Invite(
                    "a word of this code is not one Mend uses: check its spelling".into(),
                ));
            }
            if count > 0 {
                words.push('-');
            }
            words.push_str(word);
            count += 1;
        }
        if count != SHORT_CODE_WORDS {
            return Err(Error::Invite(format!(
                "a short code is a number and {SHORT_CODE_WORDS} words, as in 42-olive-harbor"
            )));
        }
        Ok(Self {
            mailbox: mailbox.to_owned(),
            words,
        })
    }

    /// Whether `text` looks like a short code rather than an invite (it starts with a digit).
    pub fn looks_like(text: &str) -> bool {
        text.trim().starts_with(|c: char| c.is_ascii_digit())
    }

    /// The mailbox number.
    pub fn mailbox(&self) -> &str {
        &self.mailbox
    }

    /// The code to read out, `42-olive-harbor` (a secret until the pairing ends).
    pub fn reveal(&self) -> Zeroizing<String> {
        let mut out = Zeroizing::new(String::with_capacity(
            self.mailbox.len() + 1 + self.words.len(),
        ));
        out.push_str(&self.mailbox);
        out.push('-');
        out.push_str(&self.words);
        out
    }
}

fn check_short_mailbox(mailbox: &str) -> Result<()> {
    let ok = (1..=6).contains(&mailbox.len())
        && mailbox.bytes().all(|b| b.is_ascii_digit())
        && !mailbox.starts_with('0');
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(
            "a short code's mailbox is a number of 1 to 6 digits".into(),
        ))
    }
}

/// Which end of a pairing this device is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The inviting device: it holds the secrets.
    Host,
    /// The joining device.
    Guest,
}

/// One side's half of SPAKE2 over a short code: its first message goes to the mailbox, and
/// the other side's first message finishes it into a [`Channel`].
pub struct CodeExchange {
    state: Spake2<Ed25519Group>,
    mailbox: String,
    role: Role,
}

impl fmt::Debug for CodeExchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CodeExchange")
            .field("mailbox", &self.mailbox)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl CodeExchange {
    /// Starts the exchange; returns the message to post. The host plays SPAKE2's side A. The
    /// mailbox number is part of the password, so a code cannot be tried against another
    /// mailbox.
    pub fn start(code: &ShortCode, role: Role) -> (Self, Vec<u8>) {
        let password = Password::new(code.reveal().as_bytes());
        let (host, guest) = (Identity::new(ID_HOST), Identity::new(ID_GUEST));
        let (state, message) = match role {
            Role::Host => Spake2::<Ed25519Group>::start_a(&password, &host, &guest),
            Role::Guest => Spake2::<Ed25519Group>::start_b(&password, &host, &guest),
        };
        (
            Self {
                state,
                mailbox: code.mailbox.clone(),
                role,
            },
            message,
        )
    }

    /// Finishes with the other side's message. A wrong code still finishes (with a key that
    /// differs from the other side's): it shows when the first sealed message fails to open.
    pub fn finish(self, theirs: &[u8]) -> Result<Channel> {
        let key = Zeroizing::new(
            self.state
                .finish(theirs)
                .map_err(|_| Error::Pairing(PairingFailure::Tampered))?,
        );
        Ok(Channel::new(&key, &self.mailbox, self.role))
    }
}

/// The two devices' sealed conversation: XChaCha20-Poly1305 with one key per direction, each
/// message's nonce and associated data bound to the mailbox, its direction and its place, so a
/// message replayed, reordered or carried to another mailbox fails to open.
pub struct Channel {
    mailbox: String,
    send: Zeroizing<[u8; 32]>,
    receive: Zeroizing<[u8; 32]>,
    send_dir: u8,
    sent: u64,
    received: u64,
    confirmation: Option<String>,
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("mailbox", &self.mailbox)
            .field("sent", &self.sent)
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

impl Channel {
    fn new(root: &[u8], mailbox: &str, role: Role) -> Self {
        let hk = Hkdf::<Sha256>::new(Some(LABEL_ROOT), root);
        let mut host = Zeroizing::new([0u8; 32]);
        let mut guest = Zeroizing::new([0u8; 32]);
        // 32 bytes is far below HKDF-SHA256's limit, so expand cannot fail.
        let _ = hk.expand_multi_info(&[LABEL_HOST, mailbox.as_bytes()], host.as_mut());
        let _ = hk.expand_multi_info(&[LABEL_GUEST, mailbox.as_bytes()], guest.as_mut());
        let (send, receive, send_dir) = match role {
            Role::Host => (host, guest, 0),
            Role::Guest => (guest, host, 1),
        };
        Self {
            mailbox: mailbox.to_owned(),
            send,
            receive,
            send_dir,
            sent: 0,
            received: 0,
            confirmation: None,
        }
    }

    fn nonce_and_aad(&self, dir: u8, n: u64) -> (XNonce, Vec<u8>) {
        let mut nonce = [0u8; 24];
        nonce[0] = dir;
        nonce[1..9].copy_from_slice(&n.to_le_bytes());
        let mut aad = Vec::with_capacity(LABEL_ROOT.len() + self.mailbox.len() + 9);
        aad.extend_from_slice(LABEL_ROOT);
        aad.extend_from_slice(self.mailbox.as_bytes());
        aad.push(dir);
        aad.extend_from_slice(&n.to_le_bytes());
        (XNonce::from(nonce), aad)
    }

    /// Mixes both ephemeral keys and the pairing's [`transcript`] into the channel: every
    /// message after the offer, the hello and the reveal is sealed under keys that also need
    /// this exchange, and both sides show the same [`Channel::confirmation`] only if they saw
    /// the same keys and the same transcript. `theirs` is the other side's public key.
    pub fn mix(
        &mut self,
        mine: &Ephemeral,
        theirs: &[u8; 32],
        transcript: &[u8; 32],
    ) -> Result<()> {
        let shared = Zeroizing::new(
            mine.0
                .diffie_hellman(&x25519_dalek::PublicKey::from(*theirs))
                .to_bytes(),
        );
        if shared.iter().all(|b| *b == 0) {
            return Err(Error::Pairing(PairingFailure::Tampered));
        }
        let ours = mine.public();
        let (host, guest) = if self.send_dir == 0 {
            (ours, *theirs)
        } else {
            (*theirs, ours)
        };
        let mut ikm = Zeroizing::new(Vec::with_capacity(96));
        ikm.extend_from_slice(&*self.send);
        ikm.extend_from_slice(&*self.receive);
        ikm.extend_from_slice(&*shared);
        if self.send_dir == 1 {
            // The same order on both sides: the host's sending key first.
            let (a, b) = ikm.split_at_mut(32);
            a.swap_with_slice(&mut b[..32]);
        }
        let hk = Hkdf::<Sha256>::new(Some(LABEL_MIX), &ikm);
        let mut host_key = Zeroizing::new([0u8; 32]);
        let mut guest_key = Zeroizing::new([0u8; 32]);
        let mut confirm = [0u8; CONFIRM_WORDS];
        let _ = hk.expand_multi_info(&[LABEL_HOST, &host, &guest, transcript], host_key.as_mut());
        let _ = hk.expand_multi_info(
            &[LABEL_GUEST, &host, &guest, transcript],
            guest_key.as_mut(),
        );
        let _ = hk.expand_multi_info(&[LABEL_CONFIRM, &host, &guest, transcript], &mut confirm);
        let (send, receive) = if self.send_dir == 0 {
            (host_key, guest_key)
        } else {
            (guest_key, host_key)
        };
        self.send = send;
        self.receive = receive;
        self.confirmation = Some(
            confirm
                .iter()
                .map(|b| wordlist::WORDS[usize::from(*b)])
                .collect::<Vec<_>>()
                .join(" "),
        );
        Ok(())
    }

    /// Words both screens show once the keys are mixed, for the inviting user to compare with
    /// the joiner's screen before accepting: equal words mean the joiner on the other end is
    /// the one whose screen shows them.
    pub fn confirmation(&self) -> Option<&str> {
        self.confirmation.as_deref()
    }

    /// Seals the next message to the other side. (Each key seals at most a handful of
    /// messages, each with its own counter, so counter nonces never repeat.)
    pub fn seal(&mut self, message: &PairingMessage) -> Result<Vec<u8>> {
        let plain = message.encode()?;
        let (nonce, aad) = self.nonce_and_aad(self.send_dir, self.sent);
        let cipher = XChaCha20Poly1305::new((&*self.send).into());
        let sealed = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: &plain,
                    aad: &aad,
                },
            )
            .map_err(|_| Error::Crypto("sealing failed".into()))?;
        self.sent = self.sent.saturating_add(1);
        Ok(sealed)
    }

    /// Opens the next message from the other side. A message that does not open means the
    /// two sides hold different keys (a wrong short code) or the message was altered:
    /// [`PairingFailure::WrongCode`] for the first message, [`PairingFailure::Tampered`] after.
    pub fn open(&mut self, sealed: &[u8]) -> Result<PairingMessage> {
        let (nonce, aad) = self.nonce_and_aad(1 - self.send_dir, self.received);
        let cipher = XChaCha20Poly1305::new((&*self.receive).into());
        let failed = if self.received == 0 {
            PairingFailure::WrongCode
        } else {
            PairingFailure::Tampered
        };
        let plain = Zeroizing::new(
            cipher
                .decrypt(
                    &nonce,
                    Payload {
                        msg: sealed,
                        aad: &aad,
                    },
                )
                .map_err(|_| Error::Pairing(failed))?,
        );
        self.received = self.received.saturating_add(1);
        PairingMessage::decode(&plain)
    }
}

/// A fresh X25519 key for one pairing. Mixed into the channel once both halves are known
/// ([`Channel::mix`]), it keeps the secrets handed over sealed even from whoever later learns
/// the invite and holds a recording of the relay.
pub struct Ephemeral(x25519_dalek::StaticSecret);

impl fmt::Debug for Ephemeral {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Ephemeral(…)")
    }
}

impl Ephemeral {
    /// A new key.
    pub fn generate() -> Result<Self> {
        let mut seed = Zeroizing::new([0u8; 32]);
        super::random(seed.as_mut())?;
        Ok(Self(x25519_dalek::StaticSecret::from(*seed)))
    }

    /// The public half, sent in the offer or the hello.
    pub fn public(&self) -> [u8; 32] {
        x25519_dalek::PublicKey::from(&self.0).to_bytes()
    }
}

/// What the two devices say to each other inside the [`Channel`].
#[derive(Clone, PartialEq, Eq)]
pub enum PairingMessage {
    /// Host → guest, first: what the invite is for and who sent it.
    Offer {
        /// Partner or device.
        kind: PairingKind,
        /// The inviting partner's name.
        inviter: String,
        /// The [`commitment`] to the host's ephemeral X25519 key ([`Ephemeral`]).
        commit: [u8; 32],
    },
    /// Guest → host: who is joining (a partner's name; empty for a partner's own device).
    Hello {
        /// The name the joining partner gives.
        name: String,
        /// The guest's ephemeral X25519 key.
        key: [u8; 32],
        /// A rejoining partner's new identity key (public), which the host vouches for.
        identity: Option<[u8; 32]>,
    },
    /// Host → guest, once the hello came: the host's ephemeral key its offer committed to.
    Reveal {
        /// The host's ephemeral X25519 key.
        key: [u8; 32],
    },
    /// Host → guest, after its user accepted: the secrets, as a handover the guest joins with.
    Welcome {
        /// The encoded handover ([`crate::crypto::Invite`]).
        handover: Zeroizing<String>,
    },
    /// Host → guest: its user declined.
    Decline,
}

impl fmt::Debug for PairingMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Offer { .. } => "Offer",
            Self::Hello { .. } => "Hello",
            Self::Reveal { .. } => "Reveal",
            Self::Welcome { .. } => "Welcome",
            Self::Decline => "Decline",
        })
    }
}

/// An offer that carried the host's key itself, before the commitment: refused (a pairing
/// between apps of before and after cannot agree on its words).
const TAG_OFFER_OPEN: u8 = 1;
const TAG_HELLO: u8 = 2;
const TAG_WELCOME: u8 = 3;
const TAG_DECLINE: u8 = 4;
/// A hello that carries a rejoining partner's identity key.
const TAG_HELLO_REJOIN: u8 = 5;
const TAG_OFFER: u8 = 6;
const TAG_REVEAL: u8 = 7;

fn put_text(out: &mut Vec<u8>, text: &str, max: usize) -> Result<()> {
    let len = u16::try_from(text.len())
        .ok()
        .filter(|&l| usize::from(l) <= max)
        .ok_or_else(|| Error::Invalid(format!("a name is at most {max} bytes")))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(text.as_bytes());
    Ok(())
}

fn take_text(input: &[u8], max: usize) -> Result<(&str, &[u8])> {
    let tampered = || Error::Pairing(PairingFailure::Tampered);
    let (len, rest) = input.split_at_checked(2).ok_or_else(tampered)?;
    let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    if len > max {
        return Err(tampered());
    }
    let (text, rest) = rest.split_at_checked(len).ok_or_else(tampered)?;
    Ok((std::str::from_utf8(text).map_err(|_| tampered())?, rest))
}

fn take_key(input: &[u8]) -> Result<([u8; 32], &[u8])> {
    let (key, rest) = input
        .split_at_checked(32)
        .ok_or(Error::Pairing(PairingFailure::Tampered))?;
    let key: [u8; 32] = key
        .try_into()
        .map_err(|_| Error::Pairing(PairingFailure::Tampered))?;
    Ok((key, rest))
}

/// A name as the other side gave it: one line of text, no control characters (it is shown in
/// a question its user answers).
fn checked_name(name: &str) -> Result<String> {
    if name.chars().any(char::is_control) {
        return Err(Error::Pairing(PairingFailure::Tampered));
    }
    Ok(name.trim().to_owned())
}

impl PairingMessage {
    fn encode(&self) -> Result<Zeroizing<Vec<u8>>> {
        let mut out = Zeroizing::new(Vec::with_capacity(MAX_HANDOVER + 3));
        match self {
            Self::Offer {
                kind,
                inviter,
                commit,
            } => {
                out.extend_from_slice(&[TAG_OFFER, kind.to_u8()]);
                out.extend_from_slice(commit);
                put_text(&mut out, inviter, MAX_PAIRING_NAME)?;
            }
            Self::Reveal { key } => {
                out.push(TAG_REVEAL);
                out.extend_from_slice(key);
            }
            Self::Hello {
                name,
                key,
                identity,
            } => {
                out.push(if identity.is_some() {
                    TAG_HELLO_REJOIN
                } else {
                    TAG_HELLO
                });
                out.extend_from_slice(key);
                if let Some(identity) = identity {
                    out.extend_from_slice(identity);
                }
                put_text(&mut out, name, MAX_PAIRING_NAME)?;
            }
            Self::Welcome { handover } => {
                out.push(TAG_WELCOME);
                put_text(&mut out, handover, MAX_HANDOVER)?;
            }
            Self::Decline => out.push(TAG_DECLINE),
        }
        Ok(out)
    }

    fn decode(plain: &[u8]) -> Result<Self> {
        let tampered = || Error::Pairing(PairingFailure::Tampered);
        let (tag, rest) = plain.split_first().ok_or_else(tampered)?;
        let (message, rest) = match *tag {
            TAG_OFFER => {
                let (kind, rest) = rest.split_first().ok_or_else(tampered)?;
                let kind = PairingKind::from_u8(*kind).ok_or_else(tampered)?;
                let (commit, rest) = take_key(rest)?;
                let (inviter, rest) = take_text(rest, MAX_PAIRING_NAME)?;
                let inviter = checked_name(inviter)?;
                (
                    Self::Offer {
                        kind,
                        inviter,
                        commit,
                    },
                    rest,
                )
            }
            TAG_REVEAL => {
                let (key, rest) = take_key(rest)?;
                (Self::Reveal { key }, rest)
            }
            TAG_OFFER_OPEN => return Err(tampered()),
            TAG_HELLO | TAG_HELLO_REJOIN => {
                let (key, rest) = take_key(rest)?;
                let (identity, rest) = if *tag == TAG_HELLO_REJOIN {
                    let (identity, rest) = take_key(rest)?;
                    (Some(identity), rest)
                } else {
                    (None, rest)
                };
                let (name, rest) = take_text(rest, MAX_PAIRING_NAME)?;
                let name = checked_name(name)?;
                (
                    Self::Hello {
                        name,
                        key,
                        identity,
                    },
                    rest,
                )
            }
            TAG_WELCOME => {
                let (handover, rest) = take_text(rest, MAX_HANDOVER)?;
                let handover = Zeroizing::new(handover.to_owned());
                (Self::Welcome { handover }, rest)
            }
            TAG_DECLINE => (Self::Decline, rest),
            _ => return Err(tampered()),
        };
        if rest.is_empty() {
            Ok(message)
        } else {
            Err(tampered())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invite(pin: Option<RelayPin>) -> Result<PairingInvite> {
        Ok(PairingInvite {
            relay_url: "https://relay.example".into(),
            relay_pin: pin,
            mailbox: "00112233445566778899aabbccddeeff".into(),
            secret: PairingSecret::generate()?,
            kind: PairingKind::Partner,
        })
    }

    #[test]
    fn an_invite_round_trips_carries_no_journal_secret_and_refuses_old_codes() -> Result<()> {
        for pin in [None, Some(RelayPin::of_spki(b"relay key"))] {
            let invite = invite(pin)?;
            let code = invite.encode()?;
            assert!(code.starts_with("MEND4-"));
            assert_eq!(PairingInvite::decode(&code)?, invite);
            assert!(!format!("{invite:?}").contains(&code[6..20]));
            // One changed character and a truncation are refused.
            let mut chars: Vec<char> = code.chars().collect();
            let i = chars.len() / 2;
            chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
            let typo: String = chars.into_iter().collect();
            for bad in [typo.as_str(), &code[..code.len() - 3], "hello"] {
                assert!(matches!(PairingInvite::decode(bad), Err(Error::Invite(_))));
            }
        }
        let old = crate::crypto::Invite {
            relay_url: "https://relay.example".into(),
            couple: crate::crypto::SpaceSecret::generate()?,
            kind: crate::crypto::InviteKind::Partner,
            relay_pin: None,
            epoch: None,
        }
        .encode()?;
        let err = PairingInvite::decode(&old).err();
        assert!(
            matches!(&err, Some(Error::Invite(m)) if m.contains("older")),
            "{err:?}"
        );
        Ok(())
    }

    #[test]
    fn short_codes_read_as_people_type_them() -> Result<()> {
        let code = ShortCode::generate("42")?;
        let text = code.reveal();
        assert!(text.starts_with("42-"));
        assert!(!format!("{code:?}").contains(&text[3..]));
        assert_eq!(ShortCode::parse(&text)?, code);
        let spaced = text.replace('-', " ").to_uppercase();
        assert_eq!(ShortCode::parse(&format!("  {spaced} "))?, code);
        for bad in [
            "olive-harbor",
            "42-olive",
            "42-olive-harbor-tiger",
            "42-olive-harbr",
            "042-olive-harbor",
        ] {
            assert!(
                matches!(ShortCode::parse(bad), Err(Error::Invite(_))),
                "{bad}"
            );
        }
        assert!(ShortCode::looks_like(" 7-a-b") && !ShortCode::looks_like("MEND4-x"));
        Ok(())
    }

    fn pair(host: &mut Channel, guest: &mut Channel) -> Result<()> {
        let (h, g) = (Ephemeral::generate()?, Ephemeral::generate()?);
        let offer = PairingMessage::Offer {
            kind: PairingKind::Device,
            inviter: "Alex".into(),
            commit: commitment(&h.public()),
        };
        assert_eq!(guest.open(&host.seal(&offer)?)?, offer);
        let hello = PairingMessage::Hello {
            name: "Sam".into(),
            key: g.public(),
            identity: None,
        };
        assert_eq!(host.open(&guest.seal(&hello)?)?, hello);
        // A rejoining partner's hello carries their new identity key.
        let rejoin = PairingMessage::Hello {
            name: "Sam".into(),
            key: g.public(),
            identity: Some([3; 32]),
        };
        assert_eq!(PairingMessage::decode(&rejoin.encode()?)?, rejoin);
        let reveal = PairingMessage::Reveal { key: h.public() };
        assert_eq!(guest.open(&host.seal(&reveal)?)?, reveal);
        let said = transcript(PairingKind::Device, "Alex", "Sam", None);
        host.mix(&h, &g.public(), &said)?;
        guest.mix(&g, &h.public(), &said)?;
        assert!(host.confirmation().is_some());
        assert_eq!(host.confirmation(), guest.confirmation());
        let welcome = PairingMessage::Welcome {
            handover: Zeroizing::new("MEND1-secret".into()),
        };
        assert_eq!(guest.open(&host.seal(&welcome)?)?, welcome);
        Ok(())
    }

    #[test]
    fn an_invite_channel_carries_messages_in_order_only() -> Result<()> {
        let invite = invite(None)?;
        let (mut host, mut guest) = (invite.channel(Role::Host), invite.channel(Role::Guest));
        pair(&mut host, &mut guest)?;

        // Replayed, reordered, reflected or bent messages do not open.
        let (mut host, mut guest) = (invite.channel(Role::Host), invite.channel(Role::Guest));
        let first = host.seal(&PairingMessage::Decline)?;
        let second = host.seal(&PairingMessage::Decline)?;
        assert!(matches!(
            guest.open(&second),
            Err(Error::Pairing(PairingFailure::WrongCode))
        ));
        guest.open(&first)?;
        assert!(matches!(
            guest.open(&first),
            Err(Error::Pairing(PairingFailure::Tampered))
        ));
        let mut host2 = invite.channel(Role::Host);
        let reflected = host2.seal(&PairingMessage::Decline)?;
        assert!(invite.channel(Role::Host).open(&reflected).is_err());
        let mut bent = second.clone();
        bent[3] ^= 1;
        assert!(guest.open(&bent).is_err());
        // Another mailbox's channel cannot read it.
        let other = PairingInvite {
            mailbox: "ffffffffffffffffffffffffffffffff".into(),
            secret: invite.secret.clone(),
            ..invite
        };
        assert!(other.channel(Role::Guest).open(&first).is_err());
        Ok(())
    }

    #[test]
    fn a_short_code_agrees_a_key_only_when_both_sides_read_the_same_words() -> Result<()> {
        let code = ShortCode::generate("7")?;
        let (host, to_guest) = CodeExchange::start(&code, Role::Host);
        let (guest, to_host) = CodeExchange::start(&ShortCode::parse(&code.reveal())?, Role::Guest);
        let (mut host, mut guest) = (host.finish(&to_host)?, guest.finish(&to_guest)?);
        pair(&mut host, &mut guest)?;

        // One word wrong: the first sealed message says so.
        let wrong = loop {
            let other = ShortCode::generate("7")?;
            if other != code {
                break other;
            }
        };
        let (host, to_guest) = CodeExchange::start(&code, Role::Host);
        let (guest, to_host) = CodeExchange::start(&wrong, Role::Guest);
        let (mut host, mut guest) = (host.finish(&to_host)?, guest.finish(&to_guest)?);
        let offer = host.seal(&PairingMessage::Decline)?;
        assert!(matches!(
            guest.open(&offer),
            Err(Error::Pairing(PairingFailure::WrongCode))
        ));
        // A malformed SPAKE2 message is refused as tampering.
        let (guest, _) = CodeExchange::start(&code, Role::Guest);
        assert!(matches!(
            guest.finish(b"short"),
            Err(Error::Pairing(PairingFailure::Tampered))
        ));
        Ok(())
    }

    #[test]
    fn the_secrets_need_both_fresh_keys_and_the_words_tell_a_stranger_apart() -> Result<()> {
        let invite = invite(None)?;
        let (mut host, mut guest) = (invite.channel(Role::Host), invite.channel(Role::Guest));
        let (h, g) = (Ephemeral::generate()?, Ephemeral::generate()?);
        let offer = host.seal(&PairingMessage::Offer {
            kind: PairingKind::Partner,
            inviter: "Alex".into(),
            commit: commitment(&h.public()),
        })?;
        guest.open(&offer)?;
        let said = transcript(PairingKind::Partner, "Alex", "Blake", None);
        host.mix(&h, &g.public(), &said)?;
        guest.mix(&g, &h.public(), &said)?;
        let welcome = host.seal(&PairingMessage::Decline)?;
        // Whoever holds the invite and a recording of the offer, but neither fresh secret,
        // follows the channel up to the mix and reads nothing after it.
        let mut recorder = invite.channel(Role::Guest);
        recorder.open(&offer)?;
        assert!(recorder.open(&welcome).is_err());
        assert_eq!(guest.open(&welcome)?, PairingMessage::Decline);
        // A stranger in the middle with keys of their own shows other words.
        let (mut h2, mut g2) = (invite.channel(Role::Host), invite.channel(Role::Guest));
        let (a, b, c) = (
            Ephemeral::generate()?,
            Ephemeral::generate()?,
            Ephemeral::generate()?,
        );
        h2.mix(&a, &b.public(), &said)?;
        g2.mix(&c, &a.public(), &said)?;
        assert_ne!(h2.confirmation(), g2.confirmation());
        assert_eq!(
            h2.confirmation().map(|w| w.split(' ').count()),
            Some(CONFIRM_WORDS)
        );
        Ok(())
    }

    /// A relay that holds the invite re-seals a rejoin's hello with an identity of its own:
    /// both sides keep their keys, yet the words differ, and the welcome does not open.
    #[test]
    fn the_words_cover_what_the_hello_said() -> Result<()> {
        let invite = invite(None)?;
        let (mut host, mut guest) = (invite.channel(Role::Host), invite.channel(Role::Guest));
        let (h, g) = (Ephemeral::generate()?, Ephemeral::generate()?);
        let sent = transcript(PairingKind::Rejoin, "Alex", "", Some(&[3; 32]));
        let swapped = transcript(PairingKind::Rejoin, "Alex", "", Some(&[4; 32]));
        assert_ne!(sent, swapped);
        assert_ne!(
            sent,
            transcript(PairingKind::Rejoin, "Alex", "Eve", Some(&[3; 32]))
        );
        assert_ne!(
            sent,
            transcript(PairingKind::Device, "Alex", "", Some(&[3; 32]))
        );
        // Names are compared as both sides show them (trimmed).
        assert_eq!(
            sent,
            transcript(PairingKind::Rejoin, " Alex ", "", Some(&[3; 32]))
        );
        host.mix(&h, &g.public(), &swapped)?;
        guest.mix(&g, &h.public(), &sent)?;
        assert_ne!(host.confirmation(), guest.confirmation());
        let welcome = host.seal(&PairingMessage::Decline)?;
        assert!(guest.open(&welcome).is_err());
        Ok(())
    }

    /// The host's key is sent only after the guest's: the offer carries a commitment to it,
    /// and an offer of the older form (the key itself) is refused.
    #[test]
    fn the_offer_commits_to_the_host_key_before_the_guest_sends_its_own() -> Result<()> {
        let h = Ephemeral::generate()?;
        let offer = PairingMessage::Offer {
            kind: PairingKind::Partner,
            inviter: "Alex".into(),
            commit: commitment(&h.public()),
        };
        let encoded = offer.encode()?;
        assert!(!encoded.windows(32).any(|w| w == h.public()));
        assert_eq!(commitment(&h.public()), commitment(&h.public()));
        assert_ne!(
            commitment(&h.public()),
            commitment(&Ephemeral::generate()?.public())
        );
        let mut open = encoded.to_vec();
        open[0] = TAG_OFFER_OPEN;
        assert!(matches!(
            PairingMessage::decode(&open),
            Err(Error::Pairing(PairingFailure::Tampered))
        ));
        Ok(())
    }

    #[test]
    fn messages_refuse_trailing_or_oversized_fields() {
        assert!(PairingMessage::decode(&[TAG_DECLINE, 0]).is_err());
        assert!(PairingMessage::decode(&[TAG_HELLO, 0xff, 0xff]).is_err());
        assert!(PairingMessage::decode(&[9]).is_err());
        assert!(PairingMessage::decode(&[]).is_err());
        // A name with a line break would forge a line of the question its user answers.
        let mut forged = vec![TAG_HELLO];
        forged.extend_from_slice(&[1; 32]);
        forged.extend_from_slice(&[0, 5]);
        forged.extend_from_slice(b"Sam\nY");
        assert!(PairingMessage::decode(&forged).is_err());
        let long = PairingMessage::Hello {
            name: "x".repeat(MAX_PAIRING_NAME + 1),
            key: [7; 32],
            identity: None,
        };
        assert!(long.encode().is_err());
    }
}
