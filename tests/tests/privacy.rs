//! Privacy: after an end-to-end run over TLS with a known marker in every text field, neither
//! the relay's data directory nor anything logged in this process (relay and devices, at TRACE)
//! contains any of them: the relay, which TLS does not hide from, sees only sealed chunks.

use std::{
    io::Write,
    sync::{Arc, Mutex},
};

use anyhow::{Result, ensure};
use mend_core::crypto::PairingKind;
use mend_core::{Body, LocalDate, model::*};
use mend_e2e::{Phone, ROUND, Relay};
use tracing_subscriber::fmt::MakeWriter;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut b) = self.0.lock() {
            b.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

fn m(field: &str) -> String {
    format!("MARKER-{field}-q7z")
}

fn bodies(share: Option<mend_core::RecordId>, question: Option<mend_core::RecordId>) -> Vec<Body> {
    // Today: a record's date must lie near the journal's life.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let day = LocalDate::from_unix_ms(now, 0);
    let mut out = vec![
        Body::AccountabilityNote(AccountabilityNote {
            what_i_did: m("what_i_did"),
            impact: m("impact"),
            amends: vec![],
        }),
        Body::Question(Question {
            category: m("category"),
            text: m("question"),
            ..Default::default()
        }),
        Body::ProcessingNote(ProcessingNote {
            text: m("processing"),
        }),
        Body::Boundary(Boundary {
            area: BoundaryArea::Space,
            text: m("boundary"),
            ..Default::default()
        }),
        Body::DisclosurePreference(DisclosurePreference {
            topic: m("topic"),
            preference: DisclosureChoice::NotNow,
        }),
        Body::Need(Need {
            kind: NeedKind::Other,
            text: m("need"),
            ..Default::default()
        }),
        Body::CheckIn(CheckIn {
            local_date: Some(day),
            safety: Some(5),
            mood_tags: vec![m("mood")],
            need_today: Some(m("need_today")),
            note: Some(m("checkin_note")),
            ..Default::default()
        }),
        Body::Share(Share {
            feeling: m("feeling"),
            tough_question: false,
        }),
        Body::Commitment(Commitment {
            text: m("commitment"),
            ..Default::default()
        }),
        Body::HonestyMoment(HonestyMoment {
            text: m("honesty"),
            ..Default::default()
        }),
        Body::TriggerEvent(TriggerEvent {
            cue: m("cue"),
            intensity: 5,
            feelings: vec![m("feelings")],
            what_helped: m("what_helped"),
            sharing: TriggerSharing::Full,
            ..Default::default()
        }),
        Body::PreAssurance(PreAssurance {
            occasion: m("occasion"),
            date: None,
            plan: m("plan"),
        }),
    ];
    if let Some(s) = share {
        out.push(Body::Reply(Reply {
            share: Some(s),
            kind: ReplyKind::Reflect,
            text: m("reply"),
        }));
        out.push(Body::Validation(Validation {
            target: Some(s),
            text: m("validation"),
        }));
    }
    if let Some(q) = question {
        out.push(Body::Answer(Answer {
            question: Some(q),
            text: m("answer"),
        }));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_marker_reaches_the_relay_or_a_log() -> Result<()> {
    let capture = Capture::default();
    // TRACE for everything, with the redactions every app must apply (see LOG_REDACTIONS).
    let filter =
        tracing_subscriber::EnvFilter::new(format!("trace,{}", mend_client::LOG_REDACTIONS));
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(capture.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber)?;

    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path()).await?;
    // Over TLS, as devices talk to a real relay: what the relay decrypts, stores and logs is
    // what is checked below.
    ensure!(relay.url().starts_with("https://"));
    let a = Phone::create(dir.path(), "a.db", &m("name_a"), &relay)?;
    a.device.client().set_snapshot_every(2);
    // Blake joins by a short code read out on a call: the relay carries the whole pairing.
    let mut invitation = a.device.invite(PairingKind::Partner, true).await?;
    let code = invitation.code().to_owned();
    let hosting = async {
        ensure!(
            invitation.wait_for_joiner(ROUND).await?.is_some(),
            "nobody joined"
        );
        invitation.accept().await?;
        anyhow::Ok(())
    };
    let name_b = m("name_b");
    let (hosted, joined) = tokio::join!(
        hosting,
        Phone::join_code(dir.path(), "b.db", &code, &name_b, &relay)
    );
    hosted?;
    let b = joined?;
    b.device.client().set_snapshot_every(2);
    a.sync().await?;
    b.sync().await?;
    let mut share = None;
    let mut question = None;
    for body in bodies(None, None) {
        let kind = body.kind();
        let id = a.with(|j| j.add(body))?;
        match kind {
            mend_core::Kind::Share => share = Some(id),
            mend_core::Kind::Question => question = Some(id),
            _ => {}
        }
    }
    a.sync().await?;
    b.sync().await?;
    for body in bodies(share, question) {
        let _ = b.with(|j| j.add(body));
    }
    let live = b.device.client().start_live();
    live.local_edit();
    for _ in 0..3 {
        b.sync().await?;
        a.sync().await?;
    }
    live.stop().await;
    // The markers did travel: B can read A's words.
    let share_id = share.ok_or_else(|| anyhow::anyhow!("no share"))?;
    ensure!(
        format!("{:?}", b.with(|j| j.get(share_id))?).contains(&m("feeling")),
        "B cannot read A's share"
    );
    // A erases; B, which had the marker, is told in words that name A. The problem's log
    // line carries no name (a name is its partner's to choose, and logs leave the device).
    a.with(|j| j.mark_erased())?;
    a.sync().await?;
    b.sync().await?;
    a.device.erase(ROUND).await?;
    let status = b.device.sync_now(ROUND).await?;
    ensure!(
        status.problems.iter().any(|p| matches!(
            &p.kind,
            mend_core::sync::ProblemKind::Erased { words } if words.contains(&m("name_a"))
        )),
        "B was not told who erased: {status:?}"
    );
    relay.stop().await?;

    let mut files = Vec::new();
    mend_e2e::files_under(&dir.path().join("relay-data"), &mut files)?;
    ensure!(!files.is_empty(), "the relay wrote no files");
    let mut stored = 0;
    for file in &files {
        let bytes = std::fs::read(file)?;
        stored += bytes.len();
        let text = String::from_utf8_lossy(&bytes);
        ensure!(
            !text.contains("MARKER-"),
            "{} holds journal text",
            file.display()
        );
    }
    ensure!(
        stored > 10_000,
        "the relay stored suspiciously little: {stored} bytes"
    );
    let logs = capture
        .0
        .lock()
        .map(|l| String::from_utf8_lossy(&l).into_owned())
        .unwrap_or_default();
    ensure!(
        logs.lines().count() > 5 && logs.contains("mend_relay"),
        "the relay logged nothing, so the check proves nothing"
    );
    let leaks: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("MARKER-"))
        .take(3)
        .collect();
    ensure!(leaks.is_empty(), "a log line holds journal text: {leaks:?}");
    let token = a.device.keyring().couple.derive_token();
    ensure!(
        !logs.contains(token.expose()),
        "a log line holds a relay token"
    );
    // Neither the short code's words nor any secret the pairing handed over reached the
    // relay's files or a log line, in any spelling.
    let (_, words) = code.split_once('-').unwrap_or_default();
    ensure!(words.len() > 6, "no words in {code}");
    let keyring = a.device.keyring();
    let mut secrets: Vec<Vec<u8>> = vec![
        keyring.couple.expose().to_vec(),
        keyring.personal.expose().to_vec(),
        b.device.keyring().personal.expose().to_vec(),
    ];
    if let Some(identity) = &keyring.identity {
        secrets.push(identity.expose().to_vec());
    }
    let mut spelled: Vec<Vec<u8>> = vec![words.as_bytes().to_vec()];
    for secret in &secrets {
        use base64::Engine as _;
        spelled.push(secret.clone());
        spelled.push(hex::encode(secret).into_bytes());
        spelled.push(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(secret)
                .into_bytes(),
        );
    }
    for file in &files {
        let bytes = std::fs::read(file)?;
        for needle in &spelled {
            ensure!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_slice()),
                "{} holds a pairing secret",
                file.display()
            );
        }
    }
    for needle in &spelled {
        ensure!(
            !logs
                .as_bytes()
                .windows(needle.len())
                .any(|w| w == needle.as_slice()),
            "a log line holds a pairing secret"
        );
    }
    Ok(())
}
