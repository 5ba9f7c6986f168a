#!/usr/bin/env python3
"""Reads moetrace's /generate routing the way RL frameworks read SGLang's (R3, routing replay).

    python3 tests/compat/r3_clients.py BUILD/moetrace [--model DIR] [--keep]

Starts `moetrace serve` on the CPU (the demo model, written by `moetrace demo --out`, unless --model
names a folder with tokenizer.json), sends the requests those frameworks send, decodes every answer
with each framework's own rule, written out again here without numpy or torch, and checks the ids
against `moetrace run --routing-out` for the same tokens (exact ints). Exits 1 on any failure.

The decoders mirror (docs/RL.md, "Clients checked"):
  slime   THUDM/slime 624b824a: slime/utils/misc.py decode_int32_meta_array, slime/utils/types.py
          Sample._apply_meta_info (int32, len(tokens) - 1 - routed_experts_start_len rows, start_len
          read back from meta_info), slime/rollout/sglang_rollout.py generate,
          slime/rollout/sglang_streaming_rollout.py generate_streaming,
          slime/backends/sglang_utils/{sglang_engine.py,server_control.py,external.py}
  sglang  sgl-project/sglang python/sglang/srt/layers/moe/routed_experts_capturer.py
          extract_routed_experts_from_meta_info (base64 int32, flat); managers/tokenizer_manager.py
          _handle_batch_output for the meta_info keys
  verl    volcengine/verl b178a3cd: verl/workers/rollout/sglang_rollout/async_sglang_server.py
          generate (reshape(-1, layers, top_k)), verl/experimental/agent_loop/agent_loop.py (rows
          placed from the prompt's first position, at most prompt + response)
  areal   inclusionAI/AReaL 4aef98d8: areal/engine/sglang_remote.py parse_generation_response
          (reshape(prompt_tokens + completion_tokens - 1, -1), finish_reason["type"/"message"])
"""
import argparse
import array
import base64
import http.client
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time

FAILURES = []
CHECKS = [0]


def check(cond, what):
    CHECKS[0] += 1
    if not cond:
        FAILURES.append(what)
        print("  FAIL:", what)
    return cond


# ---------------------------------------------------------------- the server and HTTP


