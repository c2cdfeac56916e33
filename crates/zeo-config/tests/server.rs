//! Server configuration files: documented examples, defaults, storages,
//! logging and every schema error with its file:line.

mod common;

use std::path::{Path, PathBuf};

use zeo_config::server::DEFAULT_MAX_MESSAGE_SIZE;
use zeo_config::{
    ByteSize, Error, Interval, LogHandler, LogLevel, LogPath, LogRotation, ServerConfig,
    SocketAddress, SslAuthenticate, StorageKind, DEFAULT_LOG_FORMAT,
};

use common::{expect_err, tcp};

fn server(text: &str) -> ServerConfig {
    ServerConfig::from_str(text, "zeo.conf").unwrap_or_else(|e| panic!("{e}"))
}

fn server_err(text: &str) -> Error {
    expect_err(ServerConfig::from_str(text, "zeo.conf"))
}

/// The example from the ZEO HOWTO (zeo-howto.txt), byte for byte.
const HOWTO_EXAMPLE: &str = "    <zeo>
    address zeo.example.com:8090
    monitor-address zeo.example.com:8091
    </zeo>

    <filestorage 1>
    path /var/tmp/Data.fs
    </filestorage>

    <eventlog>
    <logfile>
    path /var/tmp/zeo.log
    format %(asctime)s %(message)s
    </logfile>
    </eventlog>
";

#[test]
fn howto_example_verbatim() {
    let c = server(HOWTO_EXAMPLE);
    assert_eq!(c.zeo.address, tcp("zeo.example.com", 8090));
    assert_eq!(c.zeo.monitor_address, Some(tcp("zeo.example.com", 8091)));
    assert_eq!(c.storages.len(), 1);
    assert_eq!(c.storages[0].name, "1");
    let StorageKind::File(fs) = &c.storages[0].kind else {
        panic!("not a file storage")
    };
    assert_eq!(fs.path, PathBuf::from("/var/tmp/Data.fs"));
    let log = c.eventlog.as_ref().unwrap();
    assert_eq!(log.level, LogLevel::INFO);
    let [LogHandler::File(file)] = log.handlers.as_slice() else {
        panic!("{:?}", log.handlers)
    };
    assert_eq!(file.path, LogPath::File("/var/tmp/zeo.log".into()));
    assert_eq!(file.format, "%(asctime)s %(message)s");
    // The ZEO 3/4 monitor server is served too: nothing is unsupported.
    assert!(c.unsupported.is_empty(), "{:?}", c.unsupported);
}

