#!/usr/bin/env bash
# Cluster overhead: the same greedy batch (64 sequences x 16 prompt + 64 generated tokens) on
# one engine in-process, on a 1x1 process grid (one step holds the whole batch: the
# coordinator's CPU time per decode step at batch 64) and on a 2x2 process grid (end-to-end
# tokens/s with two micro-batches in flight). Results go in docs/PERFORMANCE.md ("Cluster").
#
#   bench/cluster_bench.sh [BUILD_DIR [RUNS]]   (default: build, 3 runs; each run printed)
#   HD_BENCH_PRESET=tiny-a  model preset (generated once, seed 1, into BUILD_DIR/testdata)
#   HD_BENCH_ARGS="--batch 64 --tokens 64"  extra arguments for hadal bench cluster
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
runs=${2:-3}
preset=${HD_BENCH_PRESET:-tiny-a}
hadal=$build/tools/hadal
model=$build/testdata/$preset-s1

[ -x "$hadal" ] || { echo "cluster_bench: build $hadal first" >&2; exit 1; }
if [ ! -f "$model/model.safetensors.index.json" ]; then
    mkdir -p "$build/testdata"
    "$hadal" gen-model --preset "$preset" --seed 1 --out "$model" --quiet
fi
echo "# $(date -u +%FT%TZ) $(uname -m), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
for i in $(seq 1 "$runs"); do
    echo "## run $i"
    HD_LOG_LEVEL=error "$hadal" bench cluster --model "$model" ${HD_BENCH_ARGS:-}
done
