// Feeds arbitrary records to native conflict resolution: it must return,
// not panic, and a merged record must read back as a class pickle and a
// state pickle.
//
// Input: two little-endian u16 lengths, then the old record, the committed
// record and (the rest) the new record.
//
// Shared (through `include!`) by the libFuzzer target
// `fuzz_targets/conflict_resolve.rs` and the stable corpus replay test, so
// both run exactly this.

/// Splits one input into the three records.
fn records(data: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let (lens, rest) = data.split_first_chunk::<4>()?;
    let old_len = usize::from(u16::from_le_bytes([lens[0], lens[1]]));
    let committed_len = usize::from(u16::from_le_bytes([lens[2], lens[3]]));
    let (old, rest) = rest.split_at_checked(old_len)?;
    let (committed, new) = rest.split_at_checked(committed_len)?;
    Some((old, committed, new))
}

/// Runs one input; panics on a defect.
pub fn run(data: &[u8]) {
    let Some((old, committed, new)) = records(data) else {
        return;
    };
    if let Ok(merged) = zeo_conflict::resolve(old, committed, new) {
        let mut d = zeo_pickle::Decoder::new(&merged);
        d.next_pickle().expect("merged class pickle");
        d.next_pickle().expect("merged state pickle");
        assert!(d.is_at_end(), "bytes after the merged state");
    }
}