class Server:
    def __init__(self, binary, model, extra):
        self.proc = subprocess.Popen(
            [binary, "serve", "--model", model, "--port", "0", "--threads", "2",
             "--enable-return-routed-experts"] + extra,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.log = []
        self.port = None
        deadline = time.time() + 60
        while self.port is None:
            line = self.proc.stderr.readline()
            if not line or time.time() > deadline:
                raise RuntimeError("moetrace serve did not start: " + "".join(self.log))
            self.log.append(line)
            m = re.search(r"listening on http://[^:]+:(\d+)", line)
            if m:
                self.port = int(m.group(1))
        threading.Thread(target=self._drain, daemon=True).start()
        while self.call("GET", "/health")[0] != 200:
            if time.time() > deadline:
                raise RuntimeError("moetrace serve never became healthy")
            time.sleep(0.1)

    def _drain(self):
        for line in self.proc.stderr:
            self.log.append(line)

    def call(self, method, path, body=None, timeout=120):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            data = json.dumps(body).encode() if body is not None else None
            conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            text = r.read().decode()
            try:
                return r.status, json.loads(text)
            except ValueError:
                return r.status, text
        except (ConnectionError, OSError) as e:
            return 0, str(e)
        finally:
            conn.close()

    def stream(self, body, on_event=None):
        """POST /generate with stream: the parsed data events, as slime's streaming reader takes them."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        conn.request("POST", "/generate", body=json.dumps(body).encode(),
                     headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        events, done = [], False
        while True:
            raw = r.readline()
            if not raw:
                break
            line = raw.decode().strip()
            if not line.startswith("data:"):
                continue
            data = line[len("data:"):].strip()
            if data == "[DONE]":
                done = True
                continue
            events.append(json.loads(data))
            if on_event:
                on_event(events[-1])
        conn.close()
        check(done, "stream ends with data: [DONE]")
        return r.status, events

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# ---------------------------------------------------------------- the reference: moetrace run


def read_npy_int32(path):
    with open(path, "rb") as f:
        raw = f.read()
    assert raw[:6] == b"\x93NUMPY"
    hlen = struct.unpack("<H", raw[8:10])[0] if raw[6] == 1 else struct.unpack("<I", raw[8:12])[0]
    start = 10 + hlen if raw[6] == 1 else 12 + hlen
    header = raw[start - hlen:start].decode()
    assert "'<i4'" in header and "'fortran_order': False" in header, header
    shape = tuple(int(x) for x in re.search(r"'shape': \(([^)]*)\)", header).group(1).split(",") if x.strip())
    values = array.array("i")
    values.frombytes(raw[start:])
    return shape, list(values)


class Reference:
    """The routing `moetrace run` computes for a token sequence, forwarded whole (max_new_tokens 0)."""

    def __init__(self, binary, model, workdir, extra=()):
        self.binary, self.model, self.dir, self.memo, self.extra = binary, model, workdir, {}, list(extra)

    def rows(self, ids):
        key = tuple(ids)
        if key not in self.memo:
            out = os.path.join(self.dir, "ref.npy")
            subprocess.run([self.binary, "run", "--model", self.model, "--threads", "2",
                            "--input-ids", ",".join(map(str, ids)), "--max-new-tokens", "0",
                            "--routing-out", out] + self.extra, check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            self.memo[key] = read_npy_int32(out)
        return self.memo[key]


# ---------------------------------------------------------------- the clients' decoders


def b64_ints(text, code):
    raw = base64.b64decode(text.encode("ascii"))
    values = array.array(code)
    if len(raw) % values.itemsize:
        raise ValueError("base64 payload of %d bytes is not a whole number of %s" % (len(raw), code))
    values.frombytes(raw)
    if sys.byteorder != "little":
        values.byteswap()
    return list(values), len(raw)


def slime_decode(meta, tokens, layers, top_k):
    """slime decode_int32_meta_array + Sample._apply_meta_info: None when absent or null; int32 via
    torch.frombuffer (which refuses an empty buffer); len(tokens) - 1 - start_len rows."""
    value = meta.get("routed_experts")
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError("routed_experts is %s, slime takes a base64 string" % type(value).__name__)
    ints, nbytes = b64_ints(value, "i")
    if nbytes == 0:
        raise ValueError("torch.frombuffer: both buffer length (0) and count (-1) must not be 0")
    start = int(meta.get("routed_experts_start_len", 0) or 0)
    rows = max(0, len(tokens) - 1 - start)
    if len(ints) != rows * layers * top_k:
        raise ValueError("slime: routed_experts element count %d, expected %d (tokens=%d, start_len=%d)"
                         % (len(ints), rows * layers * top_k, len(tokens), start))
    return ints


def sglang_extract(meta):
    """SGLang extract_routed_experts_from_meta_info: base64 of int32, flat (the newest variant reads
    routed_experts_dtype among int32/uint16/uint8, int32 when absent)."""
    name = meta.get("routed_experts_dtype") or "int32"
    code = {"int32": "i", "uint16": "H", "uint8": "B"}.get(name)
    if code is None:
        raise ValueError("SGLang: unsupported routed experts wire dtype %r" % name)
    return b64_ints(meta["routed_experts"], code)[0]


def verl_decode(meta, prompt_len, response_len, layers, top_k):
    """verl: extract(...).reshape(-1, layers, top_k), placed at the prompt's first position in a
    [prompt + response] buffer."""
    flat = sglang_extract(meta)
    if len(flat) % (layers * top_k):
        raise ValueError("verl: cannot reshape %d ids to (-1, %d, %d)" % (len(flat), layers, top_k))
    length = len(flat) // (layers * top_k)
    if length > prompt_len + response_len:
        raise ValueError("verl: %d rows do not fit prompt + response = %d" % (length, prompt_len + response_len))
    return flat


def areal_decode(meta):
    """AReaL parse_generation_response: int32, reshape(prompt_tokens + completion_tokens - 1, -1)."""
    value = meta.get("routed_experts")
    if value is None:
        return None
    flat = b64_ints(value, "i")[0]
    rows = meta["prompt_tokens"] + meta["completion_tokens"] - 1
    if rows <= 0 or len(flat) % rows or (len(flat) == 0 and rows > 0):
        raise ValueError("AReaL: cannot reshape %d ids into (%d, -1)" % (len(flat), rows))
    return flat


def documented_decode(meta):
    """docs/API.md: dtype and shape from meta_info (uint8 255 = -1)."""
    code = {"int32": "i", "int16": "h", "uint8": "B"}[meta["routed_experts_dtype"]]
    flat = b64_ints(meta["routed_experts"], code)[0]
    if code == "B":
        flat = [-1 if v == 255 else v for v in flat]
    shape = meta["routed_experts_shape"]
    check(len(flat) == shape[0] * shape[1] * shape[2], "routed_experts_shape %s matches the payload" % shape)
    return flat, shape


# ---------------------------------------------------------------- checks of one answer


def check_meta_types(out, label, final=True):
    meta = out.get("meta_info")
    if not check(isinstance(meta, dict), label + ": meta_info is an object"):
        return
    check(isinstance(out.get("output_ids"), list), label + ": output_ids is a list")
    check(isinstance(out.get("text"), str), label + ": text is a string (slime reads output['text'])")
    for key in ("prompt_tokens", "completion_tokens", "cached_tokens"):
        check(isinstance(meta.get(key), int) and not isinstance(meta.get(key), bool), label + ": meta_info.%s is an int" % key)
    check(isinstance(meta.get("id"), str), label + ": meta_info.id is a string")
    check(isinstance(meta.get("weight_version"), str), label + ": meta_info.weight_version is a string")
    fr = meta.get("finish_reason")
    if final:
        check(isinstance(fr, dict) and fr.get("type") in ("length", "stop", "abort"),
              label + ": finish_reason is an object with type length/stop/abort: %r" % (fr,))
        check(isinstance(meta.get("e2e_latency"), (int, float)), label + ": e2e_latency is a number")
    else:
        check(fr is None, label + ": finish_reason is null before the end")
    if "output_token_logprobs" in meta:
        lps = meta["output_token_logprobs"]
        check(len(lps) == meta["completion_tokens"] == len(out["output_ids"]),
              label + ": one output_token_logprobs entry per output token")
        check(all(isinstance(t, list) and len(t) == 3 and isinstance(t[0], (int, float)) and isinstance(t[1], int)
                  for t in lps), label + ": output_token_logprobs are [logprob, id, text] triples")
        check([t[1] for t in lps] == out["output_ids"], label + ": the triples' ids are output_ids")


def check_routing(out, prompt, ref, layers, top_k, label, start_len=0):
    """Every client's decoding of out against the reference rows of prompt + output[:-1]."""
    meta = out["meta_info"]
    tokens = list(prompt) + [t[1] for t in meta["output_token_logprobs"]] if "output_token_logprobs" in meta \
        else list(prompt) + out["output_ids"]
    g = len(tokens) - len(prompt)
    forwarded = tokens if g == 0 else tokens[:-1]
    shape, want = ref.rows(forwarded)
    want = want[start_len * layers * top_k:]
    flat, got_shape = documented_decode(meta)
    check(got_shape == [shape[0] - start_len, layers, top_k], label + ": shape %s" % got_shape)
    check(flat == want, label + ": documented decoding equals moetrace run --routing-out")
    for name, decode in (("slime", lambda: slime_decode(meta, tokens, layers, top_k)),
                         ("sglang", lambda: sglang_extract(meta)),
                         ("verl", lambda: verl_decode(meta, len(prompt), g, layers, top_k)),
                         ("areal", lambda: areal_decode(meta))):
        if name == "areal" and start_len:
            continue   # AReaL never sends routed_experts_start_len
        try:
            got = decode()
            check(got == want, "%s: %s decoding equals the reference" % (label, name))
        except Exception as e:  # noqa: BLE001 -- a client would raise here
            if g == 0 and name in ("slime", "areal"):
                # SGLang itself gives P - 1 rows for max_new_tokens 0: these clients never send it
                print("  note: %s: %s reads max_new_tokens 0 differently (%s); docs/SPEC_NOTES.md" % (label, name, e))
                continue
            check(False, "%s: %s raises: %s" % (label, name, e))


# ---------------------------------------------------------------- the scenarios


def scenario_batch(srv, ref, cfg, prompts, stream):
    label = "batch%s" % (" stream" if stream else "")
    print("- %s: %d prompts x n=2, sampled, return_logprob" % (label, len(prompts)))
    body = {"input_ids": prompts, "return_logprob": True, "return_routed_experts": True, "stream": stream,
            "sampling_params": {"n": 2, "max_new_tokens": 6, "temperature": 1.0, "seed": 11}}
    if not stream:
        status, outs = srv.call("POST", "/generate", body)
        if not check(status == 200 and isinstance(outs, list) and len(outs) == 2 * len(prompts),
                     "%s: a list of %d outputs (%s)" % (label, 2 * len(prompts), status)):
            return
    else:
        status, events = srv.stream(body)
        finals = {}
        for ev in events:
            k = ev.get("index")
            check(isinstance(k, int), label + ": every event has its index")
            check_meta_types(ev, "%s[%s] event" % (label, k), final=ev["meta_info"].get("finish_reason") is not None)
            if ev["meta_info"].get("finish_reason") is None:
                check("routed_experts" not in ev["meta_info"], label + ": no routing before the last event")
            else:
                finals[k] = ev
        if not check(sorted(finals) == list(range(2 * len(prompts))), label + ": a last event per output"):
            return
        outs = [finals[k] for k in range(2 * len(prompts))]
    for k, out in enumerate(outs):
        check_meta_types(out, "%s[%d]" % (label, k))
        check_routing(out, prompts[k // 2], ref, cfg["layers"], cfg["top_k"], "%s[%d]" % (label, k))


def scenario_slime_stream(srv, ref, cfg, prompt):
    """slime's generate_streaming: rebuilds the sample from every cumulative event."""
    print("- slime streaming reader, one prompt")
    body = {"input_ids": prompt, "return_logprob": True, "return_routed_experts": True, "stream": True,
            "sampling_params": {"max_new_tokens": 5, "temperature": 0, "ignore_eos": True}}
    state = {"tokens": list(prompt), "routing": None}

    def on_event(chunk):
        meta = chunk.get("meta_info") or {}
        call_tokens = [t[1] for t in meta.get("output_token_logprobs", [])]
        tokens = list(prompt) + call_tokens
        routing = slime_decode(meta, tokens, cfg["layers"], cfg["top_k"])
        state["tokens"] = tokens
        if routing is not None:
            state["routing"] = routing

    try:
        srv.stream(body, on_event)
    except Exception as e:  # noqa: BLE001
        check(False, "slime streaming reader raises: %s" % e)
        return
    shape, want = ref.rows(state["tokens"][:-1])
    check(state["routing"] == want, "slime streaming: the routing equals the reference")


def scenario_edges(srv, ref, cfg, prompt):
    print("- max_new_tokens 0 and 1, routed_experts_start_len, int16/uint8")
    for g in (0, 1):
        status, out = srv.call("POST", "/generate", {
            "input_ids": prompt, "return_logprob": True, "return_routed_experts": True,
            "sampling_params": {"max_new_tokens": g, "temperature": 0}})
        if check(status == 200, "max_new_tokens %d: 200" % g):
            check_meta_types(out, "max_new_tokens %d" % g)
            check_routing(out, prompt, ref, cfg["layers"], cfg["top_k"], "max_new_tokens %d" % g)
    start = len(prompt) - 2
    status, out = srv.call("POST", "/generate", {
        "input_ids": prompt, "return_logprob": True, "return_routed_experts": True,
        "routed_experts_start_len": start,
        "sampling_params": {"max_new_tokens": 3, "temperature": 0, "ignore_eos": True}})
    if check(status == 200, "routed_experts_start_len: 200"):
        check_routing(out, prompt, ref, cfg["layers"], cfg["top_k"], "start_len %d" % start, start_len=start)
        echoed = out["meta_info"].get("routed_experts_start_len")
        check(echoed in (None, start), "start_len: meta_info echoes the request's start (or nothing): %r" % echoed)
    for dtype in ("int16", "uint8"):
        status, out = srv.call("POST", "/generate", {
            "input_ids": prompt, "return_routed_experts": True, "routed_experts_dtype": dtype,
            "sampling_params": {"max_new_tokens": 2, "temperature": 0, "ignore_eos": True}})
        if check(status == 200, dtype + ": 200"):
            flat, shape = documented_decode(out["meta_info"])
            check(flat == ref.rows(prompt + out["output_ids"][:-1])[1], dtype + ": decoded ids equal the reference")


def scenario_prefix_cache(srv, ref, cfg, prompt):
    print("- prefix-cache hit")
    srv.call("POST", "/flush_cache")
    body = {"input_ids": prompt, "return_logprob": True, "return_routed_experts": True,
            "sampling_params": {"max_new_tokens": 3, "temperature": 0, "ignore_eos": True}}
    outs = [srv.call("POST", "/generate", body)[1] for _ in range(2)]
    check(outs[0]["meta_info"]["cached_tokens"] == 0, "prefix cache: first request cached_tokens 0")
    check(outs[1]["meta_info"]["cached_tokens"] >= 16, "prefix cache: second request hits (cached_tokens %r)"
          % outs[1]["meta_info"]["cached_tokens"])
    for k, out in enumerate(outs):
        check_routing(out, prompt, ref, cfg["layers"], cfg["top_k"], "prefix cache #%d" % k)


def scenario_aborts(srv, ref, cfg):
    """slime's abort path: /abort_request {"abort_all": true}, then every answer is read as a sample
    (finish_reason abort, the tokens so far, and routing of len(tokens) - 1 rows when present).
    One request at a time and 16-token prefill chunks, so the three are caught decoding, queued and
    in the middle of its prompt's prefill."""
    print("- aborts: decoding, queued, mid-prefill")
    results = {}

    def send(name, prompt, max_new):
        body = {"input_ids": prompt, "rid": "r3-" + name, "return_logprob": True, "return_routed_experts": True,
                "sampling_params": {"max_new_tokens": max_new, "temperature": 0, "ignore_eos": True}}
        results[name] = (prompt, srv.call("POST", "/generate", body))

    plan = [("decoding", [(i * 37 + 11) % 1000 + 3 for i in range(40)], 2000, 1.5),
            ("queued", [(i * 53 + 7) % 1000 + 3 for i in range(40)], 2000, 0.3),
            ("abort_all", None, 0, 0),
            ("prefill", [(i * 71 + 5) % 1000 + 3 for i in range(600)], 4, 0.4),
            ("abort_all", None, 0, 0)]
    threads = []
    for name, prompt, max_new, wait in plan:
        if name == "abort_all":
            status, answer = srv.call("POST", "/abort_request", {"abort_all": True})
            check(status == 200 and isinstance(answer, dict), "/abort_request abort_all: 200 (%r)" % (answer,))
            for t in threads:
                t.join(120)
            threads = []
            continue
        threads.append(threading.Thread(target=send, args=(name, prompt, max_new)))
        threads[-1].start()
        time.sleep(wait)
    for name in ("decoding", "queued", "prefill"):
        prompt, (status, out) = results.get(name, (None, (0, None)))
        if not check(status == 200 and isinstance(out, dict), "abort %s: answered 200" % name):
            continue
        meta = out["meta_info"]
        check(meta["finish_reason"].get("type") == "abort", "abort %s: finish_reason type abort (%r)"
              % (name, meta["finish_reason"]))
        check(isinstance(meta["finish_reason"].get("message", ""), str), "abort %s: message is a string" % name)
        check_meta_types(out, "abort " + name)
        tokens = list(prompt) + [t[1] for t in meta["output_token_logprobs"]]
        print("  %s: %d tokens, routing %s" % (name, len(tokens) - len(prompt), meta.get("routed_experts_shape", "absent")))
        for client, decode in (("slime", lambda: slime_decode(meta, tokens, cfg["layers"], cfg["top_k"])),
                               ("areal", lambda: areal_decode(meta))):
            try:
                got = decode()
            except Exception as e:  # noqa: BLE001
                check(False, "abort %s: %s raises: %s" % (name, client, e))
                continue
            if got is not None:
                check(got == ref.rows(tokens[:-1])[1], "abort %s: %s routing equals the reference" % (name, client))


def scenario_control(srv, model):
    """The control calls slime, AReaL and verl make, and what they read back."""
    print("- control endpoints")
    status, info = srv.call("GET", "/get_model_info")
    check(status == 200 and isinstance(info, dict) and "model_path" in info, "/get_model_info: model_path")
    status, v = srv.call("GET", "/get_weight_version")
    check(status == 200 and isinstance(v, dict) and isinstance(v.get("weight_version"), str),
          "/get_weight_version: weight_version string (slime reads response.json()['weight_version'])")
    status, _ = srv.call("GET", "/flush_cache")
    check(status == 200, "GET /flush_cache: 200 (slime retries until 200)")
    status, r = srv.call("POST", "/update_weights_from_disk",
                         {"model_path": model, "weight_version": "7", "abort_all_requests": True})
    check(status == 200 and isinstance(r, dict) and r.get("success") is True,
          "/update_weights_from_disk: success (%r)" % (r,))
    status, v = srv.call("GET", "/get_weight_version")
    check(isinstance(v, dict) and str(v.get("weight_version")) == "7", "slime: weight version equals '7' after the update")
    status, out = srv.call("POST", "/generate", {"input_ids": [5, 6, 7], "sampling_params": {"max_new_tokens": 1}})
    check(isinstance(out, dict) and out["meta_info"].get("weight_version") == "7", "meta_info.weight_version follows the update")
    status, _ = srv.call("GET", "/health_generate")
    check(status == 200, "GET /health_generate: 200 (slime's launch wait and health monitor; %s)" % status)
    status, info = srv.call("GET", "/get_server_info")
    check(status == 200 and isinstance(info, dict) and isinstance(info.get("internal_states"), list),
          "GET /get_server_info: 200 with the settings and internal_states (%s)" % status)
    status, _ = srv.call("POST", "/abort_request", {"rid": "nothing-runs-by-this-name"})
    check(status == 200, "/abort_request of an unknown rid: 200")
    # AReaL posts /pause_generation with no body (abort), slime and SkyRL a JSON body; all read the status
    for body, who in ((None, "AReaL"), ({}, "slime"), ({"mode": "retract"}, "retract"), ({"mode": "in_place"}, "in_place")):
        status, r = srv.call("POST", "/pause_generation", body)
        check(status == 200 and isinstance(r, dict) and r.get("status") == "ok",
              "/pause_generation (%s): 200 {'status': 'ok'} (%s %r)" % (who, status, r))
        status, r = srv.call("POST", "/continue_generation", body if body is None else {})
        check(status == 200 and isinstance(r, dict) and r.get("status") == "ok",
              "/continue_generation: 200 {'status': 'ok'} (%s %r)" % (status, r))
    status, _ = srv.call("POST", "/pause_generation", {"mode": "stop"})
    check(status == 400, "/pause_generation with an unknown mode: 400 (%s)" % status)
    status, out = srv.call("POST", "/generate", {"input_ids": [5, 6, 7], "sampling_params": {"max_new_tokens": 1}})
    check(status == 200, "/generate after pause and continue: 200 (%s)" % status)


def scenario_areal_request(srv):
    """AReaL's request body, as build_generation_request writes it with its defaults."""
    print("- AReaL's request body")
    body = {"input_ids": [5, 6, 7, 8], "image_data": None, "return_logprob": True, "stream": False,
            "return_routed_experts": True,
            "sampling_params": {"top_p": 1.0, "top_k": 100000000, "max_new_tokens": 3, "temperature": 1.0,
                                "stop_token_ids": [], "ignore_eos": False, "skip_special_tokens": True,
                                "frequency_penalty": 0.0}}
    status, out = srv.call("POST", "/generate", body)
    check(status == 200, "AReaL body accepted (%s: %s)" % (status, out if status != 200 else ""))
    if status == 200:
        try:
            areal_decode(out["meta_info"])
        except Exception as e:  # noqa: BLE001
            check(False, "AReaL decoding raises: %s" % e)


def slow_model(model, work):
    """A larger model of random weights (--load-format dummy) with model's tokenizer: slow enough on
    the CPU for an abort to find requests decoding, queued and in their prefill."""
    folder = os.path.join(work, "slow-model")
    os.makedirs(folder, exist_ok=True)
    shutil.copy(os.path.join(model, "tokenizer.json"), folder)
    with open(os.path.join(model, "config.json")) as f:
        config = json.load(f)
    config.pop("num_local_experts", None)
    config.update(hidden_size=1024, intermediate_size=2048, moe_intermediate_size=512, num_hidden_layers=6,
                  num_attention_heads=8, num_key_value_heads=4, head_dim=128, max_position_embeddings=4096,
                  num_experts=32, num_experts_per_tok=4, mlp_only_layers=[1])
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f)
    return folder


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("binary")
    ap.add_argument("--model", help="a model folder with tokenizer.json (default: the demo model)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = ap.parse_args()
    binary = os.path.abspath(args.binary)
    work = tempfile.mkdtemp(prefix="r3_clients_")
    model = args.model
    if not model:
        subprocess.run([binary, "demo", "--out", work, "--max-new-tokens", "1", "--threads", "2"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        model = os.path.join(work, "demo-model")
    with open(os.path.join(model, "config.json")) as f:
        config = json.load(f)
    cfg = {"layers": config["num_hidden_layers"], "top_k": config["num_experts_per_tok"]}
    ref = Reference(binary, model, work)
    srv = Server(binary, model, ["--max-running-requests", "1"])
    try:
        short = [[3, 17, 29, 41, 5], [7, 8, 9], [100, 200, 300, 400, 500, 600, 700]]
        long_prompt = [(i * 37 + 11) % 1000 + 3 for i in range(40)]
        scenario_batch(srv, ref, cfg, short, stream=False)
        scenario_batch(srv, ref, cfg, short, stream=True)
        scenario_slime_stream(srv, ref, cfg, short[0])
        scenario_edges(srv, ref, cfg, short[2])
        scenario_prefix_cache(srv, ref, cfg, long_prompt)
        scenario_areal_request(srv)
        scenario_control(srv, model)
    finally:
        srv.stop()
    slow = slow_model(model, work)
    slow_cfg = {"layers": 6, "top_k": 4}
    srv = Server(binary, slow, ["--load-format", "dummy", "--max-running-requests", "1", "--max-batch-tokens", "16"])
    try:
        scenario_aborts(srv, Reference(binary, slow, work, ["--load-format", "dummy"]), slow_cfg)
    finally:
        srv.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print("scratch folder:", work)
    print("%d checks, %d failed" % (CHECKS[0], len(FAILURES)))
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
