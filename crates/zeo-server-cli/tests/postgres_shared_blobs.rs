//! `shared-blob-dir true` through zeo-server: a blob a ZEO client commits
//! through zeo-server is read in place by Python RelStorage sharing the
//! blob directory, and a blob RelStorage commits is read by the ZEO client
//! through zeo-server.

mod common;

use std::time::Duration;

use common::ServerProcess;
use zeo_testkit::postgres::TestDatabase;
use zeo_testkit::{python_relstorage, run_python_with_timeout, script, stdout_of};

/// zeo-server in `dir` serving `db` as storage `1`, with `settings` (lines
/// of the `<relstorage>` section).
fn serve(dir: &std::path::Path, db: &TestDatabase, settings: &str) -> ServerProcess {
    let conf = format!(
        "%import relstorage\n<zeo>\n  address 127.0.0.1:0\n</zeo>\n\
         <relstorage 1>\n  {settings}\n  <postgresql>\n    dsn {}\n  </postgresql>\n\
         </relstorage>\n",
        db.dsn()
    );
    std::fs::write(dir.join("zeo.conf"), conf).unwrap();
    ServerProcess::start(dir, &["-C", "zeo.conf"])
}

fn shared_blobs_round_trip(keep_history: bool, name: &str) {
    let db = TestDatabase::create(&format!("zeo_shared_blobs_{name}"));
    let dir = tempfile::tempdir().unwrap();
    let blob_dir = dir.path().join("shared-blobs");
    let settings = format!(
        "keep-history {keep_history}\n  blob-dir {}\n  shared-blob-dir true",
        blob_dir.display()
    );
    let server = serve(dir.path(), &db, &settings);
    let out = run_python_with_timeout(
        &python_relstorage(),
        &script("relstorage/shared_blobs_via_zeo.py"),
        &[
            server.port().to_string(),
            db.dsn(),
            blob_dir.display().to_string(),
            name.to_owned(),
        ],
        dir.path(),
        Duration::from_secs(180),
    );
    assert_eq!(stdout_of(&out, "shared_blobs_via_zeo.py").trim(), "ok");
    // Both blobs live in the shared directory.
    let files = common::blob_files(&blob_dir);
    assert_eq!(
        files.len(),
        2,
        "{:?}",
        files.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
}

#[test]
fn history_preserving_shared_blobs_are_shared_with_relstorage() {
    shared_blobs_round_trip(true, "hp");
}

#[test]
fn history_free_shared_blobs_are_shared_with_relstorage() {
    shared_blobs_round_trip(false, "hf");
}

/// With blobs in the database (`shared-blob-dir false`) a client with an
/// empty cache downloads a blob through zeo-server: the server loads it
/// from PostgreSQL, a blocking call kept off its async workers.
#[test]
fn a_blob_kept_in_the_database_is_sent_to_a_client_with_an_empty_cache() {
    let db = TestDatabase::create("zeo_blob_in_db");
    let dir = tempfile::tempdir().unwrap();
    let settings = format!("blob-dir {}", dir.path().join("server-cache").display());
    let server = serve(dir.path(), &db, &settings);
    let out = run_python_with_timeout(
        &python_relstorage(),
        &script("relstorage/blob_via_zeo.py"),
        &[server.port().to_string()],
        dir.path(),
        Duration::from_secs(120),
    );
    assert_eq!(stdout_of(&out, "blob_via_zeo.py").trim(), "ok");
}
