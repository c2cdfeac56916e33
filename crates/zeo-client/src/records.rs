//! ZODB records with the client's [`Oid`] type: what
//! [`zeo_pickle::zodb`] offers (re-exported here), plus references made
//! from and read back as [`Oid`]s, and `OOBTree` walks that load their
//! buckets through a client. `docs/rust-records.md` is the guide.
//!
//! `zeo-pickle` sits below the storage crate and speaks of oids as `u64`;
//! these helpers are the typed face of it for client code.
//!
//! ```
//! use zeo_client::records::{oid_of, reference, Record, PERSISTENT_LIST};
//! use zeo_storage::Oid;
//!
//! let mut root = Record::persistent_mapping([]);
//! root.mapping_set("todo".into(), reference(Oid(3), PERSISTENT_LIST));
//! assert_eq!(root.mapping_get("todo").and_then(oid_of), Some(Oid(3)));
//! ```

pub use zeo_pickle::zodb::*;
pub use zeo_pickle::Value;
use zeo_storage::{Oid, Storage};

use crate::client::AsyncClientStorage;
use crate::error::{Error, Result};
use crate::storage::ClientStorage;

/// A reference to the persistent object `oid` of class `class`, as ZODB
/// writes one into the state of the objects that hold it.
pub fn reference(oid: Oid, class: ClassName) -> Value {
    Value::persistent_ref(oid.0, Some(class.global()))
}

/// The oid a reference points at ([`Value::reference_oid`] as an [`Oid`]).
pub fn oid_of(value: &Value) -> Option<Oid> {
    value.reference_oid().map(Oid)
}

impl ClientStorage {
    /// The current revision of `oid`, decoded as a ZODB record.
    ///
    /// # Errors
    ///
    /// What the load failed with, or [`Error::Record`].
    pub fn load_record(&self, oid: Oid) -> Result<(Record, zeo_storage::Tid)> {
        let (data, tid) = self.load(oid).map_err(Error::from)?;
        Ok((Record::decode(&data)?, tid))
    }

    /// All pairs of the `OOBTree` whose record state is `state`, loading
    /// its buckets (see [`btree_items`]; at most `max_items` pairs).
    ///
    /// # Errors
    ///
    /// Loads that fail, records that are not buckets, the limit.
    pub fn btree_items(&self, state: &Value, max_items: usize) -> Result<Items> {
        btree_items(state, max_items, |oid| {
            self.load(Oid(oid))
                .map(|(data, _)| data)
                .map_err(Error::from)
        })
    }
}

impl AsyncClientStorage {
    /// The current revision of `oid`, decoded as a ZODB record.
    ///
    /// # Errors
    ///
    /// What the load failed with, or [`Error::Record`].
    pub async fn load_record(&self, oid: Oid) -> Result<(Record, zeo_storage::Tid)> {
        let (data, tid) = self.load(oid).await?;
        Ok((Record::decode(&data)?, tid))
    }

    /// All pairs of the `OOBTree` whose record state is `state`: its
    /// buckets are loaded one after the other (at most `max_items` pairs,
    /// and as many buckets).
    ///
    /// # Errors
    ///
    /// Loads that fail, records that are not buckets, the limits.
    pub async fn btree_items(&self, state: &Value, max_items: usize) -> Result<Items> {
        let mut walk = BTreeWalk::new(state, max_items)?;
        while let Some(oid) = walk.next_bucket() {
            let (data, _) = self.load(Oid(oid)).await?;
            walk.feed(&data)?;
        }
        Ok(walk.into_items())
    }
}
