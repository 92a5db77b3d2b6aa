/* The host side: loading modules, calling them under a crash guard and a
 * deadline, and logging. Everything that runs module code goes through
 * guarded_call(), so a fault or a runaway loop in a module costs one
 * request, not the worker.
 *
 * A deadline jumps out of a handler only while the thread runs the module's
 * own code. Jumping out of libc (malloc holding its arena lock), the
 * dynamic loader or a hotplate call would leave a lock held that every
 * other thread of the worker then waits for. Outside module code the jump
 * is deferred: the timer ticks every TICK_NS until the thread is back in
 * module code, for at most GRACE_TICKS ticks. A thread still out of reach
 * then (blocked in a lock or a restarted system call) is answered for by
 * the worker's watchdog (server/worker.py), which replaces the worker.
 *
 * A call costs no system call of its own in the usual case (issue 23): the
 * thread's timer is armed for a deadline and left armed when the call
 * returns. The next call, whose deadline is later, keeps it; when it fires
 * early it is armed again for the call then running, and a tick between
 * calls is ignored. sigsetjmp does not save the signal mask (a system
 * call); a jump out of a handler unblocks the signal that made it. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <sodium.h>
#include <link.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdint.h>
#include <ucontext.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "runtime.h"

#define TIMEOUT_SIGNAL (SIGRTMIN + 1)
#define ALT_STACK_SIZE (64 * 1024)
#define TICK_NS 1000000L /* 1 ms between checks once a deadline passed */
#define GRACE_TICKS 1000 /* about a second of checks, then the watchdog */

/* SIGSYS: confine.c; SIGABRT: abort() in a module, or a sanitizer's report */
static const int fault_signals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGSYS, SIGABRT};
static hp_rt_log_fn log_sink;
static __thread hp_rt_stream_fn thread_sink; /* each thread of the request core writes its own (serve.c) */

/* Per thread: where to jump when module code faults or overruns, and
 * whose code may be jumped out of (NULL: any, while dlopen runs). */
static __thread sigjmp_buf *guard_jump;
static __thread volatile sig_atomic_t guard_active;
static __thread const hp_module *guard_code;
static __thread volatile sig_atomic_t deferrals;
static __thread int thread_ready;
static __thread timer_t thread_timer;
static __thread long long call_deadline_ns; /* the call's deadline (CLOCK_MONOTONIC); 0: no deadline */
static __thread long long armed_ns;         /* when the timer fires; 0: disarmed or fired */

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Arms the thread's timer for an absolute time (0: disarms it). */
static void arm_at(long long at_ns)
{
    struct itimerspec its;
    memset(&its, 0, sizeof its);
    its.it_value.tv_sec = at_ns / 1000000000LL;
    its.it_value.tv_nsec = at_ns % 1000000000LL;
    timer_settime(thread_timer, TIMER_ABSTIME, &its, NULL);
    armed_ns = at_ns;
}

static uintptr_t interrupted_pc(void *ctx)
{
    const ucontext_t *uc = ctx;
#if defined(__x86_64__)
    return (uintptr_t)uc->uc_mcontext.gregs[REG_RIP];
#elif defined(__aarch64__)
    return (uintptr_t)uc->uc_mcontext.pc;
#else
    (void)uc;
    return 0; /* unknown: never jump, the watchdog answers */
#endif
}

static int in_module_code(const hp_module *m, uintptr_t pc)
{
    for (int i = 0; i < m->ncode; i++)
        if (pc >= m->code[i].start && pc < m->code[i].end)
            return 1;
    return 0;
}

/* The deadline passed: jump out if the thread is in the module's own code,
 * else check again in a tick. */
static void on_deadline(void *ctx)
{
    armed_ns = 0;
    if (!guard_jump || !call_deadline_ns)
        return; /* a tick between calls, or in a call without a deadline */
    long long now = now_ns();
    if (!deferrals && now < call_deadline_ns) {
        arm_at(call_deadline_ns); /* armed for an earlier call: this one has time left */
        return;
    }
    if (guard_active && (!guard_code || in_module_code(guard_code, interrupted_pc(ctx)))) {
        guard_active = 0;
        siglongjmp(*guard_jump, TIMEOUT_SIGNAL);
    }
    if (++deferrals <= GRACE_TICKS)
        arm_at(now + TICK_NS);
}

