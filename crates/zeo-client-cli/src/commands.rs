//! The subcommands other than `bench`: each connects, asks, prints.

use std::collections::HashSet;
use std::future::Future;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;
use zeo_client::{AsyncClientStorage, ClientOptions};
use zeo_pickle::describe;
use zeo_storage::{BeginOptions, Oid, Tid, TransactionMetaData};

use crate::error::CliError;
use crate::{nagios, render};

/// Runs `work`, failing with [`CliError::Timeout`] when it takes longer
/// than `limit`.
pub async fn bounded<T>(
    limit: Duration,
    work: impl Future<Output = Result<T, CliError>>,
) -> Result<T, CliError> {
    tokio::time::timeout(limit, work)
        .await
        .unwrap_or(Err(CliError::Timeout(limit.as_secs_f64())))
}

/// Connects (waiting up to the options' `wait_timeout`), runs `work`, and
/// closes the client whatever happened.
async fn with_client<T, F, Fut>(options: ClientOptions, work: F) -> Result<T, CliError>
where
    F: FnOnce(AsyncClientStorage) -> Fut,
    Fut: Future<Output = Result<T, CliError>>,
{
    let client = AsyncClientStorage::connect(options).await?;
    let outcome = work(client.clone()).await;
    let closed = client.close();
    let value = outcome?;
    closed?;
    Ok(value)
}

/// How `up` and `status` print their answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Lines for people.
    Text,
    /// One JSON object.
    Json,
    /// A Nagios plugin's status line, performance data and exit status.
    Nagios,
}

/// What `up` saw.
struct UpReport {
    read_only: bool,
    last_transaction: Tid,
    /// The root's size and serial; `None` for an empty database.
    root: Option<(usize, Tid)>,
    committed: Option<Tid>,
}

/// `up`: healthy when a verified connection comes up within `limit`, the
/// root object loads (or the storage is still empty) and, with `commit`,
/// an empty transaction commits.
///
/// ZEO's zeoup increments a `MinPO` counter under `root['monitor']`; this
/// check leaves application data alone and commits an empty transaction
/// instead, which takes the commit lock and writes a transaction record
/// just the same.
pub async fn up(
    options: ClientOptions,
    limit: Duration,
    commit: bool,
    output: Output,
) -> Result<ExitCode, CliError> {
    let started = Instant::now();
    let servers: Vec<String> = options.servers.iter().map(|s| s.to_string()).collect();
    let storage = options.storage.clone();
    let check = with_client(options, |client| async move {
        let root = match client.load_before(Oid::ROOT, Tid::MAX).await {
            Ok(Some(root)) => Some((root.data.len(), root.start)),
            Ok(None) | Err(zeo_client::Error::Storage(zeo_storage::Error::PosKey { .. })) => None,
            Err(e) => return Err(e.into()),
        };
        let mut committed = None;
        if commit {
            let meta = TransactionMetaData {
                user: Vec::new(),
                description: b"zeo-client up".to_vec(),
                extension: Vec::new(),
            };
            let txn = client.tpc_begin(&meta, BeginOptions::default()).await?;
            let finished = async {
                client.tpc_vote(txn).await?;
                client.tpc_finish(txn).await
            }
            .await;
            match finished {
                Ok(tid) => committed = Some(tid),
                Err(e) => {
                    client.tpc_abort(txn).await;
                    return Err(e.into());
                }
            }
        }
        Ok(UpReport {
            read_only: client.is_read_only(),
            last_transaction: client.last_transaction(),
            root,
            committed,
        })
    });
    let outcome = bounded(limit, check).await;
    let elapsed = started.elapsed().as_secs_f64();
    let mut out = std::io::stdout().lock();
    match (outcome, output) {
        (Err(CliError::Output(e)), _) => Err(CliError::Output(e)),
        (Ok(r), Output::Text) => {
            writeln!(
                out,
                "connected to {} (storage {storage:?}, {})",
                servers.join(", "),
                if r.read_only { "read-only" } else { "writable" }
            )?;
            writeln!(
                out,
                "last transaction {}",
                render::tid_with_time(r.last_transaction)
            )?;
            match r.root {
                Some((size, serial)) => {
                    writeln!(out, "root object: {size} bytes, serial {serial}")?
                }
                None => writeln!(out, "no root object yet (empty database)")?,
            }
            if let Some(tid) = r.committed {
                writeln!(out, "committed an empty transaction {tid}")?;
            }
            writeln!(out, "healthy; elapsed time {elapsed:.3} s")?;
            Ok(ExitCode::SUCCESS)
        }
        (Ok(r), Output::Json) => {
            let line = json!({
                "healthy": true,
                "servers": servers,
                "storage": storage,
                "read_only": r.read_only,
                "last_transaction": render::id_hex(r.last_transaction.0),
                "root": r.root.map(|(size, serial)| json!({"size": size, "serial": render::id_hex(serial.0)})),
                "committed": r.committed.map(|t| render::id_hex(t.0)),
                "elapsed": elapsed,
            });
            writeln!(out, "{line}")?;
            Ok(ExitCode::SUCCESS)
        }
        (Ok(r), Output::Nagios) => {
            let message = match r.committed {
                Some(tid) => format!("OK: storage {storage:?} answers and committed {tid}"),
                None => format!("OK: storage {storage:?} answers"),
            };
            let metrics = [format!("elapsed={elapsed:.6}s")];
            out.write_all(nagios::render(&[message], &metrics).as_bytes())?;
            Ok(nagios::Level::Ok.exit_code())
        }
        (Err(e), Output::Text) => {
            eprintln!("zeo-client: unhealthy: {e}");
            Ok(ExitCode::FAILURE)
        }
        (Err(e), Output::Json) => {
            let line = json!({"healthy": false, "servers": servers, "storage": storage,
                              "error": e.to_string(), "elapsed": elapsed});
            writeln!(out, "{line}")?;
            Ok(ExitCode::FAILURE)
        }
        (Err(e), Output::Nagios) => {
            out.write_all(nagios::render(&[format!("CRITICAL: {e}")], &[]).as_bytes())?;
            Ok(nagios::Level::Critical.exit_code())
        }
    }
}

