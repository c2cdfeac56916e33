//! msgpack ↔ [`Value`], as ZEO's `M` encoding uses it:
//! `packb(..., use_bin_type=True)` and `unpackb(..., raw=False, use_list=False)`.
//!
//! So `bytes` travel as bin and `str` as str, every array decodes to a
//! tuple, integers take their smallest form (unsigned forms for
//! non-negative values) and floats are always float64. Values msgpack
//! cannot carry — sets, class references, objects, integers beyond 64 bits —
//! fail to encode, as they do in Python.

use rmp::Marker;
use zeo_pickle::Value;

use crate::error::{Error, Result};
use crate::limits::{plain_budget, MAX_MESSAGE_DEPTH, VALUE_COST};
use crate::pickle::Side;

const ENCODING: &str = "msgpack";

/// Deepest nesting a decoded value may have; protects the stack against
/// hostile input like a long run of one-element arrays (see
/// [`crate::limits`]). The encoder accepts one level more, so whatever
/// decodes re-encodes.
pub const MAX_DEPTH: usize = MAX_MESSAGE_DEPTH;

/// Most elements reserved for a container before they arrive: a header can
/// claim four billion, and only the elements that decode take room.
const MAX_PRESIZE: usize = 64;

/// Encodes one value, appending to `out`.
///
/// Iterative (a stack of values still to write), so the thread's stack
/// does not depend on the value's depth; values nested deeper than
/// [`MAX_DEPTH`] + 1 are refused like the decoder refuses them.
pub fn encode_value(value: &Value, out: &mut Vec<u8>) -> Result<()> {
    let mut todo: Vec<(&Value, usize)> = vec![(value, 0)];
    while let Some((value, depth)) = todo.pop() {
        if depth > MAX_DEPTH {
            return Err(Error::Unencodable(format!(
                "value nested deeper than {MAX_DEPTH}"
            )));
        }
        encode_one(value, out)?;
        match value {
            Value::Tuple(items) | Value::List(items) => {
                todo.extend(items.iter().rev().map(|v| (v, depth + 1)));
            }
            Value::Dict(pairs) => {
                for (k, v) in pairs.iter().rev() {
                    todo.push((v, depth + 1));
                    todo.push((k, depth + 1));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Writes a scalar, or a container's header (its items follow).
fn encode_one(value: &Value, out: &mut Vec<u8>) -> Result<()> {
    match value {
        Value::None => out.push(0xc0),
        Value::Bool(false) => out.push(0xc2),
        Value::Bool(true) => out.push(0xc3),
        Value::Int(i) => encode_int(*i, out),
        Value::BigInt(bytes) => match bigint_to_u64(bytes) {
            Some(u) => encode_uint(u, out),
            None => return Err(Error::Unencodable("integer does not fit in 64 bits".into())),
        },
        Value::Float(f) => {
            out.push(0xcb);
            out.extend_from_slice(&f.to_bits().to_be_bytes());
        }
        Value::Bytes(b) | Value::ByteArray(b) => {
            let len = len32(b.len())?;
            match len {
                0..=0xff => out.extend_from_slice(&[0xc4, len as u8]),
                0x100..=0xffff => {
                    out.push(0xc5);
                    out.extend_from_slice(&(len as u16).to_be_bytes());
                }
                _ => {
                    out.push(0xc6);
                    out.extend_from_slice(&len.to_be_bytes());
                }
            }
            out.extend_from_slice(b);
        }
        Value::Str(s) => encode_str(s, out)?,
        Value::Tuple(items) | Value::List(items) => {
            let len = len32(items.len())?;
            match len {
                0..=15 => out.push(0x90 | len as u8),
                16..=0xffff => {
                    out.push(0xdc);
                    out.extend_from_slice(&(len as u16).to_be_bytes());
                }
                _ => {
                    out.push(0xdd);
                    out.extend_from_slice(&len.to_be_bytes());
                }
            }
        }
        Value::Dict(pairs) => {
            let len = len32(pairs.len())?;
            match len {
                0..=15 => out.push(0x80 | len as u8),
                16..=0xffff => {
                    out.push(0xde);
                    out.extend_from_slice(&(len as u16).to_be_bytes());
                }
                _ => {
                    out.push(0xdf);
                    out.extend_from_slice(&len.to_be_bytes());
                }
            }
        }
        other => {
            return Err(Error::Unencodable(format!(
                "msgpack cannot carry a {}",
                other.type_name()
            )))
        }
    }
    Ok(())
}

/// Encodes a `str`, appending to `out`.
pub fn encode_str(s: &str, out: &mut Vec<u8>) -> Result<()> {
    let len = len32(s.len())?;
    match len {
        0..=31 => out.push(0xa0 | len as u8),
        32..=0xff => out.extend_from_slice(&[0xd9, len as u8]),
        0x100..=0xffff => {
            out.push(0xda);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(0xdb);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn len32(len: usize) -> Result<u32> {
    u32::try_from(len).map_err(|_| Error::Unencodable("msgpack lengths stop at 2**32-1".into()))
}

fn encode_int(i: i64, out: &mut Vec<u8>) {
    if i >= 0 {
        encode_uint(i as u64, out);
    } else if i >= -32 {
        out.push(i as i8 as u8);
    } else if i >= i64::from(i8::MIN) {
        out.extend_from_slice(&[0xd0, i as i8 as u8]);
    } else if i >= i64::from(i16::MIN) {
        out.push(0xd1);
        out.extend_from_slice(&(i as i16).to_be_bytes());
    } else if i >= i64::from(i32::MIN) {
        out.push(0xd2);
        out.extend_from_slice(&(i as i32).to_be_bytes());
    } else {
        out.push(0xd3);
        out.extend_from_slice(&i.to_be_bytes());
    }
}

fn encode_uint(u: u64, out: &mut Vec<u8>) {
    if u <= 0x7f {
        out.push(u as u8);
    } else if u <= 0xff {
        out.extend_from_slice(&[0xcc, u as u8]);
    } else if u <= 0xffff {
        out.push(0xcd);
        out.extend_from_slice(&(u as u16).to_be_bytes());
    } else if u <= 0xffff_ffff {
        out.push(0xce);
        out.extend_from_slice(&(u as u32).to_be_bytes());
    } else {
        out.push(0xcf);
        out.extend_from_slice(&u.to_be_bytes());
    }
}

/// The value of a little-endian two's-complement integer if it is in
/// `0..2**64`.
pub(crate) fn bigint_to_u64(bytes: &[u8]) -> Option<u64> {
    if bytes.last().is_some_and(|b| b & 0x80 != 0) {
        return None; // negative
    }
    let significant = bytes.iter().rposition(|b| *b != 0).map_or(0, |p| p + 1);
    if significant > 8 {
        return None;
    }
    let mut buf = [0u8; 8];
    buf[..significant].copy_from_slice(&bytes[..significant]);
    Some(u64::from_le_bytes(buf))
}

/// An unsigned integer as the decoder model wants it: `Int` when it fits,
/// else the `BigInt` two's-complement bytes (with the sign byte `LONG1`
/// needs).
pub(crate) fn uint_value(u: u64) -> Value {
    match i64::try_from(u) {
        Ok(i) => Value::Int(i),
        Err(_) => {
            let mut bytes = u.to_le_bytes().to_vec();
            bytes.push(0);
            Value::BigInt(bytes)
        }
    }
}

/// Decodes exactly one value spanning all of `data`.
///
/// The decoder keeps its own stack of open containers instead of recursing,
/// so hostile nesting costs heap (bounded by [`MAX_DEPTH`]), never the
/// thread's stack. Containers grow as their elements arrive (a claimed
/// length reserves at most [`MAX_PRESIZE`] slots), and what is built is
/// charged against the plain-data budget of [`crate::limits`].
#[cfg(test)]
pub fn decode_value(data: &[u8]) -> Result<Value> {
    decode_value_for(data, Side::Server)
}

/// [`decode_value`] under the budget of `side` ([`crate::limits`]).
pub fn decode_value_for(data: &[u8], side: Side) -> Result<Value> {
    let mut reader = Reader { data, pos: 0 };
    let mut open: Vec<Open> = Vec::new();
    let budget = plain_budget(data.len(), side);
    let mut spent = 0usize;
    let value = 'outer: loop {
        let item = reader.item()?;
        spent = spent
            .saturating_add(VALUE_COST)
            .saturating_add(match &item {
                Item::Value(Value::Bytes(b) | Value::BigInt(b)) => b.len(),
                Item::Value(Value::Str(s)) => s.len(),
                _ => 0,
            });
        if spent > budget {
            return Err(Error::limit(
                ENCODING,
                format!("decoded value over {budget} bytes"),
            ));
        }
        let mut value = match item {
            Item::Value(v) => v,
            Item::Array(n) | Item::Map(n) if open.len() >= MAX_DEPTH => {
                let _ = n;
                return Err(Error::limit(
                    ENCODING,
                    format!("nesting deeper than {MAX_DEPTH}"),
                ));
            }
            Item::Array(0) => Value::Tuple(Vec::new()),
            Item::Map(0) => Value::Dict(Vec::new()),
            Item::Array(n) => {
                open.push(Open::Array {
                    items: Vec::with_capacity(n.min(MAX_PRESIZE)),
                    left: n,
                });
                continue;
            }
            Item::Map(n) => {
                open.push(Open::Map {
                    pairs: Vec::with_capacity(n.min(MAX_PRESIZE)),
                    key: None,
                    left: n,
                });
                continue;
            }
        };
        // Hand the finished value to the innermost open container, closing
        // every container it completes; with none open, it is the result.
        loop {
            let Some(top) = open.last_mut() else {
                break 'outer value;
            };
            match top {
                Open::Array { items, left } => {
                    items.push(value);
                    *left -= 1;
                    if *left > 0 {
                        continue 'outer;
                    }
                    value = Value::Tuple(std::mem::take(items));
                }
                Open::Map { pairs, key, left } => match key.take() {
                    None => {
                        if matches!(value, Value::Dict(_)) {
                            // Python cannot hash a dict key.
                            return Err(Error::malformed(ENCODING, "map used as a map key"));
                        }
                        *key = Some(value);
                        continue 'outer;
                    }
                    Some(k) => {
                        pairs.push((k, value));
                        *left -= 1;
                        if *left > 0 {
                            continue 'outer;
                        }
                        value = Value::Dict(std::mem::take(pairs));
                    }
                },
            }
            open.pop();
        }
    };
    if reader.pos != data.len() {
        return Err(Error::malformed(
            ENCODING,
            format!(
                "{} bytes of extra data after the value",
                data.len() - reader.pos
            ),
        ));
    }
    Ok(value)
}

/// A container being filled.
enum Open {
    Array {
        items: Vec<Value>,
        left: usize,
    },
    Map {
        pairs: Vec<(Value, Value)>,
        key: Option<Value>,
        left: usize,
    },
}

/// One decoded marker: a complete scalar or a container header.
enum Item {
    Value(Value),
    Array(usize),
    Map(usize),
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.data.len())
            .ok_or_else(|| {
                Error::malformed(
                    ENCODING,
                    format!("truncated: need {n} more bytes at {}", self.pos),
                )
            })?;
        let slice = &self.data[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let slice = self.take(N)?;
        let mut buf = [0u8; N];
        buf.copy_from_slice(slice);
        Ok(buf)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<usize> {
        Ok(u16::from_be_bytes(self.array()?).into())
    }

    fn u32(&mut self) -> Result<usize> {
        usize::try_from(u32::from_be_bytes(self.array()?))
            .map_err(|_| Error::malformed(ENCODING, "length exceeds address space"))
    }

    fn item(&mut self) -> Result<Item> {
        let at = self.pos;
        let marker = Marker::from_u8(self.u8()?);
        let value = match marker {
            Marker::Null => Value::None,
            Marker::False => Value::Bool(false),
            Marker::True => Value::Bool(true),
            Marker::FixPos(n) => Value::Int(n.into()),
            Marker::FixNeg(n) => Value::Int(n.into()),
            Marker::U8 => Value::Int(self.u8()?.into()),
            Marker::U16 => Value::Int(u16::from_be_bytes(self.array()?).into()),
            Marker::U32 => Value::Int(u32::from_be_bytes(self.array()?).into()),
            Marker::U64 => uint_value(u64::from_be_bytes(self.array()?)),
            Marker::I8 => Value::Int(i8::from_be_bytes(self.array()?).into()),
            Marker::I16 => Value::Int(i16::from_be_bytes(self.array()?).into()),
            Marker::I32 => Value::Int(i32::from_be_bytes(self.array()?).into()),
            Marker::I64 => Value::Int(i64::from_be_bytes(self.array()?)),
            Marker::F32 => Value::Float(f32::from_be_bytes(self.array()?).into()),
            Marker::F64 => Value::Float(f64::from_be_bytes(self.array()?)),
            Marker::FixStr(n) => self.str(n.into())?,
            Marker::Str8 => {
                let n = self.u8()?.into();
                self.str(n)?
            }
            Marker::Str16 => {
                let n = self.u16()?;
                self.str(n)?
            }
            Marker::Str32 => {
                let n = self.u32()?;
                self.str(n)?
            }
            Marker::Bin8 => {
                let n = self.u8()?.into();
                Value::Bytes(self.take(n)?.to_vec())
            }
            Marker::Bin16 => {
                let n = self.u16()?;
                Value::Bytes(self.take(n)?.to_vec())
            }
            Marker::Bin32 => {
                let n = self.u32()?;
                Value::Bytes(self.take(n)?.to_vec())
            }
            Marker::FixArray(n) => return Ok(Item::Array(n.into())),
            Marker::Array16 => return Ok(Item::Array(self.u16()?)),
            Marker::Array32 => return Ok(Item::Array(self.u32()?)),
            Marker::FixMap(n) => return Ok(Item::Map(n.into())),
            Marker::Map16 => return Ok(Item::Map(self.u16()?)),
            Marker::Map32 => return Ok(Item::Map(self.u32()?)),
            Marker::FixExt1
            | Marker::FixExt2
            | Marker::FixExt4
            | Marker::FixExt8
            | Marker::FixExt16
            | Marker::Ext8
            | Marker::Ext16
            | Marker::Ext32 => {
                return Err(Error::malformed(
                    ENCODING,
                    format!("ext type at byte {at} (unused by ZEO)"),
                ))
            }
            Marker::Reserved => {
                return Err(Error::malformed(
                    ENCODING,
                    format!("reserved byte 0xc1 at {at}"),
                ))
            }
        };
        Ok(Item::Value(value))
    }

    fn str(&mut self, n: usize) -> Result<Value> {
        let bytes = self.take(n)?;
        std::str::from_utf8(bytes)
            .map(|s| Value::Str(s.to_owned()))
            .map_err(|e| Error::malformed(ENCODING, format!("str is not UTF-8: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(v: &Value) -> Value {
        let mut out = Vec::new();
        encode_value(v, &mut out).unwrap();
        decode_value(&out).unwrap()
    }

    #[test]
    fn integers_take_python_forms() {
        let cases: &[(i64, &[u8])] = &[
            (0, &[0x00]),
            (127, &[0x7f]),
            (128, &[0xcc, 0x80]),
            (255, &[0xcc, 0xff]),
            (256, &[0xcd, 0x01, 0x00]),
            (65536, &[0xce, 0, 1, 0, 0]),
            (1 << 32, &[0xcf, 0, 0, 0, 1, 0, 0, 0, 0]),
            (-1, &[0xff]),
            (-32, &[0xe0]),
            (-33, &[0xd0, 0xdf]),
            (-129, &[0xd1, 0xff, 0x7f]),
            (-32769, &[0xd2, 0xff, 0xff, 0x7f, 0xff]),
            (i64::MIN, &[0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0]),
        ];
        for (i, bytes) in cases {
            let mut out = Vec::new();
            encode_value(&Value::Int(*i), &mut out).unwrap();
            assert_eq!(&out[..], *bytes, "{i}");
            assert_eq!(decode_value(bytes).unwrap(), Value::Int(*i));
        }
    }

    #[test]
    fn u64_beyond_i64_is_a_bigint() {
        let v = decode_value(&[0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).unwrap();
        assert_eq!(
            v,
            Value::BigInt(vec![0xff; 8].into_iter().chain([0]).collect())
        );
        assert_eq!(roundtrip(&v), v);
        let mut out = Vec::new();
        let err = encode_value(&Value::BigInt(vec![0, 0, 0, 0, 0, 0, 0, 0, 1]), &mut out);
        assert!(matches!(err, Err(Error::Unencodable(_))));
        let err = encode_value(&Value::BigInt(vec![0xff]), &mut out);
        assert!(matches!(err, Err(Error::Unencodable(_))), "negative bigint");
    }

    #[test]
    fn lists_come_back_as_tuples() {
        let v = Value::List(vec![Value::Int(1), Value::Str("a".into())]);
        assert_eq!(
            roundtrip(&v),
            Value::Tuple(vec![Value::Int(1), Value::Str("a".into())])
        );
    }

    #[test]
    fn str_and_bin_lengths() {
        for n in [0usize, 31, 32, 255, 256, 65535, 65536] {
            let s = Value::Str("x".repeat(n));
            assert_eq!(roundtrip(&s), s);
            let b = Value::Bytes(vec![7; n]);
            assert_eq!(roundtrip(&b), b);
        }
        let mut out = Vec::new();
        encode_value(&Value::Str("x".repeat(32)), &mut out).unwrap();
        assert_eq!(&out[..2], &[0xd9, 32]);
    }

    #[test]
    fn unencodable_values() {
        let mut out = Vec::new();
        for v in [
            Value::Set(vec![]),
            Value::Global {
                module: "builtins".into(),
                name: "set".into(),
            },
            Value::PersistentId(Box::new(Value::None)),
        ] {
            assert!(matches!(
                encode_value(&v, &mut out),
                Err(Error::Unencodable(_))
            ));
        }
    }

    #[test]
    fn hostile_inputs_fail_cleanly() {
        // Claims 2**32-1 elements with nothing behind.
        assert!(decode_value(&[0xdd, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(decode_value(&[0xdf, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(decode_value(&[0xc6, 0xff, 0xff, 0xff, 0xff, 1]).is_err());
        assert!(decode_value(&[0x91; 100_000]).is_err());
        let mut deep = vec![0x91; MAX_DEPTH];
        deep.push(0xc0);
        assert!(decode_value(&deep).is_ok(), "MAX_DEPTH levels are fine");
        assert!(decode_value(&[0xc1]).is_err());
        assert!(decode_value(&[0xd4, 0, 0]).is_err());
        assert!(decode_value(&[0xa1, 0xff]).is_err());
        assert!(decode_value(&[0xc0, 0xc0]).is_err());
        assert!(decode_value(&[]).is_err());
        assert!(decode_value(&[0x81, 0x80, 0x01]).is_err(), "dict key");
    }
}
