#include "support/http_client.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

struct mt_http_client {
    CURL *curl;
    char base[256];
    char auth[512];
    long timeout_ms;
};

void mt_http_global_init(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

mt_http_client *mt_http_client_new(const char *base_url, const char *api_key) {
    mt_http_client *c = calloc(1, sizeof *c);
    if (!c || !(c->curl = curl_easy_init())) {
        free(c);
        return NULL;
    }
    snprintf(c->base, sizeof c->base, "%s", base_url);
    if (api_key) snprintf(c->auth, sizeof c->auth, "Authorization: Bearer %s", api_key);
    return c;
}

void mt_http_client_free(mt_http_client *c) {
    if (!c) return;
    curl_easy_cleanup(c->curl);
    free(c);
}

void mt_http_client_set_timeout_ms(mt_http_client *c, long ms) { c->timeout_ms = ms; }

typedef struct sink {
    mt_http_response *r;
    size_t cap;
    /* SSE */
    mt_sse_handler on_event;
    void *ctx;
    char *line;
    size_t line_len, line_cap;
    int aborted;
} sink;

static int grow(char **buf, size_t *cap, size_t need) {
    if (need <= *cap) return 0;
    size_t n = *cap ? *cap : 1024;
    while (n < need) n *= 2;
    char *p = realloc(*buf, n);
    if (!p) return -1;
    *buf = p;
    *cap = n;
    return 0;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *userp) {
    sink *s = userp;
    size_t n = size * nmemb;
    if (grow(&s->r->body, &s->cap, s->r->len + n + 1)) return 0;
    memcpy(s->r->body + s->r->len, data, n);
    s->r->len += n;
    s->r->body[s->r->len] = '\0';
    return n;
}

/* Splits the stream into lines; "data: X" lines go to the handler (events here are one line each,
 * as the server writes them). Anything else (an error body) is kept in the response body. */
static size_t on_sse(char *data, size_t size, size_t nmemb, void *userp) {
    sink *s = userp;
    size_t n = size * nmemb;
    for (size_t i = 0; i < n; i++) {
        if (data[i] != '\n') {
            if (grow(&s->line, &s->line_cap, s->line_len + 2)) return 0;
            s->line[s->line_len++] = data[i];
            continue;
        }
        s->line[s->line_len] = '\0';
        if (s->line_len >= 6 && !strncmp(s->line, "data: ", 6)) {
            if (s->on_event(s->line + 6, s->line_len - 6, s->ctx)) {
                s->aborted = 1;
                return 0;
            }
        } else if (s->line_len > 0) {
            on_body(s->line, 1, s->line_len, s);
            on_body("\n", 1, 1, s);
        }
        s->line_len = 0;
    }
    return n;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *userp) {
    sink *s = userp;
    size_t n = size * nmemb;
    if (n > 14 && !strncasecmp(data, "Content-Type:", 13)) {
        const char *v = data + 13;
        while (*v == ' ') v++;
        size_t len = (size_t)(data + n - v);
        while (len > 0 && (v[len - 1] == '\r' || v[len - 1] == '\n')) len--;
        snprintf(s->r->content_type, sizeof s->r->content_type, "%.*s", (int)len, v);
    }
    return n;
}

static int perform(mt_http_client *c, const char *method, const char *path, const char *body,
                   const char *const *extra_headers, sink *s) {
    memset(s->r, 0, sizeof *s->r);
    char url[1024];
    snprintf(url, sizeof url, "%s%s", c->base, path);
    CURL *h = c->curl;
    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, c->timeout_ms);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, s);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, s->on_event ? on_sse : on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, s);
    struct curl_slist *headers = NULL;
    if (c->auth[0]) headers = curl_slist_append(headers, c->auth);
    if (body) headers = curl_slist_append(headers, "Content-Type: application/json");
    headers = curl_slist_append(headers, "Expect:");
    for (int i = 0; extra_headers && extra_headers[i]; i++) headers = curl_slist_append(headers, extra_headers[i]);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    if (!strcmp(method, "POST")) {
        curl_easy_setopt(h, CURLOPT_POST, 1L);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body ? body : "");
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)(body ? strlen(body) : 0));
    } else if (!strcmp(method, "HEAD")) {
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L); /* the answer has headers only */
    } else if (strcmp(method, "GET") != 0) {
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    }
    CURLcode rc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &s->r->status);
    curl_slist_free_all(headers);
    if (!s->r->body) on_body("", 1, 0, s); /* always a string */
    free(s->line);
    if (rc != CURLE_OK) {
        snprintf(s->r->error, sizeof s->r->error, "%s", curl_easy_strerror(rc));
        if (s->aborted) return 1;
        return -1;
    }
    return 0;
}

int mt_http_call_headers(mt_http_client *c, const char *method, const char *path, const char *body,
                         const char *const *extra_headers, mt_http_response *r) {
    sink s = {.r = r};
    return perform(c, method, path, body, extra_headers, &s) == 0 ? 0 : -1;
}

int mt_http_call(mt_http_client *c, const char *method, const char *path, const char *body, mt_http_response *r) {
    return mt_http_call_headers(c, method, path, body, NULL, r);
}

int mt_http_stream(mt_http_client *c, const char *path, const char *body, mt_sse_handler on_event, void *ctx,
                   mt_http_response *r) {
    sink s = {.r = r, .on_event = on_event, .ctx = ctx};
    return perform(c, "POST", path, body, NULL, &s);
}

void mt_http_response_free(mt_http_response *r) {
    free(r->body);
    r->body = NULL;
    r->len = 0;
}

double mt_prom_value(const char *text, const char *name) {
    size_t n = strlen(name);
    for (const char *line = text; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        if (strncmp(line, name, n) || (line[n] != ' ' && line[n] != '{')) continue;
        const char *v = line[n] == '{' ? strchr(line, '}') : line + n;
        if (v) return strtod(v + 1, NULL);
    }
    return NAN;
}
