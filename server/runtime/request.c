/* Requests and responses: built from the head the request core parsed,
 * read and written by handlers through the hp_req_* and hp_res_* functions. */
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime.h"

#define FIRST_BLOCK 4096

typedef struct {
    hp_request req;
    _Alignas(max_align_t) unsigned char first_block[FIRST_BLOCK];
} request_storage;

/* Reads the next NUL-terminated field of the blob; NULL past its end. */
static const char *next_field(const char **p, const char *end)
{
    const char *s = *p;
    const char *nul = s < end ? memchr(s, 0, (size_t)(end - s)) : NULL;
    if (!nul)
        return NULL;
    *p = nul + 1;
    return s;
}

/* "HTTP_USER_AGENT", "USER-AGENT" or "user-agent" -> "User-Agent", the form
 * handlers see when listing headers. */
static char *canonical_header(rt_arena *a, const char *name, size_t n)
{
    if (n > 5 && !strncmp(name, "HTTP_", 5))
        name += 5, n -= 5;
    char *out = rt_arena_strndup(a, name, n);
    int word_start = 1;
    for (size_t i = 0; out && i < n; i++) {
        if (out[i] == '_' || out[i] == '-') {
            out[i] = '-';
            word_start = 1;
        } else {
            out[i] = (char)(word_start ? toupper((unsigned char)out[i]) : tolower((unsigned char)out[i]));
            word_start = 0;
        }
    }
    return out;
}

static int copy_fields(hp_request *r, const rt_field *in, size_t n, rt_pair **out, int canonical)
{
    *out = rt_arena_alloc(&r->arena, (n ? n : 1) * sizeof **out);
    if (!*out)
        return HP_ERROR;
    for (size_t i = 0; i < n; i++) {
        (*out)[i].name = canonical ? canonical_header(&r->arena, in[i].name.text, in[i].name.len)
                                   : rt_arena_strndup(&r->arena, in[i].name.text, in[i].name.len);
        (*out)[i].value = rt_arena_strndup(&r->arena, in[i].value.text, in[i].value.len);
        if (!(*out)[i].name || !(*out)[i].value)
            return HP_ERROR;
    }
    return HP_OK;
}

hp_request *rt_request_new(hp_module *mod, const rt_request_head *head, const char *body, size_t body_len)
{
    request_storage *st = malloc(sizeof *st);
    if (!st)
        return NULL;
    hp_request *r = &st->req;
    memset(r, 0, sizeof *r);
    rt_arena_init(&r->arena, st->first_block, sizeof st->first_block);
    r->module = mod;
    const rt_span *spans[] = {&head->method, &head->path, &head->query, &head->client, &head->id, &head->route};
    const char **fields[] = {&r->method, &r->path, &r->query_string, &r->client_addr, &r->id, &r->route};
    for (size_t i = 0; i < sizeof fields / sizeof *fields; i++)
        if (!(*fields[i] = rt_arena_strndup(&r->arena, spans[i]->text ? spans[i]->text : "", spans[i]->len)))
            goto fail;
    if (copy_fields(r, head->params, head->nparams, &r->params, 0) ||
        copy_fields(r, head->headers, head->nheaders, &r->headers, 1))
        goto fail;
    r->nparams = head->nparams;
    r->nheaders = head->nheaders;
    r->body = body ? body : "";
    r->body_len = body ? body_len : 0;
    r->res.status = 200;
    r->res.content_type = "text/plain; charset=utf-8";
    rt_buf_init(&r->res.body, &r->arena);
    rt_buf_init(&r->res.headers, &r->arena);
    rt_buf_init(&r->outbox, &r->arena);
    return r;
fail:
    rt_request_free(r);
    return NULL;
}

/* The blob: NUL-terminated fields, method, path, query string, client
 * address, request id, route, then nparams and nheaders name/value pairs. */
