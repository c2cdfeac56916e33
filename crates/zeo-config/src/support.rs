//! Settings that parse but that zeo-rs does not act on, so programs can warn
//! about them by name instead of silently ignoring them.
//!
//! Keep [`NOT_IMPLEMENTED`] in step with the "supported" column of
//! `docs/configuration.md`: when the server or client starts honouring a
//! setting, delete its row here and flip the column there.

use std::fmt;

use crate::error::Location;
use crate::syntax::{Item, KeyValue, Section};

/// `(section type, key, reason)`; an empty key stands for the whole section.
pub const NOT_IMPLEMENTED: &[(&str, &str, &str)] = &[
    (
        "zeo",
        "drop-cache-rather-verify",
        "a ZEO 4 server key with no effect in ZEO 5",
    ),
    ("filestorage", "packer", "it names a Python packer object"),
    ("logfile", "formatter", "it names a Python formatter class"),
    ("syslog", "", "only <logfile> log handlers are implemented"),
    (
        "win32-eventlog",
        "",
        "only <logfile> log handlers are implemented",
    ),
    (
        "http-logger",
        "",
        "only <logfile> log handlers are implemented",
    ),
    (
        "email-notifier",
        "",
        "only <logfile> log handlers are implemented",
    ),
    (
        "runner",
        "",
        "zdaemon process control is not part of zeo-rs; use a service manager",
    ),
    (
        "zeoclient",
        "drop-cache-rather-verify",
        "accepted and ignored by ZEO 5 clients",
    ),
    (
        "clientstorage",
        "drop-cache-rather-verify",
        "accepted and ignored by ZEO 5 clients",
    ),
    (
        "zeo",
        "client-conflict-resolution",
        "BTrees and Length conflicts are resolved in the server (see native-conflict-resolution), other classes' conflicts are always returned to the client",
    ),
    ("filestorage", "quota", "no size quota is enforced"),
    (
        "zeoclient",
        "server-sync",
        "the client does not ping before each transaction",
    ),
    (
        "clientstorage",
        "server-sync",
        "the client does not ping before each transaction",
    ),
    ("zodb", "class-factory", "it names a Python callable"),
    ("relstorage", "blob-cache-size", "blob-dir is the blob directory itself; no cache size is enforced"),
    ("relstorage", "blob-cache-size-check", "no blob cache size is enforced"),
    ("relstorage", "blob-cache-size-check-external", "no blob cache size is enforced"),
    ("relstorage", "blob-chunk-size", "each blob is one large object, streamed"),
    ("relstorage", "replica-conf", "replica fail-over is not implemented; list one server in dsn"),
    ("relstorage", "ro-replica-conf", "replica fail-over is not implemented; list one server in dsn"),
    ("relstorage", "replica-timeout", "replica fail-over is not implemented"),
    ("relstorage", "revert_when_stale", "replica fail-over is not implemented"),
    ("relstorage", "poll-interval", "the server polls for other writers itself"),
    ("relstorage", "pack-prepack-only", "pack always runs both its phases"),
    ("relstorage", "pack-skip-prepack", "pack always runs both its phases"),
    ("relstorage", "pack-batch-timeout", "pack deletes in fixed batches"),
    ("relstorage", "pack-commit-busy-delay", "pack deletes in fixed batches"),
    ("relstorage", "commit-lock-id", "the commit lock is RelStorage's default advisory lock"),
    ("relstorage", "cache-servers", "RelStorage's Python caches are not used; ZEO clients keep their own cache"),
    ("relstorage", "cache-module-name", "RelStorage's Python caches are not used; ZEO clients keep their own cache"),
    ("relstorage", "cache-prefix", "RelStorage's Python caches are not used; ZEO clients keep their own cache"),
    ("relstorage", "cache-local-mb", "RelStorage's Python caches are not used; ZEO clients keep their own cache"),
    ("relstorage", "cache-local-storage", "RelStorage's Python caches are not used; ZEO clients keep their own cache"),
    ("relstorage", "cache-local-dir", "RelStorage's Python caches are not used; ZEO clients keep their own cache"),
    ("relstorage", "cache-local-dir-count", "RelStorage's Python caches are not used; ZEO clients keep their own cache"),
    ("relstorage", "cache-local-dir-read-count", "RelStorage's Python caches are not used; ZEO clients keep their own cache"),
    ("relstorage", "cache-local-dir-compress", "RelStorage's Python caches are not used; ZEO clients keep their own cache"),
    ("relstorage", "cache-local-dir-write-max-size", "RelStorage's Python caches are not used; ZEO clients keep their own cache"),
    ("relstorage", "cache-local-object-max", "RelStorage's Python caches are not used; ZEO clients keep their own cache"),
    ("relstorage", "cache-local-compression", "RelStorage's Python caches are not used; ZEO clients keep their own cache"),
    ("relstorage", "cache-delta-size-limit", "RelStorage's Python caches are not used; ZEO clients keep their own cache"),
    ("postgresql", "driver", "zeo-rs connects with its own PostgreSQL client"),
];

/// A setting present in a configuration that zeo-rs accepts but does not honour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported {
    /// Where the key or section is.
    pub at: Location,
    /// The enclosing section as shown in messages, e.g. `<zeo>`.
    pub section: String,
    /// The key (lower-cased), or the section header for whole sections.
    pub setting: String,
    /// Why it has no effect.
    pub reason: &'static str,
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.setting.starts_with('<') {
            write!(
                f,
                "{}: {} is ignored: {}",
                self.at, self.setting, self.reason
            )
        } else {
            write!(
                f,
                "{}: {:?} in {} is ignored: {}",
                self.at, self.setting, self.section, self.reason
            )
        }
    }
}

/// Lists every unsupported key or section in `section` and below.
pub(crate) fn collect(section: &Section, out: &mut Vec<Unsupported>) {
    for item in &section.items {
        match item {
            Item::Key(kv) => out.extend(unsupported_key(section, kv)),
            Item::Section(child) => {
                if let Some((_, _, reason)) = NOT_IMPLEMENTED
                    .iter()
                    .find(|(t, k, _)| *t == child.type_name && k.is_empty())
                {
                    out.push(Unsupported {
                        at: child.location.clone(),
                        section: section.to_string(),
                        setting: child.to_string(),
                        reason,
                    });
                } else {
                    collect(child, out);
                }
            }
            Item::Import(_) => {}
        }
    }
}

/// Lists the unsupported keys of `section` itself, not of its subsections
/// (which the caller reads on its own).
pub(crate) fn collect_keys(section: &Section, out: &mut Vec<Unsupported>) {
    out.extend(section.keys().filter_map(|kv| unsupported_key(section, kv)));
}

fn unsupported_key(section: &Section, kv: &KeyValue) -> Option<Unsupported> {
    let key = kv.key.to_ascii_lowercase();
    let (_, _, reason) = NOT_IMPLEMENTED
        .iter()
        .find(|(t, k, _)| *t == section.type_name && *k == key)?;
    Some(Unsupported {
        at: kv.location.clone(),
        section: section.to_string(),
        setting: key,
        reason,
    })
}
