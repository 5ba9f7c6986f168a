/* A chat completion's reasoning, content and tool calls (see chat_output.h).
 *
 * Two stages, each a small state machine over whole UTF-8 characters: the reasoning stage splits
 * the text into reasoning and content, and hands the content to the tool stage (when tool calls
 * are parsed), which takes the call blocks out of it. Each stage keeps the bytes it cannot decide
 * yet (a possible marker's start, a character's first bytes) and decides them only once enough has
 * come, or at the end, so what it hands out does not depend on how the text was cut. */
#include "server/chat_output.h"

#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <utf8proc.h>

#include "util/json_util.h"

static const char THINK[] = "<think>", END_THINK[] = "</think>";
static const char TOOL[] = "<tool_call>", END_TOOL[] = "</tool_call>";
#define LIT_LEN(s) (sizeof s - 1)

/* ---- parser names ---------------------------------------------------------------------------- */

int mt_reasoning_parser_from_name(const char *name, mt_reasoning_parser *out) {
    if (!strcmp(name, "qwen3")) *out = MT_REASONING_QWEN3;
    else if (!strcmp(name, "deepseek-r1")) *out = MT_REASONING_DEEPSEEK_R1;
    else return -1;
    return 0;
}

int mt_tool_parser_from_name(const char *name, mt_tool_parser *out) {
    if (!strcmp(name, "qwen25") || !strcmp(name, "qwen") || !strcmp(name, "qwen3")) *out = MT_TOOL_PARSER_QWEN25;
    else if (!strcmp(name, "hermes")) *out = MT_TOOL_PARSER_HERMES;
    else return -1;
    return 0;
}

const char *mt_reasoning_parser_name(mt_reasoning_parser p) {
    return p == MT_REASONING_QWEN3 ? "qwen3" : p == MT_REASONING_DEEPSEEK_R1 ? "deepseek-r1" : NULL;
}

const char *mt_tool_parser_name(mt_tool_parser p) {
    return p == MT_TOOL_PARSER_QWEN25 ? "qwen25" : p == MT_TOOL_PARSER_HERMES ? "hermes" : NULL;
}

/* ---- deltas ---------------------------------------------------------------------------------- */

/* A new empty delta at the end of d (growing it aborts when memory runs out, as mt_strbuf does). */
static mt_chat_delta *delta_push(mt_chat_deltas *d, mt_chat_part part) {
    if (d->n == d->cap) {
        int cap = d->cap ? d->cap * 2 : 8;
        mt_chat_delta *items = realloc(d->items, (size_t)cap * sizeof *items);
        if (!items) abort();
        d->items = items;
        d->cap = cap;
    }
    mt_chat_delta *x = &d->items[d->n++];
    memset(x, 0, sizeof *x);
    x->part = part;
    return x;
}

static void emit_text(mt_chat_deltas *d, mt_chat_part part, const char *s, size_t n) {
    if (!n) return;
    mt_chat_delta *last = d->n ? &d->items[d->n - 1] : NULL;
    if (!last || last->part != part) last = delta_push(d, part);
    mt_strbuf_append(&last->text, s, n);
}

void mt_chat_deltas_clear(mt_chat_deltas *d) {
    for (int i = 0; i < d->n; i++) {
        mt_strbuf_free(&d->items[i].text);
        free(d->items[i].name);
        free(d->items[i].arguments);
    }
    d->n = 0;
}

void mt_chat_deltas_free(mt_chat_deltas *d) {
    mt_chat_deltas_clear(d);
    free(d->items);
    memset(d, 0, sizeof *d);
}

/* ---- characters and markers ------------------------------------------------------------------ */

/* Bytes of the UTF-8 sequence a lead byte starts (1 for a byte that starts none). */
static size_t seq_len(unsigned char c) {
    return c < 0xC0 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : c < 0xF8 ? 4 : 1;
}

/* Bytes of the character at s[0..n): 0 when n ends inside it and more may come (!final; at the end
 * the rest counts as one). A lead byte not followed by its continuation bytes counts alone. */
static size_t char_len(const char *s, size_t n, bool final) {
    size_t want = seq_len((unsigned char)s[0]);
    for (size_t k = 1; k < want; k++) {
        if (k >= n) return final ? n : 0;
        if (((unsigned char)s[k] & 0xC0) != 0x80) return 1;
    }
    return want;
}

