//! The other kinds of listener through the primary: Unix-domain stream
//! sockets (paths and abstract names, every policy, the no-loss hand-off,
//! the socket file's life), UDP shared by every worker, a descriptor the
//! primary holds, and the typed listen errors.

use std::collections::{BTreeMap, BTreeSet};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cluster_core::{
    Cluster, Endpoint, Event, InheritedSocket, PolicyKind, RestartPolicy, SlotId, UnixAddr,
    WorkerId,
};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::UnixStream;

use crate::support::{self, BOUND, Msg, settings, until, until_n};

/// A fresh directory for this test's socket files.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("procwork-unix-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Wait for `n` `ListeningOn` events; the endpoints, and the slot of every
/// worker forked meanwhile.
async fn listening_on(
    cluster: &mut Cluster<Msg>,
    n: usize,
) -> (BTreeSet<Endpoint>, BTreeMap<WorkerId, SlotId>) {
    let mut endpoints = BTreeSet::new();
    let mut slots = BTreeMap::new();
    let mut seen = 0;
    until(cluster, |ev| {
        match ev {
            Event::Fork { worker, slot, .. } => {
                slots.insert(*worker, *slot);
            }
            Event::ListeningOn { endpoint, .. } => {
                endpoints.insert(endpoint.clone());
                seen += 1;
            }
            _ => {}
        }
        seen == n
    })
    .await;
    (endpoints, slots)
}

/// A cluster of `n` helper workers in `mode` serving the Unix-domain socket
/// `unix` (a path, or `@name`) under `policy`, once every worker listens.
async fn unix_cluster(
    mode: &str,
    n: usize,
    policy: PolicyKind,
    unix: &str,
) -> (Cluster<Msg>, BTreeMap<WorkerId, SlotId>) {
    let mut s = settings(mode, n);
    s.env("HELPER_UNIX", unix).scheduling_policy(policy);
    let mut cluster = Cluster::<Msg>::new(s).unwrap();
    cluster.start().unwrap();
    let (endpoints, slots) = listening_on(&mut cluster, n).await;
    assert_eq!(endpoints.len(), 1, "one socket for all: {endpoints:?}");
    (cluster, slots)
}

/// Connect to a path and read the worker id it answers with; the connection
/// stays open while the stream lives.
async fn ask(path: &Path) -> (u64, BufReader<UnixStream>) {
    let stream = tokio::time::timeout(BOUND, UnixStream::connect(path))
        .await
        .expect("connect timed out")
        .unwrap();
    read_id(stream).await
}

