//! ZConfig's value datatypes: booleans, integers, byte sizes, time
//! intervals, socket addresses, log levels and paths.
//!
//! Each parser returns a plain `String` reason on failure; the typed
//! configuration layer wraps it with the key and location.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// Parses ZConfig's `boolean`: `true`/`yes`/`on` or `false`/`no`/`off`, any case.
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" => Ok(true),
        "false" | "no" | "off" => Ok(false),
        _ => Err("not a boolean (use true/false, yes/no or on/off)".into()),
    }
}

/// Parses ZConfig's `integer`: optional sign and decimal digits, surrounding
/// whitespace allowed.
pub fn parse_integer(s: &str) -> Result<i64, String> {
    let t = s.trim();
    let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("not an integer".into());
    }
    t.parse::<i64>().map_err(|_| "integer out of range".into())
}

/// Parses a non-negative `integer`.
pub fn parse_count(s: &str) -> Result<u64, String> {
    let v = parse_integer(s)?;
    u64::try_from(v).map_err(|_| "must not be negative".into())
}

/// Parses ZConfig's `float` (as Python's `float()` reads decimal text).
pub fn parse_float(s: &str) -> Result<f64, String> {
    s.trim().parse::<f64>().map_err(|_| "not a number".into())
}

/// Unsigned decimal digits only, checked for overflow.
fn parse_digits(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err("not a non-negative whole number".into());
    }
    t.parse::<u64>().map_err(|_| "number too large".into())
}

/// A size in bytes, written as ZConfig's `byte-size`: a whole number with an
/// optional case-insensitive `KB`, `MB` or `GB` suffix (powers of 1024).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// One kibibyte, ZConfig's `KB`.
    pub const KB: u64 = 1024;
    /// One mebibyte, ZConfig's `MB`.
    pub const MB: u64 = 1024 * 1024;
    /// One gibibyte, ZConfig's `GB`.
    pub const GB: u64 = 1024 * 1024 * 1024;

    /// The size in bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let lower = t.to_ascii_lowercase();
        let (number, unit) = [("kb", Self::KB), ("mb", Self::MB), ("gb", Self::GB)]
            .iter()
            .find_map(|(suffix, unit)| lower.strip_suffix(suffix).map(|n| (n, *unit)))
            .unwrap_or((lower.as_str(), 1));
        let n = parse_digits(number)
            .map_err(|_| "not a byte size (a whole number, optionally followed by KB, MB or GB)")?;
        n.checked_mul(unit)
            .map(ByteSize)
            .ok_or_else(|| "byte size too large".into())
    }
}

impl fmt::Display for ByteSize {
    /// The shortest exact form: `20MB`, `1GB`, `1536KB`, `100`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (suffix, unit) in [("GB", Self::GB), ("MB", Self::MB), ("KB", Self::KB)] {
            if n != 0 && n % unit == 0 {
                return write!(f, "{}{}", n / unit, suffix);
            }
        }
        write!(f, "{n}")
    }
}

/// A duration in whole seconds, written as ZConfig's `time-interval`: a whole
/// number with an optional case-insensitive `s`, `m`, `h` or `d` suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Interval(pub u64);

impl Interval {
    /// The interval in seconds.
    pub fn seconds(self) -> u64 {
        self.0
    }

    /// The interval as a [`Duration`].
    pub fn as_duration(self) -> Duration {
        Duration::from_secs(self.0)
    }
}

impl FromStr for Interval {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let lower = t.to_ascii_lowercase();
        let (number, unit) = [("s", 1), ("m", 60), ("h", 3600), ("d", 86400)]
            .iter()
            .find_map(|(suffix, unit)| lower.strip_suffix(suffix).map(|n| (n, *unit)))
            .unwrap_or((lower.as_str(), 1));
        let n = parse_digits(number).map_err(|_| {
            "not a time interval (whole seconds, or a number followed by s, m, h or d)"
        })?;
        n.checked_mul(unit)
            .map(Interval)
            .ok_or_else(|| "time interval too large".into())
    }
}

