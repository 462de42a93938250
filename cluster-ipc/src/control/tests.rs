//! The control grammar pinned byte for byte: one snapshot per variant (a hex
//! dump of the whole frame plus the decoded value), the handshake, and a
//! round-trip property over every variant.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

use proptest::prelude::*;

use super::*;
use crate::frame::tests::hex_dump;
use crate::frame::{Decoder, FrameKind, decode_payload, encode_frame};

/// Encodes `msg` as a whole frame, decodes it back through the decoder,
/// checks the round trip and renders the snapshot text.
fn render<T>(kind: FrameKind, msg: &T, n_fds: usize) -> String
where
    T: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug,
{
    let mut wire = Vec::new();
    encode_frame(&mut wire, kind, msg, n_fds, 1024).unwrap();
    let mut decoder = Decoder::new(1024);
    if n_fds > 0 {
        let fds = (0..n_fds).map(|_| std::fs::File::open("/dev/null").unwrap().into());
        decoder.push_fds(fds).unwrap();
    }
    decoder.push_bytes(&wire).unwrap();
    let frames = decoder.drain_frames().unwrap();
    assert_eq!(frames.len(), 1);
    let (header, payload, fds) = &frames[0];
    assert_eq!(fds.len(), n_fds);
    let decoded: T = decode_payload(header.kind, payload).unwrap();
    assert_eq!(&decoded, msg);
    format!(
        "header: len={} kind={} n_fds={}\n{}decoded: {:#?}\n",
        header.len,
        header.kind,
        header.n_fds,
        hex_dump(&wire),
        decoded
    )
}

fn v4(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

fn v6(port: u16) -> SocketAddr {
    SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, port, 0, 0))
}

/// One example of every variant, with its snapshot name and descriptor count.
fn examples() -> Vec<(&'static str, ControlMsg, usize)> {
    vec![
        ("online", ControlMsg::Online, 0),
        (
            "listen",
            ControlMsg::Listen(ListenRequest {
                request_id: 7,
                addr: v4(0),
                kind: SocketKind::Tcp,
            }),
            0,
        ),
        (
            "listen_reply_ok",
            ControlMsg::ListenReply(ListenReply {
                request_id: 7,
                result: Ok(ListenOk {
                    addr: v6(8080),
                    fd_attached: true,
                }),
            }),
            1,
        ),
        (
            "listen_reply_err",
            ControlMsg::ListenReply(ListenReply {
                request_id: 8,
                result: Err(ListenFailure {
                    kind: ListenErrorKind::AddrInUse,
                    errno: Some(98),
                    message: "address in use".into(),
                }),
            }),
            0,
        ),
        ("listening", ControlMsg::Listening { addr: v4(8080) }, 0),
        (
            "new_connection",
            ControlMsg::NewConnection {
                conn_id: 300,
                listener_id: 7,
                peer: v4(50000),
                deadline_ns: 1_500_000_000,
            },
            1,
        ),
        (
            "connection_ack",
            ControlMsg::ConnectionAck {
                conn_id: 300,
                accepted: true,
            },
            0,
        ),
        (
            "connection_closed",
            ControlMsg::ConnectionClosed { conn_id: 300 },
            0,
        ),
        (
            "disconnect",
            ControlMsg::Disconnect {
                after_messages: 300,
            },
            0,
        ),
        ("heartbeat", ControlMsg::Heartbeat { seq: 1_000_000 }, 0),
        (
            "listen_on_unix",
            ControlMsg::ListenOn(ListenOnRequest {
                request_id: 9,
                target: ListenTarget::Unix {
                    addr: UnixAddr::Path(b"/run/app.sock".to_vec()),
                    mode: Some(0o660),
                },
            }),
            0,
        ),
        (
            "listen_on_udp",
            ControlMsg::ListenOn(ListenOnRequest {
                request_id: 10,
                target: ListenTarget::Udp(v4(0)),
            }),
            0,
        ),
        (
            "listen_on_fd",
            ControlMsg::ListenOn(ListenOnRequest {
                request_id: 11,
                target: ListenTarget::Fd(3),
            }),
            0,
        ),
        (
            "listen_on_reply_unix",
            ControlMsg::ListenOnReply(ListenOnReply {
                request_id: 9,
                result: Ok(ListenOnOk {
                    bound: Bound::Unix(UnixAddr::Abstract(b"app".to_vec())),
                    fd_attached: false,
                }),
            }),
            0,
        ),
        (
            "listen_on_reply_udp",
            ControlMsg::ListenOnReply(ListenOnReply {
                request_id: 10,
                result: Ok(ListenOnOk {
                    bound: Bound::Udp(v4(5353)),
                    fd_attached: true,
                }),
            }),
            1,
        ),
        (
            "listen_on_reply_err",
            ControlMsg::ListenOnReply(ListenOnReply {
                request_id: 11,
                result: Err(ListenFailure {
                    kind: ListenErrorKind::PathTooLong,
                    errno: None,
                    message: "path too long".into(),
                }),
            }),
            0,
        ),
        (
            "new_unix_connection",
            ControlMsg::NewUnixConnection {
                conn_id: 301,
                listener_id: 9,
                deadline_ns: 1_234_567_890,
            },
            1,
        ),
    ]
}

