/* Background jobs (hp_job_*): a handler queues a call of one of its
 * module's functions; the job runner (server/jobs.py) runs it in a process
 * of its own, outside the request workers, on the code of the release that
 * queued it. Jobs, their progress and their events live in one SQLite
 * database (WAL) that the workers, the runner and its job processes share;
 * each thread keeps its own connection, as for the store. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <sodium.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "runtime.h"

#define CANCEL_CHECK_MS 50

static char db_path[4096];
static char release_id[64];
static struct sockaddr_un wake_addr; /* the runner's, abstract: see wake_runner */
static socklen_t wake_len;
static char open_error[512] = "background jobs are not available in this process";
static __thread sqlite3 *db;
static __thread char last_error[256];

static const char schema[] =
    "PRAGMA journal_mode=WAL;"
    "CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, module TEXT NOT NULL, function TEXT NOT NULL,"
    " release TEXT NOT NULL, arg BLOB, state TEXT NOT NULL, progress INTEGER NOT NULL DEFAULT 0,"
    " message TEXT, result BLOB, error TEXT, cancel INTEGER NOT NULL DEFAULT 0, runner INTEGER,"
    " created REAL NOT NULL, started REAL, finished REAL);"
    "CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (state, created);"
    "CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY AUTOINCREMENT, job TEXT NOT NULL,"
    " at REAL NOT NULL, data TEXT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS events_job ON events (job, seq);";

struct hp_job {
    char id[33];
    hp_module *module;
    double next_check;
    int cancelled;
};

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return HP_ERROR;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* This thread's connection; NULL (with the reason recorded) if none. */
static sqlite3 *conn(void)
{
    last_error[0] = 0;
    if (db)
        return db;
    if (!db_path[0]) {
        fail("%s", open_error);
        return NULL;
    }
    if (sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
        fail("jobs database %s: %s", db_path, db ? sqlite3_errmsg(db) : "out of memory");
        sqlite3_close(db);
        return db = NULL;
    }
    sqlite3_busy_timeout(db, 5000);
    return db;
}

int hp_rt_jobs_open(const char *path, const char *release, char *err, size_t errlen)
{
    sqlite3 *d = NULL;
    char *msg = NULL;
    db = NULL; /* one inherited through fork() is the parent's */
    if (sqlite3_open_v2(path, &d, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL) ||
        sqlite3_busy_timeout(d, 5000) || sqlite3_exec(d, schema, NULL, NULL, &msg)) {
        snprintf(err, errlen, "jobs database %s: %s", path, msg ? msg : d ? sqlite3_errmsg(d) : "out of memory");
        snprintf(open_error, sizeof open_error, "background jobs are off: %s", err);
        sqlite3_free(msg);
        sqlite3_close(d);
        return -1;
    }
    snprintf(db_path, sizeof db_path, "%s", path);
    /* The runner's wake-up socket is named after the database's directory,
     * which the master binds before any worker runs (server/jobs.py wake_name). */
    char dir[sizeof db_path];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == NULL)
        snprintf(dir, sizeof dir, ".");
    else if (slash == dir)
        slash[1] = '\0';
    else
        *slash = '\0';
    struct stat st;
    if (stat(dir, &st) == 0) {
        wake_addr.sun_family = AF_UNIX;
        int n = snprintf(wake_addr.sun_path + 1, sizeof wake_addr.sun_path - 1, "hotplate-jobs-%lx-%lx",
                         (unsigned long)st.st_dev, (unsigned long)st.st_ino);
        wake_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
    }
    snprintf(release_id, sizeof release_id, "%s", release ? release : "");
    db = d;
    return 0;
}

/* Prepares sql on this thread's connection; NULL with the reason recorded. */
static sqlite3_stmt *prepare(const char *sql)
{
    sqlite3 *d = conn();
    sqlite3_stmt *st = NULL;
    if (d && sqlite3_prepare_v2(d, sql, -1, &st, NULL) != SQLITE_OK)
        fail("jobs database: %s", sqlite3_errmsg(d));
    return st;
}

/* Steps a statement that returns no row and finalizes it. */
static int run(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE)
        fail("jobs database: %s", sqlite3_errmsg(sqlite3_db_handle(st)));
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? HP_OK : HP_ERROR;
}

static int valid_id(const char *id)
{
    if (!id || strlen(id) != 32)
        return 0;
    for (const char *p = id; *p; p++)
        if (!strchr("0123456789abcdef", *p))
            return 0;
    return 1;
}

/* Tells the runner a job is queued, so that it starts now rather than at
 * its next poll. Best effort: a runner that is not listening polls. */
static void wake_runner(void)
{
    int fd = wake_len ? socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0) : -1;
    if (fd >= 0) {
        (void)sendto(fd, "j", 1, 0, (struct sockaddr *)&wake_addr, wake_len);
        close(fd);
    }
}

