//! The `zeo-server` command: runs a ZEO server from a ZConfig file or
//! runzeo-style options, and offers offline `check`, `dump` and `pack` of a
//! Data.fs. The `passwd` subcommand manages ZEO 3/4 digest password databases.
//! Argument parsing and wiring only; the work happens in the
//! `zeo-server`, `zeo-storage` and `zeo-config` crates.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;
use zeo_config::{LogHandler, LogPath, LogRotation, ServerConfig, SocketAddress, StorageKind};
use zeo_server::logging::{
    level_filter, JsonFormat, LineFormat, PythonFormat, ReopenableFile, Rotation, When,
};
use zeo_server::{ListenAddress, ServerBuilder, ServerSettings};
use zeo_storage::filestorage::{repozo, BlobPackMode, FileStorage, FileStorageOptions};
use zeo_storage::{Iteration, MappingStorage, Pack, Storage};

mod notify;
mod passwd;

/// Address served when none is configured.
const DEFAULT_ADDRESS: &str = "127.0.0.1:8100";
/// Storage file served when none is configured.
const DEFAULT_FILENAME: &str = "var/Data.fs";

#[derive(Parser, Debug)]
#[command(
    name = "zeo-server",
    version,
    about = "ZEO storage server (ZEO 5/6 wire compatible)"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check a Data.fs like ZODB's fstest: exit 0 when sound, 1 with the
    /// byte offset and reason otherwise.
    Check {
        /// The Data.fs file.
        path: PathBuf,
        /// Also decode every current object record and check that every
        /// object it references exists, like ZODB's fsrefs; each problem is
        /// printed as one line and makes the exit status 1.
        #[arg(long)]
        refs: bool,
        /// The storage's blob directory: every blob record still in the
        /// file must have its file there; each missing one is printed as
        /// one line and makes the exit status 1.
        #[arg(long, value_name = "DIR")]
        blob_dir: Option<PathBuf>,
    },
    /// Print a Data.fs in ZODB's fsdump format.
    Dump {
        /// The Data.fs file.
        path: PathBuf,
        /// Instead, print every transaction with each of its records'
        /// class and state as an indented tree (persistent references as
        /// oids with their class, long values abbreviated). Nothing in the
        /// records is executed; the file is opened read-only.
        #[arg(long)]
        decode: bool,
    },
    /// Pack a Data.fs that no server has open.
    Pack {
        /// The Data.fs file.
        path: PathBuf,
        /// Keep the history of the last DAYS days.
        #[arg(long, default_value_t = 0.0)]
        days: f64,
        /// Do not remove unreachable objects.
        #[arg(long)]
        no_gc: bool,
        /// The storage's blob directory: files of the revisions the pack
        /// removes go too (kept in `DIR.old` unless `--no-keep-old`).
        #[arg(long, value_name = "DIR")]
        blob_dir: Option<PathBuf>,
        /// With `--blob-dir`, keep no `DIR.old` copy (ZODB's
        /// `pack-keep-old false`).
        #[arg(long, requires = "blob_dir")]
        no_keep_old: bool,
    },
    /// Add, change or delete a user of a ZEO 3/4 digest password database,
    /// like ZEO 4's zeopasswd.
    Passwd(passwd::PasswdArgs),
    /// Back a Data.fs up into a repozo repository (full, or incremental
    /// when the repository allows), also while a server serves it.
    Backup {
        /// The Data.fs file.
        #[arg(short = 'f', long = "file", value_name = "PATH")]
        file: PathBuf,
        /// The repository directory (must exist).
        #[arg(short = 'r', long = "repository", value_name = "DIR")]
        repository: PathBuf,
        /// Force a full backup.
        #[arg(short = 'F', long)]
        full: bool,
        /// Decide from the last backup's checksum only (repozo -Q)
        /// instead of checksumming the whole repository.
        #[arg(short = 'Q', long)]
        quick: bool,
        /// After a full backup, delete the older backups.
        #[arg(short = 'k', long = "kill-old-on-full")]
        kill_old_on_full: bool,
        /// Name the files with this UTC time (YYYY-MM-DD-HH-MM-SS)
        /// instead of now.
        #[arg(long, value_name = "STAMP")]
        time: Option<String>,
        /// Also copy this blob directory's new files into the
        /// repository's `blobs/` (after the data file).
        #[arg(long = "blob-dir", value_name = "DIR")]
        blob_dir: Option<PathBuf>,
    },
    /// Restore a Data.fs (and its index) from a repozo repository.
    Restore {
        /// The repository directory.
        #[arg(short = 'r', long = "repository", value_name = "DIR")]
        repository: PathBuf,
        /// Restore the state as of this UTC time:
        /// YYYY-MM-DD[-HH[-MM[-SS]]] (default: the latest backup).
        #[arg(short = 'D', long, value_name = "DATE")]
        date: Option<String>,
        /// The file to write (replaced if it exists).
        #[arg(short = 'o', long, value_name = "PATH")]
        output: PathBuf,
        /// Check every backup file's size and md5 against the .dat while
        /// restoring.
        #[arg(short = 'w', long = "with-verify")]
        with_verify: bool,
        /// Also restore the repository's blob files into this directory.
        #[arg(long = "blob-dir", value_name = "DIR")]
        blob_dir: Option<PathBuf>,
    },
    /// Copy every transaction of one storage into another with the same
    /// tids, records, metadata and blobs, like ZODB's zodbconvert: a Data.fs
    /// into PostgreSQL, back, or between files.
    Convert {
        /// A zodbconvert configuration: one storage section named `source`
        /// and one named `destination`.
        file: PathBuf,
        /// Resume after the destination's last transaction (nothing checks
        /// that the transactions before it match the source's).
        #[arg(long)]
        incremental: bool,
        /// Open both storages and list the transactions that would be
        /// copied, changing nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Check the latest backups of a repozo repository against their
    /// .dat: sizes and md5 sums (repozo -V).
    Verify {
        /// The repository directory.
        #[arg(short = 'r', long = "repository", value_name = "DIR")]
        repository: PathBuf,
        /// Check sizes only.
        #[arg(short = 'Q', long)]
        quick: bool,
    },
}

