//! An in-process server and a small raw client built on zeo-protocol,
//! over TCP on 127.0.0.1 or over in-memory pipes ([`PipeServer`]) for
//! tests on a paused clock.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::FramedRead;
use zeo_pickle::Value;
use zeo_protocol::client::replies;
use zeo_protocol::{
    ClientHandshake, ClientRequest, Encoding, FrameCodec, Marshaller, Message, TxnId, WireError,
};
use zeo_server::{BoundAddress, ListenAddress, ServerBuilder, ServerHandle, ServerSettings};
use zeo_storage::{LoadedRevision, MappingStorage, Oid, Storage, Tid, TxnStatus};

/// How long a test waits for any single message.
pub const WAIT: Duration = Duration::from_secs(10);

pub struct TestServer {
    pub handle: ServerHandle,
    pub addr: SocketAddr,
    pub storage: Arc<dyn Storage>,
    pub task: tokio::task::JoinHandle<zeo_server::Result<()>>,
}

impl TestServer {
    pub async fn start(settings: ServerSettings) -> Self {
        Self::with_storage(settings, Arc::new(MappingStorage::new("test"))).await
    }

    pub async fn with_storage(settings: ServerSettings, storage: Arc<dyn Storage>) -> Self {
        let server = ServerBuilder::new(settings)
            .storage("1", storage.clone())
            .build()
            .unwrap();
        let bound = server.bind(&ListenAddress::localhost(0)).unwrap();
        let addr = match bound[0] {
            BoundAddress::Tcp(a) => a,
            ref other => panic!("unexpected {other}"),
        };
        let handle = server.handle();
        let task = tokio::spawn(server.serve(std::future::pending()));
        TestServer {
            handle,
            addr,
            storage,
            task,
        }
    }

    pub async fn client(&self) -> Client {
        let mut c = Client::connect(self.addr, None).await;
        c.register("1", false).await.unwrap();
        c
    }

    pub async fn stop(self) {
        stop(&self.handle, self.task).await;
    }
}