const char *rt_api_job_start(hp_request *req, const char *function, const void *arg, size_t len)
{
    unsigned char raw[16];
    char *id = rt_arena_alloc(&req->arena, 33);
    if (!function || !*function || strlen(function) > 128 || !req->module ||
        !dlsym(req->module->dl, function)) {
        fail("module %s exports no function %s (HP_EXPORT int %s(hp_job *, const void *, size_t))",
             req->module ? req->module->name : "?", function ? function : "(NULL)", function ? function : "f");
        return NULL;
    }
    void *copy = malloc(len ? len : 1); /* a bad pointer faults here, not inside SQLite */
    if (!id || !copy) {
        free(copy);
        fail("out of memory");
        return NULL;
    }
    if (len)
        memcpy(copy, arg, len);
    randombytes_buf(raw, sizeof raw);
    sodium_bin2hex(id, 33, raw, sizeof raw);
    sqlite3_stmt *st = prepare("INSERT INTO jobs (id, module, function, release, arg, state, created) "
                               "VALUES (?, ?, ?, ?, ?, 'queued', ?)");
    if (!st) {
        free(copy);
        return NULL;
    }
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, req->module->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, function, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 4, release_id, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 5, copy, (int)len, free);
    sqlite3_bind_double(st, 6, now());
    if (run(st) != HP_OK)
        return NULL;
    wake_runner();
    return id;
}

static char *column_text(hp_request *req, sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    return t ? rt_arena_strndup(&req->arena, (const char *)t, (size_t)sqlite3_column_bytes(st, i)) : NULL;
}

int rt_api_job_status(hp_request *req, const char *id, hp_job_info *info)
{
    if (!valid_id(id) || !info)
        return fail("not a job id: %s", id ? id : "(NULL)");
    sqlite3_stmt *st = prepare("SELECT state, progress, message, result, error, function, "
                               "(SELECT COUNT(*) FROM events WHERE job = jobs.id) FROM jobs WHERE id = ?");
    if (!st)
        return HP_ERROR;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        size_t n = (size_t)sqlite3_column_bytes(st, 3);
        char *result = rt_arena_alloc(&req->arena, n + 1);
        if (result) {
            memcpy(result, sqlite3_column_blob(st, 3) ?: "", n);
            result[n] = 0;
        }
        *info = (hp_job_info){.state = column_text(req, st, 0), .progress = sqlite3_column_int(st, 1),
                              .message = column_text(req, st, 2), .result = result, .result_len = n,
                              .error = column_text(req, st, 4), .function = column_text(req, st, 5),
                              .events = sqlite3_column_int64(st, 6)};
    } else if (rc == SQLITE_DONE) {
        fail("no job %s", id);
    } else {
        fail("jobs database: %s", sqlite3_errmsg(db));
    }
    sqlite3_finalize(st);
    return rc == SQLITE_ROW && info->state ? HP_OK : HP_ERROR;
}

int rt_api_job_cancel(const char *id)
{
    if (!valid_id(id))
        return fail("not a job id: %s", id ? id : "(NULL)");
    /* a queued job ends here; a running one is asked (hp_job_cancelled), then stopped by the runner */
    sqlite3_stmt *st = prepare("UPDATE jobs SET cancel = 1, state = CASE state WHEN 'queued' THEN 'cancelled' "
                               "ELSE state END, finished = CASE state WHEN 'queued' THEN ? ELSE finished END "
                               "WHERE id = ? AND state IN ('queued', 'running')");
    if (!st)
        return HP_ERROR;
    sqlite3_bind_double(st, 1, now());
    sqlite3_bind_text(st, 2, id, -1, SQLITE_STATIC);
    if (run(st) != HP_OK)
        return HP_ERROR;
    return sqlite3_changes(db) ? HP_OK : fail("no queued or running job %s", id);
}

int rt_api_job_list(hp_request *req, hp_json *j, int limit)
{
    sqlite3_stmt *st = prepare("SELECT id, function, state, progress, message, created FROM jobs "
                               "WHERE module = ? ORDER BY created DESC LIMIT ?");
    if (!st)
        return HP_ERROR;
    sqlite3_bind_text(st, 1, req->module ? req->module->name : "", -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, limit > 0 ? limit : 100);
    int rc = rt_json_w_begin(j, NULL, 0);
    while (rc == HP_OK && sqlite3_step(st) == SQLITE_ROW) {
        const char *message = (const char *)sqlite3_column_text(st, 4);
        rc |= rt_json_w_begin(j, NULL, 1);
        rc |= rt_json_w_string(j, "id", (const char *)sqlite3_column_text(st, 0), 32);
        rc |= rt_json_w_string(j, "function", (const char *)sqlite3_column_text(st, 1),
                               (size_t)sqlite3_column_bytes(st, 1));
        rc |= rt_json_w_string(j, "state", (const char *)sqlite3_column_text(st, 2),
                               (size_t)sqlite3_column_bytes(st, 2));
        rc |= rt_json_w_int(j, "progress", sqlite3_column_int(st, 3));
        rc |= message ? rt_json_w_string(j, "message", message, strlen(message)) : rt_json_w_null(j, "message");
        rc |= rt_json_w_double(j, "created", sqlite3_column_double(st, 5));
        rc |= rt_json_w_end(j, 1);
    }
    sqlite3_finalize(st);
    return rc == HP_OK ? rt_json_w_end(j, 0) : HP_ERROR;
}

