//! Round trips: sizes around chunk boundaries, many recipients, detached
//! stanzas, metadata, range reads, and a property test over sizes and chunk
//! sizes.

mod common;

use std::io::{Cursor, Read};

use coffer_format::header::DEFAULT_CHUNK_SIZE;
use coffer_format::recipient::add_recipient;
use coffer_format::{
    EncryptOptions, Error, Header, Metadata, RangeReader, Stanzas, decrypt, prepare,
};
use common::{Party, data, layout, open, seal, seal_with};
use proptest::prelude::*;

#[test]
fn sizes_around_chunk_boundaries_round_trip() {
    let alice = Party::new();
    let chunk = DEFAULT_CHUNK_SIZE as usize;
    for (i, len) in [
        0,
        1,
        chunk - 1,
        chunk,
        chunk + 1,
        2 * chunk,
        5 * 1024 * 1024 + 7,
    ]
    .into_iter()
    .enumerate()
    {
        let plain = data(len, i as u64);
        let file = seal(&alice.id, &[alice.public()], &plain, DEFAULT_CHUNK_SIZE);
        let mut out = Vec::new();
        let verified = decrypt(&alice.id, &file[..], &mut out).unwrap();
        assert_eq!(out, plain, "len {len}");
        assert_eq!(verified.plaintext_len, len as u64);
        assert!(verified.sender.is(&alice.public()));
        // Chunk count is ceil(len / chunk), with one empty chunk for len 0.
        let expected_chunks = len.div_ceil(chunk).max(1);
        assert_eq!(
            layout(&file, DEFAULT_CHUNK_SIZE).chunks.len(),
            expected_chunks
        );
    }
}

#[test]
fn several_threads_write_and_read_the_same_format() {
    let alice = Party::new();
    let chunk = 4096u32;
    // Around the streaming writer's 2 MiB batch (512 chunks of 4 KiB).
    for len in [
        0usize,
        1,
        4096,
        2 << 20,
        (2 << 20) + 1,
        (2 << 20) - 1,
        3 * (2 << 20) + 4097,
    ] {
        let plain = data(len, len as u64);
        for threads in [1, 2, 3] {
            let mut options =
                EncryptOptions::new(std::slice::from_ref(alice.id.public()), &alice.id);
            options.chunk_size = chunk;
            options.threads = threads;
            let mut w = prepare(options)
                .unwrap()
                .writer(Vec::new(), Stanzas::Embedded)
                .unwrap();
            for piece in plain.chunks(100_003) {
                std::io::Write::write_all(&mut w, piece).unwrap();
            }
            let file = w.finish().unwrap().0;
            for readers in [1, 2] {
                assert_eq!(
                    common::open_with_threads(&alice.id, &file, readers).unwrap(),
                    plain,
                    "len {len}, {threads} writers, {readers} readers"
                );
            }
        }
    }
}

#[test]
fn read_impl_matches_copy_to_with_small_reads() {
    let alice = Party::new();
    let plain = data(3 * 1000 + 17, 9);
    let file = seal(&alice.id, &[alice.public()], &plain, 1000);
    let mut input = &file[..];
    let opened = Header::read_from(&mut input)
        .unwrap()
        .open(&alice.id, &[])
        .unwrap();
    let mut reader = opened.decryptor(input).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 7];
    loop {
        let n = reader.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    assert_eq!(out, plain);
    assert_eq!(reader.verified().unwrap().plaintext_len, plain.len() as u64);
}

#[test]
fn every_recipient_decrypts_and_others_cannot() {
    let sender = Party::new();
    let recipients: Vec<Party> = (0..5).map(|_| Party::new()).collect();
    let publics: Vec<_> = recipients.iter().map(Party::public).collect();
    let plain = data(200_000, 3);
    let file = seal(&sender.id, &publics, &plain, DEFAULT_CHUNK_SIZE);
    for recipient in &recipients {
        assert_eq!(open(&recipient.id, &file).unwrap(), plain);
    }
    let (err, released) = open(&sender.id, &file).unwrap_err();
    assert!(matches!(err, Error::NoMatchingRecipient), "{err}");
    assert!(released.is_empty());
    assert!(matches!(
        open(&Party::new().id, &file),
        Err((Error::NoMatchingRecipient, _))
    ));
}

