//! A crate outside this workspace, depending on `zeo-storage` with the
//! `testing` feature the way a third party's crate would, runs the contract
//! suite against its own backend in a few lines: the test generates such a
//! crate (this example's backend as its library) and runs its tests.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// A cold build of the suite's dependencies; usually the shared target
/// directory makes it a matter of seconds.
const BUILD_TIMEOUT: Duration = Duration::from_secs(900);

const TESTS: &str = r#"
use out_of_tree_backend::CurrentOnly;
use zeo_storage::testing::Fixture;

fn make() -> Fixture<CurrentOnly> {
    Fixture::new(CurrentOnly::new("out of tree")).history_free()
}

zeo_storage::contract_tests!(contract, make);
"#;

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn an_out_of_tree_crate_runs_the_contract_suite() {
    let root = zeo_testkit::workspace_root();
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let krate = dir.path().join("out-of-tree-backend");
    write(
        &krate.join("Cargo.toml"),
        &format!(
            "[package]\nname = \"out-of-tree-backend\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
             [workspace]\n\n\
             [dependencies]\nzeo-storage = {{ path = {storage:?} }}\n\n\
             [dev-dependencies]\nzeo-storage = {{ path = {storage:?}, features = [\"testing\"] }}\n",
            storage = root.join("crates/zeo-storage").display().to_string(),
        ),
    );
    write(
        &krate.join("src/lib.rs"),
        &std::fs::read_to_string(here.join("src/lib.rs")).unwrap(),
    );
    write(&krate.join("tests/contract.rs"), TESTS);
    // The workspace's lock file pins the versions its own build compiled,
    // so the shared target directory already holds them.
    std::fs::copy(root.join("Cargo.lock"), krate.join("Cargo.lock")).unwrap();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), std::path::PathBuf::from);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = zeo_testkit::run_with_timeout(
        Command::new(cargo)
            .args(["test", "--offline", "--tests"])
            .current_dir(&krate)
            .env("CARGO_TARGET_DIR", target),
        BUILD_TIMEOUT,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("test contract::store_then_load ... ok"),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