/// A ZEO 5 configuration in the style of ZEO's docs/server.rst, with the
/// keys ZEO 5 added.
#[test]
fn realistic_zeo5_config() {
    let c = server(
        "
%define INSTANCE /srv/zeo

<zeo>
  address 127.0.0.1:8100
  read-only false
  invalidation-queue-size 1000
  invalidation-age 3600.5
  transaction-timeout 300
  pid-filename $INSTANCE/var/ZEO.pid
  client-conflict-resolution true
  msgpack true
  <ssl>
    certificate $INSTANCE/server.pem
    key $INSTANCE/server_key.pem
    authenticate $INSTANCE/client.pem
  </ssl>
</zeo>

<filestorage>
  path $INSTANCE/var/Data.fs
  blob-dir $INSTANCE/var/blobs
  pack-gc false
  quota 10GB
</filestorage>

<mappingstorage temp>
  name Scratch space
</mappingstorage>

<eventlog>
  level DEBUG
  <logfile>
    path STDOUT
    format %(levelname)s %(name)s %(message)s
  </logfile>
  <logfile>
    path $INSTANCE/log/zeo.log
    max-size 10MB
    old-files 5
    level warning
  </logfile>
</eventlog>
",
    );
    let z = &c.zeo;
    assert_eq!(z.address, tcp("127.0.0.1", 8100));
    assert!(!z.read_only);
    assert_eq!(z.invalidation_queue_size, 1000);
    assert_eq!(z.invalidation_age, Some(3600.5));
    assert_eq!(z.transaction_timeout, Some(Interval(300)));
    assert_eq!(z.pid_filename, Some("/srv/zeo/var/ZEO.pid".into()));
    assert!(z.client_conflict_resolution);
    assert_eq!(z.msgpack, Some(true));
    let ssl = z.ssl.as_ref().unwrap();
    assert_eq!(ssl.certificate, PathBuf::from("/srv/zeo/server.pem"));
    assert_eq!(ssl.key, Some("/srv/zeo/server_key.pem".into()));
    assert_eq!(
        ssl.authenticate,
        SslAuthenticate::Path("/srv/zeo/client.pem".into())
    );

    assert_eq!(c.storages.len(), 2);
    assert_eq!(c.storages[0].name, "1");
    let StorageKind::File(fs) = &c.storages[0].kind else {
        panic!()
    };
    assert_eq!(fs.blob_dir, Some("/srv/zeo/var/blobs".into()));
    assert!(!fs.pack_gc);
    assert!(fs.pack_keep_old);
    assert!(!fs.create);
    assert!(!fs.read_only);
    assert_eq!(fs.quota, Some(ByteSize(10 << 30)));
    assert_eq!(c.storages[1].name, "temp");
    let StorageKind::Mapping(m) = &c.storages[1].kind else {
        panic!()
    };
    assert_eq!(m.name, "Scratch space");
    assert!(c.storage("temp").is_some());
    assert!(c.storage("TEMP").is_none());

    let log = c.eventlog.as_ref().unwrap();
    assert_eq!(log.level, LogLevel::DEBUG);
    let [LogHandler::File(out), LogHandler::File(file)] = log.handlers.as_slice() else {
        panic!()
    };
    assert_eq!(out.path, LogPath::Stdout);
    assert_eq!(out.level, LogLevel::NOTSET);
    assert_eq!(out.rotation, None);
    assert_eq!(file.level, LogLevel::WARNING);
    assert_eq!(
        file.rotation,
        Some(LogRotation::Size {
            max_size: ByteSize(10 << 20),
            old_files: 5
        })
    );
    assert_eq!(file.format, DEFAULT_LOG_FORMAT);
    assert!(file.format.contains('\n'));
    let ignored: Vec<_> = c.unsupported.iter().map(|u| u.setting.as_str()).collect();
    assert_eq!(ignored, ["client-conflict-resolution", "quota"]);
}

#[test]
fn native_conflict_resolution_can_be_turned_off() {
    let c = server(
        "<zeo>\naddress 8100\nnative-conflict-resolution false\n</zeo>\n<mappingstorage/>\n",
    );
    assert!(!c.zeo.native_conflict_resolution);
    assert!(c.unsupported.is_empty(), "{:?}", c.unsupported);
}

#[test]
fn zeo_defaults_are_zeos() {
    let c = server("<zeo>\naddress 8100\n</zeo>\n<mappingstorage/>\n");
    let z = &c.zeo;
    assert_eq!(z.address, tcp("", 8100));
    assert!(!z.read_only);
    assert_eq!(z.invalidation_queue_size, 100);
    assert_eq!(z.invalidation_age, None);
    assert_eq!(z.transaction_timeout, None);
    assert_eq!(z.pid_filename, None);
    assert!(!z.client_conflict_resolution);
    assert!(z.native_conflict_resolution);
    assert_eq!(z.msgpack, None);
    assert_eq!(z.ssl, None);
    assert_eq!(z.max_message_size, DEFAULT_MAX_MESSAGE_SIZE);
    assert_eq!(z.monitor_address, None);
    assert!(!z.drop_cache_rather_verify);
    assert_eq!(c.eventlog, None);
    assert_eq!(c.runner, None);
    assert_eq!(*z, zeo_config::ZeoConfig::new(tcp("", 8100)));
    let StorageKind::Mapping(m) = &c.storages[0].kind else {
        panic!()
    };
    assert_eq!(m.name, "Mapping Storage");
    let file = server("<zeo>\naddress 1\n</zeo>\n<filestorage>\npath Data.fs\n</filestorage>\n");
    let StorageKind::File(fs) = &file.storages[0].kind else {
        panic!()
    };
    assert_eq!(*fs, zeo_config::FileStorageConfig::new("Data.fs"));
}

