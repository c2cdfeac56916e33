//! Log output for a server process: files that rotate by size or time
//! the way ZConfig's `<logfile>` asks (Python's `RotatingFileHandler` and
//! `TimedRotatingFileHandler`), that can be reopened after an external
//! rotation (`SIGUSR2`), and ZConfig's `%(name)s` record formats or JSON
//! lines.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

/// When a log file is rotated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rotation {
    /// Before a record would take the file to `max_bytes` or past it; the
    /// file becomes `PATH.1`, `PATH.1` becomes `PATH.2`, and so on up to
    /// `PATH.<old_files>` (ZConfig's `max-size` and `old-files`).
    Size {
        /// The size that triggers rotation.
        max_bytes: u64,
        /// Rotated files kept.
        old_files: u32,
    },
    /// Every `interval` units of `when`; the file is renamed with the
    /// start of its period as a suffix (`PATH.2024-01-31_13` for hours,
    /// local time) and the oldest beyond `old_files` are deleted
    /// (ZConfig's `when`, `interval` and `old-files`).
    Timed {
        /// The unit, or midnight / a weekday.
        when: When,
        /// Units between rotations (at least 1).
        interval: u32,
        /// Rotated files kept.
        old_files: u32,
    },
}

/// The `when` of a timed rotation, as Python's
/// `TimedRotatingFileHandler` spells it (case-insensitive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    /// `S`: seconds.
    Seconds,
    /// `M`: minutes.
    Minutes,
    /// `H`: hours.
    Hours,
    /// `D`: days (of 24 hours from the file's start, not at midnight).
    Days,
    /// `midnight`: at local midnight.
    Midnight,
    /// `W0`–`W6`: at local midnight starting that weekday (0 is Monday).
    Weekday(u8),
}

impl When {
    /// Parses `S`, `M`, `H`, `D`, `midnight` or `W0`–`W6`.
    pub fn parse(text: &str) -> Option<When> {
        Some(match text.to_ascii_uppercase().as_str() {
            "S" => When::Seconds,
            "M" => When::Minutes,
            "H" => When::Hours,
            "D" => When::Days,
            "MIDNIGHT" => When::Midnight,
            w => {
                let day = w.strip_prefix('W')?.parse::<u8>().ok()?;
                if day > 6 || w.len() != 2 {
                    return None;
                }
                When::Weekday(day)
            }
        })
    }

    fn unit_seconds(self) -> u64 {
        match self {
            When::Seconds => 1,
            When::Minutes => 60,
            When::Hours => 3600,
            When::Days | When::Midnight => 86_400,
            When::Weekday(_) => 7 * 86_400,
        }
    }

    /// The `strftime` suffix of rotated files, as Python names them.
    fn suffix(self) -> &'static str {
        match self {
            When::Seconds => "%Y-%m-%d_%H-%M-%S",
            When::Minutes => "%Y-%m-%d_%H-%M",
            When::Hours => "%Y-%m-%d_%H",
            _ => "%Y-%m-%d",
        }
    }
}

/// The wall clock a rotating file reads; tests substitute their own.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// A log file that rotates as its [`Rotation`] says and that
/// [`ReopenableFile::reopen`] reopens by path, so that rename-then-signal
/// rotation works too: records go to the renamed file until the signal,
/// then to a fresh file under the old name.
#[derive(Clone)]
pub struct ReopenableFile(Arc<Inner>);

impl std::fmt::Debug for ReopenableFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReopenableFile")
            .field("path", &self.0.path)
            .field("rotation", &self.0.rotation)
            .finish_non_exhaustive()
    }
}

struct Inner {
    path: PathBuf,
    rotation: Option<Rotation>,
    clock: Clock,
    state: Mutex<State>,
}

struct State {
    file: File,
    /// Bytes in the file, for size rotation.
    size: u64,
    /// When the next timed rotation is due (Unix seconds).
    rollover_at: u64,
}

