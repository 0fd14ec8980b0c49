#!/usr/bin/env bash
# Load benchmark of wa-gateway across storage backends and replica counts: builds release, then
# runs the same load (open loop, RATE msg/s for DURATION; or closed loop, CONCURRENCY webhooks
# in flight, when CONCURRENCY is set) against
#   (a) one replica on SQLite (as examples/bench.sh),
#   (b) one replica on PostgreSQL,
#   (c) three replicas on PostgreSQL (the bench posts to them in turn),
# back to back, printing each report. Each scenario starts fresh gateways (a new SQLite file, or
# the database of WA_BENCH_PG dropped and recreated) and stops them with SIGTERM at its end.
# The PostgreSQL scenarios also report the round trips per message (`--pg-stats`), which needs
# pg_stat_statements loaded by the server (README, "Scaling out"); the report says so if not.
# The per-replica configs are examples/bench.yaml with its ports and storage.url rewritten.
# Usage: examples/bench-cluster.sh [extra bench flags, e.g. --json]
# Env: RATE (2000), CONCURRENCY (unset: open loop), DURATION (20s), CUSTOMERS (20000),
#      WA_GATEWAY_BIN (a built binary to use instead of building one), SERVE_BIN (a binary for
#      the gateways only, e.g. an older build, measured by the same bench),
#      SCENARIOS ("a b c": which to run), PORT_OFFSET (0: added to every port, so that two
#      benches on one machine do not drive each other's gateways),
#      WA_BENCH_PG (postgres://postgres:postgres@127.0.0.1:5432/wa_bench; its database is dropped!)
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=examples/bench-env.sh
source examples/bench-env.sh
SCENARIOS="${SCENARIOS:-a b c}"
WA_BENCH_PG="${WA_BENCH_PG:-postgres://postgres:postgres@127.0.0.1:5432/wa_bench}"
extra=("$@")

# The database the PostgreSQL scenarios own, and the server's maintenance database to drop it from.
pg_db="${WA_BENCH_PG##*/}"
pg_db="${pg_db%%\?*}"
pg_admin="${WA_BENCH_PG%/*}/postgres"
case "$pg_db" in
    "" | postgres | template0 | template1)
        echo "WA_BENCH_PG must name a database of its own (it is dropped and recreated), not '$pg_db'" >&2
        exit 2 ;;
esac
if ! command -v psql >/dev/null; then
    echo "psql not found: install postgresql-client (it drops and recreates $pg_db)" >&2
    exit 2
fi
# Before anything is built or started: a server that is down or refuses the URL's user is said
# so, with what to check (psql's own message names neither the variable nor the database).
case " $SCENARIOS " in
    *" b "* | *" c "*)
        if ! pg_error="$(psql -q -At "$pg_admin" -c "SELECT 1" 2>&1 >/dev/null)"; then
            echo "cannot connect to the PostgreSQL server of WA_BENCH_PG (its 'postgres' database):" >&2
            echo "  $pg_error" >&2
            echo "start the server and check the URL's user and password" \
                "(default: postgres://postgres:postgres@127.0.0.1:5432/wa_bench)" >&2
            exit 2
        fi ;;
esac

if [ -z "${WA_GATEWAY_BIN:-}" ]; then
    cargo build --release --quiet
fi
# A private copy: a concurrent build in a shared target dir must not swap the binary mid-run.
work="$(mktemp -d)"
cp "${WA_GATEWAY_BIN:-${CARGO_TARGET_DIR:-target}/release/wa-gateway}" "$work/wa-gateway"
bin="$work/wa-gateway"
# The gateways run $serve_bin, the bench $bin: with SERVE_BIN (an older build, say) the same
# bench measures another gateway.
serve_bin="$bin"
if [ -n "${SERVE_BIN:-}" ]; then
    cp "$SERVE_BIN" "$work/wa-gateway-serve"
    serve_bin="$work/wa-gateway-serve"
fi

PORT_OFFSET="${PORT_OFFSET:-0}"
webhook_port=$((18080 + PORT_OFFSET))
admin_port=$((19090 + PORT_OFFSET))
emulator_port=$((18089 + PORT_OFFSET))
for port in "$webhook_port" "$admin_port" "$emulator_port"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "port $port is in use (another bench?); set PORT_OFFSET to run beside it" >&2
        exit 2
    fi
done

