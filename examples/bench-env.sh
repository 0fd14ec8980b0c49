# Shared defaults of examples/bench.sh and examples/bench-cluster.sh (sourced, not run): the
# secrets examples/bench.yaml references, a quiet gateway log, and the load's shape.
export WA_BENCH_APP_SECRET="${WA_BENCH_APP_SECRET:-bench-app-secret}"
export WA_BENCH_VERIFY_TOKEN="${WA_BENCH_VERIFY_TOKEN:-bench-verify-token}"
export WA_BENCH_TOKEN="${WA_BENCH_TOKEN:-bench-access-token}"
export WA_GATEWAY_LOG="${WA_GATEWAY_LOG:-warn}"
DURATION="${DURATION:-20s}"
RATE="${RATE:-2000}"
# Enough customers that no one of them passes Meta's pair-rate burst (45) in a run.
CUSTOMERS="${CUSTOMERS:-20000}"
