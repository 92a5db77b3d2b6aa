/* Test module whose hp_init fails when HP_TEST_FAIL_INIT is set, so that it
 * passes the build's smoke check and fails only in server workers. */
#include <hotplate.h>
#include <stdlib.h>

HP_MODULE;

HP_EXPORT int hp_init(hp_module *mod)
{
    if (getenv("HP_TEST_FAIL_INIT")) {
        hp_module_log(mod, HP_LOG_ERROR, "cannot reach the database (test)");
        return HP_ERROR;
    }
    return HP_OK;
}

HP_EXPORT int fragile(hp_request *req, hp_response *res)
{
    hp_res_printf(res, "fragile ok\n");
    return HP_OK;
}
