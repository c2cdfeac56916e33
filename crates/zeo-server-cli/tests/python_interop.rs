//! Replacing `runzeo` with `zeo-server`: unmodified Python ZODB applications
//! (ZEO 6.2 + ZODB 6 and ZEO 5.4.1 + ZODB 5) keep working against our
//! binary, over both wire encodings (`Z5` pickle and `M5` msgpack), and the
//! Data.fs it leaves behind is one Python's FileStorage reads.
//!
//! Every scenario is a script in `tests/python/zeo_interop/` that checks its
//! own invariants, exits non-zero naming the one that failed, and otherwise
//! prints a JSON report whose key facts are asserted here too. Each test
//! runs one server per encoding (the two in parallel) and both Python
//! clients against it in turn; at the end the server is stopped with
//! SIGTERM and its file is checked by our `check` and by Python ZODB.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use zeo_testkit::serde_json::{self, Value};
use zeo_testkit::TempDir;

/// How long one scenario script may run (they take a few seconds).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(90);

/// The server's wire encoding.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Encoding {
    /// `Z5`: pickle, the default.
    Pickle,
    /// `M5`: msgpack (`--msgpack`).
    Msgpack,
}

impl Encoding {
    const ALL: [Encoding; 2] = [Encoding::Pickle, Encoding::Msgpack];

    /// The protocol the client reports after the handshake.
    fn protocol(self) -> &'static str {
        match self {
            Encoding::Pickle => "Z5",
            Encoding::Msgpack => "M5",
        }
    }

    fn args(self) -> &'static [&'static str] {
        match self {
            Encoding::Pickle => &[],
            Encoding::Msgpack => &["--msgpack"],
        }
    }
}

/// A Python ZEO client generation.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Client {
    Zeo6,
    Zeo5,
}

impl Client {
    const ALL: [Client; 2] = [Client::Zeo6, Client::Zeo5];

    fn python(self) -> PathBuf {
        match self {
            Client::Zeo6 => zeo_testkit::python6(),
            Client::Zeo5 => zeo_testkit::python5(),
        }
    }

    /// Namespaces a run's root keys, so both clients share one server.
    fn tag(self) -> &'static str {
        match self {
            Client::Zeo6 => "zeo6",
            Client::Zeo5 => "zeo5",
        }
    }
}

/// Runs `f` for both encodings, in parallel (the scripts mostly wait on
/// each other and on the server), re-raising the first failure.
fn each_encoding(f: impl Fn(Encoding) + Sync) {
    let f = &f;
    std::thread::scope(|scope| {
        let runs: Vec<_> = Encoding::ALL
            .map(|encoding| (encoding, scope.spawn(move || f(encoding))))
            .into_iter()
            .collect();
        for (encoding, run) in runs {
            if let Err(panic) = run.join() {
                eprintln!("failed with the {encoding:?} encoding");
                std::panic::resume_unwind(panic);
            }
        }
    });
}

/// Runs `tests/python/zeo_interop/NAME` and returns the JSON object it
/// printed last; panics with both output streams when it failed.
fn run_script(client: Client, name: &str, args: &[&str], cwd: &Path, what: &str) -> Value {
    let script = zeo_testkit::script(&format!("zeo_interop/{name}"));
    let out =
        zeo_testkit::run_python_with_timeout(&client.python(), &script, args, cwd, SCRIPT_TIMEOUT);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{name} ({what}, {client:?}) failed ({})\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        out.status
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| {
        panic!("{name} ({what}, {client:?}) printed no JSON report ({e}):\n{stdout}\n{stderr}")
    })
}

/// Starts `zeo-server` in `dir` serving `Data.fs` on `address`.
fn start(dir: &Path, encoding: Encoding, address: &str, extra: &[&str]) -> ServerProcess {
    let mut args = vec!["-a", address, "-f", "Data.fs"];
    args.extend_from_slice(encoding.args());
    args.extend_from_slice(extra);
    ServerProcess::start(dir, &args)
}

/// Stops a server with SIGTERM; it must exit 0.
fn stop(server: ServerProcess) {
    server.signal(libc::SIGTERM);
    let (status, stderr) = server.wait();
    assert!(
        status.success(),
        "zeo-server exited with {status}:\n{stderr}"
    );
}

/// One test's server for one encoding, in its own directory.
struct Served {
    dir: TempDir,
    server: ServerProcess,
    encoding: Encoding,
}

impl Served {
    fn new(encoding: Encoding, extra: &[&str]) -> Self {
        let dir = TempDir::new().unwrap();
        let server = start(dir.path(), encoding, "127.0.0.1:0", extra);
        Served {
            dir,
            server,
            encoding,
        }
    }

