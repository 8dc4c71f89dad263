//! The relay's own HTTP/1.1 server, spoken to byte by byte: keep-alive,
//! pipelining, chunked bodies, `Expect: 100-continue`, HTTP/1.0, refusals
//! that cannot smuggle a request, limits, and a long-poll whose client
//! hangs up being freed at once.

mod common;
use common::{Relay, eventually};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn connect(relay: &Relay) -> TcpStream {
    let s = TcpStream::connect(relay.url.trim_start_matches("http://")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Reads one response: (status, headers lowercased, body).
fn response(s: &mut TcpStream) -> (u16, String, String) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "connection closed mid-head");
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap().to_lowercase();
    let status = head[9..12].parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map_or(0, |v| v.trim().parse().unwrap());
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    (status, head, String::from_utf8(body).unwrap())
}

fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(s.read(&mut b), Ok(0))
}

#[test]
fn keep_alive_pipelining_and_bodies_in_every_form() {
    let relay = Relay::start(&[]);
    let mut s = connect(&relay);
    // Two requests in one write: answered in order on one connection.
    let body = r#"{"from":"a","to":"b","msg":"one"}"#;
    let send = format!(
        "POST /send HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(format!("{send}GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    let (st, head, b) = response(&mut s);
    assert_eq!(st, 200, "{b}");
    assert!(head.contains("content-type: application/json"));
    assert!(b.contains(r#""ok":true"#));
    let (st, _, b) = response(&mut s);
    assert_eq!(st, 200);
    assert!(b.contains(r#""now""#));

    // Chunked, split across writes.
    s.write_all(b"POST /send HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n{\"from\":\"a\",\"to\"")
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    s.write_all(b"\r\n11\r\n:\"b\",\"msg\":\"two\"}\r\n0\r\n\r\n")
        .unwrap();
    let (st, _, b) = response(&mut s);
    assert_eq!(st, 200, "{b}");

    // Expect: 100-continue gets its interim answer before the body.
    let body = r#"{"from":"a","to":"b","msg":"three"}"#;
    s.write_all(
        format!(
            "POST /send HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .unwrap();
    let mut interim = [0u8; 25];
    s.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(body.as_bytes()).unwrap();
    assert_eq!(response(&mut s).0, 200);

    // All three arrived, in order.
    s.write_all(b"GET /recv?to=b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let (st, head, b) = response(&mut s);
    assert_eq!(st, 200);
    assert!(head.contains("connection: close"));
    let msgs: Vec<String> = serde_json::from_str::<serde_json::Value>(&b).unwrap()["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["msg"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(msgs, ["one", "two", "three"]);
    assert!(closed(&mut s), "closed after Connection: close");

    // HTTP/1.0 closes unless asked to keep alive.
    let mut s = connect(&relay);
    s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(response(&mut s).0, 200);
    assert!(closed(&mut s));
}

#[test]
fn what_is_not_acceptable_http_is_refused_and_the_connection_closed() {
    let relay = Relay::start(&[]);
    for (raw, status) in [
        (
            "POST /send HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                .to_string(),
            400,
        ),
        (
            "POST /send HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n".to_string(),
            400,
        ),
        ("GARBAGE\r\n\r\n".to_string(), 400),
        (format!("GET /{} HTTP/1.1\r\n\r\n", "x".repeat(20_000)), 431),
        (
            "POST /send HTTP/1.1\r\nContent-Length: 70000\r\n\r\n".to_string(),
            413,
        ),
        (
            "POST /send HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_string(),
            400,
        ),
    ] {
        let mut s = connect(&relay);
        s.write_all(raw.as_bytes()).unwrap();
        let (st, _, body) = response(&mut s);
        assert_eq!(st, status, "{:?} -> {body}", &raw[..raw.len().min(60)]);
        let err: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(
            err["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{body}"
        );
        if status == 413 {
            assert_eq!(err["error"], "message too large (>64KB)");
        }
        assert!(closed(&mut s));
    }
    // The relay is still there.
    let mut s = connect(&relay);
    s.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(response(&mut s).0, 200);
}

#[test]
fn a_long_poll_whose_client_hangs_up_is_freed_at_once() {
    let relay = Relay::start(&[]);
    let waiting = || {
        let mut s = connect(&relay);
        s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
        let (_, _, body) = response(&mut s);
        body.lines()
            .find_map(|l| l.strip_prefix("agentbus_relay_waiting "))
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    let mut polls: Vec<TcpStream> = (0..20)
        .map(|i| {
            let mut s = connect(&relay);
            s.write_all(format!("GET /recv?to=gone{i}&block=true HTTP/1.1\r\n\r\n").as_bytes())
                .unwrap();
            s
        })
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(eventually("20 waiting", 10, async || {
        (waiting() == 20).then_some(())
    }));
    polls.truncate(5);
    rt.block_on(eventually("15 freed", 10, async || {
        (waiting() == 5).then_some(())
    }));
    // The five still there get their mail.
    for (i, s) in polls.iter_mut().enumerate() {
        let mut send = connect(&relay);
        let body = format!(r#"{{"from":"x","to":"gone{i}","msg":"m{i}"}}"#);
        send.write_all(
            format!(
                "POST /send HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(response(&mut send).0, 200);
        let (st, _, b) = response(s);
        assert_eq!(st, 200);
        assert!(b.contains(&format!(r#""msg":"m{i}""#)), "{b}");
    }
}

#[test]
fn pipelined_requests_past_the_head_limit_are_all_answered_in_order() {
    let relay = Relay::start(&[]);
    let mut s = connect(&relay);
    // Twelve sends of 8 KB each in one write: ~96 KB ahead of the first
    // answer, six times the 16 KB head limit.
    let mut wire = String::new();
    for i in 0..12 {
        let body = format!(
            r#"{{"from":"a","to":"pipe","msg":"{i:02}{}"}}"#,
            "x".repeat(8_000)
        );
        wire.push_str(&format!(
            "POST /send HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
    }
    wire.push_str("GET /recv?to=pipe&max=100 HTTP/1.1\r\nHost: x\r\n\r\n");
    let writer = {
        let mut w = s.try_clone().unwrap();
        std::thread::spawn(move || w.write_all(wire.as_bytes()).unwrap())
    };
    for i in 0..12 {
        let (st, _, b) = response(&mut s);
        assert_eq!(st, 200, "send {i}: {b}");
    }
    let (st, _, b) = response(&mut s);
    assert_eq!(st, 200);
    writer.join().unwrap();
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    let order: Vec<String> = v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["msg"].as_str().unwrap()[..2].to_string())
        .collect();
    assert_eq!(
        order,
        (0..12).map(|i| format!("{i:02}")).collect::<Vec<_>>()
    );
}

#[test]
fn overflowing_and_lenient_sizes_are_400_and_the_relay_keeps_serving() {
    let relay = Relay::start(&[]);
    for head in [
        "POST /send HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\nffffffffffffffffff\r\nab\r\n",
        "POST /send HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n",
        "POST /send HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello",
        "POST /send HTTP/1.1\r\nHost: x\r\nContent-Length: 184467440737095516160\r\n\r\n",
    ] {
        let mut s = connect(&relay);
        s.write_all(head.as_bytes()).unwrap();
        let (st, _, b) = response(&mut s);
        assert_eq!(st, 400, "{head:?}: {b}");
        assert!(b.contains("error"), "{b}");
        assert!(closed(&mut s));
    }
    let mut s = connect(&relay);
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(response(&mut s).0, 200);
}

#[tokio::test]
async fn a_recv_answer_is_bounded_in_bytes_and_pages_without_loss() {
    let relay = Relay::start(&[]);
    // 200 messages of 60 KB: 12 MB in one queue.
    for i in 0..200 {
        let (st, _) = relay
            .send(
                serde_json::json!({"from": "a", "to": "big", "msg": format!("{i:03}{}", "y".repeat(60_000))}),
                None,
            )
            .await;
        assert_eq!(st, 200);
    }
    let mut since = 0.0f64;
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let (st, b) = relay
            .get(&format!("/recv?to=big&max=10000&since={since}"), None)
            .await;
        assert_eq!(st, 200);
        let msgs = b["messages"].as_array().unwrap();
        if msgs.is_empty() {
            break;
        }
        pages += 1;
        let bytes: usize = msgs.iter().map(|m| m["msg"].as_str().unwrap().len()).sum();
        assert!(bytes <= (4 << 20) + 70_000, "one answer held {bytes} bytes");
        seen.extend(
            msgs.iter()
                .map(|m| m["msg"].as_str().unwrap()[..3].to_string()),
        );
        since = b["now"].as_f64().unwrap();
    }
    assert!(pages >= 3, "{pages} pages");
    assert_eq!(
        seen,
        (0..200).map(|i| format!("{i:03}")).collect::<Vec<_>>()
    );
}
