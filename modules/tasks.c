/* Work outside the request (C API level 3): a form starts a background job,
 * its status is JSON, its progress streams over a WebSocket, and a large
 * export is a streamed response in bounded memory. */
#include <hotplate.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

HP_MODULE;

#define MAX_STEPS 100
#define MAX_ROWS 10000000L

/* The job: `steps` tenths of a second, with progress; stops when cancelled. */
HP_EXPORT int countdown(hp_job *job, const void *arg, size_t len)
{
    char text[16], message[64];
    snprintf(text, sizeof text, "%.*s", (int)(len < 15 ? len : 15), (const char *)arg);
    int steps = atoi(text);
    for (int i = 1; i <= steps; i++) {
        if (hp_job_cancelled(job))
            return HP_OK;
        usleep(100 * 1000);
        snprintf(message, sizeof message, "step %d of %d", i, steps);
        hp_job_progress(job, i * 100 / steps, message);
    }
    int n = snprintf(message, sizeof message, "done after %d steps", steps);
    return hp_job_result(job, message, (size_t)n);
}

/* POST /tasks with the form field steps (urlencoded or multipart): 202 and the job's id */
HP_EXPORT int start_task(hp_request *req, hp_response *res)
{
    const char *steps = hp_req_form(req, "steps");
    int n = steps ? atoi(steps) : 0;
    if (n < 1 || n > MAX_STEPS) {
        hp_res_status(res, 400);
        return hp_res_printf(res, "send a form with steps=1..%d%s%s\n", MAX_STEPS,
                             hp_req_form_error(req) ? ": " : "", hp_req_form_error(req) ?: "");
    }
    char arg[16];
    const char *id = hp_job_start(req, "countdown", arg, (size_t)snprintf(arg, sizeof arg, "%d", n));
    if (!id) {
        hp_log(req, HP_LOG_ERROR, "cannot start the job: %s", hp_job_error());
        return HP_ERROR;
    }
    hp_res_status(res, 202);
    hp_json *j = hp_res_json(res);
    hp_json_begin_object(j, NULL);
    hp_json_string(j, "id", id);
    return hp_json_end_object(j);
}

/* GET /tasks/<id> */
HP_EXPORT int task_status(hp_request *req, hp_response *res)
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
    return hp_json_end_object(j);
}

/* POST /tasks/<id>/cancel */
HP_EXPORT int cancel_task(hp_request *req, hp_response *res)
{
    if (hp_job_cancel(hp_req_param(req, "id")) != HP_OK) {
        hp_res_status(res, 409);
        return hp_res_printf(res, "%s\n", hp_job_error());
    }
    return hp_res_printf(res, "cancelling\n");
}

/* WebSocket /tasks/<id>/progress: the job's events as they happen, then its end */
HP_EXPORT int watch_task(hp_ws *ws)
{
    char topic[64];
    snprintf(topic, sizeof topic, "job:%s", hp_req_param(hp_ws_request(ws), "id"));
    return hp_ws_subscribe(ws, topic);
}

HP_EXPORT int ignore_message(hp_ws *ws, const void *data, size_t len, int type)
{
    return HP_OK;
}

/* GET /export?rows=N: a CSV streamed as it is written, in bounded memory */
HP_EXPORT int export_csv(hp_request *req, hp_response *res)
{
    long rows = atol(hp_req_query(req, "rows") ?: "100000");
    if (rows < 0 || rows > MAX_ROWS)
        rows = MAX_ROWS;
    hp_res_content_type(res, "text/csv");
    hp_res_stream(res);
    if (hp_res_printf(res, "n,square,hex\n") != HP_OK)
        return HP_OK;
    for (long i = 1; i <= rows; i++)
        if (hp_res_printf(res, "%ld,%ld,%lx\n", i, i * i, i) != HP_OK)
            return HP_OK; /* the client went away */
    return HP_OK;
}
