//! Serving Remoting connections: read frames, run each request as its own task (a long-polling
//! pull must not hold up the sends behind it), write responses in any order (they carry their
//! request's `opaque`), and send this server's own requests to a client (check-backs).
//!
//! A frame that does not decode closes its connection with a WARN naming the peer; nothing else
//! is affected (RocketMQ's `NettyDecoder` closes the channel the same way).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_rustls::server::TlsStream;

use super::command::{Command, SerializeType, MAX_FRAME};

/// Requests of one connection being served at once; the next waits (back-pressure on a client
/// that pipelines, e.g. oneway sends).
const IN_FLIGHT_PER_CONNECTION: usize = 1024;
/// Frames queued for writing on one connection.
pub const WRITE_QUEUE: usize = 1024;
/// Bytes read from a connection's socket at once, at most.
pub const READ_BUFFER: usize = 64 << 10;

/// One client connection, shared by the tasks serving its requests.
pub struct Connection {
    /// The client's address.
    pub peer: SocketAddr,
    /// `peer` as text (`ip:port`), formatted once: every stored message names it as born host.
    pub peer_text: String,
    /// Unique per process, for the client tables.
    pub id: u64,
    out: mpsc::Sender<Vec<u8>>,
    /// The serialization of the client's last request: this server's requests use it.
    ser: Mutex<SerializeType>,
    next_opaque: AtomicI32,
}

impl Connection {
    /// Queues a frame for the client; false if the connection is gone.
    pub async fn send(&self, cmd: &Command) -> bool {
        self.out.send(cmd.encode()).await.is_ok()
    }

    /// Sends a oneway request of `code` with `ext` header fields and `body` to the client, in the
    /// serialization it speaks. False if the connection is gone.
    pub async fn notify(&self, code: i32, ext: &[(&str, String)], body: Vec<u8>) -> bool {
        self.send(&self.oneway(code, ext, body)).await
    }

    fn oneway(&self, code: i32, ext: &[(&str, String)], body: Vec<u8>) -> Command {
        let opaque = self.next_opaque.fetch_add(1, Ordering::Relaxed);
        let mut cmd = Command::request(code, opaque, true, *self.ser.lock());
        for (k, v) in ext {
            cmd.put(k, v);
        }
        cmd.body = body;
        cmd
    }

    /// As [`Connection::notify`] without waiting: false if the connection is gone or its write
    /// queue is full.
    pub fn try_notify(&self, code: i32, ext: &[(&str, String)], body: Vec<u8>) -> bool {
        self.out.try_send(self.oneway(code, ext, body).encode()).is_ok()
    }

    /// True while the client is connected.
    pub fn is_open(&self) -> bool {
        !self.out.is_closed()
    }
}

/// What a server does with requests: `handle` answers one (None for no answer: oneway requests
/// get none anyway), `closed` is told when a connection ends.
#[derive(Clone)]
pub struct Processor {
    /// Serves one request.
    pub handle: Arc<Handler>,
    /// Called once when a connection ends.
    pub closed: Arc<dyn Fn(&Connection) + Send + Sync>,
}

/// Serves one request of a connection: the response, or None for none.
pub type Handler = dyn Fn(Arc<Connection>, Command) -> BoxFuture<Option<Command>> + Send + Sync;

/// A boxed future of a request handler.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

static CONNECTION_IDS: AtomicU64 = AtomicU64::new(1);

/// Calls `accepted` with every connection `listener` accepts, until `stop` turns true. A failed
/// accept (such as running out of file descriptors) is logged and retried after 100 ms.
pub(crate) fn accept_loop(
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
    mut accepted: impl FnMut(TcpStream, SocketAddr) + Send + 'static,
) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                r = listener.accept() => match r {
                    Ok((stream, peer)) => accepted(stream, peer),
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                },
                _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
            }
        }
    });
}

/// Serves one accepted plaintext connection on its own tasks.
pub fn spawn_connection(stream: TcpStream, peer: SocketAddr, processor: Processor) {
    let (rd, tx) = split(stream);
    serve(rd, tx, peer, processor);
}

