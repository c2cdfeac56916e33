//! Client configurations: `<zeoclient>`, `<clientstorage>` and both inside
//! ZODB's `<zodb>`.

mod common;

use std::path::PathBuf;

use zeo_config::client::{DEFAULT_CACHE_SIZE, DEFAULT_WAIT_TIMEOUT};
use zeo_config::{
    ByteSize, ClientConfig, ClientSectionKind, DatabaseConfig, Error, Interval, SocketAddress,
};

use common::{expect_err, tcp};

fn client(text: &str) -> ClientConfig {
    ClientConfig::from_str(text, "client.conf").unwrap_or_else(|e| panic!("{e}"))
}

fn client_err(text: &str) -> Error {
    expect_err(ClientConfig::from_str(text, "client.conf"))
}

#[test]
fn howto_client_example() {
    let c = client("    <zeoclient>\n    server zeo.example.com:8090\n    </zeoclient>\n");
    assert_eq!(c.kind, ClientSectionKind::ZeoClient);
    assert_eq!(c.servers, [tcp("zeo.example.com", 8090)]);
    // Everything else is at the schema default.
    let mut expected = ClientConfig::new(vec![tcp("zeo.example.com", 8090)]);
    expected.source = "client.conf".into();
    expected.location = c.location.clone();
    assert_eq!(c, expected);
    assert_eq!(c.storage, "1");
    assert_eq!(c.cache_size, DEFAULT_CACHE_SIZE);
    assert_eq!(c.cache_size, ByteSize(20 * 1024 * 1024));
    assert_eq!(c.name, "");
    assert_eq!(c.min_disconnect_poll, 5);
    assert_eq!(c.max_disconnect_poll, 300);
    assert!(c.wait);
    assert_eq!(c.wait_timeout, DEFAULT_WAIT_TIMEOUT);
    assert_eq!(c.wait_timeout, Interval(30));
    assert!(!c.read_only && !c.read_only_fallback && !c.server_sync);
    assert!(!c.shared_blob_dir && !c.drop_cache_rather_verify);
    assert_eq!(c.persistent_cache_path(), None);
    assert!(c.unsupported.is_empty());
}

#[test]
fn every_zeoclient_key() {
    let c = client(
        "<zeoclient main>
  server db1:8100
  server [::1]:8100
  server /var/run/zeo.sock
  storage main
  cache-size 200MB
  name my db
  client app1
  var /var/cache/zeo
  min-disconnect-poll 2
  max-disconnect-poll 60
  wait off
  read-only-fallback yes
  username alice
  password secret
  realm zeo
  drop-cache-rather-verify true
  client-label worker-3
  blob-dir /var/cache/blobs
  shared-blob-dir false
  blob-cache-size 1GB
  blob-cache-size-check 25
</zeoclient>
",
    );
    assert_eq!(c.section_name.as_deref(), Some("main"));
    assert_eq!(
        c.servers,
        [
            tcp("db1", 8100),
            tcp("::1", 8100),
            SocketAddress::Unix("/var/run/zeo.sock".into())
        ]
    );
    assert_eq!(c.storage, "main");
    assert_eq!(c.cache_size, ByteSize(200 << 20));
    assert_eq!(c.name, "my db");
    assert_eq!(c.client.as_deref(), Some("app1"));
    assert_eq!(c.var, Some("/var/cache/zeo".into()));
    assert_eq!((c.min_disconnect_poll, c.max_disconnect_poll), (2, 60));
    assert!(!c.wait);
    assert!(c.read_only_fallback);
    assert_eq!(c.username.as_deref(), Some("alice"));
    assert_eq!(c.password.as_deref(), Some("secret"));
    assert_eq!(c.realm.as_deref(), Some("zeo"));
    assert!(c.drop_cache_rather_verify);
    assert_eq!(c.client_label.as_deref(), Some("worker-3"));
    assert_eq!(c.blob_dir, Some("/var/cache/blobs".into()));
    assert_eq!(c.blob_cache_size, Some(ByteSize(1 << 30)));
    assert_eq!(c.blob_cache_size_check, Some(25));
    assert_eq!(
        c.persistent_cache_path(),
        Some(PathBuf::from("/var/cache/zeo/app1-main.zec"))
    );
    let ignored: Vec<_> = c.unsupported.iter().map(|u| u.setting.as_str()).collect();
    assert_eq!(ignored, ["drop-cache-rather-verify"]);
}

