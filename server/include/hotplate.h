/*
** hotplate.h: the C API for hotplate modules.
**
** A module is one C file that includes this header, says HP_MODULE once,
** and exports handler functions named in deploy.yaml:
**
**     #include <hotplate.h>
**     HP_MODULE;
**
**     HP_EXPORT int hello(hp_request *req, hp_response *res) {
**         hp_res_printf(res, "Hello, %s!\n", hp_req_query(req, "name") ?: "world");
**         return HP_OK;
**     }
**
** WebSocket routes map to handlers taking an hp_ws (see "WebSockets" near
** the end); their connections survive deploys.
**
** This header is the contract: anything not declared here is not API.
** Every declaration says since which ABI level it exists.
**
** How calls reach the server: the server hands each module one pointer to a
** `struct hp_api` table (see the bottom of this file). The static inline
** functions below call through it, so a module links against nothing of
** hotplate's and a module built for an older ABI keeps working on a newer
** server (the table only grows at its end).
**
** Structs a module and the server both see (hp_cookie, hp_part,
** hp_job_info) also only grow at their end, and a field added at a later
** ABI level is read or filled only for modules built at that level or later
** (the server knows each module's hp_module_abi). So they carry no size or
** version field: an older module's smaller struct is never overrun.
**
** Memory: everything a handler gets from hp_* functions that take an
** hp_request or hp_response (strings, buffers, parsed JSON) belongs to the
** request and is freed when the response has been sent. Never free() it and
** never keep a pointer to it past the handler's return.
**
** Threads: handlers of one worker run in parallel on several threads. Module
** globals shared between requests must be protected (atomics or a mutex);
** the per-request objects are not shared and need no locking.
*/
#ifndef HOTPLATE_H
#define HOTPLATE_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
** CAPI: ABI level and version
**
** HP_ABI_VERSION is the ABI level this header describes. HP_MODULE records it
** in the module; the server refuses to load a module whose level is newer
** than its own, or that records none, and says so on the module's routes.
** HP_VERSION is hotplate's release string, for humans.
*/
#define HP_ABI_VERSION 4
#define HP_VERSION "0.4.0"

/*
** Conventions for NULL. Handles (hp_request, hp_response, hp_ws, hp_buf,
** hp_json, hp_module) are the ones the server gave you, never NULL. A
** function that returns a pointer returns NULL for "absent" (no such
** header, parameter, key) and when out of memory; its comment says which.
** A text argument that may be NULL says so where it is declared (a JSON
** key inside an array, an optional path); elsewhere NULL is refused with
** HP_ERROR, or HP_KV_ERROR for the store, wherever a function can return
** an error.
*/

/*
** CAPI: Result codes
**
** Handlers and hooks return HP_OK on success. A handler that returns
** HP_ERROR makes the server discard its response and answer 500 with the
** request id; say why with hp_log() first.
*/
#define HP_OK 0
#define HP_ERROR (-1)

/*
** CAPI: Exporting symbols
**
** Modules are compiled with hidden visibility: only functions marked
** HP_EXPORT can be named as handlers in deploy.yaml. The build checks that
** every handler named in the manifest is exported.
*/
#ifdef __cplusplus
#define HP_EXPORT extern "C" __attribute__((visibility("default")))
#else
#define HP_EXPORT __attribute__((visibility("default")))
#endif

#if defined(__GNUC__)
#define HP_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define HP_PRINTF(fmt, args)
#endif

/*
** CAPI: Opaque objects
**
** hp_request:  one HTTP request, valid during its handler call.
** hp_response: the response being built for it.
** hp_buf:      a growable byte buffer (string builder) owned by a request.
** hp_json:     a JSON writer that appends to an hp_buf.
** hp_module:   one loaded module in one worker process (init/fini hooks).
** hp_ws:       one WebSocket connection, valid during one handler call
**              (ABI 2).
*/
typedef struct hp_request hp_request;
typedef struct hp_response hp_response;
typedef struct hp_buf hp_buf;
typedef struct hp_json hp_json;
typedef struct hp_module hp_module;
typedef struct hp_ws hp_ws;
typedef struct hp_part hp_part;
typedef struct hp_job hp_job;
typedef struct hp_job_info hp_job_info;
typedef struct hp_cookie hp_cookie;
struct json_t; /* jansson's JSON value: include <jansson.h> to use it */

/*
** CAPI: Handler signature
**
** int handler(hp_request *req, hp_response *res);
**
** Called once per request routed to it. Build the response with hp_res_*
** and return HP_OK. The default response is status 200, content type
** "text/plain; charset=utf-8" and an empty body.
**
** A handler that crashes (SIGSEGV, SIGBUS, SIGFPE, SIGILL) gets its request a
** 500; one that runs past its route's timeout gets a 504. Either way the
** worker process is replaced once its other requests are done, because the
** handler may have left locks or memory in a bad state.
**
** The timeout stops a handler only while it runs the module's own code. If
** it is inside libc (malloc holding its lock), another library or an hp_*
** call, the check repeats every millisecond until it is back in module code,
** for up to a second; a handler that never comes back (blocked on a lock)
** is answered 504 by the worker's watchdog, and the worker is replaced
** without waiting for it.
*/
typedef int (*hp_handler)(hp_request *req, hp_response *res);

/*
** CAPI: Log levels, for hp_log() and hp_module_log().
*/
#define HP_LOG_DEBUG 10
#define HP_LOG_INFO 20
#define HP_LOG_WARNING 30
#define HP_LOG_ERROR 40

