"""The `tokenizers` library's single-thread encode throughput on the documents bench_tokenizer wrote
(NUL-separated), for the comparison in docs/PERF.md. Run in the same session as bench_tokenizer:

  python3 tests/tokenizer/bench_tokenizers_lib.py TOKENIZER_JSON DOCS_FILE [REPS]
"""
import json
import os
import sys
import time

os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["RAYON_NUM_THREADS"] = "1"
from tokenizers import Tokenizer  # noqa: E402

tok = Tokenizer.from_file(sys.argv[1])
docs = open(sys.argv[2], "rb").read().split(b"\0")
docs = [d.decode("utf-8") for d in docs if d]
reps = int(sys.argv[3]) if len(sys.argv) > 3 else 3
size = sum(len(d.encode("utf-8")) for d in docs)
best = None
tokens = 0
for _ in range(reps):
    t0 = time.perf_counter()
    tokens = sum(len(tok.encode(d, add_special_tokens=False).ids) for d in docs)
    t = time.perf_counter() - t0
    best = t if best is None or t < best else best
import tokenizers  # noqa: E402
print(json.dumps({"impl": "tokenizers " + tokenizers.__version__, "model": sys.argv[1], "mb": size / 1e6,
                  "docs": len(docs), "tokens": tokens, "seconds": best, "mb_per_s": size / 1e6 / best}))
