//! ZConfig datatypes: accepted forms, edge cases and round trips.

mod common;

use std::path::PathBuf;

use common::tcp;
use proptest::prelude::*;
use zeo_config::datatypes::{parse_bool, parse_count, parse_float, parse_integer};
use zeo_config::{ByteSize, Interval, LogLevel, SocketAddress};

#[test]
fn booleans() {
    for t in ["true", "TRUE", "yes", "Yes", "on", "ON"] {
        assert_eq!(parse_bool(t), Ok(true), "{t}");
    }
    for f in ["false", "False", "no", "NO", "off", "Off"] {
        assert_eq!(parse_bool(f), Ok(false), "{f}");
    }
    for bad in ["", "1", "0", "y", "n", "enabled", "true "] {
        assert!(parse_bool(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn integers() {
    assert_eq!(parse_integer("42"), Ok(42));
    assert_eq!(parse_integer(" -7 "), Ok(-7));
    assert_eq!(parse_integer("+3"), Ok(3));
    assert!(parse_integer("").is_err());
    assert!(parse_integer("1.5").is_err());
    assert!(parse_integer("0x10").is_err());
    assert!(parse_integer("99999999999999999999").is_err());
    assert_eq!(parse_count("0"), Ok(0));
    assert!(parse_count("-1").is_err());
    assert_eq!(parse_float("2.5"), Ok(2.5));
    assert_eq!(parse_float("10"), Ok(10.0));
    assert!(parse_float("ten").is_err());
}

#[test]
fn byte_sizes() {
    let ok = |s: &str| s.parse::<ByteSize>().unwrap().bytes();
    assert_eq!(ok("0"), 0);
    assert_eq!(ok("1024"), 1024);
    assert_eq!(ok("20MB"), 20 * 1024 * 1024);
    assert_eq!(ok("20mb"), 20 * 1024 * 1024);
    assert_eq!(ok("20Mb"), 20 * 1024 * 1024);
    assert_eq!(ok("1GB"), 1 << 30);
    assert_eq!(ok("512kb"), 512 * 1024);
    // Python's int() ignores whitespace around the number.
    assert_eq!(ok(" 20 MB "), 20 * 1024 * 1024);
    for bad in [
        "", "MB", "1.5MB", "-1", "-5MB", "20 M", "20B", "1TB", "ten", "0x10",
    ] {
        assert!(bad.parse::<ByteSize>().is_err(), "{bad:?}");
    }
    // Overflow is an error, not a wrap.
    assert!("18014398509481984KB".parse::<ByteSize>().is_err());
    assert!("99999999999999999999".parse::<ByteSize>().is_err());
    assert_eq!(ByteSize(20 * ByteSize::MB).to_string(), "20MB");
    assert_eq!(ByteSize(1536).to_string(), "1536");
    assert_eq!(ByteSize(1536 * 1024).to_string(), "1536KB");
    assert_eq!(ByteSize(0).to_string(), "0");
}

#[test]
fn intervals() {
    let ok = |s: &str| s.parse::<Interval>().unwrap().seconds();
    assert_eq!(ok("0"), 0);
    assert_eq!(ok("45"), 45);
    assert_eq!(ok("10s"), 10);
    assert_eq!(ok("5m"), 300);
    assert_eq!(ok("5M"), 300);
    assert_eq!(ok("1h"), 3600);
    assert_eq!(ok("2d"), 172_800);
    assert_eq!(ok("2D"), 172_800);
    for bad in ["", "s", "1.5h", "-1", "1w", "10ms", "1 hour", "h1"] {
        assert!(bad.parse::<Interval>().is_err(), "{bad:?}");
    }
    assert!("999999999999999999d".parse::<Interval>().is_err());
    assert_eq!(Interval(300).to_string(), "5m");
    assert_eq!(Interval(90).to_string(), "90s");
    assert_eq!(Interval(86400 * 3).to_string(), "3d");
    assert_eq!(Interval(0).to_string(), "0s");
    assert_eq!(Interval(30).as_duration().as_secs(), 30);
}

#[test]
fn binding_addresses() {
    let b = |s: &str| SocketAddress::parse_binding(s).unwrap();
    assert_eq!(b("zeo.example.com:8090"), tcp("zeo.example.com", 8090));
    assert_eq!(b("ZEO.Example.COM:8090"), tcp("zeo.example.com", 8090));
    assert_eq!(b("127.0.0.1:0"), tcp("127.0.0.1", 0));
    // Python's int() ignores the blank ZEO's SSL tests put after the colon.
    assert_eq!(b("127.0.0.1: 8100"), tcp("127.0.0.1", 8100));
    assert_eq!(b(":8100"), tcp("", 8100));
    assert_eq!(b("8100"), tcp("", 8100));
    assert_eq!(b("[::1]:8100"), tcp("::1", 8100));
    assert_eq!(b("[::]:8100"), tcp("::", 8100));
    // No port: runzeo binds port 0.
    assert_eq!(b("localhost"), tcp("localhost", 0));
    assert_eq!(b("::1"), tcp("::1", 0));
    assert_eq!(b("[fe80::1]"), tcp("fe80::1", 0));
    assert_eq!(
        b("/var/run/zeo.sock"),
        SocketAddress::Unix(PathBuf::from("/var/run/zeo.sock"))
    );
    assert_eq!(
        b("var/zeo.sock"),
        SocketAddress::Unix(PathBuf::from("var/zeo.sock"))
    );
    assert!(b("[::1]:8100").is_ipv6());
    assert!(!b("8100").is_ipv6());
    for bad in [
        "",
        "host:70000",
        "70000",
        "host:port",
        "[::1",
        "[]:1",
        "[::1]x",
        "a b:1",
        "h:-1",
    ] {
        assert!(SocketAddress::parse_binding(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn connection_addresses() {
    let c = |s: &str| SocketAddress::parse_connection(s).unwrap();
    assert_eq!(c("8100"), tcp("127.0.0.1", 8100));
    assert_eq!(c(":8100"), tcp("127.0.0.1", 8100));
    assert_eq!(c("db:8100"), tcp("db", 8100));
    assert_eq!(c("[::1]:8100"), tcp("::1", 8100));
    assert_eq!(
        c("/tmp/zeo.sock"),
        SocketAddress::Unix("/tmp/zeo.sock".into())
    );
    for bad in ["db", "::1", "::1:8100", "db:"] {
        let e = SocketAddress::parse_connection(bad).unwrap_err();
        assert!(e.contains("port"), "{bad:?}: {e}");
    }
}

#[test]
fn address_display() {
    assert_eq!(tcp("::1", 8100).to_string(), "[::1]:8100");
    assert_eq!(tcp("db", 1).to_string(), "db:1");
    assert_eq!(tcp("", 8100).to_string(), ":8100");
    for s in ["[::1]:8100", "db:1", ":8100", "/tmp/s"] {
        let a = SocketAddress::parse_binding(s).unwrap();
        assert_eq!(SocketAddress::parse_binding(&a.to_string()).unwrap(), a);
    }
}

#[test]
fn log_levels() {
    let l = |s: &str| s.parse::<LogLevel>().unwrap();
    assert_eq!(l("INFO"), LogLevel::INFO);
    assert_eq!(l("warn"), LogLevel::WARNING);
    assert_eq!(l("fatal"), LogLevel::CRITICAL);
    assert_eq!(l("blather"), LogLevel(15));
    assert_eq!(l("trace"), LogLevel(5));
    assert_eq!(l("all"), LogLevel(1));
    assert_eq!(l("notset"), LogLevel(0));
    assert_eq!(l("0"), LogLevel(0));
    assert_eq!(l("50"), LogLevel(50));
    assert_eq!(l("7"), LogLevel(7));
    for bad in ["51", "-1", "loud", ""] {
        assert!(bad.parse::<LogLevel>().is_err(), "{bad:?}");
    }
}

proptest! {
    #[test]
    fn byte_size_round_trips(n in 0u64..(u64::MAX / 2)) {
        let size = ByteSize(n);
        prop_assert_eq!(size.to_string().parse::<ByteSize>(), Ok(size));
    }

    #[test]
    fn byte_size_suffixes_multiply(n in 0u64..(1u64 << 33), unit in 0usize..4, upper: bool) {
        let (suffix, mult) = [("", 1), ("kb", 1024), ("mb", 1 << 20), ("gb", 1 << 30)][unit];
        let suffix = if upper { suffix.to_uppercase() } else { suffix.to_string() };
        prop_assert_eq!(format!("{n}{suffix}").parse::<ByteSize>(), Ok(ByteSize(n * mult)));
    }

    #[test]
    fn interval_round_trips(n in 0u64..(u64::MAX / 2)) {
        let i = Interval(n);
        prop_assert_eq!(i.to_string().parse::<Interval>(), Ok(i));
    }

    #[test]
    fn interval_suffixes_multiply(n in 0u64..(1u64 << 40), unit in 0usize..5) {
        let (suffix, mult) = [("", 1), ("s", 1), ("m", 60), ("h", 3600), ("d", 86400)][unit];
        prop_assert_eq!(format!("{n}{suffix}").parse::<Interval>(), Ok(Interval(n * mult)));
    }

    #[test]
    fn tcp_address_round_trips(a in any::<[u8; 4]>(), port: u16) {
        let host = format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3]);
        let addr = SocketAddress::parse_connection(&format!("{host}:{port}")).unwrap();
        prop_assert_eq!(&addr, &SocketAddress::Tcp { host, port });
        prop_assert_eq!(SocketAddress::parse_connection(&addr.to_string()).unwrap(), addr);
    }
}