#[test]
fn ours_and_legacy_zeo_keys() {
    let c = server(
        "<zeo>
  address /var/run/zeo.sock
  max-message-size 64MB
  transaction-timeout 5m
  read-only yes
  authentication-protocol digest
  authentication-database /etc/zeo/passwd
  authentication-realm zeo
  drop-cache-rather-verify on
</zeo>
<filestorage main>
  path /d/Data.fs
  blob-dir
  packer ZODB.FileStorage.FileStoragePacker.FileStoragePacker
</filestorage>
",
    );
    assert_eq!(
        c.zeo.address,
        SocketAddress::Unix("/var/run/zeo.sock".into())
    );
    assert_eq!(c.zeo.max_message_size, ByteSize(64 << 20));
    assert_eq!(c.zeo.transaction_timeout, Some(Interval(300)));
    assert!(c.zeo.read_only);
    assert_eq!(c.zeo.authentication_protocol.as_deref(), Some("digest"));
    assert_eq!(
        c.zeo.authentication_database,
        Some("/etc/zeo/passwd".into())
    );
    assert_eq!(c.zeo.authentication_realm.as_deref(), Some("zeo"));
    assert!(c.zeo.drop_cache_rather_verify);
    let StorageKind::File(fs) = &c.storages[0].kind else {
        panic!()
    };
    // An empty blob-dir means no blob support, as in ZODB.
    assert_eq!(fs.blob_dir, None);
    assert!(fs.packer.is_some());
    let reported: Vec<_> = c
        .unsupported
        .iter()
        .map(|u| (u.setting.as_str(), u.at.line))
        .collect();
    assert_eq!(reported, [("drop-cache-rather-verify", 9), ("packer", 14),]);
}

#[test]
fn ipv6_and_case_insensitive_keys() {
    let c =
        server("<ZEO>\n  ADDRESS [::1]:8100\n  Read-Only TRUE\n</Zeo>\n<MappingStorage Memory/>\n");
    assert_eq!(c.zeo.address, tcp("::1", 8100));
    assert!(c.zeo.read_only);
    assert_eq!(c.storages[0].name, "memory");
}

#[test]
fn runner_section_is_checked_and_reported() {
    let c = server(
        "<zeo>\naddress 1\n</zeo>\n<mappingstorage/>\n<runner>\n  program runzeo\n  daemon true\n  <eventlog>\n    <logfile>\n      path /tmp/r.log\n    </logfile>\n  </eventlog>\n</runner>\n",
    );
    assert!(c.runner.is_some());
    assert_eq!(c.unsupported.len(), 1);
    assert_eq!(c.unsupported[0].setting, "<runner>");
    let e = server_err(
        "<zeo>\naddress 1\n</zeo>\n<mappingstorage/>\n<runner>\n  colour blue\n</runner>\n",
    );
    assert_eq!(
        e.to_string(),
        "zeo.conf:6: unknown key \"colour\" in <runner>"
    );
}

#[test]
fn other_log_handlers_are_reported() {
    let c = server(
        "<zeo>\naddress 1\n</zeo>\n<mappingstorage/>\n<eventlog>\n<syslog>\nfacility local0\n</syslog>\n</eventlog>\n",
    );
    let log = c.eventlog.unwrap();
    assert!(matches!(&log.handlers[0], LogHandler::Other(s) if s.type_name == "syslog"));
    assert_eq!(c.unsupported[0].setting, "<syslog>");
    assert_eq!(c.unsupported[0].at.line, 6);
}

#[test]
fn storage_naming_rules() {
    let two_unnamed = "<zeo>\naddress 1\n</zeo>\n<mappingstorage>\n</mappingstorage>\n<filestorage>\npath x\n</filestorage>\n";
    let e = server_err(two_unnamed);
    assert!(matches!(e, Error::Conflict { .. }), "{e}");
    assert!(
        e.to_string()
            .starts_with("zeo.conf:6: no more than one storage may be unnamed"),
        "{e}"
    );

    let unnamed_and_1 = "<zeo>\naddress 1\n</zeo>\n<mappingstorage/>\n<mappingstorage 1/>\n";
    let e = server_err(unnamed_and_1);
    assert_eq!(
        e.to_string(),
        "zeo.conf:5: can't have an unnamed storage and a storage named 1"
    );

    // ZConfig folds names, so these collide.
    let e = server_err(
        "<zeo>\naddress 1\n</zeo>\n<mappingstorage a/>\n<filestorage A>\npath x\n</filestorage>\n",
    );
    assert!(matches!(e, Error::DuplicateSectionName { .. }), "{e}");
    assert!(e.to_string().starts_with("zeo.conf:5:"), "{e}");
}

