#!/usr/bin/env python3
"""A bounded load test of `moe serve` on loopback: N concurrent clients (the official `openai` client) each send M
requests -- chat and completions, streamed and not, greedy and sampled, prompts of different lengths -- and the
test checks that no request failed, that the server's resident memory (RSS) stayed flat after the warm-up, and
that the expert cache kept its slot count (its budget) throughout. Stops by itself at --time-limit.

  scripts/serve_load_test.py --moe build/runtime/moe [--clients 8] [--requests 50] [--json out.json]

Exit status 0 when every check held, 1 otherwise; a summary goes to stdout.
"""
import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import openai

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def metrics(port):
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read().decode()
    out = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--moe", default=os.path.join(ROOT, "build", "runtime", "moe"))
    ap.add_argument("--model", default=os.path.join(ROOT, "tests", "fixtures", "mixtral-tiny-f32.gguf"))
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=50, help="per client")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--time-limit", type=float, default=300.0, help="seconds; the test stops there")
    ap.add_argument("--server-args", default="--parallel 8 --ctx 512 --vram-budget 2420K --backend cpu",
                    help="extra `moe serve` flags (the default budget holds 4 of the 8 experts)")
    ap.add_argument("--json", help="write the summary here too")
    args = ap.parse_args()

    cmd = [args.moe, "serve", "-m", args.model, "--port", "0", *args.server_args.split()]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    port = None
    log = []
    for line in proc.stderr:
        log.append(line)
        m = re.search(r"listening on http://[^:]+:(\d+)", line)
        if m:
            port = int(m.group(1))
            break
    if port is None:
        print("moe serve did not start:\n" + "".join(log), file=sys.stderr)
        return 1
    threading.Thread(target=lambda: [log.append(line) for line in proc.stderr], daemon=True).start()

    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=120)
    model_id = client.models.list().data[0].id
    words = "the quick brown fox jumps over a lazy dog while experts route every token".split()
    deadline = time.time() + args.time_limit
    done, failures, tokens = [0], [], [0]
    lock = threading.Lock()
    # Warm-up: the first half of the requests. The server's RSS grows at first as its HTTP worker threads (one per
    # slot and queue place, plus a few) each serve their first connection and touch their stacks and malloc
    # arenas; after that it must stay flat.
    warm = max(1, args.clients * args.requests // 2)
    step = max(1, args.clients * args.requests // 10)
    rss_trace = []  # RSS at every tenth of the requests
    rss_after_warmup = [None]
    slots_seen = set()

    def one_client(c):
        rnd = random.Random(c)
        for i in range(args.requests):
            if time.time() > deadline:
                return
            prompt = " ".join(rnd.choice(words) for _ in range(rnd.randint(1, 40)))
            kind, stream = rnd.choice(["chat", "completion"]), rnd.random() < 0.5
            sampling = {"temperature": 0} if rnd.random() < 0.5 else {"temperature": 0.8, "seed": rnd.randint(0, 99)}
            try:
                if kind == "chat":
                    r = client.chat.completions.create(model=model_id, messages=[{"role": "user", "content": prompt}],
                                                       max_tokens=args.max_tokens, stream=stream,
                                                       stream_options={"include_usage": True} if stream else None,
                                                       **sampling)
                else:
                    r = client.completions.create(model=model_id, prompt=prompt, max_tokens=args.max_tokens,
                                                  stream=stream,
                                                  stream_options={"include_usage": True} if stream else None,
                                                  **sampling)
                if stream:
                    chunks = list(r)
                    finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
                    if len(finishes) != 1 or chunks[-1].usage is None:
                        raise RuntimeError(f"stream ended badly: {finishes}")
                    n = chunks[-1].usage.completion_tokens
                else:
                    n = r.usage.completion_tokens
                with lock:
                    done[0] += 1
                    tokens[0] += n
                    if done[0] == warm:
                        rss_after_warmup[0] = rss_bytes(proc.pid)
                    if done[0] % step == 0:
                        rss_trace.append(rss_bytes(proc.pid))
                    if done[0] % 20 == 0:
                        slots_seen.add(metrics(port)['moe_expert_slots{tier="primary"}'])
            except Exception as e:  # noqa: BLE001 - every failure is counted and reported
                with lock:
                    failures.append(f"client {c} request {i}: {e!r}")

    t0 = time.time()
    threads = [threading.Thread(target=one_client, args=(c,)) for c in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.time() - t0
    rss_end = rss_bytes(proc.pid)
    m = metrics(port)
    slots_seen.add(m['moe_expert_slots{tier="primary"}'])
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=120)

    rss_warm = rss_after_warmup[0] or rss_end
    growth = rss_end - rss_warm
    checks = {
        "no_failed_request": not failures,
        "all_requests_done": done[0] == args.clients * args.requests,
        "rss_flat_after_warmup": growth <= max(1 << 20, rss_warm // 50),  # within 2 % (or 1 MiB)
        "expert_slots_constant": len(slots_seen) == 1,
        "server_exit_0": rc == 0,
    }
    summary = {
        "clients": args.clients, "requests_per_client": args.requests, "completed": done[0],
        "failed": len(failures), "wall_s": round(wall, 2), "generated_tokens": tokens[0],
        "tokens_per_s": round(tokens[0] / wall, 1) if wall > 0 else 0.0,
        "rss_after_warmup_bytes": rss_warm, "rss_end_bytes": rss_end, "rss_growth_bytes": growth,
        "rss_trace_bytes": rss_trace,
        "expert_slots": sorted(slots_seen), "hit_ratio": m.get('moe_expert_hit_ratio{tier="primary"}'),
        "server_args": args.server_args, "checks": checks, "failures": failures[:10],
    }
    text = json.dumps(summary, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
