//! An in-process zeo-server for the client's tests, and a commit helper.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Runtime;
use zeo_client::{ClientOptions, ServerAddress};
use zeo_server::{BoundAddress, ListenAddress, ServerBuilder, ServerHandle, ServerSettings};
use zeo_storage::filestorage::FileStorageOptions;
use zeo_storage::{BeginOptions, FileStorage, Oid, Storage, Tid, TransactionMetaData};

/// A server on its own runtime, serving one FileStorage as `'1'`.
pub struct TestServer {
    rt: Option<Runtime>,
    handle: ServerHandle,
    done: Option<tokio::task::JoinHandle<()>>,
    pub port: u16,
    pub path: PathBuf,
}

impl TestServer {
    /// Starts serving `path` on `port` (0: any free port).
    pub fn start(path: &Path, port: u16, settings: ServerSettings) -> TestServer {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let storage: Arc<dyn Storage> =
            Arc::new(FileStorage::open(path, FileStorageOptions::default()).unwrap());
        let server = ServerBuilder::new(settings)
            .storage("1", storage)
            .build()
            .unwrap();
        let bound = {
            let _guard = rt.enter();
            server.bind(&ListenAddress::localhost(port)).unwrap()
        };
        let port = match &bound[0] {
            BoundAddress::Tcp(a) => a.port(),
            other => panic!("unexpected address {other}"),
        };
        let handle = server.handle();
        let done = rt.spawn(async move {
            server.serve(std::future::pending()).await.unwrap();
        });
        TestServer {
            rt: Some(rt),
            handle,
            done: Some(done),
            port,
            path: path.to_owned(),
        }
    }

    /// Options for a client of this server, with short timeouts.
    pub fn options(&self) -> ClientOptions {
        let mut o = ClientOptions::new(vec![ServerAddress::localhost(self.port)]);
        o.wait_timeout = Duration::from_secs(10);
        o.min_disconnect_poll = Duration::from_millis(50);
        o.max_disconnect_poll = Duration::from_millis(400);
        o
    }

    /// `server_status` counters of storage `'1'`.
    pub fn loads(&self) -> u64 {
        self.handle.status("1").unwrap().loads
    }

    /// Stops the server and waits until its storage is closed.
    /// TLS handshakes this server saw fail, by reason.
    #[allow(dead_code)]
    pub fn tls_failures(&self) -> std::collections::BTreeMap<String, u64> {
        self.handle.metrics().tls_handshake_failures()
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.handle.shutdown();
        if let (Some(rt), Some(done)) = (self.rt.take(), self.done.take()) {
            let _ =
                rt.block_on(async { tokio::time::timeout(Duration::from_secs(20), done).await });
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Commits `writes` (`(oid, serial, data)`) in one transaction described by
/// `meta`, aborting it when any step fails.
pub fn commit_with<S: Storage + ?Sized>(
    storage: &S,
    meta: &TransactionMetaData,
    writes: &[(Oid, Tid, &[u8])],
) -> zeo_storage::Result<Tid> {
    let txn = storage.tpc_begin(meta, BeginOptions::default())?;
    let result = (|| {
        for (oid, serial, data) in writes {
            storage.store(txn, *oid, *serial, data)?;
        }
        storage.tpc_vote(txn)?;
        storage.tpc_finish(txn, &mut |_| {})
    })();
    if result.is_err() {
        storage.tpc_abort(txn);
    }
    result
}

/// Waits, at most `within`, for the next notice `pick` accepts: the client
/// sends the event, nothing polls. `None` when none came in time.
pub fn wait_notice<T>(
    rx: &mut tokio::sync::broadcast::Receiver<zeo_client::Notice>,
    within: Duration,
    mut pick: impl FnMut(zeo_client::Notice) -> Option<T>,
) -> Option<T> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(within, async {
            loop {
                match rx.recv().await {
                    Ok(notice) => {
                        if let Some(t) = pick(notice) {
                            return t;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(e) => panic!("notices: {e}"),
                }
            }
        })
        .await
        .ok()
    })
}

/// Waits (10 s at most) for the client behind `rx` to report a lost
/// connection.
pub fn wait_disconnected(rx: &mut tokio::sync::broadcast::Receiver<zeo_client::Notice>) {
    let lost = wait_notice(rx, Duration::from_secs(10), |n| {
        (n == zeo_client::Notice::Disconnected).then_some(())
    });
    assert!(
        lost.is_some(),
        "the client did not report the lost connection"
    );
}

/// Waits (10 s at most) for an invalidation up to `tid` to reach the
/// client behind `rx`; once it did, the client's cache holds nothing
/// older as current.
pub fn wait_invalidated(rx: &mut tokio::sync::broadcast::Receiver<zeo_client::Notice>, tid: Tid) {
    let seen = wait_notice(rx, Duration::from_secs(10), |n| match n {
        zeo_client::Notice::Invalidated { tid: t, .. } if t >= tid => Some(()),
        _ => None,
    });
    assert!(seen.is_some(), "no invalidation up to {tid} arrived");
}

/// A stock Python ZEO 6 server (`runzeo`), killed when dropped.
pub struct Runzeo {
    child: std::process::Child,
    pub port: u16,
}

impl Drop for Runzeo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn runzeo_path() -> PathBuf {
    let python = zeo_testkit::python6();
    python.parent().unwrap().join("runzeo")
}

/// Starts `runzeo -C dir/zeo.conf` and waits (30 s at most) until `port`
/// accepts connections.
pub fn run_runzeo(dir: &Path, port: u16) -> Runzeo {
    let child = std::process::Command::new(runzeo_path())
        .arg("-C")
        .arg(dir.join("zeo.conf"))
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("cannot start runzeo: run `cargo xtask test` to create the Python venvs");
    let server = Runzeo { child, port };
    assert!(
        zeo_testkit::wait_until(Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        }),
        "runzeo did not start listening"
    );
    server
}
