//! The client library facing a malicious server (`docs/security.md`): a fake
//! server on 127.0.0.1 answers the handshake and then sends what an attacker
//! would. The application linking `zeo-client` must survive with an error
//! and bounded memory; the attacking connection is dropped.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use zeo_client::{ClientOptions, ClientStorage, ServerAddress};
use zeo_protocol::{Encoding, Marshaller};

/// How long the fake server waits on the client.
const PATIENCE: Duration = Duration::from_secs(20);

/// What the fake server sends once the client's first call arrives.
#[derive(Clone, Copy)]
enum Attack {
    /// A reply whose value nests 50,000 tuples at constant pickle-stack
    /// height (`TUPLE1` over and over).
    DeepTuple,
    /// A length word claiming a 1000 MiB frame (the client allows 1 GiB
    /// here), then a few bytes of it.
    ClaimedLength,
}

fn read_frame(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let len = u32::from_be_bytes(len) as usize;
    assert!(len < 1 << 20, "client sent a {len}-byte frame");
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).ok()?;
    Some(body)
}

fn send_frame(s: &mut TcpStream, payload: &[u8]) {
    let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(payload);
    s.write_all(&frame).unwrap();
}

/// Serves one connection: greeting, the client's version, its first call,
/// then the attack. Reports whether the client closed the connection
/// afterwards (instead of waiting for the rest of a claimed frame forever
/// or dying).
fn fake_server(listener: TcpListener, attack: Attack, done: mpsc::Sender<bool>) {
    let (mut s, _) = listener.accept().unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    send_frame(&mut s, b"Z5");
    assert_eq!(read_frame(&mut s).as_deref(), Some(&b"Z5"[..]));
    let call = read_frame(&mut s).expect("the client's first call");
    let m = Marshaller::server(Encoding::Pickle);
    let msg = m.decode(&call).unwrap();
    match attack {
        Attack::DeepTuple => {
            // (msgid, False, '.reply', <deep value>)
            let mut p = vec![0x80, 3];
            p.push(b'(');
            p.push(b'J');
            p.extend_from_slice(&match &msg.msgid {
                zeo_pickle::Value::Int(n) => (*n as i32).to_le_bytes(),
                other => panic!("msgid {other:?}"),
            });
            p.push(0x89); // False
            p.push(b'X');
            p.extend_from_slice(&6u32.to_le_bytes());
            p.extend_from_slice(b".reply");
            p.push(b'N');
            p.extend(std::iter::repeat_n(0x85u8, 50_000));
            p.extend_from_slice(b"t.");
            send_frame(&mut s, &p);
        }
        Attack::ClaimedLength => {
            let mut word = ((1000 << 20) as u32).to_be_bytes().to_vec();
            word.extend_from_slice(&[0x80, 3, b'(']);
            s.write_all(&word).unwrap();
        }
    }
    // The client must drop the connection: at once for a bad reply, and for
    // a frame that never completes when its call times out.
    let mut buf = [0u8; 4096];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    let _ = done.send(closed);
}

/// Peak virtual size of this process: what a reservation costs under
/// `ulimit -v` or `vm.overcommit_memory=2`, even before it is touched.
fn peak() -> u64 {
    zeo_testkit::proc_status_kib(None, "VmPeak") * 1024
}

fn attacked(attack: Attack) -> (zeo_client::Error, bool) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    let server = std::thread::spawn(move || fake_server(listener, attack, tx));
    let mut o = ClientOptions::new(vec![ServerAddress::localhost(port)]);
    o.wait_timeout = Duration::from_secs(2);
    o.min_disconnect_poll = Duration::from_secs(60);
    o.max_frame = 1 << 30;
    let err = match ClientStorage::open(o) {
        Ok(_) => panic!("opened a storage on a hostile server"),
        Err(e) => e,
    };
    let closed = rx.recv_timeout(PATIENCE).unwrap_or(false);
    server.join().unwrap();
    (err, closed)
}

#[test]
fn a_deeply_nested_reply_is_an_error_not_a_crash() {
    let (err, closed) = attacked(Attack::DeepTuple);
    assert!(closed, "the client kept a connection that sent garbage");
    let text = err.to_string();
    assert!(!text.is_empty());
}

#[test]
fn a_claimed_frame_length_reserves_nothing() {
    let before = peak();
    let (_err, closed) = attacked(Attack::ClaimedLength);
    assert!(closed, "the client kept waiting for a frame");
    let grown = peak().saturating_sub(before);
    // New threads' stacks and malloc arenas account for some growth; a
    // reservation of the claimed frame would be 1000 MiB.
    assert!(
        grown < 512 << 20,
        "a claimed 1000 MiB frame cost {} MiB of address space",
        grown >> 20
    );
}