    fn port(&self) -> String {
        self.server.port().to_string()
    }

    /// Runs a scenario script as `client` with `PORT TAG extra...`; checks
    /// that it spoke this server's encoding.
    fn run(&self, client: Client, name: &str, extra: &[&str]) -> Value {
        let port = self.port();
        let mut args = vec![port.as_str(), client.tag()];
        args.extend_from_slice(extra);
        let what = format!("{:?} server", self.encoding);
        let report = run_script(client, name, &args, self.dir.path(), &what);
        assert_eq!(
            report["protocol"],
            self.encoding.protocol(),
            "{name} ({client:?}) negotiated the wrong protocol: {report}"
        );
        report
    }

    /// Stops the server (it must let go of the file) and starts a new one
    /// on the same file with `extra` options.
    fn restart(self, extra: &[&str]) -> Self {
        stop(self.server);
        let server = start(self.dir.path(), self.encoding, "127.0.0.1:0", extra);
        Served { server, ..self }
    }

    /// Stops the server and checks its Data.fs (see [`verify_file`]).
    /// Returns Python's report and the directory, which lives as long as
    /// the caller keeps it.
    fn finish(self) -> (Value, TempDir) {
        stop(self.server);
        let report = verify_file(self.dir.path(), "Data.fs", self.encoding);
        (report, self.dir)
    }
}

/// Checks a Data.fs the server wrote and no longer has open: our `check`
/// accepts it, and Python ZODB's fstest check and a read-only FileStorage
/// (loading our `.index`) read it, the root and every reachable object.
/// The ZEO 5 / ZODB 5 venv checks pickle servers' files and the ZODB 6 one
/// msgpack servers', so both ZODB generations read our files. Returns
/// Python's report.
fn verify_file(dir: &Path, file: &str, encoding: Encoding) -> Value {
    let check = std::process::Command::new(binary())
        .args(["check", file])
        .current_dir(dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&check.stdout).into_owned();
    assert!(check.status.success(), "zeo-server check: {check:?}");
    let client = match encoding {
        Encoding::Pickle => Client::Zeo5,
        Encoding::Msgpack => Client::Zeo6,
    };
    let report = run_script(client, "verify_file.py", &[file], dir, "file check");
    assert_eq!(
        report["index"], "loaded",
        "the server left no usable .index: {report}"
    );
    let last = report["last_transaction"].as_str().unwrap();
    assert!(
        text.contains(last),
        "our check and Python disagree on the last transaction ({last}): {text}"
    );
    report
}

/// Scenario 1: two clients commit PersistentMappings and an OOBTree of a
/// few thousand keys, read each other's data, and see invalidations.
#[test]
fn two_clients_share_data_and_see_invalidations() {
    each_encoding(|encoding| {
        let served = Served::new(encoding, &[]);
        for client in Client::ALL {
            let report = served.run(client, "two_clients.py", &[]);
            assert_eq!(report["protocol2"], encoding.protocol());
            assert_eq!(report["keys"], 3499, "{report}");
            assert_eq!(
                report["people"],
                serde_json::json!({"alice": 100, "bob": 2})
            );
        }
        let (file, _) = served.finish();
        assert_eq!(file["root_keys"], serde_json::json!(["zeo5", "zeo6"]));
        // Two trees of 3499 keys need dozens of buckets each.
        assert!(file["reachable"].as_u64().unwrap() > 50, "{file}");
    });
}

/// Scenario 2: an unresolvable write conflict raises ConflictError with
/// the right oid and serials; Length and bucket conflicts are resolved.
#[test]
fn conflicts_are_reported_and_resolved() {
    each_encoding(|encoding| {
        let served = Served::new(encoding, &[]);
        for client in Client::ALL {
            let report = served.run(client, "conflicts.py", &[]);
            assert_eq!(
                report["serials"],
                serde_json::json!([report["committed"], report["read"]]),
                "{report}"
            );
            assert_ne!(report["committed"], report["read"]);
            assert_eq!(report["length"], 2);
        }
        served.finish();
    });
}

