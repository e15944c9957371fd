//! `FramedConn`: a byte stream read and written as varint length-delimited
//! frames (the codec of `tether_proto`), holding no buffer between frames.

use std::fmt;
use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use prost::Message;
use tether_proto::{FrameDecoder, FrameError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::FramedError;

/// The least one read asks of the stream, so that frames are never read a
/// few bytes at a time, and the size of the stack buffer that takes the
/// first bytes of a frame.
const READ_CHUNK_BYTES: usize = 4 * 1024;

/// Bytes of frames in flight that a set of connections may hold at once,
/// shared by cloning.
///
/// A [`FramedConn`] made [`with_budget`](FramedConn::with_budget) takes the
/// whole length of each frame longer than one read chunk (4 KiB) from the
/// budget as soon as the frame's header is complete, before it allocates
/// the buffer for it, and gives it back when the next frame is read or the
/// connection is dropped: so the budget also covers the time the caller
/// spends on the body it was handed. When the budget cannot cover a frame,
/// the read waits (not reading from the socket, so the peer is held back
/// by TCP) until other frames have given theirs back. Smaller frames take
/// nothing: one read chunk per connection is bounded by the connection cap.
#[derive(Clone, Debug)]
pub struct FrameBudget {
    inner: Arc<BudgetInner>,
}

#[derive(Debug)]
struct BudgetInner {
    permits: Arc<Semaphore>,
    total: usize,
    /// Frames that had to wait for the budget.
    waits: AtomicU64,
}

impl FrameBudget {
    /// A budget of `bytes` (at most `Semaphore::MAX_PERMITS`, far above
    /// any memory).
    pub fn new(bytes: usize) -> FrameBudget {
        let total = bytes.min(Semaphore::MAX_PERMITS);
        FrameBudget {
            inner: Arc::new(BudgetInner {
                permits: Arc::new(Semaphore::new(total)),
                total,
                waits: AtomicU64::new(0),
            }),
        }
    }

    /// The whole budget, in bytes.
    pub fn total(&self) -> usize {
        self.inner.total
    }

    /// Bytes taken by frames now.
    pub fn in_use(&self) -> usize {
        self.inner
            .total
            .saturating_sub(self.inner.permits.available_permits())
    }

    /// How many frames have had to wait for the budget so far.
    pub fn waits(&self) -> u64 {
        self.inner.waits.load(Ordering::Relaxed)
    }
}

/// A frame's share of a [`FrameBudget`], held by its connection.
#[derive(Debug)]
struct Held {
    _permit: OwnedSemaphorePermit,
    /// Whether the frame was handed out: its share goes back when the
    /// next read starts.
    returned: bool,
}

/// A byte stream read and written as varint length-delimited frames: a
/// body's length as a protobuf varint, then the body.
///
/// Reading ([`read_frame`](Self::read_frame)) needs `S: AsyncRead`, writing
/// ([`send`](Self::send), [`feed`](Self::feed), [`flush`](Self::flush))
/// `S: AsyncWrite`, so the same type serves a whole stream or one half of a
/// split one.
///
/// Memory: between frames a connection holds no buffer at all, which is
/// what makes a thousand idle peers cost nothing, even while a read waits
/// on them: the first bytes of a frame land in a buffer on the stack for
/// the duration of one poll. Once the header is known, the read buffer is
/// allocated once to the length it announces (at least one 4 KiB read
/// chunk, at most the caller's `max_frame_bytes` and the header), and the
/// body is handed out without copying. Encoded frames wait in a write
/// buffer until [`flush`](Self::flush) has written them, and that buffer
/// too is freed once it is empty.
pub struct FramedConn<S> {
    stream: S,
    /// Bytes read and not yet returned as frames. Empty and unallocated
    /// between frames unless the peer sent the next frame's first bytes
    /// with the last one's end.
    read_buf: BytesMut,
    /// Frames encoded and not yet written. Writes advance it, so a flush
    /// that was dropped part way leaves exactly what is still to be written.
    write_buf: BytesMut,
    /// The budget that frames in flight are taken from, if any.
    budget: Option<FrameBudget>,
    /// The share of the budget the frame being read (or last handed out)
    /// holds.
    held: Option<Held>,
    /// Whether the frame being read has been counted as waiting.
    waited: bool,
}

impl<S> FramedConn<S> {
    /// Frames over `stream`; nothing is allocated until bytes move.
    pub fn new(stream: S) -> Self {
        Self {
            stream,
            read_buf: BytesMut::new(),
            write_buf: BytesMut::new(),
            budget: None,
            held: None,
            waited: false,
        }
    }

    /// Frames over `stream`, each frame longer than a read chunk taking its
    /// length from `budget` before its buffer is allocated (see
    /// [`FrameBudget`]).
    pub fn with_budget(stream: S, budget: FrameBudget) -> Self {
        Self {
            budget: Some(budget),
            ..Self::new(stream)
        }
    }

    /// From now on, takes each frame longer than a read chunk from
    /// `budget` (see [`with_budget`](Self::with_budget)): for a connection
    /// that must prove itself before it may use the shared budget. Call it
    /// between frames.
    pub fn set_budget(&mut self, budget: FrameBudget) {
        self.budget = Some(budget);
    }

    /// Whether the frame being read waits for the budget: its peer is not
    /// silent, the reader is holding it back.
    pub fn waiting_for_budget(&self) -> bool {
        self.waited
    }

    /// The stream, to read its addresses or set socket options.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// The stream, mutably (to shut it down, say). Bytes read or written
    /// through it directly bypass the frame buffers: do so only between
    /// frames, with nothing buffered.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// Unwraps the stream. Bytes read and not yet returned as frames
    /// ([`buffered_bytes`](Self::buffered_bytes)) and frames fed but not
    /// flushed are dropped with the buffers.
    pub fn into_inner(self) -> S {
        self.stream
    }

    /// Bytes read from the stream and not yet returned as a frame: the
    /// start of the next frame, or further whole frames that arrived with
    /// the last one. The buffer holding them may be allocated to the
    /// length the next frame's header announces.
    pub fn buffered_bytes(&self) -> usize {
        self.read_buf.len()
    }
}

impl<S: AsyncRead + Unpin> FramedConn<S> {
    /// The body of the next frame, or `None` when the stream ended cleanly
    /// between two frames.
    ///
    /// A header that declares a body over `max_frame_bytes` is refused as
    /// soon as it is complete, before room for the body is allocated.
    ///
    /// Cancel safe: dropped before it returns (by `select!` or a timeout),
    /// the bytes it read stay buffered, and the next call goes on from them.
    ///
    /// # Errors
    ///
    /// [`FramedError::Io`] when reading fails; [`FramedError::Frame`] with
    /// [`FrameError::InvalidHeader`] or [`FrameError::TooLarge`] for a header
    /// that cannot be accepted, and [`FrameError::Truncated`] when the stream
    /// ends inside a frame. After an error the stream is not at a frame
    /// boundary any more: close the connection.
    pub async fn read_frame(
        &mut self,
        max_frame_bytes: usize,
    ) -> Result<Option<Bytes>, FramedError> {
        let mut frames = FrameDecoder::new(max_frame_bytes);
        if self.held.as_ref().is_some_and(|held| held.returned) {
            // The caller is done with the last frame.
            self.held = None;
        }
        loop {
            if let Some(body) = frames.decode(&mut self.read_buf)? {
                if self.read_buf.is_empty() {
                    // The body keeps its allocation alive for as long as the
                    // caller holds it; the connection lets go of it now.
                    self.read_buf = BytesMut::new();
                }
                if let Some(held) = &mut self.held {
                    held.returned = true;
                }
                return Ok(Some(body));
            }
            let n_read = if self.read_buf.is_empty() {
                poll_fn(|cx| self.poll_read_frame_start(cx, max_frame_bytes)).await?
            } else {
                // `decode` has just checked the header as far as it has
                // arrived, so a length it announces is within the limit.
                self.take_budget().await;
                self.make_room_for_frame();
                self.stream.read_buf(&mut self.read_buf).await?
            };
            if n_read == 0 {
                return Ok(frames.decode_eof(&mut self.read_buf)?);
            }
        }
    }

    /// Reads the first bytes of a frame into a buffer on the stack, and
    /// only then allocates the read buffer: to what arrived when it holds
    /// whole frames, else as `read_buf_capacity` says. So a peer that
    /// sends nothing costs no allocation while the read waits.
    ///
    /// The bytes move into `self.read_buf` in the poll that read them, so
    /// dropping the future between polls loses nothing.
    fn poll_read_frame_start(
        &mut self,
        cx: &mut Context<'_>,
        max_frame_bytes: usize,
    ) -> Poll<Result<usize, FramedError>> {
        let mut stack = [MaybeUninit::<u8>::uninit(); READ_CHUNK_BYTES];
        let mut chunk = ReadBuf::uninit(&mut stack);
        ready!(Pin::new(&mut self.stream).poll_read(cx, &mut chunk))?;
        let arrived = chunk.filled();
        if arrived.is_empty() {
            return Poll::Ready(Ok(0));
        }
        // A header refused here is refused before anything is allocated.
        let capacity = match tether_proto::check(arrived, max_frame_bytes)? {
            Some(_) => arrived.len(),
            // The rest is allocated once the budget allows it.
            None if self.budget.is_some() => arrived.len(),
            None => read_buf_capacity(arrived),
        };
        let mut read_buf = BytesMut::with_capacity(capacity);
        read_buf.extend_from_slice(arrived);
        self.read_buf = read_buf;
        Poll::Ready(Ok(arrived.len()))
    }

    /// Takes the length of the frame the read buffer starts with from the
    /// budget, once its header is complete and unless it is small or has
    /// its share already; waits while the budget cannot cover it.
    ///
    /// Cancel safe: dropped while it waits, it holds nothing, and the next
    /// call waits again.
    async fn take_budget(&mut self) {
        let Some(budget) = &self.budget else {
            return;
        };
        if self.held.is_some() {
            return;
        }
        let Some(frame_len) = announced_frame_len(&self.read_buf) else {
            return;
        };
        if frame_len <= READ_CHUNK_BYTES {
            return;
        }
        // A frame larger than the whole budget waits for all of it.
        let share = u32::try_from(frame_len.min(budget.inner.total)).unwrap_or(u32::MAX);
        let permits = Arc::clone(&budget.inner.permits);
        let permit = match Arc::clone(&permits).try_acquire_many_owned(share) {
            Ok(permit) => permit,
            Err(_) => {
                if !self.waited {
                    self.waited = true;
                    budget.inner.waits.fetch_add(1, Ordering::Relaxed);
                }
                match permits.acquire_many_owned(share).await {
                    Ok(permit) => permit,
                    // The semaphore is never closed.
                    Err(_) => return,
                }
            }
        };
        self.waited = false;
        self.held = Some(Held {
            _permit: permit,
            returned: false,
        });
    }

    /// Makes sure the next read can take the rest of the frame the read
    /// buffer starts with, or the rest of its header. When it cannot, the
    /// buffer is replaced by one of `read_buf_capacity` (the buffered
    /// bytes copied over) rather than grown, so that it is allocated to
    /// exactly that and not to a doubling of its old size.
    fn make_room_for_frame(&mut self) {
        let n_buffered = self.read_buf.len();
        let needed = announced_frame_len(&self.read_buf).unwrap_or(n_buffered + 1);
        if self.read_buf.capacity() >= needed {
            return;
        }
        let mut grown = BytesMut::with_capacity(read_buf_capacity(&self.read_buf));
        grown.extend_from_slice(&self.read_buf);
        self.read_buf = grown;
    }
}

impl<S: AsyncWrite + Unpin> FramedConn<S> {
    /// Writes `message` as one frame and flushes it, with whatever was fed
    /// before it.
    ///
    /// The receiver's limit is the caller's to respect (see
    /// [`feed_limited`](Self::feed_limited)): a frame over it makes the
    /// receiver close the connection.
    ///
    /// Cancel safe in the sense of [`flush`](Self::flush): dropped part way,
    /// the rest of the frame is written by the next `send` or `flush`.
    ///
    /// # Errors
    ///
    /// [`FramedError::Io`] when writing or flushing fails.
    pub async fn send<M: Message>(&mut self, message: &M) -> Result<(), FramedError> {
        self.feed(message);
        self.flush().await
    }

    /// Encodes `message` as one frame after those already fed, without
    /// writing anything: a caller that sends several frames at once feeds
    /// them all, then flushes once.
    ///
    /// The write buffer grows with each frame until the next flush; the
    /// caller bounds how much it feeds.
    pub fn feed<M: Message>(&mut self, message: &M) {
        tether_proto::encode(message, &mut self.write_buf);
    }

    /// As [`feed`](Self::feed), unless the body would be longer than
    /// `max_frame_bytes`, the limit of the peer that reads it.
    ///
    /// # Errors
    ///
    /// [`FrameError::TooLarge`] when the body is over the limit; nothing is
    /// fed, and the connection can go on.
    pub fn feed_limited<M: Message>(
        &mut self,
        message: &M,
        max_frame_bytes: usize,
    ) -> Result<(), FrameError> {
        tether_proto::encode_limited(message, max_frame_bytes, &mut self.write_buf)
    }

    /// Writes every frame fed so far and flushes the stream.
    ///
    /// Cancel safe: each write takes what it wrote off the write buffer, so
    /// a flush dropped part way (by a timeout, say) leaves the unwritten
    /// rest for the next call, and frames are never cut or repeated.
    ///
    /// # Errors
    ///
    /// [`FramedError::Io`] when writing or flushing fails, or with
    /// `WriteZero` when the stream takes no more bytes.
    pub async fn flush(&mut self) -> Result<(), FramedError> {
        while !self.write_buf.is_empty() {
            if self.stream.write_buf(&mut self.write_buf).await? == 0 {
                return Err(io::Error::from(io::ErrorKind::WriteZero).into());
            }
        }
        // Written out: the buffer's allocation goes, as the read buffer's
        // does between frames.
        self.write_buf = BytesMut::new();
        self.stream.flush().await?;
        Ok(())
    }
}

impl<S: fmt::Debug> fmt::Debug for FramedConn<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FramedConn")
            .field("stream", &self.stream)
            .field("buffered_bytes", &self.read_buf.len())
            .field("unflushed_bytes", &self.write_buf.len())
            .field("budget", &self.budget.as_ref().map(FrameBudget::total))
            .finish()
    }
}

