//! The small text forms agent reads and writes: durations, UTC times (one formatter), and
//! one-line TOML errors.

use std::time::{Duration, SystemTime};

/// One line for a TOML error in a file the operator wrote: toml's own message spans several
/// lines with a source excerpt; keep its first line and say where.
pub fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let first = e.message().lines().next().unwrap_or_default();
    match e.span() {
        Some(span) => format!(
            "{first} (at line {})",
            text[..span.start.min(text.len())].matches('\n').count() + 1
        ),
        None => first.to_owned(),
    }
}

/// Parses `500ms`, `30s`, `5m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (try 30s, 5m, 500ms)"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    if !secs.is_finite() || !(0.0..=7.0 * 86_400.0).contains(&secs) {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A UTC time in RFC 3339 (`2026-11-22T13:05:01Z`, with fractional seconds when it has
/// them): results files, CSV rows, JSON summaries.
pub fn rfc3339(t: SystemTime) -> String {
    aws_smithy_types::DateTime::from(t)
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_default()
}

/// The same time as a sortable name for a folder: `20261122-130501`.
pub fn stamp(t: SystemTime) -> String {
    let text = rfc3339(t).replace(['-', ':'], "");
    text.trim_end_matches('Z')
        .split('.')
        .next()
        .unwrap_or_default()
        .replace('T', "-")
}

/// Unix seconds of an RFC 3339 time, or `None`.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    aws_smithy_types::DateTime::from_str(s.trim(), aws_smithy_types::date_time::Format::DateTime)
        .map(|t| t.secs())
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("-1").is_err());
    }

    #[test]
    fn times_one_formatter_two_forms() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40Z");
        assert_eq!(stamp(t), "20261118-110640");
        assert_eq!(stamp(t + Duration::from_millis(250)), "20261118-110640");
        assert_eq!(parse_rfc3339("2026-11-18T11:06:40Z"), Some(1_795_000_000));
        assert_eq!(parse_rfc3339("yesterday"), None);
        // Leap day, and the calendar before 2000.
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(11_016 * 86_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00Z");
    }
}
