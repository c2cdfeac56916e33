//! The model-based differential runner: random operation sequences, how a
//! storage runs them, and everything observable about a storage afterwards,
//! in terms that do not depend on which storage ran them; [`check_pair`]
//! replays one sequence on two storages that must agree on every outcome.
//!
//! Transactions use explicit tids one second apart (so a pack time can fall
//! exactly between two transactions) on storages with the [`Restore`]
//! capability; outcomes are compared by transaction index, never by raw
//! tid. [`ops_for`] generates only the operations a storage's capabilities
//! allow; a capability it lacks makes its observations report
//! `Unsupported`, which the other storage then has to report too, so
//! compare storages of the same capabilities (and history). The
//! crate's tests also replay the language on ZODB's own FileStorage, so the
//! text formats here are mirrored by a Python script.
//!
//! ```
//! use proptest::test_runner::{Config, TestRunner};
//! use zeo_storage::testing::{mapping_storage, model};
//!
//! let mut runner = TestRunner::new(Config { cases: 4, ..Config::default() });
//! runner
//!     .run(&model::ops(), |ops| model::check_pair(mapping_storage, mapping_storage, &ops))
//!     .unwrap();
//! ```
//!
//! [`Restore`]: crate::Restore

use proptest::prelude::*;

use super::{b64, meta, record, Fixture};
use crate::{require, BeginOptions, Capabilities, Error, Oid, Storage, Tid, TimeStamp, TxnStatus};

/// Objects the operations touch.
pub const OBJECTS: u64 = 6;

/// Which serial a step passes for its object.
#[derive(Clone, Copy, Debug)]
pub enum Serial {
    /// The object's latest revision (what a well-behaved client sends).
    Current,
    /// The revision before it.
    Stale,
    /// "New object".
    Zero,
}

impl Serial {
    fn code(self) -> char {
        match self {
            Serial::Current => 'C',
            Serial::Stale => 'S',
            Serial::Zero => 'Z',
        }
    }
}

/// One call inside a transaction. Oids are numbers below [`OBJECTS`];
/// transactions are named by their index among the committed ones.
#[derive(Clone, Debug)]
pub enum Step {
    /// Store a record referencing `refs` with a one-byte payload.
    Store {
        /// The object.
        oid: u64,
        /// The serial passed.
        serial: Serial,
        /// The objects the record references.
        refs: Vec<u64>,
        /// What tells revisions apart.
        payload: u8,
    },
    /// Delete the object (external GC).
    Delete {
        /// The object.
        oid: u64,
        /// The serial passed.
        serial: Serial,
    },
    /// Check the object's serial is current.
    CheckCurrent {
        /// The object.
        oid: u64,
        /// The serial passed.
        serial: Serial,
    },
    /// Undo the committed transaction with this index (modulo their number).
    Undo {
        /// Index of the transaction to undo.
        txn: usize,
    },
    /// Restore a revision, pointing back at a committed transaction or not.
    Restore {
        /// The object.
        oid: u64,
        /// The payload, `None` for a "no data" record.
        data: Option<u8>,
        /// Index of the transaction `prev_txn` names.
        prev_txn: Option<usize>,
    },
}

/// One operation on a storage.
#[derive(Clone, Debug)]
pub enum Op {
    /// One transaction; `finish == false` aborts it after the vote.
    Commit {
        /// The calls between `tpc_begin` and the vote.
        steps: Vec<Step>,
        /// Whether to finish (or abort) after the vote.
        finish: bool,
    },
    /// Pack to half a second after the committed transaction with this index
    /// (modulo their number; `None`: before the first), with or without GC.
    Pack {
        /// Index of the transaction to pack after.
        after: Option<usize>,
        /// Whether to collect garbage.
        gc: bool,
    },
}

/// Random serials, mostly current.
pub fn serial() -> impl Strategy<Value = Serial> {
    prop_oneof![6 => Just(Serial::Current), 1 => Just(Serial::Stale), 1 => Just(Serial::Zero)]
}

