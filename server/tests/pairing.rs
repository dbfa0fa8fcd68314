//! The pairing mailbox over HTTP on 127.0.0.1: a host opens, a guest claims, they exchange a
//! few opaque messages, one closes. Every wait is bounded by [`WAIT`]; nothing asserts timing.

mod common;

use std::{
    net::SocketAddr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, ensure};
use common::{Relay, WAIT, error_code, http, space, token};
use mend_protocol::{
    Limits, MAX_PAIRING_MESSAGE, MAX_PAIRING_MESSAGES, PairingInbox, PairingOpen, PairingPost,
    PairingState, PairingTicket, paths,
};
use mend_relay::{client::client_key, storage::test_db::TestDatabase};
use tokio::{io::AsyncWriteExt, net::TcpStream};

/// The hex a side presents as its bearer token.
fn bearer(ticket: &PairingTicket) -> String {
    ticket.token.iter().map(|b| format!("{b:02x}")).collect()
}

async fn open(addr: SocketAddr, short: bool) -> anyhow::Result<PairingTicket> {
    let body = PairingOpen { short }.to_bytes();
    let (status, answer) = http(addr, "POST", &paths::pairings(), None, &body).await?;
    ensure!(
        status == 201,
        "open answered {status}: {}",
        error_code(&answer)
    );
    Ok(PairingTicket::decode(&answer, &Limits::DEFAULT)?)
}

async fn claim(addr: SocketAddr, mailbox: &str) -> anyhow::Result<(u16, Vec<u8>)> {
    http(addr, "POST", &paths::pairing_claim(&mailbox), None, &[]).await
}

async fn claimed(addr: SocketAddr, mailbox: &str) -> anyhow::Result<PairingTicket> {
    let (status, answer) = claim(addr, mailbox).await?;
    ensure!(
        status == 200,
        "claim answered {status}: {}",
        error_code(&answer)
    );
    Ok(PairingTicket::decode(&answer, &Limits::DEFAULT)?)
}

async fn post(addr: SocketAddr, ticket: &PairingTicket, body: &[u8]) -> anyhow::Result<u16> {
    let frame = PairingPost {
        body: body.to_vec(),
    }
    .to_bytes();
    let path = paths::pairing_messages(&ticket.mailbox);
    Ok(http(addr, "POST", &path, Some(&bearer(ticket)), &frame)
        .await?
        .0)
}

async fn read(
    addr: SocketAddr,
    ticket: &PairingTicket,
    after: u64,
    wait: u64,
) -> anyhow::Result<PairingInbox> {
    let path = paths::pairing_inbox(&ticket.mailbox, after, wait);
    let (status, answer) = http(addr, "GET", &path, Some(&bearer(ticket)), &[]).await?;
    ensure!(
        status == 200,
        "read answered {status}: {}",
        error_code(&answer)
    );
    Ok(PairingInbox::decode(&answer, &Limits::DEFAULT)?)
}

async fn close(addr: SocketAddr, ticket: &PairingTicket, burn: bool) -> anyhow::Result<u16> {
    let path = paths::pairing_close(&ticket.mailbox, burn);
    Ok(http(addr, "DELETE", &path, Some(&bearer(ticket)), &[])
        .await?
        .0)
}

fn bodies(inbox: &PairingInbox) -> Vec<(u64, &[u8])> {
    inbox
        .messages
        .iter()
        .map(|m| (m.seq, m.body.as_slice()))
        .collect()
}

