//! The seccomp filter a sandboxed program runs under (a short classic BPF
//! program built here, loaded with seccompiler): what no snippet of user
//! code needs is refused with EPERM;
//! another architecture's system calls kill the process; new namespaces are
//! refused; `clone3` answers ENOSYS so that libc falls back to `clone`,
//! whose flags a filter can see; sockets of families other than unix,
//! inet, inet6 and route netlink answer EAFNOSUPPORT.
//!
//! The program is written for x86_64's system call numbers alone: on any
//! other architecture [`filter`] refuses to build it, and no sandbox runs.

use seccompiler::{sock_filter, BpfProgram};

/// The filter was not written for this machine's architecture.
#[derive(Debug, thiserror::Error)]
#[error("the sandbox's seccomp program is written for x86_64, not {arch}; sandboxes cannot run on this node")]
pub struct UnsupportedArch {
    pub arch: &'static str,
}

#[cfg(not(target_arch = "x86_64"))]
pub fn filter() -> Result<BpfProgram, UnsupportedArch> {
    Err(UnsupportedArch {
        arch: std::env::consts::ARCH,
    })
}

#[cfg(target_arch = "x86_64")]
pub use x86_64::filter;

#[cfg(target_arch = "x86_64")]
mod x86_64 {
    use super::*;

    /// System calls refused outright.
    const DENIED: &[i64] = &[
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_chroot,
        libc::SYS_unshare,
        libc::SYS_setns,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
        libc::SYS_userfaultfd,
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_reboot,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_syslog,
        libc::SYS_acct,
        libc::SYS_settimeofday,
        libc::SYS_clock_settime,
        libc::SYS_clock_adjtime,
        libc::SYS_adjtimex,
        libc::SYS_open_by_handle_at,
        libc::SYS_name_to_handle_at,
        libc::SYS_quotactl,
        libc::SYS_lookup_dcookie,
        libc::SYS_vhangup,
        libc::SYS_iopl,
        libc::SYS_ioperm,
        libc::SYS_uselib,
        libc::SYS_kcmp,
        libc::SYS_fanotify_init,
        libc::SYS_fsopen,
        libc::SYS_fsmount,
        libc::SYS_fsconfig,
        libc::SYS_fspick,
        libc::SYS_move_mount,
        libc::SYS_open_tree,
        libc::SYS_mount_setattr,
        libc::SYS_personality,
        libc::SYS_modify_ldt,
    ];

    /// `clone` flags that make namespaces.
    const NAMESPACE_FLAGS: &[u64] = &[
        libc::CLONE_NEWNS as u64,
        libc::CLONE_NEWCGROUP as u64,
        libc::CLONE_NEWUTS as u64,
        libc::CLONE_NEWIPC as u64,
        libc::CLONE_NEWUSER as u64,
        libc::CLONE_NEWPID as u64,
        libc::CLONE_NEWNET as u64,
        0x80, // CLONE_NEWTIME
    ];

    const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;

    /// Where a jump goes: the next instruction or one of the program's ends.
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    enum To {
        Next,
        Allow,
        Deny,
        NoSys,
        Clone,
        Socket,
        SocketPair,
        /// The instruction at this index (within the table being built).
        At(usize),
    }

    /// An instruction whose jumps are not yet offsets.
    struct Ins {
        code: u16,
        k: u32,
        jt: To,
        jf: To,
    }

    const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
    const JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
    const JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
    const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

    /// `seccomp_data`: `nr` at 0, `arch` at 4, `args[0]`'s low half at 16.
    const NR: u32 = 0;
    const ARCH_OFFSET: u32 = 4;
    const ARG0_LOW: u32 = 16;
    const ARG2_LOW: u32 = 32;

    /// Socket families a program may open: unix, inet, inet6, and netlink for
    /// its route protocol alone (libc reads the addresses through it).
    const AF_UNIX: u32 = libc::AF_UNIX as u32;
    const AF_INET: u32 = libc::AF_INET as u32;
    const AF_INET6: u32 = libc::AF_INET6 as u32;
    const AF_NETLINK: u32 = libc::AF_NETLINK as u32;
    const NETLINK_ROUTE: u32 = libc::NETLINK_ROUTE as u32;

    fn ins(code: u16, k: u32, jt: To, jf: To) -> Ins {
        Ins { code, k, jt, jf }
    }

    /// Appends a search of the sorted `numbers`: a match jumps to `Deny`,
    /// anything else to `Allow`. Halves by `>=` down to short runs of `==`,
    /// so a system call passes a handful of comparisons, not the whole list.
    fn search(numbers: &[u32], out: &mut Vec<Ins>) {
        if numbers.len() <= 3 {
            for n in numbers {
                out.push(ins(JEQ_K, *n, To::Deny, To::Next));
            }
            out.push(ins(JA, 0, To::Allow, To::Allow));
            return;
        }
        let (low, high) = numbers.split_at(numbers.len() / 2);
        let split = out.len();
        out.push(ins(JGE_K, high[0], To::Next, To::Next));
        search(low, out);
        out[split].jt = To::At(out.len());
        search(high, out);
    }

