#!/usr/bin/env bash
# Tokenizer throughput: Hadal's C tokenizer vs Hugging Face `tokenizers` (Rust), both
# single-threaded, in the same run, on the same 10 MiB mixed corpus; also checks that both
# produce the same ids. Results go in docs/PERFORMANCE.md ("Tokenizer").
#
#   bench/tokenizer_bench.sh [BUILD_DIR [RUNS]]     (default: build, 5 runs; best run counts)
#   HD_BENCH_MIB=10  corpus size;  HD_TOKENIZER=FILE  tokenizer.json (default: vendored V4)
#
# Needs BUILD_DIR/tools/hadal and the pinned venv of tools/reference/tokenizer (created by
# tools/reference/tokenizer/regen.sh on first use; needs PyPI once). The corpus is written
# to BUILD_DIR/tok_bench_corpus.txt by tools/reference/tokenizer/make_bench_corpus.py.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
runs=${2:-5}
mib=${HD_BENCH_MIB:-10}
tok=${HD_TOKENIZER:-$root/coordinator/data/tokenizer-deepseek-v4/tokenizer.json}
ref=$root/tools/reference/tokenizer
hadal=$build/tools/hadal
corpus=$build/tok_bench_corpus.txt

[ -x "$hadal" ] || { echo "tokenizer_bench: build $hadal first" >&2; exit 1; }
if [ ! -x "$ref/.venv/bin/python" ]; then
    py=${PYTHON:-python3.11}
    command -v "$py" >/dev/null 2>&1 || py=python3
    "$py" -m venv "$ref/.venv"
    "$ref/.venv/bin/pip" install -q -r "$ref/requirements.txt"
fi
vpy=$ref/.venv/bin/python

"$vpy" "$ref/make_bench_corpus.py" "$corpus" "$mib" >/dev/null
echo "corpus: $corpus, $(wc -c <"$corpus") bytes, sha256 $(sha256sum "$corpus" | cut -c1-16)…"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores"

# Two shapes: the whole file as one text, and each line as its own text (many short
# requests). Only encode calls are timed; both pinned to one core.
status=0
for mode in whole lines; do
    copt=
    [ "$mode" = lines ] && copt=--lines
    best=
    for _ in $(seq "$runs"); do
        line=$(taskset -c 0 "$hadal" tokenize --tokenizer "$tok" $copt --count --bench \
               <"$corpus" 2>&1 >/dev/null)
        secs=$(echo "$line" | sed -E 's/.* ([0-9.]+) s,.*/\1/')
        if [ -z "$best" ] || awk "BEGIN{exit !($secs < $best)}"; then best=$secs; cline=$line; fi
    done
    ntok=$(echo "$cline" | sed -E 's/.* ([0-9]+) tokens,.*/\1/')
    c_sha=$("$hadal" tokenize --tokenizer "$tok" $copt <"$corpus" | tr ' ' '\n' | sed '/^$/d' |
            sha256sum | cut -d' ' -f1)
    c_rate=$(awk "BEGIN{printf \"%.0f\", $ntok / $best}")
    echo "[$mode] hadal (C): $ntok tokens, best $best s of $runs, $c_rate tokens/s, ids sha256 $c_sha"
    hf=$(taskset -c 0 "$vpy" "$ref/bench_hf.py" "$tok" "$corpus" "$runs" "$mode")
    echo "[$mode] $hf"
    hf_rate=$(echo "$hf" | sed -E 's/.* ([0-9]+) tokens\/s.*/\1/')
    hf_sha=$(echo "$hf" | sed -E 's/.*ids sha256 ([0-9a-f]+).*/\1/')
    echo "[$mode] speed: C / HF = $(awk "BEGIN{printf \"%.2f\", $c_rate / $hf_rate}")x"
    if [ "$c_sha" != "$hf_sha" ]; then
        echo "[$mode] tokenizer_bench: ids differ from HF tokenizers" >&2
        status=1
    else
        echo "[$mode] ids: identical"
    fi
done
exit $status
