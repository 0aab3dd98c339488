//! What the kernel says about a process: CPU time per thread, peak RSS, open files. Read from
//! /proc (no `unsafe`: the workspace forbids it, so no getrusage/setrlimit through libc).

use std::collections::BTreeMap;

/// Clock ticks per second of /proc's CPU times (`getconf CLK_TCK`; 100 on every Linux we run).
const TICKS_PER_SEC: f64 = 100.0;

/// CPU seconds (user + system) of a `/proc/.../stat` line, and the thread or process name.
fn parse_stat(stat: &str) -> Option<(String, f64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat[open + 1..close].to_string();
    // After ") ": state is field 3; utime and stime are fields 14 and 15 (1-based).
    let rest: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    let utime: f64 = rest.get(11)?.parse().ok()?;
    let stime: f64 = rest.get(12)?.parse().ok()?;
    Some((name, (utime + stime) / TICKS_PER_SEC))
}

/// CPU seconds a process has used (its threads, living or exited).
pub fn process_cpu(pid: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| parse_stat(&s))
        .map_or(0.0, |(_, cpu)| cpu)
}

/// CPU seconds of a single-threaded process (nginx's), to the nanosecond (`schedstat`).
pub fn single_thread_cpu(pid: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or_else(|| process_cpu(pid), |ns| ns as f64 / 1e9)
}

/// CPU seconds of this process's living threads, summed by thread name with digits dropped
/// (`tokio-runtime-w`, `linkemu`, `rocksdb:low`...).
pub fn threads_cpu() -> BTreeMap<String, f64> {
    let mut by_name = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return by_name;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        if let Some((name, cpu)) = parse_stat(&stat) {
            let name: String = name.chars().filter(|c| !c.is_ascii_digit()).collect();
            *by_name
                .entry(name.trim_end_matches(['-', ':', '_']).to_string())
                .or_insert(0.0) += cpu;
        }
    }
    by_name
}

/// The difference of two [`threads_cpu`] readings (threads that appeared count from zero).
pub fn threads_delta(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v > 0.0)
        .collect()
}

/// A `kB` field of `/proc/<pid>/status` (`VmHWM`, `VmRSS`), in bytes.
pub fn status_kb(pid: &str, field: &str) -> u64 {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return 0;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Resets this process's peak RSS (`VmHWM`) to its current RSS (Linux ≥ 4.0).
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Open file descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// The soft and hard limit on open files of this process.
pub fn nofile_limit() -> Option<(String, String)> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut f = line["Max open files".len()..].split_whitespace();
    Some((f.next()?.to_string(), f.next()?.to_string()))
}

/// Raises this process's open-file limit with util-linux's `prlimit` (no `unsafe` here); returns
/// whether it worked. Raising the hard limit needs CAP_SYS_RESOURCE (root).
pub fn raise_nofile(to: u64) -> bool {
    let pid = std::process::id().to_string();
    std::process::Command::new("prlimit")
        .args(["--pid", &pid, &format!("--nofile={to}:{to}")])
        .status()
        .is_ok_and(|s| s.success())
}

/// The child processes of `pid` (e.g. nginx's workers), found by their parent id in /proc.
pub fn children(pid: &str) -> Vec<String> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            if !name.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let close = stat.rfind(')')?;
            let ppid = stat[close + 2..].split_whitespace().nth(1)?;
            (ppid == pid).then_some(name)
        })
        .collect()
}

/// The machine's load averages (1, 5, 15 min).
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_spaces_in_the_name_parse() {
        let line = "42 (tokio runtime) S 1 2 3 4 5 6 7 8 9 10 150 50 0 0 20 0 1 0";
        let (name, cpu) = parse_stat(line).unwrap();
        assert_eq!(name, "tokio runtime");
        assert!((cpu - 2.0).abs() < 1e-9);
    }
}
