"""`moetrace serve --device cuda` end to end on the GPU machine (after tests/gpu/pack.sh): 32
concurrent /generate requests with routing return, half of them sampled with their own seeds (on
the device), a quarter with penalties (and min-p), each checked against `moetrace run --device cuda --routing-out` of the same prompt and
sampling (routing decoded as SGLang's helper does); every request also asks for its tokens'
log-probabilities, which must equal those of the same request sent again alone (bit for bit) and
those transformers computes from the same checkpoint (within bf16's error); then n = 4 samples of one
prompt in one request, each equal to `run --device cuda` with the seed it draws from; then four
weight updates (/update_weights_from_disk) between the fixture and a copy with flipped routers, each
answer equal to `run --device cuda` on the checkpoint then served; prompts scored from their first
token (logprob_start_len 0, 3 alternatives) against transformers; then SIGTERM."""
import base64
import concurrent.futures
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np

BIN = ".devcarry/bin/moetrace"
MODEL = "tests/fixtures/models/qwen3_moe"
PORT = 30123
env = dict(os.environ, LD_LIBRARY_PATH=os.path.abspath(".devcarry/lib") + ":" + os.environ.get("LD_LIBRARY_PATH", ""))


def post(path, body):
    req = urllib.request.Request(f"http://127.0.0.1:{PORT}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


PENALTIES = {"repetition_penalty": 1.3, "frequency_penalty": 0.4, "presence_penalty": 0.5, "min_new_tokens": 3}


def sampling_of(i):
    """Request i's sampling: greedy for even i, else temperature / top-p (/ top-k) with seed i; with
    penalties for i % 4 == 3 (sampled, min-p too) and i % 8 == 6 (greedy), never for the requests
    compared with transformers (i % 4 == 0), whose reference knows no penalties."""
    if i % 2 == 0:
        return dict(PENALTIES, temperature=0) if i % 8 == 6 else {"temperature": 0}
    sp = {"temperature": 0.8, "top_p": 0.9, "top_k": 40 if i % 4 == 1 else 0, "seed": i}
    return dict(sp, min_p=0.05, **PENALTIES) if i % 4 == 3 else sp


def solo(ids, n_new, sp, model=MODEL):
    flags = ["--temperature", str(sp["temperature"])]
    if sp["temperature"] > 0:
        flags += ["--top-p", str(sp["top_p"]), "--top-k", str(sp["top_k"]), "--seed", str(sp["seed"])]
    for key in ("min_p", "repetition_penalty", "frequency_penalty", "presence_penalty", "min_new_tokens"):
        if key in sp:
            flags += ["--" + key.replace("_", "-"), str(sp[key])]
    subprocess.run([BIN, "run", "--model", model, "--device", "cuda", "--input-ids", ",".join(map(str, ids)),
                    "--max-new-tokens", str(n_new), "--ignore-eos", "--routing-out", "/tmp/solo_r.npy",
                    "--tokens-out", "/tmp/solo_t.npy"] + flags, env=env, check=True, stdout=subprocess.DEVNULL)
    return np.load("/tmp/solo_r.npy"), np.load("/tmp/solo_t.npy")


server = subprocess.Popen([BIN, "serve", "--model", MODEL, "--device", "cuda", "--port", str(PORT),
                           "--enable-return-routed-experts"], env=env, stderr=subprocess.PIPE)
for _ in range(600):
    try:
        if urllib.request.urlopen(f"http://127.0.0.1:{PORT}/health", timeout=1).status == 200:
            break
    except Exception:
        time.sleep(0.1)
rng = random.Random(7)
prompts = [[rng.randrange(3, 500) for _ in range(rng.randrange(1, 200))] for _ in range(32)]
n_new = 6


def one(i):
    sp = dict(sampling_of(i), max_new_tokens=n_new, ignore_eos=True)
    return post("/generate", {"input_ids": prompts[i], "sampling_params": sp, "return_routed_experts": True,
                              "return_logprob": True})


def hf_logits(ids):
    """transformers' float32 logits of the fixture at every position of ids (a torch tensor [P, vocab]
    on the device); ImportError without torch and transformers."""
    import torch
    from transformers import AutoModelForCausalLM
    global hf_model
    if hf_model is None:
        hf_model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32).cuda().eval()
    with torch.no_grad():
        return hf_model(torch.tensor([ids], device="cuda")).logits[0].float()