/// Serves one accepted connection over TLS (handshake done) on its own tasks.
pub fn spawn_tls_connection(stream: TlsStream<TcpStream>, peer: SocketAddr, processor: Processor) {
    let (rd, wr) = tokio::io::split(stream);
    let (tx, rx) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
    spawn_writer(wr, rx);
    serve(BufReader::with_capacity(READ_BUFFER, rd), tx, peer, processor);
}

/// Reads requests from `rd` and serves each on a task of its own; responses go to `tx`.
fn serve(
    mut rd: impl AsyncRead + Send + Unpin + 'static,
    tx: mpsc::Sender<Vec<u8>>,
    peer: SocketAddr,
    processor: Processor,
) {
    let conn = Arc::new(Connection {
        peer,
        peer_text: peer.to_string(),
        id: CONNECTION_IDS.fetch_add(1, Ordering::Relaxed),
        out: tx,
        ser: Mutex::new(SerializeType::Json),
        next_opaque: AtomicI32::new(1),
    });
    tokio::spawn(async move {
        let limit = Arc::new(Semaphore::new(IN_FLIGHT_PER_CONNECTION));
        loop {
            let frame = match read_frame(&mut rd).await {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "remoting connection closed: malformed frame");
                    break;
                }
            };
            let cmd = match Command::decode(&frame) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "remoting connection closed: malformed frame");
                    break;
                }
            };
            if cmd.is_response() {
                continue; // answers to this server's oneway requests: nothing waits for them
            }
            *conn.ser.lock() = cmd.ser;
            let Ok(permit) = limit.clone().acquire_owned().await else { break };
            let (conn, handle) = (conn.clone(), processor.handle.clone());
            tokio::spawn(async move {
                let oneway = cmd.is_oneway();
                let reply = handle(conn.clone(), cmd).await;
                drop(permit);
                if let (Some(reply), false) = (reply, oneway) {
                    conn.send(&reply).await;
                }
            });
        }
        (processor.closed)(&conn);
    });
}

/// A Remoting connection as either end uses it: reads through a buffer of [`READ_BUFFER`] bytes
/// (the peer pipelines, so one read takes several frames), and frames sent on the returned queue
/// (at most [`WRITE_QUEUE`] waiting) are written by a task of their own ([`spawn_writer`]).
/// TCP_NODELAY is set.
pub fn split(stream: TcpStream) -> (BufReader<OwnedReadHalf>, mpsc::Sender<Vec<u8>>) {
    let _ = stream.set_nodelay(true);
    let (rd, wr) = stream.into_split();
    let (tx, rx) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
    spawn_writer(wr, rx);
    (BufReader::with_capacity(READ_BUFFER, rd), tx)
}

/// Writes the frames queued on `rx` to `wr` until either side closes: whatever is queued when a
/// write starts (up to 1 MiB) goes in that one write, as Netty flushes a channel's pending writes.
fn spawn_writer(mut wr: impl AsyncWrite + Send + Unpin + 'static, mut rx: mpsc::Receiver<Vec<u8>>) {
    tokio::spawn(async move {
        let mut buf = Vec::new();
        while let Some(frame) = rx.recv().await {
            buf.clear();
            buf.extend_from_slice(&frame);
            while let Ok(more) = rx.try_recv() {
                buf.extend_from_slice(&more);
                if buf.len() > 1 << 20 {
                    break;
                }
            }
            if wr.write_all(&buf).await.is_err() {
                break;
            }
        }
    });
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The length prefix is outside 4..=16 MiB.
    #[error("frame length {0} outside 4..={MAX_FRAME}")]
    Length(u32),
    /// The connection failed or ended inside a frame.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads one frame (without its length prefix); None at a clean end of stream. The buffer grows
/// as bytes arrive, so a length that lies costs nothing until the bytes come.
pub async fn read_frame(rd: &mut (impl AsyncRead + Unpin)) -> Result<Option<Vec<u8>>, ReadError> {
    let mut len = [0u8; 4];
    match rd.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let n = u32::from_be_bytes(len);
    if !(4..=MAX_FRAME as u32).contains(&n) {
        return Err(ReadError::Length(n));
    }
    let mut frame = Vec::with_capacity((n as usize).min(64 << 10));
    let got = rd.take(n as u64).read_to_end(&mut frame).await?;
    if got < n as usize {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("frame ends after {got} of {n} bytes"),
        )
        .into());
    }
    Ok(Some(frame))
}
