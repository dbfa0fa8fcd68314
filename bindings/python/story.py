"""The two-partner story through the generated Python bindings and a real mend-relay.

Binding tests test the binding: this runs the generated API end to end once (create, invite,
join, writes on both sides while apart, sync, the observer, live sync, equal timelines, a typed
error). The rules themselves are tested in Rust.

Run by scripts/test-bindings.sh:  MEND_RELAY_URL=... PYTHONPATH=bindings/out/python \
    python3 bindings/python/story.py <work dir>
"""

import asyncio
import datetime
import os
import sys
import threading
import time

from mend import (
    value_label,
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
    JournalObserver,
    MendError,
    PacketOptions,
    PartnerView,
    Question,
    QuestionStatus,
    RecordKind,
    RecordBody,
    Share,
    TimelineQuery,
)


class Recorder(JournalObserver):
    """Records what the journal tells its observer (called on a sync thread)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.changed = set()
        self.statuses = []

    def records_changed(self, ids):
        with self.lock:
            self.changed.update(ids)

    def status_changed(self, status):
        with self.lock:
            self.statuses.append(status)

    def saw(self, record_id):
        with self.lock:
            return record_id in self.changed


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


def wait_for(seconds, done):
    """Waits (at most `seconds`) until `done()` holds."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if done():
            return True
        time.sleep(0.02)
    return done()


async def round_of(journal):
    return await journal.sync_now(budget_ms=20_000)


def everything(journal):
    return journal.timeline(TimelineQuery(limit=500)).items


