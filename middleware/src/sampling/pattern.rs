//! Value patterns shared by head rules and tail policies: `"gpt-4o"` (exact), `"gpt-4o*"`
//! (prefix), `"*"` (present, any value).

use opentelemetry::{Array, Value};

/// A compiled value pattern.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Pattern {
    /// Any value (the attribute or entry is present).
    Any,
    /// Starts with this.
    Prefix(Box<str>),
    /// Exactly this.
    Exact(Box<str>),
}

impl Pattern {
    pub(crate) fn new(text: &str) -> Self {
        if text == "*" {
            Pattern::Any
        } else if let Some(prefix) = text.strip_suffix('*') {
            Pattern::Prefix(prefix.into())
        } else {
            Pattern::Exact(text.into())
        }
    }

    pub(crate) fn matches_str(&self, value: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Prefix(prefix) => value.starts_with(&**prefix),
            Pattern::Exact(exact) => value == &**exact,
        }
    }

    /// Strings match as strings; a string array matches when one of its elements does
    /// (captured headers, `gen_ai.response.finish_reasons`); other values by their text form.
    pub(crate) fn matches_value(&self, value: &Value) -> bool {
        match value {
            Value::String(s) => self.matches_str(s.as_str()),
            Value::Array(Array::String(values)) => {
                values.iter().any(|v| self.matches_str(v.as_str()))
            }
            _ if *self == Pattern::Any => true,
            Value::Bool(b) => self.matches_str(if *b { "true" } else { "false" }),
            other => self.matches_str(&other.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::StringValue;

    #[test]
    fn patterns() {
        assert!(Pattern::new("gpt-4o").matches_str("gpt-4o"));
        assert!(!Pattern::new("gpt-4o").matches_str("gpt-4o-mini"));
        assert!(Pattern::new("gpt-4o*").matches_str("gpt-4o-mini"));
        assert!(!Pattern::new("gpt-4o*").matches_str("gpt-4"));
        assert!(Pattern::new("*").matches_str(""));
        let reasons = Value::Array(Array::String(vec![
            StringValue::from("stop"),
            StringValue::from("content_filter"),
        ]));
        assert!(Pattern::new("content_filter").matches_value(&reasons));
        assert!(!Pattern::new("length").matches_value(&reasons));
        assert!(Pattern::new("true").matches_value(&Value::Bool(true)));
        assert!(Pattern::new("200").matches_value(&Value::I64(200)));
    }
}
