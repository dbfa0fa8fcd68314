//! The `mend` binary end to end, through a real mend-relay on 127.0.0.1: the README's
//! quickstart story, a boundary that loses its agreement when reworded, live `watch`, and the
//! one-line message and exit code of every kind of bad input.
//!
//! Each partner is a home directory; every command is a fresh `mend` process, as a person
//! would run it. The relay runs in this process on its own tokio runtime, alive for the test.

use std::{
    net::TcpListener,
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use assert_cmd::cargo::cargo_bin;
use mend_e2e::Relay;
use serde_json::Value;

/// Longest any single command may take before the test fails instead of hanging.
const COMMAND_LIMIT: Duration = Duration::from_secs(60);

/// A relay and a directory of homes.
struct World {
    dir: tempfile::TempDir,
    relay: Relay,
    // Keeps the relay serving while the commands run; dropped last.
    _runtime: tokio::runtime::Runtime,
}

/// What one `mend` run did.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Stdout of a run that must have succeeded.
    fn ok(self) -> Result<String> {
        ensure!(
            self.code == 0,
            "mend failed with {}: {}",
            self.code,
            self.stderr
        );
        Ok(self.stdout.trim().to_owned())
    }

    /// Asserts a failure: this exit code, and one line on stderr that contains `message`.
    fn fails(&self, code: i32, message: &str) -> Result<()> {
        ensure!(
            self.code == code,
            "expected exit {code}, got {}: {self:?}",
            self.code
        );
        let line = self.stderr.trim_end();
        ensure!(
            !line.contains('\n'),
            "more than one line on stderr: {line:?}"
        );
        ensure!(line.starts_with("mend: "), "not a mend message: {line:?}");
        ensure!(line.contains(message), "expected {message:?} in {line:?}");
        ensure!(!line.contains("panicked"), "a panic: {line:?}");
        Ok(())
    }
}

impl World {
    fn start() -> Result<Self> {
        Self::start_with(|_| {})
    }

    /// A world whose relay runs with its configuration adjusted.
    fn start_with(adjust: impl FnOnce(&mut mend_e2e::RelayConfig)) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let relay = runtime.block_on(Relay::start_with(dir.path(), adjust))?;
        Ok(Self {
            dir,
            relay,
            _runtime: runtime,
        })
    }

    /// The pin of the relay's TLS key, as `mend-relay pin` prints it.
    fn pin(&self) -> Result<String> {
        Ok(self
            .relay
            .pin()
            .context("the relay serves no TLS")?
            .to_string())
    }

    /// `mend init` on this world's relay, over TLS with its pin.
    fn init(&self, home: &str, name: &str) -> Result<Run> {
        let (url, pin) = (self.relay.url(), self.pin()?);
        self.mend(
            home,
            &["init", "--relay", &url, "--relay-pin", &pin, "--name", name],
        )
    }

    fn home(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `mend --home <home> args…`.
    fn mend(&self, home: &str, args: &[&str]) -> Result<Run> {
        self.mend_in("UTC", home, args)
    }

    /// Runs `mend` with the couple's time zone `zone`.
    fn mend_in(&self, zone: &str, home: &str, args: &[&str]) -> Result<Run> {
        self.mend_env(home, args, &[("MEND_TZ", zone)])
    }

    /// Runs `mend` with `env` set (the time zone UTC unless it says otherwise).
    fn mend_env(&self, home: &str, args: &[&str], env: &[(&str, &str)]) -> Result<Run> {
        self.mend_typing(home, args, env, "")
    }

    /// [`World::mend_env`] with `typed` on standard input.
    fn mend_typing(
        &self,
        home: &str,
        args: &[&str],
        env: &[(&str, &str)],
        typed: &str,
    ) -> Result<Run> {
        let output = assert_cmd::Command::new(cargo_bin!("mend"))
            .env_remove("MEND_HOME")
            .env("MEND_TZ", "UTC")
            .env_remove("MEND_WEEK_START")
            .env_remove("MEND_REJOIN_WAIT")
            .envs(env.iter().copied())
            .arg("--home")
            .arg(self.home(home))
            .args(args)
            .write_stdin(typed)
            .timeout(COMMAND_LIMIT)
            .output()
            .context("run mend")?;
        Ok(Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8(output.stdout)?,
            stderr: String::from_utf8(output.stderr)?,
        })
    }

    /// Starts `mend --home <home> args…` in the background, its output piped.
    fn spawn(&self, home: &str, args: &[&str]) -> Result<std::process::Child> {
        self.spawn_answering(home, args, None)
    }

    /// [`World::spawn`], with `answer` waiting on standard input (what the user types when
    /// asked).
    fn spawn_answering(
        &self,
        home: &str,
        args: &[&str],
        answer: Option<&str>,
    ) -> Result<std::process::Child> {
        self.spawn_env(home, args, answer, &[])
    }

    /// [`World::spawn_answering`] with `env` set.
    fn spawn_env(
        &self,
        home: &str,
        args: &[&str],
        answer: Option<&str>,
        env: &[(&str, &str)],
    ) -> Result<std::process::Child> {
        use std::io::Write;
        let mut child = std::process::Command::new(cargo_bin!("mend"))
            .env_remove("MEND_HOME")
            .env("MEND_TZ", "UTC")
            .env_remove("MEND_REJOIN_WAIT")
            .envs(env.iter().copied())
            .arg("--home")
            .arg(self.home(home))
            .args(args)
            .stdin(if answer.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("start mend")?;
        if let (Some(answer), Some(mut stdin)) = (answer, child.stdin.take()) {
            stdin.write_all(answer.as_bytes())?;
        }
        Ok(child)
    }

    /// Runs `mend invite <invite_args…>` in `host` and, once it shows its code, `join` in
    /// `guest` with that code and `join_args`; answers both runs and the code.
    fn pair(
        &self,
        host: &str,
        invite_args: &[&str],
        guest: &str,
        join_args: &[&str],
    ) -> Result<(Run, Run, String)> {
        let mut args = vec!["invite", "--plain"];
        args.extend_from_slice(invite_args);
        let (code, child) = first_line(self.spawn(host, &args)?, |_| true)?;
        // The code on standard input (`-`), as a careful user gives it.
        let mut join = vec!["join", "-"];
        join.extend_from_slice(join_args);
        let joined = self.mend_typing(guest, &join, &[], &format!("{code}\n"))?;
        let invited = finish(child)?;
        Ok((invited, joined, code))
    }

    /// A couple: Alex creates the journal, Blake joins with the invite.
    fn couple(&self) -> Result<()> {
        self.init("alex", "Alex")?.ok()?;
        self.mend("alex", &["sync"])?.ok()?;
        let (invited, joined, invite) =
            self.pair("alex", &["--yes"], "blake", &["--name", "Blake"])?;
        // The invite carries the relay's pin: Blake is given nothing else.
        ensure!(invite.starts_with("MEND4-"), "not a plain invite: {invite}");
        let joined = joined.ok()?;
        ensure!(
            joined.contains("Joined Alex's journal as Blake"),
            "join said: {joined}"
        );
        let invited = invited.ok()?;
        ensure!(invited.contains("Blake joined"), "invite said: {invited}");
        // Both screens show the same confirmation words.
        let words = |text: &str, after: &str| -> Option<String> {
            let at = text.find(after)? + after.len();
            Some(
                text[at..]
                    .split_whitespace()
                    .take(3)
                    .collect::<Vec<_>>()
                    .join(" "),
            )
        };
        let shown = words(&invited, "Their screen should show: ");
        ensure!(
            shown.is_some() && shown == words(&joined, "the words on this screen: "),
            "the confirmation words differ: {invited} / {joined}"
        );
        Ok(())
    }

    fn sync_both(&self) -> Result<()> {
        for home in ["alex", "blake", "alex"] {
            self.mend(home, &["sync"])?.ok()?;
        }
        Ok(())
    }

    fn json(&self, home: &str, args: &[&str]) -> Result<Value> {
        Ok(serde_json::from_str(&self.mend(home, args)?.ok()?)?)
    }
}