hp_request *rt_request_from_blob(hp_module *mod, const char *blob, size_t blob_len, size_t nparams,
                                 size_t nheaders, const char *body, size_t body_len)
{
    const char *p = blob, *end = blob + blob_len;
    rt_request_head head = {.nparams = nparams, .nheaders = nheaders};
    rt_span *spans[] = {&head.method, &head.path, &head.query, &head.client, &head.id, &head.route};
    if (nparams > 4096 || nheaders > 4096)
        return NULL;
    rt_field *fields = malloc((nparams + nheaders + 1) * sizeof *fields);
    hp_request *r = NULL;
    if (!fields)
        return NULL;
    for (size_t i = 0; i < sizeof spans / sizeof *spans; i++) {
        const char *f = next_field(&p, end);
        if (!f)
            goto done;
        *spans[i] = (rt_span){f, strlen(f)};
    }
    for (size_t i = 0; i < nparams + nheaders; i++) {
        const char *name = next_field(&p, end), *value = next_field(&p, end);
        if (!name || !value)
            goto done;
        fields[i] = (rt_field){{name, strlen(name)}, {value, strlen(value)}};
    }
    head.params = fields;
    head.headers = fields + nparams;
    r = rt_request_new(mod, &head, body, body_len);
done:
    free(fields);
    return r;
}

void rt_request_free(hp_request *r)
{
    if (!r)
        return;
    if (r->json)
        json_decref(r->json);
    rt_arena_free(&r->arena);
    free(r);
}

static const char *find(const rt_pair *pairs, size_t n, const char *name, int nocase)
{
    for (size_t i = 0; i < n; i++)
        if (nocase ? rt_str_caseeq(pairs[i].name, name) : !strcmp(pairs[i].name, name))
            return pairs[i].value;
    return NULL;
}

static const char *req_method(const hp_request *r) { return r->method; }
static const char *req_path(const hp_request *r) { return r->path; }
static const char *req_route(const hp_request *r) { return r->route; }
static const char *req_query_string(const hp_request *r) { return r->query_string; }
static const char *req_client_addr(const hp_request *r) { return r->client_addr; }
static const char *req_id(const hp_request *r) { return r->id; }
static size_t req_header_count(const hp_request *r) { return r->nheaders; }

static const char *req_param(const hp_request *r, const char *name)
{
    return find(r->params, r->nparams, name, 0);
}

static int req_param_int(const hp_request *r, const char *name, long long *out)
{
    const char *s = req_param(r, name);
    char *end;
    if (!s || !*s)
        return HP_ERROR;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (*end || errno)
        return HP_ERROR;
    *out = v;
    return HP_OK;
}

/* Splits "a=1&b=2" (query, form) or "a=1; b=2" (cookies) into pairs. */
rt_pair *rt_split_pairs(hp_request *r, const char *s, char sep, int decode, size_t *n)
{
    size_t cap = 1;
    for (const char *p = s; *p; p++)
        cap += *p == sep;
    rt_pair *pairs = rt_arena_alloc(&r->arena, cap * sizeof *pairs);
    *n = 0;
    while (pairs && *s) {
        while (*s == ' ' || *s == sep)
            s++;
        const char *item_end = strchr(s, sep);
        size_t len = item_end ? (size_t)(item_end - s) : strlen(s);
        const char *eq = memchr(s, '=', len);
        size_t klen = eq ? (size_t)(eq - s) : len;
        const char *v = eq ? eq + 1 : s + len;
        size_t vlen = (size_t)(s + len - v);
        if (!decode && vlen >= 2 && v[0] == '"' && v[vlen - 1] == '"')
            v++, vlen -= 2;
        if (len) {
            pairs[*n].name = decode ? rt_decode_url(&r->arena, s, klen, NULL) : rt_arena_strndup(&r->arena, s, klen);
            pairs[*n].value = decode ? rt_decode_url(&r->arena, v, vlen, NULL) : rt_arena_strndup(&r->arena, v, vlen);
            if (!pairs[*n].name || !pairs[*n].value)
                return NULL;
            (*n)++;
        }
        s += len;
    }
    return pairs;
}

