//! What is wrong with an input, said precisely.
//!
//! A [`Problem`] names *where* (a JSON Pointer path, plus the batch index for batches) and *what*
//! (a sentence a person can act on). Validation never stops at the first problem: a client that
//! sends five mistakes learns about all five in one round trip.
//!
//! The field rules themselves (`check_*`) live here too, as small functions that return the
//! message of what is wrong. Both parsing paths (the fast typed one and the slow diagnosing one,
//! see [`crate::parse`]) call these same functions, so the two can never disagree about a value.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::limits::{
    self, ID_CHARSET, MAX_NETWORK_VALUE, MAX_READING_NAME_LEN, MAX_SERVER_ID_LEN, MAX_TIMESTAMP_MS,
};

/// One thing wrong with an input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// Where: a JSON Pointer (RFC 6901) to the offending value, such as `/metrics/cpu`, or
    /// `/3/metrics/cpu` for item 3 of a batch. The empty string means the whole document. This is
    /// the same notation as `instancePath` in the original lab's (ajv) errors.
    pub path: String,
    /// Which item of a batch, when the problem is inside one. Also encoded in `path`; repeated
    /// here so a client can group problems by item without parsing paths.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// What is wrong, as a sentence fragment that follows the path: `must be between 0 and 100`.
    pub message: String,
}

impl Problem {
    /// A problem at `path` (outside any batch).
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            path: path.into(),
            index: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "(document)"
        } else {
            &self.path
        };
        write!(f, "{path}: {}", self.message)
    }
}

/// Appends `key` to a JSON Pointer, escaping `~` and `/` as RFC 6901 requires.
pub fn join(base: &str, key: &str) -> String {
    let mut path = String::with_capacity(base.len() + key.len() + 1);
    path.push_str(base);
    path.push('/');
    for c in key.chars() {
        match c {
            '~' => path.push_str("~0"),
            '/' => path.push_str("~1"),
            c => path.push(c),
        }
    }
    path
}

// ---- Field rules. Each returns `Err(message)` for a bad value. ----

/// `serverId`: 1 to [`MAX_SERVER_ID_LEN`] bytes of [`ID_CHARSET`].
pub fn check_server_id(id: &str) -> Result<(), String> {
    check_name(id, MAX_SERVER_ID_LEN)
}

/// The name of an extra reading inside `metrics`: same charset as a server id, shorter.
pub fn check_reading_name(name: &str) -> Result<(), String> {
    check_name(name, MAX_READING_NAME_LEN)
}

fn check_name(s: &str, max: usize) -> Result<(), String> {
    if s.is_empty() {
        return Err("must be a non-empty string".into());
    }
    if s.len() > max {
        return Err(format!("must be at most {max} bytes long (got {})", s.len()));
    }
    if let Some(pos) = s.bytes().position(|b| !limits::is_id_byte(b)) {
        // Report the character, not the byte, so a multi-byte character prints whole.
        let bad = s[pos..].chars().next().unwrap_or('?');
        return Err(format!(
            "must contain only {ID_CHARSET} (found {bad:?} at byte {pos})"
        ));
    }
    Ok(())
}

/// `timestamp`: epoch milliseconds, finite, 0 to [`MAX_TIMESTAMP_MS`].
pub fn check_timestamp(ts: f64) -> Result<(), String> {
    if !ts.is_finite() || !(0.0..=MAX_TIMESTAMP_MS).contains(&ts) {
        return Err(format!(
            "must be epoch milliseconds between 0 and {MAX_TIMESTAMP_MS} (got {})",
            Shown(ts)
        ));
    }
    Ok(())
}

/// `cpu`, `memory`, `disk`: a percentage, finite, 0 to 100.
pub fn check_percent(v: f64) -> Result<(), String> {
    if !v.is_finite() || !(0.0..=100.0).contains(&v) {
        return Err(format!(
            "must be a percentage between 0 and 100 (got {})",
            Shown(v)
        ));
    }
    Ok(())
}

/// `network.in`, `network.out`: bytes per second, finite, 0 to [`MAX_NETWORK_VALUE`].
pub fn check_network(v: f64) -> Result<(), String> {
    if !v.is_finite() || !(0.0..=MAX_NETWORK_VALUE).contains(&v) {
        return Err(format!(
            "must be between 0 and {MAX_NETWORK_VALUE:e} (got {})",
            Shown(v)
        ));
    }
    Ok(())
}

/// An extra reading's value: any finite number.
pub fn check_finite(v: f64) -> Result<(), String> {
    if !v.is_finite() {
        return Err(format!("must be a finite number (got {})", Shown(v)));
    }
    Ok(())
}

/// Prints a number the way JSON would, so `120` is not shown as `120.0`.
struct Shown(f64);

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.fract() == 0.0 && self.0.abs() < 1e15 {
            write!(f, "{}", self.0 as i64)
        } else {
            write!(f, "{}", self.0)
        }
    }
}

/// The JSON type name of a value, for "must be a number (got a string)".
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Walks one JSON object field by field, collecting every problem on the way.
///
/// This is the diagnosing side of parsing: it is used when the fast typed parse has failed (or
/// for rare messages where speed does not matter), and its job is to say *everything* that is
/// wrong. Each getter records a problem and returns `None` when a field is missing or mistyped,
/// so the caller can go on checking the other fields.
pub struct Fields<'v, 'p> {
    obj: &'v Map<String, Value>,
    base: String,
    index: Option<usize>,
    problems: &'p mut Vec<Problem>,
}