async fn read_id(stream: UnixStream) -> (u64, BufReader<UnixStream>) {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    tokio::time::timeout(BOUND, reader.read_line(&mut line))
        .await
        .expect("no answer from a worker")
        .unwrap();
    let id = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("bad answer {line:?}"));
    (id, reader)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_gives_each_of_4_workers_100_of_400_unix_connections() {
    let dir = scratch("rr");
    let path = dir.join("app.sock");
    let (cluster, slots) =
        unix_cluster("serve", 4, PolicyKind::RoundRobin, path.to_str().unwrap()).await;
    let mut counts: BTreeMap<u64, u32> = BTreeMap::new();
    for _ in 0..400 {
        let (id, conn) = ask(&path).await;
        drop(conn);
        *counts.entry(id).or_default() += 1;
    }
    let ids: BTreeSet<u64> = slots.keys().map(|w| w.0).collect();
    assert_eq!(counts.keys().copied().collect::<BTreeSet<_>>(), ids);
    assert!(counts.values().all(|&c| c == 100), "{counts:?}");
    assert!(path.exists());
    support::shutdown(cluster).await;
    assert!(!path.exists(), "the socket file outlived the shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_least_connections_and_p2c_serve_unix_connections() {
    for policy in [
        PolicyKind::Sticky,
        PolicyKind::LeastConnections,
        PolicyKind::PowerOfTwoChoices,
    ] {
        let dir = scratch(policy.as_str());
        let path = dir.join("app.sock");
        let (cluster, slots) = unix_cluster("serve", 2, policy, path.to_str().unwrap()).await;
        // Held open: least-connections and p2c alternate between two
        // workers; sticky, with no client address, is round-robin.
        let mut counts: BTreeMap<u64, u32> = BTreeMap::new();
        let mut held = Vec::new();
        for _ in 0..6 {
            let (id, conn) = ask(&path).await;
            *counts.entry(id).or_default() += 1;
            held.push(conn);
        }
        assert!(counts.keys().all(|id| slots.contains_key(&WorkerId(*id))));
        assert_eq!(
            counts.values().copied().collect::<Vec<_>>(),
            [3, 3],
            "{policy}: {counts:?}"
        );
        drop(held);
        support::shutdown(cluster).await;
        assert!(!path.exists());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn none_shares_the_unix_listener_and_the_workers_accept() {
    let dir = scratch("none");
    let path = dir.join("app.sock");
    let (mut cluster, slots) =
        unix_cluster("serve-report", 2, PolicyKind::None, path.to_str().unwrap()).await;
    for _ in 0..20 {
        let (id, conn) = ask(&path).await;
        drop(conn);
        assert!(slots.contains_key(&WorkerId(id)), "unknown worker {id}");
    }
    until_n(
        &mut cluster,
        20,
        |ev| matches!(ev, Event::Message(m) if *m.value() == Msg::Text("accepted".into())),
    )
    .await;
    assert!(
        cluster.connection_stats().values().all(|c| c.handed == 0),
        "{:?}",
        cluster.connection_stats()
    );
    support::shutdown(cluster).await;
    assert!(!path.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abstract_name_is_served_and_leaves_no_file() {
    let name = format!("procwork-test-{}", std::process::id());
    let (cluster, slots) =
        unix_cluster("serve", 2, PolicyKind::RoundRobin, &format!("@{name}")).await;
    for _ in 0..4 {
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let std = std::os::unix::net::UnixStream::connect_addr(&addr).unwrap();
        std.set_nonblocking(true).unwrap();
        let (id, _conn) = read_id(UnixStream::from_std(std).unwrap()).await;
        assert!(slots.contains_key(&WorkerId(id)));
    }
    support::shutdown(cluster).await;
}

/// The socket file stays bound for the life of the cluster, as a TCP port
/// does: with no worker left at all (no restart), a client connects and
/// waits, and the next worker forked answers it; the file goes at the
/// shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_file_outlives_its_last_worker_and_its_client_waits_for_the_next() {
    let dir = scratch("last");
    let path = dir.join("app.sock");
    let mut s = settings("serve", 0);
    s.env("HELPER_UNIX", path.to_str().unwrap())
        .env("HELPER_UNIX_MODE", "600")
        .restart(RestartPolicy::Never);
    let mut cluster = Cluster::<Msg>::new(s).unwrap();
    let only = cluster.fork().unwrap();
    listening_on(&mut cluster, 1).await;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the mode setting");
    only.kill(cluster_core::Signal::SIGKILL).unwrap();
    // Reported once the primary has taken the worker out of its tables.
    until(&mut cluster, |ev| matches!(ev, Event::Exit { .. })).await;
    assert!(path.exists(), "the file went with its last worker");
    let waiting = tokio::spawn({
        let path = path.clone();
        async move { ask(&path).await.0 }
    });
    let next = cluster.fork().unwrap();
    listening_on(&mut cluster, 1).await;
    let id = tokio::time::timeout(BOUND, waiting)
        .await
        .expect("the waiting client is answered")
        .unwrap();
    assert_eq!(WorkerId(id), next.id());
    support::shutdown(cluster).await;
    assert!(!path.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_file_from_a_killed_primary_does_not_stop_the_next_start() {
    let dir = scratch("stale");
    let path = dir.join("app.sock");
    let mut primary = tokio::process::Command::new(support::HELPER)
        .args(["primary", "1"])
        .env("HELPER_WORKER_MODE", "serve")
        .env("HELPER_UNIX", &path)
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Served once: the primary bound the file.
    tokio::time::timeout(BOUND, async {
        loop {
            if let Ok(stream) = UnixStream::connect(&path).await {
                return read_id(stream).await;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the first primary never served");
    primary.kill().await.unwrap();
    // Its worker dies with it (parent-death signal); the file stays, and
    // nothing accepts on it any more.
    assert!(path.exists(), "a SIGKILLed primary cannot remove its file");
    tokio::time::timeout(BOUND, async {
        while std::os::unix::net::UnixStream::connect(&path).is_ok() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the killed primary's socket still accepts");

    let (cluster, slots) =
        unix_cluster("serve", 1, PolicyKind::RoundRobin, path.to_str().unwrap()).await;
    let (id, _conn) = ask(&path).await;
    assert!(slots.contains_key(&WorkerId(id)));
    support::shutdown(cluster).await;
    assert!(!path.exists());
}

/// A path where a bind is refused for permissions: an unwritable directory
/// (for a user without `CAP_DAC_OVERRIDE`), or, for root, sysfs (`EPERM`).
fn forbidden_path(dir: &Path) -> PathBuf {
    let locked = dir.join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o500)).unwrap();
    let candidates = [
        locked.join("app.sock"),
        PathBuf::from(format!("/sys/procwork-{}.sock", std::process::id())),
    ];
    candidates
        .into_iter()
        .find(|p| {
            std::os::unix::net::UnixListener::bind(p)
                .is_err_and(|e| e.kind() == std::io::ErrorKind::PermissionDenied)
        })
        .expect("no path refuses a bind for permissions here")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_listen_errors_reach_the_worker_typed() {
    let dir = scratch("errors");
    // A live server owns this one: not stale, so not removed.
    let live = dir.join("live.sock");
    let _owner = std::os::unix::net::UnixListener::bind(&live).unwrap();
    // Not a socket at all: never removed.
    let regular = dir.join("regular.sock");
    std::fs::write(&regular, b"keep me").unwrap();
    let missing = dir.join("no-such-dir").join("app.sock");
    let long = dir.join("x".repeat(120));
    let forbidden = forbidden_path(&dir);
    let cases = [
        (live.to_str().unwrap(), "error AddrInUse AddrInUse"),
        (regular.to_str().unwrap(), "error AddrInUse AddrInUse"),
        (missing.to_str().unwrap(), "error NotFound NotFound"),
        (long.to_str().unwrap(), "error PathTooLong Other"),
        (
            forbidden.to_str().unwrap(),
            "error PermissionDenied PermissionDenied",
        ),
    ];
    let mut s = settings("listen-unix-report", 0);
    s.scheduling_policy(PolicyKind::RoundRobin);
    let mut cluster = Cluster::<Msg>::new(s).unwrap();
    let mut want = BTreeMap::new();
    for (path, report) in cases {
        let w = cluster.fork_with_env([("HELPER_UNIX", path)]).unwrap();
        want.insert(w.id(), report.to_string());
    }
    // A descriptor the primary was not given.
    let w = cluster
        .fork_with_env([("HELPER_FD", "1000"), ("HELPER_UNIX", "unused")])
        .unwrap();
    want.insert(w.id(), "error UnknownDescriptor Other".into());
    let mut got = BTreeMap::new();
    until(&mut cluster, |ev| {
        if let Event::Message(m) = ev
            && let Msg::Text(t) = m.value()
        {
            got.insert(m.worker(), t.clone());
        }
        got.len() == want.len()
    })
    .await;
    assert_eq!(got, want);
    assert_eq!(std::fs::read(&regular).unwrap(), b"keep me");
    assert!(std::os::unix::net::UnixStream::connect(&live).is_ok());
    support::shutdown(cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_datagrams_reach_every_worker_and_none_is_lost() {
    let mut s = settings("udp", 4);
    s.env("HELPER_ADDR", "127.0.0.1:0");
    let mut cluster = Cluster::<Msg>::new(s).unwrap();
    cluster.start().unwrap();
    let (endpoints, slots) = listening_on(&mut cluster, 4).await;
    let addrs: Vec<_> = endpoints.into_iter().collect();
    let [Endpoint::Udp(addr)] = addrs[..] else {
        panic!("one shared UDP address: {addrs:?}");
    };
    assert_ne!(addr.port(), 0, "port 0 is resolved once");
    // Four clients, each sending bursts of 25 and reading every answer
    // before the next burst: at most 100 small datagrams in flight, far
    // below the receive buffers.
    const CLIENTS: usize = 4;
    const BURSTS: usize = 4;
    const BURST: usize = 25;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CLIENTS {
        tasks.spawn(async move {
            let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let port = sock.local_addr().unwrap().port();
            let mut answers = Vec::new();
            let mut buf = [0u8; 64];
            for _ in 0..BURSTS {
                for _ in 0..BURST {
                    sock.send_to(b"ping", addr).await.unwrap();
                }
                for _ in 0..BURST {
                    let (n, _) = tokio::time::timeout(BOUND, sock.recv_from(&mut buf))
                        .await
                        .expect("a datagram was lost")
                        .unwrap();
                    let text = std::str::from_utf8(&buf[..n]).unwrap();
                    let (id, seen_port) = text.split_once(' ').unwrap();
                    answers.push((
                        id.parse::<u64>().unwrap(),
                        seen_port.parse::<u16>().unwrap(),
                    ));
                }
            }
            (port, answers)
        });
    }
    let mut per_worker: BTreeMap<u64, BTreeSet<u16>> = BTreeMap::new();
    let mut total = 0;
    let mut ports = BTreeSet::new();
    while let Some(res) = tasks.join_next().await {
        let (port, answers) = res.unwrap();
        ports.insert(port);
        for (id, seen) in answers {
            assert_eq!(seen, port, "the worker saw the client's port");
            per_worker.entry(id).or_default().insert(seen);
            total += 1;
        }
    }
    assert_eq!(total, CLIENTS * BURSTS * BURST, "every datagram answered");
    let ids: BTreeSet<u64> = slots.keys().map(|w| w.0).collect();
    assert_eq!(
        per_worker.keys().copied().collect::<BTreeSet<_>>(),
        ids,
        "every worker received some"
    );
    let all_seen: BTreeSet<u16> = per_worker.values().flatten().copied().collect();
    assert_eq!(all_seen, ports, "from several source ports");
    support::shutdown(cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inherited_descriptor_is_served_by_fd_and_by_its_address() {
    let dir = scratch("fd");
    let path = dir.join("inherited.sock");
    let mut s = settings("serve", 0);
    s.scheduling_policy(PolicyKind::RoundRobin);
    let mut cluster = Cluster::<Msg>::new(s).unwrap();
    // Bound before the cluster, as systemd would: the cluster must use it,
    // not bind again, and must not remove its file.
    let unix = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let fd = cluster.inherit_socket(InheritedSocket::Unix(unix));
    let fd = fd.to_string();
    let by_fd = cluster.fork_with_env([("HELPER_FD", fd.as_str())]).unwrap();
    let by_path = cluster
        .fork_with_env([
            ("HELPER_MODE", "serve"),
            ("HELPER_UNIX", path.to_str().unwrap()),
        ])
        .unwrap();
    let (endpoints, _) = listening_on(&mut cluster, 2).await;
    assert_eq!(
        endpoints,
        BTreeSet::from([Endpoint::Unix(UnixAddr::from(path.as_path()))])
    );
    let mut ids = BTreeSet::new();
    for _ in 0..4 {
        let (id, _conn) = ask(&path).await;
        ids.insert(WorkerId(id));
    }
    assert_eq!(ids, BTreeSet::from([by_fd.id(), by_path.id()]));

    // A TCP descriptor, too.
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp_addr = tcp.local_addr().unwrap();
    let fd = cluster
        .inherit_socket(InheritedSocket::Tcp(tcp))
        .to_string();
    let w = cluster.fork_with_env([("HELPER_FD", fd.as_str())]).unwrap();
    until(
        &mut cluster,
        |ev| matches!(ev, Event::Listening { worker, addr, .. } if *worker == w.id() && *addr == tcp_addr),
    )
    .await;
    let stream = tokio::net::TcpStream::connect(tcp_addr).await.unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    tokio::time::timeout(BOUND, reader.read_line(&mut line))
        .await
        .expect("no answer")
        .unwrap();
    assert_eq!(line.trim(), w.id().0.to_string());
    support::shutdown(cluster).await;
    assert!(
        path.exists(),
        "an inherited socket's file is not the cluster's"
    );
}

/// A socket given to `Cluster::inherit_socket` that no worker listens on
/// (they listen elsewhere) is an error, as a socket-activated one is: once
/// every worker listens, it is reported (`Event::UnusedSocket`, naming its
/// address) and `run_with` shuts the cluster down and fails with
/// `Error::UnusedSocket`, instead of serving while the socket's clients
/// wait for ever. Fails before: the check saw only the sockets inherited
/// at start, and `run_with` ran on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_given_socket_no_worker_listens_on_ends_the_run_with_an_error() {
    let cluster = Cluster::<Msg>::new(settings("serve", 2)).unwrap();
    // The workers listen on 127.0.0.1:0, which would take a given socket of
    // that address: this one is on another loopback address.
    let unused = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
    let addr = unused.local_addr().unwrap();
    cluster.inherit_socket(InheritedSocket::Tcp(unused));
    let mut events = Vec::new();
    let result = tokio::time::timeout(BOUND, cluster.run_with(|ev| events.push(ev)))
        .await
        .expect("the run did not end");
    match result {
        Err(cluster_core::Error::UnusedSocket { addr: said }) => {
            assert_eq!(said, addr.to_string());
        }
        other => panic!("not an unused socket: {other:?}"),
    }
    let listening = events
        .iter()
        .filter(|ev| matches!(ev, Event::Listening { addr: a, .. } if *a != addr))
        .count();
    assert_eq!(listening, 2, "{events:?}");
    assert!(
        events
            .iter()
            .any(|ev| matches!(ev, Event::UnusedSocket { addr: a, .. } if *a == addr.to_string())),
        "{events:?}"
    );
}

#[test]
fn unix_listeners_and_connections_move_between_tasks() {
    fn send_sync<T: Send + Sync + Unpin + 'static>() {}
    fn send<T: Send + Unpin + 'static>() {}
    send_sync::<cluster_core::UnixConnection>();
    send::<cluster_core::UnixListener>();
    send::<cluster_core::FdListener>();
}

/// A live socket file whose server accepts nothing and whose backlog is
/// full: bound with a backlog of 0, connected to (without blocking) until
/// the kernel says `EAGAIN`. A blocking connect to it waits for good.
fn jammed_socket(path: &Path) -> Vec<std::os::fd::OwnedFd> {
    use nix::sys::socket::{
        AddressFamily, Backlog, SockFlag, SockType, UnixAddr as Sun, bind, connect, listen, socket,
    };
    use std::os::fd::AsRawFd;
    let addr = Sun::new(path).unwrap();
    let server = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    bind(server.as_raw_fd(), &addr).unwrap();
    listen(&server, Backlog::new(0).unwrap()).unwrap();
    let mut held = vec![server];
    for _ in 0..64 {
        let client = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .unwrap();
        match connect(client.as_raw_fd(), &addr) {
            Ok(()) => held.push(client),
            Err(nix::errno::Errno::EAGAIN) => return held,
            Err(e) => panic!("connect to the jammed socket: {e}"),
        }
    }
    panic!("the backlog of {} never filled", path.display());
}

/// The primary checks whether a socket file in the way is stale by
/// connecting to it. A live server that is jammed (its backlog full, it
/// accepts nothing) must not block the primary: the listen fails with
/// `AddrInUse` (it is not stale), and the other workers' clients are
/// served meanwhile and after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jammed_socket_file_in_the_way_blocks_nothing() {
    let dir = scratch("jammed");
    let path = dir.join("jammed.sock");
    let _jammed = jammed_socket(&path);
    let (mut cluster, target) =
        support::serving_on(settings("serve", 1), support::Kind::Tcp, 1).await;
    let support::Target::Tcp(addr) = target else {
        unreachable!("a TCP target")
    };
    let prober = cluster
        .fork_with_env([
            ("HELPER_MODE", "listen-unix-report"),
            ("HELPER_UNIX", path.to_str().unwrap()),
        ])
        .unwrap();
    let mut report = None;
    until(&mut cluster, |ev| {
        if let Event::Message(m) = ev
            && m.worker() == prober.id()
            && let Msg::Text(t) = m.value()
        {
            report = Some(t.clone());
        }
        report.is_some()
    })
    .await;
    assert_eq!(report.as_deref(), Some("error AddrInUse AddrInUse"));
    for _ in 0..20 {
        let stream = tokio::time::timeout(BOUND, tokio::net::TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .unwrap();
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        tokio::time::timeout(BOUND, reader.read_line(&mut line))
            .await
            .expect("the TCP worker answers")
            .unwrap();
        assert!(line.trim().parse::<u64>().is_ok(), "{line:?}");
    }
    support::shutdown(cluster).await;
}
