//! Log output for a server process: files that can be reopened after
//! rotation (`SIGUSR2`) and ZConfig's `%(name)s` record formats.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

/// A log file that [`ReopenableFile::reopen`] reopens by path, so that
/// rename-then-signal rotation works: records go to the renamed file until
/// the signal, then to a fresh file under the old name.
#[derive(Clone, Debug)]
pub struct ReopenableFile(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    file: Mutex<File>,
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl ReopenableFile {
    /// Opens (creating if needed) `path` for appending.
    pub fn open(path: impl Into<PathBuf>) -> io::Result<Self> {
        let path = path.into();
        let file = open_append(&path)?;
        Ok(ReopenableFile(Arc::new(Inner {
            path,
            file: Mutex::new(file),
        })))
    }

    /// Reopens the file by its path.
    pub fn reopen(&self) -> io::Result<()> {
        let fresh = open_append(&self.0.path)?;
        let mut file = self.0.file.lock().unwrap_or_else(|p| p.into_inner());
        let _ = file.flush();
        *file = fresh;
        Ok(())
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.0.path
    }
}

/// A writer for one log record.
#[derive(Debug)]
pub struct ReopenableWriter(Arc<Inner>);

impl Write for ReopenableWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .file
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        // One lock per record keeps records whole when threads log at once.
        self.0
            .file
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0
            .file
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .flush()
    }
}

impl<'a> MakeWriter<'a> for ReopenableFile {
    type Writer = ReopenableWriter;

    fn make_writer(&'a self) -> Self::Writer {
        ReopenableWriter(self.0.clone())
    }
}

/// The tracing level that passes Python log level `level` and above
/// (`blather` 15 and `debug` 10 map to DEBUG, `trace` 5 and below to
/// TRACE).
pub fn level_filter(level: u8) -> tracing_subscriber::filter::LevelFilter {
    use tracing_subscriber::filter::LevelFilter;
    match level {
        0..=9 => LevelFilter::TRACE,
        10..=19 => LevelFilter::DEBUG,
        20..=29 => LevelFilter::INFO,
        30..=39 => LevelFilter::WARN,
        _ => LevelFilter::ERROR,
    }
}

/// Formats records with a Python `logging` format string in `%` style,
/// as ZConfig's `<logfile>` `format` and `dateformat` keys give them.
/// Understood fields: `asctime`, `levelname`, `levelno`, `name`, `message`,
/// `process`, `created`, `msecs`; others are left as written.
#[derive(Clone, Debug)]
pub struct PythonFormat {
    format: String,
    dateformat: String,
}

impl PythonFormat {
    /// A formatter for `format` with dates in `dateformat` (`strftime`).
    pub fn new(format: impl Into<String>, dateformat: impl Into<String>) -> Self {
        PythonFormat {
            format: format.into(),
            dateformat: dateformat.into(),
        }
    }

    /// Renders one record.
    pub fn render(
        &self,
        level: &Level,
        target: &str,
        message: &str,
        now: std::time::SystemTime,
    ) -> String {
        let since = now
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let mut out = String::with_capacity(self.format.len() + message.len() + 32);
        let mut rest = self.format.as_str();
        while let Some(start) = rest.find("%(") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(close) = after.find(')') else {
                out.push_str(&rest[start..]);
                rest = "";
                break;
            };
            let name = &after[..close];
            // Skip the conversion spec up to and including its type letter.
            let spec = &after[close + 1..];
            let conv_len = spec
                .find(|c: char| c.is_ascii_alphabetic())
                .map_or(0, |i| i + 1);
            let consumed = start + 2 + close + 1 + conv_len;
            match name {
                "asctime" => out.push_str(&strftime(&self.dateformat, since.as_secs() as i64)),
                "levelname" => out.push_str(python_level_name(level)),
                "levelno" => {
                    let _ = write!(out, "{}", python_level_number(level));
                }
                "name" => out.push_str(target),
                "message" => out.push_str(message),
                "process" => {
                    let _ = write!(out, "{}", std::process::id());
                }
                "created" => {
                    let _ = write!(out, "{:.6}", since.as_secs_f64());
                }
                "msecs" => {
                    let _ = write!(out, "{:03}", since.subsec_millis());
                }
                _ => out.push_str(&rest[start..consumed]),
            }
            rest = &rest[consumed..];
        }
        out.push_str(rest);
        out
    }
}

