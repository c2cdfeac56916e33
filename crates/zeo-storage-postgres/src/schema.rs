//! RelStorage 4's schema on PostgreSQL: detecting which of its two
//! variants a database holds, and creating it when absent.
//!
//! The statements here are written from the schema's documented shape
//! (tables, columns, keys, the `zoid_seq` sequence, the rows a fresh
//! database starts with) so that RelStorage 4.3 opens a database created
//! here as one of its own. None of RelStorage's stored procedures is
//! needed: RelStorage installs its own when it opens the database, and
//! zeo-rs never calls them.

use postgres::Client;

use crate::error::{Error, Result};
use crate::options::HistoryMode;

/// Tables of both variants.
const COMMON_TABLES: &[&str] = &[
    "commit_row_lock",
    "object_state",
    "blob_chunk",
    "object_ref",
    "object_refs_added",
    "pack_object",
];
/// Tables only the history-preserving variant has.
const PRESERVING_TABLES: &[&str] = &[
    "transaction",
    "current_object",
    "pack_state",
    "pack_state_tid",
];

/// What [`prepare`] found or made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Prepared {
    /// The schema was there.
    Found,
    /// It was created now.
    Created,
}

/// The tables of the current schema.
fn tables(client: &mut Client) -> Result<Vec<String>> {
    let rows = client.query(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema()",
        &[],
    )?;
    Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
}

/// Which variant a set of tables is, `None` when it holds no RelStorage
/// schema at all.
fn variant(tables: &[String]) -> Option<HistoryMode> {
    let has = |t: &str| tables.iter().any(|x| x == t);
    if !has("object_state") {
        return None;
    }
    // RelStorage tells the variants apart the same way: the history-free
    // one has neither `transaction` nor `current_object`.
    Some(if has("transaction") && has("current_object") {
        HistoryMode::Preserving
    } else {
        HistoryMode::Free
    })
}

fn describe(mode: HistoryMode) -> &'static str {
    match mode {
        HistoryMode::Preserving => "history-preserving (keep-history true)",
        HistoryMode::Free => "history-free (keep-history false)",
    }
}

/// Checks the database's schema against `mode`, creating it when the
/// database holds none and `create` allows.
pub(crate) fn prepare(client: &mut Client, mode: HistoryMode, create: bool) -> Result<Prepared> {
    let found = tables(client)?;
    match variant(&found) {
        None if create => {
            create_schema(client, mode)?;
            Ok(Prepared::Created)
        }
        None => Err(Error::Schema(
            "the database holds no RelStorage schema and create-schema is false".into(),
        )),
        Some(have) if have != mode => Err(Error::Schema(format!(
            "the database holds a {} RelStorage schema but the storage is configured {}; \
             set keep-history to match, or copy the data with `zeo-server convert`",
            describe(have),
            describe(mode)
        ))),
        Some(_) => {
            let wanted = COMMON_TABLES.iter().chain(match mode {
                HistoryMode::Preserving => PRESERVING_TABLES,
                HistoryMode::Free => &[],
            });
            let missing: Vec<&str> = wanted
                .filter(|t| !found.iter().any(|x| x == *t))
                .copied()
                .collect();
            if !missing.is_empty() {
                return Err(Error::Schema(format!(
                    "the RelStorage schema lacks the tables {}",
                    missing.join(", ")
                )));
            }
            Ok(Prepared::Found)
        }
    }
}

/// The history-preserving variant's tables: every revision of every
/// object, each transaction's metadata, and a pointer to the current
/// revision.
const CREATE_PRESERVING: &str = r#"
CREATE TABLE "transaction" (
    tid BIGINT NOT NULL PRIMARY KEY,
    packed BOOLEAN NOT NULL DEFAULT FALSE,
    is_empty BOOLEAN NOT NULL DEFAULT FALSE,
    username BYTEA NOT NULL,
    description BYTEA NOT NULL,
    extension BYTEA
);
CREATE TABLE object_state (
    zoid BIGINT NOT NULL,
    tid BIGINT NOT NULL REFERENCES "transaction",
    prev_tid BIGINT NOT NULL REFERENCES "transaction",
    md5 CHAR(32),
    state_size BIGINT NOT NULL,
    state BYTEA,
    CONSTRAINT object_state_pk PRIMARY KEY (zoid, tid),
    CHECK (tid > 0),
    CHECK (state_size >= 0)
);
CREATE INDEX object_state_tid ON object_state (tid);
CREATE INDEX object_state_prev_tid ON object_state (prev_tid);
CREATE TABLE blob_chunk (
    zoid BIGINT NOT NULL,
    tid BIGINT NOT NULL,
    chunk_num BIGINT NOT NULL,
    chunk OID NOT NULL,
    CONSTRAINT blob_chunk_pk PRIMARY KEY (zoid, tid, chunk_num),
    CONSTRAINT blob_chunk_fk FOREIGN KEY (zoid, tid)
        REFERENCES object_state (zoid, tid) ON DELETE CASCADE
);
CREATE INDEX blob_chunk_lookup ON blob_chunk (zoid, tid);
CREATE TABLE current_object (
    zoid BIGINT NOT NULL PRIMARY KEY,
    tid BIGINT NOT NULL,
    FOREIGN KEY (zoid, tid) REFERENCES object_state (zoid, tid)
);
CREATE INDEX current_object_tid ON current_object (tid);
CREATE TABLE object_ref (
    zoid BIGINT NOT NULL,
    tid BIGINT NOT NULL,
    to_zoid BIGINT NOT NULL,
    PRIMARY KEY (tid, zoid, to_zoid)
);
CREATE TABLE object_refs_added (tid BIGINT NOT NULL PRIMARY KEY);
CREATE TABLE pack_state (
    tid BIGINT NOT NULL,
    zoid BIGINT NOT NULL,
    PRIMARY KEY (tid, zoid)
);
CREATE TABLE pack_state_tid (tid BIGINT NOT NULL PRIMARY KEY);
CREATE VIEW current_object_state AS
    SELECT zoid, tid, state FROM object_state JOIN current_object USING (zoid, tid);
