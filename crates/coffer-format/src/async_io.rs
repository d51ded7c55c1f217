//! Tokio adapters (feature `tokio`): the same sans-IO cores as the sync
//! [`crate::Encryptor`] and [`crate::Decryptor`], driven by `poll_*`.
//!
//! Encryption and decryption are CPU work of about 100 µs per 64 KiB chunk
//! on one core, short enough to run inline on an async task.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::decrypt::{DecoderCore, Header, OpenedHeader, ResumePoint, Verified};
use crate::encrypt::{EncoderCore, Prepared, Stanzas, Written};
use crate::header::{eof_error, header_bytes_needed};
use crate::{Error, Result};

/// Reads exactly one header from an async stream, never past it.
pub async fn read_header<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Header> {
    let mut bytes = Vec::new();
    loop {
        let need = header_bytes_needed(&bytes)?;
        if need == 0 {
            return Header::parse(&bytes).map(|(header, _)| header);
        }
        let start = bytes.len();
        bytes.resize(start + need, 0);
        match reader.read_exact(&mut bytes[start..]).await {
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(eof_error(start));
            }
            Err(err) => return Err(Error::from_io(err)),
        }
    }
}

/// Streams verified plaintext from an async ciphertext stream.
/// Reaching EOF (`poll_read` filling nothing) means the whole file verified.
pub struct AsyncDecryptor<R> {
    inner: R,
    core: DecoderCore,
}

impl<R: AsyncRead + Unpin> AsyncDecryptor<R> {
    /// Decrypts the payload that follows an opened header in `inner`.
    pub fn new(opened: OpenedHeader, inner: R) -> Result<Self> {
        Ok(Self {
            inner,
            core: DecoderCore::new(opened)?,
        })
    }

    /// Decrypts from a resume point; `inner` must start at
    /// [`ResumePoint::ciphertext_offset`].
    pub fn resumed(opened: OpenedHeader, inner: R, point: ResumePoint) -> Result<Self> {
        Ok(Self {
            inner,
            core: DecoderCore::resumed(opened, point)?,
        })
    }

    /// Set once everything verified and was read.
    pub fn verified(&self) -> Option<&Verified> {
        self.core.outcome().and_then(Result::ok)
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for AsyncDecryptor<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let plain = this.core.plaintext();
            if !plain.is_empty() {
                let n = out.remaining().min(plain.len());
                out.put_slice(&plain[..n]);
                this.core.consume_plaintext(n);
                return Poll::Ready(Ok(()));
            }
            if let Some(outcome) = this.core.outcome() {
                return Poll::Ready(outcome.map(|_| ()).map_err(io::Error::from));
            }
            let spare = this.core.spare();
            if spare.is_empty() {
                this.core.decode(false)?;
                continue;
            }
            let mut buf = ReadBuf::new(spare);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut buf))?;
            let n = buf.filled().len();
            if n == 0 {
                this.core.decode(true)?;
            } else {
                this.core.filled(n);
            }
        }
    }
}

/// Encrypts plaintext written to it into an async ciphertext sink.
/// `shutdown` seals the final chunk and writes the signed trailer.
pub struct AsyncEncryptor<'a, W> {
    inner: W,
    core: EncoderCore<'a>,
}

impl<'a, W: AsyncWrite + Unpin> AsyncEncryptor<'a, W> {
    /// Writes the header to `inner` and returns the payload writer.
    pub async fn new(prepared: Prepared<'a>, mut inner: W, placement: Stanzas) -> Result<Self> {
        inner.write_all(&prepared.header_bytes(placement)?).await?;
        Ok(Self {
            inner,
            core: EncoderCore::new(prepared)?,
        })
    }

    /// The inner writer.
    pub fn get_inner_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// The summary, after a successful `shutdown`.
    pub fn written(&self) -> Option<&Written> {
        self.core.summary()
    }

    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.core.pending().is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, self.core.pending()))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.core.consume(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for AsyncEncryptor<'_, W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            ready!(this.poll_drain(cx))?;
            let taken = this.core.accept(data)?;
            if taken > 0 || data.is_empty() {
                return Poll::Ready(Ok(taken));
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        this.core.finish()?;
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}
