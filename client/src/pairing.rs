//! Pairing over the relay's mailbox (docs/protocol.md §11, docs/security.md "Invites and
//! pairing"): the inviting device's [`Invitation`] and the joining device's [`Joining`].
//!
//! The host opens a mailbox and shows an invite or a short code; the guest claims the mailbox
//! (once: a second claim is refused by the relay) and the two talk through a sealed
//! [`Channel`], into which both mix a fresh key. Both then show the same confirmation words;
//! the host sends the journal's secrets only after its user accepts the joiner (by name, having
//! compared the words with the joiner's screen). The guest closes the mailbox once it holds
//! them, which deletes every message at the relay, or burns it if joining failed. A wrong short
//! code burns the mailbox and both sides say so.

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use http::{Method, StatusCode};
use mend_core::{
    crypto::{
        Channel, CodeExchange, Ephemeral, IdentityKey, MAX_PAIRING_NAME, PairingFailure,
        PairingInvite, PairingKind, PairingMessage, PairingSecret, PartnerIdentity, Role,
        ShortCode, SpaceSecret, commitment, transcript,
    },
    error::{Error, Result},
    journal::OpenOptions,
};
use mend_protocol::{
    ErrorCode, Limits, MAX_PAIRING_MESSAGES, PairingInbox, PairingOpen, PairingPost, PairingState,
    PairingTicket, paths,
};
use zeroize::Zeroizing;

use crate::{
    Device, RelayOptions, SyncObserver,
    http::{RelayHttp, error_code},
};

/// The most messages a side may post to a mailbox (the relay refuses more).
const MOST_MESSAGES: u64 = MAX_PAIRING_MESSAGES as u64;

/// The pause before asking a mailbox again when the relay answered without waiting.
const POLL_PAUSE: Duration = Duration::from_millis(250);

/// The longest one long-poll of the mailbox waits, in seconds: below the HTTP client's
/// per-exchange clock, so a quiet mailbox never reads as a relay out of reach.
const POLL_WAIT_SECS: u64 = 8;
/// How long the host waits, after sending the secrets or a refusal, for the guest to take
/// them and close the mailbox before closing it itself.
const HANDOVER_WAIT: Duration = Duration::from_secs(30);

/// Who asked to join, for the inviting user to accept or decline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Joiner {
    /// The name the joining partner gave (empty for one of this partner's own devices).
    pub name: String,
    /// What the invite was for.
    pub kind: PairingKind,
    /// Words the joiner's screen shows too: equal words mean the device asking is the one in
    /// the user's hands (or on the phone with them).
    pub confirmation: String,
}

/// A deadline `budget` from now, however large the budget.
fn deadline_after(budget: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(budget)
        .or_else(|| now.checked_add(Duration::from_secs(24 * 3600)))
        .unwrap_or(now)
}

/// The host's half of a pairing: open with [`Device::invite`], show [`Invitation::code`], wait
/// for the joiner, then accept or decline.
pub struct Invitation {
    mailbox: Mailbox,
    code: Zeroizing<String>,
    kind: PairingKind,
    inviter: String,
    handover: Zeroizing<String>,
    /// The short code's SPAKE2 half until the guest's half arrives.
    exchange: Option<CodeExchange>,
    channel: Option<Channel>,
    /// This side's fresh key, sent in the offer.
    ephemeral: Ephemeral,
    joiner: Option<Joiner>,
    /// A rejoining partner's new identity key, from their hello.
    joiner_identity: Option<IdentityKey>,
}

impl std::fmt::Debug for Invitation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invitation")
            .field("mailbox", &self.mailbox.id)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// One side's view of a mailbox at the relay.
struct Mailbox {
    http: RelayHttp,
    id: String,
    /// `Bearer <hex>`, without the scheme: what [`RelayHttp`] sends.
    token: Zeroizing<String>,
    expires_at: u64,
    /// The other side's messages read so far.
    after: u64,
}

/// The time in unix seconds, as the relay counts a mailbox's expiry.
pub fn unix_now() -> u64 {
    u64::try_from(crate::now_ms() / 1000).unwrap_or(0)
}

/// The failure a refusal of a pairing route stands for.
fn refusal(status: StatusCode, body: &[u8]) -> Error {
    match error_code(body) {
        Some(ErrorCode::PairingUsed) => PairingFailure::Used.into(),
        Some(ErrorCode::PairingExpired) => PairingFailure::Expired.into(),
        Some(ErrorCode::PairingUnknown) => PairingFailure::Unknown.into(),
        Some(ErrorCode::PairingClosed) => PairingFailure::Closed.into(),
        Some(ErrorCode::RateLimited) => Error::Invite(
            "the relay is refusing more pairing attempts from this network for a minute; try \
             again shortly"
                .into(),
        ),
        _ if status.as_u16() == 410 => PairingFailure::Expired.into(),
        _ if status.as_u16() == 404 => PairingFailure::Unknown.into(),
        _ if status.is_server_error() => Error::Unreachable,
        _ => Error::Invite(format!(
            "the relay refused the pairing (HTTP {}); make a new invite",
            status.as_u16()
        )),
    }
}