/// `pack`: packs to now minus `days`, waiting for the server to finish.
pub async fn pack(options: ClientOptions, days: f64) -> Result<ExitCode, CliError> {
    if !days.is_finite() || days < 0.0 {
        return Err(CliError::Usage(format!(
            "--days {days}: must be zero or more"
        )));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let pack_time = now - days * 86_400.0;
    let name = options.storage.clone();
    with_client(options, |client| async move {
        let started = Instant::now();
        client.pack(pack_time).await?;
        writeln!(
            std::io::stdout().lock(),
            "packed storage {name:?} to {} UTC in {:.2} s",
            render::unix_time(pack_time),
            started.elapsed().as_secs_f64()
        )?;
        Ok(ExitCode::SUCCESS)
    })
    .await
}

/// `status`: the server's `server_status` dict.
pub async fn status(options: ClientOptions, json: bool) -> Result<ExitCode, CliError> {
    with_client(options, |client| async move {
        let status = client.server_status().await?;
        print_dict(&status, json)
    })
    .await
}

/// `status --nagios`: the storage's counters as zeo-nagios reports them,
/// with rates since the run that last wrote `state` (per `per`). A server
/// that does not answer within `limit` is CRITICAL.
pub async fn nagios_status(
    options: ClientOptions,
    limit: Duration,
    state: Option<std::path::PathBuf>,
    per: nagios::Per,
) -> Result<ExitCode, CliError> {
    let storage = options.storage.clone();
    let asked = bounded(
        limit,
        with_client(options, |client| async move {
            Ok(client.server_status().await?)
        }),
    )
    .await;
    let mut out = std::io::stdout().lock();
    let status = match asked {
        Ok(status) => status,
        Err(e) => {
            out.write_all(nagios::render(&[format!("Can't connect {e}")], &[]).as_bytes())?;
            return Ok(nagios::Level::Critical.exit_code());
        }
    };
    let state = state.as_deref().map(|p| (p, per));
    let (text, level) = nagios::check_status(
        &storage,
        &render::to_json(&status),
        state,
        SystemTime::now(),
    )?;
    out.write_all(text.as_bytes())?;
    Ok(level.exit_code())
}

/// `info`: the storage's `get_info` dict.
pub async fn info(options: ClientOptions, json: bool) -> Result<ExitCode, CliError> {
    with_client(options, |client| async move {
        let info = client.get_info().await?;
        print_dict(&info, json)
    })
    .await
}

fn print_dict(value: &zeo_pickle::Value, json: bool) -> Result<ExitCode, CliError> {
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", render::to_json(value))?;
    } else {
        for line in render::dict_lines(value) {
            writeln!(out, "{line}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The JSON line `history` and `log` print for one transaction.
fn txn_json(tid: Tid, time: f64, user: &[u8], description: &[u8], size: u64) -> serde_json::Value {
    json!({
        "tid": format!("{:016x}", tid.as_u64()),
        "time": time,
        "user": render::text_or_hex(user),
        "description": render::text_or_hex(description),
        "size": size,
    })
}

/// `history`: up to `size` revisions of `oid`, newest first.
pub async fn history(
    options: ClientOptions,
    oid: Oid,
    size: usize,
    json: bool,
) -> Result<ExitCode, CliError> {
    with_client(options, |client| async move {
        let entries = client.history(oid, size.max(1)).await?;
        let mut out = std::io::stdout().lock();
        for e in entries.iter().take(size.max(1)) {
            if json {
                let line = txn_json(e.tid, e.time, &e.user, &e.description, e.size);
                writeln!(out, "{line}")?;
            } else {
                writeln!(
                    out,
                    "{}  {:>8} bytes  user {:?}  {:?}",
                    render::tid_with_time(e.tid),
                    e.size,
                    render::text_or_hex(&e.user),
                    render::text_or_hex(&e.description)
                )?;
            }
        }
        Ok(ExitCode::SUCCESS)
    })
    .await
}

/// How `cat` writes a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CatFormat {
    /// The pickle bytes as stored.
    Raw,
    /// The bytes as lowercase hex.
    Hex,
    /// Class and state as an indented tree.
    Tree,
    /// Class and state as one JSON object.
    Json,
}

/// `cat`: the current record of `oid`, or the revision `serial`.
pub async fn cat(
    options: ClientOptions,
    oid: Oid,
    serial: Option<Tid>,
    format: CatFormat,
) -> Result<ExitCode, CliError> {
    with_client(options, |client| async move {
        let (data, tid) = match serial {
            Some(serial) => (client.load_serial(oid, serial).await?, serial),
            None => client.load(oid).await?,
        };
        let mut out = std::io::stdout().lock();
        let limits = describe::Limits::default();
        match format {
            CatFormat::Raw => out.write_all(&data)?,
            CatFormat::Hex => writeln!(out, "{}", render::hex(&data))?,
            CatFormat::Tree => {
                let record = describe::decode_record(&data, &limits).map_err(bad_record(oid))?;
                writeln!(out, "oid {oid} serial {}", render::tid_with_time(tid))?;
                out.write_all(describe::describe(&record, &limits).as_bytes())?;
            }
            CatFormat::Json => {
                let record = describe::decode_record(&data, &limits).map_err(bad_record(oid))?;
                let line = json!({
                    "oid": render::id_hex(oid.0),
                    "serial": render::id_hex(tid.0),
                    "size": data.len(),
                    "class": describe::class_label(&record.class),
                    "state": render::state_json(&record.state, &limits),
                });
                writeln!(out, "{line}")?;
            }
        }
        out.flush()?;
        Ok(ExitCode::SUCCESS)
    })
    .await
}

/// Gives `options` a temporary blob cache directory when it has none, and
/// returns it for removal afterwards.
fn temporary_blob_dir(options: &mut ClientOptions) -> Option<std::path::PathBuf> {
    if options.blob_dir.is_some() {
        return None;
    }
    let dir = std::env::temp_dir().join(format!(
        "zeo-client-blobs-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    ));
    options.blob_dir = Some(dir.clone());
    options.shared_blob_dir = false;
    Some(dir)
}

/// `blob put`: commits `file` as the blob of `oid` (its current revision's
/// successor) or of a new object, and prints `OID TID` in hex. The record
/// is a `ZODB.blob.Blob`'s, as ZODB pickles one.
pub async fn blob_put(
    mut options: ClientOptions,
    oid: Option<Oid>,
    file: std::path::PathBuf,
) -> Result<ExitCode, CliError> {
    let source = std::fs::File::open(&file)?;
    let temporary = temporary_blob_dir(&mut options);
    let outcome = with_client(options, |client| async move {
        let (oid, serial) = match oid {
            Some(oid) => (oid, client.load(oid).await?.1),
            None => (client.new_oid().await?, Tid::ZERO),
        };
        let class = zeo_pickle::Value::global("ZODB.blob", "Blob");
        let record = zeo_pickle::encode_record(&class, &zeo_pickle::Value::None)
            .map_err(|e| CliError::Usage(format!("encoding the blob record: {e}")))?;
        let meta = TransactionMetaData {
            description: format!("zeo-client blob put {}", file.display()).into_bytes(),
            ..Default::default()
        };
        let txn = client.tpc_begin(&meta, BeginOptions::default()).await?;
        let stored = async {
            let blob = zeo_storage::BlobSource::Stream(Box::new(source));
            client.store_blob(txn, oid, serial, &record, blob).await?;
            client.tpc_vote(txn).await?;
            client.tpc_finish(txn).await
        }
        .await;
        let tid = match stored {
            Ok(tid) => tid,
            Err(e) => {
                client.tpc_abort(txn).await;
                return Err(e.into());
            }
        };
        println!("{} {}", render::id_hex(oid.0), render::id_hex(tid.0));
        Ok(ExitCode::SUCCESS)
    })
    .await;
    if let Some(dir) = temporary {
        let _ = std::fs::remove_dir_all(dir);
    }
    outcome
}

/// `blob get`: the blob of `oid` at `serial` (the current revision when
/// `None`), streamed to `output` or stdout. The blob comes through the
/// options' blob directory; without one, through a temporary cache removed
/// afterwards.
pub async fn blob_get(
    mut options: ClientOptions,
    oid: Oid,
    serial: Option<Tid>,
    output: Option<std::path::PathBuf>,
) -> Result<ExitCode, CliError> {
    let temporary = temporary_blob_dir(&mut options);
    let outcome = with_client(options, |client| async move {
        let serial = match serial {
            Some(serial) => serial,
            None => client.load(oid).await?.1,
        };
        let blob = client.open_blob(oid, serial).await?;
        // The copy blocks: a large blob to a slow pipe must not hold a
        // runtime worker.
        tokio::task::spawn_blocking(move || -> Result<(), CliError> {
            let mut blob = std::io::BufReader::new(blob);
            match output {
                Some(path) => {
                    let mut file = std::fs::File::create(&path)?;
                    std::io::copy(&mut blob, &mut file)?;
                    file.sync_all()?;
                }
                None => {
                    let mut out = std::io::stdout().lock();
                    std::io::copy(&mut blob, &mut out)?;
                    out.flush()?;
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| CliError::Output(std::io::Error::other(e)))??;
        Ok(ExitCode::SUCCESS)
    })
    .await;
    if let Some(dir) = temporary {
        let _ = std::fs::remove_dir_all(dir);
    }
    outcome
}

fn bad_record(oid: Oid) -> impl Fn(zeo_pickle::Error) -> CliError {
    move |e| CliError::Record(format!("the record of {oid}: {e}"))
}

/// The referenced objects of a record, each once, in the order they first
/// appear.
fn distinct_references(oid: Oid, data: &[u8]) -> Result<Vec<Oid>, CliError> {
    let mut seen = HashSet::new();
    Ok(zeo_pickle::references(data)
        .map_err(bad_record(oid))?
        .into_iter()
        .filter(|r| seen.insert(*r))
        .map(Oid)
        .collect())
}

/// One line of `refs`: an oid and its class (`-` for an undecodable
/// record, `missing` when it does not exist).
fn print_ref(out: &mut impl Write, oid: Oid, class: &str, json: bool) -> Result<(), CliError> {
    if json {
        writeln!(
            out,
            "{}",
            json!({"oid": render::id_hex(oid.0), "class": class})
        )?;
    } else {
        writeln!(out, "{oid}  {class}")?;
    }
    Ok(())
}

fn class_text(data: &[u8]) -> String {
    match zeo_pickle::class_of(data) {
        Some((module, name)) => format!("{module}.{name}"),
        None => "-".into(),
    }
}

/// `refs OID`: what the current record of `oid` references, with each
/// referenced object's class (loaded from the server).
pub async fn refs(options: ClientOptions, oid: Oid, json: bool) -> Result<ExitCode, CliError> {
    with_client(options, |client| async move {
        let (data, _) = client.load(oid).await?;
        let mut out = std::io::stdout().lock();
        for target in distinct_references(oid, &data)? {
            let class = match client.load(target).await {
                Ok((data, _)) => class_text(&data),
                Err(zeo_client::Error::Storage(zeo_storage::Error::PosKey { .. })) => {
                    "missing".into()
                }
                Err(e) => return Err(e.into()),
            };
            print_ref(&mut out, target, &class, json)?;
        }
        Ok(ExitCode::SUCCESS)
    })
    .await
}

/// Records between two progress lines of `refs --back`.
const PROGRESS_EVERY: u64 = 1000;

/// `refs OID --back`: every object whose current record references `oid`,
/// found by walking all current records with `record_iternext` (so it
/// works against any ZEO server), reading at most `max_objects` records.
/// Progress goes to stderr when it is a terminal.
pub async fn back_refs(
    options: ClientOptions,
    oid: Oid,
    max_objects: u64,
    json: bool,
) -> Result<ExitCode, CliError> {
    with_client(options, |client| async move {
        let progress = std::io::stderr().is_terminal();
        let mut out = std::io::stdout().lock();
        let (mut scanned, mut undecodable) = (0u64, 0u64);
        let mut next = None;
        let mut refs = Vec::new();
        let complete = loop {
            if scanned >= max_objects {
                break false;
            }
            let Some(record) = client.record_iternext(next).await? else {
                break true;
            };
            scanned += 1;
            refs.clear();
            if zeo_pickle::references_into(&record.data, &mut refs).is_err() {
                undecodable += 1;
            } else if refs.contains(&oid.0) {
                print_ref(&mut out, record.oid, &class_text(&record.data), json)?;
            }
            if progress && scanned % PROGRESS_EVERY == 0 {
                eprint!("\rscanned {scanned} records");
            }
            match record.next {
                Some(n) => next = Some(n),
                None => break true,
            }
        };
        if progress {
            eprintln!("\rscanned {scanned} records");
        }
        if undecodable > 0 {
            eprintln!("zeo-client: {undecodable} records could not be decoded");
        }
        if !complete {
            eprintln!("zeo-client: stopped after --max-objects {max_objects} records");
            return Ok(ExitCode::FAILURE);
        }
        Ok(ExitCode::SUCCESS)
    })
    .await
}

/// `log`: the `count` most recent transactions from the server's undo log.
pub async fn log(options: ClientOptions, count: usize, json: bool) -> Result<ExitCode, CliError> {
    with_client(options, |client| async move {
        let count = i64::try_from(count).unwrap_or(i64::MAX);
        let entries = client.undo_log(0, count).await?;
        let mut out = std::io::stdout().lock();
        for e in &entries {
            if json {
                let line = txn_json(e.tid, e.time, &e.user, &e.description, e.size);
                writeln!(out, "{line}")?;
            } else {
                writeln!(
                    out,
                    "{}  {}  user {:?}  {:?}",
                    e.tid,
                    render::unix_time(e.time),
                    render::text_or_hex(&e.user),
                    render::text_or_hex(&e.description)
                )?;
            }
        }
        Ok(ExitCode::SUCCESS)
    })
    .await
}
