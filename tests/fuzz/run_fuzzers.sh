#!/usr/bin/env bash
# Build every libFuzzer target (tests/fuzz/fuzz_*.c) with clang + HD_FUZZ and run each for a
# bounded time from its committed seed corpus (tests/fuzz/corpus/<target>/, if present).
# Fails if any target crashes, leaks, times out or cannot be built.
#   tests/fuzz/run_fuzzers.sh [SOURCE_DIR [BUILD_DIR]]
#   HD_FUZZ_SECONDS  seconds per target (default 60)
#   HD_FUZZ_JOBS     build parallelism (default 2)
# New inputs found go to BUILD_DIR/fuzz-work/<target>/corpus, never into the source tree;
# crash reproducers are written next to them and named in the output.
set -uo pipefail
src=$(cd "${1:-$(dirname "$0")/../..}" && pwd)
build=${2:-$src/build-fuzz}
secs=${HD_FUZZ_SECONDS:-60}
jobs=${HD_FUZZ_JOBS:-2}

targets=()
for f in "$src"/tests/fuzz/fuzz_*.c; do
    [ -e "$f" ] || continue
    targets+=("$(basename "$f" .c)")
done
if [ ${#targets[@]} -eq 0 ]; then
    echo "run_fuzzers: no fuzz_*.c targets in $src/tests/fuzz" >&2
    exit 1
fi

mkdir -p "$build"
echo "run_fuzzers: configuring $build (clang, HD_FUZZ=ON)"
if ! CC=clang CXX=clang++ cmake -S "$src" -B "$build" -DHD_FUZZ=ON \
        -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$build/configure.log" 2>&1; then
    cat "$build/configure.log" >&2
    echo "run_fuzzers: configure failed" >&2
    exit 1
fi

failed=()
for t in "${targets[@]}"; do
    if ! cmake --build "$build" -j"$jobs" --target "$t" >"$build/$t.build.log" 2>&1; then
        tail -n 40 "$build/$t.build.log" >&2
        echo "run_fuzzers: $t: build failed" >&2
        failed+=("$t(build)")
        continue
    fi
    bin=$(find "$build" -type f -name "$t" -perm -u+x | head -n 1)
    work="$build/fuzz-work/$t"
    mkdir -p "$work/corpus"
    seeds=()
    [ -d "$src/tests/fuzz/corpus/$t" ] && seeds+=("$src/tests/fuzz/corpus/$t")
    echo "run_fuzzers: $t for ${secs}s (seeds: ${seeds[*]:-none})"
    if ! "$bin" -max_total_time="$secs" -timeout=20 -rss_limit_mb=4096 -max_len=65536 \
            -print_final_stats=1 -artifact_prefix="$work/" "$work/corpus" "${seeds[@]}" \
            >"$work/log" 2>&1; then
        tail -n 60 "$work/log" >&2
        echo "run_fuzzers: $t FAILED; reproducer(s):" >&2
        ls "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-* 2>/dev/null >&2
        failed+=("$t")
    else
        grep -E "stat::number_of_executed_units|stat::new_units_added" "$work/log" |
            sed "s/^/  $t: /"
    fi
done

if [ ${#failed[@]} -ne 0 ]; then
    echo "run_fuzzers: failures: ${failed[*]}" >&2
    exit 1
fi
echo "run_fuzzers: all ${#targets[@]} targets ran ${secs}s without failures"
