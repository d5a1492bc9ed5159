#!/usr/bin/env bash
# Create (or update) the pinned venv of the API tests: .venv-test at the repository root.
# Idempotent: does nothing when the venv already holds exactly requirements.txt.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="${HD_TEST_VENV:-$root/.venv-test}"
req="$root/tests/api/requirements.txt"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$req" | cut -d' ' -f1)"
mkdir -p "$venv"
exec 9>"$venv/.lock" # concurrent test runs wait for one another
flock 9
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check -r "$req"
echo "$want" > "$stamp"
