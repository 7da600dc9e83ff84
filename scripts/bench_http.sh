#!/bin/bash
# HTTP throughput and latency under wrk, predictd beside the FastAPI service
# doing the same work, in one run (issue: HTTP daemon benchmark).
#
#   scripts/bench_http.sh BUILD_DIR [SECONDS]
#   PARTS="clip" scripts/bench_http.sh build 5     (only some parts)
#
# PARTS (default "distilbert clip fastapi"): DistilBERT text classification
# under predictd (batching as configured by default, off, and with a fixed
# batch window), then the tiny fixture (front-end bound, computed inline and
# queued; and GET /health, the front end alone) next to libmicrohttpd alone
# answering a constant (its ceiling); CLIP zero-shot classification of a 640x480 JPEG (base64 in a
# JSON body, four candidate labels) at 8 connections; the FastAPI peer.
# Needs wrk, and BUILD_DIR's gen_checkpoint, gen_jpeg and mhd_constant (make bench builds
# them); the FastAPI side needs Debian's python3-fastapi, python3-uvicorn,
# python3-torch and the peers' folder (PEERS, default ../shared/peers). The
# real-size random checkpoints are written to $MODELS (default /tmp/perf-models).
# wrk runs on the same 2 cores as the server: compare ratios, not absolutes.
set -u
BUILD=${1:-build}
DUR=${2:-15}
MODELS=${MODELS:-/tmp/perf-models}
PEERS=${PEERS:-$(cd "$(dirname "$0")/../.." && pwd)/shared/peers}
OUT=${OUT:-bench-results/http.jsonl}
PARTS=${PARTS:-distilbert clip fastapi}
URL_PATH='/predict?text=this%20movie%20was%20surprisingly%20good%20and%20I%20would%20watch%20it%20again'
PORT=18321
mkdir -p "$(dirname "$OUT")"
: > "$OUT"
command -v wrk > /dev/null || { echo "bench_http: wrk is not installed (apt-get install wrk)"; exit 1; }
wants() { [[ " $PARTS " == *" $1 "* ]]; }
# checkpoint FAMILY FOLDER: writes the real-size random checkpoint once.
checkpoint() { [ -f "$MODELS/$2/model.safetensors" ] || { mkdir -p "$MODELS/$2" && "$BUILD/gen_checkpoint" "$1" "$MODELS/$2"; }; }
wants distilbert && checkpoint distilbert distilbert-sst2
wants clip && checkpoint clip clip-vit-b32

# wait_ready CURL_ARGS...: until that request answers 2xx, for up to a minute.
wait_ready() { for _ in $(seq 120); do curl -sf "$@" > /dev/null && return 0; sleep 0.5; done; return 1; }

# run_wrk NAME CONNECTIONS [PATH BODY_FILE]: one wrk run against the server on
# $PORT: the DistilBERT query-string POST (post.lua), or with BODY_FILE that
# JSON body POSTed to PATH (post_body.lua).
run_wrk() {
    local threads=$(( $2 < 2 ? 1 : 2 )) url="http://127.0.0.1:$PORT${3:-$URL_PATH}" body=${4:-}
    local wrk_args=(-s tests/bench/post.lua "$url") curl_args=(-X "${WRK_METHOD:-POST}" "$url")
    if [ -n "$body" ]; then
        wrk_args=(-s tests/bench/post_body.lua "$url" -- "$body")
        curl_args+=(-H 'Content-Type: application/json' --data-binary "@$body")
    fi
    for _ in 1 2 3; do curl -s "${curl_args[@]}" > /dev/null; done
    local line
    line=$(wrk -t"$threads" -c"$2" -d"${DUR}s" --timeout 60s "${wrk_args[@]}" | grep WRKJSON | cut -d' ' -f2-)
    echo "{\"server\":\"$1\",\"connections\":$2,\"result\":$line}" | tee -a "$OUT"
}

