#!/usr/bin/env bash
# Tests the generated bindings end to end: builds mend-ffi and the relay, generates the
# bindings (scripts/bindings.sh), starts a real mend-relay with TLS on 127.0.0.1 (a free port,
# a temp data dir, a self-signed certificate made by openssl and trusted by its pin) and a
# delaying proxy in front of it, runs the two-partner story in Kotlin (kotlinc on the JVM, with
# JNA) and in Python, and stops them.
#
# Installs what it needs when missing, quietly and without questions (CI=true, no stdin):
#   kotlinc   npm package `kotlin-compiler` into $MEND_TOOLS_DIR (default ~/.cache/mend-tools);
#             its lib/ also has kotlin-stdlib.jar and kotlinx-coroutines-core-jvm.jar
#   JNA       Debian's libjna-java (/usr/share/java/jna.jar)
#   java      Debian's default-jre-headless
#   npm       Debian's npm, only when it is missing (it installs kotlinc)
#   openssl   Debian's openssl (the relay's test certificate)
# Honours CARGO_TARGET_DIR (default: the workspace's target/).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
tools="${MEND_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mend-tools}"
kotlin_version="2.4.20"
jna_jar=/usr/share/java/jna.jar
out="$root/bindings/out"

step() { printf '\n==> %s\n' "$*"; }
die() { echo "test-bindings: $*" >&2; exit 1; }

# --- tools -----------------------------------------------------------------------------------

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; elif command -v sudo >/dev/null; then sudo -n "$@"; else
    die "need root to install Debian packages ($*)"; fi
}

apt_install() {
  local log; log="$(mktemp)"
  # The package lists may be missing or stale on a fresh machine: update once and retry.
  if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" \
      </dev/null >"$log" 2>&1; then
    as_root apt-get update -qq </dev/null >>"$log" 2>&1 || true
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" \
      </dev/null >>"$log" 2>&1 || { cat "$log" >&2; rm -f "$log"; die "apt-get install $* failed"; }
  fi
  rm -f "$log"
}

