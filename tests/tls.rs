//! HTTPS upstreams: the gateway sends SNI and checks certificates. A local CA made with the
//! `openssl` command signs the mock upstream's certificate; the gateway trusts it through
//! SSL_CERT_FILE, exactly as an operator would for a private CA.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};

use common::*;

fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("the openssl command (scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A private CA (`ca.pem`) and a leaf certificate for `localhost` signed by it.
fn make_cert(dir: &Path) {
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "1",
            "-subj",
            "/CN=modelgate test CA",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "leaf.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "cert.pem",
            "-days",
            "1",
            "-extfile",
            "leaf.ext",
        ],
    );
}

/// A one-purpose HTTPS upstream: records the SNI it was asked for, answers a chat completion.
fn tls_upstream(dir: &Path) -> (u16, Arc<Mutex<Vec<String>>>) {
    let certs: Vec<_> = rustls_pemfile::certs(&mut BufReader::new(
        std::fs::File::open(dir.join("cert.pem")).unwrap(),
    ))
    .collect::<Result<_, _>>()
    .unwrap();
    let key = rustls_pemfile::private_key(&mut BufReader::new(
        std::fs::File::open(dir.join("key.pem")).unwrap(),
    ))
    .unwrap()
    .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let snis = Arc::new(Mutex::new(Vec::new()));
    let snis2 = snis.clone();
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let conn = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            let snis = snis2.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(&mut tls);
                let mut len = 0usize;
                let mut line = String::new();
                loop {
                    line.clear();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if line.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; len];
                if reader.read_exact(&mut body).is_err() {
                    return;
                }
                drop(reader);
                snis.lock()
                    .unwrap()
                    .push(tls.conn.server_name().unwrap_or("").to_string());
                let answer = serde_json::to_vec(&chat_reply("m", "over tls")).unwrap();
                let head = format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", answer.len());
                let _ = tls.write_all(head.as_bytes());
                let _ = tls.write_all(&answer);
                let _ = tls.flush();
                tls.conn.send_close_notify();
                let _ = tls.flush();
            });
        }
    });
    (port, snis)
}

fn config(port: u16) -> String {
    format!("providers:\n  secure:\n    type: openai_compatible\n    base_url: https://localhost:{port}/v1\n    api_key: k\n    models: [m]\n")
}

#[test]
fn https_upstream_gets_sni_and_a_verified_certificate() {
    let dir = tempfile::tempdir().unwrap();
    make_cert(dir.path());
    let (port, snis) = tls_upstream(dir.path());
    let ca = dir.path().join("ca.pem");
    let g = Gateway::start(&config(port), &[("SSL_CERT_FILE", ca.to_str().unwrap())]);
    let r = g.chat("secure/m");
    assert_eq!(r.status, 200, "{} {}", r.body, g.logs());
    assert_eq!(r.json()["choices"][0]["message"]["content"], "over tls");
    assert_eq!(snis.lock().unwrap().as_slice(), ["localhost"]);
}

#[test]
fn untrusted_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    make_cert(dir.path());
    let (port, snis) = tls_upstream(dir.path());
    // No SSL_CERT_FILE: the self-signed certificate is not trusted.
    let g = Gateway::start(&config(port), &[]);
    let r = g.chat("secure/m");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (502, "upstream_unavailable"),
        "{}",
        r.body
    );
    assert!(
        snis.lock().unwrap().is_empty(),
        "no request was completed over an unverified connection"
    );
}
