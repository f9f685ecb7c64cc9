//! The spool's tests: storing, recovering, reclaiming, damage, parts.

use super::*;

fn envelope() -> Envelope {
    Envelope {
        id: SpoolId::generate(),
        received_at: 1,
        sender: None,
        params: MailParams::default(),
        recipients: vec![Recipient {
            address: crate::proto::address::parse_mailbox("a@b.c").unwrap(),
            params: RcptParams::default(),
        }],
        client_ip: "127.0.0.1".parse().unwrap(),
        helo: "client".into(),
        auth_user: None,
        tls_optional: false,
    }
}

const DEFAULT_SEGMENT_SIZE: u64 = 64 << 20;

fn message(n: usize) -> Vec<u8> {
    format!("Subject: {n}\r\n\r\n{}\r\n", "x".repeat(n)).into_bytes()
}

/// The message in two parts, as a session stores it.
fn parts(n: usize) -> Content {
    let m = message(n);
    Content::from(m[5..].to_vec()).after(m[..5].to_vec())
}

#[tokio::test]
async fn store_load_state_remove_and_recover() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, lock) = Spool::open(dir.path(), DEFAULT_SEGMENT_SIZE).unwrap();
    let again = Spool::open(dir.path(), DEFAULT_SEGMENT_SIZE);
    assert_eq!(
        again.err().map(|e| e.kind()),
        Some(io::ErrorKind::WouldBlock),
        "a second writer got the lock"
    );
    let (a, b) = (envelope(), envelope());
    spool.store(&a, &parts(10), None, None).await.unwrap();
    spool.store(&b, &parts(20), None, None).await.unwrap();
    assert_eq!(spool.list(), vec![a.id.clone(), b.id.clone()]);
    let (loaded, mut state) = spool.load_envelope(&a.id).unwrap();
    assert_eq!(loaded.helo, "client");
    assert_eq!(state.pending().count(), 1);
    assert_eq!(
        spool.load_content(&b.id).unwrap().to_vec().unwrap(),
        message(20)
    );
    state.recipients[0] = RecipientStatus::Deferred(StoredReply::new(
        &crate::proto::Reply::dynamic(451, 0, 0, "later"),
        Some("mx.test"),
    ));
    state.attempts = 1;
    spool
        .save_state(&a.id, &state, Durability::Now)
        .await
        .unwrap();
    assert_eq!(spool.load_envelope(&a.id).unwrap().1.attempts, 1);
    spool.remove(&b.id, Durability::Now).await.unwrap();
    assert_eq!(spool.list(), vec![a.id.clone()]);
    drop((spool, lock));
    // What a restart finds: a, with its last state; b is gone.
    let reader = Spool::attach(dir.path()).unwrap();
    assert_eq!(reader.list(), vec![a.id.clone()]);
    let (_, state) = reader.load_envelope(&a.id).unwrap();
    assert_eq!(state.attempts, 1);
    assert_eq!(
        reader.load_content(&a.id).unwrap().to_vec().unwrap(),
        message(10)
    );
}

#[tokio::test]
async fn a_torn_tail_is_cut_off_and_writing_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, lock) = Spool::open(dir.path(), DEFAULT_SEGMENT_SIZE).unwrap();
    let envs: Vec<Envelope> = (0..3).map(|_| envelope()).collect();
    for (i, e) in envs.iter().enumerate() {
        spool.store(e, &parts(100 + i), None, None).await.unwrap();
    }
    drop((spool, lock));
    // A crash in the middle of the third record's content, then garbage.
    let seg = index::segment_path(&dir.path().join("log"), 1);
    let len = fs::metadata(&seg).unwrap().len();
    let f = fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len - 20).unwrap();
    drop(f);
    let (spool, lock) = Spool::open(dir.path(), DEFAULT_SEGMENT_SIZE).unwrap();
    assert_eq!(spool.list(), vec![envs[0].id.clone(), envs[1].id.clone()]);
    let d = envelope();
    spool.store(&d, &parts(7), None, None).await.unwrap();
    drop((spool, lock));
    let reader = Spool::attach(dir.path()).unwrap();
    assert_eq!(
        reader.list(),
        vec![envs[0].id.clone(), envs[1].id.clone(), d.id.clone()]
    );
    assert_eq!(
        reader.load_content(&d.id).unwrap().to_vec().unwrap(),
        message(7)
    );
}

