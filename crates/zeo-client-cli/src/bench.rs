//! `zeo-client bench`: round trips, cold loads and commits against one
//! server, at several client counts, each client on its own connection.
//!
//! Every workload runs for a fixed time (or a fixed number of operations)
//! per client count and reports operations per second and latency
//! percentiles. Cold loads use a client with no cache, so each load is a
//! `loadBefore` round trip to the server; `ping`, the smallest request
//! there is, gives the loopback round-trip ceiling the loads are compared
//! with. The `prefetch` workload loads the same objects through
//! `prefetch` in batches of [`PREFETCH_BATCH`] (pipelined `loadBefore`s
//! into the cache, then cache hits), reported per object beside the
//! synchronous load rate. With `--json` every result is one flat JSON object per line, the
//! form `cargo xtask bench` and `tests/python/bench_client.py` share.

use std::io::Write;
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;
use tokio::io::AsyncReadExt;
use zeo_client::{AsyncClientStorage, ClientOptions};
use zeo_storage::{BeginOptions, Oid, Tid, TransactionMetaData};

use crate::error::CliError;

/// Objects per transaction while preparing the load data.
const PREPARE_BATCH: u64 = 1000;
/// Connections opened at once by `--idle` (a listen backlog is often 100).
const IDLE_BATCH: usize = 50;
/// Objects one `prefetch` workload step prefetches and then loads.
const PREFETCH_BATCH: usize = 100;
/// Cache of a `prefetch` client: room for a batch of large objects.
const PREFETCH_CACHE: u64 = 256 * 1024 * 1024;
/// Latency samples kept per client and run; operations beyond it are
/// counted but not timed, which keeps memory bounded on fast machines.
const MAX_SAMPLES: usize = 2_000_000;

/// What `bench` measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// `ping` round trips.
    Ping,
    /// Cold loads of the prepared objects (`loadBefore`, no client cache).
    Load,
    /// Transactions storing one object.
    Commit,
    /// Transactions storing 100 objects.
    Commit100,
    /// Loads of the prepared objects through `prefetch`, a batch at a
    /// time: the batch is prefetched (pipelined requests into an emptied
    /// cache), then each object is loaded from the cache.
    Prefetch,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Ping => "ping",
            Workload::Load => "load",
            Workload::Commit => "commit",
            Workload::Commit100 => "commit100",
            Workload::Prefetch => "prefetch",
        }
    }
}

impl FromStr for Workload {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ping" => Ok(Workload::Ping),
            "load" => Ok(Workload::Load),
            "commit" => Ok(Workload::Commit),
            "commit100" => Ok(Workload::Commit100),
            "prefetch" => Ok(Workload::Prefetch),
            _ => Err(format!(
                "unknown workload {s:?} (ping, load, prefetch, commit, commit100)"
            )),
        }
    }
}

/// `bench` arguments.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Client counts to run every workload at, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4,8")]
    clients: Vec<usize>,
    /// Seconds each workload runs at each client count (default 3).
    #[arg(long, value_name = "SECONDS", conflicts_with = "ops")]
    duration: Option<f64>,
    /// Operations each workload runs at each client count, shared among
    /// the clients, instead of a duration.
    #[arg(long, value_name = "N")]
    ops: Option<u64>,
    /// Size of the objects loaded and stored, in bytes.
    #[arg(long, default_value_t = 1024)]
    object_size: usize,
    /// Objects the load workload reads: oids 1 to N.
    #[arg(long, default_value_t = 10_000)]
    objects: u64,
    /// Create the objects first; the storage must be new, so that they
    /// get oids 1 to N.
    #[arg(long)]
    prepare: bool,
    /// Only create the objects (implies --prepare).
    #[arg(long)]
    prepare_only: bool,
    /// Workloads to run, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "ping,load,prefetch,commit,commit100"
    )]
    workloads: Vec<Workload>,
    /// Instead of measuring: open N idle connections, print one JSON line
    /// when they are all registered, and hold them until stdin closes.
    #[arg(long, value_name = "N")]
    idle: Option<usize>,
    /// Print one JSON object per result line.
    #[arg(long)]
    json: bool,
}

