//! The access log: one line per request, formatted and written off the request path.
//!
//! A finished request hands its [`LogEntry`] to a bounded queue (`access_log_buffer_lines`,
//! default 16384) drained by one dedicated thread (`silex-access-log`), never by a Tokio
//! worker. When the queue is full (the sink is slower than the traffic) the line is dropped and
//! counted in `silex_access_log_dropped_total`: a request never waits for the log.

use std::fmt::Write as _;
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{Method, Version};

use crate::config::{AccessLogFormat, ServerConfig};
use crate::metrics::RouteMetrics;

/// What the upstream did for a request.
pub(crate) struct UpstreamFacts {
    /// `ip:port` of the endpoint that answered.
    pub address: http::uri::Authority,
    pub status: u16,
    /// Time from sending the request to the response head.
    pub head_time: Duration,
}

/// The request's text fields the access log needs.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Field {
    RequestId,
    Host,
    Path,
    Query,
    UserAgent,
    Referer,
}

const FIELDS: usize = 6;

/// Request facts only the access log needs, gathered when it is on. The text is copied into one
/// small buffer: holding the request's own header bytes instead would keep hyper's connection
/// read buffers alive (and reallocated) until the line is written.
pub(crate) struct LogContext {
    pub client: SocketAddr,
    pub version: Version,
    pub tls_version: Option<&'static str>,
    pub sni: Option<Arc<str>>,
    text: String,
    /// End of each field in `text`, by [`Field`].
    ends: [u32; FIELDS],
    /// Bit `1 << field` set when the field was present.
    present: u8,
}

impl LogContext {
    pub(crate) fn new(
        client: SocketAddr,
        version: Version,
        tls_version: Option<&'static str>,
        sni: Option<Arc<str>>,
    ) -> Self {
        Self {
            client,
            version,
            tls_version,
            sni,
            text: String::with_capacity(256),
            ends: [0; FIELDS],
            present: 0,
        }
    }

    /// Sets `field` (fields are set in [`Field`] order, each once; bytes that are not UTF-8
    /// are replaced).
    pub(crate) fn set(&mut self, field: Field, value: Option<&[u8]>) {
        if let Some(bytes) = value {
            self.text.push_str(&String::from_utf8_lossy(bytes));
            self.present |= 1 << field as u8;
        }
        self.ends[field as usize] = u32::try_from(self.text.len()).unwrap_or(u32::MAX);
    }

    fn get(&self, field: Field) -> Option<&str> {
        if self.present & (1 << field as u8) == 0 {
            return None;
        }
        let i = field as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        self.text.get(start..self.ends[i] as usize)
    }
}

/// One finished request.
pub(crate) struct LogEntry {
    pub time: SystemTime,
    pub context: Box<LogContext>,
    pub method: Method,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration: Duration,
    pub upstream: Option<UpstreamFacts>,
    /// Namespace, Ingress and Service of the route.
    pub route: Arc<RouteMetrics>,
}

/// The queue to the writer thread.
pub(crate) struct AccessLog {
    sender: SyncSender<LogEntry>,
    dropped: AtomicU64,
}

impl AccessLog {
    /// Opens the sink and starts the writer; `None` when the access log is off.
    pub(crate) fn start(config: &ServerConfig) -> io::Result<Option<Self>> {
        let sink: Box<dyn Write + Send> = match config.access_log.as_str() {
            "off" => return Ok(None),
            "stdout" => Box::new(io::stdout()),
            path => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| {
                        io::Error::new(e.kind(), format!("access_log: cannot open {path:?}: {e}"))
                    })?,
            ),
        };
        let (sender, receiver) = sync_channel(config.access_log_buffer_lines);
        let format = config.access_log_format;
        std::thread::Builder::new()
            .name("silex-access-log".into())
            .spawn(move || write_lines(&receiver, sink, format))?;
        Ok(Some(Self {
            sender,
            dropped: AtomicU64::new(0),
        }))
    }

    /// Queues `entry` for the writer, or drops and counts it when the queue is full.
    pub(crate) fn submit(&self, entry: LogEntry) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.sender.try_send(entry)
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Lines dropped so far.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// How long the writer sleeps when the queue is empty. It polls instead of blocking on the
/// queue so that requests never wake it line by line (a futex wake and a context switch per
/// request would cost more than the line itself); 16384 lines per 10 ms is 1.6 M lines/s.
const IDLE_POLL: Duration = Duration::from_millis(10);

