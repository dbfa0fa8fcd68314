//! The relay serving TLS itself: HTTPS and WSS with a certificate issued by a test CA, the
//! certificate swapped on SIGHUP while a live socket opened before stays up, a failed reload
//! that keeps the old certificate, bad PEM refused at start, and the pin subcommand.
#![allow(clippy::unwrap_used)]

mod common;

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, mpsc},
};

use anyhow::{Context, bail};
use common::{WAIT, device, push, space, test_config, token};
use futures_util::{SinkExt, StreamExt};
use mend_protocol::{Ack, Limits, ServerMessage, paths};
use mend_relay::{AppState, run_tls, tls::Tls, tls::TlsFiles};
use mend_testkit::{Ca, Leaf};
use rustls::{ClientConfig, RootCertStore, pki_types::CertificateDer, pki_types::ServerName};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tokio_rustls::{TlsConnector, client::TlsStream};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{Message, client::IntoClientRequest, http::HeaderValue},
};

/// A client trusting `ca` only.
fn client(ca: &Ca) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    // Full handshakes only: a resumed session shows the certificate of its first handshake.
    config.resumption = rustls::client::Resumption::disabled();
    TlsConnector::from(Arc::new(config))
}

fn write_leaf(dir: &Path, leaf: &Leaf) -> TlsFiles {
    let (cert, key) = leaf.write(dir).unwrap();
    TlsFiles { cert, key }
}

/// A verified TLS connection to the relay and the certificate it presented.
async fn connect(
    addr: SocketAddr,
    client: &TlsConnector,
) -> anyhow::Result<(TlsStream<TcpStream>, CertificateDer<'static>)> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost")?;
    let stream = tokio::time::timeout(WAIT, client.connect(name, tcp)).await??;
    let presented = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .context("no certificate presented")?
        .clone()
        .into_owned();
    Ok((stream, presented))
}

/// One HTTPS request on a fresh connection: status, body and the certificate presented.
async fn https(
    addr: SocketAddr,
    client: &TlsConnector,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> anyhow::Result<(u16, Vec<u8>, CertificateDer<'static>)> {
    let (mut stream, presented) = connect(addr, client).await?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    if let Some(token) = token {
        request.push_str(&format!("authorization: Bearer {token}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut response = Vec::new();
    // The relay may close without close_notify after `connection: close`; what was read counts.
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut response)).await?;
    let (status, body) = common::parse_response(&response)?;
    Ok((status, body, presented))
}

type Wss = WebSocketStream<TlsStream<TcpStream>>;

/// A live session over WSS for `space`, after its first `UpToDate`.
async fn live(addr: SocketAddr, client: &TlsConnector, query: &str) -> anyhow::Result<Wss> {
    let (stream, _) = connect(addr, client).await?;
    // Named as the pushing device, so the relay does not echo its own chunks back.
    let url = format!(
        "wss://localhost{}?{query}&device={}",
        paths::live(&space(1)),
        device(1)
    );
    let mut request = url.into_client_request()?;
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {}", token(1)))?,
    );
    let (mut socket, _) =
        tokio::time::timeout(WAIT, tokio_tungstenite::client_async(request, stream)).await??;
    match next(&mut socket).await? {
        ServerMessage::UpToDate(_) => Ok(socket),
        other => bail!("expected UpToDate, got {other:?}"),
    }
}

async fn next(socket: &mut Wss) -> anyhow::Result<ServerMessage> {
    loop {
        let message = tokio::time::timeout(WAIT, socket.next())
            .await?
            .context("connection ended")??;
        match message {
            Message::Binary(bytes) => return Ok(ServerMessage::decode(&bytes, &Limits::DEFAULT)?),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => bail!("unexpected {other:?}"),
        }
    }
}

async fn push_live(socket: &mut Wss, seq: u64, payload: &[u8]) -> anyhow::Result<Ack> {
    // As long as a sealed payload at least: the relay refuses shorter ones.
    let mut payload = payload.to_vec();
    payload.resize(payload.len().max(40), b'.');
    let p = push(device(1), seq, &payload);
    socket.send(Message::Binary(p.to_bytes().into())).await?;
    match next(socket).await? {
        ServerMessage::Ack(ack) => Ok(ack),
        other => bail!("expected Ack, got {other:?}"),
    }
}

#[tokio::test]
async fn tls_relay_serves_https_and_a_live_socket() -> anyhow::Result<()> {
    let pki = Ca::new("Mend test CA")?;
    let leaf = pki.leaf()?;
    let dir = tempfile::tempdir()?;
    let files = write_leaf(dir.path(), &leaf);
    let tls = Tls::load(&files)?;
    assert_eq!(
        tls.pin(),
        leaf.pin(),
        "the relay's pin is the key's SPKI hash"
    );

    let config = test_config(dir.path());
    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let state = AppState::open_sqlite(config)?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let relay = tokio::spawn(run_tls(listener, state, tls, async move {
        let _ = stopped.await;
    }));

    let client = client(&pki);
    let (status, _, presented) = https(addr, &client, "GET", paths::HEALTHZ, None, &[]).await?;
    assert_eq!((status, &presented), (200, leaf.der()));
    let (status, _, _) = https(
        addr,
        &client,
        "PUT",
        &paths::space(&space(1)),
        Some(&token(1)),
        &[],
    )
    .await?;
    assert_eq!(status, 201);

    let mut socket = live(addr, &client, "after=0").await?;
    let ack = push_live(&mut socket, 1, b"over tls").await?;
    assert_eq!((ack.relay_seq, ack.duplicate), (1, false));
    let (status, body, _) = https(
        addr,
        &client,
        "GET",
        &paths::pull(&space(1), 0, None, None),
        Some(&token(1)),
        &[],
    )
    .await?;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));

    // Clear text on the TLS port gets no HTTP answer.
    let mut plain = TcpStream::connect(addr).await?;
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await?;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, plain.read_to_end(&mut answer)).await?;
    assert!(
        !answer.starts_with(b"HTTP/1.1 200"),
        "clear text was served"
    );

    let _ = socket.close(None).await;
    let _ = stop.send(());
    tokio::time::timeout(WAIT, relay).await???;
    Ok(())
}

