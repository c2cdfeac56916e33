//! Arguments of the protocol-0 text opcodes, and integer byte forms (the
//! latter public: ZEO's direct message writer shares them).
//!
//! Python 2 era pickles spell integers, strings and unicode as text lines;
//! these helpers turn them into our values with the same acceptance rules as
//! CPython's unpickler where it matters for real data.

/// Python (since 3.11) refuses to convert integer strings longer than this,
/// and it keeps our quadratic decimal conversion cheap.
pub(crate) const MAX_DECIMAL_DIGITS: usize = 4300;

/// An integer parsed from text or read from `LONG1`/`LONG4`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Integer {
    Small(i64),
    /// Minimal little-endian two's complement, known not to fit in `i64`.
    Big(Vec<u8>),
}

/// Strips redundant sign bytes from little-endian two's complement bytes:
/// the form Python's `LONG1` and `LONG4` carry an integer in (zero is no
/// bytes at all).
///
/// ```
/// use zeo_pickle::minimal_le;
///
/// assert_eq!(minimal_le(&255i64.to_le_bytes()), [0xff, 0x00]);
/// assert_eq!(minimal_le(&(-1i64).to_le_bytes()), [0xff]);
/// assert_eq!(minimal_le(&(-256i64).to_le_bytes()), [0x00, 0xff]);
/// assert!(minimal_le(&0i64.to_le_bytes()).is_empty());
/// ```
pub fn minimal_le(bytes: &[u8]) -> &[u8] {
    let mut len = bytes.len();
    while len > 1 {
        let last = bytes[len - 1];
        let below_high_bit = bytes[len - 2] & 0x80;
        if (last == 0x00 && below_high_bit == 0) || (last == 0xff && below_high_bit != 0) {
            len -= 1;
        } else {
            break;
        }
    }
    // A lone zero byte is the same number as no bytes, which is how Python
    // spells zero in LONG1.
    if len == 1 && bytes[0] == 0 {
        len = 0;
    }
    &bytes[..len]
}

/// Interprets little-endian two's complement bytes as pickled by `LONG1`.
pub(crate) fn integer_from_le(bytes: &[u8]) -> Integer {
    let min = minimal_le(bytes);
    if min.len() <= 8 {
        let fill = if min.last().is_some_and(|b| b & 0x80 != 0) {
            0xff
        } else {
            0
        };
        let mut buf = [fill; 8];
        buf[..min.len()].copy_from_slice(min);
        Integer::Small(i64::from_le_bytes(buf))
    } else {
        Integer::Big(min.to_vec())
    }
}

/// The bytes [`write_int`] takes for `n`.
///
/// ```
/// assert_eq!(zeo_pickle::int_len(7), 2);
/// assert_eq!(zeo_pickle::int_len(-1), 5);
/// assert_eq!(zeo_pickle::int_len(1 << 40), 2 + 6);
/// ```
pub fn int_len(n: i64) -> usize {
    if (0..=0xff).contains(&n) {
        2
    } else if (0..=0xffff).contains(&n) {
        3
    } else if i32::try_from(n).is_ok() {
        5
    } else {
        2 + minimal_le(&n.to_le_bytes()).len()
    }
}

/// Appends `n` as Python's pickler writes an `int` (protocol 2 and up):
/// `BININT1`, `BININT2` or `BININT` when it fits, `LONG1` otherwise.
///
/// ```
/// let mut out = Vec::new();
/// zeo_pickle::write_int(300, &mut out);
/// zeo_pickle::write_int(-2, &mut out);
/// assert_eq!(out, [b'M', 0x2c, 0x01, b'J', 0xfe, 0xff, 0xff, 0xff]);
/// ```
pub fn write_int(n: i64, out: &mut Vec<u8>) {
    use crate::opcodes::{BININT, BININT1, BININT2, LONG1};
    if (0..=0xff).contains(&n) {
        out.extend_from_slice(&[BININT1, n as u8]);
    } else if (0..=0xffff).contains(&n) {
        out.push(BININT2);
        out.extend_from_slice(&(n as u16).to_le_bytes());
    } else if let Ok(n) = i32::try_from(n) {
        out.push(BININT);
        out.extend_from_slice(&n.to_le_bytes());
    } else {
        let bytes = n.to_le_bytes();
        let b = minimal_le(&bytes);
        out.extend_from_slice(&[LONG1, b.len() as u8]);
        out.extend_from_slice(b);
    }
}

/// Parses the argument of `INT`/`LONG`: optional whitespace and sign, then
/// decimal digits (Python 2 only ever wrote decimal). Returns `None` when
/// the text is not an integer; `Err` when it is too long.
pub(crate) fn parse_decimal(text: &[u8]) -> Result<Option<Integer>, ()> {
    let text = text.trim_ascii();
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, text),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Ok(None);
    }
    if digits.len() > MAX_DECIMAL_DIGITS {
        return Err(());
    }
    // Fast path: fits in i64 (accumulate negatively to reach i64::MIN).
    let mut small: Option<i64> = Some(0);
    for &d in digits {
        let d = i64::from(d - b'0');
        small = small
            .and_then(|v| v.checked_mul(10))
            .and_then(|v| v.checked_sub(d));
        if small.is_none() {
            break;
        }
    }
    if let Some(v) = small {
        let v = if negative { Some(v) } else { v.checked_neg() };
        if let Some(v) = v {
            return Ok(Some(Integer::Small(v)));
        }
    }
    // Slow path: base 2^32 magnitude, then two's complement bytes.
    let mut limbs: Vec<u32> = vec![0];
    for &d in digits {
        let mut carry = u64::from(d - b'0');
        for limb in limbs.iter_mut() {
            let v = u64::from(*limb) * 10 + carry;
            *limb = v as u32;
            carry = v >> 32;
        }
        if carry != 0 {
            limbs.push(carry as u32);
        }
    }
    let mut bytes: Vec<u8> = limbs.iter().flat_map(|l| l.to_le_bytes()).collect();
    // Room for the sign bit.
    bytes.push(0);
    if negative {
        let mut carry = true;
        for b in bytes.iter_mut() {
            let (v, c) = (!*b).overflowing_add(u8::from(carry));
            *b = v;
            carry = c;
        }
    }
    Ok(Some(integer_from_le(&bytes)))
}

