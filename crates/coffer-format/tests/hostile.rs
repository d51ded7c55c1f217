//! Hostile inputs against version 2: every class of modification must be
//! refused with the right error, and no plaintext from a damaged or
//! unverified chunk may be released. `released` (what the reader handed out
//! before failing) must be a prefix of the plaintext ending before the first
//! damaged chunk. The last tests play a co-recipient, who knows the payload
//! key and can produce chunks with valid tags.

mod common;

use std::io::Cursor;

use coffer_format::header::{self, FIXED_LEN, TRAILER_LEN};
use coffer_format::stream::StreamSealer;
use coffer_format::tree::{self, TreeBuilder};
use coffer_format::{Error, ErrorKind, Header, Identity, RangeReader};
use common::{Layout, Party, data, layout, open, open_with_threads, seal};
use zeroize::Zeroizing;

const CHUNK: u32 = 512;

struct Case {
    alice: Party,
    bob: Party,
    plain: Vec<u8>,
    file: Vec<u8>,
    lay: Layout,
}

fn case() -> Case {
    let alice = Party::new();
    let bob = Party::new();
    let plain = data(4 * CHUNK as usize + 100, 11);
    let file = seal(&alice.id, &[bob.public(), alice.public()], &plain, CHUNK);
    let lay = layout(&file, CHUNK);
    assert_eq!(lay.chunks.len(), 5);
    Case {
        alice,
        bob,
        plain,
        file,
        lay,
    }
}

/// Decrypts `file` as `who` and checks it fails, releasing at most the
/// plaintext of chunks before `first_bad_chunk`.
fn refused_by(c: &Case, who: &Identity, file: &[u8], first_bad_chunk: usize) -> Error {
    let (err, released) = match open(who, file) {
        Ok(_) => panic!("modified file was accepted"),
        Err(e) => e,
    };
    assert!(
        released.len() <= first_bad_chunk * CHUNK as usize,
        "released past the damage: {err}"
    );
    assert_eq!(
        released,
        c.plain[..released.len()],
        "released bytes are not the plaintext"
    );
    err
}

fn refused(c: &Case, file: &[u8], first_bad_chunk: usize) -> Error {
    refused_by(c, &c.alice.id, file, first_bad_chunk)
}

fn flip(file: &[u8], bit: usize) -> Vec<u8> {
    let mut out = file.to_vec();
    out[bit / 8] ^= 1 << (bit % 8);
    out
}

fn stanza_section(c: &Case) -> std::ops::Range<usize> {
    let (header, header_len) = Header::parse(&c.file).unwrap();
    header.core().encoded_len()..header_len
}

#[test]
fn every_bit_of_the_core_header_is_authenticated() {
    let c = case();
    let core_len = stanza_section(&c).start;
    for bit in 0..core_len * 8 {
        let err = refused(&c, &flip(&c.file, bit), 0);
        assert_ne!(err.kind(), ErrorKind::WrongKey, "bit {bit}: {err}");
    }
}

#[test]
fn every_bit_of_alices_stanza_is_authenticated() {
    let c = case();
    let section = stanza_section(&c);
    let (header, _) = Header::parse(&c.file).unwrap();
    let bob_len = header.stanzas()[0].to_bytes().len();
    // Alice's stanza is the second one; Bob's is irrelevant to her.
    let alice_stanza = section.start + 2 + bob_len;
    for bit in alice_stanza * 8..section.end * 8 {
        let err = refused(&c, &flip(&c.file, bit), 0);
        let byte = bit / 8 - alice_stanza;
        match byte {
            // The type changes to another known or an unknown type (skipped),
            // or the key id no longer names Alice: the wrap is simply not hers.
            0 | 3..=10 => assert!(
                matches!(err, Error::NoMatchingRecipient | Error::MalformedHeader(_)),
                "bit {bit}: {err}"
            ),
            // The length: the section no longer parses.
            1 | 2 => assert!(
                matches!(
                    err.kind(),
                    ErrorKind::Malformed | ErrorKind::Truncated | ErrorKind::Tampered
                ),
                "bit {bit}: {err}"
            ),
            _ => assert!(matches!(err, Error::HeaderAuth), "bit {bit}: {err}"),
        }
    }
    // The count field: a count of zero leaves no stanza, larger ones misparse.
    for bit in section.start * 8..(section.start + 2) * 8 {
        refused(&c, &flip(&c.file, bit), 0);
    }
}

