"""Start and stop a real `hadal serve` for the end-to-end API tests.

The binary comes from $HADAL_BIN (CTest passes it); the server listens on a free port that it
prints on stderr. Helpers for raw HTTP (http.client, so malformed requests are possible) and
for reading /metrics with the official Prometheus parser.
"""
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from prometheus_client.parser import text_string_to_metric_families

HERE = os.path.dirname(os.path.abspath(__file__))
E = "<｜end▁of▁sentence｜>"
D = "｜DSML｜"
TOOL_DSML = (f"\n\n<{D}tool_calls>\n<{D}invoke name=\"get_weather\">\n"
             f"<{D}parameter name=\"city\" string=\"true\">Paris</{D}parameter>\n"
             f"<{D}parameter name=\"days\" string=\"false\">3</{D}parameter>\n"
             f"</{D}invoke>\n</{D}tool_calls>")
REPLAY = {
    "text": "Hello world! The answer is 42. STOP here." + E,
    "think": "The user greets me. I should answer briefly.</think>Hi there, friend." + E,
    "tool": "I will look it up." + TOOL_DSML + E,
    "think_tool": "Need weather data.</think>" + TOOL_DSML + E,
    "long": " ".join(["word"] * 3000) + E,
}
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                    "days": {"type": "integer"}},
                   "required": ["city"]}}}


def hadal_bin():
    b = os.environ.get("HADAL_BIN")
    if not b or not os.path.exists(b):
        sys.exit(f"HADAL_BIN is not set to the hadal binary (got {b!r})")
    return b


class Server:
    """A `hadal serve` process: Server(args).start() ... .stop()."""

    def __init__(self, *args, env=None, command="serve"):
        self.command = command
        self.args = list(args)
        self.env = dict(os.environ, **(env or {}))
        self.proc = None
        self.port = None
        self.log = []
        self.tmp = tempfile.mkdtemp(prefix="hadal-api-")

    def start(self, timeout=120, wait_ready=True):
        cache = os.environ.get("HADAL_TEST_CACHE", os.path.join(self.tmp, "cache"))
        cmd = [hadal_bin(), self.command, "--port", "0", "--cache", cache] + self.args
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     env=self.env, text=True)
        t0 = time.time()
        while time.time() - t0 < timeout:
            line = self.proc.stderr.readline()
            if not line:
                raise RuntimeError("hadal serve exited: " + "".join(self.log))
            self.log.append(line)
            m = re.search(r"coordinator on ([^ ,]+), grid", line)
            if m:
                self.control = m.group(1)
            m = re.search(r"serving (\S+) on http://[^:]+:(\d+)", line)
            if m:
                self.model = m.group(1)
                self.port = int(m.group(2))
                threading.Thread(target=self._drain, daemon=True).start()
                while wait_ready and self.request("GET", "/ready")[0] != 200:
                    if time.time() - t0 > timeout or not self.alive():
                        raise RuntimeError("hadal serve never ready: " + "".join(self.log))
                    time.sleep(0.05)
                return self
        raise RuntimeError("hadal serve did not start: " + "".join(self.log))

    def _drain(self):
        for line in self.proc.stderr:
            self.log.append(line)

    @property
    def base(self):
        return f"http://127.0.0.1:{self.port}"

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)
        time.sleep(0.1)  # the drain thread takes the last lines
        bad = [l for l in self.log if "Sanitizer" in l or "runtime error:" in l]
        if bad:
            raise AssertionError("sanitizer report from hadal serve:\n" + "".join(self.log[-80:]))
        return self.proc.returncode

    def alive(self):
        return self.proc.poll() is None

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    # ---- raw HTTP ----
    def request(self, method, path, body=None, headers=None, timeout=60):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, dict(r.getheaders()), data

    def post_json(self, path, body, headers=None):
        st, h, data = self.request("POST", path, body, headers)
        try:
            return st, h, json.loads(data)
        except ValueError:
            return st, h, data

    def metrics(self):
        st, _, data = self.request("GET", "/metrics")
        assert st == 200, st
        out = {}
        for fam in text_string_to_metric_families(data.decode()):
            for s in fam.samples:
                labels = {k: v for k, v in s.labels.items() if k != "model_name"}
                key = s.name + ("" if not labels else
                                "{" + ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
                                + "}")
                out[key] = s.value
        return out

    def wait_metric(self, name, pred, timeout=15):
        t0 = time.time()
        v = None
        while time.time() - t0 < timeout:
            v = self.metrics().get(name)
            if v is not None and pred(v):
                return v
            time.sleep(0.05)
        raise AssertionError(f"metric {name} = {v} after {timeout}s")


def replay_server(*extra):
    path = os.path.join(tempfile.mkdtemp(prefix="hadal-replay-"), "replay.json")
    with open(path, "w") as f:
        json.dump(REPLAY, f, ensure_ascii=False)
    return Server("--replay", path, *extra)


def sse_events(raw):
    """Split an SSE body into (event, data) pairs."""
    out = []
    for block in raw.split("\n\n"):
        ev, data = None, []
        for line in block.split("\n"):
            if line.startswith("event: "):
                ev = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
        if data:
            out.append((ev, "\n".join(data)))
    return out
