//! What the trace list asks the store: filters, a sort key, a limit; parsed from a URL query
//! string with every value bounded.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::trace::Summary;

/// The most traces one query returns.
pub const MAX_LIMIT: usize = 1000;
/// Traces a query returns when it names no limit.
pub const DEFAULT_LIMIT: usize = 100;
/// Filter texts are cut to this many bytes.
pub const MAX_FILTER_BYTES: usize = 256;
/// Query-string parameters read (the rest are ignored).
const MAX_PARAMS: usize = 32;

/// The column a trace list is sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortKey {
    /// The trace's start (the default, newest first).
    #[default]
    Start,
    /// Its duration.
    Duration,
    /// The first GenAI span's time to first chunk.
    Ttft,
    /// Input plus output tokens.
    Tokens,
    /// `gen_ai.usage.cost`.
    Cost,
}

impl SortKey {
    /// Every key, in column order.
    pub const ALL: [SortKey; 5] = [
        SortKey::Start,
        SortKey::Duration,
        SortKey::Ttft,
        SortKey::Tokens,
        SortKey::Cost,
    ];

    /// The key's name in a query string (`sort=duration`).
    pub fn name(self) -> &'static str {
        match self {
            SortKey::Start => "start",
            SortKey::Duration => "duration",
            SortKey::Ttft => "ttft",
            SortKey::Tokens => "tokens",
            SortKey::Cost => "cost",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == text)
    }

    /// The value sorted by; `None` sorts last in either order.
    fn value(self, summary: &Summary) -> Option<f64> {
        match self {
            SortKey::Start => Some(micros(summary.start) as f64),
            SortKey::Duration => Some(summary.duration().as_secs_f64()),
            SortKey::Ttft => summary.ttft,
            SortKey::Tokens => summary.tokens.map(|t| t as f64),
            SortKey::Cost => summary.cost,
        }
    }
}

/// Which traces to list, in which order, how many.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// Only traces with a failed span.
    pub errors_only: bool,
    /// Only traces at least this long.
    pub min_duration: Option<Duration>,
    /// Only traces at most this long.
    pub max_duration: Option<Duration>,
    /// Only traces whose model contains this text (ignoring case).
    pub model: Option<String>,
    /// Only traces whose route contains this text.
    pub route: Option<String>,
    /// Only traces of this user (`user.id`, `enduser.id`).
    pub user: Option<String>,
    /// Only traces of this session (`session.id`, `gen_ai.conversation.id`).
    pub session: Option<String>,
    /// Only traces whose root span is of this service (Jaeger's `service`).
    pub service: Option<String>,
    /// Only traces whose root span has this name (Jaeger's `operation`).
    pub operation: Option<String>,
    /// Only traces that started at or after this time.
    pub since: Option<SystemTime>,
    /// Only traces that started at or before this time.
    pub until: Option<SystemTime>,
    /// The `lookback` that set [`since`](Query::since) (`15m`), kept for links.
    pub lookback: Option<String>,
    /// The sort column.
    pub sort: SortKey,
    /// Smallest first (default: largest, i.e. newest, first).
    pub ascending: bool,
    /// At most this many traces (at most [`MAX_LIMIT`]).
    pub limit: usize,
}

impl Default for Query {
    fn default() -> Self {
        Self {
            errors_only: false,
            min_duration: None,
            max_duration: None,
            model: None,
            route: None,
            user: None,
            session: None,
            service: None,
            operation: None,
            since: None,
            until: None,
            lookback: None,
            sort: SortKey::Start,
            ascending: false,
            limit: DEFAULT_LIMIT,
        }
    }
}

impl Query {
    /// Reads a URL query string (`error=1&min_duration=500ms&model=gpt&sort=ttft&order=asc`).
    ///
    /// Names: `error` (`1`/`true`/`on`), `min_duration` and `max_duration` (also Jaeger's
    /// `minDuration`/`maxDuration`; `250ms`, `1.5s`, `2m`, `100us`, or bare microseconds),
    /// `model`, `route`, `user`, `session`, Jaeger's `service` and `operation` (the root
    /// span's service and name), `start` and `end`
    /// (Unix microseconds, as Jaeger's), `lookback` (`15m`, `1h`, ...), `sort` (`start`,
    /// `duration`, `ttft`, `tokens`, `cost`), `order` (`asc`/`desc`), `limit`. Unknown names
    /// and unreadable values are ignored; texts are cut to [`MAX_FILTER_BYTES`], the limit
    /// to [`MAX_LIMIT`].
    pub fn parse(query: &str, now: SystemTime) -> Self {
        let mut q = Query::default();
        for (name, value) in params(query) {
            q.set(&name, value, now);
        }
        q
    }

