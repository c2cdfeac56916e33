//! A deterministic harness for the client: an in-process network of
//! in-memory pipes (`tokio::io::duplex`) behind `ClientOptions::connector`,
//! and scripted servers that speak ZEO 5 on them. Tests run on a
//! current-thread runtime with a paused clock, so back-off, timeouts and
//! heartbeats take no real time and happen at exact virtual instants.

#![allow(dead_code)]

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::codec::Decoder;
use zeo_client::{ClientOptions, Connector, ServerAddress, Transport};
use zeo_pickle::Value;
use zeo_protocol::{
    reply, ClientHello, Encoding, FrameCodec, Marshaller, Message, ServerHandshake,
};
use zeo_storage::{Oid, Tid};

/// How long any one step of a scripted conversation may take, in virtual
/// time: far longer than any timer the client runs in these tests, so a
/// client that stops talking fails the test instead of hanging it.
pub const STEP: Duration = Duration::from_secs(3600);

/// The in-memory network: which addresses accept connections, every
/// connection attempt with its virtual time, and the server ends of the
/// accepted ones.
#[derive(Clone)]
pub struct Net {
    up: Arc<Mutex<HashSet<String>>>,
    attempts: Arc<Mutex<Vec<(String, Instant)>>>,
    accepted: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<(String, DuplexStream)>>>,
    tx: mpsc::UnboundedSender<(String, DuplexStream)>,
}

impl Net {
    pub fn new() -> Net {
        let (tx, rx) = mpsc::unbounded_channel();
        Net {
            up: Arc::default(),
            attempts: Arc::default(),
            accepted: Arc::new(tokio::sync::Mutex::new(rx)),
            tx,
        }
    }

    /// Addresses named `name` accept connections from now on.
    pub fn up(&self, address: &ServerAddress) {
        self.up.lock().unwrap().insert(address.to_string());
    }

    /// Addresses named `name` refuse connections from now on.
    pub fn down(&self, address: &ServerAddress) {
        self.up.lock().unwrap().remove(&address.to_string());
    }

    /// Every connection attempt so far: address and virtual time.
    pub fn attempts(&self) -> Vec<(String, Instant)> {
        self.attempts.lock().unwrap().clone()
    }

    /// The connector that dials this network.
    pub fn connector(&self) -> Connector {
        let net = self.clone();
        Arc::new(move |address: &ServerAddress| {
            let address = address.to_string();
            net.attempts
                .lock()
                .unwrap()
                .push((address.clone(), Instant::now()));
            let result = if net.up.lock().unwrap().contains(&address) {
                let (client, server) = tokio::io::duplex(1 << 20);
                let _ = net.tx.send((address, server));
                Ok(Box::new(client) as Box<dyn Transport>)
            } else {
                Err(std::io::ErrorKind::ConnectionRefused.into())
            };
            Box::pin(async move { result })
        })
    }

    /// Options for a client of `servers` on this network, with a small
    /// back-off so that schedules are easy to read.
    pub fn options(&self, servers: Vec<ServerAddress>) -> ClientOptions {
        let mut options = ClientOptions::new(servers);
        options.connector = Some(self.connector());
        options.min_disconnect_poll = Duration::from_secs(1);
        options.max_disconnect_poll = Duration::from_secs(4);
        options
    }

    /// The next accepted connection, as a scripted server.
    pub async fn accept(&self) -> FakeServer {
        let next = tokio::time::timeout(STEP, async { self.accepted.lock().await.recv().await })
            .await
            .expect("the client connects")
            .expect("the network lives as long as the test");
        FakeServer::new(next.0, next.1)
    }
}

/// The server end of one connection, driven by the test.
pub struct FakeServer {
    pub address: String,
    rd: ReadHalf<DuplexStream>,
    wr: WriteHalf<DuplexStream>,
    /// Frames from the client.
    incoming: FrameCodec,
    /// Frames to the client.
    outgoing: FrameCodec,
    buf: BytesMut,
    marshaller: Marshaller,
}

