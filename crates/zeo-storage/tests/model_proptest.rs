//! Random operation sequences applied to two storages, which must agree on
//! every outcome: the same errors, the same data for every object at every
//! transaction, the same histories, undo logs, iteration and sizes.
//!
//! Transactions use explicit tids one second apart, so a pack time can fall
//! exactly between two transactions; outcomes are still compared by
//! transaction index, never by raw tid, so storages choosing their own tids
//! would compare as well.

#[path = "model_support.rs"]
mod support;

use proptest::prelude::*;
use support::{b64, meta, record, Fixture};
use zeo_storage::{BeginOptions, Error, Oid, Storage, Tid, TimeStamp, TxnStatus};

/// Objects the operations touch.
const OBJECTS: u64 = 6;

#[derive(Clone, Copy, Debug)]
enum Serial {
    /// The object's current revision (what a well-behaved client sends).
    Current,
    /// The revision before it.
    Stale,
    /// "New object".
    Zero,
}

#[derive(Clone, Debug)]
enum Step {
    Store {
        oid: u64,
        serial: Serial,
        refs: Vec<u64>,
        payload: u8,
    },
    Delete {
        oid: u64,
        serial: Serial,
    },
    CheckCurrent {
        oid: u64,
        serial: Serial,
    },
    /// Undo the transaction with this index (modulo the number committed).
    Undo {
        txn: usize,
    },
    /// Restore a revision, pointing back at a committed transaction or not.
    Restore {
        oid: u64,
        data: Option<u8>,
        prev_txn: Option<usize>,
    },
}

#[derive(Clone, Debug)]
enum Op {
    /// One transaction; `finish == false` aborts it after the vote.
    Commit { steps: Vec<Step>, finish: bool },
    /// Pack to just after the transaction with this index (modulo the number
    /// committed; `None` = before the first).
    Pack { after: Option<usize>, gc: bool },
}

fn serial() -> impl Strategy<Value = Serial> {
    prop_oneof![6 => Just(Serial::Current), 1 => Just(Serial::Stale), 1 => Just(Serial::Zero)]
}

fn step() -> impl Strategy<Value = Step> {
    let oid = 0..OBJECTS;
    prop_oneof![
        8 => (oid.clone(), serial(), prop::collection::vec(0..OBJECTS, 0..3), any::<u8>())
            .prop_map(|(oid, serial, refs, payload)| Step::Store { oid, serial, refs, payload }),
        1 => (oid.clone(), serial()).prop_map(|(oid, serial)| Step::Delete { oid, serial }),
        1 => (oid.clone(), serial()).prop_map(|(oid, serial)| Step::CheckCurrent { oid, serial }),
        3 => any::<usize>().prop_map(|txn| Step::Undo { txn }),
        1 => (oid, prop::option::of(any::<u8>()), prop::option::of(any::<usize>()))
            .prop_map(|(oid, data, prev_txn)| Step::Restore { oid, data, prev_txn }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (prop::collection::vec(step(), 0..5), prop::bool::weighted(0.85))
            .prop_map(|(steps, finish)| Op::Commit { steps, finish }),
        1 => (prop::option::of(any::<usize>()), any::<bool>())
            .prop_map(|(after, gc)| Op::Pack { after, gc }),
    ]
}

/// An error reduced to what both storages must agree on.
fn kind(e: &Error) -> String {
    match e {
        Error::PosKey { oid, .. } => format!("PosKey({oid})"),
        Error::Conflict {
            oid,
            committed,
            old,
        } => format!("Conflict({oid},{committed},{old})"),
        Error::ReadConflict {
            oid,
            committed,
            old,
        } => {
            format!("ReadConflict({oid},{committed},{old})")
        }
        Error::Undo { oid, .. } => format!("Undo({oid:?})"),
        other => other.python_class().to_string(),
    }
}

/// One storage under test and the tids it committed, by index.
struct Side<'a, S: Storage> {
    storage: &'a S,
    tids: Vec<Tid>,
}

