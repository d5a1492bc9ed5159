#!/usr/bin/env python3
"""Time Hugging Face `tokenizers` (Rust, pinned in requirements.txt) encoding a file,
single-threaded, the way bench/tokenizer_bench.sh times the C tokenizer: the whole file as one
text ("whole") or each line as its own text ("lines": encode_batch on one thread, newlines
excluded, like `hadal tokenize --lines`), no special tokens added, best of N runs; prints
tokens/s and a hash of the ids.

Usage: bench_hf.py TOKENIZER_JSON FILE [RUNS [whole|lines]]
"""
import os

os.environ["RAYON_NUM_THREADS"] = "1"  # before the Rust library starts its pool
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import hashlib  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import tokenizers  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

tok = Tokenizer.from_file(sys.argv[1])
raw = open(sys.argv[2], "rb").read()
text = raw.decode("utf-8", "replace")
runs = int(sys.argv[3]) if len(sys.argv) > 3 else 3
mode = sys.argv[4] if len(sys.argv) > 4 else "whole"
lines = text.split("\n")
if lines and lines[-1] == "":
    lines.pop()
best = None
for _ in range(runs):
    t0 = time.perf_counter()
    if mode == "lines":
        ids = [i for e in tok.encode_batch(lines, add_special_tokens=False) for i in e.ids]
    else:
        ids = tok.encode(text, add_special_tokens=False).ids
    dt = time.perf_counter() - t0
    best = dt if best is None or dt < best else best
h = hashlib.sha256(("\n".join(map(str, ids)) + "\n").encode()).hexdigest()
print(f"hf tokenizers {tokenizers.__version__} ({mode}): {len(raw)} bytes, {len(ids)} tokens, "
      f"best {best:.3f} s of {runs}, {len(ids) / best:.0f} tokens/s, ids sha256 {h}")
