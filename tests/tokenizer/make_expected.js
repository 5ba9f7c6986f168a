#!/usr/bin/env node
// The `tokenizers` library's encodings of a corpus with each real tokenizer, through its Node
// binding (the same Rust library as the Python one; it reproduces make_fixtures.py's
// expected_<name>.json of the real tokenizers exactly), so fixtures can be made without Python's
// library:
//
//     npm install --prefix .deps/npm/lib tokenizers@0.23.2
//     node tests/tokenizer/make_expected.js CORPUS PREFIX REALDIR [NAME...]
//
// reads tests/tokenizer/CORPUS.json (a list of strings) and writes tests/tokenizer/PREFIX_<name>.json
// for every REALDIR/<name>/tokenizer.json (or the NAMEs given), in make_fixtures.py's format.
// Example: node tests/tokenizer/make_expected.js corpus_unicode15 expected_unicode15 .deps/npm/real qwen3
"use strict";
const fs = require("fs");
const path = require("path");
const root = path.resolve(__dirname, "..", "..");
const { Tokenizer } = require(path.join(root, ".deps/npm/lib/node_modules/tokenizers"));

const [corpusName, prefix, realDir, ...only] = process.argv.slice(2);
if (!realDir) {
    console.error("usage: make_expected.js CORPUS PREFIX REALDIR [NAME...]");
    process.exit(2);
}
(async () => {
    const corpus = JSON.parse(fs.readFileSync(path.join(__dirname, corpusName + ".json"), "utf8"));
    const names = only.length ? only : fs.readdirSync(realDir).filter((n) => fs.existsSync(path.join(realDir, n, "tokenizer.json")));
    for (const name of names.sort()) {
        const tok = Tokenizer.fromFile(path.join(realDir, name, "tokenizer.json"));
        const cases = [];
        for (const s of corpus) {
            const ids = Array.from((await tok.encode(s, null, { addSpecialTokens: true })).getIds());
            const idsNoSpecial = Array.from((await tok.encode(s, null, { addSpecialTokens: false })).getIds());
            cases.push({ ids, ids_nospecial: idsNoSpecial, decode: await tok.decode(ids, false),
                         decode_skip: await tok.decode(ids, true) });
        }
        const out = path.join(__dirname, `${prefix}_${name}.json`);
        fs.writeFileSync(out, JSON.stringify({ tokenizer: name, cases }));
        console.log(`${name}: ${cases.length} cases -> ${out}`);
    }
})();
