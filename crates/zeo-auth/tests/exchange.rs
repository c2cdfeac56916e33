//! The digest exchange and the password database, including ZEO's error
//! cases.

use std::time::{Duration, SystemTime};

use zeo_auth::{Challenge, ClientProof, Error, NonceKey, PasswordDatabase, ServerAuthenticator};

fn server() -> ServerAuthenticator {
    let mut db = PasswordDatabase::new(Some("zeo")).unwrap();
    db.add_user("alice", "s3cret").unwrap();
    db.add_user("bob", "hunter2").unwrap();
    ServerAuthenticator::with_nonce_key(db, NonceKey::from_bytes(*b"8 bytes!")).unwrap()
}

#[test]
fn right_password_gives_both_sides_the_same_key() {
    let server = server();
    let ch = server.challenge("('127.0.0.1', 1)", SystemTime::now());
    assert_eq!(ch.realm, "zeo");
    // Same second, same inputs: ZEO's two nonces coincide.
    assert_eq!(ch.challenge, ch.key_nonce);
    let proof = ClientProof::new("bob", "hunter2", None, &ch).unwrap();
    let key = server
        .verify(Some(&ch), "bob", &ch.challenge, &proof.response)
        .unwrap();
    assert_eq!(key.as_ref(), Some(&proof.session_key));
}

#[test]
fn wrong_password_is_refused_without_error() {
    let server = server();
    let ch = server.challenge("('127.0.0.1', 1)", SystemTime::now());
    let proof = ClientProof::new("alice", "wrong", Some("zeo"), &ch).unwrap();
    let key = server
        .verify(Some(&ch), "alice", &ch.challenge, &proof.response)
        .unwrap();
    assert!(key.is_none());
    // Another user's right password is wrong too.
    let proof = ClientProof::new("alice", "hunter2", Some("zeo"), &ch).unwrap();
    assert!(server
        .verify(Some(&ch), "alice", &ch.challenge, &proof.response)
        .unwrap()
        .is_none());
}

#[test]
fn challenges_differ_by_peer_and_time() {
    let server = server();
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let a = server.challenge("('127.0.0.1', 1)", t);
    let b = server.challenge("('127.0.0.1', 2)", t);
    let c = server.challenge("('127.0.0.1', 1)", t + Duration::from_secs(1));
    assert_ne!(a.challenge, b.challenge);
    assert_ne!(a.challenge, c.challenge);
    assert_eq!(a, server.challenge("('127.0.0.1', 1)", t));
    let other = ServerAuthenticator::with_nonce_key(
        server.database().clone(),
        NonceKey::from_bytes(*b"another!"),
    )
    .unwrap();
    assert_ne!(
        other.challenge("('127.0.0.1', 1)", t).challenge,
        a.challenge
    );
}

#[test]
fn a_response_to_another_challenge_is_invalid() {
    let server = server();
    let t = SystemTime::now();
    let issued = server.challenge("('127.0.0.1', 1)", t);
    let stale = server.challenge("('127.0.0.1', 2)", t);
    let proof = ClientProof::new("alice", "s3cret", None, &stale).unwrap();
    assert!(matches!(
        server.verify(Some(&issued), "alice", &stale.challenge, &proof.response),
        Err(Error::InvalidChallenge)
    ));
    assert!(matches!(
        server.verify(None, "alice", &issued.challenge, &proof.response),
        Err(Error::InvalidChallenge)
    ));
}

#[test]
fn unknown_user_is_a_lookup_error() {
    let server = server();
    let ch = server.challenge("", SystemTime::now());
    let proof = ClientProof::new("mallory", "x", None, &ch).unwrap();
    let err = server
        .verify(Some(&ch), "mallory", &ch.challenge, &proof.response)
        .unwrap_err();
    assert_eq!(err.to_string(), "No such user: mallory");
}