async def story(relay, work):
    # A journal's calendar is UTC until the app sets its zone.
    today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    print(f"python story against {relay}")

    alex_path = os.path.join(work, "alex.db")
    alex = Journal.create(alex_path, "Alex", relay)
    alex_secret = alex.keyring_secret()
    alex_observer = Recorder()
    alex.set_observer(alex_observer)
    check("a new journal syncs", not (await round_of(alex)).syncing)

    blake = Journal.join(os.path.join(work, "blake.db"), alex.partner_invite(), "Blake")
    blake_observer = Recorder()
    blake.set_observer(blake_observer)
    await round_of(blake)
    await round_of(alex)
    check("both partners see each other",
          sorted(p.name for p in blake.partners()) == ["Alex", "Blake"] and len(alex.partners()) == 2)

    # Shared ground.
    question = alex.add(RecordBody.QUESTION(
        Question(text="When did it start?", category="timeline", status=QuestionStatus.OPEN)))
    boundary = alex.add(RecordBody.BOUNDARY(
        Boundary(area=BoundaryArea.CONTACT, text="No contact with them")))
    commitment = blake.add(RecordBody.COMMITMENT(Commitment(
        text="Phone on the table at dinner", cadence=Cadence.DAILY, status=CommitmentStatus.ACTIVE)))
    await round_of(alex)
    await round_of(blake)
    await round_of(alex)
    check("Blake reads Alex's question", blake.get(question).body[0].text == "When did it start?")

    # Apart: both write without syncing.
    note = alex.add(RecordBody.ACCOUNTABILITY_NOTE(AccountabilityNote(
        what_i_did="I lied about the trips", impact="You stopped trusting plans", amends=[commitment])))
    check_in = alex.add(RecordBody.CHECK_IN(CheckIn(
        local_date=today, safety=4, trust=3, connection=5, mood_tags=["tired"])))
    current = alex.get(boundary).body[0]
    current.text = "No contact with them, at all"
    alex.edit(boundary, RecordBody.BOUNDARY(current))
    alex.confirm(commitment, today, PartnerView.CONFIRMED, note="saw it")

    answer = blake.add(RecordBody.ANSWER(Answer(question=question, text="In March")))
    blake.claim(commitment, today, ClaimStatus.DONE)
    blake.consent(boundary, ConsentState.AGREED)
    moment = blake.add(RecordBody.HONESTY_MOMENT(HonestyMoment(
        kind=HonestyKind.VOLUNTEERED_TRUTH, text="Told me about the message",
        timing=HonestyTiming.SHARE_NOW)))
    check("Blake's round pushed everything", (await round_of(blake)).pending == 0)

    # Together again.
    await round_of(alex)
    await round_of(blake)
    check("Alex's observer heard of Blake's answer", wait_for(5, lambda: alex_observer.saw(answer)))
    check("Blake's observer heard of Alex's note", wait_for(5, lambda: blake_observer.saw(note)))
    check("the observer got a status",
          any(s.online and s.last_synced is not None for s in alex_observer.statuses))
    check("both timelines are equal",
          everything(alex) == everything(blake) and len(everything(alex)) == 7)
    check("the answer closed the question", alex.open_questions() == [])
    check("the question's thread holds the answer",
          [r.id for r in alex.thread(question).answers] == [answer])
    status = [s for s in alex.boundary_status() if s.boundary.id == boundary][0]
    check("consent to the old wording does not count", status.state == BoundaryState.PENDING)
    ledger = alex.get(commitment).body[0]
    check("claim and confirmation both kept",
          [c.status for c in ledger.claims] == [ClaimStatus.DONE]
          and [v.view for v in ledger.views] == [PartnerView.CONFIRMED])
    check("Blake reads Alex's check-in", blake.get(check_in).body[0].safety == 4)
    week = alex.progress(today, today).weeks[0]
    check("progress counts the week", week.check_ins.count == 1 and week.honesty_moments == 1)
    packet = alex.export(PacketOptions(from_date=today, to_date=today), ExportFormat.MARKDOWN)
    check("the packet renders", "Honesty moment" in packet)
    alex.set_calendar("UTC", "monday")
    check("today knows who has checked in",
          not alex.waiting_today().check_in_due and blake.waiting_today().check_in_due)
    check("no conflict on the boundary", alex.conflicts(boundary) == [])
    words = value_label(RecordKind.QUESTION, "status", "not_now")
    check("stored names have words", words.text == "Not now" and words.key == "value.question_status.not_now")

    # A typed error with a message that reads well.
    try:
        alex.claim(commitment, today, ClaimStatus.DONE)
        check("claiming the partner's commitment is refused", False)
    except MendError.PermissionDenied as e:
        check(f'claiming the partner\'s commitment is refused: "{e}"',
              str(e) == "not allowed: only the commitment's owner can claim its follow-through")
    try:
        Journal.join(os.path.join(work, "x.db"), "not an invite", "X")
        check("a bad invite is refused", False)
    except MendError.Invite as e:
        check(f'a bad invite is refused: "{e}"',
              str(e) == "this is not a Mend invite code (it should start with MEND1-)")

    # Live: Blake's write reaches Alex's observer without a sync call.
    alex.start_live(alex_observer)
    blake.start_live(blake_observer)
    check("live sync runs", alex.is_live() and blake.is_live())
    share = blake.add(RecordBody.SHARE(Share(feeling="Dinner felt easier tonight")))
    check("live sync brings Blake's share to Alex", wait_for(10, lambda: alex_observer.saw(share)))
    await alex.stop_live()
    await blake.stop_live()
    check("live sync stops", not alex.is_live() and not blake.is_live())

    # Relaunch: the app hands the kept secret back. (Python has no close(): dropping the last
    # reference closes the journal.)
    del alex
    alex = Journal.open(alex_path, alex_secret)
    check("reopened with the kept secret", alex.get(share).id == share and alex.get(moment).id == moment)


def main():
    relay = os.environ.get("MEND_RELAY_URL")
    if not relay or len(sys.argv) != 2:
        sys.exit("usage: MEND_RELAY_URL=http://... story.py <work dir>")
    os.makedirs(sys.argv[1], exist_ok=True)
    asyncio.run(story(relay, sys.argv[1]))
    print(f"python story: {passed} passed, {failed} failed")
    sys.exit(0 if failed == 0 else 1)


if __name__ == "__main__":
    main()
