//! Per-message authentication after a successful digest exchange (ZEO 3/4
//! `smac`).
//!
//! A MAC'd frame is `u32be(len | MAC_BIT) || mac[20] || payload[len]`: the
//! length word counts the payload only. Each direction of a connection has
//! its own HMAC-SHA1 keyed with the [`SessionKey`]; it is fed every payload
//! sent in that direction and never reset, so the MAC of message *n*
//! authenticates messages 1..=*n* in order. A replayed, reordered, dropped
//! or altered frame therefore fails, and so does everything after it: a
//! failure is final and the connection must be closed.
//!
//! One departure from ZEO: empty payloads are refused in both directions.
//! Feeding nothing to a running HMAC leaves it unchanged, so an empty frame
//! carrying the previous frame's MAC would verify and could be injected at
//! will. No ZEO message is empty, so no conforming peer is affected.

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;

use crate::digest::SessionKey;
use crate::error::{Error, Result};

/// The length-word bit that marks a MAC'd frame.
pub const MAC_BIT: u32 = 0x8000_0000;

/// Bytes of a MAC (an HMAC-SHA1 digest).
pub const MAC_LEN: usize = 20;

/// Bytes of the length word.
pub const HEADER_LEN: usize = 4;

/// Splits a frame's length word into (carries a MAC, payload length).
///
/// ```
/// assert_eq!(zeo_auth::split_length_word(0x8000_0005), (true, 5));
/// assert_eq!(zeo_auth::split_length_word(5), (false, 5));
/// ```
pub fn split_length_word(word: u32) -> (bool, u32) {
    (word & MAC_BIT != 0, word & !MAC_BIT)
}

/// Bytes that follow the length word of a frame: the payload, plus the MAC
/// when the bit is set.
pub fn body_len(word: u32) -> usize {
    let (mac, len) = split_length_word(word);
    len as usize + if mac { MAC_LEN } else { 0 }
}

/// One direction's running HMAC.
///
/// Use one `MacState` to [`seal`](MacState::seal) what you send and another
/// (keyed with the same session key) to [`open`](MacState::open) what you
/// receive.
#[derive(Clone)]
pub struct MacState {
    hmac: Hmac<Sha1>,
    failed: bool,
}

impl MacState {
    /// A fresh state keyed with `key`.
    pub fn new(key: &SessionKey) -> Self {
        // HMAC takes keys of any length; 60 bytes is below SHA-1's block.
        let hmac = <Hmac<Sha1> as KeyInit>::new_from_slice(key.as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
        MacState {
            hmac,
            failed: false,
        }
    }

    /// Frames `payload`: length word with [`MAC_BIT`], MAC, payload.
    ///
    /// # Errors
    ///
    /// [`Error::PayloadTooLarge`] when the length needs the top bit,
    /// [`Error::BadFrame`] for an empty payload, [`Error::Poisoned`] after
    /// a failure.
    pub fn seal(&mut self, payload: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(HEADER_LEN + MAC_LEN + payload.len());
        self.seal_into(payload, &mut out)?;
        Ok(out)
    }

    /// Like [`MacState::seal`], appending the frame to `out`.
    ///
    /// # Errors
    ///
    /// As [`MacState::seal`]; `out` is unchanged on error.
    pub fn seal_into(&mut self, payload: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let word = self.length_word(payload)?;
        let mac = self.advance(payload);
        out.reserve(HEADER_LEN + MAC_LEN + payload.len());
        out.extend_from_slice(&word.to_be_bytes());
        out.extend_from_slice(&mac);
        out.extend_from_slice(payload);
        Ok(())
    }

    /// The length word and MAC of `payload`, for writers that send the
    /// payload from its own buffer.
    ///
    /// # Errors
    ///
    /// As [`MacState::seal`].
    pub fn seal_header(&mut self, payload: &[u8]) -> Result<[u8; HEADER_LEN + MAC_LEN]> {
        let word = self.length_word(payload)?;
        let mac = self.advance(payload);
        let mut header = [0u8; HEADER_LEN + MAC_LEN];
        let (w, m) = header.split_at_mut(HEADER_LEN);
        w.copy_from_slice(&word.to_be_bytes());
        m.copy_from_slice(&mac);
        Ok(header)
    }

    /// Checks a whole frame (length word included) and returns its payload.
    ///
    /// # Errors
    ///
    /// [`Error::MissingMac`] without the MAC bit, [`Error::BadFrame`] when
    /// the length word and the size disagree, [`Error::MacFailed`] when the
    /// MAC does not match, [`Error::Poisoned`] after an earlier failure.
    pub fn open<'a>(&mut self, frame: &'a [u8]) -> Result<&'a [u8]> {
        if self.failed {
            return Err(Error::Poisoned);
        }
        let Some((word, body)) = frame.split_first_chunk::<HEADER_LEN>() else {
            self.failed = true;
            return Err(Error::BadFrame("shorter than its length word"));
        };
        let word = u32::from_be_bytes(*word);
        if body.len() != body_len(word) {
            self.failed = true;
            return Err(Error::BadFrame(
                "the length word disagrees with the frame size",
            ));
        }
        self.open_body(word, body)
    }

    /// Checks the bytes after a length word `word` (MAC then payload) and
    /// returns the payload: for stream decoders that parse the word
    /// themselves.
    ///
    /// # Errors
    ///
    /// As [`MacState::open`].
    pub fn open_body<'a>(&mut self, word: u32, body: &'a [u8]) -> Result<&'a [u8]> {
        if self.failed {
            return Err(Error::Poisoned);
        }
        let (has_mac, len) = split_length_word(word);
        if !has_mac {
            self.failed = true;
            return Err(Error::MissingMac);
        }
        let Some((mac, payload)) = body.split_first_chunk::<MAC_LEN>() else {
            self.failed = true;
            return Err(Error::BadFrame("shorter than its MAC"));
        };
        if payload.len() != len as usize {
            self.failed = true;
            return Err(Error::BadFrame(
                "the length word disagrees with the frame size",
            ));
        }
        if payload.is_empty() {
            self.failed = true;
            return Err(Error::BadFrame("an empty payload cannot be authenticated"));
        }
        self.hmac.update(payload);
        if self.hmac.clone().verify_slice(mac).is_err() {
            self.failed = true;
            return Err(Error::MacFailed);
        }
        Ok(payload)
    }

    /// Whether a check failed (every later call fails too).
    pub fn has_failed(&self) -> bool {
        self.failed
    }

    fn length_word(&self, payload: &[u8]) -> Result<u32> {
        if self.failed {
            return Err(Error::Poisoned);
        }
        if payload.is_empty() {
            return Err(Error::BadFrame("an empty payload cannot be authenticated"));
        }
        match u32::try_from(payload.len()) {
            Ok(len) if len & MAC_BIT == 0 => Ok(len | MAC_BIT),
            _ => Err(Error::PayloadTooLarge(payload.len())),
        }
    }

    fn advance(&mut self, payload: &[u8]) -> [u8; MAC_LEN] {
        self.hmac.update(payload);
        self.hmac.clone().finalize().into_bytes().into()
    }
}

impl std::fmt::Debug for MacState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MacState")
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}
