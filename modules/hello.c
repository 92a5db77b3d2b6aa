/* Hello text: the smallest module, plus query and path parameters. */
#include <hotplate.h>

HP_MODULE;

/* GET /  and  GET /hello?name=Ada */
HP_EXPORT int hello(hp_request *req, hp_response *res)
{
    const char *name = hp_req_query(req, "name");
    hp_res_printf(res, "Hello, %s!\n", name ? name : "world");
    return HP_OK;
}

/* GET /hello/<name>: an HTML page, with the name escaped. */
HP_EXPORT int hello_page(hp_request *req, hp_response *res)
{
    hp_res_content_type(res, "text/html; charset=utf-8");
    hp_res_printf(res, "<!doctype html><h1>Hello, %s!</h1>\n",
                  hp_html_escape(req, hp_req_param(req, "name")));
    return HP_OK;
}

/* GET /old: a redirect. */
HP_EXPORT int old_home(hp_request *req, hp_response *res)
{
    return hp_res_redirect(res, 301, "/");
}
