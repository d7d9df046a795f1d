#!/usr/bin/env python3
"""`moe serve` driven by the official `openai` Python client (and by raw HTTP where a client cannot misbehave on
purpose): non-streaming and streaming chat and completions, the chat template (the same prompt tokens and text as
`moe run --chat`), stop strings, parallel requests (each the same as alone), a client that disconnects, a slow
client, every error status, the API key, a full queue, and a graceful SIGTERM.

Usage: openai_client_test.py --moe BUILD/runtime/moe [unittest args]
"""
import argparse
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import openai

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = os.path.join(ROOT, "tests", "fixtures", "mixtral-tiny-f32.gguf")
MOE = None  # set from --moe


class Server:
    """A `moe serve` process on a free loopback port."""

    def __init__(self, *extra):
        cmd = [MOE, "serve", "-m", MODEL, "--port", "0", "--backend", "cpu", *extra]
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        self.log = []
        deadline = time.time() + 60
        self.port = None
        while time.time() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.log.append(line)
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                break
        if self.port is None:
            self.proc.kill()
            raise RuntimeError("moe serve did not start:\n" + "".join(self.log))
        self._drain = threading.Thread(target=self._read_log, daemon=True)
        self._drain.start()

    def _read_log(self):
        for line in self.proc.stderr:
            self.log.append(line)

    def client(self, api_key="none"):
        return openai.OpenAI(base_url=f"http://127.0.0.1:{self.port}/v1", api_key=api_key, max_retries=0,
                             timeout=60)

    def http(self, method, path, body=None, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        conn.request(method, path, body=data, headers=headers or {})
        r = conn.getresponse()
        payload = r.read()
        conn.close()
        return r.status, payload

    def metrics(self):
        status, body = self.http("GET", "/metrics")
        assert status == 200
        out = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    def stop(self, sig=signal.SIGTERM, timeout=60):
        if sig is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
        rc = self.proc.wait(timeout=timeout)
        self._drain.join(timeout=5)
        self.proc.stderr.close()
        return rc


def moe_run(prompt, n, chat):
    """What `moe run` generates greedily: (prompt token ids, text)."""
    with tempfile.TemporaryDirectory() as d:
        stats = os.path.join(d, "s.json")
        cmd = [MOE, "run", "-m", MODEL, "-p", prompt, "-n", str(n), "--backend", "cpu", "--ctx", "128",
               "--stats-json", stats]
        if chat:
            cmd.append("--chat")
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with open(stats) as f:
            j = json.load(f)
        return j["prompt_tokens"], j["text"], j["stopped_at_eog"]


def open_stream(server, body):
    """A raw streaming request; returns (socket-backed response, connection) after the first event arrived."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    conn.request("POST", "/v1/completions", body=json.dumps(body).encode(),
                 headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    assert r.status == 200, r.status
    first = r.readline()
    assert first.startswith(b"data: "), first
    return r, conn


PROMPTS = ["Hello", "The quick brown fox", "In the beginning", "Once upon a time", "a b c", "Numbers 1 2 3",
           "MoE models", "Goodbye"]


class Serving(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server("--parallel", "8", "--ctx", "4096", "--vram-budget", "16810K", "--timeout", "1")
        cls.client = cls.server.client()

    @classmethod
    def tearDownClass(cls):
        rc = cls.server.stop()
        assert rc == 0, f"moe serve exited {rc}"

    def chat(self, text, **kw):
        kw.setdefault("max_tokens", 12)
        kw.setdefault("temperature", 0)
        return self.client.chat.completions.create(model="mixtral-tiny-f32.gguf",
                                                   messages=[{"role": "user", "content": text}], **kw)

    def test_models_and_health(self):
        models = self.client.models.list()
        self.assertEqual([m.id for m in models.data], ["mixtral-tiny-f32.gguf"])
        status, body = self.server.http("GET", "/health")
        self.assertEqual((status, json.loads(body)["status"]), (200, "ok"))

    def test_chat_uses_the_template_of_moe_run_chat(self):
        ids, text, eog = moe_run("Hello", 12, chat=True)
        r = self.chat("Hello")
        self.assertEqual(r.usage.prompt_tokens, len(ids))
        self.assertEqual(r.choices[0].message.content, text)
        self.assertEqual(r.choices[0].message.role, "assistant")
        self.assertEqual(r.choices[0].finish_reason, "stop" if eog else "length")
        self.assertEqual(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens)

    def test_streamed_chat_is_the_same_text(self):
        whole = self.chat("The quick brown fox")
        chunks = list(self.chat("The quick brown fox", stream=True, stream_options={"include_usage": True}))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        self.assertEqual(text, whole.choices[0].message.content)
        finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        self.assertEqual(finishes, [whole.choices[0].finish_reason])
        self.assertEqual(chunks[0].choices[0].delta.role, "assistant")
        self.assertEqual(chunks[-1].usage.completion_tokens, whole.usage.completion_tokens)

    def test_completion_of_text_and_of_token_ids(self):
        ids, text, _ = moe_run("Once upon a time", 10, chat=False)
        r = self.client.completions.create(model="mixtral-tiny-f32.gguf", prompt="Once upon a time", max_tokens=10,
                                           temperature=0)
        self.assertEqual(r.choices[0].text, text)
        self.assertEqual(r.usage.prompt_tokens, len(ids))
        by_ids = self.client.completions.create(model="mixtral-tiny-f32.gguf", prompt=ids, max_tokens=10,
                                                temperature=0)
        self.assertEqual(by_ids.choices[0].text, text)
        streamed = self.client.completions.create(model="mixtral-tiny-f32.gguf", prompt=ids, max_tokens=10,
                                                  temperature=0, stream=True)
        self.assertEqual("".join(c.choices[0].text for c in streamed if c.choices), text)

    def test_stop_strings_cut_the_text(self):
        full = self.chat("In the beginning", max_tokens=24).choices[0].message.content
        self.assertGreaterEqual(len(full), 8)
        stop = full[len(full) // 2:len(full) // 2 + 2]
        r = self.chat("In the beginning", max_tokens=24, stop=[stop, "zzzz-not-there"])
        self.assertEqual(r.choices[0].message.content, full[:full.find(stop)])
        self.assertEqual(r.choices[0].finish_reason, "stop")
        streamed = self.chat("In the beginning", max_tokens=24, stop=stop, stream=True)
        self.assertEqual("".join(c.choices[0].delta.content or "" for c in streamed if c.choices),
                         full[:full.find(stop)])

    def test_parallel_requests_match_each_alone(self):
        alone = {p: self.chat(p, max_tokens=16).choices[0].message.content for p in PROMPTS}
        sampled = self.chat("Hello", max_tokens=16, temperature=0.9, seed=7).choices[0].message.content
        results, errors = {}, []

        def one(p):
            try:
                results[p] = self.chat(p, max_tokens=16).choices[0].message.content
                results["sampled-" + p] = self.chat("Hello", max_tokens=16, temperature=0.9,
                                                    seed=7).choices[0].message.content
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(repr(e))

        threads = [threading.Thread(target=one, args=(p,)) for p in PROMPTS]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        for p in PROMPTS:
            self.assertEqual(results[p], alone[p], p)
            self.assertEqual(results["sampled-" + p], sampled)

    def test_a_client_that_disconnects_frees_its_request(self):
        before = self.server.metrics()
        r, conn = open_stream(self.server, {"prompt": "Hello", "max_tokens": 4000, "ignore_eos": True,
                                            "stream": True})
        conn.sock.shutdown(socket.SHUT_RDWR)
        conn.close()
        deadline = time.time() + 10
        while time.time() < deadline:
            m = self.server.metrics()
            if m['moe_requests_total{result="cancelled"}'] > before['moe_requests_total{result="cancelled"}']:
                break
            time.sleep(0.02)
        self.assertGreater(m['moe_requests_total{result="cancelled"}'],
                           before['moe_requests_total{result="cancelled"}'])
        self.assertEqual(m["moe_requests_active"], 0)

    def test_a_slow_client_is_cut_off_and_the_server_goes_on(self):
        s = socket.create_connection(("127.0.0.1", self.server.port), timeout=10)
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"prompt\"")
        t0 = time.time()
        data = s.recv(4096)  # the server gives up after --timeout 1
        s.close()
        self.assertLess(time.time() - t0, 8)
        self.assertFalse(data.startswith(b"HTTP/1.1 200"), data)
        self.assertEqual(self.server.http("GET", "/health")[0], 200)

    def test_every_error_is_an_openai_error(self):
        def check(status, body, path="/v1/chat/completions", code=None, param=None, raw=None, method="POST"):
            st, payload = self.server.http(method, path, raw if raw is not None else body,
                                           {"Content-Type": "application/json"})
            self.assertEqual(st, status, payload)
            err = json.loads(payload)["error"]
            self.assertTrue(err["message"])
            self.assertIn("type", err)
            if code:
                self.assertEqual(err["code"], code)
            if param:
                self.assertEqual(err["param"], param)

        user = [{"role": "user", "content": "hi"}]
        check(400, None, raw=b"{not json")
        check(400, {"messages": "hi"}, param="messages")
        check(400, {"messages": []}, param="messages")
        check(400, {"messages": user, "temperature": -1}, param="temperature")
        check(400, {"messages": user, "max_tokens": "many"}, param="max_tokens")
        check(400, {"messages": user, "n": 3}, param="n")
        check(400, {"messages": [{"role": "user", "content": "x " * 5000}]}, code="context_length_exceeded")
        check(400, {"messages": user, "max_tokens": 5000}, code="context_length_exceeded", param="max_tokens")
        check(400, {"prompt": [1, 10 ** 6]}, path="/v1/completions", param="prompt")
        check(404, {"messages": user, "model": "gpt-4"}, code="model_not_found")
        check(404, None, path="/v1/nothing", method="GET")
        check(413, None, raw=b"{" + b" " * (5 << 20) + b"}")
        with self.assertRaises(openai.NotFoundError):
            self.client.chat.completions.create(model="no-such-model", messages=user)
        with self.assertRaises(openai.BadRequestError):
            self.client.chat.completions.create(model="mixtral-tiny-f32.gguf", messages=[])
        with self.assertRaises(openai.BadRequestError):
            self.client.completions.create(model="mixtral-tiny-f32.gguf", prompt="x", top_p=0)


class Limits(unittest.TestCase):
    def test_api_key(self):
        server = Server("--api-key", "s3cret", "--ctx", "64")
        try:
            with self.assertRaises(openai.AuthenticationError):
                server.client("wrong").models.list()
            self.assertEqual(server.http("POST", "/v1/completions", {"prompt": "x"})[0], 401)
            self.assertEqual(server.client("s3cret").models.list().data[0].id, "mixtral-tiny-f32.gguf")
            self.assertEqual(server.http("GET", "/health")[0], 200)
        finally:
            self.assertEqual(server.stop(), 0)

    def test_a_full_queue_gets_429(self):
        server = Server("--parallel", "1", "--queue", "0", "--ctx", "8192")
        try:
            r, conn = open_stream(server, {"prompt": "Hello", "max_tokens": 8000, "ignore_eos": True,
                                           "stream": True})
            with self.assertRaises(openai.RateLimitError):
                server.client().completions.create(model="mixtral-tiny-f32.gguf", prompt="Hi", max_tokens=2)
            conn.close()
        finally:
            self.assertEqual(server.stop(), 0)

    def test_sigterm_finishes_running_requests_refuses_new_ones_and_exits_0(self):
        server = Server("--parallel", "2", "--ctx", "12000", "--shutdown-timeout", "120")
        r, conn = open_stream(server, {"prompt": "Hello", "max_tokens": 11000, "ignore_eos": True, "stream": True})
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        status, body = server.http("POST", "/v1/completions", {"prompt": "Hi", "max_tokens": 2})
        self.assertEqual(status, 503, body)
        self.assertEqual(server.http("GET", "/health")[0], 503)
        events = [line for line in r.read().split(b"\n") if line.startswith(b"data: ")]
        conn.close()
        self.assertEqual(events[-1], b"data: [DONE]")
        last = json.loads(events[-2][6:])
        self.assertEqual(last["choices"][0]["finish_reason"], "length")
        self.assertEqual(server.stop(sig=None, timeout=120), 0)  # the first SIGTERM is enough
        self.assertIn("1 requests finished", "".join(server.log))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--moe", required=True)
    args, rest = ap.parse_known_args()
    MOE = os.path.abspath(args.moe)
    unittest.main(argv=[sys.argv[0], "-v", *rest])
