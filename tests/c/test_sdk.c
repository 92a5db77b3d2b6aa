/* Unit tests of the SDK runtime: arena, strings, JSON writer, request
 * parsing. Compiled with the runtime sources by tests/test_sdk.py; the test
 * talks to the runtime through the public hotplate.h functions, exactly as a
 * module would. Prints "N passed, N failed". */
#define _GNU_SOURCE
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "runtime.h"

const struct hp_api *hp__api = &hp_api_table;

static int passed, failed;

#define CHECK(cond) do { if (cond) passed++; else { failed++; \
    fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); } } while (0)
#define CHECK_STR(got, want) do { const char *g_ = (got), *w_ = (want); \
    if (g_ && w_ && !strcmp(g_, w_)) passed++; else { failed++; \
    fprintf(stderr, "%s:%d: got [%s], want [%s]\n", __FILE__, __LINE__, g_ ? g_ : "(null)", w_ ? w_ : "(null)"); } } while (0)

static hp_request *make_request(const char *body, size_t body_len)
{
    static const char blob[] =
        "POST\0" "/users/42\0" "q=a%20b&plus=1+2&empty&q=second&pct=%zz\0" "127.0.0.1\0" "req-1\0" "/users/<int:id>\0"
        "id\0" "42\0" "name\0" "x\0"
        "HTTP_USER_AGENT\0curl/8\0" "HTTP_COOKIE\0a=1; session=\"abc def\"; b=2\0" "CONTENT_TYPE\0application/json\0";
    return hp_request_new(NULL, blob, sizeof blob - 1, 2, 3, body, body_len);
}

static void test_request(void)
{
    hp_request *r = make_request("{\"n\": 5}", 8);
    long long id = 0;
    const char *name, *value;
    CHECK(r != NULL);
    CHECK_STR(hp_req_method(r), "POST");
    CHECK_STR(hp_req_path(r), "/users/42");
    CHECK_STR(hp_req_route(r), "/users/<int:id>");
    CHECK(hp_req_param_int(r, "id", &id) == HP_OK && id == 42);
    CHECK(hp_req_param_int(r, "name", &id) == HP_ERROR && id == 42);
    CHECK(hp_req_param(r, "nope") == NULL);
    CHECK_STR(hp_req_query(r, "q"), "a b");
    CHECK_STR(hp_req_query(r, "plus"), "1 2");
    CHECK_STR(hp_req_query(r, "empty"), "");
    CHECK_STR(hp_req_query(r, "pct"), "%zz");
    CHECK(hp_req_query(r, "missing") == NULL);
    CHECK_STR(hp_req_header(r, "user-agent"), "curl/8");
    CHECK_STR(hp_req_header(r, "Content-Type"), "application/json");
    CHECK(hp_req_header_count(r) == 3);
    CHECK(hp_req_header_at(r, 0, &name, &value) == HP_OK);
    CHECK_STR(name, "User-Agent");
    CHECK(hp_req_header_at(r, 3, &name, &value) == HP_ERROR);
    CHECK_STR(hp_req_cookie(r, "session"), "abc def");
    CHECK_STR(hp_req_cookie(r, "b"), "2");
    CHECK(hp_req_cookie(r, "c") == NULL);
    CHECK_STR(hp_req_client_addr(r), "127.0.0.1");
    CHECK_STR(hp_req_id(r), "req-1");
    json_t *j = hp_req_json(r, NULL);
    CHECK(j && json_integer_value(json_object_get(j, "n")) == 5);
    hp_request_free(r);

    const char *err = NULL;
    r = make_request("{\"n\": ", 6);
    CHECK(hp_req_json(r, &err) == NULL);
    CHECK(err && strstr(err, "line 1") != NULL);
    hp_request_free(r);

    /* A truncated blob is refused, not read past its end. */
    CHECK(hp_request_new(NULL, "GET\0/", 5, 0, 0, NULL, 0) == NULL);
}

static void test_arena_and_buffers(void)
{
    hp_request *r = make_request("", 0);
    /* Many allocations, some larger than a block: all usable, all freed at once. */
    for (int i = 0; i < 1000; i++) {
        size_t n = (size_t)(i % 7 == 0 ? 20000 : 24);
        unsigned char *p = hp_alloc(r, n);
        CHECK(p != NULL && ((uintptr_t)p % _Alignof(max_align_t)) == 0);
        memset(p, 0xab, n);
    }
    hp_buf *b = hp_buf_new(r);
    CHECK_STR(hp_buf_data(b), "");
    for (int i = 0; i < 10000; i++)
        hp_buf_printf(b, "%d,", i);
    CHECK(hp_buf_len(b) == strlen(hp_buf_data(b)));
    CHECK(strncmp(hp_buf_data(b), "0,1,2,", 6) == 0);
    hp_buf_append(b, "\0x", 2);
    CHECK(hp_buf_data(b)[hp_buf_len(b) - 1] == 'x');
    char *s = hp_strdup(r, "copy");
    CHECK_STR(s, "copy");
    /* A 1 MB body, far over any fixed buffer. */
    hp_response *res = &r->res;
    static char big[1 << 20];
    memset(big, 'z', sizeof big);
    CHECK(hp_res_write(res, big, sizeof big) == HP_OK);
    CHECK(r->res.body.len == sizeof big);
    hp_request_free(r);
}

