/* The shared key-value store (hp_kv_*): one per server, seen by every
 * worker of every generation, so what a module keeps there survives
 * deploys. This file checks the module's arguments, copies them into the
 * runtime's memory and calls the backend chosen at start (LMDB on one host,
 * Redis for a fleet). The copy comes first so that a bad pointer from a
 * module faults here, where the crash guard turns it into a 500, and never
 * inside a backend holding a lock other workers wait for. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store.h"

static const rt_store_backend *backend;
static char open_error[512] = "no store was opened in this process";
static __thread char last_error[256];

int rt_store_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return HP_KV_ERROR;
}

int64_t rt_store_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int hp_rt_store_open(const char *url, char *err, size_t errlen)
{
    if (!strncmp(url, "lmdb:", 5))
        backend = rt_store_lmdb_open(url + 5, err, errlen);
    else if (!strncmp(url, "redis://", 8))
        backend = rt_store_redis_open(url + 8, err, errlen);
    else
        snprintf(err, errlen, "unknown store %s: use lmdb:PATH or redis://HOST:PORT/DB", url);
    if (!backend)
        snprintf(open_error, sizeof open_error, "the store is not open: %s", err);
    return backend ? 0 : -1;
}

/* Checks the key, copies it, and clears the thread's last error. */
static char *take_key(const char *key)
{
    last_error[0] = 0;
    if (!backend) {
        rt_store_fail("%s", open_error);
        return NULL;
    }
    if (!key) {
        rt_store_fail("key is NULL");
        return NULL;
    }
    size_t n = strnlen(key, HP_KV_MAX_KEY + 1);
    if (n == 0 || n > HP_KV_MAX_KEY) {
        rt_store_fail("a key is 1 to %d bytes", HP_KV_MAX_KEY);
        return NULL;
    }
    char *copy = malloc(n + 1);
    if (!copy)
        rt_store_fail("out of memory");
    else
        memcpy(copy, key, n + 1);
    return copy;
}

/* A copy of len bytes of the module's (NULL stays NULL). */
static int take_value(const void *value, size_t len, char **copy)
{
    *copy = NULL;
    if (!value)
        return HP_KV_OK;
    if (len > HP_KV_MAX_VALUE)
        return rt_store_fail("a value is at most %d bytes", HP_KV_MAX_VALUE);
    if (!(*copy = malloc(len ? len : 1)))
        return rt_store_fail("out of memory");
    memcpy(*copy, value, len);
    return HP_KV_OK;
}

int rt_api_kv_get(hp_request *req, const char *key, const void **value, size_t *len)
{
    char *k = take_key(key), *v = NULL;
    size_t n = 0;
    int rc = k ? backend->get(k, &v, &n) : HP_KV_ERROR;
    free(k);
    if (rc == HP_KV_OK) {
        /* one byte more, a NUL, so that text values read as C strings */
        char *out = rt_arena_alloc(&req->arena, n + 1);
        if (!out) {
            free(v);
            return rt_store_fail("out of memory");
        }
        memcpy(out, v, n);
        out[n] = 0;
        *value = out;
        *len = n;
    }
    free(v);
    return rc;
}

int rt_api_kv_set(const char *key, const void *value, size_t len, long ttl_ms)
{
    char *k = take_key(key), *v = NULL;
    int rc = !k ? HP_KV_ERROR : !value ? rt_store_fail("value is NULL (use hp_kv_delete)")
           : ttl_ms < 0 ? rt_store_fail("ttl_ms is negative") : take_value(value, len, &v);
    if (rc == HP_KV_OK)
        rc = backend->set(k, v, len, ttl_ms);
    free(k);
    free(v);
    return rc;
}

int rt_api_kv_delete(const char *key)
{
    char *k = take_key(key);
    int rc = k ? backend->del(k) : HP_KV_ERROR;
    free(k);
    return rc;
}

int rt_api_kv_incr(const char *key, long long delta, long long *out)
{
    char *k = take_key(key);
    long long result = 0;
    int rc = k ? backend->incr(k, delta, &result) : HP_KV_ERROR;
    free(k);
    if (rc == HP_KV_OK && out)
        *out = result;
    return rc;
}

int rt_api_kv_cas(const char *key, const void *expected, size_t elen, const void *value, size_t vlen, long ttl_ms)
{
    char *k = take_key(key), *e = NULL, *v = NULL;
    int rc = !k ? HP_KV_ERROR : ttl_ms < 0 ? rt_store_fail("ttl_ms is negative") : take_value(expected, elen, &e);
    if (rc == HP_KV_OK)
        rc = take_value(value, vlen, &v);
    if (rc == HP_KV_OK)
        rc = backend->cas(k, e, elen, v, vlen, ttl_ms);
    free(k);
    free(e);
    free(v);
    return rc;
}

const char *rt_api_kv_error(void)
{
    return last_error;
}

/* Parses a decimal counter as incr finds it; 0 if it is not one. */
int rt_store_parse_counter(const char *s, size_t len, long long *out)
{
    char buf[32];
    if (len == 0 || len >= sizeof buf)
        return 0;
    memcpy(buf, s, len);
    buf[len] = 0;
    char *end;
    errno = 0;
    *out = strtoll(buf, &end, 10);
    return !errno && *end == 0 && !(buf[0] == ' ' || buf[0] == '+');
}