    fn set(&mut self, name: &str, value: String, now: SystemTime) {
        let text = || Some(value.clone()).filter(|v| !v.is_empty());
        match name {
            "error" | "errors" => self.errors_only = matches!(value.as_str(), "1" | "true" | "on"),
            "min_duration" | "minDuration" => self.min_duration = parse_duration(&value),
            "max_duration" | "maxDuration" => self.max_duration = parse_duration(&value),
            "model" => self.model = text(),
            "route" => self.route = text(),
            "service" => self.service = text(),
            "operation" => self.operation = text(),
            "user" => self.user = text(),
            "session" => self.session = text(),
            "start" => self.since = value.parse().ok().map(from_micros),
            "end" => self.until = value.parse().ok().map(from_micros),
            "lookback" => {
                self.since = parse_duration(&value).and_then(|d| now.checked_sub(d));
                self.lookback = self.since.map(|_| value);
            }
            "sort" => self.sort = SortKey::parse(&value).unwrap_or_default(),
            "order" => self.ascending = value == "asc",
            "limit" => {
                if let Ok(limit) = value.parse::<usize>() {
                    self.limit = limit.clamp(1, MAX_LIMIT);
                }
            }
            _ => {}
        }
    }

    /// True when `summary` passes every filter.
    pub fn matches(&self, summary: &Summary) -> bool {
        let contains = |have: &Option<String>, want: &Option<String>| match want {
            None => true,
            Some(want) => have
                .as_deref()
                .is_some_and(|h| h.to_ascii_lowercase().contains(&want.to_ascii_lowercase())),
        };
        let equals = |have: &Option<String>, want: &Option<String>| {
            want.is_none() || have.as_deref() == want.as_deref()
        };
        let duration = summary.duration();
        (!self.errors_only || summary.error)
            && self.min_duration.is_none_or(|min| duration >= min)
            && self.max_duration.is_none_or(|max| duration <= max)
            && self.since.is_none_or(|t| summary.start >= t)
            && self.until.is_none_or(|t| summary.start <= t)
            && contains(&summary.model, &self.model)
            && contains(&summary.route, &self.route)
            && equals(&summary.user, &self.user)
            && equals(&summary.session, &self.session)
            && self
                .service
                .as_deref()
                .is_none_or(|s| *summary.service == *s)
            && self.operation.as_deref().is_none_or(|o| summary.name == o)
    }

    /// Sorts `summaries` by the query's key and order (missing values last) and keeps the
    /// first [`limit`](Query::limit).
    pub fn sort_and_limit(&self, summaries: &mut Vec<&Summary>) {
        let key = self.sort;
        let limit = self.limit.min(MAX_LIMIT);
        let order = |a: &&Summary, b: &&Summary| {
            let by_key = match (key.value(a), key.value(b)) {
                (Some(x), Some(y)) if self.ascending => x.total_cmp(&y),
                (Some(x), Some(y)) => y.total_cmp(&x),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            };
            by_key.then_with(|| b.start.cmp(&a.start))
        };
        if summaries.len() > limit {
            summaries.select_nth_unstable_by(limit, order);
            summaries.truncate(limit);
        }
        summaries.sort_unstable_by(order);
    }

    /// This query as a query string, with `sort`/`order` replaced (for column links).
    pub fn to_query_string(&self, sort: SortKey, ascending: bool) -> String {
        let mut out = Vec::new();
        let mut push = |name: &str, value: &str| {
            out.push(format!("{name}={}", encode(value)));
        };
        if self.errors_only {
            push("error", "1");
        }
        if let Some(d) = self.min_duration {
            push("min_duration", &format!("{}us", d.as_micros()));
        }
        if let Some(d) = self.max_duration {
            push("max_duration", &format!("{}us", d.as_micros()));
        }
        for (name, value) in [
            ("model", &self.model),
            ("route", &self.route),
            ("user", &self.user),
            ("session", &self.session),
            ("service", &self.service),
            ("operation", &self.operation),
        ] {
            if let Some(value) = value {
                push(name, value);
            }
        }
        match (&self.lookback, self.since) {
            (Some(lookback), _) => push("lookback", lookback),
            (None, Some(t)) => push("start", &micros(t).to_string()),
            (None, None) => {}
        }
        if let Some(t) = self.until {
            push("end", &micros(t).to_string());
        }
        push("sort", sort.name());
        push("order", if ascending { "asc" } else { "desc" });
        if self.limit != DEFAULT_LIMIT {
            push("limit", &self.limit.to_string());
        }
        out.join("&")
    }
}

/// The decoded `name=value` pairs of a query string, at most [`MAX_PARAMS`], values cut to
/// [`MAX_FILTER_BYTES`].
pub fn params(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .take(MAX_PARAMS)
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(name), cut(decode(value)))
        })
}

fn decode(text: &str) -> String {
    let text = text.replace('+', " ");
    percent_encoding::percent_decode_str(&text)
        .decode_utf8_lossy()
        .into_owned()
}

fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn cut(mut text: String) -> String {
    if text.len() > MAX_FILTER_BYTES {
        let mut end = MAX_FILTER_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// `250ms`, `1.5s`, `2m`, `1h`, `100us`/`100µs`, or bare microseconds (Jaeger's unit).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit.trim() {
        "" | "us" | "µs" => number / 1e6,
        "ms" => number / 1e3,
        "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(seconds).ok()
}

/// Microseconds since the Unix epoch.
pub fn micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

fn from_micros(us: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(us)
}