#[derive(Args, Debug, Default)]
struct RunArgs {
    /// ZConfig configuration file (`<zeo>`, storages, `<eventlog>`).
    #[arg(short = 'C', long = "configure", value_name = "FILE")]
    configure: Option<PathBuf>,
    /// Address to listen on: PORT, HOST:PORT, `[IPV6]:PORT` or a socket path
    /// (repeatable; replaces the configured address).
    #[arg(short = 'a', long = "address", value_name = "ADDR")]
    address: Vec<String>,
    /// Serve a FileStorage (repeatable; named '1', '2', ...; replaces the
    /// configured storages).
    #[arg(short = 'f', long = "filename", value_name = "PATH")]
    filename: Vec<PathBuf>,
    /// Serve read-only.
    #[arg(short = 'r', long = "read-only")]
    read_only: bool,
    /// Write the process id to this file.
    #[arg(long = "pid-file", value_name = "PATH")]
    pid_file: Option<PathBuf>,
    /// Transaction timeout in seconds.
    #[arg(short = 't', long = "timeout", value_name = "SECONDS")]
    timeout: Option<f64>,
    /// Transactions kept for quick cache verification.
    #[arg(long = "invalidation-queue-size", value_name = "N")]
    invalidation_queue_size: Option<usize>,
    /// Announce msgpack (M5) instead of pickle (Z5).
    #[arg(long)]
    msgpack: bool,
    /// Give every transaction its own fsync under the commit lock instead
    /// of letting committers share one (`group-commit false`).
    #[arg(long = "no-group-commit")]
    no_group_commit: bool,
    /// For benchmarks only: make every fsync of the FileStorages this many
    /// microseconds longer, to measure group commit as a slow disk would
    /// see it (`cargo xtask bench` uses it; never in production).
    #[arg(long = "bench-fsync-delay-us", value_name = "MICROSECONDS")]
    bench_fsync_delay_us: Option<u64>,
    /// Serve the ZEO 3/4 monitor report at this address (replaces the
    /// configured monitor-address).
    #[arg(short = 'm', long = "monitor", value_name = "ADDR")]
    monitor: Option<String>,
    /// Serve Prometheus metrics (GET /metrics) at this address; a bare
    /// port binds 127.0.0.1 (replaces the configured metrics-address).
    #[arg(long = "metrics", value_name = "ADDR")]
    metrics: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Check {
            path,
            refs,
            blob_dir,
        }) => check(&path, refs, blob_dir.as_deref()),
        Some(Command::Dump { path, decode }) => dump(&path, decode),
        Some(Command::Pack {
            path,
            days,
            no_gc,
            blob_dir,
            no_keep_old,
        }) => {
            let blobs = blob_dir.as_deref().map(|dir| {
                let mode = BlobPackMode::Removed {
                    keep_old: !no_keep_old,
                };
                (dir, mode)
            });
            pack(&path, days, !no_gc, blobs)
        }
        Some(Command::Passwd(args)) => passwd::passwd(args),
        Some(Command::Backup {
            file,
            repository,
            full,
            quick,
            kill_old_on_full,
            time,
            blob_dir,
        }) => {
            let options = repozo::BackupOptions {
                file: &file,
                repository: &repository,
                full,
                quick,
                kill_old_on_full,
                stamp: time.unwrap_or_else(repozo::stamp_now),
                blob_dir: blob_dir.as_deref(),
            };
            report(repozo::backup(&options).map(|done| match done {
                repozo::Backup::Full { path, bytes } => {
                    format!("full backup: {bytes} bytes to {}", path.display())
                }
                repozo::Backup::Incremental { path, bytes } => {
                    format!("incremental backup: {bytes} bytes to {}", path.display())
                }
                repozo::Backup::Unchanged => "no changes since the last backup".to_owned(),
            }))
        }
        Some(Command::Restore {
            repository,
            date,
            output,
            with_verify,
            blob_dir,
        }) => report(
            repozo::restore(&repository, date.as_deref(), &output, with_verify).and_then(|bytes| {
                let mut line = format!("restored {bytes} bytes to {}", output.display());
                if let Some(dir) = &blob_dir {
                    let files = repozo::copy_blob_tree(&repository.join(repozo::BLOB_DIR), dir)?;
                    line.push_str(&format!(", {files} blob files to {}", dir.display()));
                }
                Ok(line)
            }),
        ),
        Some(Command::Convert {
            file,
            incremental,
            dry_run,
        }) => report(convert(&file, incremental, dry_run)),
        Some(Command::Verify { repository, quick }) => {
            report(repozo::verify(&repository, quick).map(|n| format!("{n} backup files verified")))
        }
        None => match run(cli.run) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("zeo-server: {message}");
                ExitCode::FAILURE
            }
        },
    }
}