impl fmt::Display for Interval {
    /// The shortest exact form: `2d`, `5m`, `90s` is shown as `90s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (suffix, unit) in [("d", 86400), ("h", 3600), ("m", 60)] {
            if n != 0 && n % unit == 0 {
                return write!(f, "{}{}", n / unit, suffix);
            }
        }
        write!(f, "{n}s")
    }
}

/// A socket address as ZConfig's `socket-*-address` types read it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SocketAddress {
    /// A TCP address. `host` is lower-cased, without IPv6 brackets; an empty
    /// host (binding addresses only) means "all interfaces", as Python's
    /// `socket.bind(('', port))`.
    Tcp {
        /// Host name, IPv4 or IPv6 literal, or empty.
        host: String,
        /// Port; 0 asks the system for a free one when binding.
        port: u16,
    },
    /// A Unix-domain socket path (any value containing `/`).
    Unix(PathBuf),
}

/// Which default applies when an address gives no host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AddressRole {
    Bind,
    Connect,
}

impl SocketAddress {
    /// Parses a `socket-binding-address`: `host:port`, `:port`, `port`,
    /// `[v6]:port`, a bare host (port 0, as `runzeo` does), or a path
    /// containing `/`.
    pub fn parse_binding(s: &str) -> Result<Self, String> {
        Self::parse(s, AddressRole::Bind)
    }

    /// Parses a `socket-connection-address`: like a binding address, but a
    /// missing host means `127.0.0.1` and the port is required.
    pub fn parse_connection(s: &str) -> Result<Self, String> {
        Self::parse(s, AddressRole::Connect)
    }

    fn parse(s: &str, role: AddressRole) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty address".into());
        }
        if s.contains('/') {
            return Ok(SocketAddress::Unix(PathBuf::from(s)));
        }
        let (host, port) = split_host_port(s)?;
        if host.chars().any(char::is_whitespace) {
            return Err("host name contains whitespace".into());
        }
        let host = match (host.is_empty(), role) {
            (true, AddressRole::Connect) => "127.0.0.1".to_owned(),
            _ => host.to_lowercase(),
        };
        let port = match (port, role) {
            (Some(p), _) => p,
            (None, AddressRole::Bind) => 0,
            (None, AddressRole::Connect) => {
                return Err(if host.contains(':') {
                    "no port given (write IPv6 addresses as [addr]:port)".into()
                } else {
                    "no port given (use host:port)".into()
                })
            }
        };
        Ok(SocketAddress::Tcp { host, port })
    }

    /// True for TCP addresses whose host is an IPv6 literal.
    pub fn is_ipv6(&self) -> bool {
        matches!(self, SocketAddress::Tcp { host, .. } if host.contains(':'))
    }
}

/// Splits ZConfig's inet address forms into host and optional port.
fn split_host_port(s: &str) -> Result<(&str, Option<u16>), String> {
    if let Some(inner) = s.strip_prefix('[') {
        let Some((host, after)) = inner.split_once(']') else {
            return Err("unterminated '[' in address".into());
        };
        if host.is_empty() {
            return Err("empty IPv6 address in brackets".into());
        }
        return match after {
            "" => Ok((host, None)),
            _ => match after.strip_prefix(':') {
                Some(p) => Ok((host, Some(parse_port(p)?))),
                None => Err("unexpected text after ']'".into()),
            },
        };
    }
    match s.rsplit_once(':') {
        // More than one colon without brackets: an IPv6 literal and no port.
        Some((host, _)) if host.contains(':') => Ok((s, None)),
        Some((host, "")) => Ok((host, None)),
        Some((host, p)) => Ok((host, Some(parse_port(p)?))),
        None if s.bytes().all(|b| b.is_ascii_digit()) => Ok(("", Some(parse_port(s)?))),
        None => Ok((s, None)),
    }
}

