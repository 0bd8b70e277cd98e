//! Lazily made HTTP/2 connections to one backend, reconnected after failure, and more of
//! them when every connection carries its share of streams.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::connection::{handshake, Connection};
use super::in_flight::InFlight;
use super::{UpstreamError, UpstreamErrorKind};
use crate::http2::Io;
use crate::Http2Settings;

/// How to reach the backend: address, TLS, and HTTP/2 settings.
pub(crate) struct Endpoint {
    /// `host:port`, as dialed and as named in errors.
    pub(crate) address: Arc<str>,
    pub(crate) tls: Option<(TlsConnector, ServerName<'static>)>,
    pub(crate) settings: Http2Settings,
    pub(crate) connect_timeout: Duration,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("address", &self.address)
            .field("tls_server_name", &self.tls.as_ref().map(|(_, name)| name))
            .field("settings", &self.settings)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

/// One connection slot: a ready connection, or the last failure to make one.
#[derive(Debug, Default)]
struct Slot {
    ready: Mutex<Option<Connection>>,
    /// Held while connecting, so concurrent calls share one attempt.
    connecting: tokio::sync::Mutex<Option<(Instant, UpstreamError)>>,
    /// Calls on this slot's connection now.
    in_flight: Arc<AtomicUsize>,
}

/// How many connections a pool keeps (per worker thread), and when it makes more.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolSize {
    /// Connections calls are spread over from the start.
    pub(crate) min: usize,
    /// The most connections it makes.
    pub(crate) max: usize,
    /// Calls per connection before another connection is made (while under `max`).
    pub(crate) streams_per_connection: usize,
}

/// Most worker threads with connection groups of their own (see [`crate::worker`]).
const MAX_WORKERS: usize = 256;

/// The connections of one worker thread: round-robins calls over its slots, skipping full
/// ones; when every slot in use is full, it puts one more slot to use (up to the most).
#[derive(Debug)]
struct Group {
    slots: Box<[Slot]>,
    /// Slots in use: `min` at first, growing while every one is full.
    active: AtomicUsize,
    next: AtomicUsize,
}

impl Group {
    fn new(size: PoolSize) -> Self {
        let min = size.min.max(1);
        Self {
            slots: (0..size.max.max(min)).map(|_| Slot::default()).collect(),
            active: AtomicUsize::new(min),
            next: AtomicUsize::new(0),
        }
    }

    /// The next slot with room for a call, putting one more slot to use when all are full.
    fn pick(&self, streams_per_connection: usize) -> &Slot {
        let active = self.active.load(Ordering::Relaxed);
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for k in 0..active {
            let slot = &self.slots[(start + k) % active];
            if slot.in_flight.load(Ordering::Relaxed) < streams_per_connection {
                return slot;
            }
        }
        if active < self.slots.len() {
            // Lost races mean another call grew the group already: use the newest slot.
            let _ = self.active.compare_exchange(
                active,
                active + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            return &self.slots[self.active.load(Ordering::Relaxed) - 1];
        }
        // At the most connections: share the load evenly past the per-connection share.
        &self.slots[start % active]
    }
}

/// The connections to one backend: a group per worker thread, made on its first call.
#[derive(Debug)]
pub(crate) struct Pool {
    endpoint: Endpoint,
    size: PoolSize,
    groups: Box<[std::sync::OnceLock<Group>]>,
    pub(crate) connects: std::sync::atomic::AtomicU64,
    pub(crate) connect_failures: std::sync::atomic::AtomicU64,
    /// Connections whose task is still running (handshake done, not yet closed).
    pub(crate) open: Arc<AtomicUsize>,
    /// Connections rotated after carrying young resets (see `connection::YoungStream`).
    pub(crate) rotated: Arc<super::connection::Rotations>,
    /// Rate limit of the warnings about failed connects.
    failure_log: FailureLog,
}

/// Failed connects are logged at WARN at most once per [`FailureLog::EVERY`] per backend,
/// with the number of failures since the last warning; the first connect after failures
/// is logged at INFO.
#[derive(Debug)]
struct FailureLog {
    epoch: Instant,
    /// Milliseconds after `epoch` of the last warning, plus one (0: none yet).
    warned_at: AtomicU64,
    /// Failures since the last warning.
    unlogged: AtomicU64,
    /// Failures since the last successful connect.
    failing: AtomicU64,
}

impl FailureLog {
    const EVERY: Duration = Duration::from_secs(10);

    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            warned_at: AtomicU64::new(0),
            unlogged: AtomicU64::new(0),
            failing: AtomicU64::new(0),
        }
    }

