#!/usr/bin/env bash
# Install, build and run the whole default test suite (what CI runs via .ci/run).
#   scripts/ci.sh            default suite (labels unit, golden, multiproc; excludes slow)
#   HD_TEST_LABELS=slow scripts/ci.sh   only the slow tests (fuzzing, long runs)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
jobs=$(nproc)
# 1. Release build with warnings as errors: the whole suite.
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHD_FATAL_WARNINGS=ON >/dev/null
cmake --build build -j"$jobs"
tests/api/venv.sh # pinned openai/anthropic clients for the API tests (.venv-test)
labels_exclude="slow"
if [ -n "${HD_TEST_LABELS:-}" ]; then
    (cd build && ctest --output-on-failure -L "$HD_TEST_LABELS")
    exit 0
fi
(cd build && ctest --output-on-failure -j"$jobs" -LE "$labels_exclude")
# 2. ASan + UBSan build: the unit tests.
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DHD_SANITIZE_ADDRESS=ON \
    -DHD_SANITIZE_UNDEFINED=ON >/dev/null
cmake --build build-asan -j"$jobs"
(cd build-asan && ctest --output-on-failure -j"$jobs" -L unit)
