//! ZODB object records: two pickles (class metadata, then state) sharing
//! one memo, with references to other objects as persistent ids.

use crate::decode::Decoder;
use crate::encode::{Encoder, Protocol};
use crate::error::Error;
use crate::machine::{Item, Machine, Node};
use crate::value::Value;

/// The oids an object record refers to, in the order the references appear
/// (duplicates kept), the way `ZODB.serialize.referencesf` finds them.
///
/// Every persistent id in both pickles counts when it is a tuple (its first
/// element is the oid: `(oid, class)`), bytes (a bare oid), or a `str` oid
/// from Python 2 era data (taken as ASCII bytes). List-shaped ids (weak
/// references `['w', ...]`, cross-database references `['m', ...]` /
/// `['n', ...]`, legacy `[oid]`) are skipped, as `referencesf` skips them:
/// pack garbage collection does not follow them.
///
/// An empty record (an undone object creation) refers to nothing. An oid
/// that is not 8 bytes long is an [`Error::BadReference`].
///
/// This runs the unpickling machine without building [`Value`] trees, so
/// it is cheap enough to call on every record during a pack.
pub fn references(record: &[u8]) -> Result<Vec<u64>, Error> {
    let mut oids = Vec::new();
    references_into(record, &mut oids)?;
    Ok(oids)
}

/// [`references`], appending to `oids` (reusing its allocation across
/// records). On error, `oids` may hold part of the record's references.
pub fn references_into(record: &[u8], oids: &mut Vec<u64>) -> Result<(), Error> {
    if record.is_empty() {
        return Ok(());
    }
    let mut m = Machine::new(record);
    m.persistent_ids = Some(Vec::new());
    m.run()?;
    m.run()?;
    for pid in m.persistent_ids.take().unwrap_or_default() {
        let oid_item = match pid {
            Item::Node(id) => match m.node(id) {
                Some(Node::Tuple(items)) => match items.first() {
                    Some(&first) => first,
                    None => return Err(Error::BadReference("empty tuple".into())),
                },
                Some(Node::List(_)) => continue,
                Some(Node::Bytes(_) | Node::Str(_)) => pid,
                _ => {
                    return Err(Error::BadReference(
                        "persistent id is not a tuple, bytes, str or list".into(),
                    ))
                }
            },
            _ => {
                return Err(Error::BadReference(
                    "persistent id is not a tuple, bytes, str or list".into(),
                ))
            }
        };
        oids.push(oid_of(&m, oid_item)?);
    }
    Ok(())
}

fn oid_of(m: &Machine<'_, '_>, item: Item) -> Result<u64, Error> {
    let bytes: &[u8] = match item {
        Item::Node(id) => match m.node(id) {
            Some(Node::Bytes(b)) => b,
            Some(Node::Str(s)) if s.is_ascii() => s.as_bytes(),
            _ => return Err(Error::BadReference("oid is not bytes".into())),
        },
        _ => return Err(Error::BadReference("oid is not bytes".into())),
    };
    let arr: [u8; 8] = bytes
        .try_into()
        .map_err(|_| Error::BadReference(format!("oid of {} bytes", bytes.len())))?;
    Ok(u64::from_be_bytes(arr))
}

/// The `(module, name)` of the class of the object a record holds, read
/// from the record's first pickle like ZODB's `get_pickle_metadata` (used by
/// `fsdump`): the class itself, `(class, args)`, or `((module, name), args)`.
/// `None` when the record is empty, undecodable, or the class is stored as
/// a persistent reference.
pub fn class_of(record: &[u8]) -> Option<(String, String)> {
    let meta = Decoder::new(record).next_pickle().ok()?;
    let class = match &meta {
        Value::Tuple(items) => items.first()?,
        other => other,
    };
    match class {
        Value::Global { module, name } => Some((module.clone(), name.clone())),
        Value::Tuple(pair) => match pair.as_slice() {
            [module, name] => Some((text_of(module)?, text_of(name)?)),
            _ => None,
        },
        _ => None,
    }
}

fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::Str(s) => Some(s.clone()),
        // Python 2 era records spell the names as byte strings.
        Value::Bytes(b) => String::from_utf8(b.clone()).ok(),
        _ => None,
    }
}

/// Builds an object record the way ZODB's `ObjectWriter` does: protocol 3,
/// one memo for both pickles, `class_meta` (usually [`Value::global`] of
/// the class) then `state` (with references as [`Value::persistent_ref`]).
/// [`crate::zodb::Record`] wraps this for the common classes.
///
/// ```
/// use zeo_pickle::{class_of, encode_record, references, Value};
///
/// // A PersistentMapping (the root's class) holding a reference to oid 1.
/// let class = Value::global("persistent.mapping", "PersistentMapping");
/// let list = Value::global("persistent.list", "PersistentList");
/// let state = Value::Dict(vec![(
///     Value::str("data"),
///     Value::Dict(vec![(Value::str("items"), Value::persistent_ref(1, Some(list)))]),
/// )]);
/// let record = encode_record(&class, &state)?;
/// assert_eq!(class_of(&record), Some(("persistent.mapping".into(), "PersistentMapping".into())));
/// assert_eq!(references(&record)?, [1]);
/// # Ok::<(), zeo_pickle::Error>(())
/// ```
pub fn encode_record(class_meta: &Value, state: &Value) -> Result<Vec<u8>, Error> {
    let mut e = Encoder::new(Protocol::V3).with_memo(true);
    e.dump(class_meta)?;
    e.dump(state)?;
    Ok(e.into_bytes())
}
