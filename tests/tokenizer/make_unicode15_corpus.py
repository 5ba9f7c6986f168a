#!/usr/bin/env python3
"""Writes tests/tokenizer/corpus_unicode15.json: strings of characters assigned in Unicode 15.0 and
15.1 (Kawi, Nag Mundari, Kaktovik numerals, Cyrillic Extended-D, Devanagari Extended-A, Arabic
Extended-C, CJK Extension H and I) among ASCII letters, digits, spaces and punctuation, so that the
pre-tokenizers' \\p{L} / \\p{N} classes decide how they split. moetrace's regexes use the system
PCRE2 and its Unicode tables; tests/tokenizer/make_unicode15.py records what the `tokenizers` library
does with them. Deterministic: run it again to get the same file."""
import json, os, random

RANGES = {  # (first, last) code points of assigned characters, inclusive
    "kawi letters": (0x11F04, 0x11F10), "kawi digits": (0x11F50, 0x11F59),
    "nag mundari letters": (0x1E4D0, 0x1E4EB), "nag mundari digits": (0x1E4F0, 0x1E4F9),
    "kaktovik numerals": (0x1D2C0, 0x1D2D3), "cyrillic ext-d": (0x1E030, 0x1E06D),
    "devanagari ext-a": (0x11B00, 0x11B09), "arabic ext-c": (0x10EFD, 0x10EFF),
    "cjk ext-h": (0x31350, 0x313A0), "cjk ext-i": (0x2EBF0, 0x2EC20),
}


def main():
    rnd = random.Random(15)
    out = []
    for name, (a, b) in RANGES.items():
        chars = [chr(c) for c in range(a, b + 1)]
        out.append("".join(chars))                                   # the run alone
        out.append("abc" + "".join(chars[:5]) + "def 123" + "".join(chars[-3:]))
        out.append(" " + " ".join(chars[:6]) + "  ,.!")
        c = chars * 2  # ranges of three characters too
        out.append("x" + c[0] + "1" + c[1] + "'s " + c[2] + "\n" + c[3] + "\t7")
    for _ in range(20):                                              # mixtures of every range
        parts = []
        for _ in range(rnd.randint(4, 12)):
            a, b = rnd.choice(list(RANGES.values()))
            k = rnd.randint(1, 4)
            parts.append("".join(chr(rnd.randint(a, b)) for _ in range(k)))
            parts.append(rnd.choice(["", " ", "  ", "a", "Z9", "42", "-", "'ll ", "\n", "日本", "é"]))
        out.append("".join(parts))
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus_unicode15.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=True, indent=0)
        f.write("\n")
    print("%d strings -> %s" % (len(out), path))


if __name__ == "__main__":
    main()
