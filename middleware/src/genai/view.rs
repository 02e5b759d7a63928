//! Typed, borrowing views of the few members the core reads from a JSON body.
//!
//! A request or answer body is read for a handful of members (model, stream flag, usage,
//! finish reasons, ...). Building a `serde_json::Value` of the whole body allocates a node for
//! every member and string in it, prompt and answer included, only to read five of them. A view
//! is a `#[derive(Deserialize)]` struct of just those members: the others are skipped by the
//! parser without being built, and strings without escapes are borrowed from the body.
//!
//! Every member is a [`Loose`]: `Some` when it has the JSON type the core reads, `None` when it
//! is absent, `null` or of another type. That is what `Value::as_str`, `as_i64`, `as_bool`,
//! `as_array` and `get` answer, so a view reads a body exactly as the `Value` code it replaces
//! did. The one difference is a body that repeats a member the view declares: serde rejects
//! the duplicate, so callers parse such a body as a `Value` first (whose map keeps the last
//! occurrence) and read the view from that; see [`read`].

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::json::{Number, Reader};

/// A member read leniently: `Some` when it has the JSON type `T` reads, else `None`.
#[derive(Debug)]
pub(crate) struct Loose<T>(pub(crate) Option<T>);

impl<T> Default for Loose<T> {
    fn default() -> Self {
        Loose(None)
    }
}

impl<T> Loose<T> {
    /// The value, when the member had the expected type.
    pub(crate) fn get(&self) -> Option<&T> {
        self.0.as_ref()
    }
}

impl<'a> Loose<Cow<'a, str>> {
    /// The string, when the member was one.
    pub(crate) fn str(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

impl<T: Copy> Loose<T> {
    /// A copy of the value, when the member had the expected type.
    pub(crate) fn value(&self) -> Option<T> {
        self.0
    }
}

/// What a [`Loose`] member accepts: each method answers for one JSON type, `None` by default.
pub(crate) trait Lenient<'de>: Sized {
    fn from_str(_: Cow<'de, str>) -> Option<Self> {
        None
    }
    fn from_i64(_: i64) -> Option<Self> {
        None
    }
    fn from_u64(_: u64) -> Option<Self> {
        None
    }
    fn from_f64(_: f64) -> Option<Self> {
        None
    }
    fn from_bool(_: bool) -> Option<Self> {
        None
    }
    fn from_null() -> Option<Self> {
        None
    }
    fn from_map<A: MapAccess<'de>>(mut map: A) -> Result<Option<Self>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn from_seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Option<Self>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

impl<'de: 'a, 'a> Lenient<'de> for Cow<'a, str> {
    fn from_str(s: Cow<'de, str>) -> Option<Self> {
        Some(s)
    }
}

/// `Value::as_i64`: an integer that fits.
impl Lenient<'_> for i64 {
    fn from_i64(n: i64) -> Option<Self> {
        Some(n)
    }
    fn from_u64(n: u64) -> Option<Self> {
        i64::try_from(n).ok()
    }
}

/// `Value::as_u64`: a non-negative integer.
impl Lenient<'_> for u64 {
    fn from_i64(n: i64) -> Option<Self> {
        u64::try_from(n).ok()
    }
    fn from_u64(n: u64) -> Option<Self> {
        Some(n)
    }
}

/// `Value::as_f64`: any number.
impl Lenient<'_> for f64 {
    fn from_i64(n: i64) -> Option<Self> {
        Some(n as f64)
    }
    fn from_u64(n: u64) -> Option<Self> {
        Some(n as f64)
    }
    fn from_f64(n: f64) -> Option<Self> {
        Some(n)
    }
}

/// `Value::as_bool`.
impl Lenient<'_> for bool {
    fn from_bool(b: bool) -> Option<Self> {
        Some(b)
    }
}

/// `Value::as_array`, keeping the elements of the expected type (the `Value` code skipped the
/// others: `filter_map(as_str)`, or `get` on a non-object finding nothing).
impl<'de, T: Lenient<'de>> Lenient<'de> for Vec<T> {
    fn from_seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Option<Self>, A::Error> {
        let mut items = Vec::new();
        while let Some(Loose(item)) = seq.next_element::<Loose<T>>()? {
            items.extend(item);
        }
        Ok(Some(items))
    }
}

/// The length of an array, its elements skipped unread.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Len(pub(crate) usize);

impl<'de> Lenient<'de> for Len {
    fn from_seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Option<Self>, A::Error> {
        let mut len = 0;
        while seq.next_element::<IgnoredAny>()?.is_some() {
            len += 1;
        }
        Ok(Some(Len(len)))
    }
}

/// Any value but `null` (`value.get(key).filter(|v| !v.is_null())`), skipped unread.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Present;

