//! What an exchange cost: a [`PriceTable`] of per-model token prices (a bundled default for
//! the main OpenAI and Anthropic models, overridable), and the cost of a reported usage.

use std::collections::HashMap;
use std::fmt;

use serde::Deserialize;

use super::response::Usage;

/// The date the bundled prices were taken from the providers' published price lists.
pub const BUNDLED_PRICES_AS_OF: &str = "2025-11-30";

/// A model's prices in USD per million tokens.
///
/// `cache_read` is the price of input tokens served from the provider's prompt cache (OpenAI's
/// cached input, Anthropic's cache reads), `cache_write` of input tokens written to it
/// (Anthropic's cache writes); either defaults to `input` when not given.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    /// Input tokens, USD per million.
    pub input: f64,
    /// Output tokens, USD per million.
    #[serde(default)]
    pub output: f64,
    /// Cached input tokens read, USD per million (default: `input`).
    #[serde(default)]
    pub cache_read: Option<f64>,
    /// Input tokens written to the cache, USD per million (default: `input`).
    #[serde(default)]
    pub cache_write: Option<f64>,
}

impl ModelPrice {
    const fn new(input: f64, output: f64, cache_read: f64, cache_write: Option<f64>) -> Self {
        Self {
            input,
            output,
            cache_read: Some(cache_read),
            cache_write,
        }
    }

    /// Checks every price is a finite number, zero or more.
    pub fn check(&self) -> Result<(), String> {
        let prices = [
            ("input", Some(self.input)),
            ("output", Some(self.output)),
            ("cache_read", self.cache_read),
            ("cache_write", self.cache_write),
        ];
        for (name, price) in prices {
            if let Some(price) = price {
                if !price.is_finite() || price < 0.0 {
                    return Err(format!("{name} must be a price of 0 or more, got {price}"));
                }
            }
        }
        Ok(())
    }

    /// The cost in USD of `usage` (input counted with its cached part, as
    /// [`Usage`] reports it); `None` without any token count.
    pub fn cost(&self, usage: &Usage) -> Option<f64> {
        if usage.input.is_none() && usage.output.is_none() {
            return None;
        }
        let count = |n: Option<i64>| n.unwrap_or(0).max(0) as f64;
        let read = count(usage.cache_read);
        let written = count(usage.cache_creation);
        let fresh = (count(usage.input) - read - written).max(0.0);
        let micro_dollars = fresh * self.input
            + read * self.cache_read.unwrap_or(self.input)
            + written * self.cache_write.unwrap_or(self.input)
            + count(usage.output) * self.output;
        Some(micro_dollars / 1_000_000.0)
    }
}

