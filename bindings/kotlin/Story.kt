// The two-partner story through the generated Kotlin bindings and a real mend-relay.
//
// Binding tests test the binding: this exercises the generated API end to end once (create,
// invite, join, writes on both sides while apart, sync, the observer, live sync, equal
// timelines, a typed error). The rules themselves are tested in Rust (core/tests, tests/).
//
// Run by scripts/test-bindings.sh:  java ... app.mend.story.StoryKt <work dir>
// with MEND_RELAY_URL set to a running relay.

package app.mend.story

import app.mend.core.*
import java.io.File
import java.util.concurrent.ConcurrentLinkedQueue
import kotlin.system.exitProcess
import kotlinx.coroutines.runBlocking

/** Records what the journal tells its observer (called on a sync thread). */
class Recorder : JournalObserver {
    val changed = ConcurrentLinkedQueue<String>()
    val statuses = ConcurrentLinkedQueue<SyncStatus>()

    override fun recordsChanged(ids: List<String>) {
        changed.addAll(ids)
    }

    override fun statusChanged(status: SyncStatus) {
        statuses.add(status)
    }
}

var passed = 0
var failed = 0

fun check(what: String, ok: Boolean) {
    if (ok) {
        passed++
        println("  ok   $what")
    } else {
        failed++
        println("  FAIL $what")
    }
}

/** Waits (at most [seconds]) until [done] holds. */
fun waitFor(seconds: Int, done: () -> Boolean): Boolean {
    val deadline = System.nanoTime() + seconds * 1_000_000_000L
    while (System.nanoTime() < deadline) {
        if (done()) return true
        Thread.sleep(20)
    }
    return done()
}

/** One round that must finish. */
suspend fun Journal.round(): SyncStatus = syncNow(budgetMs = 20_000u)

fun everything(j: Journal): List<JournalRecord> = j.timeline(TimelineQuery(limit = 500u)).items

