//! `zeo-server convert` against Python's `zodbconvert`: the same
//! configuration file converted by both gives the same Data.fs, byte for
//! byte (same transactions, tids, records, user, description and
//! extension), and the same blob files; `--incremental`, `--dry-run` and
//! the refusals.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::{binary, blob_files};

const PATIENCE: Duration = Duration::from_secs(120);

/// The Python fixture: a Data.fs with blobs, undo and rich metadata.
fn make_source(dir: &Path, extra: &[&str]) {
    let out = zeo_testkit::run_python(
        &zeo_testkit::python6(),
        &zeo_testkit::script("convert_fixture.py"),
        &[&["Data.fs", "blobs"], extra].concat(),
        dir,
    );
    zeo_testkit::stdout_of(&out, "convert_fixture.py");
}

/// A zodbconvert file from the source in `dir` to `dir/<to>`.
fn write_config(dir: &Path, to: &str, destination_blobs: bool) -> PathBuf {
    let blob_line = if destination_blobs {
        format!("  blob-dir {}/{to}/blobs\n", dir.display())
    } else {
        String::new()
    };
    let text = format!(
        "<filestorage source>\n  path {d}/Data.fs\n  blob-dir {d}/blobs\n</filestorage>\n\
         <filestorage destination>\n  path {d}/{to}/Data.fs\n{blob_line}</filestorage>\n",
        d = dir.display()
    );
    std::fs::create_dir_all(dir.join(to)).unwrap();
    let path = dir.join(format!("{to}.conf"));
    std::fs::write(&path, text).unwrap();
    path
}

fn rust_convert(config: &Path, flags: &[&str]) -> Output {
    zeo_testkit::run_with_timeout(
        Command::new(binary())
            .arg("convert")
            .args(flags)
            .arg(config),
        PATIENCE,
    )
}

fn python_convert(config: &Path) {
    let zodbconvert = zeo_testkit::python_relstorage().with_file_name("zodbconvert");
    let out = zeo_testkit::run_with_timeout(Command::new(zodbconvert).arg(config), PATIENCE);
    zeo_testkit::stdout_of(&out, "zodbconvert");
}

fn stdout_ok(out: &Output) -> String {
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn assert_same_copy(dir: &Path, a: &str, b: &str) {
    let data_a = std::fs::read(dir.join(a).join("Data.fs")).unwrap();
    let data_b = std::fs::read(dir.join(b).join("Data.fs")).unwrap();
    assert!(
        data_a.len() > 1000,
        "too small a copy: {} bytes",
        data_a.len()
    );
    assert!(data_a == data_b, "{a}/Data.fs and {b}/Data.fs differ");
    let blobs_a = blob_files(&dir.join(a).join("blobs"));
    assert!(!blobs_a.is_empty());
    assert_eq!(blobs_a, blob_files(&dir.join(b).join("blobs")));
}

#[test]
fn data_fs_with_blobs_converts_as_zodbconvert_does() {
    let dir = tempfile::tempdir().unwrap();
    make_source(dir.path(), &[]);
    let ours = write_config(dir.path(), "rs", true);
    let line = stdout_ok(&rust_convert(&ours, &[]));
    assert!(
        line.starts_with("copied 7 transactions (10 records, 3 blobs)"),
        "{line}"
    );
    python_convert(&write_config(dir.path(), "py", true));
    assert_same_copy(dir.path(), "rs", "py");
    // The blobs are the source's too, file for file.
    assert_eq!(
        blob_files(&dir.path().join("rs/blobs")),
        blob_files(&dir.path().join("blobs"))
    );
}

#[test]
fn incremental_resumes_after_the_destinations_last_transaction() {
    let dir = tempfile::tempdir().unwrap();
    make_source(dir.path(), &[]);
    let ours = write_config(dir.path(), "rs", true);
    stdout_ok(&rust_convert(&ours, &[]));
    make_source(dir.path(), &["more"]);

    let again = rust_convert(&ours, &[]);
    assert!(!again.status.success(), "{again:?}");
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("the destination storage has data"),
        "{again:?}"
    );

    let line = stdout_ok(&rust_convert(&ours, &["--incremental"]));
    assert!(line.starts_with("copied 1 transactions after 0x"), "{line}");
    python_convert(&write_config(dir.path(), "py", true));
    assert_same_copy(dir.path(), "rs", "py");
}

#[test]
fn dry_run_lists_the_transactions_and_writes_none() {
    let dir = tempfile::tempdir().unwrap();
    make_source(dir.path(), &[]);
    let ours = write_config(dir.path(), "rs", true);
    let out = stdout_ok(&rust_convert(&ours, &["--dry-run"]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 8, "{out}");
    assert!(
        lines[4].ends_with("user=\"/ carol\" description=\"x becomes 2\""),
        "{out}"
    );
    assert_eq!(lines[7], "would copy 7 transactions");
    // Only the file header: no transaction was written.
    assert_eq!(
        std::fs::metadata(dir.path().join("rs/Data.fs"))
            .unwrap()
            .len(),
        4
    );
}

#[test]
fn blobs_without_a_destination_blob_dir_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    make_source(dir.path(), &[]);
    let config = write_config(dir.path(), "rs", false);
    let out = rust_convert(&config, &[]);
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is a blob, but the destination has no blob directory"),
        "{stderr}"
    );
    // The transactions before the first blob were copied whole.
    let out = zeo_testkit::run_with_timeout(
        Command::new(binary())
            .arg("check")
            .arg(dir.path().join("rs/Data.fs")),
        PATIENCE,
    );
    assert!(stdout_ok(&out).contains("OK: 2 transactions"), "{out:?}");
}
