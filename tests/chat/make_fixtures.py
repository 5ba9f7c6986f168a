"""Renders every (template, conversation, add_generation_prompt) of tests/chat with transformers and
writes tests/chat/expected.json (run on the GPU machine: it has transformers; nothing else needed).

Reference path: PreTrainedTokenizerFast(tokenizer_object=<tiny WordLevel tokenizer>, chat_template=T,
bos/eos tokens of the template).apply_chat_template(messages, tools=..., tokenize=False,
add_generation_prompt=..., **kwargs). Fallbacks (recorded in "path"): chat_template_utils'
render_jinja_template, then _compile_jinja_template(...).render(...). Exceptions raised while rendering
(raise_exception, TypeError on None + str, ...) are recorded as expected errors."""
import glob
import json
import os
import sys
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.environ.get("OUT", HERE)


def load_templates():
    out = []
    for path in sorted(glob.glob(os.path.join(HERE, "templates", "*.jinja"))):
        name = os.path.basename(path)[:-6]
        with open(path, encoding="utf-8") as f:
            src = f.read()
        with open(os.path.join(HERE, "templates", name + ".tokens.json"), encoding="utf-8") as f:
            tokens = json.load(f)
        out.append((name, src, tokens))
    return out


def make_tokenizer(src, tokens):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast
    vocab = {"a": 0}
    for t in tokens.values():
        if t is not None:
            vocab.setdefault(t, len(vocab))
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="a"))
    kw = {k: v for k, v in tokens.items() if v is not None}
    return PreTrainedTokenizerFast(tokenizer_object=tk, chat_template=src, **kw)


def render_tokenizer(tok, conv, agp):
    r = tok.apply_chat_template(conv["messages"], tools=conv.get("tools"), tokenize=False,
                                add_generation_prompt=agp, **conv.get("kwargs", {}))
    if not isinstance(r, str):
        raise RuntimeError("apply_chat_template returned %r" % type(r))
    return r


def render_utils(src, tokens, conv, agp):
    from transformers.utils import chat_template_utils as ctu
    kw = dict(conv.get("kwargs", {}))
    for k, v in tokens.items():
        if v is not None:
            kw.setdefault(k, v)
    if hasattr(ctu, "render_jinja_template"):
        out, _ = ctu.render_jinja_template(conversations=[conv["messages"]], tools=conv.get("tools"),
                                           chat_template=src, add_generation_prompt=agp, **kw)
        return out[0], "render_jinja_template"
    compiled = ctu._compile_jinja_template(src)
    return compiled.render(messages=conv["messages"], tools=conv.get("tools"), documents=None,
                           add_generation_prompt=agp, **kw), "_compile_jinja_template"


def main():
    import transformers
    with open(os.path.join(HERE, "conversations.json"), encoding="utf-8") as f:
        convs = json.load(f)
    cases, notes = [], []
    use_tok = True
    try:
        t = make_tokenizer("{{ bos_token }}{{ messages[0]['content'] }}", {"bos_token": "<s>", "eos_token": "</s>"})
        assert render_tokenizer(t, {"messages": [{"role": "user", "content": "x"}]}, True) == "<s>x"
    except Exception:
        use_tok = False
        notes.append("tokenizer path unavailable: " + traceback.format_exc(limit=3))
    for name, src, tokens in load_templates():
        tok = make_tokenizer(src, tokens) if use_tok else None
        for conv in convs:
            for agp in (True, False):
                case = {"template": name, "conversation": conv["name"], "add_generation_prompt": agp}
                try:
                    if tok is not None:
                        case["output"] = render_tokenizer(tok, conv, agp)
                        case["path"] = "apply_chat_template"
                    else:
                        case["output"], case["path"] = render_utils(src, tokens, conv, agp)
                except Exception as e:  # template errors are expected results
                    case["error"] = "%s: %s" % (type(e).__name__, e)
                # second path, for agreement
                try:
                    o2, p2 = render_utils(src, tokens, conv, agp)
                    if "output" in case and o2 != case["output"]:
                        notes.append("%s/%s/%s: %s differs from apply_chat_template" % (name, conv["name"], agp, p2))
                except Exception as e:
                    if "output" in case:
                        notes.append("%s/%s/%s: utils path raised %s" % (name, conv["name"], agp, e))
                cases.append(case)
                print(name, conv["name"], agp, "error" if "error" in case else len(case["output"]), flush=True)
    import jinja2
    doc = {"generator": "tests/chat/make_fixtures.py", "transformers": transformers.__version__,
           "jinja2": jinja2.__version__, "notes": notes, "cases": cases}
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)
    print("cases", len(cases), "errors", sum("error" in c for c in cases), "notes", len(notes))
    for n in notes[:20]:
        print("NOTE", n)


if __name__ == "__main__":
    sys.exit(main())