impl<'v, 'p> Fields<'v, 'p> {
    /// Starts walking `value`, which should be an object at `base`. Returns `None` (with a
    /// problem recorded) when it is not an object.
    pub fn of(
        value: &'v Value,
        base: &str,
        index: Option<usize>,
        problems: &'p mut Vec<Problem>,
    ) -> Option<Self> {
        match value {
            Value::Object(obj) => Some(Fields {
                obj,
                base: base.to_owned(),
                index,
                problems,
            }),
            other => {
                problems.push(Problem {
                    path: base.to_owned(),
                    index,
                    message: format!("must be an object (got {})", type_name(other)),
                });
                None
            }
        }
    }

    /// The path of `key` inside this object.
    pub fn path(&self, key: &str) -> String {
        join(&self.base, key)
    }

    /// The batch index this object belongs to, if any.
    pub fn index(&self) -> Option<usize> {
        self.index
    }

    /// Records a problem at `key`.
    pub fn problem(&mut self, key: &str, message: impl Into<String>) {
        let path = self.path(key);
        self.problems.push(Problem {
            path,
            index: self.index,
            message: message.into(),
        });
    }

    /// Records a problem at this object itself.
    pub fn problem_here(&mut self, message: impl Into<String>) {
        let path = self.base.clone();
        self.problems.push(Problem {
            path,
            index: self.index,
            message: message.into(),
        });
    }

    /// Walks into the object at `key`: `None` when absent (no problem recorded) or when it is not an
    /// object (a problem recorded).
    pub fn object(&mut self, key: &str) -> Option<Fields<'v, '_>> {
        let v = self.obj.get(key)?;
        let path = self.path(key);
        Fields::of(v, &path, self.index, self.problems)
    }

    /// Records a problem for every key not in `allowed`.
    pub fn deny_unknown(&mut self, allowed: &[&str]) {
        let unknown: Vec<&String> = self
            .obj
            .keys()
            .filter(|k| !allowed.contains(&k.as_str()))
            .collect();
        for key in unknown {
            self.problem(
                key,
                format!("is not a known field (allowed: {})", allowed.join(", ")),
            );
        }
    }

    /// The raw value at `key`, if present (`null` counts as present).
    pub fn raw(&self, key: &str) -> Option<&'v Value> {
        self.obj.get(key)
    }

    /// Every key and value of the object, in order.
    pub fn entries(&self) -> impl Iterator<Item = (&'v String, &'v Value)> + 'v {
        self.obj.iter()
    }

    /// A required field: records "is required" when absent.
    pub fn required(&mut self, key: &str) -> Option<&'v Value> {
        let v = self.obj.get(key);
        if v.is_none() {
            self.problem(key, "is required");
        }
        v
    }

    /// A required string, checked by `rule`.
    pub fn req_str(&mut self, key: &str, rule: fn(&str) -> Result<(), String>) -> Option<&'v str> {
        let v = self.required(key)?;
        self.str_value(key, v, rule)
    }

    /// An optional string (absent or `null` is `None`), checked by `rule`.
    pub fn opt_str(&mut self, key: &str, rule: fn(&str) -> Result<(), String>) -> Option<&'v str> {
        match self.obj.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => self.str_value(key, v, rule),
        }
    }

    fn str_value(
        &mut self,
        key: &str,
        v: &'v Value,
        rule: fn(&str) -> Result<(), String>,
    ) -> Option<&'v str> {
        match v {
            Value::String(s) => match rule(s) {
                Ok(()) => Some(s),
                Err(msg) => {
                    self.problem(key, msg);
                    None
                }
            },
            other => {
                self.problem(key, format!("must be a string (got {})", type_name(other)));
                None
            }
        }
    }

    /// A required number, checked by `rule`.
    pub fn req_f64(&mut self, key: &str, rule: fn(f64) -> Result<(), String>) -> Option<f64> {
        let v = self.required(key)?;
        self.f64_value(key, v, rule)
    }

    /// Checks that `v` (found at `key`) is a number obeying `rule`.
    pub fn f64_value(&mut self, key: &str, v: &Value, rule: fn(f64) -> Result<(), String>) -> Option<f64> {
        match v.as_f64() {
            Some(n) => match rule(n) {
                Ok(()) => Some(n),
                Err(msg) => {
                    self.problem(key, msg);
                    None
                }
            },
            None => {
                self.problem(key, format!("must be a number (got {})", type_name(v)));
                None
            }
        }
    }

    /// An optional unsigned integer (absent or `null` is `None`) of at most `max`.
    pub fn opt_u64(&mut self, key: &str, max: u64) -> Option<u64> {
        let v = self.obj.get(key)?;
        if v.is_null() {
            return None;
        }
        match v.as_u64() {
            Some(n) if n <= max => Some(n),
            Some(n) => {
                self.problem(key, format!("must be at most {max} (got {n})"));
                None
            }
            None => {
                let got = if v.is_number() {
                    v.to_string()
                } else {
                    type_name(v).to_owned()
                };
                self.problem(
                    key,
                    format!("must be an unsigned integer of at most {max} (got {got})"),
                );
                None
            }
        }
    }

    /// An optional boolean (absent or `null` is `None`).
    pub fn opt_bool(&mut self, key: &str) -> Option<bool> {
        match self.obj.get(key)? {
            Value::Null => None,
            Value::Bool(b) => Some(*b),
            other => {
                self.problem(key, format!("must be a boolean (got {})", type_name(other)));
                None
            }
        }
    }
}
