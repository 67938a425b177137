// The seccomp profile of every capsule: allow by default, refuse (EPERM) the
// system calls that reach into the kernel or the host rather than the
// capsule. Most are also out of reach through the dropped capabilities; the
// filter is a second wall and shrinks the kernel surface a capsule can poke.
//
// Decisions:
// - ptrace, process_vm_readv and process_vm_writev stay allowed, as in Docker:
//   the PID namespace limits them to the capsule's own processes and they are
//   what debuggers (gdb, strace, py-spy) need.
// - Creating namespaces is refused: unshare, setns, and clone/clone3 with a
//   CLONE_NEW* flag (an unprivileged user namespace would hand a capsule a
//   full capability set against a large kernel surface). clone3 gets ENOSYS,
//   since its flags sit behind a pointer seccomp cannot read; glibc then falls
//   back to clone, which is checked.
// - io_uring is refused (repeated kernel CVEs; libuv falls back to threads).

const EPERM = 1;
const ENOSYS = 38;

export const DENIED_SYSCALLS = [
  // kernel modules, kexec, reboot
  'init_module',
  'finit_module',
  'delete_module',
  'create_module',
  'kexec_load',
  'kexec_file_load',
  'reboot',
  // swap, mounts, root switching
  'swapon',
  'swapoff',
  'mount',
  'umount',
  'umount2',
  'mount_setattr',
  'fsopen',
  'fsconfig',
  'fsmount',
  'fspick',
  'move_mount',
  'open_tree',
  'pivot_root',
  // namespaces
  'unshare',
  'setns',
  // kernel tracing, BPF, keyrings
  'bpf',
  'perf_event_open',
  'lookup_dcookie',
  'keyctl',
  'add_key',
  'request_key',
  'fanotify_init',
  'userfaultfd',
  // handles that bypass path checks
  'open_by_handle_at',
  'name_to_handle_at',
  // raw I/O ports and legacy modes
  'iopl',
  'ioperm',
  'vm86',
  'vm86old',
  // accounting, quotas, clocks, kernel log
  'acct',
  'quotactl',
  'quotactl_fd',
  'settimeofday',
  'stime',
  'clock_settime',
  'clock_adjtime',
  'adjtimex',
  'syslog',
  'vhangup',
  'nfsservctl',
  'uselib',
  '_sysctl',
  'get_kernel_syms',
  'query_module',
  // io_uring
  'io_uring_setup',
  'io_uring_enter',
  'io_uring_register',
];

/** CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET (NEWTIME only exists for clone3/unshare). */
const CLONE_NS_FLAGS = [0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000];

export interface SeccompProfile {
  defaultAction: string;
  architectures: string[];
  syscalls: {
    names: string[];
    action: string;
    errnoRet?: number;
    args?: { index: number; value: number; valueTwo: number; op: string }[];
  }[];
}

export function seccompProfile(): SeccompProfile {
  return {
    defaultAction: 'SCMP_ACT_ALLOW',
    architectures: ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86', 'SCMP_ARCH_X32'],
    syscalls: [
      { names: DENIED_SYSCALLS, action: 'SCMP_ACT_ERRNO', errnoRet: EPERM },
      { names: ['clone3'], action: 'SCMP_ACT_ERRNO', errnoRet: ENOSYS },
      // One rule per flag (rules for one syscall are OR-ed): refuse when (flags & f) == f.
      ...CLONE_NS_FLAGS.map((flag) => ({
        names: ['clone'],
        action: 'SCMP_ACT_ERRNO',
        errnoRet: EPERM,
        args: [{ index: 0, value: flag, valueTwo: flag, op: 'SCMP_CMP_MASKED_EQ' }],
      })),
    ],
  };
}
