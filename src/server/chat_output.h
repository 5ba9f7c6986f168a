/* A chat completion's text split into the parts SGLang's --reasoning-parser and --tool-call-parser
 * give it: the reasoning between "<think>" and "</think>" (message.reasoning_content), the content,
 * and the tool calls of "<tool_call>{"name": ..., "arguments": {...}}</tool_call>" blocks
 * (message.tool_calls). Pure text logic: no HTTP, no engine.
 *
 * A splitter is fed the output's text in pieces of any size (a marker or a UTF-8 character may be
 * cut anywhere) and hands back typed deltas; it holds back what might still become a marker, a
 * stripped run of whitespace or the rest of a character, so no delta ever shows part of a marker or
 * of a character. Whatever the pieces, the deltas join into the parts mt_chat_output_parse gives for
 * the whole text (it feeds the text in one piece), so a streamed answer adds up to the whole one.
 *
 * Reasoning (qwen3, deepseek-r1): qwen3 is in reasoning when the output starts with "<think>"
 * (whitespace before it allowed); deepseek-r1 from the output's start (its template opened the
 * block). In reasoning, "<think>" markers are dropped and the reasoning runs to the first
 * "</think>" (to the end without one); the content is what follows it. Both are stripped of
 * surrounding whitespace (Python's str.strip). An output not in reasoning is all content, as is.
 *
 * Tool calls (qwen25 / hermes, applied to the content): a block is "<tool_call>", a JSON object
 * with a string "name" and an object "arguments" (or "parameters"; none reads as {}), then
 * "</tool_call>", whitespace allowed around the object; a "</tool_call>" inside a JSON string does
 * not end it. A valid block is a call (its arguments re-printed as compact JSON, long integers kept
 * digit for digit); a block that is not (bad JSON, no string name, a name not among tool_names) stays
 * in the content as the text it was, and so does a block the output ends inside. The content is
 * then the text outside the calls, joined, stripped of surrounding whitespace. */
#ifndef MT_SERVER_CHAT_OUTPUT_H
#define MT_SERVER_CHAT_OUTPUT_H

#include <stdbool.h>
#include <stddef.h>

#include "util/strbuf.h"

typedef enum mt_reasoning_parser {
    MT_REASONING_OFF,
    MT_REASONING_QWEN3,       /* reasoning when the output opens it with <think> */
    MT_REASONING_DEEPSEEK_R1, /* reasoning from the output's start */
} mt_reasoning_parser;

typedef enum mt_tool_parser {
    MT_TOOL_PARSER_OFF,
    MT_TOOL_PARSER_QWEN25,    /* "qwen25", SGLang's "qwen", and "qwen3" */
    MT_TOOL_PARSER_HERMES,    /* the same <tool_call> JSON blocks */
} mt_tool_parser;

/* The names --reasoning-parser and --tool-call-parser accept, for messages. */
#define MT_REASONING_PARSER_NAMES "qwen3, deepseek-r1"
#define MT_TOOL_PARSER_NAMES "qwen25 (also spelled qwen or qwen3), hermes"

/* A parser by its name: 0, or -1 for a name that is none of the above. */
int mt_reasoning_parser_from_name(const char *name, mt_reasoning_parser *out);
int mt_tool_parser_from_name(const char *name, mt_tool_parser *out);
/* A parser's name (qwen25 for its aliases); NULL for OFF. */
const char *mt_reasoning_parser_name(mt_reasoning_parser p);
const char *mt_tool_parser_name(mt_tool_parser p);

typedef struct mt_chat_split_opts {
    mt_reasoning_parser reasoning; /* OFF: the whole text is content */
    bool hold_reasoning;           /* the reasoning comes as one delta once it ends (SGLang's
                                      stream_reasoning false) instead of as it is generated */
    bool tool_calls;               /* parse tool-call blocks out of the content */
    const char *const *tool_names; /* with tool_calls: the names a call may have; NULL: any */
    int n_tool_names;
} mt_chat_split_opts;

typedef enum mt_chat_part { MT_CHAT_REASONING, MT_CHAT_CONTENT, MT_CHAT_TOOL_CALL } mt_chat_part;

typedef struct mt_chat_delta {
    mt_chat_part part;
    mt_strbuf text;      /* REASONING, CONTENT: never empty; may hold NUL bytes (text.len counts) */
    char *name;          /* TOOL_CALL: the function's name */
    char *arguments;     /*   its arguments, a JSON object's compact text */
    int index;           /*   its place among the output's calls: 0, 1, ... */
} mt_chat_delta;

/* Deltas in output order; text deltas of one part next to each other are joined. */
typedef struct mt_chat_deltas {
    mt_chat_delta *items;
    int n, cap;
} mt_chat_deltas;

/* Frees the deltas' contents and empties the list (keeping its room). */
void mt_chat_deltas_clear(mt_chat_deltas *d);
void mt_chat_deltas_free(mt_chat_deltas *d);

typedef struct mt_chat_split mt_chat_split;

/* A splitter (tool_names copied); NULL when out of memory. */
mt_chat_split *mt_chat_split_new(const mt_chat_split_opts *o);
/* The next len bytes of the output: the deltas they complete are appended to out. */
void mt_chat_split_feed(mt_chat_split *s, const char *text, size_t len, mt_chat_deltas *out);
/* The output's end: everything held back is decided and appended to out. Nothing may be fed after. */
void mt_chat_split_finish(mt_chat_split *s, mt_chat_deltas *out);
/* The tool calls handed out so far. */
int mt_chat_split_calls(const mt_chat_split *s);
void mt_chat_split_free(mt_chat_split *s);

/* The OpenAI finish reason of a chat output that ended with finish ("stop", "length", "abort") and
 * has n_calls parsed tool calls: "tool_calls" when it stopped (eos, a stop token or string) with
 * calls, as SGLang turns it; otherwise finish. */
const char *mt_chat_finish_reason(const char *finish, int n_calls);

/* A whole output's parts. */
typedef struct mt_chat_output {
    mt_strbuf reasoning;   /* len 0: none */
    mt_strbuf content;     /* len 0: none */
    mt_chat_delta *calls;  /* [n_calls], TOOL_CALL deltas in order */
    int n_calls;
} mt_chat_output;

/* Splits text[0..len) as a splitter fed it in one piece would; -1 when out of memory. */
int mt_chat_output_parse(const mt_chat_split_opts *o, const char *text, size_t len, mt_chat_output *out);
void mt_chat_output_free(mt_chat_output *out);

#endif