/// A background `mend` and the rest of its stdout, read as it comes so it never blocks.
struct Background {
    child: std::process::Child,
    rest: std::thread::JoinHandle<String>,
}

/// The first line a background `mend` prints that passes `wanted`, waiting at most
/// [`COMMAND_LIMIT`].
fn first_line(
    mut child: std::process::Child,
    wanted: fn(&str) -> bool,
) -> Result<(String, Background)> {
    use std::io::{BufRead, Read};
    let stdout = child.stdout.take().context("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    let rest = std::thread::spawn(move || {
        let mut reader = std::io::BufReader::new(stdout);
        let mut seen = String::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => {
                    let _ = tx.send(Err(anyhow::anyhow!("mend ended first: {seen}")));
                    return seen;
                }
                Ok(_) if wanted(line.trim()) => {
                    let _ = tx.send(Ok(line.trim().to_owned()));
                    break;
                }
                Ok(_) => seen.push_str(&line),
            }
        }
        let mut rest = String::new();
        let _ = reader.read_to_string(&mut rest);
        seen + &rest
    });
    match rx.recv_timeout(COMMAND_LIMIT) {
        Ok(line) => Ok((line?, Background { child, rest })),
        Err(_) => {
            let _ = child.kill();
            anyhow::bail!("mend printed nothing within {COMMAND_LIMIT:?}")
        }
    }
}

/// Waits at most [`COMMAND_LIMIT`] for a background `mend` to end (killing it after), and
/// answers what it did after its first line.
fn finish(background: Background) -> Result<Run> {
    use std::io::Read;
    let Background { mut child, rest } = background;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > COMMAND_LIMIT {
            let _ = child.kill();
            anyhow::bail!("mend did not end within {COMMAND_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = rest
        .join()
        .map_err(|_| anyhow::anyhow!("the output reader failed"))?;
    let mut stderr = String::new();
    if let Some(mut err) = child.stderr.take() {
        err.read_to_string(&mut stderr)?;
    }
    Ok(Run {
        code: status.code().unwrap_or(-1),
        stdout,
        stderr,
    })
}

#[test]
fn quickstart_two_partners_edit_apart_and_see_the_same_journal() -> Result<()> {
    let world = World::start()?;
    world.couple()?;

    // The keys stay in a file only its owner can read, and are never printed.
    let keyring = world.home("alex").join("keyring");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&keyring)?.permissions().mode() & 0o777;
        ensure!(mode == 0o600, "keyring mode is {mode:o}");
    }
    // An invite on screen: a QR code beside the text, no key in it. Nobody at the terminal
    // says yes, so the join is declined: both sides say so and nothing is shared.
    let (code, screen) = first_line(world.spawn("alex", &["invite", "--device"])?, |l| {
        l.starts_with("MEND4-")
    })?;
    let declined = world.mend("alex-tablet", &["join", &code])?;
    let screen = finish(screen)?;
    declined.fails(13, "declined")?;
    ensure!(
        screen.code == 13,
        "the invite did not end declined: {screen:?}"
    );
    ensure!(screen.stdout.contains('█'), "no QR code drawn");
    ensure!(
        screen.stdout.contains("Your other device wants to join"),
        "the joiner was not named: {}",
        screen.stdout
    );
    ensure!(
        !screen.stdout.contains("mend-keyring") && !screen.stdout.contains("MEND1-"),
        "a key was printed"
    );
    ensure!(
        !world.home("alex-tablet").join("journal.db").exists(),
        "a declined join left a journal"
    );

    // Apart: each writes without syncing.
    let boundary = world
        .mend(
            "alex",
            &[
                "add",
                "boundary",
                "Phones stay unlocked",
                "--area",
                "transparency",
            ],
        )?
        .ok()?;
    let question = world
        .mend("alex", &["add", "question", "When did it start?"])?
        .ok()?;
    world
        .mend(
            "alex",
            &["add", "honesty-moment", "Told me about the message"],
        )?
        .ok()?;
    world
        .mend(
            "alex",
            &[
                "add",
                "check-in",
                "--safety",
                "6",
                "--trust",
                "4",
                "--connection",
                "5",
                "--note",
                "hard day",
            ],
        )?
        .ok()?;
    let commitment = world
        .mend(
            "blake",
            &[
                "add",
                "commitment",
                "Phone at the door at 9",
                "--cadence",
                "daily",
            ],
        )?
        .ok()?;
    world
        .mend(
            "blake",
            &[
                "add",
                "need",
                "An hour alone on Sundays",
                "--kind",
                "alone-time",
            ],
        )?
        .ok()?;
    world
        .mend(
            "blake",
            &[
                "add",
                "check-in",
                "--safety",
                "7",
                "--trust",
                "5",
                "--connection",
                "6",
            ],
        )?
        .ok()?;
    world.mend("blake", &["claim", &commitment, "done"])?.ok()?;

    world.sync_both()?;

    // Together again: they answer each other.
    world
        .mend("blake", &["answer", &question, "In March"])?
        .ok()?;
    world
        .mend("blake", &["consent", &boundary, "agree"])?
        .ok()?;
    world
        .mend("alex", &["confirm", &commitment, "confirmed"])?
        .ok()?;
    world.sync_both()?;
    world.mend("blake", &["sync"])?.ok()?;

    let a = world.json("alex", &["list", "--json"])?;
    let b = world.json("blake", &["list", "--json"])?;
    ensure!(a == b, "the partners' journals differ:\n{a:#}\n---\n{b:#}");
    let records = a.as_array().context("a list")?;
    ensure!(
        records.len() == 8,
        "expected 8 records, got {}",
        records.len()
    );
    let by = |name: &str| records.iter().filter(|r| r["author_name"] == name).count();
    ensure!(
        by("Alex") == 4 && by("Blake") == 4,
        "authors: Alex {}, Blake {}",
        by("Alex"),
        by("Blake")
    );
    let agreed = records
        .iter()
        .find(|r| r["id"] == boundary.as_str())
        .context("the boundary")?;
    ensure!(agreed["boundary_state"] == "agreed", "boundary: {agreed:#}");
    let ledger = world.json("alex", &["show", &commitment, "--json"])?;
    let day = ledger["body"]["claims"]
        .as_object()
        .context("claims")?
        .keys()
        .next()
        .cloned();
    let day = day.context("a claim")?;
    ensure!(
        ledger["body"]["views"][&day]["view"] == "confirmed",
        "ledger: {ledger:#}"
    );

    let table = world.mend("blake", &["list"])?.ok()?;
    ensure!(
        table.contains("Honesty moment") && table.contains("Alex"),
        "table: {table}"
    );
    let progress = world.mend("alex", &["progress", "--weeks", "2"])?.ok()?;
    ensure!(
        progress.contains("WEEK") && progress.contains('#'),
        "progress: {progress}"
    );
    for (format, marker) in [("md", "# "), ("html", "<html")] {
        let out = world.dir.path().join(format!("packet.{format}"));
        let path = out.to_str().context("path")?;
        let printed = world
            .mend("alex", &["export", "--format", format, "--out", path])?
            .ok()?;
        ensure!(printed == path, "export printed {printed}");
        ensure!(
            std::fs::read_to_string(&out)?.contains(marker),
            "{format} packet looks wrong"
        );
    }
    let status = world.json("alex", &["status", "--json"])?;
    ensure!(
        status["pending"] == 0 && status["last_synced"].is_i64(),
        "status: {status:#}"
    );
    Ok(())
}