#[test]
fn clientstorage_inside_zodb_from_zeo_docs() {
    // docs/clients.rst in ZEO, plus the other <clientstorage> keys. The docs
    // write `cache-size 1000MB`, which ZODB's schema (an integer count of
    // objects) rejects; `cache-size-bytes` is the byte-sized key.
    let c = client(
        "<zodb>
   cache-size-bytes 1000MB

   %import ZEO

   <clientstorage>
     server 8200
     cache-path /var/cache/zeo.zec
     server-sync true
     wait-timeout 2m
     read-only true
     <ssl>
       certificate client.pem
       key client_key.pem
       authenticate server.pem
       check-hostname false
       server-hostname zeo.example.com
     </ssl>
   </clientstorage>
</zodb>
",
    );
    assert_eq!(c.kind, ClientSectionKind::ClientStorage);
    assert_eq!(c.servers, [tcp("127.0.0.1", 8200)]);
    assert_eq!(c.cache_path, Some("/var/cache/zeo.zec".into()));
    assert_eq!(c.persistent_cache_path(), Some("/var/cache/zeo.zec".into()));
    assert!(c.server_sync && c.read_only);
    assert_eq!(c.wait_timeout, Interval(120));
    let ssl = c.ssl.as_ref().unwrap();
    assert_eq!(ssl.certificate, PathBuf::from("client.pem"));
    assert_eq!(ssl.authenticate, Some("server.pem".into()));
    assert!(!ssl.check_hostname);
    assert_eq!(ssl.server_hostname.as_deref(), Some("zeo.example.com"));
    let db = c.database.as_ref().unwrap();
    assert_eq!(db.cache_size_bytes, ByteSize(1000 << 20));
    assert_eq!(db.cache_size, 5000);

    // Python: "invalid literal for int() with base 10: '1000MB' (line 2)".
    let e = client_err("<zodb>\n   cache-size 1000MB\n   <clientstorage>\n     server 8200\n   </clientstorage>\n</zodb>\n");
    assert!(
        e.to_string()
            .starts_with("client.conf:2: bad value \"1000MB\" for \"cache-size\""),
        "{e}"
    );
}

#[test]
fn zodb_database_settings() {
    let c = client(
        "<zodb main>
  cache-size 10000
  cache-size-bytes 500MB
  pool-size 3
  pool-timeout 10m
  historical-timeout 1h
  database-name main
  allow-implicit-cross-references false
  <zeoclient>
    server localhost:8100
    client-label web
  </zeoclient>
</zodb>
",
    );
    let db = c.database.as_ref().unwrap();
    assert_eq!(db.section_name.as_deref(), Some("main"));
    assert_eq!(db.cache_size, 10000);
    assert_eq!(db.cache_size_bytes, ByteSize(500 << 20));
    assert_eq!(db.pool_size, 3);
    assert_eq!(db.pool_timeout, Some(Interval(600)));
    assert_eq!(db.historical_timeout, Interval(3600));
    assert_eq!(db.historical_pool_size, 3);
    assert_eq!(db.historical_cache_size, 1000);
    assert_eq!(db.large_record_size, ByteSize(16 << 20));
    assert_eq!(db.database_name.as_deref(), Some("main"));
    assert_eq!(db.allow_implicit_cross_references, Some(false));
    assert_eq!(c.client_label.as_deref(), Some("web"));
    let d = DatabaseConfig::default();
    assert_eq!((d.cache_size, d.pool_size), (5000, 7));
}

