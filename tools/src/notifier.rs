//! A push notifier stand-in for benchmarks (chatmail.md §6.2): plain HTTP/1.1 on loopback that
//! answers `200` to every `POST /notify` and records each token with the moment it arrived.
//! The relay reaches it with `notification_url = http://127.0.0.1:<port>`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use crate::stats::lock;

/// Received tokens with their arrival times, in arrival order.
pub type Arrivals = Arc<Mutex<Vec<(String, Instant)>>>;

/// Serves on `addr` until the runtime ends; returns the record of arrivals.
///
/// # Errors
/// The address cannot be bound.
pub async fn serve(addr: SocketAddr) -> std::io::Result<Arrivals> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let arrivals: Arrivals = Arc::default();
    let record = arrivals.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let record = record.clone();
                    async move {
                        let body = Limited::new(req.into_body(), 64 * 1024).collect().await;
                        let at = Instant::now();
                        if let Ok(b) = body {
                            let token = String::from_utf8_lossy(&b.to_bytes()).into_owned();
                            lock(&record).push((token, at));
                        }
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::new(),
                        )))
                    }
                });
                let _ = http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(arrivals)
}

/// Matches POST arrivals to deliveries: per token, each POST stands for the messages whose end
/// of DATA came before it and after the previous POST; its latency counts from the first of
/// them. `sent` maps a token to the end-of-DATA moments of the messages for its account.
/// Returns the latencies and the number of POSTs that matched no message.
pub fn match_latencies(
    sent: &std::collections::HashMap<String, Vec<Instant>>,
    arrivals: &[(String, Instant)],
) -> (Vec<std::time::Duration>, usize) {
    let mut by_token: std::collections::HashMap<&str, Vec<Instant>> = Default::default();
    for (t, at) in arrivals {
        by_token.entry(t.as_str()).or_default().push(*at);
    }
    let mut out = Vec::new();
    let mut unmatched = 0;
    for (token, mut posts) in by_token {
        posts.sort();
        let mut ends = sent.get(token).cloned().unwrap_or_default();
        ends.sort();
        let mut i = 0;
        for p in posts {
            if i < ends.len() && ends[i] < p {
                out.push(p - ends[i]);
                while i < ends.len() && ends[i] < p {
                    i += 1;
                }
            } else {
                unmatched += 1;
            }
        }
    }
    (out, unmatched)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn posts_match_the_first_message_since_the_previous_post() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut sent = std::collections::HashMap::new();
        sent.insert("a".to_owned(), vec![ms(0), ms(1), ms(10)]);
        let arrivals = vec![
            ("a".to_owned(), ms(3)),
            ("a".to_owned(), ms(12)),
            ("a".to_owned(), ms(13)),
            ("b".to_owned(), ms(5)),
        ];
        let (lat, unmatched) = match_latencies(&sent, &arrivals);
        assert_eq!(
            lat,
            vec![Duration::from_millis(3), Duration::from_millis(2)]
        );
        assert_eq!(unmatched, 2);
    }
}
