//! Transparent huge pages off for the whole process. mimalloc asked the kernel for
//! huge pages on its memory (`madvise`), so every 2 MiB of heap touched anew — each
//! catch-up batch, each ingest body — was cleared by the kernel at once: 64 % of the
//! collector threads' CPU in a catch-up profile. Without them, catch-up took half the
//! CPU per event and forwarding a fifth less, at a lower peak RSS (BENCHMARKS.md,
//! "Transparent huge pages"). The crate's `no_thp` feature stops mimalloc's `madvise`;
//! this also covers kernels set to give huge pages to every process (`always`).

use std::io;

/// Turns transparent huge pages off for this process (`PR_SET_THP_DISABLE`): memory
/// faulted in from now on comes in base pages. Answers whether they were on before.
pub fn disable() -> io::Result<bool> {
    // SAFETY: these prctl calls take no pointers; they read or set a flag of the process.
    let before = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
    if before < 0 {
        return Err(io::Error::last_os_error());
    }
    if before == 1 {
        return Ok(false);
    }
    // SAFETY: as above.
    if unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    #[test]
    fn after_disable_the_process_has_transparent_huge_pages_off() {
        super::disable().expect("prctl");
        // SAFETY: reads the process's flag; no pointers.
        assert_eq!(
            unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) },
            1
        );
        assert!(
            !super::disable().expect("prctl"),
            "already off: nothing to change"
        );
    }
}
