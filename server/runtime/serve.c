/* The request core: HTTP for module routes, from the bytes a client sent
 * to the answer it gets, inside each gunicorn worker (issues 10 and 22).
 * Every rule of it lives here once: parsing (picohttpparser, vendor/), the
 * one route table (with werkzeug's 405 and 308 answers), limits,
 * 100-continue, HEAD and the no-body statuses, error bodies, the Server
 * header. Handlers run through rt_dispatch() under the crash guard and
 * deadline.
 *
 * Two drivers feed it:
 * - the fast path: C threads accept on the worker's listening sockets and
 *   share one epoll set; every socket is armed one-shot, so a connection
 *   is only ever in one thread's hands, and a handler that blocks holds its
 *   own connection, not the others. As many threads wait on the set as the
 *   worker's share of the CPUs (more would only take turns on them, issue
 *   23); a worker that shares the listening sockets with others accepts one
 *   connection a wake, so that each gets its share of them too; while
 *   every one of them is in a call longer than a sweep (a handler that
 *   blocks), one more of config->threads joins them, and leaves once the
 *   calls are short again;
 * - Python (hp_rt_serve_conn): with the fast path off, and for connections
 *   the fast path handed over, a gunicorn thread gives C its connection
 *   and the bytes read so far (server/worker.py).
 * gunicorn still owns the processes (spawn, roll, retire, signals).
 *
 * What is not a module route goes to Python with the bytes already read:
 * Flask's and the reserved paths, WebSocket handshakes, a head too large or
 * malformed (gunicorn answers 431 or 400). Python also gets what only it
 * can do: the publications of hp_publish, and the faults to log, count and
 * retire the worker for.
 *
 * A slow client costs a file descriptor here, never a thread: heads and
 * bodies are read without blocking, and the sweeper thread shuts down a
 * connection whose head or body is late. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <fcntl.h>
#include <jansson.h>

#include "runtime.h"
#include "vendor/picohttpparser.h"

#define MAX_ROUTES 1024
#define MAX_SEGMENTS 32
#define MAX_HEADERS 128
#define MAX_THREADS 64
#define FIRST_BUFFER 4096
#define SWEEP_MS 50
#define SHARES 64 /* workers of one server that share the CPUs at once */

/* A worker's entry in the page its master shares between its workers:
 * how many connections it holds, as of when. Each worker's sweeper writes
 * its own and reads the others' to size its share of the CPUs; a wrong
 * figure there (module code can write the page) costs only that sizing. */
typedef struct {
    _Atomic int pid;
    _Atomic int conns;
    _Atomic long long seen_ms;
} share;

/* In the order werkzeug prefers them where two routes match a path. */
enum seg_kind { SEG_LITERAL, SEG_INT, SEG_STRING, SEG_PATH };

typedef struct {
    enum seg_kind kind;
    char *text; /* the literal, or the parameter's name */
} segment;

typedef struct {
    char methods[128]; /* ",GET,HEAD," */
    char *pattern, *handler_name, *module_name;
    char *unavailable; /* why the route's module did not load: every request gets 503 */
    segment segs[MAX_SEGMENTS];
    int nsegs, nparams;
    void *module, *handler; /* handler NULL: a WebSocket route, whose handshake is Python's (or unavailable) */
    unsigned timeout_ms;
    int index;
} route;

typedef struct {
    _Atomic unsigned long long classes[5];
    _Atomic unsigned long long buckets[HP_RT_BUCKETS + 1];
    _Atomic unsigned long long micros;
} route_stats;

typedef struct conn {
    int fd;
    struct conn *prev, *next; /* every open connection, for the sweeper */
    char *buf;
    size_t len, cap;
    size_t head_len;          /* of the request being read, once parsed */
    int chunked;
    struct phr_chunked_decoder dec;
    size_t dec_end;           /* end of the decoded body (chunked) */
    int continued;            /* 100 Continue sent for this request */
    _Atomic long long deadline_ms; /* 0: not watched (in a handler, or between reads of a whole request) */
    _Atomic int expired;      /* the sweeper shut it down: its body was late */
    int socket_route;         /* a WebSocket route matched for the request handed to Python: its index, else -1 */
    char *socket_params;      /* ... and its parameters, NUL-separated name/value pairs */
    size_t socket_params_len;
    long long head_started_ms;
    struct sockaddr_storage peer;
    char client[INET6_ADDRSTRLEN];
    int port;
} conn;

typedef struct event {
    hp_rt_event ev;
    struct event *next;
} event;

/* What the watchdog needs of each thread's call in progress. */
typedef struct {
    _Atomic int busy;              /* a thread serves with it (Python's claim one per connection) */
    _Atomic long long started_ms;  /* when its call began; 0: no call */
    int driven;                    /* by Python (hp_rt_serve_conn) */
    _Atomic long long deadline_ms; /* 0: no call */
    _Atomic int abandoned;
    conn *c;
    int route;
    char request_id[64];
    int minor;
} slot;

static struct {
    hp_rt_serve_config cfg;
    double buckets[HP_RT_BUCKETS];
    route routes[MAX_ROUTES];
    route_stats stats[MAX_ROUTES];
    int nroutes;
    int epfd, notify_fd;
    int listeners[8];
    size_t nlisteners;
    _Atomic int accepting, draining, stopping, drained;
    pthread_mutex_t lock; /* the connection list and the event queue */
    conn *conns;
    size_t nconns;
    event *events, *events_tail;
    pthread_t threads[MAX_THREADS];
    slot slots[MAX_THREADS];
    int nthreads;
    _Atomic int active;           /* the fast path's threads that wait on the epoll set: the first ones */
    _Atomic int base_threads;     /* how many at rest: the worker's share of the CPUs */
    int ncpus;
    share *shares;                /* the page shared by the server's workers */
    share *_Atomic mine;          /* this worker's entry there */
    long long calm_since;         /* the sweeper's: since when calls have been short */
    pthread_mutex_t park;
    pthread_cond_t unpark;
    pthread_t sweeper;
    _Atomic unsigned long long requests, ids;
    _Atomic size_t abandoned; /* connections of calls the watchdog gave up on: never closed */
    char pid_hex[16];
} S = {.lock = PTHREAD_MUTEX_INITIALIZER, .park = PTHREAD_MUTEX_INITIALIZER, .unpark = PTHREAD_COND_INITIALIZER,
       .epfd = -1, .notify_fd = -1};

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* -- routes ------------------------------------------------------------- */

/* Splits a werkzeug rule into segments; 0, or -1 for a rule this matcher
 * leaves to Python (a converter other than string, int or a final path,
 * a parameter that is not a whole segment). */
static int compile_pattern(route *r, const char *pattern)
{
    if (pattern[0] != '/')
        return -1;
    char *copy = strdup(pattern + 1);
    if (!copy)
        return -1;
    char *p = copy;
    r->nsegs = r->nparams = 0;
    for (;;) {
        char *slash = strchr(p, '/');
        if (slash)
            *slash = 0;
        if (r->nsegs == MAX_SEGMENTS)
            return -1;
        segment *s = &r->segs[r->nsegs++];
        if (p[0] == '<') {
            size_t n = strlen(p);
            if (n < 3 || p[n - 1] != '>')
                return -1;
            p[n - 1] = 0;
            char *name = p + 1, *colon = strchr(name, ':');
            s->kind = SEG_STRING;
            if (colon) {
                *colon = 0;
                if (!strcmp(name, "int"))
                    s->kind = SEG_INT;
                else if (!strcmp(name, "path"))
                    s->kind = SEG_PATH;
                else if (strcmp(name, "string"))
                    return -1;
                name = colon + 1;
            }
            if (!*name || strpbrk(name, "()<>,="))
                return -1;
            if (s->kind == SEG_PATH && slash)
                return -1; /* only as the last segment */
            s->text = name;
            r->nparams++;
        } else {
            if (strchr(p, '<') || strchr(p, '>'))
                return -1;
            s->kind = SEG_LITERAL;
            s->text = p;
        }
        if (!slash)
            break;
        p = slash + 1;
    }
    return 0;
}

