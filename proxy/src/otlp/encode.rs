//! `SpanData` straight into the protobuf bytes of an OTLP `ExportTraceServiceRequest`.
//!
//! The SDK's OTLP exporter first builds a parallel tree of `opentelemetry_proto` structs,
//! cloning every name, key and string value, and prost then walks that tree twice (lengths,
//! then bytes). Here each message is written once, in place: a nested message's length
//! prefix is reserved as one byte before its content and widened afterwards when the content
//! turned out longer than 127 bytes (one `copy_within` per large message, not per field).
//!
//! Field numbers are those of `opentelemetry/proto/{collector/trace,trace,common,resource}/v1`;
//! proto3 defaults (empty strings and bytes, zeros, unset status) are left out, as prost
//! leaves them out. The output decodes to exactly what the SDK's exporter sends (checked
//! against `opentelemetry-proto` in this module's tests).

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{SpanId, SpanKind, Status, TraceState};
use opentelemetry::{Array, InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SpanData;

/// Wire types.
const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;
const FIXED32: u32 = 5;

/// `SpanFlags`: the flags word says whether the parent is remote.
const CONTEXT_HAS_IS_REMOTE: u32 = 0x100;
const CONTEXT_IS_REMOTE: u32 = 0x200;

/// Appends the `ExportTraceServiceRequest` for `spans` of `resource` to `out`: one
/// `ResourceSpans`, one `ScopeSpans` per instrumentation scope in the order scopes first
/// appear, each scope's spans in batch order.
pub fn export_request(spans: &[SpanData], resource: &Resource, out: &mut Vec<u8>) {
    // Scopes in first-seen order; a batch has one or two, so a linear search beats hashing.
    // Each span's scope is compared once, its index kept for the grouping below.
    let mut scopes: Vec<&InstrumentationScope> = Vec::new();
    let mut scope_of: Vec<usize> = Vec::with_capacity(spans.len());
    for span in spans {
        let scope = &span.instrumentation_scope;
        let index = match scopes.iter().position(|known| same_scope(known, scope)) {
            Some(index) => index,
            None => {
                scopes.push(scope);
                scopes.len() - 1
            }
        };
        scope_of.push(index);
    }
    // The length prefixes of the two outer messages, guessed at about a kilobyte a span.
    let width = varint_len(spans.len() as u64 * 1024);
    // ExportTraceServiceRequest.resource_spans = 1
    nested_sized(out, 1, width, |out| {
        // ResourceSpans.resource = 1
        nested(out, 1, |out| {
            for (key, value) in resource.iter() {
                key_value(out, 1, key.as_str(), value);
            }
        });
        for (index, scope) in scopes.iter().enumerate() {
            let members = spans
                .iter()
                .zip(&scope_of)
                .filter(|(_, of)| **of == index)
                .map(|(span, _)| span);
            // ResourceSpans.scope_spans = 2
            nested_sized(out, 2, width, |out| scope_spans(out, scope, members));
        }
        if let Some(url) = resource.schema_url() {
            string(out, 3, url);
        }
    });
}

/// `a == b`. Every span of a tracer carries a clone of the tracer's scope, whose texts
/// are the same `'static` strings: when the texts are the very same (address and length)
/// and neither scope has attributes, the scopes are equal without comparing a byte. The
/// full comparison, for anything else, sorts copies of both attribute lists; it cost 170
/// instructions a span.
pub(super) fn same_scope(a: &InstrumentationScope, b: &InstrumentationScope) -> bool {
    let same_text = |a: Option<&str>, b: Option<&str>| match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => std::ptr::eq(a, b),
        _ => false,
    };
    let shared = same_text(Some(a.name()), Some(b.name()))
        && same_text(a.version(), b.version())
        && same_text(a.schema_url(), b.schema_url())
        && a.attributes().next().is_none()
        && b.attributes().next().is_none();
    shared || a == b
}

fn scope_spans<'a>(
    out: &mut Vec<u8>,
    scope: &InstrumentationScope,
    spans: impl Iterator<Item = &'a SpanData>,
) {
    // ScopeSpans.scope = 1
    nested(out, 1, |out| {
        string(out, 1, scope.name());
        if let Some(version) = scope.version() {
            string(out, 2, version);
        }
        for kv in scope.attributes() {
            key_value(out, 3, kv.key.as_str(), &kv.value);
        }
    });
    for span in spans {
        // ScopeSpans.spans = 2
        // A span runs to hundreds of bytes or a few kilobytes: a two-byte length.
        nested_sized(out, 2, 2, |out| self::span(out, span));
    }
    if let Some(url) = scope.schema_url() {
        string(out, 3, url);
    }
}