fn ticket_of(status: StatusCode, body: &[u8]) -> Result<PairingTicket> {
    if !status.is_success() {
        return Err(refusal(status, body));
    }
    let ticket = PairingTicket::decode(body, &Limits::DEFAULT).map_err(|_| Error::Unreachable)?;
    // The id goes into request lines: one the relay made up (spaces, line breaks) is refused.
    if !paths::is_mailbox_id(&ticket.mailbox) {
        return Err(Error::Unreachable);
    }
    Ok(ticket)
}

fn hex_token(ticket: &PairingTicket) -> Zeroizing<String> {
    Zeroizing::new(hex::encode(ticket.token))
}

impl Mailbox {
    fn from_ticket(http: RelayHttp, ticket: &PairingTicket) -> Self {
        Self {
            http,
            id: ticket.mailbox.clone(),
            token: hex_token(ticket),
            expires_at: ticket.expires_at,
            after: 0,
        }
    }

    async fn post(&self, body: Vec<u8>) -> Result<()> {
        let frame = PairingPost { body }.to_bytes();
        let (status, answer) = self
            .http
            .pairing(
                Method::POST,
                &paths::pairing_messages(&self.id),
                &self.token,
                Some(frame),
            )
            .await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(refusal(status, &answer))
        }
    }

    /// The other side's next message, waiting until `deadline`: `Ok(None)` when none came.
    /// A mailbox closed, burned or expired meanwhile ends the wait with its failure; a message
    /// numbered beyond what a side may post, which only the relay can have made up, with
    /// `Unreachable`.
    async fn next(&mut self, deadline: Instant) -> Result<Option<Vec<u8>>> {
        loop {
            let asked = Instant::now();
            let left = deadline.saturating_duration_since(asked);
            let wait = left.as_secs().min(POLL_WAIT_SECS);
            let (status, body) = self
                .http
                .pairing(
                    Method::GET,
                    &paths::pairing_inbox(&self.id, self.after, wait),
                    &self.token,
                    None,
                )
                .await?;
            if !status.is_success() {
                return Err(refusal(status, &body));
            }
            let inbox =
                PairingInbox::decode(&body, &Limits::DEFAULT).map_err(|_| Error::Unreachable)?;
            // Only the next message in order counts; the relay numbers each side's from 1.
            if let Some(message) = inbox
                .messages
                .into_iter()
                .find(|m| m.seq == self.after.saturating_add(1))
            {
                // The relay takes at most this many from a side, so a loop that skips
                // messages it does not expect ends after a few, whatever the relay says.
                if message.seq > MOST_MESSAGES {
                    return Err(Error::Unreachable);
                }
                self.after = message.seq;
                return Ok(Some(message.body));
            }
            match inbox.state {
                PairingState::Closed => return Err(PairingFailure::Closed.into()),
                PairingState::Burned => return Err(PairingFailure::Burned.into()),
                PairingState::Expired => return Err(PairingFailure::Expired.into()),
                PairingState::Open | PairingState::Claimed => {}
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            if wait == 0 || asked.elapsed() < Duration::from_secs(wait) / 2 {
                // Less than a second left, or a relay that answers at once instead of waiting:
                // one short pause instead of a busy loop.
                tokio::time::sleep(left.min(POLL_PAUSE)).await;
            }
        }
    }

    /// Waits until `deadline` for the other side to close the mailbox; whether it did.
    async fn closed_by_other(&mut self, deadline: Instant) -> bool {
        loop {
            match self.next(deadline).await {
                Err(Error::Pairing(PairingFailure::Closed)) => return true,
                // A message comes back before `next` looks at the clock: this loop does.
                Ok(Some(_)) if Instant::now() < deadline => continue,
                _ => return false,
            }
        }
    }

    /// Closes (or burns) the mailbox; the relay deletes every message at once. Best effort:
    /// an unreachable relay deletes them at expiry anyway.
    async fn close(&self, burn: bool) {
        let path = paths::pairing_close(&self.id, burn);
        if let Err(e) = self
            .http
            .pairing(Method::DELETE, &path, &self.token, None)
            .await
        {
            tracing::debug!(error = %e, "the pairing mailbox could not be closed");
        }
    }

    /// Opens the other side's next message; a message that does not open burns the mailbox.
    async fn open(&self, channel: &mut Channel, sealed: &[u8]) -> Result<PairingMessage> {
        match channel.open(sealed) {
            Ok(message) => Ok(message),
            Err(e) => {
                self.close(true).await;
                Err(e)
            }
        }
    }
}

