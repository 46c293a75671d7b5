//! Durations as operators write them (`10s`, `500ms`, `1m`, `2h`, `5`),
//! parsed one way for flags, variables and the config file.

use std::time::Duration;

/// Parses `10s`, `500ms`, `1m`, `2h` or a bare number of seconds (`5`), the
/// same whether a flag, a variable or the config file gave it (the file may
/// also write the number unquoted: `resync_interval = 10`).
pub fn parse_duration(what: &str, s: &str) -> std::result::Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{what}: '{s}' is not a duration (e.g. 10s, 500ms, 1m)"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(format!(
                "{what}: '{s}' has an unknown unit '{unit}' (use ms, s, m or h)"
            ))
        }
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("{what}: '{s}' is not a duration (e.g. 10s, 500ms, 1m)"));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{what}: '{s}' is far too long a duration"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("x", "10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("x", "500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("x", "1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("x", "2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("x", "1.5s").unwrap(), Duration::from_millis(1500));
        for bad in ["", "s", "10 parsecs", "-1s", "ten", "1d"] {
            assert!(parse_duration("x", bad).is_err(), "{bad}");
        }
        // Refused, not a panic.
        let e = parse_duration("x", "99999999999999999999999999h").unwrap_err();
        assert!(e.contains("too long"), "{e}");
    }
}