static void test_strings(void)
{
    hp_request *r = make_request("", 0);
    size_t n;
    CHECK(hp_strcaseeq("Content-Type", "content-TYPE"));
    CHECK(!hp_strcaseeq("Content", "Content-Type"));
    char *d = hp_url_decode(r, "a%41%00b+c%2", 12, &n);
    CHECK(n == 8 && memcmp(d, "aA\0b c%2", 9) == 0);
    CHECK_STR(hp_html_escape(r, "<a href=\"x\">Tom & 'Jerry'</a>"),
              "&lt;a href=&quot;x&quot;&gt;Tom &amp; &#39;Jerry&#39;&lt;/a&gt;");
    CHECK_STR(hp_html_escape(r, ""), "");
    hp_request_free(r);
}

static void test_json_writer(void)
{
    hp_request *r = make_request("", 0);
    hp_buf *b = hp_buf_new(r);
    hp_json *j = hp_json_new(b);
    CHECK(hp_json_begin_object(j, NULL) == HP_OK);
    CHECK(hp_json_string(j, "s", "quote\" back\\ nl\n tab\t bell\x07 \xc3\xa9") == HP_OK);
    CHECK(hp_json_stringn(j, "nul", "a\0b", 3) == HP_OK);
    CHECK(hp_json_string(j, "bad", "x\xff\xc3(y") == HP_OK);
    CHECK(hp_json_int(j, "i", -42) == HP_OK);
    CHECK(hp_json_double(j, "d", 0.5) == HP_OK);
    CHECK(hp_json_double(j, "inf", 1.0 / 0.0) == HP_OK);
    CHECK(hp_json_bool(j, "t", 1) == HP_OK);
    CHECK(hp_json_null(j, "n") == HP_OK);
    CHECK(hp_json_string(j, "null_str", NULL) == HP_OK);
    CHECK(hp_json_begin_array(j, "a") == HP_OK);
    CHECK(hp_json_int(j, "key-in-array", 1) == HP_ERROR);
    CHECK(hp_json_int(j, NULL, 1) == HP_OK);
    CHECK(hp_json_begin_object(j, NULL) == HP_OK);
    CHECK(hp_json_int(j, NULL, 1) == HP_ERROR);
    CHECK(hp_json_end_array(j) == HP_ERROR);
    CHECK(hp_json_end_object(j) == HP_OK);
    CHECK(hp_json_end_array(j) == HP_OK);
    CHECK(hp_json_end_object(j) == HP_OK);
    CHECK(hp_json_end_object(j) == HP_ERROR);
    CHECK(hp_json_int(j, NULL, 2) == HP_ERROR);
    CHECK_STR(hp_buf_data(b),
              "{\"s\":\"quote\\\" back\\\\ nl\\n tab\\t bell\\u0007 \xc3\xa9\",\"nul\":\"a\\u0000b\","
              "\"bad\":\"x\\ufffd\\ufffd(y\",\"i\":-42,\"d\":0.5,\"inf\":null,\"t\":true,\"n\":null,"
              "\"null_str\":null,\"a\":[1,{}]}");
    /* Whatever it wrote, jansson must parse it back. */
    json_error_t err;
    json_t *back = json_loads(hp_buf_data(b), JSON_ALLOW_NUL, &err);
    CHECK(back != NULL);
    json_decref(back);

    hp_buf *deep = hp_buf_new(r);
    hp_json *dj = hp_json_new(deep);
    int rc = HP_OK;
    for (int i = 0; i < HP_JSON_MAX_DEPTH && rc == HP_OK; i++)
        rc = hp_json_begin_array(dj, NULL);
    CHECK(rc == HP_OK);
    CHECK(hp_json_begin_array(dj, NULL) == HP_ERROR);
    hp_request_free(r);
}

static void test_response(void)
{
    hp_request *r = make_request("", 0);
    hp_response *res = &r->res;
    CHECK(hp_res_header(res, "X-Ok", "1") == HP_OK);
    CHECK(hp_res_header(res, "X-Bad", "a\r\nSet-Cookie: x=1") == HP_ERROR);
    CHECK(hp_res_header(res, "Bad:Name", "v") == HP_ERROR);
    CHECK(hp_res_redirect(res, 200, "/next") == HP_OK);
    CHECK(res->status == 302);
    CHECK(hp_res_redirect(res, 303, "/a\nb") == HP_ERROR);
    hp_res_status(res, 1000);
    CHECK(res->status == 500);
    hp_res_content_type(res, "text/html");
    CHECK(hp_response_finish(res) == HP_OK);
    const char *h = res->headers.data;
    CHECK_STR(h, "X-Ok");
    CHECK(memmem(h, res->headers.len, "Location\0/next\0Content-Type\0text/html\0", 38) != NULL);
    hp_request_free(r);
}

int main(void)
{
    test_request();
    test_arena_and_buffers();
    test_strings();
    test_json_writer();
    test_response();
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
