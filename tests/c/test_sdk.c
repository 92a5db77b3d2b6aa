/* Unit tests of the SDK runtime: arena, strings, JSON writer, request
 * parsing. Compiled with the runtime sources by tests/test_sdk.py; the test
 * talks to the runtime through the public hotplate.h functions, exactly as a
 * module would. Prints "N passed, N failed". */
#define _GNU_SOURCE
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "runtime.h"

const struct hp_api *hp__api = &rt_api_table;

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
    return rt_request_from_blob(NULL, blob, sizeof blob - 1, 2, 3, body, body_len);
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
    rt_request_free(r);

    const char *err = "unset";
    r = make_request("42", 2); /* any JSON value at the top; *error cleared on success */
    j = hp_req_json(r, &err);
    CHECK(j && json_integer_value(j) == 42 && err == NULL);
    rt_request_free(r);
    r = make_request("\"a\\u0000b\"", 10);
    CHECK(hp_req_json(r, &err) == NULL && err != NULL);
    rt_request_free(r);

    err = NULL;
    r = make_request("{\"n\": ", 6);
    CHECK(hp_req_json(r, &err) == NULL);
    CHECK(err && strstr(err, "line 1") != NULL);
    rt_request_free(r);

    /* A truncated blob is refused, not read past its end. */
    CHECK(rt_request_from_blob(NULL, "GET\0/", 5, 0, 0, NULL, 0) == NULL);
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
    rt_request_free(r);
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
    rt_request_free(r);
}

/* Doubles come out as the shortest decimal that reads back the same where
 * the writer's quick way finds one, else with 17 digits: always exact. */
