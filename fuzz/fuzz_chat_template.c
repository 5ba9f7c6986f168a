/* Fuzz target: chat templates (chat/: the Jinja lexer, parser and interpreter). The input is a
 * template; one that parses is rendered over a fixed conversation (system, user, an assistant turn
 * with reasoning and a tool call, a tool answer), with tools and extra kwargs, and without them. */
#include <cjson/cJSON.h>

#include "chat/chat_template.h"
#include "fuzz_util.h"

static const char CONVERSATION[] =
    "[{\"role\": \"system\", \"content\": \"You are terse.\"},"
    " {\"role\": \"user\", \"content\": \"H\\u00e9llo <b>w\\u00f6rld</b>, 2+2?\"},"
    " {\"role\": \"assistant\", \"content\": \"<think>\\nadd\\n</think>\\n\\n4\", \"reasoning_content\": \"add\","
    "  \"tool_calls\": [{\"id\": \"c1\", \"type\": \"function\","
    "   \"function\": {\"name\": \"calc\", \"arguments\": {\"x\": 1, \"y\": [1.5, null, true], \"z\": \"\\\"q\\\"\"}}}]},"
    " {\"role\": \"tool\", \"tool_call_id\": \"c1\", \"content\": \"4\"},"
    " {\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"thanks\"}]}]";
static const char TOOLS[] =
    "[{\"type\": \"function\", \"function\": {\"name\": \"calc\", \"description\": \"adds\","
    " \"parameters\": {\"type\": \"object\", \"properties\": {\"x\": {\"type\": \"integer\"}}}}}]";
static const char KWARGS[] = "{\"enable_thinking\": false, \"custom\": [1, \"two\", {\"three\": 3}]}";

static cJSON *g_messages, *g_tools, *g_kwargs;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    g_messages = cJSON_Parse(CONVERSATION);
    g_tools = cJSON_Parse(TOOLS);
    g_kwargs = cJSON_Parse(KWARGS);
    if (!g_messages || !g_tools || !g_kwargs) abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *src = fuzz_cstr(data, size);
    mt_chat_template *t = NULL;
    mt_err err = {{0}};
    if (mt_chat_template_from_string(&t, src, "<s>", "</s>", &err) == 0) {
        for (int full = 0; full < 2; full++) {
            char *out = NULL;
            err.msg[0] = '\0';
            int rc = mt_chat_render(t, g_messages, full ? g_tools : NULL, full, full ? g_kwargs : NULL, &out, &err);
            FUZZ_CHECK(rc == 0 ? out != NULL : err.msg[0] != '\0');
            free(out);
        }
        mt_chat_template_free(t);
    } else {
        FUZZ_CHECK(err.msg[0] != '\0');
    }
    free(src);
    return 0;
}
