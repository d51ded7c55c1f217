//! Hostile inputs: every class of modification must be refused with the
//! right error, and no plaintext from a damaged or unverified chunk may be
//! released. `released` (what the reader handed out before failing) must be
//! a prefix of the plaintext ending before the first damaged chunk.

mod common;

use coffer_format::header::{self, FIXED_LEN, STANZA_LEN, TRAILER_LEN};
use coffer_format::{Error, ErrorKind, Header};
use common::{Layout, Party, data, layout, open, seal};

const CHUNK: u32 = 512;

struct Case {
    alice: Party,
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
        plain,
        file,
        lay,
    }
}

/// Decrypts `file` as Alice and checks it fails, releasing at most the
/// plaintext of chunks before `first_bad_chunk`.
fn refused(c: &Case, file: &[u8], first_bad_chunk: usize) -> Error {
    let (err, released) = match open(&c.alice.id, file) {
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

fn flip(file: &[u8], bit: usize) -> Vec<u8> {
    let mut out = file.to_vec();
    out[bit / 8] ^= 1 << (bit % 8);
    out
}

#[test]
fn every_bit_of_the_core_header_is_authenticated() {
    let c = case();
    let core_len = c.lay.header_len - 2 - 2 * STANZA_LEN;
    for bit in 0..core_len * 8 {
        let err = refused(&c, &flip(&c.file, bit), 0);
        assert_ne!(err.kind(), ErrorKind::WrongKey, "bit {bit}: {err}");
    }
}

#[test]
fn every_bit_of_every_stanza_is_authenticated() {
    let c = case();
    let start = c.lay.header_len - 2 * STANZA_LEN;
    // Alice's stanza is the second one; Bob's is irrelevant to her.
    let alice_stanza = start + STANZA_LEN;
    for bit in alice_stanza * 8..c.lay.header_len * 8 {
        let err = refused(&c, &flip(&c.file, bit), 0);
        let byte = bit / 8 - alice_stanza;
        if (1..9).contains(&byte) {
            // The key id no longer names Alice.
            assert!(
                matches!(err, Error::NoMatchingRecipient),
                "bit {bit}: {err}"
            );
        } else {
            assert!(
                matches!(err, Error::HeaderAuth | Error::MalformedHeader(_)),
                "bit {bit}: {err}"
            );
        }
    }
    // The count field: a count of zero leaves no stanza, larger ones misparse.
    for bit in (start - 2) * 8..start * 8 {
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
        let bytes = [
            range.start,
            range.start + 1,
            middle,
            tag_start - 1,
            tag_start,
            range.end - 1,
        ];
        for byte in bytes {
            for bit in [0, 3, 7] {
                let err = refused(&c, &flip(&c.file, byte * 8 + bit), index);
                let expected = if index == last {
                    matches!(err, Error::FinalChunkAuth { index: i } if i == index as u64)
                } else {
                    matches!(err, Error::ChunkAuth { index: i } if i == index as u64)
                };
                assert!(expected, "chunk {index} byte {byte}: {err}");
            }
        }
    }
}

#[test]
fn every_bit_of_the_trailer_is_authenticated() {
    let c = case();
    let last = c.lay.chunks.len() - 1;
    for bit in c.lay.trailer.start * 8..c.lay.trailer.end * 8 {
        let err = refused(&c, &flip(&c.file, bit), last);
        assert!(matches!(err, Error::TrailerAuth), "bit {bit}: {err}");
    }
}

#[test]
fn truncation_at_every_chunk_boundary_is_reported_as_truncation() {
    let c = case();
    let mut cuts: Vec<usize> = c.lay.chunks.iter().map(|r| r.start).collect();
    cuts.push(c.lay.trailer.start);
    for (k, cut) in cuts.into_iter().enumerate() {
        let err = refused(&c, &c.file[..cut], k.saturating_sub(1));
        assert!(
            matches!(err, Error::Truncated(_)),
            "cut at chunk {k}: {err}"
        );
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

fn rebuild(c: &Case, chunks: &[usize], trailer: bool) -> Vec<u8> {
    let mut out = c.file[..c.lay.header_len].to_vec();
    for &i in chunks {
        out.extend_from_slice(&c.file[c.lay.chunks[i].clone()]);
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
fn appended_chunks_are_refused() {
    let c = case();
    // A chunk after the final one (the final chunk is no longer final).
    let err = refused(&c, &rebuild(&c, &[0, 1, 2, 3, 4, 0], true), 4);
    assert!(matches!(err, Error::ChunkAuth { index: 4 }), "{err}");
    // Bytes after the trailer.
    let mut extra = c.file.clone();
    extra.extend_from_slice(&c.file[c.lay.chunks[1].clone()]);
    refused(&c, &extra, 4);
}

#[test]
fn reordered_and_duplicated_chunks_are_refused() {
    let c = case();
    let err = refused(&c, &rebuild(&c, &[1, 0, 2, 3, 4], true), 0);
    assert!(matches!(err, Error::ChunkAuth { index: 0 }), "{err}");
    let err = refused(&c, &rebuild(&c, &[0, 0, 1, 2, 3, 4], true), 1);
    assert!(matches!(err, Error::ChunkAuth { index: 1 }), "{err}");
    let err = refused(&c, &rebuild(&c, &[0, 1, 3, 2, 4], true), 2);
    assert!(matches!(err, Error::ChunkAuth { index: 2 }), "{err}");
}

#[test]
fn chunks_and_trailers_spliced_from_another_file_are_refused() {
    let c = case();
    let other = seal(&c.alice.id, &[c.alice.public()], &c.plain, CHUNK);
    let other_lay = layout(&other, CHUNK);
    let mut spliced = c.file.clone();
    spliced[c.lay.chunks[2].clone()].copy_from_slice(&other[other_lay.chunks[2].clone()]);
    let err = refused(&c, &spliced, 2);
    assert!(matches!(err, Error::ChunkAuth { index: 2 }), "{err}");

    let mut spliced = c.file.clone();
    spliced[c.lay.trailer.clone()].copy_from_slice(&other[other_lay.trailer.clone()]);
    let err = refused(&c, &spliced, 4);
    assert!(matches!(err, Error::TrailerAuth), "{err}");
}

#[test]
fn stanza_moved_to_another_file_does_not_open_it() {
    let c = case();
    let other = seal(&c.alice.id, &[c.alice.public()], b"other file", CHUNK);
    let (other_header, _) = Header::parse(&other).unwrap();
    let (header, header_len) = Header::parse(&c.file).unwrap();
    // Replace the embedded stanzas with the one from the other file.
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
    forged[48..112].copy_from_slice(&mallory.public().to_bytes());
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
    // Chunk size of 4 GiB - 1 and of 0.
    for size in [u32::MAX, 0, header::MAX_CHUNK_SIZE + 1] {
        let err = refused(&c, &patch(12, &size.to_be_bytes()), 0);
        assert!(matches!(err, Error::MalformedHeader(_)), "{err}");
    }
    // Metadata length of 4 GiB - 1.
    let err = refused(&c, &patch(FIXED_LEN - 4, &u32::MAX.to_be_bytes()), 0);
    assert!(matches!(err, Error::MalformedHeader(_)), "{err}");
    // 65535 stanzas.
    let count_at = c.lay.header_len - 2 - 2 * STANZA_LEN;
    let err = refused(&c, &patch(count_at, &u16::MAX.to_be_bytes()), 0);
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
    future[8..10].copy_from_slice(&2u16.to_be_bytes());
    assert!(matches!(
        refused(&c, &future, 0),
        Error::UnsupportedVersion(2)
    ));
}

#[test]
fn trailer_length_constant_matches_the_file() {
    let c = case();
    assert_eq!(c.lay.trailer.len(), TRAILER_LEN);
}
