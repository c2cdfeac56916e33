//! The exported contract suite (`zeo_storage::testing`), both tiers, on
//! the storages of this crate.

use zeo_storage::testing::{
    file_storage, file_storage_with_blobs, mapping_storage, mapping_storage_with_blobs,
    mapping_storage_with_test_scanner,
};

zeo_storage::contract_tests!(mapping, mapping_storage);
zeo_storage::filestorage_exact_tests!(mapping_exact, mapping_storage);
zeo_storage::filestorage_exact_tests!(
    mapping_test_scanner_exact,
    mapping_storage_with_test_scanner
);
zeo_storage::contract_tests!(filestorage, file_storage);
// The whole contract again with the blob capability, which its blob check
// then exercises.
zeo_storage::contract_tests!(mapping_blobs, mapping_storage_with_blobs);
zeo_storage::contract_tests!(filestorage_blobs, file_storage_with_blobs);
zeo_storage::filestorage_exact_tests!(filestorage_exact, file_storage);

/// The same suite through the one-call runners.
#[test]
fn run_all_checks_in_one_call() {
    zeo_storage::testing::run_contract(&mapping_storage);
    zeo_storage::testing::run_filestorage_exact(&mapping_storage);
}
