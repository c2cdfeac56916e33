//! The example backend against the storage contract, as any backend's own
//! tests would run it.

use zeo_example_backend::CurrentOnly;
use zeo_storage::testing::Fixture;

fn current_only() -> Fixture<CurrentOnly> {
    Fixture::new(CurrentOnly::new("contract")).history_free()
}

zeo_storage::contract_tests!(current_only_contract, current_only);

/// Random operation sequences within the backend's capabilities, replayed
/// on two instances that must agree on every outcome and observation, and
/// keep the model's invariants (a commit's last stores are what loads
/// return; an aborted transaction changes nothing).
#[test]
fn random_operations_agree_and_keep_the_model_invariants() {
    use proptest::test_runner::{Config, TestRunner};
    use zeo_storage::testing::model;
    use zeo_storage::Storage;

    let capabilities = CurrentOnly::new("capabilities").capabilities();
    let mut runner = TestRunner::new(Config {
        cases: 32,
        ..Config::default()
    });
    runner
        .run(&model::ops_for(capabilities), |ops| {
            model::check_pair(current_only, current_only, &ops)
        })
        .unwrap();
}