#[test]
fn a_short_code_read_over_a_call_pairs_once_and_a_wrong_one_burns() -> Result<()> {
    let world = World::start()?;
    world.init("alex", "Alex")?.ok()?;
    world.mend("alex", &["sync"])?.ok()?;
    let (url, pin) = (world.relay.url(), world.pin()?);
    let relay = ["--relay", url.as_str(), "--relay-pin", pin.as_str()];

    // Read right: Blake joins with the number and two words, and the relay named apart.
    let mut join = vec!["--name", "Blake"];
    join.extend_from_slice(&relay);
    let (invited, joined, code) = world.pair("alex", &["--code", "--yes"], "blake", &join)?;
    let parts: Vec<&str> = code.split('-').collect();
    ensure!(
        parts.len() == 3 && parts[0].bytes().all(|b| b.is_ascii_digit()),
        "not a short code: {code}"
    );
    ensure!(joined.ok()?.contains("Joined Alex's journal as Blake"));
    invited.ok()?;

    // The same code again, by anyone: refused, and no journal is left behind.
    let mut again = vec!["join", code.as_str(), "--name", "Carol"];
    again.extend_from_slice(&relay);
    world.mend("carol", &again)?.fails(13, "already used")?;
    ensure!(!world.home("carol").join("journal.db").exists());

    // Blake has joined: once Alex's device has heard so, no partner invite is opened again.
    world.mend("alex", &["sync"])?.ok()?;
    world
        .mend("alex", &["invite", "--plain"])?
        .fails(3, "already joined")?;

    // A word wrong: the guess burns the code, and both sides say so.
    let (code, host) = first_line(
        world.spawn(
            "alex",
            &["invite", "--device", "--code", "--plain", "--yes"],
        )?,
        |_| true,
    )?;
    let parts: Vec<&str> = code.split('-').collect();
    let wrong_word = if parts[2] == "zebra" {
        "acorn"
    } else {
        "zebra"
    };
    let wrong = format!("{}-{}-{wrong_word}", parts[0], parts[1]);
    let mut guess = vec!["join", wrong.as_str(), "--name", "Carol"];
    guess.extend_from_slice(&relay);
    world.mend("carol", &guess)?.fails(13, "does not match")?;
    finish(host)?.fails(13, "wrong words")?;
    // The right words after the burn are too late.
    let mut late = vec!["join", code.as_str(), "--name", "Carol"];
    late.extend_from_slice(&relay);
    world.mend("carol", &late)?.fails(13, "already used")?;
    ensure!(!world.home("carol").join("journal.db").exists());

    // An invite (QR or text) works once too.
    let (invited, joined, invite) = world.pair("alex", &["--device", "--yes"], "alex-2", &[])?;
    joined.ok()?;
    invited.ok()?;
    world
        .mend("carol", &["join", &invite, "--name", "Carol"])?
        .fails(13, "already used")?;
    ensure!(!world.home("carol").join("journal.db").exists());
    Ok(())
}

#[test]
fn a_lost_device_is_removed_and_the_journal_forgets_what_was_removed() -> Result<()> {
    let world = World::start()?;
    world.couple()?;
    let (invited, joined, _) = world.pair("alex", &["--device", "--yes"], "alex-tablet", &[])?;
    joined.ok()?;
    invited.ok()?;
    for home in ["alex-tablet", "alex", "blake", "alex"] {
        world.mend(home, &["sync"])?.ok()?;
    }
    let listed = world.json("alex", &["devices", "--json"])?;
    let tablet = listed
        .as_array()
        .and_then(|all| {
            all.iter()
                .find(|d| d["mine"] == true && d["this_device"] == false)
        })
        .and_then(|d| d["id"].as_str())
        .map(str::to_owned)
        .context("the tablet is not listed")?;
    let short = &tablet[tablet.len() - 8..];
    world
        .mend("alex", &["devices", "remove", short])?
        .fails(2, "--yes")?;
    let removed = world
        .mend("alex", &["devices", "remove", short, "--yes"])?
        .ok()?;
    ensure!(removed.contains("Removed"), "remove said: {removed}");
    world
        .mend(
            "alex",
            &["add", "honesty-moment", "Said after the tablet was lost"],
        )?
        .ok()?;
    world.mend("alex", &["sync"])?.ok()?;
    // The tablet is told, in words and by its exit code, and reads nothing new.
    world
        .mend("alex-tablet", &["sync"])?
        .fails(15, "removed from the journal")?;
    let on_tablet = world.mend("alex-tablet", &["list"])?.ok()?;
    ensure!(
        !on_tablet.contains("Said after"),
        "the tablet reads: {on_tablet}"
    );
    // Blake follows, reads it, and can ask to forget; Alex follows that too.
    world.mend("blake", &["sync"])?.ok()?;
    ensure!(world.mend("blake", &["list"])?.ok()?.contains("Said after"));
    world.mend("blake", &["forget"])?.fails(2, "--yes")?;
    ensure!(
        world
            .mend("blake", &["forget", "--yes"])?
            .ok()?
            .contains("without its history")
    );
    world.mend("alex", &["sync"])?.ok()?;
    world.mend("blake", &["sync"])?.ok()?;
    ensure!(world.mend("alex", &["list"])?.ok()?.contains("Said after"));
    let devices = world.json("blake", &["devices", "--json"])?;
    ensure!(
        devices
            .as_array()
            .is_some_and(|all| all.iter().all(|d| d["id"] != tablet.as_str())),
        "the tablet is still listed: {devices}"
    );
    Ok(())
}

