/* The runtime's entry points for the Python server. This file is read both
 * by the C compiler and by cffi's cdef(), so it holds plain declarations
 * only: no preprocessor lines, no macros. */

typedef void (*hp_rt_log_fn)(int level, const char *module, const char *route,
                             const char *request_id, const char *message);

/* Sends part of a streamed response (hp_res_stream) to the client of the
 * request this thread is dispatching: the status and headers first (first
 * = 1), then len bytes of body as one chunk. Returns 0, or -1 once the
 * client is gone. */
typedef int (*hp_rt_stream_fn)(int first, int status, const char *headers, size_t headers_len,
                               const char *data, size_t len);

/* What a dispatch produced. The response fields point into the request's
 * arena and stay valid until hp_rt_release(). */
typedef struct {
    int result;              /* HP_RT_* below */
    int signal;              /* the signal that stopped a crashed handler */
    int status;
    const char *headers;     /* name\0value\0 pairs, Content-Type included */
    size_t headers_len;
    const char *body;
    size_t body_len;
    const char *outbox;      /* actions for the host (websocket.c) */
    size_t outbox_len;
    const unsigned char *state; /* a WebSocket call's state, if state_used */
    size_t state_len;
    int state_used;
    void *request;
    int streamed;            /* the status, headers and part of the body went out already */
} hp_rt_result;

enum {
    HP_RT_OK = 0,
    HP_RT_HANDLER_ERROR = 1,
    HP_RT_CRASHED = 2,
    HP_RT_TIMED_OUT = 3,
    HP_RT_NO_MEMORY = 4
};

/* WebSocket events (hp_rt_ws_event) and outbox actions (websocket.c). */
enum {
    HP_RT_WS_OPEN = 0,
    HP_RT_WS_MESSAGE = 1,
    HP_RT_WS_CLOSE = 2
};

enum {
    HP_RT_OUT_SEND = 1,
    HP_RT_OUT_CLOSE = 2,
    HP_RT_OUT_SUBSCRIBE = 3,
    HP_RT_OUT_UNSUBSCRIBE = 4,
    HP_RT_OUT_PUBLISH = 5,
    HP_RT_OUT_SEND_POSITION = 6,
    HP_RT_OUT_RESUME = 7
};

/* Installs the fault and timeout signal handlers and the log callback.
 * Call once per worker process, never in the gunicorn master. */
int hp_rt_setup(hp_rt_log_fn log);

/* Installs the system-call filter (confine.c) in this process and all its
 * threads: execve, ptrace, mount and other calls a handler has no use for
 * raise SIGSYS, which the crash guard turns into a crash of the call.
 * Returns 0, or -1 with a message in err. Irreversible. */
int hp_rt_confine(char *err, size_t errlen);

/* Opens the shared key-value store (store.c) in this process:
 * "lmdb:PATH[?map_mib=N&sync=1]" or "redis://HOST[:PORT][/DB]".
 * Returns 0, or -1 with a message in err. */
int hp_rt_store_open(const char *url, char *err, size_t errlen);

/* Sets the app's config for hp_config(): n name\0value\0 pairs, copied.
 * Call once per process, before modules load. Returns 0, or -1 when out
 * of memory. */
int hp_rt_config_set(const char *pairs, size_t len, size_t n);

/* Opens the jobs database (jobs.c) in this process, creating its tables:
 * jobs queued here record release as the code to run them on.
 * Returns 0, or -1 with a message in err. */
int hp_rt_jobs_open(const char *path, const char *release, char *err, size_t errlen);

/* Runs job function fn of module for job id, with its argument, under the
 * crash guard and no deadline (the job runner enforces the time limit).
 * Returns an HP_RT_* code: HP_RT_OK with *rc the function's return, or
 * HP_RT_CRASHED with *sig the signal. */
int hp_rt_job_run(void *module, void *fn, const char *id, const char *arg, size_t len, int *rc, int *sig);

/* The name of the forbidden call this thread made last (after a SIGSYS crash). */
const char *hp_rt_trapped_call(void);

/* Loads the module at path and binds the API table. Returns NULL with a
 * message in err on failure (dlopen error, missing HP_MODULE, ABI mismatch,
 * crash in a constructor). config is name\0value\0 pairs. */
