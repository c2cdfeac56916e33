//! Random operation sequences applied to two storages, which must agree on
//! every outcome: the same errors, the same data for every object at every
//! transaction, the same histories, undo logs, iteration and sizes.
//!
//! Transactions use explicit tids one second apart, so a pack time can fall
//! exactly between two transactions; outcomes are still compared by
//! transaction index, never by raw tid, so storages choosing their own tids
//! would compare as well.

use proptest::prelude::*;
use zeo_storage::testing::model::{check_pair, ops};
use zeo_storage::testing::{file_storage, mapping_storage};

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn mapping_agrees_with_itself(ops in ops()) {
        check_pair(mapping_storage, mapping_storage, &ops)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn filestorage_agrees_with_mapping(ops in ops()) {
        check_pair(mapping_storage, file_storage, &ops)?;
    }
}
