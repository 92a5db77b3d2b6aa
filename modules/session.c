/* Sessions with signed cookies (C API level 3): a token that carries the
 * user's name, signed with the module's key and expiring after an hour, in
 * an HttpOnly cookie. No server-side store: the signature is the proof. */
#include <hotplate.h>

HP_MODULE;

/* The signing key is a secret: `hotplate config set --secret SESSION_KEY=...`
 * keeps it out of git. The manifest's key is the demo's fallback. */
static const char *key;

HP_EXPORT int hp_init(hp_module *mod)
{
    key = hp_config("SESSION_KEY");
    if (!key || !*key)
        key = hp_module_config(mod, "key");
    if (!key || !*key) {
        hp_module_log(mod, HP_LOG_ERROR, "no key to sign sessions: hotplate config set --secret SESSION_KEY=...");
        return HP_ERROR;
    }
    return HP_OK;
}

/* POST /session/login?name=Ada */
HP_EXPORT int login(hp_request *req, hp_response *res)
{
    const char *name = hp_req_query(req, "name");
    if (!name || !*name) {
        hp_res_status(res, 400);
        return hp_res_printf(res, "say who you are: /session/login?name=Ada\n");
    }
    const char *token = hp_token_sign(req, key, name, 3600);
    if (!token || hp_res_set_cookie(res, "session", token, 3600, "/", HP_COOKIE_HTTPONLY | HP_COOKIE_SAMESITE_LAX))
        return HP_ERROR;
    return hp_res_printf(res, "logged in as %s\n", name);
}

/* GET /session/me: who the session cookie says you are, or 401. */
HP_EXPORT int me(hp_request *req, hp_response *res)
{
    const char *token = hp_req_cookie(req, "session");
    const char *name = token ? hp_token_verify(req, key, token) : NULL;
    if (!name) {
        hp_res_status(res, 401);
        return hp_res_printf(res, "not logged in (or the session expired)\n");
    }
    return hp_res_printf(res, "you are %s\n", name);
}

/* POST /session/logout: the browser drops the cookie. */
HP_EXPORT int logout(hp_request *req, hp_response *res)
{
    (void)req;
    if (hp_res_set_cookie(res, "session", "", 0, "/", HP_COOKIE_HTTPONLY | HP_COOKIE_SAMESITE_LAX))
        return HP_ERROR;
    return hp_res_printf(res, "logged out\n");
}
