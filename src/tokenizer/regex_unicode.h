/* Translation of a tokenizer.json regex (written for the `tokenizers` library's engine, Oniguruma,
 * with Unicode 16.0 tables) into a PCRE2 pattern that matches the same text with the system's PCRE2
 * (Debian 12: 10.42, Unicode 14.0 tables). Each Unicode class item (\p{X}, \P{X} for a general
 * category, \d \D \s \S \w \W, Oniguruma's \h \H) becomes PCRE2 syntax for the library's set: the
 * property plus the code points assigned to it since, minus those that left it; \s, \w and \h by
 * the library's definitions (they differ from PCRE2's), and \b \B by its \w; \v, \V, \Q, \E and \p
 * without braces as Oniguruma reads them (the vertical tab, 'V', 'Q', 'E', 'p'). Classes holding an
 * item that cannot be written inside brackets become an atomic alternation. Everything else is
 * copied unchanged. Refused with an error: Oniguruma's nested classes and class intersection (`&&`),
 * which PCRE2 reads as literal characters, a range ending in a class escape ([a-\s]), and extended
 * mode (?x). Scripts (\p{Han}), other properties and POSIX classes are passed to PCRE2 as written
 * (with PCRE2's tables). */
#ifndef MT_TOKENIZER_REGEX_UNICODE_H
#define MT_TOKENIZER_REGEX_UNICODE_H

#include "util/err.h"

/* The PCRE2 pattern for pattern (malloc'd, *out), or -1 with err set. *as_written_elsewhere (if not
 * NULL) is 1 when the pattern as written matches as the translation does on every text for which
 * tk_regex_has_changed is false (it uses no \w \h \v and the like), so that such texts may be run
 * through it: the added code point ranges cost the translation up to 15% of a tokenizer's speed. */
int tk_regex_translate(const char *pattern, char **out, int *as_written_elsewhere, mt_err *err);

/* Whether the UTF-8 text s[0..n) holds a code point whose Unicode classes differ between the library
 * and PCRE2 (assigned since Unicode 14, or moved: the generated table tr_changed). */
int tk_regex_has_changed(const char *s, size_t n);

#endif