#[test]
fn sampled_bits_of_every_chunk_and_tag_are_authenticated() {
    let c = case();
    let last = c.lay.chunks.len() - 1;
    for (index, range) in c.lay.chunks.iter().enumerate() {
        let tag_start = range.end - 16;
        let middle = (range.start + range.end) / 2;
        for byte in [
            range.start,
            range.start + 1,
            middle,
            tag_start - 1,
            tag_start,
            range.end - 1,
        ] {
            for bit in [0, 3, 7] {
                let err = refused(&c, &flip(&c.file, byte * 8 + bit), index);
                let expected = if index == last {
                    matches!(err, Error::FinalChunkAuth { index: i } if i == index as u64)
                } else {
                    // The stored leaf no longer matches: caught before the tag.
                    matches!(err, Error::TreeMismatch { index: i } if i == index as u64)
                };
                assert!(expected, "chunk {index} byte {byte}: {err}");
            }
        }
    }
}

#[test]
fn every_bit_of_the_tree_entries_is_checked() {
    let c = case();
    for (index, range) in c.lay.entries.iter().enumerate() {
        for bit in (range.start * 8..range.end * 8).step_by(5) {
            let err = refused(&c, &flip(&c.file, bit), index);
            assert!(
                matches!(err, Error::TreeMismatch { index: i } if i == index as u64),
                "entries of {index}, bit {bit}: {err}"
            );
        }
    }
}

#[test]
fn every_bit_of_the_signature_is_checked() {
    let c = case();
    let last = c.lay.chunks.len() - 1;
    for bit in c.lay.trailer.start * 8..c.lay.trailer.end * 8 {
        let err = refused(&c, &flip(&c.file, bit), last);
        assert!(matches!(err, Error::BadSignature), "bit {bit}: {err}");
    }
}

#[test]
fn truncation_at_every_chunk_boundary_is_reported_as_truncation() {
    let c = case();
    // Before each chunk, after each chunk (before its entries), and where
    // the signature starts.
    let mut cuts: Vec<(usize, usize)> = Vec::new();
    for (k, (chunk, _)) in c.lay.chunks.iter().zip(&c.lay.entries).enumerate() {
        cuts.push((chunk.start, k.saturating_sub(1)));
        cuts.push((chunk.end, k));
    }
    cuts.push((c.lay.trailer.start, c.lay.chunks.len() - 1));
    for (cut, bad) in cuts {
        let err = refused(&c, &c.file[..cut], bad);
        assert!(matches!(err, Error::Truncated(_)), "cut at {cut}: {err}");
    }
}

#[test]
fn truncation_anywhere_is_refused() {
    let c = case();
    for cut in (0..c.file.len()).step_by(7) {
        let err = refused(&c, &c.file[..cut], c.lay.chunks.len());
        assert!(
            matches!(
                err.kind(),
                ErrorKind::Truncated | ErrorKind::Tampered | ErrorKind::NotCoffer
            ),
            "cut {cut}: {err}"
        );
    }
}

/// Chunks `chunks` of the case, each with its stored entries, in order.
fn rebuild(c: &Case, chunks: &[usize], trailer: bool) -> Vec<u8> {
    let mut out = c.file[..c.lay.header_len].to_vec();
    for &i in chunks {
        out.extend_from_slice(&c.file[c.lay.chunks[i].start..c.lay.entries[i].end]);
    }
    if trailer {
        out.extend_from_slice(&c.file[c.lay.trailer.clone()]);
    }
    out
}

