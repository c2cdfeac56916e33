//! The binary's `<logfile>` options: JSON lines, rotation by size, and
//! lines about a client naming its address and label.

mod common;

use std::time::Duration;

use common::ServerProcess;
use zeo_testkit::serde_json::{self, Value};

#[test]
fn json_lines_rotate_by_size_and_name_the_client() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("zeo.conf"),
        "<zeo>\n  address 127.0.0.1:0\n</zeo>\n\
         <filestorage>\n  path Data.fs\n</filestorage>\n\
         <eventlog>\n  level debug\n  <logfile>\n    path zeo.log\n    json on\n\
         max-size 2KB\n    old-files 2\n  </logfile>\n</eventlog>\n",
    )
    .unwrap();
    let server = ServerProcess::start(dir.path(), &["-C", "zeo.conf"]);
    // Each client logs its connection, label and disconnection: enough
    // lines to pass 2 KB a few times.
    for i in 0..12 {
        let mut options =
            zeo_client::ClientOptions::new(vec![zeo_client::ServerAddress::localhost(
                server.port(),
            )]);
        options.client_label = Some(format!("checker-{i}"));
        options.wait_timeout = Duration::from_secs(20);
        let client = zeo_client::ClientStorage::open(options).unwrap();
        // The label is a one-way message: a round trip after it makes
        // sure the server has it before the client leaves.
        client.ping().unwrap();
        if i == 11 {
            // A pack runs on a thread of its own; its lines still name
            // the client.
            zeo_storage::Pack::pack(&client, 0.0, true).unwrap();
        }
        client.close().unwrap();
    }
    server.signal(libc::SIGTERM);
    let (status, _) = server.wait();
    assert!(status.success(), "{status:?}");

    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
    // Rotated: the current file and two old ones, each under 2 KB (2048
    // bytes, ZConfig's KB), and nothing older kept.
    for name in ["zeo.log", "zeo.log.1", "zeo.log.2"] {
        let text = read(name);
        assert!(!text.is_empty(), "{name} is empty");
        assert!(text.len() < 2048, "{name}: {} bytes", text.len());
    }
    assert!(!dir.path().join("zeo.log.3").exists());
    let all: String = ["zeo.log.2", "zeo.log.1", "zeo.log"].map(read).concat();
    let records: Vec<Value> = all
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    for r in &records {
        assert!(r["time"].is_f64() && r["level"].is_string(), "{r}");
    }
    // The label line names the peer, and the lines logged after it (the
    // disconnection) carry the label in their context.
    let labels: Vec<&str> = records
        .iter()
        .filter(|r| r["message"] == "client label")
        .filter_map(|r| {
            assert!(
                r["context"].as_str().unwrap().contains("peer=127.0.0.1:"),
                "{r}"
            );
            r["label"].as_str()
        })
        .collect();
    assert!(!labels.is_empty(), "{all}");
    let carried = labels.iter().any(|label| {
        records.iter().any(|r| {
            r["message"] == "disconnected"
                && r["context"]
                    .as_str()
                    .is_some_and(|c| c.ends_with(&format!("label={label}")))
        })
    });
    assert!(carried, "{all}");
    let pack = records
        .iter()
        .find(|r| r["message"] == "pack started")
        .unwrap_or_else(|| panic!("{all}"));
    assert!(
        pack["context"]
            .as_str()
            .is_some_and(|c| c.ends_with("label=checker-11")),
        "{pack}"
    );
}
