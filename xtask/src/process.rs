//! Running child processes: step headers, and deadlines for the ones that
//! talk to the network.

use std::io;
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::thread;
use std::time::{Duration, Instant};

/// Prints a step header that stands out in a long CI log.
pub fn header(title: &str) {
    let rule = "=".repeat(72);
    println!("\n{rule}\n==> {title}\n{rule}");
}

/// Renders a command the way a shell user would type it, for logs. A
/// program given by absolute path (cargo, as `$CARGO` names it) shows as its
/// bare name, which is what a reader would type.
pub fn display(cmd: &Command) -> String {
    let program = Path::new(cmd.get_program());
    let shown = match program.file_name() {
        Some(name) if program.is_absolute() && name == "cargo" => name,
        _ => program.as_os_str(),
    };
    let mut parts = vec![shown.to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| {
        let a = a.to_string_lossy();
        if a.is_empty() || a.contains([' ', '\'', '"', '<', '>', '*']) {
            format!("'{}'", a.replace('\'', "'\\''"))
        } else {
            a.into_owned()
        }
    }));
    parts.join(" ")
}

/// Runs a command to completion with inherited stdio, echoing it first.
pub fn run(cmd: &mut Command) -> Result<(), String> {
    println!("$ {}", display(cmd));
    let status = cmd
        .status()
        .map_err(|e| format!("could not start `{}`: {e}", display(cmd)))?;
    check_status(cmd, status)
}

/// Runs a command with inherited stdio and kills it when `limit` passes, so
/// that a stalled download cannot hang CI until its global timeout.
pub fn run_with_deadline(cmd: &mut Command, limit: Duration) -> Result<(), String> {
    println!("$ {}", display(cmd));
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("could not start `{}`: {e}", display(cmd)))?;
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return check_status(cmd, status),
            Ok(None) if started.elapsed() >= limit => {
                // Killing an already exited child fails harmlessly; reaping
                // it afterwards keeps no zombie behind.
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "`{}` did not finish within {} s and was killed",
                    display(cmd),
                    limit.as_secs()
                ));
            }
            Ok(None) => thread::sleep(Duration::from_millis(100)),
            Err(e) => return Err(format!("waiting for `{}`: {e}", display(cmd))),
        }
    }
}

/// Runs a command silently and reports whether it exited with success;
/// `Err` only when it could not be started at all.
pub fn succeeds_quietly(cmd: &mut Command) -> io::Result<bool> {
    use std::process::Stdio;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    Ok(cmd.status()?.success())
}

fn check_status(cmd: &Command, status: ExitStatus) -> Result<(), String> {
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{}` failed ({status})", display(cmd)))
    }
}

/// Runs a command like [`run`], passing its output through line by line
/// while keeping a copy, so the caller can read the test runner's counts.
pub fn run_tee(cmd: &mut Command) -> (Result<(), String>, String) {
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;
    use std::sync::mpsc;

    println!("$ {}", display(cmd));
    let mut child = match cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn() {
        Ok(child) => child,
        Err(e) => {
            return (
                Err(format!("could not start `{}`: {e}", display(cmd))),
                String::new(),
            )
        }
    };
    let (tx, rx) = mpsc::channel::<String>();
    let mut pumps = Vec::new();
    if let Some(out) = child.stdout.take() {
        let tx = tx.clone();
        pumps.push(thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                println!("{line}");
                let _ = tx.send(line);
            }
        }));
    }
    if let Some(err) = child.stderr.take() {
        let tx = tx.clone();
        pumps.push(thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("{line}");
                let _ = tx.send(line);
            }
        }));
    }
    drop(tx);
    let captured: Vec<String> = rx.iter().collect();
    for pump in pumps {
        let _ = pump.join();
    }
    let _ = io::stdout().flush();
    let result = match child.wait() {
        Ok(status) => check_status(cmd, status),
        Err(e) => Err(format!("waiting for `{}`: {e}", display(cmd))),
    };
    (result, captured.join("\n"))
}