impl Device {
    /// What a partner or device pairing hands over: the secrets of the epoch the journal is
    /// in now. Made when the invite opens and again when it is accepted, since the journal
    /// may have moved in between (the joiner would otherwise get secrets already retired, or
    /// ones a removed device still reads).
    pub(crate) fn handover(&self, kind: PairingKind) -> Result<Zeroizing<String>> {
        let keyring = self.keyring();
        let (me, partnered, journal_epoch) =
            self.read(|j| Ok((j.me(), j.partner().is_some(), j.epoch_start()?)))?;
        // The epoch the keyring's secrets belong to, read with them (a move between the two
        // reads would otherwise pair the old secrets with the new epoch).
        let epoch = match keyring.epoch {
            mend_core::KeyringEpoch::Known(epoch) => epoch,
            mend_core::KeyringEpoch::Unknown => journal_epoch,
        };
        match kind {
            // A second partner's identity is refused everywhere, yet its device would read the
            // couple's space (and could erase it at the relay) without showing among the
            // devices anyone can remove.
            PairingKind::Partner if partnered => Err(Error::Invalid(
                "your partner has already joined this journal: invite another of your own \
                 devices instead, or, if your partner lost every device, invite them to rejoin"
                    .into(),
            )),
            PairingKind::Partner => keyring.partner_invite_at(epoch),
            PairingKind::Device => keyring.device_invite_at(me, epoch),
            PairingKind::Rejoin => Err(Error::Invalid(
                "a rejoin's handover is made once the journal has moved".into(),
            )),
        }
    }

    /// Opens a pairing for the other partner ([`PairingKind::Partner`]), another of this
    /// partner's devices, or the other partner rejoining on a new device after losing every
    /// one ([`PairingKind::Rejoin`]), at this journal's relay: an invite for a QR code, or
    /// with `short` a short code to read out. Nothing is handed over until the user accepts
    /// ([`Device::welcome`]).
    pub async fn invite(&self, kind: PairingKind, short: bool) -> Result<Invitation> {
        // The secrets handed over are those of the epoch the journal is in, wherever it moved
        // (an app extension's round may have moved it).
        self.adopt_elsewhere_now().await?;
        let keyring = self.keyring();
        let http = RelayHttp::new(&keyring.relay_url, self.relay_options())?;
        http.check()?;
        let inviter = self.read(|j| {
            let me = j.me();
            Ok(j.partners()
                .into_iter()
                .find(|p| p.id == me)
                .map(|p| p.name)
                .unwrap_or_default())
        })?;
        let handover = match kind {
            PairingKind::Partner | PairingKind::Device => self.handover(kind)?,
            // Written once the journal has moved to the epoch the rejoin starts
            // ([`Device::welcome`]).
            PairingKind::Rejoin => {
                let other = self.read(|j| {
                    j.partner().map(|p| p.id).ok_or_else(|| {
                        Error::Invalid(
                            "nobody has joined this journal as your partner yet: invite them \
                             as a partner instead"
                                .into(),
                        )
                    })
                })?;
                // Refused before a joiner gets as far as a code: the rejoin waits for its ask,
                // and for the relay to say that no device of the partner cancelled it.
                self.rejoin_check(other).await?;
                Zeroizing::new(String::new())
            }
        };
        let (status, body) = http
            .pairing(
                Method::POST,
                &paths::pairings(),
                "",
                Some(PairingOpen { short }.to_bytes()),
            )
            .await?;
        let ticket = ticket_of(status, &body)?;
        let mailbox = Mailbox::from_ticket(http, &ticket);
        let mut invitation = Invitation {
            code: Zeroizing::new(String::new()),
            kind,
            inviter,
            handover,
            exchange: None,
            channel: None,
            ephemeral: Ephemeral::generate()?,
            joiner: None,
            joiner_identity: None,
            mailbox,
        };
        if short {
            let code = ShortCode::generate(&ticket.mailbox)?;
            let (exchange, first) = CodeExchange::start(&code, Role::Host);
            invitation.mailbox.post(first).await?;
            invitation.exchange = Some(exchange);
            invitation.code = code.reveal();
        } else {
            let invite = PairingInvite {
                relay_url: keyring.relay_url.clone(),
                relay_pin: keyring.relay_pin,
                mailbox: ticket.mailbox.clone(),
                secret: PairingSecret::generate()?,
                kind,
            };
            let mut channel = invite.channel(Role::Host);
            invitation.code = invite.encode()?;
            let offer = invitation.offer(&mut channel)?;
            invitation.mailbox.post(offer).await?;
            invitation.channel = Some(channel);
        }
        Ok(invitation)
    }

