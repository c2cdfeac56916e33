//! The password database file that ZEO 3/4's `zeopasswd` maintains and a
//! digest-authenticating server reads.
//!
//! Plain text: an optional first line `realm <name>`, then one
//! `<user>: <hash>` line per user, written sorted by user name. A digest
//! database stores [`password_hash`] of user, realm and password, so the
//! realm is part of every entry and a database without a realm cannot hold
//! users.
//!
//! Reading follows ZEO: a first line starting with `realm ` names the realm;
//! every other line is split at its first `:`, the hash stripped of spaces.
//! Unlike ZEO, blank lines are skipped instead of being an error.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::digest::password_hash;
use crate::error::{Error, Result};

const REALM_PREFIX: &str = "realm ";

/// Users and their password hashes, with the realm the hashes belong to.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct PasswordDatabase {
    realm: Option<String>,
    users: BTreeMap<String, String>,
}

impl PasswordDatabase {
    /// An empty database for `realm`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] for a realm the file cannot hold.
    pub fn new(realm: Option<&str>) -> Result<Self> {
        if let Some(realm) = realm {
            check_realm(realm)?;
        }
        Ok(PasswordDatabase {
            realm: realm.map(str::to_owned),
            users: BTreeMap::new(),
        })
    }

    /// Reads the database at `path` (empty when the file does not exist, as
    /// for ZEO), reconciling its realm with `realm`: a realm given here
    /// fills in a file without one and must equal the file's otherwise.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the file cannot be read, [`Error::BadDatabaseLine`]
    /// for a malformed line, [`Error::RealmConflict`] when the realms differ.
    pub fn load(path: &Path, realm: Option<&str>) -> Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(Error::Io {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        let mut db = Self::parse_at(&text, path)?;
        db.reconcile_realm(realm)?;
        Ok(db)
    }

    /// Parses database text.
    ///
    /// # Errors
    ///
    /// [`Error::BadDatabaseLine`] for a line without a `:`.
    pub fn parse(text: &str) -> Result<Self> {
        Self::parse_at(text, Path::new("(text)"))
    }

    fn parse_at(text: &str, path: &Path) -> Result<Self> {
        let mut db = PasswordDatabase::default();
        let mut lines = text.lines().enumerate().peekable();
        if let Some((_, first)) = lines.peek() {
            if let Some(realm) = first.strip_prefix(REALM_PREFIX) {
                db.realm = Some(realm.trim_end().to_owned());
                lines.next();
            }
        }
        for (index, line) in lines {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let Some((user, hash)) = line.split_once(':') else {
                return Err(Error::BadDatabaseLine {
                    path: PathBuf::from(path),
                    line: index + 1,
                });
            };
            db.users.insert(user.to_owned(), hash.trim().to_owned());
        }
        Ok(db)
    }

    /// Applies a realm from the command line or configuration.
    ///
    /// # Errors
    ///
    /// [`Error::RealmConflict`] when the database already has another realm.
    pub fn reconcile_realm(&mut self, realm: Option<&str>) -> Result<()> {
        let Some(realm) = realm.filter(|r| !r.is_empty()) else {
            return Ok(());
        };
        match &self.realm {
            Some(own) if !own.is_empty() && own != realm => Err(Error::RealmConflict {
                specified: realm.to_owned(),
                database: own.clone(),
            }),
            _ => {
                check_realm(realm)?;
                self.realm = Some(realm.to_owned());
                Ok(())
            }
        }
    }

    /// The file text: the realm line, then the users sorted by name.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        if let Some(realm) = self.realm.as_deref().filter(|r| !r.is_empty()) {
            out.push_str(REALM_PREFIX);
            out.push_str(realm);
            out.push('\n');
        }
        for (user, hash) in &self.users {
            out.push_str(user);
            out.push_str(": ");
            out.push_str(hash);
            out.push('\n');
        }
        out
    }

    /// Writes the database to `path`, replacing the file atomically (a
    /// temporary file in the same directory, synced, then renamed). A new
    /// file is readable by its owner only: the hashes are password
    /// equivalents for this scheme. An existing file keeps its permissions.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when writing fails.
    pub fn save(&self, path: &Path) -> Result<()> {
        let io = |source| Error::Io {
            path: path.to_owned(),
            source,
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let mode = std::fs::metadata(path).ok().map(|m| m.permissions());
        let mut tmp = tempfile::Builder::new()
            .prefix(".zeopasswd")
            .tempfile_in(dir)
            .map_err(io)?;
        tmp.write_all(self.to_text().as_bytes()).map_err(io)?;
        if let Some(mode) = mode {
            tmp.as_file().set_permissions(mode).map_err(io)?;
        }
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(path).map_err(|e| io(e.error))?;
        Ok(())
    }

    /// The realm the hashes belong to.
    pub fn realm(&self) -> Option<&str> {
        self.realm.as_deref().filter(|r| !r.is_empty())
    }

    /// The stored hash of `user`.
    ///
    /// # Errors
    ///
    /// [`Error::NoSuchUser`].
    pub fn get(&self, user: &str) -> Result<&str> {
        self.users
            .get(user)
            .map(String::as_str)
            .ok_or_else(|| Error::NoSuchUser(user.to_owned()))
    }

    /// Whether `user` is in the database.
    pub fn contains(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    /// Users and hashes, sorted by user name.
    pub fn users(&self) -> impl Iterator<Item = (&str, &str)> {
        self.users.iter().map(|(u, h)| (u.as_str(), h.as_str()))
    }

    /// How many users there are.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether there are no users.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Adds a user.
    ///
    /// # Errors
    ///
    /// [`Error::UserExists`], [`Error::MissingRealm`], or
    /// [`Error::InvalidName`] for a name or password the file or the
    /// protocol cannot carry.
    pub fn add_user(&mut self, user: &str, password: &str) -> Result<()> {
        if self.users.contains_key(user) {
            return Err(Error::UserExists(user.to_owned()));
        }
        self.store(user, password)
    }

    /// Changes a user's password.
    ///
    /// # Errors
    ///
    /// [`Error::NoSuchUser`], otherwise as [`PasswordDatabase::add_user`].
    pub fn change_password(&mut self, user: &str, password: &str) -> Result<()> {
        if !self.users.contains_key(user) {
            return Err(Error::NoSuchUser(user.to_owned()));
        }
        self.store(user, password)
    }

    /// Adds the user or changes their password; returns whether the user is
    /// new.
    ///
    /// # Errors
    ///
    /// As [`PasswordDatabase::add_user`], except that the user may exist.
    pub fn set_password(&mut self, user: &str, password: &str) -> Result<bool> {
        let new = !self.users.contains_key(user);
        self.store(user, password)?;
        Ok(new)
    }

    /// Removes a user.
    ///
    /// # Errors
    ///
    /// [`Error::NoSuchUser`].
    pub fn delete_user(&mut self, user: &str) -> Result<()> {
        self.users
            .remove(user)
            .map(|_| ())
            .ok_or_else(|| Error::NoSuchUser(user.to_owned()))
    }

    fn store(&mut self, user: &str, password: &str) -> Result<()> {
        let realm = self.realm().ok_or(Error::MissingRealm)?;
        check_user(user)?;
        if password.is_empty() {
            return Err(Error::InvalidName {
                what: "password",
                value: String::new(),
                reason: "empty (clients cannot authenticate with it)",
            });
        }
        let hash = password_hash(user, realm, password);
        self.users.insert(user.to_owned(), hash);
        Ok(())
    }
}

fn check_user(user: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidName {
            what: "user name",
            value: user.to_owned(),
            reason,
        })
    };
    if user.is_empty() {
        return bad("empty");
    }
    if user.contains(':') {
        return bad("contains ':', which separates the name from the hash");
    }
    if user.contains(['\n', '\r']) {
        return bad("contains a line break");
    }
    if user.trim() != user {
        return bad("starts or ends with white space, which the file loses");
    }
    if user.starts_with(REALM_PREFIX) {
        return bad("starts with 'realm ', which reads back as the realm line");
    }
    Ok(())
}

