/* Internal to the runtime: object layouts behind the opaque types of
 * hotplate.h. Modules never see this file. Internal names take the rt_
 * prefix; hp_ is the public API of hotplate.h. */
#ifndef HP_RUNTIME_H
#define HP_RUNTIME_H

#include <signal.h>
#include <stddef.h>

#include "hotplate.h"
#include "host_api.h"

/* A bump allocator freed all at once; the first block lives inside the
 * request so small requests cost one malloc in all. */
typedef struct rt_arena_block {
    struct rt_arena_block *next;
    size_t size, used;
    _Alignas(max_align_t) unsigned char data[];
} rt_arena_block;

typedef struct {
    rt_arena_block *head;
    rt_arena_block *embedded; /* owned by the caller of rt_arena_init */
} rt_arena;

/* confine.c: remembers which forbidden call a thread made (signal-safe). */
void rt_note_trap(const siginfo_t *info);

void rt_arena_init(rt_arena *a, void *first, size_t first_size);
void *rt_arena_alloc(rt_arena *a, size_t size);
void rt_arena_free(rt_arena *a);

struct hp_buf {
    rt_arena *arena;
    char *data;
    size_t len, cap;
};

void rt_buf_init(hp_buf *b, rt_arena *a);
int rt_buf_add(hp_buf *b, const void *data, size_t len);
int rt_buf_vfmt(hp_buf *b, const char *fmt, va_list ap);
char *rt_arena_strndup(rt_arena *a, const char *s, size_t len);
char *rt_decode_url(rt_arena *a, const char *s, size_t len, size_t *out_len);
char *rt_escape_html(rt_arena *a, const char *s);
int rt_str_caseeq(const char *a, const char *b);
/* 1 if n bytes at s are valid UTF-8 (no surrogates, no overlongs). */
int rt_utf8_valid(const char *s, size_t n);

#define HP_JSON_MAX_DEPTH 64

struct hp_json {
    hp_buf *buf;
    int depth;
    unsigned char is_object[HP_JSON_MAX_DEPTH + 1];
    unsigned char has_items[HP_JSON_MAX_DEPTH + 1];
};

void rt_json_init(hp_json *j, hp_buf *buf);
int rt_json_w_begin(hp_json *j, const char *key, int object);
int rt_json_w_end(hp_json *j, int object);
int rt_json_w_string(hp_json *j, const char *key, const char *s, size_t len);
int rt_json_w_int(hp_json *j, const char *key, long long v);
int rt_json_w_double(hp_json *j, const char *key, double v);
int rt_json_w_bool(hp_json *j, const char *key, int v);
int rt_json_w_null(hp_json *j, const char *key);

typedef struct {
    const char *name, *value;
} rt_pair;

#define HP_MAX_CODE_RANGES 4

struct hp_module {
    char *name, *path;
    void *dl;
    struct { uintptr_t start, end; } code[HP_MAX_CODE_RANGES]; /* its executable segments */
    int ncode;
    rt_pair *config;
    size_t nconfig;
    int (*init)(hp_module *);
    void (*fini)(hp_module *);
    char *config_storage;
};

struct hp_response {
    int status;
    const char *content_type;
    hp_buf body;
    hp_buf headers; /* name\0value\0 pairs */
    hp_json json;
    /* hp_res_stream: allowed for this request; asked for; status and
     * headers sent; the client gone */
    int can_stream, streaming, stream_started, stream_failed;
};

struct hp_request {
    rt_arena arena;
    hp_module *module;
    const char *method, *path, *query_string, *client_addr, *id, *route;
    rt_pair *params, *headers, *query, *cookies;
    size_t nparams, nheaders, nquery, ncookies;
    int query_parsed, cookies_parsed;
    const char *body;
    size_t body_len;
    struct json_t *json;
    hp_response res;
    hp_buf outbox; /* actions for the host: see websocket.c */
    hp_part *form; /* form.c */
    size_t nform;
    int form_parsed;
    const char *form_error;
};

/* One WebSocket handler call. The state is a copy in the request's arena;
 * the host copies it back when the call used it. */
struct hp_ws {
    hp_request *req;
    const char *subprotocol;
    unsigned char *state;
    size_t state_len;
    int state_used;
    int event;
};

/* Text that need not end with NUL: the request core's fields point into
 * the bytes a client sent. */
typedef struct {
    const char *text;
    size_t len;
} rt_span;

typedef struct {
    rt_span name, value;
} rt_field;

/* A request's head, as the request core parsed it (serve.c). Header names
 * are as sent, or WSGI environ keys ("HTTP_USER_AGENT"): handlers see them
 * canonical ("User-Agent"). */
typedef struct {
    rt_span method, path, query, client, id, route;
    const rt_field *params, *headers;
    size_t nparams, nheaders;
} rt_request_head;

/* Builds a request, its head copied into its arena (the body is not
 * copied: it must outlive the call); NULL when out of memory. */
hp_request *rt_request_new(hp_module *mod, const rt_request_head *head, const char *body, size_t body_len);
/* The same from a WebSocket call's blob (hp_rt_ws_event in host_api.h). */
hp_request *rt_request_from_blob(hp_module *mod, const char *blob, size_t blob_len, size_t nparams,
                                 size_t nheaders, const char *body, size_t body_len);
