#!/usr/bin/env bash
# Regenerate the tokenizer and chat-encoding reference data from pinned Python packages.
# Nothing here runs at build or test time; the outputs are committed.
#
#   tools/reference/tokenizer/regen.sh [all|corpus|expected|unicode|chat|bench-corpus]
#
#   corpus    tests/coordinator/data/tok_corpus.txt            (make_corpus.py, stdlib only)
#   expected  tests/coordinator/data/tok_expected_{v4,v3}.txt  (make_expected.py, HF tokenizers)
#   unicode   coordinator/tok_unicode.c                        (gen_unicode_delta.py)
#   chat      tests/coordinator/data/chat/*                    (make_chat_expected.py; needs the
#             official encoding_dsv4.py, see that script: HD_ENCODING_DSV4=FILE or
#             tools/reference/tokenizer/official/encoding_dsv4.py)
#   all       corpus + expected + unicode + chat (default)
#
# The venv lives in tools/reference/tokenizer/.venv (gitignored), created from
# requirements.txt with python3.11 (or $PYTHON). Needs PyPI the first time.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
py=${PYTHON:-python3.11}
command -v "$py" >/dev/null 2>&1 || py=python3
venv=$here/.venv
if [ ! -x "$venv/bin/python" ]; then
    "$py" -m venv "$venv"
    "$venv/bin/pip" install -q -r "$here/requirements.txt"
fi
vpy=$venv/bin/python
what=${1:-all}
cd "$root"
case $what in
all | corpus) "$vpy" "$here/make_corpus.py" tests/coordinator/data/tok_corpus.txt ;;&
all | expected) "$vpy" "$here/make_expected.py" ;;&
all | unicode) "$vpy" "$here/gen_unicode_delta.py" coordinator/tok_unicode.c ;;&
all | chat) "$vpy" "$here/make_chat_expected.py" ;;&
bench-corpus) "$vpy" "$here/make_bench_corpus.py" "${2:-$root/build/tok_bench_corpus.txt}" ;;
all | corpus | expected | unicode | chat) ;;
*)
    echo "regen.sh: unknown target '$what'" >&2
    exit 2
    ;;
esac
