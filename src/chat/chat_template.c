/* Chat template loading (tokenizer_config.json) and rendering entry point; see chat_template.h. */
#include "chat/chat_template.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/jinja.h"
#include "util/json_util.h"

struct mt_chat_template {
    jarena arena; /* AST and source */
    jnode *body;      /* the template, or a list's "default" (NULL when the list has none) */
    jnode *tool_body; /* a list's "tool_use", rendered when tools are given (NULL: none) */
    char *special[4]; /* bos, eos, unk, pad (NULL when absent) */
};

static const char *const SPECIAL_NAMES[4] = {"bos_token", "eos_token", "unk_token", "pad_token"};

static char *xstrdup(const char *s) {
    if (!s) return NULL;
    size_t n = strlen(s);
    char *p = malloc(n + 1);
    if (p) memcpy(p, s, n + 1);
    return p;
}

/* source parsed into t's arena, or NULL with msg. */
static jnode *parse_source(mt_chat_template *t, const char *source, char *msg, size_t msg_len) {
    size_t n = strlen(source);
    /* Jinja normalises \r\n and \r to \n and drops one trailing newline (keep_trailing_newline=False). */
    char *src = ja_alloc(&t->arena, n + 1);
    if (!src) {
        snprintf(msg, msg_len, "chat template: out of memory");
        return NULL;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (source[i] == '\r') {
            src[k++] = '\n';
            if (i + 1 < n && source[i + 1] == '\n') i++;
        } else src[k++] = source[i];
    }
    if (k && src[k - 1] == '\n') k--;
    src[k] = 0;
    return jinja_parse(&t->arena, src, k, msg, msg_len);
}

/* A template of source (NULL: none) and, for a named list, tool_source, its "tool_use" (or NULL). */
static int build(mt_chat_template **out, const char *source, const char *tool_source, const char *const special[4],
                 mt_err *err) {
    mt_chat_template *t = calloc(1, sizeof *t);
    if (!t) return mt_errf(err, "chat template: out of memory");
    char msg[MT_ERR_LEN];
    bool default_failed = source && !(t->body = parse_source(t, source, msg, sizeof msg));
    if (default_failed || (tool_source && !(t->tool_body = parse_source(t, tool_source, msg, sizeof msg)))) {
        ja_free(&t->arena);
        free(t);
        return default_failed ? mt_errf(err, "%s", msg) : mt_errf(err, "the \"tool_use\" template: %s", msg);
    }
    for (int i = 0; i < 4; i++) t->special[i] = xstrdup(special[i]);
    *out = t;
    return 0;
}

int mt_chat_template_from_string(mt_chat_template **out, const char *source, const char *bos_token,
                                 const char *eos_token, mt_err *err) {
    const char *sp[4] = {bos_token, eos_token, NULL, NULL};
    return build(out, source, NULL, sp, err);
}

void mt_chat_template_free(mt_chat_template *tpl) {
    if (!tpl) return;
    ja_free(&tpl->arena);
    for (int i = 0; i < 4; i++) free(tpl->special[i]);
    free(tpl);
}

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (n + 4096 > cap) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0) break;
    }
    fclose(f);
    if (buf) buf[n] = 0;
    *len = n;
    return buf;
}

static cJSON *read_json_file(const char *path, int *present, mt_err *err) {
    size_t len;
    char *text = read_file(path, &len);
    *present = text != NULL;
    if (!text) return NULL;
    cJSON *j = mt_json_parse(text, len, path, NULL, err);
    free(text);
    return j;
}

static void special_from(const cJSON *cfg, const char *sp[4]) {
    for (int i = 0; i < 4; i++) {
        if (sp[i] || !cfg) continue;
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, SPECIAL_NAMES[i]);
        if (cJSON_IsObject(v)) v = cJSON_GetObjectItemCaseSensitive(v, "content");
        if (cJSON_IsString(v)) sp[i] = v->valuestring;
    }
}

