#!/usr/bin/env node
// Which code points the Hugging Face `tokenizers` library's regex engine (Oniguruma, inside the
// library) puts in each Unicode class a tokenizer.json regex may use: \p{X} for every general
// category, the shorthands \s \d \w \h and their negations, and the classes of real tokenizers.
// Writes tests/tokenizer/classes_lib.json, the reference of test_regex_unicode's `classes_match_library` and the
// input of make_regex_unicode.py. Needs the library's Node binding (the same Rust library as the
// Python one):
//
//     npm install --prefix .deps/npm/lib tokenizers@0.23.2
//     node tests/tokenizer/probe_classes.js
//
// Each item is run as a Split pre-tokenizer with behavior Removed over every code point (surrogates
// excepted): the pieces left over cover exactly the code points the item does not match.
"use strict";
const fs = require("fs");
const path = require("path");
const root = path.resolve(__dirname, "..", "..");
const { Tokenizer } = require(path.join(root, ".deps/npm/lib/node_modules/tokenizers"));

const CATEGORIES = ["L", "Lu", "Ll", "Lt", "Lm", "Lo", "M", "Mn", "Mc", "Me", "N", "Nd", "Nl", "No",
                    "P", "Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po", "S", "Sm", "Sc", "Sk", "So",
                    "Z", "Zs", "Zl", "Zp", "C", "Cc", "Cf", "Co", "Cn"];
const ITEMS = [
    ...CATEGORIES.map((c) => "\\p{" + c + "}"),
    "\\P{L}", "\\P{N}", "\\P{Lu}", "\\P{Mn}", "\\P{Cn}", "\\P{Z}",
    "\\s", "\\S", "\\d", "\\D", "\\w", "\\W", "\\h", "\\H",
    "\\v", "[\\v]", "\\p{^L}", "\\P{^Mn}", "\\p{l}", "\\p{Letter}", "\\p{Decimal_Number}",
    // classes of real tokenizers (Qwen2/3, GPT-OSS, DeepSeek-V3) and the harder forms
    "[^\\r\\n\\p{L}\\p{N}]", "[^\\s\\p{L}\\p{N}]", "[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]",
    "[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]", "[\\p{L}\\p{M}]", "[\\p{P}\\p{S}]",
    "[\\P{L}]", "[^\\P{N}]", "[\\p{Mn}a]", "[^\\p{Cn}]", "[\\S]", "[^\\S\\n]", "[\\W]", "[^\\W\\d]",
    "[\\w]", "[^\\w]", "[\\w-]", "[\\h]", "[\\H]", "[^\\H]", "[\\d\\s]",
];
const CHUNK = 0x8000;

function splitter(re) {
    return Tokenizer.fromString(JSON.stringify({
        version: "1.0", truncation: null, padding: null, added_tokens: [], normalizer: null,
        pre_tokenizer: { type: "Split", pattern: { Regex: re }, behavior: "Removed", invert: false },
        post_processor: null, decoder: null,
        model: { type: "WordLevel", vocab: { "[UNK]": 0 }, unk_token: "[UNK]" },
    }));
}

async function members(re) {
    let tok;
    try { tok = splitter(re); } catch (e) { return null; } // the library refuses the pattern
    const ranges = [];
    for (let base = 0; base < 0x110000; base += CHUNK) {
        const cps = [];
        for (let c = base; c < base + CHUNK; c++) if (c < 0xD800 || c > 0xDFFF) cps.push(c);
        // offsets count code points here
        const enc = await tok.encode(String.fromCodePoint(...cps), null, { addSpecialTokens: false });
        const left = new Uint8Array(cps.length);
        for (const [a, b] of enc.getOffsets()) left.fill(1, a, b);
        for (let i = 0; i < cps.length; i++) {
            if (left[i]) continue;
            const c = cps[i], last = ranges[ranges.length - 1];
            if (last && last[1] === c - 1) last[1] = c;
            else ranges.push([c, c]);
        }
    }
    return ranges;
}

(async () => {
    const pkg = require(path.join(root, ".deps/npm/lib/node_modules/tokenizers/package.json"));
    const out = { library: "tokenizers " + pkg.version + " (Node binding)", items: {}, refused: [] };
    for (const re of ITEMS) {
        const r = await members(re);
        if (r === null) out.refused.push(re);
        else out.items[re] = r;
    }
    const dest = path.join(__dirname, "classes_lib.json");
    fs.writeFileSync(dest, JSON.stringify(out) + "\n");
    console.log(`${Object.keys(out.items).length} items (${out.refused.length} refused: ${out.refused.join(" ")}) -> ${dest}`);
})();
