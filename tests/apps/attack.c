/* Test module: a hostile module at the fences between root and module code
 * (issue 19). Each handler tries one thing and answers with what it got:
 * "ok" (or a figure) when it worked, else the errno's name. */
#define _GNU_SOURCE
#include <hotplate.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

HP_MODULE;

static const char *err_name(int e)
{
    switch (e) {
    case EACCES: return "EACCES";
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case ENOSYS: return "ENOSYS";
    case ENOMEM: return "ENOMEM";
    case ENOSPC: return "ENOSPC";
    case EEXIST: return "EEXIST";
    case ESRCH: return "ESRCH";
    default: return strerror(e);
    }
}

static int answer(hp_response *res, int rc)
{
    return rc == 0 ? hp_res_printf(res, "ok\n") : hp_res_printf(res, "%s\n", err_name(errno));
}

static const char *q(hp_request *req, const char *name) { return hp_req_query(req, name) ?: ""; }

/* A child that leaves its parent (double fork, a session of its own) and sleeps. */
static pid_t detach(void)
{
    int fds[2];
    if (pipe(fds))
        return -1;
    pid_t first = fork();
    if (first == 0) {
        setsid();
        pid_t second = fork();
        if (second == 0) {
            close(fds[0]);
            pid_t me = getpid();
            write(fds[1], &me, sizeof me);
            close(fds[1]);
            for (;;)
                pause();
        }
        _exit(0);
    }
    close(fds[1]);
    pid_t got = -1;
    read(fds[0], &got, sizeof got);
    close(fds[0]);
    waitpid(first, NULL, 0);
    return got;
}

/* How many listening sockets of `family` this process holds: whoever
 * holds one could accept what was meant for its owner. */
static int listeners(int family)
{
    int n = 0;
    for (int fd = 0; fd < 1024; fd++) {
        int on = 0, domain = 0;
        socklen_t len = sizeof on;
        if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &len) || !on)
            continue;
        len = sizeof domain;
        if (!getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) && domain == family)
            n++;
    }
    return n;
}

/* hp_init: `detach: yes` leaves a process behind; `hang: yes` never returns.
 * It fails if it can accept on a Unix socket (the master's line), or, in
 * the smoke check (a scratch directory), on any socket at all. */
HP_EXPORT int hp_init(hp_module *mod)
{
    char cwd[4096];
    int smoke = getcwd(cwd, sizeof cwd) && strstr(cwd, "/.smoke-");
    if (listeners(AF_UNIX) || (smoke && (listeners(AF_INET) || listeners(AF_INET6)))) {
        hp_module_log(mod, HP_LOG_ERROR, "this process can accept connections meant for another (%d unix, %d tcp)",
               listeners(AF_UNIX), listeners(AF_INET) + listeners(AF_INET6));
        return HP_ERROR;
    }
    const char *d = hp_module_config(mod, "detach"), *h = hp_module_config(mod, "hang");
    if (d && !strcmp(d, "yes"))
        detach();
    if (h && !strcmp(h, "yes")) {
        detach();
        for (;;)
            pause();
    }
    return HP_OK;
}

/* GET /plant?kind=link|fifo|file&path=P[&target=T]: make P. */
HP_EXPORT int plant(hp_request *req, hp_response *res)
{
    const char *kind = q(req, "kind"), *path = q(req, "path");
    if (!strcmp(kind, "link"))
        return answer(res, symlink(q(req, "target"), path));
    if (!strcmp(kind, "fifo"))
        return answer(res, mkfifo(path, 0666));
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0666);
    if (fd < 0)
        return answer(res, -1);
    static const char junk[] = "\xff\xff\xff\x7f not json {{{";
    write(fd, junk, sizeof junk);
    close(fd);
    return answer(res, 0);
}

/* GET /read?path=P: the first line of P. */
HP_EXPORT int read_file(hp_request *req, hp_response *res)
{
    FILE *f = fopen(q(req, "path"), "r");
    if (!f)
        return answer(res, -1);
    char line[4096] = "";
    size_t n = fread(line, 1, sizeof line - 1, f);
    fclose(f);
    for (size_t i = 0; i < n; i++)
        if (line[i] == '\0')
            line[i] = '\n';
    return hp_res_printf(res, "%s", line);
}

/* GET /fork: a detached process; answers its pid. */
HP_EXPORT int fork_away(hp_request *req, hp_response *res)
{
    (void)req;
    return hp_res_printf(res, "%d\n", (int)detach());
}

