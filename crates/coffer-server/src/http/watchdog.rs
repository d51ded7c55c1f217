//! When a connection is closed for being slow or idle.
//!
//! hyper's own `header_read_timeout` also runs while a keep-alive connection
//! waits for its next request, so it would close every idle connection after
//! the header timeout and make `idle_timeout_secs` meaningless. The timing
//! is kept here instead, by the phase a connection is in:
//!
//! | phase | what closes it |
//! |---|---|
//! | waiting for a request (after the handshake or a finished response) | `idle_timeout_secs` without a byte; once a byte of the next request head arrived, `header_read_timeout_secs` until its handler starts (slowloris) |
//! | a handler running | nothing here (a long commit moves no bytes; the body-stall guard watches request bodies) |
//! | a response body being sent | `idle_timeout_secs` without a byte moved (a client that stopped reading) |
//!
//! The first request of a connection gets the header timeout from the end
//! of the handshake, as a client has nothing to wait for.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use hyper::body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const WAITING: u8 = 0;
const HANDLING: u8 = 1;
const RESPONDING: u8 = 2;

/// No request head has begun (in [`Activity::head_started_ms`]).
const NO_HEAD: u64 = u64::MAX;

/// What one connection is doing, and when it last moved bytes.
pub struct Activity {
    started: Instant,
    last_ms: AtomicU64,
    phase: AtomicU8,
    head_started_ms: AtomicU64,
}

/// Why the watchdog closed a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expired {
    /// A request head took longer than `header_read_timeout_secs`.
    HeaderTimeout,
    /// No bytes moved for `idle_timeout_secs` while no handler ran.
    Idle,
}

