//! A tiny HTTP/1.1 server for unit tests (registry and pins): one
//! request per connection, answers from a handler. Hand-written because
//! the tests need to see every request's path and `Authorization` header
//! and to answer challenges, with no server dependency in the crate.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

/// What a test server answers: status line, extra headers, body.
pub type Answer = (&'static str, String, Vec<u8>);

/// Serves `n` connections of one request each with `handler(base,
/// path, authorization)`; returns the base URL and, on join, the
/// requests seen as "path authorization".
pub fn serve(
    n: usize,
    handler: impl Fn(&str, &str, Option<&str>) -> Answer + Send + 'static,
) -> (String, std::thread::JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let b = base.clone();
    let handle = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for stream in listener.incoming().take(n) {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            reader.read_line(&mut request).unwrap();
            let mut auth = None;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    if k.eq_ignore_ascii_case("authorization") {
                        auth = Some(v.trim().to_owned());
                    }
                }
            }
            let path = request.split_whitespace().nth(1).unwrap_or("").to_owned();
            seen.push(format!("{path} {}", auth.as_deref().unwrap_or("-")));
            let (status, extra, body) = handler(&b, &path, auth.as_deref());
            write!(
                stream,
                "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .unwrap();
            stream.write_all(&body).unwrap();
        }
        seen
    });
    (base, handle)
}
