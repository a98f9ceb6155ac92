//! Durations as people type them on a command line or in a scenario file: `30s`, `500ms`, `2m`, `1h`,
//! or a plain number of seconds. One parser for every flag and file of the lab, so that `--duration`,
//! `lab up --for` and a scenario's `warmup` accept the same words and refuse them with the same message.

use std::time::Duration;

/// Parses durations like `30s`, `500ms`, `2m`, `1h`, or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (try 30s, 500ms, 2m)"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown unit {other:?} in {s:?} (use ms, s, m or h)")),
    };
    if !seconds.is_finite() || !(0.0..=30.0 * 86_400.0).contains(&seconds) {
        return Err(format!("{s:?} must be between 0 and 30 days"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_bare_seconds() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration(" 3 "), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
    }

    #[test]
    fn mistakes_say_what_a_duration_looks_like() {
        assert!(parse_duration("soon").unwrap_err().contains("try 30s"));
        assert!(parse_duration("3y").unwrap_err().contains("use ms, s, m or h"));
        assert!(
            parse_duration("-1s")
                .unwrap_err()
                .contains("between 0 and 30 days")
        );
        assert!(parse_duration("NaNs").is_err());
    }
}