#[test]
fn unknown_key() {
    let e = server_err("<zeo>\n  address 1\n  adress 2\n</zeo>\n<mappingstorage/>\n");
    assert_eq!(e.to_string(), "zeo.conf:3: unknown key \"adress\" in <zeo>");
    // server-sync is a client setting; ZEO's <zeo> has no such key.
    let e = server_err("<zeo>\n  address 1\n  server-sync true\n</zeo>\n<mappingstorage/>\n");
    assert!(matches!(e, Error::UnknownKey { .. }), "{e}");
    let e = server_err("<zeo>\naddress 1\n</zeo>\n<filestorage>\npath x\nsize 1\n</filestorage>\n");
    assert_eq!(
        e.to_string(),
        "zeo.conf:6: unknown key \"size\" in <filestorage>"
    );
    let e = server_err("top 1\n<zeo>\naddress 1\n</zeo>\n<mappingstorage/>\n");
    assert!(
        e.to_string().starts_with("zeo.conf:1: unknown key \"top\""),
        "{e}"
    );
}

#[test]
fn unknown_section() {
    let e = server_err("<zeo>\n  address 1\n</zeo>\n<mappingstorage/>\n<zoe>\n</zoe>\n");
    assert_eq!(
        e.to_string(),
        "zeo.conf:5: unknown section <zoe> in the top level of zeo.conf"
    );
    let e = server_err("<zeo>\n  address 1\n  <tls>\n  </tls>\n</zeo>\n<mappingstorage/>\n");
    assert_eq!(e.to_string(), "zeo.conf:3: unknown section <tls> in <zeo>");
    let e = server_err("<zeo>\naddress 1\n</zeo>\n<demostorage>\n</demostorage>\n");
    assert!(matches!(e, Error::UnsupportedSection { .. }), "{e}");
    assert!(
        e.to_string()
            .starts_with("zeo.conf:4: <demostorage> is not supported"),
        "{e}"
    );
}

#[test]
fn duplicates() {
    let e = server_err("<zeo>\n  address 1\n  address 2\n</zeo>\n<mappingstorage/>\n");
    assert_eq!(
        e.to_string(),
        "zeo.conf:3: key \"address\" in <zeo> given twice (first at zeo.conf:2)"
    );
    let e = server_err("<zeo>\naddress 1\n</zeo>\n<zeo>\naddress 2\n</zeo>\n<mappingstorage/>\n");
    assert!(matches!(e, Error::DuplicateSection { .. }), "{e}");
    assert!(e.to_string().starts_with("zeo.conf:4:"), "{e}");
}

#[test]
fn missing_pieces() {
    let e = server_err("<mappingstorage/>\n");
    assert!(matches!(e, Error::MissingSection { .. }), "{e}");
    assert!(
        e.to_string().starts_with("zeo.conf: a <zeo> section"),
        "{e}"
    );
    let e = server_err("<zeo>\naddress 1\n</zeo>\n");
    assert!(e.to_string().contains("no storage section"), "{e}");
    let e = server_err("\n<zeo>\nread-only true\n</zeo>\n<mappingstorage/>\n");
    assert_eq!(
        e.to_string(),
        "zeo.conf:2: <zeo> is missing the required key \"address\""
    );
    let e =
        server_err("<zeo>\naddress 1\n</zeo>\n<filestorage x>\nread-only true\n</filestorage>\n");
    assert_eq!(
        e.to_string(),
        "zeo.conf:4: <filestorage x> is missing the required key \"path\""
    );
    let e =
        server_err("<zeo>\naddress 1\n<ssl>\ncertificate c\n</ssl>\n</zeo>\n<mappingstorage/>\n");
    assert!(
        e.to_string()
            .starts_with("zeo.conf:3: <ssl> is missing the required key \"authenticate\""),
        "{e}"
    );
}

