//! What cluster tests share: running the tools, reading a stopped node's
//! storage, a TCP proxy that can black-hole a link, and TLS certificates.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Epmd, Node, NodeBuilder, eventually, free_port, run_host_with};

/// The cookie the cluster tests share, unless a test says otherwise.
pub const COOKIE: &str = "monster";

/// A Todo node named `name@127.0.0.1`, registered with `epmd`, with the
/// shared cookie; not joined to anything yet.
pub fn todo_node(epmd: &Epmd, name: &str) -> Node {
    NodeBuilder::todo().clustered(name, epmd, COOKIE).start()
}

/// Runs `host ARGS` as a tool against the nodes registered with `epmd`,
/// with `cookie`.
pub fn tool(epmd: &Epmd, cookie: &str, args: &[&str]) -> std::process::Output {
    let port = epmd.port.to_string();
    run_host_with(
        args,
        &[("ERL_EPMD_PORT", &port), ("RELEASE_COOKIE", cookie)],
    )
}

/// Like [`tool`], which must succeed; returns its stdout.
pub fn tool_ok(epmd: &Epmd, args: &[&str]) -> String {
    let out = tool(epmd, COOKIE, args);
    assert!(
        out.status.success(),
        "`host {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `host connect JOINER OTHER`, which must succeed.
pub fn connect(epmd: &Epmd, joiner: &Node, other: &Node) {
    tool_ok(epmd, &["connect", &joiner.name, &other.name]);
}

/// The rows of `host nodes NODE`: name to the rest of its line.
pub fn nodes(epmd: &Epmd, node: &Node) -> BTreeMap<String, String> {
    tool_ok(epmd, &["nodes", &node.name])
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once(' '))
        .map(|(name, rest)| {
            (
                name.to_string(),
                rest.split_whitespace().collect::<Vec<_>>().join(" "),
            )
        })
        .collect()
}

/// Waits until `node` sees exactly `expected` members, all up and linked.
pub fn wait_for_members(epmd: &Epmd, node: &Node, expected: &[&Node]) {
    let want: Vec<&str> = expected.iter().map(|node| node.name.as_str()).collect();
    eventually(
        Duration::from_secs(30),
        &format!("{} sees {want:?}", node.name),
        || {
            let rows = nodes(epmd, node);
            rows.len() == want.len()
                && want.iter().all(|name| {
                    rows.get(*name).is_some_and(|row| {
                        row.contains(" up ") && row.contains("linked") && !row.contains("no link")
                    })
                })
        },
    );
}

/// Starts `count` Todo nodes named n1, n2... and joins them into one
/// cluster, each through the node started before it.
pub fn todo_cluster(epmd: &Epmd, count: usize, extra: &[&str]) -> Vec<Node> {
    let nodes: Vec<Node> = (1..=count)
        .map(|i| {
            let mut builder = NodeBuilder::todo()
                .clustered(&format!("n{i}"), epmd, COOKIE)
                .metrics();
            for arg in extra {
                builder = builder.arg(arg);
            }
            builder.start()
        })
        .collect();
    // Each joins through the one before it: through a follower, as well
    // as through the leader.
    for pair in nodes.windows(2) {
        connect(epmd, &pair[1], &pair[0]);
    }
    let all: Vec<&Node> = nodes.iter().collect();
    for node in &nodes {
        wait_for_members(epmd, node, &all);
    }
    nodes
}

/// One entry as the Todo guest stores it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Deserialize)]
pub struct StoredEntry {
    pub id: u64,
    pub date: String,
    pub title: String,
}

/// The entries of `list` in the storage of a node that is not running,
/// read straight from its RocksDB: what that node itself holds.
pub fn stored_entries(data_dir: &Path, list: &str) -> Vec<StoredEntry> {
    let storage = host::storage::Storage::open(&data_dir.join("db"), host::config::Durability::Wal)
        .expect("open the stopped node's storage");
    let namespace = storage.namespace("guest_todo");
    let mut prefix = b"list\0".to_vec();
    prefix.extend_from_slice(list.as_bytes());
    prefix.extend_from_slice(b"\0e");
    let mut entries = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = namespace
            .scan_prefix(&prefix, after.as_deref(), 1000)
            .expect("scan");
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        for (_, value) in &page {
            entries.push(serde_json::from_slice(value).expect("a stored entry"));
        }
    }
    entries
}

