//! The `LISTEN_*` parsing: which descriptors are ours, and when none are.

use super::{LISTEN_FDS_START, parse};

#[test]
fn names_this_process_only() {
    assert_eq!(parse(None, Some("2"), None, None, 42), None);
    assert_eq!(parse(Some("41"), Some("2"), None, None, 42), None);
    assert_eq!(parse(Some("x"), Some("2"), None, None, 42), None);
    let (fds, upgrade) = parse(Some("42"), Some("2"), None, None, 42).unwrap();
    assert_eq!(
        fds,
        vec![(LISTEN_FDS_START, None), (LISTEN_FDS_START + 1, None)]
    );
    assert_eq!(upgrade, None);
}

#[test]
fn reads_names_and_the_upgrade_channel() {
    let (fds, upgrade) = parse(Some("7"), Some("3"), Some("http::admin"), Some("6"), 7).unwrap();
    assert_eq!(
        fds,
        vec![
            (3, Some("http".to_owned())),
            (4, None),
            (5, Some("admin".to_owned()))
        ]
    );
    assert_eq!(upgrade, Some(6));
}

#[test]
fn refuses_nonsense() {
    assert_eq!(parse(Some("7"), Some("-1"), None, None, 7), None);
    assert_eq!(parse(Some("7"), Some("many"), None, None, 7), None);
    // The upgrade channel cannot be one of the sockets.
    let (_, upgrade) = parse(Some("7"), Some("2"), None, Some("4"), 7).unwrap();
    assert_eq!(upgrade, None);
}

#[test]
fn inherited_sockets_are_recognised_by_kind_and_found_by_address() {
    use std::os::fd::OwnedFd;

    use super::super::balancer::{InheritedSocket, ListenKey};
    use super::recognise;

    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp_addr = tcp.local_addr().unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dir = std::env::temp_dir().join(format!("procwork-activation-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("a.sock");
    let _ = std::fs::remove_file(&path);
    let unix = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let (pipe, _other_end) = std::io::pipe().unwrap();

    let tcp = recognise(OwnedFd::from(tcp)).expect("a TCP listener");
    assert!(matches!(tcp, InheritedSocket::Tcp(_)));
    let keys = tcp.keys();
    assert!(keys.contains(&ListenKey::Tcp(tcp_addr)), "{keys:?}");
    // Port 0 on the same IP address takes it; another IP does not.
    let any_port = ListenKey::Tcp("127.0.0.1:0".parse().unwrap());
    assert!(keys.iter().any(|k| k.answers(&any_port)));
    let elsewhere = ListenKey::Tcp("127.0.0.2:0".parse().unwrap());
    assert!(!keys.iter().any(|k| k.answers(&elsewhere)));

    assert!(matches!(
        recognise(OwnedFd::from(udp)),
        Ok(InheritedSocket::Udp(_))
    ));
    let unix = recognise(OwnedFd::from(unix)).expect("a Unix-domain listener");
    assert!(matches!(unix, InheritedSocket::Unix(_)));
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()).to_vec();
    assert!(
        unix.keys()
            .contains(&ListenKey::Unix(cluster_ipc::UnixAddr::Path(bytes)))
    );
    // Not a socket: kept as it is, only ever handed on.
    assert!(recognise(OwnedFd::from(pipe)).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}
