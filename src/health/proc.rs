//! Process figures from `/proc/self` (Linux only, which is where the agent runs), for the
//! process metrics of `/metrics`.

/// One reading of the process's resource use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ProcessStats {
    pub(crate) rss_bytes: u64,
    pub(crate) cpu_seconds: f64,
    pub(crate) threads: u64,
}

impl ProcessStats {
    /// `None` where `/proc` is not there or not readable (then the metrics are left out).
    pub(crate) fn read() -> Option<ProcessStats> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        ProcessStats::parse(&stat, &status)
    }

    /// `stat` fields after the command name: utime and stime are fields 14 and 15 (in clock
    /// ticks, 100 per second on every Linux the agent targets), num_threads field 20 (proc(5));
    /// RSS comes from `VmRSS` in `status` so no page size is needed. The command name may hold
    /// spaces and parentheses, so fields are counted from its last `)`.
    pub(crate) fn parse(stat: &str, status: &str) -> Option<ProcessStats> {
        let after_comm = stat.get(stat.rfind(')')? + 2..)?;
        let fields: Vec<&str> = after_comm.split_whitespace().collect();
        // after_comm starts at field 3 (state).
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        let threads: u64 = fields.get(17)?.parse().ok()?;
        let rss_kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(ProcessStats {
            rss_bytes: rss_kib * 1024,
            cpu_seconds: (utime + stime) as f64 / 100.0,
            threads,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_stats_parse_proc_files() {
        let stat = "4242 (kijo agent) S 1 4242 4242 0 -1 4194560 500 0 0 0 150 50 0 0 20 0 5 0 100 1000000 300 18446744073709551615";
        let status = "Name:\tkijo-agent\nVmHWM:\t  9000 kB\nVmRSS:\t  8192 kB\nThreads:\t5\n";
        let p = ProcessStats::parse(stat, status).unwrap();
        assert_eq!(p.rss_bytes, 8192 * 1024);
        assert_eq!(p.cpu_seconds, 2.0);
        assert_eq!(p.threads, 5);
        assert!(ProcessStats::read().is_some(), "this test runs on Linux");
        assert_eq!(ProcessStats::parse("4242 (x)", status), None);
        assert_eq!(ProcessStats::parse(stat, "Name:\tx\n"), None);
    }
}