#[test]
fn dropped_final_chunk_is_refused() {
    let c = case();
    let err = refused(&c, &rebuild(&c, &[0, 1, 2, 3], true), 3);
    assert!(matches!(err, Error::Truncated(_)), "{err}");
}

#[test]
fn appended_reordered_and_duplicated_chunks_are_refused() {
    let c = case();
    for (order, bad) in [
        (&[0, 1, 2, 3, 4, 0][..], 4),
        (&[1, 0, 2, 3, 4], 0),
        (&[0, 0, 1, 2, 3, 4], 1),
        (&[0, 1, 3, 2, 4], 2),
    ] {
        let err = refused(&c, &rebuild(&c, order, true), bad);
        assert_eq!(err.kind(), ErrorKind::Tampered, "{order:?}: {err}");
    }
    // Bytes after the signature.
    let mut extra = c.file.clone();
    extra.extend_from_slice(&c.file[c.lay.chunks[1].clone()]);
    refused(&c, &extra, 4);
}

#[test]
fn chunks_and_signatures_spliced_from_another_file_are_refused() {
    let c = case();
    let other = seal(&c.alice.id, &[c.alice.public()], &c.plain, CHUNK);
    let other_lay = layout(&other, CHUNK);
    let mut spliced = c.file.clone();
    spliced[c.lay.chunks[2].start..c.lay.entries[2].end]
        .copy_from_slice(&other[other_lay.chunks[2].start..other_lay.entries[2].end]);
    let err = refused(&c, &spliced, 2);
    assert!(matches!(err, Error::ChunkAuth { index: 2 }), "{err}");

    let mut spliced = c.file.clone();
    spliced[c.lay.trailer.clone()].copy_from_slice(&other[other_lay.trailer.clone()]);
    let err = refused(&c, &spliced, 4);
    assert!(matches!(err, Error::BadSignature), "{err}");
}

#[test]
fn stanza_moved_to_another_file_does_not_open_it() {
    let c = case();
    let other = seal(&c.alice.id, &[c.alice.public()], b"other file", CHUNK);
    let (other_header, _) = Header::parse(&other).unwrap();
    let (header, header_len) = Header::parse(&c.file).unwrap();
    let mut moved = header.core().to_bytes();
    moved.extend_from_slice(&header::encode_stanzas(other_header.stanzas()).unwrap());
    moved.extend_from_slice(&c.file[header_len..]);
    let err = refused(&c, &moved, 0);
    assert!(matches!(err, Error::HeaderAuth), "{err}");
}

#[test]
fn sender_replaced_in_header_is_refused() {
    let c = case();
    let mallory = Party::new();
    let mut forged = c.file.clone();
    // The sender field: ed25519 || x25519 || pq digest, at 64..160.
    let mallory_header = seal(&mallory.id, &[c.alice.public()], b"x", CHUNK);
    forged[64..160].copy_from_slice(&mallory_header[64..160]);
    let err = refused(&c, &forged, 0);
    assert!(matches!(err, Error::HeaderAuth), "{err}");
}

#[test]
fn header_bombs_are_refused_before_allocation() {
    let c = case();
    let patch = |offset: usize, value: &[u8]| {
        let mut out = c.file.clone();
        out[offset..offset + value.len()].copy_from_slice(value);
        out
    };
    for size in [u32::MAX, 0, header::MAX_CHUNK_SIZE + 1] {
        let err = refused(&c, &patch(12, &size.to_be_bytes()), 0);
        assert!(matches!(err, Error::MalformedHeader(_)), "{err}");
    }
    let err = refused(&c, &patch(FIXED_LEN - 4, &u32::MAX.to_be_bytes()), 0);
    assert!(matches!(err, Error::MalformedHeader(_)), "{err}");
    let count_at = stanza_section(&c).start;
    let err = refused(&c, &patch(count_at, &u16::MAX.to_be_bytes()), 0);
    assert!(matches!(err, Error::MalformedHeader(_)), "{err}");
    // A stanza body length of 65535.
    let err = refused(&c, &patch(count_at + 3, &u16::MAX.to_be_bytes()), 0);
    assert!(matches!(err, Error::MalformedHeader(_)), "{err}");
}