/* The decoded query parameters, split on first use. */
static rt_pair *query_pairs(hp_request *r)
{
    if (!r->query_parsed) {
        r->query = rt_split_pairs(r, r->query_string, '&', 1, &r->nquery);
        r->query_parsed = 1;
    }
    return r->query;
}

static const char *req_query(hp_request *r, const char *name)
{
    return query_pairs(r) ? find(r->query, r->nquery, name, 0) : NULL;
}

static int pair_at(const rt_pair *pairs, size_t n, size_t i, const char **name, const char **value)
{
    if (!pairs || i >= n)
        return HP_ERROR;
    *name = pairs[i].name;
    *value = pairs[i].value;
    return HP_OK;
}

static int req_query_at(hp_request *r, size_t i, const char **name, const char **value)
{
    const rt_pair *pairs = query_pairs(r);  /* before reading nquery, which it sets */
    return pair_at(pairs, r->nquery, i, name, value);
}

/* Repeated headers come joined with ", ", Cookie headers with "; " (RFC
 * 9113 8.2.3). The arena is the request's own bookkeeping, so a const
 * request may still allocate the joined text. */
const char *rt_request_header(const hp_request *r, const char *name)
{
    const char *first = NULL, *sep = rt_str_caseeq(name, "Cookie") ? "; " : ", ";
    hp_buf joined = {0};
    for (size_t i = 0; i < r->nheaders; i++) {
        if (!rt_str_caseeq(r->headers[i].name, name))
            continue;
        if (!first) {
            first = r->headers[i].value;
            continue;
        }
        if (!joined.arena) {
            rt_buf_init(&joined, (rt_arena *)&r->arena);
            if (rt_buf_add(&joined, first, strlen(first)))
                return first;
        }
        if (rt_buf_add(&joined, sep, 2) || rt_buf_add(&joined, r->headers[i].value, strlen(r->headers[i].value)))
            return first;
    }
    return joined.arena ? joined.data : first;
}

static int req_header_at(const hp_request *r, size_t i, const char **name, const char **value)
{
    return pair_at(r->headers, r->nheaders, i, name, value);
}

/* The cookies of the Cookie header, split on first use. */
static rt_pair *cookie_pairs(hp_request *r)
{
    if (!r->cookies_parsed) {
        const char *h = rt_request_header(r, "Cookie");
        r->cookies = rt_split_pairs(r, h ? h : "", ';', 0, &r->ncookies);
        r->cookies_parsed = 1;
    }
    return r->cookies;
}

static const char *req_cookie(hp_request *r, const char *name)
{
    return cookie_pairs(r) ? find(r->cookies, r->ncookies, name, 0) : NULL;
}

static int req_cookie_at(hp_request *r, size_t i, const char **name, const char **value)
{
    const rt_pair *pairs = cookie_pairs(r);  /* before reading ncookies, which it sets */
    return pair_at(pairs, r->ncookies, i, name, value);
}

static const void *req_body(const hp_request *r, size_t *len)
{
    if (len)
        *len = r->body_len;
    return r->body;
}

static struct json_t *req_json(hp_request *r, const char **error)
{
    json_error_t err;
    if (error)
        *error = NULL;
    if (!r->json) {
        r->json = json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &err);
        if (!r->json && error) {
            char line[JSON_ERROR_TEXT_LENGTH + 64];
            snprintf(line, sizeof line, "line %d, column %d: %s", err.line, err.column, err.text);
            *error = rt_arena_strndup(&r->arena, line, strlen(line));
        }
    }
    return r->json;
}

static int clean_header_text(const char *s)
{
    return !strpbrk(s, "\r\n");
}

static void res_status(hp_response *res, int status)
{
    res->status = status >= 100 && status <= 599 ? status : 500;
}

static hp_request *owner(hp_response *res)
{
    return (hp_request *)((char *)res - offsetof(hp_request, res));
}

