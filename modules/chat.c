/* Chat rooms over WebSockets: open http://127.0.0.1:8000/chat in two tabs.
 *
 * A connection keeps its nickname in its hotplate state, not in a global,
 * so a deploy that changes this file keeps every room connected. Messages
 * go through publish/subscribe, so they reach people on every worker. */
#include <hotplate.h>
#include <string.h>

HP_MODULE;

struct member {
    char nick[32];
};

/* Publishes {"nick": ..., "text": ...} to the connection's room. */
static int say(hp_ws *ws, const char *nick, const char *text, size_t len)
{
    hp_request *req = hp_ws_request(ws);
    hp_buf *out = hp_buf_new(req);
    hp_json *j = hp_json_new(out);
    hp_json_begin_object(j, NULL);
    hp_json_string(j, "nick", nick);
    hp_json_stringn(j, "text", text, len);
    hp_json_end_object(j);
    return hp_ws_publish(ws, hp_req_param(req, "room"), hp_buf_data(out), hp_buf_len(out), HP_WS_TEXT);
}

/* ws://.../chat/<room>?nick=Ada */
HP_EXPORT int chat_open(hp_ws *ws)
{
    struct member *me = hp_ws_state(ws, sizeof *me);
    const char *nick = hp_req_query(hp_ws_request(ws), "nick");
    strncpy(me->nick, nick && *nick ? nick : "anonymous", sizeof me->nick - 1);
    hp_ws_subscribe(ws, hp_req_param(hp_ws_request(ws), "room"));
    return say(ws, me->nick, "(joined)", 8);
}

HP_EXPORT int chat_message(hp_ws *ws, const void *text, size_t len, int type)
{
    struct member *me = hp_ws_state(ws, sizeof *me);
    if (type != HP_WS_TEXT)
        return hp_ws_close(ws, 1003, "text messages only");
    return say(ws, me->nick, text, len);
}

HP_EXPORT void chat_close(hp_ws *ws, int code, const char *reason)
{
    struct member *me = hp_ws_state(ws, sizeof *me);
    (void)code, (void)reason;
    say(ws, me->nick, "(left)", 6);
}

/* GET /chat: a page that talks to the WebSocket route. */
HP_EXPORT int chat_page(hp_request *req, hp_response *res)
{
    (void)req;
    hp_res_content_type(res, "text/html; charset=utf-8");
    hp_res_printf(res, "%s",
        "<!doctype html><title>hotplate chat</title>\n"
        "<p>room <input id=room value=lobby> nick <input id=nick value=ada>"
        " <button onclick=join()>join</button></p><ul id=log></ul>"
        "<form onsubmit='ws.send(msg.value); msg.value=\"\"; return false'><input id=msg></form>\n"
        "<script>let ws; function join() {\n"
        "  ws = new WebSocket(`ws://${location.host}/chat/${room.value}?nick=${encodeURIComponent(nick.value)}`);\n"
        "  ws.onmessage = e => { const m = JSON.parse(e.data), li = document.createElement('li');\n"
        "    li.textContent = `${m.nick}: ${m.text}`; log.append(li); };\n"
        "  ws.onclose = e => log.append(`closed ${e.code} ${e.reason}`); }</script>\n");
    return HP_OK;
}