fn open_append(path: &Path) -> io::Result<(File, u64)> {
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let size = file.metadata()?.len();
    Ok((file, size))
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

impl ReopenableFile {
    /// Opens (creating if needed) `path` for appending, never rotating it.
    pub fn open(path: impl Into<PathBuf>) -> io::Result<Self> {
        Self::rotating(path, None)
    }

    /// Opens `path` for appending, rotating it as `rotation` says.
    pub fn rotating(path: impl Into<PathBuf>, rotation: Option<Rotation>) -> io::Result<Self> {
        Self::with_clock(path, rotation, Arc::new(SystemTime::now))
    }

    /// [`ReopenableFile::rotating`] reading the time from `clock`.
    pub fn with_clock(
        path: impl Into<PathBuf>,
        rotation: Option<Rotation>,
        clock: Clock,
    ) -> io::Result<Self> {
        let path = path.into();
        let (file, size) = open_append(&path)?;
        // As Python does, a file that exists already started its period
        // when it was last written.
        let start = file
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .filter(|_| size > 0)
            .unwrap_or_else(|| clock());
        let rollover_at = match rotation {
            Some(Rotation::Timed { when, interval, .. }) => {
                next_rollover(unix_seconds(start), when, interval)
            }
            _ => u64::MAX,
        };
        Ok(ReopenableFile(Arc::new(Inner {
            path,
            rotation,
            clock,
            state: Mutex::new(State {
                file,
                size,
                rollover_at,
            }),
        })))
    }

    /// Reopens the file by its path.
    pub fn reopen(&self) -> io::Result<()> {
        let (fresh, size) = open_append(&self.0.path)?;
        let mut state = self.0.lock();
        let _ = state.file.flush();
        state.file = fresh;
        state.size = size;
        Ok(())
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.0.path
    }
}

/// The first rotation time after `now`: `interval` units later, or for
/// midnight and weekdays the next local midnight (on that weekday), as
/// Python's `computeRollover`.
fn next_rollover(now: u64, when: When, interval: u32) -> u64 {
    let period = when.unit_seconds() * u64::from(interval.max(1));
    let (since_midnight, weekday) = local_day_position(now);
    match when {
        When::Midnight => now + (86_400 - since_midnight),
        When::Weekday(day) => {
            let days_ahead = (u64::from(day) + 7 - weekday) % 7;
            let days_ahead = if days_ahead == 0 { 7 } else { days_ahead };
            // To the next midnight, then the whole days to that weekday.
            now + (86_400 - since_midnight) + (days_ahead - 1) * 86_400
        }
        _ => now + period,
    }
}

/// Seconds since local midnight and the weekday (0 is Monday) of Unix
/// time `secs`.
fn local_day_position(secs: u64) -> (u64, u64) {
    let t = secs as libc::time_t;
    // SAFETY: `tm` is plain data that localtime_r fills.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return (secs % 86_400, 0);
        }
        tm
    };
    let since = (tm.tm_hour as u64) * 3600 + (tm.tm_min as u64) * 60 + (tm.tm_sec as u64);
    // tm_wday counts from Sunday.
    let weekday = (tm.tm_wday as u64 + 6) % 7;
    (since.min(86_399), weekday)
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes one record, rotating first when it is due. A rotation that
    /// fails leaves the record in the current file: logging goes on.
    fn write_record(&self, buf: &[u8]) -> io::Result<()> {
        let mut state = self.lock();
        let due = match self.rotation {
            None => false,
            Some(Rotation::Size { max_bytes, .. }) => {
                state.size > 0 && state.size + buf.len() as u64 >= max_bytes
            }
            Some(Rotation::Timed { .. }) => unix_seconds((self.clock)()) >= state.rollover_at,
        };
        if due {
            if let Err(e) = self.rotate(&mut state) {
                // The log itself is where this would go; standard error is
                // what is left.
                eprintln!("rotating log file {}: {e}", self.path.display());
            }
        }
        state.file.write_all(buf)?;
        state.size += buf.len() as u64;
        Ok(())
    }

    fn rotate(&self, state: &mut State) -> io::Result<()> {
        let _ = state.file.flush();
        match self.rotation {
            Some(Rotation::Size { old_files, .. }) => self.shift_numbered(old_files)?,
            Some(Rotation::Timed {
                when,
                interval,
                old_files,
            }) => {
                let period = when.unit_seconds() * u64::from(interval.max(1));
                let started = state.rollover_at.saturating_sub(period);
                let name = format!(
                    "{}.{}",
                    self.path.display(),
                    strftime(when.suffix(), started as i64)
                );
                let _ = std::fs::remove_file(&name);
                std::fs::rename(&self.path, &name)?;
                self.delete_oldest_dated(old_files)?;
                let now = unix_seconds((self.clock)());
                let mut next = next_rollover(now, when, interval);
                while next <= now {
                    next += period;
                }
                state.rollover_at = next;
            }
            None => {}
        }
        let (file, size) = open_append(&self.path)?;
        state.file = file;
        state.size = size;
        Ok(())
    }

    /// `PATH.(n-1)` → `PATH.n`, …, `PATH` → `PATH.1`.
    fn shift_numbered(&self, old_files: u32) -> io::Result<()> {
        let numbered = |i: u32| PathBuf::from(format!("{}.{i}", self.path.display()));
        if old_files == 0 {
            return std::fs::remove_file(&self.path);
        }
        for i in (1..old_files).rev() {
            let from = numbered(i);
            if from.exists() {
                let to = numbered(i + 1);
                let _ = std::fs::remove_file(&to);
                std::fs::rename(&from, &to)?;
            }
        }
        let first = numbered(1);
        let _ = std::fs::remove_file(&first);
        std::fs::rename(&self.path, &first)
    }

    /// Deletes the oldest `PATH.<date>` files beyond `old_files`.
    fn delete_oldest_dated(&self, old_files: u32) -> io::Result<()> {
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let Some(base) = self.path.file_name().and_then(|n| n.to_str()) else {
            return Ok(());
        };
        let prefix = format!("{base}.");
        let mut dated: Vec<String> = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|name| {
                name.strip_prefix(&prefix).is_some_and(|suffix| {
                    suffix.len() >= 10
                        && suffix
                            .bytes()
                            .all(|b| b.is_ascii_digit() || b == b'-' || b == b'_')
                })
            })
            .collect();
        // The date suffixes sort in time order.
        dated.sort();
        let excess = dated.len().saturating_sub(old_files as usize);
        for name in &dated[..excess] {
            std::fs::remove_file(dir.join(name))?;
        }
        Ok(())
    }
}

