#!/usr/bin/env bash
# Measures what docs/benchmarks.md "Mobile bindings" records: the stripped release cdylib's
# size, and the cost of one record write through Kotlin (JNA) against the same write in Rust.
# Run scripts/test-bindings.sh once first (it installs kotlinc and JNA).
#
#   scripts/bench-bindings.sh [writes]     (default 2000, after 2000 warm-up calls)
#
# Honours CARGO_TARGET_DIR (default: the workspace's target/).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
tools="${MEND_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mend-tools}"
khome="${KOTLIN_HOME:-$tools/kotlin/node_modules/kotlin-compiler}"
jna_jar=/usr/share/java/jna.jar
writes="${1:-2000}"
out="$root/bindings/out"

[[ -x "$khome/bin/kotlinc" && -f "$jna_jar" ]] || {
  echo "bench-bindings: run scripts/test-bindings.sh first (it installs kotlinc and JNA)" >&2; exit 1; }

# The generated Kotlin is the same for any build profile; generate it if missing.
[[ -f "$out/kotlin/app/mend/core/mend.kt" ]] || scripts/bindings.sh >/dev/null
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
stripped_bytes() { strip -o "$work/stripped.so" "$1"; stat -c %s "$work/stripped.so"; }
mib() { awk "BEGIN { printf \"%.2f\", $1 / 1048576 }"; }

# mend-ffi alone, with the profile apps ship (cargo-ndk, the XCFramework; docs/mobile.md), and
# the plain release profile for comparison.
cargo build --locked --quiet --release -p mend-ffi
bytes="$(stripped_bytes "$CARGO_TARGET_DIR/release/libmend_ffi.so")"
echo "cdylib (x86-64, stripped), profile release:        $bytes bytes ($(mib "$bytes") MiB)"
cargo build --locked --quiet --profile release-mobile -p mend-ffi
bytes="$(stripped_bytes "$CARGO_TARGET_DIR/release-mobile/libmend_ffi.so")"
echo "cdylib (x86-64, stripped), profile release-mobile: $bytes bytes ($(mib "$bytes") MiB)"

# The Rust side of the comparison: the same API through the rlib (mend-ffi-api).
cargo build --locked --quiet --profile release-mobile -p mend-ffi-api --example write_cost

classpath="$jna_jar:$khome/lib/kotlinx-coroutines-core-jvm.jar"
"$khome/bin/kotlinc" -nowarn -cp "$classpath" "$out/kotlin/app/mend/core/mend.kt" \
  bindings/kotlin/WriteBench.kt -d "$work/bench.jar"

# Three rounds, Rust and Kotlin alternating, so a busy machine weighs on both alike.
for round in 1 2 3; do
  echo "-- round $round"
  "$CARGO_TARGET_DIR/release-mobile/examples/write_cost" "$writes"
  rm -rf "$work/kotlin"
  java -Djna.library.path="$CARGO_TARGET_DIR/release-mobile" \
    -cp "$work/bench.jar:$classpath:$khome/lib/kotlin-stdlib.jar" app.mend.story.WriteBenchKt \
    "$work/kotlin" "$writes"
done
