//! Reading a vector database's answer for its returned count, as it streams by.

use std::collections::HashMap;

use opentelemetry::KeyValue;
use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::semconv::db;

/// Which answer shape an operation has (and so how to count its rows).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Nothing to count.
    Nothing,
    /// A JSON array (Chroma's collection list).
    Array,
    /// A 2xx answer is one row (Weaviate's object by id).
    One,
    /// Chroma `query`: `{"ids": [[...], ...]}`, one list per query.
    ChromaNested,
    /// Chroma `get`: `{"ids": [...]}`.
    ChromaFlat,
    /// Chroma collection create or get: `{"id": ..., "name": ...}`.
    ChromaCollection,
    /// Qdrant `{"result": [...]}`.
    QdrantList,
    /// Qdrant `{"result": {"points": [...]}}`.
    QdrantPoints,
    /// Qdrant `{"result": {...}}`: one point.
    QdrantOne,
    /// Qdrant `{"result": [[...], ...]}`.
    QdrantBatchList,
    /// Qdrant `{"result": [{"points": [...]}, ...]}`.
    QdrantBatchPoints,
    /// Weaviate `{"data": {"Get": {"Class": [...]}}, "errors": [...]}`.
    WeaviateGraphQl,
}

/// What the answer said. See [`VectorDbReport::attributes`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VectorDbReport {
    /// The HTTP status, when an answer came.
    pub status_code: Option<u16>,
    /// Rows in the answer, for the operations that return rows and answered 2xx.
    pub returned_rows: Option<i64>,
    /// Why the answer could not be counted: `too_large` or `invalid`.
    pub parse_error: Option<&'static str>,
    /// An error the status does not show: `graphql_error` (a Weaviate answer with `errors`).
    pub error_type: Option<&'static str>,
    /// A Chroma collection's id and name, from a collection create or get answer.
    pub collection: Option<(String, String)>,
}

impl VectorDbReport {
    /// `db.response.status_code`, `db.response.returned_rows` and
    /// `llmtrace.db.response.parse_error`, for what is known.
    pub fn attributes(&self) -> Vec<KeyValue> {
        let mut attributes = Vec::with_capacity(3);
        if let Some(status) = self.status_code {
            attributes.push(KeyValue::new(db::RESPONSE_STATUS_CODE, status.to_string()));
        }
        if let Some(rows) = self.returned_rows {
            attributes.push(KeyValue::new(db::RESPONSE_RETURNED_ROWS, rows));
        }
        if let Some(error) = self.parse_error {
            attributes.push(KeyValue::new(db::RESPONSE_PARSE_ERROR, error));
        }
        attributes
    }
}

/// Fed an answer's status and bytes as they pass, keeps a copy of at most a fixed size when
/// the operation's rows are counted, and reads it at the end ([`finish`](Self::finish)).
#[derive(Debug)]
pub struct ResponseObserver {
    answer: Answer,
    max: usize,
    status: Option<u16>,
    buffer: Vec<u8>,
    too_large: bool,
}

impl ResponseObserver {
    pub(super) fn new(answer: Answer, max: usize) -> Self {
        Self {
            answer,
            max,
            status: None,
            buffer: Vec::new(),
            too_large: false,
        }
    }

    fn reads_body(&self) -> bool {
        !matches!(self.answer, Answer::Nothing | Answer::One)
            && self.status.is_some_and(|s| (200..300).contains(&s))
    }

    /// The answer's status arrived.
    pub fn on_response_head(&mut self, status: u16) {
        self.status = Some(status);
    }

    /// A piece of the answer went by.
    pub fn on_response_data(&mut self, data: &[u8]) {
        if !self.reads_body() || self.too_large {
            return;
        }
        if self.buffer.len() + data.len() > self.max {
            self.too_large = true;
            self.buffer = Vec::new();
            return;
        }
        self.buffer.extend_from_slice(data);
    }

