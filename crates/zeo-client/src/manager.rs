//! The connection manager: the background task that keeps a client
//! connected. It opens connections, verifies the cache on each and waits
//! for it to drop; when, where and what to drop are decided by
//! `reconnect.rs` and `verify.rs`, so this only runs their decisions.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::task::JoinSet;
use tracing::{error, info, warn};
use zeo_protocol::{client::replies, ClientRequest};

use crate::client::{random_u64, Inner};
use crate::connection::{Conn, Notice};
use crate::error::{Error, Result};
use crate::reconnect::{Backoff, Candidate, Round, Step};
use crate::verify::{self, Catchup, Plan};

impl Candidate for Arc<Conn> {
    fn read_only(&self) -> bool {
        Conn::read_only(self)
    }
}

/// Keeps the client connected: connects, verifies, waits for the
/// connection to drop, backs off, and starts again, until closed. While
/// connected to a read-only fallback it probes for a writable server on
/// the same back-off.
pub(crate) async fn manage(weak: std::sync::Weak<Inner>) {
    let Some(inner) = weak.upgrade() else { return };
    let mut backoff = Backoff::new(
        inner.options.min_disconnect_poll,
        inner.options.max_disconnect_poll,
    );
    drop(inner);
    loop {
        let Some(inner) = weak.upgrade() else { return };
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
        match connect_round(&inner, false).await {
            Ok(mut conn) => {
                backoff.reset();
                loop {
                    let upgrade = inner.options.read_only_fallback && conn.read_only();
                    let closed = inner.close_notify.notified();
                    if inner.closed.load(Ordering::Acquire) {
                        conn.close();
                        return;
                    }
                    let wait = backoff.delay();
                    tokio::select! {
                        _ = conn.closed() => break,
                        _ = closed => { conn.close(); return; }
                        _ = tokio::time::sleep(crate::reconnect::jitter(wait, random_u64())), if upgrade => {
                            if let Ok(better) = connect_round(&inner, true).await {
                                info!(address = %better.address, "switching to a writable server");
                                let old = std::mem::replace(&mut conn, better);
                                old.close();
                            }
                            backoff.grow();
                        }
                    }
                }
                inner.current.send_if_modified(|c| {
                    if c.as_ref().is_some_and(|c| c.is_closed()) {
                        *c = None;
                        true
                    } else {
                        false
                    }
                });
                warn!(name = %inner.name, "disconnected from the server; reconnecting");
                inner.shared.notify(Notice::Disconnected);
            }
            Err(e) => {
                let retry_in = backoff.delay();
                warn!(name = %inner.name, error = %e, ?retry_in, "could not connect");
                let closed = inner.close_notify.notified();
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_wait(random_u64())) => {}
                    _ = closed => return,
                }
            }
        }
    }
}

/// Tries every address at once and keeps the connection [`Round`] chooses.
/// The winner's cache verification runs before it is published.
async fn connect_round(inner: &Arc<Inner>, writable_only: bool) -> Result<Arc<Conn>> {
    let options = &inner.options;
    let generation = inner.generation.fetch_add(1, Ordering::AcqRel) + 1;
    let mut attempts = JoinSet::new();
    for address in &options.servers {
        let (address, options, shared) = (address.clone(), options.clone(), inner.shared.clone());
        attempts.spawn(async move { Conn::open(&address, &options, shared, generation).await });
    }
    let mut round = Round::new(options.read_only, writable_only);
    while let Some(joined) = attempts.join_next().await {
        match joined {
            Ok(Ok(conn)) => match round.connected(conn) {
                Step::Won { close } => {
                    close.inspect(|c| c.close());
                    attempts.abort_all();
                    break;
                }
                Step::Continue { close } => {
                    close.inspect(|c| c.close());
                }
            },
            Ok(Err((e, refused))) => round.failed(e, refused),
            Err(e) => round.lost(e),
        }
    }
    let conn = match round.finish() {
        Ok(conn) => conn,
        Err((error, failed, close)) => {
            if let Some(c) = close {
                c.close();
            }
            if let Some(failed) = failed {
                inner.rounds.send_replace(failed);
            }
            return Err(error);
        }
    };
    if let Err(e) = verify(inner, &conn).await {
        conn.close();
        return Err(e);
    }
    inner.connections.fetch_add(1, Ordering::Relaxed);
    inner.rounds.send_modify(|r| {
        r.errors.clear();
        r.all_refused = false;
        r.tls_failure = None;
    });
    info!(address = %conn.address, read_only = conn.read_only(), "connected");
    inner.current.send_replace(Some(conn.clone()));
    inner.shared.notify(Notice::Connected {
        address: conn.address.to_string(),
        read_only: conn.read_only(),
    });
    Ok(conn)
}

