//! ZEO 3/4 digest authentication served by zeo-server: the login calls
//! before `register`, and MAC'd frames in both directions afterwards.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zeo_auth::{ClientProof, MacState, NonceKey, PasswordDatabase, ServerAuthenticator};
use zeo_pickle::Value;
use zeo_protocol::client::replies;
use zeo_protocol::{ClientHandshake, ClientRequest, Marshaller, Message, TxnId, WireError};
use zeo_server::ServerSettings;
use zeo_storage::{Oid, Tid, TxnStatus};

const NONCE_KEY: [u8; 8] = *b"\x01\x02\x03\x04\x05\x06\x07\x08";

fn authenticator() -> Arc<ServerAuthenticator> {
    let mut db = PasswordDatabase::new(Some("zeo")).unwrap();
    db.add_user("alice", "s3cret").unwrap();
    db.add_user("bob", "hunter2").unwrap();
    Arc::new(ServerAuthenticator::with_nonce_key(db, NonceKey::from_bytes(NONCE_KEY)).unwrap())
}

fn auth_settings() -> ServerSettings {
    ServerSettings {
        authentication: Some(authenticator()),
        ..ServerSettings::default()
    }
}

/// A raw client that can switch its frames to MACs.
struct MacClient {
    stream: TcpStream,
    marshaller: Marshaller,
    send_mac: Option<MacState>,
    recv_mac: Option<MacState>,
    next_msgid: i64,
}

enum Frame {
    Payload(Vec<u8>),
    Closed,
}

