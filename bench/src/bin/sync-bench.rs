//! End-to-end sync figures through a real relay on 127.0.0.1, in this process:
//!
//! - `latency [N]`: a commit on A to B's observer through the relay, live (p50, p99), over
//!   TLS (`https://`, `wss://`, what devices use) and over clear text on loopback beside it.
//! - `wire`: bytes on the wire per change against the change's own bytes.
//! - `catchup [N]`: a device offline for N changes catches up: time, requests and bytes.
//! - `catchup-compare [N…]`: the same for each N (100, 1000 and 10000 by default), on the live
//!   path and through `sync_now`, beside the bytes Automerge's own sync protocol sends for the
//!   same changes between two in-memory documents. `--rollup-every K` sets when A seals its
//!   chunks again as a rollup (default 32; `off` for none).
//!
//! Usage: `cargo run --release -p mend-bench --bin sync-bench -- latency 1000`

use std::{
    sync::{Arc, Mutex, mpsc},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use mend_client::{Device, RelayHttp, SyncObserver};
use mend_core::{
    Body, RecordId, Space,
    crypto::{ChunkAad, SpaceSecret, seal_chunk},
    model::{HonestyMoment, Share},
    sync::{Action, Event, Mode, Request, Response, SyncEngine, SyncStatus, SyncStore},
};
use mend_e2e::{Phone, Relay};
use mend_protocol::{DeviceId, Push};

struct Arrivals(Mutex<mpsc::Sender<(RecordId, Instant)>>);

impl SyncObserver for Arrivals {
    fn records_changed(&self, _space: Space, records: Vec<RecordId>) {
        let now = Instant::now();
        if let Ok(tx) = self.0.lock() {
            for r in records {
                let _ = tx.send((r, now));
            }
        }
    }
    fn status_changed(&self, _status: SyncStatus) {}
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

async fn latency(n: usize, tls: bool, rollups: Option<usize>) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = if tls {
        Relay::start(dir.path()).await?
    } else {
        Relay::start_plain(dir.path()).await?
    };
    let a = Phone::create(dir.path(), "a.db", "Alex", &relay)?;
    a.sync().await?;
    let (tx, rx) = mpsc::channel();
    let observer: Arc<dyn SyncObserver> = Arc::new(Arrivals(Mutex::new(tx)));
    let invite = a.device.partner_invite()?;
    let b = Device::join(
        &dir.path().join("b.db"),
        &invite,
        "Blake",
        mend_e2e::opts(),
        relay.trust(),
        Some(observer),
    )?;
    b.sync_now(Duration::from_secs(20)).await?;
    a.device
        .client()
        .set_rollup_every(rollups.unwrap_or(usize::MAX));
    a.device.start_live()?;
    b.start_live()?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut lat = Vec::with_capacity(n);
    for i in 0..n + 20 {
        let body = Body::HonestyMoment(HonestyMoment {
            text: format!("moment {i}: kept the promise about calling"),
            ..Default::default()
        });
        let start = Instant::now();
        let id = a.with(|j| j.add(body))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (got, at) = tokio::task::block_in_place(|| rx.recv_timeout(left))
                .context("B never saw the change")?;
            if got == id {
                if i >= 20 {
                    lat.push(at.duration_since(start).as_secs_f64() * 1e3);
                }
                break;
            }
        }
    }
    a.device.stop_live().await;
    b.stop_live().await;
    let over = if tls { "TLS" } else { "clear text" };
    println!("sync latency A commit → relay → B observer, live over {over}, {n} changes");
    println!(
        "  p50 = {:.2} ms, p99 = {:.2} ms, max = {:.2} ms",
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99),
        pct(&mut lat, 1.0)
    );
    relay.stop().await
}

