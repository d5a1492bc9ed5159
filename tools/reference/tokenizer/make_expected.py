#!/usr/bin/env python3
"""Regenerate the expected token ids the C tokenizer tests compare against.

Reads tests/coordinator/data/tok_corpus.txt (see make_corpus.py for the escaping), encodes
every case with Hugging Face `tokenizers` (pinned in requirements.txt) using the vendored
tokenizer.json files, and writes one line of space-separated ids per case:

    tests/coordinator/data/tok_expected_v4.txt  (coordinator/data/tokenizer-deepseek-v4)
    tests/coordinator/data/tok_expected_v3.txt  (coordinator/data/tokenizer-deepseek-v3)

Invalid UTF-8: HF takes Python/Rust strings, so each case is first decoded with
bytes.decode("utf-8", "replace"); the C side applies the same replacement (see
docs/TOKENIZER.md). The script also checks that HF's decode(ids) gives that string back,
so the C round-trip test (decode(encode(x)) == lossy(x)) has an independent witness.

Run through tools/reference/tokenizer/regen.sh, which creates the pinned venv.
"""
import hashlib
import os
import sys

import tokenizers
from tokenizers import Tokenizer

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
CORPUS = os.path.join(ROOT, "tests/coordinator/data/tok_corpus.txt")
TOKS = {
    "v4": os.path.join(ROOT, "coordinator/data/tokenizer-deepseek-v4/tokenizer.json"),
    "v3": os.path.join(ROOT, "coordinator/data/tokenizer-deepseek-v3/tokenizer.json"),
}

if tokenizers.__version__ != "0.23.3":
    sys.exit(f"need tokenizers 0.23.3, found {tokenizers.__version__} (use regen.sh)")


def unescape(line):
    out = bytearray()
    i = 0
    while i < len(line):
        c = line[i]
        if c == "\\" and i + 1 < len(line):
            d = line[i + 1]
            if d == "\\":
                out += b"\\"
                i += 2
                continue
            if d == "n":
                out += b"\n"
                i += 2
                continue
            if d == "r":
                out += b"\r"
                i += 2
                continue
            if d == "t":
                out += b"\t"
                i += 2
                continue
            if d == "x":
                out.append(int(line[i + 2:i + 4], 16))
                i += 4
                continue
        out += c.encode("utf-8")
        i += 1
    return bytes(out)


def read_corpus():
    cases = []
    with open(CORPUS, encoding="utf-8", newline="\n") as f:
        for line in f.read().split("\n")[:-1]:
            if line.startswith("#"):
                continue
            cases.append(unescape(line))
    return cases


def main():
    cases = read_corpus()
    for name, path in TOKS.items():
        tok = Tokenizer.from_file(path)
        sha = hashlib.sha256(open(path, "rb").read()).hexdigest()
        out = os.path.join(ROOT, f"tests/coordinator/data/tok_expected_{name}.txt")
        n_tokens = 0
        with open(out, "w", encoding="ascii", newline="\n") as f:
            f.write(f"# ids from HF tokenizers {tokenizers.__version__}, "
                    f"{os.path.relpath(path, ROOT)} sha256 {sha}\n")
            for raw in cases:
                text = raw.decode("utf-8", "replace")
                ids = tok.encode(text, add_special_tokens=False).ids
                back = tok.decode(ids, skip_special_tokens=False)
                if back != text:
                    sys.exit(f"HF decode does not round-trip {text!r}: {back!r}")
                n_tokens += len(ids)
                f.write(" ".join(map(str, ids)) + "\n")
        print(f"{out}: {len(cases)} cases, {n_tokens} tokens")


if __name__ == "__main__":
    main()
