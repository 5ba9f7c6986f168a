/* Fuzz target: the chat output splitter (server/chat_output.c). The input's first byte picks the
 * options (bits 0-1: no reasoning parser, qwen3, deepseek-r1; bit 2: reasoning held whole; bit 3:
 * tool calls; bit 4: a list of allowed names), its second
 * seeds where the text is cut; the rest is the model's output. Fed in those pieces, the splitter's
 * deltas must add up to the parts mt_chat_output_parse gives for the whole text: the reasoning, the
 * content, the tool calls in order (index, name, arguments); no text delta is empty; a tool call's
 * arguments are a JSON object. */
#include <cjson/cJSON.h>

#include "fuzz_util.h"
#include "server/chat_output.h"

static void join(const mt_chat_deltas *d, mt_chat_part part, mt_strbuf *out) {
    for (int i = 0; i < d->n; i++)
        if (d->items[i].part == part) mt_strbuf_append(out, d->items[i].text.data, d->items[i].text.len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    static const char *const NAMES[] = {"get_weather", "search"};
    mt_chat_split_opts o = {.reasoning = (mt_reasoning_parser)((data[0] & 3) % 3), .hold_reasoning = data[0] & 4,
                            .tool_calls = data[0] & 8, .tool_names = data[0] & 16 ? NAMES : NULL,
                            .n_tool_names = data[0] & 16 ? 2 : 0};
    uint32_t cut = data[1] * 2654435761u + 1;
    const char *text = (const char *)data + 2;
    size_t len = size - 2;

    mt_chat_output whole;
    FUZZ_CHECK(mt_chat_output_parse(&o, text, len, &whole) == 0);
    mt_chat_split *s = mt_chat_split_new(&o);
    FUZZ_CHECK(s);
    mt_chat_deltas d = {0};
    for (size_t at = 0; at < len;) {
        cut = cut * 1664525u + 1013904223u;
        size_t n = 1 + (cut >> 24) % 9;
        if (n > len - at) n = len - at;
        mt_chat_split_feed(s, text + at, n, &d);
        at += n;
    }
    mt_chat_split_finish(s, &d);

    mt_strbuf reasoning = {0}, content = {0};
    join(&d, MT_CHAT_REASONING, &reasoning);
    join(&d, MT_CHAT_CONTENT, &content);
    FUZZ_CHECK(reasoning.len == whole.reasoning.len &&
               (!reasoning.len || !memcmp(reasoning.data, whole.reasoning.data, reasoning.len)));
    FUZZ_CHECK(content.len == whole.content.len && (!content.len || !memcmp(content.data, whole.content.data, content.len)));
    int calls = 0;
    for (int i = 0; i < d.n; i++) {
        const mt_chat_delta *x = &d.items[i];
        if (x->part != MT_CHAT_TOOL_CALL) {
            FUZZ_CHECK(x->text.len > 0);
            continue;
        }
        FUZZ_CHECK(calls < whole.n_calls && x->index == calls);
        FUZZ_CHECK(!strcmp(x->name, whole.calls[calls].name) && !strcmp(x->arguments, whole.calls[calls].arguments));
        /* JSON text (cJSON's own parser: moetrace's refuses \u0000, which a model may write) */
        cJSON *args = cJSON_ParseWithLength(x->arguments, strlen(x->arguments));
        FUZZ_CHECK(cJSON_IsObject(args));
        cJSON_Delete(args);
        calls++;
    }
    FUZZ_CHECK(calls == whole.n_calls && mt_chat_split_calls(s) == calls);
    FUZZ_CHECK(o.tool_calls || calls == 0);
    FUZZ_CHECK(o.reasoning != MT_REASONING_OFF || reasoning.len == 0);
    mt_strbuf_free(&reasoning);
    mt_strbuf_free(&content);
    mt_chat_deltas_free(&d);
    mt_chat_split_free(s);
    mt_chat_output_free(&whole);
    return 0;
}
