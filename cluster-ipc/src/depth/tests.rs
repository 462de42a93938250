//! Tests of the nesting limit: a million levels give a typed error on a
//! small stack, values up to the limit decode, and every kind of nesting
//! counts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::frame::{DEFAULT_MAX_DEPTH, FrameKind, decode_limited};

/// A recursive type: each `Node` is one more level (an enum).
#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Nest {
    Leaf,
    Node(Box<Nest>),
}

/// The postcard bytes of `Nest` with `nodes` nodes above the leaf (each
/// variant index is one byte): `nodes + 1` levels.
fn nested(nodes: usize) -> Vec<u8> {
    let mut bytes = vec![1; nodes];
    bytes.push(0);
    bytes
}

#[test]
fn a_million_levels_are_a_typed_error_on_a_small_stack() {
    // The default stack of a spawned thread (2 MiB): without the limit, the
    // decoder recursed a million times and the process aborted.
    let payload = nested(1_000_000);
    let result = std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(move || decode_limited::<Nest>(FrameKind::User, &payload, DEFAULT_MAX_DEPTH))
        .unwrap()
        .join()
        .unwrap();
    match result {
        Err(Error::NestingTooDeep { kind, limit, .. }) => {
            assert_eq!(kind, FrameKind::User);
            assert_eq!(limit, DEFAULT_MAX_DEPTH);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn values_up_to_the_limit_decode_and_one_level_more_does_not() {
    let limit = 40;
    let value: Nest = decode_limited(FrameKind::User, &nested(39), limit).unwrap();
    let mut depth = 1;
    let mut at = &value;
    while let Nest::Node(inner) = at {
        depth += 1;
        at = inner;
    }
    assert_eq!(depth, 40);
    let err = decode_limited::<Nest>(FrameKind::User, &nested(40), limit).unwrap_err();
    assert!(
        matches!(err, Error::NestingTooDeep { limit: 40, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("limit of 40 levels"), "{err}");
}

#[test]
fn every_kind_of_nesting_counts_one_level() {
    // struct > vec > option > tuple > map > newtype: six levels.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Outer {
        items: Vec<Option<(u8, BTreeMap<String, Wrapped>)>>,
    }
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Wrapped(u64);

    let mut map = BTreeMap::new();
    map.insert("k".to_string(), Wrapped(7));
    let value = Outer {
        items: vec![Some((1, map)), None],
    };
    let bytes = postcard::to_allocvec(&value).unwrap();
    let back: Outer = decode_limited(FrameKind::User, &bytes, 6).unwrap();
    assert_eq!(back, value);
    let err = decode_limited::<Outer>(FrameKind::User, &bytes, 5).unwrap_err();
    assert!(
        matches!(err, Error::NestingTooDeep { limit: 5, .. }),
        "{err:?}"
    );
}

#[test]
fn other_decode_errors_stay_malformed_payloads() {
    // A variant index out of range: the decoder's own error, not the limit.
    let err = decode_limited::<Nest>(FrameKind::User, &[9], DEFAULT_MAX_DEPTH).unwrap_err();
    assert!(matches!(err, Error::MalformedPayload { .. }), "{err:?}");
    // Trailing bytes too.
    let err = decode_limited::<Nest>(FrameKind::User, &[0, 0], DEFAULT_MAX_DEPTH).unwrap_err();
    assert!(matches!(err, Error::MalformedPayload { .. }), "{err:?}");
}