static void on_signal(int sig, siginfo_t *info, void *ctx)
{
    if (sig == TIMEOUT_SIGNAL) {
        on_deadline(ctx);
        return;
    }
    if (sig == SIGSYS)
        rt_note_trap(info);
    if (guard_active && guard_jump) {
        guard_active = 0;
        siglongjmp(*guard_jump, sig);
    }
    /* A fault outside module code: restore the default action and return,
     * so the faulting instruction runs again and the process dies as it
     * would have without us. */
    signal(sig, SIG_DFL);
}

int hp_rt_setup(hp_rt_log_fn log)
{
    if (sodium_init() < 0) /* crypto.c: once per process, before any thread uses it */
        return -1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_signal;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof fault_signals / sizeof *fault_signals; i++)
        if (sigaction(fault_signals[i], &sa, NULL))
            return -1;
    if (sigaction(TIMEOUT_SIGNAL, &sa, NULL))
        return -1;
    log_sink = log;
    return 0;
}

int hp_rt_abi_version(void) { return HP_ABI_VERSION; }

/* The app's config set (hotplate config, config.yaml), for the process's life. */
static rt_pair *app_config;
static size_t app_config_len;

int hp_rt_config_set(const char *pairs, size_t len, size_t n)
{
    char *copy = malloc(len ? len : 1);
    rt_pair *table = malloc((n ? n : 1) * sizeof *table);
    if (!copy || !table) {
        free(copy);
        free(table);
        return -1;
    }
    memcpy(copy, pairs, len);
    const char *p = copy, *end = copy + len;
    size_t i = 0;
    for (; i < n && p < end; i++) {
        table[i].name = p;
        p += strnlen(p, (size_t)(end - p)) + 1;
        table[i].value = p < end ? p : "";
        p += p < end ? strnlen(p, (size_t)(end - p)) + 1 : 0;
    }
    app_config = table;
    app_config_len = i;
    return 0;
}

const char *rt_api_config(const char *key)
{
    for (size_t i = 0; key && i < app_config_len; i++)
        if (!strcmp(app_config[i].name, key))
            return app_config[i].value;
    return NULL;
}

/* Each thread that runs module code needs its own signal stack (a stack
 * overflow must still reach the handler) and its own deadline timer. */
static int thread_setup(void)
{
    if (thread_ready)
        return 0;
    stack_t ss = {.ss_sp = malloc(ALT_STACK_SIZE), .ss_size = ALT_STACK_SIZE};
    struct sigevent sev;
    memset(&sev, 0, sizeof sev);
    sev.sigev_notify = SIGEV_THREAD_ID;
    sev.sigev_signo = TIMEOUT_SIGNAL;
    sev._sigev_un._tid = gettid();
    if (!ss.ss_sp || sigaltstack(&ss, NULL) ||
        timer_create(CLOCK_MONOTONIC, &sev, &thread_timer)) {
        free(ss.ss_sp);
        return -1;
    }
    thread_ready = 1;
    return 0;
}

typedef int (*guarded_fn)(void *arg);

/* Runs fn(arg), code of module m (NULL while loading it), with faults and
 * the deadline turned into a return code: HP_RT_OK with *rc set,
 * HP_RT_CRASHED with *sig set, or HP_RT_TIMED_OUT (also when the call
 * returned by itself after its deadline passed). */
