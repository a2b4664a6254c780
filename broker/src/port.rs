//! Accepting on a gRPC port. RocketMQ's proxy tells protocols apart by a connection's first
//! byte, and so does this: `0x16` (a TLS handshake) is gRPC over TLS, `P` (the HTTP/2 preface) is
//! plaintext gRPC, and on the nameserver's port anything else is Remoting (a frame's first byte
//! is 0 below 16 MiB). With `tls_mode = "disabled"` a port takes no TLS.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::remoting::conn::{accept_loop, spawn_connection, Processor};
use crate::tls::TLS_HANDSHAKE;

/// Longest a new connection may stay silent, or take over its TLS handshake, before it is dropped.
const SNIFF_TIMEOUT: Duration = Duration::from_secs(10);

/// A gRPC connection, plaintext or TLS, for tonic's `serve_with_incoming`.
pub enum GrpcConn {
    /// Plaintext HTTP/2.
    Plain(TcpStream),
    /// HTTP/2 over TLS, handshake done.
    Tls(Box<TlsStream<TcpStream>>),
}

/// What a port accepts besides plaintext gRPC.
pub struct Port {
    /// The TLS acceptor, from [`crate::tls::acceptor`] (None: `tls_mode = "disabled"`).
    pub tls: Option<TlsAcceptor>,
    /// Serves Remoting on the same port (the nameserver's 9876).
    pub remoting: Option<Processor>,
}

/// Accepts connections on `listener` until `stop` turns true: gRPC ones (TLS after its handshake)
/// go to the returned stream, for tonic; Remoting ones to `port.remoting`; any other is closed. A
/// connection is sniffed on its own task, so a silent or slow one holds up no other.
pub fn serve(listener: TcpListener, port: Port, stop: watch::Receiver<bool>) -> ReceiverStream<io::Result<GrpcConn>> {
    let (tx, rx) = mpsc::channel(64);
    let port = std::sync::Arc::new(port);
    accept_loop(listener, stop, move |stream, peer| {
        let (tx, port) = (tx.clone(), port.clone());
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            if let Some(conn) = classify(stream, peer, &port).await {
                let _ = tx.send(Ok(conn)).await;
            }
        });
    });
    ReceiverStream::new(rx)
}

/// The gRPC connection `stream` is, or None when it was handed to Remoting, closed or refused.
async fn classify(stream: TcpStream, peer: SocketAddr, port: &Port) -> Option<GrpcConn> {
    let mut first = [0u8; 1];
    match tokio::time::timeout(SNIFF_TIMEOUT, stream.peek(&mut first)).await {
        Ok(Ok(1)) => {}
        _ => return None, // closed, failed or silent
    }
    match (first[0], &port.tls, &port.remoting) {
        (TLS_HANDSHAKE, Some(tls), _) => match tokio::time::timeout(SNIFF_TIMEOUT, tls.accept(stream)).await {
            Ok(Ok(s)) => Some(GrpcConn::Tls(Box::new(s))),
            Ok(Err(e)) => {
                tracing::info!(%peer, error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::info!(%peer, "TLS handshake timed out");
                None
            }
        },
        (b'P', _, _) => Some(GrpcConn::Plain(stream)),
        (_, _, Some(remoting)) => {
            spawn_connection(stream, peer, remoting.clone());
            None
        }
        (byte, _, None) => {
            tracing::info!(%peer, first_byte = byte, "connection closed: neither gRPC nor TLS");
            None
        }
    }
}

impl Connected for GrpcConn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        match self {
            GrpcConn::Plain(s) => s.connect_info(),
            GrpcConn::Tls(s) => s.get_ref().0.connect_info(),
        }
    }
}

impl AsyncRead for GrpcConn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            GrpcConn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            GrpcConn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for GrpcConn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            GrpcConn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            GrpcConn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            GrpcConn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            GrpcConn::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            GrpcConn::Plain(s) => s.is_write_vectored(),
            GrpcConn::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            GrpcConn::Plain(s) => Pin::new(s).poll_flush(cx),
            GrpcConn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            GrpcConn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            GrpcConn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