/// The bundled prices (USD per million tokens; [`BUNDLED_PRICES_AS_OF`]): input, output,
/// cache read, cache write.
const BUNDLED: &[(&str, ModelPrice)] = &[
    // OpenAI
    ("gpt-5", ModelPrice::new(1.25, 10.0, 0.125, None)),
    ("gpt-5-mini", ModelPrice::new(0.25, 2.0, 0.025, None)),
    ("gpt-5-nano", ModelPrice::new(0.05, 0.4, 0.005, None)),
    ("gpt-4.1", ModelPrice::new(2.0, 8.0, 0.5, None)),
    ("gpt-4.1-mini", ModelPrice::new(0.4, 1.6, 0.1, None)),
    ("gpt-4.1-nano", ModelPrice::new(0.1, 0.4, 0.025, None)),
    ("gpt-4o", ModelPrice::new(2.5, 10.0, 1.25, None)),
    ("gpt-4o-mini", ModelPrice::new(0.15, 0.6, 0.075, None)),
    ("o1", ModelPrice::new(15.0, 60.0, 7.5, None)),
    ("o3", ModelPrice::new(2.0, 8.0, 0.5, None)),
    ("o3-mini", ModelPrice::new(1.1, 4.4, 0.55, None)),
    ("o4-mini", ModelPrice::new(1.1, 4.4, 0.275, None)),
    ("gpt-4-turbo", ModelPrice::new(10.0, 30.0, 10.0, None)),
    ("gpt-3.5-turbo", ModelPrice::new(0.5, 1.5, 0.5, None)),
    (
        "text-embedding-3-small",
        ModelPrice::new(0.02, 0.0, 0.02, None),
    ),
    (
        "text-embedding-3-large",
        ModelPrice::new(0.13, 0.0, 0.13, None),
    ),
    (
        "text-embedding-ada-002",
        ModelPrice::new(0.1, 0.0, 0.1, None),
    ),
    // Anthropic
    (
        "claude-opus-4-5",
        ModelPrice::new(5.0, 25.0, 0.5, Some(6.25)),
    ),
    (
        "claude-opus-4-1",
        ModelPrice::new(15.0, 75.0, 1.5, Some(18.75)),
    ),
    (
        "claude-opus-4",
        ModelPrice::new(15.0, 75.0, 1.5, Some(18.75)),
    ),
    (
        "claude-sonnet-4-5",
        ModelPrice::new(3.0, 15.0, 0.3, Some(3.75)),
    ),
    (
        "claude-sonnet-4",
        ModelPrice::new(3.0, 15.0, 0.3, Some(3.75)),
    ),
    (
        "claude-3-7-sonnet",
        ModelPrice::new(3.0, 15.0, 0.3, Some(3.75)),
    ),
    (
        "claude-3-5-sonnet",
        ModelPrice::new(3.0, 15.0, 0.3, Some(3.75)),
    ),
    (
        "claude-haiku-4-5",
        ModelPrice::new(1.0, 5.0, 0.1, Some(1.25)),
    ),
    (
        "claude-3-5-haiku",
        ModelPrice::new(0.8, 4.0, 0.08, Some(1.0)),
    ),
    (
        "claude-3-haiku",
        ModelPrice::new(0.25, 1.25, 0.03, Some(0.3)),
    ),
];

/// Per-model prices, looked up by the model an answer names (or the one asked for).
///
/// A model is found by its exact name, or, failing that, without a version suffix the
/// providers add to a model's name: a date (`gpt-4o-2024-08-06`, `claude-3-5-sonnet-20241022`)
/// or `-latest`. Nothing else is guessed: a model the table does not name has no price (an
/// Azure deployment's own name, a fine-tune, a local model), and the span says so.
///
/// ```
/// use llmtrace::genai::{ModelPrice, PriceTable, Usage};
///
/// let table = PriceTable::bundled();
/// let mut usage = Usage::default();
/// (usage.input, usage.output) = (Some(1_000_000), Some(100_000));
/// // gpt-4o: $2.50 per million input, $10 per million output.
/// assert_eq!(table.cost("gpt-4o-2024-08-06", &usage), Some(3.5));
/// assert_eq!(table.cost("my-fine-tune", &usage), None);
///
/// let mut table = PriceTable::empty();
/// table.insert("my-fine-tune", ModelPrice { input: 1.0, output: 2.0, cache_read: None, cache_write: None });
/// assert_eq!(table.cost("my-fine-tune", &usage), Some(1.2));
/// ```
#[derive(Clone, Default, PartialEq)]
pub struct PriceTable {
    prices: HashMap<String, ModelPrice>,
}

impl fmt::Debug for PriceTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PriceTable")
            .field("models", &self.prices.len())
            .finish()
    }
}

impl PriceTable {
    /// The bundled prices of the main OpenAI and Anthropic models, as of
    /// [`BUNDLED_PRICES_AS_OF`]. Prices change: override them where it matters.
    pub fn bundled() -> Self {
        let mut table = Self::empty();
        for (model, price) in BUNDLED {
            table.insert(*model, *price);
        }
        table
    }

    /// A table without prices.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Sets (or replaces) the price of `model`.
    pub fn insert(&mut self, model: impl Into<String>, price: ModelPrice) {
        self.prices.insert(model.into(), price);
    }

    /// How many models have a price.
    pub fn len(&self) -> usize {
        self.prices.len()
    }

    /// Whether no model has a price.
    pub fn is_empty(&self) -> bool {
        self.prices.is_empty()
    }

    /// The price of `model`: by its exact name, else without a date or `-latest` suffix.
    pub fn price(&self, model: &str) -> Option<&ModelPrice> {
        self.prices
            .get(model)
            .or_else(|| self.prices.get(without_version(model)?))
    }

