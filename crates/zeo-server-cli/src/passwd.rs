//! `zeo-server passwd`: ZEO 3/4's `zeopasswd`, adding, changing or deleting
//! a user in a digest password database. The database work is in
//! `zeo_auth::update_file`; this module reads options and passwords.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use zeo_auth::{PasswdAction, PasswdOutcome};
use zeo_config::ServerConfig;

/// Options of `zeo-server passwd`.
#[derive(Args, Debug)]
pub struct PasswdArgs {
    /// Server configuration naming the database (`authentication-database`)
    /// and realm (`authentication-realm`).
    #[arg(short = 'C', long = "configure", value_name = "FILE", conflicts_with_all = ["filename", "protocol"])]
    configure: Option<PathBuf>,
    /// The password database file.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    filename: Option<PathBuf>,
    /// The database realm (needed for a new file).
    #[arg(short = 'r', long = "realm", value_name = "REALM")]
    realm: Option<String>,
    /// The authentication protocol; only `digest` exists.
    #[arg(short = 'p', long = "protocol", value_name = "NAME")]
    protocol: Option<String>,
    /// Delete the user instead of setting a password.
    #[arg(short = 'd', long = "delete")]
    delete: bool,
    /// The user.
    username: String,
    /// The password (prompted for when absent).
    #[arg(conflicts_with = "delete")]
    password: Option<String>,
}

/// Runs the command; exit status 0 on success, 2 for bad usage, 1 otherwise.
pub fn passwd(args: PasswdArgs) -> ExitCode {
    match run(args) {
        Ok(message) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        Err(Failure::Usage(message)) => {
            eprintln!("zeo-server passwd: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Other(message)) => {
            eprintln!("zeo-server passwd: {message}");
            ExitCode::FAILURE
        }
    }
}

enum Failure {
    Usage(String),
    Other(String),
}

fn run(args: PasswdArgs) -> Result<String, Failure> {
    let (protocol, path, realm) = match &args.configure {
        Some(conf) => {
            let config =
                ServerConfig::from_path(conf).map_err(|e| Failure::Other(e.to_string()))?;
            let zeo = config.zeo;
            let path = zeo.authentication_database.ok_or_else(|| {
                Failure::Usage("the configuration does not specify authentication-database".into())
            })?;
            // Command-line realm still applies, and must agree with the file.
            let realm = args.realm.clone().or(zeo.authentication_realm);
            (zeo.authentication_protocol, path, realm)
        }
        None => {
            let path = args.filename.clone().ok_or_else(|| {
                Failure::Usage("give a configuration file (-C) or a database file (-f)".into())
            })?;
            let protocol = Some(
                args.protocol
                    .clone()
                    .unwrap_or_else(|| zeo_auth::PROTOCOL.into()),
            );
            (protocol, path, args.realm.clone())
        }
    };
    match protocol.as_deref() {
        Some(zeo_auth::PROTOCOL) => {}
        None => {
            return Err(Failure::Usage(
                "the configuration does not specify authentication-protocol".into(),
            ))
        }
        Some(other) => {
            return Err(Failure::Usage(format!(
                "unknown authentication protocol {other:?} (only \"digest\" exists)"
            )))
        }
    }
    let action = if args.delete {
        PasswdAction::Delete
    } else {
        match args.password.clone() {
            Some(password) => PasswdAction::Set(password),
            None => PasswdAction::Set(read_password().map_err(Failure::Other)?),
        }
    };
    let outcome = zeo_auth::update_file(&path, realm.as_deref(), &args.username, &action)
        .map_err(|e| Failure::Other(e.to_string()))?;
    let verb = match outcome {
        PasswdOutcome::Added => "added",
        PasswdOutcome::Changed => "changed the password of",
        PasswdOutcome::Deleted => "deleted",
    };
    Ok(format!("{}: {verb} {}", path.display(), args.username))
}

/// Asks twice without echo on a terminal; reads one line otherwise (for
/// scripts piping a password in).
fn read_password() -> Result<String, String> {
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Enter password: ")
            .map_err(|e| format!("reading the password: {e}"))?;
        let second = rpassword::prompt_password("Enter password again: ")
            .map_err(|e| format!("reading the password: {e}"))?;
        if first != second {
            return Err("the passwords do not match".into());
        }
        Ok(first)
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("reading the password from standard input: {e}"))?;
        let password = line.strip_suffix('\n').unwrap_or(&line);
        let password = password.strip_suffix('\r').unwrap_or(password);
        Ok(password.to_owned())
    }
}