fn wire() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let key = SpaceSecret::generate()?.derive_keys();
    // Signed as a device signs: each change travels with its device's proof.
    let keys: mend_bench::journal::Keys = (
        key.space_id,
        mend_core::crypto::PartnerIdentity::generate()?,
        mend_core::crypto::DeviceKey::generate()?,
    );
    let mut j = mend_core::Journal::create_with(
        &dir.path().join("w.db"),
        "Alex",
        mend_core::OpenOptions {
            durability: mend_e2e::opts().durability,
            ..mend_bench::journal::signing(&keys)
        },
    )?;
    mend_bench::journal::sign_with(&mut j, &keys)?;
    // Drain creation's own changes (the first carries the device's introduction) so each
    // batch below is exactly one edit.
    while let Some((seq, _)) = j.next_batch(Space::Couple, usize::MAX)? {
        j.acknowledge(Space::Couple, seq, seq)?;
    }
    let device = *j.device().as_bytes();
    println!(
        "bytes on the wire per change (one edit per chunk, WebSocket push frame incl. 6-byte client frame header)"
    );
    println!(
        "  {:<44} {:>7} {:>7} {:>7} {:>8}",
        "edit", "change", "wire", "budget", "ratio"
    );
    let texts = [
        ("share, 20 chars", 20usize),
        ("share, 180 chars", 180),
        ("share, 500 chars", 500),
        ("share, 2000 chars", 2000),
    ];
    for (label, len) in texts {
        let text: String = "I felt heard today. ".chars().cycle().take(len).collect();
        j.add(Body::Share(Share {
            feeling: text,
            tough_question: false,
        }))?;
        let Some((seq, change)) = j.next_batch(Space::Couple, usize::MAX)? else {
            bail!("no batch")
        };
        let aad = ChunkAad {
            space_id: key.space_id,
            device,
            device_seq: seq,
        };
        let payload = seal_chunk(&key.content, &aad, &change)?;
        let frame = Push {
            device_id: DeviceId(device),
            device_seq: seq,
            payload,
        }
        .to_bytes();
        // A masked client WebSocket frame adds 2–4 header bytes and a 4-byte mask.
        let ws_header = 2 + if frame.len() > 125 { 2 } else { 0 } + 4;
        let wire = frame.len() + ws_header;
        // The Automerge change itself: the bundle less its header (version, no introduction,
        // the count) and the change's signer, signature and length.
        let raw = change.len().saturating_sub(7 + 84);
        let budget = 1.15 * raw as f64 + 64.0;
        println!(
            "  {label:<44} {:>7} {:>7} {:>7.0} {:>8.3}{}",
            raw,
            wire,
            budget,
            wire as f64 / raw as f64,
            if wire as f64 <= budget { "" } else { "  OVER" }
        );
        j.acknowledge(Space::Couple, seq, seq)?;
    }
    Ok(())
}

async fn catchup(n: usize) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path()).await?;
    let a = Phone::create(dir.path(), "a.db", "Alex", &relay)?;
    a.sync().await?;
    let b = Phone::join(
        dir.path(),
        "b.db",
        &a.device.partner_invite()?,
        "Blake",
        &relay,
    )?;
    b.sync().await?;
    a.sync().await?;
    eprintln!("A makes {n} changes, each pushed on its own, while B is offline…");
    for i in 0..n {
        a.with(|j| {
            j.add(Body::Share(Share {
                feeling: format!("change {i} while you were away"),
                tough_question: false,
            }))
        })?;
        a.sync().await?;
    }
    // B catches up, driving its engine by hand to count requests and bytes.
    let http = RelayHttp::new(&relay.url(), &relay.trust())?;
    let links = b.device.keyring().links();
    let device = b.with(|j| Ok(*j.device().as_bytes()))?;
    let mut engine = SyncEngine::new(device, links.clone(), Mode::Once, 7);
    let start = Instant::now();
    let mut inbox = vec![Event::Start];
    let (mut requests, mut pulls, mut bytes_down) = (0usize, 0usize, 0usize);
    while let Some(event) = inbox.pop() {
        let actions = b.with(|j| engine.handle(j, mend_client::now_ms(), event))?;
        for action in actions {
            if let Action::Send(request) = action {
                let space = request.space();
                let link = links.iter().find(|l| l.space == space).context("link")?;
                requests += 1;
                let response = http.execute(link, &device, &request).await;
                if let (Request::Pull { .. }, Response::Page { page, .. }) = (&request, &response) {
                    pulls += 1;
                    if space == Space::Couple {
                        bytes_down += page.to_bytes().len();
                    }
                }
                inbox.push(Event::Response(response));
            }
        }
    }
    let elapsed = start.elapsed();
    let got = b.with(|j| Ok(j.records()?.len()))?;
    println!("catch-up after {n} missed changes");
    println!(
        "  {:.1} ms, {requests} requests ({pulls} pulls), {bytes_down} bytes of pages for the couple's space ({:.0} B per change), {got} records",
        elapsed.as_secs_f64() * 1e3,
        bytes_down as f64 / n as f64
    );
    relay.stop().await
}

