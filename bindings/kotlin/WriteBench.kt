// The cost of one record write through the Kotlin bindings (JNA), for comparison with the same
// write in Rust (bindings/examples/write_cost.rs); then the last record read back as many times
// (`get`: no disk), and the bare cost of a call (`isLive`: no arguments, no lock). `add` and
// `get` are suspend calls: each is awaited from runBlocking, so the figure includes the hop to
// the bindings' storage pool and back. Run by scripts/bench-bindings.sh.

package app.mend.story

import app.mend.core.*
import java.io.File
import kotlinx.coroutines.runBlocking

/** Warm-up calls before each measurement, so the JIT has compiled the path (same in Rust). */
const val WARMUP = 2000

fun main(args: Array<String>) = runBlocking {
    val dir = File(args.getOrNull(0) ?: error("usage: WriteBenchKt <work dir> [writes]")).apply { mkdirs() }
    val writes = args.getOrNull(1)?.toInt() ?: 2000
    // The relay URL is never contacted: nothing here syncs.
    val journal = Journal.create(File(dir, "kotlin.db").path, "Alex", "http://127.0.0.1:9", JournalOptions())
    val micros = DoubleArray(writes)
    var last = ""
    for (n in 0 until WARMUP + writes) {
        val body = RecordBody.HonestyMoment(HonestyMoment(
            kind = HonestyKind.VOLUNTEERED_TRUTH,
            text = "Told me about the message before I asked, without being prompted ($n)",
            timing = HonestyTiming.SHARE_NOW,
        ))
        val start = System.nanoTime()
        last = journal.add(body)
        val took = (System.nanoTime() - start) / 1000.0
        if (n >= WARMUP) micros[n - WARMUP] = took
    }
    val reads = timed(writes) { runBlocking { journal.get(last) } }
    val calls = timed(writes) { journal.isLive() }
    journal.shutdown()
    journal.close()
    report("add", micros)
    report("get", reads)
    report("is_live", calls)
}

fun timed(n: Int, call: () -> Unit): DoubleArray {
    val micros = DoubleArray(n)
    for (i in 0 until WARMUP + n) {
        val start = System.nanoTime()
        call()
        val took = (System.nanoTime() - start) / 1000.0
        if (i >= WARMUP) micros[i - WARMUP] = took
    }
    return micros
}

fun report(what: String, micros: DoubleArray) {
    micros.sort()
    val at = { q: Double -> micros[Math.round((micros.size - 1) * q).toInt()] }
    println("%-20s %s n=%d p50=%.1fus p99=%.1fus mean=%.1fus".format(
        "kotlin: JNA", what, micros.size, at(0.50), at(0.99), micros.average()))
}