static int res_header(hp_response *res, const char *name, const char *value)
{
    if (!*name || !clean_header_text(name) || strchr(name, ':') || !clean_header_text(value))
        return HP_ERROR;
    if (rt_buf_add(&res->headers, name, strlen(name) + 1) ||
        rt_buf_add(&res->headers, value, strlen(value) + 1))
        return HP_ERROR;
    return HP_OK;
}

static int buf_printf(hp_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = rt_buf_vfmt(b, fmt, ap);
    va_end(ap);
    return rc;
}

/* RFC 6265: a cookie name is a token; a value has no controls, spaces, quotes, commas, semicolons or backslashes. */
static int cookie_text_ok(const char *s, const char *refused)
{
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f || strchr(refused, *s))
            return 0;
    return 1;
}

static int domain_ok(const char *d)
{
    size_t n = strlen(d);
    if (n == 0 || n > 253)
        return 0;
    for (const char *p = d; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '.')
            return 0;
    return 1;
}

static int res_cookie(hp_response *res, const hp_cookie *c)
{
    static const char *const same_site[] = {"", "; SameSite=Lax", "; SameSite=Strict", "; SameSite=None"};
    if (!c || !c->name || !c->value)
        return HP_ERROR;
    unsigned site = (c->flags >> 2) & 3;
    if (!*c->name || !cookie_text_ok(c->name, "()<>@,;:\\\"/[]?={}") || !cookie_text_ok(c->value, "\",;\\") ||
        (c->path && (!cookie_text_ok(c->path, ";") || c->path[0] != '/')) || (c->domain && !domain_ok(c->domain)) ||
        (site == 3 && !(c->flags & HP_COOKIE_SECURE)))
        return HP_ERROR;
    hp_buf b;
    rt_buf_init(&b, &owner(res)->arena);
    char age[32] = "";
    if (c->max_age >= 0)
        snprintf(age, sizeof age, "; Max-Age=%ld", c->max_age);
    if (buf_printf(&b, "%s=%s; Path=%s%s%s%s%s%s%s", c->name, c->value, c->path ? c->path : "/",
                   c->domain ? "; Domain=" : "", c->domain ? c->domain : "", age,
                   c->flags & HP_COOKIE_SECURE ? "; Secure" : "", c->flags & HP_COOKIE_HTTPONLY ? "; HttpOnly" : "",
                   same_site[site]))
        return HP_ERROR;
    return res_header(res, "Set-Cookie", b.data);
}

static int res_set_cookie(hp_response *res, const char *name, const char *value, long max_age, const char *path,
                          unsigned flags)
{
    hp_cookie c = {.name = name, .value = value, .max_age = max_age, .path = path, .flags = flags};
    return res_cookie(res, &c);
}

static int res_remove_header(hp_response *res, const char *name)
{
    hp_buf *h = &res->headers;
    size_t kept = 0;
    for (size_t at = 0; at < h->len;) {
        size_t n = strlen(h->data + at) + 1, v = strlen(h->data + at + n) + 1;
        if (!rt_str_caseeq(h->data + at, name)) {
            memmove(h->data + kept, h->data + at, n + v);
            kept += n + v;
        }
        at += n + v;
    }
    h->len = kept;
    if (h->data)
        h->data[kept] = 0;
    if (rt_str_caseeq(name, "Content-Type"))
        res->content_type = NULL;
    return HP_OK;
}

static void res_content_type(hp_response *res, const char *type)
{
    if (clean_header_text(type))
        res->content_type = rt_arena_strndup(&owner(res)->arena, type, strlen(type));
}

/* Sends what the body holds as one part of a streamed response (the status
 * and headers before the first), and empties it: memory stays bounded
 * however much is written. */
