//! The ZEO 3/4 monitor server (`monitor-address`): a separate listener
//! that writes a plain-text statistics report to each client that connects,
//! then closes the connection without reading anything.
//!
//! The report, with `\n` line endings:
//!
//! ```text
//! ZEO monitor server version <version>
//! <current local time, as C's ctime>
//!
//! Storage: <name>                 (one block per storage, sorted by name)
//! Server started: <ctime>
//! Clients: <registered connections>
//! Clients verifying: <always 0: ZEO 5 clients never run ZEO 4 verification>
//! Active transactions: <begun, not yet finished or aborted>
//! Commit lock held for: <seconds>  (only while a transaction holds it)
//! Commits: <n>
//! Aborts: <n>
//! Loads: <n>
//! Stores: <n>
//! Conflicts: <n>
//! Conflicts resolved: <n>
//!
//! ```
//!
//! The report needs no login, so a bare port (`monitor-address 8101`)
//! binds `127.0.0.1` only; listening elsewhere takes an explicit host
//! (`0.0.0.0:8101`).
//!
//! ZEO 4 deprecated this in favour of `server_status` and ZEO 5 removed it;
//! zeo-rs keeps it for monitoring scripts written against ZEO 3/4 (e.g. the
//! Munin plugins). The numbers are the same as `server_status`'s.
//! [`MonitorReport::parse`] reads the format back, like ZEO's
//! `StorageStats.parse`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::AsyncWriteExt;

use crate::error::{Error, Result};
use crate::hub::StorageHub;
use crate::server::{accept_until_shutdown, BoundAddress, ListenAddress, Listener, Shared};

/// The version the report's first line names.
pub const VERSION: &str = concat!("zeo-rs-", env!("CARGO_PKG_VERSION"));

/// Longest a slow monitor client may take to read its report.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// One storage's block of the report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MonitorStats {
    /// When the server started (ctime text).
    pub start: String,
    /// Registered client connections.
    pub clients: u64,
    /// Clients in ZEO 4 cache verification.
    pub clients_verifying: u64,
    /// Open transactions.
    pub active_txns: u64,
    /// Whole seconds the commit lock has been held, when it is.
    pub lock_held_for: Option<u64>,
    /// Finished transactions.
    pub commits: u64,
    /// Aborted transactions.
    pub aborts: u64,
    /// Loads.
    pub loads: u64,
    /// Stores, deletions and restores.
    pub stores: u64,
    /// Votes that failed with a conflict.
    pub conflicts: u64,
    /// Conflicts resolved on the server.
    pub conflicts_resolved: u64,
}

impl MonitorStats {
    /// The current numbers of a storage, as of `now`.
    pub(crate) fn of(hub: &StorageHub, now: SystemTime) -> Self {
        let s = hub.status();
        let lock_held_for = s.lock_time.map(|since| {
            let now = now
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            (now - since).max(0.0) as u64
        });
        MonitorStats {
            start: s.start,
            clients: s.connections,
            clients_verifying: 0,
            active_txns: s.active_txns,
            lock_held_for,
            commits: s.commits,
            aborts: s.aborts,
            loads: s.loads,
            stores: s.stores,
            conflicts: s.conflicts,
            conflicts_resolved: s.conflicts_resolved,
        }
    }

    fn write_to(&self, out: &mut String) {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "Server started: {}", self.start);
        let _ = writeln!(out, "Clients: {}", self.clients);
        let _ = writeln!(out, "Clients verifying: {}", self.clients_verifying);
        let _ = writeln!(out, "Active transactions: {}", self.active_txns);
        if let Some(secs) = self.lock_held_for {
            let _ = writeln!(out, "Commit lock held for: {secs}");
        }
        let _ = writeln!(out, "Commits: {}", self.commits);
        let _ = writeln!(out, "Aborts: {}", self.aborts);
        let _ = writeln!(out, "Loads: {}", self.loads);
        let _ = writeln!(out, "Stores: {}", self.stores);
        let _ = writeln!(out, "Conflicts: {}", self.conflicts);
        let _ = writeln!(out, "Conflicts resolved: {}", self.conflicts_resolved);
    }
}

/// A whole report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MonitorReport {
    /// The version on the first line.
    pub version: String,
    /// The time on the second line.
    pub time: String,
    /// The storages by name.
    pub storages: BTreeMap<String, MonitorStats>,
}