impl MacClient {
    async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let mut c = MacClient {
            stream,
            marshaller: Marshaller::client(zeo_protocol::Encoding::Pickle),
            send_mac: None,
            recv_mac: None,
            next_msgid: 1,
        };
        let Frame::Payload(greeting) = c.read_frame().await else {
            panic!("no greeting")
        };
        let (encoding, answer) = ClientHandshake::new().receive(&greeting).unwrap();
        c.marshaller = Marshaller::client(encoding);
        c.write_plain(&answer).await;
        c
    }

    fn local_port(&self) -> u16 {
        self.stream.local_addr().unwrap().port()
    }

    async fn write_plain(&mut self, payload: &[u8]) {
        let frame = zeo_protocol::encode_frame(payload).unwrap();
        self.stream.write_all(&frame).await.unwrap();
    }

    /// Frames `payload` as the connection currently requires.
    fn frame(&mut self, payload: &[u8]) -> Vec<u8> {
        match self.send_mac.as_mut() {
            Some(mac) => mac.seal(payload).unwrap(),
            None => zeo_protocol::encode_frame(payload).unwrap(),
        }
    }

    async fn send(&mut self, msg: &Message) {
        let payload = self.marshaller.encode(msg).unwrap();
        let frame = self.frame(&payload);
        self.stream.write_all(&frame).await.unwrap();
    }

    /// Reads one frame, checking its MAC once the key is installed (a bad
    /// MAC from the server fails the test).
    async fn read_frame(&mut self) -> Frame {
        let mut word = [0u8; 4];
        let read = tokio::time::timeout(WAIT, self.stream.read_exact(&mut word))
            .await
            .expect("nothing from the server in time");
        if read.is_err() {
            return Frame::Closed;
        }
        let word = u32::from_be_bytes(word);
        let mut body = vec![0u8; zeo_auth::body_len(word)];
        if self.stream.read_exact(&mut body).await.is_err() {
            return Frame::Closed;
        }
        match self.recv_mac.as_mut() {
            Some(mac) => Frame::Payload(mac.open_body(word, &body).unwrap().to_vec()),
            None => {
                assert_eq!(word & zeo_auth::MAC_BIT, 0, "MAC'd frame before the key");
                Frame::Payload(body)
            }
        }
    }

    async fn call(&mut self, method: &str, args: Vec<Value>) -> Result<Value, WireError> {
        let id = self.next_msgid;
        self.next_msgid += 1;
        self.send(&Message::call(id, method, args)).await;
        self.reply_to(id).await
    }

    async fn reply_to(&mut self, id: i64) -> Result<Value, WireError> {
        loop {
            let Frame::Payload(p) = self.read_frame().await else {
                panic!("connection closed while waiting for a reply to {id}")
            };
            let m = self.marshaller.decode(&p).unwrap();
            if m.is_reply() && m.msgid == Value::Int(id) {
                return if m.flags != zeo_protocol::Flags::None {
                    Err(WireError::from_value(&m.args).unwrap())
                } else {
                    Ok(m.args)
                };
            }
        }
    }

    /// Whether the server closed the connection (reads until EOF).
    async fn closed(&mut self) -> bool {
        let mut sink = Vec::new();
        tokio::time::timeout(WAIT, self.stream.read_to_end(&mut sink))
            .await
            .is_ok()
    }

    async fn challenge(&mut self) -> zeo_auth::Challenge {
        let v = self.call("auth_get_challenge", vec![]).await.unwrap();
        let Value::Tuple(items) = v else {
            panic!("challenge {v:?}")
        };
        let [Value::Str(realm), Value::Str(challenge), Value::Str(key_nonce)] = &items[..] else {
            panic!("challenge {items:?}")
        };
        zeo_auth::Challenge {
            realm: realm.clone(),
            challenge: challenge.clone(),
            key_nonce: key_nonce.clone(),
        }
    }

    async fn respond(
        &mut self,
        user: &str,
        challenge: &str,
        response: &str,
    ) -> Result<Value, WireError> {
        let args = vec![Value::Tuple(vec![
            Value::Str(user.into()),
            Value::Str(challenge.into()),
            Value::Str(response.into()),
        ])];
        self.call("auth_response", args).await
    }

    /// Logs in; on success both MAC chains are installed.
    async fn login(&mut self, user: &str, password: &str) -> bool {
        let protocol = self.call("getAuthProtocol", vec![]).await.unwrap();
        assert_eq!(protocol, Value::Str("digest".into()));
        let challenge = self.challenge().await;
        assert_eq!(challenge.realm, "zeo");
        let proof = ClientProof::new(user, password, None, &challenge).unwrap();
        let ok = self
            .respond(user, &challenge.challenge, &proof.response)
            .await
            .unwrap();
        if ok == Value::Bool(true) {
            self.send_mac = Some(MacState::new(&proof.session_key));
            self.recv_mac = Some(MacState::new(&proof.session_key));
            true
        } else {
            assert_eq!(ok, Value::Bool(false));
            false
        }
    }

    async fn register(&mut self) -> Result<Tid, WireError> {
        let v = self
            .call("register", vec![Value::Str("1".into()), Value::Bool(false)])
            .await?;
        Ok(replies::tid("register", &v).unwrap())
    }

    async fn commit(&mut self, txn: i64, oid: Oid, data: &[u8]) -> Tid {
        self.send(&ClientRequest::tpc_begin(
            TxnId(txn),
            b"alice",
            b"over MACs",
            Value::Dict(vec![]),
            None,
            TxnStatus::Committed,
        ))
        .await;
        self.send(&ClientRequest::storea(oid, Tid::ZERO, data, TxnId(txn)))
            .await;
        let id = self.next_msgid;
        self.next_msgid += 1;
        self.send(&ClientRequest::vote(id, TxnId(txn))).await;
        self.reply_to(id).await.unwrap();
        let id = self.next_msgid;
        self.next_msgid += 1;
        self.send(&ClientRequest::tpc_finish(id, TxnId(txn))).await;
        let v = self.reply_to(id).await.unwrap();
        replies::tid("tpc_finish", &v).unwrap()
    }
}

fn auth_error(e: &WireError) -> bool {
    e.class == "ZEO.Exceptions.AuthError"
        && e.fields
            == Value::Tuple(vec![Value::Str(
                "Client was never authenticated with server!".into(),
            )])
}

#[tokio::test]
async fn a_server_without_authentication_answers_none_and_knows_no_login() {
    let server = TestServer::start(ServerSettings::default()).await;
    let mut c = MacClient::connect(server.addr).await;
    assert_eq!(
        c.call("getAuthProtocol", vec![]).await.unwrap(),
        Value::None
    );
    c.register().await.unwrap();
    let mut c = MacClient::connect(server.addr).await;
    c.send(&Message::call(1, "auth_get_challenge", vec![]))
        .await;
    assert!(c.closed().await);
    server.stop().await;
}

