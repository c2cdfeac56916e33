//! The `zeo-server` binary attacked as a hostile peer would attack it, over
//! TCP on 127.0.0.1 (`docs/security.md` is the threat model these tests
//! hold the server to).
//!
//! Every server here runs under `prlimit --as=2GiB`, so an attack that makes
//! it reserve memory it was never sent fails with "memory allocation failed"
//! instead of passing unnoticed on a large host. Each test asserts that the
//! process survives, that the attacking connection is closed (or gets the
//! documented error), that other clients are still served afterwards and,
//! where memory is the target, that the server's peak resident size
//! (`VmHWM` in `/proc/PID/status`) stays within the bound the issue set.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use zeo_client::{ClientOptions, ClientStorage, ServerAddress};
use zeo_protocol::{ClientRequest, Encoding, Marshaller};
use zeo_storage::filestorage::{FileStorage, FileStorageOptions};
use zeo_storage::{BeginOptions, Oid, Storage, Tid, TransactionMetaData};

/// Address-space limit every server here runs under.
const ADDRESS_SPACE: &str = "--as=2147483648";

/// How long a peer waits for the server to act on an attack.
const PATIENCE: Duration = Duration::from_secs(20);

const MIB: u64 = 1024 * 1024;

/// Starts the binary under the address-space limit.
fn start(dir: &Path, args: &[&str]) -> ServerProcess {
    let mut full = vec![ADDRESS_SPACE, "--", binary()];
    full.extend_from_slice(args);
    ServerProcess::start_program(dir, "prlimit", &full)
}

/// Starts a server for `Data.fs` in `dir` with extra `<zeo>` lines.
fn start_configured(dir: &Path, zeo_lines: &str, msgpack: bool) -> ServerProcess {
    let conf = format!(
        "<zeo>\n  address 127.0.0.1:0\n  msgpack {}\n{zeo_lines}</zeo>\n\
         <filestorage 1>\n  path Data.fs\n</filestorage>\n",
        if msgpack { "true" } else { "false" }
    );
    std::fs::write(dir.join("zeo.conf"), conf).unwrap();
    start(dir, &["-C", "zeo.conf"])
}

/// Peak resident bytes of the server so far.
fn peak(server: &ServerProcess) -> u64 {
    zeo_testkit::proc_status_kib(Some(server.child.id()), "VmHWM") * 1024
}

/// A raw peer that speaks frames and nothing else.
struct Peer {
    stream: TcpStream,
}

impl Peer {
    /// Connects and reads the server's greeting; the version is not answered.
    fn connect_silent(addr: SocketAddr) -> (Peer, Vec<u8>) {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream.set_write_timeout(Some(PATIENCE)).unwrap();
        let mut peer = Peer { stream };
        let greeting = peer.read_frame().expect("greeting");
        (peer, greeting)
    }

    /// Connects and completes the handshake with the encoding announced.
    fn connect(addr: SocketAddr) -> (Peer, Marshaller) {
        let (mut peer, greeting) = Peer::connect_silent(addr);
        let encoding = match greeting.as_slice() {
            b"M5" => Encoding::Msgpack,
            b"Z5" => Encoding::Pickle,
            other => panic!("unexpected greeting {other:?}"),
        };
        peer.send(&greeting);
        (peer, Marshaller::client(encoding))
    }

    fn send(&mut self, payload: &[u8]) {
        let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(payload);
        self.stream.write_all(&frame).unwrap();
    }

    /// The next frame; `None` when the server closed the connection.
    fn read_frame(&mut self) -> Option<Vec<u8>> {
        let mut len = [0u8; 4];
        match self.stream.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if closed(&e) => return None,
            Err(e) => panic!("reading a length word: {e}"),
        }
        let len = u32::from_be_bytes(len) as usize;
        assert!(len <= 64 << 20, "server sent a {len}-byte frame");
        let mut body = vec![0u8; len];
        match self.stream.read_exact(&mut body) {
            Ok(()) => Some(body),
            Err(e) if closed(&e) => None,
            Err(e) => panic!("reading a frame: {e}"),
        }
    }

    /// Reads (and drops) frames until the server closes the connection;
    /// panics if it does not within [`PATIENCE`] or sends more than `max`.
    fn expect_closed(&mut self, max: usize, what: &str) {
        for _ in 0..=max {
            if self.read_frame().is_none() {
                return;
            }
        }
        panic!("{what}: the server kept the connection open");
    }
}