/*
** CAPI: Function table (internal to this header)
**
** The server fills this table; modules call the inline wrappers below.
** Append-only: fields are only ever added at the end, never changed or
** removed. `size` is sizeof(struct hp_api) in the server, so a module can
** tell whether a field added by a later ABI exists with HP_API_HAS().
*/
struct hp_api {
    uint32_t abi_version;
    uint32_t size;
    /* ABI 1 */
    const char *(*req_method)(const hp_request *req);
    const char *(*req_path)(const hp_request *req);
    const char *(*req_route)(const hp_request *req);
    const char *(*req_param)(const hp_request *req, const char *name);
    int (*req_param_int)(const hp_request *req, const char *name, long long *out);
    const char *(*req_query_string)(const hp_request *req);
    const char *(*req_query)(hp_request *req, const char *name);
    const char *(*req_header)(const hp_request *req, const char *name);
    size_t (*req_header_count)(const hp_request *req);
    int (*req_header_at)(const hp_request *req, size_t i, const char **name, const char **value);
    const char *(*req_cookie)(hp_request *req, const char *name);
    const void *(*req_body)(const hp_request *req, size_t *len);
    const char *(*req_client_addr)(const hp_request *req);
    const char *(*req_id)(const hp_request *req);
    struct json_t *(*req_json)(hp_request *req, const char **error);
    void (*res_status)(hp_response *res, int status);
    int (*res_header)(hp_response *res, const char *name, const char *value);
    void (*res_content_type)(hp_response *res, const char *type);
    int (*res_write)(hp_response *res, const void *data, size_t len);
    int (*res_vprintf)(hp_response *res, const char *fmt, va_list ap);
    int (*res_redirect)(hp_response *res, int status, const char *location);
    hp_buf *(*res_body)(hp_response *res);
    hp_json *(*res_json)(hp_response *res);
    void *(*alloc)(hp_request *req, size_t size);
    char *(*strndup)(hp_request *req, const char *s, size_t len);
    hp_buf *(*buf_new)(hp_request *req);
    int (*buf_append)(hp_buf *buf, const void *data, size_t len);
    int (*buf_vprintf)(hp_buf *buf, const char *fmt, va_list ap);
    const char *(*buf_data)(const hp_buf *buf);
    size_t (*buf_len)(const hp_buf *buf);
    int (*strcaseeq)(const char *a, const char *b);
    char *(*url_decode)(hp_request *req, const char *s, size_t len, size_t *out_len);
    char *(*html_escape)(hp_request *req, const char *s);
    hp_json *(*json_new)(hp_buf *buf);
    int (*json_begin_object)(hp_json *j, const char *key);
    int (*json_end_object)(hp_json *j);
    int (*json_begin_array)(hp_json *j, const char *key);
    int (*json_end_array)(hp_json *j);
    int (*json_string)(hp_json *j, const char *key, const char *value);
    int (*json_stringn)(hp_json *j, const char *key, const char *value, size_t len);
    int (*json_int)(hp_json *j, const char *key, long long value);
    int (*json_double)(hp_json *j, const char *key, double value);
    int (*json_bool)(hp_json *j, const char *key, int value);
    int (*json_null)(hp_json *j, const char *key);
    void (*vlog)(hp_request *req, int level, const char *fmt, va_list ap);
    const char *(*module_name)(const hp_module *mod);
    const char *(*module_config)(const hp_module *mod, const char *key);
    void (*module_vlog)(hp_module *mod, int level, const char *fmt, va_list ap);
    /* ABI 2 */
    hp_request *(*ws_request)(hp_ws *ws);
    const char *(*ws_id)(const hp_ws *ws);
    const char *(*ws_subprotocol)(const hp_ws *ws);
    int (*ws_send)(hp_ws *ws, const void *data, size_t len, int type);
    int (*ws_vprintf)(hp_ws *ws, const char *fmt, va_list ap);
    int (*ws_close)(hp_ws *ws, int code, const char *reason);
    void *(*ws_state)(hp_ws *ws, size_t size);
    int (*ws_subscribe)(hp_ws *ws, const char *topic);
    int (*ws_unsubscribe)(hp_ws *ws, const char *topic);
    int (*publish)(hp_request *req, const char *topic, const void *data, size_t len, int type);
    /* ABI 3 */
    int (*req_query_at)(hp_request *req, size_t i, const char **name, const char **value);
    int (*req_cookie_at)(hp_request *req, size_t i, const char **name, const char **value);
    int (*res_set_cookie)(hp_response *res, const char *name, const char *value, long max_age, const char *path,
                          unsigned flags);
    int (*res_remove_header)(hp_response *res, const char *name);
    char *(*sha256_hex)(hp_request *req, const void *data, size_t len);
    char *(*hmac_sha256_hex)(hp_request *req, const char *key, const void *data, size_t len);
    int (*equal)(const void *a, const void *b, size_t len);
    void (*random)(void *out, size_t len);
    char *(*password_hash)(hp_request *req, const char *password);
    int (*password_verify)(const char *hash, const char *password);
    char *(*token_sign)(hp_request *req, const char *key, const char *payload, long ttl_seconds);
    const char *(*token_verify)(hp_request *req, const char *key, const char *token);
    int (*kv_get)(hp_request *req, const char *key, const void **value, size_t *len);
    int (*kv_set)(const char *key, const void *value, size_t len, long ttl_ms);
    int (*kv_delete)(const char *key);
    int (*kv_incr)(const char *key, long long delta, long long *out);
    int (*kv_cas)(const char *key, const void *expected, size_t elen, const void *value, size_t vlen, long ttl_ms);
    const char *(*kv_error)(void);
    const char *(*req_form)(hp_request *req, const char *name);
    int (*req_form_at)(hp_request *req, size_t i, hp_part *part);
    const char *(*req_form_error)(hp_request *req);
    const char *(*config)(const char *key);
    int (*res_stream)(hp_response *res);
    int (*res_flush)(hp_response *res);
    const char *(*job_start)(hp_request *req, const char *function, const void *arg, size_t len);
    int (*job_status)(hp_request *req, const char *id, hp_job_info *info);
    int (*job_cancel)(const char *id);
    int (*job_list)(hp_request *req, hp_json *out, int limit);
    int (*job_events)(hp_request *req, const char *id, long long since, hp_json *out);
    const char *(*job_error)(void);
    const char *(*job_id)(const hp_job *job);
    int (*job_progress)(hp_job *job, int percent, const char *message);
    int (*job_event)(hp_job *job, const char *text);
    int (*job_result)(hp_job *job, const void *data, size_t len);
    int (*job_cancelled)(hp_job *job);
    int (*res_cookie)(hp_response *res, const hp_cookie *cookie);
    /* ABI 4 */
    int (*ws_send_position)(hp_ws *ws, const char *prefix);
    int (*ws_resume)(hp_ws *ws, const char *position);
    /* Add ABI 5 fields below this line, never above. */
};

/* The ABI level of the server running this module: at least the level the
 * module was built for (the server refuses it otherwise). The field is in
 * every server's table, so this works on all of them. Since ABI 3. */
#define hp_server_abi() (hp__api->abi_version)

/* True when the server's table has `field` (it may predate the field). */
#define HP_API_HAS(field) \
    (hp__api->size >= offsetof(struct hp_api, field) + sizeof(hp__api->field))

/* The table pointer of this module, set by the server before hp_init. */
extern const struct hp_api *hp__api __attribute__((visibility("hidden")));

/*
** CAPI: Declaring a module
**
** Write `HP_MODULE;` once, at file scope, in every module. It records the
** ABI level the module was built against (hp_module_abi) and the entry the
** server calls to hand over its function table (hp_module_bind).
*/
#define HP_MODULE                                                           \
    const struct hp_api *hp__api __attribute__((visibility("hidden")));     \
    HP_EXPORT void hp_module_bind(const struct hp_api *api) { hp__api = api; } \
    HP_EXPORT const uint32_t hp_module_abi = HP_ABI_VERSION

