/* The WebSocket side of the API: what a handler asks of its connection.
 *
 * Nothing here touches a socket. Every send, close, subscription and
 * publication is appended to the call's outbox, a byte string the host
 * (server/websocket/) reads after the handler returns and carries out. That
 * keeps module code off the event loop's data structures and makes a
 * handler's effects all-or-nothing: a handler that crashes sends nothing.
 *
 * Outbox record: struct { u8 action; u8 type; u16 code; u32 len_a; u32 len_b }
 * in host byte order, then len_a bytes, then len_b bytes. */
#include <stdio.h>
#include <string.h>

#include "runtime.h"

#define TOPIC_MAX 255
#define REASON_MAX 123

typedef struct {
    unsigned char action, type;
    unsigned short code;
    unsigned len_a, len_b;
} outbox_record;

static int emit(hp_request *r, int action, int type, int code,
                const void *a, size_t len_a, const void *b, size_t len_b)
{
    outbox_record rec = {(unsigned char)action, (unsigned char)type, (unsigned short)code,
                         (unsigned)len_a, (unsigned)len_b};
    if (len_a > 0xffffffffu || len_b > 0xffffffffu)
        return HP_ERROR;
    size_t mark = r->outbox.len;
    if (rt_buf_add(&r->outbox, &rec, sizeof rec) || (len_a && rt_buf_add(&r->outbox, a, len_a)) ||
        (len_b && rt_buf_add(&r->outbox, b, len_b))) {
        r->outbox.len = mark; /* no half record */
        return HP_ERROR;
    }
    return HP_OK;
}

static int payload_ok(const void *data, size_t len, int type)
{
    if (type == HP_WS_BINARY)
        return data || !len;
    return type == HP_WS_TEXT && (data || !len) && rt_utf8_valid(data, len);
}

static int topic_ok(const char *topic)
{
    size_t n = topic ? strnlen(topic, TOPIC_MAX + 1) : 0;
    return n > 0 && n <= TOPIC_MAX;
}

hp_request *rt_ws_api_request(hp_ws *ws) { return ws->req; }
const char *rt_ws_api_id(const hp_ws *ws) { return ws->req->id; }
const char *rt_ws_api_subprotocol(const hp_ws *ws) { return ws->subprotocol; }

int rt_ws_api_send(hp_ws *ws, const void *data, size_t len, int type)
{
    if (ws->event == HP_RT_WS_CLOSE || !payload_ok(data, len, type))
        return HP_ERROR;
    return emit(ws->req, HP_RT_OUT_SEND, type, 0, data, len, NULL, 0);
}

int rt_ws_api_vprintf(hp_ws *ws, const char *fmt, va_list ap)
{
    hp_buf text;
    rt_buf_init(&text, &ws->req->arena);
    if (rt_buf_vfmt(&text, fmt, ap))
        return HP_ERROR;
    return rt_ws_api_send(ws, text.data, text.len, HP_WS_TEXT);
}

int rt_ws_api_close(hp_ws *ws, int code, const char *reason)
{
    size_t n = reason ? strlen(reason) : 0;
    int code_ok = code == 1000 || code == 1001 || code == 1003 || code == 1008 || code == 1011 ||
                  (code >= 3000 && code <= 4999);
    if (ws->event == HP_RT_WS_CLOSE || !code_ok || n > REASON_MAX || !rt_utf8_valid(reason ? reason : "", n))
        return HP_ERROR;
    return emit(ws->req, HP_RT_OUT_CLOSE, 0, code, reason, n, NULL, 0);
}

void *rt_ws_api_state(hp_ws *ws, size_t size)
{
    if (size > HP_WS_STATE_MAX)
        return NULL;
    if (size > ws->state_len) {
        unsigned char *grown = rt_arena_alloc(&ws->req->arena, size);
        if (!grown)
            return NULL;
        memcpy(grown, ws->state, ws->state_len);
        memset(grown + ws->state_len, 0, size - ws->state_len);
        ws->state = grown;
        ws->state_len = size;
    }
    ws->state_used = 1;
    return ws->state;
}

int rt_ws_api_subscribe(hp_ws *ws, const char *topic)
{
    if (!topic_ok(topic))
        return HP_ERROR;
    return emit(ws->req, HP_RT_OUT_SUBSCRIBE, 0, 0, topic, strlen(topic), NULL, 0);
}

int rt_ws_api_unsubscribe(hp_ws *ws, const char *topic)
{
    if (!topic_ok(topic))
        return HP_ERROR;
    return emit(ws->req, HP_RT_OUT_UNSUBSCRIBE, 0, 0, topic, strlen(topic), NULL, 0);
}

int rt_ws_api_send_position(hp_ws *ws, const char *prefix)
{
    size_t len = prefix ? strnlen(prefix, 65) : 0;
    if (len > 64 || !rt_utf8_valid(prefix ? prefix : "", len))
        return HP_ERROR;
    return emit(ws->req, HP_RT_OUT_SEND_POSITION, HP_WS_TEXT, 0, prefix ? prefix : "", len, NULL, 0);
}

int rt_ws_api_resume(hp_ws *ws, const char *position)
{
    if (!position)
        return HP_ERROR;
    size_t len = strnlen(position, HP_WS_POSITION_MAX + 1);
    if (len == 0 || len > HP_WS_POSITION_MAX || strspn(position, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                                                 "0123456789-_") != len)
        return HP_ERROR;
    return emit(ws->req, HP_RT_OUT_RESUME, 0, 0, position, len, NULL, 0);
}

int rt_api_publish(hp_request *req, const char *topic, const void *data, size_t len, int type)
{
    if (!topic_ok(topic) || len > HP_PUBLISH_MAX || !payload_ok(data, len, type))
        return HP_ERROR;
    return emit(req, HP_RT_OUT_PUBLISH, type, 0, topic, strlen(topic), data, len);
}
