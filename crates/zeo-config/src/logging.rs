//! The `<eventlog>` section and its `<logfile>` handlers, after ZConfig's
//! logger components (`ZConfig/components/logger`).

use std::path::PathBuf;

use crate::datatypes::{expand_user, ByteSize, LogLevel};
use crate::error::{Error, Location, Result};
use crate::schema::{key, Checked, KeySpec};
use crate::syntax::Section;

/// ZConfig's default `<logfile>` format; the same text `runzeo` uses when
/// no log is configured.
pub const DEFAULT_LOG_FORMAT: &str = "------\n%(asctime)s %(levelname)s %(name)s %(message)s";

/// ZConfig's default `dateformat` for `%(asctime)s`.
pub const DEFAULT_DATE_FORMAT: &str = "%Y-%m-%dT%H:%M:%S";

/// The root logger configuration (`<eventlog>`).
#[derive(Debug, Clone, PartialEq)]
pub struct EventLog {
    /// Logger threshold (default `info`).
    pub level: LogLevel,
    /// Handlers in file order.
    pub handlers: Vec<LogHandler>,
    /// Where the section starts.
    pub location: Location,
}

impl Default for EventLog {
    fn default() -> Self {
        EventLog {
            level: LogLevel::INFO,
            handlers: Vec::new(),
            location: Location::new("<default>", 0),
        }
    }
}

/// One log handler.
#[derive(Debug, Clone, PartialEq)]
pub enum LogHandler {
    /// `<logfile>`: a file or a standard stream.
    File(LogFile),
    /// Another ZConfig handler type (`<syslog>`, `<email-notifier>`, …),
    /// kept unparsed; see [`crate::Unsupported`].
    Other(Section),
}

/// Where a `<logfile>` writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogPath {
    /// `path STDOUT`.
    Stdout,
    /// `path STDERR`.
    Stderr,
    /// A file path.
    File(PathBuf),
}

/// How the `format` string is interpreted (ZConfig's `style` key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormatStyle {
    /// `%(name)s` fields (the default).
    #[default]
    Classic,
    /// `{name}` fields.
    Format,
    /// `$name` fields.
    Template,
    /// `$name` fields, unknown ones left as they are.
    SafeTemplate,
}

/// Log file rotation, derived from `max-size`, `when`, `interval` and
/// `old-files` with ZConfig's consistency rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogRotation {
    /// Rotate when the file reaches `max_size`, keeping `old_files` files.
    Size {
        /// Size that triggers rotation.
        max_size: ByteSize,
        /// Number of rotated files kept.
        old_files: u64,
    },
    /// Rotate at times given by Python's `TimedRotatingFileHandler` `when`
    /// (`S`, `M`, `H`, `D`, `midnight`, `W0`–`W6`) every `interval` units.
    Timed {
        /// The `when` code as written.
        when: String,
        /// How many `when` units between rotations (at least 1).
        interval: u64,
        /// Number of rotated files kept.
        old_files: u64,
    },
}

/// A `<logfile>` handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFile {
    /// Destination (required).
    pub path: LogPath,
    /// Record format with `\n`, `\t`, `\b`, `\f`, `\r` escapes already turned
    /// into characters, as ZConfig's `escaped_string` does.
    pub format: String,
    /// `strftime` format for `asctime`.
    pub dateformat: String,
    /// Handler threshold (default `notset`: everything the logger passes).
    pub level: LogLevel,
    /// Field syntax of `format`.
    pub style: LogFormatStyle,
    /// Allow fields outside the standard log record in `format`.
    pub arbitrary_fields: bool,
    /// Python formatter class (unsupported).
    pub formatter: Option<String>,
    /// Rotation, if any.
    pub rotation: Option<LogRotation>,
    /// File encoding; Python's default when absent.
    pub encoding: Option<String>,
    /// Open the file only when the first record is written.
    pub delay: bool,
    /// Write each record as one JSON object per line instead of `format`
    /// (a zeo-rs key: `json on`; Python's ZConfig does not know it).
    pub json: bool,
    /// Where the section starts.
    pub location: Location,
}

const EVENTLOG_KEYS: &[KeySpec] = &[key("level")];

/// Handler section types that ZConfig defines.
const HANDLER_SECTIONS: &[&str] = &[
    "logfile",
    "syslog",
    "win32-eventlog",
    "http-logger",
    "email-notifier",
];

const LOGFILE_KEYS: &[KeySpec] = &[
    key("path"),
    key("format"),
    key("dateformat"),
    key("level"),
    key("formatter"),
    key("style"),
    key("arbitrary-fields"),
    key("old-files"),
    key("max-size"),
    key("when"),
    key("interval"),
    key("encoding"),
    key("delay"),
    key("json"),
];

