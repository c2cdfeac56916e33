//! The no-sleep check: tests must not wait on the wall clock.
//!
//! A test that sleeps to let something happen ("sleep 200 ms, then assert it
//! has not finished") is slow, and flaky on a loaded machine. Tests drive
//! time with a paused tokio clock instead, or wait, bounded, for an event
//! they can observe. This check finds the sleeps that remain.
//!
//! What is scanned: every `.rs` file under `crates/*/tests`, the test
//! modules of `crates/*/src` (from a `#[cfg(test)]` line followed by a
//! `mod` to the end of the file, where this workspace keeps them), and
//! `crates/zeo-testkit/src`, which only tests use.
//!
//! What counts as a sleep: a call of `sleep(` or `sleep_until(` (as
//! `std::thread::sleep`, `tokio::time::sleep`, or imported bare), outside
//! comments and string literals.
//!
//! What is allowed:
//! * a sleep in a function that runs on a paused clock: one whose
//!   attributes say `start_paused = true`, or whose body calls
//!   `time::pause()` or builds its runtime with `.start_paused(true)`
//!   before the sleep. Such a sleep only advances virtual time;
//! * a sleep on a line that carries, or follows a line that carries, the
//!   marker `allow-sleep:` with a reason after it, for the rare real need
//!   (a child process that must be killed mid-write, a port a child process
//!   opens with no event to wait on).

use std::fs;
use std::path::{Path, PathBuf};

/// The marker that allows one sleep; a reason must follow it.
pub const MARKER: &str = "allow-sleep:";

/// One wall-clock sleep found.
#[derive(Debug, PartialEq, Eq)]
pub struct Offender {
    pub path: PathBuf,
    pub line: usize,
    pub text: String,
}

/// Every offender in the workspace at `root`, in path and line order.
pub fn scan(root: &Path) -> Result<Vec<Offender>, String> {
    let mut files = Vec::new();
    let crates = root.join("crates");
    let entries =
        fs::read_dir(&crates).map_err(|e| format!("reading {}: {e}", crates.display()))?;
    for entry in entries {
        let dir = entry.map_err(|e| e.to_string())?.path();
        rust_files(&dir.join("tests"), &mut files, true);
        let whole = dir.file_name().is_some_and(|n| n == "zeo-testkit");
        rust_files(&dir.join("src"), &mut files, whole);
    }
    files.sort();
    let mut offenders = Vec::new();
    for (path, whole) in files {
        let text =
            fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        for (line, text) in offending_lines(&text, whole) {
            offenders.push(Offender {
                path: path.strip_prefix(root).unwrap_or(&path).to_path_buf(),
                line,
                text,
            });
        }
    }
    Ok(offenders)
}

/// Collects `.rs` files under `dir`: `whole` files are scanned entirely,
/// the others only in their test modules.
fn rust_files(dir: &Path, out: &mut Vec<(PathBuf, bool)>, whole: bool) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out, whole);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push((path, whole));
        }
    }
}

/// The (1-based) lines of `source` that sleep on the wall clock. Without
/// `whole`, only the test module at the end of the file is looked at.
pub fn offending_lines(source: &str, whole: bool) -> Vec<(usize, String)> {
    let lines: Vec<&str> = source.lines().collect();
    let start = if whole {
        0
    } else {
        match test_module_start(&lines) {
            Some(i) => i,
            None => return Vec::new(),
        }
    };
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate().skip(start) {
        let code = strip_comment_and_strings(line);
        if !calls_sleep(&code) {
            continue;
        }
        let marked = |l: &str| {
            l.find(MARKER)
                .is_some_and(|at| !l[at + MARKER.len()..].trim().is_empty())
        };
        if marked(line) || (i > 0 && marked(lines[i - 1])) {
            continue;
        }
        if on_paused_clock(&lines, i) {
            continue;
        }
        found.push((i + 1, line.trim().to_owned()));
    }
    found
}

/// The index of the `#[cfg(test)]` line that opens a test module.
fn test_module_start(lines: &[&str]) -> Option<usize> {
    lines.iter().enumerate().find_map(|(i, l)| {
        let next = lines.get(i + 1).map(|n| n.trim_start()).unwrap_or("");
        (l.trim() == "#[cfg(test)]" && (next.starts_with("mod ") || next.starts_with("pub mod ")))
            .then_some(i)
    })
}

/// `line` without a trailing `//` comment and with string literals
/// emptied, so that neither can look like a call.
fn strip_comment_and_strings(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => {
                    in_string = false;
                    out.push('"');
                }
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push('"');
            }
            '/' if chars.peek() == Some(&'/') => break,
            _ => out.push(c),
        }
    }
    out
}

