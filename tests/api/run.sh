#!/usr/bin/env bash
# CTest runner of one API test file: run.sh HADAL_BIN TEST.py [VAR=VALUE...].
# Needs the pinned venv (.venv-test, made by tests/api/venv.sh, which scripts/ci.sh runs);
# when it is missing this tries to create it, and fails loudly if that is impossible.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${HD_TEST_VENV:-$root/.venv-test}"
bin="$1"
test="$2"
shift 2
if ! "$here/venv.sh"; then
    echo "FAILED: the API test venv ($venv) could not be created from tests/api/requirements.txt" >&2
    exit 1
fi
export HADAL_BIN="$bin"
for kv in "$@"; do export "${kv?}"; done
exec "$venv/bin/python" -W ignore::ResourceWarning "$here/$test" -v
