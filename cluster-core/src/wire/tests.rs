//! Unit tests of the framing: round trips, clean and unclean ends, the cap.

use super::*;

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(f)
}

#[test]
fn control_and_user_frames_round_trip() {
    block_on(async {
        let (a, b) = tokio::io::duplex(1024);
        let mut w = FrameWriter::new(a);
        let mut r = FrameReader::new(b);
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        w.send_control(&Control::Online).await.unwrap();
        w.send_user(&("hello".to_string(), 7u32)).await.unwrap();
        w.send_control(&Control::Listening { addr }).await.unwrap();
        w.close().await;
        drop(w);
        assert_eq!(
            r.recv().await.unwrap(),
            Some(Incoming::Control(Control::Online))
        );
        let Some(Incoming::User(bytes)) = r.recv().await.unwrap() else {
            panic!("expected a user frame")
        };
        let v: (String, u32) = Incoming::decode_user(&bytes).unwrap();
        assert_eq!(v, ("hello".to_string(), 7));
        assert_eq!(
            r.recv().await.unwrap(),
            Some(Incoming::Control(Control::Listening { addr }))
        );
        assert_eq!(r.recv().await.unwrap(), None);
    });
}

#[test]
fn oversized_header_is_refused_without_allocating() {
    block_on(async {
        let bytes = [0xff, 0xff, 0xff, 0x7f, KIND_USER];
        let mut r = FrameReader::new(&bytes[..]);
        assert!(matches!(r.recv().await, Err(Error::FrameTooLarge { .. })));
    });
}

#[test]
fn truncated_frames_and_garbage_are_errors() {
    block_on(async {
        for bytes in [
            &[1u8, 0][..],
            &[3, 0, 0, 0, KIND_USER, 1][..],
            &[1, 0, 0, 0, 9, 0][..],
            &[1, 0, 0, 0, KIND_CONTROL, 200][..],
        ] {
            let mut r = FrameReader::new(bytes);
            assert!(r.recv().await.is_err(), "{bytes:?} was accepted");
        }
    });
}
