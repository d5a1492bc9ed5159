#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: install what is needed, build, generate the
# built-in tiny model (random weights: its words are noise), and generate from a prompt.
# Point --model at a real DeepSeek-V4 checkpoint directory to run the real thing:
#   build/tools/hadal run --model /path/to/DeepSeek-V4-Flash --prompt-ids 0,128803,...
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)"
model=build/models/tiny-a
if [ ! -f "$model/config.json" ]; then
    build/tools/hadal gen-model --preset tiny-a --seed 1 --out "$model"
fi
prompt="Hello from Hadal"
ids=""
if ids=$(printf '%s' "$prompt" | build/tools/hadal tokenize 2>/dev/null) && [ -n "$ids" ]; then
    # the tiny model's vocabulary has 1024 ids: fold the real tokenizer's ids into it
    ids=$(echo "$ids" | tr ' ,' '\n\n' | grep -E '^[0-9]+$' | awk '{printf "%s%d", (NR>1?",":""), $1 % 1024}')
else
    ids="0,17,42,99,512,7,300"
fi
echo "prompt ids: $ids"
echo "generated ids:"
build/tools/hadal run --model "$model" --prompt-ids "$ids" --max-tokens 24 --temperature 0