impl<S: Storage> Side<'_, S> {
    /// Index of a committed tid; unknown tids print raw (and then differ).
    fn ix(&self, tid: Tid) -> String {
        match self.tids.iter().position(|t| *t == tid) {
            Some(i) => format!("#{i}"),
            None => format!("{tid}"),
        }
    }

    fn ix_err(&self, e: &Error) -> String {
        let k = kind(e);
        // Serials inside errors are tids too.
        let mut out = k.clone();
        for t in &self.tids {
            out = out.replace(&t.to_string(), &self.ix(*t));
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
    fn apply(&mut self, op: &Op, next_tid: Tid) -> String {
        let s = self.storage;
        match op {
            Op::Commit { steps, finish } => {
                let t = match s.tpc_begin(
                    &meta("op"),
                    BeginOptions {
                        tid: Some(next_tid),
                        status: TxnStatus::Committed,
                    },
                ) {
                    Ok(t) => t,
                    Err(e) => return format!("begin: {}", self.ix_err(&e)),
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
                                .map(|()| String::new())
                        }
                        Step::Delete { oid, serial } => {
                            let serial = self.serial(Oid(*oid), *serial);
                            s.delete_object(t, Oid(*oid), serial)
                                .map(|()| String::new())
                        }
                        Step::CheckCurrent { oid, serial } => {
                            let serial = self.serial(Oid(*oid), *serial);
                            s.check_current_serial(t, Oid(*oid), serial)
                                .map(|()| String::new())
                        }
                        Step::Undo { txn } => match self.txn_tid(*txn) {
                            Some(tid) => s.undo(t, &b64(tid)).map(|oids| format!("{oids:?}")),
                            None => Ok("nothing to undo".into()),
                        },
                        Step::Restore {
                            oid,
                            data,
                            prev_txn,
                        } => {
                            let data = data.map(|d| record(&[], &[d]));
                            let prev = prev_txn.and_then(|i| self.txn_tid(i));
                            s.restore(t, Oid(*oid), next_tid, data.as_deref(), prev)
                                .map(|()| String::new())
                        }
                    };
                    match r {
                        Ok(o) => outcome.push(o),
                        Err(e) => {
                            // What ZODB's DB does after a failed store or undo.
                            s.tpc_abort(t);
                            outcome.push(format!("failed: {}", self.ix_err(&e)));
                            return outcome.join(";");
                        }
                    }
                }
                if let Err(e) = s.tpc_vote(t) {
                    s.tpc_abort(t);
                    outcome.push(format!("vote: {}", self.ix_err(&e)));
                    return outcome.join(";");
                }
                if *finish {
                    match s.tpc_finish(t, &mut |_| {}) {
                        Ok(tid) => {
                            self.tids.push(tid);
                            outcome.push("committed".into());
                        }
                        Err(e) => outcome.push(format!("finish: {}", self.ix_err(&e))),
                    }
                } else {
                    s.tpc_abort(t);
                    outcome.push("aborted".into());
                }
                outcome.join(";")
            }
            Op::Pack { after, gc } => {
                let at = match after.and_then(|i| self.txn_tid(i)) {
                    Some(tid) => tid.unix_time() + 0.5,
                    None => base_time() - 0.5,
                };
                match s.pack(at, *gc) {
                    Ok(()) => "packed".into(),
                    Err(e) => format!("pack: {}", self.ix_err(&e)),
                }
            }
        }
    }

    /// Everything observable, in storage-neutral terms.
    fn observe(&self) -> Vec<String> {
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
                Ok((data, tid)) => format!("load {o}: {} {data:?}", self.ix(tid)),
                Err(e) => format!("load {o}: {}", self.ix_err(&e)),
            });
            for (i, p) in points.iter().enumerate() {
                out.push(match s.load_before(oid, *p) {
                    Ok(Some(r)) => format!(
                        "before {o}@{i}: {} {:?} {:?}",
                        self.ix(r.start),
                        r.end.map(|e| self.ix(e)),
                        r.data
                    ),
                    Ok(None) => format!("before {o}@{i}: none"),
                    Err(e) => format!("before {o}@{i}: {}", self.ix_err(&e)),
                });
            }
            for t in &self.tids {
                if let Ok(d) = s.load_serial(oid, *t) {
                    out.push(format!("serial {o}@{}: {d:?}", self.ix(*t)));
                }
            }
            out.push(match s.history(oid, 1000) {
                Ok(h) => format!(
                    "history {o}: {:?}",
                    h.iter()
                        .map(|e| (self.ix(e.tid), e.size))
                        .collect::<Vec<_>>()
                ),
                Err(e) => format!("history {o}: {}", self.ix_err(&e)),
            });
        }
        match s.undo_log(0, -1000, None) {
            Ok(log) => out.push(format!(
                "undo log {:?}",
                log.iter()
                    .map(|e| (self.ix(e.tid), e.size))
                    .collect::<Vec<_>>()
            )),
            Err(e) => out.push(format!("undo log: {}", self.ix_err(&e))),
        }
        for txn in s.iterator(None, None).unwrap() {
            match txn {
                Ok(txn) => out.push(format!(
                    "txn {} {:?} {:?}",
                    self.ix(txn.tid),
                    txn.status,
                    txn.records
                        .iter()
                        .map(|r| (
                            r.oid,
                            self.ix(r.tid),
                            r.data.clone(),
                            r.data_txn.map(|t| self.ix(t))
                        ))
                        .collect::<Vec<_>>()
                )),
                Err(e) => out.push(format!("txn: {}", self.ix_err(&e))),
            }
        }
        let mut next = None;
        loop {
            match s.record_iternext(next) {
                Ok(Some(r)) => {
                    out.push(format!("iternext {} {}", r.oid, self.ix(r.tid)));
                    match r.next {
                        Some(n) => next = Some(n),
                        None => break,
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    out.push(format!("iternext: {}", self.ix_err(&e)));
                    // Skip the object that failed, as a dump would.
                    match next.unwrap_or(Oid::ZERO).0.checked_add(1) {
                        Some(n) if n < OBJECTS => next = Some(Oid(n)),
                        _ => break,
                    }
                }
            }
        }
        out
    }
}

