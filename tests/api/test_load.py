"""Bounded load test: C concurrent streaming clients for S seconds against `hadal serve` (the
1x2 process grid on the tiny model); it stops by itself. Every request must complete
correctly (role chunk first, finish_reason, usage consistent with max_tokens, [DONE] last),
nothing may stay running or hold KV afterwards, and the server's memory must not grow.
HADAL_LOAD_CLIENTS / HADAL_LOAD_SECONDS choose the size (default 16 x 10 s; the slow label
runs 64 x 60 s).
"""
import http.client
import json
import os
import random
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hadal_server import Server, sse_events  # noqa: E402

CLIENTS = int(os.environ.get("HADAL_LOAD_CLIENTS", "16"))
SECONDS = float(os.environ.get("HADAL_LOAD_SECONDS", "10"))


class Load(unittest.TestCase):
    def test_load(self):
        srv = Server("--max-waiting", str(4 * CLIENTS)).start()
        errors, done, lock = [], [0], threading.Lock()
        stop_at = time.time() + SECONDS
        rss = {}

        def client(i):
            rnd = random.Random(i)
            conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=120)
            while time.time() < stop_at:
                mt = rnd.randint(4, 40)
                body = {"model": srv.model, "stream": True, "max_tokens": mt,
                        "temperature": rnd.choice([0, 0.8]), "seed": rnd.randint(0, 1 << 30),
                        "stream_options": {"include_usage": True},
                        "messages": [{"role": "user", "content": "load %d %d" % (i, mt)}]}
                try:
                    conn.request("POST", "/v1/chat/completions", json.dumps(body),
                                 {"Content-Type": "application/json"})
                    r = conn.getresponse()
                    raw = r.read().decode()
                    if r.status != 200:
                        raise AssertionError("status %d: %s" % (r.status, raw[:200]))
                    ev = [d for _, d in sse_events(raw)]
                    assert ev[-1] == "[DONE]", ev[-1]
                    chunks = [json.loads(d) for d in ev[:-1]]
                    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
                    fin = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
                    assert fin[-1] in ("stop", "length"), fin[-1]
                    usage = chunks[-1]["usage"]
                    assert usage["completion_tokens"] <= mt, (usage, mt)
                    if fin[-1] == "length":
                        assert usage["completion_tokens"] == mt, (usage, mt)
                    with lock:
                        done[0] += 1
                except Exception as e:  # noqa: BLE001
                    with lock:
                        errors.append("client %d: %r" % (i, e))
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=120)
            conn.close()

        def sampler():
            while time.time() < stop_at:
                t = time.time()
                if "early" not in rss and t > stop_at - SECONDS * 0.7:
                    rss["early"] = srv.rss_kib()
                time.sleep(0.2)
            rss["late"] = srv.rss_kib()

        th = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
        th.append(threading.Thread(target=sampler))
        t0 = time.time()
        for t in th:
            t.start()
        for t in th:
            t.join()
        wall = time.time() - t0
        m = srv.metrics()
        srv.wait_metric("vllm:num_requests_running", lambda v: v == 0)
        srv.wait_metric("hadal:kv_sequences", lambda v: v == 0)
        srv.wait_metric("hadal:http_requests_in_flight", lambda v: v == 0)
        rc = srv.stop()
        print("load: %d clients, %.1f s, %d requests, %d errors, %.0f generated tokens, "
              "rss %s KiB -> %s KiB" % (CLIENTS, wall, done[0], len(errors),
                                         m["vllm:generation_tokens_total"], rss.get("early"),
                                         rss.get("late")))
        self.assertEqual(errors, [])
        self.assertGreater(done[0], CLIENTS)
        self.assertEqual(rc, 0)
        self.assertLess(rss["late"] - rss["early"], 16 * 1024, "memory grows under load")


if __name__ == "__main__":
    unittest.main(verbosity=2)
