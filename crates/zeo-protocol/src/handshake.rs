//! The protocol-version exchange that opens every connection.
//!
//! The server speaks first with `Z5` (pickle) or `M5` (msgpack). The stock
//! client takes `min(server_version, "5")`, requires it to be `5` and echoes
//! the server's letter with that version. The stock server then adopts the
//! letter the *client* sent, whatever it announced, and accepts only version
//! `5`; older clients (`Z4`, `Z3101`, …) are turned away. A first frame of
//! exactly `ruok` asks for the JSON status report instead (see
//! [`crate::ruok_reply`]).

use crate::error::{Error, Result};

/// The only protocol version ZEO 5 and 6 speak.
pub const PROTOCOL_VERSION: &[u8] = b"5";

/// The first frame a status probe sends instead of a version.
pub const RUOK: &[u8] = b"ruok";

/// How messages after the handshake are marshalled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// `Z`: pickle protocol 3.
    Pickle,
    /// `M`: msgpack.
    Msgpack,
}

impl Encoding {
    /// The letter that names this encoding in the version frame.
    pub fn letter(self) -> u8 {
        match self {
            Encoding::Pickle => b'Z',
            Encoding::Msgpack => b'M',
        }
    }

    /// The encoding a version-frame letter names.
    pub fn from_letter(letter: u8) -> Option<Self> {
        match letter {
            b'Z' => Some(Encoding::Pickle),
            b'M' => Some(Encoding::Msgpack),
            _ => None,
        }
    }

    /// The version frame payload for this encoding: `Z5` or `M5`.
    pub fn version_frame(self) -> Vec<u8> {
        let mut frame = vec![self.letter()];
        frame.extend_from_slice(PROTOCOL_VERSION);
        frame
    }
}

/// What the server learns from the client's first frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientHello {
    /// A ZEO 5 client; marshal every later message this way.
    Accepted(Encoding),
    /// A status probe: answer with [`crate::ruok_reply`] and close.
    Ruok,
}

/// The server side of the handshake.
///
/// ```
/// use zeo_protocol::{ClientHello, Encoding, ServerHandshake};
///
/// let hs = ServerHandshake::new(Encoding::Pickle);
/// assert_eq!(hs.greeting(), b"Z5");
/// // The stock server speaks whatever the client answers.
/// assert_eq!(hs.receive(b"M5").unwrap(), ClientHello::Accepted(Encoding::Msgpack));
/// assert_eq!(hs.receive(b"ruok").unwrap(), ClientHello::Ruok);
/// assert!(hs.receive(b"Z4").is_err());
/// ```
#[derive(Clone, Copy, Debug)]
pub struct ServerHandshake {
    announce: Encoding,
}

impl ServerHandshake {
    /// A server that announces `announce` (`msgpack true` in the config
    /// announces msgpack).
    pub fn new(announce: Encoding) -> Self {
        ServerHandshake { announce }
    }

    /// The payload of the frame to send as soon as the connection is up.
    pub fn greeting(&self) -> Vec<u8> {
        self.announce.version_frame()
    }

    /// Reads the client's first frame.
    ///
    /// # Errors
    ///
    /// [`Error::BadHandshake`] for any version but `5` or an unknown letter;
    /// the server closes the connection.
    pub fn receive(&self, frame: &[u8]) -> Result<ClientHello> {
        if frame == RUOK {
            return Ok(ClientHello::Ruok);
        }
        let Some((&letter, version)) = frame.split_first() else {
            return Err(Error::bad_handshake("empty version frame", frame));
        };
        if version != PROTOCOL_VERSION {
            return Err(Error::bad_handshake("unsupported protocol version", frame));
        }
        // Python ZEO would fail later, when it builds a decoder for an
        // unknown letter; refusing it here is the same outcome, sooner.
        Encoding::from_letter(letter)
            .map(ClientHello::Accepted)
            .ok_or_else(|| Error::bad_handshake("unknown encoding letter", frame))
    }
}

/// The client side of the handshake.
///
/// ```
/// use zeo_protocol::{ClientHandshake, Encoding};
///
/// let (encoding, answer) = ClientHandshake::new().receive(b"M5").unwrap();
/// assert_eq!((encoding, &answer[..]), (Encoding::Msgpack, &b"M5"[..]));
/// // A newer server version is answered with ours.
/// assert_eq!(ClientHandshake::new().receive(b"Z6").unwrap().1, b"Z5");
/// // A ZEO 4 server is refused.
/// assert!(ClientHandshake::new().receive(b"Z4").is_err());
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct ClientHandshake {
    prefer: Option<Encoding>,
}

impl ClientHandshake {
    /// A client that echoes the server's encoding, as the stock client does.
    pub fn new() -> Self {
        Self::default()
    }

    /// A client that answers with `encoding` whatever the server announced.
    /// Stock ZEO 5/6 servers accept this (they follow the client's letter),
    /// provided they have msgpack installed.
    pub fn prefer(encoding: Encoding) -> Self {
        ClientHandshake {
            prefer: Some(encoding),
        }
    }

    /// The payload of a status probe's first frame.
    pub fn ruok_request() -> &'static [u8] {
        RUOK
    }

    /// Reads the server's greeting; returns the encoding to use from now on
    /// and the payload of the frame to send back.
    ///
    /// # Errors
    ///
    /// [`Error::BadHandshake`] when the server speaks a version older than
    /// 5 or an unknown encoding (ZEO's `ProtocolError`).
    pub fn receive(&self, greeting: &[u8]) -> Result<(Encoding, Vec<u8>)> {
        let Some((&letter, server_version)) = greeting.split_first() else {
            return Err(Error::bad_handshake("empty version frame", greeting));
        };
        // Bytewise min, as Python compares bytes.
        let version = server_version.min(PROTOCOL_VERSION);
        if version != PROTOCOL_VERSION {
            return Err(Error::bad_handshake(
                "server protocol version too old",
                greeting,
            ));
        }
        let announced = Encoding::from_letter(letter)
            .ok_or_else(|| Error::bad_handshake("unknown encoding letter", greeting))?;
        let encoding = self.prefer.unwrap_or(announced);
        Ok((encoding, encoding.version_frame()))
    }
}