/* The longest prefix of s[0..n) that does not end inside a character. */
static size_t whole_chars(const char *s, size_t n) {
    for (size_t back = 1; back <= 3 && back <= n; back++) {
        unsigned char c = (unsigned char)s[n - back];
        if ((c & 0xC0) == 0x80) continue;
        return seq_len(c) > back ? n - back : n;
    }
    return n;
}

/* Python's str.isspace for the character s[0..n). */
static bool is_space(const char *s, size_t n) {
    utf8proc_int32_t cp;
    if (utf8proc_iterate((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &cp) <= 0) return false;
    if (cp == ' ' || (cp >= 0x09 && cp <= 0x0d) || (cp >= 0x1c && cp <= 0x1f) || cp == 0x85) return true;
    if (cp < 0x80) return false;
    utf8proc_category_t cat = utf8proc_category(cp);
    return cat == UTF8PROC_CATEGORY_ZS || cat == UTF8PROC_CATEGORY_ZL || cat == UTF8PROC_CATEGORY_ZP;
}

static bool starts_with(const char *s, size_t n, const char *lit, size_t lit_n) {
    return n >= lit_n && !memcmp(s, lit, lit_n);
}

/* s[0..n) (n > 0) is a proper start of lit: more bytes could complete it. */
static bool may_start(const char *s, size_t n, const char *lit, size_t lit_n) {
    return n < lit_n && !memcmp(s, lit, n);
}

static void drop_front(mt_strbuf *b, size_t n) {
    if (!n) return;
    memmove(b->data, b->data + n, b->len - n);
    mt_strbuf_truncate(b, b->len - n);
}

/* ---- the splitter ---------------------------------------------------------------------------- */

typedef enum reason_state {
    R_START,     /* qwen3, before the output's first text: "<think>" opens the reasoning */
    R_OPENING,   /* in reasoning, before its first text (whitespace and "<think>" dropped) */
    R_REASONING, /* in reasoning */
    R_CLOSED,    /* after "</think>", before the answer's first text (whitespace dropped) */
    R_ANSWER,    /* the content after "</think>" */
    R_PLAIN,     /* no reasoning: everything is content, as it is */
} reason_state;

struct mt_chat_split {
    mt_chat_split_opts o;
    char **names;           /* the copies of o.tool_names */
    bool finished;
    reason_state r;
    mt_strbuf r_pend;       /* bytes fed and not yet read */
    mt_strbuf r_ws;         /* whitespace held: before the first text (R_START), or trailing the
                               reasoning or the answer so far */
    mt_strbuf r_held;       /* hold_reasoning: the reasoning so far */
    bool t_block;           /* the tool stage is inside a "<tool_call>" block */
    mt_strbuf t_pend;       /* outside a block: content not yet read; inside: the block after its
                               "<tool_call>" */
    size_t t_scan;          /* in a block: bytes of t_pend scanned, and the JSON string state there */
    bool t_in_string, t_escape;
    mt_strbuf t_ws;         /* whitespace trailing the content so far */
    bool t_started;         /* content went out: whitespace is held, no longer dropped */
    int n_calls;
};

mt_chat_split *mt_chat_split_new(const mt_chat_split_opts *o) {
    mt_chat_split *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->o = *o;
    s->r = o->reasoning == MT_REASONING_QWEN3 ? R_START : o->reasoning == MT_REASONING_DEEPSEEK_R1 ? R_OPENING : R_PLAIN;
    if (o->tool_calls && o->tool_names) {
        s->names = calloc((size_t)o->n_tool_names + 1, sizeof *s->names);
        for (int i = 0; s->names && i < o->n_tool_names; i++)
            if (!(s->names[i] = strdup(o->tool_names[i]))) {
                mt_chat_split_free(s);
                return NULL;
            }
        if (!s->names) {
            free(s);
            return NULL;
        }
        s->o.tool_names = (const char *const *)s->names;
    }
    return s;
}

void mt_chat_split_free(mt_chat_split *s) {
    if (!s) return;
    for (int i = 0; s->names && i < s->o.n_tool_names; i++) free(s->names[i]);
    free(s->names);
    mt_strbuf_free(&s->r_pend);
    mt_strbuf_free(&s->r_ws);
    mt_strbuf_free(&s->r_held);
    mt_strbuf_free(&s->t_pend);
    mt_strbuf_free(&s->t_ws);
    free(s);
}

int mt_chat_split_calls(const mt_chat_split *s) { return s->n_calls; }

/* ---- the tool stage: content in, content and calls out ---- */

/* One character of content (whitespace before the first text dropped, after it held until more
 * text comes, so the content ends up stripped). */
static void content_char(mt_chat_split *s, const char *p, size_t n, mt_chat_deltas *out) {
    if (is_space(p, n)) {
        if (s->t_started) mt_strbuf_append(&s->t_ws, p, n);
        return;
    }
    emit_text(out, MT_CHAT_CONTENT, s->t_ws.data, s->t_ws.len);
    mt_strbuf_truncate(&s->t_ws, 0);
    emit_text(out, MT_CHAT_CONTENT, p, n);
    s->t_started = true;
}

static void content_run(mt_chat_split *s, const char *p, size_t n, mt_chat_deltas *out) {
    for (size_t i = 0, cl; i < n; i += cl) content_char(s, p + i, cl = char_len(p + i, n - i, true), out);
}

static bool name_allowed(const mt_chat_split *s, const char *name) {
    if (!s->o.tool_names) return true;
    for (int i = 0; i < s->o.n_tool_names; i++)
        if (!strcmp(s->o.tool_names[i], name)) return true;
    return false;
}

/* Numbers the JSON parse kept the literal of (integers too long for a double) print as that
 * literal: made raw items, whose text cJSON prints as it is. */
static void keep_long_integers(cJSON *node) {
    for (cJSON *c = node->child; c; c = c->next) {
        if (cJSON_IsNumber(c) && c->valuestring) c->type = cJSON_Raw;
        else keep_long_integers(c);
    }
}

/* A block's text between its markers as a call: {"name": non-empty string, "arguments" (or
 * "parameters"): object or absent}. */
static bool parse_call(const mt_chat_split *s, const char *body, size_t len, char **name, char **args) {
    mt_err err;
    cJSON *obj = mt_json_parse_whole(body, len, NULL, &err);
    const cJSON *nm = cJSON_IsObject(obj) ? cJSON_GetObjectItemCaseSensitive(obj, "name") : NULL;
    cJSON *a = cJSON_IsObject(obj) ? cJSON_GetObjectItemCaseSensitive(obj, "arguments") : NULL;
    if (!a || cJSON_IsNull(a)) a = cJSON_IsObject(obj) ? cJSON_GetObjectItemCaseSensitive(obj, "parameters") : NULL;
    bool ok = cJSON_IsString(nm) && nm->valuestring[0] && name_allowed(s, nm->valuestring) &&
              (!a || cJSON_IsNull(a) || cJSON_IsObject(a));
    *name = *args = NULL;
    if (ok) {
        if (cJSON_IsObject(a)) keep_long_integers(a);
        *name = strdup(nm->valuestring);
        *args = cJSON_IsObject(a) ? mt_json_print(a) : strdup("{}");
        ok = *name && *args;
        if (!ok) {
            free(*name);
            free(*args);
        }
    }
    cJSON_Delete(obj);
    return ok;
}

/* The block whose text is t_pend[0..body) ended with its "</tool_call>": a call, or content. */
static void block_end(mt_chat_split *s, size_t body, mt_chat_deltas *out) {
    char *name, *args;
    if (parse_call(s, s->t_pend.data, body, &name, &args)) {
        mt_chat_delta *d = delta_push(out, MT_CHAT_TOOL_CALL);
        d->name = name;
        d->arguments = args;
        d->index = s->n_calls++;
    } else {
        content_run(s, TOOL, LIT_LEN(TOOL), out);
        content_run(s, s->t_pend.data, body, out);
        content_run(s, END_TOOL, LIT_LEN(END_TOOL), out);
    }
    drop_front(&s->t_pend, body + LIT_LEN(END_TOOL));
    s->t_block = false;
}

/* Scans the block for its "</tool_call>" outside JSON strings; true when it ended. */
static bool block_read(mt_chat_split *s, bool final, mt_chat_deltas *out) {
    const char *b = s->t_pend.data;
    size_t n = s->t_pend.len;
    for (size_t i = s->t_scan; i < n; i++) {
        char c = b[i];
        if (s->t_in_string) {
            if (s->t_escape) s->t_escape = false;
            else if (c == '\\') s->t_escape = true;
            else if (c == '"') s->t_in_string = false;
        } else if (c == '"') {
            s->t_in_string = true;
        } else if (c == '<' && starts_with(b + i, n - i, END_TOOL, LIT_LEN(END_TOOL))) {
            block_end(s, i, out);
            return true;
        } else if (c == '<' && !final && may_start(b + i, n - i, END_TOOL, LIT_LEN(END_TOOL))) {
            s->t_scan = i;
            return false;
        }
    }
    s->t_scan = n;
    return false;
}

/* Reads t_pend as far as it can be decided (all of it when final but an unended block). */
static void tool_read(mt_chat_split *s, bool final, mt_chat_deltas *out) {
    for (;;) {
        if (s->t_block) {
            if (!block_read(s, final, out)) return;
            continue;
        }
        const char *b = s->t_pend.data;
        size_t n = s->t_pend.len, i = 0;
        bool opened = false;
        while (i < n) {
            const char *p = b + i;
            size_t rest = n - i;
            if (starts_with(p, rest, TOOL, LIT_LEN(TOOL))) {
                i += LIT_LEN(TOOL);
                opened = true;
                break;
            }
            if (!final && may_start(p, rest, TOOL, LIT_LEN(TOOL))) break;
            size_t cl = char_len(p, rest, final);
            if (!cl) break;
            content_char(s, p, cl, out);
            i += cl;
        }
        drop_front(&s->t_pend, i);
        if (!opened) return;
        s->t_block = true;
        s->t_scan = 0;
        s->t_in_string = s->t_escape = false;
    }
}

/* Content from the reasoning stage. */
static void content_out(mt_chat_split *s, const char *t, size_t n, mt_chat_deltas *out) {
    if (!n) return;
    if (!s->o.tool_calls) {
        emit_text(out, MT_CHAT_CONTENT, t, n);
        return;
    }
    mt_strbuf_append(&s->t_pend, t, n);
    tool_read(s, false, out);
}

static void tool_finish(mt_chat_split *s, mt_chat_deltas *out) {
    if (!s->o.tool_calls) return;
    tool_read(s, true, out);
    if (s->t_block) { /* the output ended inside a block: its text is content */
        content_run(s, TOOL, LIT_LEN(TOOL), out);
        content_run(s, s->t_pend.data, s->t_pend.len, out);
        mt_strbuf_truncate(&s->t_pend, 0);
        s->t_block = false;
    }
    mt_strbuf_truncate(&s->t_ws, 0);
}

/* ---- the reasoning stage: text in, reasoning and content out ---- */

static void reasoning_out(mt_chat_split *s, const char *t, size_t n, mt_chat_deltas *out) {
    if (s->o.hold_reasoning) mt_strbuf_append(&s->r_held, t, n);
    else emit_text(out, MT_CHAT_REASONING, t, n);
}

/* The reasoning ended (at "</think>" or the output's end): the whitespace it ended with dropped,
 * held reasoning out. */
static void reasoning_end(mt_chat_split *s, mt_chat_deltas *out) {
    mt_strbuf_truncate(&s->r_ws, 0);
    emit_text(out, MT_CHAT_REASONING, s->r_held.data, s->r_held.len);
    mt_strbuf_truncate(&s->r_held, 0);
}

/* A text character of the reasoning or the answer: the whitespace held before it goes out first. */
static void text_after_ws(mt_chat_split *s, const char *p, size_t n, mt_chat_deltas *out) {
    if (s->r == R_REASONING) {
        reasoning_out(s, s->r_ws.data, s->r_ws.len, out);
        reasoning_out(s, p, n, out);
    } else {
        content_out(s, s->r_ws.data, s->r_ws.len, out);
        content_out(s, p, n, out);
    }
    mt_strbuf_truncate(&s->r_ws, 0);
}

/* Reads r_pend as far as it can be decided (all of it when final). */
static void reason_read(mt_chat_split *s, bool final, mt_chat_deltas *out) {
    const char *b = s->r_pend.data;
    size_t n = s->r_pend.len, i = 0;
    while (i < n) {
        const char *p = b + i;
        size_t rest = n - i;
        if (s->r == R_PLAIN) {
            size_t whole = final ? rest : whole_chars(p, rest);
            content_out(s, p, whole, out);
            i += whole;
            break;
        }
        if (s->r == R_START || s->r == R_OPENING || s->r == R_REASONING) {
            bool can_close = s->r != R_START;
            if (can_close && starts_with(p, rest, END_THINK, LIT_LEN(END_THINK))) {
                reasoning_end(s, out);
                s->r = R_CLOSED;
                i += LIT_LEN(END_THINK);
                continue;
            }
            if (starts_with(p, rest, THINK, LIT_LEN(THINK))) { /* opens the reasoning, or is dropped in it */
                if (s->r == R_START) {
                    mt_strbuf_truncate(&s->r_ws, 0);
                    s->r = R_OPENING;
                }
                i += LIT_LEN(THINK);
                continue;
            }
            if (!final && (may_start(p, rest, THINK, LIT_LEN(THINK)) ||
                           (can_close && may_start(p, rest, END_THINK, LIT_LEN(END_THINK)))))
                break;
        }
        size_t cl = char_len(p, rest, final);
        if (!cl) break;
        bool ws = is_space(p, cl);
        if (s->r == R_START && !ws) { /* text first: no reasoning */
            content_out(s, s->r_ws.data, s->r_ws.len, out);
            mt_strbuf_truncate(&s->r_ws, 0);
            s->r = R_PLAIN;
            continue;
        }
        if ((s->r == R_OPENING || s->r == R_CLOSED) && !ws) {
            s->r = s->r == R_OPENING ? R_REASONING : R_ANSWER;
            continue;
        }
        if (ws && (s->r == R_START || s->r == R_REASONING || s->r == R_ANSWER)) mt_strbuf_append(&s->r_ws, p, cl);
        else if (!ws) text_after_ws(s, p, cl, out);
        i += cl; /* whitespace of R_OPENING and R_CLOSED: stripped */
    }
    drop_front(&s->r_pend, i);
}

void mt_chat_split_feed(mt_chat_split *s, const char *text, size_t len, mt_chat_deltas *out) {
    if (s->finished || !len) return;
    if (s->r == R_PLAIN && !s->r_pend.len) { /* no reasoning: straight on, whole characters */
        size_t whole = whole_chars(text, len);
        content_out(s, text, whole, out);
        mt_strbuf_append(&s->r_pend, text + whole, len - whole);
        return;
    }
    mt_strbuf_append(&s->r_pend, text, len);
    reason_read(s, false, out);
}

void mt_chat_split_finish(mt_chat_split *s, mt_chat_deltas *out) {
    if (s->finished) return;
    reason_read(s, true, out);
    if (s->r == R_START) content_out(s, s->r_ws.data, s->r_ws.len, out); /* whitespace only: content as it is */
    else if (s->r == R_OPENING || s->r == R_REASONING) reasoning_end(s, out);
    mt_strbuf_truncate(&s->r_ws, 0);
    tool_finish(s, out);
    s->finished = true;
}

const char *mt_chat_finish_reason(const char *finish, int n_calls) {
    return n_calls > 0 && !strcmp(finish, "stop") ? "tool_calls" : finish;
}

/* ---- whole outputs --------------------------------------------------------------------------- */

int mt_chat_output_parse(const mt_chat_split_opts *o, const char *text, size_t len, mt_chat_output *out) {
    memset(out, 0, sizeof *out);
    mt_chat_split *s = mt_chat_split_new(o);
    if (!s) return -1;
    mt_chat_deltas d = {0};
    mt_chat_split_feed(s, text, len, &d);
    mt_chat_split_finish(s, &d);
    mt_chat_split_free(s);
    int calls = 0;
    for (int i = 0; i < d.n; i++) calls += d.items[i].part == MT_CHAT_TOOL_CALL;
    if (calls && !(out->calls = calloc((size_t)calls, sizeof *out->calls))) {
        mt_chat_deltas_free(&d);
        return -1;
    }
    for (int i = 0; i < d.n; i++) {
        mt_chat_delta *x = &d.items[i];
        if (x->part == MT_CHAT_TOOL_CALL) {
            out->calls[out->n_calls++] = *x; /* taken over */
            memset(x, 0, sizeof *x);
        } else {
            mt_strbuf_append(x->part == MT_CHAT_REASONING ? &out->reasoning : &out->content, x->text.data, x->text.len);
        }
    }
    mt_chat_deltas_free(&d);
    return 0;
}

void mt_chat_output_free(mt_chat_output *out) {
    mt_strbuf_free(&out->reasoning);
    mt_strbuf_free(&out->content);
    for (int i = 0; i < out->n_calls; i++) {
        free(out->calls[i].name);
        free(out->calls[i].arguments);
    }
    free(out->calls);
    memset(out, 0, sizeof *out);
}
