//! The `zeo-client` command: ZEO's client-side tools in one binary —
//! `up` (zeoup), `pack` (zeopack), `status`, `info`, `history`, `cat`,
//! `refs`, `log`, `blob get` and `bench`. Argument parsing and wiring only: the client is
//! `zeo-client`'s [`AsyncClientStorage`](zeo_client::AsyncClientStorage);
//! output formatting lives in `render`, the benchmark in `bench`.

#![warn(missing_docs)]

mod bench;
mod commands;
mod error;
mod nagios;
mod render;

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgAction, Parser, Subcommand};
use zeo_client::{ClientOptions, ServerAddress};

use crate::error::CliError;

#[derive(Parser, Debug)]
#[command(
    name = "zeo-client",
    version,
    about = "ZEO client tools: health check, pack, status, object inspection and benchmarks"
)]
struct Cli {
    // `[IPV6]` is --help text, not a link.
    #[allow(rustdoc::broken_intra_doc_links)]
    /// Server address: HOST:PORT, PORT, `[IPV6]:PORT` or a Unix socket path.
    /// Repeat for replicas of the same storage; the first to answer wins.
    /// Default 127.0.0.1:8100, or the servers of `-C`'s section.
    #[arg(short = 's', long = "server", value_name = "ADDR", global = true)]
    servers: Vec<String>,
    /// Storage name on the server (default `1`, or `-C`'s `storage`).
    #[arg(short = 'S', long, global = true)]
    storage: Option<String>,
    /// Read the servers, storage and `<ssl>` settings from the
    /// `<clientstorage>` (with `%import ZEO`) or `<zeoclient>` section of
    /// this ZConfig file, so one file configures Python and Rust clients;
    /// options given here win.
    #[arg(short = 'C', long = "configure", value_name = "FILE", global = true)]
    configure: Option<std::path::PathBuf>,
    #[command(flatten)]
    tls: TlsArgs,
    /// Seconds to wait for a connection; also bounds every command except
    /// `pack` and `bench`.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0, global = true)]
    timeout: f64,
    /// Show the client's warnings on stderr (-vv: its informational log).
    #[arg(short, long, action = ArgAction::Count, global = true)]
    verbose: u8,
    /// Log in as this user (servers with `authentication-protocol
    /// digest`); the password comes from --password-file or the
    /// ZEO_PASSWORD environment variable.
    #[arg(long, value_name = "USER", global = true)]
    username: Option<String>,
    /// Read the password from the first line of this file.
    #[arg(long, value_name = "PATH", global = true, requires = "username")]
    password_file: Option<std::path::PathBuf>,
    /// The realm the server must announce (default: the server's).
    #[arg(long, value_name = "REALM", global = true, requires = "username")]
    realm: Option<String>,
    #[command(subcommand)]
    command: Command,
}

/// TLS to the server, as ZEO's client `<ssl>` section configures it.
#[derive(clap::Args, Debug, Default)]
struct TlsArgs {
    /// Connect with TLS, presenting this PEM certificate (chain); ZEO
    /// servers require one.
    #[arg(long, value_name = "FILE", global = true)]
    ssl_certificate: Option<std::path::PathBuf>,
    /// The certificate's PEM private key (unencrypted), if not in the
    /// certificate file.
    #[arg(long, value_name = "FILE", global = true)]
    ssl_key: Option<std::path::PathBuf>,
    /// A file whose first line is the password of an encrypted (PKCS#8)
    /// key.
    #[arg(long, value_name = "FILE", global = true)]
    ssl_password_file: Option<std::path::PathBuf>,
    /// CA file or directory (or the server's own certificate) to check the
    /// server's certificate against; the system's CAs when not given.
    #[arg(long, value_name = "PATH", global = true)]
    ssl_authenticate: Option<std::path::PathBuf>,
    /// The name the server's certificate must carry (default: the host of
    /// the server address).
    #[arg(long, value_name = "NAME", global = true)]
    ssl_server_hostname: Option<String>,
    /// Do not check the server certificate's host name.
    #[arg(long, global = true)]
    ssl_no_check_hostname: bool,
}

impl TlsArgs {
    fn given(&self) -> bool {
        self.ssl_certificate.is_some()
            || self.ssl_key.is_some()
            || self.ssl_password_file.is_some()
            || self.ssl_authenticate.is_some()
            || self.ssl_server_hostname.is_some()
            || self.ssl_no_check_hostname
    }