/// Span fields 1 to 8: ids, trace state, name, kind and times.
fn span_head(out: &mut Vec<u8>, span: &SpanData) {
    let cx = &span.span_context;
    // The ids are of fixed size: trace id (1), span id (2) and parent span id (4) with their
    // tags and lengths are gathered into one array and appended with copies of constant
    // sizes, rather than as three fields of a slice's length each.
    let mut ids = [0; 38];
    ids[..2].copy_from_slice(&[(1 << 3) | LEN as u8, 16]);
    ids[2..18].copy_from_slice(&cx.trace_id().to_bytes());
    ids[18..20].copy_from_slice(&[(2 << 3) | LEN as u8, 8]);
    ids[20..28].copy_from_slice(&cx.span_id().to_bytes());
    ids[28..30].copy_from_slice(&[(4 << 3) | LEN as u8, 8]);
    ids[30..].copy_from_slice(&span.parent_span_id.to_bytes());
    let parent = span.parent_span_id != SpanId::INVALID;
    if *cx.trace_state() == TraceState::NONE {
        if parent {
            out.extend_from_slice(&ids);
        } else {
            out.extend_from_slice(&ids[..28]);
        }
    } else {
        out.extend_from_slice(&ids[..28]);
        string(out, 3, &cx.trace_state().header());
        if parent {
            out.extend_from_slice(&ids[28..]);
        }
    }
    string(out, 5, &span.name);
    let (start, end) = (nanos(span.start_time), nanos(span.end_time));
    if start != 0 && end != 0 {
        // kind (6, never 0), start (7) and end (8) as one array too.
        let mut times = [0; 20];
        times[..2].copy_from_slice(&[(6 << 3) | VARINT as u8, kind(&span.span_kind) as u8]);
        times[2] = (7 << 3) | FIXED64 as u8;
        times[3..11].copy_from_slice(&start.to_le_bytes());
        times[11] = (8 << 3) | FIXED64 as u8;
        times[12..].copy_from_slice(&end.to_le_bytes());
        out.extend_from_slice(&times);
    } else {
        uint(out, 6, kind(&span.span_kind));
        fixed64(out, 7, start);
        fixed64(out, 8, end);
    }
}

fn span(out: &mut Vec<u8>, span: &SpanData) {
    let cx = &span.span_context;
    span_head(out, span);
    attributes(out, 9, &span.attributes);
    uint(out, 10, u64::from(span.dropped_attributes_count));
    for event in span.events.iter() {
        // Span.events = 11
        nested(out, 11, |out| {
            fixed64(out, 1, nanos(event.timestamp));
            string(out, 2, &event.name);
            attributes(out, 3, &event.attributes);
            uint(out, 4, u64::from(event.dropped_attributes_count));
        });
    }
    uint(out, 12, u64::from(span.events.dropped_count));
    for link in span.links.iter() {
        // Span.links = 13
        nested(out, 13, |out| {
            let cx = &link.span_context;
            bytes(out, 1, &cx.trace_id().to_bytes());
            bytes(out, 2, &cx.span_id().to_bytes());
            if *cx.trace_state() != TraceState::NONE {
                string(out, 3, &cx.trace_state().header());
            }
            attributes(out, 4, &link.attributes);
            uint(out, 5, u64::from(link.dropped_attributes_count));
            fixed32(out, 6, flags(cx.is_remote(), cx.trace_flags().to_u8()));
        });
    }
    uint(out, 14, u64::from(span.links.dropped_count));
    // Span.status = 15 (prost writes it always: the SDK's exporter sets `Some`)
    nested(out, 15, |out| {
        let (code, message) = match &span.status {
            Status::Unset => (0, ""),
            Status::Ok => (1, ""),
            Status::Error { description } => (2, description.as_ref()),
        };
        string(out, 2, message);
        uint(out, 3, code);
    });
    fixed32(
        out,
        16,
        flags(span.parent_span_is_remote, cx.trace_flags().to_u8()),
    );
}

fn flags(remote: bool, trace_flags: u8) -> u32 {
    let mut flags = u32::from(trace_flags) | CONTEXT_HAS_IS_REMOTE;
    if remote {
        flags |= CONTEXT_IS_REMOTE;
    }
    flags
}

