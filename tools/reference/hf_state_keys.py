"""hf_state_keys.py - record the parameter names and shapes of transformers' DeepseekV4ForCausalLM.

Writes tests/model/data/hf_state_keys_<preset>.json: {"transformers": version, "preset": ...,
"keys": {name: [shape...]}} for a model built from the Hub config that `hadal gen-model`
writes. tests/model/test_engine_load.c converts a generated official checkpoint into
transformers names and checks it against exactly this list, so the engine's name map is
proven against transformers itself rather than against our own reading of it.

    tools/reference/.venv/bin/python tools/reference/hf_state_keys.py --hadal build/tools/hadal
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import torch
import transformers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dsv4_ref as R  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hadal", default=os.path.join(REPO, "build", "tools", "hadal"))
    ap.add_argument("--preset", default="tiny-a")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([a.hadal, "gen-model", "--preset", a.preset, "--seed", "1", "--out", tmp],
                       check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(tmp, "config.json")) as f:
            hub = json.load(f)
    cfg = R.hf_config_from_hub(hub)
    with torch.device("meta"):
        model = transformers.DeepseekV4ForCausalLM(cfg)
    keys = {k: list(v.shape) for k, v in model.state_dict().items()}
    out = a.out or os.path.join(REPO, "tests", "model", "data", f"hf_state_keys_{a.preset}.json")
    with open(out, "w") as f:
        json.dump({"transformers": transformers.__version__, "preset": a.preset, "keys": keys}, f,
                  indent=1, sort_keys=True)
        f.write("\n")
    print(f"wrote {out}: {len(keys)} keys")


if __name__ == "__main__":
    main()