#[test]
fn resource_limit_keys_default_and_parse() {
    use zeo_config::server::*;
    let z = server("<zeo>\naddress 1\n</zeo>\n<mappingstorage/>\n").zeo;
    assert_eq!(z.reply_backlog_pause, ByteSize(4 << 20));
    assert_eq!(z.reply_backlog_pause, DEFAULT_REPLY_BACKLOG_PAUSE);
    assert_eq!(z.max_client_backlog, ByteSize(64 << 20));
    assert_eq!(z.max_total_backlog, ByteSize(256 << 20));
    assert_eq!(z.max_connections, 1024);
    assert_eq!(z.max_connections_per_address, 256);
    assert_eq!(z.max_transaction_size, None);
    assert_eq!(z.login_timeout, Interval(60));
    assert!(!z.public_status);

    let z = server(
        "<zeo>
  address 1
  reply-backlog-pause 1MB
  max-client-backlog 16MB
  max-total-backlog 0
  max-connections 10
  max-connections-per-address 0
  max-transaction-size 2GB
  login-timeout 2m
  public-status yes
</zeo>
<mappingstorage/>
",
    )
    .zeo;
    assert_eq!(z.reply_backlog_pause, ByteSize(1 << 20));
    assert_eq!(z.max_client_backlog, ByteSize(16 << 20));
    assert_eq!(z.max_total_backlog, ByteSize(0));
    assert_eq!(z.max_connections, 10);
    assert_eq!(z.max_connections_per_address, 0);
    assert_eq!(z.max_transaction_size, Some(ByteSize(2 << 30)));
    assert_eq!(z.login_timeout, Interval(120));
    assert!(z.public_status);

    // Zero means "no cap" for the transaction size and "off" for the
    // login timeout.
    let z = server(
        "<zeo>\naddress 1\nmax-transaction-size 0\nlogin-timeout 0\n</zeo>\n<mappingstorage/>\n",
    )
    .zeo;
    assert_eq!(z.max_transaction_size, None);
    assert_eq!(z.login_timeout, Interval(0));
}

#[test]
fn bad_values() {
    let cases = [
        ("address host:99999", "port 99999 is out of range"),
        ("address 1\ninvalidation-queue-size many", "not an integer"),
        (
            "address 1\ninvalidation-queue-size -5",
            "must not be negative",
        ),
        ("address 1\nread-only maybe", "not a boolean"),
        ("address 1\ntransaction-timeout 1.5", "not a time interval"),
        ("address 1\ninvalidation-age -1", "non-negative"),
        ("address 1\nmax-message-size 64XB", "not a byte size"),
        ("address 1\nmax-message-size 1KB", "must be between"),
        ("address 1\nmax-message-size 8GB", "must be between"),
        ("address 1\nmonitor-address [::1", "unterminated"),
        ("address 1\nreply-backlog-pause 0", "more than 0"),
        ("address 1\nmax-client-backlog 0", "more than 0"),
        ("address 1\nmax-total-backlog lots", "not a byte size"),
        ("address 1\nmax-connections -1", "must not be negative"),
        ("address 1\nmax-connections-per-address x", "not an integer"),
        ("address 1\nmax-transaction-size 1TB", "not a byte size"),
        ("address 1\nlogin-timeout 1.5", "not a time interval"),
        ("address 1\npublic-status perhaps", "not a boolean"),
    ];
    for (body, reason) in cases {
        let text = format!("<zeo>\n{body}\n</zeo>\n<mappingstorage/>\n");
        let e = server_err(&text);
        let line = 1 + body.lines().count();
        assert!(matches!(e, Error::InvalidValue { .. }), "{body}: {e}");
        assert!(
            e.to_string()
                .starts_with(&format!("zeo.conf:{line}: bad value")),
            "{e}"
        );
        assert!(e.to_string().contains(reason), "{body}: {e}");
    }
    let e = server_err(
        "<zeo>\naddress 1\n</zeo>\n<filestorage>\npath x\nquota 1.5GB\n</filestorage>\n",
    );
    assert_eq!(
        e.to_string(),
        "zeo.conf:6: bad value \"1.5GB\" for \"quota\": not a byte size (a whole number, optionally followed by KB, MB or GB)"
    );
    let e = server_err(
        "<zeo>\naddress 1\n</zeo>\n<mappingstorage/>\n<eventlog>\nlevel loud\n</eventlog>\n",
    );
    assert!(
        e.to_string()
            .starts_with("zeo.conf:6: bad value \"loud\" for \"level\""),
        "{e}"
    );
}