/*
** CAPI: Lifecycle hooks (optional)
**
** HP_EXPORT int hp_init(hp_module *mod);
** HP_EXPORT void hp_fini(hp_module *mod);
**
** If a module exports hp_init, the server calls it once in each worker
** process after loading the module and before its first request: open
** connection pools, allocate per-worker state there. Return HP_OK, or
** HP_ERROR after logging why: the module's routes then answer 503 and the
** other modules keep serving. hp_fini, if exported, is called once when the
** worker exits normally. Both run on one thread, with no request; allocate
** with malloc() here, not with hp_alloc(). A release is checked by running
** hp_init and hp_fini once in a throwaway process before it goes live.
*/

/* ---------------------------------------------------------------------- */
/* Request                                                                */
/* ---------------------------------------------------------------------- */

/*
** CAPI: Request line
**
** hp_req_method(): the method in upper case ("GET", "POST"...).
** hp_req_path():   the path, percent-decoded, without the query string.
** hp_req_route():  the route pattern from deploy.yaml that matched,
**                  e.g. "/users/<int:id>".
** Never NULL. Since ABI 1.
*/
static inline const char *hp_req_method(const hp_request *req) { return hp__api->req_method(req); }
static inline const char *hp_req_path(const hp_request *req) { return hp__api->req_path(req); }
static inline const char *hp_req_route(const hp_request *req) { return hp__api->req_route(req); }

/*
** CAPI: Path parameters
**
** For a route "/users/<int:id>/<name>", hp_req_param(req, "name") returns the
** decoded text of that segment, or NULL if the route has no such parameter.
** Typed parameters (<int:...>, <float:...>, <path:...>, <uuid:...>) are
** checked by the router before the handler runs: a path that does not fit
** gets a 404 and never reaches the module.
**
** hp_req_param_int() parses the parameter as a decimal integer into *out and
** returns HP_OK, or returns HP_ERROR (and leaves *out alone) when it is
** missing or not an integer. Since ABI 1.
*/
static inline const char *hp_req_param(const hp_request *req, const char *name) { return hp__api->req_param(req, name); }
static inline int hp_req_param_int(const hp_request *req, const char *name, long long *out) { return hp__api->req_param_int(req, name, out); }

/*
** CAPI: Query parameters
**
** hp_req_query(req, "q") returns the URL-decoded value of the first "q" in
** the query string, "" for a bare "?q", or NULL when absent.
** hp_req_query_string() returns the raw query string without "?" ("" if
** none). Since ABI 1.
*/
static inline const char *hp_req_query(hp_request *req, const char *name) { return hp__api->req_query(req, name); }
static inline const char *hp_req_query_string(const hp_request *req) { return hp__api->req_query_string(req); }

/*
** CAPI: Every query parameter
**
** hp_req_query_at(req, i, &name, &value) gives the i-th parameter of the
** query string, decoded, in order (repeated names included), and returns
** HP_OK; past the last one it returns HP_ERROR and leaves name and value
** alone. The strings belong to the request. Since ABI 3: check
** HP_API_HAS(req_query_at) before calling it on an older server.
*/
static inline int hp_req_query_at(hp_request *req, size_t i, const char **name, const char **value) { return hp__api->req_query_at(req, i, name, value); }

/*
** CAPI: Headers
**
** hp_req_header(req, "content-type") finds a request header by name, case
** insensitively, and returns its value or NULL. Repeated headers arrive
** joined with ", " as HTTP allows (Cookie headers with "; "). hp_req_header_count() and
** hp_req_header_at() walk all of them; names come in canonical case
** ("Content-Type"). hp_req_header_at returns HP_ERROR past the end.
** Since ABI 1.
*/
static inline const char *hp_req_header(const hp_request *req, const char *name) { return hp__api->req_header(req, name); }
static inline size_t hp_req_header_count(const hp_request *req) { return hp__api->req_header_count(req); }
static inline int hp_req_header_at(const hp_request *req, size_t i, const char **name, const char **value) { return hp__api->req_header_at(req, i, name, value); }

/*
** CAPI: Cookies
**
** hp_req_cookie(req, "session") returns the value of that cookie from the
** Cookie header (surrounding quotes removed), or NULL. Since ABI 1.
*/
static inline const char *hp_req_cookie(hp_request *req, const char *name) { return hp__api->req_cookie(req, name); }

/*
** CAPI: Every cookie
**
** hp_req_cookie_at(req, i, &name, &value) gives the i-th cookie of the
** Cookie header, in order, as hp_req_query_at() does for the query.
** Since ABI 3.
*/
static inline int hp_req_cookie_at(hp_request *req, size_t i, const char **name, const char **value) { return hp__api->req_cookie_at(req, i, name, value); }

/*
** CAPI: Shared key-value store
**
** One store per server, seen by every worker of every generation: what a
** module keeps there survives deploys and worker restarts (unlike module
** globals, which live and die with one worker). On one host it is an LMDB
** file under the state directory; `hotplate up --store redis://HOST:PORT/DB`
** puts it on a Redis server shared by a fleet. Modules call the same
** functions either way.
**
** Keys are C strings of 1 to HP_KV_MAX_KEY bytes; values are binary, up to
** HP_KV_MAX_VALUE bytes. ttl_ms is the value's lifetime in milliseconds,
** 0 for none; an expired key reads as absent.
**
** hp_kv_get(req, key, &value, &len): HP_KV_OK with *value (owned by the
** request, followed by one NUL byte so that text reads as a C string) and
** *len; HP_KV_NOT_FOUND; or HP_KV_ERROR. value and len are left alone
** unless HP_KV_OK.
** hp_kv_set(key, value, len, ttl_ms): stores the value; HP_KV_OK or HP_KV_ERROR.
** hp_kv_delete(key): HP_KV_OK, or HP_KV_NOT_FOUND if there was none.
** hp_kv_incr(key, delta, &out): adds delta to the decimal integer the key
** holds (an absent key counts as 0) and sets *out (if out is not NULL) to
** the result; keeps the key's expiry. HP_KV_ERROR if the value is not a
** decimal integer or the sum would overflow.
** hp_kv_cas(key, expected, elen, value, vlen, ttl_ms): compare and set.
** Stores value only if the key holds exactly the elen bytes at expected
** (expected NULL: only if the key is absent); value NULL deletes the key
** instead. HP_KV_OK, or HP_KV_CONFLICT when the key held something else.
** hp_kv_error(): why this thread's last hp_kv_* call returned HP_KV_ERROR
** ("the store is full ...", "redis 10.0.0.5:6379: Connection refused");
** "" after a call that did not fail.
**
** Every call is atomic and safe from any thread of any worker. A NULL key
** gives HP_KV_ERROR. In the throwaway process that checks a release before
** it goes live, hp_init sees an empty store of its own. Since ABI 3.
*/
#define HP_KV_OK 0
#define HP_KV_NOT_FOUND 1
#define HP_KV_CONFLICT 2
#define HP_KV_ERROR (-1)
#define HP_KV_MAX_KEY 500
#define HP_KV_MAX_VALUE (64 * 1024 * 1024)
static inline int hp_kv_get(hp_request *req, const char *key, const void **value, size_t *len) { return hp__api->kv_get(req, key, value, len); }
static inline int hp_kv_set(const char *key, const void *value, size_t len, long ttl_ms) { return hp__api->kv_set(key, value, len, ttl_ms); }
static inline int hp_kv_delete(const char *key) { return hp__api->kv_delete(key); }
static inline int hp_kv_incr(const char *key, long long delta, long long *out) { return hp__api->kv_incr(key, delta, out); }
static inline int hp_kv_cas(const char *key, const void *expected, size_t elen, const void *value, size_t vlen, long ttl_ms) { return hp__api->kv_cas(key, expected, elen, value, vlen, ttl_ms); }
static inline const char *hp_kv_error(void) { return hp__api->kv_error(); }

