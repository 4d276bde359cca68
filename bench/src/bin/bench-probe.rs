//! Measurements that wrk and oha cannot make. Prints one JSON object on stdout.
//!
//! - `bench-probe sse --addr HOST:PORT --header 'x-api-key: …' --streams 32 --concurrency 8`:
//!   opens streams to `/sse` one connection each, and times, per stream, the response head, the
//!   first event, and the gaps between events; counts events, and reads that carried more than
//!   one event (coalescing) and gaps over 35 ms (a Nagle or delayed-ACK stall is 40 ms).
//!   `--path /v1/messages` asks another path; `--post BODY` sends a `POST` with
//!   `content-type: application/json` and that body instead of a `GET` (a metered LLM stream:
//!   `--path /v1/messages --post '{"model":"…","stream":true,…}'`).
//! - `bench-probe idle --addr HOST:PORT --header '…' --connections 10000 --hold 5`: opens that
//!   many keep-alive connections, sends one `/instant` request on each, prints
//!   `{"ready": n}` once all answered, then holds them idle for `--hold` seconds.

#![allow(clippy::print_stdout)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn num(args: &[String], name: &str, default: usize) -> Result<usize> {
    arg(args, name)
        .map(|v| v.parse().with_context(|| name.to_owned()))
        .transpose()
        .map(|v| v.unwrap_or(default))
}