/// `count` messages of `size` stored and removed.
async fn come_and_go(spool: &Spool, count: usize, size: usize, removal: Durability) {
    for _ in 0..count {
        let e = envelope();
        spool.store(&e, &parts(size), None, None).await.unwrap();
        spool.remove(&e.id, removal).await.unwrap();
    }
}

/// The segments, once at most `n` are left (or after 5 s): the writer reclaims after it
/// answers.
async fn segments_down_to(dir: &Path, n: usize) -> Vec<u64> {
    let mut left = segments(dir);
    for _ in 0..100 {
        if left.len() <= n {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        left = segments(dir);
    }
    left
}

fn segments(dir: &Path) -> Vec<u64> {
    index::segment_numbers(&dir.join("log")).unwrap()
}

/// `text` received through an `Incoming`, in the writes a client would make.
async fn receive(spool: &Spool, text: &[u8]) -> (Incoming, Content) {
    let mut incoming = spool.incoming(0);
    for chunk in text.chunks(60_000) {
        incoming.block().extend_from_slice(chunk);
        incoming.flush().await;
    }
    let content = incoming.finish().await.unwrap();
    (incoming, content)
}

#[tokio::test]
async fn a_big_message_streams_in_parts_and_only_a_committed_one_exists() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, lock) = Spool::open(dir.path(), 1 << 20).unwrap();
    let text: Vec<u8> = (0..3_000_000u32).map(|i| b'a' + (i % 23) as u8).collect();
    // One committed, with our header before it and a range cut out of it.
    let (incoming, content) = receive(&spool, &text).await;
    assert!(content.on_disk());
    let stored = content
        .without(&[10..20, 1_000_000..1_500_000])
        .after(b"Received: x\r\n".to_vec());
    let mut e = envelope();
    e.id = incoming.id().clone();
    spool
        .store(&e, &stored, None, Some(&incoming))
        .await
        .unwrap();
    drop(incoming);
    let mut want = b"Received: x\r\n".to_vec();
    want.extend_from_slice(&text[..10]);
    want.extend_from_slice(&text[20..1_000_000]);
    want.extend_from_slice(&text[1_500_000..]);
    // One abandoned: its parts are dead space.
    let (abandoned, _) = receive(&spool, &text).await;
    drop(abandoned);
    assert_eq!(spool.load_content(&e.id).unwrap().to_vec().unwrap(), want);
    spool.sync().await.unwrap();
    drop((spool, lock));
    // A restart finds the one message, read from its parts.
    let (spool, lock) = Spool::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(spool.list(), vec![e.id.clone()]);
    let content = spool.load_content(&e.id).unwrap();
    assert_eq!(content.len(), want.len() as u64);
    assert_eq!(content.to_vec().unwrap(), want);
    assert_eq!(
        content.read_at(14 + 999_985, 10).unwrap(),
        &want[999_999..1_000_009]
    );
    // Once done, every segment it used goes (the abandoned one's too).
    spool.remove(&e.id, Durability::Now).await.unwrap();
    come_and_go(&spool, 3, 10, Durability::Now).await;
    let left = segments_down_to(dir.path(), 1).await;
    assert!(left.len() <= 1, "segments left: {left:?}");
    drop((spool, lock));
}

