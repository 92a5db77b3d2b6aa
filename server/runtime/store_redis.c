/* The store for a fleet: a Redis server shared by every host, through
 * hiredis. Each thread keeps its own connection (hiredis contexts are not
 * thread-safe), made on first use and made again after an error. Values
 * and counters are stored as Redis strings, so the two backends agree on
 * what hp_kv_incr finds; compare-and-set is one Lua script, atomic on the
 * server. */
#define _GNU_SOURCE
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"

static char host[256];
static int port = 6379, db;
static const struct timeval timeout = {.tv_sec = 2};
static __thread redisContext *conn;

/* ARGV: has_expected, expected, delete, value, ttl_ms */
static const char cas_script[] =
    "local cur = redis.call('GET', KEYS[1])\n"
    "if ARGV[1] == '1' then if cur ~= ARGV[2] then return 0 end elseif cur then return 0 end\n"
    "if ARGV[3] == '1' then redis.call('DEL', KEYS[1])\n"
    "elseif ARGV[5] ~= '0' then redis.call('SET', KEYS[1], ARGV[4], 'PX', ARGV[5])\n"
    "else redis.call('SET', KEYS[1], ARGV[4]) end\n"
    "return 1\n";

static redisContext *connection(void)
{
    if (conn)
        return conn;
    conn = redisConnectWithTimeout(host, port, timeout);
    if (!conn || conn->err) {
        rt_store_fail("redis %s:%d: %s", host, port, conn ? conn->errstr : "out of memory");
        redisFree(conn);
        return conn = NULL;
    }
    redisSetTimeout(conn, timeout);
    if (db) {
        redisReply *r = redisCommand(conn, "SELECT %d", db);
        int ok = r && r->type == REDIS_REPLY_STATUS;
        freeReplyObject(r);
        if (!ok) {
            rt_store_fail("redis %s:%d: cannot select database %d", host, port, db);
            redisFree(conn);
            return conn = NULL;
        }
    }
    return conn;
}

/* Runs one command; NULL (and the connection dropped) on an error. */
static redisReply *command(int argc, const char **argv, const size_t *lens)
{
    redisContext *c = connection();
    if (!c)
        return NULL;
    redisReply *r = redisCommandArgv(c, argc, argv, lens);
    if (!r) {
        rt_store_fail("redis %s:%d: %s", host, port, c->errstr);
        redisFree(conn);
        conn = NULL;
    } else if (r->type == REDIS_REPLY_ERROR) {
        rt_store_fail("redis: %s", r->str);
        freeReplyObject(r);
        r = NULL;
    }
    return r;
}

static int redis_get(const char *key, char **value, size_t *len)
{
    const char *argv[] = {"GET", key};
    size_t lens[] = {3, strlen(key)};
    redisReply *r = command(2, argv, lens);
    if (!r)
        return HP_KV_ERROR;
    int rc = HP_KV_NOT_FOUND;
    if (r->type == REDIS_REPLY_STRING) {
        rc = (*value = malloc(r->len ? r->len : 1)) ? HP_KV_OK : rt_store_fail("out of memory");
        if (*value)
            memcpy(*value, r->str, *len = r->len);
    }
    freeReplyObject(r);
    return rc;
}

static int redis_set(const char *key, const void *value, size_t len, long ttl_ms)
{
    char ttl[24];
    const char *argv[] = {"SET", key, value, "PX", ttl};
    size_t lens[] = {3, strlen(key), len, 2, (size_t)snprintf(ttl, sizeof ttl, "%ld", ttl_ms)};
    redisReply *r = command(ttl_ms ? 5 : 3, argv, lens);
    freeReplyObject(r);
    return r ? HP_KV_OK : HP_KV_ERROR;
}

static int redis_del(const char *key)
{
    const char *argv[] = {"DEL", key};
    size_t lens[] = {3, strlen(key)};
    redisReply *r = command(2, argv, lens);
    int rc = !r ? HP_KV_ERROR : r->integer ? HP_KV_OK : HP_KV_NOT_FOUND;
    freeReplyObject(r);
    return rc;
}

static int redis_incr(const char *key, long long delta, long long *out)
{
    char d[24];
    const char *argv[] = {"INCRBY", key, d};
    size_t lens[] = {6, strlen(key), (size_t)snprintf(d, sizeof d, "%lld", delta)};
    redisReply *r = command(3, argv, lens);
    if (!r)
        return HP_KV_ERROR;
    *out = r->integer;
    freeReplyObject(r);
    return HP_KV_OK;
}

static int redis_cas(const char *key, const void *expected, size_t elen, const void *value, size_t vlen, long ttl_ms)
{
    char ttl[24];
    const char *argv[] = {"EVAL", cas_script, "1", key, expected ? "1" : "0", expected ? expected : "",
                          value ? "0" : "1", value ? value : "", ttl};
    size_t lens[] = {4, sizeof cas_script - 1, 1, strlen(key), 1, expected ? elen : 0, 1, value ? vlen : 0,
                     (size_t)snprintf(ttl, sizeof ttl, "%ld", ttl_ms)};
    redisReply *r = command(9, argv, lens);
    if (!r)
        return HP_KV_ERROR;
    int rc = r->integer ? HP_KV_OK : HP_KV_CONFLICT;
    freeReplyObject(r);
    return rc;
}

static const rt_store_backend redis_backend = {
    .name = "redis", .get = redis_get, .set = redis_set, .del = redis_del, .incr = redis_incr, .cas = redis_cas,
};

/* spec: HOST[:PORT][/DB]; connections are made on first use, in each thread */
const rt_store_backend *rt_store_redis_open(const char *spec, char *err, size_t errlen)
{
    conn = NULL; /* one inherited through fork() is the parent's */
    size_t hlen = strcspn(spec, ":/");
    const char *rest = spec + hlen;
    if (hlen == 0 || hlen >= sizeof host) {
        snprintf(err, errlen, "redis: no host in the store URL (redis://HOST:PORT/DB)");
        return NULL;
    }
    memcpy(host, spec, hlen);
    host[hlen] = 0;
    if (*rest == ':')
        port = (int)strtol(rest + 1, (char **)&rest, 10);
    if (*rest == '/')
        db = (int)strtol(rest + 1, (char **)&rest, 10);
    if (*rest || port <= 0 || port > 65535 || db < 0) {
        snprintf(err, errlen, "redis: cannot read the store URL redis://%s (redis://HOST:PORT/DB)", spec);
        return NULL;
    }
    return &redis_backend;
}
