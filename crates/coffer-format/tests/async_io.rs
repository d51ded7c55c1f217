//! The tokio adapters produce and accept the same bytes as the sync ones.
#![cfg(feature = "tokio")]

mod common;

use coffer_format::async_io::{AsyncDecryptor, AsyncEncryptor, read_header};
use coffer_format::{EncryptOptions, Error, Stanzas, prepare};
use common::{Party, data, open, seal};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn async_encrypt_then_sync_decrypt_and_back() {
    let alice = Party::new();
    let recipients = [alice.public()];
    for len in [0usize, 1, 1000, 1024, 1025, 300_000] {
        let plain = data(len, len as u64);
        let mut options = EncryptOptions::new(&recipients, &alice.id);
        options.chunk_size = 1024;
        let prepared = prepare(options).unwrap();
        let mut enc = AsyncEncryptor::new(prepared, Vec::new(), Stanzas::Embedded)
            .await
            .unwrap();
        // Odd write sizes exercise partial chunks.
        for piece in plain.chunks(333) {
            enc.write_all(piece).await.unwrap();
        }
        enc.shutdown().await.unwrap();
        assert_eq!(enc.written().unwrap().plaintext_len, len as u64);
        let file = std::mem::take(enc.get_inner_mut());
        assert_eq!(
            open(&alice.id, &file).unwrap(),
            plain,
            "async->sync len {len}"
        );

        let file = seal(&alice.id, &recipients, &plain, 1024);
        let mut input = &file[..];
        let opened = read_header(&mut input)
            .await
            .unwrap()
            .open(&alice.id, &[])
            .unwrap();
        let mut dec = AsyncDecryptor::new(opened, input).unwrap();
        let mut out = Vec::new();
        dec.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, plain, "sync->async len {len}");
        assert!(dec.verified().is_some());
    }
}

#[tokio::test]
async fn async_decryptor_refuses_tampering() {
    let alice = Party::new();
    let plain = data(5000, 1);
    let mut file = seal(&alice.id, &[alice.public()], &plain, 1024);
    let at = file.len() - 300;
    file[at] ^= 1;
    let mut input = &file[..];
    let opened = read_header(&mut input)
        .await
        .unwrap()
        .open(&alice.id, &[])
        .unwrap();
    let mut dec = AsyncDecryptor::new(opened, input).unwrap();
    let mut out = Vec::new();
    let err = dec.read_to_end(&mut out).await.unwrap_err();
    assert!(matches!(Error::from_io(err), Error::FinalChunkAuth { .. }));
    assert!(out.len() <= 4 * 1024);

    let mut short: &[u8] = &file[..50];
    assert!(matches!(
        read_header(&mut short).await,
        Err(Error::Truncated(_))
    ));
}
