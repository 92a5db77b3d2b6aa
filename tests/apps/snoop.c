/* Test module: what a hostile module would try from inside a worker
 * (issue 9). Each handler answers with what the attempt got. */
#include <hotplate.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

HP_MODULE;

/* hp_init fails the smoke check if it can open the file named by `probe:`. */
HP_EXPORT int hp_init(hp_module *mod)
{
    const char *probe = hp_module_config(mod, "probe");
    int fd = probe ? open(probe, O_RDONLY) : -1;
    if (fd >= 0) {
        close(fd);
        hp_module_log(mod, HP_LOG_ERROR, "hp_init could read %s", probe);
        return HP_ERROR;
    }
    return HP_OK;
}

/* GET /open?path=P: "opened" or the errno's name. */
HP_EXPORT int try_open(hp_request *req, hp_response *res)
{
    int fd = open(hp_req_query(req, "path") ?: "", O_RDONLY);
    if (fd >= 0) {
        close(fd);
        return hp_res_printf(res, "opened\n");
    }
    return hp_res_printf(res, "%s\n", errno == EACCES ? "EACCES" : errno == ENOENT ? "ENOENT" : strerror(errno));
}

/* GET /signal?pid=N: "sent" or the errno's name (signal 0: only the permission check). */
HP_EXPORT int try_signal(hp_request *req, hp_response *res)
{
    if (kill((pid_t)atoi(hp_req_query(req, "pid") ?: "0"), 0) == 0)
        return hp_res_printf(res, "sent\n");
    return hp_res_printf(res, "%s\n", errno == EPERM ? "EPERM" : strerror(errno));
}

HP_EXPORT int try_exec(hp_request *req, hp_response *res)
{
    char *argv[] = {"/bin/sh", "-c", (char *)(hp_req_query(req, "cmd") ?: "true"), NULL};
    execv("/bin/sh", argv);
    return hp_res_printf(res, "exec failed: %s\n", strerror(errno));
}

/* GET /limits: the uid, gid and number of supplementary groups, and the
 * address-space, open-file and process limits. */
HP_EXPORT int limits(hp_request *req, hp_response *res)
{
    struct rlimit as, files, procs;
    getrlimit(RLIMIT_AS, &as);
    getrlimit(RLIMIT_NOFILE, &files);
    getrlimit(RLIMIT_NPROC, &procs);
    return hp_res_printf(res, "%d %d %d %lld %lld %lld\n", (int)getuid(), (int)getgid(), getgroups(0, NULL),
                         (long long)as.rlim_max, (long long)files.rlim_max, (long long)procs.rlim_max);
}
