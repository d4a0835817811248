//! The load generator against a scripted server written here: it must count each kind of
//! failure, recover its connections, keep its request count and mix exact, and show a server's
//! pause in its timeline and latencies.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use uppercut_experiments::load::{self, Control, LoadConfig, Mix, Until};

/// A thread-per-connection HTTP server with scripted answers:
///
/// - `/ok`: 200 with a body; `/missing`: 404; `/garbage`: a broken status line;
/// - `/drop`: closes the connection without an answer; `/short`: a truncated body;
/// - `/bye`: 200 with `Connection: close`, then closes;
/// - `/pause`: 200, and every answer waits until 200 ms after it.
///
/// It runs until the test process ends.
struct Scripted {
    addr: SocketAddr,
    accepted: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
}

fn scripted() -> Scripted {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicU64::new(0));
    let requests = Arc::new(AtomicU64::new(0));
    let paused_until = Arc::new(Mutex::new(Instant::now()));
    let (a, r) = (accepted.clone(), requests.clone());
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            a.fetch_add(1, Ordering::SeqCst);
            let (r, paused_until) = (r.clone(), paused_until.clone());
            thread::spawn(move || serve(stream, &r, &paused_until));
        }
    });
    Scripted {
        addr,
        accepted,
        requests,
    }
}

fn serve(stream: TcpStream, requests: &AtomicU64, paused_until: &Mutex<Instant>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header.trim_end().is_empty() {
                break;
            }
        }
        requests.fetch_add(1, Ordering::SeqCst);
        let target = request_line.split(' ').nth(1).unwrap_or("").to_owned();
        if target == "/pause" {
            *paused_until.lock().unwrap() = Instant::now() + Duration::from_millis(200);
        } else {
            let until = *paused_until.lock().unwrap();
            if let Some(wait) = until.checked_duration_since(Instant::now()) {
                thread::sleep(wait);
            }
        }
        let answer: &[u8] = match target.as_str() {
            "/ok" | "/pause" => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            "/missing" => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
            "/garbage" => b"HTTP/1.1 2OO OK\r\nContent-Length: 0\r\n\r\n",
            "/short" => b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
            "/bye" => b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nbye",
            _ => b"",
        };
        if out.write_all(answer).is_err() || answer.is_empty() || target == "/short" {
            return;
        }
        if target == "/bye" || target == "/garbage" {
            return;
        }
    }
}

#[test]
fn every_kind_of_failure_is_counted_and_connections_recover() {
    let server = scripted();
    let mix = Mix::round_robin(["/ok", "/missing", "/garbage", "/drop", "/short", "/bye"]).unwrap();
    let mut config = LoadConfig::new(server.addr, mix, Until::Requests(60));
    config.connections = 3;
    let report = load::run(&config).unwrap();
    assert_eq!(report.requests, 60);
    let f = report.failures;
    assert_eq!(
        (f.status, f.malformed, f.io, f.connect),
        (10, 10, 20, 0),
        "{report:#?}"
    );
    assert_eq!(report.succeeded(), 20);
    assert_eq!(
        report.per_target,
        [
            ("/ok".to_owned(), 10),
            ("/missing".to_owned(), 0),
            ("/garbage".to_owned(), 0),
            ("/drop".to_owned(), 0),
            ("/short".to_owned(), 0),
            ("/bye".to_owned(), 10)
        ]
    );
    // Well-formed responses have latencies: /ok, /missing and /bye.
    assert_eq!(report.latency.count, 30);
    // Every request that lost its connection (garbage, drop, short, bye) opened a new one.
    assert_eq!(
        report.connections_opened,
        server.accepted.load(Ordering::SeqCst)
    );
    assert!(
        report.connections_opened >= 40,
        "{}",
        report.connections_opened
    );
    assert_eq!(server.requests.load(Ordering::SeqCst), 60);
    assert!(!report.errors.is_empty());
}

#[test]
fn a_server_that_is_gone_gives_connection_failures() {
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    // The listener is dropped: nothing listens there any more.
    let mut config = LoadConfig::new(addr, Mix::round_robin(["/"]).unwrap(), Until::Requests(5));
    config.connections = 2;
    config.controls = vec![Control::new(Duration::ZERO, "/control")];
    let report = load::run(&config).unwrap();
    assert_eq!((report.requests, report.failures.connect), (5, 5));
    assert_eq!(report.failures.total(), 5);
    assert_eq!(report.latency.count, 0);
    assert_eq!(report.controls.len(), 1);
    assert!(!report.controls[0].succeeded());
    assert!(report.controls[0].outcome.is_err());
}

#[test]
fn a_pause_shows_in_the_timeline_and_the_latencies() {
    let server = scripted();
    let mut config = LoadConfig::new(
        server.addr,
        Mix::round_robin(["/ok"]).unwrap(),
        Until::Elapsed(Duration::from_millis(600)),
    );
    config.connections = 2;
    config.controls = vec![Control::new(Duration::from_millis(200), "/pause")];
    let report = load::run(&config).unwrap();
    assert_eq!(report.failures.total(), 0, "{:?}", report.errors);
    let control = &report.controls[0];
    assert!(control.succeeded(), "{control:?}");
    assert!(control.sent >= Duration::from_millis(200), "{control:?}");
    // Nothing completes for about 200 ms after the pause began (requests already in the
    // server's hands when it did may still complete a little after the /pause answer).
    let answered = control.sent + control.latency;
    let overlapping: Vec<_> = report
        .gaps(Duration::from_millis(150))
        .into_iter()
        .filter(|g| {
            g.start <= answered + Duration::from_millis(50) && g.start + g.length >= answered
        })
        .collect();
    let [gap] = overlapping[..] else {
        panic!(
            "no single long gap at the pause: {control:?}; gaps over 20 ms: {:?}",
            report.gaps(Duration::from_millis(20))
        )
    };
    assert!(report.longest_gap.length >= gap.length);
    assert!(
        report.latency.max >= Duration::from_millis(150),
        "{:?}",
        report.latency
    );
    assert!(
        report.latency.p50 < Duration::from_millis(50),
        "{:?}",
        report.latency
    );
    // The timeline covers the run; the paused buckets are empty, the others are not all.
    let t = &report.timeline;
    assert_eq!(t.completed.len(), t.bucket_of(report.elapsed) + 1);
    assert_eq!(t.completed.iter().sum::<u64>(), report.requests);
    assert_eq!(report.samples.len() as u64, report.requests);
    assert!(report.samples.windows(2).all(|w| w[0].done <= w[1].done));
    assert!(
        report
            .samples
            .iter()
            .all(|s| s.status == 200 && s.target == 0)
    );
    let paused = t.bucket_of(gap.start) + 1..t.bucket_of(gap.start + gap.length);
    assert!(paused.len() >= 10, "{paused:?}");
    assert!(t.completed[paused].iter().all(|&n| n == 0));
    assert!(
        t.completed[..t.bucket_of(control.sent)]
            .iter()
            .any(|&n| n > 0)
    );
    assert!(report.requests_per_second() > 0.0);
}
