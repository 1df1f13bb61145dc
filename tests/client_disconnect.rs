//! A client that hangs up before the answer is the client's doing: the gateway must neither
//! retry the abandoned request upstream nor count it against the target's circuit breaker.
//! (Load tools close their connections with requests in flight at the end of every run.)

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{chat_reply, Gateway, Reply, Upstream};

#[test]
fn client_disconnects_neither_retry_nor_open_the_circuit() {
    let (arrived_tx, arrived) = mpsc::channel::<()>();
    let arrived_tx = Mutex::new(arrived_tx);
    let (release, gate) = mpsc::channel::<()>();
    let gate = Arc::new(Mutex::new(gate));
    let up = Upstream::start(&["m1"], move |s| {
        if s.header("x-test") == Some("hang") {
            let _ = arrived_tx.lock().unwrap().send(());
            // Held until the test ends (the sender is dropped) or a safety bound.
            let _ = gate.lock().unwrap().recv_timeout(Duration::from_secs(30));
        }
        Reply::Json(200, chat_reply("m1", "ok"))
    });
    let cfg = format!(
        "providers:\n  a:\n    type: openai_compatible\n    base_url: {}\n    api_key: k\n    models: [m1]\n    circuit_breaker: {{failure_threshold: 2}}\nvirtual_models:\n  - source: v\n    targets: [{{model: a/m1, retry: {{attempts: 3}}}}]\n",
        up.base_url()
    );
    let g = Gateway::start(&cfg, &[]);

    let body = br#"{"model":"v","messages":[{"role":"user","content":"hi"}]}"#;
    for n in 1..=3 {
        let mut s = TcpStream::connect(("127.0.0.1", g.port)).unwrap();
        write!(
            s,
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-test: hang\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .unwrap();
        s.write_all(body).unwrap();
        assert!(
            arrived.recv_timeout(Duration::from_secs(10)).is_ok(),
            "request {n} never reached the upstream: {}",
            g.logs()
        );
        drop(s);
        // Wait until the gateway has finished with the abandoned request (its access-log line).
        let deadline = Instant::now() + Duration::from_secs(10);
        let done = || {
            g.logs()
                .lines()
                .filter(|l| l.contains("access]") && l.contains("/v1/chat/completions"))
                .count()
        };
        while done() < n {
            assert!(
                Instant::now() < deadline,
                "no access log line: {}",
                g.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    let abandoned: Vec<String> = g
        .logs()
        .lines()
        .filter(|l| l.contains("access]") && l.contains("/v1/chat/completions"))
        .map(str::to_string)
        .collect();
    assert!(
        abandoned
            .iter()
            .all(|l| l.contains("status=499") && l.contains("error=client_closed_request")),
        "{abandoned:#?}"
    );

    let r = g.chat("v");
    assert_eq!(r.status, 200, "{}", r.body);
    let hung = up
        .requests()
        .iter()
        .filter(|s| s.header("x-test") == Some("hang"))
        .count();
    assert_eq!(hung, 3, "abandoned requests were retried upstream");
    drop(release);
}
