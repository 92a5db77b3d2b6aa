/* The system-call filter of processes that run module code (issue 9).
 *
 * A handler serves HTTP: it has no use for running programs, tracing other
 * processes, mounting, loading kernel code or changing the clock. Those
 * calls are trapped (SIGSYS) instead of failing with an errno a module might
 * ignore, so the guarded call that made one ends as a crash: a 500, a log
 * line naming the call, and a fresh worker. Everything else is allowed: the
 * filter is a denylist, so a libc that picks another call for the same job
 * keeps working. The filter uses libseccomp, sets no_new_privs and applies
 * to every thread of the process (TSYNC).
 *
 * Some calls are refused with an errno instead, where libc or the module
 * has a way on (issue 19): clone3 answers ENOSYS, so libc falls back to
 * clone, whose flags the filter can read (clone3 passes them in memory it
 * cannot); clone with a namespace flag answers EPERM; and signals go only
 * to this process itself (EPERM for any other: a sibling worker, the job
 * runner), so one module cannot stop or kill what serves the others. */
#define _GNU_SOURCE
#include <errno.h>
#include <seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sched.h>
#include <string.h>
#include <unistd.h>

#include "runtime.h"

static const char *const forbidden[] = {
    "execve", "execveat",                                   /* running programs */
    "ptrace", "process_vm_readv", "process_vm_writev",      /* other processes' memory */
    "mount", "umount2", "pivot_root", "chroot", "fsopen", "fsmount", "fsconfig", "fspick",
    "move_mount", "open_tree", "mount_setattr",             /* the file system tree */
    "unshare", "setns",                                     /* namespaces */
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "bpf",
    "perf_event_open", "iopl", "ioperm",                    /* kernel code and hardware */
    "keyctl", "add_key", "request_key",                     /* the kernel keyring */
    "swapon", "swapoff", "reboot", "acct", "quotactl",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
    "open_by_handle_at", "name_to_handle_at", "userfaultfd",
    "io_uring_setup", "io_uring_enter", "io_uring_register", /* a way around the filter */
    "pidfd_getfd", "process_madvise",                      /* other processes' descriptors, memory */
};

/* Namespace flags of clone(2): a new namespace is a way out of the confinement. */
static const unsigned long namespaces[] = {
    CLONE_NEWUSER, CLONE_NEWNS, CLONE_NEWNET, CLONE_NEWPID, CLONE_NEWIPC, CLONE_NEWUTS, CLONE_NEWCGROUP,
};

/* Calls whose first argument is the process a signal goes to. */
static const char *const signalling[] = {"kill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo"};

/* Refused outright: they name a thread or a descriptor, not this process. */
static const char *const foreign_signals[] = {"tkill", "pidfd_send_signal"};

static int rule(scmp_filter_ctx ctx, uint32_t action, const char *name, unsigned count, struct scmp_arg_cmp cmp)
{
    int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR)
        return 0;
    return count ? seccomp_rule_add(ctx, action, nr, 1, cmp) : seccomp_rule_add(ctx, action, nr, 0);
}

static __thread int trapped_nr = -1;
static __thread char trapped_name[64];

int hp_rt_confine(char *err, size_t errlen)
{
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    if (!ctx) {
        snprintf(err, errlen, "seccomp_init failed");
        return -1;
    }
    int rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1);
    struct scmp_arg_cmp none = {0};
    for (size_t i = 0; rc == 0 && i < sizeof forbidden / sizeof *forbidden; i++)
        rc = rule(ctx, SCMP_ACT_TRAP, forbidden[i], 0, none);
    if (rc == 0)
        rc = rule(ctx, SCMP_ACT_ERRNO(ENOSYS), "clone3", 0, none);
    for (size_t i = 0; rc == 0 && i < sizeof namespaces / sizeof *namespaces; i++)
        rc = rule(ctx, SCMP_ACT_ERRNO(EPERM), "clone", 1, SCMP_A0(SCMP_CMP_MASKED_EQ, namespaces[i], namespaces[i]));
    scmp_datum_t self = (scmp_datum_t)getpid();
    for (size_t i = 0; rc == 0 && i < sizeof signalling / sizeof *signalling; i++)
        rc = rule(ctx, SCMP_ACT_ERRNO(EPERM), signalling[i], 1, SCMP_A0(SCMP_CMP_NE, self));
    for (size_t i = 0; rc == 0 && i < sizeof foreign_signals / sizeof *foreign_signals; i++)
        rc = rule(ctx, SCMP_ACT_ERRNO(EPERM), foreign_signals[i], 0, none);
    if (rc == 0)
        rc = seccomp_load(ctx);
    if (rc != 0)
        snprintf(err, errlen, "cannot install the system-call filter: %s", strerror(-rc));
    seccomp_release(ctx);
    return rc == 0 ? 0 : -1;
}

/* From the signal handler: only a store, which is async-signal-safe. */
void rt_note_trap(const siginfo_t *info) { trapped_nr = info->si_syscall; }

const char *hp_rt_trapped_call(void)
{
    char *name = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, trapped_nr);
    snprintf(trapped_name, sizeof trapped_name, "%s", name ? name : "an unknown system call");
    free(name);
    return trapped_name;
}