# The npm package's own directory: bin/kotlinc and the jars in lib/.
kotlin_home() {
  local candidate
  for candidate in "${KOTLIN_HOME:-}" "$tools/kotlin/node_modules/kotlin-compiler" \
      "$(npm root -g 2>/dev/null || true)/kotlin-compiler"; do
    if [[ -n "$candidate" && -x "$candidate/bin/kotlinc" \
        && -f "$candidate/lib/kotlinx-coroutines-core-jvm.jar" ]]; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

ensure_tools() {
  command -v python3 >/dev/null || die "python3 is missing"
  command -v java >/dev/null || { echo "installing a Java runtime (Debian)"; apt_install default-jre-headless; }
  [[ -f "$jna_jar" ]] || { echo "installing JNA (Debian libjna-java)"; apt_install libjna-java; }
  if ! kotlin_home >/dev/null; then
    command -v npm >/dev/null || { echo "installing npm (Debian)"; apt_install npm; }
    echo "installing kotlinc (npm kotlin-compiler@$kotlin_version) into $tools/kotlin"
    mkdir -p "$tools/kotlin"
    npm install --prefix "$tools/kotlin" --no-audit --no-fund --no-progress --loglevel=error \
      "kotlin-compiler@$kotlin_version" </dev/null >/dev/null 2>&1 \
      || die "npm install kotlin-compiler failed"
  fi
  kotlin_home >/dev/null || die "kotlinc is not usable after installing it"
}

# --- relay -----------------------------------------------------------------------------------

work=""
relay_pid=""
relay_addr=""
proxy_pid=""
cleanup() {
  if [[ -n "$proxy_pid" ]] && kill -0 "$proxy_pid" 2>/dev/null; then
    kill "$proxy_pid" 2>/dev/null || true
  fi
  if [[ -n "$relay_pid" ]] && kill -0 "$relay_pid" 2>/dev/null; then
    kill "$relay_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$relay_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$relay_pid" 2>/dev/null || true
  fi
  [[ -n "$work" ]] && rm -rf "$work"
  return 0
}
trap cleanup EXIT

# A self-signed certificate made for this run: the stories trust the relay by its pin, as an
# app trusts a self-hosted relay.
make_certificate() {
  command -v openssl >/dev/null || { echo "installing openssl (Debian)"; apt_install openssl; }
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
    -keyout "$work/relay-key.pem" -out "$work/relay-cert.pem" >/dev/null 2>&1 \
    || die "openssl could not make a test certificate"
  MEND_RELAY_PIN="$("$CARGO_TARGET_DIR/debug/mend-relay" pin --tls-cert "$work/relay-cert.pem")"
  export MEND_RELAY_PIN
}

start_relay() {
  # Port 0: the relay binds a free port and logs it; no race with another test.
  env -u RUST_LOG "$CARGO_TARGET_DIR/debug/mend-relay" --listen 127.0.0.1:0 \
    --tls-cert "$work/relay-cert.pem" --tls-key "$work/relay-key.pem" \
    --data-dir "$work/relay" --log-format json --log info \
    --pairing-opens-per-minute 60 --pairing-claims-per-minute 60 >"$work/relay.log" 2>&1 &
  relay_pid=$!
  local addr=""
  for _ in $(seq 100); do
    addr="$(sed -n 's/.*"message":"listening with TLS".*"addr":"\([0-9.:]*\)".*/\1/p' "$work/relay.log" | head -n1)"
    [[ -n "$addr" ]] && break
    kill -0 "$relay_pid" 2>/dev/null || { cat "$work/relay.log" >&2; die "the relay exited"; }
    sleep 0.1
  done
  [[ -n "$addr" ]] || { cat "$work/relay.log" >&2; die "the relay did not start within 10 s"; }
  relay_addr="$addr"
  export MEND_RELAY_URL="https://$addr"
  echo "relay at $MEND_RELAY_URL (pin $MEND_RELAY_PIN)"
}

# The delaying proxy (bindings/python/delay_proxy.py) in front of the relay: the stories hold
# its answers back to cut a round at its deadline and to cancel one mid-way.
start_proxy() {
  python3 -u bindings/python/delay_proxy.py "$relay_addr" >"$work/proxy.out" 2>&1 &
  proxy_pid=$!
  local ports=""
  for _ in $(seq 100); do
    ports="$(sed -n 's/^proxy \([0-9]*\) \([0-9]*\)$/\1 \2/p' "$work/proxy.out" | head -n1)"
    [[ -n "$ports" ]] && break
    kill -0 "$proxy_pid" 2>/dev/null || { cat "$work/proxy.out" >&2; die "the proxy exited"; }
    sleep 0.1
  done
  [[ -n "$ports" ]] || die "the proxy did not start within 10 s"
  export MEND_PROXY_URL="https://127.0.0.1:${ports%% *}"
  export MEND_PROXY_CONTROL="127.0.0.1:${ports##* }"
  echo "delaying proxy at $MEND_PROXY_URL (control $MEND_PROXY_CONTROL)"
}

# --- run -------------------------------------------------------------------------------------

step "tools (kotlinc, JNA, java)"
ensure_tools
khome="$(kotlin_home)"
echo "kotlinc: $khome/bin/kotlinc"

step "build the relay and mend-ffi, generate the bindings"
cargo build --locked --quiet -p mend-relay
scripts/bindings.sh

step "compile the Kotlin story"
classpath="$jna_jar:$khome/lib/kotlinx-coroutines-core-jvm.jar"
kotlin_sources=("$out/kotlin/app/mend/core/mend.kt" bindings/kotlin/MendErrors.kt bindings/kotlin/Story.kt)
jar="$out/kotlin-build/story.jar"
stamp="$out/kotlin-build/inputs.sha256"
inputs_sum="$(cat "${kotlin_sources[@]}" | sha256sum | cut -d' ' -f1)"
if [[ -f "$jar" && -f "$stamp" && "$(cat "$stamp")" == "$inputs_sum" ]]; then
  echo "unchanged since the last compile"
else
  mkdir -p "$out/kotlin-build"
  rm -f "$jar" "$stamp"
  timeout 600 "$khome/bin/kotlinc" -nowarn -cp "$classpath" "${kotlin_sources[@]}" -d "$jar"
  echo "$inputs_sum" >"$stamp"
fi

work="$(mktemp -d)"
step "start a TLS relay and a delaying proxy on 127.0.0.1"
make_certificate
start_relay
start_proxy

step "Kotlin story (JVM + JNA)"
timeout 180 java -Djna.library.path="$CARGO_TARGET_DIR/debug" \
  -cp "$jar:$classpath:$khome/lib/kotlin-stdlib.jar" app.mend.story.StoryKt "$work/kotlin" </dev/null

step "Python story"
PYTHONPATH="$out/python" timeout 120 python3 bindings/python/story.py "$work/python" </dev/null

step "stop the relay and the proxy"
cleanup
relay_pid=""
proxy_pid=""
work=""
echo "bindings: Kotlin and Python stories passed"
