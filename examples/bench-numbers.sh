#!/usr/bin/env bash
# Cost per declared number: builds release, writes a config with N numbers (default 10000) in
# examples/bench.yaml's shape (each number its own WABA, the echo agent, no traffic), runs the
# Cloud API emulator as a process of its own (so the gateway's memory is the gateway's alone),
# starts `serve` on a fresh SQLite file, waits until it is ready and the reconciler's first pass
# has settled (everything read, nothing left to do, every number Active), and prints:
#   validate      how long `wa-gateway validate` takes on the file
#   settled       how long from start until the first pass had settled
#   rss idle      the gateway's VmRSS (/proc/PID/status) after IDLE seconds with no traffic
#   cpu idle      the gateway's CPU time over those seconds (/proc/PID/stat), in % of one core
#   /metrics      its series count, the largest families, and `promtool check metrics`
#   reload        from writing a file that renames one number (display_name) to the new file
#                 in force (its SHA-256 in /config/status), then the name seen in /api/numbers
#   rss after     VmRSS and VmHWM (the peak) once the reload's own reconciler pass settled
# Usage: N=1000 examples/bench-numbers.sh   (IDLE=10 seconds; the ports below can be moved;
#        BIN=path/to/wa-gateway measures that build instead of building this tree)
# Where the heap goes (the allocation sites in the README): build without jemalloc so heaptrack
# sees every malloc (`cargo build --release --no-default-features`), run this script with
# BIN=target/release/wa-gateway while `heaptrack -p <gateway pid>` is attached, or start the same
# serve under `heaptrack`, let it settle, SIGKILL it and read `heaptrack_print --print-leaks`:
# what was never freed is what was live.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=examples/bench-env.sh
source examples/bench-env.sh
N="${N:-10000}"
# The first pass registers every number at the emulator, which wants a two-step PIN.
export WA_BENCH_PIN="${WA_BENCH_PIN:-123456}"
IDLE="${IDLE:-10}"
WEBHOOK_PORT="${WEBHOOK_PORT:-18180}"
ADMIN_PORT="${ADMIN_PORT:-19190}"
EMULATOR_PORT="${EMULATOR_PORT:-18189}"
admin="http://127.0.0.1:$ADMIN_PORT"

bin="${BIN:-}"
if [ -z "$bin" ]; then
    cargo build --release --quiet
    bin="${CARGO_TARGET_DIR:-target}/release/wa-gateway"
fi
# A private copy: a concurrent build in a shared target dir must not swap the binary mid-run.
work="$(mktemp -d)"
cp "$bin" "$work/wa-gateway"
bin="$work/wa-gateway"

now_ms() { date +%s%3N; }

# The config, in its own directory: the gateway watches the directory of its file.
mkdir -p "$work/config"
config="$work/config/gateway.yaml"
write_config() { # $1: the display name of the first number, $2: the file to write
    {
        cat <<EOF
version: 1
listen:
  webhook: 127.0.0.1:$WEBHOOK_PORT
  admin: 127.0.0.1:$ADMIN_PORT
  shutdown_delay: 0s
public_url: http://127.0.0.1:$WEBHOOK_PORT/webhook
storage:
  url: sqlite://$work/numbers.db
meta:
  graph_url: http://127.0.0.1:$EMULATOR_PORT
  api_version: v23.0
  app_id: "1000000000000001"
  app_secret: { env: WA_BENCH_APP_SECRET }
  verify_token: { env: WA_BENCH_VERIFY_TOKEN }
agents:
  echo: { kind: echo, prefix: "echo: " }
numbers:
EOF
        for i in $(seq 0 $((N - 1))); do
            name="Bench $i"
            if [ "$i" = 0 ]; then name="$1"; fi
            printf '  - phone_number_id: "%d"\n    waba_id: "%d"\n    display_name: %s\n    agent: echo\n    access_token: { env: WA_BENCH_TOKEN }\n    pin: { env: WA_BENCH_PIN }\n' \
                $((106540352200000 + i)) $((102290129300000 + i)) "$name"
        done
    } >"$2"
}
write_config "Bench 0" "$config"

start=$(now_ms)
"$bin" validate "$config" >/dev/null
echo "numbers:      $N"
echo "validate:     $(($(now_ms) - start)) ms"

"$bin" emulator --config "$config" --listen "127.0.0.1:$EMULATOR_PORT" >"$work/emulator.log" 2>&1 &
emulator=$!
started=$(now_ms)
# The reload's own line ("configuration reloaded", took_ms) is logged whatever the level.
WA_GATEWAY_LOG="$WA_GATEWAY_LOG,wa_gateway::app::reload=info" \
    "$bin" serve --config "$config" >"$work/gateway.log" 2>&1 &
