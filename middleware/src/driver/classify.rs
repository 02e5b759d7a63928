//! How responses and errors count on a span: [`StatusClass`] for response statuses,
//! [`ErrorRef`] and the built-in `error.type` classification for errors.
//!
//! The layers apply today's rules unless told otherwise: on a SERVER span a 5xx is an error (a
//! 4xx is the caller's problem), on a CLIENT span 4xx and 5xx are errors, and on gRPC calls a
//! non-OK `grpc-status` is, whatever the HTTP status. `with_status_classifier` on
//! [`ServerLayer`](crate::ServerLayer) and [`ClientLayer`](crate::ClientLayer) replaces those
//! rules; `with_error_classifier` names errors the built-in table does not know.

use std::any::Any;
use std::borrow::Cow;
use std::error::Error;
use std::fmt;
use std::io;
use std::sync::Arc;

use http::StatusCode;

use super::attrs;
use crate::genai::End;
use crate::limits::{MAX_MESSAGE_BYTES, MAX_NAME_BYTES, OTHER_LABEL, bounded};

// === impl StatusClass ===

/// How a response counts on its span: fine, or an error with an `error.type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusClass {
    /// Not an error: the span status stays unset.
    Ok,
    /// An error: the span status is `Error` and `error.type` is this value (at most
    /// [`MAX_NAME_BYTES`]). Keep it to a small set of values: it is a metric label elsewhere.
    Error(Cow<'static, str>),
}

/// A response's status as a status classifier sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResponseStatus {
    /// The HTTP status.
    pub http: StatusCode,
    /// Whether this is a gRPC call (`content-type: application/grpc...`).
    pub is_grpc: bool,
    /// For gRPC calls, the `grpc-status` from the response headers or trailers, when one came.
    pub grpc: Option<i32>,
}

impl ResponseStatus {
    /// The default rule of a SERVER span: a non-OK `grpc-status` on a gRPC call, else a 5xx.
    ///
    /// ```
    /// use llmtrace::layer::{ResponseStatus, ServerLayer, StatusClass};
    ///
    /// // A 503 from our own load shedding is not an error of this service.
    /// let layer = ServerLayer::new().with_status_classifier(|s: &ResponseStatus| match s.http.as_u16() {
    ///     503 => StatusClass::Ok,
    ///     _ => s.server_default(),
    /// });
    /// # let _ = layer;
    /// ```
    pub fn server_default(&self) -> StatusClass {
        self.default_rule(StatusCode::is_server_error)
    }

    /// The default rule of a CLIENT span: a non-OK `grpc-status` on a gRPC call, else a 4xx
    /// or 5xx.
    ///
    /// ```
    /// use llmtrace::layer::{ClientLayer, ResponseStatus, StatusClass};
    ///
    /// // A 429 is retried by the caller: not an error of this call.
    /// let layer = ClientLayer::new().with_status_classifier(|s: &ResponseStatus| {
    ///     if s.http == http::StatusCode::TOO_MANY_REQUESTS {
    ///         StatusClass::Ok
    ///     } else {
    ///         s.client_default()
    ///     }
    /// });
    /// # let _ = layer;
    /// ```
    pub fn client_default(&self) -> StatusClass {
        self.default_rule(|s| s.is_client_error() || s.is_server_error())
    }

    fn default_rule(&self, http_error: impl Fn(&StatusCode) -> bool) -> StatusClass {
        if self.is_grpc {
            return match self.grpc {
                Some(0) | None => StatusClass::Ok,
                Some(code) => StatusClass::Error(Cow::Borrowed(attrs::grpc_code_name(code))),
            };
        }
        if http_error(&self.http) {
            StatusClass::Error(Cow::Owned(attrs::status_code_str(self.http)))
        } else {
            StatusClass::Ok
        }
    }
}

/// A user's status rule, shared by the spans of a layer.
#[derive(Clone)]
pub(crate) struct StatusClassifier(Arc<dyn Fn(&ResponseStatus) -> StatusClass + Send + Sync>);

impl StatusClassifier {
    pub(crate) fn new<F>(f: F) -> Self
    where
        F: Fn(&ResponseStatus) -> StatusClass + Send + Sync + 'static,
    {
        Self(Arc::new(f))
    }

    pub(crate) fn classify(&self, status: &ResponseStatus) -> StatusClass {
        (self.0)(status)
    }
}

impl fmt::Debug for StatusClassifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StatusClassifier")
    }
}

// === impl ErrorRef ===

/// An error (from the inner service or the response body) as an error classifier sees it.
///
/// The layers accept any error type that is `Display + 'static`, so they cannot always see
/// it as a [`std::error::Error`]: [`as_error`](Self::as_error) does for boxed errors
/// (`Box<dyn Error + Send + Sync>`, tower's and axum's `BoxError`), [`std::io::Error`] and,
/// with the `axum` feature, `axum::Error`. [`downcast_ref`](Self::downcast_ref) reaches any
/// concrete type, the error's own or one in its `source()` chain.
pub struct ErrorRef<'a> {
    display: &'a dyn fmt::Display,
    any: &'a dyn Any,
    error: Option<&'a (dyn Error + 'static)>,
}