int mt_chat_template_load(mt_chat_template **out, const char *model_dir, mt_err *err) {
    char cfg_path[4096], jinja_path[4096], map_path[4096];
    snprintf(cfg_path, sizeof cfg_path, "%s/tokenizer_config.json", model_dir);
    snprintf(jinja_path, sizeof jinja_path, "%s/chat_template.jinja", model_dir);
    snprintf(map_path, sizeof map_path, "%s/special_tokens_map.json", model_dir);
    int have_cfg, have_map, rc = -1;
    cJSON *cfg = read_json_file(cfg_path, &have_cfg, err), *map = NULL;
    if (have_cfg && !cfg) return -1;
    map = read_json_file(map_path, &have_map, err);
    if (have_map && !map) {
        cJSON_Delete(cfg);
        return -1;
    }
    size_t jlen;
    char *jinja = read_file(jinja_path, &jlen); /* transformers prefers this file when present */
    const char *source = jinja, *tool_source = NULL, *where = jinja_path;
    if (!source) {
        where = cfg_path;
        if (!have_cfg) {
            mt_errf(err, "%s: neither tokenizer_config.json nor chat_template.jinja found", model_dir);
            goto done;
        }
        const cJSON *ct = cJSON_GetObjectItemCaseSensitive(cfg, "chat_template");
        if (cJSON_IsString(ct)) source = ct->valuestring;
        else if (cJSON_IsArray(ct)) {
            const cJSON *it;
            cJSON_ArrayForEach(it, ct) { /* transformers: "tool_use" when tools are given, else "default" */
                const cJSON *nm = cJSON_GetObjectItemCaseSensitive(it, "name");
                const cJSON *tp = cJSON_GetObjectItemCaseSensitive(it, "template");
                if (!cJSON_IsString(nm) || !cJSON_IsString(tp)) continue;
                if (!strcmp(nm->valuestring, "default")) source = tp->valuestring;
                else if (!strcmp(nm->valuestring, "tool_use")) tool_source = tp->valuestring;
            }
            if (!source && !tool_source) {
                mt_errf(err, "%s: chat_template list has no entry named \"default\" (nor \"tool_use\")", cfg_path);
                goto done;
            }
        } else {
            mt_errf(err, "%s: no chat_template (a string or a list of {name, template}) and no chat_template.jinja", cfg_path);
            goto done;
        }
    }
    const char *sp[4] = {0};
    special_from(cfg, sp);
    special_from(map, sp);
    if (build(out, source, tool_source, sp, err)) {
        char inner[MT_ERR_LEN];
        snprintf(inner, sizeof inner, "%s", err ? err->msg : "");
        mt_errf(err, "%s: %s", where, inner);
        goto done;
    }
    rc = 0;
done:
    free(jinja);
    cJSON_Delete(cfg);
    cJSON_Delete(map);
    return rc;
}

/* A JSON string (a value or a member name) as a string value: with c->masked_nul, each C0 80 pair
 * read back as a NUL byte. */
static jv json_text(jctx *c, const char *s) {
    if (!c->masked_nul || !mt_json_holds_nul(s)) return jv_cstr(s);
    size_t n = strlen(s);
    char *bytes = jx_alloc(c, n);
    return jv_strn(bytes, mt_json_unmask_nul(s, n, bytes));
}

/* cJSON -> value. Numbers: integral values that fit are ints (cJSON keeps no int/float distinction,
 * so a JSON `1.0` reads as the int 1); integers past 2^53 from their text, up to int64. */
static jv from_json(jctx *c, const cJSON *j, int depth) {
    if (depth > 200) jx_fail(c, 0, "input JSON nested too deeply");
    if (cJSON_IsNull(j)) return jv_none();
    if (cJSON_IsTrue(j)) return jv_bool(1);
    if (cJSON_IsFalse(j)) return jv_bool(0);
    if (cJSON_IsNumber(j)) {
        int64_t exact;
        if (mt_json_int64(j, &exact)) return jv_int(exact); /* past 2^53, as its text says */
        double d = j->valuedouble;
        if (d == floor(d) && fabs(d) < 9007199254740992.0) return jv_int((int64_t)d);
        return jv_float(d);
    }
    if (cJSON_IsString(j)) return json_text(c, j->valuestring);
    if (cJSON_IsArray(j)) {
        jv out = jv_list_new(c, (size_t)cJSON_GetArraySize(j));
        const cJSON *it;
        cJSON_ArrayForEach(it, j) jv_list_push(c, out, from_json(c, it, depth + 1));
        return out;
    }
    if (cJSON_IsObject(j)) {
        jv out = jv_dict_new(c, (size_t)cJSON_GetArraySize(j));
        const cJSON *it;
        cJSON_ArrayForEach(it, j) jv_dict_set(c, out.u.d, json_text(c, it->string), from_json(c, it, depth + 1));
        return out;
    }
    return jv_none();
}

