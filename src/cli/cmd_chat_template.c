/* moetrace chat-template: render a model folder's chat template over a conversation (SPEC §3). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "chat/chat_template.h"
#include "cli/commands.h"
#include "util/err.h"
#include "util/json_util.h"

static const char USAGE[] =
    "usage: moetrace chat-template --model DIR --messages F.json [--no-generation-prompt] [--kwargs JSON]\n"
    "\n"
    "Renders the model's chat template as transformers' apply_chat_template(messages, tokenize=False,\n"
    "add_generation_prompt=True) does, and prints the prompt (no trailing newline added). The template is\n"
    "DIR/chat_template.jinja when present (transformers prefers it), else DIR/tokenizer_config.json's\n"
    "chat_template; the special tokens come from tokenizer_config.json (and special_tokens_map.json).\n"
    "\n"
    "  --model DIR               folder with chat_template.jinja or tokenizer_config.json\n"
    "  --messages F.json         a JSON array of messages, or an object {\"messages\": [...], \"tools\": [...]}\n"
    "                            ('-' reads stdin)\n"
    "  --tools F.json            a JSON array of tool definitions (overrides \"tools\" of --messages)\n"
    "  --no-generation-prompt    add_generation_prompt=False\n"
    "  --kwargs JSON             extra template variables, e.g. '{\"enable_thinking\": false}'\n"
    "\n"
    "JSON strings holding U+0000 (\\u0000) are refused with an error naming the file: moetrace keeps\n"
    "strings NUL-terminated, so the text would otherwise be cut there.\n";

/* The whole file (or stdin for "-"), NUL-terminated; *len bytes before the NUL. NULL when unreadable. */
static char *slurp(const char *path, size_t *len) {
    FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (n + 1 >= cap) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        if (!r) break;
        n += r;
    }
    if (f != stdin) fclose(f);
    if (buf) buf[n] = 0;
    *len = n;
    return buf;
}

static cJSON *read_json(const char *path, const char *what) {
    size_t len = 0;
    char *text = slurp(path, &len);
    if (!text) {
        fprintf(stderr, "moetrace chat-template: cannot read %s '%s'\n", what, path);
        return NULL;
    }
    char name[4200];
    snprintf(name, sizeof name, "%s '%s'", what, path);
    mt_err err = {{0}};
    cJSON *j = mt_json_parse(text, len, name, NULL, &err);
    free(text);
    if (!j) fprintf(stderr, "moetrace chat-template: %s\n", err.msg);
    return j;
}

int cmd_chat_template(int argc, char **argv) {
    const char *model = NULL, *messages_path = NULL, *tools_path = NULL, *kwargs_text = NULL;
    int add_gen = 1;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(USAGE, stdout);
            return 0;
        }
        if (!strcmp(a, "--no-generation-prompt")) {
            add_gen = 0;
            continue;
        }
        const char **dst = !strcmp(a, "--model") ? &model : !strcmp(a, "--messages") ? &messages_path
                         : !strcmp(a, "--tools") ? &tools_path : !strcmp(a, "--kwargs") ? &kwargs_text : NULL;
        if (!dst) {
            fprintf(stderr, "moetrace chat-template: unknown argument '%s' (see --help)\n", a);
            return 2;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "moetrace chat-template: %s needs a value\n", a);
            return 2;
        }
        *dst = argv[++i];
    }
    if (!model || !messages_path) {
        fprintf(stderr, "moetrace chat-template: --model and --messages are required (see --help)\n");
        return 2;
    }
    int rc = 1;
    mt_err err = {{0}};
    mt_chat_template *tpl = NULL;
    cJSON *msgs = NULL, *tools = NULL, *kwargs = NULL;
    char *out = NULL;
    msgs = read_json(messages_path, "--messages");
    if (!msgs) goto done;
    const cJSON *messages = msgs, *tools_in = NULL;
    if (cJSON_IsObject(msgs)) {
        messages = cJSON_GetObjectItemCaseSensitive(msgs, "messages");
        tools_in = cJSON_GetObjectItemCaseSensitive(msgs, "tools");
    }
    if (!cJSON_IsArray(messages)) {
        fprintf(stderr, "moetrace chat-template: --messages '%s' must hold a JSON array of messages\n", messages_path);
        goto done;
    }
    if (tools_path) {
        tools = read_json(tools_path, "--tools");
        if (!tools) goto done;
        tools_in = tools;
    }
    if (kwargs_text) {
        kwargs = mt_json_parse(kwargs_text, strlen(kwargs_text), "--kwargs", NULL, &err);
        if (!kwargs) {
            fprintf(stderr, "moetrace chat-template: %s\n", err.msg);
            goto done;
        }
        if (!cJSON_IsObject(kwargs)) {
            fprintf(stderr, "moetrace chat-template: --kwargs must be a JSON object (got '%s')\n", kwargs_text);
            goto done;
        }
    }
    if (mt_chat_template_load(&tpl, model, &err) ||
        mt_chat_render(tpl, messages, tools_in, add_gen, kwargs, &out, &err)) {
        fprintf(stderr, "moetrace chat-template: %s\n", err.msg);
        goto done;
    }
    fputs(out, stdout);
    rc = fflush(stdout) ? 1 : 0;
done:
    free(out);
    mt_chat_template_free(tpl);
    cJSON_Delete(msgs);
    cJSON_Delete(tools);
    cJSON_Delete(kwargs);
    return rc;
}