impl MonitorReport {
    /// The report for `hubs` as of now.
    pub(crate) fn of<'a>(hubs: impl IntoIterator<Item = (&'a str, &'a StorageHub)>) -> Self {
        let now = SystemTime::now();
        MonitorReport {
            version: VERSION.to_owned(),
            time: crate::stats::ctime_now(),
            storages: hubs
                .into_iter()
                .map(|(name, hub)| (name.to_owned(), MonitorStats::of(hub, now)))
                .collect(),
        }
    }

    /// The report text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "ZEO monitor server version {}", self.version);
        let _ = writeln!(out, "{}", self.time);
        out.push('\n');
        for (name, stats) in &self.storages {
            let _ = writeln!(out, "Storage: {name}");
            stats.write_to(&mut out);
            out.push('\n');
        }
        out
    }

    /// Reads a report back. Like ZEO's parser, values are the text after
    /// the first `:` with surrounding spaces removed, and unknown labels are
    /// ignored.
    ///
    /// # Errors
    ///
    /// [`Error::MonitorReport`] for a missing header, a line without a `:`,
    /// a counter that is not a number, or a counter outside a storage block.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |line: usize, reason: &str| Error::MonitorReport {
            line,
            reason: reason.to_owned(),
        };
        let mut lines = text.lines().enumerate();
        let version = lines
            .next()
            .and_then(|(_, l)| l.strip_prefix("ZEO monitor server version "))
            .ok_or_else(|| bad(1, "not a ZEO monitor report"))?
            .to_owned();
        let time = lines
            .next()
            .map(|(_, l)| l.to_owned())
            .ok_or_else(|| bad(2, "no time line"))?;
        let mut report = MonitorReport {
            version,
            time,
            storages: BTreeMap::new(),
        };
        let mut current: Option<String> = None;
        for (index, line) in lines {
            let number = index + 1;
            if line.is_empty() {
                continue;
            }
            let (field, value) = line
                .split_once(':')
                .ok_or_else(|| bad(number, "no ':' in the line"))?;
            let value = value.trim();
            if field == "Storage" {
                report.storages.entry(value.to_owned()).or_default();
                current = Some(value.to_owned());
                continue;
            }
            let stats = current
                .as_ref()
                .and_then(|name| report.storages.get_mut(name))
                .ok_or_else(|| bad(number, "a counter before any 'Storage:' line"))?;
            let count = || {
                value
                    .parse::<u64>()
                    .map_err(|_| bad(number, "the value is not a count"))
            };
            match field {
                "Server started" => stats.start = value.to_owned(),
                "Clients" => stats.clients = count()?,
                "Clients verifying" => stats.clients_verifying = count()?,
                "Active transactions" => stats.active_txns = count()?,
                "Commit lock held for" => stats.lock_held_for = Some(count()?),
                "Commits" => stats.commits = count()?,
                "Aborts" => stats.aborts = count()?,
                "Loads" => stats.loads = count()?,
                "Stores" => stats.stores = count()?,
                "Conflicts" => stats.conflicts = count()?,
                "Conflicts resolved" => stats.conflicts_resolved = count()?,
                _ => {}
            }
        }
        Ok(report)
    }
}

/// Binds the monitor address (every address a host name resolves to). A
/// bare port means `127.0.0.1`, not every interface: the report needs no
/// login, so exposing it takes an explicit host.
pub(crate) fn bind(address: &ListenAddress) -> Result<Vec<(Listener, BoundAddress)>> {
    let address = loopback_by_default(address);
    let out = crate::server::bind_listeners(&address)?;
    for (_, bound) in &out {
        tracing::info!(address = %bound, "monitor listening");
    }
    Ok(out)
}

/// `address`, with an empty TCP host replaced by `127.0.0.1`.
pub fn loopback_by_default(address: &ListenAddress) -> ListenAddress {
    match address {
        ListenAddress::Tcp { host, port } if host.is_empty() => ListenAddress::localhost(*port),
        other => other.clone(),
    }
}

