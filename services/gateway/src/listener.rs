//! Accepting connections: our own accept loop over hyper's HTTP/1.1 server,
//! so every listener has a deadline for request heads, an idle timeout, a
//! cap on open connections in all and per client address, metrics for each,
//! and a graceful drain.
//!
//! - **Head deadline**: a connection that has not sent a whole request head
//!   within `header_read_timeout` of starting to wait for one (a new
//!   connection, or a kept-alive one between requests) is closed by hyper.
//!   This also bounds idle keep-alive connections.
//! - **Idle timeout**: a connection on which nothing was read or written for
//!   `idle_timeout` (a body trickling in, a stalled download) is closed.
//! - **Caps**: past `max_connections` open on this listener, or
//!   `max_per_address` from one IP address, a new connection is closed at
//!   once, before any byte is read.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tower::ServiceExt as _;

/// How a listener treats its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most connections open at once on the listener.
    pub max_connections: usize,
    /// Most connections open at once from one IP address.
    pub max_per_address: usize,
    /// Deadline for a whole request head, from when the server waits for it.
    pub header_read_timeout: Duration,
    /// A connection with no byte read or written this long is closed.
    pub idle_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_per_address: 1_000,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
        }
    }
}

/// Open connections: the total and per address.
#[derive(Debug, Default)]
struct Open {
    total: AtomicUsize,
    by_address: Mutex<HashMap<IpAddr, usize>>,
}

/// One admitted connection's place in [`Open`], given back when dropped.
struct Slot {
    open: Arc<Open>,
    address: IpAddr,
    gauge: metrics::Gauge,
}

impl Open {
    fn admit(
        self: &Arc<Self>,
        address: IpAddr,
        limits: &ConnectionLimits,
        gauge: &metrics::Gauge,
    ) -> Result<Slot, &'static str> {
        if self.total.load(Ordering::Relaxed) >= limits.max_connections {
            return Err("listener_full");
        }
        {
            let mut by_address = self
                .by_address
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let count = by_address.entry(address).or_insert(0);
            if *count >= limits.max_per_address {
                return Err("address_full");
            }
            *count += 1;
        }
        self.total.fetch_add(1, Ordering::Relaxed);
        gauge.increment(1.0);
        Ok(Slot {
            open: Arc::clone(self),
            address,
            gauge: gauge.clone(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.total.fetch_sub(1, Ordering::Relaxed);
        self.gauge.decrement(1.0);
        let mut by_address = self
            .open
            .by_address
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = by_address.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                by_address.remove(&self.address);
            }
        }
    }
}

/// A socket that notes whether it moved any byte since last asked.
struct Watched<T> {
    inner: T,
    active: Arc<AtomicBool>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if polled.is_ready() {
            self.active.store(true, Ordering::Relaxed);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if polled.is_ready() {
            self.active.store(true, Ordering::Relaxed);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if polled.is_ready() {
            self.active.store(true, Ordering::Relaxed);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Resolves once nothing moved on the connection for a whole `idle` period
/// (so after between one and two periods of silence).
async fn idle(active: Arc<AtomicBool>, period: Duration) {
    loop {
        tokio::time::sleep(period).await;
        if !active.swap(false, Ordering::Relaxed) {
            return;
        }
    }
}

/// Why a connection's watcher fired.
#[derive(Debug, Clone, Copy)]
enum Why {
    /// Nothing moved for the idle timeout.
    Idle,
    /// The listener is draining.
    Drain,
}

/// Fires `fire` when the connection has been idle for `period` or the
/// listener drains; ends quietly when the connection ends first.
async fn watch_connection(
    mut fire: tokio::sync::oneshot::Sender<Why>,
    active: Arc<AtomicBool>,
    period: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let why = tokio::select! {
        () = fire.closed() => return,
        () = idle(active, period) => Why::Idle,
        () = async { let _ = stop.wait_for(|stopping| *stopping).await; } => Why::Drain,
    };
    let _ = fire.send(why);
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops
/// accepting and lets open connections finish their requests (the caller
/// bounds how long). `name` labels the metrics
/// (`gatehouse_connections_open`, `gatehouse_connections_refused_total`,
/// `gatehouse_connections_closed_total{reason}`).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    name: &'static str,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let open = Arc::new(Open::default());
    let gauge = metrics::gauge!("gatehouse_connections_open", "listener" => name);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let builder = Arc::new(builder);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly
                    // instead of spinning.
                    tracing::warn!(listener = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let slot = match open.admit(peer.ip(), &limits, &gauge) {
            Ok(slot) => slot,
            Err(reason) => {
                metrics::counter!("gatehouse_connections_refused_total", "listener" => name, "reason" => reason)
                    .increment(1);
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let builder = Arc::clone(&builder);
        let stop = stop_rx.clone();
        let idle_timeout = limits.idle_timeout;
        tokio::spawn(async move {
            let _slot = slot;
            let active = Arc::new(AtomicBool::new(true));
            let io = TokioIo::new(Watched {
                inner: stream,
                active: Arc::clone(&active),
            });
            let service =
                hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                    request
                        .extensions_mut()
                        .insert(ConnectInfo::<SocketAddr>(peer));
                    router.clone().oneshot(request)
                });
            // The idle timeout and the drain signal are watched by a task of
            // their own, which wakes only when one of them fires: polled
            // beside the connection, they would be polled on every wake-up
            // of every request (the drain signal takes a lock each time).
            let (fire, fired) = tokio::sync::oneshot::channel::<Why>();
            tokio::spawn(watch_connection(fire, active, idle_timeout, stop));
            let connection = builder.serve_connection(io, service).with_upgrades();
            let mut connection = std::pin::pin!(connection);
            let reason = tokio::select! {
                result = connection.as_mut() => match result {
                    Ok(()) => "done",
                    Err(e) if e.is_timeout() => "header_timeout",
                    Err(_) => "error",
                },
                why = fired => match why {
                    Ok(Why::Idle) => "idle",
                    Ok(Why::Drain) | Err(_) => {
                        connection.as_mut().graceful_shutdown();
                        match connection.await {
                            Ok(()) => "done",
                            Err(_) => "error",
                        }
                    }
                },
            };
            if reason != "done" {
                metrics::counter!("gatehouse_connections_closed_total", "listener" => name, "reason" => reason)
                    .increment(1);
            }
        });
    }
    let _ = stop_tx.send(true);
    // Wait for the open connections to finish (the caller's grace bounds it).
    while open.total.load(Ordering::Relaxed) > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test")]
mod tests {
    use super::*;

    #[test]
    fn caps_count_per_listener_and_per_address_and_free_on_drop() {
        let open = Arc::new(Open::default());
        let gauge = metrics::Gauge::noop();
        let limits = ConnectionLimits {
            max_connections: 3,
            max_per_address: 2,
            ..ConnectionLimits::default()
        };
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let a1 = open.admit(a, &limits, &gauge).unwrap();
        let _a2 = open.admit(a, &limits, &gauge).unwrap();
        assert_eq!(open.admit(a, &limits, &gauge).err(), Some("address_full"));
        let _b1 = open.admit(b, &limits, &gauge).unwrap();
        assert_eq!(open.admit(b, &limits, &gauge).err(), Some("listener_full"));
        drop(a1);
        assert!(open.admit(a, &limits, &gauge).is_ok());
        assert_eq!(open.by_address.lock().unwrap().len(), 2);
    }
}