#[test]
fn a_partner_who_lost_every_device_rejoins_with_a_short_code() -> Result<()> {
    let world = World::start()?;
    world.couple()?;
    world
        .mend(
            "alex",
            &["add", "honesty-moment", "Written on the lost phone"],
        )?
        .ok()?;
    world.sync_both()?;
    // Alex's phone is gone. Blake asks first; a rejoin before the wait is refused.
    world
        .mend("blake", &["invite", "--rejoin", "--plain"])?
        .fails(3, "ask first")?;
    let asked = world.mend("blake", &["rejoin", "ask"])?.ok()?;
    ensure!(
        asked.contains("Asked") && asked.contains("72 hours"),
        "ask said: {asked}"
    );
    world
        .mend("blake", &["invite", "--rejoin", "--plain"])?
        .fails(3, "72 hours")?;
    let status = world.mend("blake", &["rejoin"])?.ok()?;
    ensure!(status.contains("You asked on"), "rejoin said: {status}");
    // Every device of Alex's is told, loudly, on its next sync (this one is in a drawer).
    let told = world.mend("alex", &["sync"])?.ok()?;
    ensure!(
        told.contains("Blake asked on") && told.contains("mend rejoin cancel"),
        "Alex's phone was not told: {told}"
    );
    // The wait passes (shortened here) with no cancel.
    let waited = [("MEND_REJOIN_WAIT", "0")];
    let ready = world.mend_env("blake", &["rejoin"], &waited)?.ok()?;
    ensure!(ready.contains("stood uncancelled"), "rejoin said: {ready}");
    // On a new phone, Alex reads out the code Blake's journal shows.
    let (url, pin) = (world.relay.url(), world.pin()?);
    // A short code says what it is for only once claimed, so `join` asks for a name anyway.
    let join = [
        "--name",
        "Alex",
        "--relay",
        url.as_str(),
        "--relay-pin",
        pin.as_str(),
    ];
    let (code, host) = first_line(
        world.spawn_env(
            "blake",
            &["invite", "--rejoin", "--code", "--plain"],
            Some("y\n"),
            &waited,
        )?,
        |_| true,
    )?;
    let mut args = vec!["join", code.as_str()];
    args.extend_from_slice(&join);
    let joined = world.mend("alex-new", &args)?;
    let invited = finish(host)?;
    let joined = joined.ok()?;
    ensure!(
        joined.contains("Rejoining") && joined.contains("Joined Blake's journal as Alex"),
        "join said: {joined}"
    );
    ensure!(invited.ok()?.contains("rejoined"));
    world.mend("alex-new", &["sync"])?.ok()?;
    ensure!(
        world
            .mend("alex-new", &["list"])?
            .ok()?
            .contains("Written on the lost phone")
    );
    world
        .mend(
            "alex-new",
            &["add", "honesty-moment", "Back on a new phone"],
        )?
        .ok()?;
    world.mend("alex-new", &["sync"])?.ok()?;
    world.mend("blake", &["sync"])?.ok()?;
    let on_blake = world.mend("blake", &["list"])?.ok()?;
    ensure!(
        on_blake.contains("Back on a new phone"),
        "Blake reads: {on_blake}"
    );
    // The old phone, if it turns up, is shut out, and says why in words.
    world
        .mend("alex", &["sync"])?
        .fails(15, "let a new device into the journal as you")?;
    // With nobody to rejoin, the invite is refused.
    world.init("casey", "Casey")?.ok()?;
    world
        .mend("casey", &["invite", "--rejoin", "--plain"])?
        .fails(3, "nobody has joined")?;
    // Letting whoever comes first in, unasked, is never offered for a rejoin.
    let both = world.mend("blake", &["invite", "--rejoin", "--yes"])?;
    ensure!(both.code == 2 && both.stderr.contains("--yes"), "{both:?}");
    Ok(())
}

#[test]
fn a_partner_who_still_has_a_device_cancels_a_rejoin() -> Result<()> {
    let world = World::start()?;
    world.couple()?;
    world
        .mend("alex", &["rejoin", "cancel"])?
        .fails(3, "nobody asked")?;
    world.mend("blake", &["rejoin", "ask"])?.ok()?;
    world.mend("alex", &["sync"])?.ok()?;
    let shown = world.mend("alex", &["rejoin"])?.ok()?;
    ensure!(
        shown.contains("Blake asked on"),
        "Alex's phone was not told: {shown}"
    );
    let cancelled = world.mend("alex", &["rejoin", "cancel"])?.ok()?;
    ensure!(cancelled.contains("Cancelled"), "cancel said: {cancelled}");
    // Blake's machine has not synced since: the invite fetches the cancel before anything.
    let waited = [("MEND_REJOIN_WAIT", "0")];
    world
        .mend_env("blake", &["invite", "--rejoin", "--plain"], &waited)?
        .fails(3, "cancelled")?;
    let status = world.mend_env("blake", &["rejoin"], &waited)?.ok()?;
    ensure!(
        status.contains("cancelled your ask"),
        "Blake's phone says: {status}"
    );
    let quiet = world.mend("alex", &["sync"])?.ok()?;
    ensure!(
        !quiet.contains("asked on"),
        "still told after the cancel: {quiet}"
    );
    Ok(())
}

#[test]
fn a_boundary_reworded_after_both_agreed_is_no_longer_agreed() -> Result<()> {
    let world = World::start()?;
    world.couple()?;
    let boundary = world
        .mend(
            "alex",
            &[
                "add",
                "boundary",
                "No contact with them",
                "--area",
                "contact",
            ],
        )?
        .ok()?;
    world.sync_both()?;
    world
        .mend("blake", &["consent", &boundary, "agree"])?
        .ok()?;
    world.sync_both()?;
    let state = |home: &str| -> Result<Value> {
        Ok(world.json(home, &["show", &boundary, "--json"])?["boundary_state"].clone())
    };
    ensure!(
        state("alex")? == "agreed",
        "not agreed by both before the edit"
    );

    // Blake rewords it: Alex agreed to other words.
    let edited = world
        .mend(
            "blake",
            &["edit", &boundary, "No contact with them, at all"],
        )?
        .ok()?;
    ensure!(
        edited.contains("waiting for Alex to agree") && !edited.contains("pending"),
        "edit said: {edited}"
    );
    ensure!(state("blake")? == "pending", "Blake still sees it agreed");
    world.sync_both()?;
    let shown = world.json("alex", &["show", &boundary, "--json"])?;
    ensure!(shown["boundary_state"] == "pending", "Alex sees: {shown:#}");
    ensure!(
        shown["body"]["text"] == "No contact with them, at all",
        "the new words did not arrive"
    );
    let alex = shown["consents_now"]
        .as_array()
        .context("consents")?
        .iter()
        .find(|c| c["name"] == "Alex")
        .context("Alex's consent")?;
    ensure!(
        alex["state"] == "agreed" && alex["current"] == false,
        "Alex's consent: {alex:#}"
    );
    let listed = world.json("blake", &["list", "--json", "--kind", "boundary"])?;
    ensure!(listed[0]["boundary_state"] == "pending", "list: {listed:#}");

    // Alex agrees to the new words: agreed again.
    world.mend("alex", &["consent", &boundary, "agree"])?.ok()?;
    world.sync_both()?;
    ensure!(
        state("blake")? == "agreed",
        "not agreed after Alex agreed to the new words"
    );

    // Alex's processing note is private: it never reaches Blake.
    let note = world
        .mend("alex", &["add", "processing-note", "only for me"])?
        .ok()?;
    world.sync_both()?;
    let blake = world.mend("blake", &["list", "--json"])?.ok()?;
    ensure!(
        !blake.contains(&note) && !blake.contains("only for me"),
        "a private note leaked"
    );
    Ok(())
}

