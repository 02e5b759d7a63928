//! The objectives on a meter: counts per window and cumulative (what PromQL aggregates across
//! gateways), burn rates, alerts and budgets (what one gateway sees).

use std::sync::Arc;
use std::time::SystemTime;

use opentelemetry::KeyValue;
use opentelemetry::metrics::Meter;

use super::{SloEngine, SloStatus, WINDOWS};

/// Metric names (OpenTelemetry; Prometheus turns dots into underscores and adds `_total` to
/// counters: `llmtrace_slo_events_total`).
pub mod names {
    /// Events counted by an objective since the gateway started (counter; `slo`).
    pub const EVENTS: &str = "llmtrace.slo.events";
    /// Of those, the good ones (counter; `slo`).
    pub const GOOD_EVENTS: &str = "llmtrace.slo.good_events";
    /// Events in the last `window` (gauge; `slo`, `window` = `5m`, `30m`, `1h`, `6h`).
    pub const WINDOW_EVENTS: &str = "llmtrace.slo.window.events";
    /// Good events in the last `window` (gauge; `slo`, `window`).
    pub const WINDOW_GOOD_EVENTS: &str = "llmtrace.slo.window.good_events";
    /// Bad share over the allowed share in the last `window` (gauge; `slo`, `window`); absent
    /// for a window without events.
    pub const BURN_RATE: &str = "llmtrace.slo.burn_rate";
    /// `1 - bad / allowed bad` over the objective's period (gauge; `slo`).
    pub const BUDGET_REMAINING: &str = "llmtrace.slo.error_budget.remaining";
    /// 1 while the multi-window burn-rate alert holds (gauge; `slo`, `severity` = `page` for
    /// 14.4 over 1 h and 5 min, `ticket` for 6 over 6 h and 30 min).
    pub const ALERT: &str = "llmtrace.slo.alert";
    /// The objective's target share (gauge; `slo`).
    pub const TARGET: &str = "llmtrace.slo.target";
}

/// The label sets, built once.
struct Labels {
    slo: Vec<KeyValue>,
    windows: Vec<Vec<KeyValue>>,
    page: Vec<KeyValue>,
    ticket: Vec<KeyValue>,
}

fn labels(engine: &SloEngine) -> Arc<Vec<Labels>> {
    Arc::new(
        engine
            .objectives()
            .map(|objective| {
                let slo = KeyValue::new("slo", objective.name().to_owned());
                let with = |key: &'static str, value: &'static str| {
                    vec![slo.clone(), KeyValue::new(key, value)]
                };
                Labels {
                    windows: WINDOWS.iter().map(|(w, _)| with("window", w)).collect(),
                    page: with("severity", "page"),
                    ticket: with("severity", "ticket"),
                    slo: vec![slo],
                }
            })
            .collect(),
    )
}

/// Where an instrument's callback puts one value with its labels.
type Emit<'a, T> = &'a mut dyn FnMut(T, &[KeyValue]);
/// What one instrument reads from one objective's status.
type Read<T> = fn(&SloStatus, &Labels, Emit<'_, T>);
/// A callback over every objective, handed to the instrument's builder.
type Callback<T> = Box<dyn Fn(Emit<'_, T>) + Send + Sync>;

/// Registers an observable instrument whose callback reads every objective's status.
fn observe<T: 'static>(
    engine: &Arc<SloEngine>,
    labels: &Arc<Vec<Labels>>,
    build: impl FnOnce(Callback<T>),
    read: Read<T>,
) {
    let (engine, labels) = (engine.clone(), labels.clone());
    build(Box::new(move |emit| {
        for (status, labels) in engine.status(SystemTime::now()).iter().zip(labels.iter()) {
            read(status, labels, emit);
        }
    }));
}

impl SloEngine {
    /// Exports every objective on `meter` (see [`names`]); values are read when the meter is
    /// collected (a Prometheus scrape, an OTLP export).
    pub fn register_metrics(self: &Arc<Self>, meter: &Meter) {
        let labels = labels(self);
        self.register_counts(meter, &labels);
        self.register_ratios(meter, &labels);
    }

    /// Cumulative and per-window counts.
    fn register_counts(self: &Arc<Self>, meter: &Meter, labels: &Arc<Vec<Labels>>) {
        let counter = |name: &'static str, description: &'static str, good: bool| {
            observe::<u64>(
                self,
                labels,
                |f| {
                    meter
                        .u64_observable_counter(name)
                        .with_description(description)
                        .with_callback(move |o| f(&mut |v, a| o.observe(v, a)))
                        .build();
                },
                if good {
                    |s, l, emit| emit(s.cumulative.good, &l.slo)
                } else {
                    |s, l, emit| emit(s.cumulative.total, &l.slo)
                },
            );
        };
        counter(names::EVENTS, "Events an objective counted", false);
        counter(names::GOOD_EVENTS, "Events that met the objective", true);
        let window = |name: &'static str, description: &'static str, good: bool| {
            observe::<u64>(
                self,
                labels,
                |f| {
                    meter
                        .u64_observable_gauge(name)
                        .with_description(description)
                        .with_callback(move |o| f(&mut |v, a| o.observe(v, a)))
                        .build();
                },
                if good {
                    |s, l, emit| {
                        for (w, a) in s.windows.iter().zip(&l.windows) {
                            emit(w.good, a);
                        }
                    }
                } else {
                    |s, l, emit| {
                        for (w, a) in s.windows.iter().zip(&l.windows) {
                            emit(w.total, a);
                        }
                    }
                },
            );
        };
        window(names::WINDOW_EVENTS, "Events in the window", false);
        window(names::WINDOW_GOOD_EVENTS, "Good events in the window", true);
    }

    /// Burn rates, budgets, targets and alerts.
    fn register_ratios(self: &Arc<Self>, meter: &Meter, labels: &Arc<Vec<Labels>>) {
        let gauge = |name: &'static str, description: &'static str, read: Read<f64>| {
            observe::<f64>(
                self,
                labels,
                |f| {
                    meter
                        .f64_observable_gauge(name)
                        .with_description(description)
                        .with_callback(move |o| f(&mut |v, a| o.observe(v, a)))
                        .build();
                },
                read,
            );
        };
        gauge(
            names::BURN_RATE,
            "Bad share over the allowed share in the window",
            |s, l, emit| {
                for (w, a) in s.windows.iter().zip(&l.windows) {
                    if let Some(rate) = w.burn_rate {
                        emit(rate, a);
                    }
                }
            },
        );
        gauge(
            names::BUDGET_REMAINING,
            "Share of the error budget left over the period",
            |s, l, emit| emit(s.budget_remaining, &l.slo),
        );
        gauge(names::TARGET, "The objective's target", |s, l, emit| {
            emit(s.target, &l.slo)
        });
        gauge(
            names::ALERT,
            "1 while the multi-window burn-rate alert holds",
            |s, l, emit| {
                emit(f64::from(u8::from(s.page)), &l.page);
                emit(f64::from(u8::from(s.ticket)), &l.ticket);
            },
        );
    }
}