    /// Joins the journal of whoever shows `code`: [`Device::start_join`] then
    /// [`Joining::finish`], without showing the confirmation words to anyone (tests, scripts).
    /// Answers the device and what it joined as.
    #[allow(clippy::too_many_arguments)]
    pub async fn join_with_code(
        path: &Path,
        code: &str,
        name: &str,
        relay_url: Option<&str>,
        options: OpenOptions,
        relay: RelayOptions,
        observer: Option<Arc<dyn SyncObserver>>,
        budget: Duration,
    ) -> Result<(Device, PairingKind)> {
        let joining = Device::start_join(code, name, relay_url, &relay, budget).await?;
        let kind = joining.kind();
        let device = joining.finish(path, options, relay, observer).await?;
        Ok((device, kind))
    }

    /// Starts joining the journal of whoever shows `code`: an invite (`MEND4-…`, from a QR
    /// code or text) or a short code read out on a call (`42-olive-harbor`, which names no
    /// relay: `relay_url` says which, and `relay.pin` its pin if it has one). `name` is the
    /// joining partner's name (ignored when joining as another device of the inviting
    /// partner). Returns once the inviting device has said who it is and heard who joins:
    /// show [`Joining::inviter`] and [`Joining::confirmation`], then [`Joining::finish`] (or
    /// [`Joining::cancel`]). Everything waits at most `budget` in all.
    pub async fn start_join(
        code: &str,
        name: &str,
        relay_url: Option<&str>,
        relay: &RelayOptions,
        budget: Duration,
    ) -> Result<Joining> {
        let deadline = deadline_after(budget);
        let (http, mut start) = if ShortCode::looks_like(code) {
            let code = ShortCode::parse(code)?;
            let url = relay_url.ok_or_else(|| {
                Error::Invalid("a short code names no relay: give the relay's address too".into())
            })?;
            let http = RelayHttp::new(url, relay)?;
            (http, Start::Code(code))
        } else {
            let invite = PairingInvite::decode(code)?;
            if invite.kind == PairingKind::Partner && name.trim().is_empty() {
                return Err(Error::Invalid(
                    "joining as a partner needs your name".into(),
                ));
            }
            let options = RelayOptions {
                pin: relay.pin.or(invite.relay_pin),
                ..relay.clone()
            };
            let http = RelayHttp::new(&invite.relay_url, &options)?;
            (http, Start::Invite(invite))
        };
        if name.chars().any(char::is_control) || name.trim().len() > MAX_PAIRING_NAME {
            return Err(Error::Invalid(format!(
                "a name is one line of at most {MAX_PAIRING_NAME} bytes"
            )));
        }
        http.check()?;
        let mailbox_id = match &start {
            Start::Code(code) => code.mailbox().to_owned(),
            Start::Invite(invite) => invite.mailbox.clone(),
        };
        let (status, body) = http
            .pairing(Method::POST, &paths::pairing_claim(&mailbox_id), "", None)
            .await?;
        let ticket = ticket_of(status, &body)?;
        if ticket.mailbox != mailbox_id {
            // The claim is of the mailbox the invite names, and no other.
            return Err(Error::Unreachable);
        }
        let mut mailbox = Mailbox::from_ticket(http, &ticket);
        let short = matches!(start, Start::Code(_));
        let started = async {
            let mut channel = match &mut start {
                Start::Code(code) => {
                    let (exchange, first) = CodeExchange::start(code, Role::Guest);
                    mailbox.post(first).await?;
                    let theirs = wait(&mut mailbox, deadline).await?;
                    exchange.finish(&theirs)?
                }
                Start::Invite(invite) => invite.channel(Role::Guest),
            };
            let sealed = wait(&mut mailbox, deadline).await?;
            let offer = match channel.open(&sealed) {
                Ok(offer) => offer,
                // Only a short code can be read wrong; an invite that does not open was altered.
                Err(Error::Pairing(PairingFailure::WrongCode)) if !short => {
                    Err(PairingFailure::Tampered)?
                }
                Err(e) => return Err(e),
            };
            let PairingMessage::Offer {
                kind,
                inviter,
                commit,
            } = offer
            else {
                return Err(PairingFailure::Tampered.into());
            };
            if kind == PairingKind::Partner && name.trim().is_empty() {
                return Err(Error::Invalid(
                    "this invite is for a partner: joining needs your name".into(),
                ));
            }
            // A rejoining partner's new secrets are made here: the inviting partner vouches
            // for the identity key and never sees the secret.
            let rejoin = match kind {
                PairingKind::Rejoin => Some(SpaceSecret::generate()?),
                _ => None,
            };
            let ephemeral = Ephemeral::generate()?;
            let joiner = match kind {
                PairingKind::Partner => name.trim().to_owned(),
                PairingKind::Device | PairingKind::Rejoin => String::new(),
            };
            let identity = rejoin
                .as_ref()
                .map(|p| PartnerIdentity::derive_from(p).public().to_bytes());
            let said = transcript(kind, &inviter, &joiner, identity.as_ref());
            let hello = PairingMessage::Hello {
                name: joiner,
                key: ephemeral.public(),
                identity,
            };
            mailbox.post(channel.seal(&hello)?).await?;
            // The host's key, which its offer committed to before this side sent its own.
            let revealed = wait(&mut mailbox, deadline).await?;
            let PairingMessage::Reveal { key } = channel.open(&revealed)? else {
                return Err(PairingFailure::Tampered.into());
            };
            if commitment(&key) != commit {
                return Err(PairingFailure::Tampered.into());
            }
            channel.mix(&ephemeral, &key, &said)?;
            let confirmation = channel.confirmation().unwrap_or_default().to_owned();
            Ok((channel, kind, inviter, confirmation, rejoin))
        }
        .await;
        match started {
            Ok((channel, kind, inviter, confirmation, rejoin)) => Ok(Joining {
                mailbox,
                channel,
                kind,
                inviter,
                confirmation,
                name: name.trim().to_owned(),
                deadline,
                rejoin,
            }),
            Err(e) => {
                // A code that did not match, or anything altered, burns the mailbox so the
                // host hears of it; a name left out only closes it.
                let burn = matches!(e, Error::Pairing(_));
                mailbox.close(burn).await;
                Err(e)
            }
        }
    }
}