fn closed(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::BrokenPipe
    )
}

/// Registers `peer` for storage `1` and waits for the answer.
fn register(peer: &mut Peer, m: &Marshaller) {
    peer.send(&m.encode(&ClientRequest::register(1, "1", false)).unwrap());
    let reply = peer.read_frame().expect("register reply");
    assert!(!reply.is_empty());
}

fn client_options(addr: SocketAddr) -> ClientOptions {
    let mut o = ClientOptions::new(vec![ServerAddress::localhost(addr.port())]);
    o.wait_timeout = PATIENCE;
    o.min_disconnect_poll = Duration::from_millis(50);
    o
}

/// Proves the server still serves a well-behaved client: it commits an
/// object and reads it back.
fn assert_serves(server: &mut ServerProcess) {
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server died"
    );
    let client = ClientStorage::open(client_options(server.addr())).unwrap();
    let oid = client.new_oid().unwrap();
    let txn = client
        .tpc_begin(&TransactionMetaData::default(), BeginOptions::default())
        .unwrap();
    client.store(txn, oid, Tid::ZERO, b"still served").unwrap();
    client.tpc_vote(txn).unwrap();
    let tid = client.tpc_finish(txn, &mut |_| {}).unwrap();
    assert_eq!(client.load(oid).unwrap(), (b"still served".to_vec(), tid));
    client.close().unwrap();
}

/// A pickle whose value nests `depth` tuples at constant stack height:
/// `None` wrapped by `TUPLE1` over and over.
fn deep_tuple_pickle(depth: usize) -> Vec<u8> {
    let mut p = vec![0x80, 3, b'N'];
    p.extend(std::iter::repeat_n(0x85u8, depth));
    p.push(b'.');
    p
}

#[test]
fn deep_pickle_frames_close_only_their_connection() {
    let dir = zeo_testkit::TempDir::new().unwrap();
    let mut server = start_configured(dir.path(), "", false);
    // Before register, and after it, with the shapes the direct reader and
    // the generic decoder each take.
    let mut list_bomb = vec![0x80, 3];
    for _ in 0..50_000 {
        list_bomb.extend_from_slice(b"](");
    }
    list_bomb.extend(std::iter::repeat_n(b'e', 50_000));
    list_bomb.push(b'.');
    let attacks = [
        deep_tuple_pickle(50_000),
        deep_tuple_pickle(2_000_000),
        list_bomb,
    ];
    for (i, attack) in attacks.iter().enumerate() {
        for registered in [false, true] {
            let (mut peer, m) = Peer::connect(server.addr());
            if registered {
                register(&mut peer, &m);
            }
            peer.send(attack);
            peer.expect_closed(1, &format!("attack {i}, registered {registered}"));
        }
    }
    assert_serves(&mut server);
}

#[test]
fn deep_pickle_frames_before_login_close_only_their_connection() {
    let dir = zeo_testkit::TempDir::new().unwrap();
    std::fs::write(dir.path().join("zeo.conf"), AUTH_CONFIG).unwrap();
    add_user(dir.path(), "alice", "s3cret");
    let mut server = start(dir.path(), &["-C", "zeo.conf"]);
    let (mut peer, _) = Peer::connect(server.addr());
    peer.send(&deep_tuple_pickle(50_000));
    peer.expect_closed(1, "deep tuple before login");
    assert!(server.child.try_wait().unwrap().is_none(), "server died");
    let mut o = client_options(server.addr());
    o.username = Some("alice".into());
    o.password = Some("s3cret".into());
    let client = ClientStorage::open(o).unwrap();
    client.last_transaction();
    client.close().unwrap();
}

#[test]
fn deep_msgpack_frames_close_only_their_connection() {
    let dir = zeo_testkit::TempDir::new().unwrap();
    let mut server = start_configured(dir.path(), "", true);
    let arrays = vec![0x91u8; 1 << 20];
    let maps = {
        let mut v = Vec::with_capacity(1 << 20);
        while v.len() < (1 << 20) - 2 {
            v.extend_from_slice(&[0x81, 0xc0]);
        }
        v
    };
    for attack in [arrays, maps] {
        let (mut peer, m) = Peer::connect(server.addr());
        assert_eq!(m.encoding(), Encoding::Msgpack);
        peer.send(&attack);
        peer.expect_closed(1, "deep msgpack");
    }
    assert_serves(&mut server);
}