fn base_time() -> f64 {
    TimeStamp::from_parts(2020, 1, 1, 0, 0, 0.0).unix_time()
}

/// Applies `ops` to both storages and fails at the first disagreement.
fn run_against<A: Storage, B: Storage>(a: &A, b: &B, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut a = Side {
        storage: a,
        tids: Vec::new(),
    };
    let mut b = Side {
        storage: b,
        tids: Vec::new(),
    };
    for (n, op) in ops.iter().enumerate() {
        let tid = TimeStamp::from_unix(base_time() + n as f64).tid();
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
fn check_model_invariants<S: Storage>(
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
                    .filter(|l| {
                        !l.contains(": ZODB.POSException.POSKeyError") && !l.contains("PosKey")
                    })
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
fn check_pair<A: Storage, B: Storage>(
    make_a: impl Fn() -> Fixture<A>,
    make_b: impl Fn() -> Fixture<B>,
    ops: &[Op],
) -> Result<(), TestCaseError> {
    let (a, b) = (make_a(), make_b());
    run_against(&*a, &*b, ops)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn mapping_agrees_with_itself(ops in prop::collection::vec(op(), 1..30)) {
        check_pair(support::mapping_storage, support::mapping_storage, &ops)?;
    }
}

// TODO(filestorage): enable once `FileStorage::open` exists.
// proptest! {
//     #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
//     #[test]
//     fn filestorage_agrees_with_mapping(ops in prop::collection::vec(op(), 1..30)) {
//         check_pair(support::mapping_storage, support::file_storage, &ops)?;
//     }
// }
