// The two-partner story through the generated Kotlin bindings and a real mend-relay.
//
// Binding tests test the binding: this exercises the generated API end to end once (suspend
// calls, create, invite, join, every record operation on both sides while apart, sync,
// subscriptions (two, a dropped one, a throwing one, the status stream), live sync, paging,
// typed errors with codes, shutdown and reopen, restore from the keyring alone, and a background
// round on a relay that answers slowly: cut at its deadline, cancelled mid-way, and the next
// round completing with nothing lost). The relay speaks TLS and is trusted by its pin. The rules
// themselves are tested in Rust (core/tests, tests/).
//
// Run by scripts/test-bindings.sh:  java ... app.mend.story.StoryKt <work dir>
// with MEND_RELAY_URL and MEND_RELAY_PIN set to a running relay, MEND_PROXY_URL and
// MEND_PROXY_CONTROL to the delaying proxy in front of it (bindings/python/delay_proxy.py).

package app.mend.story

import app.mend.core.*
import java.io.File
import java.util.concurrent.ConcurrentHashMap
import java.util.concurrent.CopyOnWriteArrayList
import java.util.concurrent.atomic.AtomicInteger
import kotlin.system.exitProcess
import kotlinx.coroutines.CancellationException
import kotlinx.coroutines.async
import kotlinx.coroutines.coroutineScope
import kotlinx.coroutines.delay
import kotlinx.coroutines.runBlocking

/** Records what a subscription hears, and on which thread. */
class Recorder : JournalListener {
    val changed = ConcurrentHashMap<String, ChangedRecord>()
    val threads: MutableSet<Thread> = ConcurrentHashMap.newKeySet()

    override fun onChange(change: JournalChange) {
        threads.add(Thread.currentThread())
        change.records.forEach { changed[it.id] = it }
    }

    fun saw(id: String) = changed.containsKey(id)
}

/** A listener with a bug: it throws every time. */
class Thrower : JournalListener {
    val calls = AtomicInteger()

    override fun onChange(change: JournalChange) {
        calls.incrementAndGet()
        throw IllegalStateException("a listener bug")
    }
}

class Statuses : SyncStatusListener {
    val seen = CopyOnWriteArrayList<SyncStatus>()

    override fun onStatus(status: SyncStatus) {
        seen.add(status)
    }

