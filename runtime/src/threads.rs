//! A binary's threads: each runs its own single-threaded tokio runtime, and connections are
//! spread over them: by the kernel, for a listener with a socket on each thread (see
//! `tunnel_proto::socket::tcp_listener_group`, whose sockets are placed with [`handle`]), or
//! when accepted ([`Spread`]). All the tasks of a connection then stay on one
//! thread, and so does an agent session's driver with the visitors that use it (the server
//! picks sessions on the visitor's thread first, see [`index`]): a request wakes no other
//! thread, as on one thread, and every core still works.
//!
//! The thread that calls [`start`] runs thread 0, which also runs everything that is not
//! spread: the other listeners, the admin server, cluster links, UDP. The others are spawned by
//! [`start`] and run until the process ends. Without [`start`] (a library user's own
//! runtime) nothing is spread and every task runs where it is spawned.

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio_util::task::TaskTracker;

static THREADS: OnceLock<Vec<Handle>> = OnceLock::new();

thread_local! {
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// Records `main` (the calling thread's runtime) as thread 0 and starts `n - 1` more
/// single-threaded runtimes, each on a thread of its own. Once per process: later calls
/// change nothing.
pub fn start(main: Handle, n: usize) -> std::io::Result<()> {
    if THREADS.get().is_some() {
        return Ok(());
    }
    let mut handles = vec![main];
    for index in 1..n.max(1) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        handles.push(runtime.handle().clone());
        std::thread::Builder::new().name(format!("tunnel-{index}")).spawn(move || {
            INDEX.with(|i| i.set(index));
            runtime.block_on(std::future::pending::<()>());
        })?;
    }
    let _ = THREADS.set(handles);
    Ok(())
}

/// The calling thread's index (0 outside the threads of [`start`]).
pub fn index() -> usize {
    INDEX.with(|i| i.get())
}

/// How many threads there are (1 before [`start`]).
pub fn count() -> usize {
    THREADS.get().map_or(1, Vec::len)
}

/// The runtime of thread `index`; `None` before [`start`] or past the last thread.
pub fn handle(index: usize) -> Option<&'static Handle> {
    THREADS.get()?.get(index)
}

/// Round-robin over the threads, for one kind of connection (one per accept loop, so that
/// consecutive connections of one kind, e.g. an agent's sessions, land on different threads).
#[derive(Debug, Default)]
pub struct Spread(AtomicUsize);

impl Spread {
    /// A new turn counter.
    pub const fn new() -> Spread {
        Spread(AtomicUsize::new(0))
    }

    /// The runtime of the next thread in turn; `None` with one thread (spawn where you are).
    pub fn next(&self) -> Option<&'static Handle> {
        let threads = THREADS.get().filter(|t| t.len() > 1)?;
        Some(&threads[self.0.fetch_add(1, Ordering::Relaxed) % threads.len()])
    }

    /// Runs `fut` in a task of `tasks` on the next thread.
    pub fn spawn<Fut>(&self, tasks: &TaskTracker, fut: Fut)
    where
        Fut: Future<Output = ()> + Send + 'static,
    {
        match self.next() {
            Some(thread) => tasks.spawn_on(fut, thread),
            None => tasks.spawn(fut),
        };
    }

    /// Runs `serve` on the accepted connection `conn` in a task of `tasks` on the next thread.
    /// The connection moves to that thread's reactor, so that its readiness wakes that thread
    /// only.
    pub fn spawn_moved<C, F, Fut>(&self, tasks: &TaskTracker, conn: C, serve: F)
    where
        C: Movable,
        F: FnOnce(C) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Some(thread) = self.next() else {
            tasks.spawn(serve(conn));
            return;
        };
        let detached = match conn.detach() {
            Ok(detached) => detached,
            Err(err) => return tracing::debug!(%err, "connection could not be handed to another thread"),
        };
        tasks.spawn_on(
            async move {
                let conn = match C::attach(detached) {
                    Ok(conn) => conn,
                    Err(err) => return tracing::debug!(%err, "connection could not be handed to another thread"),
                };
                serve(conn).await
            },
            thread,
        );
    }
}

/// A connection that can move to another thread: taken off the reactor of the runtime that
/// accepted it, then registered with the runtime of the thread that serves it.
pub trait Movable: Sized {
    /// The connection between the two.
    type Detached: Send + 'static;
    /// Takes the connection off the calling runtime's reactor.
    fn detach(self) -> std::io::Result<Self::Detached>;
    /// Registers it with the calling runtime.
    fn attach(detached: Self::Detached) -> std::io::Result<Self>;
}

impl Movable for TcpStream {
    type Detached = std::net::TcpStream;
    fn detach(self) -> std::io::Result<std::net::TcpStream> {
        self.into_std()
    }
    fn attach(detached: std::net::TcpStream) -> std::io::Result<TcpStream> {
        TcpStream::from_std(detached)
    }
}

impl Movable for tunnel_proto::channel::Incoming {
    type Detached = tunnel_proto::channel::Detached;
    fn detach(self) -> std::io::Result<Self::Detached> {
        tunnel_proto::channel::Incoming::detach(self)
    }
    fn attach(detached: Self::Detached) -> std::io::Result<Self> {
        detached.attach()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_start_everything_runs_here() {
        assert_eq!(index(), 0);
        assert!(Spread::new().next().is_none());
    }
}
