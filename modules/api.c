/* A JSON API: typed path parameters, query parameters, a JSON body parsed
 * with jansson, JSON written with the hp_json_* writer. */
#include <hotplate.h>
#include <jansson.h>
#include <string.h>

#include "demo.h"

HP_MODULE;

/* GET /api/users/<int:id>?fields=name */
HP_EXPORT int get_user(hp_request *req, hp_response *res)
{
    long long id;
    if (hp_req_param_int(req, "id", &id) != HP_OK || id <= 0) {
        hp_res_status(res, 400);
        hp_json *j = hp_res_json(res);
        hp_json_begin_object(j, NULL);
        hp_json_string(j, "error", "user id must be a positive integer");
        return hp_json_end_object(j);
    }
    const char *fields = hp_req_query(req, "fields");
    hp_json *j = hp_res_json(res);
    hp_json_begin_object(j, NULL);
    hp_json_int(j, "id", id);
    hp_json_string(j, "name", id == 1 ? "Ada \"Countess\" Lovelace" : "Grace Hopper");
    if (!fields || strstr(fields, "service"))
        hp_json_string(j, "service", DEMO_SERVICE);
    return hp_json_end_object(j);
}

/* POST /api/greet  {"name": "Ada", "times": 2}  ->  {"greetings": [...]} */
HP_EXPORT int greet(hp_request *req, hp_response *res)
{
    const char *err = NULL, *name;
    json_int_t times = 1;
    json_t *body = hp_req_json(req, &err);
    hp_json *j = hp_res_json(res);
    hp_json_begin_object(j, NULL);
    if (!body || json_unpack(body, "{s:s, s?:I}", "name", &name, "times", &times) || times < 0 || times > 100) {
        hp_res_status(res, 400);
        hp_json_string(j, "error", err ? err : "expected {\"name\": string, \"times\": 0..100}");
        return hp_json_end_object(j);
    }
    hp_json_begin_array(j, "greetings");
    for (json_int_t i = 0; i < times; i++)
        hp_json_string(j, NULL, hp_buf_data(({ hp_buf *b = hp_buf_new(req); hp_buf_printf(b, "Hello, %s!", name); b; })));
    hp_json_end_array(j);
    hp_json_string(j, "request_id", hp_req_id(req));
    return hp_json_end_object(j);
}
