//! ZODB object records shown to people: the class and the state as an
//! indented tree, for operators who have no Python at hand
//! (`zeo-client cat --decode`, `zeo-server dump --decode`).
//!
//! Nothing is executed: the record is decoded into a [`Value`] tree with
//! a bounded depth and output, and the tree is printed with persistent
//! references as oids (with their class when the reference names it),
//! long byte strings and texts abbreviated, and long containers cut short,
//! so one huge or deeply nested record yields a bounded amount of text.
//!
//! ```
//! use zeo_pickle::describe::{describe_record, Limits};
//! use zeo_pickle::zodb::{Record, PERSISTENT_LIST};
//! use zeo_pickle::Value;
//!
//! let mut root = Record::persistent_mapping([(Value::str("name"), Value::str("demo"))]);
//! root.mapping_set(Value::str("items"), Value::persistent_ref(7, Some(PERSISTENT_LIST.global())));
//! let text = describe_record(&root.encode()?, &Limits::default())?;
//! assert_eq!(
//!     text,
//!     "persistent.mapping.PersistentMapping\n\
//!      \x20 data: dict (2 items)\n\
//!      \x20   'name': 'demo'\n\
//!      \x20   'items': -> 0x0000000000000007 persistent.list.PersistentList\n"
//! );
//! # Ok::<(), zeo_pickle::Error>(())
//! ```

use std::fmt::Write;

use crate::decode::Decoder;
use crate::error::Error;
use crate::value::Value;
use crate::zodb::Record;

/// How much of a record is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Nesting levels printed; deeper values are shown as `…`. Also the
    /// decoder's depth bound plus a margin, so no tree deeper than this
    /// (plus a few levels) is ever built.
    pub max_depth: usize,
    /// Items shown of one container; the rest are counted.
    pub max_items: usize,
    /// Bytes shown of one byte string (as hex, or as text when printable).
    pub max_bytes: usize,
    /// Characters shown of one text.
    pub max_chars: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 24,
            max_items: 100,
            max_bytes: 32,
            max_chars: 200,
        }
    }
}

/// Levels the decoder may nest beyond [`Limits::max_depth`]: the values a
/// pickle wraps objects in (calls, argument tuples) take a few levels
/// without adding anything shown.
const DECODE_DEPTH_MARGIN: usize = 8;

/// Decodes a record's two pickles with the decoder's depth bounded by
/// `limits`. An empty record (an undone creation) is an error of its own.
///
/// # Errors
///
/// Any decoding error; [`Error::Shape`] for an empty record.
pub fn decode_record(data: &[u8], limits: &Limits) -> Result<Record, Error> {
    if data.is_empty() {
        return Err(Error::Shape(
            "empty record (the object's creation was undone)".into(),
        ));
    }
    let mut d =
        Decoder::new(data).with_max_depth(limits.max_depth.saturating_add(DECODE_DEPTH_MARGIN));
    let class = d.next_pickle()?;
    let state = d.next_pickle()?;
    Ok(Record { class, state })
}

/// The record's class as `module.Name`, read from its first pickle the
/// way ZODB's `get_pickle_metadata` does; `?` when it names none.
pub fn class_label(class: &Value) -> String {
    let class = match class {
        Value::Tuple(items) => items.first().unwrap_or(class),
        other => other,
    };
    match class {
        Value::Global { module, name } => format!("{module}.{name}"),
        Value::Tuple(pair) => match pair.as_slice() {
            [Value::Str(m), Value::Str(n)] => format!("{m}.{n}"),
            _ => "?".into(),
        },
        _ => "?".into(),
    }
}

/// The `(oid, class)` a persistent reference stands for: the class as
/// `module.Name` when the reference names it. Weak and cross-database
/// references (list-shaped ids) give `None`.
pub fn reference(value: &Value) -> Option<(u64, Option<String>)> {
    let oid = value.reference_oid()?;
    let class = value.reference_class().map(|(m, n)| format!("{m}.{n}"));
    Some((oid, class))
}

