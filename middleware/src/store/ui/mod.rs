//! The viewer: server-rendered HTML pages and the JSON API over a [`TraceStore`], answered by
//! [`handle`] for any HTTP server to serve (the gateway's admin listener does).
//!
//! | path | answer |
//! |---|---|
//! | `/` | `303` to `/ui` |
//! | `/ui` | the trace list; filters and sort in the query string ([`Query::parse`]) |
//! | `/ui/traces/{trace_id}` | one trace: the waterfall of its spans, each LLM exchange's own timeline (first byte, first token, chunk ticks, stalls, gateway vs provider time), the spans' attributes and events |
//! | `/ui/map` | the dependency map: services and upstreams, calls with rate, error share, p95 ([`analytics::dependencies`]) |
//! | `/ui/overview` | per model over time: TTFT and duration percentiles, tokens/s, error rate, cost ([`analytics::overview`]) |
//! | `/ui/assets/viewer.css`, `/ui/assets/viewer.js` | the embedded stylesheet and script |
//! | `/api/traces` | the listed traces, whole, as Jaeger's query API answers ([`super::jaeger`]) |
//! | `/api/traces/{trace_id}` | one trace, the same way |
//! | `/api/services` | the services seen, as Jaeger's `/api/services` |
//! | `/api/dependencies` | the map's edges: Jaeger's `/api/dependencies` plus rate, error share, p50, p95 ([`analytics::Dependencies::to_json`]) |
//! | `/api/overview` | the overview's series ([`analytics::Overview::to_json`]) |
//!
//! The map, the overview and their JSON take `lookback` (`15m`, `1h`, or milliseconds as
//! Jaeger's) and `endTs` (milliseconds since the epoch) ([`analytics::Range::parse`]).
//!
//! Every value from a span is HTML-escaped (attributes are what clients sent), and the pages
//! carry a `Content-Security-Policy` that runs no inline script: a value that escaped the
//! escaping still could not run. Nothing is loaded from elsewhere: the viewer works offline.

mod html;
mod map;
mod overview;
mod timeline;

use std::time::SystemTime;

use http::{Response, StatusCode, header};
use opentelemetry::trace::TraceId;

use super::analytics::{self, Range};
use super::query::params;
use super::{Query, TraceStore, jaeger};

/// The stylesheet, embedded.
const CSS: &str = include_str!("viewer.css");
/// The script (copy button, auto-refresh), embedded.
const JS: &str = include_str!("viewer.js");

/// Scripts only from the same origin, no inline script; inline styles for the bars' positions.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data:; connect-src 'self'; form-action 'self'; \
                   base-uri 'none'; frame-ancestors 'none'";

/// The viewer's answer to a GET of `path` with `query` (the URL's query string), or `None`
/// when the path is not the viewer's.
pub fn handle(store: &TraceStore, path: &str, query: Option<&str>) -> Option<Response<String>> {
    let query = query.unwrap_or("");
    let now = SystemTime::now();
    let answer = match path {
        "/" => redirect("/ui"),
        "/ui" | "/ui/" => html_page(StatusCode::OK, html::list_page(store, query, now)),
        "/ui/map" => html_page(StatusCode::OK, map::page(store, query, now)),
        "/ui/overview" => html_page(StatusCode::OK, overview::page(store, query, now)),
        "/api/dependencies" => {
            let range = Range::parse(query, now);
            let deps = analytics::dependencies(&range.traces(store), &range);
            json(StatusCode::OK, deps.to_json())
        }
        "/api/overview" => {
            let range = Range::parse(query, now);
            let overview = analytics::overview(&range.traces(store), &range);
            json(StatusCode::OK, overview.to_json())
        }
        "/ui/assets/viewer.css" => asset("text/css; charset=utf-8", CSS),
        "/ui/assets/viewer.js" => asset("text/javascript; charset=utf-8", JS),
        "/api/traces" => {
            let mut parsed = Query::parse(query, now);
            // Without a `limit`, 20 traces, as Jaeger's default.
            if !params(query).any(|(name, _)| name == "limit") {
                parsed.limit = JAEGER_DEFAULT_LIMIT;
            }
            let traces = store.traces(&parsed);
            json(StatusCode::OK, jaeger::traces_json(&traces, parsed.limit))
        }
        "/api/services" => {
            let mut services: Vec<String> = store
                .list(&Query {
                    limit: super::MAX_LIMIT,
                    ..Query::default()
                })
                .into_iter()
                .map(|s| s.service.to_string())
                .collect();
            services.sort();
            services.dedup();
            let total = services.len();
            json(
                StatusCode::OK,
                serde_json::json!({ "data": services, "total": total, "limit": 0, "offset": 0, "errors": null })
                    .to_string(),
            )
        }
        _ => {
            if let Some(id) = path.strip_prefix("/ui/traces/") {
                match parse_trace_id(id).and_then(|id| store.get(id)) {
                    Some(trace) => {
                        html_page(StatusCode::OK, html::trace_page(&trace, store.page_links()))
                    }
                    None => html_page(
                        StatusCode::NOT_FOUND,
                        html::not_found_page(id, store.page_links()),
                    ),
                }
            } else if let Some(id) = path.strip_prefix("/api/traces/") {
                match parse_trace_id(id).and_then(|id| store.get(id)) {
                    Some(trace) => json(StatusCode::OK, jaeger::trace_response(&trace)),
                    None => json(StatusCode::NOT_FOUND, jaeger::not_found(&html::cut(id, 64))),
                }
            } else {
                return None;
            }
        }
    };
    Some(answer)
}