#[test]
fn watch_prints_the_partners_changes_as_they_arrive() -> Result<()> {
    let world = World::start()?;
    world.couple()?;
    let mut watch = std::process::Command::new(cargo_bin!("mend"))
        .env_remove("MEND_HOME")
        .arg("--home")
        .arg(world.home("alex"))
        .args(["watch", "--for", "5"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let share = world
        .mend(
            "blake",
            &["add", "share", "I felt shut out", "--tough-question"],
        )?
        .ok()?;
    world.mend("blake", &["sync"])?.ok()?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = watch.try_wait()? {
            break status;
        }
        if started.elapsed() > COMMAND_LIMIT {
            let _ = watch.kill();
            anyhow::bail!("watch did not stop by itself");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = watch.wait_with_output()?;
    ensure!(
        status.success(),
        "watch failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed = String::from_utf8(output.stdout)?;
    let short = &share[share.len() - 8..];
    ensure!(
        printed.contains(short) && printed.contains("Blake's") && printed.contains("share"),
        "watch printed: {printed}"
    );
    Ok(())
}

#[test]
fn verbose_logs_carry_neither_journal_text_nor_the_relay_token() -> Result<()> {
    let world = World::start()?;
    world.couple()?;
    let marker = "PRIVATE-WORDS-7f3a";
    world
        .mend("blake", &["-vvv", "add", "share", marker])?
        .ok()?;
    let mut logs = String::new();
    for (home, args) in [
        ("blake", vec!["-vvv", "sync"]),
        ("alex", vec!["-vvv", "sync"]),
        ("alex", vec!["-vvv", "watch", "--for", "1"]),
    ] {
        let run = world.mend(home, &args)?;
        ensure!(run.code == 0, "{args:?} failed: {}", run.stderr);
        logs.push_str(&run.stderr);
    }
    ensure!(logs.lines().count() > 10, "-vvv logged almost nothing");
    ensure!(!logs.contains(marker), "journal text in the logs");
    ensure!(!logs.contains("Bearer"), "the relay token in the logs");
    Ok(())
}

#[test]
fn every_bad_input_gets_one_line_and_its_exit_code() -> Result<()> {
    let world = World::start()?;
    world.couple()?;
    let need = world
        .mend("alex", &["add", "need", "Time to talk on Fridays"])?
        .ok()?;
    world.sync_both()?;

    // A missing home.
    world.mend("nobody", &["list"])?.fails(5, "no journal in")?;
    // A home that already holds a journal.
    world.init("alex", "Alex")?.fails(5, "already exists")?;

    // Unknown ids: a full one, a short one, and something that is no id.
    let unknown = "01a20e9f-0000-70e2-a910-375884bffd32";
    world
        .mend("alex", &["show", unknown])?
        .fails(3, &format!("no record with id {unknown}"))?;
    world
        .mend("alex", &["edit", "abcdef12", "x"])?
        .fails(3, "no record with id abcdef12")?;
    world
        .mend("alex", &["remove", "not-an-id!"])?
        .fails(3, "not a record id")?;

    // The partner's record: not Blake's to edit, remove, or claim for.
    world
        .mend("blake", &["edit", &need, "Something else"])?
        .fails(4, "not allowed")?;
    world
        .mend("blake", &["remove", &need])?
        .fails(4, "not allowed")?;
    world
        .mend("alex", &["respond", &need, "receptive"])?
        .fails(4, "not allowed")?;
    let shown = world.json("alex", &["show", &need, "--json"])?;
    ensure!(
        shown["body"]["text"] == "Time to talk on Fridays",
        "the need was changed"
    );

    // Malformed invites.
    world
        .mend("carol", &["join", "MEND4-AAAAbroken", "--name", "Carol"])?
        .fails(3, "damaged or mistyped")?;
    world
        .mend("carol", &["join", "MEND1-AAAAbroken", "--name", "Carol"])?
        .fails(3, "older version")?;
    world
        .mend("carol", &["join", "hello", "--name", "Carol"])?
        .fails(3, "not a Mend invite")?;
    world
        .mend(
            "carol",
            &[
                "join",
                "42-olive-harbr",
                "--name",
                "Carol",
                "--relay",
                "https://127.0.0.1:1",
            ],
        )?
        .fails(3, "spelling")?;
    world
        .mend("carol", &["join", "42-olive-harbor", "--name", "Carol"])?
        .fails(2, "--relay")?;
    ensure!(
        !world.home("carol").join("journal.db").exists(),
        "a bad invite left a journal"
    );

    // Clear text to another machine: refused with its own exit code and the opt-in's name,
    // accepted with it; the refusal leaves no journal behind.
    let far = "http://192.0.2.1:8787";
    world
        .mend("erin", &["init", "--relay", far, "--name", "Erin"])?
        .fails(12, "--insecure-cleartext-relay")?;
    ensure!(
        !world.home("erin").join("journal.db").exists(),
        "a refused relay left a journal"
    );
    world
        .mend(
            "erin",
            &[
                "init",
                "--relay",
                far,
                "--name",
                "Erin",
                "--insecure-cleartext-relay",
            ],
        )?
        .ok()?;
    world
        .mend("erin", &["sync", "--timeout", "2"])?
        .fails(12, "clear-text")?;

    // The real relay without its pin, or with another key's: refused with exit 12, the edit
    // kept.
    world
        .mend(
            "greg",
            &["init", "--relay", &world.relay.url(), "--name", "Greg"],
        )?
        .ok()?;
    world
        .mend("greg", &["add", "honesty-moment", "Kept on the phone"])?
        .ok()?;
    world
        .mend("greg", &["sync", "--timeout", "5"])?
        .fails(12, "not signed by a trusted authority")?;
    let other_key = format!("sha256/{}=", "A".repeat(43));
    world
        .mend(
            "greg",
            &["--relay-pin", &other_key, "sync", "--timeout", "5"],
        )?
        .fails(12, "does not match the pinned key")?;
    let status = world.json("greg", &["status", "--json"])?;
    ensure!(
        status["pending"].as_u64() > Some(0),
        "the refused edit is not pending: {status:#}"
    );

    // An unreachable relay: the edit is kept and waits.
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.local_addr()?.port()
    };
    let dead = format!("http://127.0.0.1:{closed}");
    world
        .mend("dana", &["init", "--relay", &dead, "--name", "Dana"])?
        .ok()?;
    world
        .mend("dana", &["add", "honesty-moment", "Said it first"])?
        .ok()?;
    let started = Instant::now();
    world
        .mend("dana", &["sync", "--timeout", "2"])?
        .fails(6, &format!("cannot reach the relay at {dead}"))?;
    ensure!(
        started.elapsed() < Duration::from_secs(15),
        "an unreachable relay took too long"
    );
    // A relay that answers, but with errors (a full disk): exit 7, not "cannot reach".
    let failing = TcpListener::bind("127.0.0.1:0")?;
    let failing_url = format!("http://{}", failing.local_addr()?);
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for stream in failing.incoming().take(500) {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(
                b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
        }
    });
    world
        .mend("fern", &["init", "--relay", &failing_url, "--name", "Fern"])?
        .ok()?;
    world
        .mend("fern", &["add", "honesty-moment", "Said it anyway"])?
        .ok()?;
    world
        .mend("fern", &["sync", "--timeout", "3"])?
        .fails(7, "the relay answered with an error (HTTP 500)")?;
    world
        .mend("dana", &["erase", "--yes"])?
        .fails(6, "nothing was erased")?;
    let status = world.json("dana", &["status", "--json"])?;
    ensure!(
        status["pending"].as_u64() > Some(0),
        "the offline edit is not pending: {status:#}"
    );

    // Bad values and flags that do not fit the kind.
    world
        .mend("alex", &["add", "check-in", "--safety", "11"])?
        .fails(3, "between 0 and 10")?;
    world
        .mend("alex", &["add", "check-in", "--area", "contact"])?
        .fails(3, "--area does not apply")?;
    world
        .mend("alex", &["add", "need", "x", "--kind", "bogus"])?
        .fails(3, "--kind for a need")?;
    world
        .mend("alex", &["add", "question", "q?", "--private"])?
        .fails(3, "cannot be private")?;
    world.mend("alex", &["erase"])?.fails(2, "--yes")?;
    Ok(())
}

/// A relay at its relay-wide byte limit refuses the push `relay_full`: the sync says so and
/// exits 7 (the relay answered, it is not out of reach), and the edit stays pending for later.
#[test]
fn a_full_relay_is_a_relay_error_and_the_edit_waits() -> Result<()> {
    let world = World::start_with(|config| config.limits.max_total_bytes = 0)?;
    world.init("alex", "Alex")?.ok()?;
    world
        .mend("alex", &["add", "honesty-moment", "Said it first"])?
        .ok()?;
    world
        .mend("alex", &["sync", "--timeout", "3"])?
        .fails(7, "the relay is full")?;
    let status = world.json("alex", &["status", "--json"])?;
    ensure!(
        status["pending"].as_u64() > Some(0),
        "the refused edit is not pending: {status:#}"
    );
    Ok(())
}

#[test]
fn the_home_is_never_lost_to_a_mistake() -> Result<()> {
    let world = World::start()?;
    let relay = world.relay.url();
    // A keyring without its journal: init refuses and keeps the keys byte for byte.
    let home = world.home("keys-only");
    std::fs::create_dir_all(&home)?;
    std::fs::write(home.join("keyring"), "the only copy of the keys")?;
    world
        .init("keys-only", "Alex")?
        .fails(5, "holds a keyring but no journal")?;
    ensure!(std::fs::read_to_string(home.join("keyring"))? == "the only copy of the keys");
    ensure!(!home.join("journal.db").exists());

    // A failed init leaves no home behind.
    world
        .mend("fresh", &["init", "--relay", &relay, "--name", "   "])?
        .fails(3, "name cannot be empty")?;
    ensure!(!world.home("fresh").exists(), "an empty home was left");

    // A damaged journal: its own exit code, the way back, and the file untouched.
    world.init("alex", "Alex")?.ok()?;
    let db = world.home("alex").join("journal.db");
    let garbage = vec![0x5au8; 8192];
    std::fs::write(&db, &garbage)?;
    for wal in ["journal.db-wal", "journal.db-shm"] {
        let _ = std::fs::remove_file(world.home("alex").join(wal));
    }
    world
        .mend("alex", &["list"])?
        .fails(8, "join again from your other device")?;
    ensure!(
        std::fs::read(&db)? == garbage,
        "the damaged file was changed"
    );
    Ok(())
}

#[test]
fn export_never_overwrites_without_force() -> Result<()> {
    let world = World::start()?;
    world.init("alex", "Alex")?.ok()?;
    let out = world.dir.path().join("packet.md");
    std::fs::write(&out, "notes I keep")?;
    let path = out.to_str().context("path")?;
    world
        .mend("alex", &["export", "--format", "md", "--out", path])?
        .fails(2, "pass --force")?;
    ensure!(std::fs::read_to_string(&out)? == "notes I keep");
    world
        .mend(
            "alex",
            &["export", "--format", "md", "--out", path, "--force"],
        )?
        .ok()?;
    ensure!(std::fs::read_to_string(&out)?.starts_with("# Journal packet"));
    // Forced over a file others could read, or a symlink to one: the packet is a new
    // owner-only file, and the link's target is left alone.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o644))?;
        let elsewhere = world.dir.path().join("elsewhere.txt");
        std::fs::write(&elsewhere, "not a packet")?;
        std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o644))?;
        let link = world.dir.path().join("link.md");
        std::os::unix::fs::symlink(&elsewhere, &link)?;
        for target in [&out, &link] {
            let path = target.to_str().context("path")?;
            world
                .mend(
                    "alex",
                    &["export", "--format", "md", "--out", path, "--force"],
                )?
                .ok()?;
            let meta = std::fs::symlink_metadata(target)?;
            ensure!(
                meta.is_file() && meta.permissions().mode() & 0o777 == 0o600,
                "{}: {:o}",
                target.display(),
                meta.permissions().mode()
            );
        }
        ensure!(std::fs::read_to_string(&elsewhere)? == "not a packet");
    }
    // `--weeks 0` is refused by the command line (clap's own message), not silently 1.
    let zero = world.mend("alex", &["progress", "--weeks", "0"])?;
    ensure!(
        zero.code == 2 && zero.stderr.contains("0 is not in 1..=520"),
        "{zero:?}"
    );
    Ok(())
}