-- Tid 0 stands for "before creation": new revisions name it as prev_tid.
INSERT INTO "transaction" (tid, username, description)
    VALUES (0, 'system'::bytea, 'special transaction for object creation'::bytea);
"#;

/// The history-free variant: current revisions only.
const CREATE_FREE: &str = r#"
CREATE TABLE object_state (
    zoid BIGINT NOT NULL PRIMARY KEY,
    tid BIGINT NOT NULL,
    state_size BIGINT NOT NULL,
    state BYTEA,
    CHECK (tid > 0),
    CHECK (state_size >= 0)
);
CREATE INDEX object_state_tid ON object_state (tid);
CREATE TABLE blob_chunk (
    zoid BIGINT NOT NULL,
    chunk_num BIGINT NOT NULL,
    tid BIGINT NOT NULL,
    chunk OID NOT NULL,
    CONSTRAINT blob_chunk_pk PRIMARY KEY (zoid, chunk_num),
    CONSTRAINT blob_chunk_fk FOREIGN KEY (zoid)
        REFERENCES object_state (zoid) ON DELETE CASCADE
);
CREATE INDEX blob_chunk_lookup ON blob_chunk (zoid);
CREATE TABLE object_ref (
    zoid BIGINT NOT NULL,
    to_zoid BIGINT NOT NULL,
    tid BIGINT NOT NULL,
    PRIMARY KEY (zoid, to_zoid)
);
CREATE TABLE object_refs_added (
    zoid BIGINT NOT NULL PRIMARY KEY,
    tid BIGINT NOT NULL
);
"#;

/// Both variants' table of pack's garbage collection, and the row
/// commits lock.
const CREATE_COMMON: &str = r#"
CREATE TABLE commit_row_lock (tid BIGINT NOT NULL PRIMARY KEY);
INSERT INTO commit_row_lock (tid) VALUES (0);
CREATE SEQUENCE zoid_seq;
CREATE TABLE pack_object (
    zoid BIGINT NOT NULL PRIMARY KEY,
    keep BOOLEAN NOT NULL,
    keep_tid BIGINT NOT NULL,
    visited BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX pack_object_keep_false ON pack_object (zoid) WHERE keep = false;
CREATE INDEX pack_object_keep_true ON pack_object (visited) WHERE keep = true;
"#;

/// Creates the whole schema in one transaction: a failure leaves nothing.
fn create_schema(client: &mut Client, mode: HistoryMode) -> Result<()> {
    let mut txn = client.transaction()?;
    txn.batch_execute(CREATE_COMMON)?;
    txn.batch_execute(match mode {
        HistoryMode::Preserving => CREATE_PRESERVING,
        HistoryMode::Free => CREATE_FREE,
    })?;
    // Large objects hold blob bytes; a removed `blob_chunk` row takes its
    // object along unless another row still names it.
    txn.batch_execute(crate::blob_chunk::UNLINK_FUNCTION_SQL)?;
    txn.batch_execute(crate::blob_chunk::UNLINK_TRIGGER_SQL)?;
    txn.commit()?;
    tracing::info!(mode = describe(mode), "created the RelStorage schema");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn variants_are_told_apart_by_their_tables() {
        assert_eq!(variant(&names(&["pack_object"])), None);
        assert_eq!(
            variant(&names(&["object_state", "transaction", "current_object"])),
            Some(HistoryMode::Preserving)
        );
        assert_eq!(
            variant(&names(&["object_state", "blob_chunk"])),
            Some(HistoryMode::Free)
        );
    }
}