impl FakeServer {
    fn new(address: String, stream: DuplexStream) -> FakeServer {
        let (rd, wr) = tokio::io::split(stream);
        FakeServer {
            address,
            rd,
            wr,
            incoming: FrameCodec::new(),
            outgoing: FrameCodec::new(),
            buf: BytesMut::new(),
            marshaller: Marshaller::server(Encoding::Pickle),
        }
    }

    /// The next frame from the client; `None` once it closed.
    async fn frame(&mut self) -> Option<BytesMut> {
        tokio::time::timeout(STEP, async {
            loop {
                if let Some(frame) = self.incoming.decode(&mut self.buf).expect("a valid frame") {
                    return Some(frame);
                }
                if self.rd.read_buf(&mut self.buf).await.ok()? == 0 {
                    return None;
                }
            }
        })
        .await
        .expect("the client talks")
    }

    async fn write(&mut self, payload: &[u8]) {
        let frame = self.outgoing.encode_vec(payload).unwrap();
        // A client that went away is the test's business, not a failure
        // here.
        let _ = self.wr.write_all(&frame).await;
    }

    /// Sends the `Z5` greeting and takes the client's answer.
    pub async fn handshake(&mut self) {
        let handshake = ServerHandshake::new(Encoding::Pickle);
        self.write(&handshake.greeting()).await;
        let answer = self.frame().await.expect("a handshake answer");
        match handshake.receive(&answer).unwrap() {
            ClientHello::Accepted(encoding) => self.marshaller = Marshaller::server(encoding),
            other => panic!("unexpected hello {other:?}"),
        }
    }

    /// Asks for ZEO 3/4 `digest` authentication and accepts `user` with
    /// `password`; from the answer on, frames in both directions are
    /// sealed, and a frame from the client whose MAC does not continue the
    /// chain fails the test.
    pub async fn login(&mut self, user: &str, password: &str) {
        let protocol = self.expect("getAuthProtocol").await;
        self.reply(&protocol, Value::Str(zeo_auth::PROTOCOL.into()))
            .await;
        let challenge = zeo_auth::Challenge {
            realm: "zeo".into(),
            challenge: "c0ffee".into(),
            key_nonce: "n0nce".into(),
        };
        let asked = self.expect("auth_get_challenge").await;
        let answer = Value::Tuple(
            [&challenge.realm, &challenge.challenge, &challenge.key_nonce]
                .map(|s| Value::Str(s.clone()))
                .to_vec(),
        );
        self.reply(&asked, answer).await;
        let proof = zeo_auth::ClientProof::new(user, password, None, &challenge).unwrap();
        let response = self.expect("auth_response").await;
        let args = response.call_args().unwrap();
        let Value::Tuple(fields) = &args[0] else {
            panic!("auth_response({args:?})")
        };
        assert_eq!(fields[2], Value::Str(proof.response.clone()));
        self.reply(&response, Value::Bool(true)).await;
        self.incoming
            .install_mac(zeo_auth::MacState::new(&proof.session_key));
        self.outgoing
            .install_mac(zeo_auth::MacState::new(&proof.session_key));
    }

    /// The next message from the client, heartbeats included; `None` once
    /// it closed.
    pub async fn next_message(&mut self) -> Option<Message> {
        let frame = self.frame().await?;
        Some(self.marshaller.decode(&frame).expect("a valid message"))
    }

    /// The next call, skipping heartbeats; it must be `method`.
    pub async fn expect(&mut self, method: &str) -> Message {
        loop {
            let msg = self
                .next_message()
                .await
                .unwrap_or_else(|| panic!("the client closed while {method} was expected"));
            if msg.is_heartbeat() {
                continue;
            }
            assert_eq!(msg.method, method, "{msg:?}");
            return msg;
        }
    }

    /// Answers `call` with `value`.
    pub async fn reply(&mut self, call: &Message, value: Value) {
        let payload = self
            .marshaller
            .encode(&Message::reply(call.msgid.clone(), value))
            .unwrap();
        self.write(&payload).await;
    }

    /// Sends a message of the server's own (an invalidation, say).
    pub async fn send(&mut self, msg: &Message) {
        let payload = self.marshaller.encode(msg).unwrap();
        self.write(&payload).await;
    }

