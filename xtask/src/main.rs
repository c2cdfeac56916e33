//! Project automation, run as `cargo xtask <command>` (an alias defined in
//! `.cargo/config.toml`).
//!
//! `cargo xtask test` is the one command that checks everything: it prepares
//! the Python environments the interop tests need, checks formatting, runs
//! clippy and runs every test. CI runs exactly this (`.ci/run`), so a green
//! local run means a green CI run. See `docs/testing.md`.

mod bench;
mod no_sleep;
mod postgres;
mod process;
mod venv;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  test [--no-lint] [FILTER...] [-- ARGS...]
        Prepare the Python venvs, check that no test sleeps on the wall
        clock, check formatting, run clippy with warnings denied, then run
        every test (cargo-nextest when installed, else
        `cargo test`) and the doc tests. FILTERs select tests by name; ARGS
        after `--` go to the test harness (e.g. `--include-ignored`).
        --no-lint skips the formatting and clippy steps.
  no-sleep
        Only the no-sleep check: list every test that sleeps on the wall
        clock (docs/testing.md).
  venv  Only prepare the Python venvs under target/python.
  bench [--duration S] [--clients 1,4,8] [--objects N] [--idle N] [--keep] [--no-tls] [--debug]
        [--only-group-commit] [--only-postgresql] [--only-servers] [--blob-mb N] [--only-blob]
        [--only-start | --no-start | --remove-start-files]
        [--only-connections | --no-connections] [--only-prefetch]
        Build zeo-server and zeo-client in release and compare them with
        Python ZEO 6's server and client on 127.0.0.1, and zeo-server on
        PostgreSQL with Python RelStorage direct, and two zeo-servers over
        one PostgreSQL database (docs/benchmarks.md).
  help  Show this text.

environment:
  PYTHON               interpreter that creates the venvs (default python3)
  ZEO_XTASK_VENV_DIR   where the venvs live (default <workspace>/target/python)

