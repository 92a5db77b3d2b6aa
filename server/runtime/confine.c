/* The system-call filter of processes that run module code (issue 9).
 *
 * A handler serves HTTP: it has no use for running programs, tracing other
 * processes, mounting, loading kernel code or changing the clock. Those
 * calls are trapped (SIGSYS) instead of failing with an errno a module might
 * ignore, so the guarded call that made one ends as a crash: a 500, a log
 * line naming the call, and a fresh worker. Everything else is allowed: the
 * filter is a denylist, so a libc that picks another call for the same job
 * keeps working. The filter uses libseccomp, sets no_new_privs and applies
 * to every thread of the process (TSYNC). */
#define _GNU_SOURCE
#include <errno.h>
#include <seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
};

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
    for (size_t i = 0; rc == 0 && i < sizeof forbidden / sizeof *forbidden; i++) {
        int nr = seccomp_syscall_resolve_name(forbidden[i]);
        if (nr != __NR_SCMP_ERROR)
            rc = seccomp_rule_add(ctx, SCMP_ACT_TRAP, nr, 0);
    }
    if (rc == 0)
        rc = seccomp_load(ctx);
    if (rc != 0)
        snprintf(err, errlen, "cannot install the system-call filter: %s", strerror(-rc));
    seccomp_release(ctx);
    return rc == 0 ? 0 : -1;
}

/* From the signal handler: only a store, which is async-signal-safe. */
void hp_note_trap(const siginfo_t *info) { trapped_nr = info->si_syscall; }

const char *hp_rt_trapped_call(void)
{
    char *name = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, trapped_nr);
    snprintf(trapped_name, sizeof trapped_name, "%s", name ? name : "an unknown system call");
    free(name);
    return trapped_name;
}