    /// What `usage` cost with `model`, in USD; `None` for a model without a price or a usage
    /// without token counts.
    pub fn cost(&self, model: &str, usage: &Usage) -> Option<f64> {
        self.price(model)?.cost(usage)
    }
}

/// `model` without a trailing date (`-2024-08-06`, `-20241022`) or `-latest`.
fn without_version(model: &str) -> Option<&str> {
    if let Some(base) = model.strip_suffix("-latest") {
        return Some(base);
    }
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (base, last) = model.rsplit_once('-')?;
    if last.len() == 8 && digits(last) {
        return Some(base);
    }
    // `-YYYY-MM-DD`: three numeric parts.
    let (base, month) = base.rsplit_once('-')?;
    let (base, year) = base.rsplit_once('-')?;
    (year.len() == 4 && month.len() == 2 && last.len() == 2)
        .then_some(())
        .filter(|()| digits(year) && digits(month) && digits(last))
        .map(|()| base)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(input: i64, output: i64, read: Option<i64>, written: Option<i64>) -> Usage {
        Usage {
            input: Some(input),
            output: Some(output),
            cache_read: read,
            cache_creation: written,
            reasoning: None,
        }
    }

    /// Known usage, exact costs (prices per million, so round numbers of tokens give cents).
    #[test]
    fn fixtures_with_known_usage_give_exact_costs() {
        let table = PriceTable::bundled();
        let cases = [
            // gpt-4o: 1M fresh input $2.50 + 0.5M output $5.
            ("gpt-4o", usage(1_000_000, 500_000, None, None), 7.5),
            // OpenAI counts cached tokens inside the input: 400k cached at $1.25, 600k at $2.50.
            (
                "gpt-4o-2024-11-20",
                usage(1_000_000, 0, Some(400_000), None),
                0.5 + 1.5,
            ),
            (
                "gpt-4o-mini",
                usage(2_000_000, 1_000_000, None, None),
                0.3 + 0.6,
            ),
            // Anthropic: input as reported here includes reads and writes (see Usage).
            // 100k fresh at $3, 200k read at $0.30, 100k written at $3.75, 10k out at $15.
            (
                "claude-3-5-sonnet-20241022",
                usage(400_000, 10_000, Some(200_000), Some(100_000)),
                0.3 + 0.06 + 0.375 + 0.15,
            ),
            (
                "claude-3-5-haiku-latest",
                usage(1_000_000, 1_000_000, None, None),
                4.8,
            ),
            (
                "text-embedding-3-small",
                usage(1_000_000, 0, None, None),
                0.02,
            ),
        ];
        for (model, usage, want) in cases {
            let got = table.cost(model, &usage).unwrap();
            assert!((got - want).abs() < 1e-12, "{model}: {got} != {want}");
        }
    }

    #[test]
    fn only_version_suffixes_are_stripped() {
        let table = PriceTable::bundled();
        for model in [
            "gpt-4o-audio-preview",
            "gpt-4o-",
            "my-model-2024",
            "claude",
            "",
        ] {
            assert_eq!(table.price(model), None, "{model}");
        }
        assert_eq!(without_version("a-2024-13-1"), None);
        assert_eq!(without_version("a-20241022"), Some("a"));
        assert_eq!(without_version("gpt-4o-2024-08-06"), Some("gpt-4o"));
    }

    #[test]
    fn no_counts_no_cost_and_nonsense_counts_cost_nothing_extra() {
        let price = PriceTable::bundled().price("gpt-4o").copied().unwrap();
        assert_eq!(price.cost(&Usage::default()), None);
        // More cached than input (a provider's odd report): never a negative fresh count.
        let odd = usage(10, 0, Some(1_000_000), None);
        assert!(price.cost(&odd).unwrap() > 0.0);
        assert_eq!(price.cost(&usage(-5, -5, None, None)), Some(0.0));
    }

    #[test]
    fn bundled_prices_are_valid_and_checks_refuse_nonsense() {
        for (model, price) in BUNDLED {
            price.check().unwrap_or_else(|e| panic!("{model}: {e}"));
        }
        let bad = ModelPrice {
            input: f64::NAN,
            output: 1.0,
            cache_read: None,
            cache_write: Some(-1.0),
        };
        assert!(bad.check().unwrap_err().contains("input"));
    }
}
