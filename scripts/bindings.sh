#!/usr/bin/env bash
# Builds mend-ffi and generates its Kotlin, Swift (with C header and modulemap) and Python
# bindings into bindings/out/, then syntax-checks the Swift header with gcc (no Swift compiler
# exists on the Linux machines; see DESIGN §6) and checks that no generated Swift type name
# clashes with a system type (bindings/swift/reserved-names.txt).
#
#   scripts/bindings.sh            debug build
#   scripts/bindings.sh --release  release build (what apps ship; docs/mobile.md)
#
# Honours CARGO_TARGET_DIR (default: the workspace's target/). Prints the output paths.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

profile=debug
cargo_profile=()
case "${1:-}" in
  --release) profile=release; cargo_profile=(--release) ;;
  "") ;;
  *) echo "usage: $0 [--release]" >&2; exit 2 ;;
esac

target="${CARGO_TARGET_DIR:-$root/target}"
out="$root/bindings/out"

# One cargo invocation for both packages, so uniffi is compiled once with one feature set
# (a separate `cargo run` of the generator would rebuild it with other features).
cargo build --locked --quiet "${cargo_profile[@]}" -p mend-ffi -p uniffi-bindgen

case "$(uname -s)" in
  Darwin) lib="$target/$profile/libmend_ffi.dylib" ;;
  *) lib="$target/$profile/libmend_ffi.so" ;;
esac
bindgen="$target/$profile/uniffi-bindgen"
[[ -f "$lib" ]] || { echo "bindings.sh: $lib was not built" >&2; exit 1; }

rm -rf "$out/kotlin" "$out/swift" "$out/python"
for language in kotlin swift python; do
  # Run the built binary, not `cargo run` (see above). Names come from bindings/uniffi.toml.
  "$bindgen" generate "$lib" --language "$language" --out-dir "$out/$language" --no-format >/dev/null
done

# Python loads the library from next to its module.
cp "$lib" "$out/python/"

# The Swift header must at least be valid C: nullability qualifiers are clang-only.
header="$out/swift/MendFFI.h"
[[ -f "$header" ]] || { echo "bindings.sh: no Swift header at $header" >&2; exit 1; }
echo '#include "MendFFI.h"' |
  gcc -fsyntax-only -Wall -Werror -D_Nullable= -D_Nonnull= -x c -I "$out/swift" -
[[ -f "$out/swift/MendFFI.modulemap" ]] || { echo "bindings.sh: no modulemap" >&2; exit 1; }

# No generated Swift type may shadow a Foundation, SwiftUI, Combine or os type an app uses.
swift="$out/swift/MendCore.swift"
clashes="$(grep -oE '^(public |open )?(final )?(struct|enum|class|protocol|typealias|actor) [A-Za-z_][A-Za-z0-9_]*' "$swift" |
  awk '{print $NF}' | sort -u |
  comm -12 - <(grep -vE '^(#|$)' bindings/swift/reserved-names.txt | sort -u))"
[[ -z "$clashes" ]] || { echo "bindings.sh: generated Swift types clash with system types:" $clashes >&2; exit 1; }
# The Swift extension the package ships beside the generated file (LocalizedError, codes).
# No Swift compiler runs here; it compiles with the package on a Mac.
cp "bindings/swift/MendError+LocalizedError.swift" "$out/swift/"

echo "library: $lib"
echo "kotlin:  $out/kotlin"
echo "swift:   $out/swift (MendCore.swift, MendError+LocalizedError.swift, MendFFI.h, MendFFI.modulemap;"
echo "         header checked with gcc, type names checked against bindings/swift/reserved-names.txt)"
echo "python:  $out/python"