fn kind(kind: &SpanKind) -> u64 {
    match kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

fn nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn attributes(out: &mut Vec<u8>, field: u32, attributes: &[KeyValue]) {
    for kv in attributes {
        key_value(out, field, kv.key.as_str(), &kv.value);
    }
}

/// A `KeyValue` message as field `field`. Scalar values under 128 bytes in all (nearly all
/// attributes) take [`short_scalar`], inlined into the caller's loop; the rest,
/// [`long_key_value`], is a call of its own. Together in one function, the short path paid
/// the registers and the stack frame the long one needs, at every attribute (a sixth of
/// its instructions, callgrind).
#[inline(always)]
fn key_value(out: &mut Vec<u8>, field: u32, key: &str, value: &Value) {
    if !short_scalar(out, field, key, value) {
        long_key_value(out, field, key, value);
    }
}

/// [`key_value`] for what [`short_scalar`] leaves: other scalars (long keys or strings, an
/// empty key) are sized up front and written after one reservation as four pieces: the heads
/// before the key and before the value's text, each built in a [`Block`] on the stack, and
/// the key and the string value copied once each. Arrays take the general path.
#[inline(never)]
fn long_key_value(out: &mut Vec<u8>, field: u32, key: &str, value: &Value) {
    // The AnyValue's one member: its tag, then a varint, eight bytes or a string's length
    // (whose text follows the block).
    let (scalar_len, text): (usize, &[u8]) = match value {
        Value::Bool(_) => (2, &[]),
        Value::I64(v) => (1 + varint_len(*v as u64), &[]),
        Value::F64(_) => (9, &[]),
        Value::String(v) => {
            let v = v.as_str().as_bytes();
            (1 + varint_len(v.len() as u64), v)
        }
        _ => {
            return nested(out, field, |out| {
                string(out, 1, key);
                // KeyValue.value = 2 (an AnyValue, always present)
                nested(out, 2, |out| any_value(out, value));
            });
        }
    };
    let any_len = scalar_len + text.len();
    let key_len = if key.is_empty() {
        0
    } else {
        1 + varint_len(key.len() as u64) + key.len()
    };
    let kv_len = key_len + 1 + varint_len(any_len as u64) + any_len;
    // KeyValue: tag and length, then key (1) with tag and length; the key's text follows.
    let mut head = Block::new();
    head.varint(u64::from((field << 3) | LEN));
    head.varint(kv_len as u64);
    if !key.is_empty() {
        head.byte(1 << 3 | LEN as u8);
        head.varint(key.len() as u64);
    }
    // KeyValue.value = 2 with tag and length, then the AnyValue's member.
    let mut mid = Block::new();
    mid.byte(2 << 3 | LEN as u8);
    mid.varint(any_len as u64);
    match value {
        Value::Bool(v) => {
            mid.byte(2 << 3 | VARINT as u8);
            mid.byte(u8::from(*v));
        }
        Value::I64(v) => {
            mid.byte(3 << 3 | VARINT as u8);
            mid.varint(*v as u64);
        }
        Value::F64(v) => {
            mid.byte(4 << 3 | FIXED64 as u8);
            mid.eight(v.to_le_bytes());
        }
        _ => {
            mid.byte(1 << 3 | LEN as u8);
            mid.varint(text.len() as u64);
        }
    }
    // Room for both blocks' whole arrays: each is appended whole, then cut to its length.
    out.reserve(head.len + key.len() + mid.len + text.len() + Block::SIZE);
    head.append_to(out);
    out.extend_from_slice(key.as_bytes());
    mid.append_to(out);
    out.extend_from_slice(text);
}

/// The common case of a scalar attribute whose whole `KeyValue` is under 128 bytes: every
/// length fits one byte, so the heads are fixed words (the `int_value`'s varint excepted)
/// written without sizing varints or building them byte by byte. `false` (nothing written)
/// otherwise.
#[inline(always)]
fn short_scalar(out: &mut Vec<u8>, field: u32, key: &str, value: &Value) -> bool {
    // The AnyValue's length: its member's tag, then a varint, eight bytes or a string.
    let any_len = match value {
        Value::Bool(_) => 2,
        Value::I64(v) => 1 + varint_len(*v as u64),
        Value::F64(_) => 9,
        Value::String(v) => 2 + v.as_str().len(),
        _ => return false,
    };
    // KeyValue: key (1) with tag and length, value (2) with tag and length.
    let kv_len = 2 + key.len() + 2 + any_len;
    if kv_len >= 0x80 || key.is_empty() || field >= 16 {
        return false;
    }
    // The int_value's block is appended whole (see `Block`).
    out.reserve(2 + kv_len + Block::SIZE);
    out.extend_from_slice(&[
        ((field << 3) | LEN) as u8,
        kv_len as u8,
        (1 << 3) | LEN as u8,
        key.len() as u8,
    ]);
    out.extend_from_slice(key.as_bytes());
    let value_head = [(2 << 3) | LEN as u8, any_len as u8];
    match value {
        Value::Bool(v) => out.extend_from_slice(&[
            value_head[0],
            value_head[1],
            (2 << 3) | VARINT as u8,
            u8::from(*v),
        ]),
        Value::I64(v) => {
            let head = [value_head[0], value_head[1], (3 << 3) | VARINT as u8];
            head_and_varint(out, head, *v as u64);
        }
        Value::F64(v) => {
            let mut member = [0; 11];
            member[..3].copy_from_slice(&[value_head[0], value_head[1], (4 << 3) | FIXED64 as u8]);
            member[3..].copy_from_slice(&v.to_le_bytes());
            out.extend_from_slice(&member);
        }
        Value::String(v) => {
            let text = v.as_str().as_bytes();
            out.extend_from_slice(&[
                value_head[0],
                value_head[1],
                (1 << 3) | LEN as u8,
                text.len() as u8,
            ]);
            out.extend_from_slice(text);
        }
        _ => unreachable!("arrays returned above"),
    }
    true
}

/// Three bytes of tags and lengths, then `value` as a varint. Values under 2^14 (counts,
/// status codes, ports, milliseconds) are written as one array of a constant size built in a
/// register; larger ones go through a [`Block`]. `out` must have room for [`Block::SIZE`]
/// bytes more than it holds. Inlined always: left out of line by the compiler, the call
/// cost the streamed span's 256-point timeline a fifth more instructions (callgrind).
#[inline(always)]
fn head_and_varint(out: &mut Vec<u8>, head: [u8; 3], value: u64) {
    if value < 0x80 {
        out.extend_from_slice(&[head[0], head[1], head[2], value as u8]);
    } else if value < 0x4000 {
        out.extend_from_slice(&[
            head[0],
            head[1],
            head[2],
            (value as u8) | 0x80,
            (value >> 7) as u8,
        ]);
    } else {
        let mut block = Block::new();
        for byte in head {
            block.byte(byte);
        }
        block.varint(value);
        block.append_to(out);
    }
}

/// Up to [`Block::SIZE`] bytes of tags, lengths and a scalar gathered in one `u128`, its
/// first byte lowest.
///
/// It is appended as the whole word and then cut back to its length: a copy of a constant
/// size compiles to two stores, where one of a variable size is a `memcpy` call. The bytes
/// are shifted into a register rather than stored one by one into a stack array, which the
/// 16-byte copy would then load back whole, a load the CPU cannot forward from the narrow
/// stores before it. The biggest use is 13 bytes (a value's tag and 2-byte length, then a
/// negative `int_value`'s tag and ten-byte varint), or 12 (a field tag, a five-byte length, a
/// tag and a five-byte length).
struct Block {
    word: u128,
    len: usize,
}

impl Block {
    const SIZE: usize = 16;

    fn new() -> Self {
        Self { word: 0, len: 0 }
    }

    fn byte(&mut self, byte: u8) {
        self.word |= u128::from(byte) << (8 * self.len);
        self.len += 1;
    }

    fn varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.byte((value as u8) | 0x80);
            value >>= 7;
        }
        self.byte(value as u8);
    }

    fn eight(&mut self, bytes: [u8; 8]) {
        self.word |= u128::from(u64::from_le_bytes(bytes)) << (8 * self.len);
        self.len += 8;
    }

    /// Appends the block; `out` must have room for [`Block::SIZE`] bytes more than it holds,
    /// or the whole word makes it grow.
    fn append_to(&self, out: &mut Vec<u8>) {
        let end = out.len() + self.len;
        out.extend_from_slice(&self.word.to_le_bytes());
        out.truncate(end);
    }
}

