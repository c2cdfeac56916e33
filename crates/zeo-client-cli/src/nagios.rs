//! Nagios plugin output, as ZEO's `zeo-nagios` writes it: a status line,
//! performance data after `|`, and the exit status that is the level
//! (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN). Rates come from a state file
//! holding the previous answer, in `zeo-nagios -s`'s format (a JSON object
//! of storage name to its `server_status`), so the two can take turns on
//! one file.

use std::path::Path;
use std::process::ExitCode;
use std::time::SystemTime;

use serde_json::{Map, Value as Json};

/// Counters reported as they are.
const GAUGES: [&str; 3] = ["active_txns", "connections", "waiting"];
/// Counters reported as rates between two runs.
const RATES: [&str; 6] = [
    "aborts",
    "commits",
    "conflicts",
    "conflicts_resolved",
    "loads",
    "stores",
];
/// `last-transaction` of a storage that never committed.
const NO_TRANSACTION: &str = "0000000000000000";

/// A Nagios level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// 0.
    Ok,
    /// 1.
    Warning,
    /// 2.
    Critical,
}

impl Level {
    /// The plugin's exit status.
    pub fn exit_code(self) -> ExitCode {
        ExitCode::from(self as u8)
    }
}

/// The time unit of rates (`zeo-nagios -u`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Per {
    /// Per second.
    Seconds,
    /// Per minute (the default, as in zeo-nagios).
    Minutes,
    /// Per hour.
    Hours,
    /// Per day.
    Days,
}

impl Per {
    fn seconds(self) -> f64 {
        match self {
            Per::Seconds => 1.0,
            Per::Minutes => 60.0,
            Per::Hours => 3600.0,
            Per::Days => 86400.0,
        }
    }
}

/// One `label=value` of performance data; storages other than `1` prefix
/// the label with their name, as zeo-nagios does.
fn metric(metrics: &mut Vec<String>, storage: &str, name: &str, value: &str) {
    let label = if storage == "1" {
        name.to_owned()
    } else if storage.contains(' ') {
        format!("'{storage}:{name}'")
    } else {
        format!("{storage}:{name}")
    };
    metrics.push(format!("{label}={value}"));
}

/// A number the way Python prints it: `3`, `0.5`, `2.0` for floats.
fn python_number(v: &Json, float: bool) -> String {
    match v.as_f64() {
        Some(f) if float && f.fract() == 0.0 && f.abs() < 1e16 => format!("{f:.1}"),
        Some(f) if float => format!("{f}"),
        _ => v.to_string(),
    }
}

/// The plugin's text: messages, with the first metric after `|` on the
/// first line and the others on continuation lines.
pub fn render(messages: &[String], metrics: &[String]) -> String {
    let mut lines: Vec<String> = messages.to_vec();
    if let (Some(first), Some(metric)) = (lines.first_mut(), metrics.first()) {
        first.push('|');
        first.push_str(metric);
    }
    if metrics.len() > 1 {
        lines.push(format!("| {}", metrics[1..].join("\n ")));
    }
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

/// The check of one storage's `server_status` (as JSON): its gauges, the
/// rates since the state file's previous answer (rewritten with this one)
/// and the level: WARNING for a storage that never committed, else OK.
///
/// # Errors
///
/// Reading or writing the state file; a state file that is not JSON is
/// treated as absent.
pub fn check_status(
    storage: &str,
    status: &Json,
    state: Option<(&Path, Per)>,
    now: SystemTime,
) -> std::io::Result<(String, Level)> {
    let mut metrics = Vec::new();
    for name in GAUGES {
        if let Some(v) = status.get(name) {
            metric(&mut metrics, storage, name, &python_number(v, false));
        }
    }
    if let Some((path, per)) = state {
        if let Ok(meta) = std::fs::metadata(path) {
            let elapsed = meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .map_or(0.0, |d| d.as_secs_f64());
            let old: Option<Json> = std::fs::read_to_string(path)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok());
            let previous = old.as_ref().and_then(|o| o.get(storage));
            if let (true, Some(previous)) = (elapsed > 0.0, previous) {
                let units = elapsed / per.seconds();
                for name in RATES {
                    let (Some(new), Some(old)) = (
                        status.get(name).and_then(Json::as_f64),
                        previous.get(name).and_then(Json::as_f64),
                    ) else {
                        continue;
                    };
                    let rate = Json::from((new - old) / units);
                    metric(&mut metrics, storage, name, &python_number(&rate, true));
                }
            }
        }
        let mut saved = Map::new();
        saved.insert(storage.to_owned(), status.clone());
        std::fs::write(path, Json::Object(saved).to_string())?;
    }
    let (message, level) = match status.get("last-transaction").and_then(Json::as_str) {
        Some(NO_TRANSACTION) => (format!("Empty storage '{storage}'"), Level::Warning),
        _ => ("OK".to_owned(), Level::Ok),
    };
    Ok((render(&[message], &metrics), level))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    fn status(commits: u64) -> Json {
        json!({"active_txns": 0, "connections": 2, "waiting": 1, "aborts": 0,
               "commits": commits, "conflicts": 0, "conflicts_resolved": 0,
               "loads": 10, "stores": 4, "last-transaction": "03d5000000000000"})
    }

    #[test]
    fn output_is_zeo_nagios_shaped() {
        let (text, level) = check_status("1", &status(3), None, SystemTime::now()).unwrap();
        assert_eq!(text, "OK|active_txns=0\n| connections=2\n waiting=1\n");
        assert_eq!(level, Level::Ok);
        let mut empty = status(0);
        empty["last-transaction"] = json!(NO_TRANSACTION);
        let (text, level) = check_status("my db", &empty, None, SystemTime::now()).unwrap();
        assert_eq!(
            text,
            "Empty storage 'my db'|'my db:active_txns'=0\n| 'my db:connections'=2\n 'my db:waiting'=1\n"
        );
        assert_eq!(level, Level::Warning);
    }

    #[test]
    fn rates_come_from_the_state_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let t0 = SystemTime::now();
        // First run: no rates, the state is written.
        let (text, _) = check_status("1", &status(3), Some((&path, Per::Minutes)), t0).unwrap();
        assert!(!text.contains("commits"), "{text}");
        // Two minutes later (by the file's clock), 8 more commits: 4 a minute.
        let later =
            std::fs::metadata(&path).unwrap().modified().unwrap() + Duration::from_secs(120);
        let (text, _) = check_status("1", &status(11), Some((&path, Per::Minutes)), later).unwrap();
        assert!(text.contains("\n commits=4.0\n"), "{text}");
        assert!(text.contains("\n loads=0.0"), "{text}");
        let saved: Json = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(saved["1"]["commits"], 11);
    }
}