/// Whether `code` calls `sleep` or `sleep_until` (not defines them, not a
/// method or name that merely ends so).
fn calls_sleep(code: &str) -> bool {
    for name in ["sleep(", "sleep_until("] {
        let mut from = 0;
        while let Some(at) = code[from..].find(name) {
            let at = from + at;
            let before = code[..at].chars().next_back();
            let word_start = !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.');
            let defines = code[..at].trim_end().ends_with("fn");
            if word_start && !defines {
                return true;
            }
            from = at + name.len();
        }
    }
    false
}

/// Whether line `at` belongs to a function that runs on a paused clock:
/// the nearest function definition above it has `start_paused = true` in
/// its attributes, or its body calls `time::pause()` or builds a runtime
/// with `.start_paused(true)` before line `at`.
fn on_paused_clock(lines: &[&str], at: usize) -> bool {
    let Some(def) = (0..=at).rev().find(|&i| is_fn_definition(lines[i])) else {
        return false;
    };
    let attributes = lines[..def]
        .iter()
        .rev()
        .take_while(|l| {
            let t = l.trim_start();
            t.starts_with("#[") || t.starts_with("///") || t.starts_with("//")
        })
        .any(|l| l.contains("start_paused = true"));
    attributes
        || lines[def..at]
            .iter()
            .any(|l| l.contains("time::pause()") || l.contains(".start_paused(true)"))
}

fn is_fn_definition(line: &str) -> bool {
    let mut t = line.trim_start();
    for prefix in ["pub(crate) ", "pub ", "async ", "unsafe "] {
        t = t.strip_prefix(prefix).unwrap_or(t);
    }
    t = t.strip_prefix("async ").unwrap_or(t);
    t.starts_with("fn ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(source: &str) -> Vec<usize> {
        offending_lines(source, true)
            .into_iter()
            .map(|(l, _)| l)
            .collect()
    }

    #[test]
    fn wall_clock_sleeps_are_found_in_every_spelling() {
        let source = "\
#[test]
fn waits() {
    std::thread::sleep(Duration::from_millis(200));
    thread::sleep(d);
    tokio::time::sleep(d).await;
    sleep(d).await;
    tokio::time::sleep_until(t).await;
}
";
        assert_eq!(lines(source), vec![3, 4, 5, 6, 7]);
    }

    #[test]
    fn comments_strings_definitions_and_lookalikes_are_not_sleeps() {
        let source = r#"
// std::thread::sleep(d) in a comment
fn sleep_until(deadline: Option<Instant>) {}
async fn sleep(d: Duration) {}
let cmd = Command::new("sleep(");
runner.sleep(d);
light_sleep(d);
let x = 1; // then thread::sleep(d)
"#;
        assert!(lines(source).is_empty(), "{:?}", lines(source));
    }

    #[test]
    fn paused_clocks_make_sleeps_virtual() {
        let source = "\
#[tokio::test(start_paused = true)]
async fn virtual_time() {
    tokio::time::sleep(d).await;
}

#[tokio::test]
async fn paused_by_hand() {
    tokio::time::pause();
    tokio::time::sleep(d).await;
}

#[tokio::test]
async fn real_time() {
    tokio::time::sleep(d).await;
}

#[test]
fn own_runtime() {
    let rt = Builder::new_current_thread().enable_time().start_paused(true).build();
    rt.block_on(async { tokio::time::sleep(d).await });
}
";
        assert_eq!(lines(source), vec![14]);
    }

    #[test]
    fn the_marker_needs_a_reason() {
        let source = "\
fn child() {
    // allow-sleep: the child must be killed while it writes
    std::thread::sleep(d);
    std::thread::sleep(d); // allow-sleep: polls a port a child process opens
    // allow-sleep:
    std::thread::sleep(d);
}
";
        assert_eq!(lines(source), vec![6]);
    }

    #[test]
    fn in_source_files_only_the_test_module_counts() {
        let source = "\
async fn backoff() {
    tokio::time::sleep(d).await;
}

#[cfg(test)]
mod tests {
    #[test]
    fn t() {
        std::thread::sleep(d);
    }
}
";
        let found: Vec<usize> = offending_lines(source, false)
            .into_iter()
            .map(|(l, _)| l)
            .collect();
        assert_eq!(found, vec![9]);
        assert!(offending_lines("fn f() { std::thread::sleep(d); }", false).is_empty());
    }
}