int hp_rt_serve_route(const char *methods, const char *pattern, const char *module_name, void *module,
                      void *handler, const char *handler_name, unsigned timeout_ms, int index, const char *unavailable)
{
    if (S.nroutes == MAX_ROUTES || index < 0 || index >= MAX_ROUTES ||
        strlen(methods) + 3 > sizeof S.routes[0].methods)
        return -1;
    route *r = &S.routes[S.nroutes];
    memset(r, 0, sizeof *r);
    if (compile_pattern(r, pattern))
        return -1;
    snprintf(r->methods, sizeof r->methods, ",%s,", methods);
    r->pattern = strdup(pattern);
    r->handler_name = strdup(handler_name);
    r->module_name = strdup(module_name);
    r->unavailable = unavailable ? strdup(unavailable) : NULL;
    r->module = module;
    r->handler = handler;
    r->timeout_ms = timeout_ms;
    r->index = index;
    if (!r->pattern || !r->handler_name || !r->module_name || (unavailable && !r->unavailable))
        return -1;
    S.nroutes++;
    return 0;
}

/* Whether ",GET,POST," names a method (a comparison per request: no formatting). */
static int names_method(const char *methods, const char *method, size_t len)
{
    for (const char *p = methods + 1; *p; p = strchr(p, ',') + 1)
        if (!strncmp(p, method, len) && p[len] == ',')
            return 1;
    return 0;
}

static int method_ok(const route *r, const char *method, size_t len)
{
    return names_method(r->methods, method, len) ||
           (len == 4 && !memcmp(method, "HEAD", 4) && names_method(r->methods, "GET", 3));
}

typedef struct {
    const char *start;
    size_t len;
} span;

/* Matches a decoded path against a route; fills params (int values
 * without leading zeros, as werkzeug gives them). */
static int match_route(const route *r, const char *path, size_t plen, span *params)
{
    const char *p = path + 1, *end = path + plen;
    int np = 0;
    for (int i = 0; i < r->nsegs; i++) {
        const segment *s = &r->segs[i];
        if (p > end)
            return 0;
        if (s->kind == SEG_PATH) {
            if (p == end || *p == '/')
                return 0;
            params[np++] = (span){p, (size_t)(end - p)};
            return 1;
        }
        const char *slash = memchr(p, '/', (size_t)(end - p));
        const char *seg_end = slash ? slash : end;
        size_t n = (size_t)(seg_end - p);
        if (s->kind == SEG_LITERAL) {
            if (n != strlen(s->text) || memcmp(p, s->text, n))
                return 0;
        } else {
            if (n == 0)
                return 0;
            if (s->kind == SEG_INT) {
                for (size_t k = 0; k < n; k++)
                    if (!isdigit((unsigned char)p[k]))
                        return 0;
                while (n > 1 && *p == '0')
                    p++, n--;
            }
            params[np++] = (span){p, n};
        }
        if (i == r->nsegs - 1)
            return seg_end == end;
        if (!slash)
            return 0;
        p = seg_end + 1;
    }
    return 0;
}

/* Whether route a goes before route b where both match a path: werkzeug's
 * weighting, segment by segment (a literal, then an int, a string, a path). */
static int preferred(const route *a, const route *b)
{
    for (int i = 0; i < a->nsegs && i < b->nsegs; i++)
        if (a->segs[i].kind != b->segs[i].kind)
            return a->segs[i].kind < b->segs[i].kind;
    return a->nsegs > b->nsegs;
}

/* Adds a route's methods to a ",GET,POST," list, once each. */
static void add_methods(char *allow, size_t size, const route *r)
{
    char methods[sizeof r->methods + 8];
    snprintf(methods, sizeof methods, "%s%s", r->methods, strstr(r->methods, ",GET,") ? "HEAD," : "");
    for (char *m = methods + 1, *comma; (comma = strchr(m, ',')); m = comma + 1) {
        char item[40];
        snprintf(item, sizeof item, ",%.*s,", (int)(comma - m), m);
        size_t n = strlen(allow);
        if (!strstr(allow, item) && n + strlen(item) < size)
            snprintf(allow + n, size - n, "%s", n ? item + 1 : item);
    }
}

/* The one route table's answer for a request: its route, or NULL; then
 * *allow (",GET,POST,") names the methods of the routes that take the
 * path (a 405), and is empty when none does. */
static const route *find_route(const char *method, size_t mlen, const char *path, size_t plen, span *params,
                               char *allow, size_t allow_size)
{
    const route *best = NULL;
    span scratch[MAX_SEGMENTS];
    allow[0] = 0;
    for (int i = 0; i < S.nroutes; i++) {
        const route *r = &S.routes[i];
        if (!match_route(r, path, plen, scratch))
            continue;
        if (!method_ok(r, method, mlen))
            add_methods(allow, allow_size, r);
        else if (!best || preferred(r, best)) {
            best = r;
            memcpy(params, scratch, sizeof scratch[0] * (size_t)r->nparams);
        }
    }
    if (best)
        allow[0] = 0;
    return best;
}

static int percent_decode(const char *in, size_t n, char *out, size_t *out_len);

/* werkzeug's redirects for a path no route takes as it is: its slashes
 * merged, or a slash added where a route ends in one. 0 with the place to
 * go in loc (raw, as the client wrote it, query kept), or -1. */
static int redirect_for(const char *method, size_t mlen, const char *raw, size_t raw_len, const char *query,
                        size_t qlen, char *loc, size_t size)
{
    static __thread char merged[8192], path[8192];
    size_t m = 0;
    if (raw_len + 2 > sizeof merged)
        return -1;
    for (size_t i = 0; i < raw_len; i++)
        if (raw[i] != '/' || !m || merged[m - 1] != '/')
            merged[m++] = raw[i];
    for (int slash = 0; slash < 2; slash++) {
        if (slash && merged[m - 1] != '/')
            merged[m++] = '/';
        else if (slash || m == raw_len)
            continue; /* nothing to merge, or a slash there already */
        size_t plen;
        span params[MAX_SEGMENTS];
        char allow[160];
        if (percent_decode(merged, m, path, &plen) == 0 &&
            find_route(method, mlen, path, plen, params, allow, sizeof allow)) {
            int n = snprintf(loc, size, "%.*s%s%.*s", (int)m, merged, qlen ? "?" : "", (int)qlen, query);
            return n > 0 && (size_t)n < size ? 0 : -1;
        }
    }
    return -1;
}

/* -- events for Python --------------------------------------------------- */

static char *memdup(const char *data, size_t len)
{
    char *copy = malloc(len ? len : 1);
    if (copy)
        memcpy(copy, data, len);
    return copy;
}

static void push_event(const hp_rt_event *ev)
{
    event *e = malloc(sizeof *e);
    if (!e) {
        if (ev->kind == HP_RT_EV_CONNECTION)
            close(ev->fd);
        free(ev->data);
        return;
    }
    e->ev = *ev;
    e->next = NULL;
    pthread_mutex_lock(&S.lock);
    if (S.events_tail)
        S.events_tail->next = e;
    else
        S.events = e;
    S.events_tail = e;
    pthread_mutex_unlock(&S.lock);
    uint64_t one = 1;
    if (write(S.notify_fd, &one, sizeof one) < 0) {
        /* the counter is saturated: Python is reading already */
    }
}

int hp_rt_serve_next(hp_rt_event *out)
{
    pthread_mutex_lock(&S.lock);
    event *e = S.events;
    if (e) {
        S.events = e->next;
        if (!S.events)
            S.events_tail = NULL;
    }
    pthread_mutex_unlock(&S.lock);
    if (!e)
        return 0;
    *out = e->ev;
    free(e);
    return 1;
}

void hp_rt_serve_event_free(hp_rt_event *ev)
{
    free(ev->data);
    free(ev->params);
    ev->data = ev->params = NULL;
}

/* -- connections ----------------------------------------------------------- */

static void arm(conn *c, int op)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLONESHOT, .data.ptr = c};
    epoll_ctl(S.epfd, op, c->fd, &ev);
}

/* Draining, with no connection left but those of abandoned calls: tell
 * Python once (its drain waits for this, and meanwhile takes hand-overs). */
static void check_drained(void)
{
    pthread_mutex_lock(&S.lock);
    int done = atomic_load(&S.draining) && S.nconns <= atomic_load(&S.abandoned);
    pthread_mutex_unlock(&S.lock);
    if (done && !atomic_exchange(&S.drained, 1))
        push_event(&(hp_rt_event){.kind = HP_RT_EV_DRAINED});
}

static void forget(conn *c)
{
    pthread_mutex_lock(&S.lock);
    if (c->prev)
        c->prev->next = c->next;
    else
        S.conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    S.nconns--;
    pthread_mutex_unlock(&S.lock);
    free(c->buf);
    free(c->socket_params);
    free(c);
    check_drained();
}

