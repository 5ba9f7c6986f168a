#!/usr/bin/env python3
"""Makes the reference fixtures of test_tokenizer with the Hugging Face `tokenizers` library (the
definition of what a tokenizer.json means). Run on the GPU machine, where the library exists:

    PYTHONUNBUFFERED=1 python3 tests/tokenizer/make_fixtures.py OUTDIR [REALDIR]

1. Trains three small tokenizers (vocab ~1000) and writes OUTDIR/tokenizer_<name>.json
   (copied into tests/tokenizer/<name>/tokenizer.json):
   bl  byte-level BPE: NFC, Qwen2 Split regex + ByteLevel(use_regex=false), ignore_merges,
       specials and added tokens with lstrip/rstrip/single_word/normalized,
       post-processor Sequence[ByteLevel, TemplateProcessing("$A <|endoftext|>")]
   sp  SentencePiece-style BPE: Prepend("▁") + Replace(" ", "▁"), byte_fallback <0xNN>, unk,
       TemplateProcessing("<s> $A"), decoder Sequence[Replace, ByteFallback, Fuse, Strip]
   ms  Metaspace BPE: NFKC + Lowercase, Digits + Metaspace(prepend_scheme=first), unk without
       byte fallback, Metaspace decoder
2. For those and every REALDIR/<name>/tokenizer.json, encodes each string of corpus.json with and
   without special tokens and decodes the ids with and without skip_special_tokens, writing
   OUTDIR/expected_<name>.json.
"""
import json, os, random, sys, time

from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models, normalizers,
                        pre_tokenizers, processors, trainers)

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = sys.argv[1]
REAL = sys.argv[2] if len(sys.argv) > 2 else None
os.makedirs(OUT, exist_ok=True)
corpus = json.load(open(os.path.join(HERE, "corpus.json"), encoding="utf-8"))

QWEN2_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
            r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def training_text():
    rnd = random.Random(1)
    words = ("the of and to in is that for it as was with be by on not he this are or his from at which "
             "but have an they you were her she there been one all we their has would when if so no what "
             "up out who them some could can model expert routing token layer tensor inference mixture "
             "hello world quick brown fox jumps over lazy dog return def int main print").split()
    lines = list(corpus)
    for _ in range(3000):
        n = rnd.randint(3, 20)
        s = " ".join(rnd.choice(words) for _ in range(n))
        if rnd.random() < 0.3:
            s = s.capitalize() + rnd.choice([".", "!", "?", ",", ":"])
        if rnd.random() < 0.1:
            s += " " + str(rnd.randint(0, 99999))
        if rnd.random() < 0.05:
            s += " 你好世界 日本語 😀"
        lines.append(s)
    return lines


def save(tok, name):
    path = os.path.join(OUT, "tokenizer_%s.json" % name)
    tok.save(path, pretty=False)
    return Tokenizer.from_file(path)


def train_bl(text):
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_RE), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=1000, show_progress=False,
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                             special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tok.train_from_iterator(text, tr)
    d = json.loads(tok.to_str())
    d["model"]["ignore_merges"] = True
    tok = Tokenizer.from_str(json.dumps(d))
    tok.add_tokens([AddedToken("<think>", normalized=False, special=False),
                    AddedToken("</think>", normalized=False, special=False),
                    AddedToken("[LS]", lstrip=True, rstrip=True, normalized=True, special=False)])
    tok.add_special_tokens([AddedToken("[MASK]", single_word=True, normalized=False, special=True)])
    eot = tok.token_to_id("<|endoftext|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="$A <|endoftext|>", pair="$A <|endoftext|> $B:1 <|endoftext|>:1",
                                      special_tokens=[("<|endoftext|>", eot)])])
    return save(tok, "bl")


def train_sp(text):
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tr = trainers.BpeTrainer(vocab_size=1000, show_progress=False, limit_alphabet=120,
                             special_tokens=["<unk>", "<s>", "</s>"])
    tok.train_from_iterator(text, tr)
    d = json.loads(tok.to_str())
    old = sorted(d["model"]["vocab"].items(), key=lambda kv: kv[1])
    vocab = {}
    for t, _ in old[:3]:
        vocab[t] = len(vocab)
    for b in range(256):
        vocab["<0x%02X>" % b] = len(vocab)
    for t, _ in old[3:]:
        if t not in vocab:
            vocab[t] = len(vocab)
    d["model"]["vocab"] = vocab
    for a in d["added_tokens"]:
        a["id"] = vocab[a["content"]]
    tok = Tokenizer.from_str(json.dumps(d))
    tok.add_special_tokens([AddedToken("[MASK]", single_word=True, lstrip=True, normalized=False, special=True)])
    tok.add_tokens([AddedToken("hello", normalized=True, special=False)])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s>:1 $B:1",
                                                       special_tokens=[("<s>", vocab["<s>"])])
    return save(tok, "sp")


def train_ms(text):
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=False))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=True)])
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first")
    tr = trainers.BpeTrainer(vocab_size=800, show_progress=False, limit_alphabet=100,
                             special_tokens=["<unk>", "<s>", "</s>"])
    tok.train_from_iterator(text, tr)
    return save(tok, "ms")


def expected(tok, name):
    t0 = time.time()
    cases = []
    for s in corpus:
        e = tok.encode(s, add_special_tokens=True).ids
        n = tok.encode(s, add_special_tokens=False).ids
        cases.append({"ids": e, "ids_nospecial": n,
                      "decode": tok.decode(e, skip_special_tokens=False),
                      "decode_skip": tok.decode(e, skip_special_tokens=True)})
    with open(os.path.join(OUT, "expected_%s.json" % name), "w", encoding="utf-8") as f:
        json.dump({"tokenizer": name, "cases": cases}, f, ensure_ascii=True, separators=(",", ":"))
    print("%s: %d cases in %.2fs" % (name, len(cases), time.time() - t0))


def main():
    text = training_text()
    toks = {}
    for name, fn in (("bl", train_bl), ("sp", train_sp), ("ms", train_ms)):
        try:
            toks[name] = fn(text)
        except Exception as e:
            import traceback
            traceback.print_exc()
            print("train FAILED", name, repr(e))
    if REAL:
        for name in sorted(os.listdir(REAL)):
            p = os.path.join(REAL, name, "tokenizer.json")
            if os.path.exists(p):
                toks[name] = Tokenizer.from_file(p)
    for name, tok in toks.items():
        try:
            expected(tok, name)
        except Exception as e:  # keep going: one broken tokenizer must not lose the others
            print("FAILED", name, repr(e))


if __name__ == "__main__":
    main()
