/* Test module: notes in PostgreSQL through libpq (`pkg-config: [libpq]`).
 * A PGconn is not thread-safe, so each handler thread of a worker keeps its
 * own connection, made on first use; hp_init checks the database once and
 * creates the table. */
#include <hotplate.h>
#include <libpq-fe.h>
#include <stdio.h>

HP_MODULE;

static const char *dsn;
static __thread PGconn *conn;

static PGconn *connection(hp_request *req)
{
    if (conn && PQstatus(conn) == CONNECTION_OK)
        return conn;
    PQfinish(conn);
    conn = PQconnectdb(dsn);
    if (PQstatus(conn) != CONNECTION_OK)
        hp_log(req, HP_LOG_ERROR, "postgres: %s", PQerrorMessage(conn));
    return PQstatus(conn) == CONNECTION_OK ? conn : NULL;
}

HP_EXPORT int hp_init(hp_module *mod)
{
    dsn = hp_module_config(mod, "dsn");
    PGconn *c = PQconnectdb(dsn ? dsn : "");
    PGresult *r = PQexec(c, "CREATE TABLE IF NOT EXISTS notes (id serial PRIMARY KEY, body text NOT NULL)");
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok)
        hp_module_log(mod, HP_LOG_ERROR, "postgres: %s", PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
    return ok ? HP_OK : HP_ERROR;
}

/* POST /pg: the body is the note */
HP_EXPORT int add(hp_request *req, hp_response *res)
{
    size_t len;
    const char *body = hp_req_body(req, &len);
    char *text = hp_strndup(req, body, len);
    PGconn *c = connection(req);
    if (!c || !text)
        return HP_ERROR;
    const char *params[] = {text};
    PGresult *r = PQexecParams(c, "INSERT INTO notes (body) VALUES ($1) RETURNING id", 1, NULL, params, NULL, NULL, 0);
    int ok = PQresultStatus(r) == PGRES_TUPLES_OK;
    if (ok) {
        hp_res_status(res, 201);
        hp_res_printf(res, "%s", PQgetvalue(r, 0, 0));
    } else {
        hp_log(req, HP_LOG_ERROR, "postgres: %s", PQerrorMessage(c));
    }
    PQclear(r);
    return ok ? HP_OK : HP_ERROR;
}

/* GET /pg: the notes as JSON */
HP_EXPORT int list(hp_request *req, hp_response *res)
{
    PGconn *c = connection(req);
    if (!c)
        return HP_ERROR;
    PGresult *r = PQexec(c, "SELECT id, body FROM notes ORDER BY id");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        PQclear(r);
        return HP_ERROR;
    }
    hp_json *j = hp_res_json(res);
    hp_json_begin_array(j, NULL);
    for (int i = 0; i < PQntuples(r); i++) {
        hp_json_begin_object(j, NULL);
        hp_json_string(j, "id", PQgetvalue(r, i, 0));
        hp_json_string(j, "body", PQgetvalue(r, i, 1));
        hp_json_end_object(j);
    }
    PQclear(r);
    return hp_json_end_array(j);
}
