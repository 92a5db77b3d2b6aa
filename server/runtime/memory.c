/* The request arena, the string builder and the small string helpers. */
#include <ctype.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime.h"

#define ALIGN (_Alignof(max_align_t))
#define MIN_BLOCK 8192

void rt_arena_init(rt_arena *a, void *first, size_t first_size)
{
    rt_arena_block *b = first;
    a->head = a->embedded = NULL;
    if (first && first_size > sizeof *b) {
        b->next = NULL;
        b->size = first_size - sizeof *b;
        b->used = 0;
        a->head = a->embedded = b;
    }
}

void *rt_arena_alloc(rt_arena *a, size_t size)
{
    rt_arena_block *b = a->head;
    size_t need = (size + ALIGN - 1) & ~(ALIGN - 1);
    if (need < size)
        return NULL;
    if (!b || b->size - b->used < need) {
        size_t bsize = need > MIN_BLOCK ? need : MIN_BLOCK;
        if (b && bsize < b->size * 2 && b->size * 2 > b->size)
            bsize = b->size * 2 > need ? b->size * 2 : need;
        if (bsize > SIZE_MAX - sizeof *b)
            return NULL;
        rt_arena_block *nb = malloc(sizeof *nb + bsize);
        if (!nb)
            return NULL;
        nb->next = b;
        nb->size = bsize;
        nb->used = 0;
        a->head = b = nb;
    }
    void *p = b->data + b->used;
    b->used += need;
    return p;
}

void rt_arena_free(rt_arena *a)
{
    rt_arena_block *b = a->head;
    while (b) {
        rt_arena_block *next = b->next;
        if (b != a->embedded)
            free(b);
        b = next;
    }
    a->head = a->embedded = NULL;
}

char *rt_arena_strndup(rt_arena *a, const char *s, size_t len)
{
    char *p = rt_arena_alloc(a, len + 1);
    if (!p)
        return NULL;
    memcpy(p, s, len);
    p[len] = 0;
    return p;
}

void rt_buf_init(hp_buf *b, rt_arena *a)
{
    b->arena = a;
    b->data = "";
    b->len = b->cap = 0;
}

static int buf_reserve(hp_buf *b, size_t extra)
{
    if (b->cap - b->len > extra)
        return HP_OK;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len <= extra) {
        if (cap > SIZE_MAX / 2)
            return HP_ERROR;
        cap *= 2;
    }
    /* The old block stays in the arena until the request ends: growth by
     * doubling bounds the waste at the final size. */
    char *p = rt_arena_alloc(b->arena, cap);
    if (!p)
        return HP_ERROR;
    memcpy(p, b->data, b->len + 1);
    b->data = p;
    b->cap = cap;
    return HP_OK;
}

int rt_buf_add(hp_buf *b, const void *data, size_t len)
{
    if (buf_reserve(b, len) != HP_OK)
        return HP_ERROR;
    memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = 0;
    return HP_OK;
}

int rt_buf_vfmt(hp_buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0 || buf_reserve(b, (size_t)n) != HP_OK)
        return HP_ERROR;
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return HP_OK;
}

int rt_str_caseeq(const char *a, const char *b)
{
    for (; *a && *b; a++, b++)
        if (tolower((unsigned char)*a) != tolower((unsigned char)*b))
            return 0;
    return *a == *b;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

char *rt_decode_url(rt_arena *a, const char *s, size_t len, size_t *out_len)
{
    char *out = rt_arena_alloc(a, len + 1), *o = out;
    if (!out)
        return NULL;
    for (size_t i = 0; i < len; i++) {
        int hi, lo;
        if (s[i] == '+') {
            *o++ = ' ';
        } else if (s[i] == '%' && i + 2 < len &&
                   (hi = hexval((unsigned char)s[i + 1])) >= 0 &&
                   (lo = hexval((unsigned char)s[i + 2])) >= 0) {
            *o++ = (char)(hi * 16 + lo);
            i += 2;
        } else {
            *o++ = s[i];
        }
    }
    *o = 0;
    if (out_len)
        *out_len = (size_t)(o - out);
    return out;
}

char *rt_escape_html(rt_arena *a, const char *s)
{
    hp_buf b;
    rt_buf_init(&b, a);
    for (const char *p = s; *p; p++) {
        const char *rep = NULL;
        switch (*p) {
        case '&': rep = "&amp;"; break;
        case '<': rep = "&lt;"; break;
        case '>': rep = "&gt;"; break;
        case '"': rep = "&quot;"; break;
        case '\'': rep = "&#39;"; break;
        }
        if (rep ? rt_buf_add(&b, rep, strlen(rep)) : rt_buf_add(&b, p, 1))
            return NULL;
    }
    return b.len ? b.data : rt_arena_strndup(a, "", 0);
}
