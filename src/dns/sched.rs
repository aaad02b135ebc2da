//! A scheduling hint for the thread that receives every UDP query: a
//! short time slice (Linux's EEVDF custom slices, kernel 6.12 and later).
//!
//! A task that the scheduler has just picked may run until it has used
//! its slice before a task that wakes up takes its core ("run to
//! parity"). The default slice is 0.7 ms × (1 + log2 of the CPU count),
//! 1.4 ms on two cores. A receive thread woken by a datagram onto a core
//! where the load generator, a federation task or any other process has
//! just started therefore waits up to that long, and so does every query
//! that arrives meanwhile: on a 2-core machine that was the DNS p99.
//!
//! A thread that asks for a shorter slice gets an earlier deadline when it
//! wakes, and a waking task with a shorter slice than the running one may
//! preempt it at once. The slice does not change the thread's share of
//! CPU (its weight, i.e. its nice value) and does not need privileges. On
//! older kernels the request is accepted and has no effect.
//!
//! Measured in `bench/dns-ab.sh` (docs/BENCHMARKS.md, session 13): at
//! 75,000 q/s the p99 fell from a median of 0.54 ms to 0.44 ms over ten
//! rounds (gdnsd 0.47 ms in the same rounds), with no change in answers per
//! CPU-second at full load.

use std::io;
use std::time::Duration;

/// The slice the UDP receive thread asks for: the kernel's minimum.
pub(crate) const UDP_SLICE: Duration = Duration::from_micros(100);

/// `SCHED_NORMAL` (`SCHED_OTHER`).
const SCHED_NORMAL: u32 = 0;
/// `SCHED_BATCH`.
const SCHED_BATCH: u32 = 3;

/// `struct sched_attr` (`SCHED_ATTR_SIZE_VER0`, without utilization clamps;
/// the kernel keeps clamps it is not given).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    /// For the fair policies: the slice in nanoseconds (0 = the default).
    runtime: u64,
    deadline: u64,
    period: u64,
}

const ATTR_SIZE: u32 = std::mem::size_of::<SchedAttr>() as u32;

/// The calling thread's scheduling attributes.
fn get() -> io::Result<SchedAttr> {
    let mut attr = SchedAttr::default();
    // SAFETY: `attr` is a writable `sched_attr` of ATTR_SIZE bytes; pid 0
    // is the calling thread.
    let r = unsafe {
        libc::syscall(
            libc::SYS_sched_getattr,
            0,
            &mut attr as *mut SchedAttr,
            ATTR_SIZE,
            0,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(attr)
}

/// Asks for `slice` as the calling thread's time slice, keeping its policy
/// and nice value. Only threads under the normal or batch policy are
/// changed (`Ok(false)` for real-time, deadline or idle threads, which an
/// operator set on purpose).
pub(crate) fn set_slice(slice: Duration) -> io::Result<bool> {
    let current = get()?;
    if current.policy != SCHED_NORMAL && current.policy != SCHED_BATCH {
        return Ok(false);
    }
    let attr = SchedAttr {
        size: ATTR_SIZE,
        policy: current.policy,
        flags: 0,
        nice: current.nice,
        priority: 0,
        runtime: u64::try_from(slice.as_nanos()).unwrap_or(u64::MAX),
        deadline: 0,
        period: 0,
    };
    // SAFETY: `attr` is a valid `sched_attr` of ATTR_SIZE bytes; pid 0 is
    // the calling thread.
    let r = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(true)
}

/// Whether the running kernel honours custom slices (6.12 and later).
#[cfg(test)]
pub(crate) fn kernel_has_custom_slices() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .and_then(|r| {
            let mut it = r.trim().split(['.', '-']);
            let major: u32 = it.next()?.parse().ok()?;
            let minor: u32 = it.next()?.parse().ok()?;
            Some((major, minor) >= (6, 12))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` on a fresh thread (scheduling attributes are per thread).
    fn on_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::spawn(f).join().unwrap()
    }

    #[test]
    fn the_slice_is_set_and_the_nice_value_kept() {
        let (set, after, nice) = on_thread(|| {
            // SAFETY: plain syscall; gettid has no arguments.
            let tid = unsafe { libc::gettid() };
            // SAFETY: setpriority on this thread's id (per-thread on Linux).
            let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 5) };
            assert_eq!(r, 0, "setpriority: {}", io::Error::last_os_error());
            let set = set_slice(UDP_SLICE).unwrap();
            let after = get().unwrap();
            // SAFETY: as above.
            let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t) };
            (set, after, nice)
        });
        assert!(set);
        assert_eq!(after.policy, SCHED_NORMAL);
        assert_eq!(after.nice, 5, "the nice value was reset");
        assert_eq!(nice, 5);
        if kernel_has_custom_slices() {
            assert_eq!(after.runtime, 100_000, "{after:?}");
        }
    }

    #[test]
    fn another_threads_request_leaves_a_thread_alone() {
        assert!(on_thread(|| set_slice(UDP_SLICE).unwrap()));
        let fresh = on_thread(|| get().unwrap());
        if kernel_has_custom_slices() {
            assert_ne!(fresh.runtime, 100_000, "{fresh:?}");
        }
    }

    #[test]
    fn an_idle_policy_thread_is_left_alone() {
        let (changed, after) = on_thread(|| {
            let p = libc::sched_param { sched_priority: 0 };
            // SAFETY: valid sched_param; pid 0 is this thread.
            let r = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &p) };
            assert_eq!(r, 0, "sched_setscheduler: {}", io::Error::last_os_error());
            (set_slice(UDP_SLICE).unwrap(), get().unwrap())
        });
        assert!(!changed);
        assert_eq!(after.policy, libc::SCHED_IDLE as u32);
    }
}