    /// These options over `base` (the `-C` file's `<ssl>`, if any).
    fn apply(&self, base: Option<&zeo_tls::ClientTls>) -> Result<zeo_tls::ClientTls, CliError> {
        let mut files = base.map(|t| t.files().clone()).unwrap_or_default();
        if let Some(cert) = &self.ssl_certificate {
            files.certificate = Some(cert.clone());
        }
        if let Some(key) = &self.ssl_key {
            files.key = Some(key.clone());
        }
        if let Some(file) = &self.ssl_password_file {
            files.password_file = Some(file.clone());
        }
        if let Some(auth) = &self.ssl_authenticate {
            files.authenticate = Some(auth.clone());
        }
        if let Some(name) = &self.ssl_server_hostname {
            files.server_hostname = Some(name.clone());
        }
        if self.ssl_no_check_hostname {
            files.check_hostname = false;
        }
        zeo_tls::ClientTls::load(files).map_err(|e| CliError::Usage(format!("--ssl-*: {e}")))
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check that the server is up, like ZEO's zeoup: connect, verify, load
    /// the root object and optionally commit an empty transaction. Exit 0
    /// when healthy, 1 otherwise.
    Up {
        /// Also commit an empty transaction (proves the commit lock and the
        /// storage's write path work).
        #[arg(long)]
        commit: bool,
        /// Print one JSON object (with "healthy") instead of lines.
        #[arg(long, conflicts_with = "nagios")]
        json: bool,
        /// Print a Nagios plugin's output; exit 0 (OK) or 2 (CRITICAL).
        #[arg(long)]
        nagios: bool,
    },
    /// Pack the storage on the server, like ZEO's zeopack.
    Pack {
        /// Keep the history of the last DAYS days (fractions allowed).
        #[arg(short, long, default_value_t = 0.0)]
        days: f64,
    },
    /// The server's `server_status` counters.
    Status {
        /// Print JSON instead of lines.
        #[arg(long, conflicts_with = "nagios")]
        json: bool,
        /// Print them as zeo-nagios does (status line, performance data)
        /// and exit with the level: 0 OK, 1 WARNING (empty storage), 2
        /// CRITICAL (no answer).
        #[arg(long)]
        nagios: bool,
        /// With --nagios: keep the counters in this file and report rates
        /// since the previous run (zeo-nagios -s; same file format).
        #[arg(long, value_name = "PATH", requires = "nagios")]
        state_file: Option<std::path::PathBuf>,
        /// With --state-file: the time unit of rates (zeo-nagios -u).
        #[arg(long, value_enum, default_value = "minutes", requires = "state_file")]
        per: nagios::Per,
    },
    /// The storage's `get_info`.
    Info {
        /// Print JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// An object's history, newest first.
    History {
        /// The oid: 0x-prefixed or 16-digit hex, else decimal.
        oid: String,
        /// How many revisions to list.
        #[arg(long, default_value_t = 10)]
        size: usize,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Write an object's record to stdout.
    Cat {
        /// The oid: 0x-prefixed or 16-digit hex, else decimal.
        oid: String,
        /// That revision (its tid, hex or decimal) instead of the current one.
        #[arg(long, value_name = "TID")]
        serial: Option<String>,
        /// Write hex instead of raw bytes.
        #[arg(long, conflicts_with = "decode")]
        hex: bool,
        /// Print the record's class and state as an indented tree
        /// (persistent references as oids with their class, long values
        /// abbreviated). Nothing in the record is executed.
        #[arg(long)]
        decode: bool,
        /// With --decode: print one JSON object instead of a tree.
        #[arg(long, requires = "decode")]
        json: bool,
    },
    /// List the objects an object references, with their classes; with
    /// --back, the objects that reference it (a walk over every current
    /// record, bounded by --max-objects rather than --timeout).
    Refs {
        /// The oid: 0x-prefixed or 16-digit hex, else decimal.
        oid: String,
        /// List the objects referring to OID instead.
        #[arg(long)]
        back: bool,
        /// With --back: stop after reading this many records.
        #[arg(long, value_name = "N", default_value_t = 10_000_000)]
        max_objects: u64,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Recent transactions, newest first (from the server's undo log).
    Log {
        /// How many transactions.
        #[arg(short = 'n', default_value_t = 20)]
        count: usize,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Blobs: `blob get` writes one to stdout or a file, `blob put`
    /// commits one.
    Blob {
        #[command(subcommand)]
        command: BlobCommand,
    },
    /// Measure loads, commits and round trips against the server.
    Bench(bench::BenchArgs),
}

#[derive(Subcommand, Debug)]
enum BlobCommand {
    /// Write an object's blob to stdout (or to --output), streamed. It is
    /// downloaded through --blob-dir (or the `-C` section's `blob-dir`),
    /// else through a temporary directory removed afterwards; --timeout
    /// bounds the whole download.
    Get {
        /// The oid: 0x-prefixed or 16-digit hex, else decimal.
        oid: String,
        /// That revision (its tid, hex or decimal) instead of the current
        /// one.
        #[arg(long, value_name = "TID")]
        tid: Option<String>,
        /// Write to this file instead of stdout.
        #[arg(short, long, value_name = "FILE")]
        output: Option<std::path::PathBuf>,
        /// A blob cache directory to use and keep (ZEO's `blob-dir`); a
        /// Python client may share it.
        #[arg(long, value_name = "DIR")]
        blob_dir: Option<std::path::PathBuf>,
        /// --blob-dir is the server's own blob directory: read the file
        /// there instead of downloading it.
        #[arg(long, requires = "blob_dir")]
        shared_blob_dir: bool,
    },
    /// Commit FILE as a blob, streamed: a new revision of the blob object
    /// --oid, or a new object that nothing references yet (a pack with
    /// garbage collection removes it unless an application links it).
    /// Prints the oid and the tid.
    Put {
        /// The file to store.
        file: std::path::PathBuf,
        /// Store a new revision of this blob object (0x-prefixed or
        /// 16-digit hex, else decimal).
        #[arg(long, value_name = "OID")]
        oid: Option<String>,
        /// A blob cache directory to use and keep (ZEO's `blob-dir`).
        #[arg(long, value_name = "DIR")]
        blob_dir: Option<std::path::PathBuf>,
    },
}

/// The server asked when neither `-s` nor `-C` names one.
const DEFAULT_SERVER: &str = "127.0.0.1:8100";

/// Client options every command starts from: no client cache (every
/// command wants the server's answer), read-only unless the command writes.
fn client_options(cli: &Cli, read_only: bool) -> Result<ClientOptions, CliError> {
    let mut options = match &cli.configure {
        Some(path) => {
            let config = zeo_config::ClientConfig::from_path(path)
                .map_err(|e| CliError::Usage(format!("-C {}: {e}", path.display())))?;
            ClientOptions::try_from(&config)
                .map_err(|e| CliError::Usage(format!("-C {}: {e}", path.display())))?
        }
        None => ClientOptions::new(vec![DEFAULT_SERVER.parse::<ServerAddress>()?]),
    };
    if !cli.servers.is_empty() {
        options.servers = cli
            .servers
            .iter()
            .map(|s| s.parse::<ServerAddress>())
            .collect::<Result<Vec<_>, _>>()?;
    }
    if let Some(storage) = &cli.storage {
        options.storage = storage.clone();
    }
    if cli.tls.given() {
        options.tls = Some(cli.tls.apply(options.tls.as_ref())?);
    }
    options.cache_size = 0;
    options.cache_path = None;
    options.cache_client = None;
    options.read_only = read_only;
    options.wait_timeout = timeout(cli.timeout)?;
    options.min_disconnect_poll = Duration::from_millis(200);
    options.max_disconnect_poll = Duration::from_secs(2);
    options.client_label = Some("zeo-client".into());
    if let Some(user) = &cli.username {
        options.username = Some(user.clone());
        options.realm = cli.realm.clone();
        options.password = Some(password(cli.password_file.as_deref())?);
    }
    Ok(options)
}

/// The password: the first line of `file`, else `$ZEO_PASSWORD`.
fn password(file: Option<&std::path::Path>) -> Result<String, CliError> {
    match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| CliError::Usage(format!("--password-file {}: {e}", path.display())))?;
            Ok(text.lines().next().unwrap_or("").to_owned())
        }
        None => std::env::var("ZEO_PASSWORD").map_err(|_| {
            CliError::Usage("--username needs --password-file or ZEO_PASSWORD".into())
        }),
    }
}

fn timeout(seconds: f64) -> Result<Duration, CliError> {
    Duration::try_from_secs_f64(seconds)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| CliError::Usage(format!("--timeout {seconds}: not a positive duration")))
}

async fn run(cli: Cli) -> Result<ExitCode, CliError> {
    let limit = timeout(cli.timeout)?;
    let writes = match &cli.command {
        Command::Up { commit, .. } => *commit,
        Command::Bench(_) => true,
        Command::Blob {
            command: BlobCommand::Put { .. },
        } => true,
        _ => false,
    };
    let mut options = client_options(&cli, !writes)?;
    if !matches!(cli.command, Command::Blob { .. }) {
        // Only `blob` reads blobs: the others leave a `-C` file's blob
        // directory alone.
        options.blob_dir = None;
    }
    match cli.command {
        Command::Up {
            commit,
            json,
            nagios,
        } => {
            let output = match (json, nagios) {
                (_, true) => commands::Output::Nagios,
                (true, _) => commands::Output::Json,
                _ => commands::Output::Text,
            };
            commands::up(options, limit, commit, output).await
        }
        Command::Pack { days } => commands::pack(options, days).await,
        Command::Status {
            nagios: true,
            state_file,
            per,
            ..
        } => commands::nagios_status(options, limit, state_file, per).await,
        Command::Status { json, .. } => {
            commands::bounded(limit, commands::status(options, json)).await
        }
        Command::Info { json } => commands::bounded(limit, commands::info(options, json)).await,
        Command::History { oid, size, json } => {
            let oid = render::parse_oid(&oid)?;
            commands::bounded(limit, commands::history(options, oid, size, json)).await
        }
        Command::Cat {
            oid,
            serial,
            hex,
            decode,
            json,
        } => {
            let oid = render::parse_oid(&oid)?;
            let serial = serial.as_deref().map(render::parse_tid).transpose()?;
            let format = match (decode, json, hex) {
                (true, true, _) => commands::CatFormat::Json,
                (true, false, _) => commands::CatFormat::Tree,
                (false, _, true) => commands::CatFormat::Hex,
                (false, _, false) => commands::CatFormat::Raw,
            };
            commands::bounded(limit, commands::cat(options, oid, serial, format)).await
        }
        Command::Refs {
            oid,
            back: false,
            json,
            ..
        } => {
            let oid = render::parse_oid(&oid)?;
            commands::bounded(limit, commands::refs(options, oid, json)).await
        }
        Command::Refs {
            oid,
            back: true,
            max_objects,
            json,
        } => {
            let oid = render::parse_oid(&oid)?;
            commands::back_refs(options, oid, max_objects, json).await
        }
        Command::Log { count, json } => {
            commands::bounded(limit, commands::log(options, count, json)).await
        }
        Command::Blob {
            command:
                BlobCommand::Get {
                    oid,
                    tid,
                    output,
                    blob_dir,
                    shared_blob_dir,
                },
        } => {
            let oid = render::parse_oid(&oid)?;
            let tid = tid.as_deref().map(render::parse_tid).transpose()?;
            if let Some(dir) = blob_dir {
                options.blob_dir = Some(dir);
                options.shared_blob_dir = shared_blob_dir;
            }
            commands::bounded(limit, commands::blob_get(options, oid, tid, output)).await
        }
        Command::Blob {
            command:
                BlobCommand::Put {
                    file,
                    oid,
                    blob_dir,
                },
        } => {
            let oid = oid.as_deref().map(render::parse_oid).transpose()?;
            if let Some(dir) = blob_dir {
                options.blob_dir = Some(dir);
                options.shared_blob_dir = false;
            }
            commands::bounded(limit, commands::blob_put(options, oid, file)).await
        }
        Command::Bench(args) => bench::run(options, args).await,
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Help and version go to stdout with status 0; usage errors to
        // stderr with status 2, as clap prints them.
        Err(e) => e.exit(),
    };
    let level = match cli.verbose {
        0 => "off",
        1 => "warn",
        _ => "info",
    };
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::new(level))
        .try_init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("zeo-client: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(run(cli));
    // The client's background tasks end with the runtime; do not wait for
    // a reconnect back-off to run out.
    runtime.shutdown_timeout(Duration::from_millis(100));
    match outcome {
        Ok(code) => code,
        Err(e) => {
            let _ = std::io::stdout().flush();
            eprintln!("zeo-client: {e}");
            ExitCode::FAILURE
        }
    }
}
