"""How long serve --enable-eplb's periodic rebalance holds the engine thread with --domain-field and
--expert-dump-visualize (the domains' usage and the pictures written at every switch), read from the
"EPLB: rebalanced ... the engine thread held X ms" log lines. Runs on the development machine:

    python3 tests/soak/eplb_domains_hold.py BINARY [EVERY] [REQUESTS_PER_CLIENT] [PORT] [LABELS] [MODEL]

with the qwen3_moe test checkpoint (or MODEL; "wide" makes a config of 48 layers x 128 experts,
Qwen3-30B-A3B's routing shape with tiny matrices, loaded with --load-format dummy), --ep-size 4, a
rebalance every EVERY forward passes (default 200), 8 clients sending labelled /generate requests
(LABELS labels, default 4). Prints each rebalance's hold, their
mean and maximum, and how often the engine thread waited for the dump writer."""
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

BIN = sys.argv[1]
EVERY = sys.argv[2] if len(sys.argv) > 2 else "200"
PER_CLIENT = int(sys.argv[3]) if len(sys.argv) > 3 else 60
PORT = int(sys.argv[4]) if len(sys.argv) > 4 else 31811
LABELS = int(sys.argv[5]) if len(sys.argv) > 5 else 4
MODEL = sys.argv[6] if len(sys.argv) > 6 else "tests/fixtures/models/qwen3_moe"

out = tempfile.mkdtemp(prefix="eplb_domains_")
extra = []
if MODEL == "wide":
    MODEL = out + "/wide"
    os.makedirs(MODEL)
    with open(MODEL + "/config.json", "w") as f:
        json.dump({"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "hidden_size": 64,
                   "intermediate_size": 64, "moe_intermediate_size": 16, "num_hidden_layers": 48,
                   "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "num_experts": 128,
                   "num_experts_per_tok": 8, "norm_topk_prob": True, "vocab_size": 512, "rms_norm_eps": 1e-6,
                   "rope_theta": 1000000.0, "max_position_embeddings": 4096, "tie_word_embeddings": False,
                   "decoder_sparse_step": 1, "mlp_only_layers": [], "torch_dtype": "bfloat16"}, f)
    extra = ["--load-format", "dummy"]
log_path = out + "/server.log"
with open(log_path, "w") as log:
    server = subprocess.Popen([BIN, "serve", "--model", MODEL, "--port", str(PORT), "--threads", "2", "--ep-size", "4",
                               "--enable-eplb", "--eplb-rebalance-num-iterations", EVERY, "--domain-field", "topic",
                               "--expert-dump-visualize", "--expert-dump-dir", out, "--max-running-requests", "8"] + extra,
                              stderr=log, stdout=log)
for _ in range(600):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{PORT}/health", timeout=1)
        break
    except OSError:
        time.sleep(0.1)


def client(k):
    for i in range(PER_CLIENT):
        body = {"input_ids": [3 + (k * 7 + i + t) % 200 for t in range(8)], "topic": f"label{(k * PER_CLIENT + i) % LABELS}",
                "sampling_params": {"max_new_tokens": 12, "temperature": 0, "ignore_eos": True}}
        req = urllib.request.Request(f"http://127.0.0.1:{PORT}/generate", json.dumps(body).encode())
        urllib.request.urlopen(req, timeout=120).read()


threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
server.terminate()
server.wait()
text = open(log_path).read()
held = [float(m) for m in re.findall(r"the engine thread held ([0-9.]+) ms", text)]
print(f"{BIN}: {len(held)} rebalances, the engine thread held {sum(held) / max(len(held), 1):.2f} ms mean, "
      f"{max(held or [0]):.2f} ms at most ({', '.join(f'{h:g}' for h in held)}); waited for the writer "
      f"{text.count('windows still to write')} times; files in {out}")