fn parse_port(s: &str) -> Result<u16, String> {
    // Python's int() takes "HOST: PORT" (ZEO's SSL connection tests write
    // it so).
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{s:?} is not a port number"));
    }
    s.parse::<u16>()
        .map_err(|_| format!("port {s} is out of range (0-65535)"))
}

impl fmt::Display for SocketAddress {
    /// `host:port`, `[v6]:port`, `:port` for "all interfaces", or the path.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SocketAddress::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            SocketAddress::Tcp { host, port } => write!(f, "{host}:{port}"),
            SocketAddress::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

/// A logging level on Python's 0–50 scale, as ZConfig's `logging_level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogLevel(pub u8);

impl LogLevel {
    /// `notset` (0): defer to the parent logger.
    pub const NOTSET: LogLevel = LogLevel(0);
    /// `all` (1).
    pub const ALL: LogLevel = LogLevel(1);
    /// `trace` (5).
    pub const TRACE: LogLevel = LogLevel(5);
    /// `debug` (10).
    pub const DEBUG: LogLevel = LogLevel(10);
    /// `blather` (15).
    pub const BLATHER: LogLevel = LogLevel(15);
    /// `info` (20).
    pub const INFO: LogLevel = LogLevel(20);
    /// `warning` / `warn` (30).
    pub const WARNING: LogLevel = LogLevel(30);
    /// `error` (40).
    pub const ERROR: LogLevel = LogLevel(40);
    /// `critical` / `fatal` (50).
    pub const CRITICAL: LogLevel = LogLevel(50);

    const NAMES: [(&'static str, LogLevel); 11] = [
        ("critical", Self::CRITICAL),
        ("fatal", Self::CRITICAL),
        ("error", Self::ERROR),
        ("warn", Self::WARNING),
        ("warning", Self::WARNING),
        ("info", Self::INFO),
        ("blather", Self::BLATHER),
        ("debug", Self::DEBUG),
        ("trace", Self::TRACE),
        ("all", Self::ALL),
        ("notset", Self::NOTSET),
    ];
}

impl FromStr for LogLevel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let lower = s.trim().to_ascii_lowercase();
        if let Some((_, level)) = Self::NAMES.iter().find(|(n, _)| *n == lower) {
            return Ok(*level);
        }
        let n = parse_integer(&lower)
            .map_err(|_| "not a log level (a name such as info or debug, or 0-50)")?;
        match u8::try_from(n) {
            Ok(v) if v <= 50 => Ok(LogLevel(v)),
            _ => Err(format!("log level {n} is not in 0-50")),
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Self::NAMES
            .iter()
            .find(|(n, l)| l == self && *n != "fatal" && *n != "warn")
        {
            Some((name, _)) => f.write_str(name),
            None => write!(f, "{}", self.0),
        }
    }
}

/// Expands a leading `~` or `~/` to `$HOME`, as Python's
/// `os.path.expanduser` does for ZConfig's path datatypes. `~user` forms
/// are left alone: resolving them needs the password database.
pub fn expand_user(s: &str) -> PathBuf {
    if s == "~" || s.starts_with("~/") {
        if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
            let mut p = PathBuf::from(home);
            if let Some(rest) = s.strip_prefix("~/") {
                p.push(rest);
            }
            return p;
        }
    }
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_display_prefers_canonical_names() {
        assert_eq!(LogLevel::CRITICAL.to_string(), "critical");
        assert_eq!(LogLevel::WARNING.to_string(), "warning");
        assert_eq!(LogLevel(7).to_string(), "7");
    }

    #[test]
    fn expand_user_leaves_plain_paths() {
        assert_eq!(expand_user("/a/b"), PathBuf::from("/a/b"));
        assert_eq!(expand_user("~bob/x"), PathBuf::from("~bob/x"));
    }
}