#[tokio::test]
async fn the_right_password_commits_and_loads_over_macs() {
    let server = TestServer::start(auth_settings()).await;
    let mut c = MacClient::connect(server.addr).await;
    assert!(c.login("alice", "s3cret").await);
    c.register().await.unwrap();
    let v = c.call("new_oids", vec![]).await.unwrap();
    let oid = replies::oids("new_oids", &v).unwrap()[0];
    let tid = c.commit(7, oid, b"sealed").await;
    // The info message after tpc_finish was MAC'd too: reading on past it
    // kept the chain in step.
    let msg = ClientRequest::load_before(oid, Tid::MAX);
    let msgid = msg.msgid.clone();
    c.send(&msg).await;
    let found = loop {
        let Frame::Payload(p) = c.read_frame().await else {
            panic!("closed")
        };
        let m = c.marshaller.decode(&p).unwrap();
        if m.is_reply() && m.msgid == msgid {
            break replies::load_before(&m.args).unwrap().unwrap();
        }
    };
    assert_eq!((found.data, found.start), (b"sealed".to_vec(), tid));
    // A second client sees the commit, and heartbeats pass through.
    c.send(&Message::heartbeat()).await;
    assert_eq!(c.call("ping", vec![]).await.unwrap(), Value::None);
    let mut other = MacClient::connect(server.addr).await;
    assert!(other.login("bob", "hunter2").await);
    other.register().await.unwrap();
    let v = other
        .call(
            "loadSerial",
            vec![bytes(&oid.0.to_be_bytes()), bytes(&tid.0.to_be_bytes())],
        )
        .await
        .unwrap();
    assert_eq!(v, bytes(b"sealed"));
    server.stop().await;
}

