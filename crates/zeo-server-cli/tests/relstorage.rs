//! `zeo-server -C` with a RelStorage-backed `zeo.conf`: the `<relstorage>`
//! section is opened on PostgreSQL, and a storage that cannot be opened
//! stops startup with the storage's name and the reason.

mod common;

use std::process::Command;

use common::binary;

fn run_with(config: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("zeo.conf"), config).unwrap();
    Command::new(binary())
        .args(["-C", "zeo.conf"])
        .current_dir(dir.path())
        .output()
        .unwrap()
}

#[test]
fn an_unreachable_database_stops_startup_naming_the_storage() {
    let out = run_with(
        "%import relstorage\n<zeo>\n  address 127.0.0.1:0\n</zeo>\n\
         <relstorage main>\n  <postgresql>\n    dsn host=/nonexistent/socket/dir dbname=zodb connect_timeout=5\n  </postgresql>\n</relstorage>\n",
    );
    assert!(!out.status.success(), "{out:?}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("listening on"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("opening storage main on PostgreSQL"),
        "{stderr}"
    );
}

#[test]
fn a_mysql_adapter_is_refused_before_anything_opens() {
    let out = run_with(
        "%import relstorage\n<zeo>\n  address 127.0.0.1:0\n</zeo>\n\
         <relstorage>\n  <mysql>\n    db zodb\n  </mysql>\n</relstorage>\n",
    );
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("zeo.conf:6: <mysql> is not supported"),
        "{stderr}"
    );
}