    /// What the whole answer said.
    pub fn finish(self) -> VectorDbReport {
        let mut report = VectorDbReport {
            status_code: self.status,
            ..VectorDbReport::default()
        };
        let ok = self.status.is_some_and(|s| (200..300).contains(&s));
        if !ok {
            return report;
        }
        if self.answer == Answer::One {
            report.returned_rows = Some(1);
        } else if self.too_large {
            report.parse_error = Some("too_large");
        } else if self.answer != Answer::Nothing
            && count(self.answer, &self.buffer, &mut report).is_none()
        {
            report.parse_error = Some("invalid");
        }
        report
    }
}

#[derive(Deserialize)]
struct Ids<T> {
    ids: Vec<T>,
}

#[derive(Deserialize)]
struct Collection {
    id: String,
    name: String,
}

#[derive(Deserialize)]
struct Answered<T> {
    result: T,
}

#[derive(Deserialize)]
struct Points {
    points: Vec<IgnoredAny>,
}

/// `{"Get": {"Class": [...]}}`: per operation, per class, the objects (or `null`).
type GraphQlData = HashMap<String, Option<HashMap<String, Option<Vec<IgnoredAny>>>>>;

#[derive(Deserialize)]
struct GraphQlAnswer {
    data: Option<GraphQlData>,
    #[serde(default)]
    errors: Option<Vec<IgnoredAny>>,
}

fn rows(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Counts the rows of `body`; `None` when it is not the JSON `answer` expects.
fn count(answer: Answer, body: &[u8], report: &mut VectorDbReport) -> Option<()> {
    let n = match answer {
        Answer::Nothing | Answer::One => return Some(()),
        Answer::Array => serde_json::from_slice::<Vec<IgnoredAny>>(body).ok()?.len(),
        Answer::ChromaNested => {
            let ids: Ids<Vec<IgnoredAny>> = serde_json::from_slice(body).ok()?;
            ids.ids.iter().map(Vec::len).sum()
        }
        Answer::ChromaFlat => serde_json::from_slice::<Ids<IgnoredAny>>(body)
            .ok()?
            .ids
            .len(),
        Answer::ChromaCollection => {
            let c: Collection = serde_json::from_slice(body).ok()?;
            report.collection = Some((super::name(&c.id), super::name(&c.name)));
            return Some(());
        }
        Answer::QdrantList => {
            let r: Answered<Vec<IgnoredAny>> = serde_json::from_slice(body).ok()?;
            r.result.len()
        }
        Answer::QdrantPoints => {
            let r: Answered<Points> = serde_json::from_slice(body).ok()?;
            r.result.points.len()
        }
        Answer::QdrantOne => {
            let r: Answered<Option<IgnoredAny>> = serde_json::from_slice(body).ok()?;
            usize::from(r.result.is_some())
        }
        Answer::QdrantBatchList => {
            let r: Answered<Vec<Vec<IgnoredAny>>> = serde_json::from_slice(body).ok()?;
            r.result.iter().map(Vec::len).sum()
        }
        Answer::QdrantBatchPoints => {
            let r: Answered<Vec<Points>> = serde_json::from_slice(body).ok()?;
            r.result.iter().map(|p| p.points.len()).sum()
        }
        Answer::WeaviateGraphQl => return graphql(body, report),
    };
    report.returned_rows = Some(rows(n));
    Some(())
}

fn graphql(body: &[u8], report: &mut VectorDbReport) -> Option<()> {
    let answer: GraphQlAnswer = serde_json::from_slice(body).ok()?;
    if answer.errors.is_some_and(|e| !e.is_empty()) {
        report.error_type = Some("graphql_error");
    }
    let n: usize = answer
        .data
        .iter()
        .flat_map(HashMap::values)
        .flatten()
        .flat_map(HashMap::values)
        .flatten()
        .map(Vec::len)
        .sum();
    if answer.data.is_some() {
        report.returned_rows = Some(rows(n));
    }
    Some(())
}
