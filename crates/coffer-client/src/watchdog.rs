//! Stall detection: a connection that moves no byte in either direction
//! for the stall limit fails with `TimedOut`, so the transfer loops above
//! reconnect and resume instead of waiting forever on a partitioned
//! network (no FIN, no RST: TCP alone would wait for many minutes).
//!
//! Why not `tokio-io-timeout`: its read and write timers are independent.
//! During an upload the client writes for minutes while the server sends
//! nothing until the final answer, so a read timeout would cut every long
//! upload; here progress either way counts. An idle keep-alive connection
//! is closed by the same rule after the limit; the next request opens a
//! fresh one.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The stall limit unless `COFFER_STALL_TIMEOUT` says otherwise.
pub const DEFAULT_STALL_LIMIT: Duration = Duration::from_secs(30);

/// The stall limit: `COFFER_STALL_TIMEOUT` (`45s`, `2m`, or seconds), else
/// [`DEFAULT_STALL_LIMIT`]. The one setting the library reads from the
/// environment, so every program built on it honours the same knob.
pub fn stall_limit() -> Duration {
    std::env::var("COFFER_STALL_TIMEOUT")
        .ok()
        .and_then(|text| parse_limit(&text))
        .unwrap_or(DEFAULT_STALL_LIMIT)
}

fn parse_limit(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, ""), |at| text.split_at(at));
    let n: u64 = number.parse().ok()?;
    let seconds = match unit {
        "" | "s" => n,
        "m" => n.checked_mul(60)?,
        _ => return None,
    };
    (seconds > 0).then(|| Duration::from_secs(seconds))
}

/// `inner`, failing with `TimedOut` once no byte has moved either way for
/// `limit`. Meant for a connection one task drives (hyper's connection
/// task reads and writes): the stall timer keeps one waker.
pub struct Watchdog<S> {
    inner: S,
    limit: Duration,
    last_progress: Instant,
    timer: Pin<Box<Sleep>>,
}

impl<S> Watchdog<S> {
    /// Watches `inner`.
    pub fn new(inner: S, limit: Duration) -> Self {
        let now = Instant::now();
        Self {
            inner,
            limit,
            last_progress: now,
            timer: Box::pin(tokio::time::sleep_until(now + limit)),
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    fn progressed(&mut self) {
        self.last_progress = Instant::now();
    }

    /// A write that moved bytes is progress; one that is not ready waits
    /// on the stall timer.
    fn after_write(
        &mut self,
        written: Poll<io::Result<usize>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        match written {
            Poll::Ready(result) => {
                if result.as_ref().is_ok_and(|n| *n > 0) {
                    self.progressed();
                }
                Poll::Ready(result)
            }
            Poll::Pending => self.pending_or_stalled(cx),
        }
    }

    /// Called when the inner stream is not ready: arms the timer for the
    /// deadline and fails once it has passed.
    fn pending_or_stalled<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let deadline = self.last_progress + self.limit;
        if self.timer.deadline() != deadline {
            self.timer.as_mut().reset(deadline);
        }
        match self.timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the connection stalled: no data moved for {} s",
                    self.limit.as_secs()
                ),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watchdog<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.progressed();
                }
                Poll::Ready(result)
            }
            Poll::Pending => this.pending_or_stalled(cx),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watchdog<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write(cx, data);
        this.after_write(written, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.after_write(written, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Ready(result) => Poll::Ready(result),
            Poll::Pending => this.pending_or_stalled(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn limits_parse_and_bad_ones_are_ignored() {
        assert_eq!(parse_limit("45s"), Some(Duration::from_secs(45)));
        assert_eq!(parse_limit("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_limit("7"), Some(Duration::from_secs(7)));
        for bad in ["", "0", "s", "1h", "-3", "1.5s", "99999999999999999999m"] {
            assert_eq!(parse_limit(bad), None, "{bad:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_fails_after_the_limit_and_traffic_keeps_it_alive() {
        let (near, mut far) = tokio::io::duplex(64);
        let mut watched = Watchdog::new(near, Duration::from_secs(10));
        // Traffic every 6 s (each gap under the limit) for 60 s: no stall.
        let talker = tokio::spawn(async move {
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_secs(6)).await;
                far.write_all(b"x").await.unwrap();
            }
            far
        });
        let mut byte = [0u8; 1];
        for _ in 0..10 {
            watched.read_exact(&mut byte).await.unwrap();
        }
        let _far = talker.await.unwrap();
        // Then silence, the peer still connected: a stall, not a hang.
        let started = Instant::now();
        let err = watched.read_exact(&mut byte).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn writing_counts_as_progress_for_a_pending_read() {
        // An upload: the client writes for longer than the limit while the
        // server answers nothing yet. The read waiting for the answer must
        // not time out while the writes move.
        let (near, mut far) = tokio::io::duplex(16);
        let watched = Watchdog::new(near, Duration::from_secs(10));
        let (mut reader, mut writer) = tokio::io::split(watched);
        let reading = tokio::spawn(async move {
            let mut answer = [0u8; 2];
            reader.read_exact(&mut answer).await.map(|_| answer)
        });
        let draining = tokio::spawn(async move {
            let mut sink = [0u8; 16];
            for _ in 0..30 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                far.read_exact(&mut sink).await.unwrap();
            }
            far.write_all(b"ok").await.unwrap();
            far
        });
        for _ in 0..30 {
            writer.write_all(&[7u8; 16]).await.unwrap();
        }
        let _far = draining.await.unwrap();
        assert_eq!(&reading.await.unwrap().unwrap(), b"ok");
    }
}