#[test]
fn claimed_lengths_reserve_nothing_until_bytes_arrive() {
    let dir = zeo_testkit::TempDir::new().unwrap();
    let mut server = start_configured(dir.path(), "", false);
    assert_serves(&mut server);
    let idle = peak(&server);
    // 80 unauthenticated peers each announce a frame just under the 64 MiB
    // default limit and send a few bytes of it.
    let mut peers = Vec::new();
    for _ in 0..80 {
        let (mut peer, _) = Peer::connect(server.addr());
        let mut word = ((64 << 20) - 16u32).to_be_bytes().to_vec();
        word.extend_from_slice(&[0x80, 3, b'(']);
        peer.stream.write_all(&word).unwrap();
        peers.push(peer);
    }
    // Every peer's bytes were read by the time a later connection is
    // served end to end: connections are served in accept order and each
    // reads as soon as bytes arrive. Serve a client twice to be sure.
    assert_serves(&mut server);
    assert_serves(&mut server);
    let grown = peak(&server).saturating_sub(idle);
    eprintln!("peak above idle: {} KiB", grown / 1024);
    assert!(
        grown < 64 * MIB,
        "80 claimed 64 MiB frames cost {} MiB",
        grown / MIB
    );
    drop(peers);
    assert_serves(&mut server);
}

#[test]
fn msgpack_container_headers_reserve_nothing() {
    let dir = zeo_testkit::TempDir::new().unwrap();
    let mut server = start_configured(dir.path(), "", true);
    assert_serves(&mut server);
    let idle = peak(&server);
    // 1 MiB of array32(0xFFFFFFFF) headers: each claims four billion items.
    let mut attack = Vec::with_capacity(1 << 20);
    while attack.len() + 5 <= 1 << 20 {
        attack.extend_from_slice(&[0xdd, 0xff, 0xff, 0xff, 0xff]);
    }
    let (mut peer, _) = Peer::connect(server.addr());
    peer.send(&attack);
    peer.expect_closed(1, "msgpack headers");
    let grown = peak(&server).saturating_sub(idle);
    eprintln!("peak above idle: {} KiB", grown / 1024);
    assert!(grown < 32 * MIB, "msgpack headers cost {} MiB", grown / MIB);
    assert_serves(&mut server);
}

#[test]
fn memo_bombs_cost_a_few_times_their_size() {
    let dir = zeo_testkit::TempDir::new().unwrap();
    let mut server = start_configured(dir.path(), "", false);
    assert_serves(&mut server);
    let idle = peak(&server);
    // A 64 KiB string memoized once, then fetched from the memo over and
    // over: each 2-byte BINGET stands for 64 KiB of decoded value.
    let size = 16 << 20;
    let mut bomb = vec![0x80, 3, b'(', b'B'];
    bomb.extend_from_slice(&(64u32 << 10).to_le_bytes());
    bomb.resize(bomb.len() + (64 << 10), b'x');
    bomb.extend_from_slice(&[b'q', 0]);
    while bomb.len() + 4 < size {
        bomb.extend_from_slice(&[b'h', 0]);
    }
    bomb.extend_from_slice(b"t.");
    let (mut peer, _) = Peer::connect(server.addr());
    peer.send(&bomb);
    peer.expect_closed(1, "memo bomb");
    let grown = peak(&server).saturating_sub(idle);
    eprintln!("peak above idle: {} KiB", grown / 1024);
    assert!(
        grown < 4 * size as u64,
        "a {} MiB memo bomb cost {} MiB",
        size >> 20,
        grown / MIB
    );
    assert_serves(&mut server);
}

