#!/bin/sh
# Checks moetrace serve's OpenAI-compatible endpoints with OpenAI's official JS SDK:
#   tests/compat/openai_client.sh BUILD [MODEL_DIR]
# Installs the npm package "openai" (OPENAI_SDK_VERSION, default 6.49.0) into the ignored folder
# .deps/openai-client when it is missing, starts BUILD/moetrace serve on the CPU on a free port with
# an API key (MODEL_DIR: assets/demo-model), runs openai_client.mjs against it, stops the server.
# The exit status is the script's (0: every check passed). Not part of ctest (it needs npm).
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${1:?usage: tests/compat/openai_client.sh BUILD [MODEL_DIR]}
BIN=$(cd "$BUILD" && pwd)/moetrace
MODEL=${2:-$ROOT/assets/demo-model}
VERSION=${OPENAI_SDK_VERSION:-6.49.0}
DEPS="$ROOT/.deps/openai-client"
SDK="$DEPS/node_modules/openai"
[ -x "$BIN" ] || { echo "openai_client.sh: no $BIN" >&2; exit 2; }

installed=$(node -e 'try { console.log(require(process.argv[1]).version) } catch (e) {}' "$SDK/package.json")
if [ "$installed" != "$VERSION" ]; then
    mkdir -p "$DEPS"
    [ -f "$DEPS/package.json" ] || echo '{"name":"moetrace-openai-client","private":true}' > "$DEPS/package.json"
    (cd "$DEPS" && npm install --no-audit --no-fund --silent "openai@$VERSION")
fi

WORK=$(mktemp -d)
KEY="compat-$$"
PID=""
cleanup() {
    if [ -n "$PID" ]; then
        kill -TERM "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

"$BIN" serve --model "$MODEL" --port 0 --api-key "$KEY" --threads 2 --enable-return-routed-experts \
    2> "$WORK/server.log" &
PID=$!
URL=""
i=0
while [ $i -lt 600 ]; do
    if ! kill -0 "$PID" 2>/dev/null; then
        cat "$WORK/server.log" >&2
        echo "openai_client.sh: the server exited during start-up" >&2
        exit 2
    fi
    if [ -z "$URL" ]; then
        port=$(sed -n 's/.*listening on http:\/\/[^ ]*:\([0-9][0-9]*\).*/\1/p' "$WORK/server.log" | head -n 1)
        [ -n "$port" ] && URL="http://127.0.0.1:$port"
    fi
    if [ -n "$URL" ] && [ "$(curl -s -o /dev/null -w '%{http_code}' "$URL/health")" = 200 ]; then
        break
    fi
    i=$((i + 1))
    sleep 0.1
done
[ -n "$URL" ] || { cat "$WORK/server.log" >&2; echo "openai_client.sh: the server did not start" >&2; exit 2; }

rc=0
MOETRACE_URL="$URL" MOETRACE_API_KEY="$KEY" OPENAI_SDK="$SDK" node "$ROOT/tests/compat/openai_client.mjs" || rc=$?
if [ $rc -ne 0 ]; then
    echo "# server log:" >&2
    tail -n 20 "$WORK/server.log" >&2
fi
exit $rc
