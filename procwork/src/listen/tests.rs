//! Tests of the `--listen` parser and of the Unix-domain socket files.

use std::os::unix::fs::PermissionsExt;

use super::*;

#[test]
fn tcp_and_unix_addresses_parse_with_an_optional_name() {
    let spec: ListenSpec = "tcp://127.0.0.1:3000".parse().unwrap();
    assert_eq!(spec.name, None);
    assert_eq!(
        spec.addr,
        ListenAddr::Tcp("127.0.0.1:3000".parse().unwrap())
    );
    let spec: ListenSpec = "http=tcp://[::1]:8080".parse().unwrap();
    assert_eq!(spec.name.as_deref(), Some("http"));
    assert_eq!(spec.addr, ListenAddr::Tcp("[::1]:8080".parse().unwrap()));
    let spec: ListenSpec = "unix:/run/app.sock".parse().unwrap();
    assert_eq!(spec.addr, ListenAddr::Unix("/run/app.sock".into()));
}

#[test]
fn malformed_addresses_say_what_is_expected() {
    for (text, why) in [
        ("127.0.0.1:3000", "expected tcp://HOST:PORT or unix:PATH"),
        ("tcp://127.0.0.1", "expected tcp://HOST:PORT"),
        ("tcp://127.0.0.1:http", "the port is not a number"),
        ("unix:", "expected unix:PATH"),
        (
            "a:b=tcp://127.0.0.1:1",
            "expected tcp://HOST:PORT or unix:PATH",
        ),
        ("bad name=tcp://127.0.0.1:1", "a name is"),
    ] {
        let err = text.parse::<ListenSpec>().unwrap_err().to_string();
        assert!(err.contains(why), "{text}: {err}");
    }
}

#[test]
fn a_unix_socket_gets_its_mode_replaces_a_stale_file_and_is_removed_at_drop() {
    let dir = std::env::temp_dir().join(format!("procwork-listen-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("app.sock");
    // A stale socket file: bound, then its listener closed.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let spec: ListenSpec = format!("unix:{}", path.display()).parse().unwrap();
    let socket = ListenSocket::open(&spec, 0o640).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
    // A live one is refused.
    match ListenSocket::open(&spec, 0o640) {
        Err(Error::SocketInUse { .. }) => {}
        other => panic!("expected SocketInUse, got {other:?}"),
    }
    drop(socket);
    assert!(!path.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_inherited_socket_is_taken_for_the_same_address() {
    let inherited = ListenSocket::open(&"tcp://127.0.0.1:0".parse().unwrap(), 0).unwrap();
    let ListenAddr::Tcp(addr) = inherited.addr.clone() else {
        panic!("tcp");
    };
    let fd = inherited.fd.try_clone().unwrap();
    let specs = vec![ListenSpec {
        name: Some("web".into()),
        addr: ListenAddr::Tcp(addr),
    }];
    // Binding the same address again would fail (EADDRINUSE): it is taken.
    let all = open_all(&specs, 0, vec![(Some("activated".into()), fd)], false).unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].name, "web");
    assert_eq!(all[0].addr, ListenAddr::Tcp(addr));
}
