/* Test module whose hp_init fails when a file "fail-init" exists in the
 * working directory. Workers run in the state directory and the build's smoke
 * check does not, so the module passes the check and fails only in workers. */
#include <hotplate.h>
#include <unistd.h>

HP_MODULE;

HP_EXPORT int hp_init(hp_module *mod)
{
    if (access("fail-init", F_OK) == 0) {
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