/* Calls one handler for one request (the request core's call): under the
 * crash guard and deadline. can_stream: this thread has a stream sink, so
 * hp_res_stream() may send the response in parts; then out->streamed says
 * whether it did, and the body left in out is the last part. */
int rt_dispatch(void *module, void *handler, const rt_request_head *head, const char *body, size_t body_len,
                unsigned timeout_ms, int can_stream, hp_rt_result *out);
void rt_request_free(hp_request *req);
/* The value of a request header, by case-insensitive name; NULL if absent. */
const char *rt_request_header(const hp_request *r, const char *name);

/* Splits "a=1&b=2" (sep '&', decoded) or "a=1; b=2" (sep ';', cookies) into
 * *n pairs in the arena; NULL when out of memory. */
rt_pair *rt_split_pairs(hp_request *r, const char *s, char sep, int decode, size_t *n);

/* Adds Content-Type to the header list; call once the handler is done. */
int rt_response_finish(hp_response *res);

/* WebSocket calls and the outbox (websocket.c), named in the API table. */
hp_request *rt_ws_api_request(hp_ws *ws);
const char *rt_ws_api_id(const hp_ws *ws);
const char *rt_ws_api_subprotocol(const hp_ws *ws);
int rt_ws_api_send(hp_ws *ws, const void *data, size_t len, int type);
int rt_ws_api_vprintf(hp_ws *ws, const char *fmt, va_list ap);
int rt_ws_api_close(hp_ws *ws, int code, const char *reason);
void *rt_ws_api_state(hp_ws *ws, size_t size);
int rt_ws_api_subscribe(hp_ws *ws, const char *topic);
int rt_ws_api_unsubscribe(hp_ws *ws, const char *topic);
int rt_ws_api_send_position(hp_ws *ws, const char *prefix);
int rt_ws_api_resume(hp_ws *ws, const char *position);
int rt_api_publish(hp_request *req, const char *topic, const void *data, size_t len, int type);

/* crypto.c: named in the API table (ABI 3). */
char *rt_api_sha256_hex(hp_request *req, const void *data, size_t len);
char *rt_api_hmac_sha256_hex(hp_request *req, const char *key, const void *data, size_t len);
int rt_api_equal(const void *a, const void *b, size_t len);
void rt_api_random(void *out, size_t len);
char *rt_api_password_hash(hp_request *req, const char *password);
int rt_api_password_verify(const char *hash, const char *password);
char *rt_api_token_sign(hp_request *req, const char *key, const char *payload, long ttl_seconds);
const char *rt_api_token_verify(hp_request *req, const char *key, const char *token);

/* host.c: hp_config (ABI 3). */
const char *rt_api_config(const char *key);

/* jobs.c: named in the API table (ABI 3). */
const char *rt_api_job_start(hp_request *req, const char *function, const void *arg, size_t len);
int rt_api_job_status(hp_request *req, const char *id, hp_job_info *info);
int rt_api_job_cancel(const char *id);
int rt_api_job_list(hp_request *req, hp_json *j, int limit);
int rt_api_job_events(hp_request *req, const char *id, long long since, hp_json *j);
const char *rt_api_job_error(void);
const char *rt_api_job_id(const hp_job *job);
int rt_api_job_progress(hp_job *job, int percent, const char *message);
int rt_api_job_event(hp_job *job, const char *text);
int rt_api_job_result(hp_job *job, const void *data, size_t len);
int rt_api_job_cancelled(hp_job *job);
/* A job for hp_rt_job_run (jobs.c); NULL when out of memory. */
hp_job *rt_job_new(hp_module *module, const char *id);

/* form.c: named in the API table (ABI 3). */
const char *rt_api_req_form(hp_request *req, const char *name);
int rt_api_req_form_at(hp_request *req, size_t i, hp_part *part);
const char *rt_api_req_form_error(hp_request *req);

/* store.c: named in the API table (ABI 3). */
int rt_api_kv_get(hp_request *req, const char *key, const void **value, size_t *len);
int rt_api_kv_set(const char *key, const void *value, size_t len, long ttl_ms);
int rt_api_kv_delete(const char *key);
int rt_api_kv_incr(const char *key, long long delta, long long *out);
int rt_api_kv_cas(const char *key, const void *expected, size_t elen, const void *value, size_t vlen, long ttl_ms);
const char *rt_api_kv_error(void);

/* The table handed to modules. */
extern const struct hp_api rt_api_table;
/* Sends the status and headers (first) or a part of the body of a streamed
 * response through the host's sink (host.c); 0, or -1 once the client is gone. */
int rt_stream_emit(int first, const hp_response *res, const char *data, size_t len);
/* This thread's sink of streamed responses, over the one Python installed (NULL: that one). */
void rt_set_thread_stream_sink(hp_rt_stream_fn sink);

/* The log sink (hp_rt_setup); logs a formatted message. */
void rt_log_emit(int level, const hp_module *mod, const hp_request *req, const char *fmt, va_list ap);

#endif
