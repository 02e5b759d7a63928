//! Property tests of `genai::request_with_usage`: for generated streamed OpenAI requests (nested
//! values, unicode and escaped strings, big integers, duplicate unrelated keys, whitespace
//! between every token, `stream_options` in every form), the output is the input with exactly
//! the expected bytes spliced in, and asks for usage; arbitrary bytes never panic.

use llmtrace::genai::{Endpoint, UsageSkip, request_with_usage};
use proptest::prelude::*;
use serde_json::Value;

fn chat() -> Endpoint {
    Endpoint::detect("/v1/chat/completions", None).unwrap()
}

/// JSON whitespace, often none.
fn ws() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => Just(String::new()),
        1 => "[ \t\r\n]{1,3}",
    ]
}

/// A string literal for `text`, escaping what must be escaped and, as `seed` decides, other
/// characters too (`\uXXXX`, surrogate pairs beyond the BMP).
fn literal(text: &str, mut seed: u64) -> String {
    let mut coin = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % 4 == 0
    };
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str(if coin() { "\\u0022" } else { "\\\"" }),
            '\\' => out.push_str(if coin() { "\\u005C" } else { "\\\\" }),
            '\n' if coin() => out.push_str("\\n"),
            '/' if coin() => out.push_str("\\/"),
            c if (c as u32) < 0x20 || coin() => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        r#"[a-z{}\[\]",:\\ ]{0,12}"#,
        Just("stream".to_owned()),
        Just(r#"{"stream":true,"stream_options":{"include_usage":false}}"#.to_owned()),
        Just("é 😀 \u{2028}".to_owned()),
    ]
}

fn string_literal() -> impl Strategy<Value = String> {
    (text(), any::<u64>()).prop_map(|(text, seed)| literal(&text, seed | 1))
}

fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        "-?[1-9][0-9]{19,40}",
        Just("123456789012345678901234567890".to_owned()),
        r"-?(0|[1-9][0-9]{0,5})\.[0-9]{1,6}([eE][+-]?[0-9]{1,2})?",
        r"-?[1-9][eE][+-]?[0-9]{1,2}",
        Just("1.0e5".to_owned()),
    ]
}

/// Any JSON value, as text with whitespace between its tokens. Nested keys include `stream`,
/// `stream_options` and `include_usage`: only top-level members count.
fn value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("false".to_owned()),
        number(),
        string_literal(),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let key = prop_oneof![
            (
                prop_oneof![
                    Just("stream"),
                    Just("stream_options"),
                    Just("include_usage")
                ],
                any::<u64>()
            )
                .prop_map(|(key, seed)| literal(key, seed | 1)),
            string_literal(),
        ];
        prop_oneof![
            prop::collection::vec((ws(), inner.clone(), ws()), 0..6).prop_map(|items| {
                let items: Vec<String> = items.into_iter().map(|(a, v, b)| a + &v + &b).collect();
                format!("[{}]", items.join(","))
            }),
            prop::collection::vec((ws(), key, ws(), ws(), inner, ws()), 0..6).prop_map(|members| {
                let members: Vec<String> = members
                    .into_iter()
                    .map(|(a, k, b, c, v, d)| format!("{a}{k}{b}:{c}{v}{d}"))
                    .collect();
                format!("{{{}}}", members.join(","))
            }),
        ]
    })
}

/// An object member as text: `pre key mid : colon value post`.
#[derive(Debug, Clone)]
struct Member {
    pre: String,
    key: String,
    mid: String,
    colon: String,
    value: String,
    post: String,
}

impl Member {
    fn text(&self, value: &str) -> String {
        format!(
            "{}{}{}:{}{}{}",
            self.pre, self.key, self.mid, self.colon, value, self.post
        )
    }
}

fn member(
    key: impl Strategy<Value = String>,
    value: impl Strategy<Value = String>,
) -> impl Strategy<Value = Member> {
    (ws(), key, ws(), ws(), value, ws()).prop_map(|(pre, key, mid, colon, value, post)| Member {
        pre,
        key,
        mid,
        colon,
        value,
        post,
    })
}

fn escaped(key: &'static str) -> impl Strategy<Value = String> {
    any::<u64>().prop_map(move |seed| literal(key, seed | 1))
}

