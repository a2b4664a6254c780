//! Accepting on a port. RocketMQ's proxy and its Remoting server (`TlsModeHandler`) tell
//! protocols apart by a connection's first byte, and so does this: `0x16` is a TLS handshake,
//! `P` (the HTTP/2 preface) plaintext gRPC, and anything else Remoting (a frame's first byte is 0
//! below 16 MiB). Inside TLS, ALPN `h2` is gRPC and no ALPN Remoting (RocketMQ's Netty clients
//! offer none). `tls_mode = "disabled"` takes no TLS, `"enforcing"` nothing else.

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

use crate::config::{Config, TlsMode};
use crate::remoting::conn::{accept_loop, spawn_connection, spawn_tls_connection, Processor};
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

/// What a port accepts.
#[derive(Clone)]
pub struct Port {
    /// The TLS acceptor, from [`crate::tls::acceptor`] (None: `tls_mode = "disabled"`).
    pub tls: Option<TlsAcceptor>,
    /// Plaintext connections are closed unread (`tls_mode = "enforcing"`).
    pub tls_only: bool,
    /// Serves gRPC (the broker's 8081, the nameserver's 9876): true for [`serve`], false for
    /// [`serve_remoting`].
    pub grpc: bool,
    /// Serves Remoting too (the nameserver's 9876, the broker's 10911).
    pub remoting: Option<Processor>,
}

impl Port {
    /// A port as `cfg.tls_mode` says, sharing `tls` (the process's one acceptor), serving
    /// Remoting with `remoting` if given.
    pub fn new(cfg: &Config, tls: &Option<TlsAcceptor>, remoting: Option<Processor>) -> Port {
        Port { tls: tls.clone(), tls_only: cfg.tls_mode == TlsMode::Enforcing, grpc: true, remoting }
    }
}

/// Accepts connections on `listener` until `stop` turns true: gRPC ones (TLS after its handshake)
/// go to the returned stream, for tonic; Remoting ones to `port.remoting`; any other is closed. A
/// connection is sniffed on its own task, so a silent or slow one holds up no other.
pub fn serve(listener: TcpListener, port: Port, stop: watch::Receiver<bool>) -> ReceiverStream<io::Result<GrpcConn>> {
    let (tx, rx) = mpsc::channel(64);
    let port = std::sync::Arc::new(Port { grpc: true, ..port });
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

/// Accepts Remoting connections (plaintext or TLS, as `port` says) on `listener` until `stop`
/// turns true.
pub fn serve_remoting(listener: TcpListener, port: Port, stop: watch::Receiver<bool>) {
    let port = std::sync::Arc::new(Port { grpc: false, ..port });
    accept_loop(listener, stop, move |stream, peer| {
        let port = port.clone();
        tokio::spawn(async move { classify(stream, peer, &port).await });
    });
}

/// The gRPC connection `stream` is, or None when it was handed to Remoting, closed or refused.
async fn classify(stream: TcpStream, peer: SocketAddr, port: &Port) -> Option<GrpcConn> {
    let mut first = [0u8; 1];
    match tokio::time::timeout(SNIFF_TIMEOUT, stream.peek(&mut first)).await {
        Ok(Ok(1)) => {}
        _ => return None, // closed, failed or silent
    }
    let refuse = |why: &str| {
        tracing::info!(%peer, first_byte = first[0], "connection closed: {why}");
        None
    };
    match first[0] {
        TLS_HANDSHAKE => {
            let Some(tls) = &port.tls else { return refuse("TLS while tls_mode is disabled") };
            let s = match tokio::time::timeout(SNIFF_TIMEOUT, tls.accept(stream)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return refuse(&format!("TLS handshake failed: {e}")),
                Err(_) => return refuse("TLS handshake timed out"),
            };
            let h2 = s.get_ref().1.alpn_protocol() == Some(b"h2");
            match &port.remoting {
                Some(remoting) if !h2 || !port.grpc => {
                    spawn_tls_connection(s, peer, remoting.clone());
                    None
                }
                _ if port.grpc => Some(GrpcConn::Tls(Box::new(s))),
                _ => refuse("TLS connection asked for no protocol this port serves"),
            }
        }
        _ if port.tls_only => refuse("plaintext while tls_mode is enforcing"),
        b'P' if port.grpc => Some(GrpcConn::Plain(stream)),
        _ => match &port.remoting {
            Some(remoting) => {
                spawn_connection(stream, peer, remoting.clone());
                None
            }
            None => refuse("neither gRPC nor TLS"),
        },
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
