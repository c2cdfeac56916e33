//! `check_refs`: what ZODB's `fsrefs` finds. FS30 has no checksum over
//! object data, so a flipped byte inside a pickle passes [`check`]; this
//! decodes every current record and checks that every persistent reference
//! names an object that exists.
//!
//! [`check`]: super::check

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use crate::error::{Error, Result};
use crate::ids::{Oid, Tid};
use crate::interface::Storage;

use super::{FileStorage, FileStorageOptions};

/// One problem [`check_refs`] found in an object's current revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefProblem {
    /// The object whose current revision has the problem.
    pub oid: Oid,
    /// That revision's tid.
    pub tid: Tid,
    /// What is wrong.
    pub kind: RefProblemKind,
}

/// What [`check_refs`] can find wrong with a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefProblemKind {
    /// The record is not two well-formed pickles (class, then state), or its
    /// references cannot be read; the text says why.
    Undecodable(String),
    /// The record refers to an object that does not exist in the current
    /// state (never stored, deleted, or its creation undone).
    Missing(Oid),
    /// The current revision cannot be read (e.g. a broken backpointer).
    Unreadable(String),
}

impl fmt::Display for RefProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            RefProblemKind::Undecodable(why) => {
                write!(
                    f,
                    "oid {} tid {}: undecodable pickle: {why}",
                    self.oid, self.tid
                )
            }
            RefProblemKind::Missing(to) => write!(
                f,
                "oid {} tid {}: reference to missing object {to}",
                self.oid, self.tid
            ),
            RefProblemKind::Unreadable(why) => {
                write!(
                    f,
                    "oid {} tid {}: unreadable record: {why}",
                    self.oid, self.tid
                )
            }
        }
    }
}

/// Totals of a [`check_refs`] run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RefsReport {
    /// Objects whose current revision has data (deleted objects are not
    /// counted).
    pub objects: u64,
    /// Persistent references followed (weak and cross-database references
    /// are not, as pack does not follow them).
    pub references: u64,
    /// Problems reported.
    pub problems: u64,
}

/// Decodes the current revision of every object in the Data.fs at `path`
/// (opened read-only; a live server may keep running) and calls `report`
/// for each undecodable record and each reference to an object that does
/// not exist. Decoding is bounded like any hostile input: a nesting depth or
/// size limit met counts as undecodable.
///
/// Fails only when the file cannot be opened; structural damage met while
/// reading one record is reported as [`RefProblemKind::Unreadable`].
pub fn check_refs(path: &Path, report: &mut dyn FnMut(RefProblem)) -> Result<RefsReport> {
    let fs = FileStorage::open(
        path,
        FileStorageOptions {
            read_only: true,
            create: false,
            pack_gc: false,
            sync_delay: None,
        },
    )?;
    let mut totals = RefsReport::default();
    // oid → whether it exists; bounded by the number of objects.
    let mut exists: HashMap<u64, bool> = HashMap::new();
    let mut refs = Vec::new();
    let mut next = Some(0u64);
    while let Some(from) = next {
        let Some(oid) = fs.read_published().index.min_key_from(from) else {
            break;
        };
        next = oid.checked_add(1);
        let oid = Oid(oid);
        let (data, tid) = match fs.load(oid) {
            Ok(x) => x,
            // A deletion is a current revision without data.
            Err(Error::PosKey { .. }) => continue,
            Err(e) => {
                let tid = fs.get_tid(oid).unwrap_or(Tid::ZERO);
                totals.problems += 1;
                report(RefProblem {
                    oid,
                    tid,
                    kind: RefProblemKind::Unreadable(e.to_string()),
                });
                continue;
            }
        };
        totals.objects += 1;
        let mut problem = |kind| {
            totals.problems += 1;
            report(RefProblem { oid, tid, kind });
        };
        if let Err(why) = decode_record(&data) {
            problem(RefProblemKind::Undecodable(why));
            continue;
        }
        refs.clear();
        if let Err(e) = zeo_pickle::references_into(&data, &mut refs) {
            problem(RefProblemKind::Undecodable(format!("references: {e}")));
            continue;
        }
        for &to in &refs {
            let found = *exists
                .entry(to)
                .or_insert_with(|| fs.get_tid(Oid(to)).is_ok());
            if !found {
                problem(RefProblemKind::Missing(Oid(to)));
            }
        }
        totals.references += refs.len() as u64;
    }
    Ok(totals)
}

/// Decodes a record's class and state pickles (bounded by the decoder's
/// default depth and output limits) and requires nothing after them.
fn decode_record(data: &[u8]) -> std::result::Result<(), String> {
    let mut d = zeo_pickle::Decoder::new(data);
    d.next_pickle().map_err(|e| format!("class pickle: {e}"))?;
    d.next_pickle().map_err(|e| format!("state pickle: {e}"))?;
    if !d.is_at_end() {
        return Err(format!(
            "{} bytes after the state pickle",
            d.remaining().len()
        ));
    }
    Ok(())
}
