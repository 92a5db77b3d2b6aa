/* The store on one host: an LMDB environment (memory-mapped B+tree,
 * multi-process safe), opened by each worker after fork. Writers take
 * LMDB's robust lock, so a worker killed mid-write does not block the
 * others.
 *
 * A record is an 8-byte expiry (milliseconds since the epoch, 0: none)
 * followed by the value. A second database indexes records with an expiry
 * by (expiry, key): every write first deletes a few records whose time has
 * passed, so expired keys do not pile up; a read treats an expired record as
 * absent.
 *
 * Durability: by default commits are not flushed to disk (sync=0), the
 * trade Redis makes by default: a worker crash loses nothing, a power loss
 * can lose the last writes. `lmdb:PATH?sync=1` flushes every commit. */
#define _GNU_SOURCE
#include <errno.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "store.h"

#define SWEEP_PER_WRITE 16

static MDB_env *env;
static MDB_dbi data_db, expiry_db;

static int fail(const char *what, int rc)
{
    if (rc == MDB_MAP_FULL)
        return rt_store_fail("the store is full: raise map_mib in the store URL (lmdb:PATH?map_mib=N)");
    return rt_store_fail("%s: %s", what, mdb_strerror(rc));
}

static void put_be64(unsigned char *out, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        out[i] = (unsigned char)v;
}

static uint64_t expiry_of(const MDB_val *record)
{
    uint64_t e;
    memcpy(&e, record->mv_data, sizeof e);
    return e;
}

static int expired(const MDB_val *record, int64_t now)
{
    uint64_t e = expiry_of(record);
    return e && (int64_t)e <= now;
}

/* The expiry index's key for (expiry, key), in buf. */
static MDB_val index_key(unsigned char *buf, uint64_t expiry, const char *key)
{
    size_t n = strlen(key);
    put_be64(buf, expiry);
    memcpy(buf + 8, key, n);
    return (MDB_val){.mv_size = 8 + n, .mv_data = buf};
}

/* Deletes the record of key, and its index entry, inside txn. */
static int remove_record(MDB_txn *txn, const char *key, const MDB_val *record)
{
    unsigned char buf[8 + HP_KV_MAX_KEY];
    MDB_val k = {.mv_size = strlen(key), .mv_data = (void *)key};
    uint64_t e = expiry_of(record);
    if (e) {
        MDB_val ik = index_key(buf, e, key);
        int rc = mdb_del(txn, expiry_db, &ik, NULL);
        if (rc && rc != MDB_NOTFOUND)
            return rc;
    }
    return mdb_del(txn, data_db, &k, NULL);
}

