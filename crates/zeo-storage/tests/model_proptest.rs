//! Random operation sequences applied to two storages, which must agree on
//! every outcome: the same errors, the same data for every object at every
//! transaction, the same histories, undo logs, iteration and sizes.
//!
//! Transactions use explicit tids one second apart, so a pack time can fall
//! exactly between two transactions; outcomes are still compared by
//! transaction index, never by raw tid, so storages choosing their own tids
//! would compare as well.

mod model;

use model::ops::{op_tid, ops, Op, Side, Step};
use model::support::{record, Fixture};
use proptest::prelude::*;
use zeo_storage::{Oid, Storage};

/// Applies `ops` to both storages and fails at the first disagreement.
fn run_against<A: Storage, B: Storage>(a: &A, b: &B, ops: &[Op]) -> Result<(), TestCaseError> {
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
    fn mapping_agrees_with_itself(ops in ops()) {
        check_pair(model::support::mapping_storage, model::support::mapping_storage, &ops)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn filestorage_agrees_with_mapping(ops in ops()) {
        check_pair(model::support::mapping_storage, model::support::file_storage, &ops)?;
    }
}