/// Answers monitor connections until `shutdown`; removes a Unix socket file
/// on the way out.
pub(crate) async fn serve(listener: Listener, shared: Arc<Shared>) {
    let shutdown = &shared.shutdown;
    match listener {
        Listener::Tcp(l) => match tokio::net::TcpListener::from_std(l) {
            Ok(l) => {
                let report = |stream, _| {
                    tokio::spawn(send_report(stream, shared.clone()));
                };
                accept_until_shutdown(shutdown, "monitor accept", || l.accept(), report).await
            }
            Err(err) => tracing::error!(%err, "monitor listener unusable"),
        },
        Listener::Unix(l, path) => {
            match tokio::net::UnixListener::from_std(l) {
                Ok(l) => {
                    let report = |stream, _| {
                        tokio::spawn(send_report(stream, shared.clone()));
                    };
                    accept_until_shutdown(shutdown, "monitor accept", || l.accept(), report).await
                }
                Err(err) => tracing::error!(%err, "monitor listener unusable"),
            }
            let _ = std::fs::remove_file(path);
        }
    }
}

async fn send_report<S>(mut stream: S, shared: Arc<Shared>)
where
    S: tokio::io::AsyncWrite + Unpin,
{
    let hubs = shared.hubs.iter().map(|(n, h)| (n.as_str(), h.as_ref()));
    let text = MonitorReport::of(hubs).render();
    let written = tokio::time::timeout(WRITE_TIMEOUT, async {
        stream.write_all(text.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
    match written {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::debug!(%err, "monitor client went away"),
        Err(_) => tracing::debug!("monitor client too slow; closing"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> MonitorReport {
        let mut storages = BTreeMap::new();
        storages.insert(
            "1".to_owned(),
            MonitorStats {
                start: "Wed Nov 25 11:21:31 2026".into(),
                clients: 2,
                clients_verifying: 0,
                active_txns: 1,
                lock_held_for: Some(3),
                commits: 4,
                aborts: 5,
                loads: 6,
                stores: 7,
                conflicts: 8,
                conflicts_resolved: 0,
            },
        );
        storages.insert(
            "b".to_owned(),
            MonitorStats {
                start: "Wed Nov 25 11:21:31 2026".into(),
                ..MonitorStats::default()
            },
        );
        MonitorReport {
            version: VERSION.into(),
            time: "Thu Nov 26 09:00:00 2026".into(),
            storages,
        }
    }

    #[test]
    fn renders_zeo_layout() {
        let text = sample().render();
        let expected = format!(
            "ZEO monitor server version {VERSION}\n\
             Thu Nov 26 09:00:00 2026\n\
             \n\
             Storage: 1\n\
             Server started: Wed Nov 25 11:21:31 2026\n\
             Clients: 2\n\
             Clients verifying: 0\n\
             Active transactions: 1\n\
             Commit lock held for: 3\n\
             Commits: 4\n\
             Aborts: 5\n\
             Loads: 6\n\
             Stores: 7\n\
             Conflicts: 8\n\
             Conflicts resolved: 0\n\
             \n\
             Storage: b\n\
             Server started: Wed Nov 25 11:21:31 2026\n\
             Clients: 0\n\
             Clients verifying: 0\n\
             Active transactions: 0\n\
             Commits: 0\n\
             Aborts: 0\n\
             Loads: 0\n\
             Stores: 0\n\
             Conflicts: 0\n\
             Conflicts resolved: 0\n\
             \n"
        );
        assert_eq!(text, expected);
    }

    #[test]
    fn parse_reads_render_back() {
        let report = sample();
        assert_eq!(MonitorReport::parse(&report.render()).unwrap(), report);
    }

    #[test]
    fn parse_rejects_garbage() {
        assert!(MonitorReport::parse("").is_err());
        assert!(MonitorReport::parse("hello\n").is_err());
        let head = "ZEO monitor server version x\nnow\n\n";
        assert!(MonitorReport::parse(&format!("{head}Clients: 1\n")).is_err());
        assert!(MonitorReport::parse(&format!("{head}Storage: 1\nClients: many\n")).is_err());
        assert!(MonitorReport::parse(&format!("{head}Storage: 1\nno colon\n")).is_err());
        // Unknown labels are ignored, as by ZEO.
        let r =
            MonitorReport::parse(&format!("{head}Storage: 1\nWhatever: 3\nLoads: 9\n")).unwrap();
        assert_eq!(r.storages["1"].loads, 9);
    }
}
