//! `Echo`: the example full-duplex echo handler, a reader and a writer per
//! socket joined by a queue bounded in bytes.

use std::io;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::{Connection, Error, Handler, MeteredStream, spawn_in_current_span};

/// Default of [`EchoConfig::queue_bytes`].
pub const DEFAULT_ECHO_QUEUE_BYTES: usize = 256 * 1024;
/// Default of [`EchoConfig::read_chunk_bytes`].
pub const DEFAULT_ECHO_READ_CHUNK_BYTES: usize = 16 * 1024;

/// The limits of one echo connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EchoConfig {
    /// Most bytes read from a peer and not yet written back to it. When the
    /// queue is full the reader stops reading (policy: block), so a peer
    /// that does not read its echo fills the socket buffers and then cannot
    /// send any more: the server holds at most this many bytes per
    /// connection, plus one read chunk.
    pub queue_bytes: usize,
    /// Most bytes asked of one `read()` call; each read first reserves this
    /// much of the queue.
    pub read_chunk_bytes: usize,
}

impl Default for EchoConfig {
    fn default() -> Self {
        Self {
            queue_bytes: DEFAULT_ECHO_QUEUE_BYTES,
            read_chunk_bytes: DEFAULT_ECHO_READ_CHUNK_BYTES,
        }
    }
}

/// The echo handler: every byte a peer sends is sent back to it, until the
/// peer closes its sending side (the echo then finishes and closes too) or
/// the server shuts down (reading stops, what was read is still echoed).
///
/// Each connection runs a reader (the connection's task) and a writer (a task
/// spawned in the connection's span) concurrently, joined by a queue of at
/// most [`EchoConfig::queue_bytes`].
#[derive(Clone, Debug)]
pub struct Echo {
    config: EchoConfig,
    /// `read_chunk_bytes` as the semaphore takes it.
    read_chunk_permits: u32,
}

impl Echo {
    /// An echo handler with `config`, once its limits are checked: a read
    /// chunk of 1 byte to 4 GiB, and a queue that holds at least one chunk.
    pub fn new(config: EchoConfig) -> Result<Self, Error> {
        let read_chunk_permits = u32::try_from(config.read_chunk_bytes)
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| Error::InvalidConfig {
                name: "read_chunk_bytes",
                value: config.read_chunk_bytes.to_string(),
                expected: "give 1 byte to 4 GiB",
            })?;
        if config.queue_bytes < config.read_chunk_bytes
            || config.queue_bytes > Semaphore::MAX_PERMITS
        {
            return Err(Error::InvalidConfig {
                name: "queue_bytes",
                value: config.queue_bytes.to_string(),
                expected: "give at least read_chunk_bytes",
            });
        }
        Ok(Self {
            config,
            read_chunk_permits,
        })
    }

    /// The limits in force.
    pub fn config(&self) -> &EchoConfig {
        &self.config
    }

    /// Echoes what `reader` yields into `writer` until `reader` ends,
    /// either side fails, or `shutdown` is cancelled; then shuts `writer`
    /// down (a FIN on a socket). Returns the number of bytes echoed.
    ///
    /// The writer runs as a task spawned in the current span; this future
    /// reads, and returns once the writer is done.
    pub async fn run<R, W>(
        &self,
        reader: R,
        writer: W,
        shutdown: &CancellationToken,
    ) -> io::Result<u64>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let budget = Arc::new(Semaphore::new(self.config.queue_bytes));
        // Unbounded as a channel, bounded by `budget`: every chunk holds its
        // bytes' permits until it is written.
        let (queue_tx, queue_rx) = unbounded_channel();
        let writer_task = spawn_in_current_span(write_chunks(writer, queue_rx));
        let read_result = self.read_chunks(reader, &queue_tx, &budget, shutdown).await;
        drop(queue_tx);
        let write_result = match writer_task.await {
            Ok(result) => result,
            Err(join_error) if join_error.is_panic() => {
                std::panic::resume_unwind(join_error.into_panic())
            }
            Err(join_error) => Err(io::Error::other(join_error)),
        };
        read_result?;
        write_result
    }

    /// Reads chunks into the queue; returns the number of bytes read.
    async fn read_chunks<R: AsyncRead + Unpin>(
        &self,
        mut reader: R,
        queue: &UnboundedSender<Chunk>,
        budget: &Arc<Semaphore>,
        shutdown: &CancellationToken,
    ) -> io::Result<u64> {
        let chunk_bytes = self.config.read_chunk_bytes;
        let chunk_permits = self.read_chunk_permits;
        let mut scratch = vec![0_u8; chunk_bytes];
        let mut n_total: u64 = 0;
        let cancelled = shutdown.cancelled();
        let writer_gone = queue.closed();
        tokio::pin!(cancelled, writer_gone);
        loop {
            let mut reserved = tokio::select! {
                biased;
                () = &mut cancelled => break,
                () = &mut writer_gone => break,
                permit = Arc::clone(budget).acquire_many_owned(chunk_permits) => match permit {
                    Ok(permit) => permit,
                    // The budget is never closed.
                    Err(_) => break,
                },
            };
            let n_read = tokio::select! {
                biased;
                () = &mut cancelled => break,
                () = &mut writer_gone => break,
                read = reader.read(&mut scratch) => read?,
            };
            if n_read == 0 {
                break;
            }
            // Give back what this read did not use, so the queue's bound is
            // in bytes held, not in reads.
            drop(reserved.split(chunk_bytes - n_read));
            let chunk = Chunk {
                bytes: scratch[..n_read].to_vec(),
                _budget: reserved,
            };
            if queue.send(chunk).is_err() {
                break;
            }
            n_total += n_read as u64;
        }
        Ok(n_total)
    }
}