/* Deletes up to SWEEP_PER_WRITE records whose expiry has passed. */
static int sweep(MDB_txn *txn, int64_t now)
{
    MDB_cursor *c;
    MDB_val ik, iv;
    int rc = mdb_cursor_open(txn, expiry_db, &c);
    for (int i = 0; !rc && i < SWEEP_PER_WRITE; i++) {
        if ((rc = mdb_cursor_get(c, &ik, &iv, MDB_FIRST)))
            break;
        uint64_t e = 0;
        for (int b = 0; b < 8; b++)
            e = e << 8 | ((unsigned char *)ik.mv_data)[b];
        if ((int64_t)e > now)
            break;
        MDB_val k = {.mv_size = ik.mv_size - 8, .mv_data = (char *)ik.mv_data + 8};
        if (!(rc = mdb_cursor_del(c, 0)))
            rc = mdb_del(txn, data_db, &k, NULL);
        if (rc == MDB_NOTFOUND)
            rc = 0;
    }
    if (c)
        mdb_cursor_close(c);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* Writes key = value with an expiry, replacing a record old (or none). */
static int write_record(MDB_txn *txn, const char *key, const MDB_val *old, const void *value, size_t len, long ttl_ms,
                        int64_t now)
{
    int rc;
    if (old && (rc = remove_record(txn, key, old)))
        return rc;
    uint64_t e = ttl_ms ? (uint64_t)(now + ttl_ms) : 0;
    MDB_val k = {.mv_size = strlen(key), .mv_data = (void *)key}, v = {.mv_size = 8 + len};
    if ((rc = mdb_put(txn, data_db, &k, &v, MDB_RESERVE)))
        return rc;
    memcpy(v.mv_data, &e, 8);
    memcpy((char *)v.mv_data + 8, value, len);
    if (e) {
        unsigned char buf[8 + HP_KV_MAX_KEY];
        MDB_val ik = index_key(buf, e, key), empty = {0};
        rc = mdb_put(txn, expiry_db, &ik, &empty, 0);
    }
    return rc;
}

/* The live record of key, or MDB_NOTFOUND (also when it has expired). */
static int find(MDB_txn *txn, const char *key, MDB_val *record, int64_t now)
{
    MDB_val k = {.mv_size = strlen(key), .mv_data = (void *)key};
    int rc = mdb_get(txn, data_db, &k, record);
    return !rc && expired(record, now) ? MDB_NOTFOUND : rc;
}

/* A write in progress: its transaction, its time, and key's record if live. */
struct write {
    MDB_txn *txn;
    int64_t now;
    int live;
    MDB_val old;
};

/* Opens a write transaction, clears some expired records and looks key
 * up. HP_KV_OK, or HP_KV_ERROR with no transaction left open. */
static int begin_write(const char *key, struct write *w)
{
    int rc = mdb_txn_begin(env, NULL, 0, &w->txn);
    if (rc)
        return fail("write", rc);
    w->now = rt_store_now_ms();
    if (!(rc = sweep(w->txn, w->now)) && (rc = find(w->txn, key, &w->old, w->now)) == MDB_NOTFOUND)
        rc = 0;
    else
        w->live = !rc;
    if (rc) {
        mdb_txn_abort(w->txn);
        return fail("write", rc);
    }
    return HP_KV_OK;
}

/* Commits (rc 0) or aborts the write; result, or HP_KV_ERROR. */
static int end_write(struct write *w, int rc, int result)
{
    if (rc) {
        mdb_txn_abort(w->txn);
        return fail("write", rc);
    }
    return (rc = mdb_txn_commit(w->txn)) ? fail("commit", rc) : result;
}

static const MDB_val *old_of(struct write *w)
{
    return w->live ? &w->old : NULL;
}

static int lmdb_get(const char *key, char **value, size_t *len)
{
    MDB_txn *txn;
    MDB_val record;
    int rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn);
    if (rc)
        return fail("read", rc);
    rc = find(txn, key, &record, rt_store_now_ms());
    int result = rc == MDB_NOTFOUND ? HP_KV_NOT_FOUND : rc ? fail("read", rc) : HP_KV_OK;
    if (result == HP_KV_OK) {
        *len = record.mv_size - 8;
        if ((*value = malloc(*len ? *len : 1)))
            memcpy(*value, (char *)record.mv_data + 8, *len);
        else
            result = rt_store_fail("out of memory");
    }
    mdb_txn_abort(txn);
    return result;
}

static int lmdb_set(const char *key, const void *value, size_t len, long ttl_ms)
{
    struct write w = {0};
    if (begin_write(key, &w))
        return HP_KV_ERROR;
    return end_write(&w, write_record(w.txn, key, old_of(&w), value, len, ttl_ms, w.now), HP_KV_OK);
}

static int lmdb_del(const char *key)
{
    struct write w = {0};
    if (begin_write(key, &w))
        return HP_KV_ERROR;
    return end_write(&w, w.live ? remove_record(w.txn, key, &w.old) : 0, w.live ? HP_KV_OK : HP_KV_NOT_FOUND);
}