impl EventLog {
    pub(crate) fn from_section(section: &Section) -> Result<Self> {
        let c = Checked::new(section, EVENTLOG_KEYS, HANDLER_SECTIONS)?;
        let handlers = c
            .children()
            .iter()
            .map(|child| match child.type_name.as_str() {
                "logfile" => LogFile::from_section(child).map(LogHandler::File),
                _ => Ok(LogHandler::Other((*child).clone())),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(EventLog {
            level: c.parsed("level")?.unwrap_or(LogLevel::INFO),
            handlers,
            location: section.location.clone(),
        })
    }
}

/// Replaces the escapes ZConfig's `escaped_string` knows.
fn unescape(s: &str) -> String {
    s.replace("\\n", "\n")
        .replace("\\t", "\t")
        .replace("\\b", "\u{8}")
        .replace("\\f", "\u{c}")
        .replace("\\r", "\r")
}

/// The `when` codes Python's `TimedRotatingFileHandler` accepts (it
/// refuses others when the handler is built; here the file is refused).
fn valid_when(when: &str) -> bool {
    let w = when.to_ascii_uppercase();
    matches!(w.as_str(), "S" | "M" | "H" | "D" | "MIDNIGHT")
        || (w.len() == 2 && w.starts_with('W') && matches!(w.as_bytes()[1], b'0'..=b'6'))
}

fn parse_style(s: &str) -> Result<LogFormatStyle, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "classic" => Ok(LogFormatStyle::Classic),
        "format" => Ok(LogFormatStyle::Format),
        "template" => Ok(LogFormatStyle::Template),
        "safe-template" => Ok(LogFormatStyle::SafeTemplate),
        _ => Err("must be one of classic, format, template, safe-template".into()),
    }
}

impl LogFile {
    fn from_section(section: &Section) -> Result<Self> {
        let c = Checked::new(section, LOGFILE_KEYS, &[])?;
        let path_line = c.line("path").ok_or_else(|| c.missing("path"))?;
        let path = match path_line.value.trim() {
            "STDOUT" => LogPath::Stdout,
            "STDERR" => LogPath::Stderr,
            "" => return Err(c.missing("path")),
            p => LogPath::File(expand_user(p)),
        };
        let old_files = c.count("old-files")?.unwrap_or(0);
        let max_size = c.parsed::<ByteSize>("max-size")?.unwrap_or_default();
        let when = c.string("when").unwrap_or_default();
        let interval = c.count("interval")?.unwrap_or(0);
        let encoding = c.string("encoding");
        let delay = c.bool("delay")?.unwrap_or(false);

        let conflict = |message: String| Error::Conflict {
            at: section.location.clone(),
            message,
        };
        let rotation = if matches!(path, LogPath::Stdout | LogPath::Stderr) {
            let name = path_line.value.trim();
            if max_size.0 != 0 || old_files != 0 || !when.is_empty() {
                return Err(conflict(format!("cannot rotate {name}")));
            }
            if delay {
                return Err(conflict(format!("cannot delay opening {name}")));
            }
            if encoding.is_some() {
                return Err(conflict(format!("cannot specify encoding for {name}")));
            }
            None
        } else if !when.is_empty() || max_size.0 != 0 || old_files != 0 || interval != 0 {
            if old_files == 0 {
                return Err(conflict("old-files must be set for log rotation".into()));
            }
            if !when.is_empty() {
                if !valid_when(&when) {
                    return Err(conflict(format!(
                        "when {when:?}: must be S, M, H, D, midnight or W0 to W6"
                    )));
                }
                if max_size.0 != 0 {
                    return Err(conflict("cannot set both max-size and when".into()));
                }
                Some(LogRotation::Timed {
                    when,
                    interval: interval.max(1),
                    old_files,
                })
            } else if max_size.0 != 0 {
                Some(LogRotation::Size {
                    max_size,
                    old_files,
                })
            } else {
                return Err(conflict(
                    "max-size or when must be set for log rotation".into(),
                ));
            }
        } else {
            None
        };

        Ok(LogFile {
            path,
            format: c
                .string("format")
                .map(|f| unescape(&f))
                .unwrap_or_else(|| DEFAULT_LOG_FORMAT.to_owned()),
            dateformat: c
                .string("dateformat")
                .unwrap_or_else(|| DEFAULT_DATE_FORMAT.to_owned()),
            level: c.parsed("level")?.unwrap_or(LogLevel::NOTSET),
            style: c.get("style", parse_style)?.unwrap_or_default(),
            arbitrary_fields: c.bool("arbitrary-fields")?.unwrap_or(false),
            formatter: c.string("formatter"),
            rotation,
            encoding,
            delay,
            json: c.bool("json")?.unwrap_or(false),
            location: section.location.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn when_codes() {
        for ok in ["S", "m", "H", "d", "midnight", "MIDNIGHT", "W0", "w6"] {
            assert!(valid_when(ok), "{ok}");
        }
        for bad in ["", "W7", "W", "X", "W00", "hour"] {
            assert!(!valid_when(bad), "{bad}");
        }
    }

    #[test]
    fn escapes() {
        assert_eq!(unescape(r"a\nb\tc"), "a\nb\tc");
        assert_eq!(unescape(r"\r\f\b"), "\r\u{c}\u{8}");
        assert_eq!(unescape(r"\x"), r"\x");
    }
}