/// Writes a Data.fs holding one 1 MiB object (oid 0) and returns its tid.
fn big_object_database(dir: &Path) -> Tid {
    let fs = FileStorage::open(dir.join("Data.fs"), FileStorageOptions::default()).unwrap();
    let txn = fs
        .tpc_begin(&TransactionMetaData::default(), BeginOptions::default())
        .unwrap();
    fs.store(txn, Oid(0), Tid::ZERO, &vec![7u8; 1 << 20])
        .unwrap();
    fs.tpc_vote(txn).unwrap();
    let tid = fs.tpc_finish(txn, &mut |_| {}).unwrap();
    fs.close().unwrap();
    tid
}

#[test]
fn clients_that_never_read_cost_bounded_memory() {
    let dir = zeo_testkit::TempDir::new().unwrap();
    big_object_database(dir.path());
    let mut server = start_configured(dir.path(), "", false);
    assert_serves(&mut server);
    let idle = peak(&server);
    let mut peers = Vec::new();
    for _ in 0..3 {
        let (mut peer, m) = Peer::connect(server.addr());
        register(&mut peer, &m);
        let request = m
            .encode(&ClientRequest::load_before(Oid(0), Tid(u64::MAX)))
            .unwrap();
        // Requests go out 100 to a write. The kernel's socket buffers hold
        // some 100,000 of them once the server stops reading, so the bound is
        // far beyond that: 500,000 requests, 500 GB of replies.
        let mut batch = Vec::new();
        for _ in 0..100 {
            batch.extend_from_slice(&(request.len() as u32).to_be_bytes());
            batch.extend_from_slice(&request);
        }
        peer.stream
            .set_write_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let started = Instant::now();
        let mut sent = 0;
        while sent < 5_000 && started.elapsed() < PATIENCE * 3 {
            match peer.stream.write_all(&batch) {
                Ok(()) => sent += 1,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
                Err(e) => panic!("the server dropped a client that only stopped reading: {e}"),
            }
        }
        assert!(
            sent < 5_000,
            "the server read 500,000 requests without back-pressure"
        );
        peers.push(peer);
    }
    let grown = peak(&server).saturating_sub(idle);
    eprintln!("peak above idle: {} KiB", grown / 1024);
    assert!(
        grown < 128 * MIB,
        "3 clients that never read cost {} MiB",
        grown / MIB
    );
    // The paused clients are still connected: their replies arrive in
    // order once they read.
    for peer in &mut peers {
        for _ in 0..3 {
            let reply = peer.read_frame().expect("a paused client's reply");
            assert!(reply.len() > 1 << 20, "a reply carries the object");
        }
    }
    drop(peers);
    assert_serves(&mut server);
}