impl Handler for Echo {
    type Error = io::Error;

    async fn handle(&self, stream: MeteredStream, conn: Connection) -> io::Result<()> {
        let (reader, writer) = stream.into_split();
        let n_echoed = self.run(reader, writer, conn.shutdown_token()).await?;
        debug!(n_echoed, "echo finished");
        Ok(())
    }
}

/// Bytes read and not yet written back, holding their share of the budget.
struct Chunk {
    bytes: Vec<u8>,
    _budget: OwnedSemaphorePermit,
}

/// Writes queued chunks until the reader is done; returns the bytes written.
async fn write_chunks<W: AsyncWrite + Unpin>(
    mut writer: W,
    mut queue: UnboundedReceiver<Chunk>,
) -> io::Result<u64> {
    let mut n_total: u64 = 0;
    while let Some(chunk) = queue.recv().await {
        writer.write_all(&chunk.bytes).await?;
        n_total += chunk.bytes.len() as u64;
        drop(chunk);
        // A buffering writer (TLS) must not sit on an echo while the peer
        // waits for it.
        if queue.is_empty() {
            writer.flush().await?;
        }
    }
    writer.shutdown().await?;
    debug!(n_written = n_total, "echo writer done");
    Ok(n_total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_checked() {
        assert!(Echo::new(EchoConfig::default()).is_ok());
        let cases = [
            EchoConfig {
                queue_bytes: 1024,
                read_chunk_bytes: 0,
            },
            EchoConfig {
                queue_bytes: 1024,
                read_chunk_bytes: 2048,
            },
        ];
        for config in cases {
            assert!(Echo::new(config).is_err(), "{config:?}");
        }
    }

    #[tokio::test]
    async fn echoes_through_a_queue_smaller_than_the_input() {
        let echo = Echo::new(EchoConfig {
            queue_bytes: 8,
            read_chunk_bytes: 4,
        })
        .expect("valid config");
        let input: Vec<u8> = (0..=255).collect();
        let (server_side, mut client_side) = tokio::io::duplex(16);
        let (server_read, server_write) = tokio::io::split(server_side);
        let shutdown = CancellationToken::new();
        let serve = async { echo.run(server_read, server_write, &shutdown).await };
        let client = async {
            let (mut read_half, mut write_half) = tokio::io::split(&mut client_side);
            let send = async {
                write_half.write_all(&input).await?;
                write_half.shutdown().await
            };
            let mut echoed = Vec::new();
            let receive = read_half.read_to_end(&mut echoed);
            let (sent, received) = tokio::join!(send, receive);
            sent.and(received).map(|_| echoed)
        };
        let (served, echoed) = tokio::join!(serve, client);
        assert_eq!(served.expect("echo ran"), input.len() as u64);
        assert_eq!(echoed.expect("client ran"), input);
    }
}
