//! Scenarios: what `lab run` does, step by step, read from a TOML file.
//!
//! A scenario is a list of steps; each step is one `lab up` run (a fresh Redis, fresh systems, one
//! agents process per system) at one offered load. Settings in `[defaults]` apply to every step; a
//! step may override them. `--set key=value` overrides a setting for every step, whatever the file
//! says (so `--set duration=3s` shortens a whole scenario). The format is documented in
//! `docs/experiments.md`.
//!
//! Errors name the file, the line and column, and the field, and are found before anything starts:
//! the file is parsed by `toml` + serde with `deny_unknown_fields`, and every value is checked while
//! it is parsed (a duration that is not one, a rate of zero), so that the error carries its span.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

/// The scenarios shipped with the lab, embedded so that `lab list` and `lab run NAME` work from
/// anywhere: `(name, file text)`.
pub const BUILT_IN: &[(&str, &str)] = &[
    ("quick", include_str!("../scenarios/quick.toml")),
    ("original-plan", include_str!("../scenarios/original-plan.toml")),
    ("protocols", include_str!("../scenarios/protocols.toml")),
    ("connections", include_str!("../scenarios/connections.toml")),
    ("scaling", include_str!("../scenarios/scaling.toml")),
    ("durability", include_str!("../scenarios/durability.toml")),
    ("faults", include_str!("../scenarios/faults.toml")),
    ("saturation", include_str!("../scenarios/saturation.toml")),
];

/// How the agents reach System 1 (System 2 is always WebSocket).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1: one request at a time per connection.
    Http1,
    /// Cleartext HTTP/2: many requests in flight on one connection.
    Http2,
}

impl Protocol {
    /// The name `lab up --protocol` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::Http2 => "http2",
        }
    }
}

/// Which systems a step runs (`lab up --only`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Systems {
    /// Both, side by side (the lab's usual way).
    #[default]
    Both,
    /// System 1 alone.
    System1,
    /// System 2 alone.
    System2,
}

impl Systems {
    /// The `lab up --only` value, if any.
    pub fn only(self) -> Option<&'static str> {
        match self {
            Systems::Both => None,
            Systems::System1 => Some("system1"),
            Systems::System2 => Some("system2"),
        }
    }
}

/// The private Redis's append-only file (`lab up --redis-fsync`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fsync {
    /// fsync after every write.
    Always,
    /// fsync once a second (Redis's default).
    #[default]
    Everysec,
    /// No AOF.
    Off,
}

impl Fsync {
    /// The name `lab up --redis-fsync` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Fsync::Always => "always",
            Fsync::Everysec => "everysec",
            Fsync::Off => "off",
        }
    }
}

/// Settings of a step; in `[defaults]` and in each `[[step]]` every one is optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Measured sending time.
    #[serde(default, deserialize_with = "duration", serialize_with = "ser_duration")]
    pub duration: Option<Duration>,
    /// Sending before the measured time, not measured.
    #[serde(default, deserialize_with = "duration", serialize_with = "ser_duration")]
    pub warmup: Option<Duration>,
    /// An idle pause after the step, so that the machine settles before the next one.
    #[serde(default, deserialize_with = "duration", serialize_with = "ser_duration")]
    pub cooldown: Option<Duration>,
    /// Simulated servers per system.
    #[serde(default, deserialize_with = "agents")]
    pub agents: Option<u64>,
    /// System 1's protocol.
    pub protocol: Option<Protocol>,
    /// Metrics per message.
    #[serde(default, deserialize_with = "batch")]
    pub batch: Option<u64>,
    /// How many times each step runs (the spread of repeats estimates the run-to-run noise).
    #[serde(default, deserialize_with = "repeat")]
    pub repeat: Option<u64>,
    /// System 1's consumer-group workers.
    #[serde(default, deserialize_with = "workers")]
    pub workers: Option<u64>,
    /// The private Redis's AOF: `always`, `everysec` or `off`.
    pub redis_fsync: Option<Fsync>,
    /// System 1's roles as separate processes (`lab up --system1-processes`).
    pub system1_processes: Option<bool>,
    /// `both` (the default), or the one system to run: `system1` or `system2`.
    pub only: Option<Systems>,
    /// Faults to inject, each `KIND@AT[:DOWN]` as `lab up --fault` takes it: one string or a list.
    #[serde(default, deserialize_with = "faults")]
    pub faults: Option<Vec<String>>,
}