/// The writer thread: formats and writes every queued entry, flushing whenever the queue is
/// empty; ends when the data plane is gone.
fn write_lines(
    receiver: &Receiver<LogEntry>,
    sink: Box<dyn Write + Send>,
    format: AccessLogFormat,
) {
    let mut out = BufWriter::with_capacity(64 * 1024, sink);
    let mut line = String::with_capacity(1024);
    let mut failed = false;
    loop {
        let entry = match receiver.try_recv() {
            Ok(entry) => entry,
            Err(TryRecvError::Empty) => {
                let _ = out.flush();
                std::thread::sleep(IDLE_POLL);
                continue;
            }
            Err(TryRecvError::Disconnected) => break,
        };
        line.clear();
        match format {
            AccessLogFormat::Json => json_line(&entry, &mut line),
            AccessLogFormat::Combined => combined_line(&entry, &mut line),
        }
        drop(entry);
        if let Err(error) = out.write_all(line.as_bytes()) {
            if !failed {
                tracing::warn!(%error, "cannot write the access log");
                failed = true;
            }
        }
    }
    let _ = out.flush();
}

fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// Seconds, printed with millisecond precision (`{:.3}`) as nginx logs `$request_time`.
fn seconds(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

fn empty_as_none(value: &str) -> Option<&str> {
    (!value.is_empty()).then_some(value)
}

/// One JSON object, written straight into `out` (no intermediate value, no allocation but
/// for header values that are not UTF-8).
fn json_line(entry: &LogEntry, out: &mut String) {
    let c = &entry.context;
    let labels = &entry.route.labels;
    let upstream = entry.upstream.as_ref();
    out.push_str("{\"time\":\"");
    rfc3339(out, entry.time);
    out.push('"');
    string(out, "request_id", c.get(Field::RequestId));
    let _ = write!(out, ",\"client\":\"{}\"", c.client.ip());
    string(out, "method", Some(entry.method.as_str()));
    string(out, "host", c.get(Field::Host));
    string(out, "path", c.get(Field::Path));
    string(out, "query", c.get(Field::Query));
    string(out, "protocol", Some(protocol(c.version)));
    number(out, "status", Some(entry.status));
    number(out, "bytes_in", Some(entry.bytes_in));
    number(out, "bytes_out", Some(entry.bytes_out));
    seconds_field(out, "duration", Some(entry.duration));
    string(
        out,
        "upstream_address",
        upstream.map(|u| u.address.as_str()),
    );
    number(out, "upstream_status", upstream.map(|u| u.status));
    seconds_field(out, "upstream_duration", upstream.map(|u| u.head_time));
    string(out, "namespace", empty_as_none(&labels.namespace));
    string(out, "ingress", empty_as_none(&labels.ingress));
    string(out, "service", empty_as_none(&labels.service));
    string(out, "vhost", Some(&labels.host));
    string(out, "tls_version", c.tls_version);
    string(out, "sni", c.sni.as_deref());
    string(out, "user_agent", c.get(Field::UserAgent));
    string(out, "referer", c.get(Field::Referer));
    out.push_str("}\n");
}

/// `,"key":`.
fn key(out: &mut String, key: &str) {
    out.push_str(",\"");
    out.push_str(key);
    out.push_str("\":");
}

/// `,"key":"value"` (JSON-escaped) or `,"key":null`.
fn string(out: &mut String, name: &str, value: Option<&str>) {
    key(out, name);
    let Some(value) = value else {
        out.push_str("null");
        return;
    };
    out.push('"');
    if value.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push_str(value);
    } else {
        for ch in value.chars() {
            match ch {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if u32::from(c) < 0x20 => {
                    let _ = write!(out, "\\u{:04x}", u32::from(c));
                }
                c => out.push(c),
            }
        }
    }
    out.push('"');
}

/// `,"key":N` or `,"key":null`.
fn number(out: &mut String, name: &str, value: Option<impl std::fmt::Display>) {
    key(out, name);
    match value {
        Some(n) => {
            let _ = write!(out, "{n}");
        }
        None => out.push_str("null"),
    }
}

/// `,"key":S.mmm` (seconds, millisecond precision) or `,"key":null`.
fn seconds_field(out: &mut String, name: &str, value: Option<Duration>) {
    key(out, name);
    match value {
        Some(d) => {
            let _ = write!(out, "{:.3}", seconds(d));
        }
        None => out.push_str("null"),
    }
}

