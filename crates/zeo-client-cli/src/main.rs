//! The `zeo-client` command: ZEO's client-side tools in one binary —
//! `up` (zeoup), `pack` (zeopack), `status`, `info`, `history`, `cat`,
//! `refs`, `log` and `bench`. Argument parsing and wiring only: the client is
//! `zeo-client`'s [`AsyncClientStorage`](zeo_client::AsyncClientStorage);
//! output formatting lives in `render`, the benchmark in `bench`.

#![warn(missing_docs)]

mod bench;
mod commands;
mod error;
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
    /// Server address: HOST:PORT, PORT, [IPV6]:PORT or a Unix socket path.
    /// Repeat for replicas of the same storage; the first to answer wins.
    #[arg(
        short = 's',
        long = "server",
        value_name = "ADDR",
        default_value = "127.0.0.1:8100",
        global = true
    )]
    servers: Vec<String>,
    /// Storage name on the server.
    #[arg(short = 'S', long, default_value = "1", global = true)]
    storage: String,
    /// Seconds to wait for a connection; also bounds every command except
    /// `pack` and `bench`.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0, global = true)]
    timeout: f64,
    /// Show the client's warnings on stderr (-vv: its informational log).
    #[arg(short, long, action = ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
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
        #[arg(long)]
        json: bool,
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
    /// Measure loads, commits and round trips against the server.
    Bench(bench::BenchArgs),
}

/// Client options every command starts from: no client cache (every
/// command wants the server's answer), read-only unless the command writes.
fn client_options(cli: &Cli, read_only: bool) -> Result<ClientOptions, CliError> {
    let servers = cli
        .servers
        .iter()
        .map(|s| s.parse::<ServerAddress>())
        .collect::<Result<Vec<_>, _>>()?;
    let mut options = ClientOptions::new(servers);
    options.storage = cli.storage.clone();
    options.cache_size = 0;
    options.read_only = read_only;
    options.wait_timeout = timeout(cli.timeout)?;
    options.min_disconnect_poll = Duration::from_millis(200);
    options.max_disconnect_poll = Duration::from_secs(2);
    options.client_label = Some("zeo-client".into());
    Ok(options)
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
        Command::Up { commit } => *commit,
        Command::Bench(_) => true,
        _ => false,
    };
    let options = client_options(&cli, !writes)?;
    match cli.command {
        Command::Up { commit } => commands::up(options, limit, commit).await,
        Command::Pack { days } => commands::pack(options, days).await,
        Command::Status { json } => commands::bounded(limit, commands::status(options, json)).await,
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
