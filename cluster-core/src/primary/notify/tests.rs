//! The notify protocol's parsing, and one datagram to a bound socket.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use super::{Service, notify_addr, write_pid_file};

#[test]
fn a_datagram_reaches_a_bound_socket() {
    let dir = std::env::temp_dir().join(format!("procwork-notify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&path);
    let server = UnixDatagram::bind(&path).unwrap();
    let addr = notify_addr(path.to_str().unwrap()).unwrap();
    UnixDatagram::unbound()
        .unwrap()
        .send_to_addr(b"READY=1", &addr)
        .unwrap();
    let mut buf = [0u8; 64];
    let n = server.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"READY=1");

    let pid_file = dir.join("pid");
    write_pid_file(&pid_file, 4242).unwrap();
    assert_eq!(std::fs::read_to_string(&pid_file).unwrap(), "4242\n");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A service manager that never reads: its socket's queue (ten datagrams by
/// default) fills at once, and a blocking send would then wait for ever.
/// The service's calls return at once all the same, and what fitted
/// arrived in order.
#[tokio::test]
async fn a_manager_that_never_reads_holds_up_nothing() {
    let dir = std::env::temp_dir().join(format!("procwork-notify-full-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&path);
    let manager = UnixDatagram::bind(&path).unwrap();
    let addr = notify_addr(path.to_str().unwrap()).unwrap();
    let pid_file = dir.join("pid");
    let service = Service::new(
        Some(addr),
        None,
        Some(pid_file.clone()),
        None,
        Duration::from_secs(30),
    );
    let calls = async {
        for n in 0..2000 {
            service.progress(0, 2, &format!("event {n}"), None).await;
            service.watchdog();
        }
        // Ready: the pid file is written before it returns.
        service.progress(2, 2, "ready", None).await;
    };
    tokio::time::timeout(Duration::from_secs(20), calls)
        .await
        .expect("the service's calls waited for the manager");
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap(),
        format!("{}\n", std::process::id())
    );
    let mut buf = [0u8; 256];
    let n = manager.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"STATUS=0/2 workers ready; event 0");
    let n = manager.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"WATCHDOG=1");
    drop(service);
    std::fs::remove_dir_all(&dir).unwrap();
}
