//! Resuming interrupted transfers: a unit encoder re-encrypts a reopened
//! header to the same bytes and refuses changed input, and a download
//! resumed from a partial output verifies exactly like one that never
//! stopped.

mod common;

use std::io::Cursor;

use coffer_format::{
    EncryptOptions, Error, Header, Metadata, Prepared, Stanza, Stanzas, UnitDigest, UnitEncoder,
    encoded_len, prepare,
};
use common::{Party, data};

const CHUNK: u32 = 1024;
const UNIT: u64 = 4 * CHUNK as u64;

fn encrypt_again(prepared: Prepared<'_>, plain: &[u8]) -> Vec<u8> {
    let mut w = prepared.writer(Vec::new(), Stanzas::Detached).unwrap();
    std::io::Write::write_all(&mut w, plain).unwrap();
    w.finish().unwrap().0
}

fn prepared<'a>(alice: &'a Party, plain: &[u8]) -> Prepared<'a> {
    let mut options = EncryptOptions::new(std::slice::from_ref(alice.id.public()), &alice.id);
    options.chunk_size = CHUNK;
    options.metadata = Metadata {
        name: Some("a.bin".into()),
        size: Some(plain.len() as u64),
        ..Metadata::default()
    };
    prepare(options).unwrap()
}

/// Runs a unit encoder over `plain`; returns the bytes and unit digests.
/// With `recycle`, every unit goes into one send buffer that already holds
/// other bytes (longer than a unit at first), as the uploader's recycled
/// buffers do: none of them may show through.
fn by_units(
    mut units: UnitEncoder<'_>,
    plain: &[u8],
    recycle: bool,
) -> Result<(Vec<u8>, Vec<UnitDigest>), Error> {
    let mut input = Cursor::new(plain);
    let mut out = Vec::new();
    let mut digests = Vec::new();
    let mut unit = vec![0xee; 3 * UNIT as usize];
    while !units.is_finished() {
        if !recycle {
            unit = Vec::new();
        }
        let (digest, _) = units.encode_unit(&mut input, &mut unit)?;
        out.extend_from_slice(&unit);
        digests.push(digest);
    }
    Ok((out, digests))
}

#[test]
fn encoded_len_matches_what_is_written() {
    let alice = Party::new();
    for len in [0usize, 1, 1023, 1024, 1025, 4096, 5000, 70_000] {
        let plain = data(len, 1);
        let p = prepared(&alice, &plain);
        let predicted = p.encoded_len(Stanzas::Detached, len as u64).unwrap();
        let header_len = p.header_bytes(Stanzas::Detached).unwrap().len() as u64;
        assert_eq!(predicted, encoded_len(header_len, CHUNK, len as u64));
        let bytes = encrypt_again(p, &plain);
        assert_eq!(bytes.len() as u64, predicted, "plaintext of {len} bytes");
        // The unit encoder writes the same layout.
        let units = prepared(&alice, &plain).units(UNIT).unwrap();
        assert_eq!(units.encoded_len(), predicted);
        let (by_unit, _) = by_units(units, &plain, true).unwrap();
        assert_eq!(by_unit.len() as u64, predicted, "units, {len} bytes");
    }
}

fn reopen<'a>(
    alice: &'a Party,
    file: &[u8],
    stanza: &Stanza,
    digests: Vec<UnitDigest>,
) -> UnitEncoder<'a> {
    let (header, _) = Header::parse(file).unwrap();
    let opened = header
        .open(&alice.id, std::slice::from_ref(stanza))
        .unwrap();
    UnitEncoder::resume(opened, &alice.id, UNIT, digests).unwrap()
}

