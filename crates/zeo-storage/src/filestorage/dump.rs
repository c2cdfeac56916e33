//! `dump`: the listing ZODB's `fsdump` prints, line for line.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::timestamp::TimeStamp;

use super::format::check_magic;
use super::iteration::TxnScanner;
use super::scan::file_len;

/// Writes fsdump's listing of the file at `path` to `out`: per transaction
/// `Trans #NNNNN tid=… size=… time=… offset=…` and the status/user/
/// description line, per record `  data #NNNNN oid=… size=… class=…` with
/// `bp=` for backpointers. Like fsdump it stops quietly at an incomplete or
/// inconsistent transaction; unreadable records are reported as errors.
pub fn dump(path: &Path, out: &mut dyn Write) -> Result<()> {
    let file = File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let size = file_len(&file, path)?;
    let mut magic = [0u8; 4];
    {
        use std::os::unix::fs::FileExt;
        file.read_exact_at(&mut magic, 0).map_err(|_| {
            super::format::format_error(path, 0, "file is too short for the FS30 header")
        })?;
    }
    check_magic(path, &magic)?;
    let io = |e| Error::io("writing the dump", e);
    let mut scanner = TxnScanner::new(Arc::new(file), path, size, None, None, false)?;
    let mut i = 0u64;
    while let Some(txn) = scanner.next_txn() {
        let txn = txn?;
        let h = &txn.header;
        writeln!(
            out,
            "Trans #{i:05} tid={:016x} size={} time={} offset={}",
            h.tid.0,
            h.tlen,
            TimeStamp::from_tid(h.tid),
            txn.tpos + h.header_len()
        )
        .map_err(io)?;
        writeln!(
            out,
            "    status={} user={} description={}",
            py_str_repr(&[h.status]),
            py_bytes_repr(&txn.meta.user),
            py_bytes_repr(&txn.meta.description)
        )
        .map_err(io)?;
        for (j, rec) in txn.records.iter().enumerate() {
            let (size, class) = match &rec.data {
                None => (
                    String::new(),
                    "undo or abort of object creation".to_string(),
                ),
                Some(d) => {
                    let (m, c) = pickle_class_name(d);
                    (format!(" size={}", d.len()), format!("{m}.{c}"))
                }
            };
            let bp = rec
                .data_txn
                .map(|t| format!(" bp={:016x}", t.0))
                .unwrap_or_default();
            writeln!(
                out,
                "  data #{j:05} oid={:016x}{size} class={class}{bp}",
                rec.oid.0
            )
            .map_err(io)?;
        }
        i += 1;
    }
    Ok(())
}

/// Python's `repr()` of a `bytes` value.
pub(crate) fn py_bytes_repr(b: &[u8]) -> String {
    let quote = if b.contains(&b'\'') && !b.contains(&b'"') {
        '"'
    } else {
        '\''
    };
    let mut s = String::with_capacity(b.len() + 3);
    s.push('b');
    s.push(quote);
    for &c in b {
        match c {
            b'\\' => s.push_str("\\\\"),
            b'\t' => s.push_str("\\t"),
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            c if char::from(c) == quote => {
                s.push('\\');
                s.push(quote);
            }
            0x20..=0x7e => s.push(char::from(c)),
            c => s.push_str(&format!("\\x{c:02x}")),
        }
    }
    s.push(quote);
    s
}

/// Python's `repr()` of a one-character `str` decoded from ASCII (the
/// transaction status).
fn py_str_repr(b: &[u8]) -> String {
    let text: String = b.iter().map(|&c| char::from(c)).collect();
    let quote = if text.contains('\'') && !text.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut s = String::new();
    s.push(quote);
    for c in text.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '\t' => s.push_str("\\t"),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            c if c == quote => {
                s.push('\\');
                s.push(c);
            }
            ' '..='~' => s.push(c),
            c if (c as u32) < 0xa0 => s.push_str(&format!("\\x{:02x}", c as u32)),
            c => s.push(c),
        }
    }
    s.push(quote);
    s
}