static void close_conn(conn *c)
{
    epoll_ctl(S.epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    forget(c);
}

/* Gives the connection, and what was read of it, to Python. Queued before
 * C forgets it: forgetting the last connection of a drain says DRAINED,
 * and Python's drain ends at DRAINED if nothing else is queued by then. */
static void hand_off(conn *c)
{
    epoll_ctl(S.epfd, EPOLL_CTL_DEL, c->fd, NULL);
    hp_rt_event ev = {.kind = HP_RT_EV_CONNECTION, .fd = c->fd, .data = c->buf, .data_len = c->len,
                      .port = c->port, .route = c->socket_route, .params = c->socket_params,
                      .params_len = c->socket_params_len};
    snprintf(ev.client, sizeof ev.client, "%s", c->client);
    c->buf = c->socket_params = NULL;
    push_event(&ev);
    forget(c);
}

static int grow(conn *c, size_t limit)
{
    if (c->cap >= limit)
        return -1;
    size_t cap = c->cap ? c->cap * 2 : FIRST_BUFFER;
    if (cap > limit)
        cap = limit;
    char *buf = realloc(c->buf, cap);
    if (!buf)
        return -1;
    c->buf = buf;
    c->cap = cap;
    return 0;
}

/* Writes everything, waiting (bounded) while the client's window is full. */
static int send_all(int fd, struct iovec *iov, int n)
{
    while (n > 0) {
        ssize_t w = writev(fd, iov, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                return -1;
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            if (poll(&p, 1, (int)S.cfg.body_timeout_ms) <= 0)
                return -1;
            continue;
        }
        while (n > 0 && (size_t)w >= iov->iov_len) {
            w -= (ssize_t)iov->iov_len;
            iov++, n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + w;
            iov->iov_len -= (size_t)w;
        }
    }
    return 0;
}

static int send_text(int fd, const char *text, size_t len)
{
    struct iovec iov = {(void *)text, len};
    return send_all(fd, &iov, 1);
}

/* -- responses ------------------------------------------------------------- */

static const char *reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 203: return "Non-Authoritative Information";
    case 204: return "No Content";
    case 205: return "Reset Content";
    case 206: return "Partial Content";
    case 300: return "Multiple Choices";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 402: return "Payment Required";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 418: return "I'm a Teapot";
    case 422: return "Unprocessable Content";
    case 425: return "Too Early";
    case 426: return "Upgrade Required";
    case 428: return "Precondition Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 451: return "Unavailable For Legal Reasons";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

/* The Date header's value, formatted once per second per thread. */
static const char *http_date(void)
{
    static __thread time_t at;
    static __thread char text[40];
    time_t now = time(NULL);
    if (now != at) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(text, sizeof text, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        at = now;
    }
    return text;
}

typedef struct {
    const char *method;
    size_t method_len;
    const char *target; /* as sent: path and query */
    size_t target_len;
    int minor;
    int head;
    int keep;
    const char *referer, *agent;
    size_t referer_len, agent_len;
    char request_id[64];
    int status;
    size_t sent;
} request_line;

/* Where a response head is written: bytes appended, or overflow noted. */
typedef struct {
    char *p, *end;
    int overflow;
} out_buf;

static void put(out_buf *o, const char *s, size_t n)
{
    if ((size_t)(o->end - o->p) < n) {
        o->overflow = 1;
        return;
    }
    memcpy(o->p, s, n);
    o->p += n;
}

static void put_str(out_buf *o, const char *s)
{
    put(o, s, strlen(s));
}

static void put_uint(out_buf *o, unsigned long long v)
{
    char digits[24];
    int i = sizeof digits;
    do
        digits[--i] = (char)('0' + v % 10);
    while (v /= 10);
    put(o, digits + i, sizeof digits - (size_t)i);
}

/* The status line and the server's headers, then the handler's (NUL
 * separated name/value pairs), extra, and Content-Length unless it is
 * negative. Written with copies, not printf: it runs for every answer. */
static int format_head(char *out, size_t size, const request_line *rl, int status, const char *headers,
                       size_t headers_len, const char *extra, long long content_length)
{
    out_buf o = {out, out + size, 0};
    put(&o, rl->minor ? "HTTP/1.1 " : "HTTP/1.0 ", 9);
    put_uint(&o, (unsigned)status);
    put(&o, " ", 1);
    put_str(&o, reason(status));
    put(&o, "\r\nServer: hotplate\r\nDate: ", 26);
    put_str(&o, http_date());
    put_str(&o, rl->keep ? "\r\nConnection: keep-alive\r\nX-Hotplate-Release: "
                         : "\r\nConnection: close\r\nX-Hotplate-Release: ");
    put_str(&o, S.cfg.release);
    put(&o, "\r\n", 2);
    for (const char *p = headers, *end = headers + headers_len; p < end;) {
        size_t nlen = strnlen(p, (size_t)(end - p));
        const char *value = p + nlen + 1;
        if (value >= end)
            break;
        size_t vlen = strnlen(value, (size_t)(end - value));
        put(&o, p, nlen);
        put(&o, ": ", 2);
        put(&o, value, vlen);
        put(&o, "\r\n", 2);
        p = value + vlen + 1;
    }
    if (extra)
        put_str(&o, extra);
    if (content_length >= 0) {
        put(&o, "Content-Length: ", 16);
        put_uint(&o, (unsigned long long)content_length);
        put(&o, "\r\n", 2);
    }
    put(&o, "\r\n", 2);
    return o.overflow ? -1 : (int)(o.p - out);
}

static void access_log(const conn *c, const request_line *rl)
{
    if (S.cfg.access_log_fd < 0)
        return;
    char when[40], line[2048];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(when, sizeof when, "%d/%b/%Y:%H:%M:%S +0000", &tm);
    int n = snprintf(line, sizeof line, "%s - - [%s] \"%.*s %.*s HTTP/1.%d\" %d %zu \"%.*s\" \"%.*s\"\n", c->client,
                     when, (int)rl->method_len, rl->method, (int)(rl->target_len > 1024 ? 1024 : rl->target_len),
                     rl->target, rl->minor, rl->status, rl->sent, rl->referer ? (int)rl->referer_len : 1,
                     rl->referer ? rl->referer : "-", rl->agent ? (int)(rl->agent_len > 256 ? 256 : rl->agent_len) : 1,
                     rl->agent ? rl->agent : "-");
    if (n > 0 && write(S.cfg.access_log_fd, line, (size_t)n > sizeof line ? sizeof line : (size_t)n) < 0) {
        /* a full disk loses log lines, never requests */
    }
}

static void count(const route *r, int status, long long micros)
{
    route_stats *st = &S.stats[r->index];
    int cls = status / 100 - 1;
    atomic_fetch_add(&st->classes[cls < 0 ? 0 : cls > 4 ? 4 : cls], 1);
    double seconds = (double)micros / 1e6;
    int b = 0;
    while (b < HP_RT_BUCKETS && seconds > S.buckets[b])
        b++;
    atomic_fetch_add(&st->buckets[b], 1);
    atomic_fetch_add(&st->micros, (unsigned long long)micros);
    if (atomic_fetch_add(&S.requests, 1) + 1 == S.cfg.max_requests) {
        hp_rt_serve_drain();
        push_event(&(hp_rt_event){.kind = HP_RT_EV_LIMIT});
    }
}

/* The one writer of the error shape: a head, then a JSON body naming what
 * went wrong, the module and route (when one was matched) and the request
 * id, with headers of its own (a 405's Allow, a 308's Location) in extra.
 * Into out; its length (*head_len: the head's), or -1 if it does not fit. */
static int error_answer(const request_line *rl, const char *module, const char *route, int status,
                        const char *message, const char *extra, char *out, size_t size, size_t *head_len)
{
    json_t *o = json_object();
    json_t *text = json_string(message);
    json_object_set_new(o, "error", text ? text : json_string("(the message is not UTF-8)"));
    if (module) {
        json_object_set_new(o, "module", json_string(module));
        json_object_set_new(o, "route", json_string(route));
    }
    json_object_set_new(o, "request_id", json_string(rl->request_id));
    char *body = json_dumps(o, JSON_PRESERVE_ORDER);
    json_decref(o);
    size_t blen = body ? strlen(body) : 0;
    char fields[1024];
    snprintf(fields, sizeof fields, "%sContent-Type: application/json\r\nContent-Length: %zu\r\nX-Request-Id: %s\r\n",
             extra ? extra : "", blen, rl->request_id);
    int hlen = format_head(out, size, rl, status, "", 0, fields, -1);
    int n = -1;
    if (hlen >= 0 && (size_t)hlen + blen <= size) {
        memcpy(out + hlen, body, blen);
        *head_len = (size_t)hlen;
        n = hlen + (int)blen;
    }
    free(body);
    return n;
}

/* Every error the core answers (error_answer's), sent. */
static int send_error(conn *c, request_line *rl, const route *r, int status, const char *message, const char *extra)
{
    size_t size = strlen(message) * 6 + (extra ? strlen(extra) : 0) + 4096, head_len; /* escaped at worst */
    char *answer = malloc(size);
    int n = answer ? error_answer(rl, r ? r->module_name : NULL, r ? r->pattern : NULL, status, message, extra,
                                  answer, size, &head_len) : -1;
    int rc = -1;
    if (n >= 0) {
        rl->status = status;
        rl->sent = rl->head ? 0 : (size_t)n - head_len;
        rc = send_text(c->fd, answer, rl->head ? head_len : (size_t)n);
    }
    free(answer);
    return rc;
}

int hp_rt_error_answer(int minor, int status, const char *message, const char *module, const char *route,
                       const char *request_id, const char *extra, char *out, size_t size)
{
    request_line rl = {.minor = minor, .keep = 0};
    snprintf(rl.request_id, sizeof rl.request_id, "%s", request_id);
    size_t head_len;
    return error_answer(&rl, module, route, status, message, extra, out, size, &head_len);
}

/* -- streamed responses (hp_res_stream) --------------------------------------- */

static __thread conn *stream_conn;
static __thread request_line *stream_line;
static __thread int stream_broken;

static int stream_part(int first, int status, const char *headers, size_t headers_len, const char *data, size_t len)
{
    if (stream_broken)
        return -1;
    if (first) {
        char head[16384];
        stream_line->status = status;
        int n = format_head(head, sizeof head, stream_line, status, headers, headers_len,
                            "Transfer-Encoding: chunked\r\n", -1);
        if (n < 0 || send_text(stream_conn->fd, head, (size_t)n))
            return stream_broken = 1, -1;
        return 0;
    }
    if (!len)
        return 0;
    char size[32];
    int n = snprintf(size, sizeof size, "%zx\r\n", len);
    struct iovec iov[3] = {{size, (size_t)n}, {(void *)data, len}, {"\r\n", 2}};
    if (send_all(stream_conn->fd, iov, 3))
        return stream_broken = 1, -1;
    stream_line->sent += len;
    return 0;
}

/* -- one request ------------------------------------------------------------ */

static int percent_decode(const char *in, size_t n, char *out, size_t *out_len)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (in[i] == '%' && i + 2 < n && isxdigit((unsigned char)in[i + 1]) && isxdigit((unsigned char)in[i + 2])) {
            char hex[3] = {in[i + 1], in[i + 2], 0};
            out[o++] = (char)strtol(hex, NULL, 16);
            i += 2;
        } else {
            out[o++] = in[i];
        }
        if (out[o - 1] == 0)
            return -1;
    }
    *out_len = o;
    return 0;
}