/// Shuts a server down and waits until its storages are closed.
pub async fn stop(handle: &ServerHandle, task: tokio::task::JoinHandle<zeo_server::Result<()>>) {
    handle.shutdown();
    tokio::time::timeout(WAIT, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// Returns once every task is waiting, on a runtime whose clock is paused:
/// the paused clock moves only when nothing else can run (tokio does not
/// move it while blocking-pool work is under way), so the millisecond below
/// passes only then. This is how a pipe test says "the server has done all
/// it can" without sleeping.
pub async fn until_idle() {
    let _ = tokio::time::timeout(Duration::from_millis(1), std::future::pending::<()>()).await;
}

/// A server served over in-memory pipes: no socket, so tests can run on a
/// current-thread runtime with a paused clock.
pub struct PipeServer {
    pub handle: ServerHandle,
    pub storage: Arc<dyn Storage>,
    pub task: tokio::task::JoinHandle<zeo_server::Result<()>>,
    connections: usize,
}

impl PipeServer {
    pub fn start(settings: ServerSettings) -> Self {
        Self::with_storage(settings, Arc::new(MappingStorage::new("test")))
    }

    pub fn with_storage(settings: ServerSettings, storage: Arc<dyn Storage>) -> Self {
        let server = ServerBuilder::new(settings)
            .storage("1", storage.clone())
            .build()
            .unwrap();
        let handle = server.handle();
        let task = tokio::spawn(server.serve(std::future::pending()));
        PipeServer {
            handle,
            storage,
            task,
            connections: 0,
        }
    }

    /// A new connection, greeted and not yet registered, and the task
    /// serving it.
    pub async fn connect(&mut self) -> (Client, tokio::task::JoinHandle<()>) {
        self.connections += 1;
        let (ours, theirs) = tokio::io::duplex(1 << 20);
        let peer = format!("pipe-{}", self.connections);
        let task = tokio::spawn(self.handle.serve_stream(theirs, peer));
        (Client::over(ours, None).await, task)
    }

    /// A new registered connection.
    pub async fn client(&mut self) -> Client {
        let (mut c, _task) = self.connect().await;
        c.register("1", false).await.unwrap();
        c
    }

    pub async fn stop(self) {
        stop(&self.handle, self.task).await;
    }
}

type BoxRead = Box<dyn AsyncRead + Unpin + Send>;
type BoxWrite = Box<dyn AsyncWrite + Unpin + Send>;

pub struct Client {
    reader: FramedRead<BoxRead, FrameCodec>,
    pub writer: BoxWrite,
    pub marshaller: Marshaller,
    next_msgid: i64,
    /// Every message received, in arrival order.
    pub log: Vec<Message>,
    /// Messages not consumed by a call yet.
    pending: VecDeque<Message>,
}

impl Client {
    /// Connects and answers the greeting (echoing its letter unless
    /// `prefer` says otherwise).
    pub async fn connect(addr: SocketAddr, prefer: Option<Encoding>) -> Self {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Self::over(stream, prefer).await
    }

    /// Answers the greeting on any connected stream.
    pub async fn over<S>(stream: S, prefer: Option<Encoding>) -> Self
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (r, w) = tokio::io::split(stream);
        let mut w: BoxWrite = Box::new(w);
        let mut reader = FramedRead::new(Box::new(r) as BoxRead, FrameCodec::new());
        let greeting = tokio::time::timeout(WAIT, reader.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let hs = match prefer {
            Some(e) => ClientHandshake::prefer(e),
            None => ClientHandshake::new(),
        };
        let (encoding, answer) = hs.receive(&greeting).unwrap();
        w.write_all(&zeo_protocol::encode_frame(&answer).unwrap())
            .await
            .unwrap();
        Client {
            reader,
            writer: w,
            marshaller: Marshaller::client(encoding),
            next_msgid: 1,
            log: Vec::new(),
            pending: VecDeque::new(),
        }
    }

    pub fn msgid(&mut self) -> i64 {
        let id = self.next_msgid;
        self.next_msgid += 1;
        id
    }

    pub async fn send(&mut self, msg: &Message) {
        let payload = self.marshaller.encode(msg).unwrap();
        self.send_raw(&payload).await;
    }

    pub async fn send_raw(&mut self, payload: &[u8]) {
        let frame = zeo_protocol::encode_frame(payload).unwrap();
        self.writer.write_all(&frame).await.unwrap();
    }

    /// The next message from the server; `None` when the server closed.
    pub async fn recv(&mut self) -> Option<Message> {
        if let Some(m) = self.pending.pop_front() {
            return Some(m);
        }
        self.read().await
    }

    /// The next message if one comes within `within` (on the paused clock
    /// of a pipe test: once the server has nothing left to do): `Some(None)`
    /// when the server closed, `None` when nothing came.
    pub async fn recv_within(&mut self, within: Duration) -> Option<Option<Message>> {
        if let Some(m) = self.pending.pop_front() {
            return Some(Some(m));
        }
        match tokio::time::timeout(within, self.reader.next()).await {
            Err(_) => None,
            Ok(None) | Ok(Some(Err(_))) => Some(None),
            Ok(Some(Ok(frame))) => {
                let m = self.marshaller.decode(&frame).unwrap();
                self.log.push(m.clone());
                Some(Some(m))
            }
        }
    }

    async fn read(&mut self) -> Option<Message> {
        match tokio::time::timeout(WAIT, self.reader.next()).await {
            Err(_) => panic!("no message from the server within {WAIT:?}"),
            Ok(None) | Ok(Some(Err(_))) => None,
            Ok(Some(Ok(frame))) => {
                let m = self.marshaller.decode(&frame).unwrap();
                self.log.push(m.clone());
                Some(m)
            }
        }
    }

    /// Waits for the reply to `msgid`, keeping other messages for later.
    pub async fn reply_to(&mut self, msgid: &Value) -> Result<Value, WireError> {
        if let Some(pos) = self
            .pending
            .iter()
            .position(|m| m.is_reply() && &m.msgid == msgid)
        {
            let m = self.pending.remove(pos).unwrap();
            return result_of(m);
        }
        loop {
            let m = self
                .read()
                .await
                .expect("connection closed while waiting for a reply");
            if m.is_reply() && &m.msgid == msgid {
                return result_of(m);
            }
            self.pending.push_back(m);
        }
    }

    pub async fn call(&mut self, method: &str, args: Vec<Value>) -> Result<Value, WireError> {
        let id = self.msgid();
        self.send(&Message::call(id, method, args)).await;
        self.reply_to(&Value::Int(id)).await
    }

    pub async fn call_async(&mut self, method: &str, args: Vec<Value>) {
        self.send(&Message::call_async(method, args)).await;
    }

    /// Whether the server closed the connection (reads until EOF).
    pub async fn closed(&mut self) -> bool {
        loop {
            match tokio::time::timeout(WAIT, self.reader.next()).await {
                Err(_) => return false,
                Ok(None) | Ok(Some(Err(_))) => return true,
                Ok(Some(Ok(frame))) => {
                    if let Ok(m) = self.marshaller.decode(&frame) {
                        self.log.push(m);
                    }
                }
            }
        }
    }

    pub async fn register(&mut self, storage: &str, read_only: bool) -> Result<Tid, WireError> {
        let id = self.msgid();
        self.send(&ClientRequest::register(id, storage, read_only))
            .await;
        self.reply_to(&Value::Int(id))
            .await
            .map(|v| replies::tid("register", &v).unwrap())
    }

    pub async fn load_before(
        &mut self,
        oid: Oid,
        before: Tid,
    ) -> Result<Option<LoadedRevision>, WireError> {
        let msg = ClientRequest::load_before(oid, before);
        let msgid = msg.msgid.clone();
        self.send(&msg).await;
        self.reply_to(&msgid)
            .await
            .map(|v| replies::load_before(&v).unwrap())
    }

    pub async fn load(&mut self, oid: Oid) -> Result<Option<LoadedRevision>, WireError> {
        self.load_before(oid, Tid::MAX).await
    }

    pub async fn begin(&mut self, txn: i64) {
        self.send(&ClientRequest::tpc_begin(
            TxnId(txn),
            b"user",
            b"desc",
            Value::Dict(vec![]),
            None,
            TxnStatus::Committed,
        ))
        .await;
    }

    pub async fn store(&mut self, txn: i64, oid: Oid, serial: Tid, data: &[u8]) {
        self.send(&ClientRequest::storea(oid, serial, data, TxnId(txn)))
            .await;
    }

    /// Sends vote and returns its msgid without waiting.
    pub async fn send_vote(&mut self, txn: i64) -> Value {
        let id = self.msgid();
        self.send(&ClientRequest::vote(id, TxnId(txn))).await;
        Value::Int(id)
    }

    pub async fn vote(&mut self, txn: i64) -> Result<Vec<replies::VoteItem>, WireError> {
        let id = self.send_vote(txn).await;
        self.reply_to(&id).await.map(|v| replies::vote(&v).unwrap())
    }

    pub async fn finish(&mut self, txn: i64) -> Result<Tid, WireError> {
        let id = self.msgid();
        self.send(&ClientRequest::tpc_finish(id, TxnId(txn))).await;
        self.reply_to(&Value::Int(id))
            .await
            .map(|v| replies::tid("tpc_finish", &v).unwrap())
    }

    pub async fn abort(&mut self, txn: i64) -> Result<Value, WireError> {
        let id = self.msgid();
        self.send(&ClientRequest::tpc_abort(id, TxnId(txn))).await;
        self.reply_to(&Value::Int(id)).await
    }

    /// A whole commit of `stores` (oid, serial, data).
    pub async fn commit(
        &mut self,
        txn: i64,
        stores: &[(Oid, Tid, Vec<u8>)],
    ) -> Result<Tid, WireError> {
        self.begin(txn).await;
        for (oid, serial, data) in stores {
            self.store(txn, *oid, *serial, data).await;
        }
        let voted = self.vote(txn).await?;
        assert!(
            voted
                .iter()
                .all(|v| matches!(v, replies::VoteItem::Changed(_))),
            "unexpected conflicts: {voted:?}"
        );
        self.finish(txn).await
    }

    pub async fn new_oids(&mut self) -> Vec<Oid> {
        let v = self.call("new_oids", vec![]).await.unwrap();
        replies::oids("new_oids", &v).unwrap()
    }

    /// Server notifications received so far (consumed from `pending` too).
    pub fn events(&self) -> Vec<&Message> {
        self.log.iter().filter(|m| !m.is_reply()).collect()
    }

    /// Waits for the next notification named `method`.
    pub async fn next_event(&mut self, method: &str) -> Message {
        if let Some(pos) = self.pending.iter().position(|m| m.method == method) {
            return self.pending.remove(pos).unwrap();
        }
        loop {
            let m = self
                .read()
                .await
                .expect("closed while waiting for an event");
            if m.method == method {
                return m;
            }
            self.pending.push_back(m);
        }
    }
}

pub fn result_of(m: Message) -> Result<Value, WireError> {
    if m.flags != zeo_protocol::Flags::None {
        Err(WireError::from_value(&m.args).expect("error reply shape"))
    } else {
        Ok(m.args)
    }
}

pub fn bytes(b: &[u8]) -> Value {
    Value::Bytes(b.to_vec())
}

pub fn invalidation(m: &Message) -> (Tid, Vec<Oid>) {
    let args = m.call_args().unwrap();
    let tid = replies::tid("invalidateTransaction", &args[0]).unwrap();
    let oids = replies::oids("invalidateTransaction", &args[1]).unwrap();
    (tid, oids)
}

/// The core `Storage` methods of a test wrapper around another storage in
/// its field `inner`: each calls `$enter(self, "method")`, then the inner
/// storage. The wrapper is writable and says it may block (the tests that
/// wrap a storage are about blocking backends); its capabilities, and any
/// method it does otherwise, are written beside the macro.
#[macro_export]
macro_rules! forward_storage {
    ($enter:expr) => {
        fn name(&self) -> &str {
            self.inner.name()
        }
        fn is_read_only(&self) -> bool {
            false
        }
        fn size(&self) -> u64 {
            self.inner.size()
        }
        fn len(&self) -> u64 {
            self.inner.len()
        }
        fn last_transaction(&self) -> zeo_storage::Tid {
            self.inner.last_transaction()
        }
        fn may_block(&self) -> bool {
            true
        }
        fn load(&self, oid: zeo_storage::Oid) -> zeo_storage::Result<(Vec<u8>, zeo_storage::Tid)> {
            ($enter)(self, "load");
            self.inner.load(oid)
        }
        fn load_before(
            &self,
            oid: zeo_storage::Oid,
            before: zeo_storage::Tid,
        ) -> zeo_storage::Result<Option<zeo_storage::LoadedRevision>> {
            ($enter)(self, "load_before");
            self.inner.load_before(oid, before)
        }
        fn load_serial(
            &self,
            oid: zeo_storage::Oid,
            serial: zeo_storage::Tid,
        ) -> zeo_storage::Result<Vec<u8>> {
            ($enter)(self, "load_serial");
            self.inner.load_serial(oid, serial)
        }
        fn new_oid(&self) -> zeo_storage::Result<zeo_storage::Oid> {
            ($enter)(self, "new_oid");
            self.inner.new_oid()
        }
        fn tpc_begin(
            &self,
            meta: &zeo_storage::TransactionMetaData,
            options: zeo_storage::BeginOptions,
        ) -> zeo_storage::Result<zeo_storage::TxnHandle> {
            ($enter)(self, "tpc_begin");
            self.inner.tpc_begin(meta, options)
        }
        fn transaction_tid(
            &self,
            txn: zeo_storage::TxnHandle,
        ) -> zeo_storage::Result<Option<zeo_storage::Tid>> {
            ($enter)(self, "transaction_tid");
            self.inner.transaction_tid(txn)
        }
        fn store(
            &self,
            txn: zeo_storage::TxnHandle,
            oid: zeo_storage::Oid,
            serial: zeo_storage::Tid,
            data: &[u8],
        ) -> zeo_storage::Result<()> {
            ($enter)(self, "store");
            self.inner.store(txn, oid, serial, data)
        }
        fn check_current_serial(
            &self,
            txn: zeo_storage::TxnHandle,
            oid: zeo_storage::Oid,
            serial: zeo_storage::Tid,
        ) -> zeo_storage::Result<()> {
            ($enter)(self, "check_current_serial");
            self.inner.check_current_serial(txn, oid, serial)
        }
        fn tpc_vote(
            &self,
            txn: zeo_storage::TxnHandle,
        ) -> zeo_storage::Result<Vec<zeo_storage::Oid>> {
            ($enter)(self, "tpc_vote");
            self.inner.tpc_vote(txn)
        }
        fn tpc_finish(
            &self,
            txn: zeo_storage::TxnHandle,
            on_commit: &mut dyn FnMut(zeo_storage::Tid),
        ) -> zeo_storage::Result<zeo_storage::Tid> {
            ($enter)(self, "tpc_finish");
            self.inner.tpc_finish(txn, on_commit)
        }
        fn tpc_abort(&self, txn: zeo_storage::TxnHandle) {
            ($enter)(self, "tpc_abort");
            self.inner.tpc_abort(txn)
        }
        fn last_invalidations(
            &self,
            count: usize,
        ) -> zeo_storage::Result<Vec<(zeo_storage::Tid, Vec<zeo_storage::Oid>)>> {
            ($enter)(self, "last_invalidations");
            self.inner.last_invalidations(count)
        }
        fn close(&self) -> zeo_storage::Result<()> {
            ($enter)(self, "close");
            self.inner.close()
        }
    };
}