void *hp_rt_module_load(const char *path, const char *name,
                        const char *config, size_t config_len, size_t nconfig,
                        char *err, size_t errlen);

/* The address of an exported handler, or NULL. */
void *hp_rt_module_sym(void *module, const char *symbol);

/* Runs the module's hp_init, if any, under the crash guard and a timeout.
 * Returns 0 on success, else fills err and returns an HP_RT_* code. */
int hp_rt_module_init(void *module, unsigned timeout_ms, char *err, size_t errlen);

/* Runs the module's hp_fini, if any, under the crash guard. */
int hp_rt_module_fini(void *module, unsigned timeout_ms, char *err, size_t errlen);

/* Calls one WebSocket handler for one event of a connection. blob is the
 * upgrade request as NUL-terminated fields: method, path, query string,
 * client address, connection id, route, then nparams name/value pairs,
 * then nheaders name/value pairs whose names are WSGI environ keys
 * ("HTTP_USER_AGENT") or HTTP names. state is the connection's state; data and arg are the message and
 * its type (MESSAGE) or the reason and close code (CLOSE). A handler that
 * returns HP_ERROR gives HP_RT_HANDLER_ERROR; its state is still returned. */
int hp_rt_ws_event(void *module, void *handler, int event,
                   const char *blob, size_t blob_len,
                   size_t nparams, size_t nheaders, const char *subprotocol,
                   const char *state, size_t state_len,
                   const char *data, size_t data_len, int arg,
                   unsigned timeout_ms, hp_rt_result *out);

/* Frees the request behind a result. */
void hp_rt_release(hp_rt_result *out);

/* The ABI level this runtime provides (HP_ABI_VERSION it was built with). */
int hp_rt_abi_version(void);

/* The request core (serve.c): module routes answered in C, on threads of
 * its own that accept (the fast path) or on Python's (hp_rt_serve_conn);
 * everything else handed to Python. */
typedef struct {
    int threads;                  /* threads serving connections */
    int workers;                  /* worker processes sharing the listening sockets (their CPU share) */
    int share_fd;                 /* a page the server's workers share (their connections), or -1 */
    size_t max_body;              /* larger bodies get 413 */
    size_t head_limit;            /* longer heads go to Python (its 431) */
    size_t max_request_line;      /* and so do longer request lines, */
    size_t max_header_size;       /* longer header fields, */
    size_t max_header_fields;     /* and more header fields than this */
    unsigned header_timeout_ms;   /* for a request's head to arrive */
    unsigned body_timeout_ms;     /* between parts of a body, and for a slow reader */
    unsigned keepalive_ms;        /* an idle keep-alive connection waits this long */
    unsigned linger_ms;           /* ... and this long once the worker drains */
    int access_log_fd;            /* a line per request written here; -1: none */
    unsigned long long max_requests; /* drain after this many requests (HP_RT_EV_LIMIT); 0: never */
    char release[32];             /* the release served: its id in every answer's X-Hotplate-Release */
    char sanitize_dir[256];       /* hotplate dev --sanitize: where ASan writes sanitizer.<pid>; "" for none */
} hp_rt_serve_config;

/* What the fast path gives Python (hp_rt_serve_next). */
typedef struct {
    int kind;                     /* HP_RT_EV_* */
    int fd;                       /* CONNECTION: the socket, Python's from now on */
    char *data;                   /* CONNECTION: what was read of it; PUBLISH: a handler's outbox */
    size_t data_len;
    int route;                    /* FAULT: the route's index; CONNECTION: the WebSocket route matched, or -1 */
    int result;                   /* FAULT: HP_RT_* of the call */
    int signal;                   /* FAULT: the signal that stopped a crashed handler */
    char request_id[64];
    char client[64];              /* CONNECTION: the peer's address */
    int port;
    int streamed;                 /* FAULT: the response had begun (hp_res_stream) and is cut short */
    char trapped[32];             /* FAULT: the forbidden call of a SIGSYS crash (hp_rt_trapped_call) */
    int driven;                   /* FAULT (stuck): the call's connection is a Python thread's (hp_rt_serve_conn) */
    char *params;                 /* CONNECTION to a WebSocket route: its parameters, NUL-separated name/value pairs */
    size_t params_len;
} hp_rt_event;