def reference_logprobs(ids, out, temperature):
    """log_softmax(logits / T) of each output token, by transformers in float32 (T 1 when greedy), and
    what bf16 may move each by: the fixtures' logit tolerance (2e-2 of the largest logit / T) moves
    both the token's logit and the log-sum-exp, so twice that."""
    import torch
    logits = hf_logits(ids + out)
    t = temperature if temperature > 0 else 1.0
    lp = torch.log_softmax(logits[len(ids) - 1:len(ids) - 1 + len(out)] / t, dim=-1)
    z = logits[len(ids) - 1:len(ids) - 1 + len(out)] / t
    tol = (2 * 2e-2 * z.abs().max(dim=-1).values).tolist()
    return [lp[j, tok].item() for j, tok in enumerate(out)], tol


hf_model = None


with concurrent.futures.ThreadPoolExecutor(32) as pool:
    answers = list(pool.map(one, range(len(prompts))))
bad = 0
solo_bad = 0   # of the concurrent requests against their solo runs
for i, (ids, a) in enumerate(zip(prompts, answers)):
    m = a["meta_info"]
    got = np.frombuffer(base64.b64decode(m["routed_experts"]), np.int32).reshape(m["routed_experts_shape"])
    r, t = solo(ids, n_new, sampling_of(i))
    same = got.shape == r.shape and (got == r).all() and a["output_ids"] == t.tolist()
    bad += not same
    solo_bad += not same
    lps = m["output_token_logprobs"]
    if [e[1] for e in lps] != a["output_ids"] or any(e[2] is not None or not e[0] <= 0 for e in lps):
        print(f"request {i}: output_token_logprobs malformed: {lps}")
        bad += 1
lp_checked, lp_worst = 0, 0.0
for i in range(0, len(prompts), 4):   # alone, then against transformers
    again = one(i)["meta_info"]["output_token_logprobs"]
    lps = answers[i]["meta_info"]["output_token_logprobs"]
    if again != lps:
        print(f"request {i}: log-probabilities alone {again} differ from batched {lps}")
        bad += 1
    try:
        ref, tol = reference_logprobs(prompts[i], answers[i]["output_ids"], sampling_of(i)["temperature"])
    except ImportError:
        continue
    diff = max(abs(e[0] - r) for e, r in zip(lps, ref))
    lp_worst = max(lp_worst, diff)
    lp_checked += 1
    if any(abs(e[0] - r) > d for e, r, d in zip(lps, ref, tol)):
        print(f"request {i}: log-probabilities {[e[0] for e in lps]} vs transformers {ref}")
        bad += 1
print(f"log-probabilities: {lp_checked} requests against transformers within the fixtures' bf16 tolerance, "
      f"largest difference {lp_worst:.4f}; "
      f"the same alone as batched")


def scored(i):
    """Prompt i scored from its first token with 3 alternatives (what evaluation harnesses ask)."""
    return post("/generate", {"input_ids": prompts[i], "sampling_params": {"max_new_tokens": 1, "temperature": 0},
                              "return_logprob": True, "logprob_start_len": 0, "top_logprobs_num": 3,
                              "token_ids_logprob": [3, 100]})