static int lmdb_incr(const char *key, long long delta, long long *out)
{
    struct write w = {0};
    long long n = 0;
    char text[32];
    if (begin_write(key, &w))
        return HP_KV_ERROR;
    if (w.live && !rt_store_parse_counter((char *)w.old.mv_data + 8, w.old.mv_size - 8, &n)) {
        mdb_txn_abort(w.txn);
        return rt_store_fail("%s does not hold a decimal integer", key);
    }
    if (__builtin_add_overflow(n, delta, &n)) {
        mdb_txn_abort(w.txn);
        return rt_store_fail("incrementing %s would overflow", key);
    }
    /* the counter keeps the expiry it had, as in Redis */
    uint64_t e = w.live ? expiry_of(&w.old) : 0;
    long ttl = e ? (long)((int64_t)e - w.now) : 0;
    int tlen = snprintf(text, sizeof text, "%lld", n);
    *out = n;
    return end_write(&w, write_record(w.txn, key, old_of(&w), text, (size_t)tlen, ttl, w.now), HP_KV_OK);
}

static int lmdb_cas(const char *key, const void *expected, size_t elen, const void *value, size_t vlen, long ttl_ms)
{
    struct write w = {0};
    if (begin_write(key, &w))
        return HP_KV_ERROR;
    int match = expected ? w.live && w.old.mv_size - 8 == elen && !memcmp((char *)w.old.mv_data + 8, expected, elen)
                         : !w.live;
    if (!match) {
        mdb_txn_abort(w.txn);
        return HP_KV_CONFLICT;
    }
    int rc = value ? write_record(w.txn, key, old_of(&w), value, vlen, ttl_ms, w.now)
                   : w.live ? remove_record(w.txn, key, &w.old) : 0;
    return end_write(&w, rc, HP_KV_OK);
}

static const rt_store_backend lmdb_backend = {
    .name = "lmdb", .get = lmdb_get, .set = lmdb_set, .del = lmdb_del, .incr = lmdb_incr, .cas = lmdb_cas,
};

/* spec: PATH[?map_mib=N][&sync=1] */
const rt_store_backend *rt_store_lmdb_open(const char *spec, char *err, size_t errlen)
{
    char path[4096];
    size_t plen = strcspn(spec, "?");
    const char *opts = spec + plen;
    unsigned long map_mib = 1024;
    int sync = 0, rc, dead;
    const char *o;
    if (plen == 0 || plen >= sizeof path) {
        snprintf(err, errlen, "lmdb: no path in the store URL");
        return NULL;
    }
    memcpy(path, spec, plen);
    path[plen] = 0;
    if ((o = strstr(opts, "map_mib=")))
        map_mib = strtoul(o + 8, NULL, 10);
    if ((o = strstr(opts, "sync=")))
        sync = o[5] == '1';
    if (mkdir(path, 0700) && errno != EEXIST) {
        snprintf(err, errlen, "lmdb: cannot create %s: %s", path, strerror(errno));
        return NULL;
    }
    MDB_txn *txn;
    if ((rc = mdb_env_create(&env)) || (rc = mdb_env_set_maxdbs(env, 2)) ||
        (rc = mdb_env_set_mapsize(env, (size_t)map_mib << 20)) ||
        (rc = mdb_env_open(env, path, MDB_NOTLS | (sync ? 0 : MDB_NOSYNC | MDB_NOMETASYNC), 0600)) ||
        (rc = mdb_reader_check(env, &dead)) || /* slots of readers that died (kill -9) */
        (rc = mdb_txn_begin(env, NULL, 0, &txn)))
        goto failed;
    if ((rc = mdb_dbi_open(txn, "data", MDB_CREATE, &data_db)) ||
        (rc = mdb_dbi_open(txn, "expiry", MDB_CREATE, &expiry_db))) {
        mdb_txn_abort(txn);
        goto failed;
    }
    if ((rc = mdb_txn_commit(txn)))
        goto failed;
    return &lmdb_backend;
failed:
    snprintf(err, errlen, "lmdb: cannot open %s: %s", path, mdb_strerror(rc));
    mdb_env_close(env);
    env = NULL;
    return NULL;
}