static int stream_out(hp_response *res)
{
    if (res->stream_failed)
        return HP_ERROR;
    if (!res->stream_started) {
        if (rt_response_finish(res) || rt_stream_emit(1, res, NULL, 0)) {
            res->stream_failed = 1;
            return HP_ERROR;
        }
        res->stream_started = 1;
    }
    if (res->body.len && rt_stream_emit(0, res, res->body.data, res->body.len))
        res->stream_failed = 1;
    res->body.len = 0;
    return res->stream_failed ? HP_ERROR : HP_OK;
}

/* After a write: send a part once enough is buffered. */
static int wrote(hp_response *res, int rc)
{
    return rc == HP_OK && res->streaming && res->body.len >= HP_STREAM_PART ? stream_out(res) : rc;
}

static int res_write(hp_response *res, const void *data, size_t len)
{
    return wrote(res, res->stream_failed ? HP_ERROR : rt_buf_add(&res->body, data, len));
}

static int res_vprintf(hp_response *res, const char *fmt, va_list ap)
{
    return wrote(res, res->stream_failed ? HP_ERROR : rt_buf_vfmt(&res->body, fmt, ap));
}

static int res_stream(hp_response *res)
{
    if (!res->can_stream)
        return HP_ERROR;
    res->streaming = 1;
    return HP_OK;
}

static int res_flush(hp_response *res)
{
    return res->streaming ? stream_out(res) : HP_OK;
}

static int res_redirect(hp_response *res, int status, const char *location)
{
    int ok = status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
    if (!clean_header_text(location))
        return HP_ERROR;
    res->status = ok ? status : 302;
    return res_header(res, "Location", location);
}

static hp_buf *res_body(hp_response *res) { return &res->body; }

static hp_json *res_json(hp_response *res)
{
    res->content_type = "application/json";
    rt_json_init(&res->json, &res->body);
    return &res->json;
}

int rt_response_finish(hp_response *res)
{
    if (!res->content_type)
        return HP_OK;
    return res_header(res, "Content-Type", res->content_type);
}

static void *api_alloc(hp_request *r, size_t n) { return rt_arena_alloc(&r->arena, n); }
static char *api_strndup(hp_request *r, const char *s, size_t n) { return rt_arena_strndup(&r->arena, s, n); }

static hp_buf *buf_new(hp_request *r)
{
    hp_buf *b = rt_arena_alloc(&r->arena, sizeof *b);
    if (b)
        rt_buf_init(b, &r->arena);
    return b;
}

static const char *buf_data(const hp_buf *b) { return b->data; }
static size_t buf_len(const hp_buf *b) { return b->len; }

static char *url_decode(hp_request *r, const char *s, size_t len, size_t *out_len)
{
    return rt_decode_url(&r->arena, s, len, out_len);
}

static char *html_escape(hp_request *r, const char *s) { return rt_escape_html(&r->arena, s); }

static hp_json *api_json_new(hp_buf *buf)
{
    hp_json *j = rt_arena_alloc(buf->arena, sizeof *j);
    if (j)
        rt_json_init(j, buf);
    return j;
}

static int api_json_begin_object(hp_json *j, const char *key) { return rt_json_w_begin(j, key, 1); }
static int api_json_end_object(hp_json *j) { return rt_json_w_end(j, 1); }
static int api_json_begin_array(hp_json *j, const char *key) { return rt_json_w_begin(j, key, 0); }
static int api_json_end_array(hp_json *j) { return rt_json_w_end(j, 0); }
static int api_json_string(hp_json *j, const char *key, const char *v) { return rt_json_w_string(j, key, v, v ? strlen(v) : 0); }

static void vlog(hp_request *r, int level, const char *fmt, va_list ap)
{
    rt_log_emit(level, r->module, r, fmt, ap);
}

static const char *module_name(const hp_module *m) { return m->name; }

static const char *module_config(const hp_module *m, const char *key)
{
    return find(m->config, m->nconfig, key, 0);
}

static void module_vlog(hp_module *m, int level, const char *fmt, va_list ap)
{
    rt_log_emit(level, m, NULL, fmt, ap);
}