/// The record as text: the class on the first line, then the state as an
/// indented tree, every line ending in a newline.
///
/// # Errors
///
/// What [`decode_record`] fails with.
pub fn describe_record(data: &[u8], limits: &Limits) -> Result<String, Error> {
    let record = decode_record(data, limits)?;
    Ok(describe(&record, limits))
}

/// [`describe_record`] for a record already decoded.
pub fn describe(record: &Record, limits: &Limits) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", class_label(&record.class));
    // A class given with arguments (`(class, args)`) shows them too.
    if let Value::Tuple(items) = &record.class {
        if let Some(args) = items.get(1) {
            tree(&mut out, "args: ", args, 1, limits);
        }
    }
    match &record.state {
        Value::Dict(pairs) => {
            // The state's top level holds attribute names: shown bare.
            for (k, v) in pairs.iter().take(limits.max_items) {
                let name = match k {
                    Value::Str(s) => s.escape_debug().to_string(),
                    other => key(other, limits),
                };
                tree(&mut out, &format!("{name}: "), v, 1, limits);
            }
            more(&mut out, pairs.len(), 1, limits);
        }
        other => tree(&mut out, "", other, 1, limits),
    }
    out
}

fn indent(out: &mut String, level: usize) {
    for _ in 0..level {
        out.push_str("  ");
    }
}

fn more(out: &mut String, len: usize, level: usize, limits: &Limits) {
    if len > limits.max_items {
        indent(out, level);
        let _ = writeln!(out, "… {} more", len - limits.max_items);
    }
}

/// A dict key on one line.
fn key(k: &Value, limits: &Limits) -> String {
    scalar(k, limits).unwrap_or_else(|| k.type_name().to_owned())
}

/// A value that fits on one line, or `None` for containers and objects.
fn scalar(v: &Value, limits: &Limits) -> Option<String> {
    Some(match v {
        Value::None => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Int(i) => i.to_string(),
        Value::BigInt(b) => format!("int ({} bytes)", b.len()),
        Value::Float(f) => format!("{f:?}"),
        Value::Str(s) => text(s, limits),
        Value::Bytes(b) => format!("b{}", bytes(b, limits)),
        Value::ByteArray(b) => format!("bytearray {}", bytes(b, limits)),
        Value::Global { module, name } => format!("<class {module}.{name}>"),
        Value::PersistentId(_) => match reference(v) {
            Some((oid, Some(class))) => format!("-> 0x{oid:016x} {class}"),
            Some((oid, None)) => format!("-> 0x{oid:016x}"),
            None => return None,
        },
        Value::Tuple(items) | Value::List(items) | Value::Set(items) | Value::FrozenSet(items)
            if items.is_empty() =>
        {
            format!("{} (empty)", v.type_name())
        }
        Value::Dict(pairs) if pairs.is_empty() => "dict (empty)".into(),
        _ => return None,
    })
}

/// A text, quoted Python-style, cut to `max_chars`.
fn text(s: &str, limits: &Limits) -> String {
    let count = s.chars().count();
    if count <= limits.max_chars {
        return format!("'{}'", s.escape_debug());
    }
    let head: String = s.chars().take(limits.max_chars).collect();
    format!("'{}'… ({count} characters)", head.escape_debug())
}

/// Bytes as quoted text when printable ASCII, else hex, cut to `max_bytes`.
fn bytes(b: &[u8], limits: &Limits) -> String {
    let shown = &b[..b.len().min(limits.max_bytes)];
    let printable = shown.iter().all(|c| (0x20..0x7f).contains(c));
    let mut s = if printable {
        let t: String = shown.iter().map(|&c| char::from(c)).collect();
        format!("'{}'", t.escape_debug())
    } else {
        let mut h = String::from("x");
        for c in shown {
            let _ = write!(h, "{c:02x}");
        }
        h
    };
    if b.len() > shown.len() {
        let _ = write!(s, "… ({} bytes)", b.len());
    }
    s
}

