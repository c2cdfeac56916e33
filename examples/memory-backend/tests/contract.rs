//! The example backend against the storage contract, as any backend's own
//! tests would run it.

use zeo_example_backend::CurrentOnly;
use zeo_storage::testing::Fixture;

fn current_only() -> Fixture<CurrentOnly> {
    Fixture::new(CurrentOnly::new("contract")).history_free()
}

zeo_storage::contract_tests!(current_only_contract, current_only);
