"""The seccomp filter every sandbox runs under, compiled to BPF with ``pyseccomp``.

A deny-list on top of the namespaces: the system calls that inspect or change other processes,
the kernel or mounts, that create namespaces, or that widen the kernel's attack surface
(``bpf``, ``io_uring``, ``userfaultfd``, ``perf_event_open``) fail with ``EPERM``. Everything
else is allowed, so ordinary programs and interpreters run unchanged. Bubblewrap loads the
program (``--seccomp FD``) just before it starts the launcher.
"""

from __future__ import annotations

import errno
import functools
import tempfile

from keel.errors import MissingDependencyError

__all__ = ["DENIED_SYSCALLS", "NAMESPACE_FLAGS", "compile_filter", "seccomp_available"]

DENIED_SYSCALLS: tuple[str, ...] = (
    # other processes' memory and execution
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    "pidfd_getfd",
    # mounts, roots and namespaces
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "setns",
    "unshare",
    "mount_setattr",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "open_by_handle_at",
    "name_to_handle_at",
    # the kernel itself
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "keyctl",
    "add_key",
    "request_key",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "quotactl",
    "syslog",
    "lookup_dcookie",
    "iopl",
    "ioperm",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "fanotify_init",
    "vhangup",
    "uselib",
    "personality",
)

NAMESPACE_FLAGS = {
    "CLONE_NEWNS": 0x00020000,
    "CLONE_NEWCGROUP": 0x02000000,
    "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000,
    "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
}
TIOCSTI = 0x5412


def seccomp_available() -> bool:
    """True when ``pyseccomp`` and the libseccomp it loads are installed."""
    try:
        compile_filter()
    except MissingDependencyError:
        return False
    return True


@functools.cache
def compile_filter() -> bytes:
    """The filter as a BPF program for this machine's architecture (built once per process)."""
    try:
        import pyseccomp as sc
    except (ImportError, OSError, RuntimeError, AttributeError) as e:  # no libseccomp either
        raise MissingDependencyError(
            "pyseccomp", "sandbox", feature="the sandbox's seccomp filter"
        ) from e
    f = sc.SyscallFilter(sc.ALLOW)
    deny = sc.ERRNO(errno.EPERM)
    for name in DENIED_SYSCALLS:
        try:
            f.add_rule(deny, name)
        except (ValueError, RuntimeError, OSError):
            continue  # not a system call on this architecture
    for flag in NAMESPACE_FLAGS.values():
        f.add_rule(deny, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    # clone3 passes its flags in memory a filter cannot read: make libc fall back to clone.
    f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    f.add_rule(deny, "ioctl", sc.Arg(1, sc.MASKED_EQ, 0xFFFFFFFF, TIOCSTI))
    with tempfile.TemporaryFile() as out:
        f.export_bpf(out)
        out.seek(0)
        return out.read()