#[test]
fn metadata_travels_encrypted_and_comes_back() {
    let alice = Party::new();
    let metadata = Metadata {
        name: Some("patient-records-2026.csv".into()),
        size: Some(5),
        mtime: Some(1_790_000_000),
        content_type: Some("text/csv".into()),
        path: Some("exports/patient-records-2026.csv".into()),
        content_blake3: Some(blake3::hash(b"hello").to_hex().to_string()),
        request: Some("0123456789abcdef0123456789abcdef".into()),
        from: Some("Dr. Ana Ruiz".into()),
    };
    let file = seal_with(
        &alice.id,
        &[alice.public()],
        b"hello",
        4096,
        metadata.clone(),
        Stanzas::Embedded,
    );
    let needle = b"patient-records";
    assert!(
        !file.windows(needle.len()).any(|w| w == needle),
        "name leaked in clear"
    );
    let opened = Header::parse(&file)
        .unwrap()
        .0
        .open(&alice.id, &[])
        .unwrap();
    assert_eq!(opened.metadata(), &metadata);
}

#[test]
fn size_in_metadata_must_match_the_input() {
    let alice = Party::new();
    let mut options = EncryptOptions::new(std::slice::from_ref(alice.id.public()), &alice.id);
    options.metadata.size = Some(10);
    let mut w = prepare(options)
        .unwrap()
        .writer(Vec::new(), Stanzas::Embedded)
        .unwrap();
    std::io::Write::write_all(&mut w, b"only nine").unwrap();
    assert!(matches!(w.finish(), Err(Error::InputChanged(_))));
}

#[test]
fn detached_stanzas_and_recipients_added_later() {
    let alice = Party::new();
    let bob = Party::new();
    let plain = data(70_000, 4);
    let mut options = EncryptOptions::new(std::slice::from_ref(alice.id.public()), &alice.id);
    options.chunk_size = 4096;
    let prepared = prepare(options).unwrap();
    let stanzas = prepared.stanzas().to_vec();
    let mut w = prepared.writer(Vec::new(), Stanzas::Detached).unwrap();
    std::io::Write::write_all(&mut w, &plain).unwrap();
    let object = w.finish().unwrap().0;

    // The stored object alone opens for nobody.
    assert!(matches!(
        open(&alice.id, &object),
        Err((Error::NoMatchingRecipient, _))
    ));
    // With the detached stanza it opens.
    let (header, _) = Header::parse(&object).unwrap();
    assert!(header.stanzas().is_empty());
    let opened = header.clone().open(&alice.id, &stanzas).unwrap();
    // Alice shares with Bob without touching the object.
    let for_bob = add_recipient(opened.core(), opened.file_key(), bob.id.public()).unwrap();
    let (h, len) = Header::parse(&object).unwrap();
    let mut out = Vec::new();
    h.open(&bob.id, &[for_bob])
        .unwrap()
        .decryptor(&object[len..])
        .unwrap()
        .copy_to(&mut out)
        .unwrap();
    assert_eq!(out, plain);
}

#[test]
fn range_reads_match_the_plaintext() {
    let alice = Party::new();
    let plain = data(10 * 1000 + 123, 5);
    let file = seal(&alice.id, &[alice.public()], &plain, 1000);
    let mut reader = RangeReader::open(Cursor::new(&file), &alice.id, &[]).unwrap();
    assert_eq!(reader.plaintext_len(), plain.len() as u64);
    for (start, end) in [
        (0, 0),
        (0, 1),
        (999, 1001),
        (0, plain.len()),
        (5000, 5000),
        (9999, plain.len()),
    ] {
        assert_eq!(
            reader.read_range(start as u64, end as u64).unwrap(),
            &plain[start..end],
            "{start}..{end}"
        );
    }
    assert!(matches!(
        reader.read_range(0, plain.len() as u64 + 1),
        Err(Error::RangeOutOfBounds { .. })
    ));
}

