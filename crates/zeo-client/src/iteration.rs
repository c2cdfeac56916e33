//! Transaction iteration over the wire (`iterator_start`, `iterator_next`,
//! `iterator_record_start`, `iterator_record_next`, `iterator_gc`): the
//! client side of `copyTransactionsFrom` and `zodbconvert`.
//!
//! The server keeps the iterator; the client asks for one transaction at a
//! time and, for each, walks its records with a record iterator the server
//! discards by itself at the end. An iterator given up early is left on the
//! server until told otherwise, so dropping one unfinished sends a one-way
//! `iterator_gc`, as ZEO's client does from its weak-reference bookkeeping.

use std::sync::Arc;

use zeo_pickle::Value;
use zeo_protocol::{ClientRequest, IteratorId};
use zeo_storage::{DataRecord, Oid, Tid, TransactionMetaData, TransactionRecord, TxnStatus};

use crate::connection::Conn;
use crate::error::{Error, Result};

/// A server-side transaction iterator, driven one transaction at a time.
///
/// Obtained from [`AsyncClientStorage::iterator`](crate::AsyncClientStorage::iterator).
/// It is bound to the connection it was started on: after a reconnect the
/// server has forgotten it and [`TransactionStream::next`] fails with
/// [`Error::Disconnected`]. Dropping it before the end tells the server to
/// discard it.
#[derive(Debug)]
pub struct TransactionStream {
    conn: Arc<Conn>,
    iid: IteratorId,
    /// The server disposed of the iterator (end reached) or will never hear
    /// of it again (failed): nothing to collect on drop.
    finished: bool,
}

impl TransactionStream {
    pub(crate) async fn start(
        conn: Arc<Conn>,
        start: Option<Tid>,
        stop: Option<Tid>,
    ) -> Result<Self> {
        let value = conn
            .call(|id| ClientRequest::iterator_start(id, start, stop))
            .await?;
        let Value::Int(iid) = value else {
            return Err(Error::Protocol(format!(
                "iterator_start returned {}",
                value.type_name()
            )));
        };
        Ok(TransactionStream {
            conn,
            iid: IteratorId(iid),
            finished: false,
        })
    }

    /// The next transaction with all its data records, `None` after the
    /// last. After an error or the end, it keeps returning `None`.
    ///
    /// # Errors
    ///
    /// What the server raised (a storage error while reading), a reply of
    /// the wrong shape, or [`Error::Disconnected`].
    pub async fn next(&mut self) -> Result<Option<TransactionRecord>> {
        if self.finished {
            return Ok(None);
        }
        let result = self.fetch().await;
        if !matches!(result, Ok(Some(_))) {
            if result.is_err() && !self.conn.is_closed() {
                // Whatever the server still holds for it is of no use now.
                let _ = self
                    .conn
                    .call_async(&ClientRequest::iterator_gc(&[self.iid]));
            }
            self.finished = true;
        }
        result
    }

    async fn fetch(&mut self) -> Result<Option<TransactionRecord>> {
        let iid = self.iid;
        let value = self
            .conn
            .call(|id| ClientRequest::iterator_next(id, iid))
            .await?;
        let Some((tid, status, meta)) = parse_transaction(&value)? else {
            return Ok(None);
        };
        let value = self
            .conn
            .call(|id| ClientRequest::iterator_record_start(id, iid, tid))
            .await?;
        let Value::Int(riid) = value else {
            return Err(Error::Protocol(format!(
                "iterator_record_start returned {}",
                value.type_name()
            )));
        };
        let riid = IteratorId(riid);
        let mut records = Vec::new();
        loop {
            let value = self
                .conn
                .call(|id| ClientRequest::iterator_record_next(id, riid))
                .await;
            let parsed = value.and_then(|v| parse_record(&v));
            match parsed {
                Ok(Some(record)) => records.push(record),
                Ok(None) => break,
                Err(e) => {
                    if !self.conn.is_closed() {
                        let _ = self.conn.call_async(&ClientRequest::iterator_gc(&[riid]));
                    }
                    return Err(e);
                }
            }
        }
        Ok(Some(TransactionRecord {
            tid,
            status,
            meta,
            records,
        }))
    }
}

impl Drop for TransactionStream {
    fn drop(&mut self) {
        if !self.finished && !self.conn.is_closed() {
            // One-way and queued: safe from any context, runtime or not.
            let _ = self
                .conn
                .call_async(&ClientRequest::iterator_gc(&[self.iid]));
        }
    }
}

fn bytes_or_text(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::Bytes(b) => Some(b.clone()),
        Value::Str(s) => Some(s.as_bytes().to_vec()),
        Value::None => Some(Vec::new()),
        _ => None,
    }
}

fn tid_of(what: &str, v: &Value) -> Result<Tid> {
    match v {
        Value::Bytes(b) => Tid::from_slice(b),
        _ => None,
    }
    .ok_or_else(|| Error::Protocol(format!("{what}: expected an 8-byte tid")))
}