static void test_json_doubles(void)
{
    static const struct { double v; const char *text; } cases[] = {
        {0.1, "0.1"}, {1.25, "1.25"}, {-0.5, "-0.5"}, {3.0, "3"}, {-17.0, "-17"}, {123456.789, "123456.789"},
        {0.000001, "0.000001"}, {1e20, "1e+20"}, {1e15, "1000000000000000"}, {0.0, "0"}, {-0.0, "-0"}, {2.675, "2.675"},
        {1.0 / 3.0, "0.33333333333333331"}, {9007199254740993.0, "9007199254740992"}, {5e-324, "4.9406564584124654e-324"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        hp_request *r = make_request("", 0);
        hp_buf *b = hp_buf_new(r);
        hp_json *j = hp_json_new(b);
        CHECK(hp_json_double(j, NULL, cases[i].v) == HP_OK);
        CHECK_STR(hp_buf_data(b), cases[i].text);
        CHECK(strtod(hp_buf_data(b), NULL) == cases[i].v);
        rt_request_free(r);
    }
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
    rt_request_free(r);
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
    CHECK(rt_response_finish(res) == HP_OK);
    const char *h = res->headers.data;
    CHECK_STR(h, "X-Ok");
    CHECK(memmem(h, res->headers.len, "Location\0/next\0Content-Type\0text/html\0", 38) != NULL);
    rt_request_free(r);
}

/* Whether n bytes at h hold a string literal (NULs included). */
#define HAS(h, n, lit) (memmem((h), (n), lit, sizeof lit - 1) != NULL)

/* ABI 3: every query parameter and cookie, Set-Cookie, removing a header. */
static void test_abi3(void)
{
    hp_request *r = make_request("", 0);
    const char *name = "unset", *value = "unset";
    const char *want[][2] = {{"q", "a b"}, {"plus", "1 2"}, {"empty", ""}, {"q", "second"}, {"pct", "%zz"}};
    size_t i = 0;
    for (; hp_req_query_at(r, i, &name, &value) == HP_OK; i++) {
        CHECK_STR(name, want[i][0]);
        CHECK_STR(value, want[i][1]);
    }
    CHECK(i == 5);
    CHECK(hp_req_cookie_at(r, 1, &name, &value) == HP_OK);
    CHECK_STR(name, "session");
    CHECK_STR(value, "abc def");
    CHECK(hp_req_cookie_at(r, 3, &name, &value) == HP_ERROR);
    CHECK_STR(name, "session");  /* left alone past the end */

    hp_response *res = &r->res;
    CHECK(hp_res_set_cookie(res, "sid", "abc123", 3600, NULL, HP_COOKIE_SECURE | HP_COOKIE_HTTPONLY |
                            HP_COOKIE_SAMESITE_LAX) == HP_OK);
    CHECK(hp_res_set_cookie(res, "gone", "", 0, "/app", 0) == HP_OK);
    CHECK(hp_res_set_cookie(res, "sess", "x", -1, "/", HP_COOKIE_SAMESITE_STRICT) == HP_OK);
    CHECK(hp_res_set_cookie(res, "bad name", "v", -1, NULL, 0) == HP_ERROR);
    CHECK(hp_res_set_cookie(res, "n", "a;b", -1, NULL, 0) == HP_ERROR);
    CHECK(hp_res_set_cookie(res, "n", "v\r\nX: y", -1, NULL, 0) == HP_ERROR);
    CHECK(hp_res_set_cookie(res, "n", "v", -1, "no-slash", 0) == HP_ERROR);
    CHECK(hp_res_set_cookie(res, "n", "v", -1, NULL, HP_COOKIE_SAMESITE_NONE) == HP_ERROR);  /* needs Secure */
    hp_cookie lang = {.name = "lang", .value = "fr", .max_age = 86400, .domain = "example.com",
                      .flags = HP_COOKIE_SECURE};
    CHECK(hp_res_cookie(res, &lang) == HP_OK);
    lang.domain = "evil.com; Path=/x";
    CHECK(hp_res_cookie(res, &lang) == HP_ERROR && hp_res_cookie(res, NULL) == HP_ERROR);
    CHECK(hp_res_header(res, "X-Powered-By", "C") == HP_OK);
    CHECK(hp_res_header(res, "X-Keep", "1") == HP_OK);
    CHECK(hp_res_header(res, "x-powered-by", "again") == HP_OK);
    CHECK(hp_res_remove_header(res, "X-POWERED-BY") == HP_OK);
    CHECK(hp_res_remove_header(res, "Content-Type") == HP_OK);
    CHECK(rt_response_finish(res) == HP_OK);
    const char *h = res->headers.data;
    size_t n = res->headers.len;
    CHECK(HAS(h, n, "Set-Cookie\0sid=abc123; Path=/; Max-Age=3600; Secure; HttpOnly; SameSite=Lax\0"));
    CHECK(HAS(h, n, "Set-Cookie\0gone=; Path=/app; Max-Age=0\0"));
    CHECK(HAS(h, n, "Set-Cookie\0sess=x; Path=/; SameSite=Strict\0"));
    CHECK(HAS(h, n, "Set-Cookie\0lang=fr; Path=/; Domain=example.com; Max-Age=86400; Secure\0"));
    CHECK(HAS(h, n, "X-Keep\0" "1\0"));
    CHECK(!HAS(h, n, "owered") && !HAS(h, n, "Content-Type"));
    rt_request_free(r);
}

/* A request with a body of the given type. The request points into the
 * blob, which must outlive it: one request at a time. */
static hp_request *form_request(const char *content_type, const char *body, size_t len)
{
    static char blob[512];
    int n = snprintf(blob, sizeof blob, "POST%c/f%c%c1.2.3.4%cr%c/f%cCONTENT_TYPE%c%s", 0, 0, 0, 0, 0, 0, 0,
                     content_type);
    return rt_request_from_blob(NULL, blob, (size_t)n + 1, 0, 1, body, len);
}

static void test_repeated_headers(void)
{
    static const char blob[] = "GET\0/\0\0a\0r\0/\0" "X-TAG\0one\0" "COOKIE\0a=1\0" "x-tag\0two\0" "COOKIE\0b=2\0";
    hp_request *r = rt_request_from_blob(NULL, blob, sizeof blob - 1, 0, 4, "", 0);
    CHECK_STR(hp_req_header(r, "X-Tag"), "one, two");
    CHECK_STR(hp_req_header(r, "cookie"), "a=1; b=2");
    CHECK_STR(hp_req_cookie(r, "b"), "2");
    CHECK(hp_req_header_count(r) == 4);
    rt_request_free(r);
}

static void test_forms(void)
{
    hp_part part;
    hp_request *r = form_request("application/x-www-form-urlencoded", "a=1&b=x+y&c=%41&a=2", 19);
    CHECK_STR(hp_req_form(r, "a"), "1");
    CHECK_STR(hp_req_form(r, "b"), "x y");
    CHECK_STR(hp_req_form(r, "c"), "A");
    CHECK(hp_req_form(r, "d") == NULL && hp_req_form_error(r) == NULL);
    CHECK(hp_req_form_at(r, 3, &part) == HP_OK && !strcmp(part.name, "a") && part.len == 1 && !part.filename);
    CHECK(hp_req_form_at(r, 4, &part) == HP_ERROR);
    rt_request_free(r);

    static const char mp[] = "--XyZ\r\n"
        "Content-Disposition: form-data; name=\"title\"\r\n\r\n"
        "hi there\r\n--XyZ\r\n"
        "content-disposition: form-data; name=\"up\"; filename=\"a \\\"b\\\".txt\"\r\n"
        "Content-Type: text/plain\r\n\r\n"
        "x\0y\r\n--Xy\r\n\r\n--XyZ--\r\n";
    r = form_request("multipart/form-data; boundary=\"XyZ\"", mp, sizeof mp - 1);
    CHECK(hp_req_form_error(r) == NULL);
    CHECK_STR(hp_req_form(r, "title"), "hi there");
    CHECK(hp_req_form_at(r, 1, &part) == HP_OK && !strcmp(part.name, "up") && part.len == 11);
    CHECK(part.len == 11 && !memcmp(part.data, "x\0y\r\n--Xy\r\n", 11));
    CHECK_STR(part.filename, "a \\\"b\\\".txt");
    CHECK_STR(part.content_type, "text/plain");
    CHECK(hp_req_form_at(r, 2, &part) == HP_ERROR);
    rt_request_free(r);

    static const char *bad[][2] = {
        {"multipart/form-data", "--b\r\n\r\n--b--"},
        {"multipart/form-data; boundary=b", "--b\r\nContent-Disposition: form-data; name=x\r\n\r\nno end"},
        {"multipart/form-data; boundary=b", "--b\r\nContent-Disposition: form-data\r\n\r\nv\r\n--b--"},
        {"multipart/form-data; boundary=b", "--b\r\nContent-Disposition: attachment; name=x\r\n\r\nv\r\n--b--"},
        {"multipart/form-data; boundary=b", "nothing"},
        {"multipart/form-data; boundary=b", "--bX"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        r = form_request(bad[i][0], bad[i][1], strlen(bad[i][1]));
        CHECK(hp_req_form_error(r) != NULL && hp_req_form_at(r, 0, &part) == HP_ERROR);
        rt_request_free(r);
    }
    r = form_request("application/json", "a=1", 3);
    CHECK(hp_req_form(r, "a") == NULL && hp_req_form_error(r) == NULL);
    rt_request_free(r);
}

/* ABI 3 crypto: known digests, constant-time equality, passwords, tokens. */
static void test_crypto(void)
{
    hp_request *r = make_request("", 0);
    CHECK_STR(hp_sha256_hex(r, "abc", 3), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    CHECK_STR(hp_hmac_sha256_hex(r, "key", "The quick brown fox jumps over the lazy dog", 43),
              "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8");  /* the well-known example */
    CHECK(hp_equal("same", "same", 4) == 1 && hp_equal("same", "sane", 4) == 0);
    unsigned char a[16] = {0}, b[16] = {0};
    hp_random(a, sizeof a);
    hp_random(b, sizeof b);
    CHECK(memcmp(a, b, sizeof a) != 0);
    const char *hash = hp_password_hash(r, "correct horse");
    CHECK(hash && !strncmp(hash, "$argon2id$", 10));
    CHECK(hp_password_verify(hash, "correct horse") == 1 && hp_password_verify(hash, "wrong") == 0);
    const char *token = hp_token_sign(r, "k1", "user=42", 60);
    CHECK_STR(hp_token_verify(r, "k1", token), "user=42");
    CHECK(hp_token_verify(r, "k2", token) == NULL);  /* another key */
    CHECK(hp_token_verify(r, "k1", hp_token_sign(r, "k1", "user=42", -1)) == NULL);  /* expired */
    char *forged = hp_strndup(r, token, strlen(token));
    forged[0] = forged[0] == 'A' ? 'B' : 'A';
    CHECK(hp_token_verify(r, "k1", forged) == NULL);  /* payload changed */
    CHECK(hp_token_verify(r, "k1", "no.dots") == NULL && hp_token_verify(r, "k1", "a.b.c.d") == NULL);
    rt_request_free(r);
}

/* The outbox record at *pos (see server/runtime/websocket.c); advances *pos. */
static int next_record(const hp_buf *out, size_t *pos, int *action, int *type, int *code,
                       const char **a, size_t *len_a, const char **b, size_t *len_b)
{
    struct { unsigned char action, type; unsigned short code; unsigned len_a, len_b; } rec;
    if (*pos + sizeof rec > out->len)
        return 0;
    memcpy(&rec, out->data + *pos, sizeof rec);
    *action = rec.action, *type = rec.type, *code = rec.code;
    *a = out->data + *pos + sizeof rec, *len_a = rec.len_a;
    *b = *a + rec.len_a, *len_b = rec.len_b;
    *pos += sizeof rec + rec.len_a + rec.len_b;
    return 1;
}

static void test_websocket(void)
{
    hp_request *r = make_request("", 0);
    unsigned char initial[3] = {7, 8, 9};
    hp_ws ws = {.req = r, .subprotocol = "chat.v1", .state = initial, .state_len = 3, .event = HP_RT_WS_MESSAGE};
    char big_topic[300];
    memset(big_topic, 't', sizeof big_topic - 1);
    big_topic[sizeof big_topic - 1] = 0;

    CHECK(hp_ws_request(&ws) == r);
    CHECK_STR(hp_ws_id(&ws), "req-1");
    CHECK_STR(hp_ws_subprotocol(&ws), "chat.v1");
    CHECK(hp_ws_send_text(&ws, "h\xc3\xa9") == HP_OK);
    CHECK(hp_ws_send(&ws, "\xff\xfe", 2, HP_WS_TEXT) == HP_ERROR);      /* not UTF-8 */
    CHECK(hp_ws_send(&ws, "\xed\xa0\x80", 3, HP_WS_TEXT) == HP_ERROR); /* a surrogate */
    CHECK(hp_ws_send(&ws, "\xff\0", 2, HP_WS_BINARY) == HP_OK);
    CHECK(hp_ws_send(&ws, "x", 1, 7) == HP_ERROR);
    CHECK(hp_ws_printf(&ws, "n=%d", 5) == HP_OK);
    CHECK(hp_ws_subscribe(&ws, "room") == HP_OK);
    CHECK(hp_ws_subscribe(&ws, "") == HP_ERROR);
    CHECK(hp_ws_subscribe(&ws, big_topic) == HP_ERROR);
    CHECK(hp_ws_unsubscribe(&ws, "room") == HP_OK);
    CHECK(hp_ws_publish(&ws, "room", "hi", 2, HP_WS_TEXT) == HP_OK);
    CHECK(hp_publish(r, "room", "x", HP_PUBLISH_MAX + 1, HP_WS_BINARY) == HP_ERROR);
    CHECK(hp_ws_close(&ws, 1005, "") == HP_ERROR);   /* reserved: never sent */
    CHECK(hp_ws_close(&ws, 2000, "") == HP_ERROR);
    CHECK(hp_ws_close(&ws, 4000, "bye") == HP_OK);

    size_t pos = 0, len_a, len_b;
    int action, type, code;
    const char *a, *b;
    CHECK(next_record(&r->outbox, &pos, &action, &type, &code, &a, &len_a, &b, &len_b));
    CHECK(action == HP_RT_OUT_SEND && type == HP_WS_TEXT && len_a == 3 && !memcmp(a, "h\xc3\xa9", 3));
    CHECK(next_record(&r->outbox, &pos, &action, &type, &code, &a, &len_a, &b, &len_b));
    CHECK(action == HP_RT_OUT_SEND && type == HP_WS_BINARY && len_a == 2 && !memcmp(a, "\xff\0", 2));
    CHECK(next_record(&r->outbox, &pos, &action, &type, &code, &a, &len_a, &b, &len_b));
    CHECK(action == HP_RT_OUT_SEND && len_a == 3 && !memcmp(a, "n=5", 3));
    CHECK(next_record(&r->outbox, &pos, &action, &type, &code, &a, &len_a, &b, &len_b));
    CHECK(action == HP_RT_OUT_SUBSCRIBE && len_a == 4 && !memcmp(a, "room", 4));
    CHECK(next_record(&r->outbox, &pos, &action, &type, &code, &a, &len_a, &b, &len_b));
    CHECK(action == HP_RT_OUT_UNSUBSCRIBE);
    CHECK(next_record(&r->outbox, &pos, &action, &type, &code, &a, &len_a, &b, &len_b));
    CHECK(action == HP_RT_OUT_PUBLISH && type == HP_WS_TEXT && len_a == 4 && len_b == 2 && !memcmp(b, "hi", 2));
    CHECK(next_record(&r->outbox, &pos, &action, &type, &code, &a, &len_a, &b, &len_b));
    CHECK(action == HP_RT_OUT_CLOSE && code == 4000 && len_a == 3 && !memcmp(a, "bye", 3));
    CHECK(!next_record(&r->outbox, &pos, &action, &type, &code, &a, &len_a, &b, &len_b));

    unsigned char *st = hp_ws_state(&ws, 2);
    CHECK(st == initial && ws.state_used);               /* smaller: the same bytes */
    st = hp_ws_state(&ws, 64);
    CHECK(st && st[0] == 7 && st[2] == 9 && st[3] == 0 && st[63] == 0 && ws.state_len == 64);
    CHECK(hp_ws_state(&ws, HP_WS_STATE_MAX + 1) == NULL);
    CHECK(hp_ws_state(&ws, HP_WS_STATE_MAX) != NULL);

    ws.event = HP_RT_WS_CLOSE;
    CHECK(hp_ws_send_text(&ws, "late") == HP_ERROR);
    CHECK(hp_ws_close(&ws, 1000, "") == HP_ERROR);
    rt_request_free(r);
}

int main(void)
{
    test_request();
    test_forms();
    test_repeated_headers();
    test_arena_and_buffers();
    test_strings();
    test_json_writer();
    test_json_doubles();
    test_response();
    test_websocket();
    test_abi3();
    test_crypto();
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
