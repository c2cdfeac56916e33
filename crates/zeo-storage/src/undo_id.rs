//! Undo ids: how ZODB names an undoable transaction to its clients.
//!
//! FileStorage hands out `base64.encodebytes(tid).rstrip()` (12 ASCII bytes,
//! one `=` of padding) and expects the same bytes back in `undo`. Both of our
//! storages use that form, and clients decode it to learn the tid behind an
//! [`UndoEntry`](crate::UndoEntry).

use crate::ids::Tid;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// 8 bytes are 64 bits: 11 sextets (the last two bits zero) and one `=`.
const SEXTETS: usize = 11;

/// The undo id of the transaction `tid`: standard base64 with padding, as
/// `base64.encodebytes(tid).rstrip()` spells it.
///
/// ```
/// use zeo_storage::{tid_from_undo_id, undo_id, Tid};
///
/// assert_eq!(undo_id(Tid(0x040d_4066_4778_a6aa)), b"BA1AZkd4pqo=");
/// assert_eq!(tid_from_undo_id(b"BA1AZkd4pqo="), Some(Tid(0x040d_4066_4778_a6aa)));
/// ```
pub fn undo_id(tid: Tid) -> Vec<u8> {
    // Two zero bits pad the 64 to a whole number of sextets.
    let bits = u128::from(tid.0) << 2;
    let mut out: Vec<u8> = (0..SEXTETS)
        .rev()
        .map(|k| ALPHABET[((bits >> (6 * k)) & 63) as usize])
        .collect();
    out.push(b'=');
    out
}

/// The tid an [`undo_id`] names, ignoring surrounding ASCII whitespace (so
/// `base64.encodebytes`' trailing newline is accepted); `None` for anything
/// else.
///
/// Only the form [`undo_id`] writes is accepted: Python's
/// `base64.decodebytes` would also skip stray characters and ignore the two
/// pad bits, but no storage hands out such ids, and refusing them keeps one
/// id per transaction.
pub fn tid_from_undo_id(id: &[u8]) -> Option<Tid> {
    let id = id.trim_ascii();
    let (body, b"=") = id.split_at_checked(SEXTETS)? else {
        return None;
    };
    let mut bits: u128 = 0;
    for c in body {
        let v = ALPHABET.iter().position(|a| a == c)?;
        bits = (bits << 6) | v as u128;
    }
    if bits & 0b11 != 0 {
        return None;
    }
    u64::try_from(bits >> 2).ok().map(Tid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undo_ids_are_python_base64() {
        // base64.encodebytes(bytes.fromhex('040d40664778a6aa')).rstrip()
        assert_eq!(undo_id(Tid(0x040d_4066_4778_a6aa)), b"BA1AZkd4pqo=");
        assert_eq!(undo_id(Tid(0x040d_4066_5761_16cc)), b"BA1AZldhFsw=");
        assert_eq!(
            tid_from_undo_id(b"BA1AZkd4pqo="),
            Some(Tid(0x040d_4066_4778_a6aa))
        );
        // base64.encodebytes(p64(0x03d5_6c8f_1a2b_3c4d)).rstrip()
        assert_eq!(
            tid_from_undo_id(b"A9VsjxorPE0="),
            Some(Tid(0x03d5_6c8f_1a2b_3c4d))
        );
    }

    #[test]
    fn encodebytes_newline_is_accepted() {
        assert_eq!(
            tid_from_undo_id(b"BA1AZkd4pqo=\n"),
            Some(Tid(0x040d_4066_4778_a6aa))
        );
        assert_eq!(
            tid_from_undo_id(b"BA1AZldhFsw=\n"),
            Some(Tid(0x040d_4066_5761_16cc))
        );
        assert_eq!(tid_from_undo_id(b"AAAAAAAAAAE=\n"), Some(Tid(1)));
    }

    #[test]
    fn other_forms_are_refused() {
        assert_eq!(tid_from_undo_id(b"BA1A"), None);
        assert_eq!(tid_from_undo_id(b"BA1AZkd4pqoAAAA="), None);
        assert_eq!(tid_from_undo_id(b"BA1AZl!hFsw="), None);
        assert_eq!(tid_from_undo_id(b"BA1AZldhFsw"), None);
        assert_eq!(tid_from_undo_id(b"AAAAAAAAAAE"), None);
        // Non-zero pad bits.
        assert_eq!(tid_from_undo_id(b"AAAAAAAAAAF="), None);
        assert_eq!(tid_from_undo_id(b"not an id"), None);
        assert_eq!(tid_from_undo_id(b""), None);
    }

    #[test]
    fn round_trip() {
        for t in [
            0u64,
            1,
            u64::MAX,
            0x0102_0304_0506_0708,
            0x040d_4066_5761_16cc,
        ] {
            let id = undo_id(Tid(t));
            assert_eq!(id.len(), 12);
            assert_eq!(tid_from_undo_id(&id), Some(Tid(t)));
        }
    }
}
