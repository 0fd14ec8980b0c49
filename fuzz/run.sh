#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60), one after the other, on nightly:
#   fuzz/run.sh 600             every target
#   fuzz/run.sh 600 config      only the ones named
# Seeds the corpora first when they are empty (fuzz/seed.sh). A crash ends that target's run and
# leaves its input under fuzz/artifacts/TARGET/ (turn it into a regression test, then fix it);
# the other targets still run, and the script exits 1 at the end.
# Needs `cargo install cargo-fuzz` and the nightly toolchain. Not part of CI.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"
targets=(webhook config reply optout)
if [ $# -gt 1 ]; then
    targets=("${@:2}")
fi
failed=()
if [ -z "$(ls -A corpus/webhook 2>/dev/null)" ]; then
    ./seed.sh
fi
for t in "${targets[@]}"; do
    echo "== $t: ${seconds}s"
    # -rss_limit_mb: a config or body that makes the gateway's parsers allocate without bound
    # is a finding too.
    cargo +nightly fuzz run "$t" "corpus/$t" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
        2>&1 | tee "logs-$t.txt" | grep -E '^(#[0-9]+.*(DONE|pulse)|stat::|==[0-9]+==|SUMMARY|Done)' || true
    if grep -qE 'ERROR: libFuzzer|panicked|deadly signal|SUMMARY: ' "logs-$t.txt"; then
        echo "!! $t found a crash: see fuzz/logs-$t.txt and fuzz/artifacts/$t/"
        failed+=("$t")
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "crashes in: ${failed[*]}"
    exit 1
fi
