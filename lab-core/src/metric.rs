//! The metric: one sample of one server's vital signs.
//!
//! ```json
//! {"serverId":"server-1","timestamp":1763800000123.456,
//!  "metrics":{"cpu":12.5,"memory":40.1,"disk":55.0,"network":{"in":300,"out":250}},
//!  "seq":42}
//! ```
//!
//! There are two ways to turn bytes into a [`Metric`], and both live here:
//!
//! - **fast**: serde deserializes straight into the typed struct, then [`Metric::check`] applies the
//!   value rules (ranges, id charset). No intermediate tree, almost no allocation. It stops at the
//!   first structural error, which is fine, because then we take the other way;
//! - **diagnosing**: [`diagnose_metric`] walks a parsed `serde_json::Value` and records *every*
//!   problem with its path. It runs only for input the fast way refused, so its cost is paid by
//!   bad input alone.
//!
//! Both apply the same `check_*` rules from [`crate::problem`]; a property test holds them to
//! agreeing on every input.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::limits::MAX_EXTRA_READINGS;
use crate::problem::{self, Fields, Problem};

/// One sample from one server.
///
/// `Deserialize` is written by hand (below), like that of [`Readings`] and [`Network`]: serde's derive
/// also accepts a struct written as a JSON *array* (`["server-1", 1, {...}]`), which the protocol does
/// not allow. The property tests caught that.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metric {
    /// Which server this sample describes; 1–128 characters of `A-Za-z0-9._:-`.
    #[serde(rename = "serverId")]
    pub server_id: String,
    /// When the sample was taken, in epoch milliseconds. It may carry a fraction: that is how the lab
    /// measures sub-millisecond latency (end-to-end latency = receipt time − this).
    pub timestamp: f64,
    /// The readings themselves.
    pub metrics: Readings,
    /// **(ext)** The sending agent's sequence number, so loss and duplicates can be counted end to end.
    /// The original lab does not know this field: agents leave it out when talking to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// The readings of one sample. `cpu`, `memory` and `disk` are required percentages; `network` is
/// optional; any other key is an extra numeric reading that we carry along but do not aggregate.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Readings {
    /// CPU use, percent (0–100).
    pub cpu: f64,
    /// Memory use, percent (0–100).
    pub memory: f64,
    /// Disk use, percent (0–100).
    pub disk: f64,
    /// Network throughput, if the sender reports it.
    pub network: Option<Network>,
    /// Extra readings, in the order they were sent (at most [`MAX_EXTRA_READINGS`]). A `Vec`
    /// rather than a map: there are few, and order is worth keeping for round trips.
    pub extra: Vec<(String, f64)>,
}

/// Network throughput of one sample, bytes per second.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Network {
    /// Bytes per second received (`in` on the wire; `in` is a Rust keyword).
    #[serde(rename = "in")]
    pub rx: f64,
    /// Bytes per second sent (`out` on the wire).
    #[serde(rename = "out")]
    pub tx: f64,
}

impl Metric {
    /// Applies the value rules to an already-typed metric, appending a [`Problem`] for each
    /// violation. `base` is the JSON Pointer of this metric (`""`, or `/3` inside a batch).
    pub fn check(&self, base: &str, index: Option<usize>, out: &mut Vec<Problem>) {
        let mut report = |key: &str, rule: Result<(), String>| {
            if let Err(message) = rule {
                out.push(Problem {
                    path: format!("{base}{key}"),
                    index,
                    message,
                });
            }
        };
        report("/serverId", problem::check_server_id(&self.server_id));
        report("/timestamp", problem::check_timestamp(self.timestamp));
        let r = &self.metrics;
        report("/metrics/cpu", problem::check_percent(r.cpu));
        report("/metrics/memory", problem::check_percent(r.memory));
        report("/metrics/disk", problem::check_percent(r.disk));
        if let Some(n) = r.network {
            report("/metrics/network/in", problem::check_network(n.rx));
            report("/metrics/network/out", problem::check_network(n.tx));
        }
        for (name, value) in &r.extra {
            if let Err(message) = problem::check_reading_name(name) {
                out.push(Problem {
                    path: problem::join(&format!("{base}/metrics"), name),
                    index,
                    message,
                });
            } else if let Err(message) = problem::check_finite(*value) {
                out.push(Problem {
                    path: problem::join(&format!("{base}/metrics"), name),
                    index,
                    message,
                });
            }
        }
    }

    /// Whether this metric obeys every value rule. Cheap: allocates only when it does not.
    pub fn is_valid(&self) -> bool {
        let mut problems = Vec::new();
        self.check("", None, &mut problems);
        problems.is_empty()
    }
}