/// Runs the binary to completion ([`PATIENCE`] at most) and returns its
/// status and stderr.
fn run_to_exit(dir: &Path, args: &[&str]) -> (std::process::ExitStatus, String) {
    let out =
        zeo_testkit::run_with_timeout(Command::new(binary()).args(args).current_dir(dir), PATIENCE);
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_unix_address_naming_a_file_never_deletes_it() {
    let dir = zeo_testkit::TempDir::new().unwrap();
    std::fs::write(dir.path().join("precious"), b"do not delete").unwrap();
    // A path with a slash is a Unix socket address.
    let (status, err) = run_to_exit(dir.path(), &["-a", "./precious", "-f", "Data.fs"]);
    assert!(!status.success(), "served on a regular file");
    assert!(err.contains("not a socket"), "{err}");
    assert_eq!(
        std::fs::read(dir.path().join("precious")).unwrap(),
        b"do not delete"
    );
    // The same for the monitor address.
    let (status, err) = run_to_exit(
        dir.path(),
        &["-a", "127.0.0.1:0", "-f", "Data.fs", "-m", "./precious"],
    );
    assert!(!status.success(), "monitor served on a regular file");
    assert!(err.contains("not a socket"), "{err}");
    assert_eq!(
        std::fs::read(dir.path().join("precious")).unwrap(),
        b"do not delete"
    );
}

#[test]
fn a_second_server_cannot_open_the_database_through_another_path() {
    let dir = zeo_testkit::TempDir::new().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::os::unix::fs::symlink("Data.fs", dir.path().join("link.fs")).unwrap();
    let mut first = start(dir.path(), &["-a", "127.0.0.1:0", "-f", "Data.fs"]);
    for other in ["link.fs", "sub/../Data.fs"] {
        let path = dir.path().join(other);
        let path = path.to_str().unwrap();
        let (status, err) = run_to_exit(dir.path(), &["-a", "127.0.0.1:0", "-f", path]);
        assert!(!status.success(), "a second server opened {other}");
        assert!(err.to_lowercase().contains("lock"), "{other}: {err}");
        let (status, err) = run_to_exit(dir.path(), &["pack", path]);
        assert!(!status.success(), "pack opened {other} beside a server");
        assert!(err.to_lowercase().contains("lock"), "{other}: {err}");
    }
    assert_serves(&mut first);
}

const AUTH_CONFIG: &str = "<zeo>\n  address 127.0.0.1:0\n  authentication-protocol digest\n  \
                           authentication-database auth.db\n  authentication-realm zeo\n  \
                           login-timeout 2s\n</zeo>\n\
                           <filestorage 1>\n  path Data.fs\n</filestorage>\n";

#[test]
fn with_authentication_ruok_tells_liveness_only() {
    let dir = zeo_testkit::TempDir::new().unwrap();
    std::fs::write(dir.path().join("zeo.conf"), AUTH_CONFIG).unwrap();
    add_user(dir.path(), "alice", "s3cret");
    let server = start(dir.path(), &["-C", "zeo.conf"]);
    let status = ruok(server.addr());
    let json: zeo_testkit::serde_json::Value = zeo_testkit::serde_json::from_str(&status).unwrap();
    assert!(json.get("1").is_none(), "storage status leaked: {status}");
    assert!(!status.contains("last_transaction"), "{status}");
    assert!(!status.contains("connections"), "{status}");
}

#[test]
fn peers_that_never_log_in_are_closed() {
    let dir = zeo_testkit::TempDir::new().unwrap();
    std::fs::write(dir.path().join("zeo.conf"), AUTH_CONFIG).unwrap();
    add_user(dir.path(), "alice", "s3cret");
    let server = start(dir.path(), &["-C", "zeo.conf"]);
    // One peer never answers the greeting, one answers and then stays
    // silent. Both are closed once login-timeout (2 s) passes.
    let started = Instant::now();
    let (mut silent, _) = Peer::connect_silent(server.addr());
    let (mut idle, _) = Peer::connect(server.addr());
    silent.expect_closed(0, "peer that never answered the greeting");
    idle.expect_closed(1, "peer that never logged in");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "closed before login-timeout"
    );
}

#[test]
fn connections_per_address_are_capped() {
    let dir = zeo_testkit::TempDir::new().unwrap();
    let mut server = start_configured(dir.path(), "  max-connections-per-address 4\n", false);
    let mut held: Vec<Peer> = (0..4).map(|_| Peer::connect(server.addr()).0).collect();
    // The fifth is closed without being served.
    let mut fifth = TcpStream::connect(server.addr()).unwrap();
    fifth.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut buf = [0u8; 64];
    let mut total = 0;
    loop {
        match fifth.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                total += n;
                assert!(total < 64, "the fifth connection is being served");
            }
            Err(e) if closed(&e) => break,
            Err(e) => panic!("the fifth connection was not closed: {e}"),
        }
    }
    // Room again once one leaves.
    held.pop();
    assert_serves(&mut server);
}

#[test]
fn oversized_transactions_fail_and_the_connection_stays_usable() {
    let dir = zeo_testkit::TempDir::new().unwrap();
    let mut server = start_configured(dir.path(), "  max-transaction-size 1MB\n", false);
    let client = ClientStorage::open(client_options(server.addr())).unwrap();
    let oid = client.new_oid().unwrap();
    let txn = client
        .tpc_begin(&TransactionMetaData::default(), BeginOptions::default())
        .unwrap();
    let chunk = vec![1u8; 256 * 1024];
    let mut failed = None;
    for _ in 0..8 {
        if let Err(e) = client.store(txn, oid, Tid::ZERO, &chunk) {
            failed = Some(e);
            break;
        }
    }
    let err = match failed {
        Some(e) => e,
        None => client.tpc_vote(txn).unwrap_err(),
    };
    assert!(err.to_string().contains("max-transaction-size"), "{err}");
    client.tpc_abort(txn);
    client.close().unwrap();
    assert_serves(&mut server);
}
