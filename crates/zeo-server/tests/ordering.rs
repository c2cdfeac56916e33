//! The ordering invariant under load: while one client commits as fast as
//! it can, readers pipeline loads and `lastTransaction` calls. In the
//! message stream each reader receives:
//!
//! * no reply may present a revision as current (`end` = None) after an
//!   invalidation of that object by a later transaction arrived;
//! * no `lastTransaction` answer may name a transaction whose invalidation
//!   arrives after it.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::*;
use zeo_pickle::Value;
use zeo_protocol::client::replies;
use zeo_protocol::{ClientRequest, Message};
use zeo_server::ServerSettings;
use zeo_storage::{Oid, Tid};

const OBJECTS: u64 = 4;
const COMMITS: i64 = 150;
const READERS: usize = 3;
const BATCH: usize = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn loads_never_contradict_invalidations_already_sent() {
    let server = TestServer::start(ServerSettings::default()).await;
    let mut writer = server.client().await;
    let mut serials = HashMap::new();
    let initial: Vec<_> = (0..OBJECTS)
        .map(|o| (Oid(o), Tid::ZERO, b"v0".to_vec()))
        .collect();
    let t0 = writer.commit(1, &initial).await.unwrap();
    for o in 0..OBJECTS {
        serials.insert(Oid(o), t0);
    }
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));

    let mut readers = Vec::new();
    for r in 0..READERS {
        let mut c = server.client().await;
        let done = done.clone();
        readers.push(tokio::spawn(async move {
            let mut round = 0u64;
            let mut asked = HashMap::new();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                for i in 0..BATCH {
                    let id = c.msgid();
                    if i % 8 == 7 {
                        c.send(&Message::call(id, "lastTransaction", vec![])).await;
                    } else {
                        let oid = Oid((i as u64 + round + r as u64) % OBJECTS);
                        asked.insert(id, oid);
                        let mut m = ClientRequest::load_before(oid, Tid::MAX);
                        m.msgid = Value::Int(id);
                        c.send(&m).await;
                    }
                }
                let last = Value::Int(c.msgid() - 1);
                c.reply_to(&last).await.unwrap();
                round += 1;
            }
            let id = c.msgid();
            c.send(&ClientRequest::ping(id)).await;
            c.reply_to(&Value::Int(id)).await.unwrap();
            check(&c.log, &asked)
        }));
    }

    for txn in 2..COMMITS + 2 {
        let oid = Oid(txn as u64 % OBJECTS);
        let other = Oid((txn as u64 + 1) % OBJECTS);
        let stores = vec![
            (oid, serials[&oid], format!("v{txn}").into_bytes()),
            (other, serials[&other], format!("w{txn}").into_bytes()),
        ];
        let tid = writer.commit(txn, &stores).await.unwrap();
        serials.insert(oid, tid);
        serials.insert(other, tid);
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut totals = (0, 0, 0);
    for r in readers {
        let (current, invalidations, lasts) = r.await.unwrap();
        totals.0 += current;
        totals.1 += invalidations;
        totals.2 += lasts;
    }
    // The check must have had material to work on.
    assert!(totals.0 > 100, "too few current loads: {totals:?}");
    assert!(
        totals.1 >= COMMITS as usize * READERS,
        "missing invalidations: {totals:?}"
    );
    assert!(totals.2 > 10, "too few lastTransaction replies: {totals:?}");
    server.stop().await;
}

/// Checks one reader's stream, knowing which object each load asked for;
/// returns how many current-revision replies, invalidations and
/// lastTransaction replies it saw.
fn check(log: &[Message], asked: &HashMap<i64, Oid>) -> (usize, usize, usize) {
    let mut invalidated: HashMap<Oid, Tid> = HashMap::new();
    let mut last_reported: Option<Tid> = None;
    let (mut current, mut invalidations, mut lasts) = (0, 0, 0);
    for m in log {
        if m.method == "invalidateTransaction" {
            let (tid, oids) = invalidation(m);
            if let Some(last) = last_reported {
                assert!(
                    tid > last,
                    "invalidation {tid} arrived after lastTransaction said {last}"
                );
            }
            for oid in oids {
                invalidated.insert(oid, tid);
            }
            invalidations += 1;
            continue;
        }
        if !m.is_reply() || m.flags != zeo_protocol::Flags::None {
            continue;
        }
        let Value::Int(id) = m.msgid else { continue };
        match (asked.get(&id), &m.args) {
            (Some(oid), Value::Tuple(_) | Value::List(_)) => {
                let rev = replies::load_before(&m.args).unwrap().unwrap();
                if rev.end.is_none() {
                    current += 1;
                    if let Some(inv) = invalidated.get(oid) {
                        assert!(
                            *inv <= rev.start,
                            "{oid}: revision {} presented as current after invalidation {inv}",
                            rev.start
                        );
                    }
                }
            }
            (None, Value::Bytes(b)) if b.len() == 8 => {
                let tid = Tid::from_slice(b).unwrap();
                if let Some(last) = last_reported {
                    assert!(tid >= last, "lastTransaction went backwards");
                }
                last_reported = Some(tid);
                lasts += 1;
            }
            _ => {}
        }
    }
    (current, invalidations, lasts)
}
