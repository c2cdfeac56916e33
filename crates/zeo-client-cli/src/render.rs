//! Reading ids from the command line and writing server answers for
//! people (lines) and programs (JSON).

use serde_json::{json, Map, Value as Json};
use zeo_pickle::{describe, Value};
use zeo_storage::{Oid, Tid, TimeStamp};

use crate::error::CliError;

/// Parses an 8-byte id: `0x`-prefixed hex, or exactly 16 hex digits (the
/// way ZODB tools print them), else a decimal integer.
fn parse_id(text: &str, what: &str) -> Result<u64, CliError> {
    let bad = || {
        CliError::Usage(format!(
            "{what} {text:?}: expected 0x-prefixed or 16-digit hex, or a decimal integer"
        ))
    };
    let t = text.trim();
    let hex = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X"));
    match hex {
        Some(h) if !h.is_empty() && h.len() <= 16 => u64::from_str_radix(h, 16).map_err(|_| bad()),
        Some(_) => Err(bad()),
        None if t.len() == 16 && t.bytes().all(|b| b.is_ascii_hexdigit()) => {
            u64::from_str_radix(t, 16).map_err(|_| bad())
        }
        None => t.parse::<u64>().map_err(|_| bad()),
    }
}

/// An oid from the command line.
pub fn parse_oid(text: &str) -> Result<Oid, CliError> {
    parse_id(text, "oid").map(Oid)
}

/// A tid from the command line.
pub fn parse_tid(text: &str) -> Result<Tid, CliError> {
    parse_id(text, "tid").map(Tid)
}