#[test]
fn partner_text_is_shown_inert_and_in_words() -> Result<()> {
    let world = World::start()?;
    world.couple()?;
    let hostile = "ok\u{1b}]0;owned\u{7}\u{1b}[2J";
    world.mend("blake", &["add", "share", hostile])?.ok()?;
    let need = world
        .mend(
            "blake",
            &["add", "need", "More time together", "--kind", "alone-time"],
        )?
        .ok()?;
    world.sync_both()?;
    let list = world.mend("alex", &["list"])?.ok()?;
    ensure!(
        !list.contains('\u{1b}') && !list.contains('\u{7}'),
        "raw escapes: {list:?}"
    );
    ensure!(list.contains("\\u{1b}]0;owned"), "not shown: {list}");
    let shown = world.mend("alex", &["show", &need])?.ok()?;
    ensure!(
        shown.contains("Kind of need:") && shown.contains("Time alone"),
        "{shown}"
    );
    ensure!(
        !shown.contains("alone_time") && !shown.contains("need kind"),
        "{shown}"
    );
    let today = world.mend("alex", &["today"])?.ok()?;
    ensure!(
        today.contains("your check-in for today") && today.contains("respond to need"),
        "today: {today}"
    );
    Ok(())
}

#[test]
fn people_read_words_never_stored_names() -> Result<()> {
    let world = World::start()?;
    world.couple()?;
    let refused = world.mend(
        "alex",
        &[
            "add",
            "accountability-note",
            "I lied about June",
            "--private",
        ],
    )?;
    refused.fails(3, "an accountability note is shared by nature")?;
    let note = world
        .mend("alex", &["add", "accountability-note", "I lied about June"])?
        .ok()?;
    let shown = world.mend("alex", &["show", &note])?.ok()?;
    ensure!(shown.contains("What I did:"), "{shown}");

    let need = world
        .mend(
            "alex",
            &["add", "need", "Weekly talks", "--kind", "check-in-cadence"],
        )?
        .ok()?;
    let moment = world
        .mend(
            "alex",
            &[
                "add",
                "honesty-moment",
                "Said it first",
                "--timing",
                "weekly-talk",
            ],
        )?
        .ok()?;
    let trigger = world
        .mend(
            "alex",
            &[
                "add",
                "trigger-event",
                "A song",
                "--intensity",
                "0",
                "--wants",
                "reassure",
                "--sharing",
                "signal",
            ],
        )?
        .ok()?;
    let question = world
        .mend("blake", &["add", "question", "Why then?"])?
        .ok()?;
    let boundary = world
        .mend(
            "blake",
            &[
                "add",
                "boundary",
                "Phones unlocked",
                "--area",
                "transparency",
            ],
        )?
        .ok()?;
    world.sync_both()?;
    world
        .mend("alex", &["question-status", &question, "not-now"])?
        .ok()?;
    let revisit = world
        .mend("alex", &["consent", &boundary, "revisit"])?
        .ok()?;
    ensure!(
        revisit.contains("to be revisited") && !revisit.contains("is revisit"),
        "{revisit}"
    );

    let list = world.mend("alex", &["list"])?.ok()?;
    ensure!(
        list.contains("[Not now]") && !list.contains("not_now"),
        "{list}"
    );
    ensure!(
        list.contains("for the weekly talk"),
        "--timing shows: {list}"
    );
    ensure!(list.contains("would like reassurance"), "{list}");
    let shown = world.mend("alex", &["show", &need])?.ok()?;
    ensure!(
        shown.contains("How often we check in") && !shown.contains("check_in_cadence"),
        "{shown}"
    );
    let shown = world.mend("alex", &["show", &moment])?.ok()?;
    ensure!(
        shown.contains("Saved for the weekly talk") && !shown.contains("weekly_talk"),
        "{shown}"
    );
    world.sync_both()?;
    let signal = world.mend("blake", &["show", &trigger])?.ok()?;
    ensure!(
        !signal.contains("Intensity") && !signal.contains("intensity"),
        "a signal has no score: {signal}"
    );
    ensure!(
        signal.contains("Would like:") && signal.contains("Reassurance"),
        "{signal}"
    );
    ensure!(!signal.contains("wanted response"), "{signal}");
    Ok(())
}