/// Random steps.
pub fn step() -> impl Strategy<Value = Step> {
    let oid = 0..OBJECTS;
    prop_oneof![
        8 => (oid.clone(), serial(), prop::collection::vec(0..OBJECTS, 0..3), any::<u8>())
            .prop_map(|(oid, serial, refs, payload)| Step::Store { oid, serial, refs, payload }),
        1 => (oid.clone(), serial()).prop_map(|(oid, serial)| Step::Delete { oid, serial }),
        1 => (oid.clone(), serial()).prop_map(|(oid, serial)| Step::CheckCurrent { oid, serial }),
        3 => any::<usize>().prop_map(|txn| Step::Undo { txn }),
        // No data with a backpointer to a record that has data is refused
        // by ZODB with a TypeError; the model writes a no-data record.
        1 => (oid, prop::option::of((any::<u8>(), prop::option::of(any::<usize>()))))
            .prop_map(|(oid, restore)| Step::Restore {
                oid,
                data: restore.map(|(d, _)| d),
                prev_txn: restore.and_then(|(_, p)| p),
            }),
    ]
}

/// Random operations.
pub fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (prop::collection::vec(step(), 0..5), prop::bool::weighted(0.85))
            .prop_map(|(steps, finish)| Op::Commit { steps, finish }),
        1 => (prop::option::of(any::<usize>()), any::<bool>())
            .prop_map(|(after, gc)| Op::Pack { after, gc }),
    ]
}

/// Random operation sequences.
pub fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op(), 1..30)
}

/// Random operation sequences using only what a storage with
/// `capabilities` can do: no undo, restore, deletion or pack steps it
/// lacks.
pub fn ops_for(capabilities: Capabilities) -> impl Strategy<Value = Vec<Op>> {
    ops().prop_map(move |ops| {
        ops.into_iter()
            .filter(|op| capabilities.pack || !matches!(op, Op::Pack { .. }))
            .map(|op| match op {
                Op::Commit { steps, finish } => Op::Commit {
                    steps: steps
                        .into_iter()
                        .filter(|step| match step {
                            Step::Undo { .. } => capabilities.undo,
                            Step::Restore { .. } => capabilities.restore,
                            Step::Delete { .. } => capabilities.external_gc,
                            Step::Store { .. } | Step::CheckCurrent { .. } => true,
                        })
                        .collect(),
                    finish,
                },
                pack => pack,
            })
            .collect()
    })
}

/// The script line(s) of one operation for the Python replayer; `tid` is
/// the explicit tid a commit begins with.
pub fn script(op: &Op, tid: Tid) -> String {
    let mut out = String::new();
    match op {
        Op::Commit { steps, finish } => {
            out.push_str(&format!("begin {:016x}\n", tid.0));
            for step in steps {
                let line = match step {
                    Step::Store {
                        oid,
                        serial,
                        refs,
                        payload,
                    } => {
                        let refs: Vec<String> = refs.iter().map(u64::to_string).collect();
                        let refs = if refs.is_empty() {
                            "-".into()
                        } else {
                            refs.join(",")
                        };
                        format!("store {oid} {} {refs} {payload}", serial.code())
                    }
                    Step::Delete { oid, serial } => format!("delete {oid} {}", serial.code()),
                    Step::CheckCurrent { oid, serial } => format!("check {oid} {}", serial.code()),
                    Step::Undo { txn } => format!("undo {txn}"),
                    Step::Restore {
                        oid,
                        data,
                        prev_txn,
                    } => format!(
                        "restore {oid} {} {}",
                        data.map_or("-".into(), |d| d.to_string()),
                        prev_txn.map_or("-".into(), |p| p.to_string())
                    ),
                };
                out.push_str(&line);
                out.push('\n');
            }
            out.push_str(if *finish { "finish\n" } else { "abort\n" });
        }
        Op::Pack { after, gc } => {
            let after = after.map_or("-".into(), |a| a.to_string());
            out.push_str(&format!("pack {after} {}\n", u8::from(*gc)));
        }
    }
    out
}

