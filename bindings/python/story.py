"""The two-partner story through the generated Python bindings and a real mend-relay.

Binding tests test the binding: this runs the generated API end to end once (async calls,
create, invite, join, every record operation on both sides while apart, sync, subscriptions
(two, a dropped one, a throwing one, the status stream), live sync, paging, typed errors with
codes, shutdown and reopen, restore from the keyring alone, and a background round on a relay
that answers slowly: cut at its deadline, cancelled mid-way, and the next round completing with
nothing lost). The relay speaks TLS and is trusted by its pin. The rules themselves are tested
in Rust.

Run by scripts/test-bindings.sh, which starts the relay and the delaying proxy:
    MEND_RELAY_URL=https://... MEND_RELAY_PIN=sha256/... MEND_PROXY_URL=https://...
    MEND_PROXY_CONTROL=127.0.0.1:port PYTHONPATH=bindings/out/python \
    python3 bindings/python/story.py <work dir>
"""

import asyncio
import datetime
import gc
import os
import re
import sys
import threading
import time

from delay_proxy import control
from mend import (
    value_label,
    version,
    AccountabilityNote,
    Answer,
    Boundary,
    BoundaryArea,
    BoundaryState,
    Cadence,
    CheckIn,
    ClaimStatus,
    Commitment,
    CommitmentStatus,
    ConsentState,
    ExportFormat,
    HonestyKind,
    HonestyMoment,
    HonestyTiming,
    Journal,
    JournalListener,
    JournalOptions,
    Joining,
    MendError,
    Need,
    NeedKind,
    NeedResponseKind,
    NeedStatus,
    PacketOptions,
    PartnerView,
    ProcessingNote,
    Question,
    QuestionStatus,
    RecordKind,
    RecordBody,
    Share,
    SyncStatusListener,
    TimelineQuery,
)


class Recorder(JournalListener):
    """Records what a subscription hears, and on which OS thread."""

    def __init__(self):
        self.lock = threading.Lock()
        self.changed = {}
        self.threads = set()

    def on_change(self, change):
        with self.lock:
            self.threads.add(threading.get_native_id())
            for r in change.records:
                self.changed[r.id] = r

    def saw(self, record_id):
        with self.lock:
            return record_id in self.changed

    def heard(self, record_id):
        with self.lock:
            return self.changed.get(record_id)


class Thrower(JournalListener):
    """A listener with a bug: it throws every time."""

    def __init__(self):
        self.calls = 0

    def on_change(self, change):
        self.calls += 1
        raise RuntimeError("a listener bug")


class Statuses(SyncStatusListener):
    def __init__(self):
        self.lock = threading.Lock()
        self.seen = []

    def on_status(self, status):
        with self.lock:
            self.seen.append(status)

    def on_keyring_changed(self):
        pass


passed = 0
failed = 0


def check(what, ok):
    global passed, failed
    if ok:
        passed += 1
        print(f"  ok   {what}")
    else:
        failed += 1
        print(f"  FAIL {what}")


async def wait_for(seconds, done):
    """Waits (at most `seconds`) until `done()` holds, without blocking the event loop."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if done():
            return True
        await asyncio.sleep(0.02)
    return done()


async def round_of(journal):
    return await journal.sync_now(deadline_ms=20_000)


async def everything(journal):
    return (await journal.timeline(TimelineQuery(limit=500))).items


def remove_database(path):
    for suffix in ("", "-wal", "-shm", ".lock"):
        try:
            os.remove(path + suffix)
        except FileNotFoundError:
            pass


async def devices_story(alex, blake):
    """Both partners name their phones and each lists both, with the relay's last-seen hour."""
    await alex.set_device_name("Alex's phone")
    await blake.set_device_name("Blake's phone")
    for journal in (alex, blake, alex, blake):
        await round_of(journal)
    for journal, me, other in ((alex, "Alex", "Blake"), (blake, "Blake", "Alex")):
        listed = await journal.devices()
        check(f"{me}'s app lists both phones, named, its own first ({[d.name for d in listed]})",
              [d.name for d in listed] == [f"{me}'s phone", f"{other}'s phone"]
              and listed[0].this_device and listed[0].mine and not listed[1].mine)
        check(f"{me}'s app sees when the relay last served each phone, to the hour",
              all(d.last_seen is not None and d.last_seen % 3600 == 0 for d in listed))
    try:
        await alex.set_device_name("x" * 65)
        check("an over-long device name is refused", False)
    except MendError.Invalid:
        check("an over-long device name is refused", True)


