//! What the harness reads about a process under test from `/proc`: CPU time (user + system)
//! and resident memory, for the process and every descendant (nginx workers, LiteLLM's
//! children), so multi-process targets are measured whole.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;

/// CPU time and resident memory of one process, as `/proc` reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcSample {
    /// User plus system CPU time, in clock ticks (`utime + stime` of `/proc/PID/stat`).
    pub cpu_ticks: u64,
    /// Resident set size in KiB (`VmRSS` of `/proc/PID/status`; 0 for a zombie).
    pub rss_kib: u64,
}

/// The fields of `/proc/PID/stat` the harness needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    /// Parent process id (field 4).
    pub ppid: u32,
    /// User-mode CPU ticks (field 14).
    pub utime: u64,
    /// Kernel-mode CPU ticks (field 15).
    pub stime: u64,
}

/// Parses a `/proc/PID/stat` line. The command name (field 2) is in parentheses and may hold
/// spaces and parentheses itself, so fields are counted from the *last* `)`.
pub fn parse_stat(line: &str) -> Option<Stat> {
    let rest = &line[line.rfind(')')? + 1..];
    // After the name: state(3) ppid(4) pgrp(5) session(6) tty_nr(7) tpgid(8) flags(9)
    // minflt(10) cminflt(11) majflt(12) cmajflt(13) utime(14) stime(15) ...
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).copied();
    Some(Stat {
        ppid: field(4)?.parse().ok()?,
        utime: field(14)?.parse().ok()?,
        stime: field(15)?.parse().ok()?,
    })
}

/// Reads `VmRSS` (KiB) out of a `/proc/PID/status` text; `None` when absent (kernel threads,
/// zombies).
pub fn parse_vmrss_kib(status: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix("VmRSS:")?;
        value.split_ascii_whitespace().next()?.parse().ok()
    })
}

/// One process's CPU ticks and RSS now.
pub fn sample(pid: u32) -> io::Result<ProcSample> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let stat = parse_stat(&stat).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("/proc/{pid}/stat: unexpected format"),
        )
    })?;
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(ProcSample {
        cpu_ticks: stat.utime + stat.stime,
        rss_kib: parse_vmrss_kib(&status).unwrap_or(0),
    })
}

/// Every live process's parent, from a walk of `/proc`.
fn parents() -> HashMap<u32, u32> {
    let mut map = HashMap::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return map;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(stat) = fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .as_deref()
            .and_then(parse_stat)
        {
            map.insert(pid, stat.ppid);
        }
    }
    map
}

/// `roots` and all their live descendants, each once.
pub fn descendants(parent_of: &HashMap<u32, u32>, roots: &[u32]) -> Vec<u32> {
    let mut found: Vec<u32> = Vec::new();
    let mut seen: HashSet<u32> = HashSet::new();
    let mut queue: Vec<u32> = roots.to_vec();
    while let Some(pid) = queue.pop() {
        if !seen.insert(pid) {
            continue;
        }
        found.push(pid);
        queue.extend(
            parent_of
                .iter()
                .filter(|&(_, &ppid)| ppid == pid)
                .map(|(&child, _)| child),
        );
    }
    found.sort_unstable();
    found
}

/// `roots` and all their live descendants, from a fresh walk of `/proc`.
pub fn tree(roots: &[u32]) -> Vec<u32> {
    descendants(&parents(), roots)
}

/// CPU ticks and RSS summed over `roots` and all their descendants (processes that vanish
/// while being read are skipped).
pub fn sample_tree(roots: &[u32]) -> ProcSample {
    let parent_of = parents();
    descendants(&parent_of, roots)
        .into_iter()
        .filter_map(|pid| sample(pid).ok())
        .fold(ProcSample::default(), |a, b| ProcSample {
            cpu_ticks: a.cpu_ticks + b.cpu_ticks,
            rss_kib: a.rss_kib + b.rss_kib,
        })
}

/// CPU time of one process in seconds, from its CPU-time clock (`clock_getcpuclockid`): the
/// scheduler's exact runtime of all its threads, exited ones included. `utime + stime` in
/// `/proc/PID/stat` are sampled at the timer tick (10 ms) and charge a whole tick to whoever
/// runs when it fires, which misleads for a process that is busy a small part of the time and
/// wakes on timers aligned with the tick (a proxy at a few hundred requests a second).
/// `None` when the clock cannot be read (the process is gone, or not ours).
pub fn cpu_clock_seconds(pid: u32) -> Option<f64> {
    let pid = libc::pid_t::try_from(pid).ok()?;
    let mut clock: libc::clockid_t = 0;
    // SAFETY: `clock` is a valid place for the clock id; the call only writes it.
    if unsafe { libc::clock_getcpuclockid(pid, &mut clock) } != 0 {
        return None;
    }
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec for the call to write.
    if unsafe { libc::clock_gettime(clock, &mut now) } != 0 {
        return None;
    }
    Some(now.tv_sec as f64 + now.tv_nsec as f64 * 1e-9)
}

/// CPU seconds of `roots` and all their live descendants: each process's CPU-time clock
/// ([`cpu_clock_seconds`]), or its `utime + stime` ticks when that clock cannot be read.
pub fn cpu_seconds(roots: &[u32]) -> f64 {
    tree(roots)
        .into_iter()
        .filter_map(|pid| {
            cpu_clock_seconds(pid).or_else(|| {
                sample(pid)
                    .ok()
                    .map(|s| s.cpu_ticks as f64 / ticks_per_second() as f64)
            })
        })
        .sum()
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, 100 on Linux in practice).
pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions; it only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as u64 } else { 100 }
}

/// The 1-, 5- and 15-minute load averages (`/proc/loadavg`), as text.
pub fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| {
            s.split_ascii_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_count_from_the_last_parenthesis() {
        let line = "4242 (nginx: worker (x) y) S 4241 4241 4241 0 -1 4194624 120 0 0 0 \
                    37 12 0 0 20 0 1 0 12345 1000000 300 18446744073709551615";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                ppid: 4241,
                utime: 37,
                stime: 12
            })
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 0"), None);
    }

    #[test]
    fn vmrss_is_read_in_kib() {
        let status =
            "Name:\tllmtrace-proxy\nVmPeak:\t  99999 kB\nVmRSS:\t   12345 kB\nThreads:\t4\n";
        assert_eq!(parse_vmrss_kib(status), Some(12345));
        assert_eq!(parse_vmrss_kib("Name:\tkthreadd\n"), None);
    }

    #[test]
    fn descendants_walk_the_tree_once() {
        let parent_of: HashMap<u32, u32> =
            [(10, 1), (11, 10), (12, 10), (13, 11), (20, 1), (21, 20)]
                .into_iter()
                .collect();
        assert_eq!(descendants(&parent_of, &[10]), vec![10, 11, 12, 13]);
        assert_eq!(
            descendants(&parent_of, &[10, 11, 21]),
            vec![10, 11, 12, 13, 21]
        );
    }

    #[test]
    fn this_process_is_measurable() {
        let me = sample(std::process::id()).unwrap();
        assert!(me.rss_kib > 0);
        let tree = sample_tree(&[std::process::id()]);
        assert!(tree.rss_kib >= me.rss_kib);
        assert!(ticks_per_second() > 0);
    }
}
