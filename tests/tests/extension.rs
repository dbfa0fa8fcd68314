//! An app and its extension (a widget, a share or notification extension) as two processes on
//! one journal in extension locking mode: each keeps the journal open, they take turns
//! writing and syncing, and nothing is lost, numbered twice or refused by the relay.

use std::{
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
};

use anyhow::{Context, Result, bail, ensure};
use mend_core::{Body, RecordId, model::Share};
use mend_e2e::{Relay, couple};

/// A `mend-ext-writer` process with the journal open.
struct Writer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Writer {
    fn spawn(path: &Path, secret: &str, pin: &str) -> Result<Self> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mend-ext-writer"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let mut stdin = child.stdin.take().context("no stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("no stdout")?);
        writeln!(stdin, "{}", path.display())?;
        writeln!(stdin, "{secret}")?;
        writeln!(stdin, "{pin}")?;
        Ok(Self {
            child,
            stdin,
            stdout,
        })
    }

    fn send(&mut self, line: &str) -> Result<()> {
        writeln!(self.stdin, "{line}")?;
        Ok(self.stdin.flush()?)
    }

    /// The next answer (blocking: the caller is on a thread that may block).
    fn answer(&mut self) -> Result<String> {
        let mut line = String::new();
        tokio::task::block_in_place(|| self.stdout.read_line(&mut line))?;
        ensure!(!line.is_empty(), "the writer exited");
        let line = line.trim_end().to_owned();
        if line.starts_with("error") {
            bail!("the writer failed: {line}");
        }
        Ok(line)
    }

    fn add(&mut self, feeling: &str) -> Result<RecordId> {
        self.send(&format!("add {feeling}"))?;
        let answer = self.answer()?;
        let id = answer.strip_prefix("added ").context("not an id")?;
        Ok(id.parse()?)
    }

    fn synced(&mut self) -> Result<()> {
        let answer = self.answer()?;
        ensure!(
            answer == "synced pending=0 problems=0 syncing=false",
            "{answer}"
        );
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        self.send("sync")?;
        self.synced()
    }

    fn has(&mut self, id: RecordId) -> Result<bool> {
        self.send(&format!("has {id}"))?;
        Ok(self.answer()? == "has yes")
    }

    fn quit(mut self) -> Result<()> {
        self.send("quit")?;
        let status = tokio::task::block_in_place(|| self.child.wait())?;
        ensure!(status.success(), "the writer ended with {status}");
        Ok(())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // A test that failed midway must not leave its process behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_and_its_extension_write_and_sync_from_two_processes() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path()).await?;
    let (alex, blake) = couple(dir.path(), &relay).await?;
    let path = blake.path.clone();
    let secret = blake.device.keyring().to_secret_string();
    let pin = relay.pin().context("the relay serves no TLS")?.to_string();
    blake.device.close().await?;

    // Blake's app and its extension, both open for the whole test.
    let mut app = Writer::spawn(&path, &secret, &pin)?;
    let mut ext = Writer::spawn(&path, &secret, &pin)?;
    let mut ids = Vec::new();
    for n in 0..4 {
        ids.push(app.add(&format!("app {n}"))?);
        ids.push(ext.add(&format!("extension {n}"))?);
        if n == 1 {
            // The extension syncs what both wrote while the app stays open.
            ext.sync()?;
        }
        if n == 2 {
            app.sync()?;
        }
    }

    // A write waits for the other process's step rather than failing.
    app.send("hold")?;
    ensure!(app.answer()? == "holding");
    ext.send("add while the app holds the lock")?;
    app.send("release")?;
    ensure!(app.answer()? == "released");
    let answer = ext.answer()?;
    ids.push(
        answer
            .strip_prefix("added ")
            .context(answer.clone())?
            .parse()?,
    );

    // Both sync at once: their steps interleave around each other's requests.
    ids.push(app.add("last from the app")?);
    app.send("sync")?;
    ext.send("sync")?;
    app.synced()?;
    ext.synced()?;

    // The partner converges on every write of both processes.
    alex.sync().await?;
    for id in &ids {
        ensure!(alex.read(|j| j.get(*id)).is_ok(), "the partner lacks {id}");
    }
    // And what the partner writes reaches both processes through either one's sync.
    let from_alex = alex.with(|j| {
        j.add(Body::Share(Share {
            feeling: "from Alex".into(),
            tough_question: false,
        }))
    })?;
    alex.sync().await?;
    ext.sync()?;
    ensure!(app.has(from_alex)? && ext.has(from_alex)?);
    for id in &ids {
        ensure!(app.has(*id)? && ext.has(*id)?, "a process lacks {id}");
    }
    app.quit()?;
    ext.quit()?;
    relay.stop().await
}
