//! What the blob_chunk and pack tests share: running RelStorage's side of
//! a test and connecting to a test database.

#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use postgres::{Client, NoTls};
use zeo_storage_postgres::HistoryMode;

/// The two schemas, with the name the Python scripts take.
pub const MODES: [(HistoryMode, &str); 2] =
    [(HistoryMode::Preserving, "hp"), (HistoryMode::Free, "hf")];

/// Runs `tests/python/relstorage/<script>` with RelStorage's interpreter;
/// panics with its output unless it succeeds; returns its stdout.
pub fn relstorage(script: &str, args: &[&str], cwd: &Path) -> String {
    let out = zeo_testkit::run_python_with_timeout(
        &zeo_testkit::python_relstorage(),
        &zeo_testkit::script(&format!("relstorage/{script}")),
        args,
        cwd,
        Duration::from_secs(300),
    );
    assert!(
        out.status.success(),
        "{script} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("script output is UTF-8")
}

/// A connection to the database `dsn` names.
pub fn connect(dsn: &str) -> Client {
    Client::connect(dsn, NoTls).expect("connect to the test database")
}

/// One integer from a query without parameters.
pub fn count(client: &mut Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).expect(sql).get(0)
}