/// The content of an `AnyValue`: its one `value` member.
fn any_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Bool(v) => {
            tag(out, 2, VARINT);
            varint(out, u64::from(*v));
        }
        Value::I64(v) => {
            tag(out, 3, VARINT);
            varint(out, *v as u64);
        }
        Value::F64(v) => {
            tag(out, 4, FIXED64);
            out.extend_from_slice(&v.to_le_bytes());
        }
        Value::String(v) => {
            tag(out, 1, LEN);
            len_bytes(out, v.as_str().as_bytes());
        }
        Value::Array(array) => nested(out, 5, |out| array_values(out, array)),
        // A value kind newer than this encoder: its text, rather than nothing.
        other => {
            tag(out, 1, LEN);
            len_bytes(out, other.to_string().as_bytes());
        }
    }
}

/// The content of an `ArrayValue`: `values = 1`, one `AnyValue` each.
fn array_values(out: &mut Vec<u8>, array: &Array) {
    // A scalar element's AnyValue is at most 11 bytes, its length known before it is written:
    // tag, length and content go out as one block, not as a nested message patched after.
    match array {
        Array::Bool(values) => {
            out.reserve(4 * values.len());
            for v in values {
                out.extend_from_slice(&[
                    (1 << 3) | LEN as u8,
                    2,
                    (2 << 3) | VARINT as u8,
                    u8::from(*v),
                ]);
            }
        }
        Array::I64(values) => {
            // At most 13 bytes an element, and a block's slack after the last.
            out.reserve(13 * values.len() + Block::SIZE);
            for v in values {
                let len = 1 + varint_len(*v as u64) as u8;
                let head = [(1 << 3) | LEN as u8, len, (3 << 3) | VARINT as u8];
                head_and_varint(out, head, *v as u64);
            }
        }
        Array::F64(values) => {
            out.reserve(11 * values.len());
            for v in values {
                let mut element = [0; 11];
                element[..3].copy_from_slice(&[(1 << 3) | LEN as u8, 9, (4 << 3) | FIXED64 as u8]);
                element[3..].copy_from_slice(&v.to_le_bytes());
                out.extend_from_slice(&element);
            }
        }
        Array::String(values) => each(out, values, |out, v: &StringValue| {
            tag(out, 1, LEN);
            len_bytes(out, v.as_str().as_bytes());
        }),
        other => {
            let text = other.to_string();
            nested(out, 1, |out| {
                tag(out, 1, LEN);
                len_bytes(out, text.as_bytes());
            });
        }
    }
}