/// The length of the whole frame at the start of `buf`, header included,
/// once its header is complete.
///
/// Called only on bytes `tether_proto::check` accepted as far as they go,
/// so a complete header is a valid varint within the caller's limit; prost
/// reads it here because the codec's own header reader is private.
fn announced_frame_len(buf: &[u8]) -> Option<usize> {
    let mut rest = buf;
    let body_len = prost::decode_length_delimiter(&mut rest).ok()?;
    let header_len = buf.len() - rest.len();
    body_len.checked_add(header_len)
}

/// The read buffer to allocate for the incomplete frame `buffered` starts
/// with: the frame's whole length once its header is complete (a body over
/// the limit was refused by then), but at least one read chunk, so that
/// small frames are not read a few bytes at a time. While the header is
/// incomplete (under 10 bytes), one read chunk.
fn read_buf_capacity(buffered: &[u8]) -> usize {
    announced_frame_len(buffered)
        .unwrap_or(0)
        .max(READ_CHUNK_BYTES)
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::pin::pin;
    use std::task::Waker;

    use tether_proto::{Ping, Reject, RejectReason, ServerKind, ServerMessage};

    use super::*;

    /// `body` as one frame: its length as a varint, then the body.
    fn frame(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        prost::encode_length_delimiter(body.len(), &mut out)
            .expect("a Vec grows to fit a ten-byte header");
        out.extend_from_slice(body);
        out
    }

    /// Bodies around the one-byte header's limit of 127, and ones longer
    /// than a read chunk.
    fn bodies() -> Vec<Vec<u8>> {
        let pattern = |len: usize| (0..len).map(|n| (n % 251) as u8).collect::<Vec<u8>>();
        vec![
            Vec::new(),
            b"a".to_vec(),
            pattern(127),
            pattern(128),
            pattern(READ_CHUNK_BYTES + 1),
            pattern(70_000),
            Vec::new(),
        ]
    }

    fn stream_of(bodies: &[Vec<u8>]) -> Vec<u8> {
        bodies.iter().flat_map(|body| frame(body)).collect()
    }

    /// What a [`Chunks`] reader does once its chunks are used up.
    #[derive(Clone, Copy, Debug)]
    enum Then {
        /// Reads return 0 bytes: the end of the stream.
        Eof,
        /// Reads never complete, as from a peer that went quiet.
        Quiet,
    }

    /// A reader that hands out its chunks one read at a time (a chunk
    /// longer than the caller's buffer over several reads). With
    /// `pending_first` each read first returns `Pending` once, waking
    /// itself, as a socket with nothing ready yet would.
    struct Chunks {
        chunks: VecDeque<Vec<u8>>,
        then: Then,
        pending_first: bool,
        ready_now: bool,
    }

    impl Chunks {
        fn new<'a>(chunks: impl IntoIterator<Item = &'a [u8]>, then: Then) -> Self {
            Self {
                // An empty read would mean the end of the stream.
                chunks: chunks
                    .into_iter()
                    .filter(|chunk| !chunk.is_empty())
                    .map(<[u8]>::to_vec)
                    .collect(),
                then,
                pending_first: false,
                ready_now: false,
            }
        }

        fn pending_first(mut self) -> Self {
            self.pending_first = true;
            self
        }
    }

    impl AsyncRead for Chunks {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            if this.pending_first && !this.ready_now {
                this.ready_now = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            this.ready_now = false;
            let Some(chunk) = this.chunks.front_mut() else {
                return match this.then {
                    Then::Eof => Poll::Ready(Ok(())),
                    Then::Quiet => Poll::Pending,
                };
            };
            let n = chunk.len().min(buf.remaining());
            buf.put_slice(&chunk[..n]);
            chunk.drain(..n);
            if chunk.is_empty() {
                this.chunks.pop_front();
            }
            Poll::Ready(Ok(()))
        }
    }

    /// Polls `future` once, with a waker that does nothing.
    fn poll_once<F: Future>(future: F) -> Poll<F::Output> {
        pin!(future)
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
    }

    /// Polls `future` until it is ready. [`Chunks`] waits on nothing but
    /// itself, so polling again is all a `Pending` from it asks for.
    fn complete<F: Future>(future: F) -> F::Output {
        let mut future = pin!(future);
        let mut context = Context::from_waker(Waker::noop());
        for _ in 0..1_000_000 {
            if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
                return output;
            }
        }
        panic!("a read of a test reader was not ready within a million polls");
    }

    /// How a test calls `read_frame`.
    #[derive(Clone, Copy, Debug)]
    enum Drive {
        /// Each call is polled until it is ready.
        ToCompletion,
        /// Each call is polled once and dropped if it is not ready, so
        /// every read in the middle of a frame is also a cancellation.
        DropEachPoll,
    }

    /// Reads frames until the end of the stream or an error: the bodies
    /// read, and how it ended.
    fn read_to_end(
        conn: &mut FramedConn<Chunks>,
        max_frame_bytes: usize,
        drive: Drive,
    ) -> (Vec<Vec<u8>>, Result<(), FrameError>) {
        let mut bodies = Vec::new();
        for _ in 0..1_000_000 {
            let poll = match drive {
                Drive::ToCompletion => Poll::Ready(complete(conn.read_frame(max_frame_bytes))),
                Drive::DropEachPoll => poll_once(conn.read_frame(max_frame_bytes)),
            };
            match poll {
                Poll::Pending => {}
                Poll::Ready(Ok(Some(body))) => bodies.push(body.to_vec()),
                Poll::Ready(Ok(None)) => return (bodies, Ok(())),
                Poll::Ready(Err(FramedError::Frame(error))) => return (bodies, Err(error)),
                Poll::Ready(Err(FramedError::Io(error))) => panic!("a test reader failed: {error}"),
            }
        }
        panic!("the stream did not end within a million polls");
    }

    #[test]
    fn frames_are_read_whatever_the_size_of_each_read() {
        let bodies = bodies();
        let stream = stream_of(&bodies);
        // (read size, whether each read is first `Pending`)
        let cases = [
            (1, false),
            (1, true),
            (2, false),
            (3, true),
            (127, false),
            (READ_CHUNK_BYTES - 1, true),
            (READ_CHUNK_BYTES, false),
            (65_536, true),
            (stream.len(), false),
        ];
        for (read_len, pending_first) in cases {
            let mut reader = Chunks::new(stream.chunks(read_len), Then::Eof);
            if pending_first {
                reader = reader.pending_first();
            }
            let mut conn = FramedConn::new(reader);
            assert_eq!(
                read_to_end(&mut conn, 1 << 20, Drive::ToCompletion),
                (bodies.clone(), Ok(())),
                "reads of {read_len} bytes, pending first: {pending_first}"
            );
        }
    }

    #[test]
    fn frames_split_across_two_reads_at_every_point_are_read_the_same() {
        let bodies = vec![b"abc".to_vec(), vec![7; 200], Vec::new(), vec![9; 130]];
        let stream = stream_of(&bodies);
        for split in 0..=stream.len() {
            let (first, second) = stream.split_at(split);
            let mut conn = FramedConn::new(Chunks::new([first, second], Then::Eof));
            assert_eq!(
                read_to_end(&mut conn, 1024, Drive::ToCompletion),
                (bodies.clone(), Ok(())),
                "split at {split}"
            );
        }
    }

    #[test]
    fn a_read_dropped_in_the_middle_of_a_frame_loses_nothing() {
        let bodies = bodies();
        let stream = stream_of(&bodies);
        for read_len in [1, 2, 5, 300, READ_CHUNK_BYTES, stream.len()] {
            // Each read returns `Pending` before it has bytes, so every
            // future is dropped after one read: with one-byte reads, at
            // every position of every header and body.
            let reader = Chunks::new(stream.chunks(read_len), Then::Eof).pending_first();
            let mut conn = FramedConn::new(reader);
            assert_eq!(
                read_to_end(&mut conn, 1 << 20, Drive::DropEachPoll),
                (bodies.clone(), Ok(())),
                "reads of {read_len} bytes"
            );
        }
    }

    #[test]
    fn the_end_of_the_stream_is_clean_only_between_frames() {
        let abc = frame(b"abc");
        let two_byte_header = frame(&[1; 200]);
        // (what the peer sent before closing, bodies read, how it ended)
        type Case = (Vec<u8>, Vec<Vec<u8>>, Result<(), FrameError>);
        let cases: [Case; 6] = [
            (Vec::new(), vec![], Ok(())),
            (abc.clone(), vec![b"abc".to_vec()], Ok(())),
            (
                [&abc[..], &abc[..2]].concat(),
                vec![b"abc".to_vec()],
                Err(FrameError::Truncated { buffered: 2 }),
            ),
            (
                abc[..1].to_vec(),
                vec![],
                Err(FrameError::Truncated { buffered: 1 }),
            ),
            // Half of a two-byte header.
            (
                two_byte_header[..1].to_vec(),
                vec![],
                Err(FrameError::Truncated { buffered: 1 }),
            ),
            (
                two_byte_header[..150].to_vec(),
                vec![],
                Err(FrameError::Truncated { buffered: 150 }),
            ),
        ];
        for (sent, bodies, ending) in cases {
            for read_len in [1, sent.len().max(1)] {
                let mut conn = FramedConn::new(Chunks::new(sent.chunks(read_len), Then::Eof));
                assert_eq!(
                    read_to_end(&mut conn, 1024, Drive::ToCompletion),
                    (bodies.clone(), ending.clone()),
                    "{sent:02x?} in reads of {read_len}"
                );
            }
        }
    }

    #[test]
    fn an_oversized_frame_is_refused_from_its_header_before_any_allocation() {
        // (header as it arrives, limit, declared length, read buffer
        // capacity after); the peer then goes quiet, so a reader that
        // waited for the body would never return.
        type Case<'a> = (Vec<&'a [u8]>, usize, u64, usize);
        let cases: [Case<'_>; 4] = [
            (vec![&[0x81, 0x08]], 1024, 1025, 0),
            (vec![&[0x80, 0x80, 0x80, 0x80, 0x04]], 1 << 20, 1 << 30, 0),
            (
                vec![&[0xff, 0xff, 0xff, 0xff, 0x0f]],
                1 << 20,
                u64::from(u32::MAX),
                0,
            ),
            // The header in two reads: its first byte waits in one read
            // chunk, which is all that is allocated.
            (
                vec![&[0x80], &[0x80, 0x80, 0x04]],
                1 << 20,
                1 << 23,
                READ_CHUNK_BYTES,
            ),
        ];
        for (chunks, limit, len, capacity) in cases {
            let mut conn = FramedConn::new(Chunks::new(chunks.iter().copied(), Then::Quiet));
            let poll = poll_once(conn.read_frame(limit));
            assert!(
                matches!(
                    poll,
                    Poll::Ready(Err(FramedError::Frame(FrameError::TooLarge {
                        len: declared,
                        max_frame_bytes,
                    }))) if declared == len && max_frame_bytes == limit
                ),
                "{chunks:02x?}: {poll:?}"
            );
            assert_eq!(conn.read_buf.capacity(), capacity, "{chunks:02x?}");
        }
    }

    #[test]
    fn the_read_buffer_is_allocated_to_the_length_the_header_announces() {
        let body = vec![3; 100_000];
        let stream = frame(&body);
        // (bytes in the first read, read buffer capacity after it)
        let cases = [
            // The header is complete: room for the whole frame, at once.
            (10, stream.len()),
            (3, stream.len()),
            // Part of the header: one read chunk until the rest arrives.
            (1, READ_CHUNK_BYTES),
        ];
        for (first_len, capacity) in cases {
            let reader = Chunks::new([&stream[..first_len], &stream[first_len..]], Then::Quiet)
                .pending_first();
            let mut conn = FramedConn::new(reader);
            // The reader's first `Pending`, then the first read and its second `Pending`.
            assert!(poll_once(conn.read_frame(1 << 20)).is_pending());
            assert!(poll_once(conn.read_frame(1 << 20)).is_pending());
            assert_eq!(conn.buffered_bytes(), first_len);
            assert_eq!(
                conn.read_buf.capacity(),
                capacity,
                "first read of {first_len}"
            );
            let read = complete(conn.read_frame(1 << 20)).ok().flatten();
            assert_eq!(
                read.as_deref(),
                Some(&body[..]),
                "first read of {first_len}"
            );
        }
    }

    #[test]
    fn frames_read_within_a_budget_come_out_the_same_and_give_it_back() {
        let bodies = bodies();
        let stream = stream_of(&bodies);
        let budget = FrameBudget::new(1 << 20);
        for read_len in [1, 3, READ_CHUNK_BYTES, stream.len()] {
            for drive in [Drive::ToCompletion, Drive::DropEachPoll] {
                let reader = Chunks::new(stream.chunks(read_len), Then::Eof).pending_first();
                let mut conn = FramedConn::with_budget(reader, budget.clone());
                assert_eq!(
                    read_to_end(&mut conn, 1 << 20, drive),
                    (bodies.clone(), Ok(())),
                    "reads of {read_len} bytes, {drive:?}"
                );
                drop(conn);
                assert_eq!(budget.in_use(), 0, "reads of {read_len} bytes, {drive:?}");
            }
        }
        assert_eq!(budget.waits(), 0);
    }

    #[test]
    fn a_frame_the_budget_cannot_cover_waits_unallocated_until_another_gives_it_back() {
        let big = vec![5; 60_000];
        let stream = [frame(&big), frame(b"next")].concat();
        let budget = FrameBudget::new(100_000);
        let mut first =
            FramedConn::with_budget(Chunks::new([&stream[..]], Then::Quiet), budget.clone());
        let read = complete(first.read_frame(1 << 20)).ok().flatten();
        assert_eq!(read.as_deref(), Some(&big[..]));
        // The first frame's share stays taken while its body is processed.
        assert!(budget.in_use() >= big.len());

        let mut second = FramedConn::with_budget(
            Chunks::new(
                [&stream[..READ_CHUNK_BYTES], &stream[READ_CHUNK_BYTES..]],
                Then::Quiet,
            ),
            budget.clone(),
        );
        for _ in 0..3 {
            assert!(poll_once(second.read_frame(1 << 20)).is_pending());
        }
        assert_eq!(budget.waits(), 1, "the second frame waits, counted once");
        assert!(second.waiting_for_budget());
        assert!(!first.waiting_for_budget());
        assert_eq!(second.buffered_bytes(), READ_CHUNK_BYTES);
        assert!(
            second.read_buf.capacity() < big.len(),
            "no room is allocated for a frame while it waits"
        );

        // The first connection reads its next frame: the big one's share
        // goes back, and the second frame goes on.
        let next = complete(first.read_frame(1 << 20)).ok().flatten();
        assert_eq!(next.as_deref(), Some(&b"next"[..]));
        let read = complete(second.read_frame(1 << 20)).ok().flatten();
        assert_eq!(read.as_deref(), Some(&big[..]));
        drop((first, second));
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn no_buffer_is_held_between_frames() {
        let first = frame(b"first");
        let second = frame(b"second");
        let both = [&first[..], &second[..]].concat();
        let part_of_second = [&first[..], &second[..3]].concat();
        // (what arrives in one read, frames read, bytes then buffered,
        // whether a buffer is held)
        let cases: [(&[u8], usize, usize, bool); 4] = [
            (&first, 1, 0, false),
            (&both, 2, 0, false),
            // The second frame waits in the buffer the first came in.
            (&both, 1, second.len(), true),
            (&part_of_second, 1, 3, true),
        ];
        for (arrived, n_frames, n_buffered, holds_buffer) in cases {
            let mut conn = FramedConn::new(Chunks::new([arrived], Then::Quiet));
            for _ in 0..n_frames {
                assert!(matches!(
                    poll_once(conn.read_frame(1024)),
                    Poll::Ready(Ok(Some(_)))
                ));
            }
            assert_eq!(conn.buffered_bytes(), n_buffered, "{arrived:02x?}");
            assert_eq!(conn.read_buf.capacity() > 0, holds_buffer, "{arrived:02x?}");
        }
        // Waiting on a quiet peer holds nothing either.
        let mut quiet = FramedConn::new(Chunks::new([], Then::Quiet));
        assert!(poll_once(quiet.read_frame(1024)).is_pending());
        assert_eq!(quiet.read_buf.capacity(), 0);
    }

    fn ping(nonce: u64) -> ServerMessage {
        ServerMessage::from(Ping { nonce })
    }

    fn decode(body: Option<Bytes>) -> Option<ServerKind> {
        tether_proto::decode_server_message(body?).ok()?.kind
    }

    #[tokio::test]
    async fn a_sent_frame_is_flushed_and_the_peer_reads_it() {
        let (near, far) = tokio::io::duplex(64);
        let mut near = FramedConn::new(near);
        let mut far = FramedConn::new(far);
        near.send(&ping(7))
            .await
            .expect("the duplex takes the frame");
        let body = far.read_frame(1024).await.expect("a frame");
        assert_eq!(decode(body), Some(ServerKind::Ping(Ping { nonce: 7 })));
        assert_eq!(near.write_buf.capacity(), 0, "nothing is held once written");
    }

    #[tokio::test]
    async fn fed_frames_go_out_together_on_one_flush() {
        let (near, far) = tokio::io::duplex(1024);
        let mut near = FramedConn::new(near);
        let mut far = FramedConn::new(far);
        for nonce in 1..=3 {
            near.feed(&ping(nonce));
        }
        assert!(
            poll_once(far.read_frame(1024)).is_pending(),
            "nothing is written before the flush"
        );
        near.flush().await.expect("the duplex takes the frames");
        for nonce in 1..=3 {
            let body = far.read_frame(1024).await.expect("a frame");
            assert_eq!(decode(body), Some(ServerKind::Ping(Ping { nonce })));
        }
    }

    #[tokio::test]
    async fn a_frame_over_the_peers_limit_is_not_fed() {
        let (near, far) = tokio::io::duplex(1024);
        let mut near = FramedConn::new(near);
        let mut far = FramedConn::new(far);
        let reject = ServerMessage::from(Reject::new(RejectReason::ShuttingDown, "x".repeat(100)));
        let body_len = reject.encoded_len();
        // (limit, accepted)
        let cases = [(body_len - 1, false), (body_len, true)];
        for (limit, accepted) in cases {
            let fed = near.feed_limited(&reject, limit);
            assert_eq!(fed.is_ok(), accepted, "limit {limit}");
            if !accepted {
                assert_eq!(near.write_buf.len(), 0, "a refused frame feeds nothing");
            }
        }
        near.send(&ping(1))
            .await
            .expect("the duplex takes the frames");
        let first = far.read_frame(1024).await.expect("a frame");
        assert!(matches!(decode(first), Some(ServerKind::Reject(_))));
        let second = far.read_frame(1024).await.expect("a frame");
        assert_eq!(decode(second), Some(ServerKind::Ping(Ping { nonce: 1 })));
    }

    #[tokio::test]
    async fn a_flush_dropped_part_way_is_finished_by_the_next() {
        // The duplex takes 16 bytes at a time, so the first poll writes
        // part of the frame and waits for the reader.
        let (near, far) = tokio::io::duplex(16);
        let mut near = FramedConn::new(near);
        let mut far = FramedConn::new(far);
        let reject = ServerMessage::from(Reject::new(RejectReason::ShuttingDown, "y".repeat(500)));
        near.feed(&reject);
        let before = near.write_buf.len();
        assert!(poll_once(near.flush()).is_pending());
        assert_eq!(
            near.write_buf.len(),
            before - 16,
            "what was written is gone"
        );
        let (flushed, read) = tokio::join!(near.flush(), far.read_frame(1024));
        flushed.expect("the rest is written");
        match decode(read.expect("a frame")) {
            Some(ServerKind::Reject(received)) => assert_eq!(received.message, "y".repeat(500)),
            other => panic!("expected the Reject, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn the_halves_of_a_split_stream_read_and_write_frames() {
        let (near, far) = tokio::io::duplex(1024);
        let (near_read, near_write) = tokio::io::split(near);
        let mut reader = FramedConn::new(near_read);
        let mut writer = FramedConn::new(near_write);
        let mut far = FramedConn::new(far);
        writer.send(&ping(1)).await.expect("sent");
        let echoed = far.read_frame(1024).await.expect("a frame");
        assert_eq!(decode(echoed), Some(ServerKind::Ping(Ping { nonce: 1 })));
        far.send(&ping(2)).await.expect("sent");
        let answer = reader.read_frame(1024).await.expect("a frame");
        assert_eq!(decode(answer), Some(ServerKind::Ping(Ping { nonce: 2 })));
        drop(far);
        assert!(matches!(reader.read_frame(1024).await, Ok(None)));
    }
}