#[tokio::test]
async fn host_and_guest_exchange_messages_then_close() -> anyhow::Result<()> {
    let relay = Relay::start().await?;
    let addr = relay.addr;
    let host = open(addr, true).await?;
    let number: u64 = host.mailbox.parse()?;
    ensure!((1..=99).contains(&number), "short mailbox {}", host.mailbox);
    // The host may post before anyone claims.
    assert_eq!(post(addr, &host, b"host hello").await?, 204);
    let guest = claimed(addr, &host.mailbox).await?;
    assert_eq!(guest.mailbox, host.mailbox);
    assert_eq!(guest.expires_at, host.expires_at);
    assert_ne!(guest.token, host.token);
    assert_eq!(post(addr, &guest, b"guest hello").await?, 204);
    assert_eq!(post(addr, &host, b"host again").await?, 204);

    let at_guest = read(addr, &guest, 0, 0).await?;
    assert_eq!(at_guest.state, PairingState::Claimed);
    assert_eq!(
        bodies(&at_guest),
        [(1, &b"host hello"[..]), (2, &b"host again"[..])]
    );
    let at_guest = read(addr, &guest, 1, 0).await?;
    assert_eq!(bodies(&at_guest), [(2, &b"host again"[..])]);
    let at_host = read(addr, &host, 0, 0).await?;
    assert_eq!(bodies(&at_host), [(1, &b"guest hello"[..])]);

    assert_eq!(close(addr, &guest, false).await?, 204);
    let after = read(addr, &host, 0, 0).await?;
    assert_eq!(after.state, PairingState::Closed);
    assert!(after.messages.is_empty(), "close deletes every body");
    assert_eq!(post(addr, &host, b"late").await?, 409);
    assert_eq!(
        close(addr, &host, false).await?,
        204,
        "closing is idempotent"
    );
    assert_eq!(claim(addr, &host.mailbox).await?.0, 409);

    let (_, metrics) = http(addr, "GET", paths::METRICS, None, &[]).await?;
    let metrics = String::from_utf8(metrics)?;
    for line in [
        "mend_pairings_total{event=\"opened\"} 1",
        "mend_pairings_total{event=\"claimed\"} 1",
        "mend_pairings_total{event=\"closed\"} 1",
    ] {
        ensure!(metrics.contains(line), "missing {line}");
    }
    relay.stop().await
}

#[tokio::test]
async fn only_the_first_claim_succeeds_and_ids_are_checked() -> anyhow::Result<()> {
    let relay = Relay::start().await?;
    let addr = relay.addr;
    let host = open(addr, false).await?;
    ensure!(
        host.mailbox.len() == 32 && paths::is_mailbox_id(&host.mailbox),
        "long mailbox {}",
        host.mailbox
    );
    claimed(addr, &host.mailbox).await?;
    let (status, body) = claim(addr, &host.mailbox).await?;
    assert_eq!((status, error_code(&body).as_str()), (409, "pairing_used"));
    let (status, body) = claim(addr, "999999").await?;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (404, "pairing_unknown")
    );
    for bad in [
        "0",
        "012",
        "1234567",
        "ABCDEF0123456789ABCDEF0123456789",
        "x",
    ] {
        let (status, body) = claim(addr, bad).await?;
        assert_eq!(
            (status, error_code(&body).as_str()),
            (400, "malformed"),
            "{bad}"
        );
    }
    let (status, _) = http(addr, "POST", &paths::pairings(), None, &[1, 4, 2]).await?;
    assert_eq!(status, 400, "unknown open flags");
    relay.stop().await
}

#[tokio::test]
async fn a_wrong_or_missing_token_is_unauthorized() -> anyhow::Result<()> {
    let relay = Relay::start().await?;
    let addr = relay.addr;
    let host = open(addr, true).await?;
    let forged = PairingTicket {
        token: [0x5a; 32],
        ..host.clone()
    };
    assert_eq!(post(addr, &forged, b"x").await?, 401);
    assert_eq!(close(addr, &forged, true).await?, 401);
    let inbox = paths::pairing_inbox(&host.mailbox, 0, 0);
    for token in [
        None,
        Some("not-hex-but-a-fine-bearer-token"),
        Some(&"ab".repeat(31)[..]),
    ] {
        let (status, body) = http(addr, "GET", &inbox, token, &[]).await?;
        assert_eq!((status, error_code(&body).as_str()), (401, "unauthorized"));
    }
    // The real token still works, and the mailbox is untouched.
    assert_eq!(read(addr, &host, 0, 0).await?.state, PairingState::Open);
    relay.stop().await
}

