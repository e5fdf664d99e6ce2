//! Accept loops for the plain and the TLS listener. Each accepted connection takes a slot of the
//! node's connection cap, gets deadlines for its TLS handshake, its first request, its request
//! heads and its idle time between requests, and is served by hyper (HTTP/1.1) with upgrades
//! enabled (a WebSocket session keeps the slot until it ends). On shutdown the loops stop
//! accepting and open HTTP connections are drained gracefully.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::conn::ConnSlot;
use crate::hub::Hub;

/// Deadline for a TLS handshake, for a request head once it has started, and (hyper's timer
/// runs between requests too) for an idle keep-alive connection.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// A new connection must send its first request within this.
const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open HTTP connections may take to finish on shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Accepts until shutdown. `tls` makes this the HTTPS/WSS listener.
/// `app` is the HTTP router to serve (both public listeners share one; the operator listener has its own).
pub async fn serve(hub: Arc<Hub>, app: axum::Router, listener: TcpListener, tls: Option<TlsAcceptor>, limit: Arc<Semaphore>) {
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = hub.shutdown.cancelled() => break,
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            hub.metrics.connections_refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%peer, "connection cap reached, refusing");
            drop(stream);
            continue;
        };
        let slot = ConnSlot::new(permit, hub.metrics.clone());
        let _ = stream.set_nodelay(true);
        let (hub, app, tls) = (hub.clone(), app.clone(), tls.clone());
        let tasks = hub.tasks.clone();
        tasks.spawn(async move {
            match tls {
                None => connection(hub, app, TokioIo::new(stream), peer, slot).await,
                Some(acceptor) => match tokio::time::timeout(HEAD_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => connection(hub, app, TokioIo::new(tls), peer, slot).await,
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                },
            }
        });
    }
    tracing::debug!("listener closed");
}

/// Serves one HTTP/1.1 connection (WebSocket needs HTTP/1.1; h2 is not offered). hyper's
/// header-read timer bounds a started request head and the idle wait between keep-alive
/// requests, but not the wait for the first byte of a new connection: that is bounded here by
/// [`FIRST_REQUEST_TIMEOUT`]. A request in flight is bounded by the router's timeout.
async fn connection<I>(hub: Arc<Hub>, app: axum::Router, io: TokioIo<I>, peer: SocketAddr, slot: ConnSlot)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let seen_request = Arc::new(AtomicBool::new(false));
    let seen = seen_request.clone();
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        seen.store(true, Ordering::Relaxed);
        req.extensions_mut().insert(peer);
        req.extensions_mut().insert(slot.clone());
        app.clone().oneshot(req)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(64 * 1024)
        .serve_connection(io, service)
        .with_upgrades();
    tokio::pin!(conn);
    let first_request_deadline = Instant::now() + FIRST_REQUEST_TIMEOUT;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
                }
                return;
            }
            _ = tokio::time::sleep_until(first_request_deadline), if !seen_request.load(Ordering::Relaxed) => {
                if !seen_request.load(Ordering::Relaxed) {
                    tracing::debug!(%peer, "no request on a new connection before the deadline, closing");
                    break;
                }
            }
            _ = hub.shutdown.cancelled() => break,
        }
    }
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, conn).await;
}

/// Binds a listener; `port 0` picks a free port (tests).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}
