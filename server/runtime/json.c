/* The JSON writer behind hp_json_*, and request-body parsing with jansson.
 * Parsing is left to jansson (strict RFC 8259, UTF-8 checked, error
 * positions); writing is small enough to do here without building a tree. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "runtime.h"

void hp_json_init(hp_json *j, hp_buf *buf)
{
    memset(j, 0, sizeof *j);
    j->buf = buf;
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    size_t len;
    unsigned min;
    unsigned cp;
    if (s[0] < 0x80) return 1;
    if ((s[0] & 0xe0) == 0xc0) { len = 2; cp = s[0] & 0x1f; min = 0x80; }
    else if ((s[0] & 0xf0) == 0xe0) { len = 3; cp = s[0] & 0x0f; min = 0x800; }
    else if ((s[0] & 0xf8) == 0xf0) { len = 4; cp = s[0] & 0x07; min = 0x10000; }
    else return 0;
    if (len > n) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    return len;
}

int hp_utf8_valid(const char *s, size_t n)
{
    for (size_t i = 0, adv; i < n; i += adv)
        if ((adv = utf8_seq((const unsigned char *)s + i, n - i)) == 0)
            return 0;
    return 1;
}

/* Appends s as a quoted JSON string; invalid UTF-8 becomes U+FFFD so the
 * output is always valid JSON. */
static int put_string(hp_buf *b, const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t start = 0, i = 0;
    if (hp_buf_add(b, "\"", 1)) return HP_ERROR;
    while (i < n) {
        const char *esc = NULL;
        char tmp[8];
        size_t adv = 1;
        unsigned char c = s[i];
        if (c == '"') esc = "\\\"";
        else if (c == '\\') esc = "\\\\";
        else if (c == '\n') esc = "\\n";
        else if (c == '\r') esc = "\\r";
        else if (c == '\t') esc = "\\t";
        else if (c == '\b') esc = "\\b";
        else if (c == '\f') esc = "\\f";
        else if (c < 0x20) { snprintf(tmp, sizeof tmp, "\\u%04x", c); esc = tmp; }
        else if (c >= 0x80 && (adv = utf8_seq(s + i, n - i)) == 0) { esc = "\\ufffd"; adv = 1; }
        if (esc) {
            if (hp_buf_add(b, s + start, i - start) || hp_buf_add(b, esc, strlen(esc)))
                return HP_ERROR;
            start = i + adv;
        }
        i += adv;
    }
    if (hp_buf_add(b, s + start, n - start) || hp_buf_add(b, "\"", 1)) return HP_ERROR;
    return HP_OK;
}

/* Writes the separator and key a new value needs, after checking that a
 * key is given exactly when the value sits in an object. */
static int begin_value(hp_json *j, const char *key)
{
    int in_object = j->is_object[j->depth];
    if (j->depth == 0 ? (key != NULL || j->has_items[0]) : (in_object != (key != NULL)))
        return HP_ERROR;
    if (j->has_items[j->depth] && hp_buf_add(j->buf, ",", 1)) return HP_ERROR;
    if (key && (put_string(j->buf, key, strlen(key)) || hp_buf_add(j->buf, ":", 1)))
        return HP_ERROR;
    j->has_items[j->depth] = 1;
    return HP_OK;
}

static int put_scalar(hp_json *j, const char *key, const char *text)
{
    if (begin_value(j, key)) return HP_ERROR;
    return hp_buf_add(j->buf, text, strlen(text));
}

int hp_json_w_begin(hp_json *j, const char *key, int object)
{
    if (j->depth >= HP_JSON_MAX_DEPTH || begin_value(j, key)) return HP_ERROR;
    if (hp_buf_add(j->buf, object ? "{" : "[", 1)) return HP_ERROR;
    j->depth++;
    j->is_object[j->depth] = (unsigned char)object;
    j->has_items[j->depth] = 0;
    return HP_OK;
}

int hp_json_w_end(hp_json *j, int object)
{
    if (j->depth == 0 || j->is_object[j->depth] != object) return HP_ERROR;
    if (hp_buf_add(j->buf, object ? "}" : "]", 1)) return HP_ERROR;
    j->depth--;
    return HP_OK;
}

int hp_json_w_string(hp_json *j, const char *key, const char *s, size_t len)
{
    if (!s) return hp_json_w_null(j, key);
    if (begin_value(j, key)) return HP_ERROR;
    return put_string(j->buf, s, len);
}

int hp_json_w_int(hp_json *j, const char *key, long long v)
{
    char tmp[32];
    snprintf(tmp, sizeof tmp, "%lld", v);
    return put_scalar(j, key, tmp);
}

int hp_json_w_double(hp_json *j, const char *key, double v)
{
    char tmp[32];
    if (!isfinite(v)) return put_scalar(j, key, "null");
    snprintf(tmp, sizeof tmp, "%.17g", v);
    return put_scalar(j, key, tmp);
}

int hp_json_w_bool(hp_json *j, const char *key, int v)
{
    return put_scalar(j, key, v ? "true" : "false");
}

int hp_json_w_null(hp_json *j, const char *key)
{
    return put_scalar(j, key, "null");
}
