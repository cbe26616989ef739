//! Time parsing shared by the CLI, the config and every API.

use crate::error::{Error, Result};
use std::time::Duration;

/// An inclusive range of epoch milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimeRange {
    pub start_ms: i64,
    pub end_ms: i64,
}

impl TimeRange {
    pub fn new(start_ms: i64, end_ms: i64) -> Result<Self> {
        if start_ms > end_ms {
            return Err(Error::InvalidRange { start_ms, end_ms });
        }
        Ok(TimeRange { start_ms, end_ms })
    }

    /// Everything.
    pub fn all() -> Self {
        TimeRange {
            start_ms: i64::MIN,
            end_ms: i64::MAX,
        }
    }

    pub fn contains(&self, t: i64) -> bool {
        t >= self.start_ms && t <= self.end_ms
    }

    pub fn overlaps(&self, start_ms: i64, end_ms: i64) -> bool {
        start_ms <= self.end_ms && end_ms >= self.start_ms
    }
}

/// Parses a time as the APIs accept it: RFC 3339, or a number. A number is
/// read as epoch milliseconds when it is an integer of 12 or more digits
/// (Grafana's `${__from}`), and as epoch seconds otherwise (Prometheus'
/// convention, fractions allowed).
pub fn parse_time_ms(input: &str) -> Result<i64> {
    let s = input.trim();
    let bad = || Error::InvalidTime {
        input: input.to_string(),
    };
    if s.is_empty() {
        return Err(bad());
    }
    if let Some(rest) = s.strip_prefix("now") {
        let now = now_ms();
        return match rest.as_bytes().first() {
            None => Ok(now),
            Some(b'-') => parse_duration(&rest[1..])
                .map(|d| now - d.as_millis() as i64)
                .map_err(|_| bad()),
            Some(b'+') => parse_duration(&rest[1..])
                .map(|d| now + d.as_millis() as i64)
                .map_err(|_| bad()),
            _ => Err(bad()),
        };
    }
    if let Ok(i) = s.parse::<i64>() {
        let digits = s.trim_start_matches('-').len();
        return Ok(if digits >= 12 {
            i
        } else {
            i.saturating_mul(1000)
        });
    }
    if let Ok(f) = s.parse::<f64>() {
        if f.is_finite() {
            return Ok((f * 1000.0).round() as i64);
        }
        return Err(bad());
    }
    humantime::parse_rfc3339_weak(s)
        .ok()
        .or_else(|| parse_rfc3339_offset(s))
        .map(system_time_ms)
        .ok_or_else(bad)
}

fn system_time_ms(t: std::time::SystemTime) -> i64 {
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

/// RFC 3339 with a numeric offset (`+02:00`), which humantime does not read.
fn parse_rfc3339_offset(s: &str) -> Option<std::time::SystemTime> {
    if s.len() < 6 {
        return None;
    }
    let (head, off) = s.split_at(s.len() - 6);
    let sign = match off.as_bytes()[0] {
        b'+' => 1i64,
        b'-' => -1i64,
        _ => return None,
    };
    if off.as_bytes()[3] != b':' {
        return None;
    }
    let h: i64 = off[1..3].parse().ok()?;
    let m: i64 = off[4..6].parse().ok()?;
    let base = humantime::parse_rfc3339_weak(head).ok()?;
    let shift = Duration::from_secs(((h * 60 + m) * 60) as u64);
    if sign > 0 {
        base.checked_sub(shift)
    } else {
        base.checked_add(shift)
    }
}

/// Parses a duration: Prometheus style (`15s`, `5m`, `1h30m`, `14d`, `1w`, `500ms`)
/// or a bare number of seconds.
pub fn parse_duration(input: &str) -> Result<Duration> {
    let s = input.trim();
    let bad = || Error::InvalidDuration {
        input: input.to_string(),
    };
    if s.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = s.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Ok(Duration::from_secs_f64(secs));
        }
        return Err(bad());
    }
    let mut total_ms: u128 = 0;
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return Err(bad());
        }
        let n: u128 = s[start..i].parse().map_err(|_| bad())?;
        let ustart = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit_ms: u128 = match &s[ustart..i] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            "y" => 365 * 86_400_000,
            _ => return Err(bad()),
        };
        total_ms = total_ms.saturating_add(n.saturating_mul(unit_ms));
    }
    Ok(Duration::from_millis(total_ms.min(u64::MAX as u128) as u64))
}

/// Formats milliseconds as RFC 3339 UTC with millisecond precision.
pub fn format_rfc3339_ms(ms: i64) -> String {
    let t = if ms >= 0 {
        std::time::UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        std::time::UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    };
    humantime::format_rfc3339_millis(t).to_string()
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    system_time_ms(std::time::SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_every_accepted_form() {
        assert_eq!(
            parse_time_ms("2024-05-31T16:08:37Z").unwrap(),
            1_717_171_717_000
        );
        assert_eq!(
            parse_time_ms("2024-05-31T16:08:37.5Z").unwrap(),
            1_717_171_717_500
        );
        assert_eq!(
            parse_time_ms("2024-05-31T18:08:37+02:00").unwrap(),
            1_717_171_717_000
        );
        assert_eq!(parse_time_ms("1717171717").unwrap(), 1_717_171_717_000);
        assert_eq!(parse_time_ms("1717171717.25").unwrap(), 1_717_171_717_250);
        assert_eq!(parse_time_ms("1717171717000").unwrap(), 1_717_171_717_000);
        let now = now_ms();
        assert!((parse_time_ms("now").unwrap() - now).abs() < 5_000);
        assert!((parse_time_ms("now-1h").unwrap() - (now - 3_600_000)).abs() < 5_000);
        assert!(parse_time_ms("now-soon").is_err());
        let e = parse_time_ms("yesterday").unwrap_err().to_string();
        assert!(e.contains("\"yesterday\""), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15s").unwrap(), Duration::from_secs(15));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(
            parse_duration("14d").unwrap(),
            Duration::from_secs(14 * 86400)
        );
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2.5").unwrap(), Duration::from_millis(2500));
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn rfc3339_round_trip() {
        assert_eq!(
            format_rfc3339_ms(1_717_171_717_500),
            "2024-05-31T16:08:37.500Z"
        );
    }
}
