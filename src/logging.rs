//! Logging for the daemon: the systemd journal with structured fields when
//! started by systemd (`JOURNAL_STREAM` set), otherwise one plain or JSON
//! line per event on stderr. Key-value pairs given to `log` macros
//! (`info!(cause = "table_missing"; "...")`) become fields in every format.

use crate::cli::LogFormat;
use log::kv::{Key, Value, VisitSource};
use log::{Level, LevelFilter, Log, Metadata, Record};
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

struct StderrLogger {
    json: bool,
}

struct Collect(Vec<(String, String)>);

impl<'kvs> VisitSource<'kvs> for Collect {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
        self.0.push((key.to_string(), value.to_string()));
        Ok(())
    }
}

/// `2026-11-28T15:40:00.123Z` from a UNIX time in milliseconds.
pub fn rfc3339_millis(ms: u128) -> String {
    let secs = (ms / 1000) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (H. Hinnant), proleptic Gregorian, UTC.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

fn now() -> String {
    rfc3339_millis(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0),
    )
}

/// A field value in double quotes, `"` and `\` escaped and control characters
/// written as `\n`, `\t` or `\u{..}`, so one event stays one line (logfmt style).
fn quoted(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One log line in the text or JSON format.
pub fn format_line(json: bool, ts: &str, level: Level, msg: &str, fields: &[(String, String)]) -> String {
    if json {
        let mut obj = serde_json::Map::new();
        obj.insert("ts".into(), ts.into());
        obj.insert("level".into(), level.as_str().to_lowercase().into());
        obj.insert("msg".into(), msg.into());
        for (k, v) in fields {
            obj.insert(k.clone(), v.clone().into());
        }
        serde_json::Value::Object(obj).to_string()
    } else {
        let mut line = format!("{ts} {:<5} {msg}", level.as_str());
        for (k, v) in fields {
            line.push_str(&format!(" {k}={}", quoted(v)));
        }
        line
    }
}

impl Log for StderrLogger {
    fn enabled(&self, m: &Metadata) -> bool {
        m.level() <= Level::Info
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut fields = Collect(Vec::new());
        let _ = record.key_values().visit(&mut fields);
        let line = format_line(self.json, &now(), record.level(), &record.args().to_string(), &fields.0);
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }

    fn flush(&self) {}
}

/// The one-shot commands' logger: warnings and errors only, on stderr,
/// as `apiserver-guard: warning: ...` (what they print on their own stays
/// theirs; this is for what the shared code logs, e.g. a record that could
/// not be written).
struct OneShotLogger;

impl log::Log for OneShotLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= Level::Warn
    }

    fn log(&self, record: &Record) {
        if self.enabled(record.metadata()) {
            let kind = if record.level() == Level::Error {
                "error"
            } else {
                "warning"
            };
            let _ = writeln!(std::io::stderr().lock(), "apiserver-guard: {kind}: {}", record.args());
        }
    }

    fn flush(&self) {}
}

/// Installs the one-shot commands' logger (warnings and errors to stderr).
pub fn init_one_shot() {
    if log::set_boxed_logger(Box::new(OneShotLogger)).is_ok() {
        log::set_max_level(LevelFilter::Warn);
    }
}

/// Installs the logger once; later calls are ignored.
pub fn init(format: LogFormat) {
    let journal = format == LogFormat::Auto && std::env::var_os("JOURNAL_STREAM").is_some();
    if journal {
        if let Ok(logger) = systemd_journal_logger::JournalLog::new() {
            let logger = logger.with_syslog_identifier("apiserver-guard".to_string());
            if logger.install().is_ok() {
                log::set_max_level(LevelFilter::Info);
                return;
            }
        }
    }
    let json = format == LogFormat::Json;
    if log::set_boxed_logger(Box::new(StderrLogger { json })).is_ok() {
        log::set_max_level(LevelFilter::Info);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_millis(1_795_880_400_123), "2026-11-28T15:40:00.123Z");
        assert_eq!(rfc3339_millis(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn text_and_json_lines_carry_fields() {
        let f = vec![("cause".to_string(), "table_missing".to_string())];
        let t = format_line(false, "T", Level::Info, "repaired", &f);
        assert_eq!(t, "T INFO  repaired cause=\"table_missing\"");
        let odd = vec![("why".to_string(), "a \"b\"\nc\\".to_string())];
        let t = format_line(false, "T", Level::Info, "m", &odd);
        assert_eq!(t, "T INFO  m why=\"a \\\"b\\\"\\nc\\\\\"", "one line, quotes escaped");
        let j: serde_json::Value = serde_json::from_str(&format_line(true, "T", Level::Warn, "x \"y\"", &f)).unwrap();
        assert_eq!(j["level"], "warn");
        assert_eq!(j["msg"], "x \"y\"");
        assert_eq!(j["cause"], "table_missing");
    }
}