impl Activity {
    /// A connection whose handshake just finished: its first request head
    /// is due within the header timeout.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
            phase: AtomicU8::new(WAITING),
            head_started_ms: AtomicU64::new(0),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    fn touch(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Bytes arrived: if the connection was waiting, a request head began.
    fn received(&self) {
        self.touch();
        if self.phase.load(Ordering::Relaxed) == WAITING {
            let now = self.now_ms();
            let _ = self.head_started_ms.compare_exchange(
                NO_HEAD,
                now,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// A request's handler starts.
    pub fn request_started(&self) {
        self.phase.store(HANDLING, Ordering::Relaxed);
        self.head_started_ms.store(NO_HEAD, Ordering::Relaxed);
    }

    /// The handler answered; `body` is what is sent. The connection waits
    /// for its next request once the body is sent (or dropped).
    pub fn responding(self: &Arc<Self>, body: Body) -> Body {
        self.touch();
        self.phase.store(RESPONDING, Ordering::Relaxed);
        Body::new(Tracked {
            inner: body,
            activity: self.clone(),
            done: false,
        })
    }

    fn response_done(&self) {
        self.touch();
        let _ =
            self.phase
                .compare_exchange(RESPONDING, WAITING, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Whether the connection has outlived a limit, as of now.
    fn expired(&self, idle_limit: Duration, header_limit: Duration) -> Option<Expired> {
        let now = self.now_ms();
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let phase = self.phase.load(Ordering::Relaxed);
        let head = self.head_started_ms.load(Ordering::Relaxed);
        if phase == WAITING && head != NO_HEAD && now.saturating_sub(head) >= millis(header_limit) {
            return Some(Expired::HeaderTimeout);
        }
        let idle = now.saturating_sub(self.last_ms.load(Ordering::Relaxed));
        (phase != HANDLING && idle >= millis(idle_limit)).then_some(Expired::Idle)
    }
}

/// Resolves once the connection has outlived one of its limits.
pub async fn expiry(activity: &Activity, idle_limit: Duration, header_limit: Duration) -> Expired {
    let shortest = idle_limit.min(header_limit);
    let tick = (shortest / 4).clamp(Duration::from_millis(100), Duration::from_secs(2));
    loop {
        tokio::time::sleep(tick).await;
        if let Some(expired) = activity.expired(idle_limit, header_limit) {
            return expired;
        }
    }
}

/// A response body that tells [`Activity`] when it has been sent.
struct Tracked {
    inner: Body,
    activity: Arc<Activity>,
    done: bool,
}

impl Tracked {
    fn finish(&mut self) {
        if !self.done {
            self.done = true;
            self.activity.response_done();
        }
    }
}

impl hyper::body::Body for Tracked {
    type Data = hyper::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.finish(),
            Poll::Ready(Some(Ok(_))) => self.activity.touch(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Wraps a stream to record when it moved bytes.
pub struct Watched<S> {
    pub inner: S,
    pub activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.received();
        }
        polled
    }
}

impl<S> Watched<S> {
    fn wrote(&self, polled: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }
}

/// Vectored writes are passed through, not left to the trait's defaults:
/// hyper asks `is_write_vectored` and, told no, copies every response body
/// byte into a buffer of its own before rustls copies it again (perf of a
/// 1 GiB download: 16% of the server's CPU in that first copy).
impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        self.wrote(polled)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(polled)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_millis(300);
    const HEADER: Duration = Duration::from_millis(100);

    fn after(ms: u64) {
        std::thread::sleep(Duration::from_millis(ms));
    }

    #[test]
    fn the_first_head_is_due_within_the_header_timeout() {
        let activity = Activity::new();
        assert_eq!(activity.expired(IDLE, HEADER), None);
        after(120);
        assert_eq!(activity.expired(IDLE, HEADER), Some(Expired::HeaderTimeout));
    }

    #[test]
    fn keep_alive_waits_the_idle_timeout_then_a_started_head_the_header_timeout() {
        let activity = Activity::new();
        activity.request_started();
        after(120);
        assert_eq!(
            activity.expired(IDLE, HEADER),
            None,
            "a handler may take long"
        );
        drop(activity.responding(Body::empty()));
        after(150);
        assert_eq!(
            activity.expired(IDLE, HEADER),
            None,
            "keep-alive is not a slow head"
        );
        activity.received();
        after(120);
        assert_eq!(activity.expired(IDLE, HEADER), Some(Expired::HeaderTimeout));
        activity.request_started();
        drop(activity.responding(Body::empty()));
        after(320);
        assert_eq!(activity.expired(IDLE, HEADER), Some(Expired::Idle));
    }

    /// hyper copies whole bodies into a buffer of its own for a stream
    /// that does not say it takes vectored writes.
    #[tokio::test]
    async fn vectored_writes_pass_through_and_count_as_activity() {
        use tokio::io::AsyncWriteExt as _;
        let activity = Activity::new();
        let mut watched = Watched {
            inner: Vec::<u8>::new(),
            activity: Arc::clone(&activity),
        };
        assert!(watched.is_write_vectored(), "as the stream inside says");
        let before = activity.last_ms.load(Ordering::Relaxed);
        after(20);
        let bufs = [io::IoSlice::new(b"head "), io::IoSlice::new(b"body")];
        let n = watched.write_vectored(&bufs).await.unwrap();
        assert_eq!(n, 9, "both slices in one call");
        assert_eq!(watched.inner, b"head body");
        assert!(activity.last_ms.load(Ordering::Relaxed) > before);
        let plain = Watched {
            inner: OneSliceAtATime,
            activity,
        };
        assert!(
            !plain.is_write_vectored(),
            "nor claimed for one that does not"
        );
    }

    /// A stream with only the trait's default, unvectored writes.
    struct OneSliceAtATime;

    impl AsyncWrite for OneSliceAtATime {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(Ok(data.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn a_response_that_is_not_read_is_idle() {
        let activity = Activity::new();
        activity.request_started();
        let body = activity.responding(Body::empty());
        after(150);
        assert_eq!(activity.expired(IDLE, HEADER), None);
        after(170);
        assert_eq!(activity.expired(IDLE, HEADER), Some(Expired::Idle));
        drop(body);
    }
}
