/* Test module: echoes everything the SDK tells it about a request. */
#include <hotplate.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

HP_MODULE;

HP_EXPORT int echo(hp_request *req, hp_response *res)
{
    size_t len;
    const char *body = hp_req_body(req, &len);
    const char *name, *value;
    hp_res_header(res, "X-Echo", "yes");
    hp_res_header(res, "Set-Cookie", "a=1");
    hp_res_header(res, "Set-Cookie", "b=2");
    hp_json *j = hp_res_json(res);
    hp_json_begin_object(j, NULL);
    hp_json_string(j, "method", hp_req_method(req));
    hp_json_string(j, "path", hp_req_path(req));
    hp_json_string(j, "route", hp_req_route(req));
    hp_json_string(j, "param_name", hp_req_param(req, "name"));
    hp_json_string(j, "query_q", hp_req_query(req, "q"));
    hp_json_string(j, "query_string", hp_req_query_string(req));
    hp_json_string(j, "cookie_session", hp_req_cookie(req, "session"));
    hp_json_string(j, "x_tag", hp_req_header(req, "X-Tag"));
    hp_json_string(j, "client", hp_req_client_addr(req));
    hp_json_string(j, "request_id", hp_req_id(req));
    hp_json_int(j, "body_len", (long long)len);
    hp_json_stringn(j, "body", body, len);
    hp_json_begin_object(j, "headers");
    for (size_t i = 0; hp_req_header_at(req, i, &name, &value) == HP_OK; i++)
        hp_json_string(j, name, value);
    hp_json_end_object(j);
    return hp_json_end_object(j);
}

HP_EXPORT int user(hp_request *req, hp_response *res)
{
    long long id = 0;
    hp_req_param_int(req, "id", &id);
    hp_log(req, HP_LOG_WARNING, "looked up user %lld", id);
    hp_res_printf(res, "user %lld\n", id);
    return HP_OK;
}

/* Echoes the raw body back, byte for byte (binary safe both ways). */
HP_EXPORT int raw(hp_request *req, hp_response *res)
{
    size_t len;
    const void *body = hp_req_body(req, &len);
    hp_res_content_type(res, "application/octet-stream");
    return hp_res_write(res, body, len);
}

/* A large response: ?kb=N kilobytes of 'x'. */
HP_EXPORT int big(hp_request *req, hp_response *res)
{
    const char *kb = hp_req_query(req, "kb");
    long n = kb ? strtol(kb, NULL, 10) : 1;
    char chunk[1024];
    memset(chunk, 'x', sizeof chunk);
    for (long i = 0; i < n; i++)
        hp_res_write(res, chunk, sizeof chunk);
    return HP_OK;
}

/* Lists the form fields: name, file name, type, length and SHA-256 of each. */
HP_EXPORT int form(hp_request *req, hp_response *res)
{
    hp_part part;
    hp_json *j = hp_res_json(res);
    hp_json_begin_object(j, NULL);
    hp_json_string(j, "error", hp_req_form_error(req));
    hp_json_string(j, "first_name", hp_req_form(req, "name"));
    hp_json_begin_array(j, "fields");
    for (size_t i = 0; hp_req_form_at(req, i, &part) == HP_OK; i++) {
        hp_json_begin_object(j, NULL);
        hp_json_string(j, "name", part.name);
        hp_json_string(j, "filename", part.filename);
        hp_json_string(j, "content_type", part.content_type);
        hp_json_int(j, "len", (long long)part.len);
        hp_json_string(j, "sha256", hp_sha256_hex(req, part.data, part.len));
        hp_json_end_object(j);
    }
    hp_json_end_array(j);
    return hp_json_end_object(j);
}

/* A streamed response: ?mb=N megabytes of numbered 64 KiB blocks, written as
 * they are made; ?fail=1 crashes after the first megabyte. */
HP_EXPORT int stream(hp_request *req, hp_response *res)
{
    long mb = strtol(hp_req_query(req, "mb") ?: "1", NULL, 10);
    int fail = hp_req_query(req, "fail") != NULL;
    static char block[64 * 1024];
    hp_res_content_type(res, "application/octet-stream");
    char pid[16];
    snprintf(pid, sizeof pid, "%d", (int)getpid());
    hp_res_header(res, "X-Worker", pid);
    hp_res_header(res, "X-Streamed", hp_res_stream(res) == HP_OK ? "yes" : "no");
    for (long i = 0; i < mb * 16; i++) {
        memset(block, 'a' + (int)(i % 26), sizeof block);
        if (hp_res_write(res, block, sizeof block) != HP_OK)
            return HP_ERROR; /* the client went away */
        if (fail && i == 16)
            *(volatile int *)0 = 1;
    }
    return HP_OK;
}

/* GET /status/<int:code>: that status, and a body that must not go out with 1xx, 204 or 304 */
HP_EXPORT int status(hp_request *req, hp_response *res)
{
    long long code = 200;
    hp_req_param_int(req, "code", &code);
    hp_res_status(res, (int)code);
    return hp_res_printf(res, "a body");
}
