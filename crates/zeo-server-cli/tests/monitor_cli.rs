//! The binary serves the ZEO 3/4 monitor report when asked to.

mod common;

use std::io::Read;

use common::*;

fn report(port: u16) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

#[test]
fn monitor_address_from_the_configuration_and_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let monitor = zeo_testkit::free_port();
    std::fs::write(
        dir.path().join("zeo.conf"),
        format!(
            "<zeo>\n  address 127.0.0.1:0\n  monitor-address 127.0.0.1:{monitor}\n</zeo>\n\
             <mappingstorage main>\n</mappingstorage>\n"
        ),
    )
    .unwrap();
    let server = ServerProcess::start(dir.path(), &["-C", "zeo.conf"]);
    let text = report(monitor);
    assert!(text.starts_with("ZEO monitor server version "), "{text}");
    assert!(
        text.contains("\n\nStorage: main\nServer started: "),
        "{text}"
    );
    assert!(text.contains("\nClients: 0\n"), "{text}");
    assert!(text.ends_with("Conflicts resolved: 0\n\n"), "{text}");
    server.signal(libc::SIGTERM);
    let (status, stderr) = server.wait();
    assert!(status.success(), "{stderr}");
    assert!(!stderr.contains("unsupported"), "{stderr}");

    let monitor = zeo_testkit::free_port();
    let server = ServerProcess::start(
        dir.path(),
        &[
            "-a",
            "127.0.0.1:0",
            "-f",
            "Data.fs",
            "-m",
            &format!("127.0.0.1:{monitor}"),
        ],
    );
    assert!(report(monitor).contains("\nStorage: 1\n"));
    server.signal(libc::SIGTERM);
    assert!(server.wait().0.success());
}