# predictd: batching on, batching off, and a trivially small model (front end bound).
serve_predictd() {
    "$BUILD/predictd" --model "$1" --port $PORT --access-log false "${@:2}" 2> /tmp/bench-predictd.log &
    SRV=$!
    wait_ready "http://127.0.0.1:$PORT/health" || { echo "predictd did not start"; cat /tmp/bench-predictd.log; exit 1; }
}
stop() { kill "$SRV"; wait "$SRV" 2> /dev/null; }

# The same OpenBLAS kernels as the peers get (see README: the environment may
# force a slower core type).
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE

if wants distilbert; then
    serve_predictd "$MODELS/distilbert-sst2"
    for c in 1 8 64; do run_wrk predictd "$c"; done
    stop
    serve_predictd "$MODELS/distilbert-sst2" --max-batch-size 1
    for c in 1 8 64; do run_wrk predictd-nobatch "$c"; done
    stop
    # Every batch waits its window, even a lone request's (the default skips
    # it while requests come one at a time).
    serve_predictd "$MODELS/distilbert-sst2" --adaptive-batch-wait false
    for c in 1 64; do run_wrk predictd-fixed-wait "$c"; done
    stop
    serve_predictd tests/fixtures/distilbert-sst2-tiny
    run_wrk predictd-tiny 64
    # The front end with no model work: loop, HTTP, routing, metrics, JSON.
    WRK_METHOD=GET run_wrk predictd-health 64 /health
    stop
    serve_predictd tests/fixtures/distilbert-sst2-tiny --inline-max-us 0
    run_wrk predictd-tiny-queued 64
    stop
    # The ceiling: libmicrohttpd alone answering a constant (tests/bench/mhd_constant.c).
    "$BUILD/mhd_constant" $PORT &
    SRV=$!
    wait_ready -X POST "http://127.0.0.1:$PORT$URL_PATH" || { echo "mhd_constant did not start"; exit 1; }
    run_wrk mhd-constant 64
    WRK_METHOD=GET run_wrk mhd-constant-get 64 /health
    stop
fi

# CLIP zero-shot: the request of transformers' zero-shot-image-classification
# pipeline (README, "Image-text similarity"), with the default hypothesis
# template. The four labels' text embeddings are cached after the first
# request, so this is mostly JPEG decode + preprocessing + the image tower.
if wants clip; then
    JPEG=/tmp/bench-clip-640x480.jpg CLIP_BODY=/tmp/bench-clip-zero-shot.json
    "$BUILD/gen_jpeg" "$JPEG" 640 480 || exit 1
    printf '{"inputs": "%s", "parameters": {"candidate_labels": ["a cat", "a dog", "a car", "a tree"]}}' \
        "$(base64 -w0 "$JPEG")" > "$CLIP_BODY"
    serve_predictd "$MODELS/clip-vit-b32"
    run_wrk predictd-clip-zero-shot 8 /predict "$CLIP_BODY"
    stop
fi

if wants fastapi && [ -f "$PEERS/serve/app.py" ] && /usr/bin/python3 -c 'import fastapi, uvicorn, torch' 2> /dev/null; then
    for app in distilbert trivial; do
        (cd "$PEERS/serve" && PERF_MODEL=$app PERF_DISTILBERT="$MODELS/distilbert-sst2" OMP_NUM_THREADS=2 \
            OPENBLAS_NUM_THREADS=2 exec /usr/bin/python3 -m uvicorn app:app --host 127.0.0.1 --port $PORT \
            --log-level warning --no-access-log) 2> /tmp/bench-fastapi.log &
        SRV=$!
        wait_ready -X POST "http://127.0.0.1:$PORT$URL_PATH" ||
            { echo "the FastAPI service did not start"; cat /tmp/bench-fastapi.log; exit 1; }
        if [ $app = distilbert ]; then for c in 1 8 64; do run_wrk fastapi "$c"; done
        else run_wrk fastapi-constant 64; fi
        stop
    done
elif wants fastapi; then
    echo "bench_http: FastAPI peer skipped (needs $PEERS and python3-fastapi/uvicorn/torch)"
fi
