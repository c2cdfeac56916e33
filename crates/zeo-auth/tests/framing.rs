//! Properties of the chained MAC framer.

use proptest::prelude::*;
use zeo_auth::{Error, MacState, SessionKey, MAC_BIT, MAC_LEN};

fn key(n: u8) -> SessionKey {
    let h_up = zeo_auth::password_hash("u", "r", &n.to_string());
    SessionKey::derive(&h_up, "nonce").unwrap()
}

fn payloads() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 1..200), 1..8)
}

proptest! {
    #[test]
    fn seal_then_open_round_trips(msgs in payloads()) {
        let mut send = MacState::new(&key(1));
        let mut recv = MacState::new(&key(1));
        for m in &msgs {
            let frame = send.seal(m).unwrap();
            let word = u32::from_be_bytes(frame[..4].try_into().unwrap());
            prop_assert_eq!(word, m.len() as u32 | MAC_BIT);
            prop_assert_eq!(frame.len(), 4 + MAC_LEN + m.len());
            prop_assert_eq!(recv.open(&frame).unwrap(), &m[..]);
        }
    }

    #[test]
    fn any_flipped_bit_fails(msgs in payloads(), which in any::<prop::sample::Index>(), bit in 0u8..8) {
        let mut send = MacState::new(&key(1));
        let frames: Vec<Vec<u8>> = msgs.iter().map(|m| send.seal(m).unwrap()).collect();
        let target = which.index(frames.len());
        let mut recv = MacState::new(&key(1));
        for (i, frame) in frames.iter().enumerate() {
            if i == target {
                let mut bad = frame.clone();
                let pos = (bit as usize * 7919 + i) % bad.len();
                bad[pos] ^= 1 << bit;
                prop_assert!(recv.open(&bad).is_err());
                // Everything after a failure fails.
                prop_assert!(matches!(recv.open(frame), Err(Error::Poisoned)));
                break;
            }
            prop_assert!(recv.open(frame).is_ok());
        }
    }

    #[test]
    fn replayed_frames_fail(msgs in payloads(), which in any::<prop::sample::Index>()) {
        let mut send = MacState::new(&key(1));
        let frames: Vec<Vec<u8>> = msgs.iter().map(|m| send.seal(m).unwrap()).collect();
        let replay = which.index(frames.len());
        let mut recv = MacState::new(&key(1));
        for frame in &frames {
            recv.open(frame).unwrap();
        }
        prop_assert!(matches!(recv.open(&frames[replay]), Err(Error::MacFailed)));
    }

    #[test]
    fn reordered_or_dropped_frames_fail(msgs in payloads(), a in any::<prop::sample::Index>(), b in any::<prop::sample::Index>()) {
        prop_assume!(msgs.len() >= 2);
        let mut send = MacState::new(&key(1));
        let frames: Vec<Vec<u8>> = msgs.iter().map(|m| send.seal(m).unwrap()).collect();
        let (i, j) = (a.index(frames.len()), b.index(frames.len()));
        prop_assume!(i != j);
        let mut order: Vec<usize> = (0..frames.len()).collect();
        order.swap(i, j);
        let mut recv = MacState::new(&key(1));
        let mut failed = false;
        for k in order {
            if recv.open(&frames[k]).is_err() {
                failed = true;
                break;
            }
        }
        prop_assert!(failed);

        // Dropping a frame that is not the last breaks the chain too.
        let drop = i.min(j);
        let mut recv = MacState::new(&key(1));
        let mut failed = false;
        for (k, frame) in frames.iter().enumerate() {
            if k == drop { continue; }
            if recv.open(frame).is_err() { failed = true; break; }
        }
        prop_assert!(failed);
    }

    #[test]
    fn another_key_fails(m in prop::collection::vec(any::<u8>(), 1..100)) {
        let frame = MacState::new(&key(1)).seal(&m).unwrap();
        prop_assert!(matches!(MacState::new(&key(2)).open(&frame), Err(Error::MacFailed)));
    }
}

#[test]
fn plain_frames_and_malformed_frames_are_refused() {
    let mut recv = MacState::new(&key(1));
    assert!(matches!(recv.open(b"\0\0\0\x02Z5"), Err(Error::MissingMac)));
    let mut recv = MacState::new(&key(1));
    assert!(matches!(recv.open(b"\x80\0"), Err(Error::BadFrame(_))));
    let frame = MacState::new(&key(1)).seal(b"abc").unwrap();
    let mut recv = MacState::new(&key(1));
    assert!(matches!(
        recv.open(&frame[..frame.len() - 1]),
        Err(Error::BadFrame(_))
    ));
    assert!(recv.has_failed());
    assert!(matches!(recv.open(&frame), Err(Error::Poisoned)));
    let mut empty = vec![0x80, 0, 0, 0];
    empty.extend_from_slice(&[0; MAC_LEN]);
    assert!(MacState::new(&key(1)).open(&empty).is_err());
}

#[test]
fn seal_header_agrees_with_seal() {
    let mut a = MacState::new(&key(3));
    let mut b = MacState::new(&key(3));
    for m in [&b"one"[..], b"two", b"three"] {
        let frame = a.seal(m).unwrap();
        let header = b.seal_header(m).unwrap();
        assert_eq!(&frame[..24], &header[..]);
    }
}