/// An error reduced to what every storage must agree on (Python class name
/// and the fields ZODB gives it).
pub fn kind(e: &Error) -> String {
    match e {
        Error::PosKey { .. } => "POSKeyError".into(),
        Error::Conflict {
            oid,
            committed,
            old,
        } => {
            format!(
                "ConflictError({},{},{})",
                oid.0,
                tid_text(*committed),
                tid_text(*old)
            )
        }
        Error::ReadConflict {
            oid,
            committed,
            old,
        } => {
            format!(
                "ReadConflictError({},{},{})",
                oid.0,
                tid_text(*committed),
                tid_text(*old)
            )
        }
        Error::Undo { .. } => "UndoError".into(),
        Error::Key(_) => "KeyError".into(),
        Error::FileStorage(_) => "FileStorageError".into(),
        Error::InvalidArgument(_) => "ValueError".into(),
        // Pack failures ZODB reports as assertion or PackError.
        Error::Storage(_) => "StorageError".into(),
        Error::Transaction(_) => "StorageTransactionError".into(),
        Error::ReadOnly => "ReadOnlyError".into(),
        Error::Format { .. } => "FileStorageFormatError".into(),
        Error::Locked { .. } => "LockError".into(),
        Error::Closed | Error::Other(_) => "StorageError".into(),
        Error::Io { .. } => "StorageSystemError".into(),
        Error::Unsupported(_) => "Unsupported".into(),
        Error::Transient(_) => "TransientError".into(),
    }
}

fn tid_text(t: Tid) -> String {
    format!("{:016x}", t.0)
}

/// FNV-1a of a record: short, and the same in Python.
pub fn digest(data: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{}:{h:016x}", data.len())
}

/// The time of the first operation's transaction.
pub fn base_time() -> f64 {
    TimeStamp::from_parts(2020, 1, 1, 0, 0, 0.0).unix_time()
}

/// The tid of the `n`th operation's transaction: one second apart.
pub fn op_tid(n: usize) -> Tid {
    TimeStamp::from_unix(base_time() + n as f64).tid()
}

/// One storage under test and the tids it committed, by index.
pub struct Side<'a, S: Storage + ?Sized> {
    /// The storage.
    pub storage: &'a S,
    /// The tids it committed, oldest first.
    pub tids: Vec<Tid>,
}

impl<'a, S: Storage + ?Sized> Side<'a, S> {
    /// A storage that committed nothing yet.
    pub fn new(storage: &'a S) -> Self {
        Side {
            storage,
            tids: Vec::new(),
        }
    }

    /// Index of a committed tid; unknown tids print raw (and then differ).
    pub fn ix(&self, tid: Tid) -> String {
        match self.tids.iter().position(|t| *t == tid) {
            Some(i) => format!("#{i}"),
            None => tid_text(tid),
        }
    }

    /// An error in storage-neutral terms, tids as indexes.
    pub fn ix_err(&self, e: &Error) -> String {
        let mut out = kind(e);
        for t in &self.tids {
            out = out.replace(&tid_text(*t), &self.ix(*t));
        }
        out
    }

    fn serial(&self, oid: Oid, which: Serial) -> Tid {
        let history = self.storage.history(oid, 2).unwrap_or_default();
        match which {
            Serial::Current => history.first().map_or(Tid::ZERO, |h| h.tid),
            Serial::Stale => history.get(1).map_or(Tid(1), |h| h.tid),
            Serial::Zero => Tid::ZERO,
        }
    }

    fn txn_tid(&self, i: usize) -> Option<Tid> {
        if self.tids.is_empty() {
            None
        } else {
            Some(self.tids[i % self.tids.len()])
        }
    }