/// The viewer as an axum router (features `store` and `axum`), to merge into an app:
/// `/ui`, `/ui/…`, `/api/traces`, `/api/traces/{id}`, `/api/services`, `/api/dependencies`
/// and `/api/overview` answered by
/// [`handle`] (`/` is left to the app).
///
/// ```
/// use llmtrace::store::{StoreConfig, TraceStore, ui};
///
/// let store = TraceStore::new(StoreConfig::default());
/// // Feed it: `SdkTracerProvider::builder().with_span_processor(store.processor())`.
/// let app: axum::Router = axum::Router::new()
///     .route("/", axum::routing::get(|| async { "my service" }))
///     .merge(ui::router(store));
/// ```
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub fn router(store: TraceStore) -> axum::Router {
    use axum::routing::get;
    async fn serve(
        axum::extract::State(store): axum::extract::State<TraceStore>,
        uri: http::Uri,
    ) -> Response<String> {
        handle(&store, uri.path(), uri.query()).unwrap_or_else(|| {
            let mut missing = Response::new("not found\n".to_owned());
            *missing.status_mut() = StatusCode::NOT_FOUND;
            missing
        })
    }
    axum::Router::new()
        .route("/ui", get(serve))
        .route("/ui/{*rest}", get(serve))
        .route("/api/traces", get(serve))
        .route("/api/traces/{id}", get(serve))
        .route("/api/services", get(serve))
        .route("/api/dependencies", get(serve))
        .route("/api/overview", get(serve))
        .with_state(store)
}

/// A page of the serving application in the viewer's frame: its stylesheet, script and
/// header (with the store's numbers and the links), under the viewer's
/// `Content-Security-Policy`. `body` is HTML the caller has escaped.
///
/// ```
/// use llmtrace::store::{StoreConfig, TraceStore, ui};
///
/// let store = TraceStore::new(StoreConfig::default());
/// store.set_page_links(vec![("objectives".into(), "/ui/slo".into())]);
/// let page = ui::page(&store, "objectives", "<h1>Objectives</h1>");
/// assert!(page.body().contains("href=\"/ui/slo\""));
/// ```
pub fn page(store: &TraceStore, title: &str, body: &str) -> Response<String> {
    let mut out = String::with_capacity(2048 + body.len());
    html::head(&mut out, title, false);
    html::top_bar(&mut out, store);
    out.push_str(body);
    html::foot(&mut out);
    html_page(StatusCode::OK, out)
}

/// `text` with `& < > " '` escaped: safe in HTML element content and quoted attributes. The
/// escaping every viewer page uses, for applications that add pages of their own ([`page`]).
///
/// ```
/// assert_eq!(llmtrace::store::ui::escape("<b title='x'>&</b>"), "&lt;b title=&#39;x&#39;&gt;&amp;&lt;/b&gt;");
/// ```
pub fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    html::esc(text)
}

/// Traces `/api/traces` returns when it names no `limit`, as Jaeger's.
const JAEGER_DEFAULT_LIMIT: usize = 20;

/// A trace id: 32 hex digits, not all zero.
pub fn parse_trace_id(text: &str) -> Option<TraceId> {
    if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    TraceId::from_hex(text)
        .ok()
        .filter(|id| *id != TraceId::INVALID)
}

fn redirect(to: &str) -> Response<String> {
    Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(header::LOCATION, to)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(format!("see {to}\n"))
        .unwrap_or_default()
}

fn html_page(status: StatusCode, body: String) -> Response<String> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .header(header::CONTENT_SECURITY_POLICY, CSP)
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::REFERRER_POLICY, "no-referrer")
        .header(header::CACHE_CONTROL, "no-store")
        .body(body)
        .unwrap_or_default()
}

fn asset(content_type: &str, body: &str) -> Response<String> {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::CACHE_CONTROL, "max-age=300")
        .body(body.to_owned())
        .unwrap_or_default()
}

fn json(status: StatusCode, body: String) -> Response<String> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::CACHE_CONTROL, "no-store")
        .body(body)
        .unwrap_or_default()
}