/// A couple where B is offline while A makes `n` changes, each pushed on its own (A seals
/// rollups every `rollups` chunks, if given). Returns the relay, both phones and B's couple
/// document as it was before.
async fn offline_for(
    dir: &std::path::Path,
    n: usize,
    rollups: Option<usize>,
) -> Result<(Relay, Phone, Phone, Vec<u8>)> {
    let relay = Relay::start(dir).await?;
    let (a, b) = mend_e2e::couple(dir, &relay).await?;
    a.device
        .client()
        .set_rollup_every(rollups.unwrap_or(usize::MAX));
    let before = b.with(|j| j.save_space(Space::Couple))?;
    for i in 0..n {
        a.with(|j| {
            j.add(Body::Share(Share {
                feeling: format!("change {i} while you were away"),
                tough_question: false,
            }))
        })?;
        a.sync().await?;
    }
    Ok((relay, a, b, before))
}

/// Bytes each side sends when Automerge's sync protocol brings `behind` up to `ahead`, from
/// fresh sync states (as a new connection would), and the messages exchanged.
fn automerge_sync(ahead: &[u8], behind: &[u8]) -> Result<(usize, usize, usize)> {
    use automerge::sync::{State, SyncDoc};
    let ahead = automerge::Automerge::load(ahead)?;
    let mut behind = automerge::Automerge::load(behind)?;
    let (mut sa, mut sb) = (State::new(), State::new());
    let (mut down, mut up, mut messages) = (0usize, 0usize, 0usize);
    let mut ahead = ahead;
    for _ in 0..64 {
        let to_behind = ahead.generate_sync_message(&mut sa);
        let to_ahead = behind.generate_sync_message(&mut sb);
        if to_behind.is_none() && to_ahead.is_none() {
            break;
        }
        if let Some(m) = to_behind {
            let bytes = m.encode();
            down += bytes.len();
            messages += 1;
            behind.receive_sync_message(&mut sb, automerge::sync::Message::decode(&bytes)?)?;
        }
        if let Some(m) = to_ahead {
            let bytes = m.encode();
            up += bytes.len();
            messages += 1;
            ahead.receive_sync_message(&mut sa, automerge::sync::Message::decode(&bytes)?)?;
        }
    }
    anyhow::ensure!(
        ahead.get_heads() == behind.get_heads(),
        "Automerge's sync did not converge"
    );
    Ok((down, up, messages))
}

/// Chunks, rollup bytes and all payload bytes (chunks, rollups, snapshots) the relay has sent.
fn received(relay: &Relay) -> (u64, u64) {
    let (chunks, bytes) = relay.sent();
    let (_, rollup_bytes) = relay.rollups();
    (chunks, bytes + rollup_bytes)
}

