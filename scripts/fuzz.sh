#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time each.
#
#   scripts/fuzz.sh [seconds-per-target] [target...]
#
# Needs a nightly toolchain (libFuzzer and the sanitizers are nightly-only); where
# there is none it says so and exits 0. Installs cargo-fuzz if it is missing.
# Crashes are written to fuzz/artifacts/<target>/ and make the script exit 1;
# the corpus grows in fuzz/corpus/<target>/ (both git-ignored).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds="${1:-60}"
shift || true

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    echo "fuzz.sh: no nightly toolchain (rustup toolchain install nightly); skipping the fuzz targets"
    exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
failed=()
for t in "${targets[@]}"; do
    echo "== $t (${seconds}s)"
    mkdir -p "corpus/$t"
    set +e
    cargo +nightly fuzz run "$t" "corpus/$t" -- -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1
    rc=$?
    set -e
    grep -E '^(stat::number_of_executed_units|stat::new_units_added|SUMMARY|Done |.*panicked at)' "$log" || true
    if [ "$rc" -ne 0 ]; then
        tail -n 40 "$log"
        failed+=("$t")
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz.sh: crashes in ${failed[*]} (see fuzz/artifacts/)"
    exit 1
fi
echo "fuzz.sh: ${#targets[@]} targets, ${seconds}s each, no crash"
