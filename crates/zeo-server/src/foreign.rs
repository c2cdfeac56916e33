//! The watcher of a storage other writers share: it announces their
//! commits to this server's clients as ZEO invalidations.
//!
//! One task per shared storage loops: wait (on a blocking thread) until
//! the backend says something may have been committed, or until the safety
//! net's interval passes, then read what was committed after the announced
//! horizon and announce it through the hub. The backend's wake-up is only
//! a hint; the read is the authority, so a lost notification delays an
//! invalidation by at most [`SAFETY_NET`] and never loses it.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::hub::StorageHub;

/// The longest the watcher goes without reading the database: the poll
/// that catches what a lost wake-up hid, and the only one for a backend
/// with no wake-up at all (a hot standby).
pub const SAFETY_NET: Duration = Duration::from_secs(1);

/// Announces other writers' commits to the hub's clients until `shutdown`.
pub async fn watch(hub: Arc<StorageHub>, shutdown: CancellationToken) {
    let storage = hub.storage().clone();
    // One log line per outage, not one per attempt.
    let mut failing = false;
    loop {
        let waiting = storage.clone();
        let woken = tokio::task::spawn_blocking(move || {
            waiting
                .as_shared_commits()
                .map(|shared| shared.wait_for_commits(SAFETY_NET))
        });
        tokio::select! {
            _ = shutdown.cancelled() => return,
            waited = woken => {
                if let Ok(Some(Err(err))) = waited {
                    if !failing {
                        tracing::warn!(storage = %storage.name(), %err, "waiting for other writers' commits failed");
                    }
                    failing = true;
                    // Errors come back at once: wait out the interval.
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(SAFETY_NET) => {}
                    }
                }
            }
        }
        // Reads until it is not standing back for an own commit.
        loop {
            let polling = hub.clone();
            let polled = tokio::task::spawn_blocking(move || polling.poll_foreign()).await;
            match polled {
                Ok(Ok(Some(sent))) => {
                    if failing {
                        tracing::info!(storage = %storage.name(), "reading other writers' commits again");
                        failing = false;
                    }
                    if sent > 0 {
                        tracing::debug!(storage = %storage.name(), sent, "announced other writers' commits");
                    }
                    break;
                }
                Ok(Ok(None)) => {
                    // An own commit announces the foreign ones below it;
                    // look again for those after it once it is done.
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = hub.own_finish_ended() => {}
                        _ = tokio::time::sleep(SAFETY_NET) => {}
                    }
                }
                Ok(Err(err)) => {
                    if !failing {
                        tracing::warn!(storage = %storage.name(), %err, "reading other writers' commits failed");
                    }
                    failing = true;
                    break;
                }
                Err(err) => {
                    tracing::error!(storage = %storage.name(), %err, "reading other writers' commits panicked");
                    failing = true;
                    break;
                }
            }
        }
    }
}