#[test]
fn garbage_and_foreign_files_are_not_coffer() {
    let c = case();
    for junk in [
        &b""[..],
        b"hello world",
        b"age-encryption.org/v1\n",
        &[0u8; 4096][..],
    ] {
        let err = refused(&c, junk, 0);
        assert!(matches!(err, Error::NotCoffer), "{err}");
    }
    let mut future = c.file.clone();
    future[8..10].copy_from_slice(&3u16.to_be_bytes());
    assert!(matches!(
        refused(&c, &future, 0),
        Error::UnsupportedVersion(3)
    ));
}

#[test]
fn trailer_length_constant_matches_the_file() {
    let c = case();
    assert_eq!(c.lay.trailer.len(), TRAILER_LEN);
}

/// The payload key of a file, as any recipient can derive it
/// (docs/FORMAT.md §5.1): what a co-recipient forges with.
fn payload_key(file: &[u8], who: &Identity) -> Zeroizing<[u8; 32]> {
    use aws_lc_rs::hkdf;
    let (header, _) = Header::parse(file).unwrap();
    let salt = header.core().salt;
    let opened = header.open(who, &[]).unwrap();
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &salt).extract(opened.file_key().expose());
    let mut key = Zeroizing::new([0u8; 32]);
    prk.expand(&[b"coffer/v2/payload"], hkdf::HKDF_SHA256)
        .unwrap()
        .fill(key.as_mut())
        .unwrap();
    key
}

/// Re-encrypts `plain` under the file's own payload key, with consistent
/// tree entries, and puts the file's original signature after it.
fn reseal(c: &Case, forger: &Identity, plain: &[u8], keep_signature: bool) -> Vec<u8> {
    let key = payload_key(&c.file, forger);
    let mut sealer = StreamSealer::new(&key).unwrap();
    let mut tree = TreeBuilder::new();
    let mut out = c.file[..c.lay.header_len].to_vec();
    let pieces: Vec<&[u8]> = plain.chunks(CHUNK as usize).collect();
    for (i, piece) in pieces.iter().enumerate() {
        let start = out.len();
        out.extend_from_slice(piece);
        let index = sealer.next_index();
        if i + 1 == pieces.len() {
            let s = std::mem::replace(&mut sealer, StreamSealer::new(&key).unwrap());
            s.seal_last_at(&mut out, start).unwrap();
        } else {
            sealer.seal_chunk_at(&mut out, start).unwrap();
        }
        let leaf = tree::leaf(index, &out[start..]);
        tree.push(leaf, &mut out);
    }
    if keep_signature {
        out.extend_from_slice(&c.file[c.lay.trailer.clone()]);
    }
    out
}

