//! Connections to the database: a small pool for loads, fresh connections
//! for commits, and a back-off after failed attempts so that a database
//! that is down is not hammered by every request.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use postgres::{Client, Config, NoTls};

use crate::error::{Error, Result};
use crate::tls::{client_config, split_dsn, MakeRustls};

/// The first wait after a failed connection attempt; it doubles with each
/// further failure up to [`BACKOFF_MAX`].
const BACKOFF_START: Duration = Duration::from_millis(100);
/// The longest wait between two connection attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// When the next connection attempt is allowed, after failures.
#[derive(Default)]
struct Backoff {
    /// The delay the next failure waits.
    delay: Option<Duration>,
    /// No attempt before this instant.
    not_before: Option<Instant>,
    /// Why the last attempt failed.
    reason: String,
}

/// Connections to one database.
pub(crate) struct Pool {
    config: Config,
    /// TLS as the DSN's `sslmode` asks, `None` for `disable`.
    tls: Option<MakeRustls>,
    idle: Mutex<Vec<Client>>,
    max_idle: usize,
    backoff: Mutex<Backoff>,
    /// Statements every new connection runs first (session settings).
    setup: String,
}

impl Pool {
    /// A pool for `dsn` keeping at most `max_idle` idle connections; each
    /// new connection runs `setup` (SQL) first.
    pub(crate) fn new(dsn: &str, max_idle: usize, setup: String) -> Result<Pool> {
        let (driver_dsn, tls) = split_dsn(dsn)?;
        let tls = client_config(&tls)?;
        let mut config: Config = driver_dsn
            .parse()
            .map_err(|e| Error::Config(format!("dsn {dsn:?}: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("zeo-server");
        }
        Ok(Pool {
            config,
            tls,
            idle: Mutex::new(Vec::new()),
            max_idle: max_idle.max(1),
            backoff: Mutex::new(Backoff::default()),
            setup,
        })
    }

    /// A new connection, unless the back-off says to wait.
    pub(crate) fn connect(&self) -> Result<Client> {
        {
            let b = self.backoff.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(at) = b.not_before {
                let now = Instant::now();
                if now < at {
                    return Err(Error::Unreachable {
                        reason: b.reason.clone(),
                        retry_in: at - now,
                    });
                }
            }
        }
        let connected = match &self.tls {
            Some(tls) => self.config.connect(tls.clone()),
            None => self.config.connect(NoTls),
        };
        let attempt = connected.and_then(|mut client| {
            if !self.setup.is_empty() {
                client.batch_execute(&self.setup)?;
            }
            Ok(client)
        });
        let mut b = self.backoff.lock().unwrap_or_else(|e| e.into_inner());
        match attempt {
            Ok(client) => {
                *b = Backoff::default();
                Ok(client)
            }
            Err(e) => {
                let delay = b.delay.unwrap_or(BACKOFF_START);
                b.not_before = Some(Instant::now() + delay);
                b.delay = Some((delay * 2).min(BACKOFF_MAX));
                b.reason = e.to_string();
                tracing::warn!(error = %e, retry_in = ?delay, "cannot connect to PostgreSQL");
                Err(Error::Postgres(e))
            }
        }
    }

    /// An idle connection, or a new one.
    pub(crate) fn take(&self) -> Result<Client> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match idle {
            Some(client) if !client.is_closed() => Ok(client),
            _ => self.connect(),
        }
    }

    /// Returns a connection to the pool, unless it is broken or the pool
    /// is full.
    pub(crate) fn give_back(&self, client: Client) {
        if client.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.max_idle {
            idle.push(client);
        }
    }

    /// Runs `f` on a pooled connection. When the connection turns out to
    /// be lost (the database restarted since it was opened), `f` runs once
    /// more on a fresh connection: reads are idempotent.
    pub(crate) fn with<T>(&self, mut f: impl FnMut(&mut Client) -> Result<T>) -> Result<T> {
        let mut client = self.take()?;
        match f(&mut client) {
            Err(e) if e.is_connection_lost() => {
                drop(client);
                self.drop_idle();
                let mut client = self.connect()?;
                let result = f(&mut client);
                self.give_back(client);
                result
            }
            result => {
                self.give_back(client);
                result
            }
        }
    }

    /// Closes every idle connection (after a lost one: the others are
    /// probably lost too).
    pub(crate) fn drop_idle(&self) {
        drop_off_runtime(self.take_idle());
    }

    /// Every idle connection, taken out of the pool.
    pub(crate) fn take_idle(&self) -> Vec<Client> {
        std::mem::take(&mut *self.idle.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Closes connections. The driver closes a connection by running its own
/// runtime, which panics on a thread of another runtime: there, a thread
/// of its own does it.
pub(crate) fn drop_off_runtime(clients: Vec<Client>) {
    if clients.is_empty() {
        return;
    }
    if tokio::runtime::Handle::try_current().is_ok() {
        let spawned = std::thread::Builder::new()
            .name("pg-close".into())
            .spawn(move || drop(clients));
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start a thread to close PostgreSQL connections");
        }
    } else {
        drop(clients);
    }
}