async fn catchup_compare(sizes: &[usize], rollups: Option<usize>) -> Result<()> {
    println!(
        "catch-up after N missed changes (one edit per chunk), B's couple space, rollups every {}",
        rollups.map_or("(none)".to_owned(), |k| format!("{k} chunks"))
    );
    println!(
        "| N | path | time (ms) | relay requests | chunks received | rollups stored | bytes received | B per change |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for &n in sizes {
        // Through `sync_now`, as the background task and the CLI do.
        let dir = tempfile::tempdir()?;
        let (relay, a, b, before) = offline_for(dir.path(), n, rollups).await?;
        let have = b.read(|j| Ok(j.records()?.len()))?;
        let (c0, b0) = received(&relay);
        let (stored, r0) = relay.rollups();
        let start = Instant::now();
        let report = b.device.sync_round(Duration::from_secs(120)).await?;
        let took = start.elapsed();
        let (c1, b1) = received(&relay);
        anyhow::ensure!(report.finished, "sync_now did not finish");
        let got = b.read(|j| Ok(j.records()?.len()))?;
        anyhow::ensure!(got == have + n, "sync_now brought {got} of {}", have + n);
        let (_, r1) = relay.rollups();
        eprintln!(
            "  (rollup bytes {}; chunk and snapshot bytes {})",
            r1 - r0,
            (b1 - b0) - (r1 - r0)
        );
        println!(
            "| {n} | sync_now | {:.1} | {} | {} | {stored} | {} | {:.0} |",
            took.as_secs_f64() * 1e3,
            report.requests,
            c1 - c0,
            b1 - b0,
            (b1 - b0) as f64 / n as f64
        );
        let ahead = a.with(|j| j.save_space(Space::Couple))?;
        let (down, up, messages) = automerge_sync(&ahead, &before)?;
        println!(
            "| {n} | Automerge sync (in memory) | — | {messages} messages | — | — | {down} (+{up} sent) | {:.0} |",
            down as f64 / n as f64
        );
        relay.stop().await?;

        // Live: B's socket catches up from its cursor.
        let dir = tempfile::tempdir()?;
        let (relay, _a, b, _) = offline_for(dir.path(), n, rollups).await?;
        let seen = b.recorder.changed.lock().map(|c| c.len()).unwrap_or(0);
        let (c0, b0) = received(&relay);
        let (stored, _) = relay.rollups();
        let start = Instant::now();
        b.device.start_live()?;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let now = b.recorder.changed.lock().map(|c| c.len()).unwrap_or(0);
            if now >= seen + n {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "live catch-up saw {} of {n}",
                now - seen
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let took = start.elapsed();
        let (c1, b1) = received(&relay);
        b.device.stop_live().await;
        println!(
            "| {n} | live | {:.1} | 1 socket | {} | {stored} | {} | {:.0} |",
            took.as_secs_f64() * 1e3,
            c1 - c0,
            b1 - b0,
            (b1 - b0) as f64 / n as f64
        );
        relay.stop().await?;
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let what = args.next().unwrap_or_else(|| "all".into());
    let rest: Vec<String> = args.collect();
    let n: Option<usize> = rest.first().map(|a| a.parse()).transpose()?;
    match what.as_str() {
        "latency" => {
            // `latency N [--rollup-every K|off]` (rollups every 32 chunks by default).
            let rollups = match rest.get(1).map(String::as_str) {
                Some("--rollup-every") => match rest.get(2).map(String::as_str) {
                    Some("off") => None,
                    Some(k) => Some(k.parse()?),
                    None => bail!("--rollup-every takes a number or off"),
                },
                _ => Some(mend_core::sync::ROLLUP_EVERY),
            };
            latency(n.unwrap_or(1000), true, rollups).await?;
            latency(n.unwrap_or(1000), false, rollups).await
        }
        "wire" => wire(),
        "catchup" => catchup(n.unwrap_or(1000)).await,
        "catchup-compare" => {
            let mut sizes: Vec<usize> = Vec::new();
            let mut rollups = Some(mend_core::sync::ROLLUP_EVERY);
            let mut rest = rest.into_iter();
            while let Some(a) = rest.next() {
                if a == "--rollup-every" {
                    let k = rest
                        .next()
                        .context("--rollup-every takes a number or off")?;
                    rollups = if k == "off" { None } else { Some(k.parse()?) };
                } else {
                    sizes.push(a.parse()?);
                }
            }
            if sizes.is_empty() {
                sizes = vec![100, 1000, 10000];
            }
            catchup_compare(&sizes, rollups).await
        }
        "all" => {
            wire()?;
            let rollups = Some(mend_core::sync::ROLLUP_EVERY);
            latency(n.unwrap_or(1000), true, rollups).await?;
            latency(n.unwrap_or(1000), false, rollups).await?;
            catchup(n.unwrap_or(1000)).await
        }
        other => {
            bail!("unknown benchmark {other:?}: use latency, wire, catchup, catchup-compare or all")
        }
    }
}