gateway=$!
stop_all() {
    for pid in "$gateway" "$emulator"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid"
            wait "$pid" || true
        fi
    done
}
# The binary copies go when the script ends, however it ends (about 170 MB each); the logs
# stay in $work. Stopping twice is harmless.
trap 'stop_all; rm -f "$work"/wa-gateway' EXIT

# Settled when the reconciler's latest pass (GET /api/config) read everything, left nothing to
# do, and every number shows Active (GET /api/numbers).
settled() {
    curl -fsS "$admin/api/config" 2>/dev/null \
        | jq -e '.reconcile | . != null and .pending == 0 and .error == null and (.read_failures | length) == 0' >/dev/null 2>&1
}
active() { curl -fsS "$admin/api/numbers" 2>/dev/null | jq '[.numbers[] | select(.status == "active")] | length' 2>/dev/null || echo 0; }
until settled || [ $(($(now_ms) - started)) -gt 300000 ]; do
    if ! kill -0 "$gateway" 2>/dev/null; then cat "$work/gateway.log"; exit 1; fi
    sleep 0.2
done
if settled && [ "$(active)" = "$N" ]; then
    echo "settled:      $(($(now_ms) - started)) ms (first reconciler pass done, every number Active)"
else
    # Measured anyway, so that a build that never settles can be compared; the pass says why.
    echo "settled:      NOT within 300 s: $(curl -fsS "$admin/api/config" | jq -c '.reconcile | {pending, error, read_failures: (.read_failures | length)}'), $(active) of $N Active"
fi

rss() { awk -v k="$1:" '$1 == k { printf "%.1f MiB", $2 / 1024 }' "/proc/$gateway/status"; }

# CPU time (user + system, in clock ticks) the gateway used so far.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$gateway/stat"; }
curl -fsS "$admin/metrics" >"$work/metrics.txt"
ticks=$(cpu_ticks)
sleep "$IDLE"
echo "rss idle:     $(rss VmRSS) (after ${IDLE}s idle)"
echo "cpu idle:     $(awk -v t=$(($(cpu_ticks) - ticks)) -v hz="$(getconf CLK_TCK)" -v s="$IDLE" 'BEGIN { printf "%.1f%% of a core", 100 * t / hz / s }')"

series=$(grep -cv '^#' "$work/metrics.txt")
echo "/metrics:     $series series"
grep -v '^#' "$work/metrics.txt" | sed 's/[{ ].*//; s/_bucket$//; s/_sum$//; s/_count$//' | sort | uniq -c \
    | sort -rn | head -4 | awk '{ printf "              %7d %s\n", $1, $2 }'
if command -v promtool >/dev/null; then
    if promtool check metrics <"$work/metrics.txt" >"$work/promtool.txt" 2>&1; then
        echo "promtool:     ok"
    else
        echo "promtool:     $(wc -l <"$work/promtool.txt") findings (see $work/promtool.txt)"
        head -5 "$work/promtool.txt" | sed 's/^/              /'
    fi
else
    echo "promtool:     not installed"
fi

last_pass() { curl -fsS "$admin/api/config" | jq -r '.reconcile.finished_at'; }
before=$(last_pass)
# Rename the first number: written beside the file and moved over it, as editors do.
write_config "Bench Renamed" "$config.new"
want=$(sha256sum "$config.new" | cut -d' ' -f1)
start=$(now_ms)
mv "$config.new" "$config"
in_force() { curl -fsS "$admin/config/status" | jq -r '.sha256'; }
for _ in $(seq 1000); do
    if [ "$(in_force)" = "$want" ]; then break; fi
    sleep 0.01
done
if [ "$(in_force)" != "$want" ]; then echo "the reload was not applied"; tail -5 "$work/gateway.log"; exit 1; fi
took=$(grep '"configuration reloaded"' "$work/gateway.log" | tail -1 | jq -r '.took_ms // "?"' 2>/dev/null || echo "?")
echo "reload:       $(($(now_ms) - start)) ms (file written -> new file in force; of which the reload itself $took ms, the watcher's debounce 300 ms)"
for _ in $(seq 1000); do
    if curl -fsS "$admin/api/numbers" | grep -q '"Bench Renamed"'; then break; fi
    sleep 0.01
done
echo "              $(($(now_ms) - start)) ms (file written -> the new name in /api/numbers)"

# The reload triggers a reconciler pass; memory is read once it has settled again.
until [ "$(last_pass)" != "$before" ] && settled || [ $(($(now_ms) - start)) -gt 300000 ]; do sleep 0.2; done
sleep "$IDLE"
echo "rss after:    $(rss VmRSS) (peak $(rss VmHWM))"

stop_all
echo "gateway log:  $work/gateway.log ($(grep -c '"level":"ERROR"' "$work/gateway.log" || true) errors)"