/// nginx's `combined` format, then ingress-nginx's `upstreaminfo` additions:
/// `$remote_addr - - [$time_local] "$request" $status $body_bytes_sent "$http_referer"
/// "$http_user_agent" $request_length $request_time [$namespace-$service] []
/// $upstream_addr $upstream_response_length $upstream_response_time $upstream_status $req_id`
/// (`$request_length` counts the body only; `$upstream_response_time` is the time to the
/// upstream's response head).
fn combined_line(entry: &LogEntry, out: &mut String) {
    let c = &entry.context;
    let labels = &entry.route.labels;
    let path = c.get(Field::Path).unwrap_or("/");
    let _ = write!(
        out,
        "{} - - [{}] \"{} {}{}{} {}\" {} {} \"",
        c.client.ip(),
        clf_time(entry.time),
        entry.method,
        Escaped(path),
        c.get(Field::Query).map_or("", |_| "?"),
        Escaped(c.get(Field::Query).unwrap_or("")),
        protocol(c.version),
        entry.status,
        entry.bytes_out,
    );
    let _ = write!(
        out,
        "{}\" \"{}\" {} {:.3} [",
        Escaped(c.get(Field::Referer).unwrap_or("-")),
        Escaped(c.get(Field::UserAgent).unwrap_or("-")),
        entry.bytes_in,
        seconds(entry.duration),
    );
    if !labels.service.is_empty() {
        let _ = write!(out, "{}-{}", labels.namespace, labels.service);
    }
    out.push_str("] [] ");
    match &entry.upstream {
        Some(u) => {
            let _ = write!(
                out,
                "{} {} {:.3} {} ",
                u.address,
                entry.bytes_out,
                seconds(u.head_time),
                u.status
            );
        }
        None => out.push_str("- - - - "),
    }
    out.push_str(c.get(Field::RequestId).unwrap_or("-"));
    out.push('\n');
}

/// nginx's log escaping: `"`, `\` and bytes outside printable ASCII as `\xHH`.
struct Escaped<'a>(&'a str);

impl std::fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for byte in self.0.bytes() {
            if byte == b'"' || byte == b'\\' || !(0x20..0x7f).contains(&byte) {
                write!(f, "\\x{byte:02X}")?;
            } else {
                f.write_char(char::from(byte))?;
            }
        }
        Ok(())
    }
}

/// (year, month, day, hour, minute, second, millisecond) in UTC.
fn civil(time: SystemTime) -> (i64, u32, u32, u64, u64, u64, u32) {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let month = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        month,
        day,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis(),
    )
}

/// `2026-11-23T15:10:28.123Z`, appended to `out`.
fn rfc3339(out: &mut String, time: SystemTime) {
    let (y, mo, d, h, mi, s, ms) = civil(time);
    let _ = write!(out, "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z");
}

/// `23/Nov/2026:15:10:28 +0000` (nginx's `$time_local`, in UTC).
fn clf_time(time: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, mo, d, h, mi, s, _) = civil(time);
    let month = MONTHS[usize::try_from(mo.saturating_sub(1)).unwrap_or(0) % 12];
    format!("{d:02}/{month}/{y:04}:{h:02}:{mi:02}:{s:02} +0000")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_formatted_in_utc() {
        let iso = |time| {
            let mut out = String::new();
            rfc3339(&mut out, time);
            out
        };
        let t = UNIX_EPOCH + Duration::from_millis(1_795_446_628_123);
        assert_eq!(iso(t), "2026-11-23T15:10:28.123Z");
        assert_eq!(clf_time(t), "23/Nov/2026:15:10:28 +0000");
        assert_eq!(iso(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(iso(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut out = String::new();
        string(&mut out, "k", Some("a\"b\\c\u{1}é"));
        string(&mut out, "n", None);
        number(&mut out, "x", Some(7));
        seconds_field(&mut out, "d", Some(Duration::from_micros(1500)));
        assert_eq!(out, r#","k":"a\"b\\c\u0001é","n":null,"x":7,"d":0.002"#);
    }

    #[test]
    fn combined_escapes_quotes_and_control_bytes() {
        assert_eq!(Escaped("a\"b\\c\u{1}").to_string(), "a\\x22b\\x5Cc\\x01");
    }
}