fn each<T>(out: &mut Vec<u8>, values: &[T], mut f: impl FnMut(&mut Vec<u8>, &T)) {
    for value in values {
        nested(out, 1, |out| f(out, value));
    }
}

// === wire format ===

fn tag(out: &mut Vec<u8>, field: u32, wire: u32) {
    varint(out, u64::from((field << 3) | wire));
}

fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn varint_len(value: u64) -> usize {
    // 1 byte per 7 bits, at least one.
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

fn len_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A non-empty string field (proto3 leaves the empty one out).
fn string(out: &mut Vec<u8>, field: u32, value: &str) {
    bytes(out, field, value.as_bytes());
}

/// A non-empty bytes field.
fn bytes(out: &mut Vec<u8>, field: u32, value: &[u8]) {
    if !value.is_empty() {
        tag(out, field, LEN);
        len_bytes(out, value);
    }
}

/// A non-zero varint field (`uint32`, `uint64`, enums).
fn uint(out: &mut Vec<u8>, field: u32, value: u64) {
    if value != 0 {
        tag(out, field, VARINT);
        varint(out, value);
    }
}

fn fixed64(out: &mut Vec<u8>, field: u32, value: u64) {
    if value != 0 {
        tag(out, field, FIXED64);
        out.extend_from_slice(&value.to_le_bytes());
    }
}

fn fixed32(out: &mut Vec<u8>, field: u32, value: u32) {
    if value != 0 {
        tag(out, field, FIXED32);
        out.extend_from_slice(&value.to_le_bytes());
    }
}

/// A length-delimited message as field `field`, its content written by `content`. One byte
/// is reserved for the length; a longer content is moved up once to make room for the rest.
fn nested(out: &mut Vec<u8>, field: u32, content: impl FnOnce(&mut Vec<u8>)) {
    nested_sized(out, field, 1, content);
}

/// [`nested`] with `width` bytes reserved for the length: a guess of its varint's width.
/// A right guess writes the length in place; a wrong one moves the content once.
fn nested_sized(out: &mut Vec<u8>, field: u32, width: usize, content: impl FnOnce(&mut Vec<u8>)) {
    tag(out, field, LEN);
    let at = out.len();
    out.resize(at + width, 0);
    content(out);
    let end = out.len();
    let len = end - at - width;
    let actual = varint_len(len as u64);
    if actual > width {
        out.resize(end + actual - width, 0);
        out.copy_within(at + width..end, at + actual);
    } else if actual < width {
        out.copy_within(at + width..end, at + actual);
        out.truncate(end - (width - actual));
    }
    let mut value = len as u64;
    for byte in &mut out[at..at + actual] {
        *byte = if value >= 0x80 {
            (value as u8) | 0x80
        } else {
            value as u8
        };
        value >>= 7;
    }
}