def prompt_logits(ids):
    """Our logits at every prompt position (`run --device cuda --logits-out`) and transformers' float32
    ones, as float64 arrays [P, vocab]."""
    subprocess.run([BIN, "run", "--model", MODEL, "--device", "cuda", "--input-ids", ",".join(map(str, ids)),
                    "--max-new-tokens", "1", "--logits-out", "/tmp/solo_l.npy"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    ours = np.load("/tmp/solo_l.npy").astype(np.float64)
    return ours, hf_logits(ids).double().cpu().numpy()


def log_softmax(x):
    z = x - x.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


score_ids = [i for i in range(1, len(prompts), 5) if len(prompts[i]) > 1]
with concurrent.futures.ThreadPoolExecutor(8) as pool:   # scored requests batched together
    scores = list(pool.map(scored, score_ids))
sc_worst, sc_tokens, sc_bad = 0.0, 0, 0
for i, a in zip(score_ids, scores):
    m, ids = a["meta_info"], prompts[i]
    inp, tops = m["input_token_logprobs"], m["input_top_logprobs"]
    why = None
    if len(inp) != len(ids) or [e[1] for e in inp] != ids or inp[0][0] is not None or tops[0] is not None:
        why = "malformed"
    elif m["cached_tokens"] != 0:
        why = f"{m['cached_tokens']} cached tokens"
    elif scored(i)["meta_info"]["input_token_logprobs"] != inp:
        why = "different alone"
    try:
        ours, ref = prompt_logits(ids) if why is None else (None, None)
    except ImportError:
        ours = None
    for p in range(1, len(ids)) if ours is not None else []:
        own, theirs = log_softmax(ours[p - 1]), log_softmax(ref[p - 1])
        bound = 2 * np.abs(ours[p - 1] - ref[p - 1]).max() + 1e-4   # what log_softmax can move by
        got = inp[p][0]
        want_top = sorted(range(len(own)), key=lambda t: (-ours[p - 1][t], t))[:3]
        sc_worst, sc_tokens = max(sc_worst, abs(got - theirs[ids[p]])), sc_tokens + 1
        if abs(got - own[ids[p]]) > 1e-4:
            why = f"position {p}: {got} against {own[ids[p]]} from our own logits"
        elif abs(got - theirs[ids[p]]) > bound:
            why = f"position {p}: {got} against transformers' {theirs[ids[p]]}, bound {bound}"
        elif [e[1] for e in tops[p]] != want_top:
            why = f"position {p}: alternatives {[e[1] for e in tops[p]]}, our logits' top {want_top}"
        elif any(abs(e[0] - own[e[1]]) > 1e-4 for e in m["input_token_ids_logprobs"][p]) or \
                [e[1] for e in m["input_token_ids_logprobs"][p]] != [3, 100]:
            why = f"position {p}: named tokens {m['input_token_ids_logprobs'][p]} off our own logits"
        if why:
            break
    if why:
        print(f"scored prompt {i}: {why}")
        sc_bad += 1
bad += sc_bad
print(f"scored prompts: {len(score_ids) - sc_bad} of {len(score_ids)} requests batched together right: {sc_tokens} prompt "
      f"tokens equal to log_softmax of `run --device cuda`'s logits, their 3 alternatives its top 3 and 2 named "
      f"tokens' values its values, within what "
      f"those logits' difference from transformers allows (largest difference {sc_worst:.4f}), the same alone")


def output_seed(seed, k):
    """The seed output k of a request of several draws from (request_body.c: SplitMix64 of seed and k)."""
    if k == 0:
        return seed
    m = (1 << 64) - 1
    x = (seed + k * 0x9E3779B97F4A7C15) & m
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & m
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & m
    return x ^ (x >> 31)


# Several outputs on the device: n samples of a fresh 100-token prompt, each equal to `run --device
# cuda` with the seed it draws from; samples 1.. adopted sample 0's six full prompt blocks.
group = [rng.randrange(3, 500) for _ in range(100)]
sp = {"temperature": 0.8, "top_p": 1.0, "top_k": 0, "seed": 3}
outs = post("/generate", {"input_ids": group, "rid": "g", "return_routed_experts": True,
                          "sampling_params": dict(sp, n=4, max_new_tokens=n_new, ignore_eos=True)})
group_bad = 0
for k, a in enumerate(outs):
    m = a["meta_info"]
    got = np.frombuffer(base64.b64decode(m["routed_experts"]), np.int32).reshape(m["routed_experts_shape"])
    r, t = solo(group, n_new, dict(sp, seed=output_seed(3, k)))
    ok = (m["id"] == f"g_{k}" and m["cached_tokens"] == (0 if k == 0 else 96) and got.shape == r.shape
          and (got == r).all() and a["output_ids"] == t.tolist())
    if not ok:
        print(f"sample {k} of the group: id {m['id']}, cached {m['cached_tokens']}, tokens {a['output_ids']} "
              f"against `run` {t.tolist()}, routing equal: {got.shape == r.shape and (got == r).all()}")
    group_bad += not ok
print(f"serve --device cuda: n=4 samples of one prompt, {4 - group_bad} of 4 equal to `run --device cuda` with "
      f"their seeds, samples 1-3 served the prompt's blocks from sample 0")
bad += group_bad


def flipped_checkpoint(dst):
    """The fixture with its routers' signs flipped (every routing changes), as a second policy."""
    import shutil
    from safetensors.torch import load_file, save_file
    os.makedirs(dst, exist_ok=True)
    for f in ("config.json", "generation_config.json"):
        shutil.copy(os.path.join(MODEL, f), dst)
    w = load_file(os.path.join(MODEL, "model.safetensors"))
    for name in w:
        if name.endswith(".mlp.gate.weight"):
            w[name] = (-w[name]).contiguous()   # exact in any float format
    save_file(w, os.path.join(dst, "model.safetensors"), metadata={"format": "pt"})


# Weight updates on the device: to the flipped checkpoint and back, each answer equal to `run
# --device cuda` on the checkpoint served; a checkpoint of another shape is refused.
swap_bad = 0
try:
    flipped_checkpoint("/tmp/flipped")
    greedy = {"temperature": 0}
    ask = {"input_ids": group, "return_routed_experts": True, "sampling_params": dict(max_new_tokens=n_new, ignore_eos=True, temperature=0)}
    for step, model in enumerate(["/tmp/flipped", MODEL, "/tmp/flipped", MODEL]):
        u = post("/update_weights_from_disk", {"model_path": os.path.abspath(model), "weight_version": f"v{step}"})
        a = post("/generate", ask)
        m = a["meta_info"]
        got = np.frombuffer(base64.b64decode(m["routed_experts"]), np.int32).reshape(m["routed_experts_shape"])
        r, t = solo(group, n_new, greedy, model)
        ok = (u["success"] and m["weight_version"] == f"v{step}" and m["cached_tokens"] == 0 and got.shape == r.shape
              and (got == r).all() and a["output_ids"] == t.tolist())
        if not ok:
            print(f"weight update {step} to {model}: {u}, answer {a['output_ids']} against `run` {t.tolist()}")
        swap_bad += not ok
    try:
        post("/update_weights_from_disk", {"model_path": os.path.abspath("tests/fixtures/models/olmoe")})
        swap_bad += 1
    except urllib.error.HTTPError as e:
        swap_bad += e.code != 400
    # The served checkpoint rewritten in place, as a save in progress leaves it: the device holds its
    # own copy, so the answers stay those of the weights uploaded, and an update away from it works.
    r, t = solo(group, n_new, greedy, "/tmp/flipped")
    post("/update_weights_from_disk", {"model_path": "/tmp/flipped", "weight_version": "v4"})
    f = "/tmp/flipped/model.safetensors"
    os.truncate(f, os.path.getsize(f) // 2)
    a = post("/generate", ask)
    m = a["meta_info"]
    got = np.frombuffer(base64.b64decode(m["routed_experts"]), np.int32).reshape(m["routed_experts_shape"])
    rewrite_ok = got.shape == r.shape and (got == r).all() and a["output_ids"] == t.tolist()
    u = post("/update_weights_from_disk", {"model_path": os.path.abspath(MODEL), "weight_version": "v5"})
    r, t = solo(group, n_new, greedy, MODEL)
    a = post("/generate", ask)
    rewrite_ok = rewrite_ok and u["success"] and a["output_ids"] == t.tolist()
    print(f"serve --device cuda: served checkpoint truncated in place, answers unchanged and an update back "
          f"{'worked' if rewrite_ok else 'FAILED'}")
    swap_bad += not rewrite_ok
except ImportError as e:
    print(f"weight updates not checked: {e}")
print(f"serve --device cuda: 4 weight updates (flipped routers and back), {4 - swap_bad} answered as `run --device cuda` "
      f"on the checkpoint served; a checkpoint of another shape refused")
bad += swap_bad
server.send_signal(signal.SIGTERM)
_, log = server.communicate(timeout=60)
rc = server.returncode
# the KV cache is sized from the device's memory (not the host's), after the pass scratch was reserved
kv_line = next((ln for ln in log.decode(errors="replace").splitlines() if "KV cache:" in ln), "")
kv_ok = "GiB of device memory (0.9 of the" in kv_line and "left free by the weights and the pass scratch" in kv_line
print(f"serve --device cuda: {kv_line.strip() or 'no KV cache line in the log'}")
bad += not kv_ok
print(f"serve --device cuda: {len(prompts)} concurrent requests (half sampled), {len(prompts) - solo_bad} equal to their "
      f"solo `run --device cuda` (routing and tokens); {bad} failed checks in all; exit code after SIGTERM {rc}")
sys.exit(1 if bad or rc != 0 else 0)