static int guarded_call(const hp_module *m, guarded_fn fn, void *arg, unsigned timeout_ms, int *rc, int *sig)
{
    sigjmp_buf jump;
    int got;
    if (thread_setup())
        return HP_RT_NO_MEMORY;
    deferrals = 0;
    guard_code = m;
    if ((got = sigsetjmp(jump, 0)) != 0) {
        guard_jump = NULL;
        call_deadline_ns = 0;
        arm_at(0);
        sigset_t delivered;
        sigemptyset(&delivered);
        sigaddset(&delivered, got);
        pthread_sigmask(SIG_UNBLOCK, &delivered, NULL); /* blocked while its handler ran */
        if (got == TIMEOUT_SIGNAL)
            return HP_RT_TIMED_OUT;
        *sig = got;
        return HP_RT_CRASHED;
    }
    call_deadline_ns = timeout_ms ? now_ns() + (long long)timeout_ms * 1000000LL : 0;
    if (timeout_ms && (!armed_ns || armed_ns > call_deadline_ns || armed_ns <= now_ns()))
        arm_at(call_deadline_ns);
    guard_jump = &jump;
    guard_active = 1;
    *rc = fn(arg);
    guard_active = 0;
    guard_jump = NULL;
    call_deadline_ns = 0;
    return deferrals ? HP_RT_TIMED_OUT : HP_RT_OK;
}

/* Calls the log sink with the guard lifted: the sink is Python code, which
 * must never be jumped out of. */
void rt_log_emit(int level, const hp_module *mod, const hp_request *req, const char *fmt, va_list ap)
{
    char msg[4096];
    int was_active = guard_active;
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && msg[n - 1] == '\n')
        msg[--n] = 0;
    guard_active = 0;
    if (log_sink)
        log_sink(level, mod ? mod->name : "", req ? req->route : "", req ? req->id : "", msg);
    guard_active = was_active;
}

void rt_set_thread_stream_sink(hp_rt_stream_fn sink)
{
    thread_sink = sink;
}

/* Calls the stream sink with the guard lifted, as for the log sink. */
int rt_stream_emit(int first, const hp_response *res, const char *data, size_t len)
{
    int was_active = guard_active;
    guard_active = 0;
    int rc = thread_sink ? thread_sink(first, res->status, res->headers.data, res->headers.len, data, len) : -1;
    guard_active = was_active;
    return rc;
}

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

struct open_args {
    const char *path;
    void *dl;
};

static int do_dlopen(void *arg)
{
    struct open_args *a = arg;
    a->dl = dlopen(a->path, RTLD_NOW | RTLD_LOCAL);
    return 0;
}

static hp_module *module_new(const char *path, const char *name,
                             const char *config, size_t config_len, size_t nconfig)
{
    hp_module *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->name = strdup(name);
    m->path = strdup(path);
    m->config_storage = malloc(config_len + 1);
    m->config = calloc(nconfig + 1, sizeof *m->config);
    if (!m->name || !m->path || !m->config_storage || !m->config)
        return NULL;
    memcpy(m->config_storage, config, config_len);
    m->config_storage[config_len] = 0;
    const char *p = m->config_storage, *end = p + config_len;
    for (size_t i = 0; i < nconfig && p < end; i++) {
        m->config[i].name = p;
        p += strlen(p) + 1;
        m->config[i].value = p < end ? p : "";
        p += strlen(m->config[i].value) + 1;
        m->nconfig = i + 1;
    }
    return m;
}

struct code_search {
    uintptr_t base;
    const char *name;
    hp_module *m;
};

static int find_code(struct dl_phdr_info *info, size_t size, void *data)
{
    struct code_search *s = data;
    (void)size;
    if (info->dlpi_addr != s->base || strcmp(info->dlpi_name, s->name))
        return 0;
    for (int i = 0; i < info->dlpi_phnum && s->m->ncode < HP_MAX_CODE_RANGES; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X)) {
            s->m->code[s->m->ncode].start = info->dlpi_addr + ph->p_vaddr;
            s->m->code[s->m->ncode].end = info->dlpi_addr + ph->p_vaddr + ph->p_memsz;
            s->m->ncode++;
        }
    }
    return 1;
}

/* Records where the module's own code lies: the only place a deadline
 * may jump out of. */
static void locate_code(hp_module *m)
{
    struct link_map *lm;
    if (dlinfo(m->dl, RTLD_DI_LINKMAP, &lm) == 0) {
        struct code_search s = {.base = lm->l_addr, .name = lm->l_name, .m = m};
        dl_iterate_phdr(find_code, &s);
    }
}