#[test]
fn client_checks_realm_and_credentials() {
    let ch = Challenge {
        realm: "theirs".into(),
        challenge: "c".into(),
        key_nonce: "k".into(),
    };
    let err = ClientProof::new("alice", "pw", Some("ours"), &ch).unwrap_err();
    assert_eq!(
        err.to_string(),
        "expected realm \"theirs\", got realm \"ours\""
    );
    assert!(matches!(
        ClientProof::new("", "pw", None, &ch),
        Err(Error::EmptyCredentials)
    ));
    assert!(matches!(
        ClientProof::new("alice", "", None, &ch),
        Err(Error::EmptyCredentials)
    ));
}

#[test]
fn server_needs_a_realm() {
    let db = PasswordDatabase::new(None).unwrap();
    assert!(matches!(
        ServerAuthenticator::new(db),
        Err(Error::MissingRealm)
    ));
}

#[test]
fn database_add_change_delete() {
    let mut db = PasswordDatabase::new(Some("r")).unwrap();
    db.add_user("u", "one").unwrap();
    let first = db.get("u").unwrap().to_owned();
    assert_eq!(first, zeo_auth::password_hash("u", "r", "one"));
    assert_eq!(
        db.add_user("u", "two").unwrap_err().to_string(),
        "User u already exists"
    );
    db.change_password("u", "two").unwrap();
    assert_ne!(db.get("u").unwrap(), first);
    assert_eq!(
        db.change_password("v", "x").unwrap_err().to_string(),
        "No such user: v"
    );
    assert!(db.set_password("v", "x").unwrap());
    assert!(!db.set_password("v", "y").unwrap());
    db.delete_user("u").unwrap();
    assert!(!db.contains("u"));
    assert_eq!(
        db.delete_user("u").unwrap_err().to_string(),
        "No such user: u"
    );
    assert_eq!(db.len(), 1);
}

#[test]
fn database_refuses_what_the_file_cannot_hold() {
    let mut db = PasswordDatabase::new(Some("r")).unwrap();
    for user in ["", "a:b", "a\nb", " a", "realm x"] {
        assert!(
            matches!(db.add_user(user, "pw"), Err(Error::InvalidName { .. })),
            "{user:?}"
        );
    }
    assert!(matches!(
        db.add_user("a", ""),
        Err(Error::InvalidName { .. })
    ));
    assert!(PasswordDatabase::new(Some("a\nb")).is_err());
    let mut no_realm = PasswordDatabase::new(None).unwrap();
    assert!(matches!(
        no_realm.add_user("a", "b"),
        Err(Error::MissingRealm)
    ));
}

#[test]
fn database_file_round_trip_and_realm_rules() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("passwd");
    // A missing file is an empty database, as in ZEO.
    let mut db = PasswordDatabase::load(&path, Some("zeo")).unwrap();
    assert!(db.is_empty());
    db.add_user("zed", "1").unwrap();
    db.add_user("amy", "2").unwrap();
    db.save(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("realm zeo\namy: "), "{text}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{mode:o}");
    }

    assert_eq!(PasswordDatabase::load(&path, None).unwrap(), db);
    assert_eq!(PasswordDatabase::load(&path, Some("zeo")).unwrap(), db);
    let err = PasswordDatabase::load(&path, Some("other")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Specified realm \"other\" differs from database realm \"zeo\""
    );

    // A file without a realm line takes the given realm.
    std::fs::write(&path, "amy: abc\n").unwrap();
    let db = PasswordDatabase::load(&path, Some("given")).unwrap();
    assert_eq!(db.realm(), Some("given"));
    assert_eq!(db.get("amy").unwrap(), "abc");

    // ZEO's parsing: split at the first ':', hash stripped; blank lines skipped.
    let db = PasswordDatabase::parse("realm r\n\nbob:  h:x \n").unwrap();
    assert_eq!(db.get("bob").unwrap(), "h:x");
    let err = PasswordDatabase::parse("realm r\nno colon here\n").unwrap_err();
    assert!(
        matches!(err, Error::BadDatabaseLine { line: 2, .. }),
        "{err}"
    );
}