/// `iterator_next`'s `(tid, status, user, description, extension)`.
fn parse_transaction(value: &Value) -> Result<Option<(Tid, TxnStatus, TransactionMetaData)>> {
    const M: &str = "iterator_next";
    let bad = |why: &str| Error::Protocol(format!("{M}: {why}"));
    let items = match value {
        Value::None => return Ok(None),
        Value::Tuple(items) | Value::List(items) => items,
        other => return Err(bad(&format!("unexpected {}", other.type_name()))),
    };
    let [tid, status, user, description, extension] = items.as_slice() else {
        return Err(bad("expected (tid, status, user, description, extension)"));
    };
    let tid = tid_of(M, tid)?;
    let status = match bytes_or_text(status).as_deref() {
        Some([b]) => TxnStatus::from_byte(*b),
        _ => None,
    }
    .ok_or_else(|| bad("bad status"))?;
    let user = bytes_or_text(user).ok_or_else(|| bad("bad user"))?;
    let description = bytes_or_text(description).ok_or_else(|| bad("bad description"))?;
    let extension = match extension {
        Value::Dict(pairs) if pairs.is_empty() => Vec::new(),
        Value::None => Vec::new(),
        // Pickled as ZODB pickles an extension (protocol 3, with a memo),
        // so that it reads back as the same dict.
        dict @ Value::Dict(_) => {
            let mut encoder = zeo_pickle::Encoder::new(zeo_pickle::Protocol::V3).with_memo(true);
            encoder
                .dump(dict)
                .map_err(|e| bad(&format!("extension: {e}")))?;
            encoder.into_bytes()
        }
        Value::Bytes(b) => b.clone(),
        _ => return Err(bad("extension is not a dict")),
    };
    Ok(Some((
        tid,
        status,
        TransactionMetaData {
            user,
            description,
            extension,
        },
    )))
}

/// `iterator_record_next`'s `(oid, tid, data or None, data_txn or None)`.
fn parse_record(value: &Value) -> Result<Option<DataRecord>> {
    const M: &str = "iterator_record_next";
    let bad = |why: &str| Error::Protocol(format!("{M}: {why}"));
    let items = match value {
        Value::None => return Ok(None),
        Value::Tuple(items) | Value::List(items) => items,
        other => return Err(bad(&format!("unexpected {}", other.type_name()))),
    };
    let [oid, tid, data, data_txn] = items.as_slice() else {
        return Err(bad("expected (oid, tid, data, data_txn)"));
    };
    let oid = match oid {
        Value::Bytes(b) => Oid::from_slice(b),
        _ => None,
    }
    .ok_or_else(|| bad("expected an 8-byte oid"))?;
    let data = match data {
        Value::None => None,
        Value::Bytes(b) => Some(b.clone()),
        _ => return Err(bad("data is neither bytes nor None")),
    };
    let data_txn = match data_txn {
        Value::None => None,
        other => Some(tid_of(M, other)?),
    };
    Ok(Some(DataRecord {
        oid,
        tid: tid_of(M, tid)?,
        data,
        data_txn,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_tuples_parse_in_either_encoding() {
        let t = Value::Bytes(Tid(7).to_bytes().to_vec());
        let pickle_shape = Value::Tuple(vec![
            t.clone(),
            Value::Str(" ".into()),
            Value::Bytes(b"u".to_vec()),
            Value::Bytes(b"d".to_vec()),
            Value::Dict(vec![]),
        ]);
        let msgpack_shape = Value::List(vec![
            t,
            Value::Bytes(b"p".to_vec()),
            Value::Str("u".into()),
            Value::Bytes(b"d".to_vec()),
            Value::Dict(vec![(Value::Str("k".into()), Value::Int(1))]),
        ]);
        let (tid, status, meta) = parse_transaction(&pickle_shape).unwrap().unwrap();
        assert_eq!((tid, status), (Tid(7), TxnStatus::Committed));
        assert_eq!((meta.user, meta.extension), (b"u".to_vec(), Vec::new()));
        let (_, status, meta) = parse_transaction(&msgpack_shape).unwrap().unwrap();
        assert_eq!(status, TxnStatus::Packed);
        assert_eq!(
            zeo_protocol::reply::extension_dict(&meta.extension).unwrap(),
            vec![(Value::Str("k".into()), Value::Int(1))]
        );
        assert!(parse_transaction(&Value::None).unwrap().is_none());
        assert!(parse_transaction(&Value::Tuple(vec![Value::None])).is_err());
        let bad_status = Value::Tuple(vec![
            Value::Bytes(vec![0; 8]),
            Value::Str("xy".into()),
            Value::None,
            Value::None,
            Value::None,
        ]);
        assert!(parse_transaction(&bad_status).is_err());
    }

    #[test]
    fn record_tuples_parse() {
        let b8 = |n: u64| Value::Bytes(n.to_be_bytes().to_vec());
        let r = parse_record(&Value::Tuple(vec![b8(1), b8(2), Value::None, b8(3)]))
            .unwrap()
            .unwrap();
        assert_eq!(
            r,
            DataRecord {
                oid: Oid(1),
                tid: Tid(2),
                data: None,
                data_txn: Some(Tid(3))
            }
        );
        assert!(parse_record(&Value::None).unwrap().is_none());
        assert!(parse_record(&Value::Tuple(vec![
            b8(1),
            Value::Int(2),
            Value::None,
            Value::None
        ]))
        .is_err());
        assert!(parse_record(&Value::Tuple(vec![
            Value::Bytes(vec![1]),
            b8(2),
            Value::None,
            Value::None
        ]))
        .is_err());
    }
}
