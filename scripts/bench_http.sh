#!/bin/bash
# HTTP throughput and latency under wrk, predictd beside the FastAPI service
# doing the same work, in one run (issue: HTTP daemon benchmark).
#
#   scripts/bench_http.sh BUILD_DIR [SECONDS]
#
# Needs wrk; the FastAPI side needs Debian's python3-fastapi, python3-uvicorn,
# python3-torch and the peers' folder (PEERS, default ../shared/peers). The
# real-size random checkpoint is written to $MODELS (default /tmp/perf-models).
# wrk runs on the same 2 cores as the server: compare ratios, not absolutes.
set -u
BUILD=${1:-build}
DUR=${2:-15}
MODELS=${MODELS:-/tmp/perf-models}
PEERS=${PEERS:-$(cd "$(dirname "$0")/../.." && pwd)/shared/peers}
OUT=${OUT:-bench-results/http.jsonl}
URL_PATH='/predict?text=this%20movie%20was%20surprisingly%20good%20and%20I%20would%20watch%20it%20again'
PORT=18321
mkdir -p "$(dirname "$OUT")"
: > "$OUT"
command -v wrk > /dev/null || { echo "bench_http: wrk is not installed (apt-get install wrk)"; exit 1; }
[ -f "$MODELS/distilbert-sst2/model.safetensors" ] || {
    mkdir -p "$MODELS/distilbert-sst2" && "$BUILD/gen_checkpoint" distilbert "$MODELS/distilbert-sst2"; }

wait_ready() { for _ in $(seq 120); do curl -sf -X POST "http://127.0.0.1:$PORT$URL_PATH" > /dev/null && return 0; sleep 0.5; done; return 1; }

# run_wrk NAME CONNECTIONS: one wrk run against the server on $PORT.
run_wrk() {
    local threads=$(( $2 < 2 ? 1 : 2 ))
    for _ in 1 2 3; do curl -s -X POST "http://127.0.0.1:$PORT$URL_PATH" > /dev/null; done
    local line
    line=$(wrk -t"$threads" -c"$2" -d"${DUR}s" --timeout 60s -s tests/bench/post.lua \
           "http://127.0.0.1:$PORT$URL_PATH" | grep WRKJSON | cut -d' ' -f2-)
    echo "{\"server\":\"$1\",\"connections\":$2,\"result\":$line}" | tee -a "$OUT"
}

# predictd: batching on, batching off, and a trivially small model (front end bound).
serve_predictd() {
    "$BUILD/predictd" --model "$1" --port $PORT --access-log false "${@:2}" 2> /tmp/bench-predictd.log &
    SRV=$!
    wait_ready || { echo "predictd did not start"; cat /tmp/bench-predictd.log; exit 1; }
}
stop() { kill "$SRV"; wait "$SRV" 2> /dev/null; }

# The same OpenBLAS kernels as the peers get (see README: the environment may
# force a slower core type).
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE

serve_predictd "$MODELS/distilbert-sst2"
for c in 1 8 64; do run_wrk predictd "$c"; done
stop
serve_predictd "$MODELS/distilbert-sst2" --max-batch-size 1
for c in 1 8 64; do run_wrk predictd-nobatch "$c"; done
stop
serve_predictd tests/fixtures/distilbert-sst2-tiny
run_wrk predictd-tiny 64
stop

if [ -f "$PEERS/serve/app.py" ] && /usr/bin/python3 -c 'import fastapi, uvicorn, torch' 2> /dev/null; then
    for app in distilbert trivial; do
        (cd "$PEERS/serve" && PERF_MODEL=$app PERF_DISTILBERT="$MODELS/distilbert-sst2" OMP_NUM_THREADS=2 \
            OPENBLAS_NUM_THREADS=2 exec /usr/bin/python3 -m uvicorn app:app --host 127.0.0.1 --port $PORT \
            --log-level warning --no-access-log) 2> /tmp/bench-fastapi.log &
        SRV=$!
        wait_ready || { echo "the FastAPI service did not start"; cat /tmp/bench-fastapi.log; exit 1; }
        if [ $app = distilbert ]; then for c in 1 8 64; do run_wrk fastapi "$c"; done
        else run_wrk fastapi-constant 64; fi
        stop
    done
else
    echo "bench_http: FastAPI peer skipped (needs $PEERS and python3-fastapi/uvicorn/torch)"
fi