/// Top-level keys that are not `stream` or `stream_options`; repeats are likely.
fn unrelated_key() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec![
            "model",
            "messages",
            "n",
            "seed",
            "user",
            "metadata",
            "streams",
            "stream_option",
            "Stream",
            "include_usage",
        ]),
        any::<u64>(),
    )
        .prop_map(|(key, seed)| literal(key, seed | 1))
}

/// The form `stream_options` takes in the request.
#[derive(Debug, Clone)]
enum Options {
    Absent,
    /// `"stream_options": null`.
    Null(Member),
    /// An object.
    Object {
        /// The `stream_options` member around the object (its `value` is unused).
        outer: Member,
        /// Members other than `include_usage`.
        members: Vec<Member>,
        /// An `include_usage` valued `false` or `null`, and its place among the members.
        include: Option<(usize, Member)>,
        /// The whitespace inside the object when it is empty.
        empty: String,
    },
}

fn options() -> impl Strategy<Value = Options> {
    let other = member(
        prop_oneof![
            escaped("continuous_usage_stats"),
            escaped("x"),
            escaped("stream_options"),
        ],
        value(),
    );
    let include = member(
        escaped("include_usage"),
        prop_oneof![Just("false".to_owned()), Just("null".to_owned())],
    );
    prop_oneof![
        Just(Options::Absent),
        member(escaped("stream_options"), Just("null".to_owned())).prop_map(Options::Null),
        (
            member(escaped("stream_options"), Just(String::new())),
            prop::collection::vec(other, 0..4),
            prop::option::of((any::<prop::sample::Index>(), include)),
            ws(),
        )
            .prop_map(|(outer, members, include, empty)| Options::Object {
                include: include.map(|(at, m)| (at.index(members.len() + 1), m)),
                outer,
                members,
                empty,
            }),
    ]
}

/// A streamed request and the body `request_with_usage` must make of it.
#[derive(Debug, Clone)]
struct Case {
    input: String,
    expected: String,
}

