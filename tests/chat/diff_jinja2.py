"""Differential check of `moetrace chat-template` against jinja2 in transformers' chat-template
environment, for any folder of .jinja templates (e.g. a collection of published model templates):

    python3 tests/chat/diff_jinja2.py [--conversations F.json] BUILD/moetrace DIR_OR_FILES...

Every template is rendered over tests/chat/conversations.json with add_generation_prompt on and off
(bos "<s>", eos "</s>"). Both failing counts as agreement. Needs the jinja2 package only. The same
environment reproduced transformers 5.17's apply_chat_template on all cases of expected.json."""
import datetime
import glob
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def make_env():
    import jinja2
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
    return env


def main():
    args = sys.argv[1:]
    conv_path = os.path.join(HERE, "conversations.json")
    if args and args[0] == "--conversations":
        conv_path, args = args[1], args[2:]
    binary, paths = args[0], args[1:]
    files = []
    for p in paths:
        files += sorted(glob.glob(os.path.join(p, "*.jinja"))) if os.path.isdir(p) else [p]
    env = make_env()
    convs = json.load(open(conv_path, encoding="utf-8"))
    total_eq = total_err = total_diff = 0
    with tempfile.TemporaryDirectory() as tmp:
        for path in files:
            src = open(path, encoding="utf-8").read()
            with open(os.path.join(tmp, "tokenizer_config.json"), "w", encoding="utf-8") as f:
                json.dump({"chat_template": src, "bos_token": "<s>", "eos_token": "</s>"}, f)
            try:
                tpl = env.from_string(src)
            except Exception as e:
                tpl, parse_err = None, e
            eq = err = diff = 0
            for c in convs:
                msgs = os.path.join(tmp, "m.json")
                with open(msgs, "w", encoding="utf-8") as f:
                    json.dump({"messages": c["messages"], "tools": c.get("tools")}, f)
                for agp in (True, False):
                    ref = None
                    if tpl is not None:
                        try:
                            ref = tpl.render(messages=c["messages"], tools=c.get("tools"), documents=None,
                                             add_generation_prompt=agp, bos_token="<s>", eos_token="</s>",
                                             **c.get("kwargs", {}))
                        except Exception:
                            ref = None
                    cmd = [binary, "chat-template", "--model", tmp, "--messages", msgs]
                    if not agp:
                        cmd.append("--no-generation-prompt")
                    if c.get("kwargs"):
                        cmd += ["--kwargs", json.dumps(c["kwargs"])]
                    r = subprocess.run(cmd, capture_output=True)
                    got = r.stdout.decode("utf-8") if r.returncode == 0 else None
                    if ref is None and got is None:
                        err += 1
                    elif ref == got:
                        eq += 1
                    else:
                        diff += 1
                        if diff <= 2:
                            print("DIFF %s %s agp=%s\n  jinja2:   %r\n  moetrace: %r" % (
                                os.path.basename(path), c["name"], agp, (ref or "<error>")[:200],
                                got[:200] if got is not None else r.stderr.decode()[:200]))
            print("%-58s equal=%3d both-error=%3d differ=%3d" % (os.path.basename(path), eq, err, diff))
            total_eq, total_err, total_diff = total_eq + eq, total_err + err, total_diff + diff
    print("total: equal=%d both-error=%d differ=%d" % (total_eq, total_err, total_diff))
    return 1 if total_diff else 0


if __name__ == "__main__":
    sys.exit(main())