/// How long or how much each run does.
#[derive(Clone, Copy, Debug)]
enum Budget {
    Time(Duration),
    Ops(u64),
}

/// One workload at one client count.
#[derive(Clone, Debug)]
struct RunResult {
    workload: Workload,
    clients: usize,
    ops: u64,
    seconds: f64,
    p50: Duration,
    p99: Duration,
}

impl RunResult {
    fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.ops as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// Runs `bench` with `options` (the server, storage and timeout).
pub async fn run(options: ClientOptions, args: BenchArgs) -> Result<ExitCode, CliError> {
    if args.object_size == 0 || args.object_size > 16 * 1024 * 1024 {
        return Err(CliError::Bench(
            "--object-size must be 1 byte to 16 MiB".into(),
        ));
    }
    if args.clients.is_empty() || args.clients.iter().any(|&c| c == 0 || c > 10_000) {
        return Err(CliError::Bench(
            "--clients must be counts from 1 to 10000".into(),
        ));
    }
    if let Some(n) = args.idle {
        return hold_idle(options, n).await;
    }
    let budget = match (args.duration, args.ops) {
        (_, Some(0)) => return Err(CliError::Bench("--ops must be positive".into())),
        (_, Some(n)) => Budget::Ops(n),
        (Some(s), None) => Budget::Time(
            Duration::try_from_secs_f64(s)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    CliError::Bench(format!("--duration {s}: not a positive duration"))
                })?,
        ),
        (None, None) => Budget::Time(Duration::from_secs(3)),
    };
    let data = object_data(args.object_size);
    if args.prepare || args.prepare_only {
        let started = Instant::now();
        prepare(&options, args.objects, &data).await?;
        let seconds = started.elapsed().as_secs_f64();
        if args.json {
            println!(
                "{}",
                json!({"prepared": args.objects, "object_size": data.len(), "seconds": seconds})
            );
        } else {
            println!(
                "prepared {} objects of {} bytes in {seconds:.1} s",
                args.objects,
                data.len()
            );
        }
        if args.prepare_only {
            return Ok(ExitCode::SUCCESS);
        }
    }
    let mut results = Vec::new();
    for &clients in &args.clients {
        let connected = connect_all(&options, clients, 0).await?;
        for &workload in &args.workloads {
            let result = if workload == Workload::Prefetch {
                // Prefetching needs a cache to land in; the other
                // workloads' clients have none.
                match connect_all(&options, clients, PREFETCH_CACHE).await {
                    Ok(cached) => {
                        let r = run_workload(&cached, workload, budget, &args, &data).await;
                        close_all(&cached);
                        r
                    }
                    Err(e) => Err(e),
                }
            } else {
                run_workload(&connected, workload, budget, &args, &data).await
            };
            let result = match result {
                Ok(r) => r,
                Err(e) => {
                    close_all(&connected);
                    return Err(e);
                }
            };
            print_result(&result, args.json)?;
            results.push(result);
        }
        close_all(&connected);
    }
    if !args.json {
        print_ratios(&results)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Deterministic, mildly varied bytes, so no layer can shortcut all-zero
/// records.
fn object_data(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i * 31 % 251) as u8).collect()
}

fn bench_options(options: &ClientOptions, cache_size: u64) -> ClientOptions {
    let mut options = options.clone();
    // No cache (but for prefetch): every load is a round trip, every
    // object a fresh read.
    options.cache_size = cache_size;
    options.read_only = false;
    options
}