/// The joining side of a pairing, once the inviting device has answered: show who invites and
/// the confirmation words, then [`Joining::finish`].
pub struct Joining {
    mailbox: Mailbox,
    channel: Channel,
    kind: PairingKind,
    inviter: String,
    confirmation: String,
    name: String,
    deadline: Instant,
    /// A rejoining partner's new personal secret (its identity derives from it).
    rejoin: Option<SpaceSecret>,
}

impl std::fmt::Debug for Joining {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Joining")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl Joining {
    /// The inviting partner's name, as their device gave it.
    pub fn inviter(&self) -> &str {
        &self.inviter
    }

    /// Whether this joins as the other partner or as another device of the inviting partner.
    pub fn kind(&self) -> PairingKind {
        self.kind
    }

    /// The words the inviting device shows too, for its user to compare before accepting.
    pub fn confirmation(&self) -> &str {
        &self.confirmation
    }

    /// Waits for the inviting user to accept, then makes the journal at `path` with what was
    /// handed over (the journal fills on the first sync). Fails with
    /// [`PairingFailure::Declined`] when they decline.
    pub async fn finish(
        mut self,
        path: &Path,
        options: OpenOptions,
        relay: RelayOptions,
        observer: Option<Arc<dyn SyncObserver>>,
    ) -> Result<Device> {
        let outcome = async {
            let sealed = wait(&mut self.mailbox, self.deadline).await?;
            match self.channel.open(&sealed)? {
                PairingMessage::Welcome { handover } => Ok(handover),
                PairingMessage::Decline => Err(PairingFailure::Declined.into()),
                _ => Err(PairingFailure::Tampered.into()),
            }
        }
        .await;
        let rejoin = self.rejoin.take();
        let joined = outcome.and_then(|handover| {
            Device::join_as(
                path, &handover, &self.name, rejoin, options, relay, observer,
            )
        });
        // Closing deletes the sealed secrets at the relay and tells the host the join is done;
        // burning tells it the join failed here.
        let failed = matches!(
            joined,
            Err(ref e) if !matches!(e, Error::Pairing(PairingFailure::Declined))
        );
        self.mailbox.close(failed).await;
        joined
    }

    /// Gives up: the mailbox is closed and the inviting device told.
    pub async fn cancel(self) {
        self.mailbox.close(false).await;
    }
}

enum Start {
    Code(ShortCode),
    Invite(PairingInvite),
}

/// The other side's next message before `deadline`, or the failure that stopped it.
async fn wait(mailbox: &mut Mailbox, deadline: Instant) -> Result<Vec<u8>> {
    match mailbox.next(deadline).await? {
        Some(message) => Ok(message),
        None => {
            mailbox.close(false).await;
            Err(Error::Invite(
                "the inviting device did not answer in time; ask for a new invite".into(),
            ))
        }
    }
}

impl Invitation {
    /// What to show: the invite (for a QR code or text) or the short code to read out. A
    /// secret until the pairing ends.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// Whether this is a short code.
    pub fn is_short(&self) -> bool {
        ShortCode::looks_like(&self.code)
    }

    /// Whom it is for.
    pub fn kind(&self) -> PairingKind {
        self.kind
    }

    /// When the relay forgets the mailbox, in unix seconds.
    pub fn expires_at(&self) -> u64 {
        self.mailbox.expires_at
    }

    fn offer(&self, channel: &mut Channel) -> Result<Vec<u8>> {
        channel.seal(&PairingMessage::Offer {
            kind: self.kind,
            inviter: self.inviter.clone(),
            commit: commitment(&self.ephemeral.public()),
        })
    }

