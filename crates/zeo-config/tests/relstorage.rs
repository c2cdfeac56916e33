//! `<relstorage>` sections as RelStorage-backed `runzeo` and `zodbconvert`
//! files write them: keys, defaults, unsupported keys by name, refused
//! adapters, and Python's own parser accepting the same files.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use zeo_config::{ConvertConfig, Error, ServerConfig, StorageKind};

use common::expect_err;

/// A RelStorage-backed `zeo.conf` as RelStorage's documentation lays one out,
/// with keys zeo-rs acts on and some it does not.
const RUNZEO_FILE: &str = "%import relstorage
<zeo>
  address 127.0.0.1:8100
</zeo>
<relstorage Main>
  name zodb-main
  keep-history false
  blob-dir /var/zeo/blobs
  shared-blob-dir true
  commit-lock-timeout 12
  create-schema false
  read-only true
  pack-gc false
  cache-local-mb 100
  poll-interval 0
  <postgresql>
    driver psycopg2
    dsn dbname='zodb' user='zodb' host='db.example.com' password='secret'
  </postgresql>
</relstorage>
";

fn relstorage(config: &ServerConfig) -> &zeo_config::RelStorageConfig {
    match &config.storages[0].kind {
        StorageKind::RelStorage(rs) => rs,
        other => panic!("not a relstorage: {other:?}"),
    }
}

#[test]
fn runzeo_file_keys_are_read() {
    let config = ServerConfig::from_str(RUNZEO_FILE, "zeo.conf").unwrap();
    assert_eq!(config.storages[0].name, "main");
    let rs = relstorage(&config);
    assert_eq!(rs.name.as_deref(), Some("zodb-main"));
    assert!(!rs.keep_history);
    assert_eq!(rs.blob_dir, Some(PathBuf::from("/var/zeo/blobs")));
    assert!(rs.shared_blob_dir && rs.read_only && !rs.create_schema && !rs.pack_gc);
    assert_eq!(rs.commit_lock_timeout, Duration::from_secs(12));
    assert_eq!(
        rs.dsn,
        "dbname='zodb' user='zodb' host='db.example.com' password='secret'"
    );
}

#[test]
fn unsupported_keys_are_named() {
    let config = ServerConfig::from_str(RUNZEO_FILE, "zeo.conf").unwrap();
    let named: Vec<_> = config
        .unsupported
        .iter()
        .map(|u| (u.section.as_str(), u.setting.as_str(), u.at.line))
        .collect();
    assert_eq!(
        named,
        [
            ("<relstorage main>", "cache-local-mb", 14),
            ("<relstorage main>", "poll-interval", 15),
            ("<postgresql>", "driver", 17),
        ]
    );
}

#[test]
fn defaults_are_relstorages() {
    let config = ServerConfig::from_str(
        "%import relstorage\n<zeo>\n address 1\n</zeo>\n<relstorage>\n<postgresql>\n</postgresql>\n</relstorage>\n",
        "zeo.conf",
    )
    .unwrap();
    assert_eq!(config.storages[0].name, "1");
    assert_eq!(relstorage(&config), &zeo_config::RelStorageConfig::new(""));
    assert!(config.unsupported.is_empty());
}

#[test]
fn other_adapters_are_refused_by_name() {
    for adapter in ["mysql", "oracle", "sqlite3"] {
        let text = format!(
            "%import relstorage\n<zeo>\n address 1\n</zeo>\n<relstorage>\n<{adapter}>\n</{adapter}>\n</relstorage>\n"
        );
        let err = expect_err(ServerConfig::from_str(&text, "zeo.conf"));
        assert!(
            matches!(&err, Error::UnsupportedSection { section_type, .. } if section_type == adapter),
            "{err}"
        );
        assert!(err.to_string().starts_with("zeo.conf:6:"), "{err}");
        assert!(err.to_string().contains("PostgreSQL only"), "{err}");
    }
}

#[test]
fn malformed_sections_are_refused() {
    let z = "%import relstorage\n<zeo>\n address 1\n</zeo>\n";
    let cases = [
        (format!("{z}<relstorage>\n</relstorage>\n"), "exactly one adapter"),
        (
            format!("{z}<relstorage>\n<postgresql>\n</postgresql>\n<postgresql>\n</postgresql>\n</relstorage>\n"),
            "exactly one adapter",
        ),
        (
            format!("{z}<relstorage>\n keep-histroy true\n<postgresql>\n</postgresql>\n</relstorage>\n"),
            "unknown key \"keep-histroy\"",
        ),
        (
            format!("{z}<relstorage>\n commit-lock-timeout soon\n<postgresql>\n</postgresql>\n</relstorage>\n"),
            "commit-lock-timeout",
        ),
        (
            format!("{z}<relstorage>\n<postgresql>\n host db\n</postgresql>\n</relstorage>\n"),
            "unknown key \"host\"",
        ),
        (
            "<zeo>\n address 1\n</zeo>\n<relstorage>\n<postgresql>\n</postgresql>\n</relstorage>\n"
                .to_owned(),
            "%import relstorage",
        ),
    ];
    for (text, expected) in cases {
        let err = expect_err(ServerConfig::from_str(&text, "zeo.conf"));
        assert!(err.to_string().contains(expected), "{text}\n→ {err}");
    }
}

