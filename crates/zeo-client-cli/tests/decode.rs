//! `zeo-client cat --decode`, `refs` and `refs --back` on a Data.fs that
//! Python's ZODB wrote (tests/python/decode_fixture.py), served by an
//! in-process `zeo-server` on 127.0.0.1.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use common::TestServer;
use zeo_storage::filestorage::{FileStorage, FileStorageOptions};
use zeo_testkit::serde_json::{self, Value as Json};
use zeo_testkit::TempDir;

/// The fixture: a Data.fs and what Python says about it.
fn fixture(dir: &Path) -> Json {
    let out = zeo_testkit::run_python(
        &zeo_testkit::python6(),
        &zeo_testkit::script("decode_fixture.py"),
        &[dir],
        dir,
    );
    let text = zeo_testkit::stdout_of(&out, "decode_fixture.py");
    serde_json::from_str(text.trim()).unwrap()
}

fn zeo_client(port: u16, args: &[&str]) -> Output {
    zeo_testkit::run_with_timeout(
        Command::new(env!("CARGO_BIN_EXE_zeo-client"))
            .args(["--server", &format!("127.0.0.1:{port}"), "--timeout", "20"])
            .args(args),
        Duration::from_secs(60),
    )
}

fn ok(out: &Output) -> String {
    zeo_testkit::stdout_of(out, "zeo-client")
}

fn oid(expected: &Json, name: &str) -> String {
    expected["oids"][name].as_str().unwrap().to_owned()
}

#[test]
fn python_records_decode_and_their_references_are_listed_both_ways() {
    let dir = TempDir::new().unwrap();
    let expected = fixture(dir.path());
    let storage = FileStorage::open(dir.path().join("Data.fs"), FileStorageOptions::default());
    let served = TestServer::serving(Arc::new(storage.unwrap()));
    let (root, items, tree) = (
        oid(&expected, "root"),
        oid(&expected, "items"),
        oid(&expected, "tree"),
    );

    let text = ok(&zeo_client(served.port, &["cat", &root, "--decode"]));
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with(&format!("oid 0x{root} serial ")),
        "{text}"
    );
    assert_eq!(lines[1], "persistent.mapping.PersistentMapping", "{text}");
    assert!(lines.contains(&"  data: dict (5 items)"), "{text}");
    assert!(lines.contains(&"    'name': 'décodé'"), "{text}");
    assert!(
        lines.contains(
            &format!("    'items': -> 0x{items} persistent.list.PersistentList").as_str()
        ),
        "{text}"
    );
    // 1000 bytes are cut to the first 32, with the length.
    assert!(
        lines.contains(&format!("    'blob': bx{}… (1000 bytes)", "ff".repeat(32)).as_str()),
        "{text}"
    );
    assert!(lines.contains(&"    'ratio': 0.25"), "{text}");

    let json: Json = serde_json::from_str(&ok(&zeo_client(
        served.port,
        &["cat", &root, "--decode", "--json"],
    )))
    .unwrap();
    assert_eq!(json["oid"], Json::from(root.clone()));
    assert_eq!(json["class"], "persistent.mapping.PersistentMapping");
    let data = &json["state"]["data"];
    assert_eq!(data["name"], "décodé");
    assert_eq!(data["ratio"], 0.25);
    assert_eq!(data["flags"], serde_json::json!([true, null]));
    assert_eq!(data["blob"]["length"], 1000);
    assert_eq!(
        data["items"],
        serde_json::json!({"ref": items, "class": "persistent.list.PersistentList"})
    );

    // Forward references: as ZODB's referencesf finds them, each once, with
    // the class loaded from the server.
    let forward = ok(&zeo_client(served.port, &["refs", &items]));
    let listed: Vec<String> = forward
        .lines()
        .map(|l| {
            l.split_whitespace()
                .next()
                .unwrap()
                .trim_start_matches("0x")
                .to_owned()
        })
        .collect();
    let python: Vec<String> = expected["refs"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, python, "{forward}");
    assert!(
        forward.contains(&format!("0x{tree}  BTrees.OOBTree.OOBTree")),
        "{forward}"
    );

    // Back references: every object whose record Python says refers to it.
    for name in ["root", "items", "tree"] {
        let target = oid(&expected, name);
        let back = ok(&zeo_client(
            served.port,
            &["refs", &target, "--back", "--json"],
        ));
        let mut found: Vec<String> = back
            .lines()
            .map(|l| {
                let v: Json = serde_json::from_str(l).unwrap();
                v["oid"].as_str().unwrap().to_owned()
            })
            .collect();
        found.sort();
        let mut want: Vec<String> = ["root", "items", "tree"]
            .iter()
            .filter(|from| {
                expected["refs"][**from]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|r| r.as_str() == Some(target.as_str()))
            })
            .map(|from| oid(&expected, from))
            .collect();
        want.sort();
        assert_eq!(found, want, "refs {name} --back: {back}");
    }

    // The walk stops, and says so, at --max-objects.
    let cut = zeo_client(
        served.port,
        &["refs", &root, "--back", "--max-objects", "1"],
    );
    assert_eq!(cut.status.code(), Some(1), "{cut:?}");
    assert!(String::from_utf8_lossy(&cut.stderr).contains("--max-objects 1"));
}