async fn connect_all(
    options: &ClientOptions,
    n: usize,
    cache_size: u64,
) -> Result<Vec<AsyncClientStorage>, CliError> {
    let options = bench_options(options, cache_size);
    let mut clients = Vec::with_capacity(n);
    for batch in (0..n).collect::<Vec<_>>().chunks(IDLE_BATCH) {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in batch {
            tasks.spawn(AsyncClientStorage::connect(options.clone()));
        }
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(c)) => clients.push(c),
                Ok(Err(e)) => {
                    close_all(&clients);
                    return Err(e.into());
                }
                Err(e) => {
                    close_all(&clients);
                    return Err(CliError::Bench(format!("connecting: {e}")));
                }
            }
        }
    }
    Ok(clients)
}

fn close_all(clients: &[AsyncClientStorage]) {
    for c in clients {
        // Bench clients use in-memory caches: closing cannot fail.
        let _ = c.close();
    }
}

/// Creates `count` objects in transactions of [`PREPARE_BATCH`], checking
/// that they got oids 1 to `count`, which the load workloads of both
/// clients rely on.
async fn prepare(options: &ClientOptions, count: u64, data: &[u8]) -> Result<(), CliError> {
    let client = AsyncClientStorage::connect(bench_options(options, 0)).await?;
    let outcome = async {
        let mut next = 1u64;
        while next <= count {
            let end = (next + PREPARE_BATCH).min(count + 1);
            let meta = TransactionMetaData {
                user: Vec::new(),
                description: b"zeo-client bench: prepare".to_vec(),
                extension: Vec::new(),
            };
            let txn = client.tpc_begin(&meta, BeginOptions::default()).await?;
            let stored = async {
                for expected in next..end {
                    let oid = client.new_oid().await?;
                    if oid != Oid(expected) {
                        return Err(CliError::Bench(format!(
                            "the storage handed out oid {oid} where {} was expected: --prepare needs a new storage",
                            Oid(expected)
                        )));
                    }
                    client.store(txn, oid, Tid::ZERO, data)?;
                }
                client.tpc_vote(txn).await?;
                client.tpc_finish(txn).await?;
                Ok(())
            }
            .await;
            if let Err(e) = stored {
                client.tpc_abort(txn).await;
                return Err(e);
            }
            next = end;
        }
        Ok(())
    }
    .await;
    // In-memory cache: closing cannot fail.
    let _ = client.close();
    outcome
}

/// Each client's loop ends when the shared deadline passes or its share of
/// the operations is done.
#[derive(Clone, Copy)]
struct Limit {
    deadline: Option<Instant>,
    ops: u64,
}

impl Limit {
    fn more(&self, done: u64) -> bool {
        done < self.ops && self.deadline.is_none_or(|d| Instant::now() < d)
    }
}

