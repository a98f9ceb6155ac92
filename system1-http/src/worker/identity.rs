//! A metric's identity: how a worker recognises a metric it has counted already (a client's retry,
//! appended again under a new entry id), and the bounded memory of the identities it has seen.

use std::collections::{HashSet, VecDeque};

use lab_core::Metric;

/// A metric's identity among its server's (the worker keeps one set per server already): its `seq` and
/// `timestamp` when it has a `seq`, so that a re-sent metric is recognised even under a new entry id,
/// while an agent that restarted and counts from 0 again is not mistaken for a re-sender (its seq 5
/// has another timestamp); else its entry id. Kept as numbers: no string per metric. Shown (in logs)
/// as `s<seq>@<timestamp>` or `e<entry id>`.
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
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identity::Seq { seq, timestamp } => write!(f, "s{seq}@{}", f64::from_bits(*timestamp)),
            Identity::Entry { ms, seq } => write!(f, "e{ms}-{seq}"),
        }
    }
}

/// The identities of a server's most recent fresh metrics, at most `cap`: a re-sent metric is
/// recognised while it is among them. Bounded, so that a server reporting for days costs the worker a
/// constant memory (a set that only grew would not be).
pub(super) struct Known {
    set: HashSet<Identity>,
    order: VecDeque<Identity>,
    cap: usize,
}

impl Known {
    /// Remembers at most `cap` identities (at least one).
    pub(super) fn new(cap: usize) -> Known {
        Known {
            set: HashSet::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    /// Remembers `identity`: `true` if it is new, `false` if it was seen already. The oldest is
    /// forgotten when there are `cap`.
    pub(super) fn insert(&mut self, identity: Identity) -> bool {
        if !self.set.insert(identity) {
            return false;
        }
        self.order.push_back(identity);
        if self.order.len() > self.cap
            && let Some(oldest) = self.order.pop_front()
        {
            self.set.remove(&oldest);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_and_their_bounded_memory() {
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
        assert_eq!(identity.to_string(), "s9@1");
        let by_entry = Identity::of(
            &Metric {
                seq: None,
                ..metric.clone()
            },
            "7-1",
        )
        .unwrap();
        assert_eq!(by_entry.to_string(), "e7-1");
        assert!(Identity::of(&Metric { seq: None, ..metric }, "not-an-id").is_none());

        let mut known = Known::new(2);
        let ids: Vec<Identity> = (0..3).map(|ms| Identity::Entry { ms, seq: 0 }).collect();
        assert!(known.insert(ids[0]));
        assert!(!known.insert(ids[0]), "seen");
        assert!(known.insert(ids[1]));
        assert!(known.insert(ids[2]), "the third pushes the first out");
        assert!(!known.insert(ids[2]));
        assert!(known.insert(ids[0]), "forgotten: the memory is bounded");
        assert_eq!(known.set.len(), 2);
    }
}
