//! The `gap` frame: what a dashboard did not get, said out loud instead of left for it to guess.
//!
//! Both systems send it, in order with the updates (what came before it came before the gap): System
//! 1's broadcaster after a gap in its fan-out it cannot fill, either system after its outbox dropped
//! updates for a dashboard that fell too far behind. Old clients ignore the unknown type.
//!
//! `{"type":"gap","eventType":"metric.update","events":12,"fromMs":…,"toMs":…,"reason":"dropped"}`

use serde::{Deserialize, Serialize};

/// Why a gap frame was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GapReason {
    /// The broadcaster lost its pub/sub subscription (Redis restarted, the connection broke): what was
    /// published meanwhile went to nobody. `events` is `null`: pub/sub cannot say how many.
    Unsubscribed,
    /// Stream fan-out: the broadcaster's last relayed event was trimmed from the capped `processed`
    /// stream before it read on (it was away, or slower than the cap allows). `events` is exact.
    Trimmed,
    /// Stream fan-out: the `processed` stream's count went backwards (Redis lost its data, or the stream
    /// was deleted): events may be missing, how many is unknown.
    Reset,
    /// This dashboard fell so far behind that its queue and its coalescing table were both full: the
    /// updates of servers that found no place were dropped (`lab_core::outbox`, step 3). `events` is
    /// exact; the span is when they were dropped.
    Dropped,
}

/// The body of a `gap` frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gap {
    /// Which events are missing: System 1's `metric.processed` (stream fan-out) or every event its
    /// channel carries (`metric.ingested` and, in pub/sub fan-out, `metric.processed`): `"*"`;
    /// System 2's `metric.update`.
    #[serde(rename = "eventType")]
    pub event_type: String,
    /// How many events are missing, when the broadcaster can know it (`null` otherwise).
    pub events: Option<u64>,
    /// The span the missing events lie in, in epoch ms: from the last event relayed before the gap (or
    /// the moment the subscription was lost) …
    #[serde(rename = "fromMs")]
    pub from_ms: u64,
    /// … to the first event relayed after it (or the moment of the new subscription).
    #[serde(rename = "toMs")]
    pub to_ms: u64,
    /// Why.
    pub reason: GapReason,
}

impl Gap {
    /// The whole frame, `{"type":"gap",…}`: what System 1's `DashboardReply::Gap` and System 2's
    /// `ServerFrame::Gap` both serialize to (the delivery loop writes it for either system).
    pub fn to_frame(&self) -> String {
        #[derive(Serialize)]
        struct Frame<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            #[serde(flatten)]
            gap: &'a Gap,
        }
        serde_json::to_string(&Frame {
            kind: "gap",
            gap: self,
        })
        .expect("gaps always serialize")
    }

    /// The gap frame for updates an outbox dropped, of `event_type`.
    pub fn dropped(event_type: &str, dropped: crate::outbox::Dropped) -> Gap {
        Gap {
            event_type: event_type.to_owned(),
            events: Some(dropped.updates),
            from_ms: dropped.from_ms as u64,
            to_ms: dropped.to_ms.ceil() as u64,
            reason: GapReason::Dropped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::system1::DashboardReply;
    use crate::wire::system2::ServerFrame;

    #[test]
    fn the_frame_is_what_both_systems_replies_serialize() {
        for events in [Some(12), None] {
            let gap = Gap {
                event_type: "metric.update".into(),
                events,
                from_ms: 1_000,
                to_ms: 3_500,
                reason: GapReason::Dropped,
            };
            let frame = gap.to_frame();
            assert_eq!(frame, ServerFrame::Gap(gap.clone()).to_json());
            assert_eq!(frame, serde_json::to_string(&DashboardReply::Gap(gap)).unwrap());
        }
    }
}