#[test]
fn a_co_recipient_who_reseals_a_chunk_is_refused_by_streaming_and_range_reads() {
    let c = case();
    // Bob changes chunk 2 and re-seals everything consistently: every tag
    // and every stored entry is valid. Only the signed root is not.
    let mut forged_plain = c.plain.clone();
    forged_plain[2 * CHUNK as usize + 5] ^= 0x55;
    let forged = reseal(&c, &c.bob.id, &forged_plain, true);
    assert_eq!(forged.len(), c.file.len());
    let (err, released) = open(&c.alice.id, &forged).unwrap_err();
    assert!(matches!(err, Error::BadSignature), "{err}");
    // Non-final chunks are released on their tags and entries: they are
    // authenticated against anyone without the file key, not against Bob
    // (docs/FORMAT.md §11). Never the final chunk.
    assert!(released.len() <= 4 * CHUNK as usize);
    assert!(matches!(
        RangeReader::open(Cursor::new(&forged), &c.alice.id, &[]),
        Err(Error::BadSignature)
    ));

    // Now the forged chunk and its own leaf only, the honest subtree roots
    // kept around it: the file opens, and random access checks every chunk
    // it returns against the signed root.
    let mut spliced = c.file.clone();
    let forged_lay = layout(&forged, CHUNK);
    spliced[c.lay.chunks[2].start..c.lay.entries[2].end]
        .copy_from_slice(&forged[forged_lay.chunks[2].start..forged_lay.entries[2].end]);
    // Streaming, the forged chunk 2 passes its tag and its own leaf and is
    // released (a co-recipient can forge released chunks, §11); the next
    // chunk's stored subtree root exposes it and the file fails.
    let (err, released) = open(&c.alice.id, &spliced).unwrap_err();
    assert!(matches!(err, Error::TreeMismatch { index: 3 }), "{err}");
    assert_eq!(released.len(), 3 * CHUNK as usize);
    assert_eq!(
        released[..2 * CHUNK as usize],
        c.plain[..2 * CHUNK as usize]
    );
    let mut reader = RangeReader::open(Cursor::new(&spliced), &c.alice.id, &[]).unwrap();
    assert_eq!(reader.read_range(0, 1000).unwrap(), &c.plain[..1000]);
    assert_eq!(reader.read_range(2048, 2148).unwrap(), &c.plain[2048..]);
    // Chunk 3 is honest but cannot be verified: its sibling entry (the
    // stored leaf of chunk 2) is the forged one. Refused, not trusted.
    assert!(reader.read_range(1600, 1700).is_err());
    let chunk2 = 2 * CHUNK as u64;
    assert!(matches!(
        reader.read_range(chunk2, chunk2 + 10),
        Err(Error::TreeMismatch { .. })
    ));
    assert!(reader.read_range(1000, 1100).is_err());
    // The honest file reads everywhere.
    let mut honest = RangeReader::open(Cursor::new(&c.file), &c.alice.id, &[]).unwrap();
    let len = c.plain.len() as u64;
    assert_eq!(honest.read_range(0, len).unwrap(), c.plain);
}

#[test]
fn a_co_recipient_who_cuts_or_extends_the_file_is_refused() {
    let c = case();
    for plain in [
        &c.plain[..3 * CHUNK as usize][..],
        &c.plain[..3 * CHUNK as usize + 7],
        &[&c.plain[..], b"appended by bob"].concat()[..],
    ] {
        let forged = reseal(&c, &c.bob.id, plain, true);
        let (err, _) = open(&c.alice.id, &forged).unwrap_err();
        assert!(matches!(err, Error::BadSignature), "{err}");
        // The signed length and count are derived from the layout, so a
        // range reader refuses the file as soon as it opens.
        let err = RangeReader::open(Cursor::new(&forged), &c.alice.id, &[])
            .err()
            .expect("range reader accepted a cut file");
        assert!(matches!(err, Error::BadSignature), "{err}");
    }
    // Re-sealing the honest plaintext reproduces the file exactly.
    assert_eq!(reseal(&c, &c.bob.id, &c.plain, true), c.file);
}

#[test]
fn range_reads_refuse_a_substituted_final_chunk_and_bad_layouts() {
    let c = case();
    let mut forged_plain = c.plain.clone();
    let last = forged_plain.len() - 1;
    forged_plain[last] ^= 1;
    let forged = reseal(&c, &c.bob.id, &forged_plain, true);
    assert!(matches!(
        RangeReader::open(Cursor::new(&forged), &c.alice.id, &[]),
        Err(Error::BadSignature)
    ));
    // A length no layout has.
    let mut odd = c.file.clone();
    odd.insert(c.lay.trailer.start, 0);
    odd.insert(c.lay.trailer.start, 0);
    assert!(RangeReader::open(Cursor::new(&odd), &c.alice.id, &[]).is_err());
}

