//! A fault proxy: a real TCP proxy on a free loopback port between one instance and
//! Redis, which can stall (bytes stop flowing both ways, connections stay open), cut
//! (every connection is closed, and new ones are closed on arrival), or fail over (its
//! connections are closed and new ones go to another server).

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Open,
    Stalled,
    Cut,
}

/// The mode, and a generation every cut or failover moves on: a connection made in an
/// earlier generation ends.
type State = (Mode, u64);

pub(crate) struct Proxy {
    pub(crate) port: u16,
    state: Arc<watch::Sender<State>>,
    upstream: Arc<AtomicU16>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// A proxy to `127.0.0.1:upstream`.
    pub(crate) async fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(watch::channel((Mode::Open, 0)).0);
        let upstream = Arc::new(AtomicU16::new(upstream));
        let (states, target) = (Arc::clone(&state), Arc::clone(&upstream));
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (mode, generation) = *states.borrow();
                if mode == Mode::Cut {
                    drop(client);
                    continue;
                }
                let to = target.load(Ordering::SeqCst);
                let Ok(server) = TcpStream::connect(("127.0.0.1", to)).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pipe(
                    client_read,
                    server_write,
                    states.subscribe(),
                    generation,
                ));
                tokio::spawn(pipe(
                    server_read,
                    client_write,
                    states.subscribe(),
                    generation,
                ));
            }
        });
        Self {
            port,
            state,
            upstream,
            accept,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub(crate) fn set(&self, mode: Mode) {
        self.state.send_modify(|(current, generation)| {
            if mode == Mode::Cut {
                *generation += 1;
            }
            *current = mode;
        });
    }

    /// From now on to `127.0.0.1:upstream`; the connections made so far are closed.
    pub(crate) fn fail_over(&self, upstream: u16) {
        self.upstream.store(upstream, Ordering::SeqCst);
        self.state.send_modify(|(_, generation)| *generation += 1);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.set(Mode::Cut);
    }
}

/// Copies one direction until either side closes or the connection's generation ends;
/// while stalled, what was read waits.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut state: watch::Receiver<State>,
    generation: u64,
) {
    let ended = move |(_, g): &State| *g != generation;
    let mut buffer = vec![0; 16 * 1024];
    loop {
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            _ = state.wait_for(ended) => return,
        };
        let n = match read {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        match state
            .wait_for(|s| ended(s) || s.0 == Mode::Open)
            .await
            .map(|s| ended(&s))
        {
            Ok(false) => {}
            _ => return,
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}