/// Python's `codecs.escape_decode`, used by the `STRING` opcode.
pub(crate) fn escape_decode(text: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while let Some(&c) = text.get(i) {
        i += 1;
        if c != b'\\' {
            out.push(c);
            continue;
        }
        let Some(&e) = text.get(i) else {
            return Err("trailing \\ in string".into());
        };
        i += 1;
        match e {
            b'\n' => {}
            b'\\' | b'\'' | b'"' => out.push(e),
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b't' => out.push(b'\t'),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b'v' => out.push(0x0b),
            b'a' => out.push(0x07),
            b'0'..=b'7' => {
                let mut v = u32::from(e - b'0');
                for _ in 0..2 {
                    match text.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push(v as u8);
            }
            b'x' => {
                let hex = text
                    .get(i..i + 2)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("invalid \\x escape at position {}", i - 2))?;
                out.push(hex);
                i += 2;
            }
            other => {
                out.push(b'\\');
                out.push(other);
            }
        }
    }
    Ok(out)
}

/// Python's `raw-unicode-escape` decoding, used by the `UNICODE` opcode:
/// bytes are Latin-1 characters except `\uXXXX` / `\UXXXXXXXX` after an odd
/// run of backslashes.
pub(crate) fn raw_unicode_escape(text: &[u8]) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while let Some(&c) = text.get(i) {
        if c != b'\\' {
            out.push(char::from(c));
            i += 1;
            continue;
        }
        let run_start = i;
        while text.get(i) == Some(&b'\\') {
            i += 1;
        }
        let run = i - run_start;
        let width = match text.get(i) {
            Some(b'u') if run % 2 == 1 => 4,
            Some(b'U') if run % 2 == 1 => 8,
            _ => {
                out.extend(std::iter::repeat_n('\\', run));
                continue;
            }
        };
        out.extend(std::iter::repeat_n('\\', run - 1));
        let digits = text
            .get(i + 1..i + 1 + width)
            .and_then(|h| std::str::from_utf8(h).ok())
            .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| format!("truncated \\{} escape", char::from(text[i])))?;
        let code = u32::from_str_radix(digits, 16).map_err(|e| e.to_string())?;
        let ch = char::from_u32(code)
            .ok_or_else(|| format!("\\U{code:08x} is not a Unicode scalar value"))?;
        out.push(ch);
        i += 1 + width;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_forms() {
        assert_eq!(minimal_le(&(0i64).to_le_bytes()).to_vec(), Vec::<u8>::new());
        assert_eq!(
            minimal_le(&(255i64).to_le_bytes()).to_vec(),
            vec![0xff, 0x00]
        );
        assert_eq!(minimal_le(&(-1i64).to_le_bytes()).to_vec(), vec![0xff]);
        assert_eq!(
            minimal_le(&(-256i64).to_le_bytes()).to_vec(),
            vec![0x00, 0xff]
        );
        assert_eq!(
            minimal_le(&(i64::MIN).to_le_bytes()).to_vec(),
            i64::MIN.to_le_bytes().to_vec()
        );
        assert_eq!(integer_from_le(&[0xff, 0xff, 0xff]), Integer::Small(-1));
        assert_eq!(integer_from_le(&[]), Integer::Small(0));
        let big = [0, 0, 0, 0, 0, 0, 0, 0x80, 0];
        assert_eq!(integer_from_le(&big), Integer::Big(big.to_vec()));
    }

    #[test]
    fn decimal() {
        assert_eq!(parse_decimal(b" 42 "), Ok(Some(Integer::Small(42))));
        assert_eq!(
            parse_decimal(b"-9223372036854775808"),
            Ok(Some(Integer::Small(i64::MIN)))
        );
        assert_eq!(
            parse_decimal(b"9223372036854775808"),
            Ok(Some(Integer::Big(vec![0, 0, 0, 0, 0, 0, 0, 0x80, 0])))
        );
        assert_eq!(
            parse_decimal(b"-9223372036854775809"),
            Ok(Some(Integer::Big(vec![
                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0xff
            ])))
        );
        // 2**70
        assert_eq!(
            parse_decimal(b"1180591620717411303424"),
            Ok(Some(Integer::Big(vec![0, 0, 0, 0, 0, 0, 0, 0, 0x40])))
        );
        assert_eq!(parse_decimal(b"12a"), Ok(None));
        assert_eq!(parse_decimal(b""), Ok(None));
        assert_eq!(parse_decimal(&[b'1'; 5000]), Err(()));
    }

    #[test]
    fn escapes() {
        assert_eq!(escape_decode(br"a\x41\n\101\q\\").unwrap(), b"aA\nA\\q\\");
        assert!(escape_decode(b"a\\").is_err());
        assert!(escape_decode(br"\x4").is_err());
        assert_eq!(
            raw_unicode_escape(b"\\u00e9\xe9\\\\u0041").unwrap(),
            "éé\\\\u0041"
        );
        assert_eq!(raw_unicode_escape(b"\\\\\\u0041").unwrap(), "\\\\A");
        assert!(raw_unicode_escape(b"\\ud800").is_err());
        assert!(raw_unicode_escape(b"\\u12").is_err());
    }
}