/// A tid with its commit time (UTC), e.g.
/// `0x03d56c8f1a2b3c4d 2024-01-02 03:04:05.123456`.
pub fn tid_with_time(tid: Tid) -> String {
    format!("{tid} {}", TimeStamp::from_tid(tid))
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS.ffffff` UTC.
pub fn unix_time(t: f64) -> String {
    TimeStamp::from_unix(t).to_string()
}

/// Bytes as text when they are UTF-8, else as lowercase hex.
pub fn text_or_hex(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => hex(bytes),
    }
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// A decoded server answer as JSON: bytes become text when they are
/// UTF-8, else hex; dict keys become strings.
pub fn to_json(value: &Value) -> Json {
    match value {
        Value::None => Json::Null,
        Value::Bool(b) => json!(b),
        Value::Int(i) => json!(i),
        Value::Float(f) => json!(f),
        Value::Str(s) => json!(s),
        Value::Bytes(b) => json!(text_or_hex(b)),
        Value::Tuple(items) | Value::List(items) => {
            Json::Array(items.iter().map(to_json).collect())
        }
        Value::Dict(pairs) => {
            let mut map = Map::new();
            for (k, v) in pairs {
                map.insert(key_text(k), to_json(v));
            }
            Json::Object(map)
        }
        other => json!(format!("{other:?}")),
    }
}

/// An 8-byte id as the 16 hex digits ZODB tools print.
pub fn id_hex(id: u64) -> String {
    format!("{id:016x}")
}

/// A record's state as JSON for `cat --decode --json`, bounded by
/// `limits` like the tree: persistent references become
/// `{"ref": oid, "class": name or null}`, bytes `{"bytes": hex, "length":
/// n}` (cut to `max_bytes`), dicts with text keys objects and other dicts
/// lists of pairs, objects `{"call": class, "args": ...}` or `{"object":
/// ..., "state": ...}`; past `max_depth` a value is `"…"`.
pub fn state_json(value: &Value, limits: &describe::Limits) -> Json {
    state_json_at(value, limits, 0)
}

fn state_json_at(value: &Value, limits: &describe::Limits, depth: usize) -> Json {
    if depth >= limits.max_depth {
        return json!("…");
    }
    let next = |v: &Value| state_json_at(v, limits, depth + 1);
    let list =
        |items: &[Value]| Json::Array(items.iter().take(limits.max_items).map(next).collect());
    let pairs = |items: &[(Value, Value)]| {
        if items.iter().all(|(k, _)| matches!(k, Value::Str(_))) {
            let mut map = Map::new();
            for (k, v) in items.iter().take(limits.max_items) {
                map.insert(key_text(k), next(v));
            }
            Json::Object(map)
        } else {
            Json::Array(
                items
                    .iter()
                    .take(limits.max_items)
                    .map(|(k, v)| json!([next(k), next(v)]))
                    .collect(),
            )
        }
    };
    let bytes =
        |b: &[u8]| json!({"bytes": hex(&b[..b.len().min(limits.max_bytes)]), "length": b.len()});
    match value {
        Value::None => Json::Null,
        Value::Bool(b) => json!(b),
        Value::Int(i) => json!(i),
        Value::BigInt(b) => json!({"bigint_le": hex(b)}),
        Value::Float(f) => json!(f),
        Value::Str(s) if s.chars().count() > limits.max_chars => {
            json!({"text": s.chars().take(limits.max_chars).collect::<String>(), "length": s.chars().count()})
        }
        Value::Str(s) => json!(s),
        Value::Bytes(b) | Value::ByteArray(b) => bytes(b),
        Value::Tuple(items) | Value::List(items) | Value::Set(items) | Value::FrozenSet(items) => {
            list(items)
        }
        Value::Dict(items) => pairs(items),
        Value::Global { module, name } => json!({"class": format!("{module}.{name}")}),
        Value::PersistentId(id) => match describe::reference(value) {
            Some((oid, class)) => json!({"ref": id_hex(oid), "class": class}),
            None => json!({"persistent_id": next(id)}),
        },
        Value::Call { callable, args, .. } => json!({"call": next(callable), "args": next(args)}),
        Value::Build { object, state } => json!({"object": next(object), "state": next(state)}),
        Value::ListItems { object, items } => json!({"object": next(object), "items": list(items)}),
        Value::DictItems { object, items } => {
            json!({"object": next(object), "items": pairs(items)})
        }
    }
}

fn key_text(key: &Value) -> String {
    match key {
        Value::Str(s) => s.clone(),
        Value::Bytes(b) => text_or_hex(b),
        other => to_json(other).to_string(),
    }
}

/// A decoded server answer on one line, Python-literal style.
pub fn to_text(value: &Value) -> String {
    match value {
        Value::None => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Str(s) => s.clone(),
        Value::Bytes(b) => text_or_hex(b),
        Value::Tuple(items) | Value::List(items) => {
            let inner: Vec<String> = items.iter().map(to_text).collect();
            format!("({})", inner.join(", "))
        }
        Value::Dict(pairs) => {
            let inner: Vec<String> = pairs
                .iter()
                .map(|(k, v)| format!("{}: {}", key_text(k), to_text(v)))
                .collect();
            format!("{{{}}}", inner.join(", "))
        }
        other => format!("{other:?}"),
    }
}

/// A dict answer as `key: value` lines, keys padded to one column; any
/// other answer as one line.
pub fn dict_lines(value: &Value) -> Vec<String> {
    let Value::Dict(pairs) = value else {
        return vec![to_text(value)];
    };
    let width = pairs
        .iter()
        .map(|(k, _)| key_text(k).len())
        .max()
        .unwrap_or(0);
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{:<width$}  {}",
                key_text(k) + ":",
                to_text(v),
                width = width + 1
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_in_the_forms_zodb_prints() {
        assert_eq!(parse_oid("0x2a").unwrap(), Oid(42));
        assert_eq!(parse_oid("42").unwrap(), Oid(42));
        assert_eq!(parse_oid("000000000000002a").unwrap(), Oid(42));
        assert_eq!(parse_oid("0").unwrap(), Oid(0));
        assert_eq!(
            parse_tid("0x03d56c8f1a2b3c4d").unwrap(),
            Tid(0x03d5_6c8f_1a2b_3c4d)
        );
        for bad in [
            "",
            "0x",
            "-1",
            "2a",
            "0x12345678901234567",
            "18446744073709551616",
        ] {
            assert!(parse_oid(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn answers_render_as_json_and_lines() {
        let v = Value::Dict(vec![
            (Value::Str("length".into()), Value::Int(3)),
            (Value::Str("name".into()), Value::Bytes(b"Data.fs".to_vec())),
            (Value::Str("raw".into()), Value::Bytes(vec![0xff, 0x00])),
            (Value::Str("lock_time".into()), Value::None),
        ]);
        assert_eq!(
            to_json(&v),
            json!({"length": 3, "name": "Data.fs", "raw": "ff00", "lock_time": null})
        );
        assert_eq!(
            dict_lines(&v),
            vec![
                "length:     3",
                "name:       Data.fs",
                "raw:        ff00",
                "lock_time:  None"
            ]
        );
    }
}