/// Scenario 2b: conflicts on BTrees and Length are resolved in the server:
/// four stock clients insert disjoint keys into one OOBTree bucket on stale
/// snapshots without a ConflictError and without resolving anything
/// themselves; undo of an old transaction on a catalog-like index merges
/// with the later change.
#[test]
fn btree_conflicts_and_undo_are_resolved_by_the_server() {
    each_encoding(|encoding| {
        let served = Served::new(encoding, &[]);
        for client in Client::ALL {
            let report = served.run(client, "native_conflicts.py", &["5"]);
            assert_eq!(report["keys"], 20, "{report}");
            assert_eq!(report["client_resolutions"], 0, "{report}");
            assert!(
                report["conflicts_resolved"].as_u64().unwrap() >= 15,
                "{report}"
            );
            assert_eq!(report["undone"], serde_json::json!(["a", "z"]), "{report}");
        }
        served.finish();
    });
}

/// Scenario 2c: with `native-conflict-resolution false` the same conflicts
/// go back to the stock clients, which resolve them; undo still resolves in
/// the storage.
#[test]
fn native_conflict_resolution_off_leaves_conflicts_to_the_clients() {
    each_encoding(|encoding| {
        let dir = TempDir::new().unwrap();
        let conf = dir.path().join("zeo.conf");
        std::fs::write(
            &conf,
            "<zeo>\n  address 127.0.0.1:1\n  native-conflict-resolution false\n</zeo>\n<mappingstorage/>\n",
        )
        .unwrap();
        let conf = conf.to_str().unwrap().to_owned();
        let server = start(dir.path(), encoding, "127.0.0.1:0", &["-C", &conf]);
        let served = Served {
            dir,
            server,
            encoding,
        };
        for client in Client::ALL {
            let report = served.run(client, "native_conflicts.py", &["5", "client"]);
            assert_eq!(report["conflicts_resolved"], 0, "{report}");
            assert!(
                report["client_resolutions"].as_u64().unwrap() >= 15,
                "{report}"
            );
            assert_eq!(report["undone"], serde_json::json!(["a", "z"]), "{report}");
        }
        served.finish();
    });
}

/// Scenario 3: snapshots survive later commits, and loadBefore returns the
/// revision current before a tid with its start and end.
#[test]
fn mvcc_snapshots_and_load_before() {
    each_encoding(|encoding| {
        let served = Served::new(encoding, &[]);
        for client in Client::ALL {
            let report = served.run(client, "mvcc.py", &[]);
            let expected = serde_json::json!([report["t1"], report["t2"]]);
            assert_eq!(report["loads"]["server"], expected, "{report}");
            assert_eq!(report["loads"]["cached"], expected, "{report}");
        }
        served.finish();
    });
}

/// Scenario 4: undoLog, undo and history.
#[test]
fn undo_log_undo_and_history() {
    each_encoding(|encoding| {
        let served = Served::new(encoding, &[]);
        for client in Client::ALL {
            let report = served.run(client, "undo.py", &[]);
            assert_eq!(report["title"], "one");
            assert_eq!(report["history"].as_array().unwrap().len(), 3);
        }
        served.finish();
    });
}

/// Scenario 5: pack with garbage collection removes unreachable objects
/// and old revisions, keeps reachable ones. The packed file also passes
/// `python -m ZODB.scripts.fstest`, run exactly as an operator would.
#[test]
fn pack_removes_unreachable_objects() {
    each_encoding(|encoding| {
        let served = Served::new(encoding, &[]);
        for client in Client::ALL {
            let report = served.run(client, "pack.py", &[]);
            assert_eq!(
                report["gone"],
                serde_json::json!({"drop": true, "child": true})
            );
            assert_eq!(report["keep"], 2);
        }
        let (file, dir) = served.finish();
        assert_eq!(file["root_keys"], serde_json::json!(["zeo5", "zeo6"]));
        // root, two tag mappings and their `keep`s: nothing unreachable.
        assert_eq!(file["reachable"], 5, "{file}");
        assert_eq!(file["objects"], 5, "{file}");
        let python = match encoding {
            Encoding::Pickle => Client::Zeo6.python(),
            Encoding::Msgpack => Client::Zeo5.python(),
        };
        let out = zeo_testkit::run_with_timeout(
            std::process::Command::new(python)
                .args(["-m", "ZODB.scripts.fstest", "Data.fs"])
                .current_dir(dir.path()),
            SCRIPT_TIMEOUT,
        );
        zeo_testkit::stdout_of(&out, "python -m ZODB.scripts.fstest Data.fs");
    });
}

/// Scenario 6: storage.iterator() yields every transaction and record.
#[test]
fn iterator_yields_all_transactions() {
    each_encoding(|encoding| {
        let served = Served::new(encoding, &[]);
        let mut transactions = 1; // the root's creation
        for client in Client::ALL {
            let report = served.run(client, "iterate.py", &[]);
            transactions += 5;
            assert_eq!(report["transactions"], transactions, "{report}");
        }
        served.finish();
    });
}

