#!/bin/bash
# make bench: predictd's engine and HTTP figures beside the peers', in one run.
#
#   scripts/bench.sh BUILD_DIR            (make bench)
#   DTYPES="f32 int8" PEERS=... scripts/bench.sh build
#
# Writes bench-results/*.jsonl and prints the side-by-side table
# (scripts/bench_table.py). Real-size random checkpoints are generated once
# into $MODELS. The peers (ONNX Runtime via onnxruntime-node, PyTorch) run
# when their tools are installed; see ../shared/peers/README.md.
set -u
BUILD=${1:-build}
MODELS=${MODELS:-/tmp/perf-models}
PEERS=${PEERS:-$(cd "$(dirname "$0")/../.." && pwd)/shared/peers}
DTYPES=${DTYPES:-f32}
RESULTS=bench-results
mkdir -p "$RESULTS"

for pair in "distilbert distilbert-sst2" "gpt2 gpt2" "clip clip-vit-b32"; do
    set -- $pair
    [ -f "$MODELS/$2/model.safetensors" ] || { mkdir -p "$MODELS/$2" && "$BUILD/gen_checkpoint" "$1" "$MODELS/$2"; }
done

# The environment of some machines forces an older OpenBLAS core type (see
# README); benchmarks run the kernels OpenBLAS itself picks for this CPU.
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE

: > "$RESULTS/predictd.jsonl"
for dtype in $DTYPES; do
    for pair in "distilbert distilbert-sst2" "gpt2 gpt2" "clip clip-vit-b32"; do
        set -- $pair
        "$BUILD/bench_engine" "$1" "$MODELS/$2" --dtype "$dtype" | tee -a "$RESULTS/predictd.jsonl"
    done
done

if [ -d "$PEERS/onnx" ] && command -v node > /dev/null; then
    NODE_PATH=${NODE_PATH:-/tmp/npmwork/node_modules}
    if [ -d "$NODE_PATH/onnxruntime-node" ]; then
        [ -f /tmp/perf-onnx/clip_image.onnx ] || (cd "$PEERS/onnx" && /usr/bin/python3 export_onnx.py --root "$MODELS")
        (cd "$PEERS/onnx" && NODE_PATH=$NODE_PATH node bench_ort.js --threads 2 --set full) | tee "$RESULTS/ort.jsonl"
    fi
fi
if [ -f "$PEERS/bench_torch.py" ] && /usr/bin/python3 -c 'import torch' 2> /dev/null; then
    for mode in fp32 int8; do
        (cd "$PEERS" && OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 /usr/bin/python3 bench_torch.py --threads 2 \
            --mode $mode --root "$MODELS" --reps 5)
    done | tee "$RESULTS/torch.jsonl"
fi

scripts/bench_http.sh "$BUILD"
python3 scripts/bench_table.py "$RESULTS"
