//! In-memory throughput.
//!
//! * `tree-hash/*`: the two candidates for the content tree's leaves, per
//!   64 KiB chunk on 1 and 2 threads: SHA-256 (what a SHA-256 tree would
//!   cost; WebCrypto could do it one chunk at a time) and BLAKE3 (chosen).
//! * `stream/*`: the STREAM layer alone (AES-256-GCM seal/open in place).
//! * `file/*`: the whole version 2 format (framing, BLAKE3 tree over the
//!   sealed chunks, signature) from memory into memory, on 1 and 2
//!   threads, through what `coffer encrypt` and `coffer decrypt` run:
//!   `coffer_format::encrypt` and `Decryptor::copy_to`.
//!
//! Run: `cargo bench -p coffer-format --bench throughput`

use std::hint::black_box;
use std::io::Cursor;
use std::time::Duration;

use coffer_format::stream::{StreamOpener, StreamSealer};
use coffer_format::{EncryptOptions, Header, Identity};
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

/// Hashes every 64 KiB piece of `data` with `leaf`, on `threads` threads.
fn hash_chunks(data: &[u8], threads: usize, leaf: fn(u64, &[u8]) -> [u8; 32]) -> Vec<[u8; 32]> {
    let pieces: Vec<&[u8]> = data.chunks(64 * 1024).collect();
    let per = pieces.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let workers: Vec<_> = pieces
            .chunks(per)
            .enumerate()
            .map(|(g, group)| {
                scope.spawn(move || {
                    group
                        .iter()
                        .enumerate()
                        .map(|(j, p)| leaf((g * per + j) as u64, p))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    })
}

fn sha256_leaf(index: u64, chunk: &[u8]) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(&index.to_be_bytes());
    ctx.update(chunk);
    ctx.finish().as_ref().try_into().unwrap()
}

fn tree_hash(c: &mut Criterion) {
    let data = vec![0x3cu8; TOTAL];
    let mut group = c.benchmark_group("tree-hash");
    group.throughput(Throughput::Bytes(TOTAL as u64));
    for threads in [1, 2] {
        group.bench_with_input(BenchmarkId::new("sha256", threads), &threads, |b, &t| {
            b.iter(|| black_box(hash_chunks(&data, t, sha256_leaf)))
        });
        group.bench_with_input(BenchmarkId::new("blake3", threads), &threads, |b, &t| {
            b.iter(|| black_box(hash_chunks(&data, t, coffer_format::tree::leaf)))
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
        for threads in [1, 2] {
            // Output goes into buffers allocated and touched once, outside
            // the timing: the figure is the format, not the allocator
            // handing out fresh pages (which this VM makes expensive).
            let encrypt_into = |out: &mut [u8]| -> usize {
                let mut options = EncryptOptions::new(&recipients, &alice);
                options.chunk_size = chunk as u32;
                options.threads = threads;
                let (out, _) =
                    coffer_format::encrypt(options, &mut &plain[..], Cursor::new(out)).unwrap();
                out.position() as usize
            };
            let label = format!("{chunk}/{threads}t");
            let mut out = vec![0u8; TOTAL + TOTAL / 500 + 8192];
            group.bench_function(BenchmarkId::new("encrypt", &label), |b| {
                b.iter(|| black_box(encrypt_into(&mut out)))
            });
            let file_len = encrypt_into(&mut out);
            let file = &out[..file_len];
            let mut sink = vec![0u8; TOTAL];
            group.bench_function(BenchmarkId::new("decrypt", &label), |b| {
                b.iter(|| {
                    let mut input = file;
                    let opened = Header::read_from(&mut input)
                        .unwrap()
                        .open(&alice, &[])
                        .unwrap();
                    let mut into = Cursor::new(&mut sink[..]);
                    opened
                        .decryptor(input)
                        .unwrap()
                        .with_threads(threads)
                        .unwrap()
                        .copy_to(&mut into)
                        .unwrap();
                    assert_eq!(into.position() as usize, TOTAL);
                })
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    targets = tree_hash, stream_layer, whole_format
}
criterion_main!(benches);
