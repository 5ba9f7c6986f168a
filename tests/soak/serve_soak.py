#!/usr/bin/env python3
"""Soak and abuse `moetrace serve` as a deployment would (too slow for ctest; figures in docs/PERF.md).

    python3 tests/soak/serve_soak.py build/moetrace [--requests 3000] [--server-flags "FLAGS"]

--server-flags adds FLAGS to every server it starts, e.g. "--ep-size 4 --enable-eplb
--eplb-rebalance-num-iterations 7" to soak the placement switches too; a thread then polls
/dashboard/data and /metrics throughout.

Needs only the standard library and the binary; servers run on dummy weights of tiny configs in a
scratch folder. Phases, each checked (exit status 1 on any failure):
  soak        mixed /generate, /v1/completions, /v1/chat/completions, streamed and not, routing,
              n > 1, prompt lists, bad requests; VmRSS and open descriptors after a warm-up and after
              each round: growth that does not level off fails;
  slow        clients that never read a large streamed or whole answer, and one reading a byte a
              second: other clients' latency (median of short requests) must stay within 5x, and the
              server must release everything once they leave;
  disconnect  100 streams closed at once mid-generation, 100 uploads closed mid-body: every sequence
              is cancelled, every KV block and descriptor comes back;
  kv          a KV cache of 40 blocks under 60 long requests (greedy and seeded, streamed and not):
              preempted, all answered 200 with the tokens and routing of a solo run, /health 200;
  sigterm     SIGTERM while 32 streams and whole requests run, with a 1 s drain: every client gets its
              answer (finish_reason abort), exit status 0.
Under ASan the VmRSS check fails by design (freed memory waits in ASan's quarantine); the rest holds,
and every "exit 0" also means no leak was reported.
"""
import http.client
import json
import os
import random
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

SMALL = {"model_type": "qwen3_moe", "vocab_size": 1004, "hidden_size": 64, "num_hidden_layers": 3,
         "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "max_position_embeddings": 512,
         "num_experts": 8, "num_experts_per_tok": 2, "moe_intermediate_size": 32, "intermediate_size": 64,
         "mlp_only_layers": [0], "eos_token_id": 2}
SLOW = {"model_type": "qwen3_moe", "vocab_size": 2000, "hidden_size": 512, "num_hidden_layers": 8,
        "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 64, "max_position_embeddings": 4096,
        "num_experts": 32, "num_experts_per_tok": 4, "moe_intermediate_size": 256, "intermediate_size": 512,
        "eos_token_id": 2}
SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
failures = []


def check(ok, what):
    print(("  ok    " if ok else "  FAIL  ") + what, flush=True)
    if not ok:
        failures.append(what)


EXTRA_FLAGS = []