/*
** CAPI: Body
**
** hp_req_body() returns the raw request body and stores its length in *len
** (len may be NULL). The body is binary safe and also NUL-terminated for
** convenience; it is never NULL (an empty body is "" with length 0). Bodies
** over the server's cap were already refused with 413. Since ABI 1.
*/
static inline const void *hp_req_body(const hp_request *req, size_t *len) { return hp__api->req_body(req, len); }

/*
** CAPI: Parsing a JSON body
**
** hp_req_json() parses the body with jansson and returns the root value
** (any JSON value: an object, an array, or since ABI 3 a string, number,
** true, false or null) and sets *error to NULL; or returns NULL on invalid
** JSON with a message ("line 1, column 7: ...") in *error. error may be
** NULL. Duplicate keys in an object are refused, and so is "\u0000" in a
** string (so that every string reads whole as a C string). The request owns
** the returned value: it is released
** when the response is sent, so do not json_decref() it, and json_incref()
** anything you keep. Include <jansson.h> for the json_* functions; every
** module is linked with jansson. Since ABI 1.
**
**     json_t *body = hp_req_json(req, &err);
**     const char *name; json_int_t age;
**     if (!body || json_unpack(body, "{s:s, s:I}", "name", &name, "age", &age))
**         return hp_res_status(res, 400), HP_OK;
*/
static inline struct json_t *hp_req_json(hp_request *req, const char **error) { return hp__api->req_json(req, error); }

/*
** CAPI: Client and request id
**
** hp_req_client_addr(): the peer's IP address as text.
** hp_req_id(): the request id: the X-Request-Id header if the client sent
** one, else one the server made. It appears in the server log with every
** hp_log() line and in 5xx bodies. Since ABI 1.
*/
static inline const char *hp_req_client_addr(const hp_request *req) { return hp__api->req_client_addr(req); }
static inline const char *hp_req_id(const hp_request *req) { return hp__api->req_id(req); }

/* ---------------------------------------------------------------------- */
/* Response                                                               */
/* ---------------------------------------------------------------------- */

/*
** CAPI: Status, headers, content type
**
** hp_res_status() sets the status code (100-599; others become 500).
** hp_res_header() adds a header; it returns HP_ERROR and adds nothing if the
** name or value contains CR, LF or NUL (header injection). Several calls
** with the same name send several headers (e.g. Set-Cookie).
** hp_res_content_type() replaces the content type. Strings are copied.
** Since ABI 1.
*/
static inline void hp_res_status(hp_response *res, int status) { hp__api->res_status(res, status); }
static inline int hp_res_header(hp_response *res, const char *name, const char *value) { return hp__api->res_header(res, name, value); }
static inline void hp_res_content_type(hp_response *res, const char *type) { hp__api->res_content_type(res, type); }

/*
** CAPI: Setting a cookie, removing a header
**
** hp_res_set_cookie(res, "session", token, 3600, "/", HP_COOKIE_SECURE |
** HP_COOKIE_HTTPONLY | HP_COOKIE_SAMESITE_LAX) adds a Set-Cookie header.
** max_age is in seconds: 0 deletes the cookie, a negative value makes a
** session cookie (no Max-Age). path NULL means "/". It returns HP_ERROR and
** adds nothing when the name is not an RFC 6265 token, the value holds a
** space, quote, comma, semicolon, backslash or control character (encode
** it first), the path does not start with "/", or SameSite=None comes
** without Secure (browsers refuse that).
**
** hp_res_cookie(res, &cookie) does the same with every attribute, Domain
** included (a host name of letters, digits, "-" and "."; NULL: none, the
** cookie stays on this host):
**
**     hp_cookie c = {.name = "lang", .value = "fr", .max_age = 86400,
**                    .domain = "example.com", .flags = HP_COOKIE_SECURE};
**     hp_res_cookie(res, &c);
**
** hp_res_remove_header(res, "X-Powered-By") removes every header of that
** name added so far (case-insensitively); for "Content-Type" the response
** then has none. To replace a header, remove it and add the new value.
** Returns HP_OK. Since ABI 3.
*/
struct hp_cookie {
    const char *name;
    const char *value;
    long max_age;
    const char *path;
    const char *domain;
    unsigned flags;
};
#define HP_COOKIE_SECURE 1u
#define HP_COOKIE_HTTPONLY 2u
#define HP_COOKIE_SAMESITE_LAX (1u << 2)
#define HP_COOKIE_SAMESITE_STRICT (2u << 2)
#define HP_COOKIE_SAMESITE_NONE (3u << 2)
static inline int hp_res_set_cookie(hp_response *res, const char *name, const char *value, long max_age, const char *path, unsigned flags) { return hp__api->res_set_cookie(res, name, value, max_age, path, flags); }
static inline int hp_res_cookie(hp_response *res, const hp_cookie *cookie) { return hp__api->res_cookie(res, cookie); }
static inline int hp_res_remove_header(hp_response *res, const char *name) { return hp__api->res_remove_header(res, name); }

/*
** CAPI: Forms
**
** A body sent as application/x-www-form-urlencoded or multipart/form-data
** is parsed on the first call to any of these, once per request.
**
** hp_req_form(req, "name"): the value of the first field so named, as a
** NUL-terminated string owned by the request (decoded, for urlencoded
** bodies); NULL if there is none, or the body is not a form. For a file
** field, its content up to its first NUL byte: use hp_req_form_at for files.
** hp_req_form_at(req, i, &part): the i-th field (from 0), HP_OK, or
** HP_ERROR past the last. part->name is the field name; part->filename the
** file name the client gave (NULL for a plain field: never use it as a path
** unchecked); part->content_type the part's Content-Type or NULL;
** part->data and part->len the content, binary-safe, a slice of the request
** body (no copy) followed by no NUL byte for files.
** hp_req_form_error(req): NULL if the body is a well-formed form or no form
** at all; else why it was refused ("multipart: no closing boundary"), and
** then the request has no fields. At most HP_FORM_MAX_FIELDS fields are
** read; the body's size is capped by the server (413 beyond it).
** Since ABI 3.
*/
#define HP_FORM_MAX_FIELDS 1000
struct hp_part {
    const char *name;
    const char *filename;
    const char *content_type;
    const char *data;
    size_t len;
};
static inline const char *hp_req_form(hp_request *req, const char *name) { return hp__api->req_form(req, name); }
static inline int hp_req_form_at(hp_request *req, size_t i, hp_part *part) { return hp__api->req_form_at(req, i, part); }
static inline const char *hp_req_form_error(hp_request *req) { return hp__api->req_form_error(req); }

