//! The GenAI metric instruments, with the semantic conventions' bucket boundaries.

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Histogram, Meter};

use super::exchange::MetricValues;
use crate::semconv::gen_ai::{TOKEN_TYPE, metrics as names};

const DURATION_BUCKETS: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];
const TOKEN_BUCKETS: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];
const PER_TOKEN_BUCKETS: [f64; 13] = [
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
];
const SERVER_TTFT_BUCKETS: [f64; 16] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// The GenAI histograms. Build once per meter and share; record every exchange, sampled or
/// not, so the metrics stay whole whatever the trace sampling does.
///
/// ```
/// use llmtrace::genai::GenAiMetrics;
///
/// let metrics = GenAiMetrics::new(&opentelemetry::global::meter("llmtrace"));
/// # let _ = metrics;
/// ```
#[derive(Debug, Clone)]
pub struct GenAiMetrics {
    client_duration: Histogram<f64>,
    client_token_usage: Histogram<u64>,
    client_time_to_first_chunk: Histogram<f64>,
    client_time_per_output_chunk: Histogram<f64>,
    server_duration: Histogram<f64>,
    server_time_to_first_token: Histogram<f64>,
    server_time_per_output_token: Histogram<f64>,
}

impl GenAiMetrics {
    /// Creates the instruments on `meter`.
    pub fn new(meter: &Meter) -> Self {
        let seconds = |name: &'static str, description: &'static str, buckets: &[f64]| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(description)
                .with_boundaries(buckets.to_vec())
                .build()
        };
        Self {
            client_duration: seconds(
                names::CLIENT_OPERATION_DURATION,
                "GenAI operation duration.",
                &DURATION_BUCKETS,
            ),
            client_token_usage: meter
                .u64_histogram(names::CLIENT_TOKEN_USAGE)
                .with_unit("{token}")
                .with_description("Number of input and output tokens used.")
                .with_boundaries(TOKEN_BUCKETS.to_vec())
                .build(),
            client_time_to_first_chunk: seconds(
                names::CLIENT_TIME_TO_FIRST_CHUNK,
                "Time to receive the first chunk of a streamed response.",
                &DURATION_BUCKETS,
            ),
            client_time_per_output_chunk: seconds(
                names::CLIENT_TIME_PER_OUTPUT_CHUNK,
                "Time between consecutive chunks of a streamed response.",
                &DURATION_BUCKETS,
            ),
            server_duration: seconds(
                names::SERVER_REQUEST_DURATION,
                "Generative AI server request duration.",
                &DURATION_BUCKETS,
            ),
            server_time_to_first_token: seconds(
                names::SERVER_TIME_TO_FIRST_TOKEN,
                "Time to generate the first token for successful responses.",
                &SERVER_TTFT_BUCKETS,
            ),
            server_time_per_output_token: seconds(
                names::SERVER_TIME_PER_OUTPUT_TOKEN,
                "Time per output token generated after the first token.",
                &PER_TOKEN_BUCKETS,
            ),
        }
    }

    /// Records a client-side exchange (we called a provider).
    ///
    /// `time_per_output_chunk` is recorded once per gap between content chunks, replayed at
    /// the end of the stream from the stream's gap histogram (values within 6.25 %).
    pub fn record_client(&self, values: &MetricValues) {
        let attributes = &values.attributes;
        self.client_duration
            .record(values.duration.as_secs_f64(), attributes);
        self.record_tokens(values, attributes);
        if values.streamed {
            if let Some(ttfc) = values.time_to_first_chunk {
                self.client_time_to_first_chunk
                    .record(ttfc.as_secs_f64(), attributes);
            }
            for (gap, count) in &values.chunk_gaps {
                for _ in 0..*count {
                    self.client_time_per_output_chunk
                        .record(gap.as_secs_f64(), attributes);
                }
            }
        }
    }

    /// Records a server-side exchange (we served an LLM API).
    pub fn record_server(&self, values: &MetricValues) {
        let attributes = &values.attributes;
        self.server_duration
            .record(values.duration.as_secs_f64(), attributes);
        let failed = attributes
            .iter()
            .any(|kv| kv.key.as_str() == crate::semconv::http::ERROR_TYPE);
        if failed {
            return;
        }
        if let Some(ttft) = values.time_to_first_chunk {
            self.server_time_to_first_token
                .record(ttft.as_secs_f64(), attributes);
        }
        if let Some(tpot) = values.time_per_output_token {
            self.server_time_per_output_token
                .record(tpot.as_secs_f64(), attributes);
        }
    }

    fn record_tokens(&self, values: &MetricValues, attributes: &[KeyValue]) {
        for (kind, count) in [
            ("input", values.input_tokens),
            ("output", values.output_tokens),
        ] {
            if let Some(count) = count.and_then(|c| u64::try_from(c).ok()) {
                let mut with_type = attributes.to_vec();
                with_type.push(KeyValue::new(TOKEN_TYPE, kind));
                self.client_token_usage.record(count, &with_type);
            }
        }
    }
}