async def rejoin_story(alex, blake, work, relay, pin):
    """Blake loses every device; on a new phone, Blake rejoins through Alex with a short code."""
    blake_id = await blake.me()
    await round_of(blake)
    await round_of(alex)
    before = [r.id for r in await everything(alex)]
    # Alex asks first; Blake's phone (not yet lost) is shown the ask, and a rejoin before the
    # wait is refused.
    asked = await alex.ask_to_rejoin()
    await round_of(alex)
    await round_of(blake)
    shown = (await blake.rejoin_asks()).about_me
    check("Blake's phone is shown Alex's ask to let a new device in as Blake",
          shown is not None and shown.asked_by == await alex.me()
          and shown.asked_at == asked.asked_at and shown.cancelled_at is None)
    try:
        await alex.invite_to_rejoin(True)
        check("a rejoin before the wait is refused", False)
    except MendError.Invalid:
        check("a rejoin before the wait is refused", not (await alex.rejoin_asks()).ready)
    await blake.shutdown()
    # The wait passes (shortened here) with no cancel.
    await alex.set_rejoin_wait(0)
    check("Alex's ask stood the wait", (await alex.rejoin_asks()).ready)
    invitation = await alex.invite_to_rejoin(True)
    asking = asyncio.ensure_future(invitation.wait_for_joiner(20_000))
    joining = await Joining.start(invitation.code(), "", relay, JournalOptions(relay_pin=pin))
    joiner = await asking
    check("Alex's app is asked about Blake rejoining",
          joiner is not None and joiner.rejoin and not joiner.for_device)
    check("Blake's new phone knows it rejoins, and both show the same words",
          joining.rejoin() and joiner.confirmation == joining.confirmation())
    letting_in = asyncio.ensure_future(invitation.accept())
    rejoined = await joining.finish(os.path.join(work, "blake-new.db"))
    await letting_in
    await round_of(rejoined)
    check("Blake rejoined as the same partner", (await rejoined.me()) == blake_id)
    check("Blake's new phone reads the whole timeline",
          [r.id for r in await everything(rejoined)] == before)
    again = await rejoined.add(RecordBody.SHARE(Share(feeling="back, on a new phone")))
    await round_of(rejoined)
    await round_of(alex)
    check("Alex reads what Blake writes on the new phone, as Blake's",
          (await alex.get(again)).author == blake_id)
    return rejoined