/// Scenario 7: read-only clients on a writable server, and a server run
/// with `-r` on the same file.
#[test]
fn read_only_clients_and_servers() {
    each_encoding(|encoding| {
        let served = Served::new(encoding, &[]);
        for client in Client::ALL {
            let report = served.run(client, "read_only.py", &["writable"]);
            assert_eq!(report["server"], "ReadOnlyError");
        }
        let served = served.restart(&["-r"]);
        for client in Client::ALL {
            let report = served.run(client, "read_only.py", &["server"]);
            assert_eq!(report["server"], "ReadOnlyError");
        }
        served.finish();
    });
}

/// Scenario 8: a client that votes and hangs is cut off after the
/// transaction timeout; another client's commit waits for it and succeeds.
#[test]
fn transaction_timeout_cuts_off_a_hung_voter() {
    const TIMEOUT: &str = "2";
    each_encoding(|encoding| {
        let served = Served::new(encoding, &["-t", TIMEOUT]);
        for client in Client::ALL {
            let report = served.run(client, "timeout.py", &[TIMEOUT]);
            let waited = report["waited"].as_f64().unwrap();
            // The winner waited for the timeout (2 s from the hung vote).
            assert!((1.0..10.0).contains(&waited), "{report}");
            assert_ne!(report["hung"], "finished");
        }
        served.finish();
    });
}

/// Waits (30 s at most) for a marker file the restart script writes,
/// failing early with the script's output when it has already ended.
fn await_marker(path: &Path, script: &std::thread::JoinHandle<Value>) {
    let appeared = wait_for_file(path, Duration::from_secs(30), || script.is_finished());
    assert!(
        appeared,
        "restart.py did not write {} (ended: {})",
        path.display(),
        script.is_finished()
    );
}

/// Writes a marker file atomically (the script polls for it).
fn write_marker(dir: &Path, name: &str, content: &str) {
    let tmp = dir.join(format!("{name}.tmp"));
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(tmp, dir.join(name)).unwrap();
}

/// One client's pass through the restart scenario (see `restart.py`):
/// stops `server` once the client has read, lets another client change the
/// object through a server on another port, restarts on `server`'s address
/// and returns the new server and the client's report.
fn restart_round(
    dir: &Path,
    encoding: Encoding,
    client: Client,
    server: ServerProcess,
) -> (ServerProcess, Value) {
    let var = dir.join("var");
    std::fs::create_dir_all(&var).unwrap();
    let markers = dir.join(format!("markers-{}", client.tag()));
    std::fs::create_dir(&markers).unwrap();
    let address = format!("127.0.0.1:{}", server.port());
    let args = [
        server.port().to_string(),
        client.tag().to_owned(),
        var.display().to_string(),
        markers.display().to_string(),
    ];
    let cwd = dir.to_owned();
    let script = std::thread::spawn(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_script(client, "restart.py", &args, &cwd, "restart")
    });
    await_marker(&markers.join("loaded"), &script);
    stop(server);
    let other = start(dir, encoding, "127.0.0.1:0", &[]);
    write_marker(&markers, "stopped", &other.port().to_string());
    await_marker(&markers.join("changed"), &script);
    stop(other);
    let server = start(dir, encoding, &address, &[]);
    write_marker(&markers, "restarted", "");
    let report = match script.join() {
        Ok(report) => report,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    assert_eq!(report["protocol"], encoding.protocol(), "{report}");
    assert!(var.join(format!("{}-1.zec", client.tag())).is_file());
    (server, report)
}

/// Scenario 9: the server is stopped with SIGTERM and restarted on the same
/// port and file; a client with a persistent cache that stayed up
/// reconnects and reads an object another client changed meanwhile fresh.
#[test]
fn restart_keeps_persistent_client_caches_fresh() {
    each_encoding(|encoding| {
        let dir = TempDir::new().unwrap();
        let mut server = start(dir.path(), encoding, "127.0.0.1:0", &[]);
        for client in Client::ALL {
            let report;
            (server, report) = restart_round(dir.path(), encoding, client, server);
            // Stale data is ruled out by the script either way; this names
            // how the client got there (ZEO 5 and 6 use the same strings).
            let verification = report["verify_result"].as_str().unwrap_or_default();
            assert!(
                ["quick verification", "cache too old, clearing"].contains(&verification),
                "{report}"
            );
        }
        stop(server);
        verify_file(dir.path(), "Data.fs", encoding);
    });
}