    /// A rejoining partner's new identity key, once their hello came.
    pub(crate) fn joiner_identity(&self) -> Option<IdentityKey> {
        self.joiner_identity
    }

    /// Sets what [`Invitation::accept`] hands over (a rejoin's, written after the move).
    pub(crate) fn set_handover(&mut self, handover: Zeroizing<String>) {
        self.handover = handover;
    }

    /// Whether someone has asked to join (so [`Invitation::accept`] can hand over).
    pub fn has_joiner(&self) -> bool {
        self.joiner.is_some()
    }

    /// Waits up to `budget` for someone to join: `Ok(None)` when nobody did yet (call again),
    /// the joiner to accept or decline, or why the pairing stopped (someone tried a wrong
    /// short code, the ten minutes ran out).
    pub async fn wait_for_joiner(&mut self, budget: Duration) -> Result<Option<Joiner>> {
        if let Some(joiner) = &self.joiner {
            return Ok(Some(joiner.clone()));
        }
        let deadline = deadline_after(budget);
        loop {
            let Some(message) = self.mailbox.next(deadline).await? else {
                return Ok(None);
            };
            if let Some(exchange) = self.exchange.take() {
                let mut channel = match exchange.finish(&message) {
                    Ok(channel) => channel,
                    Err(e) => {
                        self.mailbox.close(true).await;
                        return Err(e);
                    }
                };
                let offer = self.offer(&mut channel)?;
                self.mailbox.post(offer).await?;
                self.channel = Some(channel);
                continue;
            }
            let Some(channel) = self.channel.as_mut() else {
                return Err(PairingFailure::Tampered.into());
            };
            return match self.mailbox.open(channel, &message).await {
                Ok(PairingMessage::Hello {
                    name,
                    key,
                    identity,
                }) if identity.is_some() == (self.kind == PairingKind::Rejoin) => {
                    self.joiner_identity = match identity {
                        Some(bytes) => match IdentityKey::from_bytes(&bytes) {
                            Ok(key) => Some(key),
                            Err(_) => {
                                self.mailbox.close(true).await;
                                return Err(PairingFailure::Tampered.into());
                            }
                        },
                        None => None,
                    };
                    // The key the offer committed to, now that the guest's is here; then
                    // both keys and what both sides said make the channel's keys and words.
                    let reveal = channel.seal(&PairingMessage::Reveal {
                        key: self.ephemeral.public(),
                    })?;
                    if let Err(e) = self.mailbox.post(reveal).await {
                        // The hello is spent: this pairing cannot finish, so the guest is
                        // told now rather than left to wait out its time.
                        self.mailbox.close(true).await;
                        return Err(e);
                    }
                    let said = transcript(self.kind, &self.inviter, &name, identity.as_ref());
                    channel.mix(&self.ephemeral, &key, &said)?;
                    let joiner = Joiner {
                        name,
                        kind: self.kind,
                        confirmation: channel.confirmation().unwrap_or_default().to_owned(),
                    };
                    self.joiner = Some(joiner.clone());
                    Ok(Some(joiner))
                }
                Ok(_) => {
                    self.mailbox.close(true).await;
                    Err(PairingFailure::Tampered.into())
                }
                // The guest's first sealed message did not open: whoever claimed the mailbox
                // read the short code wrong (or guessed), and it is burned now. An invite
                // cannot be read wrong: that was an altered message.
                Err(Error::Pairing(PairingFailure::WrongCode)) if self.is_short() => {
                    Err(PairingFailure::Burned.into())
                }
                Err(Error::Pairing(PairingFailure::WrongCode)) => {
                    Err(PairingFailure::Tampered.into())
                }
                Err(e) => Err(e),
            };
        }
    }

    /// Hands the journal's secrets to the joiner, sealed for it alone, then waits briefly for
    /// it to take them and closes the mailbox. These are the secrets of when the invite
    /// opened: [`Device::welcome`] hands over those of the epoch the journal is in when the
    /// user accepts, which is what apps call.
    pub async fn accept(mut self) -> Result<()> {
        if self.joiner.is_none() {
            return Err(Error::Invalid(
                "nobody has asked to join yet: wait for the joiner first".into(),
            ));
        }
        if self.handover.is_empty() {
            return Err(Error::Invalid(
                "a rejoin is accepted through the device that invited (Device::welcome)".into(),
            ));
        }
        let Some(channel) = self.channel.as_mut() else {
            return Err(PairingFailure::Tampered.into());
        };
        let welcome = channel.seal(&PairingMessage::Welcome {
            handover: self.handover.clone(),
        })?;
        self.mailbox.post(welcome).await?;
        let deadline = deadline_after(HANDOVER_WAIT);
        loop {
            match self.mailbox.next(deadline).await {
                Err(Error::Pairing(PairingFailure::Closed)) => return Ok(()),
                // The joiner burned it after taking the secrets: joining failed there.
                Err(Error::Pairing(PairingFailure::Burned)) => {
                    return Err(Error::Invite(
                        "the other device could not finish joining; try again with a new invite"
                            .into(),
                    ));
                }
                // A message comes back before `next` looks at the clock: this loop does.
                Ok(Some(_)) if Instant::now() < deadline => continue,
                // No word in time (or the relay went away): the secrets went out; the mailbox
                // is closed here so they leave the relay.
                _ => {
                    self.mailbox.close(false).await;
                    return Ok(());
                }
            }
        }
    }

