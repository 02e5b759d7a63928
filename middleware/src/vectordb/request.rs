//! What a request body adds to the path: top-k, collection names, batch sizes.
//!
//! Bodies are deserialized into small structs that skip every field they do not name, so a
//! body full of vectors and documents costs a scan, not a copy.

use serde::Deserialize;
use serde_json::Value;

use super::VectorDbCall;

/// Which request body shape an operation has (and so what to read from it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ask {
    /// The path says all.
    Nothing,
    /// Chroma `query`: `n_results`.
    ChromaQuery,
    /// Chroma `get`: `limit`.
    ChromaGet,
    /// Chroma collection creation: `name`.
    ChromaCreate,
    /// Qdrant search, query, scroll, recommend: `limit` (or `top`).
    QdrantLimit,
    /// Qdrant batch search or query: `searches[].limit`.
    QdrantBatch,
    /// Weaviate GraphQL: `query` (a `Get { Class(limit: n) ... }`).
    WeaviateGraphQl,
    /// Weaviate object creation: `class`.
    WeaviateObject,
    /// Weaviate batch creation: `objects[].class`.
    WeaviateBatch,
}

#[derive(Deserialize)]
struct Limits {
    n_results: Option<Value>,
    limit: Option<Value>,
    top: Option<Value>,
}

impl Limits {
    fn first(&self) -> Option<i64> {
        [&self.n_results, &self.limit, &self.top]
            .into_iter()
            .flatten()
            .find_map(count)
    }
}

#[derive(Deserialize)]
struct Named {
    name: Option<Value>,
}

#[derive(Deserialize)]
struct Batch {
    searches: Vec<Limits>,
}

#[derive(Deserialize)]
struct Object {
    class: Option<Value>,
}

#[derive(Deserialize)]
struct Objects {
    objects: Vec<Object>,
}

#[derive(Deserialize)]
struct GraphQl {
    query: String,
}

/// A non-negative integer (some clients send `3.0`).
fn count(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n
            .as_u64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| *f >= 0.0 && f.fract() == 0.0)
                    .map(|f| f as u64)
            })
            .map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
        _ => None,
    }
}

fn string(value: &Option<Value>) -> Option<&str> {
    value.as_ref().and_then(Value::as_str)
}

/// Reads what `call`'s operation needs from `body`; records `invalid` when it cannot.
pub(super) fn observe(call: &mut VectorDbCall, body: &[u8]) {
    if read(call, body).is_none() {
        call.request_error = Some("invalid");
    }
}

fn read(call: &mut VectorDbCall, body: &[u8]) -> Option<()> {
    match call.ask {
        Ask::Nothing => {}
        Ask::ChromaQuery | Ask::ChromaGet | Ask::QdrantLimit => {
            call.top_k = serde_json::from_slice::<Limits>(body).ok()?.first();
        }
        Ask::ChromaCreate => {
            let named: Named = serde_json::from_slice(body).ok()?;
            call.collection = string(&named.name).map(super::name);
        }
        Ask::QdrantBatch => {
            let batch: Batch = serde_json::from_slice(body).ok()?;
            call.batch_size = Some(i64::try_from(batch.searches.len()).unwrap_or(i64::MAX));
            call.top_k = batch.searches.iter().filter_map(Limits::first).max();
        }
        Ask::WeaviateObject => {
            let object: Object = serde_json::from_slice(body).ok()?;
            call.collection = string(&object.class).map(super::name);
        }
        Ask::WeaviateBatch => {
            let batch: Objects = serde_json::from_slice(body).ok()?;
            call.batch_size = Some(i64::try_from(batch.objects.len()).unwrap_or(i64::MAX));
            let mut classes = batch.objects.iter().map(|o| string(&o.class));
            let first = classes.next().flatten();
            // One collection only when every object names the same class.
            if classes.all(|c| c == first) {
                call.collection = first.map(super::name);
            }
        }
        Ask::WeaviateGraphQl => {
            let graphql: GraphQl = serde_json::from_slice(body).ok()?;
            let query = graphql_query(&graphql.query)?;
            call.operation = query.operation;
            call.collection = Some(super::name(query.class));
            call.top_k = query.limit;
        }
    }
    Some(())
}

// === GraphQL ===

/// What a Weaviate GraphQL query's first `Get` or `Aggregate` asks.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct GraphQlQuery<'a> {
    pub(super) operation: &'static str,
    pub(super) class: &'a str,
    pub(super) limit: Option<i64>,
}

/// A GraphQL token: a name, a number, or one punctuation character. Strings and comments
/// are skipped (they hold the query's text, never ours to read).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token<'a> {
    Name(&'a str),
    Number(&'a str),
    Punct(u8),
}

fn tokens(text: &str) -> impl Iterator<Item = Token<'_>> {
    let bytes = text.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        loop {
            let &b = bytes.get(i)?;
            let start = i;
            i += 1;
            match b {
                b'#' => {
                    while bytes.get(i).is_some_and(|&c| c != b'\n') {
                        i += 1;
                    }
                }
                b'"' => {
                    while let Some(&c) = bytes.get(i) {
                        i += if c == b'\\' { 2 } else { 1 };
                        if c == b'"' {
                            break;
                        }
                    }
                }
                b'_' | b'a'..=b'z' | b'A'..=b'Z' => {
                    while bytes
                        .get(i)
                        .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
                    {
                        i += 1;
                    }
                    return Some(Token::Name(&text[start..i]));
                }
                b'-' | b'0'..=b'9' => {
                    while bytes.get(i).is_some_and(|c| {
                        c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'+')
                    }) {
                        i += 1;
                    }
                    return Some(Token::Number(&text[start..i]));
                }
                b if b.is_ascii_whitespace() || b == b',' => {}
                b => return Some(Token::Punct(b)),
            }
        }
    })
}

/// The first `Get { Class(...) }` (or `Aggregate`) of `query`: its class and the `limit`
/// argument given directly to the class. One pass over the tokens.
pub(super) fn graphql_query(query: &str) -> Option<GraphQlQuery<'_>> {
    let mut tokens = tokens(query).peekable();
    let operation = loop {
        match tokens.next()? {
            Token::Name("Get") if tokens.peek() == Some(&Token::Punct(b'{')) => break "get",
            Token::Name("Aggregate") if tokens.peek() == Some(&Token::Punct(b'{')) => {
                break "aggregate";
            }
            _ => {}
        }
    };
    tokens.next();
    let Token::Name(class) = tokens.next()? else {
        return None;
    };
    let mut found = GraphQlQuery {
        operation,
        class,
        limit: None,
    };
    if tokens.peek() != Some(&Token::Punct(b'(')) {
        return Some(found);
    }
    // The last two tokens: `limit` `:` before a number at the class's own argument level.
    let mut depth = 0usize;
    let mut last = [None, None];
    for token in tokens {
        match token {
            Token::Punct(b'(' | b'{' | b'[') => depth += 1,
            Token::Punct(b')' | b'}' | b']') => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    break;
                }
            }
            Token::Number(n)
                if depth == 1 && last == [Some(Token::Name("limit")), Some(Token::Punct(b':'))] =>
            {
                found.limit = n
                    .parse::<u64>()
                    .ok()
                    .map(|n| i64::try_from(n).unwrap_or(i64::MAX));
            }
            _ => {}
        }
        last = [last[1], Some(token)];
    }
    Some(found)
}
