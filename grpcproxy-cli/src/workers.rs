//! Per-core workers: each thread runs its own single-threaded runtime and serves every
//! listener through a socket of its own (`SO_REUSEPORT`, so the kernel spreads client
//! connections over the threads). A call then stays on one thread from the client's
//! connection to the backend's ([`grpcproxy::worker`] gives each thread its own backend
//! connections): no wake-up crosses threads on the call path.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use anyhow::Context;
use grpcproxy::server::{self, CallService, ServerOptions};
use tokio::net::TcpSocket;
use tokio::sync::{oneshot, watch};

/// One listener to serve on every worker: where, with which options, and the service
/// that answers its calls.
#[derive(Debug)]
pub(crate) struct Listener<S> {
    pub(crate) address: SocketAddr,
    pub(crate) options: ServerOptions,
    pub(crate) service: S,
}

/// The running workers: wait for them with [`Workers::join`].
#[derive(Debug)]
pub(crate) struct Workers {
    done: Vec<oneshot::Receiver<anyhow::Result<()>>>,
}

/// Binds every listener `threads` times, starts the worker threads, and returns once all of
/// them listen, with the address each listener is bound to (port 0 resolved).
pub(crate) async fn start<S: CallService>(
    threads: usize,
    listeners: Vec<Listener<S>>,
    stopped: watch::Receiver<bool>,
    reuse_port: bool,
) -> anyhow::Result<(Workers, Vec<SocketAddr>)> {
    let threads = threads.max(1);
    // sockets[worker][listener]
    let mut sockets: Vec<Vec<(TcpSocket, ServerOptions, S)>> =
        (0..threads).map(|_| Vec::new()).collect();
    let mut bound = Vec::new();
    for listener in &listeners {
        let (local, group) = bind_group(listener.address, threads, reuse_port)
            .with_context(|| format!("cannot listen on {}", listener.address))?;
        bound.push(local);
        let options = ServerOptions {
            max_connections: listener.options.max_connections.div_ceil(threads),
            ..listener.options.clone()
        };
        for (worker, socket) in group.into_iter().enumerate() {
            sockets[worker].push((socket, options.clone(), listener.service.clone()));
        }
    }
    let mut done = Vec::new();
    let mut listening = Vec::new();
    for (index, sockets) in sockets.into_iter().enumerate() {
        let (ready_tx, ready) = oneshot::channel();
        let (done_tx, done_rx) = oneshot::channel();
        let stopped = stopped.clone();
        std::thread::Builder::new()
            .name(format!("grpcproxy-w{index}"))
            .spawn(move || {
                grpcproxy::worker::enter(index);
                let result = run_worker(sockets, stopped, ready_tx);
                let _ = done_tx.send(result);
            })
            .context("cannot start a worker thread")?;
        listening.push(ready);
        done.push(done_rx);
    }
    for ready in listening {
        ready
            .await
            .context("a worker thread stopped while starting")??;
    }
    Ok((Workers { done }, bound))
}

impl Workers {
    /// Waits until every worker has drained and stopped; the first error, if any.
    pub(crate) async fn join(self) -> anyhow::Result<()> {
        let mut first = Ok(());
        for done in self.done {
            let result = done
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("a worker thread panicked")));
            if first.is_ok() {
                first = result;
            }
        }
        first
    }
}

/// `threads` sockets bound to `address` with `SO_REUSEPORT` (port 0: the port the first
/// one got), and that address.
///
/// `SO_REUSEPORT` alone would let this process bind an address that another process (of
/// the same user) listens on, and take a share of its connections. Unless `shared`
/// (`server.reuse_port`, for a hand-off from an old process to a new one), a socket
/// without it is bound first: that fails with "address in use" while anyone listens
/// there, and it holds the port until the group has it.
fn bind_group(
    address: SocketAddr,
    threads: usize,
    shared: bool,
) -> io::Result<(SocketAddr, Vec<TcpSocket>)> {
    // Held until the group is bound (every socket has SO_REUSEADDR, and none listens yet).
    let mut probe = None;
    let address = if shared {
        address
    } else {
        let probe = probe.insert(new_socket(address)?);
        probe.set_reuseaddr(true)?;
        probe.bind(address).map_err(|e| {
            if e.kind() == io::ErrorKind::AddrInUse {
                io::Error::new(
                    e.kind(),
                    "address in use: another process listens there (set server.reuse_port = true to share it on purpose)",
                )
            } else {
                e
            }
        })?;
        probe.local_addr()?
    };
    let first = bind_reuseport(address)?;
    let local = first.local_addr()?;
    let mut group = vec![first];
    for _ in 1..threads {
        group.push(bind_reuseport(local)?);
    }
    drop(probe);
    Ok((local, group))
}

fn new_socket(address: SocketAddr) -> io::Result<TcpSocket> {
    match address {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
}

fn bind_reuseport(address: SocketAddr) -> io::Result<TcpSocket> {
    let socket = new_socket(address)?;
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(address)?;
    Ok(socket)
}

/// One worker thread: listens on its sockets, says so, serves until `stopped`, drains.
fn run_worker<S: CallService>(
    sockets: Vec<(TcpSocket, ServerOptions, S)>,
    stopped: watch::Receiver<bool>,
    ready: oneshot::Sender<anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = ready.send(Err(anyhow::anyhow!("cannot start a worker runtime: {e}")));
            return Ok(());
        }
    };
    runtime.block_on(async move {
        let mut serving = tokio::task::JoinSet::new();
        let mut listeners = Vec::new();
        for (socket, options, service) in sockets {
            match socket.listen(1024) {
                Ok(listener) => listeners.push((listener, options, service)),
                Err(e) => {
                    let _ = ready.send(Err(e).context("cannot listen"));
                    return Ok(());
                }
            }
        }
        for (listener, options, service) in listeners {
            let mut stopped = stopped.clone();
            serving.spawn(server::serve(
                listener,
                service,
                options,
                stop_signal(&mut stopped),
            ));
        }
        let _ = ready.send(Ok(()));
        while let Some(result) = serving.join_next().await {
            result.context("a listener task failed")??;
        }
        Ok(())
    })
}

/// Completes once `stopped` turns true (or its sender is gone).
fn stop_signal(stopped: &mut watch::Receiver<bool>) -> impl Future<Output = ()> + Send + 'static {
    let mut stopped = stopped.clone();
    async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    }
}
