/* Form bodies (hp_req_form*): application/x-www-form-urlencoded, split
 * like a query string, and multipart/form-data (RFC 7578), whose parts are
 * slices of the body. Parsed once, on first use; a malformed body gives no
 * fields and a reason (hp_req_form_error), never a partial list. */
#define _GNU_SOURCE
#include <string.h>

#include "runtime.h"

/* The value of parameter name in a header like
 * `form-data; name="f"; filename="a b.txt"`, in the arena; NULL if absent. */
static const char *header_param(hp_request *r, const char *h, size_t hlen, const char *name)
{
    size_t nlen = strlen(name);
    const char *end = h + hlen;
    for (const char *p = h; p < end;) {
        const char *semi = memchr(p, ';', (size_t)(end - p));
        if (!semi)
            return NULL;
        p = semi + 1;
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        if ((size_t)(end - p) > nlen && !strncasecmp(p, name, nlen) && p[nlen] == '=') {
            const char *v = p + nlen + 1, *vend;
            if (v < end && *v == '"') {
                v++;
                for (vend = v; vend < end && *vend != '"'; vend += (*vend == '\\' && vend + 1 < end) ? 2 : 1)
                    ;
            } else {
                for (vend = v; vend < end && *vend != ';'; vend++) /* a slice of the body: no NUL to stop at */
                    ;
            }
            return rt_arena_strndup(&r->arena, v, (size_t)(vend - v));
        }
    }
    return NULL;
}

static int refuse(hp_request *r, const char *why)
{
    r->form_error = why;
    r->nform = 0;
    return HP_ERROR;
}

static int parse_urlencoded(hp_request *r)
{
    char *text = rt_arena_strndup(&r->arena, r->body, r->body_len);
    size_t n;
    rt_pair *pairs = text ? rt_split_pairs(r, text, '&', 1, &n) : NULL;
    if (!pairs)
        return refuse(r, "out of memory");
    if (n > HP_FORM_MAX_FIELDS)
        return refuse(r, "form: more than 1000 fields (HP_FORM_MAX_FIELDS)");
    if (!(r->form = rt_arena_alloc(&r->arena, (n ? n : 1) * sizeof *r->form)))
        return refuse(r, "out of memory");
    for (size_t i = 0; i < n; i++)
        r->form[i] = (hp_part){.name = pairs[i].name, .data = pairs[i].value, .len = strlen(pairs[i].value)};
    r->nform = n;
    return HP_OK;
}

/* The headers of one part, from p up to the blank line; sets its fields. */
static int part_headers(hp_request *r, const char *p, const char *end, hp_part *part)
{
    while (p < end) {
        const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
        size_t len = eol ? (size_t)(eol - p) : (size_t)(end - p);
        const char *colon = memchr(p, ':', len);
        if (colon) {
            const char *v = colon + 1;
            while (v < p + len && (*v == ' ' || *v == '\t'))
                v++;
            size_t klen = (size_t)(colon - p), vlen = (size_t)(p + len - v);
            if (klen == 19 && !strncasecmp(p, "Content-Disposition", 19)) {
                if (vlen < 9 || strncasecmp(v, "form-data", 9))
                    return refuse(r, "multipart: a part's Content-Disposition is not form-data");
                part->name = header_param(r, v, vlen, "name");
                part->filename = header_param(r, v, vlen, "filename");
            } else if (klen == 12 && !strncasecmp(p, "Content-Type", 12)) {
                part->content_type = rt_arena_strndup(&r->arena, v, vlen);
            }
        }
        p += len + 2;
    }
    return part->name ? HP_OK : refuse(r, "multipart: a part has no name");
}

static int parse_multipart(hp_request *r, const char *content_type)
{
    const char *boundary = header_param(r, content_type, strlen(content_type), "boundary");
    size_t blen = boundary ? strlen(boundary) : 0;
    if (blen == 0 || blen > 70)
        return refuse(r, "multipart: no boundary, or one longer than 70 characters, in Content-Type");
    char *delim = rt_arena_alloc(&r->arena, blen + 5);
    if (!delim || !(r->form = rt_arena_alloc(&r->arena, 16 * sizeof *r->form)))
        return refuse(r, "out of memory");
    memcpy(delim, "\r\n--", 4);
    memcpy(delim + 4, boundary, blen + 1);
    size_t dlen = blen + 4, cap = 16;
    const char *body = r->body, *end = r->body + r->body_len;
    /* the first delimiter may open the body without its CRLF */
    const char *p = r->body_len >= dlen - 2 && !memcmp(body, delim + 2, dlen - 2) ? body + dlen - 2
                  : memmem(body, r->body_len, delim, dlen);
    if (!p)
        return refuse(r, "multipart: the boundary never appears in the body");
    if (p != body + dlen - 2)
        p += dlen;
    for (;;) {
        if (end - p >= 2 && !memcmp(p, "--", 2))
            return HP_OK; /* the closing delimiter */
        if (end - p < 2 || memcmp(p, "\r\n", 2))
            return refuse(r, "multipart: a boundary is not followed by CRLF");
        p += 2;
        const char *blank = memmem(p, (size_t)(end - p), "\r\n\r\n", 4);
        const char *next = blank ? memmem(blank + 4, (size_t)(end - blank - 4), delim, dlen) : NULL;
        if (!blank || !next)
            return refuse(r, "multipart: no closing boundary");
        if (r->nform == HP_FORM_MAX_FIELDS)
            return refuse(r, "multipart: more than 1000 parts (HP_FORM_MAX_FIELDS)");
        if (r->nform == cap) {
            hp_part *grown = rt_arena_alloc(&r->arena, 2 * cap * sizeof *grown);
            if (!grown)
                return refuse(r, "out of memory");
            memcpy(grown, r->form, cap * sizeof *grown);
            r->form = grown;
            cap *= 2;
        }
        hp_part *part = &r->form[r->nform];
        *part = (hp_part){.data = blank + 4, .len = (size_t)(next - blank - 4)};
        if (part_headers(r, p, blank + 2, part))
            return HP_ERROR;
        r->nform++;
        p = next + dlen;
    }
}

static void parse(hp_request *r)
{
    if (r->form_parsed)
        return;
    r->form_parsed = 1;
    const char *type = rt_request_header(r, "content-type");
    if (!type)
        return;
    size_t tlen = strcspn(type, "; \t");
    if (tlen == 33 && !strncasecmp(type, "application/x-www-form-urlencoded", 33))
        parse_urlencoded(r);
    else if (tlen == 19 && !strncasecmp(type, "multipart/form-data", 19))
        parse_multipart(r, type);
}

const char *rt_api_req_form(hp_request *r, const char *name)
{
    parse(r);
    for (size_t i = 0; name && i < r->nform; i++)
        if (!strcmp(r->form[i].name, name)) /* a multipart slice has no NUL of its own */
            return rt_arena_strndup(&r->arena, r->form[i].data, r->form[i].len);
    return NULL;
}

int rt_api_req_form_at(hp_request *r, size_t i, hp_part *part)
{
    parse(r);
    if (i >= r->nform || !part)
        return HP_ERROR;
    *part = r->form[i];
    return HP_OK;
}

const char *rt_api_req_form_error(hp_request *r)
{
    parse(r);
    return r->form_error;
}
