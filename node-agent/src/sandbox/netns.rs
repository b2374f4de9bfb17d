//! Network namespaces for runs: loopback only, each made once and then
//! leased to one helper at a time (making and tearing down a network
//! namespace is the largest part of a sandbox's cost to the kernel).
//!
//! A namespace goes back to the pool only when every process of the run
//! that used it is dead, so all its sockets are closed. The sandbox user
//! has no capability in it (it belongs to the host's user namespace), so a
//! run cannot change its interfaces, routes, filters or sysctls; and it
//! keeps no TIME_WAIT state, so a port one run used is free for the next.

use std::{
    io,
    os::fd::{AsFd, BorrowedFd, OwnedFd},
    sync::{Arc, Mutex},
};

/// The namespaces not leased now.
#[derive(Default)]
pub struct Pool {
    free: Mutex<Vec<OwnedFd>>,
}

/// One namespace, leased until dropped.
pub struct Lease {
    fd: Option<OwnedFd>,
    pool: Arc<Pool>,
}

impl Pool {
    /// A namespace no one else holds: a free one, or a new one.
    pub fn lease(self: &Arc<Self>) -> io::Result<Lease> {
        let free = self.free.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let fd = match free {
            Some(fd) => fd,
            None => make()?,
        };
        Ok(Lease {
            fd: Some(fd),
            pool: self.clone(),
        })
    }

    /// How many namespaces wait in the pool.
    pub fn free(&self) -> usize {
        self.free.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl Lease {
    /// The namespace, which the helper enters.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_ref().expect("held until dropped").as_fd()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(fd) = self.fd.take() {
            self.pool
                .free
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(fd);
        }
    }
}

/// Makes a namespace on a thread of its own (a thread may change its
/// network namespace without touching the rest of the process): loopback
/// up, no TIME_WAIT buckets.
fn make() -> io::Result<OwnedFd> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| -> io::Result<OwnedFd> {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)?;
                super::helper::loopback_up();
                // This thread's namespace is the one the file speaks for.
                std::fs::write("/proc/sys/net/ipv4/tcp_max_tw_buckets", "0")?;
                Ok(std::fs::File::open("/proc/thread-self/ns/net")?.into())
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("making a network namespace panicked")))
    })
}