/*
** CAPI: Background jobs
**
** Work too long for a request (a report, an import, a batch of emails) runs
** as a job: a call of one of the module's exported functions,
**
**     HP_EXPORT int my_job(hp_job *job, const void *arg, size_t len);
**
** in a process of the server's job runner, outside the request workers.
** Jobs are kept in a database under the state directory (SQLite), so their
** state, progress, result and events outlive workers, deploys and restarts.
**
** From a handler (or a WebSocket handler, through hp_ws_request):
** hp_job_start(req, "my_job", arg, len): queues the job with a copy of the
** len bytes at arg; returns its id (32 hex digits, owned by the request;
** unguessable, so it can serve as the capability to watch the job), or
** NULL if the module exports no such function (hp_job_error says why).
** hp_job_status(req, id, &info): HP_OK and the job's state ("queued",
** "running", "succeeded", "failed", "cancelled"), progress (0-100), last
** message, result (NUL-terminated, owned by the request), error (why it
** failed) and number of events; HP_ERROR for an unknown id.
** hp_job_cancel(id): a queued job is cancelled at once; a running one is
** asked to stop (hp_job_cancelled), and stopped by the runner if it has not
** after 5 s. HP_OK, or HP_ERROR if no such job is queued or running.
** hp_job_list(req, json, limit): writes a JSON array of this module's
** latest jobs (id, function, state, progress, message, created).
** hp_job_events(req, id, since, json): writes a JSON array of the job's
** events after event number since (0: from the first), at most 1,000:
** [{"seq": 7, "at": 1764153000.5, "data": "..."}]. seq increases within a
** job but is not consecutive (events are numbered across the app's jobs):
** pass the last one seen as since. A WebSocket client can also follow them
** live: hp_ws_subscribe(ws, "job:ID") replays every event and sends each
** new one as a text message {"job": "ID", "seq": 7, "at": 1764153000.5,
** "data": "..."}, then one last {"job": "ID", "state": "succeeded" (or
** "failed", "cancelled"), "error": null or why} when the job ends;
** "job:ID@SEQ" replays those after SEQ (for a client that reconnects).
**
** Inside the job function:
** hp_job_id(job); hp_job_progress(job, percent, message) records progress
** (and an event {"progress": p, "message": m}); hp_job_event(job, text)
** records an event; hp_job_result(job, data, len) sets the result (binary
** safe; the last call wins); hp_job_cancelled(job) returns 1 once someone
** asked to cancel it: return then. Return HP_OK (state "succeeded") or
** HP_ERROR ("failed"); a job asked to cancel ends "cancelled" whatever it
** returns. There is no request: allocate with malloc().
**
** Limits and deploys: a job runs on the code of the release that queued it,
** to the end, whatever deploys meanwhile (a running job keeps its code
** loaded; one still queued when its release is pruned fails and says so).
** The manifest's `limits: {job_timeout: 10m, job_memory: 512MiB}` bound
** each job (defaults 1 hour; 1 GiB on top of what the job process maps
** once loaded): past them the job is stopped
** and "failed" says why, as it does for a crash. At most 2 jobs run at once
** per server (`hotplate up --jobs N`); the rest wait in order. A job running
** when the server stops is recorded "failed" (interrupted), not rerun.
** hp_job_error(): why this thread's last hp_job_* call failed. Since ABI 3.
*/
struct hp_job_info {
    const char *state;
    int progress;
    const char *message;
    const char *result;
    size_t result_len;
    const char *error;
    const char *function;
    long long events;
};
static inline const char *hp_job_start(hp_request *req, const char *function, const void *arg, size_t len) { return hp__api->job_start(req, function, arg, len); }
static inline int hp_job_status(hp_request *req, const char *id, hp_job_info *info) { return hp__api->job_status(req, id, info); }
static inline int hp_job_cancel(const char *id) { return hp__api->job_cancel(id); }
static inline int hp_job_list(hp_request *req, hp_json *out, int limit) { return hp__api->job_list(req, out, limit); }
static inline int hp_job_events(hp_request *req, const char *id, long long since, hp_json *out) { return hp__api->job_events(req, id, since, out); }
static inline const char *hp_job_error(void) { return hp__api->job_error(); }
static inline const char *hp_job_id(const hp_job *job) { return hp__api->job_id(job); }
static inline int hp_job_progress(hp_job *job, int percent, const char *message) { return hp__api->job_progress(job, percent, message); }
static inline int hp_job_event(hp_job *job, const char *text) { return hp__api->job_event(job, text); }
static inline int hp_job_result(hp_job *job, const void *data, size_t len) { return hp__api->job_result(job, data, len); }
static inline int hp_job_cancelled(hp_job *job) { return hp__api->job_cancelled(job); }

/*
** CAPI: Crypto (libsodium)
**
** hp_sha256_hex(req, data, len): the SHA-256 of len bytes, as 64 lower-case
** hex digits owned by the request (NULL when out of memory).
** hp_hmac_sha256_hex(req, key, data, len): HMAC-SHA256 with a text key, hex.
** hp_equal(a, b, len): 1 if the len bytes are equal, in a time that does
** not depend on where they differ (for comparing MACs and tokens), else 0.
** hp_random(out, len): len bytes from the kernel's secure generator.
** hp_password_hash(req, password): an argon2id hash string (about 100 ms
** and 64 MiB: give the route a timeout to match); NULL when out of memory.
** hp_password_verify(hash, password): 1 if the password matches the hash.
** hp_token_sign(req, key, payload, ttl_seconds): a token that carries the
** payload text, expires after ttl_seconds and is signed with key
** (base64url, URL- and cookie-safe: for sessions and CSRF).
** hp_token_verify(req, key, token): the payload, or NULL if the token is
** malformed, signed with another key, or expired. Since ABI 3.
*/
static inline char *hp_sha256_hex(hp_request *req, const void *data, size_t len) { return hp__api->sha256_hex(req, data, len); }
static inline char *hp_hmac_sha256_hex(hp_request *req, const char *key, const void *data, size_t len) { return hp__api->hmac_sha256_hex(req, key, data, len); }
static inline int hp_equal(const void *a, const void *b, size_t len) { return hp__api->equal(a, b, len); }
static inline void hp_random(void *out, size_t len) { hp__api->random(out, len); }
static inline char *hp_password_hash(hp_request *req, const char *password) { return hp__api->password_hash(req, password); }
static inline int hp_password_verify(const char *hash, const char *password) { return hp__api->password_verify(hash, password); }
static inline char *hp_token_sign(hp_request *req, const char *key, const char *payload, long ttl_seconds) { return hp__api->token_sign(req, key, payload, ttl_seconds); }
static inline const char *hp_token_verify(hp_request *req, const char *key, const char *token) { return hp__api->token_verify(req, key, token); }

