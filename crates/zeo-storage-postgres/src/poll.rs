//! Learning of commits made by other writers (other zeo-servers, Python
//! RelStorage applications): the [`SharedCommits`] capability.
//!
//! The authority is a query, `tid > last` in tid order
//! ([`crate::changes_after`]): one entry per transaction in the
//! history-preserving schema; in the history-free one only the rows still
//! current are left, so the server collapses what one read finds into one
//! invalidation ([`SharedCommits::keeps_intermediate_tids`] is `false`).
//!
//! What says when to read is a `LISTEN` on a connection of its own, woken
//! by a `NOTIFY` that a trigger of ours sends at every commit (statement
//! level, on `transaction` in the history-preserving schema, on
//! `object_state` in the history-free one; PostgreSQL delivers it at
//! COMMIT, so RelStorage's commits wake us too, without RelStorage
//! knowing). The trigger is created when the first wait finds it missing.
//! When it cannot be (no privilege, a hot standby, where neither `LISTEN`
//! nor DDL works), the wait only waits out its timeout: the server then
//! polls at its safety-net interval, the only mechanism a standby has.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use postgres::fallible_iterator::FallibleIterator;
use postgres::Client;
use zeo_storage::{ForeignCommit, Result, SharedCommits, Storage, Tid};

use crate::error::Error;
use crate::options::HistoryMode;
use crate::storage::PostgresStorage;

/// The channel our trigger notifies.
pub(crate) const CHANNEL: &str = "zeo_rs_commits";

/// The trigger function: one notification per committing statement
/// (PostgreSQL folds identical notifications of one transaction into one).
const FUNCTION: &str = "CREATE OR REPLACE FUNCTION zeo_rs_notify_commit() RETURNS trigger \
     LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_notify('zeo_rs_commits', ''); RETURN NULL; END $$";

/// The trigger on the table every commit writes in `mode`.
fn trigger_sql(mode: HistoryMode) -> String {
    let (table, events) = match mode {
        HistoryMode::Preserving => ("\"transaction\"", "INSERT"),
        HistoryMode::Free => ("object_state", "INSERT OR UPDATE"),
    };
    format!(
        "CREATE OR REPLACE TRIGGER zeo_rs_notify_commit AFTER {events} ON {table} \
         FOR EACH STATEMENT EXECUTE FUNCTION zeo_rs_notify_commit()"
    )
}

/// How long a failed `LISTEN` set-up is not retried: the wait polls
/// meanwhile.
const RETRY_LISTEN: Duration = Duration::from_secs(30);

/// The listening connection of one storage.
#[derive(Default)]
pub(crate) struct Listener {
    state: Mutex<ListenState>,
}

#[derive(Default)]
struct ListenState {
    client: Option<Client>,
    /// No new attempt to listen before this, after a failure.
    not_before: Option<Instant>,
    /// Whether the failure was logged (one line per outage).
    logged: bool,
}

impl Listener {
    fn state(&self) -> MutexGuard<'_, ListenState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the listening connection away (at close).
    pub(crate) fn take(&self) -> Option<Client> {
        self.state().client.take()
    }
}

/// Creates the trigger if missing, and listens.
fn listen(client: &mut Client, mode: HistoryMode) -> std::result::Result<(), postgres::Error> {
    let exists: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'zeo_rs_notify_commit')",
            &[],
        )?
        .get(0);
    if !exists {
        // Two servers may race here: both statements replace.
        client.batch_execute(&format!("{FUNCTION}; {}", trigger_sql(mode)))?;
    }
    client.batch_execute(&format!("LISTEN {CHANNEL}"))
}

impl PostgresStorage {
    /// The wait, on the listening connection (set up on first use).
    fn wait_notified(&self, timeout: Duration) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        let mut state = self.listener.state();
        if state.client.is_none() && state.not_before.is_none_or(|t| Instant::now() >= t) {
            let attempt = self.pool.connect().and_then(|mut client| {
                listen(&mut client, self.history_mode())?;
                Ok(client)
            });
            match attempt {
                Ok(client) => {
                    if state.logged {
                        tracing::info!(storage = %self.name(), "listening for commits again");
                    }
                    *state = ListenState {
                        client: Some(client),
                        ..ListenState::default()
                    };
                }
                Err(err) => {
                    if !state.logged {
                        tracing::warn!(storage = %self.name(), %err,
                            "cannot listen for commits (polling only)");
                    }
                    state.logged = true;
                    state.not_before = Some(Instant::now() + RETRY_LISTEN);
                }
            }
        }
        let Some(client) = state.client.as_mut() else {
            drop(state);
            // Polling only: wait out the timeout.
            std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
            return Ok(false);
        };
        let waited = {
            let mut notifications = client.notifications();
            let left = deadline.saturating_duration_since(Instant::now());
            let first = notifications.timeout_iter(left).next();
            if let Ok(Some(_)) = first {
                // Drain what else arrived: one read covers them all.
                let mut more = notifications.iter();
                while let Ok(Some(_)) = more.next() {}
            }
            first
        };
        let woken = match waited {
            Ok(found) => found.is_some(),
            Err(err) => {
                // The connection dropped: listen again at the next wait;
                // the server reads meanwhile anyway.
                tracing::warn!(storage = %self.name(), %err, "the listening connection was lost");
                state.client = None;
                return Err(Error::Postgres(err).into());
            }
        };
        Ok(woken)
    }
}

impl SharedCommits for PostgresStorage {
    fn commits_after(&self, after: Tid, limit: usize) -> Result<Vec<ForeignCommit>> {
        self.check_open()?;
        let mode = self.history_mode();
        // Not behind the storage's read gate: the server reads this while
        // announcing a commit of its own.
        let changes = self
            .pool
            .with(|c| crate::changes_after(c, mode, after, limit))?;
        Ok(changes
            .into_iter()
            .map(|(tid, oids)| ForeignCommit { tid, oids })
            .collect())
    }

    fn wait_for_commits(&self, timeout: Duration) -> Result<bool> {
        self.check_open()?;
        self.wait_notified(timeout)
    }

    fn keeps_intermediate_tids(&self) -> bool {
        self.history_mode() == HistoryMode::Preserving
    }
}
