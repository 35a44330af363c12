//! The memory this process can ever hold, for refusing a ring whose slots alone cannot fit:
//! slots are reserved as address space and touched as items arrive, so without this check
//! such a ring is accepted and the process is killed hours later, when the stream fills it.

/// The most bytes this process can hold: physical memory plus swap, or its cgroup's limit
/// when lower (Linux); None where it is not known (other systems, an unreadable `/proc`).
#[must_use]
pub fn memory_limit() -> Option<u128> {
    meminfo_bytes("MemTotal:", "SwapTotal:")
}

/// The memory free for this process now: available memory plus free swap, at most its
/// cgroup's limit (Linux); None where it is not known.
#[must_use]
pub fn memory_available() -> Option<u128> {
    meminfo_bytes("MemAvailable:", "SwapFree:")
}

/// `/proc/meminfo`'s `memory` plus `swap` (given in kB there), at most the cgroup's limit.
fn meminfo_bytes(memory: &str, swap: &str) -> Option<u128> {
    #[cfg(target_os = "linux")]
    {
        let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
        let kib = |name: &str| -> Option<u128> {
            let line = meminfo.lines().find(|l| l.starts_with(name))?;
            line[name.len()..]
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse::<u128>()
                .ok()
        };
        let swap = kib(swap).unwrap_or(0) * 1024;
        let bytes = kib(memory)? * 1024 + swap;
        Some(cgroup_limit(swap).map_or(bytes, |c| c.min(bytes)))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (memory, swap);
        None
    }
}

/// The memory limit of this process's cgroup (v2 `memory.max` plus `memory.swap.max`, the
/// machine's `swap` where that is `max`, its default; v1 `memory.limit_in_bytes`), None when
/// it has none.
#[cfg(target_os = "linux")]
fn cgroup_limit(swap: u128) -> Option<u128> {
    let read = |path: String| -> Option<u128> {
        std::fs::read_to_string(path)
            .ok()?
            .trim()
            .parse::<u128>()
            .ok()
    };
    // Lines `hierarchy:controllers:path`, paths inside the cgroup namespace a container sees.
    let groups = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let path_of = |controller: &str| {
        groups.lines().find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let named = controllers.split(',').any(|c| c == controller);
            named.then(|| path.trim_end_matches('/').to_owned())
        })
    };
    // v2: "max" does not parse (no limit); the swap the group may use counts too.
    if let Some(group) = path_of("")
        && let Some(max) = read(format!("/sys/fs/cgroup{group}/memory.max"))
    {
        let swap_max = std::fs::read_to_string(format!("/sys/fs/cgroup{group}/memory.swap.max"));
        let swap = match swap_max.as_deref().map(str::trim) {
            Ok("max") => swap,
            Ok(n) => n.parse::<u128>().unwrap_or(0).min(swap),
            Err(_) => 0,
        };
        return Some(max + swap);
    }
    // v1 reports "no limit" as a number near 2^63; the swap it allows beside (memsw) is at
    // most the machine's, counted whole so that nothing that could fit is refused.
    let group = path_of("memory").unwrap_or_default();
    read(format!(
        "/sys/fs/cgroup/memory{group}/memory.limit_in_bytes"
    ))
    .or_else(|| read("/sys/fs/cgroup/memory/memory.limit_in_bytes".to_owned()))
    .filter(|&b| b < 1 << 62)
    .map(|b| b + swap)
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(target_os = "linux")]
    fn a_linux_machine_reports_some_memory() {
        let limit = super::memory_limit().expect("/proc/meminfo");
        // More than 64 MiB, less than 2^60 bytes; what is free now is at most that.
        assert!(limit > 64 << 20 && limit < 1 << 60, "{limit}");
        let free = super::memory_available().expect("/proc/meminfo");
        assert!(free > 0 && free <= limit, "{free} of {limit}");
    }
}
