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

use http::{HeaderValue, Method, Uri, Version};
use serde::Serialize;

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

/// Request facts only the access log needs, gathered when it is on.
pub(crate) struct LogContext {
    pub client: SocketAddr,
    pub uri: Uri,
    pub version: Version,
    pub host: Option<HeaderValue>,
    pub user_agent: Option<HeaderValue>,
    pub referer: Option<HeaderValue>,
    pub request_id: HeaderValue,
    pub tls_version: Option<&'static str>,
    pub sni: Option<Arc<str>>,
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

fn text(value: Option<&HeaderValue>) -> Option<std::borrow::Cow<'_, str>> {
    value.map(|v| String::from_utf8_lossy(v.as_bytes()))
}

fn dash(value: Option<&HeaderValue>) -> std::borrow::Cow<'_, str> {
    text(value).unwrap_or(std::borrow::Cow::Borrowed("-"))
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

/// Seconds with millisecond precision, as nginx logs `$request_time`.
fn seconds(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1000.0).round() / 1000.0
}

fn empty_as_none(value: &str) -> Option<&str> {
    (!value.is_empty()).then_some(value)
}

#[derive(Serialize)]
struct JsonLine<'a> {
    time: String,
    request_id: std::borrow::Cow<'a, str>,
    client: String,
    method: &'a str,
    host: Option<std::borrow::Cow<'a, str>>,
    path: &'a str,
    query: Option<&'a str>,
    protocol: &'static str,
    status: u16,
    bytes_in: u64,
    bytes_out: u64,
    duration: f64,
    upstream_address: Option<&'a str>,
    upstream_status: Option<u16>,
    upstream_duration: Option<f64>,
    namespace: Option<&'a str>,
    ingress: Option<&'a str>,
    service: Option<&'a str>,
    vhost: &'a str,
    tls_version: Option<&'static str>,
    sni: Option<&'a str>,
    user_agent: Option<std::borrow::Cow<'a, str>>,
    referer: Option<std::borrow::Cow<'a, str>>,
}

fn json_line(entry: &LogEntry, out: &mut String) {
    let c = &entry.context;
    let labels = &entry.route.labels;
    let line = JsonLine {
        time: rfc3339(entry.time),
        request_id: String::from_utf8_lossy(c.request_id.as_bytes()),
        client: c.client.ip().to_string(),
        method: entry.method.as_str(),
        host: text(c.host.as_ref()),
        path: c.uri.path(),
        query: c.uri.query(),
        protocol: protocol(c.version),
        status: entry.status,
        bytes_in: entry.bytes_in,
        bytes_out: entry.bytes_out,
        duration: seconds(entry.duration),
        upstream_address: entry.upstream.as_ref().map(|u| u.address.as_str()),
        upstream_status: entry.upstream.as_ref().map(|u| u.status),
        upstream_duration: entry.upstream.as_ref().map(|u| seconds(u.head_time)),
        namespace: empty_as_none(&labels.namespace),
        ingress: empty_as_none(&labels.ingress),
        service: empty_as_none(&labels.service),
        vhost: &labels.host,
        tls_version: c.tls_version,
        sni: c.sni.as_deref(),
        user_agent: text(c.user_agent.as_ref()),
        referer: text(c.referer.as_ref()),
    };
    // Serializing plain strings and numbers cannot fail.
    if let Ok(json) = serde_json::to_string(&line) {
        out.push_str(&json);
    }
    out.push('\n');
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
    let target = c.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let _ = write!(
        out,
        "{} - - [{}] \"{} {} {}\" {} {} \"",
        c.client.ip(),
        clf_time(entry.time),
        entry.method,
        Escaped(target),
        protocol(c.version),
        entry.status,
        entry.bytes_out,
    );
    let _ = write!(
        out,
        "{}\" \"{}\" {} {:.3} [",
        Escaped(&dash(c.referer.as_ref())),
        Escaped(&dash(c.user_agent.as_ref())),
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
    out.push_str(&String::from_utf8_lossy(c.request_id.as_bytes()));
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

/// `2026-11-23T15:10:28.123Z`.
fn rfc3339(time: SystemTime) -> String {
    let (y, mo, d, h, mi, s, ms) = civil(time);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
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
        let t = UNIX_EPOCH + Duration::from_millis(1_795_446_628_123);
        assert_eq!(rfc3339(t), "2026-11-23T15:10:28.123Z");
        assert_eq!(clf_time(t), "23/Nov/2026:15:10:28 +0000");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn combined_escapes_quotes_and_control_bytes() {
        assert_eq!(Escaped("a\"b\\c\u{1}").to_string(), "a\\x22b\\x5Cc\\x01");
    }
}
