//! The decoder's limits: depth keeps every recursion over a decoded value
//! within a small stack, working memory can be capped, and the reference
//! scanner reports a limit instead of returning part of a record's
//! references.

use zeo_pickle::{
    decode, encode, references, references_into, Decoder, Error, Protocol, Value, DEFAULT_MAX_DEPTH,
};

/// `depth` nested lists, innermost empty.
fn nested_lists(depth: usize) -> Vec<u8> {
    let mut p = vec![b']'; depth];
    p.extend(std::iter::repeat_n(b'a', depth - 1));
    p.push(b'.');
    p
}

fn limit_text(err: Error) -> String {
    match &err {
        Error::LimitExceeded { .. } => err.to_string(),
        other => panic!("expected a limit error, got {other:?}"),
    }
}

#[test]
fn the_deepest_accepted_value_drops_and_reencodes_on_a_small_stack() {
    // Dropping recurses per level; encoding keeps its own stack. 512 KiB
    // is a quarter of a runtime worker thread's stack, and enough for a
    // 1000-level drop even unoptimized.
    let outcome = std::thread::Builder::new()
        .stack_size(512 * 1024)
        .spawn(|| {
            let value = decode(&nested_lists(DEFAULT_MAX_DEPTH)).unwrap();
            let bytes = encode(&value, Protocol::V3).unwrap();
            drop(value);
            let again = decode(&bytes).unwrap();
            drop(again);
        })
        .unwrap()
        .join();
    assert!(outcome.is_ok());
    let text = limit_text(decode(&nested_lists(DEFAULT_MAX_DEPTH + 1)).unwrap_err());
    assert!(text.contains("nesting deeper than 1000"), "{text}");
}

#[test]
fn fifty_thousand_tuple1_is_refused_by_depth() {
    let mut p = b"\x80\x03N".to_vec();
    p.extend(std::iter::repeat_n(0x85, 50_000));
    p.push(b'.');
    let text = limit_text(decode(&p).unwrap_err());
    assert!(text.contains("nesting deeper than 1000"), "{text}");
    let text = limit_text(
        Decoder::new(&p)
            .with_max_depth(64)
            .next_pickle()
            .unwrap_err(),
    );
    assert!(text.contains("nesting deeper than 64"), "{text}");
}

#[test]
fn working_memory_can_be_capped() {
    // A million empty tuples: a node and a stack slot for each input byte.
    let mut p = b"(".to_vec();
    p.extend(std::iter::repeat_n(b')', 1_000_000));
    p.extend_from_slice(b"t.");
    let text = limit_text(
        Decoder::new(&p)
            .with_max_work(1 << 20)
            .next_pickle()
            .unwrap_err(),
    );
    assert!(text.contains("working memory over 1048576 bytes"), "{text}");
    // Uncapped, it decodes (within the default output budget).
    let Value::Tuple(items) = decode(&p).unwrap() else {
        panic!("not a tuple")
    };
    assert_eq!(items.len(), 1_000_000);
}

#[test]
fn the_output_budget_names_its_size() {
    // One string memoized and fetched a thousand times.
    let mut p = b"\x80\x03(B\x00\x00\x01\x00".to_vec();
    p.extend(std::iter::repeat_n(b'x', 1 << 16));
    p.extend_from_slice(b"q\x00");
    for _ in 0..1000 {
        p.extend_from_slice(b"h\x00");
    }
    p.extend_from_slice(b"t.");
    let text = limit_text(
        Decoder::new(&p)
            .with_max_output(1 << 20)
            .next_pickle()
            .unwrap_err(),
    );
    assert!(text.contains("decoded output over 1048576 bytes"), "{text}");
}

#[test]
fn the_reference_scanner_reports_limits_instead_of_skipping() {
    let class = b"\x80\x03cmod\nK\nq\x00.".to_vec();
    let pid = |oid: u64| [&b"C\x08"[..], &oid.to_be_bytes(), b"Q"].concat();
    // One reference, then a decimal integer past the digit limit, then
    // another reference.
    let mut state = b"\x80\x03](".to_vec();
    state.extend(pid(7));
    state.push(b'L');
    state.extend(std::iter::repeat_n(b'9', 10_000));
    state.extend_from_slice(b"L\n");
    state.extend(pid(8));
    state.extend_from_slice(b"e.");
    let record = [class.as_slice(), &state].concat();
    let text = limit_text(references(&record).unwrap_err());
    assert!(text.contains("decimal digits"), "{text}");
    let mut oids = Vec::new();
    assert!(references_into(&record, &mut oids).is_err());
    // A record cut short is an error too, never the references so far.
    let cut = &record[..record.len() - 3];
    assert!(references(cut).is_err());
}