    /// Runs one operation; returns its outcome in storage-neutral terms.
    pub fn apply(&mut self, op: &Op, next_tid: Tid) -> String {
        let s = self.storage;
        match op {
            Op::Commit { steps, finish } => {
                // Explicit tids need the restore capability; without it
                // the storage picks its own, and outcomes still compare by
                // transaction index.
                let options = BeginOptions {
                    tid: s.as_restore().map(|_| next_tid),
                    status: TxnStatus::Committed,
                };
                let t = match s.tpc_begin(&meta("op"), options) {
                    Ok(t) => t,
                    Err(e) => return format!("begin {}", self.ix_err(&e)),
                };
                let mut outcome = Vec::new();
                for step in steps {
                    let r = match step {
                        Step::Store {
                            oid,
                            serial,
                            refs,
                            payload,
                        } => {
                            let refs: Vec<Oid> = refs.iter().map(|o| Oid(*o)).collect();
                            let serial = self.serial(Oid(*oid), *serial);
                            s.store(t, Oid(*oid), serial, &record(&refs, &[*payload]))
                                .map(|()| "ok".to_string())
                        }
                        Step::Delete { oid, serial } => {
                            let serial = self.serial(Oid(*oid), *serial);
                            require(s.as_external_gc(), "deleteObject")
                                .and_then(|g| g.delete_object(t, Oid(*oid), serial))
                                .map(|()| "ok".to_string())
                        }
                        Step::CheckCurrent { oid, serial } => {
                            let serial = self.serial(Oid(*oid), *serial);
                            s.check_current_serial(t, Oid(*oid), serial)
                                .map(|()| "ok".to_string())
                        }
                        Step::Undo { txn } => match self.txn_tid(*txn) {
                            Some(tid) => require(s.as_undo(), "undo")
                                .and_then(|u| u.undo(t, &b64(tid)))
                                .map(|oids| {
                                    let oids: Vec<String> =
                                        oids.iter().map(|o| o.0.to_string()).collect();
                                    format!("[{}]", oids.join(","))
                                }),
                            None => Ok("nothing".into()),
                        },
                        Step::Restore {
                            oid,
                            data,
                            prev_txn,
                        } => {
                            let data = data.map(|d| record(&[], &[d]));
                            let prev = prev_txn.and_then(|i| self.txn_tid(i));
                            require(s.as_restore(), "restore")
                                .and_then(|r| {
                                    r.restore(t, Oid(*oid), next_tid, data.as_deref(), prev)
                                })
                                .map(|()| "ok".to_string())
                        }
                    };
                    match r {
                        Ok(o) => outcome.push(o),
                        Err(e) => {
                            // What ZODB's DB does after a failed store or undo.
                            s.tpc_abort(t);
                            outcome.push(format!("failed {}", self.ix_err(&e)));
                            return outcome.join(" ");
                        }
                    }
                }
                if let Err(e) = s.tpc_vote(t) {
                    s.tpc_abort(t);
                    outcome.push(format!("vote {}", self.ix_err(&e)));
                    return outcome.join(" ");
                }
                if *finish {
                    match s.tpc_finish(t, &mut |_| {}) {
                        Ok(tid) => {
                            self.tids.push(tid);
                            outcome.push("committed".into());
                        }
                        Err(e) => outcome.push(format!("finish {}", self.ix_err(&e))),
                    }
                } else {
                    s.tpc_abort(t);
                    outcome.push("aborted".into());
                }
                outcome.join(" ")
            }
            Op::Pack { after, gc } => {
                let at = match after.and_then(|i| self.txn_tid(i)) {
                    Some(tid) => tid.unix_time() + 0.5,
                    None => base_time() - 0.5,
                };
                match require(s.as_pack(), "pack").and_then(|p| p.pack(at, *gc)) {
                    Ok(()) => "packed".into(),
                    Err(e) => format!("pack {}", self.ix_err(&e)),
                }
            }
        }
    }