class Server:
    def __init__(self, binary, model_dir, *flags):
        self.p = subprocess.Popen([binary, "serve", "--model", model_dir, "--load-format", "dummy", "--port", "0",
                                   "--threads", "1"] + list(flags) + EXTRA_FLAGS, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)
        self.log = []
        while True:
            line = self.p.stderr.readline()
            if not line:
                raise RuntimeError("server exited: " + "".join(self.log))
            self.log.append(line)
            m = re.search(r"listening on http://[^:]+:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                break
        threading.Thread(target=lambda: [self.log.append(x) for x in self.p.stderr], daemon=True).start()
        while self.get("/health")[0] != 200:
            time.sleep(0.1)

    def conn(self, timeout=120):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def get(self, path):
        try:
            c = self.conn(10)
            c.request("GET", path)
            r = c.getresponse()
            return r.status, r.read().decode()
        except OSError:
            return 0, ""

    def post(self, path, body, c=None):
        c = c or self.conn()
        c.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        r = c.getresponse()
        return r.status, r.read().decode()

    def raw(self, path, body, rcvbuf=0):
        s = socket.socket()
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.connect(("127.0.0.1", self.port))
        data = json.dumps(body)
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n\r\n{data}".encode())
        return s

    def metric(self, name):
        m = re.search(r"^" + re.escape(name) + r" (\S+)$", self.get("/metrics")[1], re.M)
        return float(m.group(1)) if m else float("nan")

    def idle(self, timeout=30):
        t = time.time()
        while time.time() - t < timeout:
            if (self.metric("moetrace_num_requests_running") == 0 and self.metric("moetrace_num_requests_waiting") == 0
                    and self.metric("moetrace_kv_cache_blocks_free") == self.metric("moetrace_kv_cache_blocks_total")):
                return True
            time.sleep(0.1)
        return False

    def proc(self, key):
        for line in open(f"/proc/{self.p.pid}/status"):
            if line.startswith(key):
                return int(line.split()[1])

    def fds(self, at_most=None, timeout=10):
        """Open descriptors; with at_most, waits up to timeout s for them to fall to that."""
        t = time.time()
        while True:
            n = len(os.listdir(f"/proc/{self.p.pid}/fd"))
            if at_most is None or n <= at_most or time.time() - t > timeout:
                return n
            time.sleep(0.1)

    def stop(self, timeout=60):
        self.p.send_signal(signal.SIGTERM)
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            return "hung"


MIX = [
    ("/generate", {"text": "hello world", "sampling_params": {"max_new_tokens": 8}, "return_routed_experts": True}),
    ("/generate", {"text": "hello", "sampling_params": {"max_new_tokens": 8, "temperature": 0.7, "seed": 3},
                   "stream": True, "return_routed_experts": True}),
    ("/generate", {"text": ["a b", "c d e"], "sampling_params": {"max_new_tokens": 6}, "return_routed_experts": True}),
    ("/generate", {"input_ids": [5, 6, 7, 8], "sampling_params": {"max_new_tokens": 6, "n": 2}, "stream": True}),
    ("/v1/completions", {"model": "m", "prompt": "the quick", "max_tokens": 8, "n": 2, "return_routed_experts": True}),
    ("/v1/completions", {"model": "m", "prompt": ["x", "y z"], "max_tokens": 8, "stream": True, "logprobs": 2}),
    ("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "hi there"}], "max_tokens": 8,
                              "stream": True, "return_routed_experts": True}),
    ("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "n": 3,
                              "stop": ["e"]}),
    ("/generate", {"text": "bad", "sampling_params": {"max_new_tokens": -1}}),  # 400
    ("/v1/completions", {"model": "m", "prompt": "q", "max_tokens": 4, "echo": True, "logprobs": 1}),
]