/// A range read touches only the chunks it needs: a damaged chunk elsewhere
/// does not matter, the damaged one is refused.
#[test]
fn range_reads_only_touch_covering_chunks() {
    let alice = Party::new();
    let plain = data(5000, 6);
    let mut file = seal(&alice.id, &[alice.public()], &plain, 1000);
    let chunk2 = layout(&file, 1000).chunks[2].clone();
    file[chunk2.start + 10] ^= 1;
    let mut reader = RangeReader::open(Cursor::new(&file), &alice.id, &[]).unwrap();
    assert_eq!(reader.read_range(0, 2000).unwrap(), &plain[..2000]);
    assert_eq!(reader.read_range(3000, 5000).unwrap(), &plain[3000..]);
    assert!(matches!(
        reader.read_range(1500, 2500),
        Err(Error::ChunkAuth { index: 2 })
    ));
}

#[test]
fn range_reader_refuses_a_file_cut_at_a_chunk_boundary() {
    let alice = Party::new();
    let file = seal(&alice.id, &[alice.public()], &data(5000, 7), 1000);
    let lay = layout(&file, 1000);
    // Drop the final chunk but keep the trailer.
    let mut cut = file[..lay.chunks[4].start].to_vec();
    cut.extend_from_slice(&file[lay.trailer.clone()]);
    assert!(RangeReader::open(Cursor::new(&cut), &alice.id, &[]).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn any_size_and_chunk_size_round_trips(len in 0usize..40_000, chunk in 256u32..5000, seed: u64, a in 0usize..40_000, b in 0usize..40_000) {
        let alice = Party::new();
        let plain = data(len, seed);
        let file = seal(&alice.id, &[alice.public()], &plain, chunk);
        prop_assert_eq!(open(&alice.id, &file).unwrap(), plain.clone());
        let (start, end) = (a.min(b).min(len), a.max(b).min(len));
        let mut reader = RangeReader::open(Cursor::new(&file), &alice.id, &[]).unwrap();
        prop_assert_eq!(reader.read_range(start as u64, end as u64).unwrap(), &plain[start..end]);
    }
}

/// Hands out its bytes in reads of varying, odd sizes (like a pipe), then
/// optionally fails.
struct Trickle<'a> {
    data: &'a [u8],
    sizes: std::iter::Cycle<std::array::IntoIter<usize, 4>>,
    fail_after: Option<usize>,
    given: usize,
}

impl<'a> Trickle<'a> {
    fn new(data: &'a [u8], fail_after: Option<usize>) -> Self {
        Self {
            data,
            sizes: [777usize, 100_003, 1, 65_536].into_iter().cycle(),
            fail_after,
            given: 0,
        }
    }
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.fail_after.is_some_and(|limit| self.given >= limit) {
            return Err(std::io::Error::other("disk on fire"));
        }
        let n = self
            .sizes
            .next()
            .unwrap()
            .min(buf.len())
            .min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        self.given += n;
        Ok(n)
    }
}

/// `encrypt` (reading, sealing and writing overlapped) writes the same
/// format as the streaming writer: same length, same chunk layout, same
/// plaintext back, at every piece boundary (512 KiB) and on any number of
/// threads, whichever thread sealed each piece.
#[test]
fn overlapped_encrypt_writes_the_format_of_the_streaming_writer() {
    let alice = Party::new();
    let chunk = 4096u32;
    let batch = 512 << 10;
    for len in [
        0usize,
        1,
        4095,
        4096,
        4097,
        batch - 1,
        batch,
        batch + 1,
        2 * batch,
        3 * batch + 4097,
    ] {
        let plain = data(len, len as u64 + 1);
        let streamed = seal(&alice.id, &[alice.public()], &plain, chunk);
        for threads in [1, 2, 3] {
            let mut options =
                EncryptOptions::new(std::slice::from_ref(alice.id.public()), &alice.id);
            options.chunk_size = chunk;
            options.threads = threads;
            let (file, written) =
                coffer_format::encrypt(options, &mut Trickle::new(&plain, None), Vec::new())
                    .unwrap();
            let what = format!("len {len}, {threads} threads");
            assert_eq!(file.len(), streamed.len(), "{what}");
            assert_eq!(written.plaintext_len, len as u64, "{what}");
            assert_eq!(
                layout(&file, chunk).chunks,
                layout(&streamed, chunk).chunks,
                "{what}"
            );
            assert_eq!(open(&alice.id, &file).unwrap(), plain, "{what}");
        }
    }
}

