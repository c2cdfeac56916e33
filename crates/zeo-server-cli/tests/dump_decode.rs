//! `zeo-server dump --decode` on a Data.fs Python's ZODB wrote
//! (tests/python/decode_fixture.py).

mod common;

use std::process::Command;
use std::time::Duration;

use common::binary;
use zeo_testkit::serde_json::{self, Value};
use zeo_testkit::TempDir;

#[test]
fn dump_decode_shows_every_revision_of_python_records() {
    let dir = TempDir::new().unwrap();
    let out = zeo_testkit::run_python(
        &zeo_testkit::python6(),
        &zeo_testkit::script("decode_fixture.py"),
        &[dir.path()],
        dir.path(),
    );
    let expected: Value =
        serde_json::from_str(zeo_testkit::stdout_of(&out, "decode_fixture.py").trim()).unwrap();
    let out = zeo_testkit::run_with_timeout(
        Command::new(binary())
            .args(["dump", "--decode", "Data.fs"])
            .current_dir(dir.path()),
        Duration::from_secs(60),
    );
    let text = zeo_testkit::stdout_of(&out, "dump --decode");
    let items = expected["oids"]["items"].as_str().unwrap();
    // Three transactions: the database's creation of the root, then the
    // fixture's two commits.
    assert_eq!(text.matches("\ntransaction 0x").count() + 1, 3, "{text}");
    assert!(text.starts_with("transaction 0x"), "{text}");
    // The list is written twice: once with three items and the tree, then
    // with the root appended, whose reference names its class.
    assert_eq!(
        text.matches(&format!("  oid 0x{items}: persistent.list.PersistentList"))
            .count(),
        2,
        "{text}"
    );
    assert!(text.contains("        - 'two'\n"), "{text}");
    assert!(
        text.contains("        - -> 0x0000000000000000 persistent.mapping.PersistentMapping\n"),
        "{text}"
    );
    assert!(text.contains("      'name': 'décodé'\n"), "{text}");
    assert!(
        text.contains("oid 0x0000000000000002: BTrees.OOBTree.OOBTree"),
        "{text}"
    );
}
