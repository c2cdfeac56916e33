//! Values computed with Python's `hashlib`/`hmac` exactly as ZEO 4.3.1's
//! `auth_digest` and `smac` compute them (see the comment on each).

use zeo_auth::{
    nonce, password_hash, python_peer_text, response, Challenge, ClientProof, MacState, NonceKey,
    PasswordDatabase, ServerAuthenticator, SessionKey,
};

const H_UP: &str = "9d77f5676c3bf529f37fe6e19a23d08a79b2ab40";
const CHALLENGE: &str = "0123456789abcdef0123456789abcdef01234567";
const KEY_NONCE: &str = "fedcba9876543210fedcba9876543210fedcba98";

#[test]
fn password_hash_matches_zeo() {
    // sha1("alice:zeo-realm:s3cret".encode()).hexdigest()
    assert_eq!(password_hash("alice", "zeo-realm", "s3cret"), H_UP);
    // Non-ASCII text is hashed as UTF-8, like str.encode().
    assert_eq!(
        password_hash("jos\u{e9}", "r\u{e9}alm", "p\u{e4}ss"),
        "95c986b4ec632bff58cfb4d67ff177f23db6432b"
    );
}

#[test]
fn response_matches_zeo() {
    // sha1(("%s:%s" % (h_up, challenge)).encode()).hexdigest()
    assert_eq!(
        response(H_UP, CHALLENGE),
        "157d76f23365c938f5d16e0a73cf6a6845c4d883"
    );
}

#[test]
fn session_key_matches_zeo() {
    // sha1(("%s:%s" % (h_up, nonce)).encode('latin-1')).digest()
    //   + h_up.encode('utf-8')[:44]
    let key = SessionKey::derive(H_UP, KEY_NONCE).unwrap();
    assert_eq!(
        hex::encode(key.as_bytes()),
        "cd9c66b32153bbf44a9d2f3279642792be0cec79\
         39643737663536373663336266353239663337666536653139613233643038613739623261623430"
    );
    assert!(SessionKey::derive("short", KEY_NONCE).is_err());
}

#[test]
fn nonce_matches_zeo() {
    // d = sha1(); d.update(str(addr).encode('latin-1'));
    // d.update(struct.pack("i", 1700000000)); d.update(bytes(range(1, 9)))
    // (struct "i" is native order; these values are for little-endian hosts)
    let key = NonceKey::from_bytes([1, 2, 3, 4, 5, 6, 7, 8]);
    let v4: std::net::SocketAddr = "127.0.0.1:53422".parse().unwrap();
    let v6: std::net::SocketAddr = "[::1]:8100".parse().unwrap();
    assert_eq!(python_peer_text(&v4), "('127.0.0.1', 53422)");
    assert_eq!(python_peer_text(&v6), "('::1', 8100, 0, 0)");
    if cfg!(target_endian = "little") {
        assert_eq!(
            nonce(&python_peer_text(&v4), 1_700_000_000, &key),
            "0a675a938b94b8eaf7a8b17fcd447f2e367a63de"
        );
        assert_eq!(
            nonce(&python_peer_text(&v6), 1_700_000_000, &key),
            "c036107c335f946e2b1c38ced1637f11b0fdbb1e"
        );
    }
}

#[test]
fn chained_frames_match_zeo() {
    // h = hmac.HMAC(key, digestmod=sha1); for m in msgs: h.update(m);
    // frame = struct.pack(">I", len(m) | 0x80000000) + h.digest() + m
    let key = SessionKey::derive(H_UP, KEY_NONCE).unwrap();
    let mut send = MacState::new(&key);
    let first = send.seal(b"first message").unwrap();
    assert_eq!(
        hex::encode(&first),
        "8000000d066e17b206d24b5d37478c04fd2997ec9750c6dc6669727374206d657373616765"
    );
    // (Python fed an empty message here, which leaves the HMAC unchanged;
    // we refuse empty payloads, so the next frame chains the same way.)
    assert!(send.seal(b"").is_err());
    let third = send.seal(b"\x00\x01third").unwrap();
    assert_eq!(
        hex::encode(&third),
        "8000000756790eb512dc493737cfe2e05167670175de430000017468697264"
    );

    let mut recv = MacState::new(&key);
    assert_eq!(recv.open(&first).unwrap(), b"first message");
    assert_eq!(recv.open(&third).unwrap(), b"\x00\x01third");
}

#[test]
fn database_text_matches_zeopasswd() {
    // Database.save() after add_user bob/pw1 and alice/pw2 in realm zeo-realm
    let mut db = PasswordDatabase::new(Some("zeo-realm")).unwrap();
    db.add_user("bob", "pw1").unwrap();
    db.add_user("alice", "pw2").unwrap();
    let text = "realm zeo-realm\n\
                alice: 36c58c0f2a9e60fc832567a220816a1d6df59c3f\n\
                bob: ed7d27d785c7a5249191a4c425fcd2717bea989f\n";
    assert_eq!(db.to_text(), text);
    assert_eq!(PasswordDatabase::parse(text).unwrap(), db);
}

#[test]
fn full_exchange_with_a_fixed_challenge() {
    let mut db = PasswordDatabase::new(Some("zeo-realm")).unwrap();
    db.add_user("alice", "s3cret").unwrap();
    let server = ServerAuthenticator::new(db).unwrap();
    let challenge = Challenge {
        realm: "zeo-realm".into(),
        challenge: CHALLENGE.into(),
        key_nonce: KEY_NONCE.into(),
    };
    let proof = ClientProof::new("alice", "s3cret", Some("zeo-realm"), &challenge).unwrap();
    assert_eq!(proof.response, "157d76f23365c938f5d16e0a73cf6a6845c4d883");
    let key = server
        .verify(Some(&challenge), "alice", CHALLENGE, &proof.response)
        .unwrap();
    assert_eq!(key, Some(SessionKey::derive(H_UP, KEY_NONCE).unwrap()));
}
