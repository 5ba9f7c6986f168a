#!/usr/bin/env node
// The `tokenizers` library's single-thread encode throughput through its Node binding (see
// make_expected.js), on the documents bench_tokenizer wrote (NUL-separated): the comparison of
// bench_tokenizers_lib.py without Python. Run beside bench_tokenizer, in the same session:
//
//     build/bench_tokenizer --model DIR --mb 1 --text-out DOCS
//     RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false node tests/tokenizer/bench_tokenizers_lib.js DIR/tokenizer.json DOCS [REPS]
//
// Each document is one awaited encode call, as each is one call in Python; best of REPS (3) passes.
"use strict";
const fs = require("fs");
const path = require("path");
const root = path.resolve(__dirname, "..", "..");
const { Tokenizer } = require(path.join(root, ".deps/npm/lib/node_modules/tokenizers"));

(async () => {
    const [file, docsFile, repsArg] = process.argv.slice(2);
    if (!docsFile) {
        console.error("usage: bench_tokenizers_lib.js TOKENIZER_JSON DOCS_FILE [REPS]");
        process.exit(2);
    }
    const tok = Tokenizer.fromFile(file);
    const docs = fs.readFileSync(docsFile).toString("utf8").split("\0").filter((d) => d.length);
    const size = docs.reduce((a, d) => a + Buffer.byteLength(d), 0);
    const reps = Number(repsArg || 3);
    let best = Infinity, tokens = 0;
    for (let r = 0; r < reps; r++) {
        const t0 = process.hrtime.bigint();
        tokens = 0;
        for (const d of docs) tokens += (await tok.encode(d, null, { addSpecialTokens: false })).getIds().length;
        const t = Number(process.hrtime.bigint() - t0) / 1e9;
        if (t < best) best = t;
    }
    console.log(JSON.stringify({ impl: "tokenizers (node)", model: file, mb: size / 1e6, docs: docs.length, tokens,
                                 seconds: best, mb_per_s: size / 1e6 / best }));
})();
