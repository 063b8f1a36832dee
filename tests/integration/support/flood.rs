//! A flood of idle connections, as a stranger would hold them: each one
//! connects, sends nothing (or a few bytes), and connects again as soon as
//! the server closes it, until the flood is dropped.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

/// Idle connections held open to one port.
pub struct Flood {
    stop: Arc<AtomicBool>,
    counts: Arc<Counts>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Counts {
    /// Connections open now.
    held: AtomicUsize,
}

impl Flood {
    /// Holds `count` connections to `127.0.0.1:port`, spread over the
    /// loopback `sources`, each sending `first_bytes` once connected.
    pub fn start(port: u16, sources: &[Ipv4Addr], count: usize, first_bytes: &[u8]) -> Self {
        let limit = raise_own_file_limit();
        assert!(
            limit >= count as u64 + 1024,
            "a flood of {count} connections needs more open files than this process may \
             have ({limit}): raise the hard limit (`ulimit -Hn`)"
        );
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Counts::default());
        let (sources, first_bytes) = (sources.to_vec(), first_bytes.to_vec());
        let thread = std::thread::spawn({
            let (stop, counts) = (stop.clone(), counts.clone());
            move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for the flood");
                runtime.block_on(async move {
                    let tasks: Vec<_> = (0..count)
                        .map(|i| {
                            let source = sources[i % sources.len()];
                            let (stop, counts) = (stop.clone(), counts.clone());
                            let first_bytes = first_bytes.clone();
                            tokio::spawn(keep_one_open(port, source, first_bytes, stop, counts))
                        })
                        .collect();
                    for task in tasks {
                        let _ = task.await;
                    }
                });
            }
        });
        Self {
            stop,
            counts,
            thread: Some(thread),
        }
    }

    /// Connections open now.
    pub fn held(&self) -> usize {
        self.counts.held.load(Ordering::Relaxed)
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn keep_one_open(
    port: u16,
    source: Ipv4Addr,
    first_bytes: Vec<u8>,
    stop: Arc<AtomicBool>,
    counts: Arc<Counts>,
) {
    let target = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    while !stop.load(Ordering::Relaxed) {
        let Ok(socket) = TcpSocket::new_v4() else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        // Other tests pick free ports and bind them later (a release's
        // fixed HTTP port): with SO_REUSEADDR on both sides, a flood
        // socket that happens to hold that port as its own does not stop
        // them.
        let _ = socket.set_reuseaddr(true);
        let connected = match socket.bind(SocketAddr::from((source, 0))) {
            Ok(()) => tokio::time::timeout(Duration::from_secs(2), socket.connect(target)).await,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(Ok(mut stream)) = connected else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        counts.held.fetch_add(1, Ordering::Relaxed);
        if !first_bytes.is_empty() {
            let _ = stream.write_all(&first_bytes).await;
        }
        let mut buf = [0u8; 1024];
        // Until the server closes it or answers, or the flood stops.
        loop {
            tokio::select! {
                read = stream.read(&mut buf) => {
                    if !matches!(read, Ok(n) if n > 0) {
                        break;
                    }
                }
                () = tokio::time::sleep(Duration::from_millis(100)) => {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                }
            }
        }
        counts.held.fetch_sub(1, Ordering::Relaxed);
        // A moment before the next one, so that a refused flood does not
        // churn through the machine's ephemeral ports.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The test process holds the flood's sockets: its soft open-file limit
/// goes up to its hard one. Returns the limit it has then.
fn raise_own_file_limit() -> u64 {
    host::budget::raise_file_limit().now
}