/// A writer for one log record.
pub struct ReopenableWriter(Arc<Inner>);

impl std::fmt::Debug for ReopenableWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ReopenableWriter")
            .field(&self.0.path)
            .finish()
    }
}

impl Write for ReopenableWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_record(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        // One lock per record keeps records whole when threads log at once,
        // and rotation happens between records.
        self.0.write_record(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.lock().file.flush()
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

/// The formatted fields of the spans an event happened in (connection id,
/// peer address, client label), outermost first.
fn span_labels<S, N>(ctx: &FmtContext<'_, S, N>) -> Vec<String>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    let mut labels = Vec::new();
    if let Some(scope) = ctx.event_scope() {
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
    }
    labels
}

/// An event's message and its other fields.
#[derive(Default)]
struct EventFields {
    message: String,
    fields: Vec<(&'static str, String)>,
}

impl tracing::field::Visit for EventFields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.fields.push((field.name(), format!("{value:?}")));
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.fields.push((field.name(), value.to_owned()));
        }
    }
}

/// Formats records as JSON lines, one object per record (keys sorted):
/// `time` (Unix
/// seconds), `level` (Python's level name), `logger`, `message`,
/// `context` (the connection's id, peer and label, when the record is
/// about a client) and the record's other fields under their names.
///
/// ```
/// use zeo_server::logging::JsonFormat;
///
/// let line = JsonFormat.render(
///     &tracing::Level::WARN,
///     "zeo_server",
///     "slow commit",
///     &[],
///     &[("seconds", "2.5".to_owned())],
///     std::time::UNIX_EPOCH,
/// );
/// assert_eq!(
///     line,
///     r#"{"level":"WARNING","logger":"zeo_server","message":"slow commit","seconds":"2.5","time":0.0}"#
/// );
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonFormat;

impl JsonFormat {
    /// Renders one record as a JSON object on one line.
    pub fn render(
        &self,
        level: &Level,
        target: &str,
        message: &str,
        context: &[String],
        fields: &[(&str, String)],
        now: SystemTime,
    ) -> String {
        let mut map = serde_json::Map::new();
        let time = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        map.insert("time".into(), serde_json::json!(time.as_secs_f64()));
        map.insert("level".into(), python_level_name(level).into());
        map.insert("logger".into(), target.into());
        map.insert("message".into(), message.into());
        if !context.is_empty() {
            map.insert("context".into(), context.join(" ").into());
        }
        for (name, value) in fields {
            // The record's own keys win over a field of the same name.
            map.entry(name.to_string()).or_insert(value.as_str().into());
        }
        serde_json::Value::Object(map).to_string()
    }
}

/// How a log layer writes records: a [`PythonFormat`] or [`JsonFormat`]
/// line each.
#[derive(Clone, Debug)]
pub enum LineFormat {
    /// ZConfig's `format` and `dateformat`.
    Python(PythonFormat),
    /// One JSON object per line.
    Json(JsonFormat),
}