enum {
    HP_RT_EV_CONNECTION = 1,
    HP_RT_EV_PUBLISH = 2,
    HP_RT_EV_FAULT = 3,
    HP_RT_EV_LIMIT = 4,           /* max_requests reached: the fast path drains, the worker should go */
    HP_RT_EV_DRAINED = 5          /* draining, and its last connection is closed or handed over */
};

/* Buckets of request durations: server/metrics.py's BUCKETS, then +Inf. */
enum { HP_RT_BUCKETS = 15 };

typedef struct {
    unsigned long long classes[5];                 /* 1xx to 5xx */
    unsigned long long buckets[HP_RT_BUCKETS + 1]; /* each request in the first bucket that holds it */
    double seconds;
} hp_rt_route_stats;

/* Adds a route to the one route table (before hp_rt_serve_start): methods
 * like "GET,POST", a werkzeug pattern, the module's name and loaded
 * handle, the handler. handler NULL: a WebSocket route, whose handshakes go
 * to Python; or, with unavailable, why the module did not load (503).
 * index: the route's in the release (a WebSocket route's among those). Returns
 * 0, or -1 for a pattern it cannot serve (converters other than string,
 * int and a last path, which the manifest refuses). */
int hp_rt_serve_route(const char *methods, const char *pattern, const char *module_name, void *module,
                      void *handler, const char *handler_name, unsigned timeout_ms, int index,
                      const char *unavailable);

/* Starts the core: with listeners, config->threads threads serve them
 * (not accepting until hp_rt_serve_accept(1)); with none, only Python's
 * threads drive it. Returns a descriptor that becomes readable (an
 * eventfd) when events wait for hp_rt_serve_next(), or -1. */
int hp_rt_serve_start(const int *listeners, size_t nlisteners, const hp_rt_serve_config *config,
                      const double *buckets);

/* Serves a connection on the calling thread: data is what was read of it
 * already, client and port its peer. Returns HP_RT_CONN_IDLE once every
 * request it sent is answered (kept alive: wait for its next), or
 * HP_RT_CONN_CLOSE (close it), or HP_RT_CONN_PYTHON with *out's data the
 * bytes of a request that is not a module route, for Python to go on
 * with (free *out with hp_rt_serve_event_free); for a WebSocket
 * handshake, *out's route and params name the route C's table matched.
 * The socket is left open, and blocking. */
int hp_rt_serve_conn(int fd, const char *data, size_t len, const char *client, int port, hp_rt_event *out);

enum { HP_RT_CONN_IDLE = 0, HP_RT_CONN_CLOSE = 1, HP_RT_CONN_PYTHON = 2 };

/* An error answer as the core writes its own (head and JSON body), for
 * Python's refusals of a WebSocket handshake: module and route may be NULL,
 * extra holds more header lines ("Sec-WebSocket-Version: 13\r\n") or NULL.
 * Into out; its length, or -1 if it does not fit. The connection closes. */
int hp_rt_error_answer(int minor, int status, const char *message, const char *module, const char *route,
                       const char *request_id, const char *extra, char *out, size_t size);

/* Accept new connections, or stop. */
void hp_rt_serve_accept(int enabled);

/* Stop accepting; idle connections close after linger_ms, and requests
 * that arrive meanwhile are answered with Connection: close. */
void hp_rt_serve_drain(void);

/* Waits up to timeout_ms for every connection to close, but those of calls
 * given up on (hp_rt_serve_abandon_stuck); how many are left. */
size_t hp_rt_serve_wait(unsigned timeout_ms);

/* The next event for Python: 1 and *out (free it with
 * hp_rt_serve_event_free), or 0 if none waits. */
int hp_rt_serve_next(hp_rt_event *out);
void hp_rt_serve_event_free(hp_rt_event *ev);

/* A route's counts since the last call, taken (zeroed); returns its requests. */
unsigned long long hp_rt_serve_stats(int index, hp_rt_route_stats *out);

/* Requests the fast path answered since it started. */
unsigned long long hp_rt_serve_requests(void);

/* Answers 504 for one call stuck stuck_after_ms past its deadline outside
 * the module's code, shuts its connection, and returns 1 with *out saying
 * which; 0 if none is. */
int hp_rt_serve_abandon_stuck(unsigned stuck_after_ms, hp_rt_event *out);
