#!/usr/bin/env bash
# The therapist packet in a real browser: headless Chromium loads the HTML with no console
# errors, the chart's week labels are in the DOM, a screenshot is written for people to look
# at, and a PDF printed from it has the charts on its first pages.
# Installs chromium and poppler-utils (pdftotext) from Debian when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null || ! command -v pdftotext >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium poppler-utils
fi

out="${PACKET_OUT:-target/packet-browser}"
mkdir -p "$out"
cargo run -q -p mend-core --example packet -- "$out/packet.html" "$out/packet.md"
page="file://$(realpath "$out/packet.html")"

# Bounded: a loaded two-core machine gets a generous limit, never a hang.
browse() {
    timeout 120 chromium --headless --no-sandbox --disable-gpu --disable-dev-shm-usage \
        --no-first-run --no-default-browser-check --hide-scrollbars \
        --user-data-dir="$out/profile" --enable-logging=stderr --v=0 "$@"
}

browse --dump-dom "$page" >"$out/dom.html" 2>"$out/dom.log"
labels=$(grep -o 'class="week-label"' "$out/dom.html" | wc -l)
if [ "$labels" -lt 2 ]; then
    echo "packet: expected the chart's week labels in the DOM, found $labels" >&2
    exit 1
fi
grep -q '>12 Oct</text>' "$out/dom.html" || { echo "packet: first week label missing" >&2; exit 1; }
if grep -E 'CONSOLE|Uncaught' "$out/dom.log"; then
    echo "packet: the page logged to the console" >&2
    exit 1
fi

browse --screenshot="$out/packet.png" --window-size=1200,1800 "$page" 2>"$out/screenshot.log"
test -s "$out/packet.png" || { echo "packet: no screenshot" >&2; exit 1; }

browse --print-to-pdf="$out/packet.pdf" --no-pdf-header-footer "$page" 2>"$out/pdf.log"
first_pages=$(pdftotext -f 1 -l 2 "$out/packet.pdf" -)
for want in "Check-in scores per week" "Commitments kept per week" "12 Oct" "Week starting"; do
    if ! grep -qF "$want" <<<"$first_pages"; then
        echo "packet: \"$want\" is not on the PDF's first pages" >&2
        exit 1
    fi
done
echo "packet: browser checks passed; screenshot at $out/packet.png, PDF at $out/packet.pdf"
