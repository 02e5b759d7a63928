//! A JSON value that keeps the order of object keys.
//!
//! `serde_json::Value` sorts keys (the workspace does not enable `preserve_order`, and turning it on
//! would change every crate's output). The real APIs write `id`, `object`, `created`, `model` first;
//! a sniffer that reads the beginning of a chunk should see the same bytes here as there.

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::Value;

/// An ordered JSON value; build objects with `obj!` and arrays with `J::A`.
#[derive(Clone, Debug)]
pub(crate) enum J {
    Null,
    Bool(bool),
    U(u64),
    F(f64),
    F32(f32),
    S(String),
    A(Vec<J>),
    O(Vec<(&'static str, J)>),
    /// Anything echoed from the request (its key order is serde_json's).
    V(Value),
}

impl J {
    /// Appends a key to an object (no-op on other variants).
    pub(crate) fn push(&mut self, key: &'static str, value: impl Into<J>) {
        if let J::O(fields) = self {
            fields.push((key, value.into()));
        }
    }

    pub(crate) fn to_vec(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("ordered JSON always serializes")
    }
}

impl Serialize for J {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            J::Null => s.serialize_unit(),
            J::Bool(b) => s.serialize_bool(*b),
            J::U(n) => s.serialize_u64(*n),
            J::F(f) => s.serialize_f64(*f),
            J::F32(f) => s.serialize_f32(*f),
            J::S(v) => s.serialize_str(v),
            J::A(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            J::O(fields) => {
                let mut map = s.serialize_map(Some(fields.len()))?;
                for (k, v) in fields {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
            J::V(v) => v.serialize(s),
        }
    }
}

impl From<&str> for J {
    fn from(v: &str) -> Self {
        J::S(v.to_owned())
    }
}
impl From<String> for J {
    fn from(v: String) -> Self {
        J::S(v)
    }
}
impl From<&String> for J {
    fn from(v: &String) -> Self {
        J::S(v.clone())
    }
}
impl From<u64> for J {
    fn from(v: u64) -> Self {
        J::U(v)
    }
}
impl From<usize> for J {
    fn from(v: usize) -> Self {
        J::U(v as u64)
    }
}
impl From<f64> for J {
    fn from(v: f64) -> Self {
        J::F(v)
    }
}
impl From<bool> for J {
    fn from(v: bool) -> Self {
        J::Bool(v)
    }
}
impl From<Value> for J {
    fn from(v: Value) -> Self {
        J::V(v)
    }
}
impl From<Vec<J>> for J {
    fn from(v: Vec<J>) -> Self {
        J::A(v)
    }
}
impl<T: Into<J>> From<Option<T>> for J {
    fn from(v: Option<T>) -> Self {
        v.map_or(J::Null, Into::into)
    }
}

/// `obj! { "id" => id, "object" => "chat.completion" }`: an ordered JSON object.
macro_rules! obj {
    ($($k:literal => $v:expr),* $(,)?) => {
        $crate::json::J::O(vec![$(($k, $crate::json::J::from($v))),*])
    };
}
pub(crate) use obj;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_key_order() {
        let mut o = obj! { "z" => 1u64, "a" => "x", "m" => J::Null };
        o.push("b", vec![J::from(true), J::F32(0.5)]);
        assert_eq!(
            String::from_utf8(o.to_vec()).unwrap(),
            r#"{"z":1,"a":"x","m":null,"b":[true,0.5]}"#
        );
    }
}
