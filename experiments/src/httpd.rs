//! The HTTP server guest (`experiments/guests/httpd.c`) and a handle on a running server.
//!
//! The guest is a single-threaded poll() server on 127.0.0.1 whose configuration global
//! `extended_status` (Apache's `ap_extended_status`) is read on every request and switched by
//! `GET /control?extended=0|1`; the top of its source documents the paths and the `/status`
//! counters. [`Server::start`] runs it (natively, or under `uppercut run`: it only needs the
//! command), waits for its `listening on PORT` line, and [`Server::wait`] collects what it
//! printed once `/quit` has made it exit.
//!
//! ```no_run
//! use std::process::Command;
//! use std::time::Duration;
//! use uppercut_core::OptLevel;
//! use uppercut_experiments::{Clang, http, httpd::{self, Server, Status}};
//!
//! let ir = Clang::find()?.compile_ir("httpd", httpd::SOURCE, OptLevel::O2)?;
//! let mut command = Command::new("uppercut");
//! command.args(["run", "--osr-specialize=extended_status"]).arg(ir.path()).arg("0");
//! let server = Server::start(command, Duration::from_secs(30))?;
//! http::get(server.addr(), "/control?extended=1")?;
//! let status = Status::parse(&http::get(server.addr(), "/status")?.text())?;
//! assert_eq!(status.get("extended_status"), Some(1));
//! http::get(server.addr(), "/quit")?;
//! let finished = server.wait(Duration::from_secs(10))?;
//! assert!(finished.status.success());
//! # Ok::<(), uppercut_experiments::Error>(())
//! ```

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// The C source of the server guest.
pub const SOURCE: &str = include_str!("../guests/httpd.c");

/// The guest's name: the stem of its source file.
pub const NAME: &str = "httpd";

/// The global that switches the server's extended bookkeeping.
pub const EXTENDED_STATUS: &str = "extended_status";

/// A running server process, killed if dropped before it exits.
#[derive(Debug)]
pub struct Server {
    child: Child,
    port: u16,
    stdout: Option<JoinHandle<String>>,
    stderr: Option<JoinHandle<String>>,
}

/// A server process that has exited.
#[derive(Debug)]
pub struct Finished {
    /// How it exited.
    pub status: ExitStatus,
    /// What it printed on stdout after its `listening on PORT` line.
    pub stdout: String,
    /// What it printed on stderr.
    pub stderr: String,
}

impl Finished {
    /// The numbers of its `served N requests on M connections` line: `(N, M)`.
    pub fn served(&self) -> Option<(u64, u64)> {
        self.stdout.lines().find_map(|line| {
            let rest = line.strip_prefix("served ")?;
            let (requests, rest) = rest.split_once(" requests on ")?;
            let connections = rest.strip_suffix(" connections")?;
            Some((requests.parse().ok()?, connections.parse().ok()?))
        })
    }
}