async fn run_workload(
    clients: &[AsyncClientStorage],
    workload: Workload,
    budget: Budget,
    args: &BenchArgs,
    data: &[u8],
) -> Result<RunResult, CliError> {
    if matches!(workload, Workload::Load | Workload::Prefetch) {
        // One load up front turns a missing data set into a clear error
        // instead of a run of POSKeyErrors.
        if let Some(c) = clients.first() {
            match c.load(Oid(args.objects)).await {
                Ok(_) => {}
                Err(zeo_client::Error::Storage(zeo_storage::Error::PosKey { .. })) => {
                    return Err(CliError::Bench(format!(
                        "oid {} does not exist: prepare the data with --prepare on a new storage",
                        Oid(args.objects)
                    )))
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    let n = clients.len() as u64;
    let share = match budget {
        Budget::Ops(total) => total.div_ceil(n),
        Budget::Time(_) => u64::MAX,
    };
    // Each client sets up (commit workloads create their objects) before
    // the clock starts; the barrier then starts them together.
    let barrier = Arc::new(tokio::sync::Barrier::new(clients.len() + 1));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, client) in clients.iter().enumerate() {
        let client = client.clone();
        let barrier = barrier.clone();
        let data: Arc<[u8]> = Arc::from(data);
        let objects = args.objects;
        tasks.spawn(async move {
            let state = ClientState::setup(&client, workload, i as u64, &data).await;
            barrier.wait().await;
            let limit = Limit {
                deadline: match budget {
                    Budget::Time(d) => Some(Instant::now() + d),
                    Budget::Ops(_) => None,
                },
                ops: share,
            };
            let mut state = state?;
            let mut samples = Vec::new();
            let mut done = 0u64;
            while limit.more(done) {
                let t = Instant::now();
                let n = state.step(&client, objects, &data, share - done).await?;
                if samples.len() < MAX_SAMPLES {
                    // A batch's time is shared by its objects.
                    samples.push(t.elapsed() / n.max(1) as u32);
                }
                done += n;
            }
            Ok::<_, CliError>((done, samples))
        });
    }
    barrier.wait().await;
    let started = Instant::now();
    let mut ops = 0;
    let mut samples = Vec::new();
    let mut failure = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok((done, s))) => {
                ops += done;
                samples.extend(s);
            }
            Ok(Err(e)) => failure = failure.or(Some(e)),
            Err(e) => {
                failure = failure.or(Some(CliError::Bench(format!("a client task failed: {e}"))))
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    if let Some(e) = failure {
        return Err(e);
    }
    samples.sort_unstable();
    Ok(RunResult {
        workload,
        clients: clients.len(),
        ops,
        seconds,
        p50: percentile(&samples, 0.50),
        p99: percentile(&samples, 0.99),
    })
}

/// The next oid of a xorshift sequence over oids 1 to `objects`.
fn next_oid(x: &mut u64, objects: u64) -> Oid {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    Oid(1 + *x % objects.max(1))
}

/// The nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// What one client needs between operations.
enum ClientState {
    Ping,
    /// xorshift state choosing the next oid.
    Load(u64),
    /// xorshift state, and the batch's oids.
    Prefetch(u64, Vec<Oid>),
    /// The client's own objects and their current serial.
    Commit {
        oids: Vec<Oid>,
        serial: Tid,
    },
}

impl ClientState {
    async fn setup(
        client: &AsyncClientStorage,
        workload: Workload,
        index: u64,
        data: &[u8],
    ) -> Result<ClientState, CliError> {
        match workload {
            Workload::Ping => Ok(ClientState::Ping),
            // Distinct non-zero seeds, so that clients read different
            // objects.
            Workload::Load => Ok(ClientState::Load(0x9e37_79b9_7f4a_7c15 ^ (index + 1))),
            Workload::Prefetch => Ok(ClientState::Prefetch(
                0x9e37_79b9_7f4a_7c15 ^ (index + 1),
                Vec::with_capacity(PREFETCH_BATCH),
            )),
            Workload::Commit | Workload::Commit100 => {
                let count = if workload == Workload::Commit { 1 } else { 100 };
                let mut oids = Vec::with_capacity(count);
                for _ in 0..count {
                    oids.push(client.new_oid().await?);
                }
                let mut state = ClientState::Commit {
                    oids,
                    serial: Tid::ZERO,
                };
                // The first commit creates the objects; the measured ones
                // then update them, as an application mostly does.
                state.step(client, 0, data, 1).await?;
                Ok(state)
            }
        }
    }

    /// One operation (a batch of up to `left` for prefetch); returns how
    /// many.
    async fn step(
        &mut self,
        client: &AsyncClientStorage,
        objects: u64,
        data: &[u8],
        left: u64,
    ) -> Result<u64, CliError> {
        match self {
            ClientState::Ping => Ok(client.ping().await.map(|()| 1)?),
            ClientState::Load(x) => {
                let oid = next_oid(x, objects);
                match client.load_before(oid, Tid::MAX).await? {
                    Some(_) => Ok(1),
                    None => Err(CliError::Bench(format!(
                        "oid {oid} has no current revision"
                    ))),
                }
            }
            ClientState::Prefetch(x, batch) => {
                batch.clear();
                let n = left.min(PREFETCH_BATCH as u64);
                batch.extend((0..n).map(|_| next_oid(x, objects)));
                // Every batch starts from an empty cache, so that nothing
                // but this batch's requests fills it.
                client.cache().clear();
                client.prefetch(batch, Tid::MAX).await?;
                for &oid in batch.iter() {
                    if client.cache().load(oid).is_none() {
                        return Err(CliError::Bench(format!(
                            "oid {oid} was not in the cache after prefetch"
                        )));
                    }
                }
                Ok(batch.len() as u64)
            }
            ClientState::Commit { oids, serial } => {
                let meta = TransactionMetaData::default();
                let txn = client.tpc_begin(&meta, BeginOptions::default()).await?;
                let committed = async {
                    for &oid in oids.iter() {
                        client.store(txn, oid, *serial, data)?;
                    }
                    client.tpc_vote(txn).await?;
                    Ok::<_, CliError>(client.tpc_finish(txn).await?)
                }
                .await;
                match committed {
                    Ok(tid) => {
                        *serial = tid;
                        Ok(1)
                    }
                    Err(e) => {
                        client.tpc_abort(txn).await;
                        Err(e)
                    }
                }
            }
        }
    }
}

fn print_result(r: &RunResult, json: bool) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    if json {
        let line = json!({
            "client": "rust",
            "workload": r.workload.name(),
            "clients": r.clients,
            "ops": r.ops,
            "seconds": r.seconds,
            "ops_per_sec": r.rate(),
            "p50_us": r.p50.as_secs_f64() * 1e6,
            "p99_us": r.p99.as_secs_f64() * 1e6,
        });
        writeln!(out, "{line}")?;
    } else {
        writeln!(
            out,
            "{:<10} {:>3} clients  {:>10.0} ops/s  p50 {:>8.3} ms  p99 {:>8.3} ms  ({} ops in {:.2} s)",
            r.workload.name(),
            r.clients,
            r.rate(),
            r.p50.as_secs_f64() * 1e3,
            r.p99.as_secs_f64() * 1e3,
            r.ops,
            r.seconds
        )?;
    }
    Ok(())
}

/// Loads as a fraction of ping round trips, and prefetched loads as a
/// multiple of synchronous loads and of ping round trips, per client count.
fn print_ratios(results: &[RunResult]) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    let find = |workload: Workload, clients: usize| {
        results
            .iter()
            .find(|r| r.workload == workload && r.clients == clients && r.rate() > 0.0)
    };
    for load in results.iter().filter(|r| r.workload == Workload::Load) {
        if let Some(ping) = find(Workload::Ping, load.clients) {
            writeln!(
                out,
                "loads at {} clients: {:.0}% of ping round trips",
                load.clients,
                100.0 * load.rate() / ping.rate()
            )?;
        }
    }
    for prefetch in results.iter().filter(|r| r.workload == Workload::Prefetch) {
        let mut line = format!("prefetched loads at {} clients:", prefetch.clients);
        if let Some(load) = find(Workload::Load, prefetch.clients) {
            line += &format!(" {:.1}x synchronous loads", prefetch.rate() / load.rate());
        }
        if let Some(ping) = find(Workload::Ping, prefetch.clients) {
            line += &format!(", {:.1}x ping round trips", prefetch.rate() / ping.rate());
        }
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// Opens `n` connections that handshake, register and verify, then sit
/// idle: what a server holds for a fleet of quiet application processes.
async fn hold_idle(options: ClientOptions, n: usize) -> Result<ExitCode, CliError> {
    let mut options = options;
    options.read_only = true;
    options.cache_size = 0;
    let started = Instant::now();
    let clients = connect_all(&options, n, 0).await?;
    let seconds = started.elapsed().as_secs_f64();
    {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "{}",
            json!({"idle_connections": clients.len(), "seconds": seconds})
        )?;
        out.flush()?;
    }
    // Held until whoever started us closes our stdin (or types Ctrl-D).
    let mut sink = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    close_all(&clients);
    Ok(ExitCode::SUCCESS)
}