async def story(relay, pin, work):
    # A journal's calendar is UTC unless the app sets its zone.
    today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    print(f"python story against {relay} (mend {version()})")
    main_thread = threading.get_native_id()

    alex_path = os.path.join(work, "alex.db")
    # Alex's app knows the relay's pin; so does Blake's, told with the short code.
    alex = await Journal.create(alex_path, "Alex", relay, JournalOptions(relay_pin=pin))
    await alex.ready()
    alex_secret = alex.keyring_secret()
    first, second, dropped, thrower = Recorder(), Recorder(), Recorder(), Thrower()
    statuses = Statuses()
    first_sub = alex.subscribe(first)
    second_sub = alex.subscribe(second)
    dropped_sub = alex.subscribe(dropped)
    thrower_sub = alex.subscribe(thrower)
    status_sub = alex.subscribe_status(statuses)
    del dropped_sub
    gc.collect()
    first_round = await round_of(alex)
    check("a new journal syncs over TLS, the relay trusted by its pin",
          first_round.finished and not first_round.status.syncing and first_round.pushed >= 1)

    # Someone guesses at a short code: one try, and the code is burned on both sides.
    guessed = await alex.invite(False, True)

    async def host_saw():
        try:
            await guessed.wait_for_joiner(20_000)
            return "nothing"
        except MendError.Pairing as e:
            return str(e)

    seen = asyncio.ensure_future(host_saw())
    number, first_word, second_word = guessed.code().split("-")
    wrong = f"{number}-{'zebra' if first_word == 'acorn' else 'acorn'}-{second_word}"
    try:
        await Joining.start(wrong, "Mallory", relay, JournalOptions(relay_pin=pin))
        check("a wrong short code is refused", False)
    except MendError.Pairing as e:
        check(f'a wrong short code is refused: "{e}"', str(e).startswith("the code does not match"))
    check("the inviting app is told the code was burned", "wrong words" in await seen)

    # Blake joins with a short code Alex reads out on a call; Alex's app asks before anything
    # is shared.
    blake_path = os.path.join(work, "blake.db")
    invitation = await alex.invite(False, True)
    code = invitation.code()
    check(f"a short code is a number and two words ({code})",
          re.fullmatch(r"[1-9][0-9]*-[a-z]+-[a-z]+", code) is not None)

    asking = asyncio.ensure_future(invitation.wait_for_joiner(20_000))
    joining = await Joining.start(code, "Blake", relay, JournalOptions(relay_pin=pin))
    joiner = await asking
    check("Alex's app is asked about Blake",
          joiner is not None and joiner.name == "Blake" and not joiner.for_device)
    check(f"Blake's app names Alex and both show the same words ({joining.confirmation()})",
          joining.inviter() == "Alex" and joiner.confirmation == joining.confirmation()
          and len(joining.confirmation().split(" ")) == 3)
    letting_in = asyncio.ensure_future(invitation.accept())
    blake = await joining.finish(blake_path)
    await letting_in
    try:
        await Joining.start(code, "Carol", relay, JournalOptions(relay_pin=pin))
        check("a used short code is refused", False)
    except MendError.Pairing as e:
        check(f'a used short code is refused: "{e}"',
              str(e) == "this invite was already used; ask for a new one")
    blake_secret = blake.keyring_secret()
    heard_by_blake = Recorder()
    blake_sub = blake.subscribe(heard_by_blake)
    await round_of(blake)
    await round_of(alex)
    check("both partners see each other",
          sorted(p.name for p in await blake.partners()) == ["Alex", "Blake"]
          and len(await alex.partners()) == 2)
    await devices_story(alex, blake)

    # Shared ground.
    question = await alex.add(RecordBody.QUESTION(
        Question(text="When did it start?", category="timeline", status=QuestionStatus.OPEN)))
    check("a write made while a listener throws still returns its id", len(question) == 36)
    check("both subscriptions hear it, on one thread that is not the caller's",
          await wait_for(5, lambda: first.saw(question) and second.saw(question))
          and len(first.threads | second.threads) == 1 and main_thread not in first.threads)
    check("the change says the record's kind",
          first.heard(question).kind == RecordKind.QUESTION and not first.heard(question).removed)
    check("the throwing listener was called", await wait_for(5, lambda: thrower.calls >= 1))
    check("a dropped subscription hears nothing", not dropped.changed)
    later = await alex.add(RecordBody.QUESTION(
        Question(text="Can we talk Sunday?", category="plans", status=QuestionStatus.OPEN)))
    boundary = await alex.add(RecordBody.BOUNDARY(
        Boundary(area=BoundaryArea.CONTACT, text="No contact with them")))
    commitment = await blake.add(RecordBody.COMMITMENT(Commitment(
        text="Phone on the table at dinner", cadence=Cadence.DAILY, status=CommitmentStatus.ACTIVE)))
    need = await blake.add(RecordBody.NEED(Need(
        kind=NeedKind.HONESTY_ON_TOPIC, text="Tell me when you will be late", status=NeedStatus.OPEN)))
    await round_of(alex)
    await round_of(blake)
    await round_of(alex)
    got = await blake.get(question)
    check("Blake reads Alex's question", got.body.value.text == "When did it start?")

    # Apart: both write without syncing.
    note = await alex.add(RecordBody.ACCOUNTABILITY_NOTE(AccountabilityNote(
        what_i_did="I lied about the trips", impact="You stopped trusting plans", amends=[commitment])))
    check_in = await alex.add(RecordBody.CHECK_IN(CheckIn(
        local_date=today, safety=4, trust=3, connection=5, mood_tags=["tired"])))
    current = (await alex.get(boundary)).body.value
    current.text = "No contact with them, at all"
    await alex.edit(boundary, RecordBody.BOUNDARY(current))
    await alex.confirm(commitment, today, PartnerView.CONFIRMED, note="saw it")
    await alex.respond_to_need(need, NeedResponseKind.LETS_TALK, note="tonight")
    private = await alex.add(RecordBody.PROCESSING_NOTE(ProcessingNote(text="What I am working on")))
    await alex.share(private)
    second_sub.cancel()
    mistake = await alex.add(RecordBody.SHARE(Share(feeling="sent too soon")))
    await alex.remove(mistake)
    check("the removal says removed",
          await wait_for(5, lambda: first.saw(mistake) and first.heard(mistake).removed))
    check("a cancelled subscription hears nothing more", not second.saw(mistake))

    answer = await blake.add(RecordBody.ANSWER(Answer(question=question, text="In March")))
    await blake.claim(commitment, today, ClaimStatus.DONE)
    await blake.consent(boundary, ConsentState.AGREED)
    await blake.set_question_status(later, QuestionStatus.NOT_NOW)
    moment = await blake.add(RecordBody.HONESTY_MOMENT(HonestyMoment(
        kind=HonestyKind.VOLUNTEERED_TRUTH, text="Told me about the message",
        timing=HonestyTiming.SHARE_NOW)))
    report = await round_of(blake)
    check(f"Blake's round pushed everything ({report.pushed} batches)",
          report.finished and report.pending == 0 and report.pushed >= 1)

    # Together again.
    report = await round_of(alex)
    check(f"Alex's round says what it brought ({report.pulled} chunks, {report.changed} records)",
          report.finished and report.pulled >= 1 and report.changed >= 1 and report.problems == [])
    await round_of(blake)
    check("Alex's subscription heard of Blake's answer", await wait_for(5, lambda: first.saw(answer)))
    check("Blake's subscription heard of Alex's note", await wait_for(5, lambda: heard_by_blake.saw(note)))
    check("the status stream heard a finished round",
          await wait_for(5, lambda: any(s.online and s.last_synced is not None for s in statuses.seen)))
    alex_all, blake_all = await everything(alex), await everything(blake)
    check(f"both timelines are equal ({len(alex_all)} records)", alex_all == blake_all and len(alex_all) == 10)
    open_questions = await alex.open_questions()
    check("the answer closed one question; the other is put off",
          [(t.question.id, t.question.body.value.status) for t in open_questions]
          == [(later, QuestionStatus.NOT_NOW)])
    check("the question's thread holds the answer",
          [r.id for r in (await alex.thread(question)).answers] == [answer])
    status = [s for s in await alex.boundary_status() if s.boundary.id == boundary][0]
    check("consent to the old wording does not count", status.state == BoundaryState.PENDING)
    ledger = (await alex.get(commitment)).body.value
    check("claim and confirmation both kept",
          [c.status for c in ledger.claims] == [ClaimStatus.DONE]
          and [v.view for v in ledger.views] == [PartnerView.CONFIRMED])
    check("Blake reads the response to the need",
          (await blake.get(need)).body.value.response.kind == NeedResponseKind.LETS_TALK)
    check("Blake reads the shared note", (await blake.get(private)).body.value.text == "What I am working on")
    check("Blake reads Alex's check-in", (await blake.get(check_in)).body.value.safety == 4)
    week = (await alex.progress(today, today)).weeks[0]
    check("progress counts the week", week.check_ins.count == 1 and week.honesty_moments == 1)

    # Paging: three at a time until the cursor runs out, the same records in the same order.
    pages, cursor = [], None
    while True:
        page = await alex.timeline(TimelineQuery(limit=3, cursor=cursor))
        pages.extend(page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
    check("paging three at a time reads the whole timeline", [r.id for r in pages] == [r.id for r in alex_all])

    packet = await alex.export(PacketOptions(from_date=today, to_date=today), ExportFormat.MARKDOWN)
    check("the packet renders", "Honesty moment" in packet)
    await alex.set_calendar("UTC", "monday")
    check("today knows who has checked in",
          not (await alex.waiting_today()).check_in_due and (await blake.waiting_today()).check_in_due)
    check("no conflict on the boundary", await alex.conflicts(boundary) == [])
    words = value_label(RecordKind.QUESTION, "status", "not_now")
    check("stored names have words", words.text == "Not now" and words.key == "value.question_status.not_now")

    # Typed errors with messages that read well.
    try:
        await alex.claim(commitment, today, ClaimStatus.DONE)
        check("claiming the partner's commitment is refused", False)
    except MendError.PermissionDenied as e:
        check(f'claiming the partner\'s commitment is refused: "{e}"',
              str(e) == "not allowed: only the commitment's owner can claim its follow-through")
    try:
        await Joining.start("not an invite", "X", None, JournalOptions())
        check("a bad invite is refused", False)
    except MendError.Invite as e:
        check(f'a bad invite is refused: "{e}"',
              str(e) == "this is not a Mend invite (it should start with MEND4-, or be a number and two words)")
    try:
        await Journal.open(os.path.join(work, "gone.db"), alex_secret, JournalOptions())
        check("a missing database is refused", False)
    except MendError.Missing:
        check("a missing database is refused as missing", True)

    # Live: Blake's write reaches Alex's subscription without a sync call.
    alex.start_live()
    blake.start_live()
    check("live sync runs", alex.is_live() and blake.is_live())
    share = await blake.add(RecordBody.SHARE(Share(feeling="Dinner felt easier tonight")))
    check("live sync brings Blake's share to Alex", await wait_for(10, lambda: first.saw(share)))
    await alex.stop_live()
    await blake.stop_live()
    check("live sync stops", not alex.is_live() and not blake.is_live())
    await round_of(blake)

    # Relaunch: shut down (live sync stopped, the file released), then open with the kept secret.
    alex.start_live()
    await alex.shutdown()
    check("shutdown stops live sync", not alex.is_live())
    try:
        await alex.get(share)
        check("a shut-down journal refuses calls", False)
    except MendError.Closed:
        check("a shut-down journal refuses calls", True)
    alex = await Journal.open(alex_path, alex_secret, JournalOptions())
    check("reopened with the kept secret",
          (await alex.get(share)).id == share and (await alex.get(moment)).id == moment)

    # Reinstall: Blake's database is gone, the secret kept in the Keychain is not.
    await blake.shutdown()
    remove_database(blake_path)
    blake = await Journal.restore(blake_path, blake_secret, 20_000, JournalOptions())
    restored = await everything(blake)
    check("restored from the keyring alone", [r.id for r in restored] == [r.id for r in await everything(alex)])
    check("restored as the same partner", (await blake.me()) == (await alex.get(moment)).author)
    blake = await rejoin_story(alex, blake, work, relay, pin)

    for sub in (first_sub, thrower_sub, status_sub, blake_sub):
        sub.cancel()
    await alex.shutdown()
    await blake.shutdown()


async def background_window(work, proxy, proxy_control, pin):
    """A journal whose relay answers slowly (the delaying proxy): a round ends at its
    deadline, a cancelled round stops, and the next round completes with nothing lost."""
    casey_path = os.path.join(work, "casey.db")
    casey = await Journal.create(casey_path, "Casey", proxy, JournalOptions(relay_pin=pin))
    secret = casey.keyring_secret()
    written = [await casey.add(RecordBody.SHARE(Share(feeling=f"evening {i}"))) for i in range(3)]

    # Every answer 1.5 s late: a fresh round needs several, so the deadline comes first.
    await control(proxy_control, "delay 1500")
    started = time.monotonic()
    report = await casey.sync_now(deadline_ms=2_000)
    took = (time.monotonic() - started) * 1000
    check(f"a round on a slow relay ends at its 2000 ms deadline ({took:.0f} ms)",
          not report.finished and report.status.syncing and 1_800 <= took <= 2_200)

    # Cancelled mid-round, as an OS ends a background window.
    await control(proxy_control, "delay 600")
    more = await casey.add(RecordBody.SHARE(Share(feeling="written before the window closed")))
    written.append(more)
    task = asyncio.create_task(casey.sync_now(deadline_ms=120_000))
    await asyncio.sleep(1.5)
    check("the round was still running when cancelled", not task.done())
    task.cancel()
    try:
        await task
        check("a cancelled round raises CancelledError", False)
    except asyncio.CancelledError:
        check("a cancelled round raises CancelledError", True)
    # A round still running would hold the journal: shutdown would wait and fail with `locked`.
    started = time.monotonic()
    await casey.shutdown()
    check(f"the cancelled round let go of the journal (shutdown took "
          f"{(time.monotonic() - started) * 1000:.0f} ms)", True)
    check("the cancelled round's connections are closed",
          await wait_for_async(10, lambda: control(proxy_control, "open"), "0"))

    # Stopped from outside (Swift's onCancel, a BGTask's expiration handler): it says what it did.
    casey = await Journal.open(casey_path, secret, JournalOptions())
    stopped = asyncio.create_task(casey.sync_now(deadline_ms=120_000))
    await asyncio.sleep(1.0)
    casey.cancel_sync()
    report = await stopped
    check("cancel_sync ends a round with its report", not report.finished and report.status.syncing)

    # The next round, in a later window, completes and loses nothing.
    await control(proxy_control, "delay 0")
    report = await casey.sync_now(deadline_ms=20_000)
    check(f"the next round completes ({report.pushed} batches pushed)",
          report.finished and report.pending == 0 and report.problems == [])
    other_path = os.path.join(work, "casey-tablet.db")
    for_tablet = await casey.invite(True, False)

    asking_casey = asyncio.ensure_future(for_tablet.wait_for_joiner(20_000))
    tablet_joining = await Joining.start(for_tablet.code(), "", None, JournalOptions())
    joiner = await asking_casey
    check("Casey's app is asked about her tablet",
          joiner is not None and joiner.for_device and tablet_joining.for_device())
    letting_tablet_in = asyncio.ensure_future(for_tablet.accept())
    other = await tablet_joining.finish(other_path)
    await letting_tablet_in
    await other.sync_now(deadline_ms=20_000)
    check("another device reads everything written before the cut",
          sorted(r.id for r in await everything(other)) == sorted(written))
    await casey.shutdown()
    await other.shutdown()


async def wait_for_async(seconds, ask, want):
    """Waits (at most `seconds`) until `await ask()` answers `want`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await ask() == want:
            return True
        await asyncio.sleep(0.05)
    return await ask() == want


def main():
    relay = os.environ.get("MEND_RELAY_URL")
    pin = os.environ.get("MEND_RELAY_PIN")
    proxy = os.environ.get("MEND_PROXY_URL")
    proxy_control = os.environ.get("MEND_PROXY_CONTROL")
    if not (relay and pin and proxy and proxy_control) or len(sys.argv) != 2:
        sys.exit("usage: MEND_RELAY_URL=https://... MEND_RELAY_PIN=sha256/... "
                 "MEND_PROXY_URL=https://... MEND_PROXY_CONTROL=host:port story.py <work dir>")
    os.makedirs(sys.argv[1], exist_ok=True)

    async def both():
        await story(relay, pin, sys.argv[1])
        await background_window(sys.argv[1], proxy, proxy_control, pin)

    try:
        asyncio.run(both())
    finally:
        let_foreign_threads_leave()
    print(f"python story: {passed} passed, {failed} failed")
    sys.exit(0 if failed == 0 else 1)


def let_foreign_threads_leave(seconds=10):
    """Waits until no other thread runs Python before the interpreter finalizes.

    A sync worker that woke the last awaited call is still inside Python for a moment: the
    wake-up writes to the event loop's pipe, which lets the main thread run (and end) before
    the worker takes the lock back to return. CPython ends any thread that takes it back while
    finalizing (pthread_exit), and that unwinds through Rust and aborts the process. Such a
    thread has a Python frame until it returns, so this waits for the frames to go. Apps never
    finalize an interpreter; this keeps the story's exit normal.
    """
    deadline = time.monotonic() + seconds
    while len(sys._current_frames()) > 1 and time.monotonic() < deadline:
        time.sleep(0.001)


if __name__ == "__main__":
    main()
