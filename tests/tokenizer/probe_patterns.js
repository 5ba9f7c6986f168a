#!/usr/bin/env node
// Whole patterns on texts, as the `tokenizers` library splits them: writes
// tests/tokenizer/patterns_lib.json, the reference of test_regex_unicode's `patterns_match_library`.
// Each case: a pattern, a text, and the library's pieces left by a Split pre-tokenizer with behavior
// Removed (the spans between matches, in code points), or "refused" when the library does not load
// the pattern. Needs the library's Node binding: npm install --prefix .deps/npm/lib tokenizers@0.23.2
"use strict";
const fs = require("fs");
const path = require("path");
const root = path.resolve(__dirname, "..", "..");
const { Tokenizer } = require(path.join(root, ".deps/npm/lib/node_modules/tokenizers"));

const QWEN = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const GPTOSS = "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const MIXED = [
    "Hello, World! it's 42 \t\r\n  x_y-z  éß²½ Ωμ 日本 😀 ٣ ३ e\u0301te Ⓐb ꟋA 𐵐𐵰𐵱 Garay 𑼄𑼅1𑽐 𞓐'll 𱍐𮯰 \u180e \u0085",
    " ".repeat(40) + "x", (" ".repeat(18) + "a").repeat(20), "a\u0301\u0334\u{1171E}\u{11F00}b ²³¹ ¼ 𝋀𝋁 _ ‿ ⁀",
];
const PATTERNS = [
    QWEN, GPTOSS, "\\p{N}{1,3}", "[\\W\\s]+(?=\\d)|\\s|\\w+", "[\\s\\W]+\\d|\\s|\\w+", "[\\s\\W]+", "[\\D\\s]+", "[ \\W]+",
    "[a\\P{Mn}]+", "[^\\p{Mn}a]+", "\\b\\p{L}+", "\\b\\w+\\b", "\\B\\p{L}", "\\w+", "[\\w]+", "\\W+", "[^\\w\\s]+", "\\h+|\\H",
    "\\v|\\V", "\\pL+", "\\Q.\\E+", "\\Qab", "(?<=[\\P{Mn}])\\p{Mn}", "(?<![^\\p{Mn}a])x?", "\\s+(?!\\S)|\\s+",
    "(?i)\\p{Lu}+", "\\p{Lowercase_Letter}+|\\p{ decimal number }", "[\\w-]+", "\\S+", "[^\\S\\n]+",
    "[\\+-\\s]", "\\Q[a\\E", "a\\C", "(?-x)\\p{L}+",
];

function splitter(re) {
    return Tokenizer.fromString(JSON.stringify({
        version: "1.0", truncation: null, padding: null, added_tokens: [], normalizer: null,
        pre_tokenizer: { type: "Split", pattern: { Regex: re }, behavior: "Removed", invert: false },
        post_processor: null, decoder: null, model: { type: "WordLevel", vocab: { "[UNK]": 0 }, unk_token: "[UNK]" },
    }));
}

(async () => {
    const cases = [];
    for (const pattern of PATTERNS) {
        let tok = null;
        try { tok = splitter(pattern); } catch (e) { cases.push({ pattern, refused: true }); continue; }
        for (const text of MIXED) {
            const enc = await tok.encode(text, null, { addSpecialTokens: false });
            cases.push({ pattern, text, kept: enc.getOffsets() });
        }
    }
    const pkg = require(path.join(root, ".deps/npm/lib/node_modules/tokenizers/package.json"));
    const dest = path.join(__dirname, "patterns_lib.json");
    fs.writeFileSync(dest, JSON.stringify({ library: "tokenizers " + pkg.version + " (Node binding)", cases }) + "\n");
    console.log(`${cases.length} cases (${cases.filter((c) => c.refused).length} refused) -> ${dest}`);
})();