    /// Refuses the joiner: nothing is handed over.
    pub async fn decline(mut self) -> Result<()> {
        if let Some(channel) = self.channel.as_mut() {
            let decline = channel.seal(&PairingMessage::Decline)?;
            if self.mailbox.post(decline).await.is_ok() {
                let deadline = deadline_after(HANDOVER_WAIT.min(Duration::from_secs(10)));
                if self.mailbox.closed_by_other(deadline).await {
                    return Ok(());
                }
            }
        }
        self.mailbox.close(false).await;
        Ok(())
    }

    /// Stops the pairing: the mailbox is closed and the code no longer works.
    pub async fn cancel(self) {
        self.mailbox.close(false).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A relay that answers every request at once with an open, empty inbox.
    async fn impatient_relay() -> anyhow::Result<(String, Arc<AtomicUsize>)> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let asked = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&asked);
        let body = PairingInbox {
            state: PairingState::Open,
            messages: Vec::new(),
        }
        .to_bytes();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (count, body) = (Arc::clone(&count), body.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    let mut held = Vec::new();
                    while let Ok(n) = stream.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        held.extend_from_slice(&buf[..n]);
                        while let Some(end) = held.windows(4).position(|w| w == b"\r\n\r\n") {
                            held.drain(..end + 4);
                            count.fetch_add(1, Ordering::SeqCst);
                            let head = format!(
                                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
                                body.len()
                            );
                            if stream.write_all(head.as_bytes()).await.is_err()
                                || stream.write_all(&body).await.is_err()
                            {
                                return;
                            }
                        }
                    }
                });
            }
        });
        Ok((url, asked))
    }

    #[tokio::test]
    async fn a_relay_that_answers_a_long_poll_at_once_is_not_asked_in_a_busy_loop()
    -> anyhow::Result<()> {
        let (url, asked) = impatient_relay().await?;
        let http = RelayHttp::new(&url, &RelayOptions::default())?;
        let ticket = PairingTicket {
            mailbox: "1234".into(),
            token: [7; 32],
            expires_at: u64::MAX,
        };
        let mut mailbox = Mailbox::from_ticket(http, &ticket);
        let got = mailbox
            .next(Instant::now() + Duration::from_millis(2_500))
            .await?;
        anyhow::ensure!(got.is_none(), "a message out of nowhere");
        // About one ask per pause over 2.5 s; a busy loop asks hundreds of times.
        let n = asked.load(Ordering::SeqCst);
        anyhow::ensure!((1..=15).contains(&n), "asked {n} times in 2.5 s");
        Ok(())
    }

    /// A relay that always has one more message: every inbox read `after=N` is answered at
    /// once (or after `delay`) with an open mailbox holding message `N + 1`; posts and closes
    /// are answered `204`. Counts the inbox reads.
    async fn relay_with_one_more(delay: Duration) -> anyhow::Result<(String, Arc<AtomicUsize>)> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let reads = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&reads);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let count = Arc::clone(&count);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    let mut held = Vec::new();
                    loop {
                        let Some(end) = held.windows(4).position(|w| w == b"\r\n\r\n") else {
                            match stream.read(&mut buf).await {
                                Ok(n) if n > 0 => held.extend_from_slice(&buf[..n]),
                                _ => return,
                            }
                            continue;
                        };
                        let head = String::from_utf8_lossy(&held[..end]).to_lowercase();
                        let length: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        while held.len() < end + 4 + length {
                            match stream.read(&mut buf).await {
                                Ok(n) if n > 0 => held.extend_from_slice(&buf[..n]),
                                _ => return,
                            }
                        }
                        held.drain(..end + 4 + length);
                        let after = head
                            .split_once("after=")
                            .and_then(|(_, rest)| rest.split('&').next())
                            .and_then(|n| n.parse::<u64>().ok());
                        let answer = match (head.starts_with("get "), after) {
                            (true, Some(after)) => {
                                count.fetch_add(1, Ordering::SeqCst);
                                tokio::time::sleep(delay).await;
                                let body = PairingInbox {
                                    state: PairingState::Open,
                                    messages: vec![mend_protocol::PairingMessage {
                                        seq: after.saturating_add(1),
                                        body: vec![0; 64],
                                    }],
                                }
                                .to_bytes();
                                let mut answer = format!(
                                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
                                    body.len()
                                )
                                .into_bytes();
                                answer.extend_from_slice(&body);
                                answer
                            }
                            _ => b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(),
                        };
                        if stream.write_all(&answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Ok((url, reads))
    }

    fn ticket() -> PairingTicket {
        PairingTicket {
            mailbox: "1234".into(),
            token: [7; 32],
            expires_at: u64::MAX,
        }
    }

    /// The host's side with a joiner waiting to be accepted or declined.
    fn invitation(url: &str) -> anyhow::Result<Invitation> {
        let http = RelayHttp::new(url, &RelayOptions::default())?;
        let invite = PairingInvite {
            relay_url: url.into(),
            relay_pin: None,
            mailbox: "0".repeat(32),
            secret: PairingSecret::generate()?,
            kind: PairingKind::Device,
        };
        Ok(Invitation {
            mailbox: Mailbox::from_ticket(http, &ticket()),
            code: Zeroizing::new(String::new()),
            kind: PairingKind::Device,
            inviter: String::new(),
            handover: Zeroizing::new("secrets".into()),
            exchange: None,
            channel: Some(invite.channel(Role::Host)),
            ephemeral: Ephemeral::generate()?,
            joiner: Some(Joiner {
                name: String::new(),
                kind: PairingKind::Device,
                confirmation: String::new(),
            }),
            joiner_identity: None,
        })
    }

    /// Most inbox reads a wait may make against a relay that always has one more message: one
    /// per message a side can post, and the one that finds the relay lying.
    const MOST_READS: usize = MAX_PAIRING_MESSAGES + 1;

    #[tokio::test]
    async fn a_relay_that_always_has_one_more_message_does_not_hold_a_wait_for_ever()
    -> anyhow::Result<()> {
        let (url, reads) = relay_with_one_more(Duration::ZERO).await?;
        let http = RelayHttp::new(&url, &RelayOptions::default())?;
        let mut mailbox = Mailbox::from_ticket(http, &ticket());
        let deadline = Instant::now() + Duration::from_secs(1);
        let closed =
            tokio::time::timeout(Duration::from_secs(10), mailbox.closed_by_other(deadline)).await;
        anyhow::ensure!(closed == Ok(false), "{closed:?}");
        let n = reads.load(Ordering::SeqCst);
        anyhow::ensure!(n <= MOST_READS, "read the inbox {n} times");
        Ok(())
    }

    #[tokio::test]
    async fn accepting_or_declining_ends_against_a_relay_that_always_has_one_more_message()
    -> anyhow::Result<()> {
        let (url, reads) = relay_with_one_more(Duration::ZERO).await?;
        let accepted =
            tokio::time::timeout(Duration::from_secs(10), invitation(&url)?.accept()).await;
        // The secrets went out; no word came back, as when the joiner says nothing.
        anyhow::ensure!(matches!(accepted, Ok(Ok(()))), "{accepted:?}");
        let declined =
            tokio::time::timeout(Duration::from_secs(10), invitation(&url)?.decline()).await;
        anyhow::ensure!(matches!(declined, Ok(Ok(()))), "{declined:?}");
        let n = reads.load(Ordering::SeqCst);
        anyhow::ensure!(n <= 2 * MOST_READS, "read the inbox {n} times");
        Ok(())
    }

    #[tokio::test]
    async fn a_wait_that_keeps_getting_messages_still_ends_at_its_deadline() -> anyhow::Result<()> {
        // Each read takes half a second: a wait of one second has time for two or three, not
        // for every message a side may post.
        let (url, reads) = relay_with_one_more(Duration::from_millis(500)).await?;
        let http = RelayHttp::new(&url, &RelayOptions::default())?;
        let mut mailbox = Mailbox::from_ticket(http, &ticket());
        let deadline = Instant::now() + Duration::from_secs(1);
        let closed =
            tokio::time::timeout(Duration::from_secs(10), mailbox.closed_by_other(deadline)).await;
        anyhow::ensure!(closed == Ok(false), "{closed:?}");
        let n = reads.load(Ordering::SeqCst);
        anyhow::ensure!(n <= 4, "read the inbox {n} times");
        Ok(())
    }

    #[test]
    fn a_ticket_naming_a_mailbox_no_relay_makes_is_refused() -> anyhow::Result<()> {
        for mailbox in ["12 34", "1\r\nx: y", "", "00ff"] {
            let ticket = PairingTicket {
                mailbox: mailbox.into(),
                token: [7; 32],
                expires_at: 1,
            };
            let refused = ticket_of(StatusCode::OK, &ticket.to_bytes());
            anyhow::ensure!(refused.is_err(), "{mailbox:?} was taken");
        }
        Ok(())
    }
}