/// Records every problem of `value` as a metric at `base`, returning the metric when there are none.
///
/// `allowed_extra_keys` names top-level keys that belong to an envelope around the metric (System 2's
/// `{"type":"metric", ...}` carries `type`), which are accepted and ignored here.
pub fn diagnose_metric(
    value: &Value,
    base: &str,
    index: Option<usize>,
    allowed_extra_keys: &[&str],
    out: &mut Vec<Problem>,
) -> Option<Metric> {
    let before = out.len();
    let mut f = Fields::of(value, base, index, out)?;
    let mut allowed = vec!["serverId", "timestamp", "metrics", "seq"];
    allowed.extend_from_slice(allowed_extra_keys);
    f.deny_unknown(&allowed);
    let server_id = f.req_str("serverId", problem::check_server_id);
    let timestamp = f.req_f64("timestamp", problem::check_timestamp);
    let seq = f.opt_u64("seq", u64::MAX);
    let readings = match f.required("metrics") {
        Some(_) => f.object("metrics").and_then(diagnose_readings),
        None => None,
    };
    if out.len() > before {
        return None;
    }
    Some(Metric {
        server_id: server_id?.to_owned(),
        timestamp: timestamp?,
        metrics: readings?,
        seq,
    })
}

fn diagnose_readings(mut f: Fields<'_, '_>) -> Option<Readings> {
    let cpu = f.req_f64("cpu", problem::check_percent);
    let memory = f.req_f64("memory", problem::check_percent);
    let disk = f.req_f64("disk", problem::check_percent);
    let network = match f.object("network") {
        None => None,
        Some(mut n) => {
            n.deny_unknown(&["in", "out"]);
            let rx = n.req_f64("in", problem::check_network);
            let tx = n.req_f64("out", problem::check_network);
            rx.zip(tx).map(|(rx, tx)| Network { rx, tx })
        }
    };
    let known = ["cpu", "memory", "disk", "network"];
    let extras: Vec<_> = f
        .entries()
        .filter(|(k, _)| !known.contains(&k.as_str()))
        .collect();
    if extras.len() > MAX_EXTRA_READINGS {
        f.problem_here(format!(
            "has {} extra readings beside cpu/memory/disk/network; at most {MAX_EXTRA_READINGS} are allowed",
            extras.len()
        ));
    }
    let mut extra = Vec::new();
    for (name, v) in extras {
        match problem::check_reading_name(name) {
            Err(msg) => f.problem(name, msg),
            Ok(()) => {
                if let Some(n) = f.f64_value(name, v, problem::check_finite) {
                    extra.push((name.clone(), n));
                }
            }
        }
    }
    Some(Readings {
        cpu: cpu?,
        memory: memory?,
        disk: disk?,
        network,
        extra,
    })
}

// ---- Serde for `Readings`, written by hand for two reasons: the extra readings are "any other key,
// ---- numbers only", which derive cannot say without `flatten` (slow, and it buffers); and known keys
// ---- should not allocate.

impl Serialize for Readings {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let len = 3 + usize::from(self.network.is_some()) + self.extra.len();
        let mut map = serializer.serialize_map(Some(len))?;
        map.serialize_entry("cpu", &self.cpu)?;
        map.serialize_entry("memory", &self.memory)?;
        map.serialize_entry("disk", &self.disk)?;
        if let Some(n) = &self.network {
            map.serialize_entry("network", n)?;
        }
        for (k, v) in &self.extra {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// A key inside `metrics`: the four known ones without allocating, anything else as a `String`.
enum ReadingKey {
    Cpu,
    Memory,
    Disk,
    Network,
    Other(String),
}

impl<'de> Deserialize<'de> for ReadingKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = ReadingKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a reading name")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<ReadingKey, E> {
                Ok(match s {
                    "cpu" => ReadingKey::Cpu,
                    "memory" => ReadingKey::Memory,
                    "disk" => ReadingKey::Disk,
                    "network" => ReadingKey::Network,
                    other => ReadingKey::Other(other.to_owned()),
                })
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

impl<'de> Deserialize<'de> for Readings {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ReadingsVisitor;
        impl<'de> Visitor<'de> for ReadingsVisitor {
            type Value = Readings;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of readings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Readings, A::Error> {
                let (mut cpu, mut memory, mut disk, mut network) = (None, None, None, None);
                let mut extra: Vec<(String, f64)> = Vec::new();
                fn once<T, E: de::Error>(slot: &mut Option<T>, v: T, name: &'static str) -> Result<(), E> {
                    if slot.replace(v).is_some() {
                        return Err(E::duplicate_field(name));
                    }
                    Ok(())
                }
                while let Some(key) = map.next_key::<ReadingKey>()? {
                    match key {
                        ReadingKey::Cpu => once(&mut cpu, map.next_value::<f64>()?, "cpu")?,
                        ReadingKey::Memory => once(&mut memory, map.next_value::<f64>()?, "memory")?,
                        ReadingKey::Disk => once(&mut disk, map.next_value::<f64>()?, "disk")?,
                        ReadingKey::Network => once(&mut network, map.next_value::<Network>()?, "network")?,
                        ReadingKey::Other(name) => {
                            if extra.len() == MAX_EXTRA_READINGS {
                                return Err(de::Error::custom("too many extra readings"));
                            }
                            if extra.iter().any(|(k, _)| *k == name) {
                                return Err(de::Error::custom(format_args!("duplicate field `{name}`")));
                            }
                            let value = map.next_value::<f64>()?;
                            extra.push((name, value));
                        }
                    }
                }
                Ok(Readings {
                    cpu: cpu.ok_or_else(|| de::Error::missing_field("cpu"))?,
                    memory: memory.ok_or_else(|| de::Error::missing_field("memory"))?,
                    disk: disk.ok_or_else(|| de::Error::missing_field("disk"))?,
                    network,
                    extra,
                })
            }
        }
        d.deserialize_map(ReadingsVisitor)
    }
}

/// Deserializes a JSON object with exactly the fields `F` names, refusing arrays, unknown fields,
/// duplicates and missing required fields. `F::slot` files each value as it arrives.
pub(crate) trait ObjectFields<'de>: Default {
    /// What the object becomes.
    type Output;
    /// What `expecting` says.
    const EXPECTING: &'static str;
    /// Reads the value of `key` from `map`, or fails for an unknown or duplicate key.
    fn slot<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error>;
    /// Builds the output, or fails for a missing field.
    fn finish<E: de::Error>(self) -> Result<Self::Output, E>;
}

