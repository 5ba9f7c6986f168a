"""`moetrace serve --device cuda --enable-eplb` on the Qwen3-30B-A3B shape (dummy weights), on the GPU
machine after tests/gpu/pack.sh: the same load (64 concurrent /generate requests of 128 new tokens,
greedy, routing returned) against a server that rebalances its placement (8 virtual GPUs) every 100
forward passes and one that only records (--enable-expert-distribution-metrics), alternated twice.
Prints the throughput of each, what each rebalance cost the engine thread (from the server's log),
and checks that every request's tokens and routing are the same on both servers (the routing is
logical: a placement switch must not change it).

    python3 tests/gpu/eplb_serve.py [--every N] [--rounds K]
"""
import argparse
import concurrent.futures
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
import urllib.request

BIN = ".devcarry/bin/moetrace"
MODEL = "bench/configs/qwen3-30b-a3b"
PORT = 30124
env = dict(os.environ, LD_LIBRARY_PATH=os.path.abspath(".devcarry/lib") + ":" + os.environ.get("LD_LIBRARY_PATH", ""))


def post(path, body, timeout=600):
    req = urllib.request.Request(f"http://127.0.0.1:{PORT}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def start(extra, log_path, dump_dir):
    shutil.rmtree(dump_dir, ignore_errors=True)
    os.makedirs(dump_dir)
    log = open(log_path, "w")
    srv = subprocess.Popen([BIN, "serve", "--model", MODEL, "--load-format", "dummy", "--device", "cuda",
                            "--port", str(PORT), "--enable-return-routed-experts", "--max-running-requests", "64",
                            "--ep-size", "8", "--expert-dump-dir", dump_dir] + extra,
                           env=env, stderr=log)
    for _ in range(1200):
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{PORT}/health", timeout=1).status == 200:
                return srv, log
        except Exception:
            pass
        if srv.poll() is not None:
            sys.exit(f"server exited: {open(log_path).read()[-2000:]}")
        time.sleep(0.25)
    sys.exit("server did not become healthy")


def stop(srv, log):
    srv.terminate()
    srv.wait(timeout=120)
    log.close()


def load(prompts, n_new):
    def one(ids):
        return post("/generate", {"input_ids": ids, "return_routed_experts": True,
                                  "sampling_params": {"max_new_tokens": n_new, "temperature": 0, "ignore_eos": True}})
    t0 = time.time()
    with concurrent.futures.ThreadPoolExecutor(len(prompts)) as pool:
        answers = list(pool.map(one, prompts))
    return time.time() - t0, answers


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--new", type=int, default=128)
    a = ap.parse_args()
    out = os.environ.get("OUT", "/tmp")
    rng = random.Random(7)
    prompts = [[rng.randrange(10, 150000) for _ in range(rng.randrange(64, 256))] for _ in range(a.requests)]
    modes = {"eplb": ["--enable-eplb", "--eplb-rebalance-num-iterations", str(a.every)],
             "record": ["--enable-expert-distribution-metrics"]}
    tokens = a.requests * a.new
    reference, rc = None, 0
    for r in range(a.rounds):
        for name, extra in modes.items():
            log_path = f"{out}/eplb_serve_{name}_{r}.log"
            srv, log = start(extra, log_path, f"/tmp/eplb_serve_{name}")
            load(prompts[:8], 8)  # warm-up: the decode graphs
            secs, answers = load(prompts, a.new)
            metrics = urllib.request.urlopen(f"http://127.0.0.1:{PORT}/metrics", timeout=10).read().decode()
            stop(srv, log)
            text = open(log_path).read()
            costs = [float(x) / 1e3 for x in
                     re.findall(r"EPLB: rebalanced on \d+ passes \(\d+ tokens\), the engine thread held ([0-9.]+) ms", text)]
            applied = re.search(r'trigger="periodic",result="applied"} (\d+)', metrics)
            line = f"round {r} {name:6s}: {secs:.2f} s, {tokens / secs:.0f} generated tokens/s"
            if name == "eplb":
                line += (f"; {len(costs)} rebalances (metrics: {applied.group(1) if applied else '?'}), "
                         f"each {1e3 * sum(costs) / max(1, len(costs)):.1f} ms mean, {1e3 * max(costs or [0]):.1f} ms "
                         f"max on the engine thread; {100 * sum(costs) / secs:.2f}% of the run")
                if not costs:
                    print("FAIL: no rebalance happened")
                    rc = 1
            print(line, flush=True)
            got = [(x["output_ids"], x["meta_info"]["routed_experts"]) for x in answers]
            if reference is None:
                reference = got
            elif got != reference:
                bad = sum(1 for g, w in zip(got, reference) if g != w)
                print(f"FAIL: {bad} of {len(got)} requests answered differently ({name}, round {r})")
                rc = 1
    print("same tokens and routing on every server and round" if rc == 0 else "FAILED")
    return rc


if __name__ == "__main__":
    sys.exit(main())
