//! The HTTP server guest, natively and under
//! `uppercut run --osr-specialize=extended_status --osr-stats`: the protocol cases first
//! (pipelining, partial reads, bodies, errors), then about a second of load from four
//! keep-alive connections with `extended_status` switched on in the middle, a switch back off,
//! then `/quit`. No request may fail, and the server's own counters must agree with what the
//! clients sent; under Uppercut the switches must have recompiled code and moved the running
//! event loop.

use std::io::ErrorKind;
use std::process::Command;
use std::time::Duration;

use uppercut_core::OptLevel;
use uppercut_experiments::http::{self, Connection, Response};
use uppercut_experiments::httpd::{self, Finished, Server, Status};
use uppercut_experiments::load::{self, Control, LoadConfig, LoadReport, Mix, Until};
use uppercut_experiments::{Artifact, Error};

use crate::support::{clang, osr_stat, uppercut};

const START_TIMEOUT: Duration = Duration::from_secs(60);
const IO_TIMEOUT: Duration = Duration::from_secs(10);

fn compile(native: bool) -> Artifact {
    let c = clang();
    let result = if native {
        c.compile_native(httpd::NAME, httpd::SOURCE, OptLevel::O2)
    } else {
        c.compile_ir(httpd::NAME, httpd::SOURCE, OptLevel::O2)
    };
    result.unwrap_or_else(|e| panic!("{e}"))
}

fn status(addr: std::net::SocketAddr) -> Status {
    let response = http::get(addr, "/status").unwrap();
    assert_eq!(response.status, 200);
    Status::parse(&response.text()).unwrap()
}

fn count(status: &Status, key: &str) -> i64 {
    status
        .get(key)
        .unwrap_or_else(|| panic!("/status has no `{key}`: {status:?}"))
}

fn open(addr: std::net::SocketAddr) -> Connection {
    Connection::open(addr, IO_TIMEOUT).unwrap()
}

/// A connection that sent `request` gets `status` and is closed by the server after it.
fn refused(addr: std::net::SocketAddr, request: &[u8], status: u16) {
    let shown = String::from_utf8_lossy(&request[..request.len().min(80)]);
    let mut c = open(addr);
    c.send_raw(request).unwrap();
    let r = c
        .receive(false)
        .unwrap_or_else(|e| panic!("{shown:?}: no response: {e}"));
    assert_eq!(r.status, status, "{shown:?}: {r:?}");
    assert!(r.closes(), "{shown:?}: the connection should close: {r:?}");
    match c.receive(false) {
        Err(Error::Io { source, .. }) if source.kind() == ErrorKind::UnexpectedEof => {}
        other => panic!("{shown:?}: expected the connection to be closed, got {other:?}"),
    }
}

fn text(r: &Response) -> String {
    assert_eq!(r.status, 200, "{r:?}");
    r.text()
}

