//! What an idle client costs the server: a site with thousands of
//! application processes keeps thousands of connections open that mostly
//! wait. The `zeo-server` binary is measured from outside (its `VmRSS` in
//! `/proc/PID/status`) while raw peers shake hands, register and then sit
//! idle; `cargo xtask bench` measures the same over 10,000 connections.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;
use zeo_protocol::{ClientRequest, Encoding, Marshaller};

/// Connections whose cost is measured.
const MEASURED: usize = 500;
/// Connections opened (and kept) first, so that what the server sets up
/// once (worker threads, allocator arenas, table growth) is not counted.
const WARM_UP: usize = 100;
/// The most one idle, registered connection may add to the server's
/// resident size.
const BOUND_KIB: u64 = 16;

/// A connection that shook hands and registered for storage `1`.
fn registered(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let greeting = read_frame(&mut s);
    let encoding = match greeting.as_slice() {
        b"M5" => Encoding::Msgpack,
        b"Z5" => Encoding::Pickle,
        other => panic!("unexpected greeting {other:?}"),
    };
    send(&mut s, &greeting);
    let m = Marshaller::client(encoding);
    send(
        &mut s,
        &m.encode(&ClientRequest::register(1, "1", false)).unwrap(),
    );
    assert!(!read_frame(&mut s).is_empty(), "empty register reply");
    s
}

fn send(s: &mut TcpStream, payload: &[u8]) {
    let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(payload);
    s.write_all(&frame).unwrap();
}

fn read_frame(s: &mut TcpStream) -> Vec<u8> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let len = u32::from_be_bytes(len) as usize;
    assert!(len <= 1 << 20, "a {len}-byte frame");
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    body
}

#[test]
fn an_idle_connection_costs_the_server_at_most_16_kib() {
    let dir = zeo_testkit::TempDir::new().unwrap();
    // All peers come from 127.0.0.1: lift the per-address cap.
    std::fs::write(
        dir.path().join("zeo.conf"),
        "<zeo>\n  address 127.0.0.1:0\n  max-connections 0\n  \
         max-connections-per-address 0\n</zeo>\n\
         <filestorage 1>\n  path Data.fs\n</filestorage>\n",
    )
    .unwrap();
    let server = ServerProcess::start(dir.path(), &["-C", "zeo.conf"]);
    let pid = Some(server.child.id());
    let mut held: Vec<TcpStream> = (0..WARM_UP).map(|_| registered(server.addr())).collect();
    let before = zeo_testkit::proc_status_kib(pid, "VmRSS");
    held.extend((0..MEASURED).map(|_| registered(server.addr())));
    let with = zeo_testkit::proc_status_kib(pid, "VmRSS");
    let each = with.saturating_sub(before) as f64 / MEASURED as f64;
    assert!(
        each <= BOUND_KIB as f64,
        "{MEASURED} idle connections took the server from {before} to {with} KiB: \
         {each:.1} KiB each (bound {BOUND_KIB})"
    );
    // The connections were served all along: one more still registers.
    registered(server.addr());
    drop(held);
}