#[tokio::test]
async fn register_before_login_is_an_auth_error_and_the_connection_stays() {
    let server = TestServer::start(auth_settings()).await;
    let mut c = MacClient::connect(server.addr).await;
    let err = c.register().await.unwrap_err();
    assert!(auth_error(&err), "{err:?}");
    // Other methods before register close the connection, as always.
    assert!(c.login("bob", "hunter2").await);
    c.register().await.unwrap();
    // The plain-text common client cannot register either.
    let mut plain = Client::connect(server.addr, None).await;
    let err = plain.register("1", false).await.unwrap_err();
    assert!(auth_error(&err), "{err:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_wrong_password_is_false_and_leaves_the_connection_unauthenticated() {
    let server = TestServer::start(auth_settings()).await;
    let mut c = MacClient::connect(server.addr).await;
    assert!(!c.login("alice", "wrong").await);
    let err = c.register().await.unwrap_err();
    assert!(auth_error(&err), "{err:?}");
    // The failed try used the challenge up: answering it again is refused.
    let challenge = c.challenge().await;
    let proof = ClientProof::new("alice", "s3cret", None, &challenge).unwrap();
    assert_eq!(
        c.respond("alice", &challenge.challenge, "0".repeat(40).as_str())
            .await
            .unwrap(),
        Value::Bool(false)
    );
    let err = c
        .respond("alice", &challenge.challenge, &proof.response)
        .await
        .unwrap_err();
    assert_eq!(err.class, "builtins.ValueError");
    assert_eq!(
        err.fields,
        Value::Tuple(vec![Value::Str("invalid challenge".into())])
    );
    server.stop().await;
}

#[tokio::test]
async fn unknown_users_and_foreign_challenges_are_errors() {
    let server = TestServer::start(auth_settings()).await;
    let mut c = MacClient::connect(server.addr).await;
    // No challenge issued yet.
    let err = c.respond("alice", "abc", "def").await.unwrap_err();
    assert_eq!(err.class, "builtins.ValueError");
    let challenge = c.challenge().await;
    let err = c
        .respond("mallory", &challenge.challenge, "x")
        .await
        .unwrap_err();
    assert_eq!(err.class, "builtins.LookupError");
    assert_eq!(
        err.fields,
        Value::Tuple(vec![Value::Str("No such user: mallory".into())])
    );
    let challenge = c.challenge().await;
    let err = c
        .respond("alice", &format!("{}0", challenge.challenge), "x")
        .await
        .unwrap_err();
    assert_eq!(err.class, "builtins.ValueError");
    // Malformed arguments are a TypeError, not a closed connection.
    let err = c
        .call("auth_response", vec![Value::Str("alice".into())])
        .await
        .unwrap_err();
    assert_eq!(err.class, "builtins.TypeError");
    let err = c
        .call("getAuthProtocol", vec![Value::Int(1)])
        .await
        .unwrap_err();
    assert_eq!(err.class, "builtins.TypeError");
    assert!(c.login("alice", "s3cret").await);
    c.register().await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn the_challenge_hashes_the_python_peer_address() {
    let server = TestServer::start(auth_settings()).await;
    let mut c = MacClient::connect(server.addr).await;
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let challenge = c.challenge().await;
    let after = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let peer = format!("('127.0.0.1', {})", c.local_port());
    let key = NonceKey::from_bytes(NONCE_KEY);
    assert!(
        (before..=after).any(|t| zeo_auth::nonce(&peer, t, &key) == challenge.challenge),
        "{challenge:?} for {peer}"
    );
    assert_eq!(challenge.challenge, challenge.key_nonce);
    server.stop().await;
}

#[tokio::test]
async fn a_tampered_or_missing_mac_closes_only_that_connection() {
    let server = TestServer::start(auth_settings()).await;
    let mut bystander = MacClient::connect(server.addr).await;
    assert!(bystander.login("bob", "hunter2").await);
    bystander.register().await.unwrap();

    for bit in [0usize, 4 * 8 + 3, 24 * 8 + 1] {
        // bit 0: the MAC bit of the length word; then one MAC bit; then one
        // payload bit.
        let mut c = MacClient::connect(server.addr).await;
        assert!(c.login("alice", "s3cret").await);
        c.register().await.unwrap();
        let payload = c
            .marshaller
            .encode(&Message::call(99, "ping", vec![]))
            .unwrap();
        let mut frame = c.frame(&payload);
        frame[bit / 8] ^= 0x80 >> (bit % 8);
        if bit == 0 {
            // A plain frame: the length word without the MAC bit, no MAC.
            frame = zeo_protocol::encode_frame(&payload).unwrap();
        }
        c.stream.write_all(&frame).await.unwrap();
        assert!(c.closed().await, "bit {bit}");
    }

    // A replayed frame fails too: the chain has moved on.
    let mut c = MacClient::connect(server.addr).await;
    assert!(c.login("alice", "s3cret").await);
    let payload = c
        .marshaller
        .encode(&Message::call(
            50,
            "register",
            vec![Value::Str("1".into()), Value::Bool(false)],
        ))
        .unwrap();
    let frame = c.frame(&payload);
    c.stream.write_all(&frame).await.unwrap();
    c.reply_to(50).await.unwrap();
    c.stream.write_all(&frame).await.unwrap();
    assert!(c.closed().await);

    assert_eq!(bystander.call("ping", vec![]).await.unwrap(), Value::None);
    let v = bystander.call("new_oids", vec![]).await.unwrap();
    let oid = replies::oids("new_oids", &v).unwrap()[0];
    bystander.commit(3, oid, b"still serving").await;
    server.stop().await;
}

#[tokio::test]
async fn login_calls_after_login_or_register_close_the_connection() {
    let server = TestServer::start(auth_settings()).await;
    let mut c = MacClient::connect(server.addr).await;
    assert!(c.login("alice", "s3cret").await);
    c.send(&Message::call(40, "auth_get_challenge", vec![]))
        .await;
    assert!(c.closed().await);
    // getAuthProtocol stays harmless.
    let mut c = MacClient::connect(server.addr).await;
    assert!(c.login("alice", "s3cret").await);
    c.register().await.unwrap();
    assert_eq!(
        c.call("getAuthProtocol", vec![]).await.unwrap(),
        Value::Str("digest".into())
    );
    // A one-way login call is never right.
    let mut c = MacClient::connect(server.addr).await;
    c.send(&Message::call_async("auth_get_challenge", vec![]))
        .await;
    assert!(c.closed().await);
    server.stop().await;
}
