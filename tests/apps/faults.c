/* Test module: handlers that misbehave in every way a module can. */
#include <hotplate.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

HP_MODULE;

HP_EXPORT int ok(hp_request *req, hp_response *res)
{
    hp_res_printf(res, "ok from %d\n", (int)getpid());
    return HP_OK;
}

HP_EXPORT int segv(hp_request *req, hp_response *res)
{
    volatile int *p = NULL;
    hp_res_printf(res, "%d", *p);
    return HP_OK;
}

HP_EXPORT int fpe(hp_request *req, hp_response *res)
{
    raise(SIGFPE);
    return HP_OK;
}

static int recurse(int n) { volatile char pad[256]; pad[0] = (char)n; return recurse(n + 1) + pad[0]; }

HP_EXPORT int overflow(hp_request *req, hp_response *res)
{
    return recurse(0);
}

HP_EXPORT int loop(hp_request *req, hp_response *res)
{
    for (;;)
        ;
    return HP_OK;
}

/* Spends nearly all its time inside malloc and free, where a deadline must
 * not jump out (the allocator's lock would stay held). */
HP_EXPORT int churn(hp_request *req, hp_response *res)
{
    for (;;) {
        void *volatile p = malloc(2048 + (size_t)(rand() & 65535));
        free(p);
    }
    return HP_OK;
}

/* Blocks for good outside its own code: the deadline can never jump out. */
HP_EXPORT int stuck(hp_request *req, hp_response *res)
{
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&lock);
    pthread_mutex_lock(&lock);
    return HP_OK;
}

/* Leaks 1 MiB a request, touched so that it counts in the worker's RSS
 * (and kept in a global, so that the compiler cannot drop it). */
char *volatile leaked;

HP_EXPORT int leak(hp_request *req, hp_response *res)
{
    char *p = malloc(1 << 20);
    if (p)
        memset(p, 1, 1 << 20);
    leaked = p;
    hp_res_printf(res, "leaked in %d\n", (int)getpid());
    return HP_OK;
}

HP_EXPORT int slow(hp_request *req, hp_response *res)
{
    const char *ms = hp_req_query(req, "ms");
    usleep((useconds_t)(ms ? atoi(ms) : 300) * 1000);
    hp_res_printf(res, "slow done\n");
    return HP_OK;
}

HP_EXPORT int fail(hp_request *req, hp_response *res)
{
    hp_log(req, HP_LOG_ERROR, "refusing on purpose");
    return HP_ERROR;
}
