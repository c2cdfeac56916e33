use super::*;

#[test]
fn reprs_match_zodb() {
    assert_eq!(oid_repr(0), "0x00");
    assert_eq!(oid_repr(1), "0x01");
    assert_eq!(oid_repr(0x12a), "0x012a");
    assert_eq!(oid_repr(0x03d0_a1c2_e4f5_a6b7), "0x03d0a1c2e4f5a6b7");
    assert_eq!(repr_to_u64("0x012a"), Some(0x12a));
    assert_eq!(repr_to_u64("0x"), None);
    assert_eq!(repr_to_u64("12"), None);
    assert_eq!(repr_to_u64("0x1ffffffffffffffff"), None);
}

#[test]
fn layouts_round_trip() {
    for layout in [Layout::Bushy, Layout::Lawn] {
        for oid in [0u64, 1, 0xff, 0x1234_5678_9abc_def0] {
            let rel = layout.oid_path(Oid(oid));
            assert_eq!(
                layout.path_to_oid(&rel),
                Some(Oid(oid)),
                "{layout:?} {rel:?}"
            );
        }
    }
    assert_eq!(
        Layout::Bushy.oid_path(Oid(0x12a)),
        Path::new("0x00/0x00/0x00/0x00/0x00/0x00/0x01/0x2a")
    );
    assert_eq!(Layout::Bushy.path_to_oid(Path::new("0x00/0x01")), None);
    assert_eq!(Layout::Lawn.path_to_oid(Path::new("tmp")), None);
}

#[test]
fn auto_layout_follows_zodb() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("b");
    assert_eq!(auto_layout_select(&d).unwrap(), Ok(Layout::Bushy));
    fs::create_dir(&d).unwrap();
    fs::write(d.join(".hidden"), b"").unwrap();
    assert_eq!(auto_layout_select(&d).unwrap(), Ok(Layout::Bushy));
    fs::create_dir(d.join("0x01")).unwrap();
    assert_eq!(auto_layout_select(&d).unwrap(), Ok(Layout::Lawn));
    fs::write(d.join(LAYOUT_MARKER), b"bushy\n").unwrap();
    assert_eq!(auto_layout_select(&d).unwrap(), Ok(Layout::Bushy));
    fs::write(d.join(LAYOUT_MARKER), b"odd").unwrap();
    assert_eq!(auto_layout_select(&d).unwrap(), Err("odd".to_string()));
}

#[test]
fn mismatching_marker_is_refused_with_zodbs_message() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("b");
    BlobDir::open(&d, false).unwrap();
    assert_eq!(fs::read_to_string(d.join(LAYOUT_MARKER)).unwrap(), "bushy");
    let err = BlobDir::open_with_layout(&d, Some(Layout::Lawn), false).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("Directory layout `lawn` selected for blob directory")
            && msg.contains("but marker found for layout `bushy`"),
        "{msg}"
    );
}

#[test]
fn commit_list_copy_and_stale_cleanup() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("b");
    let dir = BlobDir::open(&d, false).unwrap();
    let tmp = dir.write_temporary(&mut &b"hello"[..]).unwrap();
    assert!(tmp.starts_with(dir.tmp_dir()));
    let path = dir.commit_file(&tmp, Oid(7), Tid(0x33)).unwrap();
    assert!(!tmp.exists());
    assert_eq!(fs::read(&path).unwrap(), b"hello");
    assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o222, 0);
    BlobDir::make_durable(std::slice::from_ref(&path)).unwrap();
    assert_eq!(dir.split_blob_path(&path), Some((Oid(7), Tid(0x33))));
    let copy = dir.copy_revision(Oid(7), Tid(0x33), Tid(0x34)).unwrap();
    assert_eq!(fs::read(&copy).unwrap(), b"hello");
    // Twice in one transaction (duplicate records): the data survives.
    dir.copy_revision(Oid(7), Tid(0x33), Tid(0x34)).unwrap();
    assert_eq!(fs::read(&copy).unwrap(), b"hello");
    assert_eq!(fs::read(&path).unwrap(), b"hello");
    assert!(dir
        .copy_revision(Oid(7), Tid(0x99), Tid(0x35))
        .unwrap_err()
        .is_pos_key());
    let listed: Vec<_> = dir
        .list_blobs()
        .unwrap()
        .into_iter()
        .map(|(o, t, _)| (o, t))
        .collect();
    assert_eq!(listed, vec![(Oid(7), Tid(0x33)), (Oid(7), Tid(0x34))]);
    assert!(dir.existing_blob(Oid(8), Tid(1)).unwrap_err().is_pos_key());

    let (_, stale) = dir.new_temporary().unwrap();
    drop(dir);
    let dir = BlobDir::open(&d, false).unwrap();
    assert!(!stale.exists(), "a stale temporary survived the open");
    assert!(dir.existing_blob(Oid(7), Tid(0x33)).is_ok());

    let dir = BlobDir::open(&d, true).unwrap();
    assert!(dir.list_blobs().unwrap().is_empty(), "create did not wipe");
}

#[test]
fn the_placement_journal_names_only_blob_files_of_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = BlobDir::open(dir.path().join("blobs"), false).unwrap();
    let files = TxnFiles::journaled(&blobs);
    files
        .will_place(&blobs.blob_path(Oid(0x2a), Tid(0x0301)))
        .unwrap();
    let mut journal = std::fs::OpenOptions::new()
        .append(true)
        .open(blobs.path().join(PLACED_JOURNAL))
        .unwrap();
    let long = "0x00/".repeat(200);
    for hostile in [
        "../../etc/passwd\n",
        "0x00/0x00/../../../x.blob\n",
        "/etc/0x01.blob\n",
        long.as_str(),
        "\n0x00/0x00/0x00/0x00/0x00/0x00/0x00/0x07/0x05.blob\n",
        "0x00/0x00/0x00/0x00/0x00/0x00/0x00/0x08/0x09.blob",
    ] {
        journal.write_all(hostile.as_bytes()).unwrap();
    }
    drop(journal);
    assert_eq!(
        journaled_files(&blobs, 100).unwrap(),
        [(Oid(7), Tid(5)), (Oid(0x2a), Tid(0x0301))]
    );
    // Lines past the bound are not read.
    assert_eq!(
        journaled_files(&blobs, 1).unwrap(),
        [(Oid(0x2a), Tid(0x0301))]
    );
}