impl Settings {
    /// `self`, with every setting `over` has replacing this one.
    fn overridden_by(&self, over: &Settings) -> Settings {
        Settings {
            duration: over.duration.or(self.duration),
            warmup: over.warmup.or(self.warmup),
            cooldown: over.cooldown.or(self.cooldown),
            agents: over.agents.or(self.agents),
            protocol: over.protocol.or(self.protocol),
            batch: over.batch.or(self.batch),
            repeat: over.repeat.or(self.repeat),
            workers: over.workers.or(self.workers),
            redis_fsync: over.redis_fsync.or(self.redis_fsync),
            system1_processes: over.system1_processes.or(self.system1_processes),
            only: over.only.or(self.only),
            faults: over.faults.clone().or_else(|| self.faults.clone()),
        }
    }
}

/// One `[[step]]` of the file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct StepFile {
    label: Option<String>,
    #[serde(deserialize_with = "rate")]
    rate: f64,
    // The settings again, not `#[serde(flatten)]`: flatten would lose `deny_unknown_fields` and
    // the spans errors are reported with.
    #[serde(default, deserialize_with = "duration")]
    duration: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    warmup: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    cooldown: Option<Duration>,
    #[serde(default, deserialize_with = "agents")]
    agents: Option<u64>,
    protocol: Option<Protocol>,
    #[serde(default, deserialize_with = "batch")]
    batch: Option<u64>,
    #[serde(default, deserialize_with = "repeat")]
    repeat: Option<u64>,
    #[serde(default, deserialize_with = "workers")]
    workers: Option<u64>,
    redis_fsync: Option<Fsync>,
    system1_processes: Option<bool>,
    only: Option<Systems>,
    #[serde(default, deserialize_with = "faults")]
    faults: Option<Vec<String>>,
}

impl StepFile {
    fn settings(&self) -> Settings {
        Settings {
            duration: self.duration,
            warmup: self.warmup,
            cooldown: self.cooldown,
            agents: self.agents,
            protocol: self.protocol,
            batch: self.batch,
            repeat: self.repeat,
            workers: self.workers,
            redis_fsync: self.redis_fsync,
            system1_processes: self.system1_processes,
            only: self.only,
            faults: self.faults.clone(),
        }
    }
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    name: String,
    description: String,
    #[serde(default, deserialize_with = "knee")]
    knee_p99_ms: Option<f64>,
    #[serde(default)]
    defaults: Settings,
    #[serde(rename = "step")]
    steps: Vec<StepFile>,
}

/// A step with every setting decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// A short name, unique in the scenario (the offered rate if the file gives none).
    pub label: String,
    /// Metrics per second offered to each system.
    pub rate: f64,
    /// Measured sending time.
    #[serde(with = "secs")]
    pub duration: Duration,
    /// Unmeasured sending first.
    #[serde(with = "secs")]
    pub warmup: Duration,
    /// Idle pause after the step.
    #[serde(with = "secs")]
    pub cooldown: Duration,
    /// Simulated servers per system.
    pub agents: u64,
    /// System 1's protocol.
    pub protocol: Protocol,
    /// Metrics per message.
    pub batch: u64,
    /// Runs of this step.
    pub repeat: u64,
    /// System 1's workers.
    #[serde(default = "two")]
    pub workers: u64,
    /// The private Redis's AOF.
    #[serde(default)]
    pub redis_fsync: Fsync,
    /// System 1's roles as separate processes.
    #[serde(default)]
    pub system1_processes: bool,
    /// Which systems run.
    #[serde(default)]
    pub only: Systems,
    /// Faults injected during the step (`lab up --fault`).
    #[serde(default)]
    pub faults: Vec<String>,
}

fn two() -> u64 {
    2
}

/// A scenario ready to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scenario {
    /// Its name (the report folder ends with it; `lab compare` refuses two different ones).
    pub name: String,
    /// What it shows, in a sentence or two.
    pub description: String,
    /// When set, the report says where each system stopped keeping up: the highest rate at which
    /// it delivered every metric with an end-to-end p99 at most this many ms (`lab run saturation`).
    #[serde(default)]
    pub knee_p99_ms: Option<f64>,
    /// Its steps, in order.
    pub steps: Vec<Step>,
}

