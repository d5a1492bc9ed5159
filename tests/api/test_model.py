"""End-to-end API tests against `hadal serve` as the README starts it: a coordinator and two
worker processes (grid 1x2) on the built-in tiny model (random weights: the text is noise, so
these tests check shapes, determinism and accounting, not words).

The official openai and anthropic clients and curl; streaming and not, usage, n > 1, seeds,
stop strings, cancellation on disconnect (KV released, seen in /metrics), /metrics parsed by
the Prometheus client parser, /health, /ready, API keys.
"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import unittest

import anthropic
import openai

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hadal_server import Server, sse_events  # noqa: E402

MSGS = [{"role": "user", "content": "Tell me a story about the sea."}]


class Model(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = Server("--threads", "1").start()
        cls.oa = openai.OpenAI(base_url=cls.srv.base + "/v1", api_key="none", max_retries=0)
        cls.an = anthropic.Anthropic(base_url=cls.srv.base, api_key="none", max_retries=0)
        cls.model = cls.srv.model

    @classmethod
    def tearDownClass(cls):
        rc = cls.srv.stop()
        assert rc == 0, "".join(cls.srv.log)

    def test_models_health_ready(self):
        ms = self.oa.models.list()
        self.assertEqual([m.id for m in ms.data], [self.model])
        for path in ("/health", "/ready"):
            st, _, _ = self.srv.request("GET", path)
            self.assertEqual(st, 200)

    def test_chat_stream_equals_whole(self):
        r = self.oa.chat.completions.create(model=self.model, messages=MSGS, max_tokens=24,
                                            temperature=0)
        c = r.choices[0]
        self.assertIn(c.finish_reason, ("stop", "length"))
        self.assertLessEqual(r.usage.completion_tokens, 24)
        self.assertGreater(r.usage.prompt_tokens, 5)
        s = self.oa.chat.completions.create(model=self.model, messages=MSGS, max_tokens=24,
                                            temperature=0, stream=True,
                                            stream_options={"include_usage": True})
        text, finish, usage, n_chunks = "", None, None, 0
        for ch in s:
            if ch.usage:
                usage = ch.usage
            for x in ch.choices:
                n_chunks += 1
                text += x.delta.content or ""
                finish = x.finish_reason or finish
        self.assertEqual(text, c.message.content)
        self.assertEqual(finish, c.finish_reason)
        self.assertEqual(usage.completion_tokens, r.usage.completion_tokens)
        self.assertEqual(usage.prompt_tokens, r.usage.prompt_tokens)
        self.assertGreater(n_chunks, 2)

    def test_seed_reproduces_and_n(self):
        kw = dict(model=self.model, messages=MSGS, max_tokens=16, temperature=1.0, top_p=0.95,
                  extra_body={"min_p": 0.01, "top_k": 50})
        a = self.oa.chat.completions.create(seed=1234, **kw)
        b = self.oa.chat.completions.create(seed=1234, **kw)
        self.assertEqual(a.choices[0].message.content, b.choices[0].message.content)
        n = self.oa.chat.completions.create(seed=1234, n=3, **kw)
        self.assertEqual([c.index for c in n.choices], [0, 1, 2])
        # choice i samples with seed + i: choice 0 is the single request's answer
        self.assertEqual(n.choices[0].message.content, a.choices[0].message.content)
        self.assertGreaterEqual(n.usage.completion_tokens, a.usage.completion_tokens)
        texts = {c.message.content for c in n.choices}
        self.assertGreater(len(texts), 1, "different seeds per choice")

    def test_stop_string(self):
        r = self.oa.chat.completions.create(model=self.model, messages=MSGS, max_tokens=40,
                                            temperature=0)
        full = r.choices[0].message.content
        # a stop string from the middle of the greedy answer that does not occur earlier
        for k in range(4, len(full) - 3):
            cand = full[k:k + 3]
            if full.find(cand) == k and cand.strip() and "\ufffd" not in cand:
                break
        else:
            self.skipTest("no usable stop string in " + repr(full))
        r2 = self.oa.chat.completions.create(model=self.model, messages=MSGS, max_tokens=40,
                                             temperature=0, stop=[cand])
        self.assertEqual(r2.choices[0].message.content, full[:k])
        self.assertEqual(r2.choices[0].finish_reason, "stop")
        s = self.oa.chat.completions.create(model=self.model, messages=MSGS, max_tokens=40,
                                            temperature=0, stop=cand, stream=True)
        self.assertEqual("".join(c.choices[0].delta.content or "" for c in s if c.choices),
                         full[:k])

    def test_completions(self):
        r = self.oa.completions.create(model=self.model, prompt="Once upon a time", max_tokens=12,
                                       temperature=0)
        self.assertEqual(r.object, "text_completion")
        self.assertLessEqual(r.usage.completion_tokens, 12)
        s = self.oa.completions.create(model=self.model, prompt="Once upon a time", max_tokens=12,
                                       temperature=0, stream=True)
        self.assertEqual("".join(c.choices[0].text for c in s if c.choices), r.choices[0].text)

    def test_anthropic(self):
        r = self.an.messages.create(model=self.model, max_tokens=16,
                                    extra_body={"temperature": 0}, messages=MSGS)
        self.assertEqual(r.type, "message")
        self.assertIn(r.stop_reason, ("end_turn", "max_tokens"))
        self.assertLessEqual(r.usage.output_tokens, 16)
        with self.an.messages.stream(model=self.model, max_tokens=16,
                                     extra_body={"temperature": 0}, messages=MSGS) as s:
            text = "".join(s.text_stream)
            final = s.get_final_message()
        self.assertEqual(text, r.content[0].text if r.content else "")
        self.assertEqual(final.usage.output_tokens, r.usage.output_tokens)
        r = self.an.messages.create(model=self.model, max_tokens=16, messages=MSGS,
                                    thinking={"type": "enabled", "budget_tokens": 1024})
        self.assertEqual(r.content[0].type, "thinking")

    def test_curl_stream(self):
        body = json.dumps({"model": self.model, "messages": MSGS, "max_tokens": 8,
                           "stream": True})
        out = subprocess.run(["curl", "-sN", self.srv.base + "/v1/chat/completions",
                              "-H", "Content-Type: application/json", "-d", body],
                             capture_output=True, text=True, timeout=60, check=True).stdout
        ev = sse_events(out)
        self.assertEqual(ev[-1][1], "[DONE]")
        first = json.loads(ev[0][1])
        self.assertEqual(first["object"], "chat.completion.chunk")
        self.assertEqual(first["choices"][0]["delta"]["role"], "assistant")
        last = json.loads(ev[-2][1])
        self.assertIn(last["choices"][0]["finish_reason"], ("stop", "length"))

    def test_metrics(self):
        self.oa.chat.completions.create(model=self.model, messages=MSGS, max_tokens=4)
        m = self.srv.metrics()
        for name in ("vllm:num_requests_running", "vllm:num_requests_waiting",
                     "vllm:prompt_tokens_total", "vllm:generation_tokens_total",
                     "vllm:kv_cache_usage_perc", "vllm:prefix_cache_queries_total",
                     "vllm:prefix_cache_hits_total", "vllm:time_to_first_token_seconds_count",
                     "vllm:inter_token_latency_seconds_count",
                     "vllm:e2e_request_latency_seconds_count"):
            self.assertIn(name, m)
        self.assertGreater(m["vllm:generation_tokens_total"], 0)
        self.assertGreater(m["vllm:time_to_first_token_seconds_count"], 0)
        self.assertGreater(m["vllm:e2e_request_latency_seconds_count"], 0)
        # promtool (Debian package prometheus, installed by scripts/install-deps.sh) lints it
        promtool = subprocess.run(["sh", "-c", "command -v promtool"], capture_output=True)
        self.assertEqual(promtool.returncode, 0, "promtool missing: run scripts/install-deps.sh")
        st, _, data = self.srv.request("GET", "/metrics")
        r = subprocess.run(["promtool", "check", "metrics"], input=data, capture_output=True)
        # exit 1 = does not parse; 3 = lint findings. The only finding allowed is the one
        # vLLM's own names carry: "vllm:..." (and our "hadal:...") contain a colon, which
        # promtool reserves for recording rules; dashboards query exactly those names.
        self.assertIn(r.returncode, (0, 3), r.stdout + r.stderr)
        findings = [l for l in (r.stdout + r.stderr).decode().splitlines() if l.strip()]
        for line in findings:
            self.assertTrue(line.endswith("metric names should not contain ':'") and
                            line.split()[0].startswith(("vllm:", "hadal:")), line)

    def test_logprobs_through_the_cluster(self):
        r = self.oa.chat.completions.create(model=self.model, messages=MSGS, max_tokens=5,
                                            temperature=0, logprobs=True, top_logprobs=2,
                                            extra_body={"ignore_eos": True})
        lp = r.choices[0].logprobs.content
        self.assertEqual(len(lp), 5)
        for e in lp:
            self.assertEqual(len(e.top_logprobs), 2)
            self.assertAlmostEqual(e.logprob, e.top_logprobs[0].logprob, places=4)
        # the same tokens and numbers as the in-process grid (class Logprobs runs first)
        ref = getattr(Logprobs, "canonical", None)
        if ref is not None:
            self.assertEqual([(e.token, round(e.logprob, 3)) for e in lp], ref)

    def test_disconnect_cancels_and_frees_kv(self):
        before = self.srv.metrics()
        s = socket.create_connection(("127.0.0.1", self.srv.port))
        body = json.dumps({"model": self.model, "stream": True, "max_tokens": 3000,
                           "ignore_eos": True, "messages": MSGS})
        s.sendall((f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                   f"application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}").encode())
        s.settimeout(30)
        got = b""
        while got.count(b"data: ") < 4:
            got += s.recv(65536)
        self.srv.wait_metric("vllm:num_requests_running", lambda v: v >= 1)
        # the workers report the KV they hold in their heartbeats (every 500 ms)
        self.srv.wait_metric("hadal:kv_bytes", lambda v: v > 0)
        s.close()
        self.srv.wait_metric("vllm:num_requests_running", lambda v: v == 0)
        self.srv.wait_metric("hadal:kv_sequences", lambda v: v == 0)
        self.srv.wait_metric("hadal:kv_bytes", lambda v: v == 0)
        self.srv.wait_metric("hadal:client_disconnects_total",
                                 lambda v: v >= before["hadal:client_disconnects_total"] + 1)
        gen = self.srv.metrics()["vllm:generation_tokens_total"]
        time.sleep(0.5)
        self.assertEqual(self.srv.metrics()["vllm:generation_tokens_total"], gen,
                         "nothing is generated after the cancel")
        self.assertLess(gen - before["vllm:generation_tokens_total"], 3000)


class Logprobs(unittest.TestCase):
    """logprobs / top_logprobs through the in-process backend (test_model.Model checks the
    process cluster's)."""

    @classmethod
    def setUpClass(cls):
        cls.srv = Server("--in-process", "--pp", "1", "--ep", "1", "--threads", "1").start()
        cls.oa = openai.OpenAI(base_url=cls.srv.base + "/v1", api_key="none", max_retries=0)

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()

    def test_chat_logprobs(self):
        m = self.srv.model
        r = self.oa.chat.completions.create(model=m, messages=MSGS, max_tokens=6, temperature=0,
                                            logprobs=True, top_logprobs=3, extra_body={
                                                "ignore_eos": True})
        lp = r.choices[0].logprobs.content
        self.assertEqual(len(lp), r.usage.completion_tokens)
        for e in lp:
            self.assertLessEqual(e.logprob, 0.0)
            self.assertEqual(len(e.top_logprobs), 3)
            self.assertEqual(bytes(e.bytes).decode("utf-8", "replace"), e.token)
            tops = [t.logprob for t in e.top_logprobs]
            self.assertEqual(tops, sorted(tops, reverse=True))
            # greedy: the sampled token is the most likely one
            self.assertAlmostEqual(e.logprob, tops[0], places=4)
        s = self.oa.chat.completions.create(model=m, messages=MSGS, max_tokens=6, temperature=0,
                                            logprobs=True, top_logprobs=2, stream=True,
                                            extra_body={"ignore_eos": True})
        got = [e for c in s if c.choices and c.choices[0].logprobs
               for e in c.choices[0].logprobs.content]
        self.assertEqual([e.token for e in got], [e.token for e in lp])
        self.assertEqual([round(e.logprob, 4) for e in got], [round(e.logprob, 4) for e in lp])
        self.assertTrue(all(len(e.top_logprobs) == 2 for e in got))
        r = self.oa.chat.completions.create(model=m, messages=MSGS, max_tokens=3, logprobs=True)
        self.assertEqual(r.choices[0].logprobs.content[0].top_logprobs, [])
        r = self.oa.chat.completions.create(model=m, messages=MSGS, max_tokens=5, temperature=0,
                                            logprobs=True, top_logprobs=2,
                                            extra_body={"ignore_eos": True})
        Logprobs.canonical = [(e.token, round(e.logprob, 3)) for e in r.choices[0].logprobs.content]

    def test_completion_logprobs(self):
        r = self.oa.completions.create(model=self.srv.model, prompt="Once upon", max_tokens=5,
                                       temperature=0, logprobs=2, extra_body={"ignore_eos": True})
        lp = r.choices[0].logprobs
        self.assertEqual(len(lp.tokens), 5)
        self.assertEqual(len(lp.token_logprobs), 5)
        self.assertEqual(len(lp.top_logprobs), 5)
        self.assertEqual(lp.text_offset[0], 0)
        self.assertTrue(all(len(t) <= 2 for t in lp.top_logprobs))


class NotReady(unittest.TestCase):
    """`hadal coordinator` waits for workers to join: until then /ready and every generation
    request answer 503 with Retry-After (in each API's shape); once a worker joins, it serves."""

    def test_503_until_a_worker_joins(self):
        srv = Server("--pp", "1", "--ep", "1", command="coordinator").start(wait_ready=False)
        worker = None
        try:
            st, h, _ = srv.request("GET", "/ready")
            self.assertEqual(st, 503)
            self.assertIn("Retry-After", h)
            self.assertEqual(srv.request("GET", "/health")[0], 200)
            body = {"model": srv.model, "max_tokens": 4, "messages": MSGS}
            st, h, j = srv.post_json("/v1/chat/completions", body)
            self.assertEqual(st, 503, j)
            self.assertEqual(h.get("Retry-After"), "1")
            self.assertEqual(j["error"]["type"], "service_unavailable_error")
            st, h, j = srv.post_json("/v1/messages", body)
            self.assertEqual(st, 503)
            self.assertEqual(j["error"]["type"], "overloaded_error")
            worker = subprocess.Popen([os.environ["HADAL_BIN"], "worker", "--coordinator",
                                       srv.control, "--threads", "1", "--exit-on-disconnect"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            t0 = time.time()
            while srv.request("GET", "/ready")[0] != 200 and time.time() - t0 < 60:
                time.sleep(0.1)
            st, _, j = srv.post_json("/v1/chat/completions", body)
            self.assertEqual(st, 200, j)
        finally:
            srv.stop()
            if worker is not None:
                try:
                    worker.wait(30)
                except subprocess.TimeoutExpired:
                    worker.kill()
                    worker.wait()


class Auth(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        d = tempfile.mkdtemp(prefix="hadal-keys-")
        path = os.path.join(d, "keys")
        with open(path, "w") as f:
            f.write("# keys\nsk-one\n  sk-two  \n")
        cls.srv = Server("--api-key-file", path, "--in-process", "--pp", "1", "--ep", "1",
                         env={"HADAL_API_KEY": "sk-env"}).start()

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()

    def test_keys(self):
        base = self.srv.base
        m = self.srv.model
        for bad in ("none", "sk-on", "sk-one-more", ""):
            with self.assertRaises(openai.AuthenticationError):
                openai.OpenAI(base_url=base + "/v1", api_key=bad or "x", max_retries=0) \
                    .chat.completions.create(model=m, messages=MSGS, max_tokens=2)
        st, _, j = self.srv.post_json("/v1/chat/completions",
                                      {"model": m, "messages": MSGS, "max_tokens": 2})
        self.assertEqual(st, 401)
        self.assertEqual(j["error"]["type"], "authentication_error")
        st, _, j = self.srv.post_json("/v1/messages",
                                      {"model": m, "messages": MSGS, "max_tokens": 2})
        self.assertEqual(st, 401)
        self.assertEqual(j["error"]["type"], "authentication_error")
        for key in ("sk-one", "sk-two", "sk-env"):
            r = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0) \
                .chat.completions.create(model=m, messages=MSGS, max_tokens=2)
            self.assertEqual(len(r.choices), 1)
        r = anthropic.Anthropic(base_url=base, api_key="sk-two", max_retries=0) \
            .messages.create(model=m, max_tokens=2, messages=MSGS)
        self.assertEqual(r.type, "message")
        with self.assertRaises(anthropic.AuthenticationError):
            anthropic.Anthropic(base_url=base, api_key="sk-bad", max_retries=0) \
                .messages.create(model=m, max_tokens=2, messages=MSGS)
        for path in ("/health", "/ready", "/metrics"):
            self.assertEqual(self.srv.request("GET", path)[0], 200, path)
        self.assertEqual(self.srv.request("GET", "/v1/models")[0], 401)


if __name__ == "__main__":
    unittest.main(verbosity=2)
