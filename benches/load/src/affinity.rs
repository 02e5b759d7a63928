//! CPU pinning for the max-rate phase: the target alone on one core, the load generator and
//! the upstreams on another (`sched_setaffinity` on every thread of every process of a tree).

use std::fs;
use std::io;

use crate::procfs;

/// A CPU mask as the kernel reads it: 1 024 bits.
type Mask = [u64; 16];

fn mask_of(cpus: &[usize]) -> Mask {
    let mut mask = [0u64; 16];
    for &cpu in cpus.iter().filter(|&&c| c < 1024) {
        mask[cpu / 64] |= 1 << (cpu % 64);
    }
    mask
}

fn cpus_of(mask: &Mask) -> Vec<usize> {
    (0..1024)
        .filter(|&cpu| mask[cpu / 64] & (1 << (cpu % 64)) != 0)
        .collect()
}

/// The CPUs this process may run on.
pub fn allowed() -> Vec<usize> {
    let mut mask: Mask = [0; 16];
    // SAFETY: the kernel writes at most `size_of_val(&mask)` bytes into the local buffer
    // (cpu_set_t is a plain bit array; a larger buffer is allowed).
    let status = unsafe {
        libc::sched_getaffinity(
            0,
            std::mem::size_of_val(&mask),
            mask.as_mut_ptr().cast::<libc::cpu_set_t>(),
        )
    };
    if status == 0 {
        cpus_of(&mask)
    } else {
        Vec::new()
    }
}

fn set_thread(tid: u32, mask: &Mask) -> io::Result<()> {
    // SAFETY: the kernel reads `size_of_val(mask)` bytes from the borrowed buffer.
    let status = unsafe {
        libc::sched_setaffinity(
            tid as libc::pid_t,
            std::mem::size_of_val(mask),
            mask.as_ptr().cast::<libc::cpu_set_t>(),
        )
    };
    if status == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Pins every thread of `roots` and their descendants to `cpus` (threads they start later
/// inherit it). Threads that exit meanwhile are skipped; returns how many were pinned.
pub fn pin_tree(roots: &[u32], cpus: &[usize]) -> io::Result<usize> {
    let mask = mask_of(cpus);
    let mut pinned = 0;
    for pid in procfs::tree(roots) {
        let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for tid in tasks
            .flatten()
            .filter_map(|t| t.file_name().to_str()?.parse().ok())
        {
            match set_thread(tid, &mask) {
                Ok(()) => pinned += 1,
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(pinned)
}

/// Where the max-rate phase puts things: the target on `target`, everything else on `rest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The target's CPU.
    pub target: Vec<usize>,
    /// The generator's, the mocks' and the sink's CPU.
    pub rest: Vec<usize>,
    /// Every CPU allowed at the start (restored afterwards).
    pub all: Vec<usize>,
}

impl Layout {
    /// The second allowed CPU for the target, the first for the rest; `None` with fewer than
    /// two CPUs.
    pub fn from_allowed(all: Vec<usize>) -> Option<Layout> {
        match all.as_slice() {
            [first, second, ..] => Some(Layout {
                target: vec![*second],
                rest: vec![*first],
                all,
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_round_trip() {
        let cpus = vec![0, 1, 63, 64, 130];
        assert_eq!(cpus_of(&mask_of(&cpus)), cpus);
        assert_eq!(mask_of(&[1])[0], 2);
    }

    #[test]
    fn layout_needs_two_cpus() {
        assert_eq!(Layout::from_allowed(vec![3]), None);
        let layout = Layout::from_allowed(vec![2, 5, 7]).unwrap();
        assert_eq!((layout.target, layout.rest), (vec![5], vec![2]));
    }

    #[test]
    fn this_process_can_be_pinned_to_what_it_has() {
        let all = allowed();
        assert!(!all.is_empty());
        assert!(pin_tree(&[std::process::id()], &all).unwrap() >= 1);
        assert_eq!(allowed(), all);
    }
}