/// What can be wrong with a scenario: always with where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioError {
    /// The file (or built-in scenario) it came from.
    pub file: String,
    /// 1-based line and column, when the error has a place in the file.
    pub at: Option<(usize, usize)>,
    /// The field concerned, when known.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some((line, column)) = self.at {
            write!(f, ":{line}:{column}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": field `{field}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ScenarioError {}

/// The settings every step gets when neither the file nor `--set` says otherwise.
pub fn builtin_defaults() -> Settings {
    Settings {
        duration: Some(Duration::from_secs(20)),
        warmup: Some(Duration::from_secs(2)),
        cooldown: Some(Duration::from_secs(1)),
        agents: Some(5),
        protocol: Some(Protocol::Http1),
        batch: Some(1),
        repeat: Some(1),
        workers: Some(2),
        redis_fsync: Some(Fsync::Everysec),
        system1_processes: Some(false),
        only: Some(Systems::Both),
        faults: Some(Vec::new()),
    }
}

/// `lab run`'s argument: a built-in name or a file path. Returns the source's name and its text.
pub fn find(name_or_path: &str) -> Result<(String, String), ScenarioError> {
    if let Some((name, text)) = BUILT_IN.iter().find(|(n, _)| *n == name_or_path) {
        return Ok((format!("scenarios/{name}.toml (built in)"), text.to_string()));
    }
    let path = Path::new(name_or_path);
    match std::fs::read_to_string(path) {
        Ok(text) => Ok((path.display().to_string(), text)),
        Err(e) => Err(ScenarioError {
            file: name_or_path.to_string(),
            at: None,
            field: None,
            message: format!(
                "not a built-in scenario ({}) and not a readable file: {e}",
                BUILT_IN.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
            ),
        }),
    }
}

/// Parses `--set key=value` into settings, checked as if they were in the file.
pub fn parse_sets(sets: &[String]) -> Result<Settings, ScenarioError> {
    let mut text = String::new();
    for set in sets {
        let Some((key, value)) = set.split_once('=') else {
            return Err(ScenarioError {
                file: "--set".into(),
                at: None,
                field: None,
                message: format!("{set:?} is not key=value (e.g. --set duration=5s)"),
            });
        };
        let key = key.trim();
        let value = value.trim();
        // Numbers stay numbers; anything else is a string (durations, protocols).
        let quoted = if value.parse::<f64>().is_ok() {
            value.to_string()
        } else {
            format!("{value:?}")
        };
        text.push_str(&format!("{key} = {quoted}\n"));
    }
    toml::from_str::<Settings>(&text).map_err(|e| {
        let mut err = error_from_toml("--set", &text, &e);
        err.at = None;
        err
    })
}

/// Parses a scenario file's text, applying `sets` over every step.
pub fn parse(file: &str, text: &str, sets: &Settings) -> Result<Scenario, ScenarioError> {
    let parsed: ScenarioFile = toml::from_str(text).map_err(|e| error_from_toml(file, text, &e))?;
    let whole = |field: &str, message: String| ScenarioError {
        file: file.to_string(),
        at: None,
        field: Some(field.to_string()),
        message,
    };
    if parsed.steps.is_empty() {
        return Err(whole("step", "a scenario needs at least one [[step]]".into()));
    }
    if parsed.name.trim().is_empty()
        || !parsed
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(whole(
            "name",
            format!(
                "{:?}: use letters, digits, - and _ (it names the report folder)",
                parsed.name
            ),
        ));
    }
    let base = builtin_defaults().overridden_by(&parsed.defaults);
    let mut steps: Vec<Step> = Vec::new();
    for (i, step) in parsed.steps.iter().enumerate() {
        let s = base.overridden_by(&step.settings()).overridden_by(sets);
        let label = step.label.clone().unwrap_or_else(|| {
            format!(
                "{}/s {} b{}",
                step.rate,
                s.protocol.unwrap_or(Protocol::Http1).as_str(),
                s.batch.unwrap_or(1)
            )
        });
        if steps.iter().any(|other| other.label == label) {
            return Err(whole(
                "label",
                format!(
                    "step {} has the same label as an earlier one ({label:?}); give each step its own",
                    i + 1
                ),
            ));
        }
        let duration = s.duration.expect("built-in default");
        if duration.is_zero() {
            return Err(whole(
                "duration",
                format!("step {} ({label}) would measure nothing", i + 1),
            ));
        }
        steps.push(Step {
            label,
            rate: step.rate,
            duration,
            warmup: s.warmup.expect("built-in default"),
            cooldown: s.cooldown.expect("built-in default"),
            agents: s.agents.expect("built-in default"),
            protocol: s.protocol.expect("built-in default"),
            batch: s.batch.expect("built-in default"),
            repeat: s.repeat.expect("built-in default"),
            workers: s.workers.expect("built-in default"),
            redis_fsync: s.redis_fsync.expect("built-in default"),
            system1_processes: s.system1_processes.expect("built-in default"),
            only: s.only.expect("built-in default"),
            faults: s.faults.expect("built-in default"),
        });
    }
    Ok(Scenario {
        name: parsed.name,
        description: parsed.description.trim().to_string(),
        knee_p99_ms: parsed.knee_p99_ms,
        steps,
    })
}

impl Scenario {
    /// How long the steps take to send and pause, without start-up and drain.
    pub fn planned(&self) -> Duration {
        self.steps
            .iter()
            .map(|s| (s.warmup + s.duration + s.cooldown) * s.repeat as u32)
            .sum()
    }
}

/// toml's error, with its byte span turned into a line and column, and the field named: the key
/// of the line the span starts on (for a bad value), or the one the message quotes (unknown or
/// missing field).
fn error_from_toml(file: &str, text: &str, e: &toml::de::Error) -> ScenarioError {
    let message = e.message().trim().to_string();
    let at = e.span().map(|span| line_column(text, span.start));
    let quoted = message
        .split('`')
        .nth(1)
        .filter(|_| message.contains("field `"))
        .map(str::to_string);
    let from_line = at.and_then(|(line, _)| {
        let text = text.lines().nth(line - 1)?;
        let (key, _) = text.split_once('=')?;
        let key = key.trim();
        (!key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
            .then(|| key.to_string())
    });
    ScenarioError {
        file: file.to_string(),
        at,
        field: quoted.or(from_line),
        message,
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, column)
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    lab_core::duration::parse_duration(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

fn ser_duration<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(&format!("{}ms", d.as_millis())),
        None => s.serialize_none(),
    }
}

fn bounded<'de, D: Deserializer<'de>>(
    d: D,
    low: u64,
    high: u64,
    what: &str,
) -> Result<Option<u64>, D::Error> {
    let n = i64::deserialize(d)?;
    if n < low as i64 || n > high as i64 {
        return Err(serde::de::Error::custom(format!(
            "{n} {what}: must be between {low} and {high}"
        )));
    }
    Ok(Some(n as u64))
}

fn agents<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    bounded(d, 1, 100_000, "simulated servers")
}