/// Prints the outcome of an operator command: the line on stdout (exit 0)
/// or the error on stderr (exit 1).
fn report<E: std::fmt::Display>(outcome: Result<String, E>) -> ExitCode {
    match outcome {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("zeo-server: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `convert`: opens the file's two storages and copies, showing progress
/// on stderr (a redrawn bar on a terminal, a line every ten seconds
/// otherwise); a dry run lists each transaction on stdout.
fn convert(file: &Path, incremental: bool, dry_run: bool) -> Result<String, String> {
    use std::io::IsTerminal;
    use zeo_storage::copy::{copy_transactions, CopyOptions};

    let config = zeo_config::ConvertConfig::from_path(file).map_err(|e| e.to_string())?;
    for unsupported in &config.unsupported {
        eprintln!("zeo-server: {unsupported}");
    }
    let (_, source, _) = open_storage("source", &config.source.kind, None)?;
    let (_, destination, _) = open_storage("destination", &config.destination.kind, None)?;
    let options = CopyOptions {
        incremental,
        dry_run,
    };
    let started = std::time::Instant::now();
    let terminal = std::io::stderr().is_terminal();
    let mut shown = started;
    let outcome = copy_transactions(&*source, &*destination, &options, &mut |p| {
        let now = std::time::Instant::now();
        if dry_run {
            println!(
                "{} user={:?} description={:?}",
                p.tid,
                String::from_utf8_lossy(&p.user),
                String::from_utf8_lossy(&p.description)
            );
        } else if terminal && now.duration_since(shown) >= Duration::from_millis(200) {
            eprint!("\r{}", p.bar_line(started.elapsed(), 30));
            shown = now;
        } else if !terminal && now.duration_since(shown) >= Duration::from_secs(10) {
            eprintln!("zeo-server: convert: {}", p.counts_line(started.elapsed()));
            shown = now;
        }
    });
    if terminal && !dry_run {
        eprintln!();
    }
    let closed = source.close().and(destination.close());
    let done = outcome.map_err(|e| e.to_string())?;
    closed.map_err(|e| e.to_string())?;
    let resumed = done
        .resumed_after
        .map(|tid| format!(" after {tid}"))
        .unwrap_or_default();
    Ok(if dry_run {
        format!("would copy {} transactions{resumed}", done.transactions)
    } else {
        format!(
            "copied {} transactions{resumed} ({} records, {} blobs) in {:.1}s",
            done.transactions,
            done.records,
            done.blobs,
            started.elapsed().as_secs_f64()
        )
    })
}

fn check(path: &Path, refs: bool, blob_dir: Option<&Path>) -> ExitCode {
    match zeo_storage::filestorage::check(path) {
        Ok(report) => {
            println!(
                "{}: OK: {} transactions, {} data records, last tid {}, {} bytes",
                path.display(),
                report.transactions,
                report.data_records,
                report.last_tid,
                report.size
            );
            let blobs_ok = blob_dir.is_none_or(|dir| check_blobs(path, dir));
            if refs {
                let refs_ok = check_refs(path);
                return if blobs_ok { refs_ok } else { ExitCode::FAILURE };
            }
            if blobs_ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(err) => {
            eprintln!("{}: {err}", path.display());
            ExitCode::FAILURE
        }
    }
}

/// Reports blob records whose file is missing; true when there is none.
fn check_blobs(path: &Path, dir: &Path) -> bool {
    match zeo_storage::filestorage::check_blobs(path, dir) {
        Ok(report) => {
            for (oid, tid, file) in &report.missing {
                println!(
                    "{}: blob record {oid} tid {tid}: missing file {}",
                    path.display(),
                    file.display()
                );
            }
            println!(
                "{}: {} blob records, {} missing files",
                dir.display(),
                report.blob_records,
                report.missing_count
            );
            report.missing_count == 0
        }
        Err(err) => {
            eprintln!("{}: {err}", dir.display());
            false
        }
    }
}

fn check_refs(path: &Path) -> ExitCode {
    let mut out = std::io::stdout().lock();
    let report = zeo_storage::filestorage::check_refs(path, &mut |problem| {
        let _ = writeln!(out, "{}: {problem}", path.display());
    });
    match report {
        Ok(r) => {
            let _ = writeln!(
                out,
                "{}: refs: {} objects, {} references, {} problems",
                path.display(),
                r.objects,
                r.references,
                r.problems
            );
            if r.problems == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(err) => {
            eprintln!("{}: {err}", path.display());
            ExitCode::FAILURE
        }
    }
}

fn dump(path: &Path, decode: bool) -> ExitCode {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let result = if decode {
        dump_decoded(path, &mut out)
    } else {
        zeo_storage::filestorage::dump(path, &mut out)
    };
    let flushed = out.flush();
    match (result, flushed) {
        (Ok(()), Ok(())) => ExitCode::SUCCESS,
        (Err(err), _) => {
            eprintln!("{}: {err}", path.display());
            ExitCode::FAILURE
        }
        (_, Err(err)) => {
            eprintln!("writing the dump: {err}");
            ExitCode::FAILURE
        }
    }
}

/// `dump --decode`: each transaction's header line, then each record's
/// oid and decoded tree, indented under it.
fn dump_decoded(path: &Path, out: &mut dyn Write) -> zeo_storage::Result<()> {
    use zeo_pickle::describe;
    let options = FileStorageOptions {
        read_only: true,
        ..FileStorageOptions::default()
    };
    let storage = FileStorage::open(path, options)?;
    let io = |e| zeo_storage::Error::io("writing the dump", e);
    let limits = describe::Limits::default();
    for txn in storage.iterator(None, None)? {
        let txn = txn?;
        writeln!(
            out,
            "transaction {} {} user={:?} description={:?}",
            txn.tid,
            zeo_storage::TimeStamp::from_tid(txn.tid),
            String::from_utf8_lossy(&txn.meta.user),
            String::from_utf8_lossy(&txn.meta.description)
        )
        .map_err(io)?;
        for record in &txn.records {
            write!(out, "  oid {}: ", record.oid).map_err(io)?;
            let text = match &record.data {
                None => "no data (creation undone or deleted)\n".to_owned(),
                Some(data) => describe::describe_record(data, &limits)
                    .unwrap_or_else(|e| format!("undecodable record: {e}\n")),
            };
            // The tree's lines, indented under the oid line.
            for (i, line) in text.lines().enumerate() {
                let pad = if i == 0 { "" } else { "    " };
                writeln!(out, "{pad}{line}").map_err(io)?;
            }
        }
    }
    storage.close()
}

fn pack(path: &Path, days: f64, gc: bool, blobs: Option<(&Path, BlobPackMode)>) -> ExitCode {
    let options = FileStorageOptions {
        pack_gc: gc,
        ..FileStorageOptions::default()
    };
    let result = open_fs(path, options, blobs).and_then(|fs| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let packed = fs.pack(now - days * 86400.0, gc);
        fs.close().and(packed)
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{}: {err}", path.display());
            ExitCode::FAILURE
        }
    }
}

/// The storages and settings to serve, from the configuration file and the
/// command line (which wins).
struct Plan {
    settings: ServerSettings,
    addresses: Vec<ListenAddress>,
    storages: Vec<(String, Arc<dyn Storage>, bool)>,
    pid_file: Option<PathBuf>,
    logs: Vec<ReopenableFile>,
}

fn run(args: RunArgs) -> Result<(), String> {
    let config = match &args.configure {
        Some(path) => Some(ServerConfig::from_path(path).map_err(|e| e.to_string())?),
        None => None,
    };
    let logs = init_logging(config.as_ref())?;
    let plan = plan(args, config, logs)?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("zeo-server")
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    runtime.block_on(serve(plan))
}

fn plan(
    args: RunArgs,
    config: Option<ServerConfig>,
    logs: Vec<ReopenableFile>,
) -> Result<Plan, String> {
    let mut settings = ServerSettings::default();
    let mut addresses = Vec::new();
    let mut storages: Vec<(String, Arc<dyn Storage>, bool)> = Vec::new();
    let sync_delay = args.bench_fsync_delay_us.map(Duration::from_micros);
    let mut pid_file = None;
    if let Some(config) = &config {
        for unsupported in &config.unsupported {
            tracing::warn!("ignoring unsupported configuration: {unsupported:?}");
        }
        let zeo = &config.zeo;
        if let Some(ssl) = &zeo.ssl {
            let file = args.configure.as_deref().unwrap_or(Path::new("-"));
            settings.tls =
                Some(server_tls(ssl).map_err(|e| format!("{}: <ssl>: {e}", file.display()))?);
        }
        settings.authentication = authentication(zeo)?;
        settings.read_only = zeo.read_only;
        settings.invalidation_queue_size =
            usize::try_from(zeo.invalidation_queue_size).unwrap_or(usize::MAX);
        settings.invalidation_age = zeo.invalidation_age.map(Duration::from_secs_f64);
        settings.transaction_timeout = zeo.transaction_timeout.map(|t| t.as_duration());
        settings.max_message_size =
            usize::try_from(zeo.max_message_size.bytes()).unwrap_or(usize::MAX);
        let size = |s: zeo_config::ByteSize| usize::try_from(s.bytes()).unwrap_or(usize::MAX);
        let count = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        settings.reply_backlog_pause = size(zeo.reply_backlog_pause);
        settings.max_outgoing_backlog = size(zeo.max_client_backlog);
        settings.max_total_backlog = size(zeo.max_total_backlog);
        settings.max_connections = count(zeo.max_connections);
        settings.max_connections_per_address = count(zeo.max_connections_per_address);
        settings.max_transaction_size = zeo.max_transaction_size.map(|s| s.bytes());
        settings.login_timeout =
            (zeo.login_timeout.seconds() > 0).then(|| zeo.login_timeout.as_duration());
        settings.public_status = zeo.public_status;
        settings.conflict_resolution = zeo.native_conflict_resolution;
        settings.group_commit = zeo.group_commit;
        settings.msgpack = zeo
            .msgpack
            .unwrap_or_else(|| std::env::var_os("ZEO_MSGPACK").is_some_and(|v| !v.is_empty()));
        pid_file = zeo.pid_filename.clone();
        settings.monitor_address = zeo.monitor_address.as_ref().map(listen_address);
        settings.metrics_address = zeo.metrics_address.as_ref().map(listen_address);
        if args.address.is_empty() {
            addresses.push(listen_address(&zeo.address));
        }
        if args.filename.is_empty() {
            for storage in &config.storages {
                storages.push(open_storage(&storage.name, &storage.kind, sync_delay)?);
            }
        }
    }
    settings.read_only |= args.read_only;
    settings.msgpack |= args.msgpack;
    settings.group_commit &= !args.no_group_commit;
    if let Some(t) = args.timeout {
        settings.transaction_timeout =
            Some(Duration::try_from_secs_f64(t).map_err(|e| format!("--timeout: {e}"))?);
    }
    if let Some(m) = &args.monitor {
        settings.monitor_address = Some(m.parse::<ListenAddress>().map_err(|e| e.to_string())?);
    }
    if let Some(m) = &args.metrics {
        settings.metrics_address = Some(m.parse::<ListenAddress>().map_err(|e| e.to_string())?);
    }
    if let Some(n) = args.invalidation_queue_size {
        settings.invalidation_queue_size = n;
    }
    for a in &args.address {
        addresses.push(a.parse::<ListenAddress>().map_err(|e| e.to_string())?);
    }
    if addresses.is_empty() {
        addresses.push(
            DEFAULT_ADDRESS
                .parse::<ListenAddress>()
                .map_err(|e| e.to_string())?,
        );
    }
    let mut filenames = args.filename.clone();
    if filenames.is_empty() && storages.is_empty() {
        let default = PathBuf::from(DEFAULT_FILENAME);
        if let Some(dir) = default.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        }
        filenames.push(default);
    }
    for (i, path) in filenames.iter().enumerate() {
        let kind = StorageKind::File(zeo_config::FileStorageConfig::new(path.clone()));
        storages.push(open_storage(&(i + 1).to_string(), &kind, sync_delay)?);
    }
    Ok(Plan {
        settings,
        addresses,
        storages,
        pid_file: args.pid_file.or(pid_file),
        logs,
    })
}

/// The authenticator for `authentication-protocol digest`, with the
/// password database loaded once; `None` when no protocol is configured.
///
/// Any failure stops startup: serving without the authentication the
/// operator asked for would open the storages to anyone.
/// The TLS configuration of `<ssl>`. Any failure stops startup: serving
/// plain TCP where the operator asked for TLS would expose the traffic it
/// was meant to protect.
fn server_tls(ssl: &zeo_config::ServerSsl) -> Result<Arc<zeo_tls::ServerTls>, String> {
    if let Some(function) = &ssl.password_function {
        return Err(zeo_tls::Error::PasswordFunction(function.clone()).to_string());
    }
    let authenticate = match &ssl.authenticate {
        zeo_config::SslAuthenticate::Path(path) => path.clone(),
        zeo_config::SslAuthenticate::Dynamic => return Err(zeo_tls::Error::Dynamic.to_string()),
    };
    let tls = zeo_tls::ServerTls::load(zeo_tls::ServerTlsFiles {
        certificate: ssl.certificate.clone(),
        key: ssl.key.clone(),
        authenticate,
        password_file: ssl.password_file.clone(),
    })
    .map_err(|e| e.to_string())?;
    Ok(Arc::new(tls.with_handshake_timeout(
        ssl.handshake_timeout.as_duration(),
    )))
}

fn authentication(
    zeo: &zeo_config::ZeoConfig,
) -> Result<Option<Arc<zeo_auth::ServerAuthenticator>>, String> {
    let protocol = match zeo.authentication_protocol.as_deref() {
        None | Some("none") => {
            if zeo.authentication_database.is_some() {
                tracing::warn!(
                    "authentication-database is ignored without authentication-protocol"
                );
            }
            return Ok(None);
        }
        Some(p) => p,
    };
    if protocol != zeo_auth::PROTOCOL {
        return Err(format!(
            "authentication-protocol {protocol}: the only protocol is {}",
            zeo_auth::PROTOCOL
        ));
    }
    let path = zeo.authentication_database.as_deref().ok_or_else(|| {
        format!("authentication-protocol {protocol} needs authentication-database")
    })?;
    let database = zeo_auth::PasswordDatabase::load(path, zeo.authentication_realm.as_deref())
        .map_err(|e| format!("authentication-database: {e}"))?;
    if database.is_empty() {
        tracing::warn!(
            path = %path.display(),
            "the password database has no users: no client can log in"
        );
    }
    let users = database.len();
    let authenticator = zeo_auth::ServerAuthenticator::new(database)
        .map_err(|e| format!("authentication-database {}: {e}", path.display()))?;
    tracing::info!(
        realm = authenticator.realm(),
        users,
        "clients must authenticate (ZEO 3/4 digest); only zeo-rs clients can"
    );
    Ok(Some(Arc::new(authenticator)))
}

fn listen_address(address: &SocketAddress) -> ListenAddress {
    match address {
        SocketAddress::Tcp { host, port } => ListenAddress::Tcp {
            host: host.clone(),
            port: *port,
        },
        SocketAddress::Unix(path) => ListenAddress::Unix(path.clone()),
    }
}

fn open_storage(
    name: &str,
    kind: &StorageKind,
    sync_delay: Option<Duration>,
) -> Result<(String, Arc<dyn Storage>, bool), String> {
    match kind {
        StorageKind::File(fs) => {
            let blobs = fs.blob_dir.as_deref().map(|dir| {
                let mode = BlobPackMode::Removed {
                    keep_old: fs.pack_keep_old,
                };
                (dir, mode)
            });
            open_file_storage(name, fs, blobs, sync_delay)
        }
        StorageKind::Mapping(m) => Ok((
            name.to_owned(),
            Arc::new(MappingStorage::new(m.name.clone())),
            true,
        )),
        StorageKind::Blob(blob) => match &*blob.base {
            StorageKind::File(fs) => open_file_storage(
                name,
                fs,
                Some((&blob.blob_dir, BlobPackMode::Undoing)),
                sync_delay,
            ),
            StorageKind::Mapping(m) => {
                let storage = MappingStorage::with_blob_dir(m.name.clone(), &blob.blob_dir)
                    .map_err(|e| format!("opening {}: {e}", blob.blob_dir.display()))?;
                Ok((name.to_owned(), Arc::new(storage), true))
            }
            StorageKind::Blob(_) | StorageKind::RelStorage(_) => Err(format!(
                "storage {name}: a <blobstorage> wraps only <filestorage> or <mappingstorage>"
            )),
        },
        StorageKind::RelStorage(rs) => {
            let mut options = zeo_storage_postgres::PostgresOptions::new(rs.dsn.clone());
            options.name = rs.name.clone().unwrap_or_else(|| name.to_owned());
            options.history = if rs.keep_history {
                zeo_storage_postgres::HistoryMode::Preserving
            } else {
                zeo_storage_postgres::HistoryMode::Free
            };
            options.create_schema = rs.create_schema;
            options.read_only = rs.read_only;
            options.blob_dir = rs.blob_dir.clone();
            options.shared_blob_dir = rs.shared_blob_dir;
            options.commit_lock_timeout = rs.commit_lock_timeout;
            let storage = zeo_storage_postgres::open_storage(options)
                .map_err(|e| format!("opening storage {name} on PostgreSQL: {e}"))?;
            Ok((name.to_owned(), storage, rs.pack_gc))
        }
    }
}

/// A FileStorage, with its blob directory when it has one.
fn open_fs(
    path: &Path,
    options: FileStorageOptions,
    blobs: Option<(&Path, BlobPackMode)>,
) -> zeo_storage::Result<FileStorage> {
    match blobs {
        Some((dir, mode)) => FileStorage::open_with_blobs(path, options, dir)
            .map(|storage| storage.with_blob_pack_mode(mode)),
        None => FileStorage::open(path, options),
    }
}

fn open_file_storage(
    name: &str,
    fs: &zeo_config::FileStorageConfig,
    blobs: Option<(&Path, BlobPackMode)>,
    sync_delay: Option<Duration>,
) -> Result<(String, Arc<dyn Storage>, bool), String> {
    let options = FileStorageOptions {
        read_only: fs.read_only,
        create: fs.create,
        pack_gc: fs.pack_gc,
        sync_delay,
    };
    let storage = open_fs(&fs.path, options, blobs)
        .map_err(|e| format!("opening {}: {e}", fs.path.display()))?;
    Ok((name.to_owned(), Arc::new(storage), fs.pack_gc))
}

type BoxedLayer = Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync>;

/// One `<logfile>`'s layer: its format (or JSON lines) to `writer`.
fn log_layer<W>(
    file: &zeo_config::LogFile,
    writer: W,
    level: tracing_subscriber::filter::LevelFilter,
) -> BoxedLayer
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_writer(writer);
    let format = if file.json {
        LineFormat::Json(JsonFormat)
    } else {
        LineFormat::Python(PythonFormat::new(
            file.format.clone(),
            file.dateformat.clone(),
        ))
    };
    layer.event_format(format).with_filter(level).boxed()
}

/// The rotation a `<logfile>` asks for, in the server's terms.
fn rotation(file: &zeo_config::LogFile) -> Result<Option<Rotation>, String> {
    let count = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
    Ok(match &file.rotation {
        None => None,
        Some(LogRotation::Size {
            max_size,
            old_files,
        }) => Some(Rotation::Size {
            max_bytes: max_size.bytes(),
            old_files: count(*old_files),
        }),
        Some(LogRotation::Timed {
            when,
            interval,
            old_files,
        }) => Some(Rotation::Timed {
            when: When::parse(when).ok_or_else(|| format!("<logfile> when {when:?}: unknown"))?,
            interval: count(*interval),
            old_files: count(*old_files),
        }),
    })
}

fn init_logging(config: Option<&ServerConfig>) -> Result<Vec<ReopenableFile>, String> {
    let mut layers: Vec<BoxedLayer> = Vec::new();
    let mut files = Vec::new();
    let eventlog = config.and_then(|c| c.eventlog.as_ref());
    let env_filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|s| tracing_subscriber::EnvFilter::try_new(s).ok());
    if let Some(eventlog) = eventlog {
        for handler in &eventlog.handlers {
            let LogHandler::File(file) = handler else {
                eprintln!("zeo-server: ignoring an unsupported log handler");
                continue;
            };
            let level = level_filter(eventlog.level.0.max(file.level.0));
            let layer: BoxedLayer = match &file.path {
                LogPath::Stdout => log_layer(file, std::io::stdout, level),
                LogPath::Stderr => log_layer(file, std::io::stderr, level),
                LogPath::File(path) => {
                    let writer = ReopenableFile::rotating(path, rotation(file)?)
                        .map_err(|e| format!("opening log file {}: {e}", path.display()))?;
                    files.push(writer.clone());
                    log_layer(file, writer, level)
                }
            };
            layers.push(layer);
        }
    }
    if layers.is_empty() {
        let level = eventlog.map_or(tracing_subscriber::filter::LevelFilter::INFO, |e| {
            level_filter(e.level.0)
        });
        layers.push(
            tracing_subscriber::fmt::layer()
                .event_format(LineFormat::Python(PythonFormat::new(
                    "%(asctime)s %(levelname)s %(name)s %(message)s",
                    "%Y-%m-%dT%H:%M:%S",
                )))
                .with_ansi(false)
                .with_writer(std::io::stderr)
                .with_filter(level)
                .boxed(),
        );
    }
    let registry = tracing_subscriber::registry().with(layers);
    match env_filter {
        Some(filter) => registry.with(filter).try_init(),
        None => registry.try_init(),
    }
    .map_err(|e| format!("setting up logging: {e}"))?;
    Ok(files)
}

/// SIGUSR1: reads the `<ssl>` certificates, key and CRLs again for new
/// connections; on failure the configuration in use stays.
fn reload_tls(tls: Option<&zeo_tls::ServerTls>) {
    let Some(tls) = tls else {
        tracing::info!("SIGUSR1: no <ssl> configured, nothing to reload");
        return;
    };
    match tls.reload() {
        Ok(()) => tracing::info!("SIGUSR1: TLS certificates, key and CRLs reloaded"),
        Err(err) => tracing::error!(
            "SIGUSR1: TLS reload failed, still serving the previous certificates: {err}"
        ),
    }
}

async fn serve(plan: Plan) -> Result<(), String> {
    let Plan {
        settings,
        addresses,
        storages,
        pid_file,
        logs,
    } = plan;
    // Installed before the addresses are printed: a SIGTERM sent as soon as
    // a supervisor sees them must still shut down cleanly.
    let (term, int, usr2, usr1) = {
        use tokio::signal::unix::{signal, SignalKind};
        let install = |kind| signal(kind).map_err(|e| format!("installing signal handlers: {e}"));
        (
            install(SignalKind::terminate())?,
            install(SignalKind::interrupt())?,
            install(SignalKind::user_defined2())?,
            // SIGHUP stays "exit to be restarted", as runzeo and zdaemon
            // use it; SIGUSR1 is free in both.
            install(SignalKind::user_defined1())?,
        )
    };
    let tls = settings.tls.clone();
    let mut builder = ServerBuilder::new(settings);
    for (name, storage, gc) in storages {
        builder = builder.storage_with_pack_gc(name, storage, gc);
    }
    let server = builder.build().map_err(|e| e.to_string())?;
    for address in &addresses {
        for bound in server.bind(address).map_err(|e| e.to_string())? {
            println!("listening on {bound}");
        }
    }
    for bound in server.bind_monitor().map_err(|e| e.to_string())? {
        println!("monitor listening on {bound}");
    }
    for bound in server.bind_metrics().map_err(|e| e.to_string())? {
        println!("metrics listening on {bound}");
    }
    if let Some(path) = &pid_file {
        std::fs::write(path, format!("{}\n", std::process::id()))
            .map_err(|e| format!("writing pid file {}: {e}", path.display()))?;
    }
    // The last line before serving: whoever reads the addresses knows
    // there are no more.
    println!("ready");
    let _ = std::io::stdout().flush();

    // Every address is bound and the pid file written: units ordered
    // after this one may connect now.
    let notifier = notify::Notifier::from_env();
    notifier.ready();

    let handle = server.handle();
    let signals = tokio::spawn(async move {
        let (mut term, mut int, mut usr2, mut usr1) = (term, int, usr2, usr1);
        loop {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
                _ = int.recv() => { tracing::info!("SIGINT: shutting down"); break; }
                _ = usr2.recv() => {
                    for log in &logs {
                        if let Err(err) = log.reopen() {
                            eprintln!("zeo-server: reopening {}: {err}", log.path().display());
                        }
                    }
                    tracing::info!("log files reopened");
                }
                _ = usr1.recv() => reload_tls(tls.as_deref()),
            }
        }
        notifier.stopping();
        handle.shutdown();
    });
    let result = server.serve(std::future::pending()).await;
    signals.abort();
    if let Some(path) = &pid_file {
        let _ = std::fs::remove_file(path);
    }
    result.map_err(|e| e.to_string())
}