impl<S, N> FormatEvent<S, N> for LineFormat
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
        let mut visited = EventFields::default();
        event.record(&mut visited);
        let meta = event.metadata();
        let labels = span_labels(ctx);
        let now = SystemTime::now();
        let line = match self {
            LineFormat::Python(format) => {
                // Span fields (connection id, peer, label) prefix the
                // message as a label, like ZEO's "(label) message".
                let mut message = String::new();
                if !labels.is_empty() {
                    let _ = write!(message, "({}) ", labels.join(" "));
                }
                message.push_str(&visited.message);
                for (name, value) in &visited.fields {
                    let _ = write!(message, " {name}={value}");
                }
                format.render(meta.level(), meta.target(), &message, now)
            }
            LineFormat::Json(format) => format.render(
                meta.level(),
                meta.target(),
                &visited.message,
                &labels,
                &visited.fields,
                now,
            ),
        };
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

    /// A clock the test moves by hand.
    fn manual_clock(start: u64) -> (Clock, Arc<std::sync::atomic::AtomicU64>) {
        let now = Arc::new(std::sync::atomic::AtomicU64::new(start));
        let read = now.clone();
        let clock: Clock = Arc::new(move || {
            UNIX_EPOCH
                + std::time::Duration::from_secs(read.load(std::sync::atomic::Ordering::SeqCst))
        });
        (clock, now)
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn size_rotation_keeps_old_files_numbered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("zeo.log");
        let rotation = Rotation::Size {
            max_bytes: 11,
            old_files: 2,
        };
        let log = ReopenableFile::rotating(&path, Some(rotation)).unwrap();
        for record in ["aaaa\n", "bbbb\n", "cccc\n", "dddd\n", "eeee\n", "ffff\n"] {
            log.make_writer().write_all(record.as_bytes()).unwrap();
        }
        // Two records stay under 11 bytes; a third would not (Python rotates
        // before a record that would reach max-size).
        let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
        assert_eq!(names(dir.path()), ["zeo.log", "zeo.log.1", "zeo.log.2"]);
        assert_eq!(read("zeo.log"), "eeee\nffff\n");
        assert_eq!(read("zeo.log.1"), "cccc\ndddd\n");
        assert_eq!(read("zeo.log.2"), "aaaa\nbbbb\n");
    }

    #[test]
    fn timed_rotation_follows_the_clock_and_deletes_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("zeo.log");
        let start = 1_700_000_000;
        let (clock, now) = manual_clock(start);
        let rotation = Rotation::Timed {
            when: When::Hours,
            interval: 2,
            old_files: 2,
        };
        let log = ReopenableFile::with_clock(&path, Some(rotation), clock).unwrap();
        let write = |text: &str| log.make_writer().write_all(text.as_bytes()).unwrap();
        write("first\n");
        // Not yet: one second short of two hours.
        now.store(start + 7199, std::sync::atomic::Ordering::SeqCst);
        write("second\n");
        assert_eq!(names(dir.path()), ["zeo.log"]);
        let mut expected = Vec::new();
        for period in 1..=3u64 {
            now.store(start + period * 7200, std::sync::atomic::Ordering::SeqCst);
            write(&format!("period {period}\n"));
            expected.push(format!(
                "zeo.log.{}",
                strftime("%Y-%m-%d_%H", (start + (period - 1) * 7200) as i64)
            ));
        }
        // Three rotations, two kept: the newest.
        let mut want = vec!["zeo.log".to_owned()];
        want.extend(expected[1..].iter().cloned());
        assert_eq!(names(dir.path()), want);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "period 3\n");
        assert_eq!(
            std::fs::read_to_string(dir.path().join(&expected[1])).unwrap(),
            "period 1\n"
        );
    }

    #[test]
    fn when_codes() {
        assert_eq!(When::parse("midnight"), Some(When::Midnight));
        assert_eq!(When::parse("w6"), Some(When::Weekday(6)));
        assert_eq!(When::parse("h"), Some(When::Hours));
        for bad in ["W7", "W", "X", "W10", ""] {
            assert_eq!(When::parse(bad), None, "{bad}");
        }
        // The next midnight is within a day and lands on a local midnight.
        let now = 1_700_000_000;
        let next = next_rollover(now, When::Midnight, 1);
        assert!(next > now && next <= now + 86_400);
        assert_eq!(local_day_position(next).0, 0);
        let monday = next_rollover(now, When::Weekday(0), 1);
        assert_eq!(local_day_position(monday), (0, 0));
        assert!(monday > now && monday <= now + 7 * 86_400);
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