void *hp_rt_module_load(const char *path, const char *name,
                        const char *config, size_t config_len, size_t nconfig,
                        char *err, size_t errlen)
{
    struct open_args open_args = {.path = path};
    int rc = 0, sig = 0;
    int outcome = guarded_call(NULL, do_dlopen, &open_args, 10000, &rc, &sig);
    if (outcome == HP_RT_CRASHED) {
        set_err(err, errlen, "crashed with %s while loading (in a constructor)", strsignal(sig));
        return NULL;
    }
    if (outcome != HP_RT_OK || !open_args.dl) {
        set_err(err, errlen, "cannot load: %s", outcome == HP_RT_OK ? dlerror() : "timed out in a constructor");
        return NULL;
    }
    const uint32_t *abi = dlsym(open_args.dl, "hp_module_abi");
    void (*bind)(const struct hp_api *) = (void (*)(const struct hp_api *))dlsym(open_args.dl, "hp_module_bind");
    if (!abi || !bind) {
        set_err(err, errlen, "not a hotplate module: no HP_MODULE; line (add `HP_MODULE;` after #include <hotplate.h>)");
        return NULL;
    }
    if (*abi < 1 || *abi > HP_ABI_VERSION) {
        set_err(err, errlen, "ABI mismatch: built against hotplate ABI %u, this server provides ABI 1 to %d; rebuild the module with this server's hotplate.h",
                *abi, HP_ABI_VERSION);
        return NULL;
    }
    hp_module *m = module_new(path, name, config, config_len, nconfig);
    if (!m) {
        set_err(err, errlen, "out of memory");
        return NULL;
    }
    m->dl = open_args.dl;
    locate_code(m);
    m->init = (int (*)(hp_module *))dlsym(m->dl, "hp_init");
    m->fini = (void (*)(hp_module *))dlsym(m->dl, "hp_fini");
    bind(&rt_api_table);
    return m;
}

void *hp_rt_module_sym(void *module, const char *symbol)
{
    return dlsym(((hp_module *)module)->dl, symbol);
}

static int call_init(void *arg)
{
    hp_module *m = arg;
    return m->init ? m->init(m) : HP_OK;
}

static int call_fini(void *arg)
{
    hp_module *m = arg;
    if (m->fini)
        m->fini(m);
    return HP_OK;
}

static int run_hook(guarded_fn fn, const char *hook, void *module, unsigned timeout_ms, char *err, size_t errlen)
{
    int rc = 0, sig = 0;
    int outcome = guarded_call(module, fn, module, timeout_ms, &rc, &sig);
    if (outcome == HP_RT_CRASHED)
        set_err(err, errlen, "%s crashed with %s", hook, strsignal(sig));
    else if (outcome == HP_RT_TIMED_OUT)
        set_err(err, errlen, "%s did not return within %u ms", hook, timeout_ms);
    else if (outcome == HP_RT_OK && rc != HP_OK)
        set_err(err, errlen, "%s returned %d (HP_ERROR); see the module's log lines", hook, rc);
    if (outcome == HP_RT_OK && rc != HP_OK)
        return HP_RT_HANDLER_ERROR;
    return outcome;
}

int hp_rt_module_init(void *module, unsigned timeout_ms, char *err, size_t errlen)
{
    return run_hook(call_init, "hp_init", module, timeout_ms, err, errlen);
}

int hp_rt_module_fini(void *module, unsigned timeout_ms, char *err, size_t errlen)
{
    return run_hook(call_fini, "hp_fini", module, timeout_ms, err, errlen);
}

struct call_args {
    void *handler;
    hp_request *req;
    hp_ws *ws;
    const char *data;
    size_t data_len;
    int arg;
};

static int call_handler(void *arg)
{
    struct call_args *a = arg;
    return ((hp_handler)a->handler)(a->req, &a->req->res);
}

typedef int (*ws_open_fn)(hp_ws *);
typedef int (*ws_message_fn)(hp_ws *, const void *, size_t, int);
typedef void (*ws_close_fn)(hp_ws *, int, const char *);

static int call_ws(void *arg)
{
    struct call_args *a = arg;
    switch (a->ws->event) {
    case HP_RT_WS_OPEN:
        return ((ws_open_fn)a->handler)(a->ws);
    case HP_RT_WS_MESSAGE:
        return ((ws_message_fn)a->handler)(a->ws, a->data, a->data_len, a->arg);
    default:
        ((ws_close_fn)a->handler)(a->ws, a->arg, a->data);
        return HP_OK;
    }
}