fn check_realm(realm: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidName {
            what: "realm",
            value: realm.to_owned(),
            reason,
        })
    };
    if realm.is_empty() {
        return bad("empty");
    }
    if realm.contains(['\n', '\r']) {
        return bad("contains a line break");
    }
    if realm.trim() != realm {
        return bad("starts or ends with white space, which the file loses");
    }
    Ok(())
}

/// What `zeopasswd` does to one user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PasswdAction {
    /// Add the user, or change their password.
    Set(String),
    /// Remove the user.
    Delete,
}

/// What [`update_file`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PasswdOutcome {
    /// The user was new.
    Added,
    /// The user's password was replaced.
    Changed,
    /// The user was removed.
    Deleted,
}

/// `zeopasswd`'s work: loads the database at `path` (a missing file is
/// empty) in `realm`, applies `action` to `user` and saves it.
///
/// # Errors
///
/// As [`PasswordDatabase::load`], [`PasswordDatabase::set_password`],
/// [`PasswordDatabase::delete_user`] and [`PasswordDatabase::save`]; the
/// file is untouched on error.
pub fn update_file(
    path: &Path,
    realm: Option<&str>,
    user: &str,
    action: &PasswdAction,
) -> Result<PasswdOutcome> {
    let mut db = PasswordDatabase::load(path, realm)?;
    let outcome = match action {
        PasswdAction::Set(password) => {
            if db.set_password(user, password)? {
                PasswdOutcome::Added
            } else {
                PasswdOutcome::Changed
            }
        }
        PasswdAction::Delete => {
            db.delete_user(user)?;
            PasswdOutcome::Deleted
        }
    };
    db.save(path)?;
    Ok(outcome)
}

/// Shows the realm and user names, never the password hashes: a hash is
/// enough to log in, so it must not reach logs.
impl std::fmt::Debug for PasswordDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordDatabase")
            .field("realm", &self.realm)
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[cfg(test)]
mod debug_tests {
    use super::PasswordDatabase;

    #[test]
    fn debug_output_hides_the_hashes() {
        let mut db =
            PasswordDatabase::parse("realm zeo\nalice: 0123456789abcdef0123456789abcdef01234567\n")
                .unwrap();
        let shown = format!("{db:?}");
        assert!(shown.contains("alice"), "{shown}");
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
        db = PasswordDatabase::default();
        assert!(!format!("{db:?}").is_empty());
    }
}
