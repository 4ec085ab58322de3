//! CPU time of a process from `/proc/PID/stat`: the tool reports its own, so a run
//! shows whether the load generator itself was the bottleneck, and the gateway's when
//! it runs on the same machine (`--gateway-pid`).

/// Clock ticks per second in `/proc/*/stat` (USER_HZ: 100 on every Linux ABI).
const TICKS_PER_SEC: f64 = 100.0;

/// User + system CPU seconds of `pid` (`None`: this process), or None off Linux or
/// when the process is gone.
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    parse_stat(&std::fs::read_to_string(path).ok()?)
}

/// utime + stime (fields 14 and 15) from a stat line; the command name (field 2) may
/// hold spaces and parentheses, so fields are counted after its last ')'.
fn parse_stat(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_SEC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_utime_and_stime() {
        let line = "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 9 0 1 1 1";
        assert_eq!(parse_stat(line), Some(3.0));
        assert_eq!(parse_stat("garbage"), None);
        assert!(cpu_seconds(None).is_some());
    }
}