/* Runs one call under the guard; a handler's HP_ERROR becomes
 * HP_RT_HANDLER_ERROR. The outbox counts only when the call succeeded: a
 * failed handler's effects are dropped, like its response. */
static int run_call(guarded_fn fn, struct call_args *args, unsigned timeout_ms, hp_rt_result *out)
{
    int rc = 0;
    out->request = args->req;
    out->result = guarded_call(args->req->module, fn, args, timeout_ms, &rc, &out->signal);
    if (out->result == HP_RT_OK && rc != HP_OK)
        out->result = HP_RT_HANDLER_ERROR;
    if (out->result == HP_RT_OK) {
        out->outbox = args->req->outbox.data;
        out->outbox_len = args->req->outbox.len;
    }
    return out->result;
}

struct job_args {
    void *fn;
    hp_job *job;
    const char *arg;
    size_t len;
};

static int call_job(void *arg)
{
    struct job_args *a = arg;
    return ((int (*)(hp_job *, const void *, size_t))a->fn)(a->job, a->arg, a->len);
}

int hp_rt_job_run(void *module, void *fn, const char *id, const char *arg, size_t len, int *rc, int *sig)
{
    struct job_args args = {.fn = fn, .job = rt_job_new(module, id), .arg = arg, .len = len};
    if (!args.job)
        return HP_RT_NO_MEMORY;
    int result = guarded_call(module, call_job, &args, 0, rc, sig);
    free(args.job);
    return result;
}

int rt_dispatch(void *module, void *handler, const rt_request_head *head, const char *body, size_t body_len,
                unsigned timeout_ms, int can_stream, hp_rt_result *out)
{
    memset(out, 0, sizeof *out);
    hp_request *req = rt_request_new(module, head, body, body_len);
    if (!req)
        return out->result = HP_RT_NO_MEMORY;
    req->res.can_stream = can_stream && thread_sink;
    struct call_args args = {.handler = handler, .req = req};
    if (run_call(call_handler, &args, timeout_ms, out) == HP_RT_OK && !req->res.stream_started &&
        rt_response_finish(&req->res))
        out->result = HP_RT_NO_MEMORY;
    out->streamed = req->res.stream_started;
    out->status = req->res.status;
    out->headers = req->res.headers.data;
    out->headers_len = req->res.headers.len;
    out->body = req->res.body.data;
    out->body_len = req->res.body.len;
    return out->result;
}

int hp_rt_ws_event(void *module, void *handler, int event,
                   const char *blob, size_t blob_len,
                   size_t nparams, size_t nheaders, const char *subprotocol,
                   const char *state, size_t state_len,
                   const char *data, size_t data_len, int arg,
                   unsigned timeout_ms, hp_rt_result *out)
{
    memset(out, 0, sizeof *out);
    hp_request *req = rt_request_from_blob(module, blob, blob_len, nparams, nheaders, NULL, 0);
    if (!req)
        return out->result = HP_RT_NO_MEMORY;
    out->request = req;
    hp_ws *ws = rt_arena_alloc(&req->arena, sizeof *ws);
    unsigned char *copy = rt_arena_alloc(&req->arena, state_len + 1);
    if (!ws || !copy)
        return out->result = HP_RT_NO_MEMORY;
    memcpy(copy, state, state_len);
    *ws = (hp_ws){.req = req, .subprotocol = subprotocol, .state = copy,
                  .state_len = state_len, .event = event};
    struct call_args args = {.handler = handler, .req = req, .ws = ws,
                             .data = data, .data_len = data_len, .arg = arg};
    run_call(call_ws, &args, timeout_ms, out);
    if (out->result == HP_RT_OK || out->result == HP_RT_HANDLER_ERROR) {
        out->state = ws->state; /* what on_close will see, even after HP_ERROR */
        out->state_len = ws->state_len;
        out->state_used = ws->state_used;
    }
    return out->result;
}

void hp_rt_release(hp_rt_result *out)
{
    rt_request_free(out->request);
    out->request = NULL;
}