pub(crate) struct ObjectVisitor<F>(pub(crate) std::marker::PhantomData<F>);

impl<'de, F: ObjectFields<'de>> Visitor<'de> for ObjectVisitor<F> {
    type Value = F::Output;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(F::EXPECTING)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<F::Output, A::Error> {
        let mut fields = F::default();
        while let Some(key) = map.next_key::<KeyStr<'de>>()? {
            fields.slot(key.as_str(), &mut map)?;
        }
        fields.finish()
    }
}

/// A map key, borrowed from the input when it can be (no escapes), owned otherwise.
pub(crate) enum KeyStr<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl KeyStr<'_> {
    pub(crate) fn as_str(&self) -> &str {
        match self {
            KeyStr::Borrowed(s) => s,
            KeyStr::Owned(s) => s,
        }
    }
}

impl<'de> Deserialize<'de> for KeyStr<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KeyStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<KeyStr<'de>, E> {
                Ok(KeyStr::Borrowed(s))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<KeyStr<'de>, E> {
                Ok(KeyStr::Owned(s.to_owned()))
            }
        }
        d.deserialize_str(V)
    }
}

/// Files `value` into `slot`, refusing a second value for the same field.
pub(crate) fn fill<'de, T: Deserialize<'de>, A: MapAccess<'de>>(
    slot: &mut Option<T>,
    name: &'static str,
    map: &mut A,
) -> Result<(), A::Error> {
    if slot.is_some() {
        return Err(de::Error::duplicate_field(name));
    }
    *slot = Some(map.next_value()?);
    Ok(())
}

#[derive(Default)]
struct MetricFields {
    server_id: Option<String>,
    timestamp: Option<f64>,
    metrics: Option<Readings>,
    seq: Option<Option<u64>>,
}

const METRIC_FIELDS: &[&str] = &["serverId", "timestamp", "metrics", "seq"];

impl<'de> ObjectFields<'de> for MetricFields {
    type Output = Metric;
    const EXPECTING: &'static str = "a metric object";
    fn slot<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        match key {
            "serverId" => fill(&mut self.server_id, "serverId", map),
            "timestamp" => fill(&mut self.timestamp, "timestamp", map),
            "metrics" => fill(&mut self.metrics, "metrics", map),
            "seq" => fill(&mut self.seq, "seq", map),
            other => Err(de::Error::unknown_field(other, METRIC_FIELDS)),
        }
    }
    fn finish<E: de::Error>(self) -> Result<Metric, E> {
        Ok(Metric {
            server_id: self.server_id.ok_or_else(|| E::missing_field("serverId"))?,
            timestamp: self.timestamp.ok_or_else(|| E::missing_field("timestamp"))?,
            metrics: self.metrics.ok_or_else(|| E::missing_field("metrics"))?,
            seq: self.seq.flatten(),
        })
    }
}

impl<'de> Deserialize<'de> for Metric {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ObjectVisitor::<MetricFields>(std::marker::PhantomData))
    }
}

#[derive(Default)]
struct NetworkFields {
    rx: Option<f64>,
    tx: Option<f64>,
}

impl<'de> ObjectFields<'de> for NetworkFields {
    type Output = Network;
    const EXPECTING: &'static str = "a network object";
    fn slot<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        match key {
            "in" => fill(&mut self.rx, "in", map),
            "out" => fill(&mut self.tx, "out", map),
            other => Err(de::Error::unknown_field(other, &["in", "out"])),
        }
    }
    fn finish<E: de::Error>(self) -> Result<Network, E> {
        Ok(Network {
            rx: self.rx.ok_or_else(|| E::missing_field("in"))?,
            tx: self.tx.ok_or_else(|| E::missing_field("out"))?,
        })
    }
}

impl<'de> Deserialize<'de> for Network {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ObjectVisitor::<NetworkFields>(std::marker::PhantomData))
    }
}