    fn data_or_err(&self, r: Result<Vec<u8>, Error>) -> String {
        match r {
            Ok(d) => digest(&d),
            Err(e) => self.ix_err(&e),
        }
    }

    /// Everything observable, in storage-neutral terms, one fact a line.
    pub fn observe(&self) -> Vec<String> {
        let s = self.storage;
        let mut out = vec![
            format!("last {}", self.ix(s.last_transaction())),
            format!("len {} size {}", s.len(), s.size()),
        ];
        let mut points: Vec<Tid> = self.tids.iter().map(|t| t.next()).collect();
        points.push(Tid::MAX);
        for o in 0..OBJECTS {
            let oid = Oid(o);
            out.push(match s.load(oid) {
                Ok((data, tid)) => format!("load {o} {} {}", self.ix(tid), digest(&data)),
                Err(e) => format!("load {o} {}", self.ix_err(&e)),
            });
            for (i, p) in points.iter().enumerate() {
                out.push(match s.load_before(oid, *p) {
                    Ok(Some(r)) => format!(
                        "before {o} {i} {} {} {}",
                        self.ix(r.start),
                        r.end.map_or("-".into(), |e| self.ix(e)),
                        digest(&r.data)
                    ),
                    Ok(None) => format!("before {o} {i} none"),
                    Err(e) => format!("before {o} {i} {}", self.ix_err(&e)),
                });
            }
            for t in &self.tids {
                out.push(format!(
                    "serial {o} {} {}",
                    self.ix(*t),
                    self.data_or_err(s.load_serial(oid, *t))
                ));
            }
            out.push(match s.history(oid, 1000) {
                Ok(h) => {
                    let h: Vec<String> = h
                        .iter()
                        .map(|e| format!("{}/{}", self.ix(e.tid), e.size))
                        .collect();
                    format!("history {o} {}", h.join(","))
                }
                Err(e) => format!("history {o} {}", self.ix_err(&e)),
            });
            let found = require(s.as_record_iteration(), "record_iternext")
                .and_then(|r| r.record_iternext(Some(oid)));
            out.push(match found {
                Ok(Some(r)) => format!(
                    "iternext {o} {} {} {} {}",
                    r.oid.0,
                    self.ix(r.tid),
                    digest(&r.data),
                    r.next.map_or("-".into(), |n| n.0.to_string())
                ),
                Ok(None) => format!("iternext {o} none"),
                Err(e) => format!("iternext {o} {}", self.ix_err(&e)),
            });
        }
        let log = require(s.as_undo(), "undoLog").and_then(|u| u.undo_log(0, -1000, None));
        out.push(match log {
            Ok(log) => {
                let l: Vec<String> = log
                    .iter()
                    .map(|e| format!("{}/{}", self.ix(e.tid), e.size))
                    .collect();
                format!("undolog {}", l.join(","))
            }
            Err(e) => format!("undolog {}", self.ix_err(&e)),
        });
        match require(s.as_iteration(), "iterator").and_then(|i| i.iterator(None, None)) {
            Ok(it) => {
                for txn in it {
                    out.push(match txn {
                        Ok(txn) => {
                            let recs: Vec<String> = txn
                                .records
                                .iter()
                                .map(|r| {
                                    format!(
                                        "{}/{}/{}/{}",
                                        r.oid.0,
                                        self.ix(r.tid),
                                        r.data.as_deref().map_or("-".into(), digest),
                                        r.data_txn.map_or("-".into(), |t| self.ix(t))
                                    )
                                })
                                .collect();
                            format!(
                                "txn {} {} {}",
                                self.ix(txn.tid),
                                char::from(txn.status.as_byte()),
                                recs.join(",")
                            )
                        }
                        Err(e) => format!("txn {}", self.ix_err(&e)),
                    });
                }
            }
            Err(e) => out.push(format!("iterator {}", self.ix_err(&e))),
        }
        out
    }
}

