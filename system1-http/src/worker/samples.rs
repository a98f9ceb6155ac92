//! A server's samples in Redis: a sorted set whose members carry each metric's identity and the five
//! values the windows aggregate ([`crate::store::samples_key`]).

use lab_core::Metric;

/// A metric's identity in the samples (the set is per server already): its `seq` and `timestamp` when it
/// has a `seq`, so that a re-sent metric is recognised even under a new entry id, while an agent that
/// restarted and counts from 0 again is not mistaken for a re-sender (its seq 5 has another
/// timestamp); else its entry id. Kept as numbers (no string per metric); written into the sorted-set
/// members as `s<seq>@<timestamp>` or `e<entry id>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Identity {
    /// `seq` and the bits of the `f64` timestamp (the same number always has the same bits).
    Seq { seq: u64, timestamp: u64 },
    /// A stream entry id `<ms>-<seq>`.
    Entry { ms: u64, seq: u64 },
}

impl Identity {
    /// The identity of `metric`, read from the stream as entry `entry_id`; `None` if it has no `seq`
    /// and the id is not a stream id.
    pub(super) fn of(metric: &Metric, entry_id: &str) -> Option<Identity> {
        match metric.seq {
            Some(seq) => Some(Identity::Seq {
                seq,
                timestamp: metric.timestamp.to_bits(),
            }),
            None => Identity::entry(entry_id),
        }
    }

    fn entry(id: &str) -> Option<Identity> {
        let (ms, seq) = id.split_once('-')?;
        Some(Identity::Entry {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }

    /// Reads the identity part of a sorted-set member back.
    fn parse(text: &str) -> Option<Identity> {
        if let Some(rest) = text.strip_prefix('s') {
            let (seq, timestamp) = rest.split_once('@')?;
            Some(Identity::Seq {
                seq: seq.parse().ok()?,
                timestamp: timestamp.parse::<f64>().ok()?.to_bits(),
            })
        } else {
            Identity::entry(text.strip_prefix('e')?)
        }
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identity::Seq { seq, timestamp } => write!(f, "s{seq}@{}", f64::from_bits(*timestamp)),
            Identity::Entry { ms, seq } => write!(f, "e{ms}-{seq}"),
        }
    }
}

/// A sample as a sorted-set member: identity and the five aggregated values.
pub(super) fn encode_member(identity: &Identity, metric: &Metric) -> String {
    let r = &metric.metrics;
    let (rx, tx) = r.network.map_or((0.0, 0.0), |n| (n.rx, n.tx));
    format!("{identity}|{}|{}|{}|{rx}|{tx}", r.cpu, r.memory, r.disk)
}

pub(super) fn decode_member(member: &str) -> Option<(Identity, lab_core::Readings)> {
    let mut parts = member.split('|');
    let identity = Identity::parse(parts.next()?)?;
    let mut next = || parts.next()?.parse::<f64>().ok();
    let (cpu, memory, disk, rx, tx) = (next()?, next()?, next()?, next()?, next()?);
    Some((
        identity,
        lab_core::Readings {
            cpu,
            memory,
            disk,
            network: Some(lab_core::Network { rx, tx }),
            extra: vec![],
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_round_trip() {
        let metric = Metric {
            server_id: "s".into(),
            timestamp: 1.0,
            metrics: lab_core::Readings {
                cpu: 12.5,
                memory: 1.0,
                disk: 2.0,
                network: None,
                extra: vec![],
            },
            seq: Some(9),
        };
        let identity = Identity::of(&metric, "1-0").unwrap();
        let member = encode_member(&identity, &metric);
        assert_eq!(member, "s9@1|12.5|1|2|0|0");
        let (id, readings) = decode_member(&member).unwrap();
        assert_eq!(
            (id, readings.cpu, readings.network.unwrap().rx),
            (identity, 12.5, 0.0)
        );
        let by_entry = Identity::of(&Metric { seq: None, ..metric }, "7-1").unwrap();
        assert_eq!(by_entry.to_string(), "e7-1");
        assert_eq!(Identity::parse("e7-1"), Some(by_entry));
        assert_eq!(
            Identity::parse("s3@1763800000000.25").unwrap().to_string(),
            "s3@1763800000000.25"
        );
        assert!(decode_member("garbage").is_none());
    }
}
