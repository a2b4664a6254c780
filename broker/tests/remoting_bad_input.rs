//! Remoting bad input: the codec on random and mutated frames (no panic, errors not crashes), and
//! a real broker under garbage connections, which keeps serving a well-behaved client: unknown
//! request codes get REQUEST_CODE_NOT_SUPPORTED, oneway requests no answer at all.

mod common;
#[path = "common/remoting.rs"]
mod remoting_io;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::start;
use ferrocket::remoting::codes::*;
use ferrocket::remoting::command::{Command, SerializeType, MAX_FRAME};
use proptest::prelude::*;
use remoting_io::roundtrip;

fn request(code: i32, opaque: i32, ser: SerializeType) -> Command {
    Command::request(code, opaque, false, ser)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_frames_decode_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Command::decode(&bytes);
    }

    #[test]
    fn mutated_frames_decode_or_fail_cleanly(
        binary in any::<bool>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut c = request(SEND_MESSAGE_V2, 7, if binary { SerializeType::RocketMq } else { SerializeType::Json });
        c.put("b", "orders").put("e", 1).put("i", "TAGS\u{1}a\u{2}");
        c.body = b"body".to_vec();
        let mut frame = c.encode()[4..].to_vec();
        prop_assert_eq!(Command::decode(&frame).unwrap(), c);
        for (i, b) in flips {
            let i = i.index(frame.len());
            frame[i] = b;
        }
        let _ = Command::decode(&frame);
        let _ = Command::decode(&frame[..cut.index(frame.len() + 1)]);
    }
}

/// True once the server closed `s` (EOF or reset) within 10 s.
fn closed_by_server(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 64];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {
                return false
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn garbage_connections_are_closed_and_other_clients_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start("standalone", &dir.path().join("data"), "");
    let mut good = TcpStream::connect(&broker.remoting).unwrap();
    good.set_read_timeout(Some(Duration::from_secs(10))).unwrap();

    let mut header_past_frame = 8u32.to_be_bytes().to_vec();
    header_past_frame.extend_from_slice(&[0, 0, 1, 0, b'{', b'}', 0, 0]);
    let garbage: Vec<(&str, Vec<u8>)> = vec![
        ("a frame over 16 MiB", ((MAX_FRAME + 1) as u32).to_be_bytes().to_vec()),
        ("a length below 4", 2u32.to_be_bytes().to_vec()),
        ("a header length past the frame", header_past_frame),
        ("a JSON header that is not JSON", [&10u32.to_be_bytes()[..], &6u32.to_be_bytes(), b"{nope!"].concat()),
        ("serialization type 7", [&4u32.to_be_bytes()[..], &[7, 0, 0, 0]].concat()),
        ("HTTP", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
    ];
    for (what, bytes) in &garbage {
        let mut bad = TcpStream::connect(&broker.remoting).unwrap();
        bad.write_all(bytes).unwrap();
        assert!(closed_by_server(&mut bad), "the broker kept a connection that sent {what}");
        // The well-behaved connection is still served, in both serializations.
        for ser in [SerializeType::Json, SerializeType::RocketMq] {
            let mut q = request(GET_MAX_OFFSET, 11, ser);
            q.put("topic", "nothing").put("queueId", 0);
            let r = roundtrip(&mut good, &q);
            assert_eq!(
                (r.code, r.opaque, r.ser, r.ext.get("offset").map(String::as_str)),
                (SUCCESS, 11, ser, Some("0"))
            );
        }
    }

    // A truncated frame: the server waits for the rest, then sees the end of the stream.
    let mut cut = TcpStream::connect(&broker.remoting).unwrap();
    let frame = request(GET_MAX_OFFSET, 1, SerializeType::Json).encode();
    cut.write_all(&frame[..frame.len() - 3]).unwrap();
    cut.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(closed_by_server(&mut cut));

    // Unknown code: REQUEST_CODE_NOT_SUPPORTED with a remark naming it.
    let r = roundtrip(&mut good, &request(9999, 12, SerializeType::Json));
    assert_eq!((r.code, r.opaque), (REQUEST_CODE_NOT_SUPPORTED, 12));
    assert!(r.remark.unwrap_or_default().contains("9999"));

    // A missing required header field: SYSTEM_ERROR naming it.
    let r = roundtrip(&mut good, &request(GET_MAX_OFFSET, 13, SerializeType::Json));
    assert_eq!(r.code, SYSTEM_ERROR);
    assert!(r.remark.unwrap_or_default().contains("topic"));

    // Oneway: no answer. The next reply on the connection is the next request's.
    good.write_all(&Command::request(9999, 14, true, SerializeType::Json).encode()).unwrap();
    let mut q = request(GET_MIN_OFFSET, 15, SerializeType::Json);
    q.put("topic", "nothing").put("queueId", 0);
    assert_eq!(roundtrip(&mut good, &q).opaque, 15);

    // The standalone nameserver: an unknown topic is TOPIC_NOT_EXIST, TBW102 is routed here.
    let mut ns = TcpStream::connect(&broker.namesrv).unwrap();
    ns.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut q = request(GET_ROUTEINFO_BY_TOPIC, 16, SerializeType::Json);
    q.put("topic", "no-such-topic");
    assert_eq!(roundtrip(&mut ns, &q).code, TOPIC_NOT_EXIST);
    let mut q = request(GET_ROUTEINFO_BY_TOPIC, 17, SerializeType::Json);
    q.version = 479;
    q.put("topic", "TBW102");
    let r = roundtrip(&mut ns, &q);
    assert_eq!(r.code, SUCCESS);
    let route: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(route["brokerDatas"][0]["brokerAddrs"]["0"], broker.remoting.as_str());
}
