//! Storage sections a server can serve (ZODB's `component.xml`).

use std::path::PathBuf;

use crate::datatypes::ByteSize;
use crate::error::{Error, Location, Result};
use crate::relstorage::RelStorageConfig;
use crate::schema::{key, Checked, KeySpec};
use crate::syntax::Section;

/// Storage section types that ZODB or ZEO define but zeo-rs cannot serve.
pub(crate) const OTHER_ZODB_STORAGES: &[&str] = &[
    "demostorage",
    "zeoclient",
    "clientstorage",
    "fullstorage",
    "minimalstorage",
];

/// Storage section types a server configuration may contain.
pub(crate) const SERVABLE_STORAGES: &[&str] =
    &["filestorage", "mappingstorage", "blobstorage", "relstorage"];

/// The storage types a `<blobstorage>` section may wrap.
const WRAPPABLE_STORAGES: &[&str] = &["filestorage", "mappingstorage"];

/// One storage the server serves.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageConfig {
    /// The name clients ask for: the section name lower-cased (ZConfig folds
    /// section names), or `1` for the single unnamed storage.
    pub name: String,
    /// Where the section starts.
    pub location: Location,
    /// Type-specific settings.
    pub kind: StorageKind,
}

/// The storage implementation and its settings.
#[derive(Debug, Clone, PartialEq)]
pub enum StorageKind {
    /// `<filestorage>`.
    File(FileStorageConfig),
    /// `<mappingstorage>`.
    Mapping(MappingStorageConfig),
    /// `<blobstorage>`: ZODB's `BlobStorage` wrapper, blobs in `blob-dir`
    /// beside the wrapped storage.
    Blob(BlobStorageConfig),
    /// `<relstorage>` with a `<postgresql>` adapter (after
    /// `%import relstorage`): a RelStorage database on PostgreSQL.
    RelStorage(RelStorageConfig),
}

/// `<blobstorage>` settings: the blob directory and the one storage
/// section inside, as ZEO's own tests write it.
///
/// ```
/// use zeo_config::{ServerConfig, StorageKind};
///
/// let config = ServerConfig::from_str(
///     "<zeo>\n address 127.0.0.1:0\n</zeo>\n\
///      <blobstorage>\n blob-dir /var/zeo/blobs\n\
///        <filestorage>\n path /var/zeo/Data.fs\n </filestorage>\n\
///      </blobstorage>\n",
///     "zeo.conf",
/// ).unwrap();
/// let StorageKind::Blob(blob) = &config.storages[0].kind else { panic!() };
/// assert_eq!(blob.blob_dir, std::path::Path::new("/var/zeo/blobs"));
/// assert!(matches!(*blob.base, StorageKind::File(_)));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct BlobStorageConfig {
    /// The blob directory (required).
    pub blob_dir: PathBuf,
    /// The wrapped storage: a `<filestorage>` without `blob-dir`, or a
    /// `<mappingstorage>`.
    pub base: Box<StorageKind>,
}

/// `<filestorage>` settings; defaults are ZODB's `FileStorage` defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStorageConfig {
    /// The `Data.fs` file (required); index, lock and temporary files are
    /// named after it.
    pub path: PathBuf,
    /// Blob directory; `None` (or an empty value) means no blob support.
    pub blob_dir: Option<PathBuf>,
    /// Truncate an existing file on open (default false).
    pub create: bool,
    /// Refuse writes (default false; pack is still allowed).
    pub read_only: bool,
    /// Largest size the file may grow to.
    pub quota: Option<ByteSize>,
    /// Python packer object (unsupported).
    pub packer: Option<String>,
    /// Garbage-collect unreachable objects when packing (default true).
    pub pack_gc: bool,
    /// Keep the pre-pack file as `Data.fs.old` (default true).
    pub pack_keep_old: bool,
}

impl FileStorageConfig {
    /// Settings for `path` with every other key at ZODB's default.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileStorageConfig {
            path: path.into(),
            blob_dir: None,
            create: false,
            read_only: false,
            quota: None,
            packer: None,
            pack_gc: true,
            pack_keep_old: true,
        }
    }
}

/// `<mappingstorage>` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingStorageConfig {
    /// The name the storage reports from `getName` (default `Mapping Storage`).
    pub name: String,
}

impl Default for MappingStorageConfig {
    fn default() -> Self {
        MappingStorageConfig {
            name: "Mapping Storage".to_owned(),
        }
    }
}

const FILESTORAGE_KEYS: &[KeySpec] = &[
    key("path"),
    key("blob-dir"),
    key("create"),
    key("read-only"),
    key("quota"),
    key("packer"),
    key("pack-gc"),
    key("pack-keep-old"),
];

const MAPPINGSTORAGE_KEYS: &[KeySpec] = &[key("name")];

const BLOBSTORAGE_KEYS: &[KeySpec] = &[key("blob-dir")];

impl StorageConfig {
    /// Reads a storage section; the caller assigns names to unnamed ones.
    pub(crate) fn from_section(section: &Section) -> Result<Self> {
        let kind = match section.type_name.as_str() {
            "filestorage" => {
                let c = Checked::new(section, FILESTORAGE_KEYS, &[])?;
                StorageKind::File(FileStorageConfig {
                    path: c.path("path").ok_or_else(|| c.missing("path"))?,
                    blob_dir: c.path("blob-dir"),
                    create: c.bool("create")?.unwrap_or(false),
                    read_only: c.bool("read-only")?.unwrap_or(false),
                    quota: c.parsed("quota")?,
                    packer: c.string("packer"),
                    pack_gc: c.bool("pack-gc")?.unwrap_or(true),
                    pack_keep_old: c.bool("pack-keep-old")?.unwrap_or(true),
                })
            }
            "mappingstorage" => {
                let c = Checked::new(section, MAPPINGSTORAGE_KEYS, &[])?;
                StorageKind::Mapping(MappingStorageConfig {
                    name: c
                        .string("name")
                        .unwrap_or_else(|| MappingStorageConfig::default().name),
                })
            }
            "blobstorage" => {
                let c = Checked::new(section, BLOBSTORAGE_KEYS, WRAPPABLE_STORAGES)?;
                let blob_dir = c.path("blob-dir").ok_or_else(|| c.missing("blob-dir"))?;
                let [inner] = c.children() else {
                    return Err(Error::Conflict {
                        at: section.location.clone(),
                        message: "<blobstorage> wraps exactly one storage section".into(),
                    });
                };
                let base = StorageConfig::from_section(inner)?.kind;
                if matches!(&base, StorageKind::File(f) if f.blob_dir.is_some()) {
                    return Err(Error::Conflict {
                        at: inner.location.clone(),
                        message: "the storage inside <blobstorage> already has a blob-dir".into(),
                    });
                }
                StorageKind::Blob(BlobStorageConfig {
                    blob_dir,
                    base: Box::new(base),
                })
            }
            "relstorage" => StorageKind::RelStorage(RelStorageConfig::from_section(section)?),
            other => {
                return Err(Error::UnsupportedSection {
                    at: section.location.clone(),
                    section_type: other.to_owned(),
                    reason: "zeo-rs serves only <filestorage>, <mappingstorage>, <blobstorage> \
                             and <relstorage>"
                        .into(),
                })
            }
        };
        Ok(StorageConfig {
            name: section.name.clone().unwrap_or_default(),
            location: section.location.clone(),
            kind,
        })
    }
}
