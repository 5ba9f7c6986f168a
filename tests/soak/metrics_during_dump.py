"""How long /metrics waits while the server writes a large per_token dump. Runs on the development
machine:

    python3 tests/soak/metrics_during_dump.py BINARY [PORT]

Serves a model of Qwen3-30B-A3B's routing shape (48 layers, 128 experts, top-8; from
bench/configs/qwen3-30b-a3b with tiny widths, --load-format dummy) under --ep-size 4 with the
per_token recorder, sends 8 clients x 30 requests x 8 samples of 64 + 256 tokens, then dumps the
recorder over HTTP while another client scrapes /metrics every 5 ms. Prints the dump's time and size
and the scrapes' median and maximum latency."""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

BIN = sys.argv[1]
PORT = int(sys.argv[2]) if len(sys.argv) > 2 else 31822
URL = f"http://127.0.0.1:{PORT}"
here = os.path.dirname(os.path.abspath(__file__))
cfg = json.load(open(os.path.join(here, "../../bench/configs/qwen3-30b-a3b/config.json")))
cfg.update(hidden_size=64, intermediate_size=128, moe_intermediate_size=32, num_attention_heads=4,
           num_key_value_heads=2, head_dim=16, vocab_size=512, max_position_embeddings=4096)
work = tempfile.mkdtemp(prefix="metrics_dump_")
os.makedirs(work + "/model")
json.dump(cfg, open(work + "/model/config.json", "w"))
os.makedirs(work + "/dumps")
server = subprocess.Popen([BIN, "serve", "--model", work + "/model", "--load-format", "dummy", "--port", str(PORT),
                           "--threads", "2", "--expert-distribution-recorder-mode", "per_token",
                           "--enable-expert-distribution-metrics", "--expert-dump-dir", work + "/dumps",
                           "--max-running-requests", "64", "--ep-size", "4"],
                          stderr=open(work + "/server.log", "w"))
for _ in range(600):
    try:
        urllib.request.urlopen(URL + "/health", timeout=1)
        break
    except OSError:
        time.sleep(0.1)


def client(k):
    for i in range(30):
        body = {"input_ids": [[3 + (k + i + t) % 500 for t in range(64)]] * 8,
                "sampling_params": {"max_new_tokens": 256, "temperature": 0.8, "ignore_eos": True, "seed": i}}
        urllib.request.urlopen(urllib.request.Request(URL + "/generate", json.dumps(body).encode()), timeout=900).read()


clients = [threading.Thread(target=client, args=(k,)) for k in range(8)]
for t in clients:
    t.start()
for t in clients:
    t.join()
latencies, stop = [], threading.Event()


def scrape():
    while not stop.is_set():
        t0 = time.perf_counter()
        urllib.request.urlopen(URL + "/metrics", timeout=60).read()
        latencies.append(time.perf_counter() - t0)
        time.sleep(0.005)


scraper = threading.Thread(target=scrape)
scraper.start()
time.sleep(0.3)
t0 = time.perf_counter()
urllib.request.urlopen(urllib.request.Request(URL + "/dump_expert_distribution_record", b""), timeout=900).read()
dump_s = time.perf_counter() - t0
time.sleep(0.3)
stop.set()
scraper.join()
server.terminate()
server.wait()
size = sum(os.path.getsize(os.path.join(work + "/dumps", f)) for f in os.listdir(work + "/dumps"))
print(f"{BIN}: dump {dump_s * 1e3:.0f} ms ({size / 1e6:.0f} MB); /metrics {len(latencies)} scrapes, "
      f"median {statistics.median(latencies) * 1e3:.1f} ms, max {max(latencies) * 1e3:.1f} ms")