/// Applies `ops` to both storages and fails at the first disagreement.
pub fn run_against<A: Storage, B: Storage>(a: &A, b: &B, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut a = Side::new(a);
    let mut b = Side::new(b);
    for (n, op) in ops.iter().enumerate() {
        let tid = op_tid(n);
        let before = a.observe();
        let (ra, rb) = (a.apply(op, tid), b.apply(op, tid));
        prop_assert_eq!(&ra, &rb, "op {} {:?}", n, op);
        if std::env::var_os("MODEL_TRACE").is_some() {
            eprintln!("OUTCOME {ra}");
        }
        let (oa, ob) = (a.observe(), b.observe());
        for (la, lb) in oa.iter().zip(&ob) {
            prop_assert_eq!(la, lb, "after op {} {:?}", n, op);
        }
        prop_assert_eq!(oa.len(), ob.len(), "after op {} {:?}", n, op);
        check_model_invariants(&a, op, &ra, &before, &oa)?;
    }
    Ok(())
}

/// Properties of the model on its own, so that comparing a storage with
/// itself still tests something.
pub fn check_model_invariants<S: Storage>(
    side: &Side<'_, S>,
    op: &Op,
    outcome: &str,
    before: &[String],
    after: &[String],
) -> Result<(), TestCaseError> {
    match op {
        Op::Commit { steps, finish } if *finish && outcome.ends_with("committed") => {
            // The last store of each object is what loads return now.
            let tid = *side.tids.last().unwrap();
            let mut last = std::collections::HashMap::new();
            for step in steps {
                match step {
                    Step::Store {
                        oid, refs, payload, ..
                    } => {
                        let refs: Vec<Oid> = refs.iter().map(|o| Oid(*o)).collect();
                        last.insert(*oid, Some(record(&refs, &[*payload])));
                    }
                    _ => {
                        let oid = match step {
                            Step::Delete { oid, .. } | Step::Restore { oid, .. } => Some(*oid),
                            _ => None,
                        };
                        if let Some(oid) = oid {
                            last.insert(oid, None);
                        }
                        if matches!(step, Step::Undo { .. }) {
                            last.clear();
                            break;
                        }
                    }
                }
            }
            for (oid, data) in last {
                if let Some(data) = data {
                    prop_assert_eq!(side.storage.load(Oid(oid)).unwrap(), (data, tid));
                }
            }
            prop_assert_eq!(side.storage.last_transaction(), tid);
        }
        Op::Commit { .. } => {
            // Nothing committed: nothing observable changed.
            prop_assert_eq!(before, after, "uncommitted {:?} changed the storage", op);
        }
        Op::Pack { .. } if outcome != "packed" => {
            prop_assert_eq!(before, after, "failed pack changed the storage");
        }
        Op::Pack { .. } => {
            // Packing never changes what is current, nor the last tid.
            let current = |lines: &[String]| -> Vec<String> {
                lines
                    .iter()
                    .filter(|l| l.starts_with("load ") || l.starts_with("last "))
                    .filter(|l| !l.ends_with("POSKeyError"))
                    .cloned()
                    .collect()
            };
            let (was, now) = (current(before), current(after));
            // Objects may disappear (garbage), but surviving ones are unchanged.
            for line in &now {
                prop_assert!(was.contains(line), "pack changed {}", line);
            }
            prop_assert!(!side.tids.is_empty() || was == now);
        }
    }
    Ok(())
}

/// Two storages to compare, each freshly made.
pub fn check_pair<A: Storage, B: Storage>(
    make_a: impl Fn() -> Fixture<A>,
    make_b: impl Fn() -> Fixture<B>,
    ops: &[Op],
) -> Result<(), TestCaseError> {
    let (a, b) = (make_a(), make_b());
    run_against(&*a, &*b, ops)
}