impl<'de> Lenient<'de> for Present {
    fn from_str(_: Cow<'de, str>) -> Option<Self> {
        Some(Present)
    }
    fn from_i64(_: i64) -> Option<Self> {
        Some(Present)
    }
    fn from_u64(_: u64) -> Option<Self> {
        Some(Present)
    }
    fn from_f64(_: f64) -> Option<Self> {
        Some(Present)
    }
    fn from_bool(_: bool) -> Option<Self> {
        Some(Present)
    }
    fn from_map<A: MapAccess<'de>>(mut map: A) -> Result<Option<Self>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Some(Present))
    }
    fn from_seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Option<Self>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Some(Present))
    }
}

/// Makes a `#[derive(Deserialize)]` view struct a [`Lenient`] object member: an object is read
/// as the struct, anything else is `None` (as `get` on a non-object finds nothing).
macro_rules! lenient_object {
    ($($view:ident),* $(,)?) => {$(
        impl<'de: 'a, 'a> $crate::genai::view::Lenient<'de> for $view<'a> {
            fn from_map<A: ::serde::de::MapAccess<'de>>(
                map: A,
            ) -> Result<Option<Self>, A::Error> {
                <$view<'a> as ::serde::Deserialize<'de>>::deserialize(
                    ::serde::de::value::MapAccessDeserializer::new(map),
                )
                .map(Some)
            }
        }
    )*};
}
pub(crate) use lenient_object;

impl<'de, T: Lenient<'de>> Deserialize<'de> for Loose<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(LooseVisitor(PhantomData))
            .map(Loose)
    }
}

struct LooseVisitor<T>(PhantomData<T>);

impl<'de, T: Lenient<'de>> Visitor<'de> for LooseVisitor<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(T::from_str(Cow::Borrowed(s)))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        Ok(T::from_str(Cow::Owned(s.to_owned())))
    }
    fn visit_string<E: de::Error>(self, s: String) -> Result<Self::Value, E> {
        Ok(T::from_str(Cow::Owned(s)))
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
        Ok(T::from_i64(n))
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
        Ok(T::from_u64(n))
    }
    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Self::Value, E> {
        Ok(T::from_f64(n))
    }
    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Self::Value, E> {
        Ok(T::from_bool(b))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(T::from_null())
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(T::from_null())
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        T::from_map(map)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        T::from_seq(seq)
    }
}

/// Reads the view `V` of a JSON document: straight from the bytes when they parse as one
/// (the fast path), else through a `Value`, so a document that repeats a member reads as the
/// `Value` code read it (the last occurrence wins). `Err` carries serde's message for a
/// document that is not JSON; `Ok(None)` is JSON that is not an object.
pub(crate) fn read<'a, V: Deserialize<'a>>(bytes: &'a [u8]) -> Result<Option<V>, ViewError> {
    // Only an object is read as a view: serde would read an array into a struct by position.
    if super::json::trim_ws(bytes).first() == Some(&b'{') {
        if let Ok(view) = serde_json::from_slice::<V>(bytes) {
            return Ok(Some(view));
        }
    }
    let value: Value = serde_json::from_slice(bytes).map_err(ViewError)?;
    if !value.is_object() {
        return Ok(None);
    }
    // `Value` by value hands its strings out owned, so the view outlives it.
    Ok(V::deserialize(value).ok())
}

/// Reads the view `V` of an already parsed `Value`; `None` when it is not an object.
pub(crate) fn of<'a, V: Deserialize<'a>>(value: &'a Value) -> Option<V> {
    if !value.is_object() {
        return None;
    }
    V::deserialize(value).ok()
}

/// A body that is not JSON; its message is serde's.
#[derive(Debug)]
pub(crate) struct ViewError(pub(crate) serde_json::Error);

impl fmt::Display for ViewError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Reads a string member with the one-pass [`Reader`], as its [`Loose`] view does.
#[inline]
pub(crate) fn scan_str<'a>(reader: &mut Reader<'a>) -> Option<Loose<Cow<'a, str>>> {
    reader.string().map(Loose)
}

/// Reads a non-negative integer member as its [`Loose`] view does.
#[inline]
pub(crate) fn scan_u64(reader: &mut Reader<'_>) -> Option<Loose<u64>> {
    reader.number().map(|n| Loose(n.and_then(Number::as_u64)))
}

/// Reads an integer member as its [`Loose`] view does.
#[inline]
pub(crate) fn scan_i64(reader: &mut Reader<'_>) -> Option<Loose<i64>> {
    reader.number().map(|n| Loose(n.and_then(Number::as_i64)))
}

/// Reads a number member as its [`Loose`] view does: any number.
#[inline]
pub(crate) fn scan_f64(reader: &mut Reader<'_>) -> Option<Loose<f64>> {
    reader.number().map(|n| Loose(n.map(Number::as_f64)))
}