fn case() -> impl Strategy<Value = Case> {
    (
        ws(),
        prop::collection::vec(member(unrelated_key(), value()), 0..6),
        member(escaped("stream"), Just("true".to_owned())),
        any::<prop::sample::Index>(),
        options(),
        any::<prop::sample::Index>(),
        ws(),
    )
        .prop_map(
            |(lead, mut members, stream, stream_at, options, options_at, trail)| {
                members.insert(stream_at.index(members.len() + 1), stream);
                // The top-level members as (input text, expected text).
                let mut texts: Vec<(String, String)> = members
                    .iter()
                    .map(|m| (m.text(&m.value), m.text(&m.value)))
                    .collect();
                let at = options_at.index(texts.len() + 1);
                match &options {
                    Options::Absent => {
                        // After the last member's value, before its trailing whitespace.
                        let last = members.last().unwrap();
                        let added = format!(
                            "{},\"stream_options\":{{\"include_usage\":true}}",
                            last.value
                        );
                        texts.last_mut().unwrap().1 = last.text(&added);
                    }
                    Options::Null(m) => {
                        texts.insert(at, (m.text("null"), m.text(r#"{"include_usage":true}"#)))
                    }
                    Options::Object {
                        outer,
                        members: inner,
                        include,
                        empty,
                    } => {
                        let mut inner: Vec<(String, String)> = inner
                            .iter()
                            .map(|m| (m.text(&m.value), m.text(&m.value)))
                            .collect();
                        let (input, expected) = match include {
                            Some((index, m)) => {
                                inner.insert(*index, (m.text(&m.value), m.text("true")));
                                let (i, e): (Vec<String>, Vec<String>) = inner.into_iter().unzip();
                                (
                                    format!("{{{}}}", i.join(",")),
                                    format!("{{{}}}", e.join(",")),
                                )
                            }
                            None if inner.is_empty() => (
                                format!("{{{empty}}}"),
                                format!("{{\"include_usage\":true{empty}}}"),
                            ),
                            None => {
                                let (i, _): (Vec<String>, Vec<String>) = inner.into_iter().unzip();
                                let i = i.join(",");
                                (
                                    format!("{{{i}}}"),
                                    format!("{{\"include_usage\":true,{i}}}"),
                                )
                            }
                        };
                        texts.insert(at, (outer.text(&input), outer.text(&expected)));
                    }
                }
                let (input, expected): (Vec<String>, Vec<String>) = texts.into_iter().unzip();
                Case {
                    input: format!("{lead}{{{}}}{trail}", input.join(",")),
                    expected: format!("{lead}{{{}}}{trail}", expected.join(",")),
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn the_request_gains_exactly_the_expected_bytes(case in case()) {
        // The generator makes valid JSON (serde_json agrees).
        let before: Value = serde_json::from_str(&case.input).unwrap();
        prop_assert!(before.is_object());
        let output = request_with_usage(&chat(), case.input.as_bytes());
        prop_assert_eq!(
            output.as_deref().map(String::from_utf8_lossy),
            Ok(case.expected.as_str().into())
        );
        let output = output.unwrap();
        let after: Value = serde_json::from_slice(&output).unwrap();
        prop_assert_eq!(&after["stream_options"]["include_usage"], &Value::Bool(true));
        prop_assert_eq!(request_with_usage(&chat(), &output), Err(UsageSkip::AlreadyAsked));
        // Removing the inserted span (or undoing the replacement) gives back the input.
        prop_assert!(recoverable(case.input.as_bytes(), &output));
    }

    #[test]
    fn cut_requests_are_not_json(case in case(), cut in any::<prop::sample::Index>()) {
        let end = case.input.trim_end().len();
        let cut = cut.index(end);
        prop_assert_eq!(
            request_with_usage(&chat(), &case.input.as_bytes()[..cut]),
            Err(UsageSkip::NotJson)
        );
    }

    #[test]
    fn damaged_requests_never_panic(
        case in case(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let mut body = case.input.into_bytes();
        let at = at.index(body.len());
        body[at] = byte;
        if let Ok(output) = request_with_usage(&chat(), &body) {
            match serde_json::from_slice::<Value>(&output) {
                Ok(after) => prop_assert_eq!(
                    &after["stream_options"]["include_usage"],
                    &Value::Bool(true)
                ),
                // A damaged digit can make a valid number serde_json cannot hold (`1234e6789`):
                // still JSON, which the splice must accept. Any other refusal is a bug.
                Err(e) => prop_assert!(
                    e.to_string().starts_with("number out of range"),
                    "spliced output is not JSON: {e}"
                ),
            }
            prop_assert!(recoverable(&body, &output));
        }
    }

    #[test]
    fn garbage_is_refused_without_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        prop_assert!(request_with_usage(&chat(), &bytes).is_err());
    }
}

/// Whether `output` is `input` with one of the splices `request_with_usage` makes.
fn recoverable(input: &[u8], output: &[u8]) -> bool {
    const SPLICES: [(&str, &str); 6] = [
        ("", r#","stream_options":{"include_usage":true}"#),
        ("", r#""include_usage":true,"#),
        ("", r#""include_usage":true"#),
        ("false", "true"),
        ("null", "true"),
        ("null", r#"{"include_usage":true}"#),
    ];
    let prefix = input.iter().zip(output).take_while(|(a, b)| a == b).count();
    SPLICES.iter().any(|(removed, inserted)| {
        let (removed, inserted) = (removed.as_bytes(), inserted.as_bytes());
        output.len() + removed.len() == input.len() + inserted.len()
            && (0..=prefix.min(input.len())).any(|at| {
                input[at..].starts_with(removed)
                    && output[at..].starts_with(inserted)
                    && output[..at] == input[..at]
                    && output[at + inserted.len()..] == input[at + removed.len()..]
            })
    })
}

#[test]
fn the_generator_makes_every_form() {
    // A fixed example of each form, checked against hand-written expectations.
    for (input, expected) in [
        (
            r#" {"model":"m" , "stream":true } "#,
            r#" {"model":"m" , "stream":true,"stream_options":{"include_usage":true} } "#,
        ),
        (
            r#"{"stream_options": null ,"stream":true}"#,
            r#"{"stream_options": {"include_usage":true} ,"stream":true}"#,
        ),
        (
            r#"{"stream":true,"stream_options":{ "x":[{"include_usage":false}] }}"#,
            r#"{"stream":true,"stream_options":{"include_usage":true, "x":[{"include_usage":false}] }}"#,
        ),
    ] {
        let output = request_with_usage(&chat(), input.as_bytes()).unwrap();
        assert_eq!(String::from_utf8(output.clone()).unwrap(), expected);
        assert!(recoverable(input.as_bytes(), &output));
    }
}
