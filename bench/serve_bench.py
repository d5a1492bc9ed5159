#!/usr/bin/env python3
"""Serving benchmark: start `hadal serve`, drive it with C concurrent streaming clients
(C = 1, 4, 16, 64 by default) and report throughput, time to first token and inter-token
latency as the clients see them; then the same at 16 clients with the scheduler limited to
one running request (one-at-a-time) for the continuous-batching ratio; then the replay test
mode (no model) for the serving layer's own cost per streamed token (wall and server CPU).

    bench/serve_bench.py --hadal build/tools/hadal [--seconds 10] [--tokens 64]
        [--clients 1,4,16,64] [--serve-args "--pp 1 --ep 2"] [--json out.json]

Standard library only. Requests use ignore_eos so every one streams exactly --tokens tokens.
"""
import argparse
import http.client
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time


def start(hadal, args):
    cmd = [hadal, "serve", "--port", "0"] + args
    p = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    log = []
    while True:
        line = p.stderr.readline()
        if not line:
            sys.exit("hadal serve exited:\n" + "".join(log))
        log.append(line)
        m = re.search(r"serving (\S+) on http://[^:]+:(\d+)", line)
        if m:
            threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
            port = int(m.group(2))
            while True:  # the server answers before the grid is ready
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                c.request("GET", "/ready")
                ready = c.getresponse().status == 200
                c.close()
                if ready:
                    return p, m.group(1), port
                time.sleep(0.1)


def stop(p):
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(30)
    except subprocess.TimeoutExpired:
        p.kill()


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def one_request(conn, model, tokens, headers):
    body = json.dumps({"model": model, "stream": True, "max_tokens": tokens, "ignore_eos": True,
                       "temperature": 0, "stream_options": {"include_usage": True},
                       "messages": [{"role": "user", "content": "Benchmark me, please."}]})
    t0 = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", body,
                 dict({"Content-Type": "application/json"}, **headers))
    r = conn.getresponse()
    if r.status != 200:
        raise RuntimeError(f"status {r.status}: {r.read()[:200]!r}")
    times, n_tok = [], 0
    while True:
        line = r.readline()
        if not line:
            break
        if line.startswith(b"data: "):
            d = line[6:].strip()
            if d == b"[DONE]":
                continue
            j = json.loads(d)
            if j.get("usage"):
                n_tok = j["usage"]["completion_tokens"]
            for c in j.get("choices", []):
                if c.get("delta", {}).get("content"):
                    times.append(time.perf_counter())
    return t0, times, n_tok


def run_load(port, model, clients, seconds, tokens, headers=None):
    headers = headers or {}
    res, lock = [], threading.Lock()
    stop_at = time.perf_counter() + seconds

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        while time.perf_counter() < stop_at:
            out = one_request(conn, model, tokens, headers)
            with lock:
                res.append(out)
        conn.close()

    th = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in th:
        t.start()
    for t in th:
        t.join()
    wall = time.perf_counter() - t0
    ttft = [times[0] - t0r for t0r, times, _ in res if times]
    itl = [b - a for _, times, _ in res for a, b in zip(times, times[1:])]
    ntok = sum(n for _, _, n in res)

    def pct(v, q):
        if not v:
            return float("nan")
        v = sorted(v)
        return v[min(len(v) - 1, int(q * len(v)))]

    return {"clients": clients, "requests": len(res), "tokens": ntok, "wall_s": wall,
            "tok_per_s": ntok / wall, "req_per_s": len(res) / wall,
            "ttft_p50_ms": 1e3 * pct(ttft, 0.5), "ttft_p90_ms": 1e3 * pct(ttft, 0.9),
            "itl_p50_ms": 1e3 * pct(itl, 0.5), "itl_p90_ms": 1e3 * pct(itl, 0.9),
            "itl_mean_ms": 1e3 * (statistics.mean(itl) if itl else float("nan"))}


def row(name, r):
    print(f"{name:<34} {r['clients']:>4} {r['requests']:>6} {r['tok_per_s']:>9.1f} "
          f"{r['ttft_p50_ms']:>8.1f} {r['ttft_p90_ms']:>8.1f} {r['itl_p50_ms']:>8.2f} "
          f"{r['itl_p90_ms']:>8.2f}", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hadal", default="build/tools/hadal")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--clients", default="1,4,16,64")
    ap.add_argument("--serve-args", default="")
    ap.add_argument("--json")
    ap.add_argument("--no-replay", action="store_true", help="skip the serving-layer-only runs")
    a = ap.parse_args()
    extra = a.serve_args.split()
    out = {"runs": []}
    print(f"{'setup':<34} {'C':>4} {'reqs':>6} {'tok/s':>9} {'ttft50':>8} {'ttft90':>8} "
          f"{'itl50':>8} {'itl90':>8}   (ms)")
    p, model, port = start(a.hadal, extra)
    try:
        run_load(port, model, 1, 1.0, 8)  # warm-up
        for c in [int(x) for x in a.clients.split(",")]:
            r = run_load(port, model, c, a.seconds, a.tokens)
            r["setup"] = "batching " + " ".join(extra)
            row("continuous batching", r)
            out["runs"].append(r)
    finally:
        stop(p)
    p, model, port = start(a.hadal, extra + ["--max-running", "1"])
    try:
        r = run_load(port, model, 16, a.seconds, a.tokens)
        r["setup"] = "one-at-a-time"
        row("one at a time (--max-running 1)", r)
        out["runs"].append(r)
    finally:
        stop(p)
    batched16 = next(r for r in out["runs"] if r["clients"] == 16 and r["setup"] != "one-at-a-time")
    out["batching_ratio_16"] = batched16["tok_per_s"] / r["tok_per_s"]
    print(f"continuous batching / one-at-a-time at 16 clients: {out['batching_ratio_16']:.2f}x")
    if a.no_replay:
        if a.json:
            with open(a.json, "w") as f:
                json.dump(out, f, indent=1)
        return
    # the serving layer alone: replay mode, no model
    d = tempfile.mkdtemp()
    path = os.path.join(d, "replay.json")
    with open(path, "w") as f:
        json.dump({"long": " ".join(["word"] * 5000)}, f)
    p, model, port = start(a.hadal, ["--replay", path])
    try:
        run_load(port, model, 1, 1.0, 8)
        for c in (1, 16):
            c0 = cpu_seconds(p.pid)
            r = run_load(port, model, c, a.seconds, a.tokens)
            cpu = cpu_seconds(p.pid) - c0
            r["setup"] = "replay"
            r["server_cpu_us_per_token"] = 1e6 * cpu / max(r["tokens"], 1)
            row("serving layer only (replay)", r)
            print(f"  server CPU per streamed token: {r['server_cpu_us_per_token']:.1f} us; "
                  f"mean gap between tokens of a stream: {r['itl_mean_ms'] * 1e3:.1f} us")
            out["runs"].append(r)
    finally:
        stop(p)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