fn request(path: &str, addr: &str, headers: &[String]) -> String {
    let mut r = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\n");
    for h in headers {
        r.push_str(h);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    r
}

/// A `POST` of a JSON body, in one write with its head.
fn post_request(path: &str, addr: &str, headers: &[String], body: &str) -> String {
    let mut r = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n",
        body.len()
    );
    for h in headers {
        r.push_str(h);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    r.push_str(body);
    r
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

struct Stream {
    head_us: f64,
    first_event_us: f64,
    gaps_us: Vec<f64>,
    events: usize,
    coalesced_reads: usize,
    stalls: usize,
    status_ok: bool,
}

fn one_stream(addr: &str, req: &str) -> Result<Stream> {
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    // Connected first: the timings below are the request's, not the handshake's.
    let start = Instant::now();
    s.write_all(req.as_bytes())?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut head: Vec<u8> = Vec::new();
    let mut head_us = None;
    let mut status_ok = false;
    let mut events = 0usize;
    let mut event_times = Vec::new();
    let mut coalesced_reads = 0;
    // `data: ` split across two reads would be missed; keep the tail of the previous read.
    let mut carry: Vec<u8> = Vec::new();
    loop {
        let n = s.read(&mut buf)?;
        let at = start.elapsed().as_secs_f64() * 1e6;
        if n == 0 {
            break;
        }
        let mut chunk = &buf[..n];
        if head_us.is_none() {
            head.extend_from_slice(chunk);
            let Some(end) = find(&head, b"\r\n\r\n") else {
                continue;
            };
            head_us = Some(at);
            status_ok = head.starts_with(b"HTTP/1.1 200");
            if !status_ok {
                break;
            }
            let rest = head.split_off(end + 4);
            carry = rest;
            chunk = &[];
        }
        let mut data = std::mem::take(&mut carry);
        data.extend_from_slice(chunk);
        let seen = count(&data, b"data: ");
        if seen > 0 {
            for _ in 0..seen {
                event_times.push(at);
            }
            if seen > 1 {
                coalesced_reads += 1;
            }
            events += seen;
        }
        // Keep a short tail that cannot itself hold a whole `data: `.
        let keep = data.len().min(5);
        carry = data[data.len() - keep..].to_vec();
        if find(&data, b"\r\n0\r\n\r\n").is_some() || data.ends_with(b"0\r\n\r\n") {
            break;
        }
    }
    let gaps_us: Vec<f64> = event_times.windows(2).map(|w| w[1] - w[0]).collect();
    let stalls = gaps_us.iter().filter(|g| **g > 35_000.0).count();
    Ok(Stream {
        head_us: head_us.unwrap_or(f64::NAN),
        first_event_us: event_times.first().copied().unwrap_or(f64::NAN),
        gaps_us,
        events,
        coalesced_reads,
        stalls,
        status_ok,
    })
}

fn sse(args: &[String]) -> Result<()> {
    let addr = arg(args, "--addr").context("--addr")?;
    let headers: Vec<String> = args
        .windows(2)
        .filter(|w| w[0] == "--header")
        .map(|w| w[1].clone())
        .collect();
    let streams = num(args, "--streams", 32)?;
    let concurrency = num(args, "--concurrency", 8)?.max(1);
    let path = arg(args, "--path").unwrap_or_else(|| "/sse".to_owned());
    let req = match arg(args, "--post") {
        Some(body) => post_request(&path, &addr, &headers, &body),
        None => request(&path, &addr, &headers),
    };
    let mut results = Vec::new();
    let mut left = streams;
    while left > 0 {
        let batch = left.min(concurrency);
        left -= batch;
        let handles: Vec<_> = (0..batch)
            .map(|_| {
                let addr = addr.clone();
                let req = req.clone();
                std::thread::spawn(move || one_stream(&addr, &req))
            })
            .collect();
        for h in handles {
            match h.join() {
                Ok(r) => results.push(r?),
                Err(_) => bail!("a stream thread panicked"),
            }
        }
    }
    let out: Vec<_> = results
        .iter()
        .map(|r| {
            json!({
                "ok": r.status_ok,
                "head_us": r.head_us,
                "first_event_us": r.first_event_us,
                "gaps_us": r.gaps_us,
                "events": r.events,
                "coalesced_reads": r.coalesced_reads,
                "stalls": r.stalls,
            })
        })
        .collect();
    println!("{}", json!({ "streams": out }));
    Ok(())
}

fn idle(args: &[String]) -> Result<()> {
    let addr = arg(args, "--addr").context("--addr")?;
    let headers: Vec<String> = args
        .windows(2)
        .filter(|w| w[0] == "--header")
        .map(|w| w[1].clone())
        .collect();
    let connections = num(args, "--connections", 10_000)?;
    let hold = Duration::from_secs(num(args, "--hold", 5)? as u64);
    let req = request("/instant", &addr, &headers);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tasks = tokio::task::JoinSet::new();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<bool>(connections.max(1));
        for _ in 0..connections {
            let addr = addr.clone();
            let req = req.clone();
            let tx = tx.clone();
            tasks.spawn(async move {
                let answered = async {
                    let mut s = tokio::net::TcpStream::connect(&addr).await?;
                    s.write_all(req.as_bytes()).await?;
                    let mut buf = Vec::with_capacity(1024);
                    let mut tmp = [0u8; 1024];
                    loop {
                        let n = s.read(&mut tmp).await?;
                        if n == 0 {
                            return Ok::<_, std::io::Error>((s, false));
                        }
                        buf.extend_from_slice(&tmp[..n]);
                        if let Some(end) = find(&buf, b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                            let len = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse::<usize>().ok())
                                .unwrap_or(0);
                            if buf.len() >= end + 4 + len {
                                return Ok((s, head.starts_with("http/1.1 200")));
                            }
                        }
                    }
                }
                .await;
                match answered {
                    Ok((s, ok)) => {
                        let _ = tx.send(ok).await;
                        // Hold the connection open, idle.
                        tokio::time::sleep(hold + Duration::from_secs(600)).await;
                        drop(s);
                    }
                    Err(_) => {
                        let _ = tx.send(false).await;
                    }
                }
            });
        }
        drop(tx);
        let mut ok = 0usize;
        let mut failed = 0usize;
        // A proxy at its connection limit leaves some unanswered: count them as failed.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while ok + failed < connections {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(true)) => ok += 1,
                Ok(Some(false)) => failed += 1,
                Ok(None) | Err(_) => break,
            }
        }
        let failed = connections - ok;
        println!("{}", json!({ "ready": ok, "failed": failed }));
        let _ = std::io::stdout().flush();
        tokio::time::sleep(hold).await;
        tasks.abort_all();
        Ok(())
    })
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("sse") => sse(&args),
        Some("idle") => idle(&args),
        _ => bail!(
            "usage: bench-probe sse|idle --addr HOST:PORT [--header 'name: value']… \
             [sse: --path /sse --post BODY]"
        ),
    }
}
