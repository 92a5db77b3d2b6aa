/* Internal to the runtime: the shared key-value store behind hp_kv_*
 * (store.c) and its backends (store_lmdb.c, store_redis.c).
 *
 * A backend sees validated input only: a NUL-terminated key of 1 to
 * HP_KV_MAX_KEY bytes, and values the runtime has already copied out of the
 * module's memory. Every call returns an HP_KV_* code; on HP_KV_ERROR it
 * has called rt_store_fail() with the reason. */
#ifndef HP_STORE_H
#define HP_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "runtime.h"

typedef struct {
    const char *name;
    /* *value is malloc()ed by the backend, the caller frees it */
    int (*get)(const char *key, char **value, size_t *len);
    /* ttl_ms 0: no expiry */
    int (*set)(const char *key, const void *value, size_t len, long ttl_ms);
    int (*del)(const char *key);
    int (*incr)(const char *key, long long delta, long long *out);
    /* expected NULL: the key must be absent; value NULL: delete */
    int (*cas)(const char *key, const void *expected, size_t elen, const void *value, size_t vlen, long ttl_ms);
} rt_store_backend;

/* Opens a backend on the part of the URL after its scheme; NULL with the
 * reason in err. */
const rt_store_backend *rt_store_lmdb_open(const char *spec, char *err, size_t errlen);
const rt_store_backend *rt_store_redis_open(const char *spec, char *err, size_t errlen);

/* Records why the current call failed (read back with hp_kv_error); returns HP_KV_ERROR. */
int rt_store_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Parses a counter as hp_kv_incr keeps it (decimal text); 0 if it is not one. */
int rt_store_parse_counter(const char *s, size_t len, long long *out);

/* The wall clock in milliseconds, for expiry times. */
int64_t rt_store_now_ms(void);

#endif
