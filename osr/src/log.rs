//! The OSR event log: what the JIT and the OSR runtime did, and when.
//!
//! Uppercut reports through the [`tracing`] crate: compilations (`uppercut::compile` spans, with
//! the unit's function, tier, specialisation, code size and IR / code-generation time), relinks,
//! retirements and frees of units (`uppercut::code` events), transfers (`uppercut::osr` spans,
//! with thread, site, from and to), deoptimisations with their cause, and the exit statistics
//! (`uppercut::osr`). An embedder routes them wherever its own subscriber does; [`OsrLogLayer`]
//! is the layer behind `uppercut run --osr-log=FILE`, which writes them as JSON lines or in the
//! Chrome trace-event format (a timeline for Perfetto or `chrome://tracing`).
//!
//! A JSON line is one event or one finished span:
//!
//! ```text
//! {"ts_us":1520,"thread":"main","target":"uppercut::compile","event":"compile","dur_us":1103,"function":"hot","tier":"O2",...}
//! {"ts_us":2871,"thread":"main","target":"uppercut::osr","event":"transfer","dur_us":41,"function":"hot","site":"site3",...}
//! ```
//!
//! `ts_us` is microseconds since the log started; `dur_us` is there for spans only.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{Map, Value, json};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// How [`OsrLogLayer`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One JSON object per line.
    #[default]
    JsonLines,
    /// A JSON array of Chrome trace events: spans as complete (`"ph":"X"`) events, events as
    /// instant ones, one track per thread.
    Chrome,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<LogFormat, String> {
        match s {
            "json" => Ok(LogFormat::JsonLines),
            "chrome" => Ok(LogFormat::Chrome),
            other => Err(format!(
                "unknown log format `{other}` (expected json or chrome)"
            )),
        }
    }
}

/// Where the log goes, shared by the layer and [`OsrLog::finish`].
struct Sink {
    out: Option<BufWriter<File>>,
    format: LogFormat,
    /// Chrome: whether an event was written (the next one needs a comma).
    written: bool,
}

impl Sink {
    fn write(&mut self, object: Map<String, Value>) {
        let Some(out) = self.out.as_mut() else {
            return;
        };
        let object = match self.format {
            LogFormat::JsonLines => Value::Object(object),
            LogFormat::Chrome => chrome_event(object),
        };
        let separator = match (self.format, self.written) {
            (LogFormat::Chrome, true) => ",\n",
            _ => "",
        };
        let line = format!("{separator}{object}");
        let result = match self.format {
            LogFormat::JsonLines => writeln!(out, "{line}"),
            LogFormat::Chrome => write!(out, "{line}"),
        };
        if result.is_err() {
            // The log is lost, not the run.
            self.out = None;
        }
        self.written = true;
    }
}

/// The Chrome trace event for one of our objects.
fn chrome_event(mut object: Map<String, Value>) -> Value {
    let ts = object.remove("ts_us").unwrap_or(json!(0));
    let thread = object.remove("thread").unwrap_or(json!("?"));
    let tid = object.remove("tid").unwrap_or(json!(0));
    let name = object.remove("event").unwrap_or(json!("event"));
    let category = object.remove("target").unwrap_or(json!("uppercut"));
    let mut event = json!({
        "name": name,
        "cat": category,
        "ts": ts,
        "pid": std::process::id(),
        "tid": tid,
    });
    match object.remove("dur_us") {
        Some(dur) => {
            event["ph"] = json!("X");
            event["dur"] = dur;
        }
        None => {
            event["ph"] = json!("i");
            event["s"] = json!("t");
        }
    }
    object.insert("thread".to_owned(), thread);
    event["args"] = Value::Object(object);
    event
}

/// A `--osr-log` file: the layer to install, and the handle that closes the file at exit.
#[derive(Clone)]
pub struct OsrLog {
    sink: Arc<Mutex<Sink>>,
    started: Instant,
}

