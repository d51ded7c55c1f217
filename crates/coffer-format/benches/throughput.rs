//! In-memory throughput on one core.
//!
//! * `stream/*`: the STREAM layer alone (AES-256-GCM seal/open in place),
//!   which is what the ">= 6 GB/s on one core" goal is about.
//! * `file/*`: the whole format (framing, SHA-256 of the plaintext, trailer
//!   signature) through `Encryptor` / `Decryptor` into memory. SHA-256
//!   (~1.75 GB/s with SHA-NI here) bounds this path.
//!
//! Run: `cargo bench -p coffer-format --bench throughput`

use std::hint::black_box;
use std::io::Write;
use std::time::Duration;

use coffer_format::stream::{StreamOpener, StreamSealer};
use coffer_format::{EncryptOptions, Identity, Stanzas, decrypt, prepare};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use zeroize::Zeroizing;

const TOTAL: usize = 64 * 1024 * 1024;
const CHUNKS: [usize; 2] = [64 * 1024, 1024 * 1024];

fn stream_layer(c: &mut Criterion) {
    let key = Zeroizing::new([7u8; 32]);
    let mut group = c.benchmark_group("stream");
    group.throughput(Throughput::Bytes(TOTAL as u64));
    for chunk in CHUNKS {
        let count = TOTAL / chunk;
        let mut buf = vec![0x5a; chunk];
        group.bench_with_input(BenchmarkId::new("seal", chunk), &chunk, |b, &chunk| {
            b.iter(|| {
                let mut sealer = StreamSealer::new(&key).unwrap();
                for _ in 0..count {
                    buf.truncate(chunk);
                    sealer.seal_chunk(&mut buf).unwrap();
                }
                black_box(&buf);
            })
        });
        // A small ring of sealed chunks (cache-resident, like the seal side's
        // single buffer) so the figure is the AEAD, not memory bandwidth.
        let ring = 8;
        let mut sealer = StreamSealer::new(&key).unwrap();
        let sealed: Vec<Vec<u8>> = (0..ring)
            .map(|_| {
                let mut chunk_buf = vec![0x5a; chunk];
                sealer.seal_chunk(&mut chunk_buf).unwrap();
                chunk_buf
            })
            .collect();
        let opener = StreamOpener::new(&key).unwrap();
        let mut work = vec![0u8; chunk + 16];
        group.bench_with_input(BenchmarkId::new("open", chunk), &chunk, |b, _| {
            b.iter(|| {
                for i in 0..count {
                    work.copy_from_slice(&sealed[i % ring]);
                    let index = (i % ring) as u64;
                    black_box(opener.open_chunk(index, false, &mut work).unwrap());
                }
            })
        });
    }
    group.finish();
}

fn whole_format(c: &mut Criterion) {
    let alice = Identity::generate().unwrap();
    let recipients = [alice.public().clone()];
    let plain = vec![0xa5u8; TOTAL];
    let mut group = c.benchmark_group("file");
    group.throughput(Throughput::Bytes(TOTAL as u64));
    for chunk in CHUNKS {
        let encrypt_once = |out: Vec<u8>| {
            let mut options = EncryptOptions::new(&recipients, &alice);
            options.chunk_size = chunk as u32;
            let mut w = prepare(options)
                .unwrap()
                .writer(out, Stanzas::Embedded)
                .unwrap();
            w.write_all(&plain).unwrap();
            w.finish().unwrap().0
        };
        let mut out = Vec::with_capacity(TOTAL + TOTAL / 1000 + 4096);
        group.bench_with_input(BenchmarkId::new("encrypt", chunk), &chunk, |b, _| {
            b.iter(|| {
                out.clear();
                out = encrypt_once(std::mem::take(&mut out));
            })
        });
        let file = encrypt_once(Vec::new());
        let mut sink = Vec::with_capacity(TOTAL);
        group.bench_with_input(BenchmarkId::new("decrypt", chunk), &chunk, |b, _| {
            b.iter(|| {
                sink.clear();
                decrypt(&alice, &file[..], &mut sink).unwrap();
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    targets = stream_layer, whole_format
}
criterion_main!(benches);