fun main(args: Array<String>) {
    val relay = System.getenv("MEND_RELAY_URL") ?: error("set MEND_RELAY_URL")
    val dir = File(args.getOrNull(0) ?: error("usage: StoryKt <work dir>")).apply { mkdirs() }
    // A journal's calendar is UTC until the app sets its zone.
    val today = java.time.LocalDate.now(java.time.ZoneOffset.UTC).toString()
    println("kotlin story against $relay")

    runBlocking {
        // Alex creates the journal and keeps its secret (an app: in Keystore).
        val alexObserver = Recorder()
        var alex = Journal.create(File(dir, "alex.db").path, "Alex", relay)
        val alexSecret = alex.keyringSecret()
        alex.setObserver(alexObserver)
        check("a new journal syncs", !alex.round().syncing)

        // Blake joins with the invite (an app: scanned from a QR code).
        val blake = Journal.join(File(dir, "blake.db").path, alex.partnerInvite(), "Blake")
        val blakeObserver = Recorder()
        blake.setObserver(blakeObserver)
        blake.round()
        alex.round()
        check("both partners see each other", blake.partners().map { it.name }.sorted() == listOf("Alex", "Blake") &&
            alex.partners().size == 2)

        // Shared ground.
        val question = alex.add(RecordBody.Question(Question(text = "When did it start?", category = "timeline", status = QuestionStatus.OPEN)))
        val boundary = alex.add(RecordBody.Boundary(Boundary(area = BoundaryArea.CONTACT, text = "No contact with them")))
        val commitment = blake.add(RecordBody.Commitment(Commitment(text = "Phone on the table at dinner", cadence = Cadence.DAILY, status = CommitmentStatus.ACTIVE)))
        alex.round(); blake.round(); alex.round()
        check("Blake reads Alex's question", (blake.get(question).body as RecordBody.Question).v1.text == "When did it start?")

        // Apart: both write without syncing.
        val note = alex.add(RecordBody.AccountabilityNote(AccountabilityNote(whatIDid = "I lied about the trips", impact = "You stopped trusting plans", amends = listOf(commitment))))
        val checkIn = alex.add(RecordBody.CheckIn(CheckIn(localDate = today, safety = 4u, trust = 3u, connection = 5u, moodTags = listOf("tired"))))
        val current = (alex.get(boundary).body as RecordBody.Boundary).v1
        alex.edit(boundary, RecordBody.Boundary(current.copy(text = "No contact with them, at all")))
        alex.confirm(commitment, today, PartnerView.CONFIRMED, note = "saw it")

        val answer = blake.add(RecordBody.Answer(Answer(question = question, text = "In March")))
        blake.claim(commitment, today, ClaimStatus.DONE)
        blake.consent(boundary, ConsentState.AGREED)
        val moment = blake.add(RecordBody.HonestyMoment(HonestyMoment(kind = HonestyKind.VOLUNTEERED_TRUTH, text = "Told me about the message", timing = HonestyTiming.SHARE_NOW)))
        val pendingBefore = blake.round().pending
        check("Blake's round pushed everything", pendingBefore == 0uL)

        // Together again.
        alex.round(); blake.round()
        check("Alex's observer heard of Blake's answer", waitFor(5) { alexObserver.changed.contains(answer) })
        check("Blake's observer heard of Alex's note", waitFor(5) { blakeObserver.changed.contains(note) })
        check("the observer got a status", alexObserver.statuses.any { it.online && it.lastSynced != null })
        check("both timelines are equal", everything(alex) == everything(blake) && everything(alex).size == 7)
        check("the answer closed the question", alex.openQuestions().isEmpty())
        check("the question's thread holds the answer", alex.thread(question).answers.map { it.id } == listOf(answer))
        val status = alex.boundaryStatus().single { it.boundary.id == boundary }
        check("consent to the old wording does not count", status.state == BoundaryState.PENDING)
        val ledger = (alex.get(commitment).body as RecordBody.Commitment).v1
        check("claim and confirmation both kept", ledger.claims.single().status == ClaimStatus.DONE &&
            ledger.views.single().view == PartnerView.CONFIRMED)
        check("Blake reads Alex's check-in", (blake.get(checkIn).body as RecordBody.CheckIn).v1.safety == 4u)
        val week = alex.progress(today, today).weeks.single()
        check("progress counts the week", week.checkIns.count == 1u && week.honestyMoments == 1u)
        val packet = alex.export(PacketOptions(fromDate = today, toDate = today), ExportFormat.MARKDOWN)
        check("the packet renders", packet.contains("Honesty moment"))
        alex.setCalendar("UTC", "monday")
        check("today knows who has checked in", !alex.waitingToday().checkInDue && blake.waitingToday().checkInDue)
        check("no conflict on the boundary", alex.conflicts(boundary).isEmpty())
        check("stored names have words", valueLabel(RecordKind.QUESTION, "status", "not_now")?.text == "Not now")

        // A typed error with a message that reads well.
        try {
            alex.claim(commitment, today, ClaimStatus.DONE)
            check("claiming the partner's commitment is refused", false)
        } catch (e: MendException.PermissionDenied) {
            check("claiming the partner's commitment is refused: \"${e.message}\"",
                e.message == "not allowed: only the commitment's owner can claim its follow-through")
        }
        try {
            blake.remove(note)
            check("removing the partner's note is refused", false)
        } catch (e: MendException) {
            check("removing the partner's note is refused (${e::class.simpleName})", e is MendException.PermissionDenied)
        }
        try {
            Journal.join(File(dir, "x.db").path, "not an invite", "X")
            check("a bad invite is refused", false)
        } catch (e: MendException.Invite) {
            check("a bad invite is refused: \"${e.message}\"",
                e.message == "this is not a Mend invite code (it should start with MEND1-)")
        }

        // Live: Blake's write reaches Alex's observer without a sync call.
        alex.startLive(alexObserver)
        blake.startLive(blakeObserver)
        check("live sync runs", alex.isLive() && blake.isLive())
        val share = blake.add(RecordBody.Share(Share(feeling = "Dinner felt easier tonight")))
        check("live sync brings Blake's share to Alex", waitFor(10) { alexObserver.changed.contains(share) })
        alex.stopLive()
        blake.stopLive()
        check("live sync stops", !alex.isLive() && !blake.isLive())

        // Relaunch: the app hands the kept secret back.
        alex.close()
        alex = Journal.open(File(dir, "alex.db").path, alexSecret)
        check("reopened with the kept secret", alex.get(share).id == share && alex.get(moment).id == moment)
        alex.close()
        blake.close()
    }

    println("kotlin story: $passed passed, $failed failed")
    exitProcess(if (failed == 0) 0 else 1)
}