/// Protocol cases, all of them on connections of their own.
fn protocol(addr: std::net::SocketAddr) {
    // Three pipelined requests in one write; their answers come in order.
    let mut c = open(addr);
    c.send_raw(
        b"GET /hello?name=a HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /hello?name=b%20c+d HTTP/1.1\r\nHost: t\r\n\r\n\
          HEAD / HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .unwrap();
    assert_eq!(text(&c.receive(false).unwrap()), "Hello, a!\n");
    assert_eq!(text(&c.receive(false).unwrap()), "Hello, b c d!\n");
    let head = c.receive(true).unwrap();
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    let page = c.get("/").unwrap();
    assert_eq!(
        head.header("content-length").unwrap(),
        page.body.len().to_string()
    );
    assert!(text(&page).contains("<h1>uppercut httpd</h1>"));

    // A request with a body, then another, a few bytes at a time: the body is skipped.
    let request = b"POST /hello HTTP/1.1\r\nHost: t\r\nContent-Length: 7\r\n\r\nabc\r\nde\
                    GET /compute?n=100 HTTP/1.1\r\nhost: t\r\n\r\n";
    for chunk in request.chunks(3) {
        c.send_raw(chunk).unwrap();
        std::thread::sleep(Duration::from_micros(300));
    }
    let post = c.receive(false).unwrap();
    assert_eq!(
        (post.status, post.header("allow")),
        (405, Some("GET, HEAD"))
    );
    assert_eq!(text(&c.receive(false).unwrap()), "primes below 100: 25\n");

    // Errors in a well-formed request keep the connection.
    for (target, status) in [
        ("/nope", 404),
        ("/compute?n=x", 400),
        ("/compute?n=1000001", 400),
        ("/control?extended=2", 400),
        ("/control", 400),
        ("/hello?name=%zz", 400),
    ] {
        let r = c.get(target).unwrap();
        assert_eq!(r.status, status, "{target}: {r:?}");
        assert!(!r.closes(), "{target}: {r:?}");
    }
    assert_eq!(
        text(&c.get("/compute").unwrap()),
        "primes below 1000: 168\n"
    );
    assert_eq!(text(&c.get("/hello").unwrap()), "Hello, world!\n");
    assert_eq!(
        text(&c.get("/hello?x=1&name=%41%42").unwrap()),
        "Hello, AB!\n"
    );

    // HTTP/1.0 closes unless asked to keep alive; `Connection: close` closes.
    let mut c10 = open(addr);
    c10.send_raw(b"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    let r = c10.receive(false).unwrap();
    assert_eq!(
        (r.status, r.header("connection")),
        (200, Some("keep-alive"))
    );
    assert!(!r.closes());
    refused(addr, b"GET / HTTP/1.0\r\n\r\n", 200);
    refused(
        addr,
        b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        200,
    );

    // Malformed requests: an answer, then the connection closes.
    refused(addr, b"GARBAGE\r\n\r\n", 400);
    refused(addr, b"GET /\r\n\r\n", 400);
    refused(addr, b"GET nopath HTTP/1.1\r\nHost: t\r\n\r\n", 400);
    refused(addr, b"GET / HTTP/1.1\r\n\r\n", 400); // no Host
    refused(
        addr,
        b"GET / HTTP/1.1\r\nHost: t\r\nbad header\r\n\r\n",
        400,
    );
    refused(addr, b"GET / HTTP/1.1\r\nHost: t\r\n folded\r\n\r\n", 400);
    refused(
        addr,
        b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 1x\r\n\r\n",
        400,
    );
    refused(
        addr,
        b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999\r\n\r\n",
        413,
    );
    refused(
        addr,
        b"GET / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n",
        501,
    );
    refused(addr, b"GET / HTTP/9.9\r\nHost: t\r\n\r\n", 505);
    refused(addr, b"GET /\x01 HTTP/1.1\r\nHost: t\r\n\r\n", 400);
    let mut huge = b"GET / HTTP/1.1\r\nHost: t\r\nX: ".to_vec();
    huge.resize(9000, b'a');
    refused(addr, &huge, 431);
    refused(addr, &[0xff; 9000], 431); // binary noise, never a line
    let mut noise = b"\x00\xff\r\n\r\n".to_vec();
    noise.extend_from_slice(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    refused(addr, &noise, 400);

    // A client that leaves in the middle of a request does no harm.
    let mut gone = open(addr);
    gone.send_raw(b"GET /hello HTTP/1.1\r\nHo").unwrap();
    drop(gone);

    // The first connection still works.
    assert_eq!(
        text(&c.get("/hello?name=again").unwrap()),
        "Hello, again!\n"
    );
}

/// A second of load with `extended_status` switched on at 0.4 s; then, from the test, one
/// request with it on, a switch back off, the `/status` check and `/quit`.
fn load_flip_and_quit(server: Server) -> (LoadReport, Finished) {
    let addr = server.addr();
    let before = status(addr);
    assert_eq!(count(&before, "extended_status"), 0);
    assert_eq!(count(&before, "extended_requests"), 0);

    let mix = Mix::weighted([
        ("/", 2),
        ("/hello?name=load", 5),
        ("/compute?n=3000", 2),
        ("/status", 1),
    ])
    .unwrap();
    let mut config = LoadConfig::new(addr, mix, Until::Elapsed(Duration::from_secs(1)));
    config.connections = 4;
    config.timeout = IO_TIMEOUT;
    config.controls = vec![Control::new(
        Duration::from_millis(400),
        "/control?extended=1",
    )];
    let report = load::run(&config).unwrap();
    assert_eq!(
        report.failures.total(),
        0,
        "{:?}: {:#?}",
        report.failures,
        report.errors
    );
    assert!(report.requests >= 20, "only {} requests", report.requests);
    assert_eq!(report.latency.count, report.requests);
    assert!(
        report.per_target.iter().all(|&(_, n)| n > 0),
        "{:?}",
        report.per_target
    );
    assert_eq!(report.controls.len(), 1);
    assert!(report.controls[0].succeeded(), "{:?}", report.controls);
    assert_eq!(
        report.timeline.completed.iter().sum::<u64>(),
        report.requests
    );

    // Whatever the load managed while the flag was on, these requests see it on.
    assert_eq!(
        text(&http::get(addr, "/hello?name=on").unwrap()),
        "Hello, on!\n"
    );
    assert_eq!(
        text(&http::get(addr, "/control?extended=0").unwrap()),
        "extended_status 0\n"
    );

    // The server counted what the clients sent: the first /status, the load, its control,
    // the /hello, the control that switched the flag off, and the /status being answered.
    let after = status(addr);
    let requests = report.requests as i64;
    let expected = count(&before, "requests") + requests + 4;
    assert_eq!(count(&after, "requests"), expected, "{after:?}");
    assert_eq!(
        count(&after, "responses_2xx"),
        count(&before, "responses_2xx") + 1 + requests + 3
    );
    for class in ["responses_4xx", "responses_5xx"] {
        assert_eq!(count(&after, class), count(&before, class), "{class}");
    }
    let connections = count(&before, "connections_accepted") + report.connections_opened as i64 + 4;
    assert_eq!(count(&after, "connections_accepted"), connections);
    assert_eq!(count(&after, "extended_status"), 0);

    // Extended bookkeeping ran while the flag was on, and only then.
    let extended = count(&after, "extended_requests");
    assert!(
        2 <= extended && extended < requests,
        "{extended} of {requests}"
    );
    assert_eq!(
        after.extended_paths().map(|(_, n)| n).sum::<i64>(),
        extended
    );
    let path = |p: &str| {
        after
            .extended_paths()
            .find(|&(q, _)| q == p)
            .unwrap_or_else(|| panic!("no extended_path {p}: {after:?}"))
            .1
    };
    // The control that switched it off began while it was on; the one that switched it on,
    // before.
    assert_eq!(path("/control"), 1);
    assert_eq!((path("/quit"), path("other")), (0, 0));
    assert!(path("/hello") >= 1);
    for key in [
        "extended_bytes_in",
        "extended_bytes_out",
        "extended_wakeups",
        "extended_timed",
    ] {
        assert!(count(&after, key) > 0, "{key}: {after:?}");
    }

    let bye = http::get(addr, "/quit").unwrap();
    assert_eq!(text(&bye), "bye\n");
    assert!(bye.closes());
    let finished = server.wait(Duration::from_secs(20)).unwrap();
    assert!(finished.status.success(), "{finished:?}");
    assert_eq!(
        finished.served(),
        Some((expected as u64 + 1, connections as u64 + 1)),
        "{finished:?}"
    );
    eprintln!(
        "{} requests ({:.0}/s), p50 {:?} p99 {:?} max {:?}, longest gap {:?} at {:?}, \
         control sent at {:?} and answered {:?} later",
        report.requests,
        report.requests_per_second(),
        report.latency.p50,
        report.latency.p99,
        report.latency.max,
        report.longest_gap.length,
        report.longest_gap.start,
        report.controls[0].sent,
        report.controls[0].latency,
    );
    (report, finished)
}

#[test]
fn httpd_serves_natively() {
    let exe = compile(true);
    let mut command = Command::new(exe.path());
    command.arg("0");
    let server = Server::start(command, START_TIMEOUT).unwrap();
    protocol(server.addr());
    let (_, finished) = load_flip_and_quit(server);
    assert_eq!(finished.stderr, "");
}

#[test]
fn httpd_serves_under_uppercut_and_specialises_on_each_switch() {
    let ir = compile(false);
    let mut command = Command::new(uppercut());
    command
        .args(["run", "--osr-specialize=extended_status", "--osr-stats"])
        .arg(ir.path())
        .arg("0");
    let server = Server::start(command, START_TIMEOUT).unwrap();
    protocol(server.addr());
    let (_, finished) = load_flip_and_quit(server);
    eprintln!("{}", finished.stderr.trim_end());
    assert!(
        osr_stat(&finished.stderr, "recompiles") >= 1,
        "{}",
        finished.stderr
    );
    // The event loop reads the flag, and was running at each switch.
    assert!(
        osr_stat(&finished.stderr, "frames") >= 1,
        "{}",
        finished.stderr
    );
}

#[test]
fn a_port_in_use_is_an_error_not_a_hang() {
    let exe = compile(true);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut command = Command::new(exe.path());
    command.arg(taken.local_addr().unwrap().port().to_string());
    match Server::start(command, START_TIMEOUT) {
        Err(Error::ServerStart { reason }) => assert!(reason.contains("bind"), "{reason}"),
        other => panic!("{other:?}"),
    }
    let mut command = Command::new(exe.path());
    command.arg("65536");
    match Server::start(command, START_TIMEOUT) {
        Err(Error::ServerStart { reason }) => assert!(reason.contains("usage"), "{reason}"),
        other => panic!("{other:?}"),
    }
}