#[tokio::test]
async fn a_spanned_message_is_copied_forward_in_parts() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _lock) = Spool::open(dir.path(), 1 << 20).unwrap();
    let text: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 7) as u8).collect();
    let (incoming, content) = receive(&spool, &text).await;
    let stayer = {
        let mut e = envelope();
        e.id = incoming.id().clone();
        e
    };
    let mut held = QueueState::new(&stayer);
    held.hold();
    spool
        .store(&stayer, &content, Some(&held), Some(&incoming))
        .await
        .unwrap();
    drop(incoming);
    let first = segments(dir.path())[0];
    // Others come and go: the stayer's segment ends up mostly dead and is copied.
    come_and_go(&spool, 600, 4000, Durability::Soon).await;
    let mut moved = false;
    for _ in 0..100 {
        let copied = {
            let index = spool.index.lock().unwrap();
            let e = &index.entries[&stayer.id];
            e.meta.seg > first && e.parts().all(|p| p.seg > first)
        };
        if copied {
            moved = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(moved, "the stayer was not copied forward");
    assert_eq!(
        spool.load_content(&stayer.id).unwrap().to_vec().unwrap(),
        text
    );
    spool.sync().await.unwrap();
    drop((spool, _lock));
    let reader = Spool::attach(dir.path()).unwrap();
    assert_eq!(reader.list(), vec![stayer.id.clone()]);
    assert!(reader.load_envelope(&stayer.id).unwrap().1.held);
    assert_eq!(
        reader.load_content(&stayer.id).unwrap().to_vec().unwrap(),
        text
    );
}

#[tokio::test]
async fn done_segments_are_removed_and_long_stayers_copied_forward() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _lock) = Spool::open(dir.path(), 64 << 10).unwrap();
    // A small message stays (held) while 200 others of 4 KiB come and go; its segment
    // is mostly dead and gets copied forward. A large one stays too: its segment is
    // mostly live and stays, and must not keep the others from going.
    let stayer = envelope();
    let mut held = QueueState::new(&stayer);
    held.hold();
    spool
        .store(&stayer, &parts(1000), Some(&held), None)
        .await
        .unwrap();
    come_and_go(&spool, 20, 4000, Durability::Soon).await;
    let big = envelope();
    spool.store(&big, &parts(60_000), None, None).await.unwrap();
    come_and_go(&spool, 200, 4000, Durability::Soon).await;
    // 800 KiB went through 64 KiB segments; only the last ones remain (the writer
    // reclaims after answering, so give it a moment).
    let left = segments_down_to(dir.path(), 3).await;
    assert!(left.len() <= 3, "segments left: {left:?}");
    assert!(
        !left.contains(&1),
        "the small stayer's first segment was kept"
    );
    let (_, state) = spool.load_envelope(&stayer.id).unwrap();
    assert!(state.held);
    assert_eq!(
        spool.load_content(&stayer.id).unwrap().to_vec().unwrap(),
        message(1000)
    );
    // A restart (after a clean stop) finds the two, and none of the 220 that left.
    spool.sync().await.unwrap();
    drop((spool, _lock));
    let reader = Spool::attach(dir.path()).unwrap();
    assert_eq!(reader.list(), vec![stayer.id.clone(), big.id.clone()]);
    assert!(reader.load_envelope(&stayer.id).unwrap().1.held);
    assert_eq!(
        reader.load_content(&big.id).unwrap().to_vec().unwrap(),
        message(60_000)
    );
}

/// A stopped spool of 40 messages of 4 KiB in 64 KiB segments.
async fn forty_in_segments() -> (tempfile::TempDir, Vec<Envelope>) {
    let dir = tempfile::tempdir().unwrap();
    let (spool, lock) = Spool::open(dir.path(), 64 << 10).unwrap();
    let envs: Vec<Envelope> = (0..40).map(|_| envelope()).collect();
    for e in &envs {
        spool.store(e, &parts(4000), None, None).await.unwrap();
    }
    spool.sync().await.unwrap();
    drop((spool, lock));
    (dir, envs)
}