# Writes replica $1's config for storage URL $2 to $work/replica-$1.yaml: webhook port
# webhook_port+$1, admin port admin_port+$1 (the emulator stays at emulator_port, so at most 9
# replicas).
write_config() {
    local i="$1" out="$work/replica-$1.yaml"
    local url
    url="$(printf '%s' "$2" | sed 's/[&|\\]/\\&/g')"
    sed -e "s|127\.0\.0\.1:18080|127.0.0.1:$((webhook_port + i))|g" \
        -e "s|127\.0\.0\.1:19090|127.0.0.1:$((admin_port + i))|g" \
        -e "s|127\.0\.0\.1:18089|127.0.0.1:$emulator_port|g" \
        -e "s|^\(  url: \)sqlite://data/bench\.db\$|\1$url|" \
        examples/bench.yaml >"$out"
    # examples/bench.yaml may change under us: make sure every rewrite took.
    if ! grep -qF "public_url: http://127.0.0.1:$((webhook_port + i))/webhook" "$out" ||
        ! grep -qF "admin: 127.0.0.1:$((admin_port + i))" "$out" ||
        ! grep -qF "graph_url: http://127.0.0.1:$emulator_port" "$out" ||
        ! grep -qF "  url: $2" "$out"; then
        echo "cannot derive replica $i's config from examples/bench.yaml (ports or storage.url moved?)" >&2
        exit 2
    fi
}

pids=()
stop_gateways() {
    local pid
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    pids=()
}
# The binary copies go when the script ends, however it ends (about 170 MB each); the logs
# stay in $work. Stopping twice is harmless.
trap 'stop_gateways; rm -f "$work"/wa-gateway "$work"/wa-gateway-serve' EXIT

# Starts $1 replicas on storage URL $2 (logs under $work/$3-N.log) and waits until each is ready.
start_gateways() {
    local n="$1" url="$2" name="$3" i
    for ((i = 0; i < n; i++)); do
        write_config "$i" "$url"
        WA_GATEWAY_REPLICA_ID="bench-$i" "$serve_bin" serve --config "$work/replica-$i.yaml" \
            >"$work/$name-$i.log" 2>&1 &
        pids+=($!)
    done
    for ((i = 0; i < n; i++)); do
        for _ in $(seq 300); do
            if curl -fsS "http://127.0.0.1:$((admin_port + i))/readyz" >/dev/null 2>&1; then continue 2; fi
            if ! kill -0 "${pids[$i]}" 2>/dev/null; then break; fi
            sleep 0.1
        done
        echo "replica $i did not become ready:" >&2
        cat "$work/$name-$i.log" >&2
        exit 1
    done
}

reset_pg() {
    PGOPTIONS="-c client_min_messages=warning" psql -q -v ON_ERROR_STOP=1 "$pg_admin" \
        -c "DROP DATABASE IF EXISTS \"$pg_db\" WITH (FORCE)" \
        -c "CREATE DATABASE \"$pg_db\""
}

status=0
if [ -n "${CONCURRENCY:-}" ]; then
    load=(--concurrency "$CONCURRENCY")
    load_title="closed loop, $CONCURRENCY in flight"
else
    load=(--rate "$RATE")
    load_title="open loop $RATE msg/s"
fi

# Runs scenario $1 (a title) with $2 replicas on storage URL $3, logs named $4.
scenario() {
    local title="$1" n="$2" url="$3" name="$4" i
    local flags=()
    start_gateways "$n" "$url" "$name"
    for ((i = 0; i < n; i++)); do
        flags+=(--target "http://127.0.0.1:$((webhook_port + i))/webhook" --gateway-pid "${pids[$i]}")
    done
    if [[ "$url" == postgres* ]]; then
        flags+=(--pg-stats "$url")
    fi
    echo "== $title: $load_title for $DURATION"
    "$bin" bench --config "$work/replica-0.yaml" "${flags[@]}" "${load[@]}" --duration "$DURATION" \
        --customers "$CUSTOMERS" "${extra[@]}" || status=1
    stop_gateways
    for ((i = 0; i < n; i++)); do
        echo "   log $work/$name-$i.log ($(grep -c '"level":"ERROR"' "$work/$name-$i.log" || true) errors)"
    done
    echo
}

if [[ " $SCENARIOS " == *" a "* ]]; then
    mkdir -p data
    rm -f data/bench.db data/bench.db-wal data/bench.db-shm
    scenario "(a) 1 replica, SQLite" 1 "sqlite://data/bench.db" sqlite
fi
if [[ " $SCENARIOS " == *" b "* ]]; then
    reset_pg
    scenario "(b) 1 replica, PostgreSQL" 1 "$WA_BENCH_PG" pg1
fi
if [[ " $SCENARIOS " == *" c "* ]]; then
    reset_pg
    scenario "(c) 3 replicas, PostgreSQL" 3 "$WA_BENCH_PG" pg3
fi

exit "$status"