/*
** CAPI: Body
**
** hp_res_write() appends len bytes (binary safe); hp_res_printf() appends
** formatted text. There is no size limit but memory. Both return HP_OK, or
** HP_ERROR when out of memory. hp_res_body() returns the body buffer itself,
** for code that builds text with hp_buf_* functions. Since ABI 1.
*/
static inline int hp_res_write(hp_response *res, const void *data, size_t len) { return hp__api->res_write(res, data, len); }
static inline int hp_res_vprintf(hp_response *res, const char *fmt, va_list ap) { return hp__api->res_vprintf(res, fmt, ap); }
static inline HP_PRINTF(2, 3) int hp_res_printf(hp_response *res, const char *fmt, ...) {
    va_list ap; int rc;
    va_start(ap, fmt); rc = hp__api->res_vprintf(res, fmt, ap); va_end(ap);
    return rc;
}
static inline hp_buf *hp_res_body(hp_response *res) { return hp__api->res_body(res); }

/*
** CAPI: Streaming responses
**
** hp_res_stream(res): send this response in parts, as it is written,
** instead of whole at the end: for large output (a 100 MB export in bounded
** memory) or slow output (progress, server-sent events). Set the status
** and headers first: they go out with the first part and cannot change
** after. From then on, hp_res_write and hp_res_printf send a part (HTTP/1.1
** chunked encoding) each time HP_STREAM_PART bytes are buffered, and
** hp_res_flush(res) sends what is buffered now (what hp_res_json or
** hp_res_body wrote included: those send nothing by themselves). A
** response that ends before its first part was sent goes whole, with a
** Content-Length, as if it had not asked to stream. Returns HP_OK, or HP_ERROR
** where the response cannot be streamed (HTTP/1.0, HEAD, or the server's
** access log is on): writes then work as usual and the response goes whole
** at the end.
**
** Once a part went out, a write returns HP_ERROR when the client has gone
** away: stop writing and return. A handler that fails (HP_ERROR, a crash,
** its timeout) after the first part cannot send a 500 any more: the
** connection is closed without the chunked stream's end, so the client sees
** a truncated response. The route's timeout covers the whole stream: give
** long streams a long one. hp_res_flush without hp_res_stream does
** nothing and returns HP_OK. Since ABI 3.
*/
#define HP_STREAM_PART (64 * 1024)
static inline int hp_res_stream(hp_response *res) { return hp__api->res_stream(res); }
static inline int hp_res_flush(hp_response *res) { return hp__api->res_flush(res); }

/*
** CAPI: Redirect
**
** hp_res_redirect(res, 302, "/login") sets the status (301, 302, 303, 307 or
** 308; others become 302) and the Location header. Returns HP_ERROR if the
** location contains CR or LF. Since ABI 1.
*/
static inline int hp_res_redirect(hp_response *res, int status, const char *location) { return hp__api->res_redirect(res, status, location); }

/*
** CAPI: JSON response
**
** hp_res_json() sets the content type to application/json and returns a JSON
** writer appending to the response body. See "JSON writer" below.
** Since ABI 1.
*/
static inline hp_json *hp_res_json(hp_response *res) { return hp__api->res_json(res); }

/* ---------------------------------------------------------------------- */
/* Memory and strings                                                     */
/* ---------------------------------------------------------------------- */

/*
** CAPI: Request arena
**
** hp_alloc() returns size bytes aligned for any type, owned by the request
** (freed after the response; never free() it). hp_strndup() copies len bytes
** and adds a NUL; hp_strdup() copies a C string. They return NULL only when
** out of memory. Since ABI 1.
*/
static inline void *hp_alloc(hp_request *req, size_t size) { return hp__api->alloc(req, size); }
static inline char *hp_strndup(hp_request *req, const char *s, size_t len) { return hp__api->strndup(req, s, len); }
static inline char *hp_strdup(hp_request *req, const char *s) { size_t n = 0; while (s[n]) n++; return hp__api->strndup(req, s, n); }

/*
** CAPI: String builder
**
** hp_buf_new() makes an empty buffer owned by the request. hp_buf_append()
** and hp_buf_printf() grow it as needed (HP_ERROR only when out of memory).
** hp_buf_data() returns its bytes, always NUL-terminated; hp_buf_len() their
** number, without the NUL. Since ABI 1.
*/
static inline hp_buf *hp_buf_new(hp_request *req) { return hp__api->buf_new(req); }
static inline int hp_buf_append(hp_buf *buf, const void *data, size_t len) { return hp__api->buf_append(buf, data, len); }
static inline int hp_buf_vprintf(hp_buf *buf, const char *fmt, va_list ap) { return hp__api->buf_vprintf(buf, fmt, ap); }
static inline HP_PRINTF(2, 3) int hp_buf_printf(hp_buf *buf, const char *fmt, ...) {
    va_list ap; int rc;
    va_start(ap, fmt); rc = hp__api->buf_vprintf(buf, fmt, ap); va_end(ap);
    return rc;
}
static inline const char *hp_buf_data(const hp_buf *buf) { return hp__api->buf_data(buf); }
static inline size_t hp_buf_len(const hp_buf *buf) { return hp__api->buf_len(buf); }

/*
** CAPI: String helpers
**
** hp_strcaseeq(): 1 if two strings are equal ignoring ASCII case, else 0.
** hp_url_decode(): decodes %XX escapes and '+' (as a space) from len bytes of
**   s into a new NUL-terminated string owned by the request; *out_len (may be
**   NULL) gets its length, which may contain NULs from %00. Invalid escapes
**   are kept as they are.
** hp_html_escape(): a copy of s with & < > " ' escaped, owned by the request.
** Since ABI 1.
*/
static inline int hp_strcaseeq(const char *a, const char *b) { return hp__api->strcaseeq(a, b); }
static inline char *hp_url_decode(hp_request *req, const char *s, size_t len, size_t *out_len) { return hp__api->url_decode(req, s, len, out_len); }
static inline char *hp_html_escape(hp_request *req, const char *s) { return hp__api->html_escape(req, s); }