#[tokio::test]
async fn each_side_posts_at_most_the_cap_of_small_messages() -> anyhow::Result<()> {
    let relay = Relay::start().await?;
    let addr = relay.addr;
    let host = open(addr, true).await?;
    for n in 0..MAX_PAIRING_MESSAGES {
        assert_eq!(post(addr, &host, &[n as u8]).await?, 204);
    }
    let frame = PairingPost { body: vec![1] }.to_bytes();
    let path = paths::pairing_messages(&host.mailbox);
    let (status, body) = http(addr, "POST", &path, Some(&bearer(&host)), &frame).await?;
    assert_eq!((status, error_code(&body).as_str()), (409, "pairing_full"));
    let big = PairingPost {
        body: vec![0; MAX_PAIRING_MESSAGE + 1],
    }
    .to_bytes();
    let (status, _) = http(addr, "POST", &path, Some(&bearer(&host)), &big).await?;
    assert_eq!(status, 413);
    relay.stop().await
}

#[tokio::test]
async fn an_expired_mailbox_answers_gone() -> anyhow::Result<()> {
    let relay = Relay::start_with(|config| {
        config.limits.pairing_ttl = Duration::from_secs(1);
    })
    .await?;
    let addr = relay.addr;
    let host = open(addr, true).await?;
    // Wait, bounded, for the relay's clock (this machine's) to pass the expiry.
    tokio::time::timeout(WAIT, async {
        while SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() < host.expires_at {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::Ok(())
    })
    .await??;
    let (status, body) = claim(addr, &host.mailbox).await?;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (410, "pairing_expired")
    );
    assert_eq!(post(addr, &host, b"too late").await?, 410);
    let inbox = read(addr, &host, 0, 0).await?;
    assert_eq!(inbox.state, PairingState::Expired);
    assert!(inbox.messages.is_empty());
    assert_eq!(close(addr, &host, false).await?, 204);
    relay.stop().await
}