    fn failed(&self, error: &UpstreamError) {
        self.failing.fetch_add(1, Ordering::Relaxed);
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        let last = self.warned_at.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= Self::EVERY.as_millis() as u64;
        if due
            && self
                .warned_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let since_last = self.unlogged.swap(0, Ordering::Relaxed);
            tracing::warn!(backend = %error.backend(), error = %error, failures_since_last_warning = since_last, "cannot connect to backend");
        } else {
            self.unlogged.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn connected(&self, backend: &str) {
        let failures = self.failing.swap(0, Ordering::Relaxed);
        if failures > 0 {
            self.unlogged.store(0, Ordering::Relaxed);
            self.warned_at.store(0, Ordering::Relaxed);
            tracing::info!(%backend, failures, "connected to backend again");
        }
    }
}

impl Pool {
    pub(crate) fn new(mut endpoint: Endpoint, size: PoolSize) -> Self {
        endpoint.settings = endpoint
            .settings
            .isolating_streams(size.streams_per_connection.max(1));
        Self {
            endpoint,
            size: PoolSize {
                streams_per_connection: size.streams_per_connection.max(1),
                ..size
            },
            groups: (0..MAX_WORKERS)
                .map(|_| std::sync::OnceLock::new())
                .collect(),
            connects: Default::default(),
            connect_failures: Default::default(),
            failure_log: FailureLog::new(),
            open: Default::default(),
            rotated: Default::default(),
        }
    }

    pub(crate) fn address(&self) -> &Arc<str> {
        &self.endpoint.address
    }

    /// The calling worker thread's group of connections.
    fn group(&self) -> &Group {
        let index = crate::worker::current().unwrap_or(0) % self.groups.len();
        self.groups[index].get_or_init(|| Group::new(self.size))
    }

    /// A connection ready for a new stream, connecting first if the slot has none; the
    /// call is counted on it while the returned [`InFlight`] lives.
    pub(crate) async fn connection(&self) -> Result<(Connection, InFlight), UpstreamError> {
        let slot = self.group().pick(self.size.streams_per_connection);
        let in_flight = InFlight::new(&slot.in_flight);
        if let Some(ready) = slot.ready_connection() {
            return Ok((ready, in_flight));
        }
        // Boxed: waiting for a connection is rare, and inline its future would grow every
        // call's future.
        Box::pin(self.slot_connection(slot))
            .await
            .map(|connection| (connection, in_flight))
    }

    /// The slot's connection, connecting first if it has none.
    async fn slot_connection(&self, slot: &Slot) -> Result<Connection, UpstreamError> {
        if let Some(ready) = slot.ready_connection() {
            return Ok(ready);
        }
        let asked = Instant::now();
        let mut last_failure = slot.connecting.lock().await;
        if let Some(ready) = slot.ready_connection() {
            return Ok(ready);
        }
        // A failure that ended while this call waited is this call's answer too: one
        // unreachable backend costs one connect attempt, not one per waiting call.
        if let Some((at, err)) = last_failure.as_ref() {
            if *at >= asked {
                return Err(err.clone());
            }
        }
        match self.connect().await {
            Ok(connection) => {
                self.connects.fetch_add(1, Ordering::Relaxed);
                self.failure_log.connected(&self.endpoint.address);
                *last_failure = None;
                *slot.ready.lock().expect("slot lock poisoned") = Some(connection.clone());
                Ok(connection)
            }
            Err(err) => {
                self.connect_failures.fetch_add(1, Ordering::Relaxed);
                self.failure_log.failed(&err);
                *last_failure = Some((Instant::now(), err.clone()));
                Err(err)
            }
        }
    }

    async fn connect(&self) -> Result<Connection, UpstreamError> {
        let endpoint = &self.endpoint;
        let address = endpoint.address.clone();
        let attempt = async {
            let tcp = TcpStream::connect(&*endpoint.address)
                .await
                .map_err(|e| UpstreamError::new(address.clone(), UpstreamErrorKind::Connect, e))?;
            tcp.set_nodelay(true)
                .map_err(|e| UpstreamError::new(address.clone(), UpstreamErrorKind::Connect, e))?;
            match &endpoint.tls {
                None => {
                    let io = Io::Tcp(tcp);
                    handshake(&address, &endpoint.settings, io, &self.open, &self.rotated).await
                }
                Some((connector, name)) => {
                    let tls = connector.connect(name.clone(), tcp).await.map_err(|e| {
                        UpstreamError::new(address.clone(), UpstreamErrorKind::Tls, e)
                    })?;
                    let io = Io::ClientTls(Box::new(tls));
                    handshake(&address, &endpoint.settings, io, &self.open, &self.rotated).await
                }
            }
        };
        match tokio::time::timeout(endpoint.connect_timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(UpstreamError::timeout(address)),
        }
    }
}

impl Slot {
    fn ready_connection(&self) -> Option<Connection> {
        let mut ready = self.ready.lock().expect("slot lock poisoned");
        match ready.as_ref() {
            Some(connection) if connection.is_usable() => Some(connection.clone()),
            Some(_) => {
                *ready = None;
                None
            }
            None => None,
        }
    }
}
