//! The metrics endpoint: scraped over HTTP on 127.0.0.1, parsed by the
//! reference parser (Python's `prometheus_client`), counters moving with
//! traffic, and bad requests answered without harm.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::{Client, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zeo_pickle::Value;
use zeo_server::{ListenAddress, ServerBuilder, ServerSettings};
use zeo_storage::filestorage::{FileStorage, FileStorageOptions};
use zeo_storage::{Oid, Tid};
use zeo_testkit::serde_json::{self, Value as Json};

/// Sends `request` raw and returns the whole response.
async fn http(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    };
    tokio::time::timeout(WAIT, exchange).await.unwrap()
}

/// The parsed samples: (name, sorted labels) -> value.
type Samples = BTreeMap<(String, Vec<(String, String)>), f64>;

/// Scrapes `addr` and parses the body with `prometheus_client`, returning
/// the samples and the family types.
async fn scrape(addr: std::net::SocketAddr) -> (Samples, BTreeMap<String, String>) {
    let response = http(addr, b"GET /metrics HTTP/1.1\r\nHost: zeo\r\n\r\n").await;
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    let body = body.to_owned();
    let parsed = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let mut child = Command::new(zeo_testkit::python6())
            .arg(zeo_testkit::script("parse_metrics.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(body.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let text = zeo_testkit::stdout_of(&out, "parse_metrics.py");
        serde_json::from_str::<Json>(&text).unwrap()
    })
    .await
    .unwrap();
    let mut samples = Samples::new();
    for s in parsed["samples"].as_array().unwrap() {
        let mut labels: Vec<(String, String)> = s["labels"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect();
        labels.sort();
        let value = match &s["value"] {
            Json::String(inf) if inf == "inf" => f64::INFINITY,
            v => v.as_f64().unwrap(),
        };
        samples.insert((s["name"].as_str().unwrap().to_owned(), labels), value);
    }
    let families = parsed["families"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    (samples, families)
}

fn get(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut key: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    key.sort();
    *samples
        .get(&(name.to_owned(), key))
        .unwrap_or_else(|| panic!("no sample {name} {labels:?} in {samples:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scraped_metrics_parse_and_move_with_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let storage =
        FileStorage::open(dir.path().join("Data.fs"), FileStorageOptions::default()).unwrap();
    let settings = ServerSettings {
        metrics_address: Some(ListenAddress::localhost(0)),
        ..ServerSettings::default()
    };
    let server = ServerBuilder::new(settings)
        .storage("1", Arc::new(storage))
        .build()
        .unwrap();
    let zeo = match server.bind(&ListenAddress::localhost(0)).unwrap()[0] {
        zeo_server::BoundAddress::Tcp(a) => a,
        ref other => panic!("{other}"),
    };
    let bound = server.bind_metrics().unwrap();
    let metrics = bound[0].tcp().unwrap();
    assert!(metrics.ip().is_loopback());
    let handle = server.handle();
    handle.metrics().tls_handshake_failed("bad_certificate");
    handle.metrics().auth_failed();
    let task = tokio::spawn(server.serve(std::future::pending()));

    let (before, families) = scrape(metrics).await;
    let storage = [("storage", "1")];
    assert_eq!(get(&before, "zeo_commits_total", &storage), 0.0);
    assert_eq!(get(&before, "zeo_connected_clients", &storage), 0.0);
    assert_eq!(families["zeo_commits"], "counter");
    assert_eq!(families["zeo_commit_lock_wait_seconds"], "histogram");
    assert_eq!(families["zeo_fsync_duration_seconds"], "histogram");
    assert_eq!(
        get(
            &before,
            "zeo_build_info",
            &[
                ("implementation", "zeo-rs"),
                ("version", env!("CARGO_PKG_VERSION"))
            ]
        ),
        1.0
    );
    assert_eq!(
        get(
            &before,
            "zeo_tls_handshake_failures_total",
            &[("reason", "bad_certificate")]
        ),
        1.0
    );
    assert_eq!(get(&before, "zeo_auth_failures_total", &[]), 1.0);

    // Two clients; each commits one object while the other holds the
    // commit lock, so one vote waits; one load; invalidations go to the
    // other client.
    let mut a = Client::connect(zeo, None).await;
    a.register("1", false).await.unwrap();
    let mut b = Client::connect(zeo, None).await;
    b.register("1", false).await.unwrap();
    // Real records, so that pack can read their references.
    let root = zeo_pickle::zodb::Record::persistent_mapping([(
        Value::str("child"),
        Value::persistent_ref(1, None),
    )])
    .encode()
    .unwrap();
    let child = zeo_pickle::zodb::Record::persistent_mapping([])
        .encode()
        .unwrap();
    a.begin(1).await;
    a.store(1, Oid(0), Tid::ZERO, &root).await;
    a.vote(1).await.unwrap();
    b.begin(2).await;
    b.store(2, Oid(1), Tid::ZERO, &child).await;
    let waiting = b.send_vote(2).await;
    // The vote is queued before A finishes: the waiting gauge says so
    // (polled: the vote travels on B's connection; bounded in count and
    // time).
    let polled = async {
        for _ in 0..1000 {
            let text = http(metrics, b"GET /metrics HTTP/1.1\r\n\r\n").await;
            if text.contains("\nzeo_commit_lock_waiting{storage=\"1\"} 1\n") {
                return text;
            }
        }
        panic!("the second vote never showed as waiting");
    };
    let mid = tokio::time::timeout(WAIT, polled).await.unwrap();
    assert!(
        mid.contains("\nzeo_active_transactions{storage=\"1\"} 2\n"),
        "{mid}"
    );
    assert!(
        mid.contains("\nzeo_open_connections{state=\"registered\"} 2\n"),
        "{mid}"
    );
    a.finish(1).await.unwrap();
    b.reply_to(&waiting).await.unwrap();
    b.finish(2).await.unwrap();
    assert!(a.load(Oid(1)).await.unwrap().is_some());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    a.call("pack", vec![Value::Float(now), Value::Bool(true)])
        .await
        .unwrap();

    let (after, _) = scrape(metrics).await;
    assert_eq!(get(&after, "zeo_commits_total", &storage), 2.0);
    assert_eq!(get(&after, "zeo_stores_total", &storage), 2.0);
    assert!(get(&after, "zeo_loads_total", &storage) >= 1.0);
    assert_eq!(get(&after, "zeo_connected_clients", &storage), 2.0);
    assert_eq!(get(&after, "zeo_invalidations_sent_total", &storage), 2.0);
    assert_eq!(get(&after, "zeo_active_transactions", &storage), 0.0);
    assert_eq!(get(&after, "zeo_objects", &storage), 2.0);
    assert!(get(&after, "zeo_database_size_bytes", &storage) > 4.0);
    assert_eq!(
        get(&after, "zeo_commit_lock_wait_seconds_count", &storage),
        1.0
    );
    assert_eq!(
        get(
            &after,
            "zeo_commit_lock_wait_seconds_bucket",
            &[("storage", "1"), ("le", "+Inf")]
        ),
        1.0
    );
    assert_eq!(
        get(&after, "zeo_fsync_duration_seconds_count", &storage),
        2.0
    );
    let age = get(&after, "zeo_last_transaction_age_seconds", &storage);
    assert!((0.0..60.0).contains(&age), "{age}");
    assert!(get(&after, "zeo_uptime_seconds", &[]) >= get(&before, "zeo_uptime_seconds", &[]));

    handle.shutdown();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn other_requests_get_errors_and_the_server_goes_on() {
    let settings = ServerSettings {
        metrics_address: Some(ListenAddress::localhost(0)),
        ..ServerSettings::default()
    };
    let direct = ServerBuilder::new(settings)
        .storage("1", Arc::new(zeo_storage::MappingStorage::new("1")))
        .build()
        .unwrap();
    let addr = direct.bind_metrics().unwrap()[0].tcp().unwrap();
    let handle = direct.handle();
    let task = tokio::spawn(direct.serve(std::future::pending()));

    let not_found = http(addr, b"GET / HTTP/1.1\r\n\r\n").await;
    assert!(not_found.starts_with("HTTP/1.1 404 "), "{not_found}");
    let method = http(addr, b"POST /metrics HTTP/1.1\r\n\r\n").await;
    assert!(method.starts_with("HTTP/1.1 405 "), "{method}");
    let garbage = http(addr, b"\x16\x03\x01\x02\x00\r\n\r\n").await;
    assert!(garbage.starts_with("HTTP/1.1 400 "), "{garbage}");
    // A head past the bound (8 KiB) is refused without reading further.
    let mut huge = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 8 * 1024));
    let refused = http(addr, &huge).await;
    assert!(refused.starts_with("HTTP/1.1 400 "), "{refused}");
    let head = http(addr, b"HEAD /metrics HTTP/1.0\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(
        head.ends_with("\r\n\r\n"),
        "a HEAD answer has no body: {head}"
    );
    let ok = http(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
    assert!(
        ok.contains("\nzeo_commits_total{storage=\"1\"} 0\n"),
        "{ok}"
    );

    handle.shutdown();
    task.await.unwrap().unwrap();
}