#[tokio::test]
async fn a_waiting_read_returns_when_the_other_side_posts() -> anyhow::Result<()> {
    let relay = Relay::start().await?;
    let addr = relay.addr;
    let host = open(addr, true).await?;
    let guest = claimed(addr, &host.mailbox).await?;
    let waiting = {
        let guest = guest.clone();
        // 25 s asked, far longer than WAIT: only the post can end it in time.
        tokio::spawn(async move { read(addr, &guest, 0, 25).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(post(addr, &host, b"wake up").await?, 204);
    let inbox = tokio::time::timeout(WAIT, waiting)
        .await
        .context("the waiting read did not return")???;
    assert_eq!(bodies(&inbox), [(1, &b"wake up"[..])]);

    // A close ends a wait too.
    let waiting = {
        let host = host.clone();
        tokio::spawn(async move { read(addr, &host, 0, 25).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(close(addr, &guest, true).await?, 204);
    let inbox = tokio::time::timeout(WAIT, waiting)
        .await
        .context("the waiting read did not return")???;
    assert_eq!(inbox.state, PairingState::Burned);
    assert_eq!(close(addr, &host, false).await?, 204);
    assert_eq!(read(addr, &host, 0, 0).await?.state, PairingState::Burned);
    relay.stop().await
}

#[tokio::test]
async fn claims_and_opens_are_rate_limited_per_address() -> anyhow::Result<()> {
    let relay = Relay::start_with(|config| {
        config.limits.pairing_claims_per_minute = 3;
        config.limits.pairing_opens_per_minute = 2;
    })
    .await?;
    let addr = relay.addr;
    for n in 0..3 {
        let (status, _) = claim(addr, &format!("{}", 900_001 + n)).await?;
        assert_eq!(status, 404);
    }
    let (status, body) = claim(addr, "900009").await?;
    assert_eq!((status, error_code(&body).as_str()), (429, "rate_limited"));
    open(addr, true).await?;
    open(addr, false).await?;
    let body = PairingOpen { short: true }.to_bytes();
    let (status, answer) = http(addr, "POST", &paths::pairings(), None, &body).await?;
    assert_eq!(
        (status, error_code(&answer).as_str()),
        (429, "rate_limited")
    );
    relay.stop().await
}

/// A space request whose token the relay must read from its database to check, and which
/// fails (a wrong token, a space that does not exist), spends its address's allowance; once
/// spent, such requests are answered 429 without a read (before: unlimited reads). Tokens the
/// relay holds in memory are checked for nothing and always served, so one client flooding
/// from a shared address (a NAT, a home network) cannot stop another's sync.
#[tokio::test]
async fn failed_space_tokens_are_limited_per_address() -> anyhow::Result<()> {
    let relay = Relay::start_with(|config| config.limits.failed_auths_per_minute = 4).await?;
    let addr = relay.addr;
    let (mine, unknown, gone) = (space(1), space(2), space(3));
    relay.create(&mine, &token(1)).await?;
    relay.create(&gone, &token(3)).await?;
    let (status, _) = http(addr, "DELETE", &paths::space(&gone), Some(&token(3)), &[]).await?;
    assert_eq!(status, 204);
    let pull = |s: &mend_protocol::SpaceId| format!("{}?after=0", paths::chunks(s));
    // Unknown spaces, and an erased one (whose tombstone is read as well), spend it alike.
    for _ in 0..2 {
        let (status, body) = http(addr, "GET", &pull(&unknown), Some(&token(9)), &[]).await?;
        assert_eq!(
            (status, error_code(&body).as_str()),
            (404, "space_not_found")
        );
        let (status, body) = http(addr, "GET", &pull(&gone), Some(&token(9)), &[]).await?;
        assert_eq!((status, error_code(&body).as_str()), (410, "space_erased"));
    }
    let (status, body) = http(addr, "GET", &pull(&unknown), Some(&token(9)), &[]).await?;
    assert_eq!((status, error_code(&body).as_str()), (429, "rate_limited"));
    // The neighbour's space is checked from memory: served, and a wrong token there is a 401.
    let (status, _) = http(addr, "GET", &pull(&mine), Some(&token(1)), &[]).await?;
    assert_eq!(status, 200, "a right token is served");
    let (status, body) = http(addr, "GET", &pull(&mine), Some(&token(9)), &[]).await?;
    assert_eq!((status, error_code(&body).as_str()), (401, "unauthorized"));
    relay.stop().await
}

/// A wrong token is answered alike whether its mailbox exists or not, so which short numbers
/// are open cannot be read off the answers; each failure spends the address's claim limit, and
/// a right token is served all the same.
#[tokio::test]
async fn unknown_mailboxes_are_answered_like_wrong_tokens() -> anyhow::Result<()> {
    let relay = Relay::start_with(|config| config.limits.pairing_claims_per_minute = 6).await?;
    let addr = relay.addr;
    let host = open(addr, true).await?;
    let number: u64 = host.mailbox.parse()?;
    let unknown = (number % 99 + 1).to_string();
    let wrong = "09".repeat(32);
    let post = PairingPost {
        body: b"guess".to_vec(),
    }
    .to_bytes();
    // Each route, on the open mailbox and on one that does not exist.
    let routes = [&host.mailbox, &unknown].map(|m| {
        [
            ("POST", paths::pairing_messages(m), post.clone()),
            ("GET", paths::pairing_inbox(m, 0, 0), vec![]),
            ("DELETE", paths::pairing_close(m, false), vec![]),
        ]
    });
    let [existing, missing] = &routes;
    for ((method, path, body), (_, unknown_path, _)) in existing.iter().zip(missing) {
        let on_existing = http(addr, method, path, Some(&wrong), body).await?;
        let on_missing = http(addr, method, unknown_path, Some(&wrong), body).await?;
        assert_eq!(
            on_existing.0,
            401,
            "{method}: {}",
            error_code(&on_existing.1)
        );
        assert_eq!(on_existing, on_missing, "{method}");
    }
    // Six failures spent the claim limit: further guesses are refused alike, claims too.
    let on_existing = http(addr, "GET", &existing[1].1, Some(&wrong), &[]).await?;
    let on_missing = http(addr, "GET", &missing[1].1, Some(&wrong), &[]).await?;
    assert_eq!(on_existing.0, 429);
    assert_eq!(on_existing, on_missing);
    assert_eq!(claim(addr, &unknown).await?.0, 429);
    assert_eq!(read(addr, &host, 0, 0).await?.state, PairingState::Open);
    relay.stop().await
}

/// Closing a closed mailbox again is answered from a read, without a write; any other close is
/// a write, within the address's share of the write queue.
#[tokio::test]
async fn closing_again_writes_nothing_and_closes_are_bounded_like_writes() -> anyhow::Result<()> {
    let relay = Relay::start_with(|config| config.limits.max_queued_writes_per_address = 1).await?;
    let addr = relay.addr;
    let closed = open(addr, true).await?;
    assert_eq!(close(addr, &closed, false).await?, 204);
    let live = open(addr, true).await?;
    relay.create(&space(1), &token(1)).await?;
    // A push whose body never comes holds the address's one write slot.
    let mut stalled = TcpStream::connect(addr).await?;
    let head = format!(
        "POST {} HTTP/1.1\r\nhost: relay\r\nauthorization: Bearer {}\r\ncontent-length: 100\r\n\r\n",
        paths::chunks(&space(1)),
        token(1)
    );
    stalled.write_all(head.as_bytes()).await?;
    let key = client_key(addr.ip());
    let share_held = |held: bool| {
        let state = relay.state.clone();
        async move {
            for _ in 0..250 {
                if state.write_share(Some(key)).is_err() == held {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            anyhow::bail!(
                "the write share is not {}",
                if held { "held" } else { "free" }
            )
        }
    };
    share_held(true).await?;
    for _ in 0..3 {
        assert_eq!(close(addr, &closed, false).await?, 204);
    }
    let (status, body) = http(
        addr,
        "DELETE",
        &paths::pairing_close(&live.mailbox, false),
        Some(&bearer(&live)),
        &[],
    )
    .await?;
    assert_eq!((status, error_code(&body).as_str()), (503, "unavailable"));
    // Burning a closed mailbox changes it: a write too.
    assert_eq!(close(addr, &closed, true).await?, 503);
    drop(stalled);
    share_held(false).await?;
    assert_eq!(close(addr, &live, false).await?, 204);
    assert_eq!(read(addr, &live, 0, 0).await?.state, PairingState::Closed);
    assert_eq!(close(addr, &closed, true).await?, 204);
    assert_eq!(read(addr, &closed, 0, 0).await?.state, PairingState::Burned);
    relay.stop().await
}

/// Two instances on one PostgreSQL database serve one mailbox: opened and posted through one,
/// claimed and read (waiting) through the other.
#[tokio::test]
async fn two_instances_share_a_mailbox() -> anyhow::Result<()> {
    let db = TestDatabase::create().await?;
    let a = Relay::start_postgres(db.url(), |_| {}).await?;
    let b = Relay::start_postgres(db.url(), |_| {}).await?;
    let host = open(a.addr, true).await?;
    let guest = claimed(b.addr, &host.mailbox).await?;
    let (status, _) = claim(a.addr, &host.mailbox).await?;
    assert_eq!(status, 409);
    let waiting = {
        let guest = guest.clone();
        let addr = b.addr;
        tokio::spawn(async move { read(addr, &guest, 0, 25).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(post(a.addr, &host, b"across").await?, 204);
    let inbox = tokio::time::timeout(WAIT, waiting)
        .await
        .context("the waiting read did not return")???;
    assert_eq!(bodies(&inbox), [(1, &b"across"[..])]);
    assert_eq!(close(b.addr, &guest, false).await?, 204);
    assert_eq!(read(a.addr, &host, 0, 0).await?.state, PairingState::Closed);
    a.stop().await?;
    b.stop().await
}