/// One value as `label` and its tree at `level`. Recursion is bounded by
/// `limits.max_depth` (deeper values print as `…`), and the decoder bounds
/// the tree itself.
fn tree(out: &mut String, label: &str, v: &Value, level: usize, limits: &Limits) {
    indent(out, level);
    out.push_str(label);
    if let Some(line) = scalar(v, limits) {
        let _ = writeln!(out, "{line}");
        return;
    }
    if level >= limits.max_depth {
        let _ = writeln!(out, "{} …", v.type_name());
        return;
    }
    let next = level + 1;
    match v {
        Value::Tuple(items) | Value::List(items) | Value::Set(items) | Value::FrozenSet(items) => {
            let _ = writeln!(out, "{} ({} items)", v.type_name(), items.len());
            for item in items.iter().take(limits.max_items) {
                tree(out, "- ", item, next, limits);
            }
            more(out, items.len(), next, limits);
        }
        Value::Dict(pairs) => {
            let _ = writeln!(out, "dict ({} items)", pairs.len());
            for (k, val) in pairs.iter().take(limits.max_items) {
                tree(out, &format!("{}: ", key(k, limits)), val, next, limits);
            }
            more(out, pairs.len(), next, limits);
        }
        Value::PersistentId(id) => {
            // Weak or cross-database references: show their parts.
            let _ = writeln!(out, "persistent reference");
            tree(out, "", id, next, limits);
        }
        Value::Call { callable, args, .. } => {
            let _ = writeln!(out, "{}", call_label(callable));
            tree(out, "args: ", args, next, limits);
        }
        Value::Build { object, state } => {
            let _ = writeln!(out, "object");
            tree(out, "", object, next, limits);
            tree(out, "state: ", state, next, limits);
        }
        Value::ListItems { object, items } => {
            let _ = writeln!(out, "object with {} items", items.len());
            tree(out, "", object, next, limits);
            for item in items.iter().take(limits.max_items) {
                tree(out, "- ", item, next, limits);
            }
            more(out, items.len(), next, limits);
        }
        Value::DictItems { object, items } => {
            let _ = writeln!(out, "object with {} entries", items.len());
            tree(out, "", object, next, limits);
            for (k, val) in items.iter().take(limits.max_items) {
                tree(out, &format!("{}: ", key(k, limits)), val, next, limits);
            }
            more(out, items.len(), next, limits);
        }
        // Scalars were printed above.
        _ => {
            let _ = writeln!(out, "{}", v.type_name());
        }
    }
}

fn call_label(callable: &Value) -> String {
    match callable {
        Value::Global { module, name } => format!("{module}.{name}(…)"),
        other => format!("{}(…)", other.type_name()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_abbreviated() {
        let limits = Limits {
            max_items: 2,
            max_bytes: 4,
            max_chars: 3,
            ..Limits::default()
        };
        let state = Value::Dict(vec![
            (Value::str("b"), Value::Bytes(vec![0, 1, 2, 3, 4, 5])),
            (Value::str("s"), Value::str("abcdef")),
            (
                Value::str("l"),
                Value::List(vec![Value::Int(1), Value::Int(2), Value::Int(3)]),
            ),
        ]);
        let record = Record {
            class: Value::global("m", "C"),
            state,
        };
        assert_eq!(
            describe(&record, &limits),
            "m.C\n  b: bx00010203… (6 bytes)\n  s: 'abc'… (6 characters)\n  … 1 more\n"
        );
    }

    #[test]
    fn depth_is_cut() {
        let limits = Limits {
            max_depth: 2,
            ..Limits::default()
        };
        let inner = Value::List(vec![Value::List(vec![Value::List(vec![Value::Int(1)])])]);
        let record = Record {
            class: Value::global("m", "C"),
            state: inner,
        };
        assert_eq!(
            describe(&record, &limits),
            "m.C\n  list (1 items)\n    - list …\n"
        );
    }

    #[test]
    fn empty_record_is_named() {
        assert!(matches!(
            decode_record(b"", &Limits::default()),
            Err(Error::Shape(_))
        ));
    }
}
