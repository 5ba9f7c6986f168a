#!/usr/bin/env python3
"""What the `tokenizers` library makes of tests/tokenizer/corpus_unicode15.json with each real
tokenizer (characters newer than some regex engines' Unicode tables). Run on the GPU machine:

    python3 tests/tokenizer/make_unicode15.py OUTDIR REALDIR

writes OUTDIR/expected_unicode15_<name>.json for every REALDIR/<name>/tokenizer.json, in the
format of make_fixtures.py's expected_<name>.json; copy them into tests/tokenizer/. The committed
ones were made here with the library's Node binding instead (make_expected.js, same library and
version, same output)."""
import json, os, sys

from tokenizers import Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
OUT, REAL = sys.argv[1], sys.argv[2]
os.makedirs(OUT, exist_ok=True)
corpus = json.load(open(os.path.join(HERE, "corpus_unicode15.json"), encoding="utf-8"))
for name in sorted(os.listdir(REAL)):
    path = os.path.join(REAL, name, "tokenizer.json")
    if not os.path.exists(path):
        continue
    tok = Tokenizer.from_file(path)
    cases = []
    for s in corpus:
        e = tok.encode(s, add_special_tokens=True).ids
        n = tok.encode(s, add_special_tokens=False).ids
        cases.append({"ids": e, "ids_nospecial": n, "decode": tok.decode(e, skip_special_tokens=False),
                      "decode_skip": tok.decode(e, skip_special_tokens=True)})
    with open(os.path.join(OUT, "expected_unicode15_%s.json" % name), "w", encoding="utf-8") as f:
        json.dump({"tokenizer": name, "cases": cases}, f, ensure_ascii=True, separators=(",", ":"))
    print("%s: %d cases" % (name, len(cases)))
import tokenizers
print("tokenizers", tokenizers.__version__)
