#!/usr/bin/env node
// What the `tokenizers` library's Unicode normalizers, Lowercase normalizer and Digits
// pre-tokenizer do, over every code point. Its normalization tables are old (Unicode 9-10: it does
// not decompose U+32FF or reorder U+07FD), its lowercase mapping and numeric class new (Unicode 16).
// Writes tests/tokenizer/normalize_lib.json, the input of make_unicode_lib_tables.py and the
// reference of test_unicode_tables:
//   excluded: ranges of code points the library's normalizers leave alone as starters where this
//             Node's own normalization (ICU, a newer Unicode) decomposes or reorders them;
//   lower:    [code point, its lowercase] wherever the library's Lowercase changes a character;
//   numeric:  ranges of the code points the Digits pre-tokenizer splits on;
//   word:     ranges of the word characters an added token with single_word must not touch;
//   chunks:   FNV-1a 32 hashes of the UTF-8 of NFC, NFKC, NFD, NFKD and Lowercase of every run of
//             4096 code points (surrogates left out), and of strings putting each excluded code
//             point between combining marks.
// Needs the library's Node binding: npm install --prefix .deps/npm/lib tokenizers@0.23.2
"use strict";
const fs = require("fs");
const path = require("path");
const root = path.resolve(__dirname, "..", "..");
const tk = require(path.join(root, ".deps/npm/lib/node_modules/tokenizers"));

const FORMS = { nfc: tk.nfcNormalizer(), nfkc: tk.nfkcNormalizer(), nfd: tk.nfdNormalizer(),
                nfkd: tk.nfkdNormalizer(), lower: tk.lowercase() };
const CHUNK = 4096;

function fnv1a(str) {
    let h = 0x811c9dc5;
    for (const b of Buffer.from(str, "utf8")) h = Math.imul(h ^ b, 0x01000193) >>> 0;
    return h;
}
function toRanges(points) {
    const r = [];
    for (const c of [...points].sort((a, b) => a - b)) {
        const last = r[r.length - 1];
        if (last && last[1] === c - 1) last[1] = c;
        else r.push([c, c]);
    }
    return r;
}
const codePoints = [];
for (let c = 0; c < 0x110000; c++) if (c < 0xD800 || c > 0xDFFF) codePoints.push(c);

const excluded = new Set(), lower = [], numeric = [];
const digits = tk.digitsPreTokenizer(false);
for (const c of codePoints) {
    const s = String.fromCodePoint(c);
    // a decomposition the library lacks
    if (FORMS.nfkd.normalizeString(s) !== s.normalize("NFKD") && FORMS.nfkd.normalizeString(s) === s) excluded.add(c);
    // a combining class the library lacks: it does not reorder the mark past one of class 1 (or 230)
    const probe = "a" + s + "\u0334", probe2 = "a\u0301" + s;
    if (FORMS.nfd.normalizeString(probe) !== probe.normalize("NFD") || FORMS.nfd.normalizeString(probe2) !== probe2.normalize("NFD"))
        excluded.add(c);
    const l = FORMS.lower.normalizeString(s);
    if (l !== s) lower.push([c, l]);
    if (digits.preTokenizeString("a" + s + "a").length > 1) numeric.push(c);
}
// single_word: "c[T]" keeps [T] as the added token unless c is a word character
const word = [];
const wordTok = tk.Tokenizer.fromString(JSON.stringify({
    version: "1.0", truncation: null, padding: null, normalizer: null, pre_tokenizer: null, post_processor: null,
    decoder: null, added_tokens: [{ id: 1, content: "[T]", single_word: true, lstrip: false, rstrip: false,
                                    normalized: false, special: false }],
    model: { type: "WordLevel", vocab: { "[UNK]": 0, "[T]": 1 }, unk_token: "[UNK]" },
}));
const chunks = [];
const hashAll = (text) => Object.fromEntries(Object.entries(FORMS).map(([k, n]) => [k, fnv1a(n.normalizeString(text))]));
for (let i = 0; i < codePoints.length; i += CHUNK) {
    const text = String.fromCodePoint(...codePoints.slice(i, i + CHUNK));
    chunks.push({ first: codePoints[i], count: Math.min(CHUNK, codePoints.length - i), ...hashAll(text) });
}
(async () => {
for (let i = 0; i < codePoints.length; i += CHUNK) {
    const batch = codePoints.slice(i, i + CHUNK);
    const enc = await wordTok.encodeBatch(batch.map((c) => String.fromCodePoint(c) + "[T]"), { addSpecialTokens: false });
    batch.forEach((c, k) => { if (enc[k].getIds().length === 1) word.push(c); });
}
const contexts = [...excluded].map((c) => {
    const text = "e\u0301\u0327" + String.fromCodePoint(c) + "\u0334\u0301A\u030a" + String.fromCodePoint(c) + "\u0323";
    return { text, ...hashAll(text) };
});
const pkg = require(path.join(root, ".deps/npm/lib/node_modules/tokenizers/package.json"));
const out = { library: "tokenizers " + pkg.version + " (Node binding)", node_unicode: process.versions.unicode,
              excluded: toRanges(excluded), lower, numeric: toRanges(numeric), word: toRanges(word), chunk: CHUNK,
              chunks, contexts };
const dest = path.join(__dirname, "normalize_lib.json");
fs.writeFileSync(dest, JSON.stringify(out) + "\n");
console.log(`excluded ${excluded.size}, lower ${lower.length}, numeric ${numeric.length}, ${chunks.length} chunks, ` +
            `word ${word.length}, ${contexts.length} contexts -> ${dest}`);
})();
