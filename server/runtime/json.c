/* The JSON writer behind hp_json_*, and request-body parsing with jansson.
 * Parsing is left to jansson (strict RFC 8259, UTF-8 checked, error
 * positions); writing is small enough to do here without building a tree. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "runtime.h"

void rt_json_init(hp_json *j, hp_buf *buf)
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

int rt_utf8_valid(const char *s, size_t n)
{
    for (size_t i = 0, adv; i < n; i += adv)
        if ((adv = utf8_seq((const unsigned char *)s + i, n - i)) == 0)
            return 0;
    return 1;
}

/* Bytes that a JSON string cannot hold as they are: quote, backslash,
 * controls, and non-ASCII (checked as UTF-8 by put_string). */
static int plain(unsigned char c)
{
    return c >= 0x20 && c < 0x80 && c != '"' && c != '\\';
}

/* Appends s as a quoted JSON string; invalid UTF-8 becomes U+FFFD so the
 * output is always valid JSON. */
static int put_string(hp_buf *b, const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t start = 0, i = 0;
    if (rt_buf_add(b, "\"", 1)) return HP_ERROR;
    while (i < n) {
        if (plain(s[i])) {
            i++;
            continue;
        }
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
            if (rt_buf_add(b, s + start, i - start) || rt_buf_add(b, esc, strlen(esc)))
                return HP_ERROR;
            start = i + adv;
        }
        i += adv;
    }
    if (rt_buf_add(b, s + start, n - start) || rt_buf_add(b, "\"", 1)) return HP_ERROR;
    return HP_OK;
}

/* Writes the separator and key a new value needs, then text (if any), after
 * checking that a key is given exactly when the value sits in an object.
 * The usual case, a short key of plain ASCII, is one copy into the buffer. */
static int put_value(hp_json *j, const char *key, const char *text, size_t text_len)
{
    int in_object = j->is_object[j->depth];
    if (j->depth == 0 ? (key != NULL || j->has_items[0]) : (in_object != (key != NULL)))
        return HP_ERROR;
    char line[192];
    size_t n = 0;
    if (j->has_items[j->depth])
        line[n++] = ',';
    j->has_items[j->depth] = 1;
    if (key) {
        const char *k = key;
        line[n++] = '"';
        while (*k && plain((unsigned char)*k) && n < 120)
            line[n++] = *k++;
        if (*k) { /* a long key, or one that needs escapes: the general way */
            n -= (size_t)(k - key) + 1;
            if (rt_buf_add(j->buf, line, n) || put_string(j->buf, key, strlen(key)) || rt_buf_add(j->buf, ":", 1))
                return HP_ERROR;
            return rt_buf_add(j->buf, text, text_len);
        }
        line[n++] = '"';
        line[n++] = ':';
    }
    if (text_len <= sizeof line - n) {
        memcpy(line + n, text, text_len);
        return rt_buf_add(j->buf, line, n + text_len);
    }
    return rt_buf_add(j->buf, line, n) || rt_buf_add(j->buf, text, text_len) ? HP_ERROR : HP_OK;
}

static int begin_value(hp_json *j, const char *key)
{
    return put_value(j, key, "", 0);
}

static int put_scalar(hp_json *j, const char *key, const char *text)
{
    return put_value(j, key, text, strlen(text));
}

/* Decimal digits of v into the end of out; returns where they start. */
static char *digits(char *end, unsigned long long v)
{
    do {
        *--end = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return end;
}

static size_t format_int(char out[32], long long v)
{
    char tmp[24], *end = tmp + sizeof tmp;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    char *p = digits(end, u);
    if (v < 0)
        *--p = '-';
    size_t n = (size_t)(end - p);
    memcpy(out, p, n);
    return n;
}

/* A finite double as the shortest decimal that reads back as the same
 * double when it has at most 6 digits after the point and 15 in all (the
 * common case: 3, 1.25, 0.1), checked by dividing back (exact: both sides
 * are exact integers, and IEEE division rounds correctly); else %.17g. */
static size_t format_double(char out[32], double v)
{
    static const double scale[] = {1, 10, 100, 1e3, 1e4, 1e5, 1e6};
    for (int k = 0; k <= 6; k++) {
        double x = v * scale[k];
        if (!(fabs(x) < 1e15) || x != (double)(long long)x || (double)(long long)x / scale[k] != v)
            continue;
        long long n = (long long)x;
        char tmp[32], *end = tmp + sizeof tmp;
        char *p = digits(end, n < 0 ? 0ULL - (unsigned long long)n : (unsigned long long)n);
        while (end - p <= k)
            *--p = '0';
        size_t len = (size_t)(end - p), o = 0;
        if (n < 0 || (n == 0 && signbit(v)))
            out[o++] = '-';
        memcpy(out + o, p, len - (size_t)k);
        o += len - (size_t)k;
        if (k) {
            out[o++] = '.';
            memcpy(out + o, end - k, (size_t)k);
            o += (size_t)k;
        }
        return o;
    }
    return (size_t)snprintf(out, 32, "%.17g", v);
}

int rt_json_w_begin(hp_json *j, const char *key, int object)
{
    if (j->depth >= HP_JSON_MAX_DEPTH || begin_value(j, key)) return HP_ERROR;
    if (rt_buf_add(j->buf, object ? "{" : "[", 1)) return HP_ERROR;
    j->depth++;
    j->is_object[j->depth] = (unsigned char)object;
    j->has_items[j->depth] = 0;
    return HP_OK;
}

int rt_json_w_end(hp_json *j, int object)
{
    if (j->depth == 0 || j->is_object[j->depth] != object) return HP_ERROR;
    if (rt_buf_add(j->buf, object ? "}" : "]", 1)) return HP_ERROR;
    j->depth--;
    return HP_OK;
}

int rt_json_w_string(hp_json *j, const char *key, const char *s, size_t len)
{
    if (!s) return rt_json_w_null(j, key);
    char quoted[64];
    if (len + 2 <= sizeof quoted) { /* short and plain: with its key, in one copy */
        size_t i = 0;
        while (i < len && plain((unsigned char)s[i]))
            i++;
        if (i == len) {
            quoted[0] = '"';
            memcpy(quoted + 1, s, len);
            quoted[len + 1] = '"';
            return put_value(j, key, quoted, len + 2);
        }
    }
    if (begin_value(j, key)) return HP_ERROR;
    return put_string(j->buf, s, len);
}

int rt_json_w_int(hp_json *j, const char *key, long long v)
{
    char tmp[32];
    return put_value(j, key, tmp, format_int(tmp, v));
}

int rt_json_w_double(hp_json *j, const char *key, double v)
{
    char tmp[32];
    if (!isfinite(v)) return put_scalar(j, key, "null");
    return put_value(j, key, tmp, format_double(tmp, v));
}

int rt_json_w_bool(hp_json *j, const char *key, int v)
{
    return put_scalar(j, key, v ? "true" : "false");
}

int rt_json_w_null(hp_json *j, const char *key)
{
    return put_scalar(j, key, "null");
}
