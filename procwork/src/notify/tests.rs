//! Tests of the notify protocol: parsing, and the sender's pid.

use super::*;

#[test]
fn assignments_are_read_and_the_rest_ignored() {
    let n = parse(b"READY=1\nSTATUS=serving 3 clients\nMAINPID=7\ngarbage\n");
    assert!(n.ready);
    assert_eq!(n.status.as_deref(), Some("serving 3 clients"));
    assert!(!n.stopping && !n.watchdog);
    let n = parse(b"WATCHDOG=1");
    assert!(n.watchdog && !n.ready);
    assert!(parse(b"WATCHDOG=trigger").watchdog_trigger);
    assert!(parse(b"STOPPING=1").stopping);
    assert!(parse(b"RELOADING=1").reloading);
    assert_eq!(parse(b"READY=0"), Notice::default());
}

#[tokio::test(flavor = "current_thread")]
async fn a_datagram_carries_its_senders_pid_by_path_and_by_descriptor() {
    let path = std::env::temp_dir().join(format!("procwork-notify-{}.sock", std::process::id()));
    let socket = NotifySocket::bind(&path).unwrap();
    let client = StdUnixDatagram::unbound().unwrap();
    client.send_to(b"READY=1", &path).unwrap();
    let (pid, msg) = socket.recv().await.unwrap();
    assert_eq!(pid, Some(std::process::id()));
    assert_eq!(msg, b"READY=1");
    let fd = socket.connected_client().unwrap();
    StdUnixDatagram::from(fd).send(b"STATUS=x").unwrap();
    let (pid, msg) = socket.recv().await.unwrap();
    assert_eq!(pid, Some(std::process::id()));
    assert_eq!(parse(&msg).status.as_deref(), Some("x"));
    drop(socket);
    assert!(!path.exists());
}
