//! Feeds arbitrary request bodies to `genai::request_with_usage`: nothing may panic; a body
//! serde_json reads as JSON is never refused as `not_json`; and a rewritten body is valid JSON
//! that asks for usage, from which removing the spliced bytes (or undoing the `false`/`null`
//! to `true` replacement) gives back the input exactly.
//!
//! Input layout: byte 0 chooses a frame (mod 4) that puts the rest where the scanner looks:
//! as the whole body, after `{"stream":true,`, as the value of `stream_options`, or inside
//! the `stream_options` object.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llmtrace::genai::{Endpoint, UsageSkip, request_with_usage};
use serde::de::IgnoredAny;
use serde_json::Value;

const FRAMES: [(&[u8], &[u8]); 4] = [
    (b"", b""),
    (b"{\"stream\":true,", b"}"),
    (b"{\"stream\":true,\"stream_options\":", b"}"),
    (b"{\"stream\":true,\"stream_options\":{", b"}}"),
];

/// What `request_with_usage` may do: (bytes removed, bytes inserted) at one place.
const SPLICES: [(&[u8], &[u8]); 7] = [
    (b"", b",\"stream_options\":{\"include_usage\":true}"),
    (b"", b"\"stream_options\":{\"include_usage\":true}"),
    (b"", b"\"include_usage\":true,"),
    (b"", b"\"include_usage\":true"),
    (b"false", b"true"),
    (b"null", b"true"),
    (b"null", b"{\"include_usage\":true}"),
];

fn recoverable(input: &[u8], output: &[u8]) -> bool {
    let prefix = input.iter().zip(output).take_while(|(a, b)| a == b).count();
    SPLICES.iter().any(|(removed, inserted)| {
        output.len() + removed.len() == input.len() + inserted.len()
            && (0..=prefix.min(input.len())).any(|at| {
                input[at..].starts_with(removed)
                    && output[at..].starts_with(inserted)
                    && output[at + inserted.len()..] == input[at + removed.len()..]
            })
    })
}

/// Valid JSON to serde_json, which does not decode what it skips (it leaves lone surrogates
/// alone) but stops at 128 levels of nesting.
fn valid(bytes: &[u8]) -> Result<(), serde_json::Error> {
    serde_json::from_slice::<IgnoredAny>(bytes).map(drop)
}

fuzz_target!(|input: &[u8]| {
    let Some((&frame, rest)) = input.split_first() else {
        return;
    };
    let (head, tail) = FRAMES[usize::from(frame % 4)];
    let body = [head, rest, tail].concat();

    let chat = Endpoint::detect("/v1/chat/completions", None).unwrap();
    let result = request_with_usage(&chat, &body);
    let completions = Endpoint::detect("/v1/completions", None).unwrap();
    assert_eq!(request_with_usage(&completions, &body), result);
    let messages = Endpoint::detect("/v1/messages", None).unwrap();
    assert_eq!(
        request_with_usage(&messages, &body),
        Err(UsageSkip::NotApplicable)
    );

    let parsed = serde_json::from_slice::<Value>(&body);
    if parsed.is_ok() {
        assert_ne!(result, Err(UsageSkip::NotJson), "serde_json reads it");
    }
    let Ok(output) = result else {
        return;
    };
    assert!(recoverable(&body, &output), "more than one splice");
    if let Err(error) = valid(&output) {
        assert!(
            error.to_string().contains("recursion limit"),
            "output is not JSON: {error}"
        );
    }
    if let Ok(before) = parsed {
        let after: Value = serde_json::from_slice(&output).expect("output reads as input did");
        assert_eq!(after["stream_options"]["include_usage"], Value::Bool(true));
        let (Value::Object(mut before), Value::Object(mut after)) = (before, after) else {
            panic!("an object became something else");
        };
        before.remove("stream_options");
        after.remove("stream_options");
        assert_eq!(before, after, "other members changed");
    }
    assert_eq!(
        request_with_usage(&chat, &output),
        Err(UsageSkip::AlreadyAsked)
    );
});