#[tokio::test]
async fn a_damaged_head_in_an_older_segment_refuses_to_open_naming_it() {
    let (dir, envs) = forty_in_segments().await;
    let seqs = segments(dir.path());
    assert!(seqs.len() >= 2, "{seqs:?}");
    // A bad byte in the first record of the first segment (its id); another spelling of
    // a number (which must not be read as a second copy of that segment).
    let first = index::segment_path(&dir.path().join("log"), seqs[0]);
    let mut bytes = fs::read(&first).unwrap();
    bytes[record::HEAD + 2] ^= 0xFF;
    fs::write(&first, &bytes).unwrap();
    fs::write(dir.path().join("log/00000000000000001.seg"), b"junk").unwrap();
    let e = Spool::open(dir.path(), 64 << 10).err().expect("refused");
    let text = e.to_string();
    assert!(
        text.contains(&format!("{:016X}.seg, offset 0", seqs[0])),
        "{text}"
    );
    assert_eq!(fs::read(&first).unwrap(), bytes, "the segment was changed");
    // The operator's way out: the segment moved aside, the rest is there.
    fs::rename(&first, dir.path().join("damaged.seg")).unwrap();
    let (spool, _lock) = Spool::open(dir.path(), 64 << 10).unwrap();
    let listed = spool.list();
    assert!(
        listed.len() < 40 && listed.contains(&envs[39].id),
        "{}",
        listed.len()
    );
}

/// A stopped spool of 20 small messages in one segment, and where each record starts.
async fn twenty_in_one_segment() -> (tempfile::TempDir, Vec<Envelope>, PathBuf, Vec<usize>) {
    let dir = tempfile::tempdir().unwrap();
    let (spool, lock) = Spool::open(dir.path(), DEFAULT_SEGMENT_SIZE).unwrap();
    let envs: Vec<Envelope> = (0..20).map(|_| envelope()).collect();
    for e in &envs {
        spool.store(e, &parts(300), None, None).await.unwrap();
    }
    drop((spool, lock));
    let seg = index::segment_path(&dir.path().join("log"), 1);
    let bytes = fs::read(&seg).unwrap();
    let starts: Vec<usize> = memchr::memmem::find_iter(&bytes, record::MAGIC).collect();
    assert_eq!(starts.len(), 20);
    (dir, envs, seg, starts)
}

#[tokio::test]
async fn damage_in_the_newest_segment_is_never_cut_off() {
    // A damaged head (a flipped kind byte, one bit of a length), records after it: the
    // spool is not opened, and nothing is cut.
    for at in [4, 12] {
        let (dir, _, seg, starts) = twenty_in_one_segment().await;
        let mut bytes = fs::read(&seg).unwrap();
        bytes[starts[5] + at] ^= 0x40;
        fs::write(&seg, &bytes).unwrap();
        let e = Spool::open(dir.path(), DEFAULT_SEGMENT_SIZE)
            .err()
            .expect("refused");
        let text = e.to_string();
        assert!(
            text.contains(&format!("offset {}", starts[5])) && text.contains("damaged"),
            "{text}"
        );
        assert_eq!(
            fs::read(&seg).unwrap(),
            bytes,
            "damage at {at}: the segment changed"
        );
    }
    // Damaged content with a record right after it: that one record is skipped, the 19
    // others kept, and the segment is never removed.
    let (dir, envs, seg, starts) = twenty_in_one_segment().await;
    let mut bytes = fs::read(&seg).unwrap();
    bytes[starts[6] - 10] ^= 1;
    fs::write(&seg, &bytes).unwrap();
    let (spool, _lock) = Spool::open(dir.path(), DEFAULT_SEGMENT_SIZE).unwrap();
    let listed = spool.list();
    assert_eq!(listed.len(), 19);
    assert!(!listed.contains(&envs[5].id) && listed.contains(&envs[19].id));
    assert_eq!(
        spool.load_content(&envs[19].id).unwrap().to_vec().unwrap(),
        message(300)
    );
    for e in &listed {
        spool.remove(e, Durability::Now).await.unwrap();
    }
    come_and_go(&spool, 3, 10, Durability::Now).await;
    spool.sync().await.unwrap();
    assert_eq!(
        fs::read(&seg).unwrap(),
        bytes,
        "the damaged segment changed"
    );
}