fn batch<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    bounded(d, 1, 1000, "metrics per message")
}

fn repeat<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    bounded(d, 1, 20, "repeats")
}

fn workers<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    bounded(d, 1, 64, "workers")
}

fn knee<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    let ms = f64::deserialize(d)?;
    if ms.is_finite() && ms > 0.0 {
        Ok(Some(ms))
    } else {
        Err(serde::de::Error::custom(format!("{ms} ms: must be above 0")))
    }
}

/// One fault or a list of them, each checked as `lab up --fault` would check it.
fn faults<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let faults = match OneOrMany::deserialize(d)
        .map_err(|_| serde::de::Error::custom("a fault (\"kill-worker@8s\") or a list of them"))?
    {
        OneOrMany::One(f) => vec![f],
        OneOrMany::Many(fs) => fs,
    };
    for fault in &faults {
        crate::up::fault::parse_fault(fault).map_err(serde::de::Error::custom)?;
    }
    Ok(Some(faults))
}

fn rate<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let rate = f64::deserialize(d)?;
    if rate.is_finite() && rate > 0.0 && rate <= 10_000_000.0 {
        Ok(rate)
    } else {
        Err(serde::de::Error::custom(format!(
            "{rate} metrics/s: must be above 0 and at most 10000000"
        )))
    }
}

/// Durations in the run record, as seconds.
mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_secs_f64(f64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_column_counts_from_one() {
        assert_eq!(line_column("a\nbc\n", 0), (1, 1));
        assert_eq!(line_column("a\nbc\n", 3), (2, 2));
    }
}