impl Server {
    /// Spawns `command` (its stdout and stderr captured, stdin empty) and waits up to
    /// `timeout` for its first line of output, `listening on PORT`.
    ///
    /// [`Error::ServerStart`] if it exits or prints something else first (with its stderr),
    /// [`Error::Timeout`] if it is silent too long; either way the process is gone.
    pub fn start(mut command: Command, timeout: Duration) -> Result<Server> {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::io(format!("starting {:?}", command.get_program()), e))?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::ServerStart {
                reason: "its stdout or stderr was not captured".to_owned(),
            });
        };
        let (first_line, first_line_rx) = mpsc::channel();
        let stdout = thread::spawn(move || drain_stdout(stdout, first_line));
        let stderr = thread::spawn(move || drain(stderr));
        let mut server = Server {
            child,
            port: 0,
            stdout: Some(stdout),
            stderr: Some(stderr),
        };
        let line = match first_line_rx.recv_timeout(timeout) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(Error::Timeout {
                    what: "the server's `listening on PORT` line".to_owned(),
                    after: timeout,
                });
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => String::new(),
        };
        match line
            .trim_end()
            .strip_prefix("listening on ")
            .and_then(|p| p.parse::<u16>().ok())
        {
            Some(port) if port != 0 => {
                server.port = port;
                Ok(server)
            }
            _ => {
                let finished = server.wait(Duration::from_secs(5));
                let stderr = finished.map(|f| f.stderr).unwrap_or_default();
                Err(Error::ServerStart {
                    reason: format!(
                        "its first line was {line:?}, not `listening on PORT`; stderr: {:?}",
                        stderr.trim_end()
                    ),
                })
            }
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address it listens on: 127.0.0.1 and [`Server::port`].
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// Its process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `timeout` for it to exit by itself (e.g. after `GET /quit`), and collects
    /// its output. [`Error::Timeout`] if it is still running then: it is killed.
    pub fn wait(mut self, timeout: Duration) -> Result<Finished> {
        let deadline = Instant::now() + timeout;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
                Ok(None) => {
                    self.kill();
                    return Err(Error::Timeout {
                        what: format!("server process {}", self.child.id()),
                        after: timeout,
                    });
                }
                Err(e) => return Err(Error::io("waiting for the server", e)),
            }
        };
        let join =
            |h: Option<JoinHandle<String>>| h.and_then(|h| h.join().ok()).unwrap_or_default();
        Ok(Finished {
            status,
            stdout: join(self.stdout.take()),
            stderr: join(self.stderr.take()),
        })
    }

    fn kill(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // It may exit between the check and the kill: then there is nothing to do.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends stdout's first line to `first_line`, then returns the rest.
fn drain_stdout(stdout: ChildStdout, first_line: mpsc::Sender<String>) -> String {
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    if reader.read_line(&mut line).is_ok_and(|n| n > 0) {
        // The receiver may have given up waiting; the line is then unused.
        let _ = first_line.send(line);
    }
    drop(first_line);
    drain(reader)
}

fn drain(mut from: impl Read) -> String {
    let mut bytes = Vec::new();
    // A read error ends the capture; what was read so far is kept.
    let _ = from.read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The counters of a `/status` page: one `key value` line each, where the key may itself
/// hold a space (`extended_path /hello 12`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    values: BTreeMap<String, i64>,
}

impl Status {
    /// Parses a `/status` body; [`Error::MalformedResponse`] names a line that is not
    /// `key value`.
    pub fn parse(text: &str) -> Result<Status> {
        let mut values = BTreeMap::new();
        for line in text.lines() {
            let parsed = line
                .rsplit_once(' ')
                .and_then(|(k, v)| Some((k, v.parse::<i64>().ok()?)));
            match parsed {
                Some((key, value)) if !key.is_empty() => values.insert(key.to_owned(), value),
                _ => return Err(Error::malformed(format!("status line {line:?}"))),
            };
        }
        Ok(Status { values })
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<i64> {
        self.values.get(key).copied()
    }

    /// The `extended_path PATH N` counters, as `(PATH, N)`.
    pub fn extended_paths(&self) -> impl Iterator<Item = (&str, i64)> {
        self.values
            .iter()
            .filter_map(|(k, &v)| Some((k.strip_prefix("extended_path ")?, v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_pages_parse() {
        let s = Status::parse("requests 5\nextended_path / 2\nextended_path /hello 3\n").unwrap();
        assert_eq!(s.get("requests"), Some(5));
        assert_eq!(s.get("missing"), None);
        let paths: Vec<_> = s.extended_paths().collect();
        assert_eq!(paths, [("/", 2), ("/hello", 3)]);
        assert!(Status::parse("requests five\n").is_err());
        assert!(Status::parse("lonely\n").is_err());
    }

    #[test]
    fn summary_lines_parse() {
        let f = |stdout: &str| Finished {
            status: std::os::unix::process::ExitStatusExt::from_raw(0),
            stdout: stdout.to_owned(),
            stderr: String::new(),
        };
        assert_eq!(
            f("served 12 requests on 3 connections\n").served(),
            Some((12, 3))
        );
        assert_eq!(f("served many requests\n").served(), None);
    }

    #[test]
    fn a_server_that_prints_something_else_is_refused() {
        let mut command = Command::new("sh");
        command.args(["-c", "echo hello; echo oops >&2"]);
        match Server::start(command, Duration::from_secs(10)) {
            Err(Error::ServerStart { reason }) => {
                assert!(
                    reason.contains("hello") && reason.contains("oops"),
                    "{reason}"
                )
            }
            other => panic!("{other:?}"),
        }
    }
}