#[test]
fn every_control_variant_is_pinned() {
    for (name, msg, n_fds) in examples() {
        insta::assert_snapshot!(
            format!("control_{name}"),
            render(FrameKind::Control, &msg, n_fds)
        );
    }
}

#[test]
fn examples_cover_every_variant() {
    // Adding a variant without a snapshot fails to compile here.
    for (_, msg, _) in examples() {
        match msg {
            ControlMsg::Online
            | ControlMsg::Listen(_)
            | ControlMsg::ListenReply(_)
            | ControlMsg::Listening { .. }
            | ControlMsg::NewConnection { .. }
            | ControlMsg::ConnectionAck { .. }
            | ControlMsg::ConnectionClosed { .. }
            | ControlMsg::Disconnect { .. }
            | ControlMsg::Heartbeat { .. }
            | ControlMsg::ListenOn(_)
            | ControlMsg::ListenOnReply(_)
            | ControlMsg::NewUnixConnection { .. } => {}
        }
    }
    assert_eq!(examples().len(), 17);
}

#[test]
fn handshake_is_pinned() {
    let hs = Handshake {
        version: PROTOCOL_VERSION,
        worker_id: 3,
        pid: 4242,
        token: 0x0123_4567_89ab_cdef,
        window: 1024 * 1024,
    };
    insta::assert_snapshot!("handshake", render(FrameKind::Handshake, &hs, 0));
}

fn arb_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::V6(SocketAddrV6::new(
            ip.into(),
            port,
            0,
            0
        ))),
    ]
}

fn arb_unix() -> impl Strategy<Value = UnixAddr> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(UnixAddr::Path),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(UnixAddr::Abstract),
    ]
}

fn arb_target() -> impl Strategy<Value = ListenTarget> {
    prop_oneof![
        (arb_unix(), any::<Option<u32>>())
            .prop_map(|(addr, mode)| ListenTarget::Unix { addr, mode }),
        arb_addr().prop_map(ListenTarget::Udp),
        any::<i32>().prop_map(ListenTarget::Fd),
    ]
}

fn arb_bound() -> impl Strategy<Value = Bound> {
    prop_oneof![
        arb_addr().prop_map(Bound::Tcp),
        arb_unix().prop_map(Bound::Unix),
        arb_addr().prop_map(Bound::Udp),
    ]
}

fn arb_control() -> impl Strategy<Value = ControlMsg> {
    let listen = (any::<u64>(), arb_addr()).prop_map(|(request_id, addr)| {
        ControlMsg::Listen(ListenRequest {
            request_id,
            addr,
            kind: SocketKind::Tcp,
        })
    });
    let reply = (
        any::<u64>(),
        arb_addr(),
        any::<bool>(),
        any::<Option<i32>>(),
        ".{0,30}",
    )
        .prop_map(|(request_id, addr, ok, errno, message)| {
            ControlMsg::ListenReply(ListenReply {
                request_id,
                result: if ok {
                    Ok(ListenOk {
                        addr,
                        fd_attached: errno.is_some(),
                    })
                } else {
                    Err(ListenFailure {
                        kind: ListenErrorKind::Other,
                        errno,
                        message,
                    })
                },
            })
        });
    prop_oneof![
        Just(ControlMsg::Online),
        listen,
        reply,
        arb_addr().prop_map(|addr| ControlMsg::Listening { addr }),
        (any::<u64>(), any::<u64>(), arb_addr(), any::<u64>()).prop_map(
            |(conn_id, listener_id, peer, deadline_ns)| ControlMsg::NewConnection {
                conn_id,
                listener_id,
                peer,
                deadline_ns,
            }
        ),
        (any::<u64>(), any::<bool>())
            .prop_map(|(conn_id, accepted)| ControlMsg::ConnectionAck { conn_id, accepted }),
        any::<u64>().prop_map(|conn_id| ControlMsg::ConnectionClosed { conn_id }),
        any::<u64>().prop_map(|after_messages| ControlMsg::Disconnect { after_messages }),
        any::<u64>().prop_map(|seq| ControlMsg::Heartbeat { seq }),
        (any::<u64>(), arb_target()).prop_map(|(request_id, target)| ControlMsg::ListenOn(
            ListenOnRequest { request_id, target }
        )),
        (any::<u64>(), arb_bound(), any::<bool>()).prop_map(|(request_id, bound, fd_attached)| {
            ControlMsg::ListenOnReply(ListenOnReply {
                request_id,
                result: Ok(ListenOnOk { bound, fd_attached }),
            })
        }),
        (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
            |(conn_id, listener_id, deadline_ns)| ControlMsg::NewUnixConnection {
                conn_id,
                listener_id,
                deadline_ns,
            }
        ),
    ]
}

proptest! {
    #[test]
    fn any_control_message_round_trips(msgs in proptest::collection::vec(arb_control(), 1..30)) {
        let mut wire = Vec::new();
        for msg in &msgs {
            encode_frame(&mut wire, FrameKind::Control, msg, 0, 4096).unwrap();
        }
        let mut decoder = Decoder::new(4096);
        decoder.push_bytes(&wire).unwrap();
        let got: Vec<ControlMsg> = decoder
            .drain_frames()
            .unwrap()
            .into_iter()
            .map(|(h, p, _)| decode_payload(h.kind, &p).unwrap())
            .collect();
        prop_assert_eq!(got, msgs);
    }
}
