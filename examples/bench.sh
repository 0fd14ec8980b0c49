#!/usr/bin/env bash
# Load benchmark of wa-gateway: builds release, starts the gateway on a fresh SQLite file with
# examples/bench.yaml, runs an open-loop (2,000 msg/s) and a closed-loop (64 in flight) scenario
# with `wa-gateway bench`, stops the gateway and prints both reports.
# INGRESS_ONLY=1 declares both numbers `enabled: false`: every webhook is verified, parsed and
# committed durably before its 200, but no agent turn or reply follows (the ingress capacity).
# FLOOR=1 runs examples/http_floor.rs in the gateway's place: the same HTTP work a message (its
# webhook and two status webhooks verified and parsed, mark-read and the reply sent) with the
# gateway's own stacks and nothing else, the floor under the gateway's cost per message.
# Each report ends with the disk's own fsync latency during the load (--disk-probe): every
# durable ack waits for an fsync, so a slow disk shows there, not only in the ack tail.
# Usage: examples/bench.sh [extra bench flags, e.g. --json or --messages-per-webhook 2]
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=examples/bench-env.sh
source examples/bench-env.sh
CONCURRENCY="${CONCURRENCY:-64}"

cargo build --release --quiet
bin="${CARGO_TARGET_DIR:-target}/release/wa-gateway"
# A private copy: a concurrent build in a shared target dir must not swap the binary mid-run.
work="$(mktemp -d)"
cp "$bin" "$work/wa-gateway"
bin="$work/wa-gateway"
serve=("$bin" serve --config)
if [ -n "${FLOOR:-}" ]; then
    cargo build --release --quiet --example http_floor
    cp "${CARGO_TARGET_DIR:-target}/release/examples/http_floor" "$work/http_floor"
    serve=("$work/http_floor")
fi

config=examples/bench.yaml
if [ -n "${INGRESS_ONLY:-}" ]; then
    config="$work/bench-ingress.yaml"
    sed 's/^    agent: echo$/&\n    enabled: false/' examples/bench.yaml >"$config"
fi

mkdir -p data
rm -f data/bench.db data/bench.db-wal data/bench.db-shm
# The build's output is still being written back: let it land before the disk is measured.
sync
"${serve[@]}" "$config" >"$work/gateway.log" 2>&1 &
gateway=$!
stop_gateway() {
    if kill -0 "$gateway" 2>/dev/null; then
        kill -TERM "$gateway"
        wait "$gateway" || true
    fi
}
# The binary copies go when the script ends, however it ends (about 170 MB each); the logs
# stay in $work. Stopping twice is harmless.
trap 'stop_gateway; rm -f "$work"/wa-gateway "$work"/http_floor' EXIT

# Ready when the admin listener says so.
for _ in $(seq 100); do
    if curl -fsS http://127.0.0.1:19090/readyz >/dev/null 2>&1; then break; fi
    if ! kill -0 "$gateway" 2>/dev/null; then cat "$work/gateway.log"; exit 1; fi
    sleep 0.1
done

status=0
echo "== open loop: $RATE msg/s for $DURATION"
"$bin" bench --config "$config" --rate "$RATE" --duration "$DURATION" --customers "$CUSTOMERS" \
    --gateway-pid "$gateway" --disk-probe data "$@" || status=1
echo
echo "== closed loop: $CONCURRENCY in flight for $DURATION"
"$bin" bench --config "$config" --concurrency "$CONCURRENCY" --duration "$DURATION" --customers "$CUSTOMERS" \
    --gateway-pid "$gateway" --disk-probe data "$@" || status=1

stop_gateway
echo
echo "gateway log: $work/gateway.log ($(grep -c -e '"level":"ERROR"' -e '^http_floor: ' "$work/gateway.log" || true) errors)"
exit "$status"