#[test]
fn a_resumed_unit_encoder_reproduces_the_bytes_and_refuses_changed_input() {
    let alice = Party::new();
    let plain = data(10 * UNIT as usize + 300, 2);
    let p = prepared(&alice, &plain);
    let owner_stanza = p.stanzas()[0].clone();
    let (first, digests) = by_units(p.units(UNIT).unwrap(), &plain, true).unwrap();
    assert_eq!(digests.len(), 11);
    // A detached object: it opens with the owner's stanza, to the plaintext.
    assert!(matches!(
        common::open(&alice.id, &first),
        Err((Error::NoMatchingRecipient, _))
    ));
    let (header, len) = Header::parse(&first).unwrap();
    let mut out = Vec::new();
    header
        .open(&alice.id, std::slice::from_ref(&owner_stanza))
        .unwrap()
        .decryptor(&first[len..])
        .unwrap()
        .copy_to(&mut out)
        .unwrap();
    assert_eq!(out, plain);

    // The same plaintext: identical bytes, unit for unit, whether the send
    // buffers are fresh or recycled.
    let (second, again) = by_units(
        reopen(&alice, &first, &owner_stanza, digests.clone()),
        &plain,
        false,
    )
    .unwrap();
    assert_eq!(first, second);
    assert_eq!(digests, again);

    // A byte changed in unit 3: units 0..3 come out, unit 3 does not.
    let mut changed = plain.clone();
    changed[3 * UNIT as usize + 17] ^= 1;
    let mut units = reopen(&alice, &first, &owner_stanza, digests.clone());
    let mut input = Cursor::new(&changed[..]);
    let mut out = Vec::new();
    for _ in 0..3 {
        units.encode_unit(&mut input, &mut out).unwrap();
    }
    let err = units.encode_unit(&mut input, &mut out).unwrap_err();
    assert!(matches!(err, Error::InputChanged(_)), "{err}");
    assert!(out.is_empty(), "nothing of the changed unit was handed out");
    assert!(
        units.encode_unit(&mut input, &mut out).is_err(),
        "the encoder is spent"
    );
    assert!(out.is_empty());

    // Input shorter than the size the header declares: the unit where it
    // ends fails. Longer: the last unit fails, once it sees the extra byte.
    for (input, failing) in [
        (plain[..5 * UNIT as usize + 9].to_vec(), 5),
        ([&plain[..], b"!"].concat(), 10),
    ] {
        let mut units = reopen(&alice, &first, &owner_stanza, Vec::new());
        let mut input = Cursor::new(&input[..]);
        for _ in 0..failing {
            units.encode_unit(&mut input, &mut out).unwrap();
        }
        let err = units.encode_unit(&mut input, &mut out).unwrap_err();
        assert!(matches!(err, Error::InputChanged(_)), "{err}");
        assert!(out.is_empty());
    }

    // Someone else cannot continue a file Alice signed.
    let mallory = Party::new();
    let (header, _) = Header::parse(&first).unwrap();
    let opened = header.open(&alice.id, &[owner_stanza]).unwrap();
    assert!(UnitEncoder::resume(opened, &mallory.id, UNIT, Vec::new()).is_err());
}

fn sealed_file(len: usize) -> (Party, Vec<u8>, Vec<u8>) {
    let alice = Party::new();
    let plain = data(len, 3);
    let file = common::seal(&alice.id, &[alice.public()], &plain, CHUNK);
    (alice, plain, file)
}

fn resume_with_prefix(alice: &Party, file: &[u8], prefix: &[u8]) -> coffer_format::Result<Vec<u8>> {
    let mut cursor = Cursor::new(file);
    let opened = Header::read_from(&mut cursor)?.open(&alice.id, &[])?;
    let point = opened.resume_point(&mut Cursor::new(prefix), prefix.len() as u64)?;
    let kept = point.plaintext_len() as usize;
    let rest = &file[point.ciphertext_offset() as usize..];
    let mut out = prefix[..kept].to_vec();
    opened.decryptor_resumed(rest, point)?.copy_to(&mut out)?;
    Ok(out)
}

#[test]
fn resumed_download_verifies_for_every_break_point() {
    for len in [0usize, 500, 1024, 2048, 3000, 8192] {
        let (alice, plain, file) = sealed_file(len);
        for cut in [0, 1, 1023, 1024, 1025, 2048, 2500, len] {
            let cut = cut.min(len);
            let out = resume_with_prefix(&alice, &file, &plain[..cut]).unwrap();
            assert_eq!(out, plain, "len {len}, cut at {cut}");
        }
    }
}

#[test]
fn a_partial_output_altered_on_disk_fails_the_tree() {
    let (alice, plain, file) = sealed_file(5000);
    let mut prefix = plain[..3000].to_vec();
    prefix[10] ^= 1;
    let err = resume_with_prefix(&alice, &file, &prefix).unwrap_err();
    assert_eq!(err.kind(), coffer_format::ErrorKind::Tampered, "{err}");
}

#[test]
fn resuming_at_the_wrong_offset_fails() {
    let (alice, plain, file) = sealed_file(5000);
    let mut cursor = Cursor::new(&file[..]);
    let opened = Header::read_from(&mut cursor)
        .unwrap()
        .open(&alice.id, &[])
        .unwrap();
    let point = opened
        .resume_point(&mut Cursor::new(&plain[..3000]), 3000)
        .unwrap();
    // One chunk too late: the counter no longer matches.
    let wrong = &file[point.ciphertext_offset() as usize + CHUNK as usize + 16..];
    let mut out = Vec::new();
    assert!(
        opened
            .decryptor_resumed(wrong, point)
            .unwrap()
            .copy_to(&mut out)
            .is_err()
    );
}