/// An input that fails, an output that fails, or an input longer than the
/// size the metadata declares ends `encrypt` with that error (no panic, no
/// hang: the helper threads are stopped and joined).
#[test]
fn overlapped_encrypt_fails_cleanly_on_bad_input_or_output() {
    let alice = Party::new();
    let plain = data(5 << 20, 3);
    let options = |size: Option<u64>| {
        let mut options = EncryptOptions::new(std::slice::from_ref(alice.id.public()), &alice.id);
        options.chunk_size = 4096;
        options.threads = 2;
        options.metadata = Metadata {
            size,
            ..Metadata::default()
        };
        options
    };
    let failing = coffer_format::encrypt(
        options(None),
        &mut Trickle::new(&plain, Some(3 << 20)),
        Vec::new(),
    );
    assert!(matches!(failing, Err(Error::Io(_))), "{:?}", failing.err());

    struct FullDisk(usize);
    impl std::io::Write for FullDisk {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.0 < buf.len() {
                return Err(std::io::Error::other("no space left"));
            }
            self.0 -= buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let full = coffer_format::encrypt(options(None), &mut &plain[..], FullDisk(2 << 20));
    assert!(matches!(full, Err(Error::Io(_))), "{:?}", full.err());

    let grown = coffer_format::encrypt(options(Some(4 << 20)), &mut &plain[..], Vec::new());
    assert!(
        matches!(grown, Err(Error::InputChanged(_))),
        "{:?}",
        grown.err()
    );
    let shrunk = coffer_format::encrypt(options(Some(6 << 20)), &mut &plain[..], Vec::new());
    assert!(
        matches!(shrunk, Err(Error::InputChanged(_))),
        "{:?}",
        shrunk.err()
    );
}

/// A reader opening chunks on several threads: a failing output ends the
/// decryption with its error, and a file whose signature fails has only
/// released non-final plaintext written, a strict prefix of the real
/// plaintext.
#[test]
fn a_threaded_reader_fails_cleanly_and_never_releases_an_unsigned_end() {
    let alice = Party::new();
    let chunk = 4096u32;
    let plain = data(5 << 20, 8);
    let file = seal(&alice.id, &[alice.public()], &plain, chunk);
    fn reader<'a>(
        id: &coffer_format::Identity,
        file: &'a [u8],
    ) -> coffer_format::Decryptor<&'a [u8]> {
        let mut input = file;
        let opened = Header::read_from(&mut input)
            .unwrap()
            .open(id, &[])
            .unwrap();
        opened.decryptor(input).unwrap().with_threads(2).unwrap()
    }

    struct FullDisk(usize);
    impl std::io::Write for FullDisk {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.0);
            if n == 0 {
                return Err(std::io::Error::other("no space left"));
            }
            self.0 -= n;
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let full = reader(&alice.id, &file).copy_to(&mut FullDisk(3 << 20));
    assert!(matches!(full, Err(Error::Io(_))), "{:?}", full.err());

    let mut forged = file.clone();
    let last = forged.len() - 1;
    forged[last] ^= 1; // the signature's last byte
    let mut out = Vec::new();
    assert!(reader(&alice.id, &forged).copy_to(&mut out).is_err());
    assert!(
        out.len() < plain.len(),
        "the final chunk was released unsigned"
    );
    assert_eq!(out[..], plain[..out.len()]);
}