/// After a restart a client that missed a few transactions keeps its cache,
/// as with runzeo: the server seeds each storage's invalidation queue from
/// the storage's last transactions, so `getInvalidations` answers and the
/// client reports "quick verification" instead of "cache too old, clearing".
#[test]
fn restart_lets_clients_keep_their_caches() {
    let dir = TempDir::new().unwrap();
    let server = start(dir.path(), Encoding::Pickle, "127.0.0.1:0", &[]);
    let (server, report) = restart_round(dir.path(), Encoding::Pickle, Client::Zeo6, server);
    stop(server);
    assert_eq!(report["verify_result"], "quick verification", "{report}");
}

/// Scenario 11: runzeo configuration files work unchanged: the HOWTO's
/// example (pickle) and a ZEO 5 style one with `%define`, a named
/// `<filestorage>`, `msgpack`, a pid file and an `<eventlog>` (msgpack).
#[test]
fn runzeo_configuration_files() {
    let dir = TempDir::new().unwrap();
    let root = dir.path();

    // The HOWTO example with its paths and ports made local.
    let howto = root.join("howto");
    std::fs::create_dir(&howto).unwrap();
    let port = zeo_testkit::free_port();
    let monitor = zeo_testkit::free_port();
    let conf = format!(
        "<zeo>\naddress 127.0.0.1:{port}\nmonitor-address 127.0.0.1:{monitor}\n</zeo>\n\n\
         <filestorage 1>\npath {h}/Data.fs\n</filestorage>\n\n\
         <eventlog>\n<logfile>\npath {h}/zeo.log\nformat %(asctime)s %(message)s\n</logfile>\n</eventlog>\n",
        h = howto.display()
    );
    std::fs::write(howto.join("zeo.config"), conf).unwrap();
    let server = ServerProcess::start(&howto, &["-C", "zeo.config"]);
    assert_eq!(server.port(), port);
    for client in Client::ALL {
        let port = port.to_string();
        let report = run_script(
            client,
            "basic.py",
            &[&port, client.tag()],
            &howto,
            "HOWTO config",
        );
        assert_eq!(report["protocol"], "Z5");
    }
    stop(server);
    let log = std::fs::read_to_string(howto.join("zeo.log")).unwrap();
    let first = log.lines().next().unwrap_or_default();
    // `%(asctime)s %(message)s` with ZConfig's default date format:
    // "YYYY-MM-DDTHH:MM:SS message".
    assert!(
        first.len() > 20 && first.as_bytes()[10] == b'T' && first.as_bytes()[19] == b' ',
        "log lines do not follow the configured format:\n{log}"
    );
    verify_file(&howto, "Data.fs", Encoding::Pickle);

    // A ZEO 5 buildout-style configuration.
    let instance = root.join("instance");
    std::fs::create_dir_all(instance.join("var")).unwrap();
    std::fs::create_dir_all(instance.join("log")).unwrap();
    let port = zeo_testkit::free_port();
    let conf = format!(
        "%define INSTANCE {i}\n\n\
         <zeo>\n  address 127.0.0.1:{port}\n  read-only false\n  invalidation-queue-size 100\n  \
         pid-filename $INSTANCE/var/zeo.pid\n  transaction-timeout 300\n  msgpack true\n</zeo>\n\n\
         <filestorage main>\n  path $INSTANCE/var/main.fs\n  pack-gc true\n</filestorage>\n\n\
         <eventlog>\n  level info\n  <logfile>\n    path $INSTANCE/log/zeo.log\n    \
         format %(asctime)s %(levelname)s %(name)s %(message)s\n  </logfile>\n</eventlog>\n",
        i = instance.display()
    );
    std::fs::write(instance.join("zeo.conf"), conf).unwrap();
    let server = ServerProcess::start(root, &["-C", "instance/zeo.conf"]);
    assert_eq!(server.port(), port);
    let pid = std::fs::read_to_string(instance.join("var/zeo.pid")).unwrap();
    assert_eq!(pid.trim(), server.child.id().to_string());
    for client in Client::ALL {
        let port = port.to_string();
        let report = run_script(
            client,
            "basic.py",
            &[&port, client.tag(), "main"],
            root,
            "ZEO 5 config",
        );
        assert_eq!(report["protocol"], "M5");
        assert_eq!(report["storage"], "main", "{report}");
    }
    stop(server);
    let log = std::fs::read_to_string(instance.join("log/zeo.log")).unwrap();
    assert!(log.lines().any(|l| l.contains(" INFO ")), "{log}");
    verify_file(&instance.join("var"), "main.fs", Encoding::Msgpack);
}
