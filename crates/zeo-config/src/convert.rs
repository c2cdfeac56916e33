//! `zodbconvert` configuration files: a storage section named `source` and
//! one named `destination`, of any type a server can serve.

use std::path::Path;

use crate::error::{Error, Location, Result};
use crate::schema::Checked;
use crate::storage::{StorageConfig, OTHER_ZODB_STORAGES, SERVABLE_STORAGES};
use crate::support::{self, Unsupported};
use crate::syntax::{self, Section};

/// The two storages of a `zodbconvert` file.
///
/// ```
/// use zeo_config::{ConvertConfig, StorageKind};
///
/// let config = ConvertConfig::from_str(
///     "%import relstorage\n\
///      <filestorage source>\n path /var/zeo/Data.fs\n</filestorage>\n\
///      <relstorage destination>\n <postgresql>\n dsn dbname=zodb\n </postgresql>\n\
///      </relstorage>\n",
///     "convert.conf",
/// ).unwrap();
/// assert!(matches!(config.source.kind, StorageKind::File(_)));
/// assert!(matches!(config.destination.kind, StorageKind::RelStorage(_)));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ConvertConfig {
    /// The file or source name the configuration came from.
    pub source_name: String,
    /// The `source` storage, copied from.
    pub source: StorageConfig,
    /// The `destination` storage, copied to.
    pub destination: StorageConfig,
    /// Settings present but not acted on.
    pub unsupported: Vec<Unsupported>,
}

impl ConvertConfig {
    /// Reads and checks the file at `path`.
    pub fn from_path(path: &Path) -> Result<Self> {
        Self::from_section(&syntax::parse_file(path)?)
    }

    /// Parses and checks `text`; `source_name` names it in errors.
    pub fn from_str(text: &str, source_name: &str) -> Result<Self> {
        Self::from_section(&syntax::parse(text, source_name)?)
    }

    /// Checks an already parsed tree.
    pub fn from_section(root: &Section) -> Result<Self> {
        let mut allowed: Vec<&str> = SERVABLE_STORAGES.to_vec();
        allowed.extend_from_slice(OTHER_ZODB_STORAGES);
        let top = Checked::new(root, &[], &allowed)?;
        crate::relstorage::check_import(root)?;
        let file_level = Location::new(root.location.file.clone(), 0);
        let mut source = None;
        let mut destination = None;
        for section in top.children() {
            let slot = match section.name.as_deref() {
                Some("source") => &mut source,
                Some("destination") => &mut destination,
                _ => {
                    return Err(Error::Conflict {
                        at: section.location.clone(),
                        message: format!(
                            "a conversion file holds a storage named source and one named \
                             destination, not {section}"
                        ),
                    })
                }
            };
            *slot = Some(StorageConfig::from_section(section)?);
        }
        let missing = |which: &str| Error::MissingSection {
            at: file_level.clone(),
            what: format!("a storage section named {which} is required"),
        };
        let source = source.ok_or_else(|| missing("source"))?;
        let destination = destination.ok_or_else(|| missing("destination"))?;
        let mut unsupported = Vec::new();
        support::collect(root, &mut unsupported);
        Ok(ConvertConfig {
            source_name: root.location.file.clone(),
            source,
            destination,
            unsupported,
        })
    }
}