int rt_api_job_events(hp_request *req, const char *id, long long since, hp_json *j)
{
    (void)req;
    if (!valid_id(id))
        return fail("not a job id: %s", id ? id : "(NULL)");
    sqlite3_stmt *st = prepare("SELECT seq, at, data FROM events WHERE job = ? AND seq > ? ORDER BY seq LIMIT 1000");
    if (!st)
        return HP_ERROR;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, since);
    int rc = rt_json_w_begin(j, NULL, 0);
    while (rc == HP_OK && sqlite3_step(st) == SQLITE_ROW) {
        rc |= rt_json_w_begin(j, NULL, 1);
        rc |= rt_json_w_int(j, "seq", sqlite3_column_int64(st, 0));
        rc |= rt_json_w_double(j, "at", sqlite3_column_double(st, 1));
        rc |= rt_json_w_string(j, "data", (const char *)sqlite3_column_text(st, 2),
                               (size_t)sqlite3_column_bytes(st, 2));
        rc |= rt_json_w_end(j, 1);
    }
    sqlite3_finalize(st);
    return rc == HP_OK ? rt_json_w_end(j, 0) : HP_ERROR;
}

const char *rt_api_job_error(void)
{
    return last_error;
}

/* -- inside a job ---------------------------------------------------------- */

hp_job *rt_job_new(hp_module *module, const char *id)
{
    hp_job *job = calloc(1, sizeof *job);
    if (job) {
        job->module = module;
        snprintf(job->id, sizeof job->id, "%s", id);
    }
    return job;
}

const char *rt_api_job_id(const hp_job *job)
{
    return job->id;
}

static int add_event(const hp_job *job, const char *text)
{
    sqlite3_stmt *st = prepare("INSERT INTO events (job, at, data) VALUES (?, ?, ?)");
    if (!st)
        return HP_ERROR;
    sqlite3_bind_text(st, 1, job->id, -1, SQLITE_STATIC);
    sqlite3_bind_double(st, 2, now());
    sqlite3_bind_text(st, 3, text, -1, SQLITE_TRANSIENT);
    return run(st);
}

int rt_api_job_event(hp_job *job, const char *text)
{
    return text ? add_event(job, text) : fail("event text is NULL");
}

int rt_api_job_progress(hp_job *job, int percent, const char *message)
{
    char event[1024];
    percent = percent < 0 ? 0 : percent > 100 ? 100 : percent;
    sqlite3_stmt *st = prepare("UPDATE jobs SET progress = ?, message = ? WHERE id = ?");
    if (!st)
        return HP_ERROR;
    sqlite3_bind_int(st, 1, percent);
    sqlite3_bind_text(st, 2, message, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, job->id, -1, SQLITE_STATIC);
    if (run(st) != HP_OK)
        return HP_ERROR;
    hp_buf b;
    rt_arena a;
    rt_arena_init(&a, NULL, 0);
    rt_buf_init(&b, &a);
    hp_json w;
    rt_json_init(&w, &b);
    int rc = rt_json_w_begin(&w, NULL, 1) | rt_json_w_int(&w, "progress", percent) |
             (message ? rt_json_w_string(&w, "message", message, strlen(message)) : rt_json_w_null(&w, "message")) |
             rt_json_w_end(&w, 1) | rt_buf_add(&b, "", 1);
    snprintf(event, sizeof event, "%s", rc == HP_OK ? b.data : "{}");
    rt_arena_free(&a);
    return add_event(job, event);
}

int rt_api_job_result(hp_job *job, const void *data, size_t len)
{
    sqlite3_stmt *st = prepare("UPDATE jobs SET result = ? WHERE id = ?");
    if (!st)
        return HP_ERROR;
    sqlite3_bind_blob(st, 1, data ? data : "", (int)len, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, job->id, -1, SQLITE_STATIC);
    return run(st);
}

int rt_api_job_cancelled(hp_job *job)
{
    double t = now();
    if (job->cancelled || t < job->next_check)
        return job->cancelled;
    job->next_check = t + CANCEL_CHECK_MS / 1000.0;
    sqlite3_stmt *st = prepare("SELECT cancel FROM jobs WHERE id = ?");
    if (!st)
        return 0;
    sqlite3_bind_text(st, 1, job->id, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW)
        job->cancelled = sqlite3_column_int(st, 0) != 0;
    sqlite3_finalize(st);
    return job->cancelled;
}