/* ---------------------------------------------------------------------- */
/* JSON writer                                                            */
/* ---------------------------------------------------------------------- */

/*
** CAPI: JSON writer
**
** Emits JSON with correct escaping into an hp_buf, putting commas and
** nesting right for you. Every call takes the member key first: pass the key
** inside an object and NULL inside an array or at the top level.
**
**     hp_json *j = hp_res_json(res);
**     hp_json_begin_object(j, NULL);
**     hp_json_string(j, "name", name);
**     hp_json_int(j, "visits", n);
**     hp_json_begin_array(j, "tags");
**     hp_json_string(j, NULL, "c");
**     hp_json_end_array(j);
**     hp_json_end_object(j);
**
** hp_json_new() makes a writer on any buffer. Strings are UTF-8: each byte
** that is not part of valid UTF-8 is written as \ufffd (the replacement
** character), so the output is always valid JSON; hp_json_stringn() takes
** a length and may contain NULs (written as \u0000).
** Doubles that are NaN or infinite are written as null; others read back
** as the same double (1.25, 0.1, or 17 digits where no shorter form does). Each call returns
** HP_ERROR, and writes nothing, when it would make invalid JSON (a key inside
** an array, no key inside an object, unbalanced end, nesting deeper than 64)
** or when out of memory. Since ABI 1.
*/
static inline hp_json *hp_json_new(hp_buf *buf) { return hp__api->json_new(buf); }
static inline int hp_json_begin_object(hp_json *j, const char *key) { return hp__api->json_begin_object(j, key); }
static inline int hp_json_end_object(hp_json *j) { return hp__api->json_end_object(j); }
static inline int hp_json_begin_array(hp_json *j, const char *key) { return hp__api->json_begin_array(j, key); }
static inline int hp_json_end_array(hp_json *j) { return hp__api->json_end_array(j); }
static inline int hp_json_string(hp_json *j, const char *key, const char *value) { return hp__api->json_string(j, key, value); }
static inline int hp_json_stringn(hp_json *j, const char *key, const char *value, size_t len) { return hp__api->json_stringn(j, key, value, len); }
static inline int hp_json_int(hp_json *j, const char *key, long long value) { return hp__api->json_int(j, key, value); }
static inline int hp_json_double(hp_json *j, const char *key, double value) { return hp__api->json_double(j, key, value); }
static inline int hp_json_bool(hp_json *j, const char *key, int value) { return hp__api->json_bool(j, key, value); }
static inline int hp_json_null(hp_json *j, const char *key) { return hp__api->json_null(j, key); }

/* ---------------------------------------------------------------------- */
/* Logging and modules                                                    */
/* ---------------------------------------------------------------------- */

/*
** CAPI: Logging
**
** hp_log() writes one line to the server's log at the given HP_LOG_* level,
** tagged with the module, route and request id:
**     [hotplate] module=notes route=/notes req=1f3a-7 message
** hp_module_log() does the same outside a request (in hp_init/hp_fini),
** tagged with the module only. A trailing newline is not needed.
** Since ABI 1.
*/
static inline HP_PRINTF(3, 4) void hp_log(hp_request *req, int level, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt); hp__api->vlog(req, level, fmt, ap); va_end(ap);
}
static inline HP_PRINTF(3, 4) void hp_module_log(hp_module *mod, int level, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt); hp__api->module_vlog(mod, level, fmt, ap); va_end(ap);
}

/*
** CAPI: Module information
**
** hp_module_name(): the module's name from deploy.yaml.
** hp_module_config(mod, "key"): a value from the module's `config:` map in
**   deploy.yaml, as text, or NULL. Valid for the life of the worker.
** Since ABI 1.
*/
static inline const char *hp_module_name(const hp_module *mod) { return hp__api->module_name(mod); }
static inline const char *hp_module_config(const hp_module *mod, const char *key) { return hp__api->module_config(mod, key); }

/*
** CAPI: App config and secrets
**
** hp_config("KEY"): the value of KEY in the app's config set, or NULL if it
** has none (or key is NULL). The set is the operator's (`hotplate config set
** KEY=VALUE`, kept encrypted outside git) over the committed config.yaml
** next to deploy.yaml; each release runs with the set it was deployed with,
** so a rollback brings back the old values. Changing the set rolls the
** workers. The string lives as long as the worker process: safe to keep
** from hp_init. Unlike hp_module_config (the manifest's per-module
** `config:`, visible in git), this is where secrets go. Since ABI 3.
*/
static inline const char *hp_config(const char *key) { return hp__api->config(key); }

/* ---------------------------------------------------------------------- */
/* WebSockets (ABI 2)                                                     */
/* ---------------------------------------------------------------------- */

/*
** CAPI: WebSocket handlers
**
** A `websockets:` entry in deploy.yaml maps a path to up to three exported
** functions of the module:
**
**     HP_EXPORT int  on_open(hp_ws *ws);
**     HP_EXPORT int  on_message(hp_ws *ws, const void *data, size_t len, int type);
**     HP_EXPORT void on_close(hp_ws *ws, int code, const char *reason);
**
** on_open (optional) runs once, before the handshake is answered: return
** HP_OK to accept the connection, or HP_ERROR to refuse it with 403 (check a
** cookie or a token there). Messages it sends reach the client right after
** the handshake.
**
** on_message (required) runs once per complete message, in the order the
** client sent them. type is HP_WS_TEXT (data is valid UTF-8, checked by the
** server, and NUL-terminated) or HP_WS_BINARY. Fragmented messages arrive
** whole. Messages over the route's max_message get the connection closed
** with 1009 before the handler sees them. Return HP_OK, or HP_ERROR to close
** the connection with 1011 (what the call queued is then dropped; its
** changes to the state are kept).
**
** on_close (optional) runs once when the connection ends for any reason:
** code is the close code the client sent (1005 if none), the one the server
** closed with after a protocol error (1002, 1007, 1009) or when it could not
** keep the connection (1001), or 1006 if the connection dropped without a
** close frame. It may publish and unsubscribe; sending returns HP_ERROR.
**
** Handlers of one connection never run at the same time. on_message and
** on_close of all the connections of a worker run on that worker's one
** event loop thread, so a slow handler delays the others: keep them short
** (the route's timeout defaults to 5 s) and hand long work to a thread of
** your own. on_open runs on a request thread. A handler that crashes or
** overruns the timeout closes its connection with 1011 and the worker is
** replaced, as for HTTP handlers; its other connections move to another
** worker.
**
** Surviving a deploy: a connection outlives the code that opened it. When a
** deploy replaces the module, the connection moves, between two messages, to
** a worker running the new code, and from then on the new code's on_message
** and on_close are called (on_open is not called again). The client sees
** nothing. What moves with it: the upgrade request (path, parameters,
** headers), the connection id, the subprotocol, the subscriptions and the
** per-connection state below. Module globals do not move: keep what a
** connection needs in its state. If the new release no longer has the
** route, the connection is closed with 1001 (going away).
*/
#define HP_WS_TEXT 1
#define HP_WS_BINARY 2