/* Whether a request head ends a line with a bare LF: both paths refuse it
 * (RFC 9112 2.2 lets a server accept it; one answer everywhere matters more). */
static int bare_lf(const char *head, size_t len)
{
    for (const char *p = memchr(head, '\n', len); p; p = memchr(p + 1, '\n', len - (size_t)(p + 1 - head)))
        if (p == head || p[-1] != '\r')
            return 1;
    return 0;
}

static int header_is(const struct phr_header *h, const char *name)
{
    return h->name_len == strlen(name) && !strncasecmp(h->name, name, h->name_len);
}

/* Whether a Transfer-Encoding list ends with chunked, after other codings
 * ("gzip, chunked"), and names it only there. */
static int last_is_chunked(const char *value, size_t len)
{
    while (len && (value[len - 1] == ' ' || value[len - 1] == '\t'))
        len--;
    if (len <= 7 || strncasecmp(value + len - 7, "chunked", 7))
        return 0;
    size_t i = len - 7;
    while (i && (value[i - 1] == ' ' || value[i - 1] == '\t'))
        i--;
    if (!i || value[i - 1] != ',')
        return 0;
    for (size_t k = 0; k + 7 <= i; k++)
        if (!strncasecmp(value + k, "chunked", 7))
            return 0;
    return 1;
}

static int contains_token(const char *value, size_t len, const char *token)
{
    size_t t = strlen(token);
    for (size_t i = 0; i + t <= len; i++)
        if (!strncasecmp(value + i, token, t))
            return 1;
    return 0;
}

/* Under hotplate dev --sanitize: the report AddressSanitizer wrote as the
 * call crashed (this process's own file), taken; NULL if none. */
static char *take_sanitizer_report(void)
{
    if (!S.cfg.sanitize_dir[0])
        return NULL;
    char path[sizeof S.cfg.sanitize_dir + 32];
    snprintf(path, sizeof path, "%s/sanitizer.%d", S.cfg.sanitize_dir, (int)getpid());
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    size_t cap = 65536, len = 0;
    char *text = malloc(cap);
    ssize_t n;
    while (text && len + 1 < cap && (n = read(fd, text + len, cap - 1 - len)) > 0)
        len += (size_t)n;
    close(fd);
    unlink(path);
    if (text)
        text[len] = 0;
    return text;
}

/* report: the sanitizer's, given to Python (which logs it). */
static void fault_event(const route *r, int result, int sig, const char *request_id, int streamed, char *report)
{
    hp_rt_event ev = {.kind = HP_RT_EV_FAULT, .route = r->index, .result = result, .signal = sig,
                      .streamed = streamed, .data = report, .data_len = report ? strlen(report) : 0};
    if (sig == SIGSYS)
        snprintf(ev.trapped, sizeof ev.trapped, "%s", hp_rt_trapped_call());
    snprintf(ev.request_id, sizeof ev.request_id, "%s", request_id);
    push_event(&ev);
}

/* Runs a request through its handler and writes the answer; 0, or -1 if
 * the connection must close. */