#[test]
fn logfile_consistency_rules() {
    let wrap = |body: &str| {
        format!("<zeo>\naddress 1\n</zeo>\n<mappingstorage/>\n<eventlog>\n<logfile>\n{body}\n</logfile>\n</eventlog>\n")
    };
    for (body, msg) in [
        ("path STDOUT\nmax-size 1MB", "cannot rotate STDOUT"),
        ("path STDERR\ndelay true", "cannot delay opening STDERR"),
        ("path STDERR\nencoding utf-8", "cannot specify encoding"),
        ("path x.log\nmax-size 1MB", "old-files must be set"),
        (
            "path x.log\nold-files 3\nwhen D\nmax-size 1MB",
            "both max-size and when",
        ),
        ("path x.log\nold-files 3", "max-size or when must be set"),
        ("format x", "is missing the required key \"path\""),
    ] {
        let e = server_err(&wrap(body));
        assert!(e.to_string().starts_with("zeo.conf:6:"), "{e}");
        assert!(e.to_string().contains(msg), "{body}: {e}");
    }
    let c = server(&wrap(
        "path x.log\nold-files 7\nwhen midnight\nformat a\\tb\\nc\nstyle FORMAT",
    ));
    let Some(LogHandler::File(f)) = c.eventlog.as_ref().and_then(|l| l.handlers.first()) else {
        panic!()
    };
    assert_eq!(
        f.rotation,
        Some(LogRotation::Timed {
            when: "midnight".into(),
            interval: 1,
            old_files: 7
        })
    );
    assert_eq!(f.format, "a\tb\nc");
    assert_eq!(f.style, zeo_config::LogFormatStyle::Format);
}

#[test]
fn from_path_and_include() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("storages.conf"),
        "<filestorage 1>\n  path $base/Data.fs\n</filestorage>\n",
    )
    .unwrap();
    let main = dir.path().join("zeo.conf");
    std::fs::write(
        &main,
        "%define base /data\n<zeo>\n  address 8100\n</zeo>\n%include storages.conf\n",
    )
    .unwrap();
    let c = ServerConfig::from_path(&main).unwrap();
    assert_eq!(c.source, main.to_string_lossy());
    let StorageKind::File(fs) = &c.storages[0].kind else {
        panic!()
    };
    assert_eq!(fs.path, Path::new("/data/Data.fs"));
    assert!(c.storages[0].location.file.ends_with("storages.conf"));
}

#[test]
fn docs_example_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/examples/zeo.conf");
    let c = ServerConfig::from_path(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.zeo.address, tcp("", 8100));
    assert_eq!(c.zeo.transaction_timeout, Some(Interval(300)));
    assert_eq!(c.zeo.msgpack, Some(false));
    assert_eq!(c.zeo.pid_filename, Some("/var/lib/zeo/zeo.pid".into()));
    let names: Vec<_> = c.storages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["1", "scratch"]);
    let StorageKind::File(fs) = &c.storages[0].kind else {
        panic!()
    };
    assert_eq!(fs.path, Path::new("/var/lib/zeo/Data.fs"));
    assert_eq!(fs.blob_dir, Some("/var/lib/zeo/blobs".into()));
    assert_eq!(c.eventlog.as_ref().map(|l| l.handlers.len()), Some(2));
    assert!(c.unsupported.is_empty(), "{:?}", c.unsupported);
}

/// `<blobstorage>` as ZEO's own tests write it, and what it refuses.
#[test]
fn blobstorage_wraps_one_filestorage() {
    let c = server(
        "<zeo>\naddress 127.0.0.1:0\n</zeo>\n<blobstorage 1>\n  blob-dir blobs\n  \
         <filestorage 2>\n    path Data.fs\n    pack-keep-old false\n  </filestorage>\n\
         </blobstorage>\n",
    );
    let StorageKind::Blob(blob) = &c.storages[0].kind else {
        panic!("{:?}", c.storages[0].kind)
    };
    assert_eq!(c.storages[0].name, "1");
    assert_eq!(blob.blob_dir, Path::new("blobs"));
    let StorageKind::File(fs) = &*blob.base else {
        panic!("{:?}", blob.base)
    };
    assert_eq!(fs.path, Path::new("Data.fs"));
    assert!(!fs.pack_keep_old);

    for (text, says) in [
        (
            "<blobstorage>\n  blob-dir b\n</blobstorage>\n",
            "exactly one storage",
        ),
        (
            "<blobstorage>\n  <filestorage>\n path D.fs\n </filestorage>\n</blobstorage>\n",
            "blob-dir",
        ),
        (
            "<blobstorage>\n  blob-dir b\n  <filestorage>\n path D.fs\n blob-dir c\n  \
             </filestorage>\n</blobstorage>\n",
            "already has a blob-dir",
        ),
    ] {
        let err = server_err(&format!("<zeo>\naddress 127.0.0.1:0\n</zeo>\n{text}"));
        assert!(err.to_string().contains(says), "{err}");
    }
}