def run_mix(srv, total, threads=8):
    lock, counter, errors, lat = threading.Lock(), [0], [], []

    def worker():
        c = None
        while True:
            with lock:
                if counter[0] >= total:
                    break
                counter[0] += 1
                i = counter[0]
            path, body = MIX[i % len(MIX)]
            t = time.time()
            try:
                if c is None or i % 7 == 0:  # new connections now and then
                    c = srv.conn()
                st, text = srv.post(path, body, c)
                if st != (400 if i % len(MIX) == 8 else 200):
                    errors.append((path, st, text[:200]))
            except OSError as e:
                errors.append((path, repr(e)))
                c = None
            lat.append(time.time() - t)
    ts = [threading.Thread(target=worker) for _ in range(threads)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    return errors, sorted(lat)


def short_latency(srv, n=20):
    c, lat = srv.conn(), []
    for i in range(n):
        t = time.time()
        srv.post("/generate", {"input_ids": [9, 10, 11], "sampling_params": {"max_new_tokens": 16}}, c)
        lat.append(time.time() - t)
    return sorted(lat)[n // 2]


def phase_soak(srv, requests):
    print("soak", flush=True)
    run_mix(srv, 300)
    time.sleep(0.5)
    rss0, fd0 = srv.proc("VmRSS"), srv.fds()
    print(f"  after warm-up (300 requests): VmRSS {rss0} kB, {fd0} descriptors", flush=True)
    rounds, rss, errors = 4, [], []
    for k in range(rounds):
        e, lat = run_mix(srv, requests // rounds)
        errors += e
        time.sleep(0.5)
        rss.append(srv.proc("VmRSS"))
        print(f"  round {k + 1}: {requests // rounds} requests, VmRSS {rss[-1]} kB, {srv.fds()} descriptors, "
              f"{srv.proc('Threads')} threads, p50 {lat[len(lat) // 2] * 1e3:.1f} ms, "
              f"p99 {lat[int(len(lat) * .99)] * 1e3:.1f} ms", flush=True)
    check(not errors, f"every answer as expected ({len(errors)} not: {errors[:2]})")
    check(srv.fds(at_most=fd0) <= fd0, "descriptors back to their number after warm-up")
    check(rss[-1] - rss[1] < 2048, f"VmRSS levels off (last rounds +{rss[-1] - rss[1]} kB)")


def phase_slow(srv):
    print("slow readers", flush=True)
    base = short_latency(srv)
    rss0, fd0 = srv.proc("VmRSS"), srv.fds()
    socks = []
    for i in range(20):  # a 1 KiB receive buffer, never read: answers of ~0.3-2 MB stall in the kernel
        socks.append(srv.raw("/generate", {"input_ids": [3, 4, 50 + i], "sampling_params": {
            "max_new_tokens": 480, "ignore_eos": True}, "return_logprob": True, "top_logprobs_num": 20,
            "stream": i % 2 == 0}, rcvbuf=1024))
    time.sleep(2)
    slow = short_latency(srv)
    print(f"  short requests: p50 {base * 1e3:.1f} ms alone, {slow * 1e3:.1f} ms beside 20 stalled clients; "
          f"VmRSS {rss0} -> {srv.proc('VmRSS')} kB", flush=True)
    check(slow < 5 * base + 0.005, "other clients are not slowed by clients that do not read")
    got = b"".join(socks[0].recv(1) for _ in range(3))  # one byte a second
    check(got.startswith(b"HTT"), "a client reading a byte at a time gets its stream")
    for s in socks:
        s.close()
    check(srv.idle(), "engine idle, KV cache free after they left")
    n = srv.fds(at_most=fd0)
    check(n <= fd0, f"descriptors released ({n} vs {fd0})")


def phase_disconnect(srv):
    print("bulk disconnects", flush=True)
    time.sleep(0.5)  # the descriptor of a connection just closed goes a moment later
    fd0 = srv.fds()
    aborted0 = srv.metric('moetrace_requests_finished_total{finish_reason="abort"}')
    socks = [srv.raw("/generate", {"input_ids": [3, 4, 5 + i], "sampling_params": {"max_new_tokens": 2000,
             "ignore_eos": True}, "stream": True}) for i in range(100)]
    time.sleep(2)
    running = srv.metric("moetrace_num_requests_running")
    for s in socks:
        s.close()
    check(srv.idle(10), f"100 streams closed at once ({running:.0f} running): engine idle, KV cache free")
    aborted = srv.metric('moetrace_requests_finished_total{finish_reason="abort"}') - aborted0
    check(aborted == 100, f"all 100 cancelled ({aborted:.0f})")
    socks = []
    for i in range(100):
        s = socket.create_connection(("127.0.0.1", srv.port))
        s.sendall(b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"input_ids\": [1,")
        socks.append(s)
    time.sleep(1)
    for s in socks:
        s.close()
    n = srv.fds(at_most=fd0)
    check(n <= fd0, f"100 uploads closed mid-body: descriptors back ({n} vs {fd0})")


def generate_result(srv, body):
    st, text = srv.post("/generate", body)
    if st != 200:
        return st, text[:200]
    if body.get("stream"):
        events = [json.loads(x[6:]) for x in text.splitlines() if x.startswith("data: ") and x != "data: [DONE]"]
        j = events[-1]
    else:
        j = json.loads(text)
    return st, (j["output_ids"], j["meta_info"].get("routed_experts"), j["meta_info"]["finish_reason"])


def phase_kv(binary, model_dir, big):
    print("KV cache exhaustion", flush=True)
    small = Server(binary, model_dir, "--kv-blocks", "40", "--enable-return-routed-experts")
    rnd = random.Random(1)
    reqs = []
    for i in range(60):
        ids = [rnd.randint(3, 1000) for _ in range(rnd.randint(20, 200))]
        if i % 5 == 0 and reqs:
            ids = reqs[0]["input_ids"][:150] + ids[:10]  # a shared prefix
        sp = {"max_new_tokens": rnd.randint(100, 300), "ignore_eos": True, "temperature": 0}
        if i % 3 == 1:
            sp.update(temperature=0.9, seed=i)
        reqs.append({"input_ids": ids, "sampling_params": sp, "return_routed_experts": True, "stream": i % 4 == 3})
    solo = [generate_result(big, b) for b in reqs]
    res, health = [None] * len(reqs), []

    def one(i):
        res[i] = generate_result(small, reqs[i])
    ts = [threading.Thread(target=one, args=(i,)) for i in range(len(reqs))]
    [t.start() for t in ts]
    while any(t.is_alive() for t in ts):
        health.append(small.get("/health")[0])
        time.sleep(0.05)
    bad = [i for i in range(len(reqs)) if res[i] != solo[i]]
    pre = small.metric("moetrace_preemptions_total")
    check(not bad, f"60 long requests on 40 blocks ({pre:.0f} preemptions): all 200 and as solo ({len(bad)} differ)")
    check(set(health) == {200}, f"/health stayed 200 ({len(health)} probes)")
    check(small.stop() == 0, "exit 0")


def phase_sigterm(binary, slow_dir):
    print("SIGTERM while requests run", flush=True)
    srv = Server(binary, slow_dir, "--drain-timeout", "1", "--enable-return-routed-experts")
    out = {}

    def client(i):
        body = {"input_ids": [3, 4, 5 + i], "sampling_params": {"max_new_tokens": 3000, "ignore_eos": True},
                "stream": i % 4 == 0, "return_routed_experts": True}
        if not body["stream"]:  # large answers take their handlers a while to format
            body.update(return_logprob=True, top_logprobs_num=20)
        try:
            st, r = generate_result(srv, body)
            out[i] = (st, r[2]["type"] if st == 200 else r)
        except (OSError, http.client.HTTPException) as e:  # a connection closed early, an answer cut
            out[i] = repr(e)
    ts = [threading.Thread(target=client, args=(i,)) for i in range(32)]
    [t.start() for t in ts]
    time.sleep(2)
    t0 = time.time()
    rc = srv.stop()
    [t.join(30) for t in ts]
    answered = sum(1 for v in out.values() if v == (200, "abort"))
    check(answered == 32, f"32 cancelled by the drain timeout: {answered} answered (200, abort); others: "
                          f"{[v for v in out.values() if v != (200, 'abort')][:2]}")
    check(rc == 0, f"exit status {rc} after {time.time() - t0:.1f} s")


def poll_pages(srv, done):
    """The dashboard's data and /metrics, read all the time (they take the placement's lock)."""
    n = 0
    while not done.is_set():
        for path in ("/dashboard/data", "/metrics"):
            status = srv.get(path)[0]
            check(status == 200, f"GET {path} during the soak: {status}")
        n += 1
        time.sleep(0.02)
    print(f"poll: /dashboard/data and /metrics read {n} times each during the soak")


def main():
    binary = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else os.path.join(SRC, "build", "moetrace")
    requests = int(sys.argv[sys.argv.index("--requests") + 1]) if "--requests" in sys.argv else 3000
    if "--server-flags" in sys.argv:
        EXTRA_FLAGS.extend(shlex.split(sys.argv[sys.argv.index("--server-flags") + 1]))
    with tempfile.TemporaryDirectory(prefix="mt_soak_") as tmp:
        for name, cfg in (("small", SMALL), ("slow", SLOW)):
            os.makedirs(f"{tmp}/{name}")
            json.dump(cfg, open(f"{tmp}/{name}/config.json", "w"))
        subprocess.run(["cp", f"{SRC}/tests/tokenizer/bl/tokenizer.json", f"{tmp}/small/"], check=True)
        subprocess.run(["cp", f"{SRC}/tests/chat/templates/qwen3.jinja", f"{tmp}/small/chat_template.jinja"],
                       check=True)
        srv = Server(binary, f"{tmp}/small", "--kv-blocks", "64", "--enable-return-routed-experts")
        polling = threading.Event()
        if EXTRA_FLAGS:
            threading.Thread(target=poll_pages, args=(srv, polling), daemon=True).start()
        phase_soak(srv, requests)
        polling.set()
        phase_slow(srv)
        slow = Server(binary, f"{tmp}/slow")
        phase_disconnect(slow)
        check(slow.stop() == 0, "exit 0")
        big = Server(binary, f"{tmp}/small", "--enable-return-routed-experts")
        phase_kv(binary, f"{tmp}/small", big)
        check(big.stop() == 0 and srv.stop() == 0, "exit 0")
        phase_sigterm(binary, f"{tmp}/slow")
    print("FAILED: " + "; ".join(failures) if failures else "all checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