impl<'a> ErrorRef<'a> {
    /// A view of `error`.
    pub fn new<E: fmt::Display + 'static>(error: &'a E) -> Self {
        let any: &'a dyn Any = error;
        Self {
            display: error,
            any,
            error: as_std_error(any),
        }
    }

    /// The error as a [`std::error::Error`], when its type is one of those listed above.
    pub fn as_error(&self) -> Option<&'a (dyn Error + 'static)> {
        self.error
    }

    /// The error itself if it is a `T`, else the first `T` in its `source()` chain.
    ///
    /// ```
    /// use llmtrace::layer::ErrorRef;
    ///
    /// #[derive(Debug)]
    /// struct Quota;
    /// impl std::fmt::Display for Quota {
    ///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    ///         f.write_str("quota exceeded")
    ///     }
    /// }
    /// impl std::error::Error for Quota {}
    ///
    /// let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(Quota);
    /// assert!(ErrorRef::new(&boxed).downcast_ref::<Quota>().is_some());
    /// assert!(ErrorRef::new(&Quota).downcast_ref::<Quota>().is_some());
    /// ```
    pub fn downcast_ref<T: Error + 'static>(&self) -> Option<&'a T> {
        self.any
            .downcast_ref::<T>()
            .or_else(|| self.chain().find_map(|e| e.downcast_ref::<T>()))
    }

    /// The error and its sources, outermost first (empty when [`as_error`](Self::as_error)
    /// is `None`).
    pub fn chain(&self) -> impl Iterator<Item = &'a (dyn Error + 'static)> + use<'a> {
        std::iter::successors(self.error, |&e| e.source())
    }
}

impl fmt::Display for ErrorRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.display.fmt(f)
    }
}

impl fmt::Debug for ErrorRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ErrorRef")
            .field("message", &self.display.to_string())
            .field("is_error", &self.error.is_some())
            .finish()
    }
}

fn as_std_error(any: &dyn Any) -> Option<&(dyn Error + 'static)> {
    if let Some(e) = any.downcast_ref::<Box<dyn Error + Send + Sync>>() {
        return Some(&**e);
    }
    if let Some(e) = any.downcast_ref::<Box<dyn Error + Send>>() {
        return Some(&**e);
    }
    if let Some(e) = any.downcast_ref::<Box<dyn Error>>() {
        return Some(&**e);
    }
    if let Some(e) = any.downcast_ref::<io::Error>() {
        return Some(e);
    }
    #[cfg(feature = "axum")]
    if let Some(e) = any.downcast_ref::<axum::Error>() {
        return Some(e);
    }
    None
}

