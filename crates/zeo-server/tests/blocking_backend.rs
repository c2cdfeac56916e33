//! The blocking contract: a backend whose calls may block
//! (`Storage::may_block`) is never called on an async runtime worker, where
//! a synchronous database driver would panic or stall every connection the
//! worker serves.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use common::{TestServer, WAIT};
use zeo_pickle::Value;
use zeo_protocol::client::replies;
use zeo_protocol::ClientRequest;
use zeo_server::ServerSettings;
use zeo_storage::{
    Iteration, MappingStorage, Oid, Pack, RecordIteration, Result, Storage, Tid, TransactionIter,
    TxnHandle, Undo, UndoEntry, UndoFilter,
};

/// Whether this thread is an async runtime worker: the one kind of thread
/// where `Handle::block_on`, which synchronous drivers use, panics.
fn on_runtime_worker() -> bool {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return false;
    };
    std::panic::catch_unwind(|| handle.block_on(async {})).is_err()
}

/// A MappingStorage that says it may block and records every call, and
/// every call made on a runtime worker.
struct Probe {
    inner: MappingStorage,
    called: Mutex<BTreeSet<&'static str>>,
    on_worker: Mutex<Vec<&'static str>>,
}

impl Probe {
    fn new() -> Self {
        Probe {
            // Records here are not pickles: they reference nothing.
            inner: MappingStorage::with_references("probe", Arc::new(|_| Ok(Vec::new()))),
            called: Mutex::new(BTreeSet::new()),
            on_worker: Mutex::new(Vec::new()),
        }
    }

    fn enter(&self, call: &'static str) {
        self.called.lock().unwrap().insert(call);
        if on_runtime_worker() {
            self.on_worker.lock().unwrap().push(call);
        }
    }
}

impl Storage for Probe {
    crate::forward_storage!(|probe: &Self, call| probe.enter(call));
    fn get_tid(&self, oid: Oid) -> Result<Tid> {
        self.enter("get_tid");
        self.inner.get_tid(oid)
    }
    fn history(&self, oid: Oid, size: usize) -> Result<Vec<zeo_storage::HistoryEntry>> {
        self.enter("history");
        self.inner.history(oid, size)
    }
    zeo_storage::provide_capabilities!(undo, iteration, record_iteration, pack);
}

impl Undo for Probe {
    fn undo(&self, txn: TxnHandle, undo_id: &[u8]) -> Result<Vec<Oid>> {
        self.enter("undo");
        self.inner.undo(txn, undo_id)
    }
    fn undo_log(
        &self,
        first: i64,
        last: i64,
        filter: Option<UndoFilter<'_>>,
    ) -> Result<Vec<UndoEntry>> {
        self.enter("undo_log");
        self.inner.undo_log(first, last, filter)
    }
}

impl Iteration for Probe {
    fn iterator(&self, start: Option<Tid>, stop: Option<Tid>) -> Result<TransactionIter<'_>> {
        self.enter("iterator");
        self.inner.iterator(start, stop)
    }
}

impl RecordIteration for Probe {
    fn record_iternext(&self, next: Option<Oid>) -> Result<Option<zeo_storage::CurrentRecord>> {
        self.enter("record_iternext");
        self.inner.record_iternext(next)
    }
}

impl Pack for Probe {
    fn pack(&self, pack_time: f64, gc: bool) -> Result<()> {
        self.enter("pack");
        self.inner.pack(pack_time, gc)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_may_block_is_never_called_on_a_runtime_worker() {
    // The probe itself tells a worker from a blocking thread.
    assert!(on_runtime_worker());
    assert!(!tokio::task::spawn_blocking(on_runtime_worker)
        .await
        .unwrap());

    let probe = Arc::new(Probe::new());
    let server = TestServer::with_storage(ServerSettings::default(), probe.clone()).await;
    let mut c = server.client().await;
    assert!(!c.new_oids().await.is_empty());
    // The root, so that a garbage-collecting pack finds it.
    let oid = Oid::ZERO;
    let t1 = c
        .commit(1, &[(oid, Tid::ZERO, b"one".to_vec())])
        .await
        .unwrap();
    let t2 = c.commit(2, &[(oid, t1, b"two".to_vec())]).await.unwrap();
    // An aborted transaction, after its vote took the storage's lock.
    c.begin(3).await;
    c.store(3, oid, t2, b"three").await;
    c.vote(3).await.unwrap();
    c.abort(3).await.unwrap();

    assert_eq!(c.load(oid).await.unwrap().unwrap().data, b"two");
    let before = c.load_before(oid, t2).await.unwrap().unwrap();
    assert_eq!((before.data.as_slice(), before.start), (&b"one"[..], t1));
    let calls: Vec<(&str, Value)> = vec![
        ("loadSerial", {
            let id = c.msgid();
            let m = ClientRequest::load_serial(id, oid, t1);
            c.send(&m).await;
            c.reply_to(&Value::Int(id)).await.unwrap()
        }),
        ("getTid", {
            let id = c.msgid();
            c.send(&ClientRequest::get_tid(id, oid)).await;
            c.reply_to(&Value::Int(id)).await.unwrap()
        }),
        ("history", {
            let id = c.msgid();
            c.send(&ClientRequest::history(id, oid, 10)).await;
            c.reply_to(&Value::Int(id)).await.unwrap()
        }),
        ("record_iternext", {
            let id = c.msgid();
            c.send(&ClientRequest::record_iternext(id, None)).await;
            c.reply_to(&Value::Int(id)).await.unwrap()
        }),
        ("undoLog", {
            let id = c.msgid();
            c.send(&ClientRequest::undo_log(id, 0, 10)).await;
            c.reply_to(&Value::Int(id)).await.unwrap()
        }),
        ("pack", {
            let id = c.msgid();
            c.send(&ClientRequest::pack(id, t1.unix_time(), true)).await;
            c.reply_to(&Value::Int(id)).await.unwrap()
        }),
    ];
    let (_, serial) = &calls[0];
    assert_eq!(serial, &Value::Bytes(b"one".to_vec()));
    assert_eq!(replies::tid("getTid", &calls[1].1).unwrap(), t2);
    assert_eq!(replies::history(&calls[2].1).unwrap().len(), 2);
    assert_eq!(replies::undo_log(&calls[4].1).unwrap().len(), 2);
    // Invalidations reach another client as before.
    let mut other = server.client().await;
    let t4 = c.commit(4, &[(oid, t2, b"four".to_vec())]).await.unwrap();
    let event = tokio::time::timeout(WAIT, other.next_event("invalidateTransaction"))
        .await
        .unwrap();
    assert_eq!(common::invalidation(&event), (t4, vec![oid]));
    server.stop().await;

    let called = probe.called.lock().unwrap().clone();
    for call in [
        "last_invalidations",
        "new_oid",
        "tpc_begin",
        "store",
        "tpc_vote",
        "tpc_finish",
        "tpc_abort",
        "load",
        "load_before",
        "load_serial",
        "get_tid",
        "history",
        "record_iternext",
        "undo_log",
        "pack",
        "close",
    ] {
        assert!(called.contains(call), "{call} was never called: {called:?}");
    }
    assert_eq!(
        *probe.on_worker.lock().unwrap(),
        Vec::<&str>::new(),
        "calls made on a runtime worker"
    );
}