#[test]
fn multi_database_files() {
    let text = "<zodb a>\n<zeoclient>\nserver 1\n</zeoclient>\n</zodb>\n<zodb b>\n<zeoclient>\nserver 2\nstorage b\n</zeoclient>\n</zodb>\n";
    let all = ClientConfig::all_from_section(&zeo_config::parse(text, "m.conf").unwrap()).unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[1].storage, "b");
    let e = client_err(text);
    assert!(matches!(e, Error::Conflict { .. }), "{e}");
    assert!(e.to_string().starts_with("client.conf:7:"), "{e}");
}

#[test]
fn client_errors() {
    let e = client_err("<zeoclient>\n  storage 1\n</zeoclient>\n");
    assert_eq!(
        e.to_string(),
        "client.conf:1: <zeoclient> is missing the required key \"server\""
    );

    let e = client_err("<zeoclient>\n  server db\n</zeoclient>\n");
    assert!(
        e.to_string()
            .starts_with("client.conf:2: bad value \"db\" for \"server\": no port given"),
        "{e}"
    );

    let e = client_err("<zeoclient>\n  server 1\n  cache-size big\n</zeoclient>\n");
    assert!(
        e.to_string()
            .starts_with("client.conf:3: bad value \"big\" for \"cache-size\""),
        "{e}"
    );

    let e = client_err("<zeoclient>\n  server 1\n  cache-siz 1\n</zeoclient>\n");
    assert_eq!(
        e.to_string(),
        "client.conf:3: unknown key \"cache-siz\" in <zeoclient>"
    );

    let e = client_err("<zeoclient>\n  server 1\n  storage a\n  storage b\n</zeoclient>\n");
    assert!(matches!(e, Error::DuplicateKey { .. }), "{e}");
    assert!(e.to_string().starts_with("client.conf:4:"), "{e}");

    let e = client_err("<zodb>\n  <filestorage>\n    path x\n  </filestorage>\n</zodb>\n");
    assert!(matches!(e, Error::UnsupportedSection { .. }), "{e}");
    assert!(e.to_string().starts_with("client.conf:2:"), "{e}");

    let e = client_err("<zodb>\n  pool-size 3\n</zodb>\n");
    assert!(matches!(e, Error::MissingSection { .. }), "{e}");

    let e = client_err("<zodb>\n<zeoclient>\nserver 1\n</zeoclient>\n<zeoclient>\nserver 2\n</zeoclient>\n</zodb>\n");
    assert!(e.to_string().starts_with("client.conf:5:"), "{e}");

    let e = client_err("# nothing here\n");
    assert!(
        e.to_string().contains("no <zeoclient> or <clientstorage>"),
        "{e}"
    );

    let e =
        client_err("<clientstorage>\n  server 1\n  <ssl>\n    key k\n  </ssl>\n</clientstorage>\n");
    assert_eq!(
        e.to_string(),
        "client.conf:3: <ssl> is missing the required key \"certificate\""
    );

    let e = client_err("<zeoclient>\n  server 1\n</zeoclient>\n<zeo>\n</zeo>\n");
    assert_eq!(
        e.to_string(),
        "client.conf:4: unknown section <zeo> in the top level of client.conf"
    );
}

#[test]
fn docs_client_example_parses() {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md"),
    )
    .unwrap();
    let after = doc.split("### Client example").nth(1).unwrap();
    // The fenced block, without its info string (e.g. `text`).
    let fenced = after.split("```").nth(1).unwrap();
    let block = fenced.split_once('\n').map_or(fenced, |(_, body)| body);
    let c = ClientConfig::from_str(block, "configuration.md").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c.servers,
        [tcp("zeo1.example.com", 8100), tcp("zeo2.example.com", 8100)]
    );
    assert_eq!(c.cache_size, ByteSize(200 << 20));
    assert_eq!(
        c.persistent_cache_path(),
        Some("/var/cache/zeo/app-1.zec".into())
    );
    assert_eq!(c.database.as_ref().map(|d| d.cache_size), Some(10000));
}