/*
** CAPI: The upgrade request and the connection
**
** hp_ws_request(): the HTTP request that opened the connection; every
**   hp_req_* function works on it (path, parameters, query, headers,
**   cookies), and hp_alloc() on it allocates memory freed after the current
**   handler call. Pass it to hp_log() to log with the connection's tags.
** hp_ws_id(): the connection's id, unique on this server and unchanged when
**   the connection moves to new code. It is also hp_req_id() of the request.
** hp_ws_subprotocol(): the subprotocol the server chose from the route's
**   `subprotocols:` list (the first of the list the client offered), or "".
** Since ABI 2.
*/
static inline hp_request *hp_ws_request(hp_ws *ws) { return hp__api->ws_request(ws); }
static inline const char *hp_ws_id(const hp_ws *ws) { return hp__api->ws_id(ws); }
static inline const char *hp_ws_subprotocol(const hp_ws *ws) { return hp__api->ws_subprotocol(ws); }

/*
** CAPI: Sending and closing
**
** hp_ws_send() queues one message of len bytes; type is HP_WS_TEXT (data
** must be UTF-8) or HP_WS_BINARY. hp_ws_send_text() sends a C string and
** hp_ws_printf() formatted text. Messages leave when the handler returns, in
** the order they were queued. A client that does not read is not waited
** for: past the server's send buffer limit (HOTPLATE_WS_SEND_BUFFER, 1 MiB)
** its connection is dropped and on_close gets 1006.
**
** hp_ws_close() closes the connection with a code (1000 normal, 1001 going
** away, 1003 unsupported data, 1008 policy, 1011 error, or 3000-4999 for
** your own) and a reason of at most 123 bytes of UTF-8, after the messages
** queued before it; on_close is called when the client answers.
**
** All return HP_OK, or HP_ERROR (and queue nothing) for a bad type, invalid
** UTF-8 in text, a bad code, a call from on_close, or no memory.
** Since ABI 2.
*/
static inline int hp_ws_send(hp_ws *ws, const void *data, size_t len, int type) { return hp__api->ws_send(ws, data, len, type); }
static inline int hp_ws_send_text(hp_ws *ws, const char *text) { size_t n = 0; while (text[n]) n++; return hp__api->ws_send(ws, text, n, HP_WS_TEXT); }
static inline HP_PRINTF(2, 3) int hp_ws_printf(hp_ws *ws, const char *fmt, ...) {
    va_list ap; int rc;
    va_start(ap, fmt); rc = hp__api->ws_vprintf(ws, fmt, ap); va_end(ap);
    return rc;
}
static inline int hp_ws_close(hp_ws *ws, int code, const char *reason) { return hp__api->ws_close(ws, code, reason); }

/*
** CAPI: Per-connection state
**
** hp_ws_state(ws, size) returns the connection's state: size bytes of host
** memory that keep their contents from one handler call to the next and
** move with the connection to new code on a deploy. It is zero-filled the
** first time (and where it grows); size may be at most HP_WS_STATE_MAX,
** else NULL. Write to it through the pointer during the call; do not keep
** the pointer after the call.
**
**     struct chat { char nick[32]; unsigned messages; };
**     struct chat *me = hp_ws_state(ws, sizeof *me);
**
** Keep plain data in it, never pointers: it is copied to another process.
** When a deploy changes the layout, the new code reads the old bytes; put a
** version number first if the layout may change. Since ABI 2.
*/
#define HP_WS_STATE_MAX 4096
static inline void *hp_ws_state(hp_ws *ws, size_t size) { return hp__api->ws_state(ws, size); }

/*
** CAPI: Publish and subscribe
**
** hp_ws_subscribe() adds the connection to a topic and hp_ws_unsubscribe()
** removes it. hp_publish() sends one message to every connection subscribed
** to the topic, in every worker process of the server, the publisher's own
** connection included; it works from HTTP handlers (pass the request) and
** from WebSocket handlers (hp_ws_publish). Delivery happens after the
** handler returns; messages from one publisher arrive in the order they
** were published, once each, also at connections that move to new code
** meanwhile. A topic is 1 to 255 bytes of text without NUL; a message is
** at most HP_PUBLISH_MAX bytes. Return HP_OK, or HP_ERROR for a bad topic,
** type or size, or no memory. Since ABI 2.
*/
#define HP_PUBLISH_MAX (1024 * 1024)
static inline int hp_ws_subscribe(hp_ws *ws, const char *topic) { return hp__api->ws_subscribe(ws, topic); }
static inline int hp_ws_unsubscribe(hp_ws *ws, const char *topic) { return hp__api->ws_unsubscribe(ws, topic); }
static inline int hp_publish(hp_request *req, const char *topic, const void *data, size_t len, int type) { return hp__api->publish(req, topic, data, len, type); }
static inline int hp_ws_publish(hp_ws *ws, const char *topic, const void *data, size_t len, int type) { return hp__api->publish(hp__api->ws_request(ws), topic, data, len, type); }

/*
** CAPI: Resuming publications after a reconnect
**
** A client that loses its connection and reconnects, to this host or to
** another host of the fleet (their publications meet through NATS), can
** get the publications it missed meanwhile, if it kept its position.
**
** hp_ws_send_position() sends the client one text message: prefix, then
** its position, an opaque token of at most HP_WS_POSITION_MAX characters
** (letters, digits, - and _) saying which publications it has been sent so
** far. Messages on the connection keep their order, so the position arrives
** after every publication it counts. prefix may be NULL or "" (at most 64
** bytes) and lets the client tell the position from other messages.
**
** hp_ws_resume() on a new connection, after its hp_ws_subscribe() calls
** (in ws_open, with the position the client passed, in the query string for
** example), sends it every publication on its topics published after that
** position that the server still keeps: HOTPLATE_WS_REPLAY_SECONDS (30 s),
** at most 10,000 messages and 16 MiB per worker. Delivery is at least once:
** what the client got after the position it kept comes again, so send
** positions as often as duplicates matter (with each message of yours, or
** every few seconds). Return HP_OK, or HP_ERROR for a malformed position or
** a bad prefix. Since ABI 4: check hp_server_abi() >= 4 before calling.
*/
#define HP_WS_POSITION_MAX 1024
static inline int hp_ws_send_position(hp_ws *ws, const char *prefix) { return hp__api->ws_send_position(ws, prefix); }
static inline int hp_ws_resume(hp_ws *ws, const char *position) { return hp__api->ws_resume(ws, position); }

#ifdef __cplusplus
}
#endif

#endif /* HOTPLATE_H */