fn python_level_name(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        Level::DEBUG => "DEBUG",
        Level::TRACE => "TRACE",
    }
}

fn python_level_number(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 40,
        Level::WARN => 30,
        Level::INFO => 20,
        Level::DEBUG => 10,
        Level::TRACE => 5,
    }
}

/// Local time formatted with C's `strftime`.
fn strftime(format: &str, secs: i64) -> String {
    let Ok(cformat) = std::ffi::CString::new(format) else {
        return String::new();
    };
    let t = secs as libc::time_t;
    let mut buf = vec![0u8; 256];
    // SAFETY: `tm` is plain data filled by localtime_r; `buf` is writable
    // for its full length, which is what strftime is told.
    let n = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return String::new();
        }
        libc::strftime(buf.as_mut_ptr().cast(), buf.len(), cformat.as_ptr(), &tm)
    };
    buf.truncate(n);
    String::from_utf8_lossy(&buf).into_owned()
}

struct MessageVisitor<'a> {
    out: &'a mut String,
    fields: String,
}

impl tracing::field::Visit for MessageVisitor<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.out, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.out.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }
}

impl<S, N> FormatEvent<S, N> for PythonFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut message = String::new();
        // Span fields (connection id, peer) prefix the message as a label,
        // like ZEO's "(label) message".
        if let Some(scope) = ctx.event_scope() {
            let mut labels = Vec::new();
            for span in scope.from_root() {
                if let Some(fields) = span
                    .extensions()
                    .get::<tracing_subscriber::fmt::FormattedFields<N>>()
                {
                    if !fields.is_empty() {
                        labels.push(fields.to_string());
                    }
                }
            }
            if !labels.is_empty() {
                let _ = write!(message, "({}) ", labels.join(" "));
            }
        }
        let mut visitor = MessageVisitor {
            out: &mut message,
            fields: String::new(),
        };
        event.record(&mut visitor);
        let fields = std::mem::take(&mut visitor.fields);
        message.push_str(&fields);
        let meta = event.metadata();
        let line = self.render(
            meta.level(),
            meta.target(),
            &message,
            std::time::SystemTime::now(),
        );
        writeln!(writer, "{line}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_python_fields() {
        let f = PythonFormat::new(
            "%(levelname)s %(name)s: %(message)s [%(unknown)s] %(levelno)d%%",
            "%Y",
        );
        let line = f.render(&Level::WARN, "zeo", "hello", std::time::SystemTime::now());
        assert_eq!(line, "WARNING zeo: hello [%(unknown)s] 30%%");
        let f = PythonFormat::new("%(asctime)s %(message)s", "%Y");
        let line = f.render(
            &Level::INFO,
            "x",
            "m",
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(86400 * 400),
        );
        assert_eq!(line, "1971 m");
    }

    #[test]
    fn reopen_follows_rename() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("zeo.log");
        let log = ReopenableFile::open(&path).unwrap();
        log.make_writer().write_all(b"one\n").unwrap();
        std::fs::rename(&path, dir.path().join("zeo.log.1")).unwrap();
        log.make_writer().write_all(b"two\n").unwrap();
        log.reopen().unwrap();
        log.make_writer().write_all(b"three\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("zeo.log.1")).unwrap(),
            "one\ntwo\n"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three\n");
    }

    #[test]
    fn python_levels() {
        use tracing_subscriber::filter::LevelFilter;
        assert_eq!(level_filter(20), LevelFilter::INFO);
        assert_eq!(level_filter(15), LevelFilter::DEBUG);
        assert_eq!(level_filter(50), LevelFilter::ERROR);
        assert_eq!(level_filter(0), LevelFilter::TRACE);
    }
}
