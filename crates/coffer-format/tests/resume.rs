//! Resuming interrupted transfers: re-encrypting under a reopened header
//! gives the same bytes, and a download resumed from a partial output
//! verifies exactly like one that never stopped.

mod common;

use std::io::Cursor;

use coffer_format::{EncryptOptions, Header, Metadata, Prepared, Stanzas, encoded_len, prepare};
use common::{Party, data};

const CHUNK: u32 = 1024;

fn encrypt_again(prepared: Prepared<'_>, plain: &[u8]) -> Vec<u8> {
    let mut w = prepared.writer(Vec::new(), Stanzas::Detached).unwrap();
    std::io::Write::write_all(&mut w, plain).unwrap();
    w.finish().unwrap().0
}

#[test]
fn encoded_len_matches_what_is_written() {
    let alice = Party::new();
    for len in [0usize, 1, 1023, 1024, 1025, 4096, 5000] {
        let mut options = EncryptOptions::new(std::slice::from_ref(alice.id.public()), &alice.id);
        options.chunk_size = CHUNK;
        let prepared = prepare(options).unwrap();
        let predicted = prepared.encoded_len(Stanzas::Detached, len as u64).unwrap();
        let header_len = prepared.header_bytes(Stanzas::Detached).unwrap().len() as u64;
        assert_eq!(predicted, encoded_len(header_len, CHUNK, len as u64));
        let bytes = encrypt_again(prepared, &data(len, 1));
        assert_eq!(bytes.len() as u64, predicted, "plaintext of {len} bytes");
    }
}

#[test]
fn reopened_header_re_encrypts_to_identical_bytes() {
    let alice = Party::new();
    let plain = data(10_000, 2);
    let mut options = EncryptOptions::new(std::slice::from_ref(alice.id.public()), &alice.id);
    options.chunk_size = CHUNK;
    options.metadata = Metadata {
        name: Some("a.bin".into()),
        size: Some(plain.len() as u64),
        ..Metadata::default()
    };
    let prepared = prepare(options).unwrap();
    let owner_stanza = prepared.stanzas()[0].clone();
    let first = encrypt_again(prepared, &plain);

    let (header, _) = Header::parse(&first).unwrap();
    let opened = header
        .open(&alice.id, std::slice::from_ref(&owner_stanza))
        .unwrap();
    let second = encrypt_again(Prepared::reopen(opened, &alice.id).unwrap(), &plain);
    assert_eq!(first, second);

    // Someone else cannot continue a file Alice signed.
    let mallory = Party::new();
    let (header, _) = Header::parse(&first).unwrap();
    let opened = header.open(&alice.id, &[owner_stanza]).unwrap();
    assert!(Prepared::reopen(opened, &mallory.id).is_err());
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
fn a_partial_output_altered_on_disk_fails_the_trailer() {
    let (alice, plain, file) = sealed_file(5000);
    let mut prefix = plain[..3000].to_vec();
    prefix[10] ^= 1;
    let err = resume_with_prefix(&alice, &file, &prefix).unwrap_err();
    assert!(err.to_string().contains("SHA-256"), "{err}");
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