/// The built-in `error.type` of an error: the first error of its chain that the table below
/// knows, else `_OTHER`.
///
/// - [`std::io::Error`]: its kind in snake case (`connection_refused`, `connection_reset`,
///   `broken_pipe`, `unexpected_eof`, ...), `timeout` for `TimedOut`; a custom I/O error of
///   kind `Other` is looked into;
/// - timer errors (tokio's "deadline has elapsed", tower's "request timed out"): `timeout`.
///
/// hyper and tonic are not dependencies of this crate: their errors are classified by the
/// I/O error they carry, when they carry one.
pub fn known_error_type(error: &ErrorRef<'_>) -> Cow<'static, str> {
    if let Some(name) = error.chain().find_map(classify_one) {
        return Cow::Borrowed(name);
    }
    // Errors we cannot see as `std::error::Error`: an I/O error held directly, or a timer.
    if let Some(io) = error.any.downcast_ref::<io::Error>() {
        if let Some(name) = io_kind_name(io) {
            return Cow::Borrowed(name);
        }
    }
    if is_elapsed_message(&error.display.to_string()) {
        return Cow::Borrowed("timeout");
    }
    Cow::Borrowed(OTHER_LABEL)
}

fn classify_one(error: &(dyn Error + 'static)) -> Option<&'static str> {
    if let Some(io) = error.downcast_ref::<io::Error>() {
        return io_kind_name(io);
    }
    is_elapsed_message(&error.to_string()).then_some("timeout")
}

/// tokio's `Elapsed` and tower's `Elapsed`, which we know only by their messages.
fn is_elapsed_message(message: &str) -> bool {
    matches!(message, "deadline has elapsed" | "request timed out")
}

fn io_kind_name(error: &io::Error) -> Option<&'static str> {
    use io::ErrorKind::*;
    Some(match error.kind() {
        NotFound => "not_found",
        PermissionDenied => "permission_denied",
        ConnectionRefused => "connection_refused",
        ConnectionReset => "connection_reset",
        ConnectionAborted => "connection_aborted",
        NotConnected => "not_connected",
        AddrInUse => "addr_in_use",
        AddrNotAvailable => "addr_not_available",
        BrokenPipe => "broken_pipe",
        AlreadyExists => "already_exists",
        WouldBlock => "would_block",
        InvalidInput => "invalid_input",
        InvalidData => "invalid_data",
        TimedOut => "timeout",
        WriteZero => "write_zero",
        Interrupted => "interrupted",
        Unsupported => "unsupported",
        UnexpectedEof => "unexpected_eof",
        OutOfMemory => "out_of_memory",
        HostUnreachable => "host_unreachable",
        NetworkUnreachable => "network_unreachable",
        NetworkDown => "network_down",
        // A custom error: what it wraps may say more.
        _ => return error.get_ref().and_then(|inner| classify_one(inner)),
    })
}

/// A user's error rule, shared by the spans of a layer.
type ErrorFn = dyn Fn(&ErrorRef<'_>) -> Option<Cow<'static, str>> + Send + Sync;

/// Turns errors into [`End::Failed`]: the user's rule first, then [`known_error_type`].
#[derive(Clone, Default)]
pub(crate) struct ErrorClassifier(Option<Arc<ErrorFn>>);

impl ErrorClassifier {
    pub(crate) fn new<F>(f: F) -> Self
    where
        F: Fn(&ErrorRef<'_>) -> Option<Cow<'static, str>> + Send + Sync + 'static,
    {
        Self(Some(Arc::new(f)))
    }

    /// The `error.type` of `error`, bounded.
    pub(crate) fn error_type(&self, error: &ErrorRef<'_>) -> Cow<'static, str> {
        let name = self
            .0
            .as_ref()
            .and_then(|f| f(error))
            .unwrap_or_else(|| known_error_type(error));
        match name {
            Cow::Owned(s) if s.len() > MAX_NAME_BYTES => {
                Cow::Owned(bounded(&s, MAX_NAME_BYTES).into_owned())
            }
            name => name,
        }
    }

    /// How a span that failed with `error` ends.
    pub(crate) fn end(&self, error: &ErrorRef<'_>) -> End {
        End::Failed {
            error_type: self.error_type(error),
            message: bounded(&error.to_string(), MAX_MESSAGE_BYTES).into_owned(),
        }
    }
}

impl fmt::Debug for ErrorClassifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "ErrorClassifier(custom)"
        } else {
            "ErrorClassifier(default)"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name<E: fmt::Display + 'static>(e: &E) -> Cow<'static, str> {
        ErrorClassifier::default().error_type(&ErrorRef::new(e))
    }

    #[test]
    fn io_errors_are_named_by_kind() {
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(name(&reset), "connection_reset");
        assert_eq!(name(&io::Error::from(io::ErrorKind::TimedOut)), "timeout");
        let boxed: Box<dyn Error + Send + Sync> = Box::new(reset);
        assert_eq!(name(&boxed), "connection_reset");
    }

    #[test]
    fn wrapped_io_errors_are_found_in_the_chain() {
        #[derive(Debug)]
        struct Wrapper(io::Error);
        impl fmt::Display for Wrapper {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("client error")
            }
        }
        impl Error for Wrapper {
            fn source(&self) -> Option<&(dyn Error + 'static)> {
                Some(&self.0)
            }
        }
        let boxed: Box<dyn Error + Send + Sync> =
            Box::new(Wrapper(io::ErrorKind::BrokenPipe.into()));
        assert_eq!(name(&boxed), "broken_pipe");
        // Not a std error to us (no bound says so), and no known type: `_OTHER`.
        assert_eq!(name(&Wrapper(io::ErrorKind::BrokenPipe.into())), "_OTHER");
        let custom = io::Error::other(Wrapper(io::ErrorKind::NotConnected.into()));
        assert_eq!(name(&custom), "not_connected");
    }

    #[test]
    fn timers_and_unknown_errors() {
        assert_eq!(name(&"deadline has elapsed"), "timeout");
        assert_eq!(name(&"something else"), "_OTHER");
        let boxed: Box<dyn Error + Send + Sync> = "request timed out".into();
        assert_eq!(name(&boxed), "timeout");
    }

    #[test]
    fn user_rules_come_first_and_are_bounded() {
        let classifier = ErrorClassifier::new(|e| {
            e.to_string()
                .starts_with("quota")
                .then(|| Cow::Owned("q".repeat(1000)))
        });
        let long = classifier.error_type(&ErrorRef::new(&"quota gone"));
        assert!(long.len() <= MAX_NAME_BYTES);
        assert_eq!(classifier.error_type(&ErrorRef::new(&"other")), "_OTHER");
    }

    #[test]
    fn default_status_rules() {
        let status = |http: u16, is_grpc, grpc| ResponseStatus {
            http: StatusCode::from_u16(http).unwrap(),
            is_grpc,
            grpc,
        };
        assert_eq!(status(404, false, None).server_default(), StatusClass::Ok);
        assert_eq!(
            status(404, false, None).client_default(),
            StatusClass::Error("404".into())
        );
        assert_eq!(
            status(500, false, None).server_default(),
            StatusClass::Error("500".into())
        );
        assert_eq!(status(200, true, Some(0)).client_default(), StatusClass::Ok);
        assert_eq!(
            status(200, true, Some(14)).server_default(),
            StatusClass::Error("UNAVAILABLE".into())
        );
    }
}