    /// The program every sandboxed program runs under, one load per run:
    /// another architecture's calls kill the process; x32 calls get EPERM;
    /// `clone3` gets ENOSYS (libc falls back to `clone`, whose flags a filter
    /// can see); `clone` with a namespace flag and everything in [`DENIED`]
    /// get EPERM; `socket` and `socketpair` of another family get
    /// EAFNOSUPPORT; the rest is allowed. The denied numbers are searched as a
    /// tree, which keeps the program short (the kernel compiles it at every
    /// load) and each system call's check to a few comparisons.
    pub fn filter() -> Result<BpfProgram, UnsupportedArch> {
        let mut denied: Vec<u32> = DENIED.iter().map(|nr| *nr as u32).collect();
        denied.sort_unstable();
        denied.dedup();
        let namespaces = NAMESPACE_FLAGS.iter().fold(0u32, |all, f| all | *f as u32);
        let mut table = vec![
            ins(LD_W_ABS, ARCH_OFFSET, To::Next, To::Next),
            ins(JEQ_K, AUDIT_ARCH_X86_64, To::At(3), To::Next),
            ins(RET_K, libc::SECCOMP_RET_KILL_PROCESS, To::Next, To::Next),
            ins(LD_W_ABS, NR, To::Next, To::Next),
            ins(JGE_K, 0x4000_0000, To::Deny, To::Next),
            ins(JEQ_K, libc::SYS_clone3 as u32, To::NoSys, To::Next),
            ins(JEQ_K, libc::SYS_clone as u32, To::Clone, To::Next),
            ins(JEQ_K, libc::SYS_socket as u32, To::Socket, To::Next),
            ins(JEQ_K, libc::SYS_socketpair as u32, To::SocketPair, To::Next),
        ];
        search(&denied, &mut table);
        // The ends, in this order, after the table.
        let allow = table.len();
        let (deny, nosys, clone) = (allow + 1, allow + 2, allow + 3);
        let (socket, socketpair) = (clone + 4, clone + 4 + 9);
        let at = |to: To, here: usize| -> u32 {
            let target = match to {
                To::Next => here + 1,
                To::Allow => allow,
                To::Deny => deny,
                To::NoSys => nosys,
                To::Clone => clone,
                To::Socket => socket,
                To::SocketPair => socketpair,
                To::At(i) => i,
            };
            (target - here - 1) as u32
        };
        let mut program: BpfProgram = table
            .iter()
            .enumerate()
            .map(|(here, i)| {
                if i.code == JA {
                    sock_filter {
                        code: JA,
                        jt: 0,
                        jf: 0,
                        k: at(i.jt, here),
                    }
                } else {
                    let offset = |to| u8::try_from(at(to, here)).expect("a jump within 255");
                    sock_filter {
                        code: i.code,
                        jt: offset(i.jt),
                        jf: offset(i.jf),
                        k: i.k,
                    }
                }
            })
            .collect();
        let op = |code, jt, jf, k| sock_filter { code, jt, jf, k };
        program.extend([
            op(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
            op(RET_K, 0, 0, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
            op(RET_K, 0, 0, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
            op(LD_W_ABS, 0, 0, ARG0_LOW),
            op(JSET_K, 0, 1, namespaces),
            op(RET_K, 0, 0, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
            op(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
            // socket(family, type, protocol): nine instructions.
            op(LD_W_ABS, 0, 0, ARG0_LOW),
            op(JEQ_K, 5, 0, AF_UNIX),
            op(JEQ_K, 4, 0, AF_INET),
            op(JEQ_K, 3, 0, AF_INET6),
            op(JEQ_K, 0, 3, AF_NETLINK),
            op(LD_W_ABS, 0, 0, ARG2_LOW),
            op(JEQ_K, 0, 1, NETLINK_ROUTE),
            op(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
            op(RET_K, 0, 0, NO_FAMILY),
            // socketpair(family, …): unix alone.
            op(LD_W_ABS, 0, 0, ARG0_LOW),
            op(JEQ_K, 0, 1, AF_UNIX),
            op(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
            op(RET_K, 0, 0, NO_FAMILY),
        ]);
        Ok(program)
    }

    /// What a socket of a refused family gets.
    const NO_FAMILY: u32 = libc::SECCOMP_RET_ERRNO | libc::EAFNOSUPPORT as u32;

    #[cfg(test)]
    mod tests {
        use super::*;

        /// Runs `program` on one system call as the kernel would (the few
        /// instructions the filter uses), checking every jump lands inside.
        fn run(program: &BpfProgram, arch: u32, nr: u32, arg0: u64) -> u32 {
            run_with(program, arch, nr, [arg0, 0, 0])
        }

        /// [`run`] with the first three arguments.
        fn run_with(program: &BpfProgram, arch: u32, nr: u32, args: [u64; 3]) -> u32 {
            let mut data = [0u8; 64];
            data[0..4].copy_from_slice(&nr.to_le_bytes());
            data[4..8].copy_from_slice(&arch.to_le_bytes());
            for (i, arg) in args.iter().enumerate() {
                data[16 + 8 * i..24 + 8 * i].copy_from_slice(&arg.to_le_bytes());
            }
            let (mut pc, mut acc) = (0usize, 0u32);
            for _ in 0..program.len() {
                let i = &program[pc];
                pc += 1;
                match i.code {
                    LD_W_ABS => {
                        let k = i.k as usize;
                        acc = u32::from_le_bytes(data[k..k + 4].try_into().unwrap());
                    }
                    JEQ_K | JGE_K | JSET_K => {
                        let taken = match i.code {
                            JEQ_K => acc == i.k,
                            JGE_K => acc >= i.k,
                            _ => acc & i.k != 0,
                        };
                        pc += usize::from(if taken { i.jt } else { i.jf });
                    }
                    JA => pc += i.k as usize,
                    RET_K => return i.k,
                    other => panic!("unexpected instruction {other:#x}"),
                }
                assert!(pc < program.len(), "a jump past the end");
            }
            panic!("the program did not return");
        }

        const EPERM: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;

        #[test]
        fn every_system_call_gets_its_answer() {
            let program = filter().unwrap();
            assert!(program.len() < 128, "{} instructions", program.len());
            for nr in 0..1024u32 {
                let expected = if nr == libc::SYS_clone3 as u32 {
                    libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32
                } else if nr == libc::SYS_socket as u32 || nr == libc::SYS_socketpair as u32 {
                    // Family 0 (AF_UNSPEC) is no family a program may open.
                    NO_FAMILY
                } else if DENIED.contains(&i64::from(nr)) {
                    EPERM
                } else {
                    libc::SECCOMP_RET_ALLOW
                };
                assert_eq!(run(&program, AUDIT_ARCH_X86_64, nr, 0), expected, "nr {nr}");
                // x32's numbers, and other architectures.
                assert_eq!(run(&program, AUDIT_ARCH_X86_64, nr | 0x4000_0000, 0), EPERM);
                assert_eq!(
                    run(&program, 0x4000_0003, nr, 0),
                    libc::SECCOMP_RET_KILL_PROCESS
                );
            }
        }

        #[test]
        fn sockets_only_of_the_families_programs_need() {
            let program = filter().unwrap();
            let (socket, pair) = (libc::SYS_socket as u32, libc::SYS_socketpair as u32);
            let allow = libc::SECCOMP_RET_ALLOW;
            for family in 0..64u64 {
                let expected = match family as i32 {
                    libc::AF_UNIX | libc::AF_INET | libc::AF_INET6 | libc::AF_NETLINK => allow,
                    _ => NO_FAMILY,
                };
                let got = run_with(&program, AUDIT_ARCH_X86_64, socket, [family, 1, 0]);
                assert_eq!(got, expected, "socket family {family}");
                let expected = if family == libc::AF_UNIX as u64 {
                    allow
                } else {
                    NO_FAMILY
                };
                let got = run_with(&program, AUDIT_ARCH_X86_64, pair, [family, 1, 0]);
                assert_eq!(got, expected, "socketpair family {family}");
            }
            // Netlink for routes alone: not audit, not sock_diag, not xfrm.
            let netlink = libc::AF_NETLINK as u64;
            for protocol in [
                libc::NETLINK_AUDIT,
                libc::NETLINK_SOCK_DIAG,
                libc::NETLINK_XFRM,
            ] {
                let args = [netlink, libc::SOCK_RAW as u64, protocol as u64];
                assert_eq!(
                    run_with(&program, AUDIT_ARCH_X86_64, socket, args),
                    NO_FAMILY
                );
            }
            // The family's high bits are not a way around the check.
            let args = [(1u64 << 32) | 38, 1, 0];
            assert_eq!(
                run_with(&program, AUDIT_ARCH_X86_64, socket, args),
                NO_FAMILY
            );
            assert_eq!(
                run(&program, AUDIT_ARCH_X86_64, libc::SYS_modify_ldt as u32, 0),
                EPERM
            );
        }

        #[test]
        fn clone_may_not_make_namespaces() {
            let program = filter().unwrap();
            let clone = libc::SYS_clone as u32;
            let thread = (libc::CLONE_VM
                | libc::CLONE_FS
                | libc::CLONE_FILES
                | libc::CLONE_SIGHAND
                | libc::CLONE_THREAD
                | libc::CLONE_SYSVSEM
                | libc::CLONE_SETTLS
                | libc::CLONE_PARENT_SETTID
                | libc::CLONE_CHILD_CLEARTID) as u64;
            assert_eq!(
                run(&program, AUDIT_ARCH_X86_64, clone, thread),
                libc::SECCOMP_RET_ALLOW
            );
            assert_eq!(
                run(&program, AUDIT_ARCH_X86_64, clone, libc::SIGCHLD as u64),
                libc::SECCOMP_RET_ALLOW
            );
            for flag in NAMESPACE_FLAGS {
                assert_eq!(
                    run(&program, AUDIT_ARCH_X86_64, clone, thread | flag),
                    EPERM,
                    "flag {flag:#x}"
                );
            }
        }
    }
}
