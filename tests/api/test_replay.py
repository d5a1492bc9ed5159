"""End-to-end API tests with known output: `hadal serve --replay` (the sampler replays fixed
completions), through the official openai and anthropic clients and raw HTTP.

Tool calls (DSML -> tool_calls / tool_use, streamed argument deltas), reasoning
(reasoning_content / thinking blocks), stop strings, the Anthropic event sequence, admission
(429 + Retry-After), client disconnects (cancelled on the backend, KV released, seen in
/metrics), slow clients, and bad input answered in each API's own error shape.
"""
import json
import os
import socket
import sys
import threading
import time
import unittest

import anthropic
import openai

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hadal_server import REPLAY, WEATHER_TOOL, replay_server, sse_events  # noqa: E402

ANTH_TOOL = {"name": "get_weather", "description": "Weather for a city",
             "input_schema": WEATHER_TOOL["function"]["parameters"]}


class Replay(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = replay_server("--max-context", "512", "--max-body", "65536",
                                "--http-timeout", "2").start()
        cls.oa = openai.OpenAI(base_url=cls.srv.base + "/v1", api_key="none", max_retries=0)
        cls.an = anthropic.Anthropic(base_url=cls.srv.base, api_key="none", max_retries=0)
        cls.model = cls.srv.model

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()

    def chat(self, script, **kw):
        kw.setdefault("messages", [{"role": "user", "content": "hi"}])
        return self.oa.chat.completions.create(model=self.model,
                                               extra_headers={"X-Hadal-Replay": script}, **kw)

    # ---- OpenAI ----
    def test_text_and_usage(self):
        r = self.chat("text")
        self.assertEqual(r.choices[0].message.content, "Hello world! The answer is 42. STOP here.")
        self.assertEqual(r.choices[0].finish_reason, "stop")
        self.assertGreater(r.usage.prompt_tokens, 0)
        self.assertEqual(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens)
        self.assertEqual(r.usage.prompt_tokens_details.cached_tokens, 0)

    def test_stop_string(self):
        r = self.chat("text", stop=["STOP"])
        self.assertEqual(r.choices[0].message.content, "Hello world! The answer is 42. ")
        self.assertEqual(r.choices[0].finish_reason, "stop")
        # streamed: the same text, never a piece of the stop string
        s = self.chat("text", stop=["STOP", "zzz"], stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in s if c.choices)
        self.assertEqual(text, "Hello world! The answer is 42. ")

    def test_max_tokens_length(self):
        r = self.chat("long", max_tokens=7)
        self.assertEqual(r.choices[0].finish_reason, "length")
        self.assertEqual(r.usage.completion_tokens, 7)
        r = self.chat("long", max_completion_tokens=5)
        self.assertEqual(r.usage.completion_tokens, 5)

    def test_n_choices(self):
        r = self.chat("text", n=3)
        self.assertEqual([c.index for c in r.choices], [0, 1, 2])
        for c in r.choices:
            self.assertEqual(c.message.content, "Hello world! The answer is 42. STOP here.")
        s = self.chat("text", n=2, stream=True)
        texts = {0: "", 1: ""}
        for c in s:
            for ch in c.choices:
                texts[ch.index] += ch.delta.content or ""
        self.assertEqual(texts[0], texts[1])

    def test_tool_call(self):
        r = self.chat("tool", tools=[WEATHER_TOOL])
        m = r.choices[0].message
        self.assertEqual(r.choices[0].finish_reason, "tool_calls")
        self.assertEqual(m.content, "I will look it up.")
        self.assertEqual(len(m.tool_calls), 1)
        self.assertEqual(m.tool_calls[0].function.name, "get_weather")
        self.assertEqual(json.loads(m.tool_calls[0].function.arguments),
                         {"city": "Paris", "days": 3})
        self.assertTrue(m.tool_calls[0].id)

    def test_tool_call_stream_deltas(self):
        s = self.chat("tool", tools=[WEATHER_TOOL], stream=True,
                      stream_options={"include_usage": True})
        deltas, content, finish, usage = [], "", None, None
        for c in s:
            if c.usage:
                usage = c.usage
            for ch in c.choices:
                content += ch.delta.content or ""
                for tc in ch.delta.tool_calls or []:
                    deltas.append(tc)
                if ch.finish_reason:
                    finish = ch.finish_reason
        self.assertEqual(content, "I will look it up.")
        self.assertEqual(finish, "tool_calls")
        self.assertEqual(deltas[0].function.name, "get_weather")
        self.assertTrue(deltas[0].id)
        self.assertGreater(len(deltas), 2, "arguments arrive in several deltas")
        args = "".join(d.function.arguments or "" for d in deltas)
        self.assertEqual(json.loads(args), {"city": "Paris", "days": 3})
        self.assertIsNotNone(usage)
        self.assertGreater(usage.completion_tokens, 10)

    def test_reasoning(self):
        r = self.chat("think", reasoning_effort="high")
        m = r.choices[0].message
        self.assertEqual(m.content, "Hi there, friend.")
        self.assertEqual(m.model_extra["reasoning_content"],
                         "The user greets me. I should answer briefly.")
        s = self.chat("think", reasoning_effort="max", stream=True)
        reasoning, content = "", ""
        for c in s:
            for ch in c.choices:
                reasoning += (ch.delta.model_extra or {}).get("reasoning_content") or ""
                content += ch.delta.content or ""
        self.assertEqual(reasoning, "The user greets me. I should answer briefly.")
        self.assertEqual(content, "Hi there, friend.")

    def test_reasoning_then_tool(self):
        r = self.chat("think_tool", tools=[WEATHER_TOOL], extra_body={"thinking": {"type": "enabled"}})
        m = r.choices[0].message
        self.assertEqual(m.model_extra["reasoning_content"], "Need weather data.")
        self.assertEqual(m.tool_calls[0].function.name, "get_weather")

    def test_completions(self):
        r = self.oa.completions.create(model=self.model, prompt="Say hi", max_tokens=50,
                                       extra_headers={"X-Hadal-Replay": "text"})
        self.assertEqual(r.choices[0].text, "Hello world! The answer is 42. STOP here.")
        self.assertEqual(r.choices[0].finish_reason, "stop")
        s = self.oa.completions.create(model=self.model, prompt=[1, 2, 3], max_tokens=50,
                                       stream=True, stop="answer",
                                       extra_headers={"X-Hadal-Replay": "text"})
        self.assertEqual("".join(c.choices[0].text for c in s if c.choices), "Hello world! The ")

    def test_json_mode_accepted(self):
        r = self.chat("text", response_format={"type": "json_object"})
        self.assertEqual(r.choices[0].finish_reason, "stop")
        with self.assertRaises(openai.BadRequestError):
            self.chat("text", response_format={"type": "yaml"})

    # ---- Anthropic ----
    def test_anthropic_text_and_stop_sequence(self):
        r = self.an.messages.create(model=self.model, max_tokens=100,
                                    messages=[{"role": "user", "content": "hi"}],
                                    extra_headers={"X-Hadal-Replay": "text"})
        self.assertEqual(r.content[0].text, "Hello world! The answer is 42. STOP here.")
        self.assertEqual(r.stop_reason, "end_turn")
        self.assertGreater(r.usage.input_tokens, 0)
        r = self.an.messages.create(model=self.model, max_tokens=100, stop_sequences=["STOP"],
                                    system="be brief",
                                    messages=[{"role": "user", "content": "hi"}],
                                    extra_headers={"X-Hadal-Replay": "text"})
        self.assertEqual(r.content[0].text, "Hello world! The answer is 42. ")
        self.assertEqual(r.stop_reason, "stop_sequence")
        self.assertEqual(r.stop_sequence, "STOP")
        r = self.an.messages.create(model=self.model, max_tokens=4,
                                    messages=[{"role": "user", "content": "hi"}],
                                    extra_headers={"X-Hadal-Replay": "long"})
        self.assertEqual(r.stop_reason, "max_tokens")
        self.assertEqual(r.usage.output_tokens, 4)

    def test_anthropic_thinking_tool_use(self):
        r = self.an.messages.create(model=self.model, max_tokens=200, tools=[ANTH_TOOL],
                                    thinking={"type": "enabled", "budget_tokens": 2048},
                                    messages=[{"role": "user", "content": "weather?"}],
                                    extra_headers={"X-Hadal-Replay": "think_tool"})
        self.assertEqual([b.type for b in r.content], ["thinking", "tool_use"])
        self.assertEqual(r.content[0].thinking, "Need weather data.")
        self.assertEqual(r.content[1].name, "get_weather")
        self.assertEqual(r.content[1].input, {"city": "Paris", "days": 3})
        self.assertEqual(r.stop_reason, "tool_use")
        # a follow-up turn with the tool result encodes
        r2 = self.an.messages.create(
            model=self.model, max_tokens=100, tools=[ANTH_TOOL],
            messages=[{"role": "user", "content": "weather?"},
                      {"role": "assistant", "content": [
                          {"type": "tool_use", "id": r.content[1].id, "name": "get_weather",
                           "input": {"city": "Paris"}}]},
                      {"role": "user", "content": [
                          {"type": "tool_result", "tool_use_id": r.content[1].id,
                           "content": "sunny"}]}],
            extra_headers={"X-Hadal-Replay": "text"})
        self.assertEqual(r2.stop_reason, "end_turn")

    def test_anthropic_stream_event_sequence(self):
        kinds = []
        with self.an.messages.stream(model=self.model, max_tokens=200, tools=[ANTH_TOOL],
                                     thinking={"type": "enabled", "budget_tokens": 2048},
                                     messages=[{"role": "user", "content": "weather?"}],
                                     extra_headers={"X-Hadal-Replay": "think_tool"}) as s:
            for ev in s:
                if ev.type in ("message_start", "content_block_start", "content_block_stop",
                               "message_delta", "message_stop"):
                    kinds.append(ev.type if ev.type != "content_block_start"
                                 else "start:" + ev.content_block.type)
                elif ev.type == "content_block_delta":
                    k = "delta:" + ev.delta.type
                    if not kinds or kinds[-1] != k:
                        kinds.append(k)
            final = s.get_final_message()
        self.assertEqual(kinds, ["message_start", "start:thinking", "delta:thinking_delta",
                                 "delta:signature_delta", "content_block_stop", "start:tool_use",
                                 "delta:input_json_delta", "content_block_stop", "message_delta",
                                 "message_stop"])
        self.assertEqual(final.content[1].input, {"city": "Paris", "days": 3})
        self.assertEqual(final.stop_reason, "tool_use")
        text = ""
        with self.an.messages.stream(model=self.model, max_tokens=100,
                                     messages=[{"role": "user", "content": "hi"}],
                                     extra_headers={"X-Hadal-Replay": "text",
                                                    "anthropic-version": "1999-01-01"}) as s:
            for t in s.text_stream:
                text += t
        self.assertEqual(text, REPLAY["text"][:-len("<｜end▁of▁sentence｜>")])

    # ---- bad input ----
    def check_err(self, path, body, status, raw=False, anth=False, headers=None):
        if raw:
            st, h, data = self.srv.request("POST", path, body, headers)
            j = json.loads(data)
        else:
            st, h, j = self.srv.post_json(path, body, headers)
        self.assertEqual(st, status, j)
        if anth:
            self.assertEqual(j["type"], "error")
            self.assertIn("message", j["error"])
            self.assertIn("type", j["error"])
        else:
            self.assertIn("message", j["error"])
            self.assertIn("type", j["error"])
        return j

    def test_bad_input(self):
        m = self.model
        msgs = [{"role": "user", "content": "hi"}]
        p = "/v1/chat/completions"
        self.check_err(p, '{"model": "x", "messages": [', 400, raw=True)
        self.check_err(p, "[1, 2]", 400, raw=True)
        self.check_err(p, b"\xff\xfe{}", 400, raw=True)
        self.check_err(p, {"model": m, "messages": msgs, "max_tokens": "ten"}, 400)
        self.check_err(p, {"model": m, "messages": msgs, "temperature": "hot"}, 400)
        self.check_err(p, {"model": m, "messages": msgs, "temperature": 7}, 400)
        self.check_err(p, {"model": m, "messages": "hi"}, 400)
        j = self.check_err(p, {"model": m, "messages": msgs, "frobnicate": 1}, 400)
        self.assertEqual(j["error"]["param"], "frobnicate")
        self.check_err(p, {"model": m, "messages": []}, 400)
        self.check_err(p, {"model": m}, 400)
        self.check_err(p, {"model": m, "messages": [{"role": "wizard", "content": "x"}]}, 400)
        self.check_err(p, {"model": m, "messages": msgs, "n": 0}, 400)
        self.check_err(p, {"model": m, "messages": msgs, "max_tokens": 0}, 400)
        j = self.check_err(p, {"model": m, "messages": msgs, "max_tokens": 100000}, 400)
        self.assertEqual(j["error"]["code"], "context_length_exceeded")
        long_msgs = [{"role": "user", "content": "hello " * 2000}]
        j = self.check_err(p, {"model": m, "messages": long_msgs}, 400)
        self.assertEqual(j["error"]["code"], "context_length_exceeded")
        j = self.check_err(p, {"model": "gpt-17", "messages": msgs}, 404)
        self.assertEqual(j["error"]["code"], "model_not_found")
        self.check_err(p, {"model": m, "messages": msgs, "logprobs": True}, 400)
        self.check_err(p, {"model": m, "messages": msgs, "stream_options": {"include_usage": True}},
                       400)
        self.check_err(p, {"model": m, "messages": msgs, "tools": [{"type": "function"}]}, 400)
        self.check_err(p, {"model": m, "messages": msgs, "pad": "x" * 70000}, 413)
        self.check_err("/v1/completions", {"model": m, "prompt": ""}, 400)
        self.check_err("/v1/completions", {"model": m, "prompt": ["a", "b"]}, 400)
        self.check_err("/v1/completions", {"model": m, "prompt": [-1]}, 400)
        # Anthropic shape
        a = "/v1/messages"
        self.check_err(a, '{"model": ', 400, raw=True, anth=True)
        self.check_err(a, {"model": m, "messages": msgs}, 400, anth=True)  # no max_tokens
        self.check_err(a, {"model": m, "max_tokens": 10, "messages": []}, 400, anth=True)
        self.check_err(a, {"model": m, "max_tokens": 10, "messages": msgs, "foo": 1}, 400,
                       anth=True)
        self.check_err(a, {"model": m, "max_tokens": 10, "messages": [
            {"role": "user", "content": [{"type": "image", "source": {}}]}]}, 400, anth=True)
        j = self.check_err(a, {"model": "claude", "max_tokens": 10, "messages": msgs}, 404,
                           anth=True)
        self.assertEqual(j["error"]["type"], "not_found_error")
        j = self.check_err(a, {"model": m, "max_tokens": 10, "messages": msgs, "pad": "y" * 70000},
                           413, anth=True)
        self.assertEqual(j["error"]["type"], "request_too_large")
        # routing
        st, _, data = self.srv.request("GET", "/v1/chat/completions")
        self.assertEqual(st, 405)
        st, _, data = self.srv.request("GET", "/nope")
        self.assertEqual(st, 404)
        self.assertIn("error", json.loads(data))
        # client errors through the official client
        with self.assertRaises(openai.NotFoundError):
            self.oa.chat.completions.create(model="nope", messages=msgs)
        with self.assertRaises(anthropic.BadRequestError):
            self.an.messages.create(model=m, max_tokens=10, messages=[])
        self.assertTrue(self.srv.alive())

    def trickle(self, head, piece):
        """Send @head, then @piece every 0.3 s; seconds until the server closes (or None)."""
        s = socket.create_connection(("127.0.0.1", self.srv.port))
        s.sendall(head)
        t0 = time.time()
        try:
            while time.time() - t0 < 10:
                s.sendall(piece)
                time.sleep(0.3)
                try:
                    if s.recv(4096, socket.MSG_DONTWAIT) == b"":
                        return time.time() - t0
                except BlockingIOError:
                    pass
        except (ConnectionResetError, BrokenPipeError):
            return time.time() - t0
        finally:
            s.close()
        return None

    def test_slow_clients_closed(self):
        """Slowloris: headers or a body trickled byte by byte never make a whole request; the
        connection is closed about --http-timeout (2 s) after it was accepted, while other
        requests are served meanwhile."""
        before = self.srv.metrics()["hadal:slow_clients_closed_total"]
        res = {}
        th = threading.Thread(target=lambda: res.update(
            head=self.trickle(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n",
                              b"X-Slow: 1\r\n")))
        th.start()
        self.assertEqual(self.chat("text").choices[0].finish_reason, "stop")
        body = self.trickle(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                            b"Content-Length: 100000\r\n\r\n{", b" ")
        th.join()
        for t in (res["head"], body):
            self.assertIsNotNone(t, "a slow client kept its connection")
            self.assertLess(t, 5)
        self.assertGreaterEqual(self.srv.metrics()["hadal:slow_clients_closed_total"], before + 2)

    def test_keepalive(self):
        import http.client
        c = http.client.HTTPConnection("127.0.0.1", self.srv.port, timeout=10)
        for _ in range(3):
            c.request("GET", "/health")
            r = c.getresponse()
            self.assertEqual(r.status, 200)
            r.read()
        c.close()


class Admission(unittest.TestCase):
    """One running + one waiting request; the next gets 429 with Retry-After; a client that
    goes away is cancelled on the backend and its sequence released."""

    @classmethod
    def setUpClass(cls):
        cls.srv = replay_server("--max-running", "1", "--max-waiting", "1",
                                "--replay-step-ms", "20", "--http-timeout", "1").start()
        cls.model = cls.srv.model

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()

    def open_stream(self, script="long", max_tokens=2000):
        s = socket.create_connection(("127.0.0.1", self.srv.port))
        body = json.dumps({"model": self.model, "stream": True, "max_tokens": max_tokens,
                           "messages": [{"role": "user", "content": "hi"}]})
        s.sendall((f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Hadal-Replay: {script}\r\n"
                   f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                   + body).encode())
        return s

    def test_429_and_disconnect_cancels(self):
        before = self.srv.metrics()
        a = self.open_stream()
        a.settimeout(10)
        self.assertIn(b"200 OK", a.recv(4096))
        self.srv.wait_metric("vllm:num_requests_running", lambda v: v == 1)
        b = self.open_stream()
        self.srv.wait_metric("vllm:num_requests_waiting", lambda v: v == 1)
        st, h, j = self.srv.post_json("/v1/chat/completions", {
            "model": self.model, "messages": [{"role": "user", "content": "hi"}]},
            headers={"X-Hadal-Replay": "text"})
        self.assertEqual(st, 429, j)
        self.assertEqual(h.get("Retry-After"), "1")
        self.assertEqual(j["error"]["type"], "rate_limit_error")
        st, h, j = self.srv.post_json("/v1/messages", {
            "model": self.model, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})
        self.assertEqual(st, 429)
        self.assertEqual(j["error"]["type"], "rate_limit_error")
        # both clients go away mid-stream: every sequence is cancelled and released
        self.srv.wait_metric("hadal:kv_sequences", lambda v: v >= 1)
        a.close()
        b.close()
        self.srv.wait_metric("vllm:num_requests_running", lambda v: v == 0)
        self.srv.wait_metric("vllm:num_requests_waiting", lambda v: v == 0)
        self.srv.wait_metric("hadal:kv_sequences", lambda v: v == 0)
        self.srv.wait_metric("hadal:client_disconnects_total",
                             lambda v: v >= before["hadal:client_disconnects_total"] + 2)
        m = self.srv.metrics()
        self.assertEqual(m["hadal:http_requests_in_flight"], 0)
        self.assertGreaterEqual(m["vllm:request_success_total{finished_reason=abort}"], 2)
        self.assertLess(m["vllm:generation_tokens_total"], 4000, "generation stopped")
        # and the server still answers
        st, _, j = self.srv.post_json("/v1/chat/completions", {
            "model": self.model, "messages": [{"role": "user", "content": "hi"}]},
            headers={"X-Hadal-Replay": "text"})
        self.assertEqual(st, 200, j)

    def test_stream_longer_than_timeout(self):
        """--http-timeout bounds how long a request takes to arrive, not its answer: a stream
        of 100 tokens at 20 ms a step (2 s) outlives a 1 s timeout."""
        st, _, data = self.srv.request("POST", "/v1/chat/completions", {
            "model": self.model, "stream": True, "max_tokens": 100,
            "messages": [{"role": "user", "content": "hi"}]}, {"X-Hadal-Replay": "long"})
        self.assertEqual(st, 200)
        ev = sse_events(data.decode())
        self.assertEqual(ev[-1][1], "[DONE]")
        self.assertEqual(json.loads(ev[-2][1])["choices"][0]["finish_reason"], "length")

    def test_queued_longer_than_timeout(self):
        """A request waiting in the queue longer than --http-timeout (1 s) is still answered:
        the first stream takes 2 s, the second (streamed) and third (whole) wait for it."""
        out = {}

        def req(name, stream, tokens):
            out[name] = self.srv.request("POST", "/v1/chat/completions", {
                "model": self.model, "stream": stream, "max_tokens": tokens,
                "messages": [{"role": "user", "content": "hi"}]}, {"X-Hadal-Replay": "long"})

        th = [threading.Thread(target=req, args=("a", True, 100))]
        th[0].start()
        self.srv.wait_metric("vllm:num_requests_running", lambda v: v == 1)
        th.append(threading.Thread(target=req, args=("b", True, 5)))
        th[1].start()
        self.srv.wait_metric("vllm:num_requests_waiting", lambda v: v == 1)
        for t in th:
            t.join()
        th = [threading.Thread(target=req, args=("d", True, 80))]  # 1.6 s
        th[0].start()
        self.srv.wait_metric("vllm:num_requests_running", lambda v: v == 1)
        th.append(threading.Thread(target=req, args=("c", False, 5)))  # whole, queued
        th[1].start()
        for t in th:
            t.join()
        for name in ("a", "b", "d"):
            st, _, data = out[name]
            self.assertEqual(st, 200, name)
            ev = sse_events(data.decode())
            self.assertEqual(ev[-1][1], "[DONE]", name)
            self.assertEqual(json.loads(ev[-2][1])["choices"][0]["finish_reason"], "length")
        self.assertEqual(out["c"][0], 200)
        self.assertEqual(json.loads(out["c"][2])["choices"][0]["finish_reason"], "length")
        st, _, j = self.srv.post_json("/v1/chat/completions", {
            "model": self.model, "messages": [{"role": "user", "content": "hi"}]},
            headers={"X-Hadal-Replay": "no-such-script"})
        self.assertEqual(st, 400)

    def test_disconnect_non_stream(self):
        s = socket.create_connection(("127.0.0.1", self.srv.port))
        body = json.dumps({"model": self.model, "max_tokens": 2000,
                           "messages": [{"role": "user", "content": "hi"}]})
        s.sendall((f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Hadal-Replay: long\r\n"
                   f"Content-Length: {len(body)}\r\n\r\n" + body).encode())
        self.srv.wait_metric("hadal:kv_sequences", lambda v: v >= 1)
        s.close()
        self.srv.wait_metric("hadal:kv_sequences", lambda v: v == 0)
        self.srv.wait_metric("vllm:num_requests_running", lambda v: v == 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
