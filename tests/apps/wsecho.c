/* WebSocket test module: echo tagged with a version, state, pub/sub, faults. */
#include <hotplate.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

HP_MODULE;

#ifndef VERSION
#define VERSION "v1"
#endif

struct conn_state {
    unsigned count; /* messages seen by this connection, across deploys */
    char room[32];
};

HP_EXPORT int ws_open(hp_ws *ws)
{
    hp_request *req = hp_ws_request(ws);
    const char *token = hp_req_query(req, "token");
    if (token && strcmp(token, "bad") == 0)
        return HP_ERROR;
    struct conn_state *st = hp_ws_state(ws, sizeof *st);
    const char *room = hp_req_param(req, "room");
    snprintf(st->room, sizeof st->room, "%s", room ? room : "lobby");
    hp_ws_subscribe(ws, st->room);
    hp_ws_printf(ws, "hello %s %s %s", VERSION, hp_ws_id(ws), hp_ws_subprotocol(ws));
    const char *position = hp_req_query(req, "resume");
    if (position && hp_ws_resume(ws, position) != HP_OK)
        return hp_ws_close(ws, 4001, "bad position");
    return HP_OK;
}

HP_EXPORT int ws_message(hp_ws *ws, const void *data, size_t len, int type)
{
    struct conn_state *st = hp_ws_state(ws, sizeof *st);
    st->count++;
    if (type == HP_WS_BINARY)
        return hp_ws_send(ws, data, len, HP_WS_BINARY);
    const char *text = data;
    if (strncmp(text, "pub ", 4) == 0)
        return hp_ws_publish(ws, st->room, text + 4, len - 4, HP_WS_TEXT);
    if (strcmp(text, "position") == 0)
        return hp_ws_send_position(ws, "pos:");
    if (strcmp(text, "close") == 0)
        return hp_ws_close(ws, 4000, "asked to");
    if (strcmp(text, "crash") == 0)
        *(volatile int *)0 = 1;
    if (strcmp(text, "fail") == 0)
        return HP_ERROR;
    if (strcmp(text, "spin") == 0)
        for (;;)
            ;
    if (strcmp(text, "bigstate") == 0)
        return hp_ws_state(ws, HP_WS_STATE_MAX + 1) == NULL ? hp_ws_send_text(ws, "refused") : HP_ERROR;
    return hp_ws_printf(ws, "%s %u %s", VERSION, st->count, text);
}

HP_EXPORT void ws_close(hp_ws *ws, int code, const char *reason)
{
    struct conn_state *st = hp_ws_state(ws, sizeof *st);
    char line[128];
    int n = snprintf(line, sizeof line, "left %s %d %s", hp_ws_id(ws), code, reason);
    hp_ws_publish(ws, "closed", line, (size_t)n, HP_WS_TEXT);
    (void)st;
}

/* HTTP: publish to a room. POST /say/<room> with the message as the body. */
HP_EXPORT int say(hp_request *req, hp_response *res)
{
    size_t len;
    const void *body = hp_req_body(req, &len);
    if (hp_publish(req, hp_req_param(req, "room"), body, len, HP_WS_TEXT) != HP_OK) {
        hp_res_status(res, 400);
        return HP_OK;
    }
    hp_res_printf(res, "published\n");
    return HP_OK;
}

#ifndef HEALTH
#define HEALTH 200
#endif

HP_EXPORT int health(hp_request *req, hp_response *res)
{
    (void)req;
    hp_res_status(res, HEALTH);
    return HP_OK;
}
