#!/usr/bin/env node
// Random texts per real tokenizer and the `tokenizers` library's encodings of them, through its Node
// binding (see make_expected.js):
//
//     node tests/tokenizer/make_random.js REALDIR [NAME...]
//
// For every REALDIR/<name>/tokenizer.json (or the NAMEs given) writes
// tests/tokenizer/random/corpus_<name>.json (200 texts) and expected_<name>.json (make_fixtures.py's
// format). Each text strings together 1 to 12 pieces: words, digits, whitespace runs, CRLF, scripts,
// combining marks, emoji sequences, control characters and U+0000, and, one piece in five, one of
// that tokenizer's own added tokens with or without a space on either side (lstrip, rstrip,
// single_word and normalized meet ordinary text there). The generator is seeded: the same files
// come out on every run.
"use strict";
const fs = require("fs");
const path = require("path");
const root = path.resolve(__dirname, "..", "..");
const { Tokenizer } = require(path.join(root, ".deps/npm/lib/node_modules/tokenizers"));

const PIECES = ["the", " quick", "Brown", "FOX", "'s", "'LL", " don't", "123", "4567890", "٣٤", "१२", "  ", "   ",
    "\t", "\n", "\n\n", "\r\n", " \n ", "日本語", "中文字", "한국어", "ไทย", "العربية", "עברית", "Ελληνικά",
    "Кириллица", "é", "e\u0301", "ñ", "ﬁ", "①", "½", "Ⅻ", "x²", "😀", "👨‍👩‍👧", "🇫🇷", "\u200b", "\u00a0",
    "\u3000", "\u2028", "▁", "Ġ", "<", ">", "</", "/>", "{", "}", "()", "=>", "...", "—", "…", "\u0000", "\u0001",
    "\u007f", "\ufeff", "ǅ", "ß", "İ", "ΐ", "\u0345", "ﷺ", "a\u0308\u0301", "Ⓐ", "𝔘𝔫𝔦"];

const [realDir, ...only] = process.argv.slice(2);
if (!realDir) {
    console.error("usage: make_random.js REALDIR [NAME...]");
    process.exit(2);
}
(async () => {
    const names = only.length ? only : fs.readdirSync(realDir).filter((n) => fs.existsSync(path.join(realDir, n, "tokenizer.json")));
    fs.mkdirSync(path.join(__dirname, "random"), { recursive: true });
    for (const name of names.sort()) {
        const file = path.join(realDir, name, "tokenizer.json");
        const added = JSON.parse(fs.readFileSync(file, "utf8")).added_tokens.map((a) => a.content);
        const tok = Tokenizer.fromFile(file);
        let seed = 12345;   // a linear congruential generator, per tokenizer from the same seed
        const rnd = (n) => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed % n; };
        const corpus = [], cases = [];
        for (let i = 0; i < 200; i++) {
            let s = "";
            for (let k = 1 + rnd(12); k > 0; k--) {
                if (rnd(10) < 2 && added.length)
                    s += (rnd(2) ? " " : "") + added[rnd(added.length)] + (rnd(2) ? " " : "");
                else
                    s += PIECES[rnd(PIECES.length)];
            }
            corpus.push(s);
            const ids = Array.from((await tok.encode(s, null, { addSpecialTokens: true })).getIds());
            const idsNoSpecial = Array.from((await tok.encode(s, null, { addSpecialTokens: false })).getIds());
            cases.push({ ids, ids_nospecial: idsNoSpecial, decode: await tok.decode(ids, false),
                         decode_skip: await tok.decode(ids, true) });
        }
        fs.writeFileSync(path.join(__dirname, "random", `corpus_${name}.json`), JSON.stringify(corpus));
        fs.writeFileSync(path.join(__dirname, "random", `expected_${name}.json`), JSON.stringify({ tokenizer: name, cases }));
        console.log(`${name}: ${cases.length} texts -> tests/tokenizer/random/`);
    }
})();
