/* Two kinds of state. Per-worker state from an init hook: each gunicorn
 * worker counts its own requests, so two workers answer with different pids
 * and counts, and a deploy starts them again at 0. Shared state in the
 * key-value store (hp_kv_*): one count for every worker, kept across
 * deploys. */
#include <hotplate.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "demo.h"

HP_MODULE;

struct counter {
    long long hits; /* updated atomically: handlers run on several threads */
    time_t started;
};

static struct counter *state;

HP_EXPORT int hp_init(hp_module *mod)
{
    state = calloc(1, sizeof *state);
    if (!state)
        return HP_ERROR;
    state->started = time(NULL);
    hp_module_log(mod, HP_LOG_INFO, "counter ready in worker %d", (int)getpid());
    return HP_OK;
}

HP_EXPORT void hp_fini(hp_module *mod)
{
    free(state);
    state = NULL;
}

/* GET /counter */
HP_EXPORT int count(hp_request *req, hp_response *res)
{
    long long n = __atomic_add_fetch(&state->hits, 1, __ATOMIC_RELAXED);
    hp_json *j = hp_res_json(res);
    hp_json_begin_object(j, NULL);
    hp_json_string(j, "service", DEMO_SERVICE);
    hp_json_int(j, "worker", getpid());
    hp_json_int(j, "hits", n);
    long long total;
    if (hp_kv_incr("counter:hits", 1, &total) == HP_KV_OK)
        hp_json_int(j, "total_hits", total);
    else
        hp_json_string(j, "store_error", hp_kv_error());
    hp_json_int(j, "uptime_s", (long long)(time(NULL) - state->started));
    return hp_json_end_object(j);
}
