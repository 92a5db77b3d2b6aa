/* The key-value store's semantics, the same for every backend: run as
 * `test_store URL` (tests/test_store.py gives it an LMDB directory and a
 * real redis-server). Through the public hp_kv_* functions, as a module
 * calls them. Prints "N passed, N failed". */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "runtime.h"

const struct hp_api *hp__api = &rt_api_table;

static int passed, failed;

#define CHECK(cond) do { if (cond) passed++; else { failed++; \
    fprintf(stderr, "%s:%d: check failed: %s (%s)\n", __FILE__, __LINE__, #cond, hp_kv_error()); } } while (0)

#define PROCS 4
#define INCRS 500

static hp_request *request(void)
{
    static const char blob[] = "GET\0/\0\0" "127.0.0.1\0r\0/\0";
    return rt_request_from_blob(NULL, blob, sizeof blob - 1, 0, 0, "", 0);
}

static int holds(hp_request *r, const char *key, const void *want, size_t want_len)
{
    const void *v = NULL;
    size_t n = 0;
    return hp_kv_get(r, key, &v, &n) == HP_KV_OK && n == want_len && !memcmp(v, want, n);
}

/* Waits, with a deadline, for key to expire; 1 if it did. */
static int expires(hp_request *r, const char *key)
{
    const void *v;
    size_t n;
    for (int i = 0; i < 2000; i++) {
        if (hp_kv_get(r, key, &v, &n) == HP_KV_NOT_FOUND)
            return 1;
        usleep(1000);
    }
    return 0;
}

int main(int argc, char **argv)
{
    char err[512];
    if (argc != 2 || hp_rt_store_open(argv[1], err, sizeof err)) {
        fprintf(stderr, "usage: test_store URL (%s)\n", argc == 2 ? err : "");
        return 2;
    }
    hp_request *r = request();
    const void *v = "unset";
    size_t n = 99;
    long long count = 0;
    static const char binary[] = {'a', 0, 'b', '\xff'};

    /* set, get (binary-safe, NUL after), delete */
    CHECK(hp_kv_set("k", binary, sizeof binary, 0) == HP_KV_OK);
    CHECK(holds(r, "k", binary, sizeof binary));
    CHECK(hp_kv_get(r, "k", &v, &n) == HP_KV_OK && ((const char *)v)[n] == 0);
    CHECK(hp_kv_set("k", "", 0, 0) == HP_KV_OK && holds(r, "k", "", 0));
    CHECK(hp_kv_delete("k") == HP_KV_OK);
    CHECK(hp_kv_delete("k") == HP_KV_NOT_FOUND);
    v = "unset";
    CHECK(hp_kv_get(r, "k", &v, &n) == HP_KV_NOT_FOUND && !strcmp(v, "unset"));

    /* incr: from absent, by any delta, refused on text and on overflow */
    CHECK(hp_kv_incr("c", 5, &count) == HP_KV_OK && count == 5);
    CHECK(hp_kv_incr("c", -7, &count) == HP_KV_OK && count == -2);
    CHECK(holds(r, "c", "-2", 2));
    CHECK(hp_kv_set("t", "abc", 3, 0) == HP_KV_OK && hp_kv_incr("t", 1, &count) == HP_KV_ERROR);
    CHECK(strlen(hp_kv_error()) > 0);
    CHECK(hp_kv_set("big", "9223372036854775807", 19, 0) == HP_KV_OK && hp_kv_incr("big", 1, NULL) == HP_KV_ERROR);

    /* compare and set */
    CHECK(hp_kv_cas("lock", NULL, 0, "me", 2, 0) == HP_KV_OK);
    CHECK(hp_kv_cas("lock", NULL, 0, "you", 3, 0) == HP_KV_CONFLICT);
    CHECK(hp_kv_cas("lock", "you", 3, "x", 1, 0) == HP_KV_CONFLICT && holds(r, "lock", "me", 2));
    CHECK(hp_kv_cas("lock", "me", 2, "you", 3, 0) == HP_KV_OK && holds(r, "lock", "you", 3));
    CHECK(hp_kv_cas("lock", "you", 3, NULL, 0, 0) == HP_KV_OK && hp_kv_get(r, "lock", &v, &n) == HP_KV_NOT_FOUND);
    CHECK(hp_kv_cas("lock", "you", 3, NULL, 0, 0) == HP_KV_CONFLICT);

    /* expiry: a value with a TTL goes; incr keeps the TTL; set without one clears it */
    CHECK(hp_kv_set("ttl", "x", 1, 50) == HP_KV_OK && holds(r, "ttl", "x", 1));
    CHECK(expires(r, "ttl"));
    CHECK(hp_kv_incr("ttl", 1, &count) == HP_KV_OK && count == 1);
    CHECK(hp_kv_set("keep", "1", 1, 60000) == HP_KV_OK && hp_kv_set("keep", "2", 1, 0) == HP_KV_OK);
    CHECK(hp_kv_cas("short", NULL, 0, "1", 1, 50) == HP_KV_OK && hp_kv_incr("short", 1, &count) == HP_KV_OK);
    CHECK(expires(r, "short"));
    CHECK(hp_kv_cas("short", NULL, 0, "fresh", 5, 0) == HP_KV_OK);

    /* bad input: a clear error, never a crash */
    CHECK(hp_kv_set(NULL, "x", 1, 0) == HP_KV_ERROR && strstr(hp_kv_error(), "NULL"));
    CHECK(hp_kv_set("", "x", 1, 0) == HP_KV_ERROR);
    char long_key[HP_KV_MAX_KEY + 2];
    memset(long_key, 'k', sizeof long_key - 1);
    long_key[sizeof long_key - 1] = 0;
    CHECK(hp_kv_set(long_key, "x", 1, 0) == HP_KV_ERROR && strstr(hp_kv_error(), "bytes"));
    long_key[HP_KV_MAX_KEY] = 0;
    CHECK(hp_kv_set(long_key, "x", 1, 0) == HP_KV_OK && holds(r, long_key, "x", 1));
    CHECK(hp_kv_set("k", NULL, 0, 0) == HP_KV_ERROR);
    CHECK(hp_kv_set("k", "x", 1, -1) == HP_KV_ERROR);
    CHECK(hp_kv_set("k", "x", 1, 0) == HP_KV_OK && !*hp_kv_error());

    /* atomic across processes: PROCS children each add INCRS */
    hp_kv_delete("shared");
    for (int p = 0; p < PROCS; p++) {
        if (fork() == 0) {
            int bad = hp_rt_store_open(argv[1], err, sizeof err) != 0; /* as a worker does, after fork */
            for (int i = 0; i < INCRS; i++)
                bad += hp_kv_incr("shared", 1, NULL) != HP_KV_OK;
            _exit(bad ? 1 : 0);
        }
    }
    int clean = 1, status;
    for (int p = 0; p < PROCS; p++)
        clean &= wait(&status) > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
    CHECK(clean);
    CHECK(hp_kv_incr("shared", 0, &count) == HP_KV_OK && count == PROCS * INCRS);

    rt_request_free(r);
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