const struct hp_api rt_api_table = {
    .abi_version = HP_ABI_VERSION,
    .size = sizeof(struct hp_api),
    .req_method = req_method,
    .req_path = req_path,
    .req_route = req_route,
    .req_param = req_param,
    .req_param_int = req_param_int,
    .req_query_string = req_query_string,
    .req_query = req_query,
    .req_header = rt_request_header,
    .req_header_count = req_header_count,
    .req_header_at = req_header_at,
    .req_cookie = req_cookie,
    .req_body = req_body,
    .req_client_addr = req_client_addr,
    .req_id = req_id,
    .req_json = req_json,
    .res_status = res_status,
    .res_header = res_header,
    .res_content_type = res_content_type,
    .res_write = res_write,
    .res_vprintf = res_vprintf,
    .res_redirect = res_redirect,
    .res_body = res_body,
    .res_json = res_json,
    .alloc = api_alloc,
    .strndup = api_strndup,
    .buf_new = buf_new,
    .buf_append = rt_buf_add,
    .buf_vprintf = rt_buf_vfmt,
    .buf_data = buf_data,
    .buf_len = buf_len,
    .strcaseeq = rt_str_caseeq,
    .url_decode = url_decode,
    .html_escape = html_escape,
    .json_new = api_json_new,
    .json_begin_object = api_json_begin_object,
    .json_end_object = api_json_end_object,
    .json_begin_array = api_json_begin_array,
    .json_end_array = api_json_end_array,
    .json_string = api_json_string,
    .json_stringn = rt_json_w_string,
    .json_int = rt_json_w_int,
    .json_double = rt_json_w_double,
    .json_bool = rt_json_w_bool,
    .json_null = rt_json_w_null,
    .vlog = vlog,
    .module_name = module_name,
    .module_config = module_config,
    .module_vlog = module_vlog,
    .ws_request = rt_ws_api_request,
    .ws_id = rt_ws_api_id,
    .ws_subprotocol = rt_ws_api_subprotocol,
    .ws_send = rt_ws_api_send,
    .ws_vprintf = rt_ws_api_vprintf,
    .ws_close = rt_ws_api_close,
    .ws_state = rt_ws_api_state,
    .ws_subscribe = rt_ws_api_subscribe,
    .ws_unsubscribe = rt_ws_api_unsubscribe,
    .publish = rt_api_publish,
    .req_query_at = req_query_at,
    .req_cookie_at = req_cookie_at,
    .res_set_cookie = res_set_cookie,
    .res_remove_header = res_remove_header,
    .sha256_hex = rt_api_sha256_hex,
    .hmac_sha256_hex = rt_api_hmac_sha256_hex,
    .equal = rt_api_equal,
    .random = rt_api_random,
    .password_hash = rt_api_password_hash,
    .password_verify = rt_api_password_verify,
    .token_sign = rt_api_token_sign,
    .token_verify = rt_api_token_verify,
    .kv_get = rt_api_kv_get,
    .kv_set = rt_api_kv_set,
    .kv_delete = rt_api_kv_delete,
    .kv_incr = rt_api_kv_incr,
    .kv_cas = rt_api_kv_cas,
    .kv_error = rt_api_kv_error,
    .req_form = rt_api_req_form,
    .req_form_at = rt_api_req_form_at,
    .req_form_error = rt_api_req_form_error,
    .config = rt_api_config,
    .res_stream = res_stream,
    .res_flush = res_flush,
    .job_start = rt_api_job_start,
    .job_status = rt_api_job_status,
    .job_cancel = rt_api_job_cancel,
    .job_list = rt_api_job_list,
    .job_events = rt_api_job_events,
    .job_error = rt_api_job_error,
    .job_id = rt_api_job_id,
    .job_progress = rt_api_job_progress,
    .job_event = rt_api_job_event,
    .job_result = rt_api_job_result,
    .job_cancelled = rt_api_job_cancelled,
    .res_cookie = res_cookie,
    .ws_send_position = rt_ws_api_send_position,
    .ws_resume = rt_ws_api_resume,
};
