//! Feeds the same server configuration files to Python ZEO 5's `runzeo`
//! option parser and to ours, and checks that both accept or reject each
//! one and agree on the storage names and listening address.
//!
//! Needs the ZEO 5 venv (`cargo xtask test` creates it); fails without it.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use zeo_config::{ServerConfig, SocketAddress};
use zeo_testkit::serde_json::{self, Value};

/// Loads each file given on the command line with ZEO's own option parser
/// and prints one JSON line per file.
const LOAD_WITH_RUNZEO: &str = r#"
import sys, json
from ZEO.runzeo import ZEOOptions

def refuse(msg):
    raise ValueError(msg)

for path in sys.argv[1:]:
    options = ZEOOptions()
    options.usage = refuse
    try:
        options.realize(['-C', path])
        address = options.address
        if isinstance(address, tuple):
            address = [address[0], address[1]]
        print(json.dumps({'ok': True,
                          'storages': [s.name for s in options.storages],
                          'address': address}))
    except BaseException as e:
        print(json.dumps({'ok': False, 'error': str(e)}))
"#;

fn cases(dir: &Path) -> Vec<(&'static str, String)> {
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/examples/zeo.conf"),
    )
    .unwrap()
    .replace(
        "%define INSTANCE /var/lib/zeo",
        &format!("%define INSTANCE {}", dir.display()),
    );
    let z = "<zeo>\n  address 127.0.0.1:8100\n</zeo>\n";
    let v = |s: &str| s.to_string();
    vec![
        ("docs example", example),
        ("unnamed mapping storage", format!("{z}<mappingstorage>\n</mappingstorage>\n")),
        (
            "names fold to lower case",
            format!("{z}<filestorage Main>\n  path Data.fs\n</filestorage>\n<mappingstorage/>\n"),
        ),
        ("two unnamed storages", format!("{z}<mappingstorage/>\n<mappingstorage/>\n")),
        ("unnamed and 1", format!("{z}<mappingstorage/>\n<mappingstorage 1/>\n")),
        ("colliding names", format!("{z}<mappingstorage a/>\n<mappingstorage A/>\n")),
        ("no storage", v(z)),
        ("no zeo section", v("<mappingstorage/>\n")),
        ("no address", v("<zeo>\n  read-only true\n</zeo>\n<mappingstorage/>\n")),
        ("unknown key", v("<zeo>\n  address 1\n  adress 2\n</zeo>\n<mappingstorage/>\n")),
        ("duplicate key", v("<zeo>\n  address 1\n  address 2\n</zeo>\n<mappingstorage/>\n")),
        ("unknown section", format!("{z}<mappingstorage/>\n<zoe>\n</zoe>\n")),
        ("unclosed section", format!("{z}<mappingstorage>\n")),
        ("mismatched end", format!("{z}<mappingstorage>\n</filestorage>\n")),
        ("bad boolean", v("<zeo>\n  address 1\n  read-only maybe\n</zeo>\n<mappingstorage/>\n")),
        (
            "bad byte size",
            format!("{z}<filestorage>\n  path Data.fs\n  quota 1.5GB\n</filestorage>\n"),
        ),
        ("ipv6 address", v("<zeo>\n  address [::1]:8100\n</zeo>\n<mappingstorage/>\n")),
        ("port only", v("<zeo>\n  address 8100\n</zeo>\n<mappingstorage/>\n")),
        (
            "case-insensitive keys and types",
            v("<ZEO>\n  ADDRESS :8100\n  Read-Only ON\n</Zeo>\n<MappingStorage/>\n"),
        ),
        (
            "define and substitution",
            v("%define PORT 8100\n<zeo>\n  address 127.0.0.1:${port}\n</zeo>\n<mappingstorage $$x>\n</mappingstorage>\n"),
        ),
        ("undefined name", v("<zeo>\n  address $nope\n</zeo>\n<mappingstorage/>\n")),
        (
            "all zeo 5 keys",
            v("<zeo>\n  address 1\n  read-only false\n  invalidation-queue-size 7\n  invalidation-age 1.5\n  transaction-timeout 30\n  client-conflict-resolution true\n  msgpack true\n</zeo>\n<mappingstorage/>\n"),
        ),
        (
            "eventlog",
            format!("{z}<mappingstorage/>\n<eventlog>\n  level debug\n  <logfile>\n    path STDERR\n    format %(message)s\n  </logfile>\n</eventlog>\n"),
        ),
        (
            "rotating stdout",
            format!("{z}<mappingstorage/>\n<eventlog>\n  <logfile>\n    path STDOUT\n    max-size 1MB\n    old-files 2\n  </logfile>\n</eventlog>\n"),
        ),
    ]
}

#[test]
fn server_configs_agree_with_runzeo() {
    let python = zeo_testkit::python5();
    let dir = zeo_testkit::TempDir::new().unwrap();
    let cases = cases(dir.path());
    let mut paths = Vec::new();
    for (i, (_, text)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("case{i}.conf"));
        std::fs::write(&path, text).unwrap();
        paths.push(path);
    }
    let mut cmd = Command::new(&python);
    cmd.arg("-c")
        .arg(LOAD_WITH_RUNZEO)
        .args(&paths)
        .current_dir(dir.path())
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let out = zeo_testkit::run_with_timeout(&mut cmd, Duration::from_secs(120));
    let stdout = zeo_testkit::stdout_of(&out, "runzeo option parsing");
    let answers: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(answers.len(), cases.len(), "{stdout}");

    for (((name, _), path), python) in cases.iter().zip(&paths).zip(&answers) {
        let ours = ServerConfig::from_path(path);
        let python_ok = python["ok"] == Value::Bool(true);
        match (&ours, python_ok) {
            (Ok(config), true) => {
                let names: Vec<Value> = config
                    .storages
                    .iter()
                    .map(|s| Value::String(s.name.clone()))
                    .collect();
                assert_eq!(python["storages"], Value::Array(names), "{name}");
                let address = match &config.zeo.address {
                    SocketAddress::Tcp { host, port } => serde_json::json!([host, port]),
                    SocketAddress::Unix(p) => serde_json::json!(p.to_string_lossy()),
                };
                assert_eq!(python["address"], address, "{name}");
            }
            (Err(_), false) => {}
            (Ok(_), false) => panic!("{name}: we accept what runzeo rejects: {}", python["error"]),
            (Err(e), true) => panic!("{name}: we reject what runzeo accepts: {e}"),
        }
    }
}
