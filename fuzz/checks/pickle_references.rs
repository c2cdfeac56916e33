// Feeds arbitrary bytes to the ZODB record scanners: they must return,
// not panic.
//
// Shared (through `include!`) by the libFuzzer target
// `fuzz_targets/pickle_references.rs` and the stable corpus replay test, so
// both run exactly this.



/// Runs one input; panics on a defect.
pub fn run(data: &[u8]) {
    let _ = zeo_pickle::references(data);
    let _ = zeo_pickle::class_of(data);
}
