//! CPU time of a process from `/proc/PID/stat` (proc(5): fields 14 utime and 15 stime, in clock ticks, summed
//! over all its threads): what a tunnel daemon spent while the benchmark pushed a known number of bytes.

use crate::error::{Error, Result};

/// User plus system CPU seconds `pid` has used so far.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let ticks = parse_stat(&text).ok_or_else(|| Error::Config(format!("/proc/{pid}/stat: unexpected format")))?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as f64 } else { 100.0 };
    Ok(ticks as f64 / hz)
}

/// utime + stime in clock ticks. The command name (field 2) is in parentheses and may hold spaces or
/// parentheses itself, so the fields are counted from the last `)`.
fn parse_stat(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts with field 3 (state): utime (14) is index 11, stime (15) index 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_utime_and_stime_after_the_name() {
        let line = "26953 (wireguard (go)) S 26936 26953 26936 0 -1 4194560 1000 0 0 0 731 412 0 0 20 0 7 0 1 0 0";
        assert_eq!(parse_stat(line), Some(731 + 412));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn own_process_has_cpu_time() {
        let s = cpu_seconds(std::process::id()).unwrap();
        assert!(s >= 0.0);
    }
}