The test command also installs PostgreSQL (Debian's `postgresql`) when
missing; the tests start a throwaway cluster in target/pg-cluster, which
the command removes at the end.
";

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let command = args.next().map(|a| a.to_string_lossy().into_owned());
    let rest: Vec<OsString> = args.collect();
    let result = match command.as_deref() {
        Some("test") => TestOptions::parse(rest).and_then(|o| test(&o)),
        Some("venv") if rest.is_empty() => venvs().map(|_| ()),
        Some("no-sleep") if rest.is_empty() => no_sleep_check(),
        Some("bench") => {
            bench::BenchOptions::parse(rest).and_then(|o| bench::run(&o, &workspace_root(), cargo))
        }
        Some("help" | "--help" | "-h") => {
            print!("{USAGE}");
            Ok(())
        }
        _ => Err(format!("unknown or malformed command\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("\nxtask: error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root: xtask's manifest directory's parent. Cargo sets
/// `CARGO_MANIFEST_DIR` for `cargo run` too, which keeps this right when a
/// checkout moves without a rebuild.
fn workspace_root() -> PathBuf {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest.parent().map(Path::to_path_buf).unwrap_or(manifest)
}

/// The cargo that started us, so a toolchain chosen by rustup is kept.
fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

/// Where the venvs live. Tests run in their crates' directories, so a
/// relative `ZEO_XTASK_VENV_DIR` is taken from the workspace root and the
/// interpreters handed to them are absolute; an empty one means unset.
fn venv_root() -> PathBuf {
    let root = workspace_root();
    match std::env::var_os("ZEO_XTASK_VENV_DIR") {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target").join("python"),
    }
}

/// Prepares both venvs; returns `(env var, interpreter)` pairs for the tests.
fn venvs() -> Result<Vec<(&'static str, PathBuf)>, String> {
    process::header("Python venvs (zeo6, zeo5, relstorage)");
    let root = venv_root();
    let mut found = Vec::new();
    for v in venv::ALL {
        found.push((v.env_var, v.ensure(&root)?));
    }
    Ok(found)
}

struct TestOptions {
    lint: bool,
    filters: Vec<OsString>,
    harness_args: Vec<OsString>,
}

impl TestOptions {
    fn parse(args: Vec<OsString>) -> Result<Self, String> {
        let mut options = TestOptions {
            lint: true,
            filters: Vec::new(),
            harness_args: Vec::new(),
        };
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            match arg.to_str() {
                Some("--no-lint") => options.lint = false,
                Some("--") => {
                    options.harness_args.extend(args.by_ref());
                }
                Some(s) if s.starts_with('-') => {
                    return Err(format!(
                        "unknown option {s} (harness options go after `--`)\n\n{USAGE}"
                    ))
                }
                _ => options.filters.push(arg),
            }
        }
        Ok(options)
    }
}

/// Lists every wall-clock sleep in tests; fails when there is one.
fn no_sleep_check() -> Result<(), String> {
    let offenders = no_sleep::scan(&workspace_root())?;
    for o in &offenders {
        println!("{}:{}: {}", o.path.display(), o.line, o.text);
    }
    if offenders.is_empty() {
        println!("no test sleeps on the wall clock");
        Ok(())
    } else {
        Err(format!(
            "{} wall-clock sleep(s) in tests: drive time with a paused clock, wait \
             for an event, or mark a real need with `// {} <reason>`",
            offenders.len(),
            no_sleep::MARKER
        ))
    }
}

/// One finished step, for the closing summary.
struct Outcome {
    step: &'static str,
    seconds: f64,
    error: Option<String>,
}

fn test(options: &TestOptions) -> Result<(), String> {
    let started = Instant::now();
    // Without the venvs every interop test would fail with the same message;
    // stopping here says it once.
    let pythons = venvs()?;
    let pg_bin = postgres::ensure_installed()?;
    let pg_dir = postgres::cluster_dir(&workspace_root());
    // A cluster left by an interrupted earlier run starts this one clean.
    postgres::remove_cluster(&pg_bin, &pg_dir);
    let mut outcomes = Vec::new();
    let mut counts = TestCounts::default();
    // Cheap and independent of the build: runs with or without --no-lint.
    process::header("no wall-clock sleeps in tests");
    let t = Instant::now();
    let result = no_sleep_check();
    outcomes.push(Outcome {
        step: "no-sleep check",
        seconds: t.elapsed().as_secs_f64(),
        error: result.err(),
    });

    let mut step = |name: &'static str, cmd: &mut Command| {
        process::header(name);
        let t = Instant::now();
        let (result, output) = process::run_tee(cmd);
        counts.add_from(&output);
        outcomes.push(Outcome {
            step: name,
            seconds: t.elapsed().as_secs_f64(),
            error: result.err(),
        });
    };

    if options.lint {
        step(
            "cargo fmt --check",
            cargo().args(["fmt", "--all", "--", "--check"]),
        );
        step(
            "cargo clippy (warnings denied)",
            cargo().args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]),
        );
    }

    let with_pythons = |mut cmd: Command| {
        for (var, python) in &pythons {
            cmd.env(var, python);
        }
        cmd.env("ZEO_PG_CLUSTER_DIR", &pg_dir)
            .env("ZEO_PG_BIN", &pg_bin);
        cmd
    };

    if has_nextest() {
        let mut cmd = with_pythons(cargo());
        cmd.args(["nextest", "run", "--workspace", "--no-fail-fast"]);
        if !options.filters.is_empty() {
            // A filter that selects nothing in this workspace is not an error.
            cmd.arg("--no-tests=warn");
        }
        cmd.args(&options.filters);
        if !options.harness_args.is_empty() {
            cmd.arg("--").args(&options.harness_args);
        }
        step("cargo nextest run", &mut cmd);
    } else {
        println!("\ncargo-nextest not found; falling back to `cargo test`");
        let mut cmd = with_pythons(cargo());
        cmd.args([
            "test",
            "--workspace",
            "--no-fail-fast",
            "--lib",
            "--bins",
            "--tests",
            "--examples",
        ]);
        cmd.arg("--")
            .args(&options.filters)
            .args(&options.harness_args);
        step("cargo test", &mut cmd);
    }

    let mut cmd = with_pythons(cargo());
    cmd.args(["test", "--workspace", "--doc", "--no-fail-fast", "--"]);
    cmd.args(&options.filters).args(&options.harness_args);
    step("cargo test --doc", &mut cmd);

    postgres::remove_cluster(&pg_bin, &pg_dir);

    process::header("Summary");
    let mut failed = Vec::new();
    for o in &outcomes {
        let verdict = if o.error.is_some() { "FAILED" } else { "ok" };
        println!("  {:<34} {verdict:<6} {:>7.1} s", o.step, o.seconds);
        if let Some(e) = &o.error {
            failed.push(format!("{}: {e}", o.step));
        }
    }
    println!("  total {:.1} s", started.elapsed().as_secs_f64());
    // One plain closing line with the totals of every runner, so a reader of
    // the log (or a tool) need not add up the per-binary summaries.
    println!(
        "\ntests: {} passed, {} failed, {} skipped",
        counts.passed, counts.failed, counts.skipped
    );
    if failed.is_empty() {
        println!("\nall checks passed");
        Ok(())
    } else {
        Err(format!(
            "{} step(s) failed:\n  {}",
            failed.len(),
            failed.join("\n  ")
        ))
    }
}

/// Test totals read from the runners' own summary lines.
#[derive(Default)]
struct TestCounts {
    passed: u64,
    failed: u64,
    skipped: u64,
}

impl TestCounts {
    /// Adds the counts of nextest's `Summary [..] N tests run: P passed, F
    /// failed, S skipped` line and of every libtest `test result:` line.
    fn add_from(&mut self, output: &str) {
        for line in output.lines() {
            let line = line.trim();
            if let Some((_, rest)) = line
                .split_once(" tests run: ")
                .filter(|_| line.starts_with("Summary"))
            {
                self.add_counts(rest, ", ");
            } else if let Some(rest) = line.strip_prefix("test result: ") {
                // "ok. 3 passed; 0 failed; 1 ignored; 0 measured; ..."
                let rest = rest.split_once(". ").map_or(rest, |(_, r)| r);
                self.add_counts(rest, "; ");
            }
        }
    }

    fn add_counts(&mut self, list: &str, separator: &str) {
        for part in list.split(separator) {
            let mut words = part.split_whitespace();
            let (Some(n), Some(what)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match what.trim_end_matches(',') {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "skipped" | "ignored" => self.skipped += n,
                _ => {}
            }
        }
    }
}

fn has_nextest() -> bool {
    process::succeeds_quietly(cargo().args(["nextest", "--version"])).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::TestCounts;

    #[test]
    fn counts_nextest_and_libtest_summaries() {
        let mut counts = TestCounts::default();
        counts.add_from(
            "     Summary [  50.990s] 414 tests run: 412 passed, 2 failed, 1 skipped\n\
             test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out\n\
             test result: FAILED. 1 passed; 4 failed; 0 ignored; 0 measured\n\
             unrelated: 7 passed\n",
        );
        assert_eq!((counts.passed, counts.failed, counts.skipped), (416, 6, 2));
    }
}
