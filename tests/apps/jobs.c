/* Test module: background jobs started, watched and cancelled over HTTP. */
#include <hotplate.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

HP_MODULE;

#ifndef VERSION
#define VERSION "v1"
#endif

/* arg "N MS": N steps of MS milliseconds, with progress; stops when cancelled */
HP_EXPORT int count(hp_job *job, const void *arg, size_t len)
{
    char buf[64], msg[64], result[64];
    int n = 10, ms = 10;
    snprintf(buf, sizeof buf, "%.*s", (int)len, (const char *)arg);
    sscanf(buf, "%d %d", &n, &ms);
    for (int i = 1; i <= n; i++) {
        if (hp_job_cancelled(job))
            return HP_OK;
        usleep((useconds_t)ms * 1000);
        snprintf(msg, sizeof msg, "step %d of %d", i, n);
        hp_job_progress(job, i * 100 / n, msg);
    }
    int r = snprintf(result, sizeof result, "counted to %d on %s", n, VERSION);
    return hp_job_result(job, result, (size_t)r);
}

HP_EXPORT int crash(hp_job *job, const void *arg, size_t len)
{
    *(volatile int *)0 = 1;
    return HP_OK;
}

/* Never looks at hp_job_cancelled: only the runner can stop it. */
HP_EXPORT int spin(hp_job *job, const void *arg, size_t len)
{
    for (volatile unsigned long i = 0;; i++)
        ;
    return HP_OK;
}

HP_EXPORT int hog(hp_job *job, const void *arg, size_t len)
{
    for (;;) {
        char *p = malloc(1 << 20);
        if (!p)
            return HP_ERROR;
        memset(p, 1, 1 << 20);
    }
}

/* POST /jobs?fn=NAME with the argument as the body: the job's id */
HP_EXPORT int start(hp_request *req, hp_response *res)
{
    size_t len;
    const void *body = hp_req_body(req, &len);
    const char *id = hp_job_start(req, hp_req_query(req, "fn") ?: "count", body, len);
    if (!id) {
        hp_res_status(res, 400);
        return hp_res_printf(res, "%s\n", hp_job_error());
    }
    hp_res_status(res, 202);
    return hp_res_printf(res, "%s", id);
}

HP_EXPORT int status(hp_request *req, hp_response *res)
{
    hp_job_info info;
    if (hp_job_status(req, hp_req_param(req, "id"), &info) != HP_OK) {
        hp_res_status(res, 404);
        return hp_res_printf(res, "%s\n", hp_job_error());
    }
    hp_json *j = hp_res_json(res);
    hp_json_begin_object(j, NULL);
    hp_json_string(j, "state", info.state);
    hp_json_int(j, "progress", info.progress);
    hp_json_string(j, "message", info.message);
    hp_json_stringn(j, "result", info.result, info.result_len);
    hp_json_string(j, "error", info.error);
    hp_json_string(j, "function", info.function);
    hp_json_int(j, "events", info.events);
    return hp_json_end_object(j);
}

HP_EXPORT int cancel(hp_request *req, hp_response *res)
{
    if (hp_job_cancel(hp_req_param(req, "id")) != HP_OK) {
        hp_res_status(res, 409);
        return hp_res_printf(res, "%s\n", hp_job_error());
    }
    return hp_res_printf(res, "cancelling\n");
}

HP_EXPORT int list(hp_request *req, hp_response *res)
{
    return hp_job_list(req, hp_res_json(res), 50);
}

HP_EXPORT int events(hp_request *req, hp_response *res)
{
    return hp_job_events(req, hp_req_param(req, "id"), atoll(hp_req_query(req, "since") ?: "0"), hp_res_json(res));
}

/* WebSocket /jobs/<id>/watch[?since=SEQ]: the job's events, live. */
HP_EXPORT int watch(hp_ws *ws)
{
    hp_request *req = hp_ws_request(ws);
    char topic[80];
    const char *since = hp_req_query(req, "since");
    snprintf(topic, sizeof topic, "job:%s%s%s", hp_req_param(req, "id"), since ? "@" : "", since ? since : "");
    return hp_ws_subscribe(ws, topic);
}

HP_EXPORT int watch_message(hp_ws *ws, const void *data, size_t len, int type)
{
    return HP_OK; /* the client only listens */
}