/// A TCP proxy to `127.0.0.1:target` that the test can black-hole: while
/// cut, whatever either side sends vanishes (and new connections hang),
/// as when a network drops packets; on heal, the connections it black-holed
/// are closed, so both sides notice and reconnect.
pub struct Proxy {
    pub port: u16,
    cut: Arc<AtomicBool>,
    /// Bumped on every heal: connections of an older generation close.
    generation: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    pub fn start(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let proxy = Self {
            port,
            cut: Arc::default(),
            generation: Arc::default(),
            stop: Arc::default(),
            connections: Arc::default(),
        };
        let (cut, generation, stop, connections) = (
            proxy.cut.clone(),
            proxy.generation.clone(),
            proxy.stop.clone(),
            proxy.connections.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let client = match listener.accept() {
                    Ok((client, _)) => client,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                };
                let _ = client.set_nonblocking(false);
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let born = generation.load(Ordering::Relaxed);
                for stream in [&client, &server] {
                    if let Ok(clone) = stream.try_clone() {
                        connections.lock().expect("lock").push(clone);
                    }
                }
                for (from, to) in [(&client, &server), (&server, &client)] {
                    let (Ok(from), Ok(to)) = (from.try_clone(), to.try_clone()) else {
                        continue;
                    };
                    let (cut, generation) = (cut.clone(), generation.clone());
                    std::thread::spawn(move || pump(from, to, &cut, &generation, born));
                }
            }
        });
        proxy
    }

    /// Black-holes every connection through the proxy, and new ones.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }

    /// Lets bytes through again; connections that were black-holed close.
    pub fn heal(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.cut.store(false, Ordering::SeqCst);
        for stream in self.connections.lock().expect("lock").drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for stream in self.connections.lock().expect("lock").drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    cut: &AtomicBool,
    generation: &AtomicU64,
    born: u64,
) {
    let mut buffer = [0u8; 64 * 1024];
    loop {
        let read = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        if generation.load(Ordering::SeqCst) != born {
            break;
        }
        if cut.load(Ordering::SeqCst) {
            continue;
        }
        if to.write_all(&buffer[..read]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
    let _ = from.shutdown(std::net::Shutdown::Both);
}

/// Checks clients' histories against what the nodes stored (their data
/// dirs): every acknowledged add (list, title) is on every node, once; a
/// failure answer (list, title, what it said) said "not applied" only of a
/// write no node holds, and "outcome unknown" of every write it failed that
/// a node holds.
pub fn check_history(
    dirs: &[&Path],
    acked: &[(String, String)],
    failed: &[(String, String, String)],
) {
    let lists: std::collections::BTreeSet<&String> = acked
        .iter()
        .map(|(list, _)| list)
        .chain(failed.iter().map(|(list, _, _)| list))
        .collect();
    for dir in dirs {
        let stored: BTreeMap<&String, Vec<String>> = lists
            .iter()
            .map(|list| {
                let titles: Vec<String> = stored_entries(dir, list)
                    .into_iter()
                    .map(|entry| entry.title)
                    .collect();
                let mut unique = titles.clone();
                unique.sort_unstable();
                unique.dedup();
                assert_eq!(unique.len(), titles.len(), "a duplicate in {list}");
                (*list, titles)
            })
            .collect();
        let holds = |list: &String, title: &String| {
            stored
                .get(list)
                .is_some_and(|titles| titles.contains(title))
        };
        for (list, title) in acked {
            assert!(
                holds(list, title),
                "{title} was acknowledged but is missing from {list} in {}",
                dir.display()
            );
        }
        for (list, title, said) in failed {
            if holds(list, title) {
                assert!(
                    said.contains("outcome unknown"),
                    "{title} is in {list} in {}, but its answer was: {said}",
                    dir.display()
                );
            } else {
                assert!(
                    said.contains("not applied") || said.contains("outcome unknown"),
                    "{title}'s answer says neither: {said}"
                );
            }
        }
    }
}

/// Three Todo nodes, n1 to n3, that reach each other only through proxies
/// (`proxies[from][to]`: how `from` reaches `to`), joined into a cluster:
/// a node can be cut off silently, both ways, and healed.
pub struct ProxiedCluster {
    pub nodes: Vec<Node>,
    proxies: Vec<Vec<Option<Proxy>>>,
}

impl ProxiedCluster {
    pub fn start(epmd: &Epmd) -> Self {
        let names = ["n1", "n2", "n3"];
        let ports: Vec<u16> = names.iter().map(|_| free_port()).collect();
        let proxies: Vec<Vec<Option<Proxy>>> = (0..3)
            .map(|from| {
                (0..3)
                    .map(|to| (from != to).then(|| Proxy::start(ports[to])))
                    .collect()
            })
            .collect();
        let nodes: Vec<Node> = (0..3)
            .map(|i| {
                let mut builder = NodeBuilder::todo()
                    .clustered(names[i], epmd, COOKIE)
                    .metrics()
                    .arg("--dist-port")
                    .arg(&ports[i].to_string());
                for to in (0..3).filter(|to| *to != i) {
                    let proxy = proxies[i][to].as_ref().expect("proxy");
                    builder = builder
                        .arg("--peer-address")
                        .arg(&format!("{}@127.0.0.1=127.0.0.1:{}", names[to], proxy.port));
                }
                builder.start()
            })
            .collect();
        connect(epmd, &nodes[1], &nodes[0]);
        connect(epmd, &nodes[2], &nodes[0]);
        let all: Vec<&Node> = nodes.iter().collect();
        for node in &nodes {
            wait_for_members(epmd, node, &all);
        }
        // Three voters, so that any one node can be cut off.
        eventually(Duration::from_secs(30), "three voters", || {
            let rows = self::nodes(epmd, &nodes[0]);
            rows.len() == 3 && rows.values().all(|row| row.starts_with("voter"))
        });
        Self { nodes, proxies }
    }

    /// Drops whatever node `i` and the others send each other, silently.
    pub fn cut(&self, i: usize) {
        for (from, row) in self.proxies.iter().enumerate() {
            for (to, proxy) in row.iter().enumerate() {
                if let Some(proxy) = proxy
                    && (from == i || to == i)
                {
                    proxy.cut();
                }
            }
        }
    }

    /// Lets every link through again.
    pub fn heal(&self) {
        for proxy in self.proxies.iter().flatten().flatten() {
            proxy.heal();
        }
    }

    /// Once every node has applied the same log, kills them keeping their
    /// data and checks the clients' histories against it
    /// ([`check_history`]).
    pub fn check_history(self, acked: &[(String, String)], failed: &[(String, String, String)]) {
        let nodes = &self.nodes;
        eventually(
            Duration::from_secs(20),
            "every node applied the same log",
            || {
                let applied: Vec<u64> = nodes
                    .iter()
                    .map(|node| node.metric("host_cluster_applied_index"))
                    .collect();
                applied.iter().all(|index| *index == applied[0])
            },
        );
        let kept: Vec<_> = self
            .nodes
            .into_iter()
            .map(Node::kill_keeping_data)
            .collect();
        let dirs: Vec<&Path> = kept.iter().map(|(dir, _)| dir.as_path()).collect();
        check_history(&dirs, acked, failed);
    }

    /// The index of the node that leads now.
    pub fn leader(&self) -> usize {
        let leaders: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].metric("host_cluster_leader") == 1)
            .collect();
        assert_eq!(leaders.len(), 1, "one leader: {leaders:?}");
        leaders[0]
    }
}

/// A CA and a certificate it signed for 127.0.0.1, as PEM files in `dir`:
/// `ca.pem`, `node.pem`, `node.key`.
pub fn make_certificates(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
    let key = KeyPair::generate().expect("node key");
    let params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .expect("node params");
    let cert = params
        .signed_by(&key, &ca, &ca_key)
        .expect("node certificate");
    std::fs::create_dir_all(dir).expect("cert dir");
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write");
    std::fs::write(dir.join("node.pem"), cert.pem()).expect("write");
    std::fs::write(dir.join("node.key"), key.serialize_pem()).expect("write");
}

/// The TLS options for the certificates [`make_certificates`] wrote.
pub fn tls_args(dir: &Path) -> Vec<String> {
    vec![
        "--tls-cert".into(),
        dir.join("node.pem").display().to_string(),
        "--tls-key".into(),
        dir.join("node.key").display().to_string(),
        "--tls-ca".into(),
        dir.join("ca.pem").display().to_string(),
    ]
}