#[tokio::test]
async fn a_record_of_a_newer_kind_refuses_to_open_and_cuts_nothing() {
    let (dir, envs, seg, starts) = twenty_in_one_segment().await;
    // The sixth record, well formed, of a kind this version does not know.
    let mut bytes = fs::read(&seg).unwrap();
    let at = starts[5];
    bytes[at + 4] = 9;
    let id_meta = record::HEAD + bytes[at + 5] as usize + {
        let w = &bytes[at + 8..at + 12];
        u32::from_le_bytes(w.try_into().unwrap()) as usize
    };
    let mut crc = crc32fast::Hasher::new();
    crc.update(&bytes[at..at + 16]);
    crc.update(&bytes[at + record::HEAD..at + id_meta]);
    bytes[at + 16..at + 20].copy_from_slice(&crc.finalize().to_le_bytes());
    fs::write(&seg, &bytes).unwrap();
    let e = Spool::open(dir.path(), DEFAULT_SEGMENT_SIZE)
        .err()
        .expect("refused");
    let text = e.to_string();
    assert!(
        text.contains("0000000000000001.seg") && text.contains(&format!("offset {at}")),
        "{text}"
    );
    assert!(text.contains("kind 9"), "{text}");
    assert!(Spool::attach(dir.path()).is_err());
    assert_eq!(fs::read(&seg).unwrap(), bytes, "the segment was changed");
    // Back to a kind it knows (as if the newer version had run): all 20 are there.
    bytes[at + 4] = 1;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&bytes[at..at + 16]);
    crc.update(&bytes[at + record::HEAD..at + id_meta]);
    bytes[at + 16..at + 20].copy_from_slice(&crc.finalize().to_le_bytes());
    fs::write(&seg, &bytes).unwrap();
    let (spool, _lock) = Spool::open(dir.path(), DEFAULT_SEGMENT_SIZE).unwrap();
    assert_eq!(spool.list().len(), envs.len());
}

#[tokio::test]
async fn damaged_content_is_an_error_not_a_message() {
    let (dir, envs) = forty_in_segments().await;
    // One bit of the first message's body, in the oldest segment (whose contents are
    // not read at start).
    let first = index::segment_path(&dir.path().join("log"), segments(dir.path())[0]);
    let mut bytes = fs::read(&first).unwrap();
    let body = bytes
        .windows(64)
        .position(|w| w.iter().all(|&b| b == b'x'))
        .unwrap();
    bytes[body + 10] ^= 1;
    fs::write(&first, &bytes).unwrap();
    let (spool, _lock) = Spool::open(dir.path(), 64 << 10).unwrap();
    let e = spool.load_content(&envs[0].id).err().unwrap();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    assert_eq!(
        spool.load_content(&envs[1].id).unwrap().to_vec().unwrap(),
        message(4000)
    );
}

#[tokio::test]
async fn a_spool_of_the_earlier_format_is_imported() {
    let dir = tempfile::tempdir().unwrap();
    let queue = dir.path().join("queue");
    fs::create_dir_all(&queue).unwrap();
    fs::create_dir_all(dir.path().join("tmp")).unwrap();
    let (a, b) = (envelope(), envelope());
    for e in [&a, &b] {
        let mut file = serde_json::to_vec(e).unwrap();
        file.push(b'\n');
        file.extend_from_slice(&message(5));
        fs::write(queue.join(format!("{}.msg", e.id)), file).unwrap();
    }
    let mut state = QueueState::new(&b);
    state.attempts = 4;
    fs::write(
        queue.join(format!("{}.state", b.id)),
        serde_json::to_vec(&state).unwrap(),
    )
    .unwrap();
    let (spool, _lock) = Spool::open(dir.path(), DEFAULT_SEGMENT_SIZE).unwrap();
    assert_eq!(spool.list().len(), 2);
    assert_eq!(spool.load_envelope(&b.id).unwrap().1.attempts, 4);
    assert_eq!(spool.load_envelope(&a.id).unwrap().1.attempts, 0);
    assert_eq!(
        spool.load_content(&a.id).unwrap().to_vec().unwrap(),
        message(5)
    );
    assert!(!queue.exists() && !dir.path().join("tmp").exists());
    assert!(!dir.path().join("queue.imported").exists());
}

#[test]
fn ids_are_unique_and_safe() {
    let a = SpoolId::generate();
    let b = SpoolId::generate();
    assert_ne!(a, b);
    assert!(SpoolId::parse("../etc").is_none());
    assert_eq!(SpoolId::parse(a.as_str()), Some(a));
}