/// Module and class name of a record's class pickle without running it
/// (`ZODB.utils.get_pickle_metadata`).
pub(crate) fn pickle_class_name(data: &[u8]) -> (String, String) {
    let mut d = data;
    if d.first() == Some(&0x80) {
        d = d.get(2..).unwrap_or_default();
    }
    let prefix = if d.starts_with(b"(c") {
        2
    } else if d.starts_with(b"c") {
        1
    } else {
        0
    };
    if prefix > 0 {
        let mut parts = d.splitn(3, |&c| c == b'\n');
        if let (Some(m), Some(c), Some(_)) = (parts.next(), parts.next(), parts.next()) {
            let m = m.get(prefix..).unwrap_or_default();
            return (
                String::from_utf8_lossy(m).into_owned(),
                String::from_utf8_lossy(c).into_owned(),
            );
        }
        return (String::new(), String::new());
    }
    match class_tuple(d) {
        Some((m, c)) => (m, c),
        None => (String::new(), String::new()),
    }
}

/// Deepest tuple nesting [`class_tuple`] builds; class metadata is two
/// levels deep (`((module, name), args)`), plus whatever `args` holds.
const MAX_CLASS_TUPLE_HEIGHT: u32 = 32;

/// Decodes the `((module, name), args)` / `(module, name)` class metadata
/// forms that do not start with GLOBAL; `None` for anything else.
///
/// The pickle comes from the file, so it is hostile input: tuples nest at
/// most [`MAX_CLASS_TUPLE_HEIGHT`] deep (which also bounds the recursion of
/// dropping them), and memo copies are charged against a budget linear in
/// the input, so `TUPLE1` chains and repeated `BINGET`s cannot exhaust the
/// stack or memory.
fn class_tuple(d: &[u8]) -> Option<(String, String)> {
    #[derive(Clone)]
    enum V {
        Str(String),
        Other,
        Mark,
        /// Items, height, weight (nodes plus string bytes).
        Tuple(Vec<V>, u32, usize),
    }
    impl V {
        fn height(&self) -> u32 {
            match self {
                V::Tuple(_, h, _) => *h,
                _ => 0,
            }
        }
        fn weight(&self) -> usize {
            match self {
                V::Tuple(_, _, w) => *w,
                V::Str(s) => 1 + s.len(),
                _ => 1,
            }
        }
    }
    let tuple = |items: Vec<V>| -> Option<V> {
        let height = 1 + items.iter().map(V::height).max().unwrap_or(0);
        if height > MAX_CLASS_TUPLE_HEIGHT {
            return None;
        }
        let weight = items
            .iter()
            .map(V::weight)
            .fold(1usize, usize::saturating_add);
        Some(V::Tuple(items, height, weight))
    };
    let mut budget = 4096usize.saturating_add(d.len().saturating_mul(4));
    let mut copy = |v: &V| -> Option<V> {
        budget = budget.checked_sub(v.weight())?;
        Some(v.clone())
    };
    let mut stack: Vec<V> = Vec::new();
    let mut memo: std::collections::HashMap<u32, V> = std::collections::HashMap::new();
    let mut i = 0usize;
    let take = |i: &mut usize, n: usize| -> Option<&[u8]> {
        let s = d.get(*i..i.checked_add(n)?)?;
        *i += n;
        Some(s)
    };
    let pop_mark = |stack: &mut Vec<V>| -> Option<Vec<V>> {
        let at = stack.iter().rposition(|v| matches!(v, V::Mark))?;
        let items = stack.split_off(at + 1);
        stack.pop();
        Some(items)
    };
    loop {
        let op = *take(&mut i, 1)?.first()?;
        match op {
            0x80 => {
                take(&mut i, 1)?;
            }
            b'(' => stack.push(V::Mark),
            b'N' | 0x88 | 0x89 => stack.push(V::Other),
            b'X' => {
                let n = u32::from_le_bytes(take(&mut i, 4)?.try_into().ok()?) as usize;
                stack.push(V::Str(
                    String::from_utf8_lossy(take(&mut i, n)?).into_owned(),
                ));
            }
            0x8c => {
                let n = usize::from(*take(&mut i, 1)?.first()?);
                stack.push(V::Str(
                    String::from_utf8_lossy(take(&mut i, n)?).into_owned(),
                ));
            }
            b'U' => {
                let n = usize::from(*take(&mut i, 1)?.first()?);
                stack.push(V::Str(
                    String::from_utf8_lossy(take(&mut i, n)?).into_owned(),
                ));
            }
            b'T' => {
                let n = u32::from_le_bytes(take(&mut i, 4)?.try_into().ok()?) as usize;
                stack.push(V::Str(
                    String::from_utf8_lossy(take(&mut i, n)?).into_owned(),
                ));
            }
            b'K' => {
                take(&mut i, 1)?;
                stack.push(V::Other);
            }
            b'M' => {
                take(&mut i, 2)?;
                stack.push(V::Other);
            }
            b'J' => {
                take(&mut i, 4)?;
                stack.push(V::Other);
            }
            b')' => stack.push(tuple(Vec::new())?),
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                let at = stack.len().checked_sub(n)?;
                let items = stack.split_off(at);
                stack.push(tuple(items)?);
            }
            b't' => {
                let items = pop_mark(&mut stack)?;
                stack.push(tuple(items)?);
            }
            b'q' => {
                let k = u32::from(*take(&mut i, 1)?.first()?);
                memo.insert(k, copy(stack.last()?)?);
            }
            b'r' => {
                let k = u32::from_le_bytes(take(&mut i, 4)?.try_into().ok()?);
                memo.insert(k, copy(stack.last()?)?);
            }
            0x94 => {
                let k = memo.len() as u32;
                memo.insert(k, copy(stack.last()?)?);
            }
            b'h' => {
                let k = u32::from(*take(&mut i, 1)?.first()?);
                stack.push(copy(memo.get(&k)?)?);
            }
            b'j' => {
                let k = u32::from_le_bytes(take(&mut i, 4)?.try_into().ok()?);
                stack.push(copy(memo.get(&k)?)?);
            }
            b'.' => break,
            _ => return None,
        }
    }
    let top = stack.pop()?;
    let V::Tuple(items, ..) = top else {
        return None;
    };
    let pair = match items.first()? {
        V::Tuple(inner, ..) => inner.clone(),
        _ => items,
    };
    match pair.as_slice() {
        [V::Str(m), V::Str(c)] => Some((m.clone(), c.clone())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_repr_matches_python() {
        assert_eq!(py_bytes_repr(b""), "b''");
        assert_eq!(py_bytes_repr(b"alice"), "b'alice'");
        assert_eq!(py_bytes_repr(b"it's"), "b\"it's\"");
        assert_eq!(py_bytes_repr(b"'\""), "b'\\'\"'");
        assert_eq!(
            py_bytes_repr(b"a\tb\n\\\x00\xff"),
            "b'a\\tb\\n\\\\\\x00\\xff'"
        );
        assert_eq!(py_str_repr(b" "), "' '");
        assert_eq!(py_str_repr(b"p"), "'p'");
    }

    #[test]
    fn class_names() {
        let global = b"\x80\x03cpersistent.mapping\nPersistentMapping\nq\x00.\x80\x03}q\x01.";
        assert_eq!(
            pickle_class_name(global),
            ("persistent.mapping".into(), "PersistentMapping".into())
        );
        // ((module, name), None) as protocol 3 writes it.
        let mut t = vec![0x80, 3, b'X', 3, 0, 0, 0];
        t.extend_from_slice(b"mod");
        t.extend_from_slice(&[b'q', 0, b'X', 4, 0, 0, 0]);
        t.extend_from_slice(b"Klass");
        t.truncate(t.len() - 1);
        t.extend_from_slice(&[b'q', 1, 0x86, b'q', 2, b'N', 0x86, b'q', 3, b'.']);
        assert_eq!(pickle_class_name(&t), ("mod".into(), "Klas".into()));
        assert_eq!(
            pickle_class_name(b"\x80\x03Q."),
            (String::new(), String::new())
        );
    }

    #[test]
    fn class_names_of_hostile_pickles_cost_little() {
        // 1,000,000 TUPLE1s: a million-deep tuple if built (and a stack
        // overflow when dropped).
        let mut deep = vec![0x80, 3, b'N'];
        deep.extend(std::iter::repeat_n(0x85u8, 1_000_000));
        deep.push(b'.');
        assert_eq!(pickle_class_name(&deep), (String::new(), String::new()));
        // A tuple doubled through the memo 40 times: 2^40 nodes if copied.
        let mut bomb = vec![0x80, 3, b'N', b'q', 0];
        for _ in 0..40 {
            bomb.extend_from_slice(&[b'h', 0, b'h', 0, 0x86, b'q', 0]);
        }
        bomb.push(b'.');
        assert_eq!(pickle_class_name(&bomb), (String::new(), String::new()));
        // Moderate nesting in the arguments still names the class.
        let mut args = vec![
            0x80, 3, b'X', 1, 0, 0, 0, b'm', b'X', 1, 0, 0, 0, b'C', 0x86,
        ];
        args.push(b'N');
        args.extend(std::iter::repeat_n(0x85u8, 20));
        args.extend_from_slice(&[0x86, b'.']);
        assert_eq!(pickle_class_name(&args), ("m".into(), "C".into()));
    }
}