impl OsrLog {
    /// Creates `path` (replacing it) for a log in `format`.
    ///
    /// # Errors
    /// When the file cannot be created.
    pub fn create(path: &Path, format: LogFormat) -> std::io::Result<OsrLog> {
        let mut out = BufWriter::new(File::create(path)?);
        if format == LogFormat::Chrome {
            out.write_all(b"[\n")?;
        }
        Ok(OsrLog {
            sink: Arc::new(Mutex::new(Sink {
                out: Some(out),
                format,
                written: false,
            })),
            started: Instant::now(),
        })
    }

    /// The layer that writes into this log (install it with a registry).
    pub fn layer(&self) -> OsrLogLayer {
        OsrLogLayer { log: self.clone() }
    }

    /// Writes one object now (for what is not a `tracing` event, such as the exit statistics).
    pub fn write(&self, event: &str, fields: Map<String, Value>) {
        let mut object = self.header(event, "uppercut::osr");
        object.extend(fields);
        self.emit(object);
    }

    fn emit(&self, object: Map<String, Value>) {
        self.sink
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .write(object);
    }

    /// Ends the log (closing the Chrome array) and flushes it; later events are dropped.
    pub fn finish(&self) {
        let mut sink = self.sink.lock().unwrap_or_else(|e| e.into_inner());
        let format = sink.format;
        if let Some(mut out) = sink.out.take() {
            if format == LogFormat::Chrome {
                let _ = out.write_all(b"\n]\n");
            }
            let _ = out.flush();
        }
    }

    fn micros_since_start(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.started).as_micros() as u64
    }

    fn header(&self, event: &str, target: &str) -> Map<String, Value> {
        let thread = std::thread::current();
        let mut object = Map::new();
        object.insert(
            "ts_us".to_owned(),
            json!(self.micros_since_start(Instant::now())),
        );
        object.insert(
            "thread".to_owned(),
            json!(
                thread
                    .name()
                    .map_or_else(|| format!("{:?}", thread.id()), str::to_owned)
            ),
        );
        // SAFETY: gettid has no preconditions.
        object.insert("tid".to_owned(), json!(unsafe { libc::gettid() }));
        object.insert("target".to_owned(), json!(target));
        object.insert("event".to_owned(), json!(event));
        object
    }
}

/// The `tracing` layer of an [`OsrLog`]: Uppercut's events (targets `uppercut::*`) and spans.
pub struct OsrLogLayer {
    log: OsrLog,
}

/// What a span carries until it closes.
struct Open {
    started: Instant,
    fields: Map<String, Value>,
    header: Map<String, Value>,
}

/// Collects an event's or a span's fields as JSON.
struct Fields<'a>(&'a mut Map<String, Value>);

impl Visit for Fields<'_> {
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), json!(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), json!(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), json!(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), json!(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), json!(format!("{value:?}")));
    }
}

fn ours(target: &str) -> bool {
    target.starts_with("uppercut")
}

impl<S> Layer<S> for OsrLogLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let metadata = attrs.metadata();
        if !ours(metadata.target()) {
            return;
        }
        let mut fields = Map::new();
        attrs.record(&mut Fields(&mut fields));
        let header = self.log.header(metadata.name(), metadata.target());
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Open {
                started: Instant::now(),
                fields,
                header,
            });
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(open) = span.extensions_mut().get_mut::<Open>()
        {
            values.record(&mut Fields(&mut open.fields));
        }
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let metadata = event.metadata();
        if !ours(metadata.target()) {
            return;
        }
        let mut fields = Map::new();
        event.record(&mut Fields(&mut fields));
        let name = fields
            .remove("message")
            .and_then(|m| m.as_str().map(str::to_owned))
            .unwrap_or_else(|| metadata.name().to_owned());
        let mut object = self.log.header(&name, metadata.target());
        object.extend(fields);
        self.log.emit(object);
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else {
            return;
        };
        let Some(open) = span.extensions_mut().remove::<Open>() else {
            return;
        };
        let mut object = open.header;
        object.insert(
            "ts_us".to_owned(),
            json!(self.log.micros_since_start(open.started)),
        );
        object.insert(
            "dur_us".to_owned(),
            json!(open.started.elapsed().as_micros() as u64),
        );
        object.extend(open.fields);
        self.log.emit(object);
    }
}
