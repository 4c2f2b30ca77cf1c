//! File descriptors: each integration holds a connection to its Splunk while it
//! syncs, so a node with many integrations needs more than the usual soft limit of
//! 1,024. At start the soft limit is raised to the hard one (what the operator, or
//! systemd's `LimitNOFILE`, allows), and `/metrics` reports how many are open.

use std::io;

/// The soft and hard `RLIMIT_NOFILE`.
fn limits() -> io::Result<libc::rlimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own; no other memory is touched.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(lim)
}

/// Raises the soft limit of open files to the hard limit. Answers the soft limit
/// before and after (equal when there was nothing to raise).
pub fn raise() -> io::Result<(u64, u64)> {
    let mut lim = limits()?;
    let before = lim.rlim_cur as u64;
    if lim.rlim_cur == lim.rlim_max {
        return Ok((before, before));
    }
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: setrlimit only reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((before, lim.rlim_cur as u64))
}

/// The soft limit of open files now.
pub fn max() -> io::Result<u64> {
    Ok(limits()?.rlim_cur as u64)
}

/// File descriptors this process holds (entries of `/proc/self/fd`).
pub fn open() -> io::Result<u64> {
    Ok(std::fs::read_dir("/proc/self/fd")?.count() as u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one_and_open_files_are_counted() {
        let (_, after) = super::raise().unwrap();
        assert_eq!(after, super::max().unwrap());
        assert_eq!(after, super::limits().unwrap().rlim_max as u64);
        let f = std::fs::File::open("/proc/self/status").unwrap();
        // stdin, stdout, stderr and `f` at least (other tests open and close files
        // meanwhile, so no exact count).
        assert!(super::open().unwrap() >= 4);
        drop(f);
    }
}
