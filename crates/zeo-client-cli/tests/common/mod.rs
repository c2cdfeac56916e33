//! What the `zeo-client` binary's tests share: an in-process server.
#![allow(dead_code)]

use std::sync::Arc;

use zeo_client::{ClientOptions, ClientStorage, ServerAddress};
use zeo_server::{BoundAddress, ListenAddress, ServerBuilder, ServerHandle, ServerSettings};
use zeo_storage::{MappingStorage, Storage};

/// A server on its own runtime thread, shut down on drop.
pub struct TestServer {
    pub port: u16,
    pub handle: ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    /// A server of one `MappingStorage` named "1".
    pub fn start() -> TestServer {
        TestServer::serving(Arc::new(MappingStorage::new("1")))
    }

    /// A server of `storage`, named "1".
    pub fn serving(storage: Arc<dyn Storage>) -> TestServer {
        TestServer::with_settings(ServerSettings::default(), storage)
    }

    /// A server of `storage`, named "1", with `settings`.
    pub fn with_settings(settings: ServerSettings, storage: Arc<dyn Storage>) -> TestServer {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            let server = ServerBuilder::new(settings)
                .storage("1", storage)
                .build()
                .unwrap();
            let port = {
                let _guard = rt.enter();
                match &server.bind(&ListenAddress::localhost(0)).unwrap()[0] {
                    BoundAddress::Tcp(addr) => addr.port(),
                    other => panic!("{other}"),
                }
            };
            tx.send((port, server.handle())).unwrap();
            rt.block_on(server.serve(std::future::pending())).unwrap();
        });
        let (port, handle) = rx.recv().unwrap();
        TestServer {
            port,
            handle,
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn client(&self) -> ClientStorage {
        ClientStorage::open(ClientOptions::new(vec![ServerAddress::localhost(
            self.port,
        )]))
        .unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.handle.shutdown();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