/// The relay binary with TLS, killed when the test ends.
struct RelayProcess {
    child: Child,
    addr: SocketAddr,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl RelayProcess {
    fn start(data_dir: &Path, files: &TlsFiles) -> anyhow::Result<RelayProcess> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mend-relay"))
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .arg("--tls-cert")
            .arg(&files.cert)
            .arg("--tls-key")
            .arg(&files.key)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child.stderr.take().context("no stderr")?;
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        let mut relay = RelayProcess {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            lines,
            seen: Vec::new(),
        };
        let line = relay.wait_for("listening with TLS")?;
        relay.addr = line
            .split("addr=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .context("no address")?
            .parse()?;
        Ok(relay)
    }

    /// The next log line containing `needle` (the relay logs little, so this is bounded by
    /// its output; a relay that exits ends the wait).
    fn wait_for(&mut self, needle: &str) -> anyhow::Result<String> {
        loop {
            let line = self
                .lines
                .recv_timeout(WAIT)
                .with_context(|| format!("no log line with {needle:?}: {:?}", self.seen))?;
            self.seen.push(line.clone());
            if line.contains(needle) {
                return Ok(line);
            }
        }
    }

    fn hangup(&self) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -HUP failed");
        Ok(())
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn sighup_swaps_the_certificate_and_keeps_live_sockets() -> anyhow::Result<()> {
    let pki = Ca::new("Mend test CA")?;
    let first = pki.leaf()?;
    let dir = tempfile::tempdir()?;
    let files = write_leaf(dir.path(), &first);
    let mut relay = RelayProcess::start(&dir.path().join("data"), &files)?;
    let started = relay.seen.last().cloned().unwrap_or_default();
    assert!(
        started.contains(&first.pin()),
        "start logs the pin: {started}"
    );
    let client = client(&pki);

    let (status, _, presented) = https(
        relay.addr,
        &client,
        "PUT",
        &paths::space(&space(1)),
        Some(&token(1)),
        &[],
    )
    .await?;
    assert_eq!((status, &presented), (201, first.der()));
    let mut before = live(relay.addr, &client, "after=0").await?;
    assert_eq!(push_live(&mut before, 1, b"before").await?.relay_seq, 1);

    // Renewal: new files in place, then SIGHUP.
    let second = pki.leaf()?;
    write_leaf(dir.path(), &second);
    relay.hangup()?;
    let reloaded = relay.wait_for("TLS certificate reloaded")?;
    assert!(
        reloaded.contains(&second.pin()),
        "reload logs the new pin: {reloaded}"
    );

    let (status, _, presented) =
        https(relay.addr, &client, "GET", paths::HEALTHZ, None, &[]).await?;
    assert_eq!(status, 200);
    assert_eq!(
        &presented,
        second.der(),
        "a new connection gets the new certificate"
    );
    // The socket opened under the first certificate still works.
    assert_eq!(push_live(&mut before, 2, b"after").await?.relay_seq, 2);
    let mut after = live(relay.addr, &client, "after=2").await?;
    assert_eq!(push_live(&mut after, 3, b"new socket").await?.relay_seq, 3);

    // A broken renewal keeps the certificate being served.
    std::fs::write(&files.cert, "-----BEGIN CERTIFICATE-----\nnot base64!\n")?;
    relay.hangup()?;
    let failed = relay.wait_for("TLS reload failed")?;
    assert!(
        failed.contains("relay.crt"),
        "the warning names the file: {failed}"
    );
    let (status, _, presented) =
        https(relay.addr, &client, "GET", paths::HEALTHZ, None, &[]).await?;
    assert_eq!((status, &presented), (200, second.der()));
    assert_eq!(push_live(&mut before, 4, b"still up").await?.relay_seq, 4);

    let _ = before.close(None).await;
    let _ = after.close(None).await;
    let first_key = first.key_pem();
    let secret_line = first_key.lines().nth(1).unwrap_or("");
    assert!(
        relay
            .seen
            .iter()
            .all(|line| !line.contains("PRIVATE KEY") && !line.contains(secret_line)),
        "no key material in logs"
    );
    Ok(())
}

/// Runs the binary to completion and returns its exit success and stderr.
fn run_relay(args: &[&str], files: &[(&str, &PathBuf)]) -> anyhow::Result<(bool, String)> {
    let dir = tempfile::tempdir()?;
    let mut command = Command::new(env!("CARGO_BIN_EXE_mend-relay"));
    command
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args(args)
        .env_remove("MEND_TLS_CERT")
        .env_remove("MEND_TLS_KEY")
        .stdin(Stdio::null());
    for (flag, path) in files {
        command.arg(flag).arg(path);
    }
    // Every case here fails before listening, so the process ends on its own.
    let output = command.output()?;
    Ok((
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

#[test]
fn bad_certificates_are_refused_at_start_naming_the_file() -> anyhow::Result<()> {
    let pki = Ca::new("Mend test CA")?;
    let leaf = pki.leaf()?;
    let other = pki.leaf()?;
    let dir = tempfile::tempdir()?;
    let files = write_leaf(dir.path(), &leaf);
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "this is not PEM")?;
    let missing = dir.path().join("missing.pem");
    let other_key = dir.path().join("other.key");
    std::fs::write(&other_key, other.key_pem())?;

    let cases: [(&str, &PathBuf, &PathBuf, &str); 5] = [
        ("cert not PEM", &garbage, &files.key, "garbage.pem"),
        ("key not PEM", &files.cert, &garbage, "garbage.pem"),
        ("cert missing", &missing, &files.key, "missing.pem"),
        (
            "key is a certificate",
            &files.cert,
            &files.cert,
            "relay.crt",
        ),
        ("key of another cert", &files.cert, &other_key, "other.key"),
    ];
    for (story, cert, key, named) in cases {
        let (ok, stderr) = run_relay(&[], &[("--tls-cert", cert), ("--tls-key", key)])?;
        assert!(!ok, "{story}: the relay started");
        assert!(
            stderr.contains(named),
            "{story}: {named} not named in {stderr}"
        );
        assert!(
            !stderr.contains("PRIVATE KEY")
                && !stderr.contains(leaf.key_pem().lines().nth(1).unwrap_or("")),
            "{story}: key material in {stderr}"
        );
    }
    let (ok, stderr) = run_relay(&[], &[("--tls-cert", &files.cert)])?;
    assert!(
        !ok && stderr.contains("--tls-key"),
        "cert without key: {stderr}"
    );
    let (ok, stderr) = run_relay(&[], &[("--tls-key", &files.key)])?;
    assert!(
        !ok && stderr.contains("--tls-cert"),
        "key without cert: {stderr}"
    );
    Ok(())
}

#[test]
fn pin_subcommand_prints_the_spki_pin() -> anyhow::Result<()> {
    let pki = Ca::new("Mend test CA")?;
    let leaf = pki.leaf()?;
    let dir = tempfile::tempdir()?;
    let files = write_leaf(dir.path(), &leaf);
    let output = Command::new(env!("CARGO_BIN_EXE_mend-relay"))
        .arg("pin")
        .arg("--tls-cert")
        .arg(&files.cert)
        .output()?;
    assert!(output.status.success());
    assert_eq!(String::from_utf8(output.stdout)?.trim(), leaf.pin());
    let output = Command::new(env!("CARGO_BIN_EXE_mend-relay"))
        .args(["pin", "--tls-cert"])
        .arg(dir.path().join("absent.pem"))
        .output()?;
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("absent.pem"));
    Ok(())
}

#[tokio::test]
async fn over_capacity_is_answered_inside_tls() -> anyhow::Result<()> {
    let pki = Ca::new("Mend test CA")?;
    let leaf = pki.leaf()?;
    let dir = tempfile::tempdir()?;
    let tls = Tls::load(&write_leaf(dir.path(), &leaf))?;
    let mut config = test_config(dir.path());
    config.limits.max_connections = 1;
    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let state = AppState::open_sqlite(config)?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let relay = tokio::spawn(run_tls(listener, state, tls, async move {
        let _ = stopped.await;
    }));
    let client = client(&pki);
    // The one slot, held by a connection that finished its handshake.
    let (held, _) = connect(addr, &client).await?;
    let (status, body, presented) = https(addr, &client, "GET", paths::HEALTHZ, None, &[]).await?;
    assert_eq!((status, presented), (503, leaf.der().clone()));
    assert_eq!(common::error_code(&body), "too_many_connections");
    drop(held);
    let _ = stop.send(());
    tokio::time::timeout(WAIT, relay).await???;
    Ok(())
}
