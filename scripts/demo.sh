#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: install what is needed, build, start `hadal serve`
# (a coordinator and two worker processes on the built-in tiny model, answering the OpenAI and
# Anthropic HTTP APIs on 127.0.0.1:8000), stream one chat completion with curl, and stop it.
# The tiny model has random weights: its words are noise. For a real DeepSeek-V4 checkpoint:
#   build/tools/hadal serve --model /path/to/DeepSeek-V4-Flash --pp 1 --ep 8
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)"
port="${HADAL_PORT:-8000}"
log="$(mktemp)"
build/tools/hadal serve --port "$port" 2>"$log" &
server=$!
stop() {
    kill -TERM "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
}
trap stop EXIT
for _ in $(seq 1 600); do
    if curl -sf "http://127.0.0.1:$port/ready" >/dev/null; then
        break
    fi
    if ! kill -0 "$server" 2>/dev/null; then
        cat "$log" >&2
        echo "demo: hadal serve exited" >&2
        exit 1
    fi
    sleep 0.2
done
cat "$log"
model=$(curl -sf "http://127.0.0.1:$port/v1/models" | sed -E 's/.*"id":"([^"]+)".*/\1/')
echo "demo: streaming a chat completion from $model (random weights: expect noise)"
curl -sN "http://127.0.0.1:$port/v1/chat/completions" -H 'Content-Type: application/json' \
    -d "{\"model\": \"$model\", \"stream\": true, \"max_tokens\": 24,
         \"messages\": [{\"role\": \"user\", \"content\": \"Hello from Hadal\"}]}"
echo "demo: stopping the server"