#[test]
fn a_conflict_is_marked_shown_in_words_and_settled() -> Result<()> {
    let world = World::start()?;
    world.couple()?;
    let boundary = world
        .mend(
            "alex",
            &["add", "boundary", "No contact", "--area", "contact"],
        )?
        .ok()?;
    world.sync_both()?;
    // Both reword it apart.
    world
        .mend("alex", &["edit", &boundary, "No contact at all"])?
        .ok()?;
    world
        .mend("blake", &["edit", &boundary, "No contact unless work"])?
        .ok()?;
    world.sync_both()?;
    let list = world.mend("alex", &["list"])?.ok()?;
    ensure!(list.contains("[to settle]"), "list: {list}");
    let status = world.mend("alex", &["status"])?.ok()?;
    ensure!(
        status.contains("To settle:    1 record"),
        "status: {status}"
    );
    let shown = world.mend("alex", &["show", &boundary])?.ok()?;
    ensure!(
        shown.contains("Boundary (text):")
            && shown.contains("1. No contact")
            && shown.contains("2. No contact")
            && !shown.contains("{\""),
        "show: {shown}"
    );
    // Keeping the value shown is a real settlement, not a silent no-op.
    let settled = world
        .mend("alex", &["settle", &boundary, "text", "1"])?
        .ok()?;
    ensure!(settled.starts_with("Settled boundary"), "{settled}");
    let list = world.mend("alex", &["list"])?.ok()?;
    ensure!(!list.contains("[to settle]"), "still marked: {list}");
    let status = world.mend("alex", &["status"])?.ok()?;
    ensure!(!status.contains("To settle"), "status: {status}");
    world
        .mend("alex", &["settle", &boundary, "text", "1"])?
        .fails(3, "no conflict on text")?;
    Ok(())
}

#[test]
fn today_is_the_couples_day_not_utcs() -> Result<()> {
    let world = World::start()?;
    world.init("alex", "Alex")?.ok()?;
    // 26 hours apart: whatever the time now, these two zones are on different days.
    let east = world
        .mend_in("Etc/GMT-14", "alex", &["add", "check-in", "--safety", "5"])?
        .ok()?;
    let west = world
        .mend_in("Etc/GMT+12", "alex", &["add", "check-in", "--safety", "6"])?
        .ok()?;
    let day = |id: &str| -> Result<String> {
        let shown = world.json("alex", &["show", id, "--json"])?;
        Ok(shown["record"]["body"]["local_date"]
            .as_str()
            .or_else(|| shown["body"]["local_date"].as_str())
            .context("a date")?
            .to_owned())
    };
    let (e, w) = (day(&east)?, day(&west)?);
    ensure!(e > w, "east {e} should be a later day than west {w}");
    world
        .mend_in("Mars/Olympus", "alex", &["today"])?
        .fails(3, "MEND_TZ")?;
    Ok(())
}

/// Forwards every connection to `to` (bounded: a test's worth of connections).
fn forward(listener: TcpListener, to: std::net::SocketAddr) {
    std::thread::spawn(move || {
        for client in listener.incoming().take(200) {
            let Ok(client) = client else { continue };
            let Ok(server) = std::net::TcpStream::connect(to) else {
                continue;
            };
            let (Ok(mut c2), Ok(mut s2)) = (client.try_clone(), server.try_clone()) else {
                continue;
            };
            let (mut c1, mut s1) = (client, server);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c1, &mut s1);
                let _ = s1.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s2, &mut c2);
                let _ = c2.shutdown(std::net::Shutdown::Write);
            });
        }
    });
}

#[test]
fn a_relay_back_within_the_timeout_is_found_before_it_ends() -> Result<()> {
    let world = World::start()?;
    // A port that refuses connections for the first 3 s, then leads to the relay.
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let late = format!("https://127.0.0.1:{port}");
    let relay = world.relay.addr;
    let pin = world.pin()?;
    world
        .mend(
            "fay",
            &[
                "init",
                "--relay",
                &late,
                "--relay-pin",
                &pin,
                "--name",
                "Fay",
            ],
        )?
        .ok()?;
    world
        .mend("fay", &["add", "honesty-moment", "Waited for it"])?
        .ok()?;
    let opener = std::thread::spawn(move || -> Result<()> {
        std::thread::sleep(Duration::from_secs(3));
        forward(TcpListener::bind(("127.0.0.1", port))?, relay);
        Ok(())
    });
    // Before, backoff (0.5, 1, 2, 4 s) jumped past the end of the window.
    let started = Instant::now();
    let out = world.mend("fay", &["sync", "--timeout", "8"])?.ok()?;
    ensure!(out.contains("nothing waiting"), "{out}");
    ensure!(
        started.elapsed() < Duration::from_secs(9),
        "took {:?}",
        started.elapsed()
    );
    opener
        .join()
        .map_err(|_| anyhow::anyhow!("the opener panicked"))??;
    Ok(())
}

