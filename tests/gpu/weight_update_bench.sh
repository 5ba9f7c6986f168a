#!/usr/bin/env bash
# On the GPU machine (after tests/gpu/pack.sh): how long /update_weights_from_disk takes on a large
# checkpoint. Writes a checkpoint of the Qwen3-30B-A3B shape cut to LAYERS layers (random bf16
# weights, made with torch on the device; LAYERS=8 is about 11 GB) and a second one with other
# values, serves the first on the GPU, then swaps to the second and back ROUNDS times, timing each
# update (files in the page cache: what an RL loop that has just written its checkpoint sees), and
# checks a request after each. Usage: tests/gpu/weight_update_bench.sh [LAYERS] [ROUNDS]
# BIN: the moetrace binary (default .devcarry/bin/moetrace; another build's for an A/B); the
# checkpoints are kept for the next call (KEEP=0 removes them). Also checks that the device's memory
# use stays flat over the updates (each frees the last upload and its pass scratch).
source "$(dirname "$0")/device_env.sh"   # before set -e: its probes may fail harmlessly
set -euo pipefail
layers=${1:-8}
rounds=${2:-3}
dir=${TMPDIR:-/tmp}/moetrace_wu_$layers
bin=${BIN:-.devcarry/bin/moetrace}
mkdir -p "$dir"
[ -f "$dir/b/model.safetensors" ] || python3 - "$dir" "$layers" <<'PY'
import json, os, sys, time
import torch
from safetensors.torch import save_file
out, layers = sys.argv[1], int(sys.argv[2])
cfg = json.load(open("bench/configs/qwen3-30b-a3b/config.json"))
cfg["num_hidden_layers"] = layers
cfg["max_window_layers"] = layers
H, I, E, V = cfg["hidden_size"], cfg["moe_intermediate_size"], cfg["num_experts"], cfg["vocab_size"]
q, kv = cfg["num_attention_heads"] * cfg["head_dim"], cfg["num_key_value_heads"] * cfg["head_dim"]
for which in ("a", "b"):
    t0 = time.time()
    g = torch.Generator(device="cuda").manual_seed(1 if which == "a" else 2)
    def rnd(*shape):
        return (torch.randn(*shape, generator=g, device="cuda", dtype=torch.float32) * 0.02).to(torch.bfloat16).cpu()
    w = {"model.embed_tokens.weight": rnd(V, H), "lm_head.weight": rnd(V, H),
         "model.norm.weight": torch.ones(H, dtype=torch.bfloat16)}
    for l in range(layers):
        p = f"model.layers.{l}."
        w[p + "input_layernorm.weight"] = torch.ones(H, dtype=torch.bfloat16)
        w[p + "post_attention_layernorm.weight"] = torch.ones(H, dtype=torch.bfloat16)
        w[p + "self_attn.q_norm.weight"] = torch.ones(cfg["head_dim"], dtype=torch.bfloat16)
        w[p + "self_attn.k_norm.weight"] = torch.ones(cfg["head_dim"], dtype=torch.bfloat16)
        w[p + "self_attn.q_proj.weight"] = rnd(q, H)
        w[p + "self_attn.k_proj.weight"] = rnd(kv, H)
        w[p + "self_attn.v_proj.weight"] = rnd(kv, H)
        w[p + "self_attn.o_proj.weight"] = rnd(H, q)
        w[p + "mlp.gate.weight"] = rnd(E, H)
        for e in range(E):
            w[p + f"mlp.experts.{e}.gate_proj.weight"] = rnd(I, H)
            w[p + f"mlp.experts.{e}.up_proj.weight"] = rnd(I, H)
            w[p + f"mlp.experts.{e}.down_proj.weight"] = rnd(H, I)
    os.makedirs(f"{out}/{which}", exist_ok=True)
    json.dump(cfg, open(f"{out}/{which}/config.json", "w"))
    save_file(w, f"{out}/{which}/model.safetensors", metadata={"format": "pt"})
    gb = os.path.getsize(f"{out}/{which}/model.safetensors") / 1e9
    print(f"checkpoint {which}: {layers} layers, {gb:.2f} GB, written in {time.time() - t0:.1f} s", flush=True)
PY
python3 - "$dir" "$rounds" "$bin" <<'PY'
import json, os, subprocess, sys, time, urllib.request
d, rounds, binary = sys.argv[1], int(sys.argv[2]), sys.argv[3]
port = 30177
url = f"http://127.0.0.1:{port}"
def post(path, body):
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())
t0 = time.time()
print(f"{binary}:", flush=True)
server = subprocess.Popen([binary, "serve", "--model", f"{d}/a", "--device", "cuda", "--port", str(port),
                           "--enable-return-routed-experts"], stdout=subprocess.DEVNULL, stderr=open(f"{d}/serve.log", "w"))
while True:
    try:
        if urllib.request.urlopen(url + "/health", timeout=1).status == 200:
            break
    except Exception:
        time.sleep(0.2)
print(f"serve --device cuda: ready in {time.time() - t0:.1f} s (load and upload of checkpoint a)", flush=True)
ask = {"input_ids": [1, 2, 3, 4, 5, 6, 7, 8], "sampling_params": {"max_new_tokens": 4, "temperature": 0},
       "return_routed_experts": True}
first = post("/generate", ask)
answers, ok = {"a": first["output_ids"]}, True
def device_mib():
    return int(subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                              capture_output=True, text=True).stdout.split()[0])
used = [device_mib()]
gb = os.path.getsize(f"{d}/a/model.safetensors") / 1e9
for r in range(1, rounds + 1):
    for which in ("b", "a"):
        t = time.time()
        res = post("/update_weights_from_disk", {"model_path": f"{d}/{which}", "weight_version": f"{which}{r}"})
        took = time.time() - t
        a = post("/generate", ask)
        same = answers.setdefault(which, a["output_ids"]) == a["output_ids"]
        ok = ok and res["success"] and same and a["meta_info"]["weight_version"] == f"{which}{r}" and a["meta_info"]["cached_tokens"] == 0
        used.append(device_mib())
        print(f"round {r}: update to {which} ({gb:.2f} GB) in {took:.2f} s ({gb / took:.1f} GB/s): {res['message']}; "
              f"answer {a['output_ids']} (version {a['meta_info']['weight_version']}, same as before: {same}); "
              f"device memory used {used[-1]} MiB", flush=True)
ok = ok and answers["a"] != answers["b"]
# every update frees what the last upload and its pass scratch held: the device's use stays flat
# (a few MiB of slack for the driver's own allocations)
flat = max(used) - min(used) <= 64
print(f"device memory used: {used[0]} MiB before the updates, {min(used)}-{max(used)} MiB over them: "
      f"{'flat' if flat else 'GROWING'}", flush=True)
ok = ok and flat
log = open(f"{d}/serve.log").read()
print(next((ln for ln in log.splitlines() if "KV cache:" in ln), "no KV cache line"), flush=True)
server.terminate()
server.wait(timeout=60)
print("weight updates:", "ok" if ok else "FAILED", flush=True)
sys.exit(0 if ok else 1)
PY
[ "${KEEP:-1}" = 1 ] || rm -rf "$dir"
