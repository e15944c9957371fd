//! `MeteredStream`: a byte stream that counts what passes through it into
//! its listener's counters.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::ListenerMetrics;
use crate::telemetry::Handles;

/// A stream (by default an accepted `TcpStream`) whose reads and writes add
/// to its listener's `tether_tcp_bytes_read_total` and
/// `tether_tcp_bytes_written_total`.
///
/// Counting costs one counter increment per completed read or write call
/// that moved bytes, whatever their number; nothing is buffered or copied.
/// It implements `AsyncRead + AsyncWrite + Unpin`, so it can carry TLS
/// (`tokio_rustls::TlsAcceptor::accept(stream)`, which then counts the bytes
/// on the wire) or HTTP (`hyper_util::rt::TokioIo::new(stream)`).
pub struct MeteredStream<S = TcpStream> {
    inner: S,
    /// The listener's handles, shared: one reference count per stream
    /// rather than one per counter.
    handles: Arc<Handles>,
}

impl<S> MeteredStream<S> {
    /// Wraps `inner`, counting into the byte counters of `metrics`.
    pub fn new(inner: S, metrics: &ListenerMetrics) -> Self {
        Self::new_with_handles(inner, metrics.handles())
    }

    pub(crate) fn new_with_handles(inner: S, handles: &Arc<Handles>) -> Self {
        Self {
            inner,
            handles: Arc::clone(handles),
        }
    }

    /// The wrapped stream, to read its addresses or set socket options.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped stream, mutably. Bytes moved through it directly are not
    /// counted.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the stream; bytes moved through it from now on are not counted.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl MeteredStream<TcpStream> {
    /// Splits the socket into a read half and a write half that can move to
    /// different tasks, each still counted. Like `TcpStream::into_split`, it
    /// takes no lock per call.
    pub fn into_split(self) -> (MeteredStream<OwnedReadHalf>, MeteredStream<OwnedWriteHalf>) {
        let (read_half, write_half) = self.inner.into_split();
        let read = MeteredStream {
            inner: read_half,
            handles: Arc::clone(&self.handles),
        };
        let write = MeteredStream {
            inner: write_half,
            handles: self.handles,
        };
        (read, write)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for MeteredStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let filled_before = buf.filled().len();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = poll {
            let n_read = buf.filled().len().saturating_sub(filled_before);
            if n_read > 0 {
                this.handles.bytes_read.increment(n_read as u64);
            }
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for MeteredStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.count_written(&poll);
        poll
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.count_written(&poll);
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S> MeteredStream<S> {
    fn count_written(&self, poll: &Poll<io::Result<usize>>) {
        if let Poll::Ready(Ok(n_written)) = *poll
            && n_written > 0
        {
            self.handles.bytes_written.increment(n_written as u64);
        }
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for MeteredStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeteredStream")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bounds `tokio_rustls::TlsAcceptor::accept` and hyper-util's
    /// `TokioIo` put on the stream they carry.
    fn assert_carries_tls<IO: AsyncRead + AsyncWrite + Unpin + Send + 'static>() {}

    #[test]
    fn metered_streams_can_carry_tls_and_http() {
        assert_carries_tls::<MeteredStream>();
        assert_carries_tls::<MeteredStream<tokio::io::DuplexStream>>();
    }
}