/// Asserts the parallel reader (on `threads`) gives each file the verdict
/// of the one-thread reader and releases no more than it.
fn assert_parallel_agrees(id: &Identity, files: &[Vec<u8>], threads: usize) {
    for (i, file) in files.iter().enumerate() {
        let one = open_with_threads(id, file, 1);
        let many = open_with_threads(id, file, threads);
        match (one, many) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "case {i}"),
            (Err((e1, r1)), Err((e3, r3))) => {
                assert_eq!(e1.to_string(), e3.to_string(), "case {i}");
                assert!(
                    r1.starts_with(&r3),
                    "case {i}: the parallel reader released more ({} > {})",
                    r3.len(),
                    r1.len()
                );
            }
            (one, many) => panic!("case {i}: {:?} vs {:?}", one.is_ok(), many.is_ok()),
        }
    }
}

/// The parallel reader works in pieces of 512 KiB of sealed chunks, and opens
/// a piece's chunks as non-final only once `T + 1` bytes after it were read.
/// Around each piece's end (where the next piece and its look-ahead begin):
/// cuts, flipped bits, and a chunk swapped with the next piece's first, on
/// 2 and 3 threads. A look-ahead one byte short would open a final chunk as
/// non-final and release it.
#[test]
fn a_parallel_reader_agrees_at_every_piece_edge() {
    let alice = Party::new();
    let chunk = 4096u32;
    let plain = data(3 * (512 << 10) + 5000, 17);
    let file = seal(&alice.id, &[alice.public()], &plain, chunk);
    let lay = layout(&file, chunk);
    let per_piece = (512 << 10) / (chunk as usize + 16);
    let mut files = vec![file.clone()];
    for end in (per_piece..lay.chunks.len()).step_by(per_piece) {
        let edge = lay.chunks[end].start;
        for d in [0, 1, 2, 63, 64, 65, 66, 200, 4111, 4112, 4113] {
            files.push(file[..edge - 1 - d.min(edge - 1)].to_vec());
            files.push(file[..(edge + d).min(file.len())].to_vec());
            files.push(flip(&file, (edge + d).min(file.len() - 1) * 8));
            files.push(flip(&file, (edge - 1 - d) * 8 + 3));
        }
        let mut swapped = file.clone();
        let (a, b) = (&lay.chunks[end - 1], &lay.chunks[end]);
        swapped[a.clone()].copy_from_slice(&file[b.clone()]);
        swapped[b.clone()].copy_from_slice(&file[a.clone()]);
        files.push(swapped);
    }
    // Everything from the last piece's end on: the final chunk is short.
    let cut = file.len() - TRAILER_LEN - 1;
    files.push(file[..cut].to_vec());
    for threads in [2, 3] {
        assert_parallel_agrees(&alice.id, &files, threads);
    }
    assert_eq!(open_with_threads(&alice.id, &file, 2).unwrap(), plain);
}

/// The reader that opens a batch of chunks on several threads reaches the
/// same verdict as the one-thread reader, whatever the damage, and releases
/// no more than it (a failure anywhere in a batch withholds the whole batch).
#[test]
fn a_parallel_reader_gives_the_same_verdicts_and_releases_the_same_bytes() {
    let c = case();
    let mut files = vec![c.file.clone()];
    for bit in (c.lay.header_len * 8..c.file.len() * 8).step_by(97) {
        files.push(flip(&c.file, bit));
    }
    for cut in (c.lay.header_len..c.file.len()).step_by(61) {
        files.push(c.file[..cut].to_vec());
    }
    files.push(rebuild(&c, &[0, 2, 1, 3, 4], true));
    assert_parallel_agrees(&c.alice.id, &files, 3);
    assert_eq!(open_with_threads(&c.alice.id, &c.file, 3).unwrap(), c.plain);
}
