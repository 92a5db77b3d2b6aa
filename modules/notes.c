/* Notes in SQLite: a module that links an external library by naming it in
 * deploy.yaml (`libs: [sqlite3]`). Each worker opens its own connection in
 * hp_init; the database path comes from the manifest's `config:`. */
#include <hotplate.h>
#include <sqlite3.h>

HP_MODULE;

static sqlite3 *db;

HP_EXPORT int hp_init(hp_module *mod)
{
    const char *path = hp_module_config(mod, "db");
    if (sqlite3_open_v2(path ? path : "notes.db", &db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, NULL) != SQLITE_OK) {
        hp_module_log(mod, HP_LOG_ERROR, "cannot open %s: %s", path, sqlite3_errmsg(db));
        return HP_ERROR;
    }
    sqlite3_busy_timeout(db, 2000);
    sqlite3_exec(db, "PRAGMA journal_mode=WAL", NULL, NULL, NULL); /* readers never wait for the writer */
    return sqlite3_exec(db, "CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)",
                        NULL, NULL, NULL) == SQLITE_OK ? HP_OK : HP_ERROR;
}

HP_EXPORT void hp_fini(hp_module *mod)
{
    sqlite3_close(db);
}

/* POST /notes  (the body is the note's text) */
HP_EXPORT int add_note(hp_request *req, hp_response *res)
{
    size_t len;
    const char *body = hp_req_body(req, &len);
    sqlite3_stmt *st;
    if (len == 0) {
        hp_res_status(res, 400);
        hp_res_printf(res, "send the note's text as the request body\n");
        return HP_OK;
    }
    if (sqlite3_prepare_v2(db, "INSERT INTO notes (body) VALUES (?)", -1, &st, NULL) != SQLITE_OK)
        return HP_ERROR;
    sqlite3_bind_text(st, 1, body, (int)len, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        hp_log(req, HP_LOG_ERROR, "insert failed: %s", sqlite3_errmsg(db));
        return HP_ERROR;
    }
    hp_res_status(res, 201);
    hp_json *j = hp_res_json(res);
    hp_json_begin_object(j, NULL);
    hp_json_int(j, "id", sqlite3_last_insert_rowid(db));
    return hp_json_end_object(j);
}

/* GET /notes */
HP_EXPORT int list_notes(hp_request *req, hp_response *res)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "SELECT id, body FROM notes ORDER BY id DESC LIMIT 100", -1, &st, NULL) != SQLITE_OK)
        return HP_ERROR;
    hp_json *j = hp_res_json(res);
    hp_json_begin_array(j, NULL);
    while (sqlite3_step(st) == SQLITE_ROW) {
        hp_json_begin_object(j, NULL);
        hp_json_int(j, "id", sqlite3_column_int64(st, 0));
        hp_json_stringn(j, "body", (const char *)sqlite3_column_text(st, 1), (size_t)sqlite3_column_bytes(st, 1));
        hp_json_end_object(j);
    }
    sqlite3_finalize(st);
    return hp_json_end_array(j);
}

/* GET /notes/health: the module's health route, used by the deploy gate. */
HP_EXPORT int notes_health(hp_request *req, hp_response *res)
{
    hp_res_status(res, db ? 200 : 503);
    hp_res_printf(res, db ? "ok\n" : "no database\n");
    return HP_OK;
}