#[test]
fn convert_file_needs_source_and_destination() {
    let ok = ConvertConfig::from_str(
        "%import relstorage\n<filestorage source>\n path Data.fs\n</filestorage>\n\
         <relstorage destination>\n<postgresql>\n dsn dbname=x\n</postgresql>\n</relstorage>\n",
        "convert.conf",
    )
    .unwrap();
    assert_eq!(ok.source.name, "source");
    assert!(matches!(ok.destination.kind, StorageKind::RelStorage(_)));

    let only_source = "<filestorage source>\n path Data.fs\n</filestorage>\n";
    let err = expect_err(ConvertConfig::from_str(only_source, "convert.conf"));
    assert!(err.to_string().contains("named destination"), "{err}");
    let stray = format!("{only_source}<mappingstorage other/>\n");
    let err = expect_err(ConvertConfig::from_str(&stray, "convert.conf"));
    assert!(err.to_string().starts_with("convert.conf:4:"), "{err}");
    let twice = format!("{only_source}<mappingstorage source/>\n");
    expect_err(ConvertConfig::from_str(&twice, "convert.conf"));
}

/// Python's `runzeo` (with RelStorage installed) reads the same file, so
/// an operator's existing file is accepted verbatim by both.
#[test]
fn python_runzeo_accepts_the_same_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zeo.conf");
    std::fs::write(&path, RUNZEO_FILE).unwrap();
    let script = "import sys\nfrom ZEO.runzeo import ZEOOptions\n\
                  o = ZEOOptions()\no.realize(['-C', sys.argv[1]])\n\
                  s = o.storages[0]\nprint(s.name, s.config.keep_history, s.config.adapter.config.dsn)\n";
    let output = zeo_testkit::run_with_timeout(
        Command::new(zeo_testkit::python_relstorage())
            .arg("-c")
            .arg(script)
            .arg(&path),
        Duration::from_secs(60),
    );
    let line = zeo_testkit::stdout_of(&output, "runzeo with RelStorage");
    let config = ServerConfig::from_path(&path).unwrap();
    let rs = relstorage(&config);
    assert_eq!(
        line.trim(),
        format!(
            "{} {} {}",
            config.storages[0].name,
            if rs.keep_history { "True" } else { "False" },
            rs.dsn
        )
    );
}

/// The fenced block after `heading` in docs/configuration.md.
fn doc_block(heading: &str) -> String {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md"),
    )
    .unwrap();
    let after = doc.split(heading).nth(1).unwrap();
    let fenced = after.split("```").nth(1).unwrap();
    fenced
        .split_once('\n')
        .map_or(fenced, |(_, body)| body)
        .to_owned()
}

#[test]
fn docs_examples_parse() {
    let server = format!(
        "<zeo>\n address 1\n</zeo>\n{}",
        doc_block("#### `<relstorage>`")
    );
    let config = ServerConfig::from_str(&server, "configuration.md").unwrap();
    assert!(relstorage(&config).dsn.contains("sslmode=verify-full"));
    let convert =
        ConvertConfig::from_str(&doc_block("### Conversion files"), "configuration.md").unwrap();
    assert!(matches!(convert.source.kind, StorageKind::File(_)));
    assert!(matches!(
        convert.destination.kind,
        StorageKind::RelStorage(_)
    ));
}

/// The configuration examples of docs/postgresql.md: a `zeo.conf` and a
/// conversion file.
#[test]
fn postgresql_guide_examples_parse() {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/postgresql.md"),
    )
    .unwrap();
    let blocks: Vec<String> = doc
        .split("```")
        .skip(1)
        .step_by(2)
        .filter_map(|fenced| fenced.strip_prefix("text\n"))
        .map(dedent)
        .filter(|body| body.starts_with("%import relstorage"))
        .collect();
    assert_eq!(blocks.len(), 3, "{blocks:#?}");
    let server = ServerConfig::from_str(&blocks[0], "postgresql.md").unwrap();
    assert!(relstorage(&server).keep_history);
    assert_eq!(server.storages[0].name, "main");
    let convert = ConvertConfig::from_str(&blocks[1], "postgresql.md").unwrap();
    assert!(matches!(convert.source.kind, StorageKind::File(_)));
    assert!(matches!(
        convert.destination.kind,
        StorageKind::RelStorage(_)
    ));
    let shared = ServerConfig::from_str(&blocks[2], "postgresql.md").unwrap();
    assert!(relstorage(&shared).shared_blob_dir);
}

/// Removes the indentation a block has inside a list item.
fn dedent(body: &str) -> String {
    let indent = body
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    body.lines()
        .map(|l| l.get(indent..).unwrap_or("").to_owned() + "\n")
        .collect()
}
