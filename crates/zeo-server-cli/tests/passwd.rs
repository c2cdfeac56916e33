//! `zeo-server passwd`, run as a program.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn passwd(dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_zeo-server"))
        .arg("passwd")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout {}\nstderr {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn adds_changes_and_deletes_users_in_zeos_format() {
    let dir = tempfile::tempdir().unwrap();
    let out = passwd(
        dir.path(),
        &["-f", "passwd", "-r", "zeo-realm", "bob", "pw1"],
        None,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("added bob"));
    // The password comes from standard input when it is not a terminal.
    let out = passwd(dir.path(), &["-f", "passwd", "alice"], Some("pw2\n"));
    assert!(out.status.success(), "{}", text(&out));
    // Hashes as ZEO's DigestDatabase computes them: sha1("user:realm:pw").
    let file = std::fs::read_to_string(dir.path().join("passwd")).unwrap();
    assert_eq!(
        file,
        "realm zeo-realm\n\
         alice: 36c58c0f2a9e60fc832567a220816a1d6df59c3f\n\
         bob: ed7d27d785c7a5249191a4c425fcd2717bea989f\n"
    );

    let out = passwd(dir.path(), &["-f", "passwd", "bob", "other"], None);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("changed the password of bob"));
    let file = std::fs::read_to_string(dir.path().join("passwd")).unwrap();
    assert!(
        !file.contains("ed7d27d785c7a5249191a4c425fcd2717bea989f"),
        "{file}"
    );
    // sha1(b"bob:zeo-realm:other").hexdigest()
    assert!(
        file.contains("bob: a8878f583caf6370705fe9ffd952d3a6de8f9173"),
        "{file}"
    );

    let out = passwd(dir.path(), &["-f", "passwd", "-d", "alice"], None);
    assert!(out.status.success(), "{}", text(&out));
    let file = std::fs::read_to_string(dir.path().join("passwd")).unwrap();
    assert!(!file.contains("alice"), "{file}");

    let out = passwd(dir.path(), &["-f", "passwd", "-d", "alice"], None);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("No such user: alice"));
}

#[test]
fn reads_the_database_and_realm_from_a_server_configuration() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("zeo.conf"),
        "<zeo>\n  address 127.0.0.1:0\n  authentication-protocol digest\n  \
         authentication-database auth.db\n  authentication-realm zeo-realm\n</zeo>\n\
         <mappingstorage 1>\n</mappingstorage>\n",
    )
    .unwrap();
    let out = passwd(dir.path(), &["-C", "zeo.conf", "bob", "pw1"], None);
    assert!(out.status.success(), "{}", text(&out));
    let file = std::fs::read_to_string(dir.path().join("auth.db")).unwrap();
    assert_eq!(
        file,
        "realm zeo-realm\nbob: ed7d27d785c7a5249191a4c425fcd2717bea989f\n"
    );
    // -C excludes -f.
    let out = passwd(
        dir.path(),
        &["-C", "zeo.conf", "-f", "x", "bob", "pw"],
        None,
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[test]
fn realm_conflicts_and_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("passwd"), "realm one\n").unwrap();
    let out = passwd(
        dir.path(),
        &["-f", "passwd", "-r", "two", "bob", "pw"],
        None,
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("Specified realm \"two\" differs from database realm \"one\""),
        "{}",
        text(&out)
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("passwd")).unwrap(),
        "realm one\n"
    );

    // A new file needs a realm.
    let out = passwd(dir.path(), &["-f", "new", "bob", "pw"], None);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!dir.path().join("new").exists());

    // Neither -C nor -f.
    let out = passwd(dir.path(), &["bob", "pw"], None);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    // Only digest exists.
    let out = passwd(
        dir.path(),
        &["-p", "srp", "-f", "passwd", "bob", "pw"],
        None,
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    // An empty password from standard input is refused.
    let out = passwd(dir.path(), &["-f", "passwd", "bob"], Some("\n"));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}

#[test]
fn a_server_whose_password_database_has_another_realm_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = passwd(
        dir.path(),
        &["-f", "auth.db", "-r", "other", "bob", "pw"],
        None,
    );
    assert!(out.status.success(), "{}", text(&out));
    std::fs::write(
        dir.path().join("zeo.conf"),
        "<zeo>\n  address 127.0.0.1:0\n  authentication-protocol digest\n  \
         authentication-database auth.db\n  authentication-realm zeo\n</zeo>\n\
         <mappingstorage 1>\n</mappingstorage>\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_zeo-server"))
        .args(["-C", "zeo.conf"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("differs from database realm"),
        "{}",
        text(&out)
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("listening on"));
}