    override fun onKeyringChanged() {}
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

/** Waits (at most [seconds]) until [done] holds, suspending between looks. */
suspend fun waitFor(seconds: Int, done: () -> Boolean): Boolean {
    val deadline = System.nanoTime() + seconds * 1_000_000_000L
    while (System.nanoTime() < deadline) {
        if (done()) return true
        delay(20)
    }
    return done()
}

/** One round that must finish. */
suspend fun Journal.round(): SyncReport = syncNow(deadlineMs = 20_000)

/** Sends one command to the delaying proxy's control port and returns its answer. */
fun proxy(command: String): String {
    val (host, port) = System.getenv("MEND_PROXY_CONTROL").split(":")
    java.net.Socket(host, port.toInt()).use { socket ->
        socket.getOutputStream().write("$command\n".toByteArray())
        return socket.getInputStream().bufferedReader().readLine().trim()
    }
}

suspend fun everything(j: Journal): List<JournalRecord> = j.timeline(TimelineQuery(limit = 500)).items

fun removeDatabase(path: String) {
    for (suffix in listOf("", "-wal", "-shm", ".lock")) File(path + suffix).delete()
}

/** A short code burned by a wrong guess, then Blake paired by the code Alex reads out. */
suspend fun pairByShortCode(alex: Journal, blakePath: String, dir: File, relay: String, pin: String): Journal =
    coroutineScope {
        // Someone guesses at a short code: one try, and the code is burned on both sides.
        val guessed = alex.invite(forDevice = false, shortCode = true)
        val hostSaw = async {
            try {
                guessed.waitForJoiner(20_000)
                "nothing"
            } catch (e: MendException.Pairing) {
                e.message ?: ""
            }
        }
        val parts = guessed.code().split("-")
        val wrong = "${parts[0]}-${if (parts[1] == "acorn") "zebra" else "acorn"}-${parts[2]}"
        try {
            Joining.start(wrong, "Mallory", relay, JournalOptions(relayPin = pin))
            check("a wrong short code is refused", false)
        } catch (e: MendException.Pairing) {
            check("a wrong short code is refused: \"${e.message}\" (${e.code})",
                e.message!!.startsWith("the code does not match") && e.code == "pairing")
        }
        check("the inviting app is told the code was burned", hostSaw.await().contains("wrong words"))

        // Blake joins with a short code Alex reads out on a call; Alex's app asks before
        // anything is shared.
        val invitation = alex.invite(forDevice = false, shortCode = true)
        val code = invitation.code()
        check("a short code is a number and two words ($code)", Regex("^[1-9][0-9]*-[a-z]+-[a-z]+$").matches(code))
        val asking = async { invitation.waitForJoiner(20_000) }
        val joining = Joining.start(code, "Blake", relay, JournalOptions(relayPin = pin))
        val joiner = asking.await()
        check("Alex's app is asked about Blake", joiner?.name == "Blake" && joiner.forDevice == false)
        check("Blake's app names Alex and both show the same words (${joining.confirmation()})",
            joining.inviter() == "Alex" && joiner?.confirmation == joining.confirmation() &&
                joining.confirmation().split(" ").size == 3)
        val letIn = async { invitation.accept() }
        val blake = joining.finish(blakePath)
        letIn.await()
        try {
            Joining.start(code, "Carol", relay, JournalOptions(relayPin = pin))
            check("a used short code is refused", false)
        } catch (e: MendException.Pairing) {
            check("a used short code is refused: \"${e.message}\"", e.message == "this invite was already used; ask for a new one")
        }
        blake
    }

/** Both partners name their phones and each lists both, with the relay's last-seen hour. */
suspend fun devicesStory(alex: Journal, blake: Journal) {
    alex.setDeviceName("Alex's phone")
    blake.setDeviceName("Blake's phone")
    for (j in listOf(alex, blake, alex, blake)) j.round()
    for ((j, me) in listOf(alex to "Alex", blake to "Blake")) {
        val listed = j.devices()
        check("$me's app lists both phones, named, its own first (${listed.map { it.name }})",
            listed.map { it.name } == listOf("$me's phone", if (me == "Alex") "Blake's phone" else "Alex's phone") &&
                listed.first().thisDevice && listed.first().mine && !listed.last().mine)
        check("$me's app sees when the relay last served each phone, to the hour",
            listed.all { it.lastSeen != null && it.lastSeen!! % 3600L == 0L })
    }
    try {
        alex.setDeviceName("x".repeat(65))
        check("an over-long device name is refused", false)
    } catch (e: MendException.Invalid) {
        check("an over-long device name is refused (${e.code})", true)
    }
}

/** Blake loses every device; on a new phone, Blake rejoins through Alex with a short code. */
suspend fun rejoinStory(alex: Journal, blake: Journal, path: String, relay: String, pin: String): Journal =
    coroutineScope {
        val blakeId = blake.me()
        blake.round()
        alex.round()
        val before = everything(alex).map { it.id }
        // Alex asks first; Blake's phone (not yet lost) is shown the ask, and a rejoin before
        // the wait is refused.
        val asked = alex.askToRejoin()
        alex.round()
        blake.round()
        val shown = blake.rejoinAsks().aboutMe
        check("Blake's phone is shown Alex's ask to let a new device in as Blake",
            shown?.askedBy == alex.me() && shown.askedAt == asked.askedAt && shown.cancelledAt == null)
        try {
            alex.inviteToRejoin(shortCode = true)
            check("a rejoin before the wait is refused", false)
        } catch (e: MendException.Invalid) {
            check("a rejoin before the wait is refused", !alex.rejoinAsks().ready)
        }
        blake.shutdown()
        blake.close()
        // The wait passes (shortened here) with no cancel.
        alex.setRejoinWait(0)
        check("Alex's ask stood the wait", alex.rejoinAsks().ready)
        val invitation = alex.inviteToRejoin(shortCode = true)
        val asking = async { invitation.waitForJoiner(20_000) }
        val joining = Joining.start(invitation.code(), "", relay, JournalOptions(relayPin = pin))
        val joiner = asking.await()
        check("Alex's app is asked about Blake rejoining", joiner?.rejoin == true && joiner.forDevice == false)
        check("Blake's new phone knows it rejoins, and both show the same words",
            joining.rejoin() && joiner?.confirmation == joining.confirmation())
        val lettingIn = async { invitation.accept() }
        val rejoined = joining.finish(path)
        lettingIn.await()
        rejoined.round()
        check("Blake rejoined as the same partner", rejoined.me() == blakeId)
        check("Blake's new phone reads the whole timeline", everything(rejoined).map { it.id } == before)
        val again = rejoined.add(RecordBody.Share(Share(feeling = "back, on a new phone")))
        rejoined.round()
        alex.round()
        check("Alex reads what Blake writes on the new phone, as Blake's", alex.get(again).author == blakeId)
        rejoined
    }

/** Casey's tablet paired from her phone by an invite (an app: scanned from a QR code). */
suspend fun pairTablet(casey: Journal, path: String): Journal = coroutineScope {
    val forTablet = casey.invite(forDevice = true, shortCode = false)
    val askingCasey = async { forTablet.waitForJoiner(20_000) }
    val tabletJoining = Joining.start(forTablet.code(), "", null, JournalOptions())
    check("Casey's app is asked about her tablet", askingCasey.await()?.forDevice == true && tabletJoining.forDevice())
    val letTabletIn = async { forTablet.accept() }
    val tablet = tabletJoining.finish(path)
    letTabletIn.await()
    tablet
}

fun main(args: Array<String>) {
    val relay = System.getenv("MEND_RELAY_URL") ?: error("set MEND_RELAY_URL")
    val pin = System.getenv("MEND_RELAY_PIN") ?: error("set MEND_RELAY_PIN")
    val slowRelay = System.getenv("MEND_PROXY_URL") ?: error("set MEND_PROXY_URL")
    val dir = File(args.getOrNull(0) ?: error("usage: StoryKt <work dir>")).apply { mkdirs() }
    // A journal's calendar is UTC unless the app sets its zone.
    val today = java.time.LocalDate.now(java.time.ZoneOffset.UTC).toString()
    println("kotlin story against $relay (mend ${version()})")
    val main = Thread.currentThread()

    runBlocking {
        // Alex creates the journal and keeps its secret (an app: in Keystore). Alex's app knows
        // the relay's pin; so does Blake's, told with the short code.
        val alexPath = File(dir, "alex.db").path
        var alex = Journal.create(alexPath, "Alex", relay, JournalOptions(relayPin = pin))
        alex.ready()
        val alexSecret = alex.keyringSecret()
        val first = Recorder()
        val second = Recorder()
        val dropped = Recorder()
        val thrower = Thrower()
        val statuses = Statuses()
        val firstSub = alex.subscribe(first)
        val secondSub = alex.subscribe(second)
        alex.subscribe(dropped).close()
        val throwerSub = alex.subscribe(thrower)
        val statusSub = alex.subscribeStatus(statuses)
        val firstRound = alex.round()
        check("a new journal syncs over TLS, the relay trusted by its pin",
            firstRound.finished && !firstRound.status.syncing && firstRound.pushed >= 1)

        val blakePath = File(dir, "blake.db").path
        var blake = pairByShortCode(alex, blakePath, dir, relay, pin)
        val blakeSecret = blake.keyringSecret()
        val heardByBlake = Recorder()
        val blakeSub = blake.subscribe(heardByBlake)
        blake.round()
        alex.round()
        check("both partners see each other", blake.partners().map { it.name }.sorted() == listOf("Alex", "Blake") &&
            alex.partners().size == 2)
        devicesStory(alex, blake)

        // Shared ground.
        val question = alex.add(RecordBody.Question(Question(text = "When did it start?", category = "timeline", status = QuestionStatus.OPEN)))
        check("a write made while a listener throws still returns its id", question.length == 36)
        check("both subscriptions hear it, on one thread that is not the caller's",
            waitFor(5) { first.saw(question) && second.saw(question) } && main !in first.threads && main !in second.threads)
        check("the change says the record's kind",
            first.changed[question]?.kind == RecordKind.QUESTION && first.changed[question]?.removed == false)
        check("the throwing listener was called", waitFor(5) { thrower.calls.get() >= 1 })
        check("a dropped subscription hears nothing", dropped.changed.isEmpty())
        val later = alex.add(RecordBody.Question(Question(text = "Can we talk Sunday?", category = "plans", status = QuestionStatus.OPEN)))
        val boundary = alex.add(RecordBody.Boundary(Boundary(area = BoundaryArea.CONTACT, text = "No contact with them")))
        val commitment = blake.add(RecordBody.Commitment(Commitment(text = "Phone on the table at dinner", cadence = Cadence.DAILY, status = CommitmentStatus.ACTIVE)))
        val need = blake.add(RecordBody.Need(Need(kind = NeedKind.HONESTY_ON_TOPIC, text = "Tell me when you will be late", status = NeedStatus.OPEN)))
        alex.round(); blake.round(); alex.round()
        check("Blake reads Alex's question", (blake.get(question).body as RecordBody.Question).value.text == "When did it start?")

        // Apart: both write without syncing.
        val note = alex.add(RecordBody.AccountabilityNote(AccountabilityNote(whatIDid = "I lied about the trips", impact = "You stopped trusting plans", amends = listOf(commitment))))
        val checkIn = alex.add(RecordBody.CheckIn(CheckIn(localDate = today, safety = 4, trust = 3, connection = 5, moodTags = listOf("tired"))))
        val current = (alex.get(boundary).body as RecordBody.Boundary).value
        alex.edit(boundary, RecordBody.Boundary(current.copy(text = "No contact with them, at all")))
        alex.confirm(commitment, today, PartnerView.CONFIRMED, note = "saw it")
        alex.respondToNeed(need, NeedResponseKind.LETS_TALK, note = "tonight")
        val private = alex.add(RecordBody.ProcessingNote(ProcessingNote(text = "What I am working on")))
        alex.share(private)
        secondSub.cancel()
        val mistake = alex.add(RecordBody.Share(Share(feeling = "sent too soon")))
        alex.remove(mistake)
        check("the removal says removed", waitFor(5) { first.changed[mistake]?.removed == true })
        check("a cancelled subscription hears nothing more", !second.saw(mistake))

        val answer = blake.add(RecordBody.Answer(Answer(question = question, text = "In March")))
        blake.claim(commitment, today, ClaimStatus.DONE)
        blake.consent(boundary, ConsentState.AGREED)
        blake.setQuestionStatus(later, QuestionStatus.NOT_NOW)
        val moment = blake.add(RecordBody.HonestyMoment(HonestyMoment(kind = HonestyKind.VOLUNTEERED_TRUTH, text = "Told me about the message", timing = HonestyTiming.SHARE_NOW)))
        val blakeRound = blake.round()
        check("Blake's round pushed everything (${blakeRound.pushed} batches)",
            blakeRound.finished && blakeRound.pending == 0L && blakeRound.pushed >= 1)

        // Together again.
        val alexRound = alex.round()
        check("Alex's round says what it brought (${alexRound.pulled} chunks, ${alexRound.changed} records)",
            alexRound.finished && alexRound.pulled >= 1 && alexRound.changed >= 1 && alexRound.problems.isEmpty())
        blake.round()
        check("Alex's subscription heard of Blake's answer", waitFor(5) { first.saw(answer) })
        check("Blake's subscription heard of Alex's note", waitFor(5) { heardByBlake.saw(note) })
        check("the status stream heard a finished round", waitFor(5) { statuses.seen.any { it.online && it.lastSynced != null } })
        val alexAll = everything(alex)
        check("both timelines are equal (${alexAll.size} records)", alexAll == everything(blake) && alexAll.size == 10)
        check("the answer closed one question; the other is put off",
            alex.openQuestions().map { it.question.id to (it.question.body as RecordBody.Question).value.status } ==
                listOf(later to QuestionStatus.NOT_NOW))
        check("the question's thread holds the answer", alex.thread(question).answers.map { it.id } == listOf(answer))
        val status = alex.boundaryStatus().single { it.boundary.id == boundary }
        check("consent to the old wording does not count", status.state == BoundaryState.PENDING)
        val ledger = (alex.get(commitment).body as RecordBody.Commitment).value
        check("claim and confirmation both kept", ledger.claims.single().status == ClaimStatus.DONE &&
            ledger.views.single().view == PartnerView.CONFIRMED)
        check("Blake reads the response to the need",
            (blake.get(need).body as RecordBody.Need).value.response?.kind == NeedResponseKind.LETS_TALK)
        check("Blake reads the shared note", (blake.get(private).body as RecordBody.ProcessingNote).value.text == "What I am working on")
        check("Blake reads Alex's check-in", (blake.get(checkIn).body as RecordBody.CheckIn).value.safety == 4)
        val week = alex.progress(today, today).weeks.single()
        check("progress counts the week", week.checkIns.count == 1 && week.honestyMoments == 1)

        // Paging: three at a time until the cursor runs out, the same records in the same order.
        val pages = mutableListOf<JournalRecord>()
        var cursor: String? = null
        do {
            val page = alex.timeline(TimelineQuery(limit = 3, cursor = cursor))
            pages += page.items
            cursor = page.nextCursor
        } while (cursor != null)
        check("paging three at a time reads the whole timeline", pages.map { it.id } == alexAll.map { it.id })

        val packet = alex.export(PacketOptions(fromDate = today, toDate = today), ExportFormat.MARKDOWN)
        check("the packet renders", packet.contains("Honesty moment"))
        alex.setCalendar("UTC", "monday")
        check("today knows who has checked in", !alex.waitingToday().checkInDue && blake.waitingToday().checkInDue)
        check("no conflict on the boundary", alex.conflicts(boundary).isEmpty())
        check("stored names have words", valueLabel(RecordKind.QUESTION, "status", "not_now")?.text == "Not now")

        // Typed errors with messages that read well and stable codes.
        try {
            alex.claim(commitment, today, ClaimStatus.DONE)
            check("claiming the partner's commitment is refused", false)
        } catch (e: MendException.PermissionDenied) {
            check("claiming the partner's commitment is refused: \"${e.message}\" (${e.code})",
                e.message == "not allowed: only the commitment's owner can claim its follow-through" && e.code == "permission_denied")
        }
        try {
            blake.remove(note)
            check("removing the partner's note is refused", false)
        } catch (e: MendException) {
            check("removing the partner's note is refused (${e.code})", e is MendException.PermissionDenied)
        }
        try {
            Joining.start("not an invite", "X", null, JournalOptions())
            check("a bad invite is refused", false)
        } catch (e: MendException.Invite) {
            check("a bad invite is refused: \"${e.message}\"",
                e.message == "this is not a Mend invite (it should start with MEND4-, or be a number and two words)")
        }
        try {
            Journal.open(File(dir, "gone.db").path, alexSecret, JournalOptions())
            check("a missing database is refused", false)
        } catch (e: MendException.Missing) {
            check("a missing database is refused as ${e.code}", e.code == "missing")
        }

        // Live: Blake's write reaches Alex's subscription without a sync call.
        alex.startLive()
        blake.startLive()
        check("live sync runs", alex.isLive() && blake.isLive())
        val share = blake.add(RecordBody.Share(Share(feeling = "Dinner felt easier tonight")))
        check("live sync brings Blake's share to Alex", waitFor(10) { first.saw(share) })
        alex.stopLive()
        blake.stopLive()
        check("live sync stops", !alex.isLive() && !blake.isLive())
        blake.round()

        // Relaunch: shut down (live sync stopped, the file released), then open with the kept secret.
        alex.startLive()
        alex.shutdown()
        check("shutdown stops live sync", !alex.isLive())
        try {
            alex.get(share)
            check("a shut-down journal refuses calls", false)
        } catch (e: MendException.Closed) {
            check("a shut-down journal refuses calls (${e.code})", true)
        }
        alex.close()
        alex = Journal.open(alexPath, alexSecret, JournalOptions())
        check("reopened with the kept secret", alex.get(share).id == share && alex.get(moment).id == moment)

        // Reinstall: Blake's database is gone, the secret kept in Keystore is not.
        blake.shutdown()
        blake.close()
        removeDatabase(blakePath)
        blake = Journal.restore(blakePath, blakeSecret, 20_000, JournalOptions())
        check("restored from the keyring alone", everything(blake).map { it.id } == everything(alex).map { it.id })
        check("restored as the same partner", blake.me() == alex.get(moment).author)
        blake = rejoinStory(alex, blake, File(dir, "blake-new.db").path, relay, pin)

        listOf(firstSub, secondSub, throwerSub, statusSub, blakeSub).forEach { it.close() }
        alex.shutdown()
        blake.shutdown()
        alex.close()
        blake.close()

        // A background window on a relay that answers slowly (the delaying proxy).
        val caseyPath = File(dir, "casey.db").path
        var casey = Journal.create(caseyPath, "Casey", slowRelay, JournalOptions(relayPin = pin))
        val caseySecret = casey.keyringSecret()
        val written = (0 until 3).map { casey.add(RecordBody.Share(Share(feeling = "evening $it"))) }.toMutableList()

        // Every answer 1.5 s late: a fresh round needs several, so the deadline comes first.
        proxy("delay 1500")
        var started = System.nanoTime()
        val cut = casey.syncNow(deadlineMs = 2_000)
        val took = (System.nanoTime() - started) / 1_000_000
        check("a round on a slow relay ends at its 2000 ms deadline ($took ms)",
            !cut.finished && cut.status.syncing && took in 1_800L..2_200L)

        // Cancelled mid-round, as WorkManager stops a worker.
        proxy("delay 600")
        written += casey.add(RecordBody.Share(Share(feeling = "written before the window closed")))
        val round = async { casey.syncNow(deadlineMs = 120_000) }
        delay(1_500)
        check("the round was still running when cancelled", round.isActive)
        round.cancel()
        try {
            round.await()
            check("a cancelled round throws CancellationException", false)
        } catch (e: CancellationException) {
            check("a cancelled round throws CancellationException", true)
        }
        // A round still running would hold the journal: shutdown would wait and fail with `locked`.
        started = System.nanoTime()
        casey.shutdown()
        check("the cancelled round let go of the journal (shutdown took ${(System.nanoTime() - started) / 1_000_000} ms)", true)
        check("the cancelled round's connections are closed", waitFor(10) { proxy("open") == "0" })
        casey.close()

        // Stopped from outside (Swift's onCancel, a BGTask's expiration handler): it says what it did.
        casey = Journal.open(caseyPath, caseySecret, JournalOptions())
        val stopped = async { casey.syncNow(deadlineMs = 120_000) }
        delay(1_000)
        casey.cancelSync()
        val report = stopped.await()
        check("cancelSync ends a round with its report", !report.finished && report.status.syncing)

        // The next round, in a later window, completes and loses nothing.
        proxy("delay 0")
        val next = casey.syncNow(deadlineMs = 20_000)
        check("the next round completes (${next.pushed} batches pushed)",
            next.finished && next.pending == 0L && next.problems.isEmpty())
        val tablet = pairTablet(casey, File(dir, "casey-tablet.db").path)
        tablet.syncNow(deadlineMs = 20_000)
        check("another device reads everything written before the cut",
            everything(tablet).map { it.id }.sorted() == written.sorted())
        casey.shutdown()
        tablet.shutdown()
        casey.close()
        tablet.close()
    }

    println("kotlin story: $passed passed, $failed failed")
    exitProcess(if (failed == 0) 0 else 1)
}