/// Runs the cache verification plan (`verify::plan`) on a new connection,
/// then fetches the server's info and sends the client label.
async fn verify(inner: &Inner, conn: &Arc<Conn>) -> Result<()> {
    let cache = &inner.shared.cache;
    let mut server_tid = conn.server_tid();
    if let Plan::NewerThanServer { cache: cache_tid } =
        verify::plan(cache.is_empty(), cache.last_tid(), server_tid)
    {
        // A server behind the cache may be catching up (one on a lagging
        // replica of the database the last server used): wait for it,
        // bounded, rather than fail at once.
        server_tid = wait_for_server(conn, cache_tid, inner.options.wait_timeout).await?;
    }
    let mut tid = server_tid;
    match verify::plan(cache.is_empty(), cache.last_tid(), server_tid) {
        Plan::Current => {}
        Plan::Clear => {
            warn!("non-empty client cache without a last tid; clearing it");
            cache.clear();
            inner.shared.notify(Notice::CacheDropped);
        }
        Plan::NewerThanServer { cache: cache_tid } => {
            error!(
                %cache_tid, %server_tid,
                "client cache is out of sync with the server: verify that this is expected, then remove the cache file"
            );
            return Err(Error::CacheNewerThanServer {
                cache: cache_tid,
                server: server_tid,
            });
        }
        Plan::AskSince { since } => {
            let value = conn
                .call(|id| ClientRequest::get_invalidations(id, since))
                .await?;
            let answer =
                replies::invalidations(&value).map_err(|e| Error::Protocol(e.to_string()))?;
            match verify::catch_up(answer, server_tid) {
                Catchup::Invalidate {
                    latest,
                    oids,
                    tid: next,
                } => {
                    for &oid in &oids {
                        cache.drop_current(oid);
                    }
                    tid = next;
                    inner
                        .shared
                        .notify(Notice::Invalidated { tid: latest, oids });
                }
                Catchup::TooOld => {
                    warn!(name = %inner.name, "client cache too old to verify; dropping it");
                    cache.clear();
                    inner.shared.notify(Notice::CacheDropped);
                }
            }
        }
    }
    if let Err(e) = cache.set_last_tid(tid) {
        warn!(error = %e, "cache last tid regressed; clearing the cache");
        cache.clear();
        cache.set_last_tid(tid)?;
    }
    conn.mark_ready(tid);
    let info = conn.call(ClientRequest::get_info).await?;
    if let Some(info) = verify::server_info(&info) {
        *inner.shared.info.lock().unwrap_or_else(|e| e.into_inner()) = (info.length, info.size);
        inner
            .shared
            .supports_undo
            .store(info.supports_undo, Ordering::Release);
    }
    if let Some(label) = &inner.options.client_label {
        conn.call_async(&ClientRequest::set_client_label(label))?;
    }
    Ok(())
}

/// The first wait between two `lastTransaction` calls while a server
/// catches up; it doubles up to a second.
const CATCH_UP_POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// Asks the server's last transaction until it reaches `cache_tid` or
/// `within` passes; returns the last answer (the caller refuses a server
/// still behind).
async fn wait_for_server(
    conn: &Arc<Conn>,
    cache_tid: zeo_storage::Tid,
    within: std::time::Duration,
) -> Result<zeo_storage::Tid> {
    let deadline = tokio::time::Instant::now() + within;
    let mut pause = CATCH_UP_POLL;
    let mut server_tid = conn.server_tid();
    info!(%cache_tid, %server_tid, "server behind the client cache; waiting for it to catch up");
    while server_tid < cache_tid && tokio::time::Instant::now() < deadline {
        tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + pause)).await;
        pause = (pause * 2).min(std::time::Duration::from_secs(1));
        let value = conn.call(ClientRequest::last_transaction).await?;
        server_tid =
            replies::tid("lastTransaction", &value).map_err(|e| Error::Protocol(e.to_string()))?;
    }
    Ok(server_tid)
}
