//! CPU time per child, from `/proc`: so that a report can say what saturated — System 1's API, a
//! worker, Redis, System 2, or the load generator itself — instead of guessing.
//!
//! A child runs in its own process group (see [`super::child`]), so its CPU is the sum over the
//! processes of that group: the guarded `redis-server` counts for `redis`, not for its guard.
//! Each process's `utime + stime` (fields 14 and 15 of `/proc/<pid>/stat`, in clock ticks) is read
//! at the start of sending and again before the lab stops; the difference over the wall time
//! between the two is the cores the child kept busy. A process that exited in between (a killed
//! worker) takes its CPU time with it; one started in between (a restarted service) counts from
//! its start. Linux only: elsewhere the figures are absent, never made up.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// The CPU seconds used so far by each process group, by group id.
pub fn by_group() -> BTreeMap<u32, f64> {
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|t| *t > 0)
        .unwrap_or(100) as f64;
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some((group, used)) = parse_stat(&stat) {
            *out.entry(group).or_insert(0.0) += used as f64 / ticks;
        }
    }
    out
}

/// `(process group, utime + stime in ticks)` from a `/proc/<pid>/stat` line. The command name
/// (field 2) is in parentheses and may itself hold spaces and parentheses, so fields are counted
/// from the last `)`.
fn parse_stat(stat: &str) -> Option<(u32, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state (3), ppid (4), pgrp (5), … utime (14), stime (15).
    let group = fields.get(2)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((group, utime + stime))
}

/// One child's CPU over the measured time, as `lab up --json` records it under `cpu`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChildCpu {
    /// The child's name (`system1-api`, `redis`, `agents-system2`, …).
    pub name: String,
    /// CPU seconds it used between the two readings.
    pub cpu_s: f64,
    /// Wall seconds between them.
    pub wall_s: f64,
    /// `cpu_s / wall_s`: how many cores it kept busy (1.0 is one core, all the time).
    pub cores: f64,
}

/// The first reading: when, and each child's CPU seconds by name and group.
#[derive(Debug, Clone, Default)]
pub struct Reading {
    at: Option<Instant>,
    used: BTreeMap<String, (u32, f64)>,
}

impl Reading {
    /// Reads `children`, `(name, process group)` each.
    pub fn take(children: &[(String, u32)]) -> Reading {
        let groups = by_group();
        Reading {
            at: Some(Instant::now()),
            used: children
                .iter()
                .filter_map(|(name, group)| Some((name.clone(), (*group, *groups.get(group)?))))
                .collect(),
        }
    }

    /// Each child's CPU since this reading (children not running now are left out).
    pub fn since(&self, children: &[(String, u32)]) -> Vec<ChildCpu> {
        let Some(at) = self.at else {
            return Vec::new();
        };
        let wall_s = at.elapsed().as_secs_f64();
        let groups = by_group();
        children
            .iter()
            .filter_map(|(name, group)| {
                let now = *groups.get(group)?;
                let before = match self.used.get(name) {
                    Some((g, used)) if g == group => *used,
                    _ => 0.0,
                };
                let cpu_s = (now - before).max(0.0);
                Some(ChildCpu {
                    name: name.clone(),
                    cpu_s,
                    wall_s,
                    cores: if wall_s > 0.0 { cpu_s / wall_s } else { 0.0 },
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_gives_its_group_and_cpu_even_with_a_strange_name() {
        let line = "4242 (lab child) x) S 1 4200 4200 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 1 2 3";
        assert_eq!(parse_stat(line), Some((4200, 300)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn this_process_group_has_used_some_cpu() {
        // Busy for a moment, so that at least a tick is spent.
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed().as_millis() < 50 {
            x = x.wrapping_mul(31).wrapping_add(1);
        }
        std::hint::black_box(x);
        let group = nix::unistd::getpgrp().as_raw() as u32;
        assert!(by_group().get(&group).is_some_and(|s| *s > 0.0));
    }
}
