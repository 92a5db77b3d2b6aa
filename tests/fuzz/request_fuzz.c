/* libFuzzer target for the runtime's input parsing (issue 9): the request
 * blob, query and cookie splitting with URL decoding, parameters as
 * integers, the JSON body (jansson), UTF-8 validation, HTML escaping, and
 * the JSON writer fed the decoded values. Built by tests/test_fuzz.py
 * with clang -fsanitize=fuzzer,address,undefined; run longer with
 * scripts/fuzz.
 *
 * Input layout: byte 0 = number of parameters (low nibble) and headers
 * (high nibble); then the blob (NUL-separated fields, as the host sends
 * it); the part after the first "\n\n\n" is the body. The body is also
 * parsed as a form: multipart with boundary "b" when byte 0 is odd, else
 * urlencoded. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "runtime.h"

const struct hp_api *hp__api = &rt_api_table;

static void exercise(hp_request *r)
{
    long long n;
    const char *name, *value;
    hp_json *j = hp_res_json(&r->res);
    hp_json_begin_object(j, NULL);
    const char *keys[] = {"q", "a", "", "id", "session"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
        const char *q = hp_req_query(r, keys[i]), *c = hp_req_cookie(r, keys[i]);
        hp_req_param_int(r, keys[i], &n);
        if (q) {
            hp_json_string(j, "q", q);
            hp_html_escape(r, q);
        }
        if (c)
            hp_json_string(j, "c", c);
    }
    for (size_t i = 0; hp_req_header_at(r, i, &name, &value) == HP_OK; i++)
        hp_json_string(j, name, value);
    size_t len;
    const char *body = hp_req_body(r, &len);
    rt_utf8_valid(body, len);
    size_t out_len;
    hp_url_decode(r, body, len, &out_len);
    const char *error = NULL;
    hp_req_json(r, &error);
    hp_json_end_object(j);
}

static void exercise_form(int multipart, const char *body, size_t len)
{
    static const char multipart_blob[] = "POST\0/\0\0a\0r\0/\0CONTENT_TYPE\0multipart/form-data; boundary=b";
    static const char urlencoded_blob[] = "POST\0/\0\0a\0r\0/\0CONTENT_TYPE\0application/x-www-form-urlencoded";
    hp_part part;
    hp_request *r = multipart ? rt_request_from_blob(NULL, multipart_blob, sizeof multipart_blob, 0, 1, body, len)
                              : rt_request_from_blob(NULL, urlencoded_blob, sizeof urlencoded_blob, 0, 1, body, len);
    if (!r)
        return;
    hp_req_form(r, "a");
    for (size_t i = 0; hp_req_form_at(r, i, &part) == HP_OK; i++)
        hp_sha256_hex(r, part.data, part.len);
    rt_request_free(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t nparams = data[0] & 0x0F, nheaders = data[0] >> 4;
    const char *blob = (const char *)data + 1, *end = blob + size - 1;
    const char *split = memmem(blob, (size_t)(end - blob), "\n\n\n", 3);
    const char *body = split ? split + 3 : NULL;
    size_t blob_len = (size_t)((split ? split : end) - blob);
    /* Copies, so that reading one byte past a field is caught by ASan. */
    char *b = malloc(blob_len ? blob_len : 1), *d = body ? malloc((size_t)(end - body) + 1) : NULL;
    memcpy(b, blob, blob_len);
    if (d)
        memcpy(d, body, (size_t)(end - body));
    hp_request *r = rt_request_from_blob(NULL, b, blob_len, nparams, nheaders, d, d ? (size_t)(end - body) : 0);
    if (r) {
        exercise(r);
        rt_request_free(r);
    }
    exercise_form(data[0] & 1, d, d ? (size_t)(end - body) : 0);
    free(b);
    free(d);
    return 0;
}
