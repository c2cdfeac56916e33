//! `zeo-server convert` between a Data.fs and PostgreSQL, against
//! RelStorage's `zodbconvert`: the same Data.fs taken into a database and
//! back out by each tool gives the same Data.fs byte for byte (same
//! transactions, tids, records, user, description and extension), and each
//! tool reads back what the other wrote. Blobs go into the database
//! (`blob_chunk` large objects) and come back with the same bytes.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::{binary, blob_files};
use zeo_testkit::postgres::TestDatabase;

const PATIENCE: Duration = Duration::from_secs(180);

fn make_source(dir: &Path, mode: &str) {
    let mut args = vec!["Data.fs", "blobs"];
    args.extend(Some(mode).filter(|m| !m.is_empty()));
    let out = zeo_testkit::run_python(
        &zeo_testkit::python6(),
        &zeo_testkit::script("convert_fixture.py"),
        &args,
        dir,
    );
    zeo_testkit::stdout_of(&out, "convert_fixture.py");
}

/// A `<filestorage NAME>` section for `dir/Data.fs` (blobs in `dir/blobs`
/// with `blobs`).
fn file_section(name: &str, dir: &Path, blobs: bool) -> String {
    let blob_dir = if blobs {
        format!("  blob-dir {}/blobs\n", dir.display())
    } else {
        String::new()
    };
    format!(
        "<filestorage {name}>\n  path {}/Data.fs\n{blob_dir}</filestorage>\n",
        dir.display()
    )
}

/// A `<relstorage NAME>` section for `db`, with blobs in the database and
/// `cache` as the blob cache when given.
fn database_section(name: &str, db: &TestDatabase, cache: Option<&Path>) -> String {
    let blob_dir = cache
        .map(|c| format!("  blob-dir {}\n", c.display()))
        .unwrap_or_default();
    format!(
        "<relstorage {name}>\n  keep-history true\n{blob_dir}  <postgresql>\n    dsn {}\n  </postgresql>\n</relstorage>\n",
        db.dsn()
    )
}

fn write_config(dir: &Path, label: &str, source: &str, destination: &str) -> PathBuf {
    let path = dir.join(format!("{label}.conf"));
    std::fs::write(&path, format!("%import relstorage\n{source}{destination}")).unwrap();
    path
}

fn ok(out: &Output, what: &str) -> String {
    assert!(out.status.success(), "{what}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn rust_convert(config: &Path) -> String {
    let out =
        zeo_testkit::run_with_timeout(Command::new(binary()).arg("convert").arg(config), PATIENCE);
    ok(&out, "zeo-server convert")
}

fn python_convert(config: &Path) {
    let zodbconvert = zeo_testkit::python_relstorage().with_file_name("zodbconvert");
    let out = zeo_testkit::run_with_timeout(Command::new(zodbconvert).arg(config), PATIENCE);
    ok(&out, "zodbconvert");
}

fn data_fs(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("Data.fs")).unwrap()
}

#[test]
fn data_fs_into_postgresql_and_back_as_zodbconvert_does() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    make_source(root, "noblobs");
    for sub in ["rs-back", "py-back", "cross-py", "cross-rs"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    let ours = TestDatabase::create("convert_rs");
    let theirs = TestDatabase::create("convert_py");

    // Into PostgreSQL: zeo-server into one database, zodbconvert into the other.
    let line = rust_convert(&write_config(
        root,
        "rs-in",
        &file_section("source", root, false),
        &database_section("destination", &ours, None),
    ));
    assert!(line.starts_with("copied 7 transactions"), "{line}");
    python_convert(&write_config(
        root,
        "py-in",
        &file_section("source", root, false),
        &database_section("destination", &theirs, None),
    ));

    // And back out, each with its own tool.
    rust_convert(&write_config(
        root,
        "rs-out",
        &database_section("source", &ours, None),
        &file_section("destination", &root.join("rs-back"), false),
    ));
    python_convert(&write_config(
        root,
        "py-out",
        &database_section("source", &theirs, None),
        &file_section("destination", &root.join("py-back"), false),
    ));
    let rs_back = data_fs(&root.join("rs-back"));
    assert!(rs_back.len() > 1000, "{} bytes", rs_back.len());
    assert!(
        rs_back == data_fs(&root.join("py-back")),
        "the round trips through PostgreSQL differ"
    );

    // Each tool reads the other's database.
    python_convert(&write_config(
        root,
        "cross-py",
        &database_section("source", &ours, None),
        &file_section("destination", &root.join("cross-py"), false),
    ));
    rust_convert(&write_config(
        root,
        "cross-rs",
        &database_section("source", &theirs, None),
        &file_section("destination", &root.join("cross-rs"), false),
    ));
    assert!(
        rs_back == data_fs(&root.join("cross-py")),
        "RelStorage reading ours"
    );
    assert!(
        rs_back == data_fs(&root.join("cross-rs")),
        "ours reading RelStorage's"
    );
}

#[test]
fn incremental_into_postgresql_resumes_after_its_last_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    make_source(root, "noblobs");
    let db = TestDatabase::create("convert_inc");
    let config = write_config(
        root,
        "in",
        &file_section("source", root, false),
        &database_section("destination", &db, None),
    );
    rust_convert(&config);
    let again =
        zeo_testkit::run_with_timeout(Command::new(binary()).arg("convert").arg(&config), PATIENCE);
    assert!(!again.status.success(), "{again:?}");
    let out = zeo_testkit::run_with_timeout(
        Command::new(binary())
            .args(["convert", "--incremental"])
            .arg(&config),
        PATIENCE,
    );
    let line = ok(&out, "convert --incremental");
    assert!(line.starts_with("copied 0 transactions after 0x"), "{line}");
}

#[test]
fn blobs_go_into_postgresql_and_back_as_zodbconvert_carries_them() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    make_source(root, "");
    for sub in ["rs-back", "py-back"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    let ours = TestDatabase::create("convert_blobs_rs");
    let theirs = TestDatabase::create("convert_blobs_py");
    let line = rust_convert(&write_config(
        root,
        "rs-in",
        &file_section("source", root, true),
        &database_section("destination", &ours, Some(&root.join("rs-cache"))),
    ));
    assert!(line.contains("3 blobs"), "{line}");
    python_convert(&write_config(
        root,
        "py-in",
        &file_section("source", root, true),
        &database_section("destination", &theirs, Some(&root.join("py-cache"))),
    ));
    // Out through fresh caches, so the blobs come from the database.
    rust_convert(&write_config(
        root,
        "rs-out",
        &database_section("source", &ours, Some(&root.join("rs-cache-2"))),
        &file_section("destination", &root.join("rs-back"), true),
    ));
    python_convert(&write_config(
        root,
        "py-out",
        &database_section("source", &theirs, Some(&root.join("py-cache-2"))),
        &file_section("destination", &root.join("py-back"), true),
    ));
    assert!(
        data_fs(&root.join("rs-back")) == data_fs(&root.join("py-back")),
        "the round trips through PostgreSQL differ"
    );
    let blobs = blob_files(&root.join("rs-back/blobs"));
    assert_eq!(blobs.len(), 3);
    assert_eq!(blobs, blob_files(&root.join("py-back/blobs")));
    assert_eq!(blobs, blob_files(&root.join("blobs")));
}