    /// Handshake, `register` answered with `last`, then `get_info`: what
    /// every connection of a client with an empty cache goes through.
    pub async fn accept_client(&mut self, last: Tid) {
        self.handshake().await;
        let register = self.expect("register").await;
        self.reply(&register, reply::tid(last)).await;
        self.answer_get_info().await;
    }

    /// Handshake and `register` answered with `last`, for a client whose
    /// cache knows up to `since`: it must ask `getInvalidations(since)`,
    /// which is answered with `oids` changed up to `last`; then `get_info`.
    pub async fn accept_verifying(&mut self, last: Tid, since: Tid, oids: &[Oid]) {
        self.handshake().await;
        let register = self.expect("register").await;
        self.reply(&register, reply::tid(last)).await;
        let asked = self.expect("getInvalidations").await;
        assert_eq!(asked.call_args().unwrap()[0], reply::tid(since));
        self.reply(&asked, reply::invalidations(Some((last, oids))))
            .await;
        self.answer_get_info().await;
    }

    /// Answers `get_info` with a small storage.
    pub async fn answer_get_info(&mut self) {
        let info = self.expect("get_info").await;
        self.reply(
            &info,
            Value::Dict(vec![
                (Value::Str("length".into()), Value::Int(1)),
                (Value::Str("size".into()), Value::Int(100)),
            ]),
        )
        .await;
    }

    /// Answers the next `loadBefore` with `data` as `oid`'s revision
    /// `start`, current.
    pub async fn answer_load(&mut self, oid: Oid, data: &[u8], start: Tid) {
        let load = self.expect("loadBefore").await;
        let args = load.call_args().unwrap();
        assert_eq!(args[0], Value::Bytes(oid.to_bytes().to_vec()));
        self.reply(
            &load,
            Value::Tuple(vec![
                Value::Bytes(data.to_vec()),
                reply::tid(start),
                Value::None,
            ]),
        )
        .await;
    }

    /// Waits for the client to close the connection.
    pub async fn closed(&mut self) {
        while let Some(msg) = self.next_message().await {
            assert!(
                msg.is_heartbeat() || msg.flags != zeo_protocol::Flags::None,
                "{msg:?}"
            );
        }
    }
}

/// A network with one server up, at `127.0.0.1:8100`.
pub fn one_server() -> (Net, ServerAddress) {
    let net = Net::new();
    let server = ServerAddress::localhost(8100);
    net.up(&server);
    (net, server)
}

/// Loads `oid` through `client`, `conn` answering with `data` as revision
/// `start`: the client caches it.
pub async fn load_into_cache(
    client: &zeo_client::AsyncClientStorage,
    conn: &mut FakeServer,
    oid: Oid,
    data: &[u8],
    start: Tid,
) {
    let (loaded, ()) = tokio::join!(client.load(oid), conn.answer_load(oid, data, start));
    assert_eq!(loaded.unwrap(), (data.to_vec(), start));
}

/// A client connected (and its cache verified) through `net` to a
/// scripted server whose last transaction is `last`.
pub async fn connected(
    net: &Net,
    options: ClientOptions,
    last: Tid,
) -> (zeo_client::AsyncClientStorage, FakeServer) {
    let server = async {
        let mut conn = net.accept().await;
        conn.accept_client(last).await;
        conn
    };
    let (client, conn) = tokio::join!(zeo_client::AsyncClientStorage::connect(options), server);
    (client.expect("the client connects"), conn)
}

/// Receives the next notice that `pick` accepts, within [`STEP`] of
/// virtual time.
pub async fn notice<T>(
    rx: &mut tokio::sync::broadcast::Receiver<zeo_client::Notice>,
    mut pick: impl FnMut(zeo_client::Notice) -> Option<T>,
) -> T {
    tokio::time::timeout(STEP, async {
        loop {
            let notice = rx.recv().await.expect("notices keep coming");
            if let Some(t) = pick(notice) {
                return t;
            }
        }
    })
    .await
    .expect("the notice comes")
}