static int run_request(conn *c, slot *sl, const route *r, request_line *rl, const char *path, size_t plen,
                       const char *query, size_t qlen, const span *params, const struct phr_header *headers,
                       size_t nheaders, const char *body, size_t body_len)
{
    rt_field fields[MAX_SEGMENTS + MAX_HEADERS];
    for (int i = 0, k = 0; i < r->nparams; i++, k++) {
        while (r->segs[k].kind == SEG_LITERAL)
            k++;
        fields[i] = (rt_field){{r->segs[k].text, strlen(r->segs[k].text)}, {params[i].start, params[i].len}};
    }
    for (size_t i = 0; i < nheaders; i++)
        fields[r->nparams + i] = (rt_field){{headers[i].name, headers[i].name_len},
                                            {headers[i].value, headers[i].value_len}};
    rt_request_head request = {.method = {rl->method, rl->method_len}, .path = {path, plen}, .query = {query, qlen},
                            .client = {c->client, strlen(c->client)}, .id = {rl->request_id, strlen(rl->request_id)},
                            .route = {r->pattern, strlen(r->pattern)}, .params = fields, .nparams = (size_t)r->nparams,
                            .headers = fields + r->nparams, .nheaders = nheaders};
    hp_rt_result out;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    long long started = (long long)t0.tv_sec * 1000 + t0.tv_nsec / 1000000;
    sl->c = c;
    sl->route = r->index;
    sl->minor = rl->minor;
    snprintf(sl->request_id, sizeof sl->request_id, "%s", rl->request_id);
    atomic_store(&sl->deadline_ms, started + r->timeout_ms);
    atomic_store(&sl->started_ms, started);
    stream_conn = c;
    stream_line = rl;
    stream_broken = 0;
    int can_stream = rl->minor >= 1 && !rl->head;
    int rc = rt_dispatch(r->module, r->handler, &request, body, body_len, r->timeout_ms, can_stream, &out);
    atomic_store(&sl->deadline_ms, 0);
    atomic_store(&sl->started_ms, 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long long micros = (t1.tv_sec - t0.tv_sec) * 1000000LL + (t1.tv_nsec - t0.tv_nsec) / 1000;
    if (atomic_load(&sl->abandoned)) { /* the watchdog answered 504 for it, and this worker goes */
        hp_rt_release(&out);
        return -1;
    }
    int result = -1;
    if (out.streamed) {
        if (rc == HP_RT_OK && !stream_broken) {
            if (out.outbox_len)
                push_event(&(hp_rt_event){.kind = HP_RT_EV_PUBLISH, .data = memdup(out.outbox, out.outbox_len),
                                          .data_len = out.outbox_len});
            char size[32];
            int n = out.body_len ? snprintf(size, sizeof size, "%zx\r\n", out.body_len) : 0;
            struct iovec iov[3] = {{size, (size_t)n}, {(void *)out.body, out.body_len},
                                   {out.body_len ? "\r\n0\r\n\r\n" : "0\r\n\r\n", out.body_len ? 7 : 5}};
            rl->sent += out.body_len;
            result = send_all(c->fd, iov, 3) ? -1 : 0;
        }
        if (rc != HP_RT_OK)
            fault_event(r, rc, out.signal, rl->request_id, 1, rc == HP_RT_CRASHED ? take_sanitizer_report() : NULL);
        count(r, rc == HP_RT_OK ? rl->status : 500, micros);
        hp_rt_release(&out);
        return rl->keep && result == 0 ? 0 : -1;
    }
    if (rc != HP_RT_OK) {
        char *report = rc == HP_RT_CRASHED ? take_sanitizer_report() : NULL;
        int sig = out.signal, status = rc == HP_RT_TIMED_OUT ? 504 : 500;
        hp_rt_release(&out);
        char *message = NULL;
        const char *h = r->handler_name;
        int n = -1;
        if (rc == HP_RT_HANDLER_ERROR)
            n = asprintf(&message, "handler %s failed", h);
        else if (rc == HP_RT_CRASHED && sig == SIGSYS)
            n = asprintf(&message, "handler %s crashed (SIGSYS: it called %s, which modules may not "
                         "(deploy.yaml `unconfined:` lifts the filter))", h, hp_rt_trapped_call());
        else if (rc == HP_RT_CRASHED)
            n = asprintf(&message, "handler %s crashed (SIG%s%s%s)", h, sigabbrev_np(sig) ? sigabbrev_np(sig) : "?",
                         report ? ", sanitizer report:\n" : "", report ? report : "");
        else if (rc == HP_RT_TIMED_OUT)
            n = asprintf(&message, "handler %s did not answer within %u ms", h, r->timeout_ms);
        result = send_error(c, rl, r, status, n < 0 ? "out of memory" : message, NULL);
        if (n >= 0)
            free(message);
        fault_event(r, rc, sig, rl->request_id, 0, report);
        count(r, status, micros);
        return result || !rl->keep ? -1 : 0;
    }
    if (out.outbox_len)
        push_event(&(hp_rt_event){.kind = HP_RT_EV_PUBLISH, .data = memdup(out.outbox, out.outbox_len),
                                  .data_len = out.outbox_len});
    int status = out.status;
    int no_body = status < 200 || status == 204 || status == 304 || rl->head;
    static __thread char head[16384];
    int hlen = format_head(head, sizeof head, rl, status, out.headers, out.headers_len, NULL,
                           status >= 200 && status != 204 ? (long long)out.body_len : -1);
    if (hlen < 0) {
        hp_rt_release(&out);
        result = send_error(c, rl, r, 500, "response headers too large (over 16 KiB)", NULL);
        count(r, 500, micros);
        return -1;
    }
    struct iovec iov[2] = {{head, (size_t)hlen}, {(void *)out.body, no_body ? 0 : out.body_len}};
    rl->status = status;
    rl->sent = no_body ? 0 : out.body_len;
    result = send_all(c->fd, iov, 2);
    hp_rt_release(&out);
    count(r, status, micros);
    return result || !rl->keep ? -1 : 0;
}

/* A request id of this worker's own: PID-cN in hex (no printf: every
 * request without an X-Request-Id gets one). */
static void new_request_id(char *out, size_t size)
{
    unsigned long long n = atomic_fetch_add(&S.ids, 1) + 1;
    char hex[24];
    int i = sizeof hex;
    do
        hex[--i] = "0123456789abcdef"[n & 15];
    while (n >>= 4);
    out_buf o = {out, out + size - 1, 0};
    put_str(&o, S.pid_hex);
    put(&o, "-c", 2);
    put(&o, hex + i, sizeof hex - (size_t)i);
    *o.p = 0;
}

/* What serving a connection's buffer ends with; its driver (the epoll
 * loop, or a Python thread in hp_rt_serve_conn) carries it out. */
enum outcome {
    WAIT,   /* for more of a request, until c->deadline_ms */
    IDLE,   /* every request answered: wait for the next */
    CLOSE,  /* close the connection */
    PYTHON  /* a request that is not a module route: the connection and its bytes go to Python */
};

/* Answers a request no route takes as it is (405, 308) and closes: its
 * body, if any, is not read. */
static enum outcome refuse(conn *c, request_line *rl, const route *r, int status, const char *message,
                           const char *extra)
{
    rl->keep = 0;
    send_error(c, rl, r, status, message, extra);
    access_log(c, rl);
    return CLOSE;
}

/* Hands a WebSocket handshake to Python with the route C's table matched
 * and its parameters, so that Python matches nothing again. */
static enum outcome socket_handshake(conn *c, const route *rt, const span *params)
{
    size_t n = 0;
    for (int i = 0, k = 0; i < rt->nparams; i++, k++) {
        while (rt->segs[k].kind == SEG_LITERAL)
            k++;
        n += strlen(rt->segs[k].text) + params[i].len + 2;
    }
    char *out = malloc(n ? n : 1), *p = out;
    if (!out)
        return CLOSE;
    for (int i = 0, k = 0; i < rt->nparams; i++, k++) {
        while (rt->segs[k].kind == SEG_LITERAL)
            k++;
        size_t name = strlen(rt->segs[k].text);
        memcpy(p, rt->segs[k].text, name + 1);
        memcpy(p + name + 1, params[i].start, params[i].len);
        p[name + 1 + params[i].len] = 0;
        p += name + params[i].len + 2;
    }
    free(c->socket_params);
    c->socket_route = rt->index, c->socket_params = out, c->socket_params_len = n;
    return PYTHON;
}

/* Serves every whole request in the buffer. */
static enum outcome serve_buffer(conn *c, slot *sl, int eof)
{
    static __thread char path[65536];
    for (;;) {
        if (c->len == 0) {
            if (eof)
                return CLOSE;
            long long wait = atomic_load(&S.draining) ? S.cfg.linger_ms : S.cfg.keepalive_ms;
            atomic_store(&c->deadline_ms, now_ms() + wait);
            return IDLE;
        }
        if (!c->head_len && !c->head_started_ms)
            c->head_started_ms = now_ms();
        const char *method, *target;
        size_t method_len, target_len, nheaders = MAX_HEADERS;
        struct phr_header headers[MAX_HEADERS];
        int minor;
        int r = phr_parse_request(c->buf, c->head_len ? c->head_len : c->len, &method, &method_len, &target,
                                  &target_len, &minor, headers, &nheaders, 0);
        if (r == -2) {
            if (c->len >= S.cfg.head_limit || eof)
                return eof ? CLOSE : PYTHON; /* gunicorn answers 431 */
            atomic_store(&c->deadline_ms, c->head_started_ms + S.cfg.header_timeout_ms);
            return WAIT;
        }
        if (r < 0 || bare_lf(c->buf, (size_t)r))
            return PYTHON; /* gunicorn answers 400 */
        c->head_len = (size_t)r;
        request_line rl = {.method = method, .method_len = method_len, .target = target, .target_len = target_len,
                           .minor = minor, .head = method_len == 4 && !memcmp(method, "HEAD", 4)};
        const char *q = memchr(target, '?', target_len);
        size_t raw_path_len = q ? (size_t)(q - target) : target_len, plen;
        const char *query = q ? q + 1 : "";
        size_t qlen = q ? target_len - raw_path_len - 1 : 0;
        if (target[0] != '/' || raw_path_len >= sizeof path || percent_decode(target, raw_path_len, path, &plen))
            return PYTHON;
        span params[MAX_SEGMENTS];
        char allow[160], location[8192];
        const route *rt = memmem(path, plen, "//", 2) ? NULL
                          : find_route(method, method_len, path, plen, params, allow, sizeof allow);
        int moved = !rt && !allow[0] &&
                    !redirect_for(method, method_len, target, raw_path_len, query, qlen, location, sizeof location);
        if (!rt && !allow[0] && !moved)
            return PYTHON; /* not a module route */
        if (rt && !rt->handler && !rt->unavailable)
            return socket_handshake(c, rt, params); /* a WebSocket route's */
        if (method_len + target_len + 10 > S.cfg.max_request_line || nheaders > S.cfg.max_header_fields)
            return PYTHON; /* gunicorn's limits, and its answers */
        long long length = -1;
        int chunked = 0, expect = 0, close_asked = 0, keep_asked = 0, refused = 0;
        const struct phr_header *coded = NULL; /* codings before chunked, which none is supported */
        const char *given_id = NULL;
        size_t given_id_len = 0;
        for (size_t i = 0; i < nheaders; i++) {
            const struct phr_header *h = &headers[i];
            if (!h->name || h->name_len + h->value_len + 2 > S.cfg.max_header_size) {
                refused = 1; /* a folded line, or a field over gunicorn's limit */
                continue;
            }
            if (header_is(h, "Content-Length")) {
                if (length >= 0 || h->value_len == 0 || h->value_len > 18)
                    return PYTHON;
                length = 0;
                for (size_t k = 0; k < h->value_len; k++) {
                    if (!isdigit((unsigned char)h->value[k]))
                        return PYTHON;
                    length = length * 10 + (h->value[k] - '0');
                }
            } else if (header_is(h, "Transfer-Encoding")) {
                if (chunked)
                    return PYTHON; /* repeated: gunicorn answers 400 */
                if (!(h->value_len == 7 && !strncasecmp(h->value, "chunked", 7))) {
                    if (!last_is_chunked(h->value, h->value_len))
                        return PYTHON; /* chunked not last, or none: gunicorn answers 400 (RFC 9112 6.1) */
                    coded = h;
                }
                chunked = 1;
            } else if (header_is(h, "Expect")) {
                expect = h->value_len == 12 && !strncasecmp(h->value, "100-continue", 12);
            } else if (header_is(h, "Connection")) {
                close_asked |= contains_token(h->value, h->value_len, "close");
                keep_asked |= contains_token(h->value, h->value_len, "keep-alive");
            } else if (header_is(h, "X-Request-Id")) {
                given_id = h->value, given_id_len = h->value_len;
            } else if (header_is(h, "Referer")) {
                rl.referer = h->value, rl.referer_len = h->value_len;
            } else if (header_is(h, "User-Agent")) {
                rl.agent = h->value, rl.agent_len = h->value_len;
            }
        }
        if (refused || (chunked && (length >= 0 || minor == 0)) || minor > 1)
            return PYTHON; /* gunicorn refuses these with their reason */
        rl.keep = (minor == 1 ? !close_asked : keep_asked) && !atomic_load(&S.draining);
        int id_ok = given_id && given_id_len < sizeof rl.request_id;
        for (size_t k = 0; id_ok && k < given_id_len; k++)
            id_ok = given_id[k] > ' ' && given_id[k] < 127; /* it goes into logs and JSON as it is */
        if (id_ok)
            snprintf(rl.request_id, sizeof rl.request_id, "%.*s", (int)given_id_len, given_id);
        else
            new_request_id(rl.request_id, sizeof rl.request_id);
        if (moved) {
            char field[sizeof location + 16];
            snprintf(field, sizeof field, "Location: %s\r\n", location);
            return refuse(c, &rl, NULL, 308, "this path has moved: add its slash, or merge its slashes", field);
        }
        if (!rt) {
            char methods[sizeof allow * 2], field[sizeof methods + 16], message[sizeof methods + 80];
            size_t o = 0;
            for (const char *p = allow + 1; *p; p++) /* ",GET,POST," reads "GET, POST" */
                if (*p != ',')
                    methods[o++] = *p;
                else if (p[1])
                    methods[o++] = ',', methods[o++] = ' ';
            methods[o] = 0;
            snprintf(field, sizeof field, "Allow: %s\r\n", methods);
            snprintf(message, sizeof message, "method %.*s is not allowed here; this path takes %s",
                     (int)(method_len > 32 ? 32 : method_len), method, methods);
            return refuse(c, &rl, NULL, 405, message, field);
        }
        if (coded) {
            char message[512];
            snprintf(message, sizeof message, "transfer coding %.*s is not supported; send chunked alone",
                     (int)(coded->value_len > 256 ? 256 : coded->value_len), coded->value);
            count(rt, 501, 0);
            return refuse(c, &rl, rt, 501, message, NULL);
        }
        if (rt->unavailable) {
            char message[1024];
            snprintf(message, sizeof message, "module %s is not loaded: %s", rt->module_name, rt->unavailable);
            rl.keep = 0;
            send_error(c, &rl, rt, 503, message, NULL);
            count(rt, 503, 0);
            access_log(c, &rl);
            return CLOSE;
        }
        if (length > (long long)S.cfg.max_body) {
            rl.keep = 0; /* a refused body is not read: the connection cannot go on */
            send_error(c, &rl, rt, 413, "request body too large", NULL);
            count(rt, 413, 0);
            access_log(c, &rl);
            return CLOSE;
        }
        /* the body */
        const char *body;
        size_t body_len, end;
        int whole = 0;
        if (chunked) {
            if (!c->chunked) {
                c->chunked = 1;
                memset(&c->dec, 0, sizeof c->dec);
                c->dec.consume_trailer = 1;
                c->dec_end = c->head_len;
            }
            ssize_t left = -2;
            if (c->len > c->dec_end) {
                size_t size = c->len - c->dec_end;
                left = phr_decode_chunked(&c->dec, c->buf + c->dec_end, &size);
                c->dec_end += size;
                c->len = left >= 0 ? c->dec_end + (size_t)left : c->dec_end;
            }
            if (left == -1 || c->dec_end - c->head_len > S.cfg.max_body ||
                c->dec.bytes_left_in_chunk > S.cfg.max_body) { /* a chunk that says it is too large: at once */
                rl.keep = 0;
                send_error(c, &rl, rt, left == -1 ? 400 : 413,
                           left == -1 ? "malformed chunked body" : "request body too large", NULL);
                count(rt, left == -1 ? 400 : 413, 0);
                access_log(c, &rl);
                return CLOSE;
            }
            whole = left >= 0;
            body = c->buf + c->head_len;
            body_len = c->dec_end - c->head_len;
            end = c->dec_end;
        } else {
            body_len = length > 0 ? (size_t)length : 0;
            whole = c->len >= c->head_len + body_len;
            body = c->buf + c->head_len;
            end = c->head_len + body_len;
        }
        if (!whole) {
            if (atomic_load(&c->expired) || eof) {
                if (atomic_load(&c->expired)) {
                    rl.keep = 0;
                    send_error(c, &rl, rt, 408, "the request body did not arrive in time", NULL);
                    count(rt, 408, 0);
                    access_log(c, &rl);
                }
                return CLOSE;
            }
            if (expect && minor == 1 && !c->continued) {
                c->continued = 1;
                if (send_text(c->fd, "HTTP/1.1 100 Continue\r\n\r\n", 25))
                    return CLOSE;
            }
            if (grow(c, S.cfg.head_limit + S.cfg.max_body + S.cfg.max_body / 4 + 65536) && c->len == c->cap)
                return CLOSE;
            atomic_store(&c->deadline_ms, now_ms() + S.cfg.body_timeout_ms);
            return WAIT;
        }
        atomic_store(&c->deadline_ms, 0);
        int rc = run_request(c, sl, rt, &rl, path, plen, query, qlen, params, headers, nheaders, body, body_len);
        access_log(c, &rl);
        if (atomic_load(&sl->abandoned)) {
            atomic_store(&sl->abandoned, 0);
            return CLOSE;
        }
        if (rc)
            return CLOSE;
        memmove(c->buf, c->buf + end, c->len - end);
        c->len -= end;
        c->head_len = 0;
        c->chunked = 0;
        c->continued = 0;
        c->head_started_ms = 0;
    }
}

/* Reads what the client sent and is there (without waiting); 1 at its end.
 * A read that leaves room in the buffer took all there was: no second
 * read only to hear EAGAIN (more that arrives re-arms the connection). */
static int read_available(conn *c)
{
    size_t limit = S.cfg.head_limit + (c->head_len ? S.cfg.max_body + S.cfg.max_body / 4 + 65536 : 0);
    for (;;) {
        if (c->len == c->cap && grow(c, limit))
            return 0; /* full: serve what is there (a head this long goes to Python) */
        size_t room = c->cap - c->len;
        ssize_t n = recv(c->fd, c->buf + c->len, room, MSG_DONTWAIT);
        if (n > 0) {
            c->len += (size_t)n;
            if ((size_t)n < room)
                return 0;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        return n == 0 || errno != EAGAIN;
    }
}

/* The fast path's driver: reads, serves, and carries out the outcome. */
static void on_readable(conn *c, slot *sl)
{
    switch (serve_buffer(c, sl, read_available(c))) {
    case WAIT:
    case IDLE:
        arm(c, EPOLL_CTL_MOD);
        break;
    case CLOSE:
        close_conn(c);
        break;
    case PYTHON:
        hand_off(c);
        break;
    }
}

static void size_base(long long now);

static void accept_all(int listener)
{
    for (;;) {
        struct sockaddr_storage peer;
        socklen_t plen = sizeof peer;
        int fd = accept4(listener, (struct sockaddr *)&peer, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            break;
        conn *c = calloc(1, sizeof *c);
        if (!c) {
            close(fd);
            continue;
        }
        c->fd = fd;
        c->peer = peer;
        c->socket_route = -1;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (peer.ss_family == AF_INET) {
            struct sockaddr_in *a = (struct sockaddr_in *)&peer;
            inet_ntop(AF_INET, &a->sin_addr, c->client, sizeof c->client);
            c->port = ntohs(a->sin_port);
        } else if (peer.ss_family == AF_INET6) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&peer;
            inet_ntop(AF_INET6, &a->sin6_addr, c->client, sizeof c->client);
            c->port = ntohs(a->sin6_port);
        }
        atomic_store(&c->deadline_ms, now_ms() + S.cfg.header_timeout_ms);
        pthread_mutex_lock(&S.lock);
        c->next = S.conns;
        if (S.conns)
            S.conns->prev = c;
        S.conns = c;
        S.nconns++;
        pthread_mutex_unlock(&S.lock);
        arm(c, EPOLL_CTL_ADD);
        if (atomic_load(&S.mine)) {
            size_base(now_ms());
            break; /* one a wake: the other workers, woken too, take the next ones */
        }
    }
}

static void arm_listeners(int op)
{
    for (size_t i = 0; i < S.nlisteners; i++) {
        struct epoll_event ev = {.events = EPOLLIN | EPOLLONESHOT, .data.ptr = (void *)&S.listeners[i]};
        epoll_ctl(S.epfd, op, S.listeners[i], &ev);
    }
}

static void *loop(void *arg)
{
    slot *sl = arg;
    sigset_t all;
    sigfillset(&all);
    sigdelset(&all, SIGSEGV), sigdelset(&all, SIGBUS), sigdelset(&all, SIGFPE), sigdelset(&all, SIGILL);
    sigdelset(&all, SIGSYS), sigdelset(&all, SIGABRT), sigdelset(&all, SIGRTMIN + 1);
    pthread_sigmask(SIG_BLOCK, &all, NULL); /* gunicorn's signals are the main thread's */
    rt_set_thread_stream_sink(stream_part);
    int index = (int)(sl - S.slots);
    while (!atomic_load(&S.stopping)) {
        if (index >= atomic_load(&S.active)) { /* parked: the set has threads enough */
            pthread_mutex_lock(&S.park);
            while (index >= atomic_load(&S.active))
                pthread_cond_wait(&S.unpark, &S.park);
            pthread_mutex_unlock(&S.park);
            continue;
        }
        struct epoll_event ev;
        int n = epoll_wait(S.epfd, &ev, 1, 200);
        if (n <= 0)
            continue;
        int *listener = ev.data.ptr;
        if (listener >= S.listeners && listener < S.listeners + S.nlisteners) {
            accept_all(*listener);
            if (atomic_load(&S.accepting)) {
                struct epoll_event again = {.events = EPOLLIN | EPOLLONESHOT, .data.ptr = listener};
                epoll_ctl(S.epfd, EPOLL_CTL_MOD, *listener, &again);
            }
            continue;
        }
        on_readable(ev.data.ptr, sl);
    }
    return NULL;
}

/* The worker's share of the CPUs is its share of the server's connections
 * (at least one CPU): two workers of two CPUs take one each while their
 * connections are even, and one takes both while it holds them all. Sized
 * by the sweeper, and as connections are accepted (a burst of them must
 * not wait a sweep for the threads to serve it). A draining worker leaves
 * the page; an entry not written for a second is a worker gone. */
/* Written within the last second (compared without overflow: the page
 * may hold anything). */
static int fresh(long long seen_ms, long long now)
{
    return seen_ms <= now && seen_ms > now - 1000;
}

static void size_base(long long now)
{
    share *entry = atomic_load(&S.mine);
    if (!entry)
        return;
    if (atomic_load(&S.draining)) {
        if (atomic_exchange(&S.mine, NULL))
            atomic_store(&entry->pid, 0);
        return;
    }
    pthread_mutex_lock(&S.lock);
    int mine = (int)S.nconns;
    pthread_mutex_unlock(&S.lock);
    atomic_store(&entry->conns, mine);
    atomic_store(&entry->seen_ms, now);
    long long total = 0;
    for (int i = 0; i < SHARES; i++) {
        int conns = atomic_load(&S.shares[i].conns);
        if (atomic_load(&S.shares[i].pid) && fresh(atomic_load(&S.shares[i].seen_ms), now) && conns > 0)
            total += conns;
    }
    int base = total > 0 ? (int)((S.ncpus * (long long)mine + total / 2) / total) : 1; /* (the nearest) */
    if (base > S.nthreads)
        base = S.nthreads;
    atomic_store(&S.base_threads, base < 1 ? 1 : base);
    if (atomic_load(&S.active) < base) {
        pthread_mutex_lock(&S.park);
        if (atomic_load(&S.active) < base)
            atomic_store(&S.active, base);
        pthread_cond_broadcast(&S.unpark);
        pthread_mutex_unlock(&S.park);
    }
}

/* Takes an entry on the shared page: a free one, or one not written for
 * a second (its worker is gone). No page, or no entry: the worker sizes
 * itself by the number of workers alone. */
static void join_shares(int fd)
{
    struct stat st;
    if (fd < 0 || S.cfg.workers < 2 || !S.nlisteners || fstat(fd, &st) || st.st_size < (off_t)(SHARES * sizeof(share)))
        return; /* (a page shorter than its entries would fault where they lie past its end) */
    void *page = mmap(NULL, SHARES * sizeof(share), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (page == MAP_FAILED)
        return;
    S.shares = page;
    long long now = now_ms();
    for (int i = 0; i < SHARES && !S.mine; i++) {
        int pid = atomic_load(&S.shares[i].pid);
        if ((pid == 0 || !fresh(atomic_load(&S.shares[i].seen_ms), now)) &&
            atomic_compare_exchange_strong(&S.shares[i].pid, &pid, (int)getpid())) {
            atomic_store(&S.shares[i].conns, 0);
            atomic_store(&S.shares[i].seen_ms, now);
            S.mine = &S.shares[i];
        }
    }
}

/* One more thread on the epoll set while all of them are in long calls;
 * one less once calls have been short for a second. */
static void adapt_threads(long long now)
{
    int active = atomic_load(&S.active), long_calls = 0;
    for (int i = 0; i < active; i++) {
        long long started = atomic_load(&S.slots[i].started_ms);
        long_calls += started && now - started >= SWEEP_MS;
    }
    if (long_calls >= active && active < S.nthreads) {
        pthread_mutex_lock(&S.park);
        atomic_store(&S.active, active + 1);
        pthread_cond_broadcast(&S.unpark);
        pthread_mutex_unlock(&S.park);
        S.calm_since = 0;
    } else if (active > atomic_load(&S.base_threads) && long_calls + 1 < active) {
        if (!S.calm_since)
            S.calm_since = now;
        else if (now - S.calm_since >= 1000) {
            atomic_store(&S.active, active - 1); /* the last one parks once its wait or call ends */
            S.calm_since = now;
        }
    } else {
        S.calm_since = 0;
    }
}

/* Shuts down connections whose head, body or keep-alive wait is over:
 * their thread then reads the end and closes them (or answers 408). */
static void *sweep(void *arg)
{
    (void)arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    while (!atomic_load(&S.stopping)) {
        struct timespec ts = {0, SWEEP_MS * 1000000L};
        nanosleep(&ts, NULL);
        long long now = now_ms();
        size_base(now);
        adapt_threads(now);
        int draining = atomic_load(&S.draining);
        pthread_mutex_lock(&S.lock);
        for (conn *c = S.conns; c; c = c->next) {
            long long d = atomic_load(&c->deadline_ms);
            /* draining: no head yet, or only part of one (a slow client
             * must not hold a retiring worker): closed after the linger */
            if (draining && d && !c->head_len && d > now + S.cfg.linger_ms)
                atomic_store(&c->deadline_ms, d = now + S.cfg.linger_ms);
            if (d && now > d) {
                atomic_store(&c->deadline_ms, 0);
                atomic_store(&c->expired, 1);
                shutdown(c->fd, c->head_len ? SHUT_RD : SHUT_RDWR);
            }
        }
        pthread_mutex_unlock(&S.lock);
    }
    return NULL;
}

int hp_rt_serve_start(const int *listeners, size_t nlisteners, const hp_rt_serve_config *config,
                      const double *buckets)
{
    if (nlisteners > sizeof S.listeners / sizeof *S.listeners || config->threads < (nlisteners ? 1 : 0) ||
        config->threads > MAX_THREADS)
        return -1;
    S.cfg = *config;
    memcpy(S.buckets, buckets, sizeof S.buckets);
    snprintf(S.pid_hex, sizeof S.pid_hex, "%x", (unsigned)getpid());
    S.epfd = epoll_create1(EPOLL_CLOEXEC);
    S.notify_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (S.epfd < 0 || S.notify_fd < 0)
        return -1;
    memcpy(S.listeners, listeners, nlisteners * sizeof *listeners);
    S.nlisteners = nlisteners;
    cpu_set_t cpus;
    int ncpus = sched_getaffinity(0, sizeof cpus, &cpus) ? 1 : CPU_COUNT(&cpus);
    int workers = config->workers > 1 ? config->workers : 1, share = (ncpus + workers - 1) / workers;
    S.ncpus = ncpus;
    S.base_threads = config->threads < share ? config->threads : share;
    join_shares(config->share_fd);
    atomic_store(&S.active, S.base_threads);
    for (int i = 0; nlisteners && i < config->threads; i++) {
        S.slots[i].busy = 1;
        if (pthread_create(&S.threads[i], NULL, loop, &S.slots[i]))
            return -1;
        S.nthreads++;
    }
    if (nlisteners && pthread_create(&S.sweeper, NULL, sweep, NULL))
        return -1;
    return S.notify_fd;
}

int hp_rt_serve_conn(int fd, const char *data, size_t len, const char *client, int port, hp_rt_event *out)
{
    slot *sl = NULL;
    for (int i = 0; i < MAX_THREADS && !sl; i++)
        if (!atomic_exchange(&S.slots[i].busy, 1))
            sl = &S.slots[i];
    conn c = {.fd = fd, .port = port, .socket_route = -1};
    snprintf(c.client, sizeof c.client, "%s", client);
    while (c.cap < len && !grow(&c, S.cfg.head_limit + S.cfg.max_body + S.cfg.max_body / 4 + 65536))
        ;
    enum outcome o = PYTHON;
    int served = sl && c.cap >= len;
    if (served) {
        sl->driven = 1;
        if (len)
            memcpy(c.buf, data, len);
        c.len = len;
        int flags = fcntl(fd, F_GETFL);
        fcntl(fd, F_SETFL, flags | O_NONBLOCK); /* writes to a slow reader wait in poll, bounded */
        rt_set_thread_stream_sink(stream_part);
        atomic_store(&c.deadline_ms, now_ms() + S.cfg.header_timeout_ms);
        int eof = 0;
        for (;;) {
            if (!eof)
                eof = read_available(&c);
            o = serve_buffer(&c, sl, eof);
            if (o != WAIT)
                break;
            struct pollfd p = {.fd = fd, .events = POLLIN};
            long long left = atomic_load(&c.deadline_ms) - now_ms();
            if (left <= 0 || poll(&p, 1, (int)left) == 0)
                atomic_store(&c.expired, 1), eof = 1; /* late: serve_buffer closes, or answers 408 */
        }
        fcntl(fd, F_SETFL, flags);
    }
    if (sl)
        atomic_store(&sl->busy, 0);
    *out = (hp_rt_event){.kind = HP_RT_EV_CONNECTION, .fd = fd, .route = c.socket_route,
                         .params = c.socket_params, .params_len = c.socket_params_len};
    if (o == PYTHON && served) {
        out->data = c.buf, out->data_len = c.len;
        return HP_RT_CONN_PYTHON;
    }
    free(c.socket_params);
    out->params = NULL, out->route = -1;
    if (o == PYTHON) { /* no slot, or no memory: Python serves it as it came */
        free(c.buf);
        out->data = memdup(data, len), out->data_len = len;
        return out->data || !len ? HP_RT_CONN_PYTHON : HP_RT_CONN_CLOSE;
    }
    free(c.buf);
    return o == IDLE ? HP_RT_CONN_IDLE : HP_RT_CONN_CLOSE;
}

void hp_rt_serve_accept(int enabled)
{
    if (atomic_exchange(&S.accepting, enabled) != enabled)
        arm_listeners(enabled ? EPOLL_CTL_ADD : EPOLL_CTL_DEL);
}

void hp_rt_serve_drain(void)
{
    hp_rt_serve_accept(0);
    atomic_store(&S.draining, 1);
    check_drained();
}

size_t hp_rt_serve_wait(unsigned timeout_ms)
{
    long long until = now_ms() + timeout_ms;
    for (;;) {
        pthread_mutex_lock(&S.lock);
        size_t open = S.nconns - atomic_load(&S.abandoned);
        pthread_mutex_unlock(&S.lock);
        if (open == 0 || now_ms() >= until)
            return open;
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

unsigned long long hp_rt_serve_stats(int index, hp_rt_route_stats *out)
{
    if (index < 0 || index >= MAX_ROUTES)
        return 0;
    route_stats *st = &S.stats[index];
    unsigned long long total = 0;
    for (int i = 0; i < 5; i++)
        total += out->classes[i] = atomic_exchange(&st->classes[i], 0);
    for (int i = 0; i <= HP_RT_BUCKETS; i++)
        out->buckets[i] = atomic_exchange(&st->buckets[i], 0);
    out->seconds = (double)atomic_exchange(&st->micros, 0) / 1e6;
    return total;
}

unsigned long long hp_rt_serve_requests(void)
{
    return atomic_load(&S.requests);
}

int hp_rt_serve_abandon_stuck(unsigned stuck_after_ms, hp_rt_event *out)
{
    long long now = now_ms();
    for (int i = 0; i < MAX_THREADS; i++) {
        slot *sl = &S.slots[i];
        long long d = atomic_load(&sl->deadline_ms);
        if (!d || now <= d + stuck_after_ms || atomic_exchange(&sl->abandoned, 1))
            continue;
        const route *r = NULL;
        for (int k = 0; k < S.nroutes; k++)
            if (S.routes[k].index == sl->route)
                r = &S.routes[k];
        request_line rl = {.minor = sl->minor, .keep = 0};
        snprintf(rl.request_id, sizeof rl.request_id, "%s", sl->request_id);
        char message[256];
        snprintf(message, sizeof message, "handler %s did not answer within %u ms",
                 r ? r->handler_name : "?", r ? r->timeout_ms : 0);
        send_error(sl->c, &rl, r, 504, message, NULL);
        shutdown(sl->c->fd, SHUT_RDWR);
        if (!sl->driven) { /* a connection of C's own: its drain no longer waits for it */
            atomic_fetch_add(&S.abandoned, 1);
            check_drained();
        }
        if (r)
            count(r, 504, (long long)(now - d + r->timeout_ms) * 1000);
        *out = (hp_rt_event){.kind = HP_RT_EV_FAULT, .route = sl->route, .result = HP_RT_TIMED_OUT,
                             .driven = sl->driven};
        snprintf(out->request_id, sizeof out->request_id, "%s", sl->request_id);
        return 1;
    }
    return 0;
}