/* GET /fill?path=P: write P until the disk is full; answers the MiB written. */
HP_EXPORT int fill(hp_request *req, hp_response *res)
{
    int fd = open(q(req, "path"), O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (fd < 0)
        return answer(res, -1);
    static char chunk[1 << 20];
    memset(chunk, 'x', sizeof chunk);
    long mib = 0;
    while (write(fd, chunk, sizeof chunk) == (ssize_t)sizeof chunk)
        mib++;
    int e = errno;
    close(fd);
    return hp_res_printf(res, "%ld %s\n", mib, err_name(e));
}

/* GET /alloc?mib=N: allocate and touch N MiB in this call. */
HP_EXPORT int alloc(hp_request *req, hp_response *res)
{
    size_t n = (size_t)atol(q(req, "mib")) << 20;
    char *p = malloc(n);
    if (!p)
        return answer(res, -1);
    for (size_t i = 0; i < n; i += 4096)
        p[i] = 1;
    free(p);
    return hp_res_printf(res, "touched\n");
}

/* GET /reserve?gib=N: reserve N GiB of address space, touching none. */
HP_EXPORT int reserve(hp_request *req, hp_response *res)
{
    size_t n = (size_t)atol(q(req, "gib")) << 30;
    void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        return answer(res, -1);
    munmap(p, n);
    return answer(res, 0);
}

/* What a clone returned: the child leaves at once, the parent reaps it. */
static int cloned(hp_response *res, long pid)
{
    if (pid == 0)
        _exit(0);
    if (pid > 0)
        waitpid((pid_t)pid, NULL, 0);
    return answer(res, pid > 0 ? 0 : -1);
}

/* GET /clone?ns=user|mount|net|pid: a child in a new namespace. */
HP_EXPORT int clone_ns(hp_request *req, hp_response *res)
{
    const char *ns = q(req, "ns");
    long flag = !strcmp(ns, "user") ? CLONE_NEWUSER : !strcmp(ns, "mount") ? CLONE_NEWNS
              : !strcmp(ns, "net") ? CLONE_NEWNET : CLONE_NEWPID;
    return cloned(res, syscall(SYS_clone, flag | SIGCHLD, 0, 0, 0, 0));
}

/* GET /clone3: clone3 itself (libc falls back to clone on ENOSYS). */
HP_EXPORT int clone3_call(hp_request *req, hp_response *res)
{
    (void)req;
    struct { unsigned long long flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls; } args = {
        .exit_signal = SIGCHLD};
    return cloned(res, syscall(SYS_clone3, &args, sizeof args));
}

/* GET /io_uring: set up a ring. */
HP_EXPORT int uring(hp_request *req, hp_response *res)
{
    (void)req;
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    long fd = syscall(SYS_io_uring_setup, 4, &p);
    if (fd >= 0)
        close((int)fd);
    return answer(res, fd >= 0 ? 0 : -1);
}

/* GET /getfd?pid=N: take descriptor 0 of process N. */
HP_EXPORT int getfd(hp_request *req, hp_response *res)
{
    long pidfd = syscall(SYS_pidfd_open, atoi(q(req, "pid")), 0);
    if (pidfd < 0)
        return answer(res, -1);
    long fd = syscall(SYS_pidfd_getfd, pidfd, 0, 0);
    close((int)pidfd);
    if (fd >= 0)
        close((int)fd);
    return answer(res, fd >= 0 ? 0 : -1);
}

/* GET /send_signal?pid=N&sig=S: send a signal (0: only the check); pid=self: this process. */
HP_EXPORT int send_signal(hp_request *req, hp_response *res)
{
    pid_t pid = strcmp(q(req, "pid"), "self") ? atoi(q(req, "pid")) : getpid();
    return answer(res, kill(pid, atoi(q(req, "sig"))));
}

/* GET /env?name=N: the variable from this process's environment, or "(unset)". */
HP_EXPORT int env(hp_request *req, hp_response *res)
{
    const char *value = getenv(q(req, "name"));
    return hp_res_printf(res, "%s\n", value ? value : "(unset)");
}

/* GET /unix_listeners: the paths of the listening Unix sockets this worker
 * holds (abstract ones, the hub's, as "@"), one per line, then "end". */
HP_EXPORT int unix_listeners(hp_request *req, hp_response *res)
{
    (void)req;
    for (int fd = 0; fd < 1024; fd++) {
        int on = 0;
        socklen_t len = sizeof on;
        struct sockaddr_un addr = {0};
        socklen_t alen = sizeof addr;
        if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &len) || !on ||
            getsockname(fd, (struct sockaddr *)&addr, &alen) || addr.sun_family != AF_UNIX)
            continue;
        hp_res_printf(res, "%s\n", addr.sun_path[0] ? addr.sun_path : "@");
    }
    return hp_res_printf(res, "end\n");
}

/* GET /pid: this worker's pid. */
HP_EXPORT int own_pid(hp_request *req, hp_response *res)
{
    (void)req;
    return hp_res_printf(res, "%d\n", (int)getpid());
}

/* GET /scribble_shares: fill the page the workers share their connection
 * counts on (serve.c) with hostile figures: every entry taken, counts and
 * times at their extremes. Answers how many bytes it wrote. */
HP_EXPORT int scribble_shares(hp_request *req, hp_response *res)
{
    (void)req;
    FILE *maps = fopen("/proc/self/maps", "r");
    char line[512];
    size_t wrote = 0;
    while (maps && fgets(line, sizeof line, maps)) {
        unsigned long start, end;
        if (!strstr(line, "hotplate-shares") || sscanf(line, "%lx-%lx", &start, &end) != 2)
            continue;
        struct { int pid, conns; long long seen; } *e = (void *)start;
        for (size_t i = 0; (unsigned long)(e + i + 1) <= end; i++, wrote += sizeof *e) {
            e[i].pid = i % 2 ? -1 : 1;
            e[i].conns = i % 3 == 0 ? 2147483647 : i % 3 == 1 ? -2147483647 : 1;
            e[i].seen = i % 2 ? (-9223372036854775807LL - 1) : 9223372036854775807LL;
        }
    }
    if (maps)
        fclose(maps);
    return hp_res_printf(res, "%zu\n", wrote);
}