#[test]
fn devices_lists_both_partners_devices_with_names_and_last_seen() -> Result<()> {
    let world = World::start()?;
    // A name no device may record is refused before anything is created.
    let (url, pin) = (world.relay.url(), world.pin()?);
    let long = "x".repeat(65);
    world
        .mend(
            "nobody",
            &[
                "init",
                "--relay",
                &url,
                "--relay-pin",
                &pin,
                "--name",
                "N",
                "--device-name",
                &long,
            ],
        )?
        .fails(3, "at most 64 bytes")?;
    ensure!(!world.home("nobody").join("journal.db").exists());

    world.couple()?;
    let (_, joined, _) = world.pair(
        "alex",
        &["--device", "--yes"],
        "alex-2",
        &["--device-name", "Alex laptop"],
    )?;
    joined.ok()?;
    for home in ["alex-2", "alex", "blake", "alex-2", "alex", "blake"] {
        world.mend(home, &["sync"])?.ok()?;
    }

    for (home, me) in [("alex", "Alex"), ("alex-2", "Alex"), ("blake", "Blake")] {
        let listed = world.json(home, &["devices", "--json"])?;
        let listed = listed.as_array().context("a list")?;
        ensure!(listed.len() == 3, "{home}: {listed:?}");
        let field = |d: &Value, k: &str| d[k].as_str().unwrap_or_default().to_owned();
        let owners: Vec<String> = listed.iter().map(|d| field(d, "partner_name")).collect();
        ensure!(
            owners.iter().filter(|o| *o == "Alex").count() == 2,
            "{owners:?}"
        );
        ensure!(owners.first().map(String::as_str) == Some(me), "{owners:?}");
        let names: Vec<String> = listed.iter().map(|d| field(d, "name")).collect();
        ensure!(names.iter().any(|n| n == "Alex laptop"), "{names:?}");
        // Devices that gave no --device-name go by this machine's name.
        ensure!(
            names.iter().filter(|n| n.starts_with("mend")).count() == 2,
            "{names:?}"
        );
        let this: Vec<&Value> = listed.iter().filter(|d| d["this_device"] == true).collect();
        ensure!(
            this.len() == 1 && this[0]["mine"] == true,
            "{home}: {listed:?}"
        );
        for d in listed {
            let last = d["last_seen"].as_u64().context("last seen")?;
            ensure!(last % 3600 == 0, "{last}");
            ensure!(d["mine"] == (field(d, "partner_name") == me));
        }
    }
    let table = world.mend("blake", &["devices"])?.ok()?;
    for wanted in [
        "WHOSE",
        "LAST SEEN",
        "Blake (you)",
        "Alex laptop",
        "this device",
    ] {
        ensure!(table.contains(wanted), "{wanted:?} not in:\n{table}");
    }
    let this_line = table
        .lines()
        .find(|l| l.contains("this device"))
        .unwrap_or_default();
    ensure!(this_line.contains("Blake (you)"), "{table}");
    Ok(())
}

/// Alex erases: the command says what happened on each side. Blake was away when the erase
/// marker went out, so Blake's next `mend sync` finds only the relay's tombstone: the relay's
/// word, which could be a lie, so it says the space is gone (exit 7), not that Alex erased
/// anything, and Blake's journal is not erased (a write is kept). Blake's copy stays readable.
#[test]
fn after_an_erase_the_partner_who_was_away_finds_the_space_gone() -> Result<()> {
    let world = World::start()?;
    world.couple()?;
    world
        .mend("blake", &["add", "honesty-moment", "Told it first"])?
        .ok()?;
    world.sync_both()?;
    let erased = world.mend("alex", &["erase", "--yes"])?.ok()?;
    ensure!(
        erased.contains("keeps only a") && erased.contains("This device's copy is deleted."),
        "erase said: {erased}"
    );
    ensure!(!world.home("alex").join("journal.db").exists());
    world
        .mend("blake", &["sync"])?
        .fails(7, "the relay no longer holds this journal's space")?;
    let status = world.mend("blake", &["status"])?.ok()?;
    ensure!(
        !status.contains("Erased:") && !status.contains("Alex erased"),
        "status said: {status}"
    );
    world
        .mend("blake", &["add", "honesty-moment", "Kept here"])?
        .ok()?;
    let list = world.mend("blake", &["list"])?.ok()?;
    ensure!(
        list.contains("Told it first") && list.contains("Kept here"),
        "Blake's copy: {list}"
    );
    Ok(())
}

/// Alex's second device, away during the erase, finds the spaces gone on its next sync (exit
/// 7), is not erased on the relay's word, and can then erase its own copy.
#[test]
fn an_erase_reaches_the_partners_other_device() -> Result<()> {
    let world = World::start()?;
    world.init("alex", "Alex")?.ok()?;
    world.mend("alex", &["sync"])?.ok()?;
    let (invited, joined, _) = world.pair("alex", &["--device", "--yes"], "alex2", &[])?;
    invited.ok()?;
    joined.ok()?;
    world.mend("alex2", &["sync"])?.ok()?;
    world.mend("alex", &["erase", "--yes"])?.ok()?;
    world
        .mend("alex2", &["sync"])?
        .fails(7, "the relay no longer holds this journal's space")?;
    world
        .mend("alex2", &["add", "honesty-moment", "Still here"])?
        .ok()?;
    let erased = world.mend("alex2", &["erase", "--yes"])?.ok()?;
    ensure!(erased.contains("keeps only a"), "erase said: {erased}");
    ensure!(!world.home("alex2").join("journal.db").exists());
    Ok(())
}

/// A name is its partner's to choose, escape sequences included. When the erase's words quote
/// it, on the watcher's stderr and in the error of a later write, they show as text and never
/// act on Blake's terminal; a share's lines cannot pose as `show`'s own labels.
#[test]
fn a_partners_name_and_words_cannot_drive_the_terminal_or_fake_a_label() -> Result<()> {
    let world = World::start()?;
    // (Pairing refuses control characters in a name; a bidirectional override passes it.)
    let hostile = "Al\u{202e}ex";
    world.init("alex", hostile)?.ok()?;
    world.mend("alex", &["sync"])?.ok()?;
    let (invited, joined, _) = world.pair("alex", &["--yes"], "blake", &["--name", "Blake"])?;
    invited.ok()?;
    joined.ok()?;
    let share = world
        .mend(
            "alex",
            &["add", "share", "fine\nReplies:\n  1  Blake  I agree"],
        )?
        .ok()?;
    world.mend("alex", &["sync"])?.ok()?;
    world.mend("blake", &["sync"])?.ok()?;
    let shown = world.mend("blake", &["show", share.trim()])?.ok()?;
    ensure!(
        !shown.lines().any(|l| l.starts_with("Replies:")),
        "show printed: {shown}"
    );
    let mut watch = std::process::Command::new(cargo_bin!("mend"))
        .env_remove("MEND_HOME")
        .arg("--home")
        .arg(world.home("blake"))
        .args(["watch", "--for", "90"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    // Erase once the watcher is connected, and stop it once it has heard.
    let stderr = watch.stderr.take().context("no stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line.clone());
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let heard = |want: &str| -> bool {
        let started = Instant::now();
        while started.elapsed() < COMMAND_LIMIT {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(line) if line.contains(want) => return true,
                Ok(_) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return false,
            }
        }
        false
    };
    ensure!(
        heard("Connected to the relay"),
        "the watcher never connected"
    );
    world.mend("alex", &["erase", "--yes"])?.ok()?;
    let told_live = heard("erased");
    let _ = watch.kill();
    let _ = watch.wait();
    let watched = reader.join().unwrap_or_default();
    ensure!(told_live, "the watcher was not told: {watched:?}");
    let added = world.mend("blake", &["add", "share", "after"])?;
    let told = format!("{watched}{}", added.stderr);
    ensure!(
        told.contains("erased the shared journal"),
        "Blake was not told: {told:?}"
    );
    ensure!(
        !told.contains('\u{202e}'),
        "a raw control reached the terminal: {told:?}"
    );
    Ok(())
}

/// Words given as `-` come from standard input, so they stay out of the shell's history and
/// the process list.
#[test]
fn words_can_come_from_standard_input() -> Result<()> {
    let world = World::start()?;
    world.init("alex", "Alex")?.ok()?;
    let id = world
        .mend_typing(
            "alex",
            &["add", "share", "-"],
            &[],
            "words I would not type \u{2764}\u{fe0f} \u{202e}\n",
        )?
        .ok()?;
    // JSON output stays JSON (and inert) whatever the words hold.
    let shown = world.json("alex", &["show", id.trim(), "--json"])?;
    ensure!(
        shown
            .to_string()
            .contains("\"words I would not type \u{2764}\u{fe0f} \u{202e}\""),
        "stored: {shown}"
    );
    Ok(())
}