/* Binds the template variables and renders into *out; longjmps to the caller's setjmp on error. */
static void bind_and_render(jctx *c, const mt_chat_template *tpl, const cJSON *messages, const cJSON *tools,
                            int add_generation_prompt, const cJSON *kwargs, jbuf *out) {
    c->root = jx_alloc(c, sizeof(jscope));
    jdict *g = &c->root->vars;
    jv_dict_set(c, g, jv_cstr("messages"), from_json(c, messages, 0));
    bool with_tools = tools && !cJSON_IsNull(tools);
    jv_dict_set(c, g, jv_cstr("tools"), with_tools ? from_json(c, tools, 0) : jv_none());
    jv_dict_set(c, g, jv_cstr("documents"), jv_none());
    jv_dict_set(c, g, jv_cstr("add_generation_prompt"), jv_bool(add_generation_prompt));
    for (int i = 0; i < 4; i++)
        if (tpl->special[i]) jv_dict_set(c, g, jv_cstr(SPECIAL_NAMES[i]), jv_cstr(tpl->special[i]));
    if (kwargs) {
        const cJSON *it;
        cJSON_ArrayForEach(it, kwargs) jv_dict_set(c, g, jv_cstr(it->string), from_json(c, it, 0));
    }
    c->cur = c->root;
    const jnode *body = with_tools && tpl->tool_body ? tpl->tool_body : tpl->body;
    if (!body)
        jx_fail(c, 0, "the model's chat_template list has no \"default\" entry, only \"tool_use\", which is used "
                      "when tools are given");
    jinja_render(c, body, out);
}

/* 0 ok, -1 with c->errmsg set. Kept apart so no local of the caller lives across setjmp. */
static int guarded_render(jctx *c, const mt_chat_template *tpl, const cJSON *messages, const cJSON *tools,
                          int add_generation_prompt, const cJSON *kwargs, jbuf *out) {
    if (setjmp(c->jb)) return -1;
    bind_and_render(c, tpl, messages, tools, add_generation_prompt, kwargs, out);
    return 0;
}

int mt_chat_render(const mt_chat_template *tpl, const cJSON *messages, const cJSON *tools,
                   int add_generation_prompt, const cJSON *extra_kwargs, char **out_text, mt_err *err) {
    return mt_chat_render_bytes(tpl, messages, tools, add_generation_prompt, extra_kwargs, false, out_text, NULL, err);
}

int mt_chat_render_bytes(const mt_chat_template *tpl, const cJSON *messages, const cJSON *tools,
                         int add_generation_prompt, const cJSON *extra_kwargs, bool masked_nul, char **out_text,
                         size_t *out_len, mt_err *err) {
    *out_text = NULL;
    if (!cJSON_IsArray(messages)) return mt_errf(err, "chat template: messages must be a JSON array");
    if (tools && !cJSON_IsArray(tools) && !cJSON_IsNull(tools)) return mt_errf(err, "chat template: tools must be a JSON array");
    const cJSON *kwargs = cJSON_IsNull(extra_kwargs) ? NULL : extra_kwargs;
    if (kwargs && !cJSON_IsObject(kwargs)) return mt_errf(err, "chat template: kwargs must be a JSON object");
    jarena arena = {0};
    jctx *c = calloc(1, sizeof *c);
    if (!c) return mt_errf(err, "chat template: out of memory");
    c->a = &arena;
    c->masked_nul = masked_nul;
    jbuf out = {0};
    int rc = -1;
    if (guarded_render(c, tpl, messages, tools, add_generation_prompt, kwargs, &out)) {
        mt_errf(err, "%s", c->errmsg);
    } else if (!(*out_text = malloc(out.n + 1))) {
        mt_errf(err, "chat template: out of memory");
    } else {
        memcpy(*out_text, out.p, out.n);
        (*out_text)[out.n] = 0;
        if (out_len) *out_len = out.n;
        rc = 0;
    }
    ja_free(&arena);
    free(c);
    return rc;
}
